"""Checks of the test references themselves (no attn needed).

The vectorized float64 reference is compared with a literal per-element transcription of
the semantics, and the masking rules with hand-written patterns, so that a mistake in the
reference cannot hide a mistake in attn.
"""

import numpy as np
import pytest

from reference import (ml_dtypes, np_dtype, sdpa_loops, sdpa_naive, sdpa_reference,
                       visible_keys)


def _rand(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


# (name, B, Hq, Hkv, Sq, Sk, D, kwargs); kwargs may use "MASK_BOOL"/"MASK_FLOAT"/"KV" placeholders
_LOOP_CASES = [
    ("plain", 2, 4, 2, 3, 5, 4, {}),
    ("causal_br_sq_lt_sk", 1, 2, 1, 2, 5, 3, dict(causal=True)),
    ("causal_br_sq_gt_sk", 1, 2, 2, 6, 3, 3, dict(causal=True)),
    ("causal_tl", 2, 3, 1, 6, 4, 2, dict(causal=True, causal_align="top_left")),
    ("window_br", 1, 2, 2, 5, 7, 3, dict(window=(1, 2))),
    ("window_left_only", 1, 2, 1, 5, 7, 3, dict(window=(2, -1))),
    ("window_tl_causal", 1, 2, 1, 7, 5, 3, dict(window=(1, 1), causal=True,
                                                 causal_align="top_left")),
    ("kv_lens_causal", 3, 2, 1, 4, 6, 3, dict(kv_lens="KV", causal=True)),
    ("kv_lens_window", 3, 2, 2, 4, 6, 3, dict(kv_lens="KV", window=(1, 0))),
    ("bool_mask", 2, 2, 1, 4, 5, 3, dict(mask="MASK_BOOL")),
    ("float_mask_softcap", 2, 2, 1, 4, 5, 3, dict(mask="MASK_FLOAT", softcap=2.0, scale=1.5)),
    ("bshd", 2, 4, 2, 3, 5, 4, dict(layout="bshd", causal=True)),
]


@pytest.mark.parametrize("name,B,Hq,Hkv,Sq,Sk,D,kwargs", _LOOP_CASES,
                         ids=[c[0] for c in _LOOP_CASES])
def test_vectorized_reference_matches_loops(name, B, Hq, Hkv, Sq, Sk, D, kwargs):
    rng = np.random.default_rng(7)
    kwargs = dict(kwargs)
    layout = kwargs.get("layout", "bhsd")

    def shape(h, s):
        return (B, h, s, D) if layout == "bhsd" else (B, s, h, D)

    q, k, v = _rand(rng, shape(Hq, Sq)), _rand(rng, shape(Hkv, Sk)), _rand(rng, shape(Hkv, Sk))
    if isinstance(kwargs.get("kv_lens"), str):
        kwargs["kv_lens"] = np.array([0, Sk, 2][:B], dtype=np.int64)
    mask_kind = kwargs.get("mask")
    if mask_kind == "MASK_BOOL":
        m = rng.random((B, 1, Sq, Sk)) < 0.6
        m[0, 0, 1, :] = False  # one fully masked row
        kwargs["mask"] = m
    if mask_kind == "MASK_FLOAT":
        m = rng.standard_normal((Sq, Sk)).astype(np.float32)
        m[0, :2] = -np.inf
        kwargs["mask"] = m
    out, lse = sdpa_reference(q, k, v, **kwargs)
    out_l, lse_l = sdpa_loops(q, k, v, **kwargs)
    np.testing.assert_allclose(out, out_l, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.isneginf(lse), np.isneginf(lse_l))
    np.testing.assert_allclose(lse[np.isfinite(lse)], lse_l[np.isfinite(lse_l)], rtol=1e-12)


def test_causal_patterns_from_reference_md():
    # Sq=2, Sk=5, bottom-right: rows 11110 / 11111; top-left: 10000 / 11000.
    br = visible_keys(1, 2, 5, causal=True)[0, 0]
    tl = visible_keys(1, 2, 5, causal=True, causal_align="top_left")[0, 0]
    np.testing.assert_array_equal(br.astype(int), [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(tl.astype(int), [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0]])


def test_window_pattern():
    # Sq=3, Sk=5, off=2: query i sees [i+2-1, i+2+0]
    w = visible_keys(1, 3, 5, window=(1, 0))[0, 0]
    np.testing.assert_array_equal(w.astype(int), [[0, 1, 1, 0, 0], [0, 0, 1, 1, 0],
                                                  [0, 0, 0, 1, 1]])
    # kv_lens=3 moves the alignment: off = 3 - 3 = 0 and keys >= 3 are gone
    w = visible_keys(1, 3, 5, window=(1, 0), kv_lens=[3])[0, 0]
    np.testing.assert_array_equal(w.astype(int), [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0],
                                                  [0, 1, 1, 0, 0]])


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_naive_is_close_to_reference(dtype):
    if dtype == "bfloat16" and ml_dtypes is None:
        pytest.skip("ml_dtypes not installed: bfloat16 untested")
    dt = np_dtype(dtype)
    rng = np.random.default_rng(3)
    q = _rand(rng, (2, 4, 33, 16)).astype(dt)
    k = _rand(rng, (2, 2, 40, 16)).astype(dt)
    v = _rand(rng, (2, 2, 40, 16)).astype(dt)
    ref, ref_lse = sdpa_reference(q, k, v, causal=True)
    naive, naive_lse = sdpa_naive(q, k, v, dt, causal=True)
    err = np.abs(naive - ref).max()
    eps = {"float32": 2.0 ** -24, "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}[dtype]
    assert 0 < err < 50 * eps or (dtype == "float32" and err < 1e-5)
    if dtype == "float32":  # half-dtype naive lse is built from rounded scores; not compared
        assert np.abs(naive_lse - ref_lse).max() < 1e-5
