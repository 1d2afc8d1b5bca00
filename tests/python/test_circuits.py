"""attn.circuits (QK top pairs, OV eigenvalues and copying scores) and _attn.read_tensor.

On the tiny GPT-2 fixture (vocab 300) every circuit is also built in full, vocab x vocab, in
float64 with NumPy, and the blockwise / small-product answers are checked against it. The
slicing of heads here is written from the fixture's documented layout
(tests/fixtures/make_gpt2_fixture.py), not with circuits.head_weights. read_tensor itself is
checked against an independent reader, the `gguf` package (GGUFReader + gguf.quants.dequantize).
SmolLM2 tests (GQA, the real quantized weights) skip when the model file is absent.
"""
from __future__ import annotations

import os

import gguf  # independent reader (python/requirements.txt pins gguf==0.19.0)
import numpy as np
import pytest

import attn
from attn import _attn, circuits

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
GPT2_TINY = os.path.join(FIXTURES, "gpt2_tiny.gguf")
GPT2_TINY_F16 = os.path.join(FIXTURES, "gpt2_tiny_f16.gguf")
SMOLLM2 = attn.Model.default_path()  # SmolLM2-135M-Instruct Q4_1
needs_smollm2 = pytest.mark.skipif(not os.path.exists(SMOLLM2), reason=f"SmolLM2 Q4_1 not found at {SMOLLM2}")


@pytest.fixture(scope="module")
def gpt2():
    return attn.Model.load(GPT2_TINY)


@pytest.fixture(scope="module")
def smollm2():
    return attn.Model.load(SMOLLM2)


# ---- read_tensor vs the gguf package --------------------------------------------------------


def _check_against_gguf_package(path: str) -> int:
    reader = gguf.GGUFReader(path)
    assert _attn.tensor_names(path) == [t.name for t in reader.tensors]
    for t in reader.tensors:
        expected = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        expected = expected.reshape([int(d) for d in reversed(t.shape)])  # ne reversed
        ours = _attn.read_tensor(path, t.name)
        assert ours.dtype == np.float32 and ours.shape == expected.shape, t.name
        np.testing.assert_array_equal(ours, expected, err_msg=t.name)
    return len(reader.tensors)


@pytest.mark.parametrize("path", [GPT2_TINY, GPT2_TINY_F16])
def test_read_tensor_equals_gguf_package_gpt2(path):
    assert _check_against_gguf_package(path) > 0


@needs_smollm2
def test_read_tensor_equals_gguf_package_smollm2_q4_1():
    assert _check_against_gguf_package(SMOLLM2) == 272  # Q4_1 matrices, Q8_0 embedding, F32 norms


def test_read_tensor_shape_and_errors():
    assert _attn.read_tensor(GPT2_TINY, "token_embd.weight").shape == (300, 64)
    assert _attn.read_tensor(GPT2_TINY, "blk.0.attn_qkv.weight").shape == (192, 64)
    assert _attn.read_tensor(GPT2_TINY, "blk.0.attn_qkv.bias").shape == (192,)
    with pytest.raises(ValueError, match="no_such_tensor"):
        _attn.read_tensor(GPT2_TINY, "no_such_tensor")
    with pytest.raises(ValueError, match="cannot open"):
        _attn.read_tensor(os.path.join(FIXTURES, "missing.gguf"), "token_embd.weight")
    a, b = _attn.read_tensors(GPT2_TINY, ["output_norm.weight", "output_norm.bias"])
    assert a.shape == b.shape == (64,)


# ---- brute force on the GPT-2 fixture ------------------------------------------------------


def _brute_force_head(path: str, layer: int, head: int, n_heads: int = 4):
    """Full float64 QK [vocab, vocab] and OV [vocab, vocab] circuits of one head, built from the
    fixture's documented layout: attn_qkv rows are [q | k | v], head-major inside each; norm
    gains folded into W_Q/W_K/W_V and W_U; tied unembedding."""
    t = lambda name: _attn.read_tensor(path, name).astype(np.float64)  # noqa: E731
    E = t("token_embd.weight")  # [vocab, d]
    d = E.shape[1]
    hd = d // n_heads
    gamma = t(f"blk.{layer}.attn_norm.weight")
    qkv = t(f"blk.{layer}.attn_qkv.weight")  # [3d, d], y = W x
    rows = slice(head * hd, (head + 1) * hd)
    W_Q = (qkv[:d][rows] * gamma).T  # [d, hd]
    W_K = (qkv[d : 2 * d][rows] * gamma).T
    W_V = (qkv[2 * d :][rows] * gamma).T
    W_O = t(f"blk.{layer}.attn_output.weight")[:, rows].T  # [hd, d]
    W_U = (E * t("output_norm.weight")).T  # [d, vocab]
    qk = E @ W_Q @ W_K.T @ E.T
    ov = E @ W_V @ W_O @ W_U
    return qk, ov


HEADS = [(layer, head) for layer in range(2) for head in range(4)]


@pytest.mark.parametrize("layer,head", HEADS)
def test_qk_top_pairs_match_brute_force(gpt2, layer, head, monkeypatch):
    # Tiny blocks, so the 300-token scan runs over many blocks and the pruning is exercised.
    monkeypatch.setattr(circuits, "_BLOCK_ENTRIES", 300 * 7)
    qk, _ = _brute_force_head(GPT2_TINY, layer, head)
    top = 25
    pairs = circuits.qk_circuit_top_pairs(gpt2, layer, head, top=top)
    assert len(pairs) == top
    expected = np.sort(qk.ravel())[::-1][:top]
    got = np.array([p["score"] for p in pairs])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)  # the top scores, in order
    for p in pairs:  # and each reported pair has the score it claims
        assert p["score"] == pytest.approx(qk[p["query_token"], p["key_token"]], rel=1e-5, abs=1e-6)
        assert p["query_text"] == gpt2.detokenize([p["query_token"]])
        assert p["key_text"] == gpt2.detokenize([p["key_token"]])
    # The pairs themselves, where the brute-force order has no near-tie.
    flat = np.argsort(-qk.ravel(), kind="stable")[:top]
    gap = np.abs(np.diff(np.sort(qk.ravel())[::-1][: top + 1])).min()
    if gap > 1e-4:
        assert [(p["query_token"], p["key_token"]) for p in pairs] == [divmod(int(f), 300) for f in flat]


def test_qk_tokens_restriction(gpt2):
    qk, _ = _brute_force_head(GPT2_TINY, 1, 2)
    ids = np.array([250, 3, 17, 17, 299, 42, 100, 101, 7])
    uniq = np.unique(ids)
    sub = qk[np.ix_(uniq, uniq)]
    pairs = circuits.qk_circuit_top_pairs(gpt2, 1, 2, top=10, tokens=ids)
    np.testing.assert_allclose([p["score"] for p in pairs], np.sort(sub.ravel())[::-1][:10], rtol=1e-5)
    assert all(p["query_token"] in uniq and p["key_token"] in uniq for p in pairs)
    # top larger than the number of pairs returns them all
    assert len(circuits.qk_circuit_top_pairs(gpt2, 1, 2, top=1000, tokens=[5, 6])) == 4


def _match_eigenvalues(small: np.ndarray, full: np.ndarray, atol: float):
    # Pair each eigenvalue of the small product with the nearest unused one of the full matrix
    # (conjugate pairs make a plain sort order fragile).
    left = list(full)
    for ev in small:
        j = int(np.argmin([abs(ev - f) for f in left]))
        assert abs(ev - left[j]) < atol, (ev, left[j])
        left.pop(j)
    return np.array(left)


@pytest.mark.parametrize("layer,head", HEADS)
def test_ov_eigenvalues_and_copying_score_match_full_matrix(gpt2, layer, head):
    _, ov = _brute_force_head(GPT2_TINY, layer, head)
    full = np.linalg.eigvals(ov)  # 300 eigenvalues, all but d_head = 16 of them zero
    small = circuits.ov_eigenvalues(gpt2, layer, head)
    assert small.shape == (16,) and np.all(np.abs(small) > 1e-3)
    scale = np.abs(full).max()
    top16 = full[np.argsort(-np.abs(full))[:16]]
    # LAPACK's error on the 300 x 300 non-normal matrix, not ours, sets the tolerance (~1e-8).
    rest = _match_eigenvalues(small, top16, atol=1e-6 * scale)
    assert rest.size == 0
    assert np.abs(full[np.argsort(-np.abs(full))[16:]]).max() < 1e-6 * scale  # the rest are zero
    brute = full.sum().real / np.abs(full).sum()
    score = circuits.ov_copying_score(gpt2, layer, head)
    assert -1.0 <= score <= 1.0
    assert score == pytest.approx(brute, abs=1e-9)
    # From the full matrix's trace too: sum(lambda) = trace(OV).
    assert np.trace(ov) == pytest.approx(small.sum().real, rel=1e-9)


def test_copying_scores_all_heads(gpt2):
    scores = circuits.copying_scores(gpt2)
    assert scores.shape == (2, 4)
    assert np.all(np.abs(scores) <= 1.0)
    for layer, head in HEADS:
        assert scores[layer, head] == pytest.approx(circuits.ov_copying_score(gpt2, layer, head), abs=1e-12)


def test_copying_score_edge_cases():
    assert circuits.copying_score(np.array([2.0, 3.0])) == 1.0
    assert circuits.copying_score(np.array([-2.0, -0.5])) == -1.0
    assert circuits.copying_score(np.array([1j, -1j])) == 0.0  # a pure rotation copies nothing
    assert circuits.copying_score(np.zeros(4)) == 0.0
    ev = np.array([1 + 1j, 1 - 1j])
    assert circuits.copying_score(ev) == pytest.approx(2 / (2 * np.sqrt(2)))


def test_head_weights_gpt2_split_and_fold(gpt2):
    hw = circuits.head_weights(gpt2, 1, 3)
    qkv_b = _attn.read_tensor(GPT2_TINY, "blk.1.attn_qkv.bias")
    np.testing.assert_array_equal(hw.b_Q, qkv_b[48:64])
    np.testing.assert_array_equal(hw.b_K, qkv_b[64 + 48 : 64 + 64])
    np.testing.assert_array_equal(hw.b_V, qkv_b[128 + 48 : 128 + 64])
    assert hw.W_Q.shape == hw.W_K.shape == hw.W_V.shape == (64, 16) and hw.W_O.shape == (16, 64)
    assert hw.kv_head == 3


def test_errors_name_the_value(gpt2):
    with pytest.raises(ValueError, match="layer = 2"):
        circuits.qk_circuit_top_pairs(gpt2, 2, 0)
    with pytest.raises(ValueError, match="head = -1"):
        circuits.ov_copying_score(gpt2, 0, -1)
    with pytest.raises(ValueError, match="head = 4"):
        circuits.ov_eigenvalues(gpt2, 0, 4)
    with pytest.raises(ValueError, match="top = 0"):
        circuits.qk_circuit_top_pairs(gpt2, 0, 0, top=0)
    with pytest.raises(ValueError, match="token id 300"):
        circuits.qk_circuit_top_pairs(gpt2, 0, 0, tokens=[1, 300])
    with pytest.raises(ValueError, match="tokens is empty"):
        circuits.qk_circuit_top_pairs(gpt2, 0, 0, tokens=[])
    with pytest.raises(TypeError, match="tokens"):
        circuits.qk_circuit_top_pairs(gpt2, 0, 0, tokens=[1.5, 2.0])
    with pytest.raises(TypeError, match="layer"):
        circuits.head_weights(gpt2, 0.5, 0)


# ---- GQA brute force on a synthetic llama file ---------------------------------------------


class _StubModel:
    """What the circuits read from an attn.Model: path, config, detokenize."""

    def __init__(self, path: str, config: dict):
        self.path, self.config = path, config

    def detokenize(self, ids):
        return f"<{ids[0]}>"


@pytest.fixture(scope="module")
def gqa_llama(tmp_path_factory):
    """A one-layer llama-layout file with GQA (4 query heads, 2 KV heads), an untied output
    matrix, F16 attention weights: only the tensors the circuits read."""
    vocab, d, n_heads, n_kv, hd = 120, 32, 4, 2, 8
    rng = np.random.default_rng(7)
    w = {
        "token_embd.weight": rng.normal(size=(vocab, d)),
        "output.weight": rng.normal(size=(vocab, d)),
        "output_norm.weight": rng.uniform(0.5, 1.5, size=d),
        "blk.0.attn_norm.weight": rng.uniform(0.5, 1.5, size=d),
        "blk.0.attn_q.weight": rng.normal(size=(n_heads * hd, d)) / np.sqrt(d),
        "blk.0.attn_k.weight": rng.normal(size=(n_kv * hd, d)) / np.sqrt(d),
        "blk.0.attn_v.weight": rng.normal(size=(n_kv * hd, d)) / np.sqrt(d),
        "blk.0.attn_output.weight": rng.normal(size=(d, n_heads * hd)) / np.sqrt(hd),
    }
    path = str(tmp_path_factory.mktemp("gqa") / "gqa_llama.gguf")
    writer = gguf.GGUFWriter(path, "llama")
    for name, a in w.items():
        writer.add_tensor(name, a.astype(np.float16 if name.startswith("blk.0.attn_") else np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    config = dict(arch="llama", n_layers=1, d_model=d, n_heads=n_heads, n_kv_heads=n_kv, head_dim=hd,
                  vocab_size=vocab, tied_output=False)
    return _StubModel(path, config)


@pytest.mark.parametrize("head", range(4))
def test_gqa_circuits_match_brute_force(gqa_llama, head, monkeypatch):
    monkeypatch.setattr(circuits, "_BLOCK_ENTRIES", 120 * 5)
    t = lambda name: _attn.read_tensor(gqa_llama.path, name).astype(np.float64)  # noqa: E731
    E, gamma = t("token_embd.weight"), t("blk.0.attn_norm.weight")
    q_rows, kv_rows = slice(head * 8, head * 8 + 8), slice(head // 2 * 8, head // 2 * 8 + 8)
    W_Q = (t("blk.0.attn_q.weight")[q_rows] * gamma).T
    W_K = (t("blk.0.attn_k.weight")[kv_rows] * gamma).T
    W_V = (t("blk.0.attn_v.weight")[kv_rows] * gamma).T
    W_O = t("blk.0.attn_output.weight")[:, q_rows].T
    W_U = (t("output.weight") * t("output_norm.weight")).T  # untied
    qk = E @ W_Q @ W_K.T @ E.T
    pairs = circuits.qk_circuit_top_pairs(gqa_llama, 0, head, top=15)
    np.testing.assert_allclose([p["score"] for p in pairs], np.sort(qk.ravel())[::-1][:15], rtol=1e-9)
    full = np.linalg.eigvals(E @ W_V @ W_O @ W_U)
    brute = full.sum().real / np.abs(full).sum()
    assert circuits.ov_copying_score(gqa_llama, 0, head) == pytest.approx(brute, abs=1e-9)
    top8 = full[np.argsort(-np.abs(full))[:8]]
    assert _match_eigenvalues(circuits.ov_eigenvalues(gqa_llama, 0, head), top8, 1e-6 * np.abs(full).max()).size == 0
    assert circuits.copying_scores(gqa_llama)[0, head] == pytest.approx(brute, abs=1e-9)


# ---- SmolLM2: GQA and the real quantized weights -------------------------------------------


@needs_smollm2
def test_gqa_heads_share_kv_slices(smollm2):
    c = smollm2.config
    assert (c["n_heads"], c["n_kv_heads"]) == (9, 3)
    h0, h1, h2, h3 = (circuits.head_weights(smollm2, 4, h) for h in range(4))
    assert h0.kv_head == h1.kv_head == h2.kv_head == 0 and h3.kv_head == 1
    for other in (h1, h2):
        np.testing.assert_array_equal(other.W_K, h0.W_K)
        np.testing.assert_array_equal(other.W_V, h0.W_V)
        assert not np.array_equal(other.W_Q, h0.W_Q) and not np.array_equal(other.W_O, h0.W_O)
    assert not np.array_equal(h3.W_K, h0.W_K) and not np.array_equal(h3.W_V, h0.W_V)
    # The slices are the documented rows of the GGUF matrices, gain folded.
    gamma = _attn.read_tensor(SMOLLM2, "blk.4.attn_norm.weight")
    wk = _attn.read_tensor(SMOLLM2, "blk.4.attn_k.weight")  # [3 * 64, 576]
    wq = _attn.read_tensor(SMOLLM2, "blk.4.attn_q.weight")  # [9 * 64, 576]
    np.testing.assert_allclose(h3.W_K, (wk[64:128] * gamma).T, rtol=1e-6)
    np.testing.assert_allclose(h2.W_Q, (wq[128:192] * gamma).T, rtol=1e-6)


@needs_smollm2
def test_gqa_qk_depends_on_own_w_q(smollm2):
    tokens = np.arange(0, 49152, 16)  # 3072 tokens: brute force stays small
    E = circuits.embedding(smollm2)
    h0, h1 = circuits.head_weights(smollm2, 4, 0), circuits.head_weights(smollm2, 4, 1)
    a = circuits.qk_circuit_top_pairs(smollm2, 4, 0, top=10, tokens=tokens)
    b = circuits.qk_circuit_top_pairs(smollm2, 4, 1, top=10, tokens=tokens)
    assert [p["score"] for p in a] != [p["score"] for p in b]  # same W_K, different W_Q
    # Head 1's circuit is head 0's K with head 1's Q: swapping in the W_Q reproduces it.
    q, k, s = circuits.qk_top_pairs_from_weights(E, h1.W_Q, h0.W_K, top=10, tokens=tokens)
    assert list(zip(q.tolist(), k.tolist())) == [(p["query_token"], p["key_token"]) for p in b]
    np.testing.assert_allclose(s, [p["score"] for p in b], rtol=1e-12)
    # Changing head 0's own W_Q changes its scores (scaling one column of it by 3).
    w_q = h0.W_Q.copy()
    w_q[:, 5] *= 3.0
    _, _, s2 = circuits.qk_top_pairs_from_weights(E, w_q, h0.W_K, top=10, tokens=tokens)
    assert not np.allclose(s2, [p["score"] for p in a])
    # And the pruned blockwise scan equals brute force on this real, quantized head.
    sub = E[tokens].astype(np.float64)
    qk = (sub @ h0.W_Q) @ (sub @ h0.W_K).T
    np.testing.assert_allclose([p["score"] for p in a], np.sort(qk.ravel())[::-1][:10], rtol=1e-5)


@needs_smollm2
def test_smollm2_copying_scores(smollm2):
    scores = circuits.copying_scores(smollm2)
    assert scores.shape == (30, 9) and np.all(np.abs(scores) <= 1.0)
    assert scores[7, 4] == pytest.approx(circuits.ov_copying_score(smollm2, 7, 4), abs=1e-12)
    ev = circuits.ov_eigenvalues(smollm2, 7, 4)
    assert ev.shape == (64,) and np.all(np.diff(np.abs(ev)) <= 1e-12)  # largest magnitude first


def test_model_methods_are_the_circuits_functions(gpt2):
    """attn.Model.qk_circuit / ov_copying_score / copying_scores wrap attn.circuits."""
    assert gpt2.ov_copying_score(1, 2) == circuits.ov_copying_score(gpt2, 1, 2)
    scores = gpt2.copying_scores()
    assert scores.shape == (2, 4) and scores[1, 2] == pytest.approx(gpt2.ov_copying_score(1, 2))
    assert gpt2.qk_circuit(0, 1, top=3) == circuits.qk_circuit_top_pairs(gpt2, 0, 1, top=3)
