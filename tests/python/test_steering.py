"""Hooks during generation (Model.generate(hooks=...)) and activation steering (attn.steering, attn
generate --steer-add/--steer-sub): the hooks run on every pass with the KV cache, and what a steered
generation computes is what the same hook gives on the whole text in one pass."""
import os
import subprocess

import numpy as np
import pytest

import attn
from attn import steering
from test_serve import ATTN_BIN

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")

PROMPT = "I think dogs are"


def test_hooks_run_on_every_pass_with_their_positions(model):
    n = len(model.to_tokens(PROMPT))
    seen = []
    text = model.generate(PROMPT, max_tokens=5, hooks=[("blocks.3.hook_resid_pre",
                                                         lambda a, h: seen.append((h.pos0, a.shape)))])
    assert text == model.generate(PROMPT, max_tokens=5)  # a hook that only reads changes nothing
    d = model.config["d_model"]
    assert seen == [(0, (1, n, d))] + [(n + k, (1, 1, d)) for k in range(4)]


def test_steering_moves_smollm2_toward_the_concept(model):
    v = steering.vector(model, " love", " hate", layer=10)
    hook = steering.add(10, v, scale=2.0)
    steered = model.generate(PROMPT, max_tokens=12, hooks=[hook])
    assert steered != model.generate(PROMPT, max_tokens=12) and "love" in steered  # " a story of love ..."
    # On neutral prompts the next token's log-probability of " love" rises, and its log-odds
    # against " hate" (measured 2026-12-05: +2.8 and +2.3 nats on average over these five).
    love, hate = model.to_tokens(" love")[-1], model.to_tokens(" hate")[-1]
    rise, odds = [], []
    for p in [PROMPT, "My neighbour is", "The weather today is", "When I see my boss I feel", "This song makes me feel"]:
        (a, b) = [model.run_with_hooks(p, hooks=h)[-1].astype(np.float64) for h in ([], [hook])]
        la, lb = [x - x.max() - np.log(np.exp(x - x.max()).sum()) for x in (a, b)]
        rise.append(lb[love] - la[love])
        odds.append((lb[love] - lb[hate]) - (la[love] - la[hate]))
    assert np.mean(rise) > 1.5 and np.mean(odds) > 1.0 and min(rise) > 0, (rise, odds)


def test_a_steered_generation_is_the_hook_on_the_whole_text():
    # On a float32 model (on SmolLM2's Q4_1 products a pass of many rows and one of a single row
    # differ in their last bits, hooks or not): every step's log-probability is what the same hook
    # gives running the whole text so far in one pass.
    m = attn.Model.load(os.path.join(FIXTURES, "llama_tiny.gguf"))
    prompt = [3, 40, 77, 114, 151]
    hook = steering.add(1, steering.vector(m, [[3, 9, 4]], [[3, 9, 11]], layer=1), scale=3.0)
    r = m.generate(prompt, max_tokens=10, hooks=[hook], kv_type="f32", logprobs=0, return_dict=True)
    assert r["tokens"] != m.generate(prompt, max_tokens=10, kv_type="f32", return_dict=True)["tokens"]
    ids = list(prompt)
    for token, entry in zip(r["tokens"], r["logprobs"]):
        logits = m.run_with_hooks(ids, hooks=[hook])[-1].astype(np.float64)
        logprob = logits[token] - logits.max() - np.log(np.exp(logits - logits.max()).sum())
        assert entry["logprob"] == pytest.approx(logprob, abs=1e-4)
        ids.append(token)


def test_steering_vector_is_the_difference_of_last_rows(model):
    def last(text):
        _, cache = model.run_with_cache(text, names="blocks.6.hook_resid_pre")
        return cache["blocks.6.hook_resid_pre"][0, -1]
    v = steering.vector(model, ["I love it", "Great"], ["I hate it", "Awful"], layer=6)
    want = ((last("I love it") - last("I hate it")) + (last("Great") - last("Awful"))) / 2
    np.testing.assert_allclose(v, want, atol=1e-4)
    # The hook leaves the positions before from_position alone.
    name, fn = steering.add(6, np.ones(3, np.float32), scale=2.0, from_position=2)
    assert name == "blocks.6.hook_resid_pre"
    act = np.zeros((1, 3, 3), np.float32)
    fn(act, attn.HookPoint(name, 6, pos0=1))
    assert act[0, :, 0].tolist() == [0.0, 2.0, 2.0]


def test_bad_steering_and_hooks_are_refused(model):
    hook = steering.add(10, np.zeros(model.config["d_model"], np.float32))
    with pytest.raises(ValueError, match="hooks exclude stream"):
        model.generate(PROMPT, max_tokens=2, hooks=[hook], stream=True)
    with pytest.raises(ValueError, match="hooks exclude lookup"):
        model.generate(PROMPT, max_tokens=2, hooks=[hook], lookup=4)
    with pytest.raises(ValueError, match="layer 99"):
        steering.vector(model, "a", "b", layer=99)
    with pytest.raises(ValueError, match="give pairs"):
        steering.vector(model, ["a", "b"], "c", layer=1)
    with pytest.raises(ValueError, match="576"):
        model.generate(PROMPT, max_tokens=2, hooks=[steering.add(10, np.zeros(5, np.float32))])
    with pytest.raises(TypeError, match="is not callable"):
        model.generate(PROMPT, max_tokens=2, hooks=[("blocks.1.hook_resid_pre", 3)])


def test_cli_steering():
    r = subprocess.run([ATTN_BIN, "generate", "-n", "12", "--steer-add", " love", "--steer-sub", " hate",
                        "--steer-layer", "10", "--steer-scale", "2", PROMPT], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert 'steering: 2 x (" love" - " hate") at block 10\'s input' in r.stderr
    assert "love" in r.stdout[len(PROMPT):]
    bad = subprocess.run([ATTN_BIN, "generate", "-n", "2", "--steer-add", "x", PROMPT], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode != 0 and "--steer-sub" in bad.stderr
    bad = subprocess.run([ATTN_BIN, "generate", "-n", "2", "--steer-add", "x", "--steer-sub", "y", "--steer-layer",
                          "99", PROMPT], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "layer 99" in bad.stderr
