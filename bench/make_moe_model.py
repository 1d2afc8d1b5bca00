"""Makes a synthetic mixture-of-experts model for the speed benchmark (no real MoE GGUF small
enough for this machine is on PyPI): a qwen3moe file shaped like a scaled-down Qwen3-30B-A3B,
random weights, SmolLM2's tokenizer, then quantized by llama.cpp's own quantizer. Its text is
noise; its speed is that of a real model of this shape.

    .venv/bin/python bench/make_moe_model.py --write /tmp/moe-f16.gguf                  # gguf, numpy
    bench/.venv-llama/bin/python bench/make_moe_model.py --quantize /tmp/moe-f16.gguf \\
        ~/.cache/attn/bench/qwen3moe-synthetic.Q4_K_M.gguf Q4_K_M                       # llama_cpp
    bash bench/run_model.sh --model ~/.cache/attn/bench/qwen3moe-synthetic.Q4_K_M.gguf --live-tokens 0
    (gpt-oss: --write /tmp/oss-f16.gguf --arch gpt-oss, then --quantize ... gpt-oss-synthetic.MXFP4_MOE.gguf MXFP4_MOE)

Shape: 8 layers, d_model 1024, 16 query / 4 KV heads of 64, 64 experts of width 512 with 8 used
per token (Qwen3-30B-A3B: 48 layers, 2048, 32 / 4 of 128, 128 experts of 768, 8 used), vocabulary
49,152 (SmolLM2's, from the default model's file). About 0.85 B parameters, 0.12 B active per
token. Weights: normal with std 0.02 (norm gains 1), seed 0.

--arch gpt-oss writes a scaled-down gpt-oss-20b instead (24 layers, 2880, 64 / 8 heads of 64, 32
experts of 2880, 4 used): 8 layers, d_model 1024, 16 / 2 heads of 64, 32 experts of width 1024
with 4 used, every other layer sliding over 128 keys, sinks, biases on every projection, router
and expert, YaRN as gpt-oss's (factor 32 over 4096, base 150000); about 0.93 B parameters, 0.2 B
active. Quantize it as MXFP4_MOE, as gpt-oss's GGUF files come.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import sys

import numpy as np

DEFAULT_TOKENIZER = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "attn", "models",
                                 "SmolLM2-135M-Instruct.Q4_1.gguf")
SHAPES = {"qwen3moe": dict(n_layers=8, d=1024, n_heads=16, n_kv=4, head_dim=64, n_expert=64, n_used=8, ff=512,
                           context=4096),
          "gpt-oss": dict(n_layers=8, d=1024, n_heads=16, n_kv=2, head_dim=64, n_expert=32, n_used=4, ff=1024,
                          context=131072)}


def write(path: str, tokenizer_path: str, arch: str) -> None:
    import gguf

    s = SHAPES[arch]
    oss = arch == "gpt-oss"
    src = gguf.GGUFReader(tokenizer_path)
    tokens = [bytes(src.fields["tokenizer.ggml.tokens"].parts[i]).decode("utf-8")
              for i in src.fields["tokenizer.ggml.tokens"].data]
    merges = [bytes(src.fields["tokenizer.ggml.merges"].parts[i]).decode("utf-8")
              for i in src.fields["tokenizer.ggml.merges"].data]
    types = [int(src.fields["tokenizer.ggml.token_type"].parts[i][0])
             for i in src.fields["tokenizer.ggml.token_type"].data]
    vocab = len(tokens)
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(path, arch=arch)
    w.add_name(f"{arch}-synthetic")
    w.add_context_length(s["context"])
    w.add_embedding_length(s["d"])
    w.add_block_count(s["n_layers"])
    w.add_feed_forward_length(4 * s["d"])
    w.add_expert_feed_forward_length(s["ff"])
    w.add_expert_count(s["n_expert"])
    w.add_expert_used_count(s["n_used"])
    w.add_head_count(s["n_heads"])
    w.add_head_count_kv(s["n_kv"])
    w.add_key_length(s["head_dim"])
    w.add_value_length(s["head_dim"])
    w.add_rope_freq_base(150000.0 if oss else 1e6)
    w.add_layer_norm_rms_eps(1e-5 if oss else 1e-6)
    if oss:
        w.add_sliding_window(128)
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(32.0)
        w.add_rope_scaling_orig_ctx_len(4096)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(bytes(src.fields["tokenizer.ggml.pre"].parts[-1]).decode("utf-8"))
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(int(src.fields["tokenizer.ggml.bos_token_id"].parts[-1][0]))
    w.add_eos_token_id(int(src.fields["tokenizer.ggml.eos_token_id"].parts[-1][0]))
    w.add_add_bos_token(False)

    def rand(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)

    def bias(*shape):
        return rand(*shape).astype(np.float32)

    d, hd, q, kv = s["d"], s["head_dim"], s["n_heads"] * s["head_dim"], s["n_kv"] * s["head_dim"]
    ne, ff = s["n_expert"], s["ff"]
    w.add_tensor("token_embd.weight", rand(vocab, d))
    for l in range(s["n_layers"]):
        p = f"blk.{l}."
        w.add_tensor(p + "attn_norm.weight", np.ones(d, np.float32))
        for name, rows in (("attn_q", q), ("attn_k", kv), ("attn_v", kv)):
            w.add_tensor(p + name + ".weight", rand(rows, d))
            if oss:
                w.add_tensor(p + name + ".bias", bias(rows))
        if not oss:
            w.add_tensor(p + "attn_q_norm.weight", np.ones(hd, np.float32))
            w.add_tensor(p + "attn_k_norm.weight", np.ones(hd, np.float32))
        w.add_tensor(p + "attn_output.weight", rand(d, q))
        if oss:
            w.add_tensor(p + "attn_output.bias", bias(d))
            w.add_tensor(p + "attn_sinks.weight", rng.standard_normal(s["n_heads"], dtype=np.float32))
        w.add_tensor(p + ("post_attention_norm.weight" if oss else "ffn_norm.weight"), np.ones(d, np.float32))
        w.add_tensor(p + "ffn_gate_inp.weight", rand(ne, d).astype(np.float32))
        w.add_tensor(p + "ffn_gate_exps.weight", rand(ne, ff, d))
        w.add_tensor(p + "ffn_down_exps.weight", rand(ne, d, ff))
        w.add_tensor(p + "ffn_up_exps.weight", rand(ne, ff, d))
        if oss:
            w.add_tensor(p + "ffn_gate_inp.bias", bias(ne))
            w.add_tensor(p + "ffn_gate_exps.bias", bias(ne, ff))
            w.add_tensor(p + "ffn_down_exps.bias", bias(ne, d))
            w.add_tensor(p + "ffn_up_exps.bias", bias(ne, ff))
    w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    w.add_tensor("output.weight", rand(vocab, d))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {path} ({os.path.getsize(path) / 1e9:.2f} GB)")


def quantize(src: str, dst: str, type_name: str, threads: int) -> None:
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{type_name}")
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype, p.nthread = ftype, threads
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    if llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p)) != 0:
        raise SystemExit(f"llama_model_quantize failed for {type_name}")
    print(f"wrote {dst} ({os.path.getsize(dst) / 1e9:.2f} GB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", metavar="F16_PATH")
    ap.add_argument("--arch", choices=sorted(SHAPES), default="qwen3moe", help="the model to write")
    ap.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help="GGUF file whose tokenizer to copy")
    ap.add_argument("--quantize", nargs=3, metavar=("SRC", "DST", "TYPE"))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.write:
        write(a.write, a.tokenizer, a.arch)
    if a.quantize:
        quantize(*a.quantize, a.threads)
    if not (a.write or a.quantize):
        ap.print_help()
        sys.exit(2)


if __name__ == "__main__":
    main()
