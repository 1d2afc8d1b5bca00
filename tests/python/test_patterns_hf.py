"""attn's attention patterns (blocks.{l}.attn.hook_pattern) against Hugging Face transformers on the
default model, SmolLM2-135M-Instruct Q4_1: every layer and head, on the prompt and token ids of
tests/fixtures/smollm2_patterns_hf.npz (made by tests/fixtures/make_pattern_fixture.py, which
records the versions used).

Both sides read the same GGUF weights; transformers dequantizes them to float32 and runs float32
activations, while attn rounds the input of every quantized matrix product to 8 bits (blocks of
32, as llama.cpp does). That rounding alone is the whole difference at layer 0 and then
propagates: measured with make_pattern_fixture.py --q8 (transformers 5.23, torch 2.15, gguf 0.19),

    attn vs transformers                          max abs diff 0.074, mean 4.8e-4 (layer 0: 0.008)
    transformers with 8-bit inputs vs itself      max abs diff 0.076, mean 4.7e-4 (layer 0: 0.008)
    attn vs transformers with 8-bit inputs        max abs diff 0.073, mean 4.4e-4 (layer 0: 0.0007)

so attn is as far from transformers as transformers is from itself once its activations are
rounded the same way. The bounds below are about twice those measurements; a real mistake (a
wrong rotary pairing, a missed scale, a GQA head mapped to the wrong KV head) moves whole rows,
i.e. differences of order 0.5 and means of order 1e-2.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import attn

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures",
                       "smollm2_patterns_hf.npz")
MODEL = attn.Model.default_path()

pytestmark = pytest.mark.skipif(not os.path.exists(MODEL), reason=f"the default model is absent ({MODEL})")

LAYER0_MAX = 0.02      # measured 0.008: one rounding step of 8-bit inputs, nothing propagated yet
MAX_ABS = 0.15         # measured 0.074 (8-bit inputs alone move transformers by 0.076)
MEAN_ABS = 2e-3        # per layer; measured <= 7.1e-4
ARGMAX_GAP = 0.1       # rows whose top two weights differ by more than this must agree on the top key


@pytest.fixture(scope="module")
def golden():
    f = np.load(FIXTURE)
    versions = json.loads(str(f["versions"]))
    assert os.path.getsize(MODEL) == versions["model_bytes"], (
        f"{MODEL} is not the file the fixture was made from ({versions['model']}, {versions['model_bytes']} bytes)")
    return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def ours(golden):
    model = attn.Model.load()
    ids = golden["ids"].tolist()
    assert ids == model.to_tokens(str(golden["prompt"])), "the tokenizer no longer gives the fixture's ids"
    logits, cache = model.run_with_cache(ids, names=lambda n: n.endswith("attn.hook_pattern"))
    patterns = np.stack([cache[f"blocks.{l}.attn.hook_pattern"][0] for l in range(model.config["n_layers"])])
    return patterns, logits


def test_patterns_match_transformers(golden, ours):
    patterns, _ = ours
    want = golden["patterns"].astype(np.float32)
    assert patterns.shape == want.shape == (30, 9, len(golden["ids"]), len(golden["ids"]))
    diff = np.abs(patterns - want)
    print("\nlayer  max abs diff  mean abs diff")
    for layer in range(diff.shape[0]):
        print(f"{layer:5d}  {diff[layer].max():12.4f}  {diff[layer].mean():13.2e}")
    print(f"  all  {diff.max():12.4f}  {diff.mean():13.2e}")
    assert diff[0].max() < LAYER0_MAX
    assert diff.max() < MAX_ABS
    assert diff.mean(axis=(1, 2, 3)).max() < MEAN_ABS


def test_top_key_agrees_where_transformers_is_clear(golden, ours):
    patterns, _ = ours
    want = golden["patterns"].astype(np.float32)
    top2 = np.sort(want, axis=-1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > ARGMAX_GAP
    assert clear.sum() > 0.5 * clear.size  # most rows of this model are clear
    agree = patterns.argmax(-1) == want.argmax(-1)
    bad = np.argwhere(clear & ~agree)
    assert bad.size == 0, f"top key differs at (layer, head, query) {bad[:10].tolist()}"


def test_patterns_are_causal_distributions(ours):
    patterns, _ = ours
    np.testing.assert_allclose(patterns.sum(-1), 1.0, atol=1e-5)
    upper = np.triu(np.ones(patterns.shape[-2:], bool), k=1)
    assert (patterns[..., upper] == 0).all()


def test_last_logits_agree_with_transformers(golden, ours):
    _, logits = ours
    want = golden["last_logits"]
    got = logits[-1]
    assert int(got.argmax()) == int(want.argmax())
    assert len(set(np.argsort(-got)[:5]) & set(np.argsort(-want)[:5])) >= 4
    # The same 8-bit noise floor as the patterns (measured 0.42 on a logit scale of 18).
    assert np.abs(got - want).max() < 1.5
