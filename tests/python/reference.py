"""Independent NumPy references for attn.sdpa, written for reading, not speed.

Semantics (see shared/REFERENCE.md, "Attention semantics"):
    scores = (q . k) * scale                              scale defaults to 1/sqrt(D)
    if softcap > 0: scores = softcap * tanh(scores / softcap)
    scores += additive mask (float mask)
    keys excluded by: boolean mask (False), causal, window, kv_lens  -> score = -inf
    P = softmax over keys; a row with no visible key gives P = 0 (out = 0, lse = -inf)
    out = P @ V
    lse = logsumexp over visible keys of the final scores

Two references:
  * sdpa_reference: everything in float64 (the "truth").
  * sdpa_naive: the same textbook formula in the input dtype. Following FlashAttention's
    test (matmuls in the input dtype with fp32 accumulation, softmax computed in fp32 and
    stored in the input dtype), every op is computed in float32 and its result rounded to
    the input dtype (float16 via NumPy, bfloat16 via ml_dtypes). For float32 this is just
    float32 arithmetic.

Both take arrays in the layout given ("bhsd" or "bshd") and return (out, lse) where out
has q's shape (float64 for the reference, float32 holding dtype-rounded values for the
naive) and lse is [B, Hq, Sq].
"""

import math

import numpy as np

try:
    import ml_dtypes
except ImportError:  # pragma: no cover - ml_dtypes is a test dependency
    ml_dtypes = None


def np_dtype(name):
    """'float32' | 'float16' | 'bfloat16' -> NumPy dtype."""
    if name == "bfloat16":
        if ml_dtypes is None:
            raise RuntimeError("ml_dtypes is required for bfloat16")
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def to_bhsd(x, layout):
    """View x as [B, H, S, D]."""
    if layout == "bhsd":
        return x
    if layout == "bshd":
        return np.swapaxes(x, 1, 2)
    raise ValueError(f"bad layout {layout!r}")


def visible_keys(B, Sq, Sk, *, causal=False, causal_align="bottom_right", window=None,
                 kv_lens=None):
    """Boolean [B, 1, Sq, Sk]: True where query i may see key j (mask argument excluded).

    With Sk_eff = kv_lens[b] (or Sk) and off = Sk_eff - Sq for bottom_right (0 for top_left):
      causal:           j <= i + off
      window (l, r):    i + off - l <= j <= i + off + r   (-1 = unbounded side)
      kv_lens:          j < kv_lens[b]
    """
    i = np.arange(Sq)[:, None]                  # [Sq, 1]
    j = np.arange(Sk)[None, :]                  # [1, Sk]
    rel = (j - i)[None, :, :]                   # [1, Sq, Sk]: key index minus query index
    if kv_lens is None:
        sk_eff = np.full(B, Sk, dtype=np.int64)
    else:
        sk_eff = np.asarray(kv_lens).astype(np.int64).reshape(B)
    if causal_align == "bottom_right":
        off = (sk_eff - Sq)[:, None, None]      # [B, 1, 1]
    elif causal_align == "top_left":
        off = np.zeros((B, 1, 1), dtype=np.int64)
    else:
        raise ValueError(f"bad causal_align {causal_align!r}")

    keep = np.ones((B, Sq, Sk), dtype=bool)
    if causal:
        keep &= rel <= off
    if window is not None:
        left, right = window
        if left >= 0:
            keep &= rel >= off - left
        if right >= 0:
            keep &= rel <= off + right
    if kv_lens is not None:
        keep &= j[None, :, :] < sk_eff[:, None, None]
    return keep[:, None, :, :]


def _split_mask(mask, B, Hq, Sq, Sk):
    """-> (bool keep or None, additive float mask or None), both broadcast to [B, Hq, Sq, Sk]."""
    if mask is None:
        return None, None
    mask = np.asarray(mask)
    full = np.broadcast_to(mask, (B, Hq, Sq, Sk))
    if mask.dtype == np.bool_:
        return full, None
    return None, full


def _softmax_rows(s, exp, log, dtype):
    """Softmax over the last axis with -inf for excluded keys; fully excluded rows -> 0.

    Returns (P, lse). Computation happens in `dtype` (float64 or float32)."""
    m = s.max(axis=-1, keepdims=True)                       # row max, -inf if nothing visible
    empty = np.isneginf(m)
    m_safe = np.where(empty, dtype(0), m)
    p = exp(s - m_safe)                                     # exp(-inf) = 0 for excluded keys
    l = p.sum(axis=-1, keepdims=True, dtype=dtype)
    l_safe = np.where(empty, dtype(1), l)
    with np.errstate(divide="ignore"):
        lse = np.where(empty, dtype(-np.inf), m_safe + log(l_safe))
    return p, l_safe, lse[..., 0]


def _with_sinks(s, sinks, dtype):
    """The scores [B, Hq, Sq, Sk] with one more column: sinks[h] (gpt-oss), or s itself."""
    if sinks is None:
        return s
    B, Hq, Sq, _ = s.shape
    column = np.broadcast_to(np.asarray(sinks, dtype=dtype).reshape(1, Hq, 1, 1), (B, Hq, Sq, 1))
    return np.concatenate([s, column], axis=-1)


def _prepare(q, k, v, layout):
    q, k, v = (to_bhsd(np.asarray(x), layout) for x in (q, k, v))
    B, Hq, Sq, D = q.shape
    _, Hkv, Sk, _ = k.shape
    assert Hq % Hkv == 0
    return q, k, v, (B, Hq, Hkv, Sq, Sk, D)


def sdpa_reference(q, k, v, *, causal=False, causal_align="bottom_right", window=None,
                   scale=None, mask=None, kv_lens=None, softcap=0.0, sinks=None, layout="bhsd"):
    """float64 reference. Returns (out float64 with q's shape, lse float64 [B, Hq, Sq]).

    sinks: as transformers' gpt-oss attention: one more score column per head, in the softmax,
    dropped before the weighted sum."""
    q, k, v, (B, Hq, Hkv, Sq, Sk, D) = _prepare(q, k, v, layout)
    group = Hq // Hkv
    f64 = np.float64
    q64 = q.astype(f64)                                     # [B, Hq, Sq, D]
    k64 = np.repeat(k.astype(f64), group, axis=1)           # [B, Hq, Sk, D]: head h -> kv head h // group
    v64 = np.repeat(v.astype(f64), group, axis=1)           # [B, Hq, Sk, D]
    if scale is None:
        scale = 1.0 / math.sqrt(D)

    # scores: [B, Hq, Sq, Sk]
    s = np.matmul(q64, np.swapaxes(k64, -1, -2)) * f64(scale)
    # softcap
    if softcap > 0:
        s = f64(softcap) * np.tanh(s / f64(softcap))
    # masks
    keep_mask, add_mask = _split_mask(mask, B, Hq, Sq, Sk)
    if add_mask is not None:
        s = s + add_mask.astype(f64)
    keep = visible_keys(B, Sq, Sk, causal=causal, causal_align=causal_align, window=window,
                        kv_lens=kv_lens)
    if keep_mask is not None:
        keep = keep & keep_mask
    s = np.where(keep, s, -np.inf)
    # softmax (with the sinks' column, if any)
    p, l, lse = _softmax_rows(_with_sinks(s, sinks, f64), np.exp, np.log, f64)
    # weighted sum
    out = np.matmul(p[..., :Sk], v64) / l                             # [B, Hq, Sq, D]
    if layout == "bshd":
        out = np.swapaxes(out, 1, 2)
    return out, lse


def sdpa_naive(q, k, v, dtype, *, causal=False, causal_align="bottom_right", window=None,
               scale=None, mask=None, kv_lens=None, softcap=0.0, sinks=None, layout="bhsd"):
    """The same formula with every intermediate rounded to `dtype` (np dtype of q).

    Returns (out float32 holding dtype-rounded values, lse float32). The lse returned is
    the naive one of this dtype; callers use the float32 naive for lse error bounds."""
    dtype = np.dtype(dtype)
    f32 = np.float32
    if dtype == np.float32:
        def rnd(x):
            return x
    else:
        def rnd(x):
            return np.asarray(x, dtype=f32).astype(dtype).astype(f32)

    q, k, v, (B, Hq, Hkv, Sq, Sk, D) = _prepare(q, k, v, layout)
    group = Hq // Hkv
    q32 = rnd(q.astype(f32))
    k32 = rnd(np.repeat(k.astype(f32), group, axis=1))
    v32 = rnd(np.repeat(v.astype(f32), group, axis=1))
    if scale is None:
        scale = 1.0 / math.sqrt(D)

    s = rnd(np.matmul(q32, np.swapaxes(k32, -1, -2)))
    s = rnd(s * f32(scale))
    if softcap > 0:
        s = rnd(f32(softcap) * rnd(np.tanh(rnd(s / f32(softcap)))))
    keep_mask, add_mask = _split_mask(mask, B, Hq, Sq, Sk)
    if add_mask is not None:
        s = rnd(s + add_mask.astype(f32))
    keep = visible_keys(B, Sq, Sk, causal=causal, causal_align=causal_align, window=window,
                        kv_lens=kv_lens)
    if keep_mask is not None:
        keep = keep & keep_mask
    s = np.where(keep, s, f32(-np.inf))
    p, l, lse = _softmax_rows(_with_sinks(s, sinks, f32), np.exp, np.log, f32)
    p = rnd(p[..., :Sk] / l)
    out = rnd(np.matmul(p, v32))
    if layout == "bshd":
        out = np.swapaxes(out, 1, 2)
    return out, lse.astype(f32)


def sdpa_loops(q, k, v, *, causal=False, causal_align="bottom_right", window=None,
               scale=None, mask=None, kv_lens=None, softcap=0.0, layout="bhsd"):
    """Slow, literal, per-(b, h, i, j) transcription of the semantics, float64.

    Only for checking sdpa_reference on tiny shapes (tests/python/test_reference.py)."""
    q, k, v = (to_bhsd(np.asarray(x), layout).astype(np.float64) for x in (q, k, v))
    B, Hq, Sq, D = q.shape
    Hkv, Sk = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    full_mask = None if mask is None else np.broadcast_to(np.asarray(mask), (B, Hq, Sq, Sk))
    out = np.zeros((B, Hq, Sq, D))
    lse = np.full((B, Hq, Sq), -np.inf)
    for b in range(B):
        sk_eff = Sk if kv_lens is None else int(kv_lens[b])
        for h in range(Hq):
            hk = h // (Hq // Hkv)
            for i in range(Sq):
                d = sk_eff - Sq if causal_align == "bottom_right" else 0
                scores, rows = [], []
                for j in range(Sk):
                    if kv_lens is not None and j >= sk_eff:
                        continue
                    if causal and not j <= i + d:
                        continue
                    if window is not None:
                        left, right = window
                        if left != -1 and j < i + d - left:
                            continue
                        if right != -1 and j > i + d + right:
                            continue
                    x = float(np.dot(q[b, h, i], k[b, hk, j])) * scale
                    if softcap > 0:
                        x = softcap * math.tanh(x / softcap)
                    if full_mask is not None:
                        mv = full_mask[b, h, i, j]
                        if full_mask.dtype == np.bool_:
                            if not mv:
                                continue
                        else:
                            x += float(mv)
                    if x == -math.inf:
                        continue
                    scores.append(x)
                    rows.append(j)
                if not scores:
                    continue
                m = max(scores)
                w = [math.exp(x - m) for x in scores]
                tot = sum(w)
                lse[b, h, i] = m + math.log(tot)
                for wj, j in zip(w, rows):
                    out[b, h, i] += (wj / tot) * v[b, hk, j]
    if layout == "bshd":
        out = np.swapaxes(out, 1, 2)
    return out, lse
