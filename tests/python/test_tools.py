"""OpenAI function calling in attn serve (src/serve/tools.h): tools described in the system message,
the answer constrained to {"tool_calls": [...]} or {"response": ...}, returned as tool_calls (with
arguments that fit each tool's parameters) or content; earlier calls and tool results in the
conversation; every malformed tools field refused with its name."""
import json

from test_serve import post, server  # noqa: F401  (the server fixture)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30},
                           "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "description": "The current time in a time zone.",
                 "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 30}},
                                "required": ["zone"]}},
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def chat(url, **body):
    body.setdefault("max_tokens", 128)
    body.setdefault("temperature", 0)
    status, r = post(url + "/v1/chat/completions", body)
    assert status == 200, r
    return r["choices"][0]


def check_weather_call(call):
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    args = json.loads(call["function"]["arguments"])
    assert list(args) == ["city", "unit"] and isinstance(args["city"], str) and len(args["city"]) <= 30
    assert args["unit"] in ("celsius", "fahrenheit")
    return args


def test_required_tool_choice_gives_calls_that_fit_the_parameters(server):  # noqa: F811
    choice = chat(server, messages=ASK, tools=[WEATHER, TIME], tool_choice="required")
    assert choice["finish_reason"] == "tool_calls", choice
    message = choice["message"]
    assert message["role"] == "assistant" and message["content"] is None
    assert 1 <= len(message["tool_calls"]) <= 8
    for call in message["tool_calls"]:
        assert call["function"]["name"] in ("get_weather", "get_time")
        args = json.loads(call["function"]["arguments"])
        if call["function"]["name"] == "get_weather":
            check_weather_call(call)
        else:
            assert list(args) == ["zone"]
    assert len({c["id"] for c in message["tool_calls"]}) == len(message["tool_calls"])


def test_named_tool_and_one_call(server):  # noqa: F811
    choice = chat(server, messages=ASK, tools=[TIME, WEATHER], parallel_tool_calls=False,
                  tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert choice["finish_reason"] == "tool_calls"
    assert len(choice["message"]["tool_calls"]) == 1
    check_weather_call(choice["message"]["tool_calls"][0])


def test_auto_and_none(server):  # noqa: F811
    # auto: calls or an answer, each in its place; sampled with several seeds.
    kinds = set()
    for seed in range(4):
        choice = chat(server, messages=ASK, tools=[WEATHER], temperature=1.0, seed=seed)
        message = choice["message"]
        if message.get("tool_calls"):
            kinds.add("calls")
            assert choice["finish_reason"] == "tool_calls" and message["content"] is None
            for call in message["tool_calls"]:
                check_weather_call(call)
        elif choice["finish_reason"] == "stop":
            kinds.add("answer")
            assert isinstance(message["content"], str) and "tool_calls" not in message
    assert kinds
    # none: tools ignored, a plain answer (the same as without tools).
    plain = chat(server, messages=ASK, max_tokens=24, cache_prompt=False)
    none = chat(server, messages=ASK, max_tokens=24, tools=[WEATHER], tool_choice="none", cache_prompt=False)
    assert none["message"] == plain["message"]


def test_streamed_tool_calls_equal_the_plain_answer(server):  # noqa: F811
    # A stream with tools sends the role chunk, then the calls (delta.tool_calls with indexes; the
    # generic JSON answer's once it is complete), then the finish.
    import urllib.request
    plain = chat(server, messages=ASK, tools=[WEATHER, TIME], tool_choice="required", cache_prompt=False)
    body = {"messages": ASK, "tools": [WEATHER, TIME], "tool_choice": "required", "temperature": 0,
            "max_tokens": 128, "stream": True, "cache_prompt": False}
    req = urllib.request.Request(server + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        events = [line[6:] for line in r.read().decode().split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e)["choices"][0] for e in events[:-1]]
    assert chunks[0]["delta"] == {"role": "assistant", "content": ""}
    calls = [c for c in chunks if "tool_calls" in c["delta"]]
    assert len(calls) == 1
    streamed = calls[0]["delta"]["tool_calls"]
    assert [c.pop("index") for c in streamed] == list(range(len(streamed)))
    # The same calls (ids name their response, so they differ between the two).
    assert [(c["type"], c["function"]) for c in streamed] == \
        [(c["type"], c["function"]) for c in plain["message"]["tool_calls"]]
    assert all(c["id"].startswith("call_chatcmpl-") for c in streamed)
    assert not any(c["delta"].get("content") for c in chunks)
    assert chunks[-1]["finish_reason"] == "tool_calls"


def test_an_answer_with_tools_streams_as_it_is_written(server):  # noqa: F811
    # tool_choice auto and an answer instead of a call (seed 7): its "response" string comes out
    # piece by piece, the escapes decoded, and makes the plain answer's content.
    import urllib.request
    ask = [{"role": "user", "content": "Say hello to me."}]
    body = {"messages": ask, "tools": [WEATHER], "temperature": 1.0, "seed": 7, "max_tokens": 48, "cache_prompt": False}
    plain = chat(server, **body)
    assert plain["finish_reason"] == "stop" and "tool_calls" not in plain["message"], plain
    req = urllib.request.Request(server + "/v1/chat/completions", data=json.dumps({**body, "stream": True}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        events = [line[6:] for line in r.read().decode().split("\n") if line.startswith("data: ")]
    deltas = [json.loads(e)["choices"][0]["delta"] for e in events[:-1]]
    pieces = [d["content"] for d in deltas[1:] if d.get("content")]
    assert len(pieces) >= 3 and not any('"response"' in p for p in pieces), pieces
    assert "".join(pieces) == plain["message"]["content"]


def test_a_conversation_with_a_call_and_its_result(server):  # noqa: F811
    first = chat(server, messages=ASK, tools=[WEATHER], tool_choice="required")
    call = first["message"]["tool_calls"][0]
    messages = ASK + [first["message"],
                      {"role": "tool", "tool_call_id": call["id"], "content": '{"celsius": 21, "sky": "clear"}'}]
    second = chat(server, messages=messages, tools=[WEATHER])
    assert second["finish_reason"] in ("stop", "tool_calls", "length")
    message = second["message"]
    assert (message["content"] is None) == bool(message.get("tool_calls"))


def test_bad_tools_are_refused_by_name(server):  # noqa: F811
    bad = [
        ({"tools": "get_weather"}, "tools: expected an array"),
        ({"tools": [{"type": "function"}]}, "tools[0]: expected"),
        ({"tools": [{"type": "function", "function": {"name": ""}}]}, "tools[0].function.name"),
        ({"tools": [WEATHER, WEATHER]}, "is given twice"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": 3}}]}, "tools[0].function.parameters"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string", "pattern": "(?=a)"}}}]},
         "tools[0].function.parameters: json_schema: "),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "not among the tools"),
        ({"tool_choice": "required"}, "without tools"),
        ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
        ({"tools": [WEATHER], "stream": True, "logprobs": True}, "stream and logprobs"),
        ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "exclude each other"),
        ({"messages": ASK + [{"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "get_weather",
                                                                                             "arguments": "{nope"}}]}],
          "tools": [WEATHER]}, "messages[1].tool_calls[0].function.arguments: not valid JSON"),
    ]
    for body, fragment in bad:
        status, err = post(server + "/v1/chat/completions", {"messages": ASK, "max_tokens": 4, **body})
        assert status == 400 and fragment in err["error"]["message"], (body, err)
    status, err = post(server + "/v1/completions", {"prompt": "Hi", "tools": [WEATHER]})
    assert status == 400 and "/v1/chat/completions" in err["error"]["message"]
