"""Activation patching (attn.patching): the corrupted run with one clean activation put back. Exact
invariants on the tiny fixtures (a hook that changes nothing leaves a pass's numbers bit for bit,
and causality: positions before the first difference are untouched), and the causal-tracing
picture on SmolLM2 (the subject's information moves to the last position in the late layers)."""
from __future__ import annotations

import os

import numpy as np
import pytest

import attn
from attn import patching

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")


@pytest.mark.parametrize("name", ["gpt2_tiny", "llama_tiny", "qwen3moe_tiny"])
def test_exact_invariants(name):
    m = attn.Model.load(os.path.join(FIXTURES, name + ".gguf"))
    vocab, L = m.config["vocab_size"], m.config["n_layers"]
    clean = [(i * 37 + 11) % vocab for i in range(9)]
    star = 4
    corrupted = list(clean)
    corrupted[star] = (clean[star] + 1) % vocab
    metric = patching.logit_diff(m, 5, 7)
    want_clean, want_bad = metric(m.logits(clean)), metric(m.logits(corrupted))

    same = patching.patch(m, clean, clean, metric, what="resid_mid")
    assert same["clean"] == same["corrupted"] == want_clean
    assert (same["values"] == want_clean).all()

    r = patching.patch(m, clean, corrupted, metric, what="resid_pre")
    assert (r["clean"], r["corrupted"]) == (want_clean, want_bad)
    v = r["values"]
    assert v.shape == (L, 9)
    assert v[0, star] == want_clean  # the only differing embedding put back: the clean run
    assert (v[0, np.arange(9) != star] == want_bad).all()  # equal embeddings: nothing changes
    assert (v[:, :star] == want_bad).all()  # before the difference, clean and corrupted agree

    post = patching.patch(m, clean, corrupted, metric, what="resid_post")["values"]
    assert post[L - 1, 8] == want_clean  # the last row is all the head reads at the last position
    z = patching.patch(m, clean, corrupted, metric, what="z")["values"]
    assert z.shape == (L, m.config["n_heads"]) and np.isfinite(z).all()
    for what in ("attn_out", "mlp_out"):
        out = patching.patch(m, clean, corrupted, metric, what=what)["values"]
        assert (out[:, :star] == want_bad).all()


def test_causal_tracing_on_smollm2(model):
    clean, corrupted = "The Eiffel Tower is in the city of", "The Colosseum is in the city of"
    metric = patching.logit_diff(model, " Paris", " Rome")
    r = patching.patch(model, clean, corrupted, metric, what="resid_pre")
    assert r["clean"] > 0 > r["corrupted"]
    recovered = (r["values"] - r["corrupted"]) / (r["clean"] - r["corrupted"])
    # Early on the answer lives at the subject's tokens; late, at the last position.
    assert recovered[:8, 2].min() > 0.6 and recovered[:8, -1].max() < 0.2
    assert recovered[25:, -1].min() > 0.6 and recovered[25:, 2].max() < 0.2


def test_bad_arguments(model):
    metric = patching.logit_diff(model, " Paris", " Rome")
    with pytest.raises(ValueError, match="same number"):
        patching.patch(model, "a b c", "a b", metric)
    with pytest.raises(ValueError, match="what = 'pattern'"):
        patching.patch(model, "a b", "a c", metric, what="pattern")
    with pytest.raises(TypeError, match="metric must be callable"):
        patching.patch(model, "a b", "a c", 3)
    with pytest.raises(TypeError, match="not a number"):
        patching.patch(model, "a b", "a c", lambda logits: "high")
    with pytest.raises(ValueError, match="is 2 tokens"):
        patching.logit_diff(model, " Parisienne", " Rome")
