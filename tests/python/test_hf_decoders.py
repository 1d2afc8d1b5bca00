"""The llama (with Llama 3.1's RoPE scaling), qwen2 (also with YaRN), qwen3, gemma3, gemma2, gemma (1), olmo2
(post-norms only, whole-row q / k norms), starcoder2 (LayerNorm, biases, ungated GELU), phi2 (the same in
parallel, partial rotary, a biased unembedding), stablelm (LayerNorm, a quarter rotated, SwiGLU; sequential
with q / k / v biases, and parallel), ernie4_5 (llama with interleaved RoPE pairs as written), exaone4
(post-norms only, a q / k norm per head), olmo3 (olmo2 with three sliding layers in four), granitemoe
(Granite's multipliers with experts), cohere (command-r: a LayerNorm without bias, parallel blocks,
interleaved RoPE, scaled logits), cohere2 (the same with three sliding layers in four, no RoPE on the global
ones) and phi3 (fused QKV and gate-up, partial rotary, LongRoPE) paths,
and the mixture-of-experts ones (Mixtral as a llama file, qwen3moe, qwen2moe with its shared expert, olmoe
with its whole-row q / k norms) against
Hugging Face transformers: tiny random models saved by transformers, converted to GGUF as llama.cpp's converter
does (llama.cpp reads the same files to the same logits), their logits committed as a fixture
(tests/fixtures/make_hf_decoders_fixture.py has the versions and the layout)."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

import attn

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")


@pytest.fixture(scope="module")
def golden():
    with open(os.path.join(FIXTURES, "hf_decoders_logits.json")) as f:
        return json.load(f)


ARCHS = ["llama", "qwen2", "qwen3", "gemma3", "gemma2", "phi3", "qwen2_yarn", "mixtral", "qwen3moe", "qwen2moe",
         "olmoe", "gptoss", "smollm3", "granite", "gemma", "olmo2", "starcoder2", "phi2", "stablelm", "stablelm_parallel",
         "ernie4_5", "exaone4", "olmo3", "granitemoe", "cohere", "cohere2"]
GGUF_ARCH = {"qwen2_yarn": "qwen2", "mixtral": "llama", "gptoss": "gpt-oss", "stablelm_parallel": "stablelm",
             "olmo3": "olmo2", "cohere": "command-r"}  # the general.architecture of the others is their name


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind, key", [("f32", "logits"), ("f16", "logits_f16_weights")])
def test_logits_match_transformers(golden, arch, kind, key):
    entry = golden["models"][arch]
    model = attn.Model.load(os.path.join(FIXTURES, entry["files"][kind]))
    c = model.config
    assert c["arch"] == GGUF_ARCH.get(arch, arch)
    # Qwen3's head size comes from attention.key_length (32), not embedding_length / heads (16).
    assert c["head_dim"] == (32 if arch in ("qwen3", "qwen3moe", "gemma3", "gemma2", "gemma", "ernie4_5") else 16)
    assert c["tied_output"] == (arch in ("qwen2", "gemma3", "gemma2", "smollm3", "granite", "gemma", "starcoder2",
                                         "ernie4_5", "granitemoe", "cohere", "cohere2"))
    scales = ((12.0, 0.22, 0.0625, 8.0) if arch in ("granite", "granitemoe")
              else (c["embed_scale"], 1.0, c["attn_scale"], 4.0 if arch in ("cohere", "cohere2") else 1.0))
    np.testing.assert_allclose((c["embed_scale"], c["residual_scale"], c["attn_scale"], c["logit_scale"]), scales,
                               rtol=1e-6)
    assert c["nope_layers"] == ([3, 7] if arch == "smollm3" else [3] if arch == "cohere2" else [])
    assert c["n_expert"] == (4 if arch in ("mixtral", "qwen3moe", "qwen2moe", "olmoe", "gptoss", "granitemoe") else 0)
    for case in entry["cases"]:
        want = np.asarray(case[key], dtype=np.float32).reshape(case["shape"])
        got = model.logits(case["ids"])
        # float32 on both sides from the same weights: summation order only. A dropped bias, q/k
        # norm or rope_freqs, or RoPE on the wrong pairs, moves these logits by O(1).
        scale = float(np.abs(want).max())
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale)
        assert (got.argmax(-1) == np.asarray(case["argmax"])).all()


def test_config_says_what_the_files_say(golden):
    load = lambda arch: attn.Model.load(os.path.join(FIXTURES, golden["models"][arch]["files"]["f32"])).config
    g3, g2, llama = load("gemma3"), load("gemma2"), load("llama")
    assert (g3["sliding_window"], g3["sliding_layers"], g3["attn_softcap"]) == (8, [0, 1, 2, 3, 4, 6], 0.0)
    assert (g2["sliding_window"], g2["sliding_layers"]) == (8, [0, 2])
    olmo3, olmo2 = load("olmo3"), load("olmo2")
    assert (olmo3["sliding_window"], olmo3["sliding_layers"]) == (8, [0, 1, 2])
    assert (olmo2["sliding_window"], olmo2["sliding_layers"]) == (0, [])
    cohere2 = load("cohere2")
    assert (cohere2["sliding_window"], cohere2["sliding_layers"], cohere2["nope_layers"]) == (8, [0, 1, 2], [3])
    assert (g2["attn_softcap"], g2["final_softcap"]) == (5.0, 3.0)
    assert (llama["sliding_window"], llama["sliding_layers"], llama["rope_freq_scale"]) == (0, [], 1.0)
    assert llama["rope_dim"] == 16
    phi3 = load("phi3")
    assert (phi3["rope_dim"], phi3["head_dim"], phi3["sliding_window"]) == (8, 16, 0)  # partial rotary
    mixtral, qwen3moe = load("mixtral"), load("qwen3moe")
    assert (mixtral["n_expert"], mixtral["n_expert_used"], mixtral["d_ff_expert"]) == (4, 2, 128)
    assert (qwen3moe["n_expert"], qwen3moe["n_expert_used"], qwen3moe["d_ff_expert"]) == (4, 2, 96)
    assert llama["n_expert"] == 0
    qwen2moe = load("qwen2moe")
    assert (qwen2moe["d_ff_expert"], qwen2moe["d_ff_shared"], qwen2moe["expert_weights_norm"]) == (96, 160, False)
    assert qwen3moe["d_ff_shared"] == 0 and qwen3moe["expert_weights_norm"]
    assert not any(qwen3moe[k] for k in ("expert_bias", "swiglu_oai", "attn_sinks"))
    gptoss = load("gptoss")
    assert (gptoss["sliding_window"], gptoss["sliding_layers"], gptoss["d_ff_expert"]) == (8, [0, 2], 96)
    assert all(gptoss[k] for k in ("expert_bias", "swiglu_oai", "attn_sinks", "expert_weights_norm"))
    assert gptoss["rope_freq_scale"] == 1 / 8 and not gptoss["tied_output"]


def test_phi3_longrope_tensors(tmp_path, golden):
    # The fixture's phi3 has LongRoPE: its 20- and 37-id cases took the long factors (past the
    # original 16 positions), the 12-id case the short ones, in transformers and in attn (a session
    # of 12 positions), and every case is scaled by the attention factor. Without the factors the
    # model is another one; one set without the other is refused.
    entry = golden["models"]["phi3"]
    src = os.path.join(FIXTURES, entry["files"]["f32"])
    assert [len(c["ids"]) for c in entry["cases"]] == [20, 37, 12]
    _rewrite(src, tmp_path / "half.gguf", drop="rope_factors_long.weight")
    with pytest.raises(ValueError, match="rope_factors_long.weight and rope_factors_short.weight must come together"):
        attn.Model.load(str(tmp_path / "half.gguf"))
    import gguf

    r = gguf.GGUFReader(src)
    assert r.fields["phi3.rope.scaling.original_context_length"].contents() == 16
    assert abs(r.fields["phi3.rope.scaling.attn_factor"].contents() - (1 + np.log(8) / np.log(16)) ** 0.5) < 1e-6
    _rewrite(src, tmp_path / "noscale.gguf", **{"phi3.rope.scaling.attn_factor": 1.0})
    ids = entry["cases"][0]["ids"]
    want = np.asarray(entry["cases"][0]["logits"], dtype=np.float32)
    assert np.abs(attn.Model.load(str(tmp_path / "noscale.gguf")).logits(ids) - want).max() > 0.05


def test_llamacpp_read_the_same_files(golden):
    # Recorded by the fixture script's --llamacpp step: llama.cpp's logits on these files agree
    # with transformers', so the files follow llama.cpp's conventions, not only attn's.
    checks = golden["llamacpp"]["max_rel_diff_vs_transformers"]
    assert set(checks) == {f"{a}_{k}" for a in ARCHS for k in ("f32", "f16")}
    gelu = ("gemma3", "gemma2", "gemma", "starcoder2", "phi2")  # llama.cpp's CPU GELU reads an F16 table
    assert max(v for k, v in checks.items() if k.endswith("f32") and k[:-4] not in gelu) < 1e-4
    assert max(checks[f"{a}_f32"] for a in gelu) < 5e-3


@pytest.mark.parametrize("arch", ARCHS)
def test_generation_through_the_cache_matches_fresh_passes(golden, arch):
    model = attn.Model.load(os.path.join(FIXTURES, golden["models"][arch]["files"]["f32"]))
    ids = golden["models"][arch]["cases"][1]["ids"]
    # An f32 cache, so that both sides compute the same numbers (with the default f16 cache, gemma3
    # meets a near-tie, 7.8357 against 7.8349, at step 7 of this sequence).
    r = model.generate(ids[:7], max_tokens=8, return_dict=True, kv_type="f32")
    seq = list(ids[:7])
    for t in r["tokens"]:
        assert t == int(model.logits(seq)[-1].argmax())
        seq.append(t)


def test_chat_uses_chatml(golden):
    model = attn.Model.load(os.path.join(FIXTURES, golden["models"]["qwen2"]["files"]["f32"]))
    assert model.chat_format == "chatml"
    ids = model.tokenize("<|im_start|>user\n12 + 345<|im_end|>", special=True)
    # qwen2 pre-tokenizer: every digit is a piece of its own (no "12" or "345" token even though
    # the merges could make some), and no BOS is added (add_bos_token = false).
    pieces = [model.detokenize([i]) for i in ids]
    assert pieces[0] == "<|im_start|>" and pieces[-1] == "<|im_end|>"
    assert [p for p in pieces if p.strip().isdigit()] == ["1", "2", "3", "4", "5"]


def _rewrite(src, dst, *, drop=None, replace=None, **changes):
    """src with some metadata values changed, the tensor `drop` left out and the tensors of
    `replace` ({name: array}) given new values; a change to None drops the key (llama.cpp's gguf
    package)."""
    import gguf

    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(str(dst), r.fields["general.architecture"].contents())
    for name, field in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        value = changes.get(name, field.contents())
        if value is None:
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(name, value, vtype, sub_type=field.types[-1])
        else:
            w.add_key_value(name, value, vtype)
    for name, value in changes.items():  # keys the file does not have yet
        if name not in r.fields and value is not None:
            vtype = (gguf.GGUFValueType.STRING if isinstance(value, str)
                     else gguf.GGUFValueType.UINT32 if isinstance(value, int) else gguf.GGUFValueType.FLOAT32)
            w.add_key_value(name, value, vtype)
    for t in r.tensors:
        if t.name in (replace or {}):
            w.add_tensor(t.name, replace[t.name])  # float32, shaped as given
        elif t.name != drop:
            w.add_tensor(t.name, np.array(t.data), raw_shape=list(reversed(t.shape.tolist())),
                         raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_bad_head_sizes_are_named(tmp_path, golden):
    src = os.path.join(FIXTURES, golden["models"]["qwen3"]["files"]["f32"])
    _rewrite(src, tmp_path / "v.gguf", **{"qwen3.attention.value_length": 16})
    with pytest.raises(ValueError, match="value_length 16 differs from attention.key_length 32"):
        attn.Model.load(str(tmp_path / "v.gguf"))
    _rewrite(src, tmp_path / "k.gguf", **{"qwen3.attention.key_length": 16, "qwen3.attention.value_length": 16})
    # The projections are 4 heads x 32 wide in the file: the first tensor checked names the misfit.
    with pytest.raises(ValueError, match="blk.0.attn_q.weight' has shape \\[64, 128\\], expected \\[64, 64\\]"):
        attn.Model.load(str(tmp_path / "k.gguf"))


def test_rope_scaling(tmp_path, golden):
    entry = golden["models"]["llama"]
    src = os.path.join(FIXTURES, entry["files"]["f32"])
    ids = entry["cases"][1]["ids"]
    want = np.asarray(entry["cases"][1]["logits"], dtype=np.float32)
    # Without its rope_freqs the model is another one: the tensor is read and applied.
    _rewrite(src, tmp_path / "nofreqs.gguf", drop="rope_freqs.weight")
    assert np.abs(attn.Model.load(str(tmp_path / "nofreqs.gguf")).logits(ids) - want).max() > 0.1
    # Linear scaling divides positions by the factor: 1 changes no bit, 2 changes the model.
    _rewrite(src, tmp_path / "lin1.gguf", **{"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 1.0})
    np.testing.assert_array_equal(attn.Model.load(str(tmp_path / "lin1.gguf")).logits(ids),
                                  attn.Model.load(src).logits(ids))
    _rewrite(src, tmp_path / "lin2.gguf", **{"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 2.0})
    assert np.abs(attn.Model.load(str(tmp_path / "lin2.gguf")).logits(ids) - want).max() > 0.1
    _rewrite(src, tmp_path / "other.gguf", **{"llama.rope.scaling.type": "longrope", "llama.rope.scaling.factor": 4.0})
    with pytest.raises(ValueError, match="rope.scaling.type = .longrope. is not supported"):
        attn.Model.load(str(tmp_path / "other.gguf"))
    _rewrite(src, tmp_path / "yarn.gguf", **{"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0})
    with pytest.raises(ValueError, match="rope_freqs.weight together with YaRN scaling is not supported"):
        attn.Model.load(str(tmp_path / "yarn.gguf"))


def test_yarn_is_applied(tmp_path, golden):
    # The qwen2_yarn fixture matches transformers (test_logits_match_transformers); without its YaRN
    # keys, or with linear scaling of the same factor, it is another model.
    entry = golden["models"]["qwen2_yarn"]
    src = os.path.join(FIXTURES, entry["files"]["f32"])
    ids = entry["cases"][1]["ids"]
    want = np.asarray(entry["cases"][1]["logits"], dtype=np.float32)
    assert attn.Model.load(src).config["attn_scale"] == pytest.approx(0.25)  # 1 / sqrt(16): YaRN scales cos / sin
    _rewrite(src, tmp_path / "linear.gguf", **{"qwen2.rope.scaling.type": "linear"})
    assert np.abs(attn.Model.load(str(tmp_path / "linear.gguf")).logits(ids) - want).max() > 0.05
    _rewrite(src, tmp_path / "none.gguf", **{"qwen2.rope.scaling.type": "none"})
    assert np.abs(attn.Model.load(str(tmp_path / "none.gguf")).logits(ids) - want).max() > 0.05


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_cache_sees_the_qwen_steps(golden, arch):
    model = attn.Model.load(os.path.join(FIXTURES, golden["models"][arch]["files"]["f32"]))
    ids = golden["models"][arch]["cases"][0]["ids"]
    logits, cache = model.run_with_cache(ids)
    np.testing.assert_array_equal(logits, model.logits(ids))  # a read-only cache changes no bit
    hd = model.config["head_dim"]
    q, rot_q = cache["blocks.0.attn.hook_q"], cache["blocks.0.attn.hook_rot_q"]
    assert q.shape[-1] == rot_q.shape[-1] == hd
    # Position 0 has RoPE angle 0: there hook_rot_q is hook_q (qwen2), or hook_q with each head
    # RMS-normalized and multiplied by the q_norm gain (qwen3).
    q0, rot_q0 = q.reshape(len(ids), -1, hd)[0], rot_q.reshape(len(ids), -1, hd)[0]
    want = q0
    if arch == "qwen3":
        from attn import _attn

        (gain,) = _attn.read_tensors(model.path, ["blk.0.attn_q_norm.weight"])
        eps = 1e-6  # the file's attention.layer_norm_rms_epsilon
        want = q0 / np.sqrt((q0.astype(np.float64) ** 2).mean(-1, keepdims=True) + eps) * gain
    np.testing.assert_allclose(rot_q0, want, rtol=1e-5, atol=1e-5)
    pattern = cache["blocks.1.attn.hook_pattern"]
    np.testing.assert_allclose(pattern.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("arch", ["gemma3", "gemma2", "gptoss"])
def test_gemma_patterns_through_hooks_match_the_fused_kernel(golden, arch):
    # A hook on hook_pattern makes every layer build its pattern and take z from it (the explicit
    # path, with its own sliding-window mask, softcap and sinks); z then matches the fused kernel's.
    model = attn.Model.load(os.path.join(FIXTURES, golden["models"][arch]["files"]["f32"]))
    ids = golden["models"][arch]["cases"][1]["ids"]
    fused = model.logits(ids)
    explicit = model.run_with_hooks(ids, hooks=[(lambda n: n.endswith("hook_pattern"), lambda p, h: None)])
    np.testing.assert_allclose(explicit, fused, rtol=0, atol=1e-4 * float(np.abs(fused).max()))


def _tiny_gemma(path, arch, n_layers):
    """A random Gemma 2 / 3 file of n_layers layers, d_model 16 and 2 heads of head size 4
    (key_length), so that d_model / heads (8) differs from the head size."""
    import gguf

    rng = np.random.default_rng(0)
    d, heads, hd, ff, vocab = 16, 2, 4, 8, 300
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(64)
    w.add_embedding_length(d)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(1)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_sliding_window(8)
    src = gguf.GGUFReader(os.path.join(FIXTURES, golden_files()["qwen2"]))
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                "tokenizer.ggml.merges"):
        f = src.fields[key]
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, f.contents(), f.types[0], sub_type=f.types[-1])
        else:
            w.add_key_value(key, f.contents(), f.types[0])
    mat = lambda rows, cols: rng.normal(0, 0.7, (rows, cols)).astype(np.float32)  # scores of a few units
    ones = lambda n: np.ones(n, np.float32)
    w.add_tensor("token_embd.weight", mat(vocab, d))
    for l in range(n_layers):
        p = f"blk.{l}."
        for name, a in (("attn_norm.weight", ones(d)), ("attn_q.weight", mat(heads * hd, d)), ("attn_k.weight", mat(hd, d)),
                        ("attn_v.weight", mat(hd, d)), ("attn_output.weight", mat(d, heads * hd)),
                        ("post_attention_norm.weight", ones(d)), ("ffn_norm.weight", ones(d)),
                        ("ffn_gate.weight", mat(ff, d)), ("ffn_up.weight", mat(ff, d)), ("ffn_down.weight", mat(d, ff)),
                        ("post_ffw_norm.weight", ones(d))):
            w.add_tensor(p + name, a)
        if arch == "gemma3":
            w.add_tensor(p + "attn_q_norm.weight", ones(hd))
            w.add_tensor(p + "attn_k_norm.weight", ones(hd))
    w.add_tensor("output_norm.weight", ones(d))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def golden_files():
    with open(os.path.join(FIXTURES, "hf_decoders_logits.json")) as f:
        return {a: e["files"]["f32"] for a, e in json.load(f)["models"].items()}


@pytest.mark.parametrize("arch, layers_27b", [("gemma2", 46), ("gemma3", 62)])
def test_gemma_27b_attention_scale(tmp_path, arch, layers_27b):
    # Gemma 2 / 3 27B scale scores by 1 / sqrt(d_model / heads) (query_pre_attn_scalar 168, head
    # size 128); GGUF does not say so, and llama.cpp tells the 27B models by their layer count.
    for layers, want in ((layers_27b, 1 / np.sqrt(8)), (layers_27b - 1, 1 / np.sqrt(4))):
        _tiny_gemma(tmp_path / f"{layers}.gguf", arch, layers)
        model = attn.Model.load(str(tmp_path / f"{layers}.gguf"))
        assert model.config["attn_scale"] == pytest.approx(want, rel=1e-7)
        # The scores the explicit path shows are cap * tanh(scale q . k / cap) (Gemma 2's default cap
        # 50; Gemma 3 has none), and the fused kernel computes the logits the explicit path does (a
        # hook on every layer's scores runs every layer's attention on the explicit path).
        ids = [5, 17, 42, 7]
        logits = model.run_with_hooks(ids, [(lambda n: n.endswith("hook_attn_scores"), lambda a, h: None)])
        _, cache = model.run_with_cache(ids, names=["blocks.1.attn.hook_rot_q", "blocks.1.attn.hook_rot_k",
                                                    "blocks.1.attn.hook_attn_scores"])
        q, k = cache["blocks.1.attn.hook_rot_q"][0], cache["blocks.1.attn.hook_rot_k"][0]  # [pos, head, d]
        raw = np.einsum("ihd,jd->hij", q.astype(np.float64), k[:, 0].astype(np.float64)) * want
        expect = 50 * np.tanh(raw / 50) if arch == "gemma2" else raw
        got = cache["blocks.1.attn.hook_attn_scores"][0]
        causal = np.tril(np.ones((len(ids), len(ids)), bool))
        np.testing.assert_allclose(got[:, causal], expect[:, causal], rtol=1e-5, atol=1e-6)
        # (46 or 62 layers of float32 rounding apart: 1e-5 of the logit scale; a wrong scale: O(1).)
        np.testing.assert_allclose(model.logits(ids), logits, rtol=0, atol=1e-4 * np.abs(logits).max())


def test_mixture_of_experts_files_are_checked(tmp_path, golden):
    # Bad expert metadata or a missing / misshapen expert stack is named, never run.
    moe = os.path.join(FIXTURES, golden["models"]["qwen3moe"]["files"]["f32"])
    mixtral = os.path.join(FIXTURES, golden["models"]["mixtral"]["files"]["f32"])
    _rewrite(moe, tmp_path / "k5.gguf", **{"qwen3moe.expert_used_count": 5})
    with pytest.raises(ValueError, match=r"'qwen3moe.expert_used_count' = 5 \(must be in \[1, 4\]\)"):
        attn.Model.load(str(tmp_path / "k5.gguf"))
    _rewrite(mixtral, tmp_path / "noup.gguf", drop="blk.1.ffn_up_exps.weight")
    with pytest.raises(ValueError, match=r"tensor 'blk.1.ffn_up_exps.weight' is missing"):
        attn.Model.load(str(tmp_path / "noup.gguf"))
    _rewrite(mixtral, tmp_path / "e3.gguf", **{"llama.expert_count": 3, "llama.expert_used_count": 2})
    with pytest.raises(ValueError, match=r"'blk.0.ffn_gate_inp.weight' has shape \[64, 4\], expected \[64, 3\]"):
        attn.Model.load(str(tmp_path / "e3.gguf"))
    qwen3 = os.path.join(FIXTURES, golden["models"]["qwen3"]["files"]["f32"])
    _rewrite(qwen3, tmp_path / "q3e.gguf", **{"qwen3.expert_count": 4})
    with pytest.raises(ValueError, match=r"mixture-of-experts blocks are supported for llama \(Mixtral\), qwen2moe, qwen3moe, olmoe and gpt-oss files, not qwen3"):
        attn.Model.load(str(tmp_path / "q3e.gguf"))


def test_gptoss_files_are_checked(tmp_path, golden):
    # What gpt-oss adds (sinks, biases on the router and every expert, the window) is required,
    # shaped and named; a sink that is not a number or -inf is refused at load time.
    src = os.path.join(FIXTURES, golden["models"]["gptoss"]["files"]["f32"])
    for drop in ("blk.1.attn_sinks.weight", "blk.2.ffn_down_exps.bias", "blk.0.ffn_gate_inp.bias",
                 "blk.3.attn_output.bias", "blk.0.post_attention_norm.weight"):
        _rewrite(src, tmp_path / f"{drop}.gguf", drop=drop)
        with pytest.raises(ValueError, match=f"tensor '{re.escape(drop)}' is missing"):
            attn.Model.load(str(tmp_path / f"{drop}.gguf"))
    _rewrite(src, tmp_path / "bias.gguf", replace={"blk.0.ffn_up_exps.bias": np.zeros((3, 96), np.float32)})
    with pytest.raises(ValueError, match=r"'blk.0.ffn_up_exps.bias' has shape \[96, 3\], expected \[96, 4\]"):
        attn.Model.load(str(tmp_path / "bias.gguf"))
    sinks = np.array([0.5, np.nan, 1.0, -np.inf], np.float32)
    _rewrite(src, tmp_path / "nan.gguf", replace={"blk.2.attn_sinks.weight": sinks})
    with pytest.raises(ValueError, match=r"blk.2.attn_sinks.weight\[1\] = nan \(must be a number or -inf\)"):
        attn.Model.load(str(tmp_path / "nan.gguf"))
    _rewrite(src, tmp_path / "nowin.gguf", **{"gpt-oss.attention.sliding_window": None})
    with pytest.raises(ValueError, match=r"'gpt-oss.attention.sliding_window' is missing"):
        attn.Model.load(str(tmp_path / "nowin.gguf"))


def test_granite_multipliers_are_read_and_required(tmp_path, golden):
    # Each multiplier changes the logits (the fixture's check); a file without logit_scale is refused
    # as llama.cpp refuses it, and a nonpositive multiplier is named.
    src = os.path.join(FIXTURES, golden["models"]["granite"]["files"]["f32"])
    _rewrite(src, tmp_path / "nologit.gguf", **{"granite.logit_scale": None})
    with pytest.raises(ValueError, match=r"'granite.logit_scale' is missing"):
        attn.Model.load(str(tmp_path / "nologit.gguf"))
    _rewrite(src, tmp_path / "neg.gguf", **{"granite.residual_scale": -0.5})
    with pytest.raises(ValueError, match=r"'granite.residual_scale' = -0.5"):
        attn.Model.load(str(tmp_path / "neg.gguf"))
    ids = golden["models"]["granite"]["cases"][0]["ids"]
    base = attn.Model.load(src).logits(ids)
    _rewrite(src, tmp_path / "res1.gguf", **{"granite.residual_scale": 1.0})
    assert np.abs(attn.Model.load(str(tmp_path / "res1.gguf")).logits(ids) - base).max() > 0.1 * np.abs(base).max()


def test_gptoss_sinks_take_attention_weight(golden):
    # hook_pattern of a gpt-oss layer: each head's row sums to 1 - p_sink (the sink takes the
    # rest), and p_sink = exp(sink) / (exp(sink) + sum_j exp(score_j)) from the layer's own scores.
    from attn import _attn

    entry = golden["models"]["gptoss"]
    path = os.path.join(FIXTURES, entry["files"]["f32"])
    model = attn.Model.load(path)
    ids = entry["cases"][0]["ids"]
    _, cache = model.run_with_cache(ids, names=lambda n: n.startswith("blocks.1.attn.hook_"))
    scores = cache["blocks.1.attn.hook_attn_scores"][0].astype(np.float64)  # [heads, pos, keys]
    pattern = cache["blocks.1.attn.hook_pattern"][0].astype(np.float64)
    sinks = _attn.read_tensor(path, "blk.1.attn_sinks.weight").astype(np.float64).reshape(-1)
    p_sink = np.exp(sinks[:, None]) / (np.exp(sinks[:, None]) + np.exp(scores).sum(-1))
    np.testing.assert_allclose(pattern.sum(-1), 1 - p_sink, rtol=1e-5, atol=1e-6)
    assert (p_sink > 0.01).any()
    # The head statistics' learned_sink is the mean of p_sink over the rows (from the kernel's LSE).
    scores = [s for s in model.head_scores(ids) if s["layer"] == 1]
    np.testing.assert_allclose([s["learned_sink"] for s in scores], p_sink.mean(-1), rtol=1e-4, atol=1e-6)
    other = attn.Model.load(os.path.join(FIXTURES, golden["models"]["qwen3moe"]["files"]["f32"]))
    assert all(s["learned_sink"] == 0.0 for s in other.head_scores(ids))


def test_each_token_uses_its_own_experts(golden):
    # Routing is per token: a token's logits do not depend on which other tokens share the pass
    # (the experts' rows are gathered per expert), so one pass equals the token-by-token cache.
    for arch in ("mixtral", "qwen3moe", "qwen2moe", "olmoe", "gptoss"):
        model = attn.Model.load(os.path.join(FIXTURES, golden["models"][arch]["files"]["f32"]))
        ids = golden["models"][arch]["cases"][0]["ids"]
        full = model.logits(ids, kv_type="f32")
        s = model.new_session(kv_type="f32", capacity=64)
        r = model.generate(ids, max_tokens=1, temperature=0, session=s, return_dict=True, logprobs=0, echo=True)
        lp = np.asarray([e["logprob"] for e in r["prompt_logprobs"]])
        ref = full[:-1] - np.log(np.exp(full[:-1].astype(np.float64)).sum(-1, keepdims=True))
        np.testing.assert_allclose(lp, ref[np.arange(len(ids) - 1), ids[1:]], atol=1e-4)


def test_expert_choices_are_hook_points(golden):
    # blocks.{l}.mlp.hook_expert_indices / hook_expert_weights (TransformerLens's names): the top
    # experts of softmax(ln2 output . router) and their renormalized weights; edits re-route.
    from attn import _attn

    entry = golden["models"]["mixtral"]
    path = os.path.join(FIXTURES, entry["files"]["f32"])
    model = attn.Model.load(path)
    ids = entry["cases"][0]["ids"]
    assert "blocks.0.mlp.hook_expert_indices" in model.hook_names()
    assert "blocks.0.mlp.hook_pre" not in model.hook_names()
    logits, cache = model.run_with_cache(ids)
    for layer in (0, 1):
        idx = cache[f"blocks.{layer}.mlp.hook_expert_indices"][0]
        w = cache[f"blocks.{layer}.mlp.hook_expert_weights"][0]
        assert idx.shape == w.shape == (len(ids), 2)
        h = cache[f"blocks.{layer}.ln2.hook_normalized"][0].astype(np.float64)
        router = _attn.read_tensor(path, f"blk.{layer}.ffn_gate_inp.weight").astype(np.float64)  # [4, 64]
        p = np.exp(h @ router.T)
        p /= p.sum(-1, keepdims=True)
        top = np.argsort(-p, axis=-1, kind="stable")[:, :2]
        assert (idx == top).all()
        chosen = np.take_along_axis(p, top, -1)
        np.testing.assert_allclose(w, chosen / chosen.sum(-1, keepdims=True), rtol=1e-5)
    # Routing every token of layer 0 to experts 3 and 2 with weights 1 and 0 is what runs.
    def reroute(name, value):
        def fn(act, hook):
            act[...] = value
        return (name, fn)

    forced = model.run_with_hooks(ids, [reroute("blocks.0.mlp.hook_expert_indices", np.array([3.0, 2.0])),
                                        reroute("blocks.0.mlp.hook_expert_weights", np.array([1.0, 0.0]))])
    only3 = model.run_with_hooks(ids, [reroute("blocks.0.mlp.hook_expert_indices", np.array([3.0, 3.0])),
                                       reroute("blocks.0.mlp.hook_expert_weights", np.array([0.5, 0.5]))])
    np.testing.assert_allclose(forced, only3, rtol=1e-5, atol=1e-5)
    assert np.abs(forced - logits).max() > 1e-2
    with pytest.raises(ValueError, match=r"mlp.hook_expert_indices holds 4.0+ \(must be an expert id in \[0, 4\)\)"):
        model.run_with_hooks(ids, [reroute("blocks.1.mlp.hook_expert_indices", np.array([4.0, 0.0]))])


def test_phi2_fused_qkv_reads_as_separate(tmp_path, golden):
    # Phi-2 files come with Q, K and V fused (attn_qkv, as llama.cpp's converter writes the original
    # Wqkv checkpoints) or separate: the same model either way.
    import gguf

    entry = golden["models"]["phi2"]
    src = os.path.join(FIXTURES, entry["files"]["f32"])
    r = gguf.GGUFReader(src)
    t = {x.name: np.array(x.data) for x in r.tensors}
    w = gguf.GGUFWriter(str(tmp_path / "fused.gguf"), "phi2")
    for name, field in r.fields.items():
        if not name.startswith("GGUF.") and name != "general.architecture":
            vtype = field.types[0]
            w.add_key_value(name, field.contents(), vtype,
                            **({"sub_type": field.types[-1]} if vtype == gguf.GGUFValueType.ARRAY else {}))
    for x in r.tensors:
        blk, _, rest = x.name.partition(".attn_")
        if rest in ("q.weight", "q.bias"):
            suffix = rest.split(".")[1]
            fused = np.concatenate([t[f"{blk}.attn_{p}.{suffix}"] for p in "qkv"], axis=0)
            w.add_tensor(f"{blk}.attn_qkv.{suffix}", fused)
        elif rest[:2] not in ("k.", "v."):
            w.add_tensor(x.name, np.array(x.data), raw_shape=list(reversed(x.shape.tolist())), raw_dtype=x.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    fused = attn.Model.load(str(tmp_path / "fused.gguf"))
    case = entry["cases"][0]
    np.testing.assert_array_equal(fused.logits(case["ids"]), attn.Model.load(src).logits(case["ids"]))


def test_olmo3_sliding_layers_matter(tmp_path, golden):
    # The same file without attention.sliding_window is OLMo 2 with every layer global: another model.
    entry = golden["models"]["olmo3"]
    _rewrite(os.path.join(FIXTURES, entry["files"]["f32"]), tmp_path / "global.gguf",
             **{"olmo2.attention.sliding_window": None})
    case = entry["cases"][1]  # 37 ids, beyond the window of 8
    want = np.asarray(case["logits"], dtype=np.float32)
    got = attn.Model.load(str(tmp_path / "global.gguf")).logits(case["ids"])
    assert np.abs(got - want).max() > 0.01 * np.abs(want).max()
