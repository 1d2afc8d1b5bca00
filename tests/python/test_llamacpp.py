"""SmolLM2-135M-Instruct (Q4_1) on attn against llama.cpp on the same file: greedy continuations
token for token, and next-token predictions over a 512-token text. The reference outputs are in
tests/fixtures/smollm2_llamacpp*.json (made by make_llama_fixtures.py with llama-cpp-python; the
versions are inside), so this test runs without llama.cpp installed.

There are two references because llama.cpp's own results depend on the CPU it runs on: the same
llama.cpp version on the same file gave, on an AVX2 machine (smollm2_llamacpp.json) and on an
AVX-512 machine (smollm2_llamacpp_avx512.json), top-1 agreement 93.75% over the 512-token text and
identical 64-token greedy continuations on 1 of the 6 prompts. attn is held to that standard: as
close to each build of llama.cpp as the two builds are to each other."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import attn

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
BUILDS = {"avx2": "smollm2_llamacpp.json", "avx512": "smollm2_llamacpp_avx512.json"}


def load_fixture(name: str) -> dict:
    with open(os.path.join(FIXTURES, BUILDS[name])) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def goldens():
    return {name: load_fixture(name) for name in BUILDS}


@pytest.fixture(scope="module", params=list(BUILDS))
def golden(request, goldens):
    return goldens[request.param]


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
# cache to f16 (llama.cpp's default) moves its logits by 0.16 on average; llama.cpp's AVX2 and
# AVX-512 builds agree with each other on 93.75%. Exact agreement is only possible where
# llama.cpp's top-2 logits are further apart than that noise.
NEAR_TIE = 0.25


@pytest.mark.parametrize("kv_type", ["f32", "f16"])
def test_greedy_continuations_match_llamacpp_step_by_step(golden, model, kv_type):
    # Teacher-forced: attn's next-token choice at each of llama.cpp's 64 greedy steps, given the
    # tokens llama.cpp chose before it, so one near-tie does not end the comparison. With attn's
    # exact float32 KV cache and with an f16 one (llama.cpp's cache type, attn's default for
    # generation).
    agree = total = clear_agree = clear_total = 0
    for name, g in golden["greedy"].items():
        want = g["greedy_ids"]
        n_prompt = len(g["prompt_ids"])
        choice = model.logits(g["prompt_ids"] + want[:-1], kv_type=kv_type)[n_prompt - 1:].argmax(-1)
        assert choice.shape == (len(want),), name
        for k, tok in enumerate(want):
            ok = int(choice[k]) == tok
            agree += ok
            total += 1
            if g["top1_gap"][k] >= NEAR_TIE:
                clear_agree += ok
                clear_total += 1
    print(f"{golden['versions'].get('simd', 'avx2')} {kv_type} cache: {agree}/{total} greedy steps agree, "
          f"{clear_agree}/{clear_total} where llama.cpp's top-2 gap >= {NEAR_TIE}")
    assert agree >= 0.95 * total
    assert clear_agree >= 0.98 * clear_total


def test_free_running_greedy_parts_from_llamacpp_only_at_near_ties(goldens, model):
    # attn's own greedy generation (prefill, then the decode kernel one token at a time) follows
    # llama.cpp's continuation until a step where one of llama.cpp's builds has a near-tie. With
    # the exact float32 cache: with an f16 one (generate's default) 5 of the 6 prompts part at such
    # a step, "numbers" at step 50 where llama.cpp's top-2 gap is 0.94 and attn's own 0.10, a
    # difference inside the spread between attn's one-token and one-pass logits of the same text
    # (up to 1.1-2.2 in every cache type; BENCHMARKS.md).
    for name in goldens["avx2"]["greedy"]:
        got = None
        parted = []
        for build, golden in goldens.items():
            g = golden["greedy"][name]
            want = g["greedy_ids"]
            if g["eos_seen"]:  # llama.cpp's run went past EOS; compare up to the EOS it chose
                want = want[:want.index(golden["eos_id"])]
            if got is None:
                got = model.generate(g["prompt_ids"], max_tokens=64, kv_type="f32", return_dict=True)["tokens"]
            k = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
            if k is None:
                assert got[:len(want)] == want, (name, build)
                parted.append((build, len(want), 0.0))
            else:
                parted.append((build, k, g["top1_gap"][k]))
        print(name, parted)
        assert any(gap < NEAR_TIE for _, _, gap in parted), (name, parted)


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


@pytest.mark.parametrize("kv_type", ["f32", "f16", "q8_0"])
def test_next_token_agreement_is_within_llamacpp_own_spread(goldens, model, kv_type):
    # llama.cpp's two builds set the yardstick: attn may be no further from either than they are
    # from each other, less 2 points (about 10 of 512 positions).
    top1 = {b: np.array([p["top1"] for p in g["next_token"]["positions"]]) for b, g in goldens.items()}
    ids = goldens["avx2"]["next_token"]["ids"]
    assert goldens["avx512"]["next_token"]["ids"] == ids
    between = float((top1["avx2"] == top1["avx512"]).mean())
    ours = model.logits(ids, kv_type=kv_type).argmax(-1)
    for build, want in top1.items():
        agreement = float((ours == want).mean())
        print(f"top-1 agreement with llama.cpp {build} ({kv_type} cache): {agreement:.4f} "
              f"(llama.cpp avx2 vs avx512: {between:.4f})")
        assert agreement >= between - 0.02, build


def test_attn_is_as_close_to_the_exact_computation_as_llamacpp_is(model):
    # The truth both engines approximate: the same file's weights dequantized to float32 and run
    # with nothing rounded below float32 (llama.cpp on its own ALL_F32 requantization of the file,
    # f32 KV cache; tests/fixtures/make_exact_fixture.py). llama.cpp's quantized run (AVX-512
    # build) picks that computation's top-1 token at 94.9% of the 512 positions; attn's quantized
    # run, with the f16 cache generation uses and with an f32 one, must do at least as well (up to
    # 1% of the positions). The two quantized runs err at different positions, which is why they
    # agree with each other less often than either agrees with the truth (93-94%).
    with open(os.path.join(FIXTURES, "smollm2_exact_llamacpp.json")) as f:
        exact = json.load(f)
    truth = np.array(exact["top1"])
    llama = exact["llamacpp_q41_top1_agreement"]
    for kv_type in ("f16", "f32"):
        ours = float((model.logits(exact["ids"], kv_type=kv_type).argmax(-1) == truth).mean())
        print(f"top-1 agreement with the exact computation: attn ({kv_type} cache) {ours:.4f}, llama.cpp {llama:.4f}")
        assert ours >= llama - 0.01, kv_type
