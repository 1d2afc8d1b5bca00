"""attn.sdpa_backward: the gradients of attn.sdpa, from the fused C++ backward kernel."""
from __future__ import annotations

import numpy as np

from . import _attn


def sdpa_backward(q, k, v, out, lse, dout, *, causal=False, causal_align="bottom_right", window=None,
                  scale=None, mask=None, kv_lens=None, softcap=0.0, sinks=None, layout="bhsd", threads=None):
    """Gradients of attn.sdpa: returns (dq, dk, dv) for the loss gradient dout = dL/dout, and
    (dq, dk, dv, dsinks) when the forward had sinks (dsinks: float32 [Hq]).

    q, k, v: the forward's inputs; out, lse: what ``attn.sdpa(q, k, v, ..., return_lse=True)``
    returned for them; dout: dL/dout, shaped like out. Every option must be the forward's:
    causal, causal_align, window, scale, mask, kv_lens, softcap, sinks and layout mean what they mean in
    attn.sdpa. dq has q's shape, dk and dv k's and v's, all in q's dtype (float32, float16 or
    ml_dtypes.bfloat16; the math runs in float32). With GQA/MQA, dk and dv of a KV head sum over
    the query heads that read it. Rows that saw no key (lse = -inf) contribute nothing, and keys
    no query saw get zero gradients. The result is bit-identical for every thread count.
    threads: None = every core.
    """
    # The argument normalization of attn.sdpa, shared (imported here: the package imports this
    # module while it is being initialized).
    from . import (_ALIGNS, _LAYOUTS, _as_array, _dtype_code, _kv_lens, _mask, _raw, _scale_softcap, _sinks,
                   _threads, _to_logical, _window)

    q, k, v, out, dout = (_as_array(n, a) for n, a in (("q", q), ("k", k), ("v", v), ("out", out),
                                                       ("dout", dout)))
    code = _dtype_code("q", q)
    for name, a in (("k", k), ("v", v), ("out", out), ("dout", dout)):
        if a.dtype != q.dtype:
            raise TypeError(f"sdpa_backward: {name}: dtype {a.dtype} differs from q's dtype {q.dtype}")
    if layout not in _LAYOUTS:
        raise ValueError(f"sdpa_backward: layout = {layout!r} must be one of {_LAYOUTS}")
    if causal_align not in _ALIGNS:
        raise ValueError(f"sdpa_backward: causal_align = {causal_align!r} must be one of {_ALIGNS}")
    axes = "[B, H, S, D]" if layout == "bhsd" else "[B, S, H, D]"
    for name, a in (("q", q), ("k", k), ("v", v), ("out", out), ("dout", dout)):
        if a.ndim != 4:
            raise ValueError(f"sdpa_backward: {name}: expected 4 dimensions {axes} for layout {layout!r}, "
                             f"got shape {a.shape}")
    left, right = _window(window)
    n_threads = _threads(threads)
    scale = _scale_softcap("sdpa_backward", scale, softcap)

    ql, kl, vl, ol, dol = (_to_logical(a, layout) for a in (q, k, v, out, dout))
    B, Sq, Hq, _ = ql.shape

    lse = np.asarray(lse)
    if lse.shape != (B, Hq, Sq):
        raise ValueError(f"sdpa_backward: lse: shape {lse.shape} != [B, Hq, Sq] = {(B, Hq, Sq)} "
                         "(the forward's return_lse=True output)")
    if not np.issubdtype(lse.dtype, np.floating):
        raise TypeError(f"sdpa_backward: lse: dtype {lse.dtype} is not floating point")
    lse = np.ascontiguousarray(lse, dtype=np.float32)

    lens = _kv_lens("sdpa_backward", kv_lens, B)
    mask_arr, mask_kind = _mask("sdpa_backward", mask)
    sinks = _sinks("sdpa_backward", sinks, Hq)
    dsinks = None if sinks is None else np.empty(Hq, np.float32)

    dq, dk, dv = np.empty(q.shape, q.dtype), np.empty(k.shape, q.dtype), np.empty(v.shape, q.dtype)
    _attn.sdpa_backward(_raw(ql, code), _raw(kl, code), _raw(vl, code), _raw(ol, code), lse, _raw(dol, code),
                        _raw(_to_logical(dq, layout), code), _raw(_to_logical(dk, layout), code),
                        _raw(_to_logical(dv, layout), code), code, bool(causal), causal_align == "top_left",
                        left, right, scale, mask_arr, mask_kind, lens, float(softcap), sinks, dsinks, n_threads)
    return (dq, dk, dv) if sinks is None else (dq, dk, dv, dsinks)
