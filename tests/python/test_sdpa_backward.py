"""Tests of attn.sdpa_backward against PyTorch autograd (tests/fixtures/sdpa_backward_torch.npz,
made by tests/fixtures/make_backward_fixture.py), and of its argument checking.

Accuracy rule (FlashAttention's): with ref the float64 torch gradient and naive torch's float32
gradient of the same inputs (its error is stored in the fixture),
    max|attn - ref| <= 2 * max|naive - ref| + atol,   atol = 1e-5
for dq, dk and dv. attn gets the out and lse of its own forward (float32), as in training. The
atol covers the cancellation in dS = P (dP - D_i): two float32 sums of D products of size about
|dout| |v| sqrt(D) whose rounding (~1e-6) the naive computation and attn make in different orders
(the C++ tests use the same slack, tests/cpp/attention_backward_test.cc).
"""

import json
import os

import numpy as np
import pytest

import attn
from reference import ml_dtypes

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures",
                       "sdpa_backward_torch.npz")
ATOL = 1e-5


def _fixture():
    with np.load(FIXTURE) as f:
        return {key: f[key] for key in f.files}


DATA = _fixture()
CASES = json.loads(str(DATA["cases"]))


def _grads(name, layout="bhsd", threads=None):
    o = json.loads(str(DATA[f"{name}/options"]))
    q, k, v, dout = (DATA[f"{name}/{x}"] for x in ("q", "k", "v", "dout"))
    if layout == "bshd":
        q, k, v, dout = (np.ascontiguousarray(x.swapaxes(1, 2)) for x in (q, k, v, dout))
    out, lse = attn.sdpa(q, k, v, return_lse=True, layout=layout, **o)
    grads = attn.sdpa_backward(q, k, v, out, lse, dout, layout=layout, threads=threads, **o)
    if layout == "bshd":
        grads = tuple(g.swapaxes(1, 2) if g.ndim == 4 else g for g in grads)
    return grads


@pytest.mark.parametrize("name", CASES)
def test_matches_torch_autograd(name):
    grads = _grads(name)
    naive = DATA[f"{name}/naive_err"]
    for g, which, err in zip(grads, ("dq", "dk", "dv"), naive):
        ref = DATA[f"{name}/{which}"]
        assert g.shape == ref.shape and g.dtype == np.float32
        diff = np.abs(g.astype(np.float64) - ref).max()
        assert diff <= 2 * err + ATOL, f"{which}: max|attn - torch64| = {diff:.2e}, naive {err:.2e}"


@pytest.mark.parametrize("name", [n for n in CASES if f"{n}/dsinks" in DATA])
def test_sinks_gradient_matches_torch_autograd(name):
    # gpt-oss's learned sinks: sdpa_backward returns dL/dsinks as a fourth array.
    grads = _grads(name)
    assert len(grads) == 4
    ref, naive = DATA[f"{name}/dsinks"], float(DATA[f"{name}/naive_err_dsinks"])
    assert grads[3].shape == ref.shape and grads[3].dtype == np.float32
    diff = np.abs(grads[3].astype(np.float64) - ref).max()
    assert diff <= 2 * naive + ATOL, f"dsinks: max|attn - torch64| = {diff:.2e}, naive {naive:.2e}"
    assert grads[3][0] == 0.0  # head 0's sink is -inf: no gradient


def test_sinks_gradient_needs_sinks_in_the_forward_options():
    o = json.loads(str(DATA["sinks_decode/options"]))
    q, k, v, dout = (DATA[f"sinks_decode/{x}"] for x in ("q", "k", "v", "dout"))
    out, lse = attn.sdpa(q, k, v, return_lse=True, **o)
    o.pop("sinks")
    # Without sinks, the result is three arrays (the lse says the sinks were there: the caller's
    # business, as with any option that differs between forward and backward).
    assert len(attn.sdpa_backward(q, k, v, out, lse, dout, **o)) == 3
    with pytest.raises(ValueError, match="sinks"):
        attn.sdpa_backward(q, k, v, out, lse, dout, sinks=np.zeros(5, np.float32), **o)


def test_fixture_records_versions():
    versions = json.loads(str(DATA["versions"]))
    assert "torch" in versions and "numpy" in versions


def test_layouts_and_threads_give_identical_bits():
    name = "causal_bottom_right_gqa"
    base = _grads(name, threads=1)
    for layout, threads in (("bhsd", 2), ("bshd", 1), ("bshd", None)):
        for a, b in zip(base, _grads(name, layout, threads)):
            np.testing.assert_array_equal(a, b)


def test_strided_inputs_are_read_in_place():
    # Non-contiguous views (every other head dim of a wider array) give the same gradients.
    rng = np.random.default_rng(1)
    wide = [rng.standard_normal((1, 2, 9, 16)).astype(np.float32) for _ in range(4)]
    q, k, v, dout = (w[..., ::2] for w in wide)
    out, lse = attn.sdpa(q, k, v, causal=True, return_lse=True)
    strided = attn.sdpa_backward(q, k, v, out, lse, dout, causal=True)
    dense = attn.sdpa_backward(*(np.ascontiguousarray(x) for x in (q, k, v)), out, lse,
                               np.ascontiguousarray(dout), causal=True)
    for a, b in zip(strided, dense):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_inputs(dtype):
    if dtype == "bfloat16" and ml_dtypes is None:
        pytest.skip("ml_dtypes not installed")
    np_dtype = np.float16 if dtype == "float16" else ml_dtypes.bfloat16
    name = "causal_bottom_right_gqa"
    o = json.loads(str(DATA[f"{name}/options"]))
    q, k, v, dout = (DATA[f"{name}/{x}"].astype(np_dtype) for x in ("q", "k", "v", "dout"))
    out, lse = attn.sdpa(q, k, v, return_lse=True, **o)
    grads = attn.sdpa_backward(q, k, v, out, lse, dout, **o)
    # Loose: the inputs themselves were rounded (the fixture's gradients are of the float32 ones).
    tol = 0.05 if dtype == "float16" else 0.3
    for g, which in zip(grads, ("dq", "dk", "dv")):
        assert g.dtype == np_dtype
        ref = DATA[f"{name}/{which}"]
        assert np.abs(g.astype(np.float64) - ref).max() <= tol * max(1.0, np.abs(ref).max()), which


def test_rows_without_keys_give_zero_gradients():
    rng = np.random.default_rng(2)
    q, k, v, dout = (rng.standard_normal((2, 2, 5, 8)).astype(np.float32) for _ in range(4))
    out, lse = attn.sdpa(q, k, v, kv_lens=[0, 3], return_lse=True)
    assert np.isneginf(lse[0]).all()
    dq, dk, dv = attn.sdpa_backward(q, k, v, out, lse, dout, kv_lens=[0, 3])
    assert not np.isnan(dq).any()
    assert (dq[0] == 0).all() and (dk[0] == 0).all() and (dv[0] == 0).all()
    assert (dk[1, :, 3:] == 0).all() and (dv[1, :, 3:] == 0).all()  # padding keys
    assert np.abs(dq[1]).max() > 0


def _inputs():
    rng = np.random.default_rng(3)
    q, k, v, dout = (rng.standard_normal((1, 4, 6, 8)).astype(np.float32) for _ in range(4))
    k, v = k[:, :2], v[:, :2]
    out, lse = attn.sdpa(q, k, v, return_lse=True)
    return q, k, v, out, lse, dout


def test_mismatched_shapes_raise_value_error_naming_the_argument():
    q, k, v, out, lse, dout = _inputs()
    with pytest.raises(ValueError, match="dout: shape"):
        attn.sdpa_backward(q, k, v, out, lse, dout[:, :, :5])
    with pytest.raises(ValueError, match="out: shape"):
        attn.sdpa_backward(q, k, v, out[:, :3], lse, dout)
    with pytest.raises(ValueError, match="lse: shape"):
        attn.sdpa_backward(q, k, v, out, lse[:, :, :5], dout)
    with pytest.raises(ValueError, match="v: shape"):
        attn.sdpa_backward(q, k, v[:, :, :5], out, lse, dout)
    with pytest.raises(ValueError, match="dout: expected 4 dimensions"):
        attn.sdpa_backward(q, k, v, out, lse, dout[0])
    with pytest.raises(ValueError, match="kv_lens"):
        attn.sdpa_backward(q, k, v, out, lse, dout, kv_lens=[7])
    with pytest.raises(ValueError, match="window"):
        attn.sdpa_backward(q, k, v, out, lse, dout, window=(-2, 0))


def test_wrong_types_raise_type_error():
    q, k, v, out, lse, dout = _inputs()
    with pytest.raises(TypeError, match="dout: dtype"):
        attn.sdpa_backward(q, k, v, out, lse, dout.astype(np.float64))
    with pytest.raises(TypeError, match="dtype"):
        attn.sdpa_backward(q.astype(np.int32), k, v, out, lse, dout)
    with pytest.raises(TypeError, match="dout: expected a NumPy array"):
        attn.sdpa_backward(q, k, v, out, lse, dout.tolist())
