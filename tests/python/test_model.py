"""attn.Model on the default model (SmolLM2-135M-Instruct, Q4_1) and on hostile files.

The default model is fetched by scripts/setup.sh; a missing model fails these tests (it is part
of the test environment, not optional)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

import attn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
ATTN_BIN = os.path.join(ROOT, "build", "bin", "attn")
GPT2_TINY = os.path.join(FIXTURES, "gpt2_tiny.gguf")


def test_config_matches_smollm2(model):
    c = model.config
    assert (c["arch"], c["n_layers"], c["d_model"], c["n_heads"], c["n_kv_heads"]) == ("llama", 30, 576, 9, 3)
    assert (c["head_dim"], c["d_ff"], c["vocab_size"], c["context_length"]) == (64, 1536, 49152, 8192)
    assert c["tied_output"]


def test_logits_are_finite_and_causal(model):
    ids = model.tokenize("The quick brown fox jumps over the lazy dog.")
    full = model.logits(ids)
    assert full.shape == (len(ids), 49152) and full.dtype == np.float32
    assert np.isfinite(full).all()
    # Position i depends only on tokens <= i: changing the tail leaves earlier rows unchanged, to
    # the bit (same shapes, so the same kernel paths and summation orders).
    other = ids[:5] + model.tokenize(" Completely different words follow here now")[: len(ids) - 5]
    other = other + ids[len(other):]
    np.testing.assert_array_equal(model.logits(other)[:5], full[:5])
    # A shorter prefix runs other kernel paths (decode-style attention, smaller tiles); with 8-bit
    # activations, last-bit differences can flip a quantization step, which this small model
    # amplifies to ~0.1-0.5 in the logits (the same noise floor as vs llama.cpp). The argmax
    # must still mostly agree and the rows stay close. Measured mean differences (2026-12-03):
    # AVX3 0.21, SSE4 0.17, AVX2 0.13, scalar 0 (its decode and prefill sum in the same order).
    prefix = model.logits(ids[:5])
    assert np.abs(prefix - full[:5]).mean() < 0.3
    assert (prefix.argmax(-1) == full[:5].argmax(-1)).mean() >= 0.6


def test_thread_count_does_not_change_logits(model):
    ids = model.tokenize("Threads must not change results.")
    np.testing.assert_array_equal(model.logits(ids, threads=1), model.logits(ids, threads=2))


def test_greedy_is_deterministic_and_sampling_follows_the_seed(model):
    a = model.generate("Once upon a time", max_tokens=12)
    b = model.generate("Once upon a time", max_tokens=12)
    assert a == b and len(a) > 0
    s1 = model.generate("Once upon a time", max_tokens=16, temperature=1.0, seed=42)
    s2 = model.generate("Once upon a time", max_tokens=16, temperature=1.0, seed=42)
    assert s1 == s2
    outs = {model.generate("Once upon a time", max_tokens=16, temperature=1.5, seed=s, top_k=0, top_p=1.0,
                           min_p=0.0) for s in range(4)}
    assert len(outs) > 1, "different seeds at temperature 1.5 all gave the same text"


def test_generate_returns_tokens_and_timings(model):
    r = model.generate("def fibonacci(n):", max_tokens=8, return_dict=True)
    assert r["prompt_tokens"] == model.tokenize("def fibonacci(n):")
    assert 0 < len(r["tokens"]) <= 8
    assert r["text"] == model.detokenize(r["tokens"])
    assert r["prompt_ms"] > 0 and r["stop_reason"] in ("eos", "length", "stop")


def test_generate_batch_equals_generate_one_at_a_time(model):
    # Four prompts generated together (each step one forward pass for all): every result equals
    # generate()'s on its own prompt, token for token (Q4_1 / Q8_0 weights: a batch of up to 24
    # rows is computed as one-row products), with each prompt's own stop and its own seed (+ i).
    prompts = ["Once upon a time", "def fibonacci(n):", model.tokenize("The capital of France is"),
               "List three colors, then explain in a few sentences why the sky looks blue on a clear day:"]
    got = model.generate_batch(prompts, max_tokens=24, stop=["\n\n"], return_dict=True)
    for p, r in zip(prompts, got):
        want = model.generate(p, max_tokens=24, stop=["\n\n"], return_dict=True)
        assert (r["tokens"], r["text"], r["stop_reason"]) == (want["tokens"], want["text"], want["stop_reason"])
    sampled = model.generate_batch(prompts[:2], max_tokens=12, temperature=1.0, seed=7)
    assert sampled == [model.generate(p, max_tokens=12, temperature=1.0, seed=7 + i) for i, p in enumerate(prompts[:2])]
    assert model.generate_batch(["Hi"], max_tokens=0) == [""]
    with pytest.raises(ValueError, match="no prompts"):
        model.generate_batch([])
    with pytest.raises(TypeError, match="list of prompts"):
        model.generate_batch("one string")
    with pytest.raises(ValueError, match="the prompt is empty"):
        model.generate_batch(["fine", []])


def test_kv_cache_types(model):
    # The KV cache's storage: f16 (default, llama.cpp's), bf16, f32, q8_0. A confident continuation
    # is the same under each; a name outside the four is an error.
    first = {t: tuple(model.generate("1, 2, 3, 4,", max_tokens=4, kv_type=t, return_dict=True)["tokens"][:2])
             for t in ("f16", "bf16", "f32", "q8_0")}
    assert len(set(first.values())) == 1, first
    assert model.detokenize(list(first["f16"])) == " 5"
    with pytest.raises(ValueError, match="kv_type = 'f8'"):
        model.generate("x", max_tokens=2, kv_type="f8")


def test_q8_0_cache_stays_close_to_the_exact_one(model):
    # Logits over a text with the q8_0 cache (each key and value rounded to 8 bits per 32-value
    # block) against the float32 cache: the same next token almost everywhere, and a mean
    # difference of the size the half caches give (any rounding of K and V moves the model's
    # 8-bit activation products downstream); a session grows and a generation reuses it as with the
    # other types.
    text = ("The printing press was invented in the fifteenth century. It changed how books were made, "
            "how ideas spread, and who could read them. Before it, every copy was written by hand.") * 3
    ids = model.to_tokens(text)
    exact = model.logits(ids, kv_type="f32")
    stats = {}
    for t in ("f16", "bf16", "q8_0"):
        x = model.logits(ids, kv_type=t)
        stats[t] = (float((exact.argmax(-1) == x.argmax(-1)).mean()), float(np.abs(exact - x).mean()))
        print(f"{t} vs f32 cache over {len(ids)} tokens: top-1 agreement {stats[t][0]:.4f}, "
              f"mean |logit diff| {stats[t][1]:.4f}")
    assert stats["q8_0"][0] >= 0.95
    assert 0 < stats["q8_0"][1] < 2 * max(stats["f16"][1], stats["bf16"][1])
    s = model.new_session(kv_type="q8_0", capacity=16)
    a = model.generate(ids[:40], max_tokens=8, session=s, return_dict=True)
    b = model.generate(ids[:40] + a["tokens"], max_tokens=4, session=s, return_dict=True)
    assert b["prompt_cached"] == 40 + len(a["tokens"]) - 1, b


def test_context_shift_generates_past_the_context():
    # The tiny Llama fixture holds 128 positions: without a shift generation ends there, with
    # context_shift=4 it goes on (or ends at an end-of-generation token), shifting as needed.
    tiny = attn.Model.load(os.path.join(FIXTURES, "llama_tiny.gguf"))
    stopped = tiny.generate([1, 5, 9], max_tokens=400, kv_type="f32", return_dict=True)
    shifted = tiny.generate([1, 5, 9], max_tokens=400, kv_type="f32", context_shift=4, return_dict=True)
    if stopped["stop_reason"] == "context":
        assert len(stopped["tokens"]) == 128 - 3 + 1 and stopped["context_shifts"] == 0
        assert shifted["tokens"][:len(stopped["tokens"])] == stopped["tokens"]
        assert shifted["context_shifts"] >= 1 and shifted["stop_reason"] in ("length", "eos")
    with pytest.raises(ValueError, match="context_shift = -1"):
        tiny.generate([1, 5], max_tokens=2, context_shift=-1)
    gpt2 = attn.Model.load(os.path.join(FIXTURES, "gpt2_tiny.gguf"))
    with pytest.raises(ValueError, match="context shift needs rotary positions"):
        gpt2.generate([1, 5], max_tokens=2, context_shift=4)


def test_stop_string_ends_generation(model):
    r = model.generate("1, 2, 3, 4,", max_tokens=40, stop=["8"], return_dict=True)
    assert r["stop_reason"] == "stop", r
    assert "8" not in r["text"]


def test_chat_template_wraps_the_prompt(model):
    assert model.chat_format == "chatml"
    text = model.apply_chat_template([("user", "Hi")])
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_bad_tokens_and_arguments_raise(model):
    with pytest.raises(ValueError, match="out of range"):
        model.logits([1, 2, 49152])
    with pytest.raises(ValueError, match="out of range"):
        model.logits([-1])
    with pytest.raises(ValueError, match="empty"):
        model.logits([])
    with pytest.raises(TypeError):
        model.logits([1.5, 2.0])
    with pytest.raises(ValueError, match="temperature"):
        model.generate("x", max_tokens=2, temperature=-1.0)
    with pytest.raises(ValueError, match="max_tokens"):
        model.generate("x", max_tokens=-1)


def test_missing_model_file_raises():
    with pytest.raises(ValueError, match="no_such_model.gguf"):
        attn.Model.load("/nonexistent/no_such_model.gguf")


def test_truncated_model_file_raises(tmp_path, model):
    src = attn.Model.default_path()
    bad = tmp_path / "truncated.gguf"
    with open(src, "rb") as f:
        bad.write_bytes(f.read(3_000_000))
    with pytest.raises(ValueError):
        attn.Model.load(str(bad))


def test_cli_generate_json(model):
    out = subprocess.run([ATTN_BIN, "generate", "--json", "-n", "6", "-t", "2", "Hello"], capture_output=True,
                         text=True, check=True, timeout=120)
    j = json.loads(out.stdout)
    assert set(j) >= {"model", "prompt_tokens", "tokens", "text", "timings"}
    assert set(j["timings"]) == {"prompt_ms", "prompt_tokens_per_s", "gen_ms", "gen_tokens_per_s"}
    assert j["prompt_tokens"] == model.tokenize("Hello")
    assert j["text"] == model.detokenize(j["tokens"])


def test_cli_generate_json_mode(model):
    prompt = model.apply_chat_template([("user", 'Return {"ok": true} as JSON.')])
    out = subprocess.run([ATTN_BIN, "generate", "--json-mode", "--json", "-n", "64", "-t", "2", prompt],
                         capture_output=True, text=True, check=True, timeout=120)
    text = json.loads(out.stdout)["text"]
    assert isinstance(json.loads(text), dict)
    assert text == model.generate(prompt, max_tokens=64, json_mode=True)


def test_cli_generate_prompt_from_file_and_stdin(model, tmp_path):
    # -f FILE and -f - (standard input) take the prompt's bytes as they are (a trailing newline
    # included): the same prompt tokens as the text given as an argument.
    text = "Line one.\nLine two, with  two spaces and \u00e9.\n"
    path = tmp_path / "prompt.txt"
    path.write_bytes(text.encode())
    runs = [subprocess.run([ATTN_BIN, "generate", "--json", "-n", "2", *a], input=inp, capture_output=True,
                           text=True, check=True, timeout=120)
            for a, inp in ((["-f", str(path)], None), (["-f", "-"], text), ([text], None))]
    got = [json.loads(r.stdout)["prompt_tokens"] for r in runs]
    assert got[0] == got[1] == got[2] == model.tokenize(text)


@pytest.mark.parametrize("args, fragment", [
    (["generate", "--model", "/nonexistent.gguf", "hi"], "does not exist"),
    (["generate", "--temperature", "-1", "hi"], "temperature"),
    (["generate", "--kv-type", "f8", "hi"], "kv-type"),
    (["generate", "--kv-type", "q8_0", "--model", os.path.join(FIXTURES, "gpt2_tiny.gguf"), "hi"],
     "q8_0 KV cache needs a head_dim that is a multiple of 32; this model's is 16"),
    (["info", "/nonexistent.gguf"], "nonexistent"),
    (["generate", "-f", "/nonexistent/prompt.txt"], "generate: cannot open the file '/nonexistent/prompt.txt'"),
    (["generate", "-f", "prompt.txt", "hi"], "excludes"),
    (["generate", "--context-shift", "--model", os.path.join(FIXTURES, "gpt2_tiny.gguf"), "hi"],
     "context shift needs rotary positions"),
    (["generate", "--keep", "-3", "hi"], "keep"),
])
def test_cli_bad_input_exits_nonzero(args, fragment):
    r = subprocess.run([ATTN_BIN, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert fragment in r.stderr + r.stdout


def test_session_reuses_the_conversation(model):
    # A kept session evaluates only what follows the cached tokens; results equal a fresh run's
    # for a confident continuation.
    s = model.new_session(kv_type="f16")
    first = model.generate("1, 2, 3, 4,", max_tokens=6, session=s, return_dict=True)
    assert first["prompt_cached"] == 0 and first["prompt_evaluated"] == len(first["prompt_tokens"])
    assert s.n_past == len(first["prompt_tokens"]) + len(first["tokens"]) - 1
    assert s.tokens == (first["prompt_tokens"] + first["tokens"])[:s.n_past]
    follow = first["prompt_tokens"] + first["tokens"] + model.tokenize(" 10, 11,")
    second = model.generate(follow, max_tokens=4, session=s, return_dict=True)
    assert second["prompt_cached"] == s.n_past - second["prompt_evaluated"] - len(second["tokens"]) + 1
    assert second["prompt_cached"] == len(first["prompt_tokens"]) + len(first["tokens"]) - 1
    assert second["prompt_evaluated"] == len(follow) - second["prompt_cached"]
    assert second["tokens"][:2] == model.generate(follow, max_tokens=4, return_dict=True)["tokens"][:2]
    s.reset()
    assert s.n_past == 0 and s.tokens == []
    with pytest.raises(TypeError, match="new_session"):
        model.generate("x", max_tokens=1, session=object())


def _log_softmax(rows):
    rows = np.asarray(rows, dtype=np.float64)
    m = rows.max(axis=-1, keepdims=True)
    return rows - (m + np.log(np.exp(rows - m).sum(axis=-1, keepdims=True)))


def test_generate_logprobs_are_the_log_softmax_of_the_logits():
    # The tiny float32 GPT-2: evaluating in one pass or token by token changes only the last bits.
    m = attn.Model.load(os.path.join(FIXTURES, "gpt2_tiny.gguf"))
    ids = [5, 17, 42, 9, 100, 3]
    r = m.generate(ids, max_tokens=10, temperature=0.8, seed=3, top_k=0, top_p=1.0, min_p=0.0, kv_type="f32",
                   logprobs=4, echo=True, return_dict=True)
    gen = r["tokens"]
    ref = _log_softmax(m.logits(ids + gen, kv_type="f32"))
    assert [e["token"] for e in r["logprobs"][:len(gen)]] == gen
    np.testing.assert_allclose([e["logprob"] for e in r["logprobs"][:len(gen)]],
                               ref[np.arange(len(ids) - 1, len(ids) - 1 + len(gen)), gen], atol=1e-5)
    for i, e in enumerate(r["logprobs"][:len(gen)]):
        row = ref[len(ids) - 1 + i]
        order = sorted(range(len(row)), key=lambda t: (-row[t], t))[:4]
        assert [t for t, _ in e["top"]] == order
        np.testing.assert_allclose([v for _, v in e["top"]], row[order], atol=1e-5)
    # echo: every prompt token after the first.
    assert [e["token"] for e in r["prompt_logprobs"]] == ids[1:]
    np.testing.assert_allclose([e["logprob"] for e in r["prompt_logprobs"]],
                               ref[np.arange(len(ids) - 1), ids[1:]], atol=1e-5)
    # Without logprobs the result has none; bad values are named.
    assert "logprobs" not in m.generate(ids, max_tokens=2, return_dict=True)
    with pytest.raises(ValueError, match=r"logprobs = 21"):
        m.generate(ids, max_tokens=2, logprobs=21, return_dict=True)
    with pytest.raises(ValueError, match=r"need return_dict=True"):
        m.generate(ids, max_tokens=2, logprobs=2)
    with pytest.raises(ValueError, match=r"echo=True needs logprobs"):
        m.generate(ids, max_tokens=2, echo=True, return_dict=True)


def test_generate_logprobs_include_the_eos_that_ended_it():
    m = attn.Model.load(os.path.join(FIXTURES, "gpt2_tiny.gguf"))
    eos = m._m.eos_id
    # Hot sampling of the untrained model draws EOS (1 of 300 tokens) within 200 tokens for some seed.
    ended = 0
    for seed in range(20):
        r = m.generate([5, 17, 42], max_tokens=200, temperature=2.0, seed=seed, top_k=0, top_p=1.0, min_p=0.0,
                       kv_type="f32", logprobs=1, return_dict=True)
        if r["stop_reason"] == "eos":
            ended += 1
            assert len(r["logprobs"]) == len(r["tokens"]) + 1 and r["logprobs"][-1]["token"] == eos
        else:
            assert len(r["logprobs"]) == len(r["tokens"])
    assert ended > 0


def test_embeddings_match_llama_cpp(model):
    # Model.embed against llama.cpp's embeddings of the same file (fixture made by
    # tests/fixtures/make_embeddings_fixture.py: llama_get_embeddings_seq with mean / last / cls
    # pooling, f16 KV cache). Both sides normalized; the difference is the two engines' rounding
    # (8-bit activations, other summation orders), the floor that also puts top-1 agreement of
    # next tokens at ~93%: cosine >= 0.99 for every vector, >= 0.999 for the median. The
    # similarities between texts agree within 0.05 (paraphrases closest on both sides). The
    # largest gap, mean pooling of the last text (0.994), comes from its second token, where
    # llama.cpp's hidden state has cosine 0.04 with the exact computation (the same file's weights
    # dequantized to float32, llama.cpp and attn agreeing there to 1.0000) and attn's 0.97.
    with open(os.path.join(FIXTURES, "smollm2_embeddings_llamacpp.json")) as f:
        fixture = json.load(f)
    for pooling, entries in fixture["pooling"].items():
        ref = np.array([e["embedding"] for e in entries])
        ref /= np.linalg.norm(ref, axis=1, keepdims=True)
        for e in entries:
            assert model.to_tokens(e["text"]) == e["tokens"]
        got = model.embed([e["tokens"] for e in entries], pooling=pooling)
        assert got.shape == ref.shape and got.dtype == np.float32
        cos = (got * ref).sum(axis=1)
        assert cos.min() >= 0.99 and np.median(cos) >= 0.999, (pooling, cos)
        np.testing.assert_allclose(got @ got.T, ref @ ref.T, atol=0.05)
        if pooling != "cls":  # the first token alone says nothing about the text
            sim = got @ got.T
            assert sim[0, 1] == max(sim[0, j] for j in range(1, len(entries))), (pooling, sim[0])


def test_embed_pools_the_final_hidden_states(model):
    # embed = the final norm's output (ln_final.hook_normalized, what the unembedding reads),
    # pooled; normalize=False keeps the raw mean.
    text = "Embeddings pool the last hidden states."
    ids = model.to_tokens(text)
    _, cache = model.run_with_cache(ids, names=["ln_final.hook_normalized"])  # float32 KV cache
    hidden = cache["ln_final.hook_normalized"][0]
    raw = dict(normalize=False, kv_type="f32")
    np.testing.assert_allclose(model.embed(text, **raw), hidden.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.embed(ids, pooling="last", **raw), hidden[-1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.embed(ids, pooling="cls", **raw), hidden[0], rtol=1e-5, atol=1e-5)
    v = model.embed(text)
    assert v.shape == (576,) and abs(np.linalg.norm(v) - 1.0) < 1e-5
    assert model.embed([text, text]).shape == (2, 576)
    with pytest.raises(ValueError, match="pooling"):
        model.embed(text, pooling="max")
    with pytest.raises(ValueError, match="no tokens"):
        model.embed([[]])
    with pytest.raises(ValueError, match="no inputs"):
        model.embed([])


def test_json_mode_keeps_the_answer_one_json_object(model):
    # Asked for JSON, this small model answers with Python code; in JSON mode every token keeps the
    # text a prefix of one JSON object, and it ends (EOS) once the object is complete.
    prompt = model.apply_chat_template([("user", 'Return {"ok": true} as JSON.')])
    plain = model.generate(prompt, max_tokens=24)
    assert not plain.lstrip().startswith("{")
    r = model.generate(prompt, max_tokens=64, json_mode=True, return_dict=True)
    assert r["stop_reason"] == "eos"
    assert isinstance(json.loads(r["text"]), dict)
    # Cut by max_tokens, the text is the beginning of an object, not yet one.
    cut = model.generate(model.apply_chat_template([("user", "Describe a person in JSON.")]), max_tokens=3,
                         json_mode=True)
    assert cut.startswith("{")
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut)
    assert model.generate_batch([prompt, prompt], max_tokens=64, json_mode=True) == [r["text"]] * 2

