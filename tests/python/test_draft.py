"""Speculative decoding with a draft model (Model.generate(draft_model=...), attn generate
--model-draft) on the default model (SmolLM2-135M-Instruct, Q4_1): the answers with a draft are the
answers without it, token for token and logprob for logprob, however good the draft (the same
model, or the same model pushed off course by a control vector), in fewer passes where it is
good."""
import json
import os
import subprocess

import numpy as np
import pytest

import attn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ATTN_BIN = os.path.join(ROOT, "build", "bin", "attn")
STORY = "Write a short story about a robot who learns to paint."


@pytest.fixture(scope="module")
def draft(model):
    """A second copy of the default model (its own weights and caches)."""
    return attn.Model.load(model.path)


@pytest.fixture(scope="module")
def skewed(model):
    """The default model with a strong control vector: a draft that is often wrong."""
    d = attn.Model.load(model.path)
    rng = np.random.default_rng(0)
    d.set_control_vector({b: rng.normal(0, 2.0, d.config["d_model"]).astype(np.float32) for b in range(8, 16)})
    return d


def test_greedy_answers_and_logprobs_are_those_without_the_draft(model, draft, skewed):
    prompt = model.apply_chat_template([("user", STORY)])
    plain = model.generate(prompt, 80, threads=2, logprobs=3, return_dict=True)
    # A draft every step (draft_adaptive off, the default), so that the counts do not depend on timings.
    same = model.generate(prompt, 80, threads=2, logprobs=3, return_dict=True, draft_model=draft, draft_p_min=0.0)
    off = model.generate(prompt, 80, threads=2, logprobs=3, return_dict=True, draft_model=skewed,
                         draft_max=4, draft_p_min=0.0)
    for r in (same, off):
        assert r["tokens"] == plain["tokens"] and r["text"] == plain["text"]
        assert r["logprobs"] == plain["logprobs"]  # exactly: the Q4_1 products are row for row
        # One pass per token drawn, less one for every kept draft.
        assert r["n_gen_evaluated"] - r["drafted"] == plain["n_gen_evaluated"] - r["draft_accepted"]
    # The same model drafts what it then draws; the skewed one is often wrong.
    assert same["drafted"] > 50 and same["draft_accepted"] == same["drafted"]
    assert off["drafted"] > 20 and off["draft_accepted"] < 0.8 * off["drafted"]
    # A higher draft_p_min drafts less.
    fewer = model.generate(prompt, 80, threads=2, return_dict=True, draft_model=draft, draft_p_min=0.9)
    assert fewer["text"] == plain["text"] and fewer["drafted"] < same["drafted"]
    # Adaptive: a draft as slow as the model never pays, so it rests most of the time; the text is
    # the same.
    rests = model.generate(prompt, 80, threads=2, logprobs=3, return_dict=True, draft_model=draft, draft_p_min=0.0,
                           draft_adaptive=True)
    assert rests["tokens"] == plain["tokens"] and rests["logprobs"] == plain["logprobs"]
    assert 0 < rests["drafted"] < same["drafted"]


def test_sampled_answers_are_those_without_the_draft(model, skewed):
    prompt = model.apply_chat_template([("user", STORY)])
    for seed in (1, 2):
        plain = model.generate(prompt, 60, temperature=0.8, seed=seed, threads=2, return_dict=True)
        r = model.generate(prompt, 60, temperature=0.8, seed=seed, threads=2, return_dict=True,
                           draft_model=skewed, draft_p_min=0.0)
        assert r["tokens"] == plain["tokens"]
        assert 0 < r["draft_accepted"] < r["drafted"]


def test_stream_with_a_draft(model, draft):
    prompt = model.apply_chat_template([("user", STORY)])
    assert "".join(model.generate(prompt, 40, stream=True, draft_model=draft)) == model.generate(prompt, 40)


def test_bad_drafts_are_errors(model, draft):
    tiny_qwen2 = attn.Model.load(os.path.join(ROOT, "tests", "fixtures", "qwen2_tiny.gguf"))
    with pytest.raises(ValueError, match="lookup"):
        model.generate("Hi", 4, draft_model=draft, lookup=4)
    with pytest.raises(ValueError, match="draft_max"):
        model.generate("Hi", 4, draft_model=draft, draft_max=0)
    with pytest.raises(ValueError, match="draft_p_min"):
        model.generate("Hi", 4, draft_model=draft, draft_p_min=1.5)
    with pytest.raises(TypeError, match="draft_model"):
        model.generate("Hi", 4, draft_model=model.path)
    with pytest.raises(ValueError, match="vocabulary"):
        model.generate("Hi", 4, draft_model=tiny_qwen2)


def test_cli_model_draft(model):
    prompt = "The capital of France is"
    run = lambda *extra: subprocess.run([ATTN_BIN, "generate", "-n", "32", "--json", *extra, prompt],
                                        capture_output=True, text=True, check=True)
    plain = json.loads(run().stdout)
    r = json.loads(run("--model-draft", model.path, "--draft-max", "4").stdout)
    assert r["text"] == plain["text"] and r["tokens"] == plain["tokens"]
    assert r["draft"]["accepted"] == r["draft"]["drafted"] > 0
    bad = subprocess.run([ATTN_BIN, "generate", "--model-draft", "/no/such.gguf", prompt], capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "model-draft" in bad.stderr
    # attn chat too: the same answers, turn after turn.
    chat = lambda *extra: subprocess.run([ATTN_BIN, "chat", "-n", "24", *extra], input="Name three colors.\nAnd two "
                                         "more.\n", capture_output=True, text=True, check=True).stdout
    assert chat("--model-draft", model.path) == chat()


def test_serve_model_draft_gives_the_answers_without_it(model):
    # attn serve --model-draft: every slot's drafts in the step's pass; answers equal Model.generate's
    # without drafts; timings count the drafts as llama.cpp's server does.
    from test_lookup import serve_chat_answers

    asks = [STORY, "Name three colors.", "Repeat after me: one two three four five six seven eight nine ten."]
    wants = [model.generate(a, 48, chat=True, threads=2, return_dict=True) for a in asks]
    results = serve_chat_answers(["--model-draft", model.path, "--draft-max", "4"], asks, 48)
    for r, want in zip(results, wants):
        assert r["choices"][0]["message"]["content"] == want["text"]
    timings = [r["timings"] for r in results]
    assert sum(t.get("draft_n", 0) for t in timings) > 0
    assert all(t.get("draft_n_accepted", 0) <= t.get("draft_n", 0) for t in timings)
    bad = subprocess.run([ATTN_BIN, "serve", "--model-draft", model.path, "--lookup", "4"], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode != 0 and "excludes" in bad.stderr
