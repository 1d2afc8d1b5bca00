"""attn.KVCache: chunked appends and attends equal one causal attention over the whole sequence,
and a float16 cache under float32 queries equals attention over the same keys and values rounded
to float16 (the float64 reference)."""
from __future__ import annotations

import numpy as np
import pytest

import attn
from reference import sdpa_reference


def _qkv(rng, B=2, S=37, Hq=6, Hkv=2, D=24):
    q = rng.standard_normal((B, Hq, S, D)).astype(np.float32)
    k = rng.standard_normal((B, Hkv, S, D)).astype(np.float32)
    v = rng.standard_normal((B, Hkv, S, D)).astype(np.float32)
    return q, k, v


def _run_chunked(cache, q, k, v, prompt=20):
    outs, s0 = [], 0
    while s0 < q.shape[2]:
        n = prompt if s0 == 0 else 1
        cache.append(k[:, :, s0:s0 + n], v[:, :, s0:s0 + n])
        outs.append(cache.attend(q[:, :, s0:s0 + n]))
        s0 += n
    return np.concatenate(outs, axis=2)


def test_chunked_decode_equals_full_causal_attention():
    q, k, v = _qkv(np.random.default_rng(0))
    cache = attn.KVCache(2, 2, 24, 64)
    out = _run_chunked(cache, q, k, v)
    assert cache.length == 37 and cache.capacity == 64
    np.testing.assert_allclose(out, attn.sdpa(q, k, v, causal=True), atol=1e-5)
    cache.clear()
    assert cache.length == 0


def test_chunked_decode_with_sinks_equals_the_float64_reference():
    # gpt-oss decodes through its cache with learned sinks (one per query head).
    rng = np.random.default_rng(1)
    q, k, v = _qkv(rng)
    sinks = (2 * rng.standard_normal(6)).astype(np.float32)
    cache = attn.KVCache(2, 2, 24, 64)
    outs, s0 = [], 0
    while s0 < 37:
        n = 20 if s0 == 0 else 1
        cache.append(k[:, :, s0:s0 + n], v[:, :, s0:s0 + n])
        outs.append(cache.attend(q[:, :, s0:s0 + n], sinks=sinks))
        s0 += n
    ref, _ = sdpa_reference(q, k, v, causal=True, sinks=sinks)
    np.testing.assert_allclose(np.concatenate(outs, axis=2), ref, atol=1e-5)
    with pytest.raises(ValueError, match="sinks"):
        cache.attend(q[:, :, :1], sinks=sinks[:5])


def test_float16_cache_under_float32_queries():
    q, k, v = _qkv(np.random.default_rng(1))
    cache = attn.KVCache(2, 2, 24, 64, dtype=np.float16)
    out = _run_chunked(cache, q, k, v)
    assert out.dtype == np.float32
    ref = sdpa_reference(q.astype(np.float64), k.astype(np.float16).astype(np.float64),
                         v.astype(np.float16).astype(np.float64), causal=True)[0]
    np.testing.assert_allclose(out, ref, atol=1e-5)
    # The rounding is visible: the float32 cache gives another result.
    exact = attn.sdpa(q, k, v, causal=True)
    assert np.abs(out - exact).max() > 1e-5


def test_kv_cache_dtype_errors():
    cache = attn.KVCache(1, 1, 8, 4)
    with pytest.raises(TypeError, match="cache dtype float32"):
        cache.append(np.zeros((1, 1, 1, 8), np.float16), np.zeros((1, 1, 1, 8), np.float16))
    half = attn.KVCache(1, 1, 8, 4, dtype=np.float16)
    with pytest.raises(TypeError, match="float32 is also accepted"):
        half.attend(np.zeros((1, 1, 1, 8), np.float64))
    with pytest.raises(TypeError, match="v: dtype float16 != k's dtype float32"):
        half.append(np.zeros((1, 1, 1, 8), np.float32), np.zeros((1, 1, 1, 8), np.float16))
    with pytest.raises(ValueError, match="capacity 4"):
        half.append(np.zeros((1, 1, 5, 8), np.float32), np.zeros((1, 1, 5, 8), np.float32))


def _q8_0(x):
    """ggml's Q8_0 along the last axis, written with NumPy: per 32 values d = max |x| / 127 (stored
    as float16), round(x / d) to nearest even; the values the cache holds."""
    blocks = x.reshape(*x.shape[:-1], -1, 32).astype(np.float32)
    d = np.abs(blocks).max(-1, keepdims=True) / np.float32(127)
    inv = np.where(d > 0, np.float32(1) / np.where(d > 0, d, 1), 0).astype(np.float32)
    q = np.rint(blocks * inv)
    return (q * d.astype(np.float16).astype(np.float32)).reshape(x.shape)


@pytest.mark.parametrize("prompt", [20, 60])  # 60: the prompt chunk takes the prefill kernel
def test_q8_0_cache_equals_attention_over_its_blocks(prompt):
    q, k, v = _qkv(np.random.default_rng(2), S=70, D=64)
    cache = attn.KVCache(2, 2, 64, 80, dtype="q8_0")
    out = _run_chunked(cache, q, k, v, prompt=prompt)
    assert out.dtype == np.float32 and cache.dtype == "q8_0"
    kq, vq = _q8_0(k), _q8_0(v)
    assert 1e-3 < np.abs(kq - k).max() < 0.05  # 8 bits: near, not equal
    ref = sdpa_reference(q.astype(np.float64), kq.astype(np.float64), vq.astype(np.float64), causal=True)[0]
    np.testing.assert_allclose(out, ref, atol=1e-5)
    # Against the exact keys and values the error is the quantization's: about 1% of the values.
    exact = attn.sdpa(q, k, v, causal=True)
    assert 1e-4 < np.abs(out - exact).max() < 0.05


def test_q8_0_cache_errors():
    with pytest.raises(ValueError, match="head_dim = 24 is not a multiple of 32"):
        attn.KVCache(1, 1, 24, 4, dtype="q8_0")
    cache = attn.KVCache(1, 1, 32, 4, dtype="q8_0")
    with pytest.raises(TypeError, match="cache dtype q8_0"):
        cache.append(np.zeros((1, 1, 1, 32), np.float16), np.zeros((1, 1, 1, 32), np.float16))
    with pytest.raises(TypeError, match="cache dtype q8_0"):
        cache.attend(np.zeros((1, 1, 1, 32), np.float16))


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
@pytest.mark.parametrize("Sq", [1, 3, 40])  # decode kernel (3 rows per KV head) and prefill
def test_sdpa_float32_queries_over_half_keys(half, Sq):
    # attn.sdpa takes float32 q over float16 / bfloat16 k and v (GQA, causal): equal to the float64
    # reference over the same half values, within float32's tolerance; the output is float32.
    if half == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        dt = np.dtype(ml_dtypes.bfloat16)
    else:
        dt = np.dtype(np.float16)
    rng = np.random.default_rng(2)
    q = rng.standard_normal((2, 6, Sq, 40)).astype(np.float32)
    k = rng.standard_normal((2, 2, 77, 40)).astype(dt)
    v = rng.standard_normal((2, 2, 77, 40)).astype(dt)
    out = attn.sdpa(q, k, v, causal=True)
    assert out.dtype == np.float32
    ref = sdpa_reference(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64), causal=True)[0]
    np.testing.assert_allclose(out, ref, atol=2e-5)
