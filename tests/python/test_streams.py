"""Streams in Python: Model.generate(stream=True) gives the text of generate() piece by piece, and
create_chat_completion / create_completion(stream=True) give attn serve's stream chunks as dicts
(the same events as the server's, choice by choice). Closing or dropping a stream cancels it."""
from __future__ import annotations

import gc
import json
import threading
import time

import pytest

import attn
from test_serve import events, post, server  # noqa: F401  (the server fixture)

MESSAGES = [{"role": "system", "content": "Answer in one short sentence."},
            {"role": "user", "content": "What is the capital of France?"}]
VOLATILE = ("id", "created", "timings")


def _stable(chunk: dict) -> dict:
    """Without the response's id and time (tool call ids are made from the response id)."""
    out = json.loads(json.dumps({k: v for k, v in chunk.items() if k not in VOLATILE}))
    for choice in out["choices"]:
        for call in choice.get("delta", {}).get("tool_calls", []):
            call.pop("id")
    return out


def _by_choice(chunks: list) -> dict:
    """Each choice's chunks in order (choices interleave in a stream), and the usage chunks."""
    out: dict = {}
    for c in chunks:
        key = c["choices"][0]["index"] if c["choices"] else "usage"
        out.setdefault(key, []).append(_stable(c))
    return out


def test_generate_stream_pieces_make_generates_text(model):
    for kwargs in ({"max_tokens": 40}, {"max_tokens": 60, "stop": [" streets"]},
                   {"max_tokens": 30, "temperature": 0.8, "seed": 3, "logprobs": 2}):
        want = model.generate("Once upon a time", return_dict=True, **kwargs)
        stream = model.generate("Once upon a time", stream=True, **kwargs)
        assert isinstance(stream, attn.GenerationStream) and stream.result is None
        pieces = list(stream)
        assert len(pieces) > 1 and all(isinstance(p, str) and p for p in pieces)
        assert "".join(pieces) == want["text"]
        got = stream.result
        for key in ("tokens", "text", "stop_reason", "prompt_tokens"):
            assert got[key] == want[key], key
        if "logprobs" in kwargs:
            assert got["logprobs"] == want["logprobs"]
        assert list(stream) == []  # ended


def test_generate_stream_in_a_session_holds_the_session_until_it_ends(model):
    session = model.new_session()
    plain = model.new_session()
    want = model.generate("The cat sat", max_tokens=12, session=plain, return_dict=True)
    stream = model.generate("The cat sat", max_tokens=12, session=session, stream=True)
    with pytest.raises(RuntimeError, match="in use by a running stream"):
        model.generate("The cat", max_tokens=2, session=session)
    with pytest.raises(RuntimeError, match="in use by a running stream"):
        session.reset()
    assert "".join(stream) == want["text"]
    assert session.tokens == plain.tokens and session.n_past == plain.n_past
    # The next turn reuses the cache as it does without streams.
    nxt = model.generate(want["prompt_tokens"] + want["tokens"], max_tokens=4, session=session, stream=True,
                         return_dict=True)
    list(nxt)
    assert nxt.result["prompt_cached"] == plain.n_past


def test_closing_a_stream_cancels_its_generation(model):
    stream = model.generate("Once upon a time", max_tokens=2000, stream=True)
    first = next(stream)
    t0 = time.perf_counter()
    stream.close()
    assert time.perf_counter() - t0 < 2.0
    r = stream.result
    assert r["stop_reason"] == "cancelled" and 1 <= len(r["tokens"]) < 2000
    assert r["text"].startswith(first)
    with model.generate("Once upon a time", max_tokens=2000, stream=True) as s:
        next(s)
    assert s.result["stop_reason"] == "cancelled"
    # Dropped unfinished: the generation ends and the model answers at once.
    s = model.generate("Once upon a time", max_tokens=2000, stream=True)
    next(s)
    del s
    gc.collect()
    t0 = time.perf_counter()
    assert model.generate("Hello", max_tokens=3)
    assert time.perf_counter() - t0 < 5.0


def test_the_gil_is_free_while_a_stream_computes(model):
    stream = model.generate("Once upon a time", max_tokens=64, stream=True)
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    t = threading.Thread(target=tick)
    t.start()
    try:
        text = "".join(stream)
    finally:
        stop.set()
        t.join()
    assert text and len(ticks) > 5


def test_generate_stream_errors_raise_from_the_iteration(model):
    stream = model.generate("Once upon a time", max_tokens=8, stream=True, grammar="root ::= (")
    with pytest.raises(ValueError, match="grammar"):
        next(stream)
    assert stream.result is None and list(stream) == []
    with pytest.raises(TypeError, match="stream must be a bool"):
        model.generate("x", stream="yes")


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 16, "temperature": 0,
                              "stream_options": {"include_usage": True}}),
    ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 10, "n": 2, "seed": 5, "temperature": 1.0,
                              "logprobs": True, "top_logprobs": 2}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Weather in Paris?"}], "max_tokens": 64,
                              "temperature": 0, "tool_choice": "required", "tools": [
                                  {"type": "function", "function": {"name": "get_weather", "parameters": {
                                      "type": "object", "properties": {"city": {"type": "string"}},
                                      "required": ["city"]}}}]}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Say hello to me."}], "max_tokens": 48,
                              "temperature": 1.0, "seed": 2, "tools": [  # an answer, not a call: it streams
                                  {"type": "function", "function": {"name": "get_weather", "parameters": {
                                      "type": "object", "properties": {"city": {"type": "string"}},
                                      "required": ["city"]}}}]}),
    ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 24, "temperature": 0,
                              "grammar": 'root ::= "<think>" [a-z ]{3,12} "</think>" [A-Za-z ]{1,10}'}),
    ("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 20, "temperature": 0, "logprobs": 3,
                         "stop": ["\n"], "stream_options": {"include_usage": True}}),
])
def test_openai_streams_equal_the_servers(model, server, path, body):  # noqa: F811
    status, text = post(server + path, {**body, "stream": True, "cache_prompt": False}, raw=True)
    assert status == 200, text
    want = events(text)
    fields = dict(body)
    if path.endswith("chat/completions"):
        got = list(model.create_chat_completion(fields.pop("messages"), stream=True, **fields))
    else:
        got = list(model.create_completion(fields.pop("prompt"), stream=True, **fields))
    assert _by_choice(got) == _by_choice(want)
    # And the stream's text is the plain answer's.
    plain = (model.create_chat_completion(MESSAGES if "messages" not in body else body["messages"],
                                          **{k: v for k, v in body.items() if k not in ("messages", "stream_options")})
             if path.endswith("chat/completions") else
             model.create_completion(body["prompt"], **{k: v for k, v in body.items()
                                                        if k not in ("prompt", "stream_options")}))
    for choice in plain["choices"]:
        mine = [c["choices"][0] for c in got if c["choices"] and c["choices"][0]["index"] == choice["index"]]
        if "message" in choice:
            msg = choice["message"]
            assert "".join(c["delta"].get("content") or "" for c in mine) == (msg.get("content") or "")
            assert "".join(c["delta"].get("reasoning_content") or "" for c in mine) == \
                msg.get("reasoning_content", "")
            calls = [t for c in mine for t in c["delta"].get("tool_calls", [])]
            assert [t["function"] for t in calls] == [t["function"] for t in msg.get("tool_calls", [])]
        else:
            assert "".join(c["text"] for c in mine) == choice["text"]
        assert mine[-1]["finish_reason"] == choice["finish_reason"]


def test_openai_stream_close_cancels_and_errors_come_at_the_call(model):
    chunks = model.create_completion("Once upon a time", max_tokens=4000, temperature=0, stream=True)
    first = next(chunks)
    assert first["object"] == "text_completion"
    t0 = time.perf_counter()
    chunks.close()
    assert time.perf_counter() - t0 < 2.0
    with pytest.raises(ValueError, match="max_tokens"):
        model.create_completion("Hello", max_tokens=-1, stream=True)
    with pytest.raises(ValueError, match="stream: expected true or false"):
        model.create_chat_completion(MESSAGES, stream="yes")
    # A stream's chunks are JSON-serializable dicts, as a server would relay them.
    for c in model.create_chat_completion(MESSAGES, max_tokens=3, stream=True):
        json.dumps(c)
