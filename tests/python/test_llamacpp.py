"""SmolLM2-135M-Instruct (Q4_1) on attn against llama.cpp on the same file: greedy continuations
token for token, and next-token predictions over a 512-token text. The reference outputs are in
tests/fixtures/smollm2_llamacpp.json (made by make_llama_fixtures.py with llama-cpp-python; the
versions are inside), so this test runs without llama.cpp installed."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import attn

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")


@pytest.fixture(scope="module")
def golden():
    with open(os.path.join(FIXTURES, "smollm2_llamacpp.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def model():
    path = attn.Model.default_path()
    assert os.path.exists(path), f"default model missing at {path}: run scripts/setup.sh"
    return attn.Model.load()


def test_the_fixture_was_made_from_this_model_file(golden, model):
    import hashlib

    h = hashlib.sha256()
    with open(model.path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    assert h.hexdigest() == golden["versions"]["model_sha256"]


def test_prompt_tokens_match_llamacpp(golden, model):
    for name, g in golden["greedy"].items():
        assert model.tokenize(g["prompt"]) == g["prompt_ids"], name


# How far apart two faithful implementations of this quantized model are. Measured (see the
# issue note and BENCHMARKS.md): an exact float64 forward pass over the same dequantized weights
# agrees with llama.cpp's top-1 on 93.9% of the 512 positions, and merely rounding attn's own KV
# cache to f16 (llama.cpp's default) moves its logits by 0.16 on average. Exact agreement is only
# possible where llama.cpp's top-2 logits are further apart than that noise.
NEAR_TIE = 0.25


def test_greedy_continuations_match_llamacpp(golden, model):
    full = 0
    for name, g in golden["greedy"].items():
        want = g["greedy_ids"]
        if g["eos_seen"]:  # llama.cpp's run went past EOS; compare up to the EOS it chose
            want = want[:want.index(golden["eos_id"])]
        got = model.generate(g["prompt_ids"], max_tokens=len(g["greedy_ids"]), return_dict=True)["tokens"]
        k = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
        if k is None:
            assert len(got) == len(want), name
            full += len(want) == 64
            continue
        # A divergence is allowed only at a near-tie of llama.cpp's own top two logits.
        assert g["top1_gap"][k] < NEAR_TIE, (name, k, g["top1_gap"][k])
    assert full >= 1, "no prompt matched llama.cpp for all 64 tokens"


def test_next_token_predictions_agree_with_llamacpp(golden, model):
    nt = golden["next_token"]
    ids = nt["ids"]
    logits = model.logits(ids)
    top1 = logits.argmax(-1)
    want = np.array([p["top1"] for p in nt["positions"]])
    agreement = float((top1 == want).mean())
    # Differences to llama.cpp's logits at its top-5 tokens, after removing each row's mean shift
    # (a constant added to a row does not change its softmax).
    rows = np.array([[logits[i, t] - v for t, v in p["top5"]] for i, p in enumerate(nt["positions"])])
    centered = np.abs(rows - rows.mean(1, keepdims=True))
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    nll = -float(np.mean([logits[i, ids[i + 1]] - lse[i] for i in range(len(ids) - 1)]))
    clear_idx = [i for i, p in enumerate(nt["positions"]) if p["top5"][0][1] - p["top5"][1][1] >= NEAR_TIE]
    clear = float((top1[clear_idx] == want[clear_idx]).mean())
    print(f"top-1 agreement {agreement:.4f} over {len(ids)} positions ({clear:.4f} where llama.cpp's top-2 gap >= "
          f"{NEAR_TIE}); max |logit diff| at llama.cpp's top-5 {np.abs(rows).max():.4f} (row-centered "
          f"{centered.max():.4f}, mean {centered.mean():.4f}); mean NLL attn {nll:.4f} vs llama.cpp {nt['mean_nll']:.4f}")
    assert agreement >= 0.90
    assert clear >= 0.97
    assert abs(nll - nt["mean_nll"]) < 0.02
    assert centered.mean() < 0.2
