"""Chat templates through Model.apply_chat_template: llama.cpp's built-in formats, and the file's own
Jinja template run by attn's interpreter, checked against jinja2's renderings of real models'
templates (tests/fixtures/chat_templates_jinja.json, made by tests/fixtures/make_jinja_fixtures.py)."""
from __future__ import annotations

import json
import os

import pytest

import attn
from test_hf_decoders import FIXTURES, _rewrite

with open(os.path.join(FIXTURES, "chat_templates_jinja.json"), encoding="utf-8") as f:
    JINJA = {t["file"]: t["cases"] for t in json.load(f)["templates"]}


def _with_template(tmp_path, file, **changes):
    """The tiny Qwen2 fixture model carrying the chat template of `file` (tests/fixtures/chat_templates/)."""
    with open(os.path.join(FIXTURES, "chat_templates", file), encoding="utf-8") as f:
        text = f.read()
    dst = tmp_path / (file + ".gguf")
    _rewrite(os.path.join(FIXTURES, "qwen2_tiny.gguf"), dst, **{"tokenizer.chat_template": text}, **changes)
    return attn.Model.load(str(dst))


def test_smollm2_jinja_template_equals_the_built_in_rendering(model):
    assert "<|im_start|>" in model.chat_template
    chats = [[("user", "Hi")],
             [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " 2+2? "},
              {"role": "assistant", "content": "4"}, {"role": "user", "content": "Café 日本"}]]
    for chat in chats:
        for gen in (True, False):
            assert model.apply_chat_template(chat, gen, jinja=True) == model.apply_chat_template(chat, gen, jinja=False)


# Templates of formats with and without a built-in rendering, with tools, tool calls and extra
# variables; none of them reads the clock (strftime_now), which the fixture fixes.
@pytest.mark.parametrize("file", ["NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja",
                                  "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
                                  "Qwen-Qwen3-0.6B.jinja", "google-gemma-2-2b-it.jinja"])
def test_real_templates_render_as_jinja2_does(tmp_path, file):
    m = _with_template(tmp_path, file)
    for case in JINJA[file]:
        ctx = dict(case["context"])
        messages, gen = ctx.pop("messages"), ctx.pop("add_generation_prompt")
        if "rendered" in case:
            assert m.apply_chat_template(messages, gen, jinja=True, **ctx) == case["rendered"], case["name"]
        else:
            with pytest.raises(ValueError) as e:
                m.apply_chat_template(messages, gen, jinja=True, **ctx)
            if case["error_type"] == "TemplateError":  # the template's own raise_exception message
                assert case["error"] in str(e.value)


def test_a_template_of_no_built_in_format_renders_by_default(tmp_path):
    m = _with_template(tmp_path, "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja")
    assert m.chat_format == ""
    text = m.apply_chat_template([("user", "Hi")])
    assert text.startswith("<|endoftext|>")  # the file's bos_token (its tokenizer adds no BOS itself)
    assert "<｜User｜>Hi<｜Assistant｜>" in text
    with pytest.raises(ValueError, match="no chat format attn knows"):
        m.apply_chat_template([("user", "Hi")], jinja=False)
    assert m.generate(text, max_tokens=2, return_dict=True)["prompt_tokens"] == m.tokenize(text)


def test_tools_and_template_variables_need_the_jinja_template(model):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with pytest.raises(ValueError, match="need the Jinja template"):
        model.apply_chat_template([("user", "Hi")], tools=tools, jinja=False)
    with pytest.raises(TypeError, match="must be JSON data"):
        model.apply_chat_template([("user", "Hi")], jinja=True, when=object())
    with pytest.raises(TypeError, match="str role and content"):
        model.apply_chat_template([{"role": "user"}])
    # SmolLM2's template has no tools section: the tools change nothing, the variables reach it.
    assert model.apply_chat_template([("user", "Hi")], tools=tools) == model.apply_chat_template([("user", "Hi")])


@pytest.fixture(scope="module")
def qwen3_server(tmp_path_factory):
    """attn serve --jinja on the tiny Qwen2 model carrying Qwen3's template (it reads enable_thinking)."""
    import subprocess

    from test_serve import ATTN_BIN

    # A context of 2,048 (RoPE: only metadata) so that prompts with tools fit.
    m = _with_template(tmp_path_factory.mktemp("qwen3"), "Qwen-Qwen3-0.6B.jinja", **{"qwen2.context_length": 2048})
    proc = subprocess.Popen([ATTN_BIN, "serve", "--port", "0", "--jinja", "--model", m.path],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        pytest.fail(f"attn serve did not start: {line!r} {proc.stderr.read()}")
    yield m, "http://" + line.split("http://", 1)[1].split()[0]
    proc.terminate()
    proc.wait(timeout=10)


def test_serve_renders_the_jinja_template_with_chat_template_kwargs(qwen3_server):
    from test_serve import post

    m, url = qwen3_server
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    status, r = post(url + "/apply-template", {"messages": messages})
    assert status == 200, r
    assert r["prompt"] == m.apply_chat_template(messages, jinja=True)
    status, r = post(url + "/apply-template", {"messages": messages, "chat_template_kwargs": {"enable_thinking": False}})
    assert status == 200, r
    assert r["prompt"] == m.apply_chat_template(messages, jinja=True, enable_thinking=False)
    assert r["prompt"].endswith("<think>\n\n</think>\n\n")  # Qwen3's switch for answers without thinking
    status, r = post(url + "/v1/chat/completions", {"messages": messages, "max_tokens": 3, "temperature": 0,
                                                    "chat_template_kwargs": {"enable_thinking": False}})
    assert status == 200, r
    assert r["usage"]["prompt_tokens"] == len(m.tokenize(m.apply_chat_template(messages, jinja=True,
                                                                               enable_thinking=False)))
    for body, fragment in [({"messages": messages, "chat_template_kwargs": [1]}, "expected an object"),
                           ({"messages": messages, "chat_template_kwargs": {"messages": []}}, "set by the server"),
                           ({"prompt": "x", "chat_template_kwargs": {}}, "is for /v1/chat/completions")]:
        status, r = post(url + ("/v1/completions" if "prompt" in body else "/v1/chat/completions"), body)
        assert status == 400 and fragment in r["error"]["message"], r


TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def test_serve_passes_tools_to_a_tool_call_template(qwen3_server):
    """With --jinja and a <tool_call> template (Qwen3's), tools and earlier calls go to the template as
    transformers passes them, with tool_choice "required" too (a grammar holds the answer to calls in
    the template's format)."""
    from test_serve import post

    m, url = qwen3_server
    history = [{"role": "user", "content": "Weather in Paris?"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "18 C"}]
    status, r = post(url + "/apply-template", {"messages": history, "tools": TOOLS})
    assert status == 200, r
    as_transformers = [history[0], {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        history[2]]
    assert r["prompt"] == m.apply_chat_template(as_transformers, tools=TOOLS)
    assert "<tool_response>\n18 C\n</tool_response>" in r["prompt"]
    status, r = post(url + "/v1/chat/completions", {"messages": history, "tools": TOOLS, "max_tokens": 4,
                                                    "temperature": 0})
    assert status == 200, r
    assert r["usage"]["prompt_tokens"] == len(m.tokenize(m.apply_chat_template(as_transformers, tools=TOOLS)))
    message = r["choices"][0]["message"]
    assert message["role"] == "assistant" and (message.get("tool_calls") or isinstance(message["content"], str))
    status, r = post(url + "/apply-template", {"messages": history, "tools": TOOLS, "tool_choice": "required"})
    assert status == 200 and r["prompt"] == m.apply_chat_template(as_transformers, tools=TOOLS), r


def test_cli_jinja_flag_renders_the_files_template(tmp_path):
    import subprocess

    from test_serve import ATTN_BIN

    m = _with_template(tmp_path, "meta-llama-Llama-3.2-3B-Instruct.jinja", **{"qwen2.context_length": 2048})
    out = {}
    for flags in ([], ["--jinja"]):
        r = subprocess.run([ATTN_BIN, "generate", "--model", m.path, "--chat", "--json", "-n", "1", *flags, "Hi"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        out[bool(flags)] = json.loads(r.stdout)["prompt_tokens"]
    # Llama 3.2's own template opens with a system turn ("Cutting Knowledge Date: ... Today Date: ..."),
    # llama.cpp's built-in llama3 format does not.
    assert out[True] != out[False]
    assert out[True] == m.tokenize(m.apply_chat_template([("user", "Hi")], jinja=True))
    assert out[False] == m.tokenize(m.apply_chat_template([("user", "Hi")], jinja=False))


@pytest.mark.parametrize("file", ["mistralai-Mistral-Nemo-Instruct-2407.jinja", "Mistral-Small-3.2-24B-Instruct-2506.jinja",
                                  "meta-llama-Llama-3.1-8B-Instruct.jinja", "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja",
                                  "moonshotai-Kimi-K2.jinja", "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja"])
def test_serve_gives_tools_and_calls_to_each_family_template(tmp_path, file):
    """attn serve --jinja with Mistral's, Llama 3.1's and Hermes' templates: the prompt of a request with
    tools and an earlier call (/apply-template) is what the template renders in Python's hands."""
    import subprocess

    from test_serve import ATTN_BIN, post

    m = _with_template(tmp_path, file, **{"qwen2.context_length": 8192})
    history = [{"role": "user", "content": "Weather in Paris?"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "abc123def", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
               {"role": "tool", "tool_call_id": "abc123def", "name": "get_weather", "content": "18 C"}]
    as_transformers = [history[0], {"role": "assistant", "content": "", "tool_calls": [
        {"id": "abc123def", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        *history[2:]]
    proc = subprocess.Popen([ATTN_BIN, "serve", "--port", "0", "--jinja", "--model", m.path],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = "http://" + proc.stdout.readline().split("http://", 1)[1].split()[0]
        status, r = post(url + "/apply-template", {"messages": history, "tools": TOOLS})
        assert status == 200, r
        assert r["prompt"] == m.apply_chat_template(as_transformers, tools=TOOLS)
        assert "get_weather" in r["prompt"] and "18 C" in r["prompt"]
        status, r = post(url + "/v1/chat/completions", {"messages": history, "tools": TOOLS, "max_tokens": 2,
                                                        "temperature": 0})
        assert status == 200, r
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_returns_the_think_block_as_reasoning_content(qwen3_server):
    """--reasoning-format deepseek (the default): an answer's <think> block comes back apart, whole or
    streamed (the answer is forced by a grammar: the tiny model writes no such thing itself)."""
    from test_serve import events, post

    _, url = qwen3_server
    body = {"messages": [{"role": "user", "content": "Capital of France?"}], "max_tokens": 200, "temperature": 0,
            "grammar": 'root ::= "<think>\\nThe capital is Paris.\\n</think>\\n\\nParis."'}
    status, r = post(url + "/v1/chat/completions", body)
    assert status == 200, r
    message = r["choices"][0]["message"]
    assert message["reasoning_content"] == "The capital is Paris." and message["content"] == "Paris.", message
    status, text = post(url + "/v1/chat/completions", {**body, "stream": True}, raw=True)
    assert status == 200, text
    deltas = [e["choices"][0]["delta"] for e in events(text) if e["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "The capital is Paris."
    assert "".join(d.get("content", "") for d in deltas) == "Paris."


def test_info_says_how_chat_prompts_are_built(tmp_path):
    import subprocess

    from test_serve import ATTN_BIN

    for file, want in [("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", "no built-in format (rendered as Jinja); parses"),
                       ("Qwen-Qwen3-0.6B.jinja", "built-in format chatml (--jinja: the template itself); parses")]:
        m = _with_template(tmp_path, file)
        r = subprocess.run([ATTN_BIN, "info", m.path], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and f"chat template: {want} as Jinja" in r.stdout, r.stdout[-300:]


def test_chat_template_class_renders_every_fixture_case():
    """attn.ChatTemplate (no model) on every real template and case of the jinja2 fixture."""
    with open(os.path.join(FIXTURES, "chat_templates_jinja.json"), encoding="utf-8") as f:
        fixture = json.load(f)
    now = fixture["strftime_now"].replace("T", " ")
    checked = 0
    for t in fixture["templates"]:
        with open(os.path.join(FIXTURES, "chat_templates", t["file"]), encoding="utf-8") as f:
            tmpl = attn.ChatTemplate(f.read())
        for case in t["cases"]:
            # Where jinja2 refuses to write a generator with tojson, attn writes it as a list.
            want = case.get("rendered_generators_as_lists", case.get("rendered"))
            if want is not None:
                assert tmpl.render(now=now, **case["context"]) == want, (t["file"], case["name"])
            else:
                with pytest.raises(ValueError):
                    tmpl.render(now=now, **case["context"])
            checked += 1
    assert checked == 700
    assert attn.render_template("{{ x | tojson }}", x={"a": [1, 2.5, None]}) == '{"a": [1, 2.5, null]}'
    with pytest.raises(ValueError, match="line 2: unknown or unsupported statement 'include'"):
        attn.ChatTemplate("ok\n{% include 'x' %}")
    with pytest.raises(TypeError, match="must be JSON data"):
        attn.render_template("{{ x }}", x=object())


def test_create_chat_completion_reads_tools_and_reasoning_in_process(tmp_path):
    """Model.create_chat_completion(jinja=True) on Qwen3's template: the same reading as attn serve."""
    m = _with_template(tmp_path, "Qwen-Qwen3-0.6B.jinja", **{"qwen2.context_length": 2048})
    grammar = ('root ::= "<think>\\nNeed the weather.\\n</think>\\n\\n<tool_call>\\n'
               '{\\"name\\": \\"get_weather\\", \\"arguments\\": {\\"city\\": \\"Paris\\"}}\\n</tool_call>"')
    r = m.create_chat_completion([{"role": "user", "content": "Weather in Paris?"}], jinja=True, tools=TOOLS,
                                 grammar=grammar, max_tokens=300, temperature=0)
    choice = r["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    assert choice["message"]["reasoning_content"] == "Need the weather."
    assert choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]["function"]
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}
    # Streamed: the thinking and the text before the call piece by piece, then the call, whole, in a
    # chunk of its own (index 0), then the finish; together the plain answer's message.
    grammar = grammar.replace('</think>\\n\\n', '</think>\\n\\nLet me look that up for you.\\n')
    body = dict(jinja=True, tools=TOOLS, grammar=grammar, max_tokens=300, temperature=0)
    plain = m.create_chat_completion([{"role": "user", "content": "Weather in Paris?"}], **body)["choices"][0]
    assert plain["message"]["content"] == "Let me look that up for you."
    chunks = [c["choices"][0] for c in m.create_chat_completion([{"role": "user", "content": "Weather in Paris?"}],
                                                                   stream=True, **body)]
    deltas = [c["delta"] for c in chunks]
    content = [d["content"] for d in deltas[1:] if d.get("content")]
    assert len(content) >= 3 and "".join(content) == plain["message"]["content"]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Need the weather."
    calls = [i for i, d in enumerate(deltas) if "tool_calls" in d]
    assert len(calls) == 1 and calls[0] > max(i for i, d in enumerate(deltas) if d.get("content"))
    streamed = deltas[calls[0]]["tool_calls"]
    assert [c["index"] for c in streamed] == [0]
    assert streamed[0]["function"] == plain["message"]["tool_calls"][0]["function"]
    assert not any("<tool_call>" in (d.get("content") or "") for d in deltas)
    assert chunks[-1]["finish_reason"] == "tool_calls"


def test_harmony_channels_become_reasoning_and_content(tmp_path):
    """A model with gpt-oss's template answers in harmony channels: the analysis channel comes back as
    reasoning_content, the final one as content (reasoning_format "none": the answer as written)."""
    m = _with_template(tmp_path, "openai-gpt-oss-120b.jinja", **{"qwen2.context_length": 4096})
    written = "<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant<|channel|>final<|message|>Paris."
    body = dict(grammar=f"root ::= {json.dumps(written)}", max_tokens=300, temperature=0)
    messages = [{"role": "user", "content": "Capital of France?"}]
    message = m.create_chat_completion(messages, **body)["choices"][0]["message"]
    assert message == {"role": "assistant", "reasoning_content": "Easy.", "content": "Paris."}
    assert m.create_chat_completion(messages, reasoning_format="none", **body)["choices"][0]["message"]["content"] == written
    # Streamed: the analysis channel as delta.reasoning_content pieces, then the final one as content.
    deltas = [c["choices"][0]["delta"] for c in m.create_chat_completion(messages, stream=True, **body)]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Easy."
    assert "".join(d.get("content") or "" for d in deltas) == "Paris."
    assert not any("<|" in (d.get("content") or "") + d.get("reasoning_content", "") for d in deltas)
    assert sum(1 for d in deltas if d.get("reasoning_content")) >= 2  # it streams, piece by piece


@pytest.mark.parametrize("file, written, reasoning, content", [
    ("moonshotai-Kimi-K2.jinja",
     "Let me check.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"
     '{"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|>', None, "Let me check."),
    ("CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja",
     '<|START_THINKING|>I will look it up.<|END_THINKING|><|START_ACTION|>[\n    {"tool_call_id": "0", "tool_name": '
     '"get_weather", "parameters": {"city": "Paris"}}\n]<|END_ACTION|>', "I will look it up.", None),
])
def test_kimi_and_command_r_tool_calls_whole_and_streamed(tmp_path, file, written, reasoning, content):
    """Kimi K2's and Command R7B's own tool formats (forced answers): the call comes back as tool_calls,
    Command R's plan as reasoning_content; streamed, the same pieces, the call in a chunk of its own."""
    m = _with_template(tmp_path, file, **{"qwen2.context_length": 8192})
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    assert "get_weather" in m.apply_chat_template(messages, tools=TOOLS)
    body = dict(jinja=True, tools=TOOLS, grammar=f"root ::= {json.dumps(written)}", max_tokens=400, temperature=0)
    choice = m.create_chat_completion(messages, **body)["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    message = choice["message"]
    assert message["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert message.get("reasoning_content") == reasoning and message["content"] == content
    deltas = [c["choices"][0]["delta"] for c in m.create_chat_completion(messages, stream=True, **body)]
    assert "".join(d.get("content") or "" for d in deltas) == (content or "")
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == (reasoning or "")
    calls = [d["tool_calls"] for d in deltas if "tool_calls" in d]
    assert len(calls) == 1 and calls[0][0]["function"] == message["tool_calls"][0]["function"]
    assert not any("<|" in (d.get("content") or "") + (d.get("reasoning_content") or "") for d in deltas)


def test_functionary_v32_answers_without_tools_lose_their_recipient_line(tmp_path):
    """Functionary v3.2's prompt ends with ">>>" and its answers name a recipient first ("all": the user):
    without tools too, the content is the text for the user, streamed as it comes."""
    m = _with_template(tmp_path, "meetkai-functionary-medium-v3.2.jinja", **{"qwen2.context_length": 2048})
    messages = [{"role": "user", "content": "Capital of France?"}]
    assert m.apply_chat_template(messages, jinja=True).endswith(">>>")
    body = dict(jinja=True, grammar='root ::= "all\\nThe capital of France is Paris."', max_tokens=60, temperature=0)
    message = m.create_chat_completion(messages, **body)["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "The capital of France is Paris."}
    deltas = [c["choices"][0]["delta"] for c in m.create_chat_completion(messages, stream=True, **body)]
    pieces = [d["content"] for d in deltas[1:] if d.get("content")]
    assert len(pieces) >= 3 and "".join(pieces) == message["content"]


def test_a_chat_template_given_at_load_and_deepseek_tool_calls(tmp_path):
    """A Qwen2-architecture model (as DeepSeek R1's Qwen distills are) loaded with llama.cpp's DeepSeek R1
    template instead of its own (Model.load(chat_template=), the CLI's --chat-template-file): the tools go
    through that template, and an answer in DeepSeek's format comes back as tool_calls, its thinking as
    reasoning_content."""
    with open(os.path.join(FIXTURES, "chat_templates", "llama-cpp-deepseek-r1.jinja"), encoding="utf-8") as f:
        template = f.read()
    dst = tmp_path / "qwen2_4k.gguf"
    _rewrite(os.path.join(FIXTURES, "qwen2_tiny.gguf"), dst, **{"qwen2.context_length": 4096})
    m = attn.Model.load(str(dst), chat_template=template)
    assert m.chat_template == template
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                               "parameters": {"type": "object",
                                                              "properties": {"city": {"type": "string"}}}}}]
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    prompt = m.apply_chat_template(messages, tools=tools)
    assert "get_weather" in prompt and prompt.rstrip().endswith("<｜Assistant｜><think>")
    written = ("weather\n</think>\n\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
               "```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>")
    r = m.create_chat_completion(messages, tools=tools, jinja=True, grammar=f"root ::= {json.dumps(written)}",
                                 max_tokens=400, temperature=0)
    choice = r["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert choice["message"]["reasoning_content"] == "weather" and choice["message"]["content"] is None
    # The model's own template is untouched in a model loaded without it; bad templates are refused.
    assert attn.Model.load(str(dst)).chat_template != template
    with pytest.raises(ValueError, match="chat template"):
        attn.Model.load(str(dst), chat_template="{% if %}")
    with pytest.raises(ValueError, match="empty"):
        attn.Model.load(str(dst), chat_template="")


def test_chat_template_file_option(tmp_path):
    import subprocess
    from test_serve import ATTN_BIN
    path = tmp_path / "t.jinja"
    path.write_text("{% for m in messages %}<<{{ m.role }}: {{ m.content }}>>{% endfor %}ANSWER:", encoding="utf-8")
    fixture = os.path.join(FIXTURES, "qwen2_tiny.gguf")
    r = subprocess.run([ATTN_BIN, "generate", "--model", fixture, "--chat", "--chat-template-file", str(path), "-n", "2",
                        "--json", "Hi"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["prompt_tokens"] == attn.Model.load(fixture).to_tokens("<<user: Hi>>ANSWER:")
    for bad, message in ((str(tmp_path / "missing.jinja"), "cannot read"), (str(tmp_path), "")):
        r = subprocess.run([ATTN_BIN, "generate", "--model", fixture, "--chat", "--chat-template-file", bad, "Hi"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "--chat-template-file" in r.stderr and message in r.stderr


@pytest.mark.parametrize("file, written, content", [
    ("meetkai-functionary-medium-v3.2.jinja", "all\nLet me check.>>>get_weather\n{\"city\": \"Paris\"}", "Let me check."),
    ("meetkai-functionary-medium-v3.1.jinja", "<function=get_weather>{\"city\": \"Paris\"}</function>", None),
])
def test_functionary_tool_calls(tmp_path, file, written, content):
    """Functionary v3.2 (">>>recipient" segments) and v3.1 (<function=NAME>) answers come back as
    tool_calls with attn serve --jinja's reading (here through create_chat_completion(jinja=True))."""
    m = _with_template(tmp_path, file, **{"qwen2.context_length": 4096})
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                               "parameters": {"type": "object",
                                                              "properties": {"city": {"type": "string"}}}}}]
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    r = m.create_chat_completion(messages, tools=tools, jinja=True, grammar=f"root ::= {json.dumps(written)}",
                                 max_tokens=200, temperature=0)
    message = r["choices"][0]["message"]
    assert r["choices"][0]["finish_reason"] == "tool_calls"
    assert message["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert message["content"] == content


ADD_AND_WEATHER = [
    {"type": "function", "function": {"name": "add", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}},
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
        "required": ["city"]}}}]


def _fits(call):
    args = json.loads(call["function"]["arguments"])
    if call["function"]["name"] == "add":
        return set(args) == {"a", "b"} and all(type(args[k]) is int for k in "ab")
    return call["function"]["name"] == "get_weather" and args == {"city": args["city"]} and args["city"] in ("Paris", "Oslo")


def test_required_tool_calls_in_the_models_own_format(tmp_path):
    """tool_choice "required" or a tool's name with --jinja and a <tool_call> template: the answer is
    held to calls in the model's format (serve::RequiredCallsGrammar) of the allowed tools, with
    arguments that fit their schemas, even from a random tiny model; the prompt is the template's
    own, with the tools."""
    m = _with_template(tmp_path, "Qwen-Qwen2.5-7B-Instruct.jinja", **{"qwen2.context_length": 2048})
    messages = [{"role": "user", "content": "Add 2 and 3."}]
    named = {"type": "function", "function": {"name": "add"}}
    for choice, allowed in (("required", {"add", "get_weather"}), (named, {"add"})):
        names = set()
        for seed in range(4):
            r = m.create_chat_completion(messages, jinja=True, tools=ADD_AND_WEATHER, tool_choice=choice,
                                         parallel_tool_calls=False, max_tokens=300, temperature=1.0, seed=seed)
            choice0 = r["choices"][0]
            assert choice0["finish_reason"] == "tool_calls", choice0
            assert choice0["message"]["content"] is None
            calls = choice0["message"]["tool_calls"]
            assert len(calls) == 1 and _fits(calls[0]), calls
            names.add(calls[0]["function"]["name"])
        assert names <= allowed
    # Streamed: the call's arguments as they are written (OpenAI's deltas: the first entry with the id
    # and name, then pieces of the arguments), joined the plain answer's call; then tool_calls.
    for seed in range(2):
        body = dict(jinja=True, tools=ADD_AND_WEATHER, tool_choice=named, parallel_tool_calls=False,
                    max_tokens=300, temperature=1.0, seed=seed)
        plain = m.create_chat_completion(messages, **body)["choices"][0]
        chunks = [c["choices"][0] for c in m.create_chat_completion(messages, stream=True, **body) if c["choices"]]
        entries = [d for c in chunks for d in c["delta"].get("tool_calls", [])]
        assert entries[0]["id"].startswith("call_") and entries[0]["type"] == "function"
        assert entries[0]["function"]["name"] == "add" and all("id" not in e for e in entries[1:])
        assert {e["index"] for e in entries} == {0}
        joined = "".join(e["function"]["arguments"] for e in entries)
        assert joined == plain["message"]["tool_calls"][0]["function"]["arguments"]
        assert len(entries) >= 4, entries  # {"a": ..., "b": ...} in pieces
        assert chunks[-1]["finish_reason"] == "tool_calls"
    # Without --jinja the generic JSON form answers (the template's format is not used).
    r = m.create_chat_completion(messages, tools=ADD_AND_WEATHER, tool_choice="required", max_tokens=300,
                                 temperature=1.0, seed=0)
    assert all(_fits(c) for c in r["choices"][0]["message"]["tool_calls"])
