"""Grammar-constrained generation: GBNF grammars and JSON schemas in Model.generate, the CLI and the
server, checked against llama.cpp's greedy answers under the same grammars (fixture made by
tests/fixtures/make_grammar_fixture.py) and against the schemas themselves."""
import json
import os
import subprocess

import pytest

from test_serve import post, server  # noqa: F401  (the server fixture)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ATTN_BIN = os.path.join(ROOT, "build", "bin", "attn")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "grammar_llamacpp.json")

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer"},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 3},
    },
    "required": ["name", "age", "hobbies"],
}


def chat(model, text):
    return model.apply_chat_template([("user", text)])


def check_person(text):
    obj = json.loads(text)
    assert list(obj) == ["name", "age", "hobbies"], text
    assert isinstance(obj["name"], str) and len(obj["name"]) <= 20
    assert isinstance(obj["age"], int) and not isinstance(obj["age"], bool)
    assert isinstance(obj["hobbies"], list) and len(obj["hobbies"]) <= 3
    assert all(isinstance(h, str) for h in obj["hobbies"])


def test_greedy_answers_equal_llamacpp_under_the_same_grammars(model):
    # The grammars include llama.cpp's own conversions of two JSON schemas, parsed by attn as
    # llama.cpp wrote them.
    with open(FIXTURE) as f:
        fixture = json.load(f)
    same = []
    for case in fixture["cases"]:
        r = model.generate(case["prompt"], max_tokens=case["max_tokens"], grammar=case["grammar"], return_dict=True)
        same.append(r["text"] == case["text"])
        if case["finish_reason"] == "stop":
            assert r["stop_reason"] == "eos", (case["name"], r["text"])
    # Greedy choices agree with llama.cpp's on ~93% of positions without a grammar (test_llamacpp.py);
    # under these grammars every answer is the same text.
    assert all(same), [c["name"] for c, s in zip(fixture["cases"], same) if not s]


def test_grammar_keeps_every_sample_in_the_language(model):
    grammar = 'root ::= "Shopping list:\\n" item{2,4}\nitem ::= "- " [a-z]+ (" " [a-z]+)? "\\n"'
    for seed in range(4):
        r = model.generate(chat(model, "What should I buy for a picnic?"), max_tokens=60, temperature=1.0,
                           seed=seed, grammar=grammar, return_dict=True)
        lines = r["text"].split("\n")
        assert lines[0] == "Shopping list:"
        if r["stop_reason"] == "eos":  # complete: 2-4 items, then the empty piece after the last newline
            assert 2 <= len(lines) - 2 <= 4 and lines[-1] == ""
        for line in lines[1:-1]:
            assert line.startswith("- ") and all(w.isalpha() and w.islower() for w in line[2:].split(" "))


def test_json_schema_answers_fit_the_schema(model):
    prompt = chat(model, "Describe a person in JSON.")
    for seed in range(3):
        r = model.generate(prompt, max_tokens=96, temperature=0.8, seed=seed, json_schema=PERSON, return_dict=True)
        assert r["stop_reason"] == "eos", r["text"]
        check_person(r["text"])
    # The schema as JSON text is the same constraint; generate_batch too.
    greedy = model.generate(prompt, max_tokens=96, json_schema=PERSON)
    check_person(greedy)
    assert model.generate(prompt, max_tokens=96, json_schema=json.dumps(PERSON)) == greedy
    assert model.generate_batch([prompt, prompt], max_tokens=96, json_schema=PERSON) == [greedy, greedy]


def test_bad_grammars_and_schemas_are_errors(model):
    cases = [
        (dict(grammar="root ::= foo"), ValueError, "undefined rule 'foo'"),
        (dict(grammar='root ::= "a" | root "b"'), ValueError, "left recursion"),
        (dict(grammar="start ::= \"a\""), ValueError, "no rule named 'root'"),
        (dict(grammar=""), ValueError, "empty grammar"),
        (dict(grammar=3), TypeError, "GBNF text"),
        (dict(json_schema={"type": "string", "pattern": "^(a)\\1$"}), ValueError, "backreference"),
        (dict(json_schema={"type": "strin"}), ValueError, "strin"),
        (dict(json_schema="{not json"), ValueError, "not valid JSON"),
        (dict(json_schema=[1]), TypeError, "json_schema"),
        (dict(json_mode=True, grammar='root ::= "a"'), ValueError, "exclude each other"),
        (dict(grammar='root ::= "a"', json_schema={"type": "integer"}), ValueError, "exclude each other"),
    ]
    for kwargs, error, fragment in cases:
        with pytest.raises(error, match=fragment):
            model.generate("Hi", max_tokens=4, **kwargs)


def test_cli_grammar_and_json_schema(model, tmp_path):
    prompt = chat(model, "Is the sky blue? Answer yes or no.")
    grammar = 'root ::= ("yes" | "no") "."'
    run = lambda *a: subprocess.run([ATTN_BIN, "generate", "--json", "-n", "64", "-t", "2", *a, prompt],  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    out = run("--grammar", grammar)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["text"] == model.generate(prompt, max_tokens=64, grammar=grammar)
    path = tmp_path / "g.gbnf"
    path.write_text(grammar + "\n")
    assert json.loads(run("--grammar-file", str(path)).stdout)["text"] in ("yes.", "no.")
    schema = tmp_path / "person.json"
    schema.write_text(json.dumps(PERSON))
    person = chat(model, "Describe a person in JSON.")
    out = subprocess.run([ATTN_BIN, "generate", "--json", "-n", "96", "-t", "2", "--json-schema-file", str(schema),
                          person], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["text"] == model.generate(person, max_tokens=96, json_schema=PERSON)
    for args, fragment in ((["--grammar", "root ::= (\"a\""], "'(' without its ')'"),
                           (["--grammar-file", str(tmp_path / "missing.gbnf")], "missing.gbnf"),
                           (["--json-schema", '{"type": "object", "minProperties": 1}'], "minProperties"),
                           (["--grammar", grammar, "--json-mode"], "excludes")):
        out = run(*args)
        assert out.returncode != 0 and fragment in out.stderr, (args, out.stderr)


def test_server_json_schema_and_grammar(server, model):  # noqa: F811
    messages = [{"role": "user", "content": "Describe a person in JSON."}]
    prompt = model.to_tokens(model.apply_chat_template([(m["role"], m["content"]) for m in messages]))
    want = model.generate(prompt, max_tokens=96, json_schema=PERSON)
    for response_format in ({"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
                            {"type": "json_object", "schema": PERSON}):
        status, r = post(server + "/v1/chat/completions", {"messages": messages, "temperature": 0, "max_tokens": 96,
                                                           "response_format": response_format, "cache_prompt": False})
        assert status == 200, r
        assert r["choices"][0]["message"]["content"] == want
        check_person(want)
    status, r = post(server + "/v1/completions", {"prompt": model.apply_chat_template([("user", "Is the sky blue?")]),
                                                  "max_tokens": 8, "temperature": 0, "cache_prompt": False,
                                                  "grammar": 'root ::= ("yes" | "no") "."'})
    assert status == 200 and r["choices"][0]["text"] in ("yes.", "no."), r
    status, r = post(server + "/v1/completions", {"prompt": "Hi", "max_tokens": 40, "json_schema": PERSON,
                                                  "temperature": 0, "cache_prompt": False})
    assert status == 200
    assert r["choices"][0]["text"] == model.generate("Hi", max_tokens=40, json_schema=PERSON)
    for body, fragment in (({"grammar": "root ::= x"}, "undefined rule 'x'"),
                           ({"grammar": 5}, "grammar: expected GBNF text"),
                           ({"json_schema": {"type": "object", "patternProperties": {}}}, "patternProperties"),
                           ({"response_format": {"type": "json_schema"}}, "response_format"),
                           ({"response_format": {"type": "xml"}}, "response_format"),
                           ({"grammar": 'root ::= "a"', "response_format": {"type": "json_object"}}, "exclude each other")):
        status, err = post(server + "/v1/completions", {"prompt": "Hi", "max_tokens": 4, **body})
        assert status == 400 and fragment in err["error"]["message"], (body, err)
