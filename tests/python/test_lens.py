"""The logit lens (Model.logit_lens, attn lens): each layer's residual stream through the model's
own head. Its last layer is the model's prediction (equal to the logits' log-softmax), and on
SmolLM2 the copy of a repeated phrase is predicted only by the late layers (where its induction
heads sit)."""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ATTN_BIN = os.path.join(ROOT, "build", "bin", "attn")
TEXT = "The Eiffel Tower is in the city of Paris. The Eiffel Tower is in the city of"


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def test_last_layer_is_the_models_prediction(model):
    r = model.logit_lens(TEXT, k=4)
    ids = r["tokens"]
    n, L = len(ids), model.config["n_layers"]
    assert r["top_ids"].shape == (L + 1, n, 4) and r["top_ids"].dtype == np.int32
    assert r["top_logprobs"].shape == (L + 1, n, 4) and r["next_logprob"].shape == (L + 1, n - 1)
    lp = _log_softmax(model.logits(ids))
    want = np.argsort(-lp, axis=1, kind="stable")[:, :4]
    assert (r["top_ids"][L] == want).all()
    np.testing.assert_allclose(r["top_logprobs"][L], np.take_along_axis(lp, want, 1), atol=2e-5)
    np.testing.assert_allclose(r["next_logprob"][L], lp[np.arange(n - 1), ids[1:]], atol=2e-5)
    assert (r["next_rank"] >= 0).all() and ((r["next_rank"] == 0) == (r["top_ids"][:, :-1, 0] == ids[1:])).all()


def test_the_copy_forms_in_the_late_layers(model):
    # In the second copy of the phrase, the next token is known from the first: the late layers
    # predict it with confidence, the early ones do not.
    r = model.logit_lens(TEXT, k=1)
    n = len(r["tokens"])
    second = slice(n - 7, n - 1)  # " Eiffel Tower is in the city" predicting the next word
    early = np.exp(r["next_logprob"][1:8, second]).mean()
    late = np.exp(r["next_logprob"][24:, second]).mean()
    assert late > 0.5 > 0.1 > early, (early, late)


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="k = 0"):
        model.logit_lens(TEXT, k=0)
    with pytest.raises(ValueError, match="top_k"):
        model.logit_lens(TEXT, k=10**6)
    with pytest.raises(ValueError, match="no tokens"):
        model.logit_lens([])


def test_cli_table_and_json():
    r = subprocess.run([ATTN_BIN, "lens", "--positions", "4", "--every", "10", TEXT], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    table = [line for line in lines if line.split(" ", 1)[0] in ("input", "embed", "10", "20", "30", "next")]
    assert [line.split(" ", 1)[0] for line in table] == ["input", "embed", "10", "20", "30", "next"]
    assert "' Paris'" in table[4] and "' city'" in table[0]
    r = subprocess.run([ATTN_BIN, "lens", "--json", "-k", "2", "Hello world"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert len(j["layers"]) == 31 and len(j["layers"][-1]["top"]) == len(j["tokens"])
    assert len(j["layers"][0]["top"][0]) == 2 and {"id", "text", "logprob"} <= set(j["layers"][0]["top"][0][0])
    r = subprocess.run([ATTN_BIN, "lens", ""], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "no tokens" in r.stderr


FIXTURES = os.path.join(ROOT, "tests", "fixtures")


@pytest.mark.parametrize("name", ["gpt2_tiny", "llama_tiny", "qwen2_tiny", "granite_tiny", "gemma2_tiny",
                                  "gptoss_tiny", "qwen3moe_tiny", "phi3_tiny", "gemma_tiny", "olmo2_tiny",
                                  "starcoder2_tiny", "phi2_tiny", "stablelm_tiny", "stablelm_parallel_tiny", "ernie4_5_tiny", "exaone4_tiny", "olmo3_tiny", "granitemoe_tiny", "cohere_tiny", "cohere2_tiny"])
def test_attribution_parts_sum_to_the_models_logit(name):
    import attn
    m = attn.Model.load(os.path.join(FIXTURES, name + ".gguf"))
    c = m.config
    ids = [(i * 37 + 11) % c["vocab_size"] for i in range(12)]
    for pos, baseline in ((-1, 7), (4, None)):
        r = m.logit_attribution(ids, 5, baseline=baseline, pos=pos)
        assert r["pos"] == pos % len(ids)
        # float32 weights: the frozen-scale sum is the model's own logit (difference).
        assert r["total"] == pytest.approx(r["logit"], rel=1e-5, abs=1e-5)
        parts = dict(zip(r["names"], r["values"]))
        L, H = c["n_layers"], c["n_heads"]
        if c["post_norms"]:
            assert all(f"L{l}.attn" in parts and f"L{l}H0" not in parts for l in range(L))
        else:
            # Every head is a part, and z_h W_O_h explains the attention output: nothing is left.
            assert all(f"L{l}H{h}" in parts for l in range(L) for h in range(H))
            rest = [abs(parts[f"L{l}.attn_rest"]) for l in range(L)]
            assert max(rest) < 1e-5 * (1 + max(abs(v) for v in r["values"]))
        assert all(f"L{l}.mlp" in parts for l in range(L))
        assert ("pos_embed" in parts) == (c["arch"] == "gpt2")
        assert ("ln_final.bias" in parts) == (c["norm"] == "layer" and c["arch"] not in ("command-r", "cohere2"))  # no bias there


def test_attribution_on_smollm2(model):
    # The copy of " Paris" over " London" in a repeated sentence: the parts add up to the model's
    # logit difference (its quantized unembedding rounds a little), and heads of the late layers
    # (where SmolLM2's induction heads sit) carry much of it.
    r = model.logit_attribution(TEXT, " Paris", baseline=" London")
    assert r["logit"] > 2
    assert r["total"] == pytest.approx(r["logit"], rel=0.02)
    parts = dict(zip(r["names"], r["values"]))
    heads = {k: v for k, v in parts.items() if "H" in k}
    assert len(heads) == 30 * 9
    top = max(heads, key=heads.get)
    assert int(top[1:top.index("H")]) >= 15, top
    with pytest.raises(ValueError, match="is 2 tokens, not one"):
        model.logit_attribution(TEXT, " Parisienne")
    with pytest.raises(ValueError, match="pos = 99"):
        model.logit_attribution(TEXT, " Paris", pos=99)
    with pytest.raises(ValueError, match="baseline = -1"):
        model.logit_attribution(TEXT, " Paris", baseline=-1)
    with pytest.raises(TypeError, match="target must be"):
        model.logit_attribution(TEXT, 3.5)
