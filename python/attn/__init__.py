"""attn: exact, fused attention on the CPU, and a look inside it.

    >>> import numpy as np, attn
    >>> q = np.random.rand(1, 8, 128, 64).astype(np.float32)   # [B, H, S, D]
    >>> out = attn.sdpa(q, q, q, causal=True)

See README.md for the semantics of every option.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from . import _attn
from .backward import sdpa_backward
from . import attribution, circuits, patching, steering
from .model import GenerationStream, HookPoint, Model, Report, Session
from .train import Trainer

__all__ = ["sdpa", "sdpa_backward", "KVCache", "Model", "Session", "GenerationStream", "Report", "HookPoint", "Trainer", "attribution", "circuits", "patching", "steering", "simd_targets", "set_simd_target", "current_simd_target", "ChatTemplate", "render_template"]

simd_targets = _attn.simd_targets
set_simd_target = _attn.set_simd_target
current_simd_target = _attn.current_simd_target

_LAYOUTS = ("bhsd", "bshd")
_ALIGNS = ("bottom_right", "top_left")


def _dtype_code(name: str, a: np.ndarray) -> int:
    kind = a.dtype.name
    if kind == "float32":
        return 0
    if kind == "float16":
        return 1
    if kind == "bfloat16":  # ml_dtypes.bfloat16
        return 2
    raise TypeError(f"sdpa: {name}: dtype {a.dtype} is not supported (float32, float16 or bfloat16)")


def _as_array(name: str, x) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"sdpa: {name}: expected a NumPy array, got {type(x).__name__}")
    return x


def _raw(a: np.ndarray, code: int) -> np.ndarray:
    # 16-bit floats travel as uint16 views (zero-copy); the dtype code tells the kernel what they are.
    return a if code == 0 else a.view(np.uint16)


def _to_logical(a: np.ndarray, layout: str) -> np.ndarray:
    # The kernel's logical axes are [B, S, H, D]; "bhsd" memory is the same data with axes 1 and 2
    # swapped, which is a view.
    return a.swapaxes(1, 2) if layout == "bhsd" else a


def _window(window) -> tuple[int, int]:
    if window is None:
        return -1, -1
    try:
        left, right = window
    except (TypeError, ValueError):
        raise ValueError(f"sdpa: window = {window!r} must be a pair (left, right), -1 for unbounded") from None
    for name, x in (("left", left), ("right", right)):
        if not isinstance(x, numbers.Integral) or isinstance(x, bool):
            raise ValueError(f"sdpa: window.{name} = {x!r} must be an integer (-1 for unbounded)")
    return int(left), int(right)


def _threads(threads) -> int:
    if threads is None:
        return 0
    if not isinstance(threads, numbers.Integral) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"sdpa: threads = {threads!r} must be an integer >= 1 (or None for every core)")
    return int(threads)


def _scale_softcap(fn: str, scale, softcap):
    """Checks scale (None or a finite real) and softcap (a real); returns scale as float or None."""
    if scale is not None:
        if not isinstance(scale, numbers.Real) or isinstance(scale, bool):
            raise ValueError(f"{fn}: scale = {scale!r} must be a real number")
        scale = float(scale)
        if not math.isfinite(scale):
            raise ValueError(f"{fn}: scale = {scale} is not finite")
    if not isinstance(softcap, numbers.Real) or isinstance(softcap, bool):
        raise ValueError(f"{fn}: softcap = {softcap!r} must be a real number >= 0")
    return scale


def _kv_lens(fn: str, kv_lens, B: int):
    """kv_lens as a contiguous int64 array (None stays None)."""
    if kv_lens is None:
        return None
    lens = np.asarray(kv_lens)
    if lens.ndim != 1 or not (np.issubdtype(lens.dtype, np.integer) or lens.size == 0):
        raise ValueError(f"{fn}: kv_lens must be a 1-D integer array of length B = {B}, "
                         f"got shape {lens.shape} dtype {lens.dtype}")
    return np.ascontiguousarray(lens, dtype=np.int64)


def _sinks(fn: str, sinks, Hq: int):
    """sinks as a contiguous float32 [Hq] array (None stays None)."""
    if sinks is None:
        return None
    a = np.asarray(sinks)
    if a.shape != (Hq,) or not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{fn}: sinks must be a 1-D floating-point array of length Hq = {Hq}, "
                         f"got shape {a.shape} dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _mask(fn: str, mask):
    """(4-D mask array or None, kind code: 0 none, 1 bool as uint8, 2 additive float32)."""
    if mask is None:
        return None, 0
    m = np.asarray(mask)
    if m.ndim > 4:
        raise ValueError(f"{fn}: mask has {m.ndim} dimensions; it must broadcast to [B, Hq, Sq, Sk]")
    if m.dtype == np.bool_:
        m, kind = m.view(np.uint8), 1
    elif np.issubdtype(m.dtype, np.floating):
        m, kind = m.astype(np.float32, copy=False), 2
    else:
        raise TypeError(f"{fn}: mask: dtype {m.dtype} is not supported (bool or floating point)")
    while m.ndim < 4:
        m = m[np.newaxis]
    return m, kind


def sdpa(q, k, v, *, causal=False, causal_align="bottom_right", window=None, scale=None, mask=None,
         kv_lens=None, softcap=0.0, sinks=None, return_lse=False, layout="bhsd", threads=None):
    """Scaled dot-product attention, exact and fused: softmax(q k^T * scale + mask) v.

    q: [B, Hq, Sq, D] and k, v: [B, Hkv, Sk, D] for layout "bhsd" (PyTorch's), or [B, S, H, D] for
    "bshd" (FlashAttention's). float32, float16 or ml_dtypes.bfloat16; accumulation in float32;
    the output has q's shape and dtype. k and v share a dtype: q's, or float16 / bfloat16 under
    float32 q (a half-precision KV cache, widened as it is read). Hq % Hkv == 0 (GQA/MQA): query head h reads KV head
    h // (Hq // Hkv). Any strides are read in place.

    causal: query i sees keys j <= i + Sk - Sq ("bottom_right", FlashAttention) or j <= i
      ("top_left", PyTorch's is_causal).
    window: (left, right), -1 unbounded: query i sees keys in [i + off - left, i + off + right],
      off = Sk - Sq (bottom_right) or 0 (top_left).
    scale: default 1/sqrt(D). softcap: scores = softcap * tanh(scores / softcap) when > 0.
    mask: bool (True = attend) or float (added to the scores), broadcastable to [B, Hq, Sq, Sk].
    kv_lens: int [B], number of valid keys of each sequence (the rest is padding); causal and
      window align to kv_lens[b] instead of Sk.
    sinks: float [Hq], learned attention sinks (gpt-oss): head h's softmax gets one more logit
      sinks[h] (not scaled) that carries no value, so a row may attend to nothing; -inf = none.
    return_lse: also return the natural log-sum-exp of each row's scores, float32 [B, Hq, Sq]
      (with sinks, the sink's term included).
    A row that sees no key returns 0 and lse = -inf (or its sink). threads: None = every core.
    """
    q, k, v = _as_array("q", q), _as_array("k", k), _as_array("v", v)
    code = _dtype_code("q", q)
    kv_code = _dtype_code("k", k)
    if k.dtype != q.dtype and not (code == 0 and kv_code != 0):
        raise TypeError(f"sdpa: k: dtype {k.dtype} differs from q's dtype {q.dtype} (only float32 q may read "
                        "float16 or bfloat16 k and v)")
    if v.dtype != k.dtype:
        raise TypeError(f"sdpa: v: dtype {v.dtype} differs from k's dtype {k.dtype}")
    if layout not in _LAYOUTS:
        raise ValueError(f"sdpa: layout = {layout!r} must be one of {_LAYOUTS}")
    if causal_align not in _ALIGNS:
        raise ValueError(f"sdpa: causal_align = {causal_align!r} must be one of {_ALIGNS}")
    axes = "[B, H, S, D]" if layout == "bhsd" else "[B, S, H, D]"
    for name, a in (("q", q), ("k", k), ("v", v)):
        if a.ndim != 4:
            raise ValueError(f"sdpa: {name}: expected 4 dimensions {axes} for layout {layout!r}, got shape {a.shape}")
    left, right = _window(window)
    n_threads = _threads(threads)
    scale = _scale_softcap("sdpa", scale, softcap)

    ql, kl, vl = (_to_logical(a, layout) for a in (q, k, v))
    B, Sq, Hq, _ = ql.shape
    Sk = kl.shape[1]

    lens = _kv_lens("sdpa", kv_lens, B)
    mask_arr, mask_kind = _mask("sdpa", mask)
    sinks = _sinks("sdpa", sinks, Hq)

    out = np.empty(q.shape, dtype=q.dtype)
    lse = np.empty((B, Hq, Sq), dtype=np.float32) if return_lse else None
    _attn.sdpa(_raw(ql, code), _raw(kl, kv_code), _raw(vl, kv_code), _raw(_to_logical(out, layout), code), code, kv_code,
               bool(causal), causal_align == "top_left", left, right, scale, mask_arr, mask_kind, lens,
               float(softcap), sinks, lse, n_threads)
    return (out, lse) if return_lse else out


class KVCache:
    """A key/value cache for generation: append K/V for new positions, attend from new queries.

    Arrays use layout "bhsd": k, v [B, Hkv, n_new, D]; q [B, Hq, n_q, D]. They have the cache's
    dtype; a float16 cache also takes float32 k and v (rounded as they are stored) and float32 q
    (the half keys and values are widened as they are read; the output is float32), as a language
    model's half KV cache is used. dtype="q8_0" stores 8-bit values in blocks of 32 along the head
    dim, each block with a float16 scale (llama.cpp's q8_0 cache; head_dim a multiple of 32): k, v
    and q are float32.
    """

    def __init__(self, batch: int, n_kv_heads: int, head_dim: int, capacity: int, dtype=np.float32):
        if isinstance(dtype, str) and dtype == "q8_0":
            self.dtype, self._code, kind = "q8_0", 3, _attn.DType.q8_0
        else:
            self.dtype = np.dtype(dtype)
            self._code = _dtype_code("dtype", np.empty(0, self.dtype))
            kind = _attn.DType(self._code)
        self._cache = _attn.KVCache(batch, n_kv_heads, head_dim, capacity, kind)

    def append(self, k: np.ndarray, v: np.ndarray) -> None:
        k, v = _as_array("k", k), _as_array("v", v)
        for name, a in (("k", k), ("v", v)):
            self._check_dtype("append", name, a)
            if a.ndim != 4:
                raise ValueError(f"KVCache.append: {name}: expected [B, Hkv, n, D], got shape {a.shape}")
        if k.dtype != v.dtype:
            raise TypeError(f"KVCache.append: v: dtype {v.dtype} != k's dtype {k.dtype}")
        code = _dtype_code("k", k)
        self._cache.append(_raw(k.swapaxes(1, 2), code), _raw(v.swapaxes(1, 2), code), _attn.DType(code))

    def _check_dtype(self, call: str, name: str, a: np.ndarray) -> None:
        if (self._code == 3 or a.dtype != self.dtype) and not (a.dtype == np.float32 and self._code != 0):
            raise TypeError(f"KVCache.{call}: {name}: dtype {a.dtype} != cache dtype {self.dtype}"
                            + ("" if self._code == 0 else " (float32 is required)" if self._code == 3
                               else " (float32 is also accepted)"))

    def attend(self, q: np.ndarray, *, causal: bool = True, sinks=None, threads=None) -> np.ndarray:
        """Attention of q [B, Hq, n_q, D] to everything cached (causal: aligned bottom-right);
        sinks: float [Hq], learned sinks as in sdpa."""
        q = _as_array("q", q)
        self._check_dtype("attend", "q", q)
        if q.ndim != 4:
            raise ValueError(f"KVCache.attend: q: expected [B, Hq, n, D], got shape {q.shape}")
        out = np.empty(q.shape, dtype=q.dtype)
        code = _dtype_code("q", q)
        sinks = _sinks("KVCache.attend", sinks, q.shape[1])
        self._cache.attend(_raw(q.swapaxes(1, 2), code), _raw(out.swapaxes(1, 2), code), _attn.DType(code),
                           bool(causal), sinks, _threads(threads))
        return out

    def clear(self) -> None:
        self._cache.clear()

    @property
    def length(self) -> int:
        return self._cache.length

    @property
    def capacity(self) -> int:
        return self._cache.capacity


class ChatTemplate:
    """A Jinja text, such as a model's chat template (Model.chat_template), parsed once by attn's
    interpreter (the one Model.apply_chat_template uses) and rendered the way Hugging Face
    transformers renders chat templates:

        t = attn.ChatTemplate(model.chat_template)
        t.render(messages=[{"role": "user", "content": "Hi"}], add_generation_prompt=True, tools=[...])

    `now` ("YYYY-MM-DD HH:MM:SS") fixes what strftime_now() sees (default: the local time). Raises
    ValueError naming the line for a template that does not parse, fails or raises."""

    def __init__(self, source: str):
        if not isinstance(source, str):
            raise TypeError(f"ChatTemplate: source must be a str, got {type(source).__name__}")
        self._t = _attn.JinjaTemplate(source)

    def render(self, *, now: str | None = None, **variables) -> str:
        import json

        try:
            text = json.dumps(variables, ensure_ascii=False)
        except TypeError as e:
            raise TypeError(f"ChatTemplate.render: the variables must be JSON data: {e}") from None
        return self._t.render(text, now or "")


def render_template(source: str, /, *, now: str | None = None, **variables) -> str:
    """ChatTemplate(source).render(now=now, **variables): one Jinja text rendered once."""
    return ChatTemplate(source).render(now=now, **variables)
