"""Prompt lookup decoding on the default model (SmolLM2-135M-Instruct, Q4_1 weights): the answers
with `lookup` are the answers without it, token for token and logprob for logprob (the drafts run
in one pass whose rows each attend as one token alone would, and the Q4_1 products give every row
its one-row result), while quoting prompts take fewer forward passes."""
import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ATTN_BIN = os.path.join(ROOT, "build", "bin", "attn")

QUOTE = ("Repeat this text exactly:\nThe quick brown fox jumps over the lazy dog. The rain in Spain stays "
         "mainly in the plain. Peter Piper picked a peck of pickled peppers. She sells sea shells by the sea shore.")
PROMPTS = [
    ("quote", QUOTE),
    ("story", "Write a short story about a robot who learns to paint."),
    ("code", "Fix the bug in this Python function and return the whole corrected function:\n\n"
             "def average(values):\n    total = 0\n    for v in values:\n        total += v\n"
             "    return total / len(value)\n"),
]


def passes(r):
    return r["n_gen_evaluated"] - r["drafted"]


@pytest.mark.parametrize("name,prompt", PROMPTS, ids=[p[0] for p in PROMPTS])
def test_greedy_answers_and_logprobs_are_those_without_lookup(model, name, prompt):
    plain = model.generate(prompt, 96, chat=True, threads=2, logprobs=5, return_dict=True)
    for lookup in (2, 8, 23):
        r = model.generate(prompt, 96, chat=True, threads=2, logprobs=5, lookup=lookup, return_dict=True)
        assert r["tokens"] == plain["tokens"], (name, lookup)
        assert r["text"] == plain["text"]
        assert r["logprobs"] == plain["logprobs"]  # floats compared exactly: the same logits
        assert r["stop_reason"] == plain["stop_reason"]
        # One pass per token drawn, less one for every kept draft.
        assert passes(r) == plain["n_gen_evaluated"] - r["draft_accepted"]
        assert 0 <= r["draft_accepted"] <= r["drafted"]
    assert plain["drafted"] == 0


def test_quoting_takes_fewer_passes(model):
    plain = model.generate(QUOTE, 96, chat=True, threads=2, return_dict=True)
    r = model.generate(QUOTE, 96, chat=True, threads=2, lookup=8, return_dict=True)
    assert r["text"] == plain["text"]
    assert "The quick brown fox jumps over the lazy dog" in r["text"]  # the model does quote it
    assert r["draft_accepted"] >= len(r["tokens"]) // 2
    assert passes(r) < plain["n_gen_evaluated"] * 0.6


@pytest.mark.parametrize("kv_type", ["f32", "q8_0"])
def test_sampled_answers_are_those_without_lookup(model, kv_type):
    # The same seed draws the same random numbers: one per token, with or without drafts.
    for seed in (1, 2, 3):
        kw = dict(temperature=0.8, seed=seed, chat=True, threads=2, kv_type=kv_type, return_dict=True,
                  repetition_penalty=1.1, stop=["sea shore"])
        plain = model.generate(QUOTE, 80, **kw)
        r = model.generate(QUOTE, 80, lookup=6, **kw)
        assert r["tokens"] == plain["tokens"] and r["text"] == plain["text"], seed
        assert r["stop_reason"] == plain["stop_reason"]


def test_constrained_answers_are_those_without_lookup(model):
    schema = {"type": "object", "properties": {"animal": {"type": "string"}, "color": {"type": "string"}},
              "required": ["animal", "color"]}
    prompt = "The quick brown fox jumps over the lazy dog. Give the animal and its color as JSON."
    plain = model.generate(prompt, 48, chat=True, threads=2, json_schema=schema, return_dict=True)
    r = model.generate(prompt, 48, chat=True, threads=2, json_schema=schema, lookup=8, return_dict=True)
    assert r["tokens"] == plain["tokens"]
    json.loads(r["text"])


def test_a_session_keeps_only_the_kept_drafts(model):
    s1, s2 = model.new_session(), model.new_session()
    a = model.generate(QUOTE, 64, chat=True, threads=2, session=s1, return_dict=True)
    b = model.generate(QUOTE, 64, chat=True, threads=2, session=s2, lookup=8, return_dict=True)
    assert a["tokens"] == b["tokens"]
    assert s1.tokens == s2.tokens  # prompt + every generated token but the last
    # The next turn reuses the cache the same way.
    turn = QUOTE + a["text"] + " Again."
    assert (model.generate(turn, 16, threads=2, session=s1, return_dict=True)["tokens"]
            == model.generate(turn, 16, threads=2, session=s2, lookup=8, return_dict=True)["tokens"])


def test_bad_lookup_values_are_errors(model):
    for bad in (-1, 24, 1.5, True):
        with pytest.raises(ValueError, match="lookup"):
            model.generate("Hi", 4, lookup=bad)


def test_cli_lookup(model):
    run = lambda *a: subprocess.run([ATTN_BIN, "generate", "--chat", "--json", "-n", "64", "-t", "2", *a, QUOTE],
                                    capture_output=True, text=True, timeout=120)
    plain, fast = run(), run("--lookup", "8")
    assert plain.returncode == 0 and fast.returncode == 0, fast.stderr
    p, f = json.loads(plain.stdout), json.loads(fast.stdout)
    assert f["tokens"] == p["tokens"]
    assert "lookup" not in p and f["lookup"]["accepted"] > 0
    bad = run("--lookup", "24")
    assert bad.returncode != 0 and "lookup" in bad.stderr


def serve_chat_answers(flags, asks, max_tokens):
    """attn serve started with `flags` (on a free port, 2 threads) answering the chat requests `asks`
    (user messages, greedy, max_tokens each) at once, on parallel slots; the responses."""
    import threading
    import urllib.request

    proc = subprocess.Popen([ATTN_BIN, "serve", "--port", "0", "-t", "2", *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "http://" in line, proc.stderr.read()
        url = "http://" + line.split("http://", 1)[1].split()[0]
        results = [None] * len(asks)

        def ask(i):
            body = {"messages": [{"role": "user", "content": asks[i]}], "max_tokens": max_tokens, "temperature": 0}
            req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=120) as r:
                results[i] = json.loads(r.read())

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(asks))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_lookup_gives_the_answers_without_it(model):
    # attn serve --lookup 8: requests on parallel slots, each step's pass holding every slot's
    # token and drafts; answers equal Model.generate's without drafts, and the timings report the
    # drafts as llama.cpp's server does (draft_n, draft_n_accepted).
    asks = [QUOTE, PROMPTS[1][1], "Repeat after me: one two three four five six seven eight nine ten.",
            PROMPTS[2][1]]
    wants = [model.generate(a, 64, chat=True, threads=2, return_dict=True) for a in asks]
    results = serve_chat_answers(["--lookup", "8"], asks, 64)
    for r, want in zip(results, wants):
        assert r["choices"][0]["message"]["content"] == want["text"]
        assert r["usage"]["completion_tokens"] == len(want["tokens"])
    quote = results[0]["timings"]
    assert quote["draft_n_accepted"] > 0 and quote["draft_n_accepted"] <= quote["draft_n"]


def test_generate_batch_with_lookup_gives_each_answer_alone(model):
    asks = [QUOTE, PROMPTS[1][1], "Repeat after me: one two three four five six seven eight nine ten."]
    wants = [model.generate(a, 48, chat=True, threads=2, return_dict=True) for a in asks]
    got = model.generate_batch(asks, 48, chat=True, threads=2, lookup=8, return_dict=True)
    for r, want in zip(got, wants):
        assert r["tokens"] == want["tokens"]
    assert got[0]["draft_accepted"] > 0
    with pytest.raises(ValueError, match="lookup"):
        model.generate_batch(asks, 4, lookup=24)
