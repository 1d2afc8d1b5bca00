"""Model.create_chat_completion / create_completion: OpenAI's request and response formats in-process,
answered by the same code as attn serve (so: equal to the server's answers, and to Model.generate)."""
from __future__ import annotations

import json

import pytest

from test_serve import post, server  # noqa: F401  (the server fixture)

MESSAGES = [{"role": "system", "content": "Answer in one short sentence."},
            {"role": "user", "content": "What is the capital of France?"}]
VOLATILE = ("id", "created", "timings")


def _stable(r: dict) -> dict:
    return {k: v for k, v in r.items() if k not in VOLATILE}


def test_chat_completion_equals_generate_and_the_server(model, server):  # noqa: F811
    r = model.create_chat_completion(MESSAGES, max_tokens=12, temperature=0)
    assert r["object"] == "chat.completion" and r["model"].endswith(".gguf")
    text = model.generate(model.apply_chat_template([(m["role"], m["content"]) for m in MESSAGES]), max_tokens=12)
    assert r["choices"][0]["message"] == {"role": "assistant", "content": text}
    status, s = post(server + "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 12, "temperature": 0})
    assert status == 200
    assert _stable(r) == _stable(s)


def test_completion_with_logprobs_and_echo_equals_the_server(model, server):  # noqa: F811
    body = {"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0, "logprobs": 2, "echo": True}
    r = model.create_completion(body.pop("prompt"), **body)
    status, s = post(server + "/v1/completions", {"prompt": "The capital of France is", **body})
    assert status == 200
    assert _stable(r) == _stable(s)
    assert r["choices"][0]["text"].startswith("The capital of France is")
    ids = model.tokenize("Once upon a time")
    assert model.create_completion(ids, max_tokens=3, temperature=0)["usage"]["prompt_tokens"] == len(ids)


def test_seeded_choices_and_tools(model):
    r = model.create_chat_completion(MESSAGES, max_tokens=6, n=2, seed=7, temperature=1.0)
    assert [c["index"] for c in r["choices"]] == [0, 1]
    again = model.create_chat_completion(MESSAGES, max_tokens=6, n=2, seed=7, temperature=1.0)
    assert [c["message"] for c in r["choices"]] == [c["message"] for c in again["choices"]]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    r = model.create_chat_completion([{"role": "user", "content": "Weather in Paris?"}], tools=tools,
                                     tool_choice="required", temperature=0, max_tokens=64)
    call = r["choices"][0]["message"]["tool_calls"][0]["function"]
    assert call["name"] == "get_weather" and "city" in json.loads(call["arguments"])
    assert r["choices"][0]["finish_reason"] == "tool_calls"


def test_bad_requests_raise_with_the_servers_message(model):
    with pytest.raises(ValueError, match="best_of = 2 is not supported"):
        model.create_chat_completion(MESSAGES, best_of=2)
    with pytest.raises(ValueError, match=r"messages\[0\]"):
        model.create_chat_completion([{"content": "no role"}])
    with pytest.raises(ValueError, match="reasoning_format"):
        model.create_chat_completion(MESSAGES, reasoning_format="other")
    with pytest.raises(TypeError, match="JSON data"):
        model.create_completion("x", stop=object())
