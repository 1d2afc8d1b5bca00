"""`attn serve`: OpenAI's completion and chat-completion API over HTTP on the default model. Greedy
answers equal attn.Model.generate's, a stream carries the same text as the plain answer, the KV
cache of a conversation is reused, and every bad request gets a 4xx with a message naming what was
wrong (the server keeps serving)."""
from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest

import attn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ATTN_BIN = os.path.join(ROOT, "build", "bin", "attn")


@pytest.fixture(scope="module")
def server():
    proc = subprocess.Popen([ATTN_BIN, "serve", "--port", "0", "-t", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # "attn serve: MODEL on http://127.0.0.1:PORT (...)"
    if "http://" not in line:
        proc.kill()
        pytest.fail(f"attn serve did not start: {line!r} {proc.stderr.read()}")
    url = line.split("http://", 1)[1].split()[0]
    yield f"http://{url}"
    proc.terminate()
    proc.wait(timeout=10)


def post(url: str, body, *, raw: bool = False):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            text = r.read().decode()
            return r.status, text if raw else json.loads(text)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())


def events(text: str) -> list:
    """The data of each server-sent event; the last must be [DONE]."""
    data = [line[len("data: "):] for line in text.split("\n") if line.startswith("data: ")]
    assert data[-1] == "[DONE]", data[-3:]
    return [json.loads(d) for d in data[:-1]]


def test_context_shift_goes_past_the_context():
    # --context-shift on the tiny Llama fixture (128 positions): a completion of 300 tokens.
    fixture = os.path.join(ROOT, "tests", "fixtures", "llama_tiny.gguf")
    proc = subprocess.Popen([ATTN_BIN, "serve", "--port", "0", "--model", fixture, "--context-shift",
                             "--kv-type", "f32"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = "http://" + proc.stdout.readline().split("http://", 1)[1].split()[0]
        status, r = post(url + "/v1/completions", {"prompt": [1, 5, 9], "max_tokens": 300, "temperature": 0,
                                                   "cache_prompt": False})
        assert status == 200, r
        assert r["usage"]["completion_tokens"] == 300 or r["choices"][0]["finish_reason"] == "stop", r["usage"]
        assert r["usage"]["completion_tokens"] > 128 - 3
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_port_in_use_is_an_error(server):
    port = server.rsplit(":", 1)[1]
    r = subprocess.run([ATTN_BIN, "serve", "--port", port], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr


def test_health_and_models(server):
    with urllib.request.urlopen(server + "/health", timeout=30) as r:
        assert json.loads(r.read()) == {"status": "ok"}
    with urllib.request.urlopen(server + "/v1/models", timeout=30) as r:
        models = json.loads(r.read())
    assert models["data"][0]["id"] == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_completion_equals_generate(server, model):
    prompt = "The history of the printing press begins"
    # cache_prompt false: a fresh evaluation, the same numbers as Model.generate's new session.
    status, r = post(server + "/v1/completions", {"prompt": prompt, "max_tokens": 12, "temperature": 0,
                                                  "cache_prompt": False})
    assert status == 200, r
    want = model.generate(prompt, max_tokens=12, temperature=0, return_dict=True)
    assert r["object"] == "text_completion" and r["id"].startswith("cmpl-")
    assert r["choices"][0]["text"] == want["text"]
    assert r["choices"][0]["finish_reason"] == ("length" if len(want["tokens"]) == 12 else "stop")
    assert r["usage"] == {"prompt_tokens": len(want["prompt_tokens"]), "completion_tokens": len(want["tokens"]),
                          "total_tokens": len(want["prompt_tokens"]) + len(want["tokens"])}
    # The same prompt as token ids.
    # Neutral values of options attn does not implement are accepted (clients send them).
    status, r2 = post(server + "/v1/completions", {"prompt": want["prompt_tokens"], "max_tokens": 12,
                                                   "temperature": 0, "cache_prompt": False, "n": 1,
                                                   "logprobs": None, "echo": False, "presence_penalty": 0,
                                                   "tools": [], "suffix": None, "user": "someone"})
    assert status == 200 and r2["choices"][0]["text"] == want["text"]


def test_stream_carries_the_same_text(server):
    body = {"prompt": "Once upon a time", "max_tokens": 20, "temperature": 0, "stop": ["\n\n"], "cache_prompt": False}
    _, plain = post(server + "/v1/completions", body)
    status, text = post(server + "/v1/completions", {**body, "stream": True,
                                                     "stream_options": {"include_usage": True}}, raw=True)
    assert status == 200
    chunks = events(text)
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == plain["choices"][0]["text"]
    assert chunks[-2]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]


def test_chat_equals_generate_with_the_template_and_reuses_the_cache(server, model):
    messages = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Name a color."}]
    status, r = post(server + "/v1/chat/completions", {"messages": messages, "temperature": 0, "max_tokens": 24,
                                                       "cache_prompt": False})
    assert status == 200, r
    prompt = model.apply_chat_template([(m["role"], m["content"]) for m in messages])
    want = model.generate(model.to_tokens(prompt), max_tokens=24, temperature=0)
    assert r["object"] == "chat.completion"
    assert r["choices"][0]["message"] == {"role": "assistant", "content": want}
    # The next turn begins with the whole first one: its positions come from the KV cache (a
    # reused prefix is evaluated in other chunks, so its numbers may differ in the last bits).
    follow = messages + [r["choices"][0]["message"], {"role": "user", "content": "Another one."}]
    status, r2 = post(server + "/v1/chat/completions", {"messages": follow, "temperature": 0, "max_tokens": 8})
    assert status == 200
    assert r2["timings"]["prompt_cached"] >= r["usage"]["prompt_tokens"], r2["timings"]
    assert r2["timings"]["prompt_cached"] + r2["timings"]["prompt_n"] == r2["usage"]["prompt_tokens"]
    # Streamed: a role chunk, then the same content, then the finish reason.
    status, text = post(server + "/v1/chat/completions",
                        {"messages": messages, "temperature": 0, "max_tokens": 24, "stream": True,
                         "cache_prompt": False}, raw=True)
    chunks = events(text)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[1:]) == want
    assert chunks[-1]["choices"][0]["finish_reason"] == r["choices"][0]["finish_reason"]


def test_a_client_that_leaves_mid_stream_ends_its_generation(server):
    # A stream of 4000 tokens (seconds of work) dropped after its first event: the generation
    # stops at the next token it cannot send, and the next request is answered at once.
    import http.client
    import time
    host, port = server[len("http://"):].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("POST", "/v1/completions", json.dumps({"prompt": "Once upon a time", "max_tokens": 4000,
                                                        "temperature": 0, "stream": True}),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.readline().startswith(b"data: ")
    conn.close()
    t0 = time.perf_counter()
    status, r = post(server + "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 4, "temperature": 0})
    assert status == 200 and r["usage"]["completion_tokens"] == 4
    assert time.perf_counter() - t0 < 5.0
    # The dropped stream's slot is free again (it ended; /slots says what each slot holds).
    for _ in range(100):
        slots = get(server + "/slots")
        if not any(s["is_processing"] for s in slots):
            break
        time.sleep(0.05)
    assert not any(s["is_processing"] for s in slots), slots


def get(url: str):
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read().decode())


def test_parallel_requests_run_together_and_each_gets_its_own_answer(server, model):
    # Four greedy completions at once on the server's four slots: their tokens share every step's
    # forward pass (/slots shows several busy at the same moment), and each answer equals
    # Model.generate's alone, token for token (batched rows of an integer-format model are
    # computed as one-row products; each prompt is evaluated on its own).
    import threading
    import time
    prompts = ["The history of the printing press begins", "Once upon a time", "def fibonacci(n):",
               "The three primary colors are"]
    wants = [model.generate(p, max_tokens=48, temperature=0, return_dict=True) for p in prompts]
    results = [None] * len(prompts)

    def ask(i):
        results[i] = post(server + "/v1/completions", {"prompt": prompts[i], "max_tokens": 48, "temperature": 0,
                                                       "cache_prompt": False})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    most_busy = 0
    while any(t.is_alive() for t in threads):
        most_busy = max(most_busy, sum(s["is_processing"] for s in get(server + "/slots")))
        time.sleep(0.005)
    for t in threads:
        t.join()
    for (status, r), want in zip(results, wants):
        assert status == 200, r
        assert r["choices"][0]["text"] == want["text"]
        assert r["usage"]["completion_tokens"] == len(want["tokens"])
    assert most_busy >= 2
    assert len(get(server + "/slots")) == 4


def test_a_long_prompt_in_pieces_beside_a_running_request(server, model):
    # A prompt of more than two pieces (512 tokens each) goes in one piece per step while another
    # request generates; each answer still equals Model.generate's (pieces of Forward's own pass
    # size compute what one Forward computes).
    import threading
    long_prompt = " ".join(f"item {i}," for i in range(400)) + " and the last item is"
    assert len(model.to_tokens(long_prompt)) > 1100
    short_prompt = "Once upon a time"
    wants = [model.generate(p, max_tokens=n, temperature=0) for p, n in ((short_prompt, 96), (long_prompt, 8))]
    results = [None, None]

    def ask(i, prompt, n):
        results[i] = post(server + "/v1/completions", {"prompt": prompt, "max_tokens": n, "temperature": 0,
                                                       "cache_prompt": False})

    first = threading.Thread(target=ask, args=(0, short_prompt, 96))
    first.start()
    ask(1, long_prompt, 8)
    first.join()
    for (status, r), want in zip(results, wants):
        assert status == 200, r
        assert r["choices"][0]["text"] == want


def test_penalties_and_logit_bias_as_model_generate(server, model):
    # OpenAI's frequency / presence penalties and logit_bias reach the sampler: the greedy answer
    # equals Model.generate's with the same settings, and a bias of -100 on the token the model
    # would pick first makes it pick another.
    prompt = "1, 2, 3, 1, 2, 3, 1, 2, 3,"
    base = {"prompt": prompt, "max_tokens": 12, "temperature": 0, "cache_prompt": False}
    _, plain = post(server + "/v1/completions", base)
    _, pen = post(server + "/v1/completions", {**base, "frequency_penalty": 1.5, "presence_penalty": 0.5})
    want = model.generate(prompt, max_tokens=12, frequency_penalty=1.5, presence_penalty=0.5)
    assert pen["choices"][0]["text"] == want != plain["choices"][0]["text"]
    first = model.generate(prompt, max_tokens=1, return_dict=True)["tokens"][0]
    _, banned = post(server + "/v1/completions", {**base, "max_tokens": 1, "logit_bias": {str(first): -100}})
    assert banned["choices"][0]["text"] == model.generate(prompt, max_tokens=1, logit_bias={first: -100})
    assert banned["choices"][0]["text"] != model.detokenize([first])


def test_n_choices_each_equal_generate_with_its_seed(server, model):
    # "n": 3 sampled choices of one prompt, generated side by side on the slots: choice i is
    # Model.generate's draw with seed + i; the usage counts the prompt once. Streamed, the chunks of
    # each index join into the same texts, each index ends with its finish_reason, one [DONE].
    prompt = "Once upon a time"
    opts = {"temperature": 1.0, "top_k": 40, "top_p": 0.95, "min_p": 0.05}
    body = {"prompt": prompt, "max_tokens": 12, "n": 3, "seed": 5, "cache_prompt": False, **opts}
    status, r = post(server + "/v1/completions", body)
    assert status == 200, r
    texts = [c["text"] for c in sorted(r["choices"], key=lambda c: c["index"])]
    wants = [model.generate(prompt, max_tokens=12, seed=5 + i, **opts, return_dict=True) for i in range(3)]
    assert texts == [w["text"] for w in wants]
    assert len(set(texts)) > 1
    assert r["usage"]["prompt_tokens"] == len(wants[0]["prompt_tokens"])
    assert r["usage"]["completion_tokens"] == sum(len(w["tokens"]) for w in wants)
    status, text = post(server + "/v1/completions", {**body, "stream": True,
                                                     "stream_options": {"include_usage": True}}, raw=True)
    chunks = events(text)
    joined = ["", "", ""]
    finished = set()
    for c in chunks[:-1]:
        (choice,) = c["choices"]
        joined[choice["index"]] += choice["text"]
        if choice["finish_reason"] is not None:
            finished.add(choice["index"])
    assert joined == texts and finished == {0, 1, 2}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == r["usage"]
    # Chat, greedy: every choice is the same answer.
    status, c = post(server + "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                                       "max_tokens": 8, "temperature": 0, "n": 2,
                                                       "cache_prompt": False})
    assert status == 200 and len({ch["message"]["content"] for ch in c["choices"]}) == 1


def test_seeded_sampling_repeats(server):
    # The same seed over the same numbers (cache_prompt false: both evaluate the prompt afresh).
    body = {"prompt": "My favourite animal is", "max_tokens": 10, "temperature": 1.0, "seed": 7,
            "cache_prompt": False}
    a, b = post(server + "/v1/completions", body)[1], post(server + "/v1/completions", body)[1]
    assert a["choices"][0]["text"] == b["choices"][0]["text"]


def test_tokenize_and_detokenize(server, model):
    text = "Hello, world! \u00e9\u4e2d"
    _, t = post(server + "/tokenize", {"content": text})
    assert t["tokens"] == model.tokenize(text)
    _, d = post(server + "/detokenize", {"tokens": t["tokens"]})
    assert d["content"] == text


def log_softmax(rows):
    rows = np.asarray(rows, dtype=np.float64)
    m = rows.max(axis=-1, keepdims=True)
    return rows - (m + np.log(np.exp(rows - m).sum(axis=-1, keepdims=True)))


def test_completion_logprobs_equal_generates(server, model):
    # Model.generate's log-probabilities (checked against NumPy in test_model.py) come back in
    # OpenAI's completion format.
    prompt = "The capital of France is"
    status, r = post(server + "/v1/completions", {"prompt": prompt, "max_tokens": 8, "temperature": 0, "logprobs": 3,
                                                  "cache_prompt": False})
    assert status == 200, r
    lp = r["choices"][0]["logprobs"]
    want = model.generate(prompt, max_tokens=8, temperature=0, logprobs=3, return_dict=True)
    gen = want["tokens"]
    assert len(lp["tokens"]) == len(gen) == r["usage"]["completion_tokens"]
    assert "".join(lp["tokens"]) == r["choices"][0]["text"]
    assert lp["token_logprobs"] == pytest.approx([e["logprob"] for e in want["logprobs"]], abs=1e-6)
    for top, e in zip(lp["top_logprobs"], want["logprobs"]):  # a JSON object: no order
        assert top == pytest.approx({model.detokenize_bytes([t]).decode("utf-8", "replace"): v for t, v in e["top"]},
                                    abs=1e-6)
    for v, top in zip(lp["token_logprobs"], lp["top_logprobs"]):
        assert v == max(top.values())  # greedy: the chosen token is the most likely one
    # Offsets count characters from the start of the prompt.
    assert lp["text_offset"] == [len(prompt) + len("".join(lp["tokens"][:i])) for i in range(len(gen))]


@pytest.mark.parametrize("stop", [None, ["."]])
def test_streamed_logprobs_equal_the_plain_answers(server, stop):
    # Each chunk carries the entries of the tokens whose text it carries; together they equal the
    # plain answer's (a token cut by a stop string, or an EOS, comes in a last chunk without text).
    body = {"prompt": "The capital of France is", "max_tokens": 12, "temperature": 0, "logprobs": 2,
            "cache_prompt": False, "stop": stop}
    _, plain = post(server + "/v1/completions", body)
    status, text = post(server + "/v1/completions", {**body, "stream": True}, raw=True)
    assert status == 200
    chunks = [c for c in events(text) if c["choices"]]
    lp = {k: [] for k in ("tokens", "token_logprobs", "top_logprobs", "text_offset")}
    for c in chunks:
        got = c["choices"][0]["logprobs"]
        if got is not None:
            for k in lp:
                lp[k] += got[k]
    assert lp == plain["choices"][0]["logprobs"]
    assert "".join(c["choices"][0]["text"] for c in chunks) == plain["choices"][0]["text"]
    # Chat: the content entries.
    cbody = {"messages": [{"role": "user", "content": "Name a color."}], "temperature": 0, "max_tokens": 48,
             "logprobs": True, "top_logprobs": 2, "cache_prompt": False}
    _, cplain = post(server + "/v1/chat/completions", cbody)
    _, ctext = post(server + "/v1/chat/completions", {**cbody, "stream": True}, raw=True)
    content = []
    for c in events(ctext):
        if c["choices"] and c["choices"][0]["logprobs"] is not None:
            content += c["choices"][0]["logprobs"]["content"]
    assert content == cplain["choices"][0]["logprobs"]["content"]


def test_echo_scores_the_prompt_as_lm_eval_asks(server, model):
    # lm-evaluation-harness's loglikelihood request: token ids, echo, one token, logprobs 1; it
    # sums token_logprobs[ctxlen:-1] and checks each against the top alternative.
    text = "In the beginning God created the heaven and the earth."
    ids = model.tokenize(text)
    status, r = post(server + "/v1/completions", {"prompt": ids, "max_tokens": 1, "temperature": 0, "echo": True,
                                                  "logprobs": 1, "seed": 1234})
    assert status == 200, r
    lp = r["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(ids) + 1
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    ref = log_softmax(model.logits(ids, kv_type="f16"))
    want = ref[np.arange(len(ids) - 1), ids[1:]]
    np.testing.assert_allclose(lp["token_logprobs"][1:len(ids)], want, atol=2e-3)
    greedy = [v == max(t.values()) for v, t in zip(lp["token_logprobs"][1:len(ids)], lp["top_logprobs"][1:len(ids)])]
    assert greedy == list(ref[:-1].argmax(-1) == np.asarray(ids[1:]))
    assert r["choices"][0]["text"].startswith(text)
    assert lp["text_offset"][:3] == [0, len(lp["tokens"][0]), len(lp["tokens"][0]) + len(lp["tokens"][1])]
    # max_tokens 0: the prompt alone, as a text prompt.
    status, r0 = post(server + "/v1/completions", {"prompt": text, "max_tokens": 0, "echo": True, "logprobs": 0})
    assert status == 200 and r0["choices"][0]["text"] == text, r0
    assert r0["choices"][0]["logprobs"]["token_logprobs"][1:] == pytest.approx(lp["token_logprobs"][1:len(ids)],
                                                                             abs=1e-6)
    assert r0["choices"][0]["logprobs"]["top_logprobs"][1] == {}
    # echo without logprobs: the text only.
    status, r1 = post(server + "/v1/completions", {"prompt": text, "max_tokens": 2, "temperature": 0, "echo": True})
    assert r1["choices"][0]["text"].startswith(text) and r1["choices"][0]["logprobs"] is None


def test_chat_logprobs_in_openais_format(server, model):
    body = {"messages": [{"role": "user", "content": "Name a color."}], "temperature": 0, "max_tokens": 6,
            "logprobs": True, "top_logprobs": 2, "cache_prompt": False}
    status, r = post(server + "/v1/chat/completions", body)
    assert status == 200, r
    content = r["choices"][0]["logprobs"]["content"]
    assert len(content) == r["usage"]["completion_tokens"]
    assert "".join(c["token"] for c in content) == r["choices"][0]["message"]["content"]
    for c in content:
        assert bytes(c["bytes"]).decode("utf-8", "replace") == c["token"]
        assert len(c["top_logprobs"]) == 2 and c["top_logprobs"][0]["logprob"] >= c["top_logprobs"][1]["logprob"]
        assert c["logprob"] == c["top_logprobs"][0]["logprob"] <= 0
    status, plain = post(server + "/v1/chat/completions", {**body, "logprobs": False, "top_logprobs": None})
    assert plain["choices"][0]["logprobs"] is None
    assert plain["choices"][0]["message"] == r["choices"][0]["message"]


@pytest.mark.parametrize("path, body, status, fragment", [
    ("/v1/completions", b"{not json", 400, "not valid JSON"),
    ("/v1/completions", b"[1, 2]", 400, "must be a JSON object"),
    ("/v1/completions", b'{"prompt": "x", "max_tokens": 1e999}', 400, "not valid JSON"),  # found by the fuzzer
    ("/v1/completions", {"max_tokens": 4}, 400, "prompt: missing"),
    ("/v1/completions", {"prompt": ""}, 400, "prompt: empty"),
    ("/v1/completions", {"prompt": [1, -5]}, 400, "token ids"),
    ("/v1/completions", {"prompt": [10 ** 9]}, 400, "token id 1000000000 is not in [0, 49152)"),
    ("/v1/completions", {"prompt": "x", "max_tokens": -1}, 400, "max_tokens = -1"),
    ("/v1/completions", {"prompt": "x", "temperature": "hot"}, 400, "temperature: expected a number"),
    ("/v1/completions", {"prompt": "x", "temperature": 3}, 400, "temperature = 3"),
    ("/v1/completions", {"prompt": "x", "top_p": 1.5}, 400, "top_p = 1.5"),
    ("/v1/completions", {"prompt": "x", "stop": [""]}, 400, "stop: expected a non-empty string"),
    ("/v1/completions", {"prompt": "x", "stream": "yes"}, 400, "stream: expected true or false"),
    ("/v1/completions", {"prompt": "x", "cache_prompt": 1}, 400, "cache_prompt: expected true or false"),
    ("/v1/completions", {"prompt": "x", "n": 17}, 400, "n = 17 (must be <= 16)"),
    ("/v1/completions", {"prompt": "x", "n": 0}, 400, "n = 0 (must be in [1, 16])"),
    ("/v1/completions", {"prompt": "x", "best_of": 3}, 400, "best_of = 3 is not supported"),
    ("/v1/completions", {"prompt": "x", "logprobs": 21}, 400, "logprobs = 21 (must be <= 20)"),
    ("/v1/completions", {"prompt": "x", "logprobs": True}, 400, "logprobs: expected an integer"),
    ("/v1/completions", {"prompt": "x", "echo": True, "stream": True}, 400, "echo with stream = true"),
    ("/v1/completions", {"prompt": "x", "echo": "yes"}, 400, "echo: expected true or false"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}, 400,
     'top_logprobs needs "logprobs": true'),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "logprobs": 1}, 400,
     "logprobs: expected true or false"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "echo": True}, 400,
     "echo = true is not supported by /v1/chat/completions"),
    ("/v1/completions", {"prompt": "x", "presence_penalty": 2.5}, 400, "presence_penalty = 2.5"),
    ("/v1/completions", {"prompt": "x", "frequency_penalty": "lots"}, 400, "frequency_penalty: expected a number"),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"abc": 1}}, 400, 'logit_bias: key "abc" is not a token id'),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"5": 101}}, 400, "logit_bias[5] = 101"),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"99999": 1}}, 400, "token id 99999 is not in"),
    ("/v1/completions", {"prompt": "x", "logit_bias": [1, 2]}, 400, "logit_bias: expected an object"),
    ("/v1/completions", {"prompt": "x " * 9000}, 400, "the model's context holds 8192"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages: expected a non-empty array"),
    ("/v1/chat/completions", {"messages": [{"content": "hi"}]}, 400, "messages[0]: expected an object"),
    ("/v1/chat/completions", {"messages": [{"role": "function", "content": "x"}]}, 400, 'messages[0].role = "function"'),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
     "only text parts are supported"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
     400, "tools"),
    ("/tokenize", {"text": "x"}, 400, "content: expected a string"),
    ("/detokenize", {"tokens": [-1]}, 400, "token id -1"),
    ("/v1/rerank", {"query": "x"}, 404, "no such endpoint: POST /v1/rerank"),
])
def test_bad_requests_get_a_message(server, path, body, status, fragment):
    got, r = post(server + path, body)
    assert got == status, r
    assert fragment in r["error"]["message"], r
    assert r["error"]["code"] == status
    # The server still answers afterwards.
    assert post(server + "/v1/completions", {"prompt": "1, 2,", "max_tokens": 1, "temperature": 0})[0] == 200


def test_embeddings_equal_model_embed_and_llama_cpp(server, model):
    # /v1/embeddings in OpenAI's format: the same vectors as Model.embed (mean pooling, unit norm),
    # for each of OpenAI's input forms; a per-request "pooling" overrides the server's.
    texts = ["The capital of France is Paris.", "Paris is the capital city of France.", "def f(x): return x"]
    status, r = post(server + "/v1/embeddings", {"input": texts, "model": "any", "encoding_format": "float"})
    assert status == 200, r
    assert r["object"] == "list" and [d["index"] for d in r["data"]] == [0, 1, 2]
    got = np.array([d["embedding"] for d in r["data"]], dtype=np.float32)
    want = model.embed(texts)
    assert got.shape == (3, 576)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert r["usage"]["prompt_tokens"] == sum(len(model.to_tokens(t)) for t in texts)
    ids = model.to_tokens(texts[0])
    for body in ({"input": texts[0]}, {"input": ids}, {"input": [ids]}):
        status, one = post(server + "/v1/embeddings", body)
        assert status == 200 and len(one["data"]) == 1
        np.testing.assert_allclose(one["data"][0]["embedding"], want[0], atol=1e-6)
    status, last = post(server + "/v1/embeddings", {"input": texts[0], "pooling": "last"})
    np.testing.assert_allclose(last["data"][0]["embedding"], model.embed(texts[0], pooling="last"), atol=1e-6)
    for body, fragment in (({}, "input: missing"), ({"input": ""}, "input 0: empty"), ({"input": [[]]}, "input"),
                           ({"input": "x", "encoding_format": "base64"}, "encoding_format"),
                           ({"input": "x", "dimensions": 8}, "dimensions"), ({"input": "x", "pooling": "max"}, "pooling"),
                           ({"input": [1, -2]}, "token ids"), ({"input": [99999999]}, "token id")):
        status, err = post(server + "/v1/embeddings", body)
        assert status == 400 and fragment in err["error"]["message"], (body, err)


def test_json_mode_response_format(server, model):
    messages = [{"role": "user", "content": 'Return {"ok": true} as JSON.'}]
    # cache_prompt false: a fresh evaluation, Model.generate's numbers (a reused prefix is
    # evaluated in other chunks, which can move the logits' last bits).
    status, r = post(server + "/v1/chat/completions", {"messages": messages, "temperature": 0, "max_tokens": 64,
                                                       "response_format": {"type": "json_object"},
                                                       "cache_prompt": False})
    assert status == 200, r
    content = r["choices"][0]["message"]["content"]
    assert isinstance(json.loads(content), dict)
    prompt = model.apply_chat_template([(m["role"], m["content"]) for m in messages])
    assert content == model.generate(model.to_tokens(prompt), max_tokens=64, json_mode=True)
    status, err = post(server + "/v1/chat/completions", {"messages": messages, "response_format":
                                                         {"type": "json_schema", "json_schema": {}}})
    assert status == 400 and "response_format" in err["error"]["message"]


def test_chat_page_and_inspect(server, model):
    # GET / is the chat page (tools/attn/serve_ui/chat.html, embedded in the binary).
    with urllib.request.urlopen(server + "/", timeout=30) as r:
        page = r.read().decode()
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
    with open(os.path.join(ROOT, "tools", "attn", "serve_ui", "chat.html"), encoding="utf-8") as f:
        assert page == f.read()
    # POST /inspect: the viewer's page for a conversation (through the chat template, no generation
    # prompt) or a text; the same data as `attn inspect` computes for those tokens.
    from viewer_data import load_report_data
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}]
    def report(body):
        status, html = post(server + "/inspect", body, raw=True)
        assert status == 200, html
        path = os.path.join(ROOT, "build", "test-inspect.html")
        with open(path, "w", encoding="utf-8") as f:
            f.write(html)
        return load_report_data(path)

    data = report({"messages": messages})
    want = model.to_tokens(model.apply_chat_template([(m["role"], m["content"]) for m in messages],
                                                     add_generation_prompt=False))
    assert data["token_ids"] == want and len(data["heads_scores"]) == 270 and "lens" in data
    assert report({"prompt": "The cat sat on the mat."})["token_ids"] == model.to_tokens("The cat sat on the mat.")
    for body, fragment in (({"prompt": 5}, "prompt: expected a string"), ({"prompt": ""}, "no tokens"),
                           ({"prompt": "word " * 1100}, "at most 1024"), ({"messages": "x"}, "messages")):
        status, r = post(server + "/inspect", body)
        assert status == 400 and fragment in r["error"]["message"], (body, r)
