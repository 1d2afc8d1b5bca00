"""Makes a synthetic mixture-of-experts model for the speed benchmark (no real MoE GGUF small
enough for this machine is on PyPI): a qwen3moe file shaped like a scaled-down Qwen3-30B-A3B,
random weights, SmolLM2's tokenizer, then quantized by llama.cpp's own quantizer. Its text is
noise; its speed is that of a real model of this shape.

    .venv/bin/python bench/make_moe_model.py --write /tmp/moe-f16.gguf                  # gguf, numpy
    bench/.venv-llama/bin/python bench/make_moe_model.py --quantize /tmp/moe-f16.gguf \\
        ~/.cache/attn/bench/qwen3moe-synthetic.Q4_K_M.gguf Q4_K_M                       # llama_cpp
    bash bench/run_model.sh --model ~/.cache/attn/bench/qwen3moe-synthetic.Q4_K_M.gguf --live-tokens 0

Shape: 8 layers, d_model 1024, 16 query / 4 KV heads of 64, 64 experts of width 512 with 8 used
per token (Qwen3-30B-A3B: 48 layers, 2048, 32 / 4 of 128, 128 experts of 768, 8 used), vocabulary
49,152 (SmolLM2's, from the default model's file). About 0.85 B parameters, 0.12 B active per
token. Weights: normal with std 0.02 (norm gains 1), seed 0.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import sys

import numpy as np

DEFAULT_TOKENIZER = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "attn", "models",
                                 "SmolLM2-135M-Instruct.Q4_1.gguf")
SHAPE = dict(n_layers=8, d=1024, n_heads=16, n_kv=4, head_dim=64, n_expert=64, n_used=8, ff=512, context=4096)


def write(path: str, tokenizer_path: str) -> None:
    import gguf

    s = SHAPE
    src = gguf.GGUFReader(tokenizer_path)
    tokens = [bytes(src.fields["tokenizer.ggml.tokens"].parts[i]).decode("utf-8")
              for i in src.fields["tokenizer.ggml.tokens"].data]
    merges = [bytes(src.fields["tokenizer.ggml.merges"].parts[i]).decode("utf-8")
              for i in src.fields["tokenizer.ggml.merges"].data]
    types = [int(src.fields["tokenizer.ggml.token_type"].parts[i][0])
             for i in src.fields["tokenizer.ggml.token_type"].data]
    vocab = len(tokens)
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(path, arch="qwen3moe")
    w.add_name("qwen3moe-synthetic")
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
    w.add_rope_freq_base(1e6)
    w.add_layer_norm_rms_eps(1e-6)
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

    d, hd, q, kv = s["d"], s["head_dim"], s["n_heads"] * s["head_dim"], s["n_kv"] * s["head_dim"]
    w.add_tensor("token_embd.weight", rand(vocab, d))
    for l in range(s["n_layers"]):
        p = f"blk.{l}."
        w.add_tensor(p + "attn_norm.weight", np.ones(d, np.float32))
        w.add_tensor(p + "attn_q.weight", rand(q, d))
        w.add_tensor(p + "attn_k.weight", rand(kv, d))
        w.add_tensor(p + "attn_v.weight", rand(kv, d))
        w.add_tensor(p + "attn_q_norm.weight", np.ones(hd, np.float32))
        w.add_tensor(p + "attn_k_norm.weight", np.ones(hd, np.float32))
        w.add_tensor(p + "attn_output.weight", rand(d, q))
        w.add_tensor(p + "ffn_norm.weight", np.ones(d, np.float32))
        w.add_tensor(p + "ffn_gate_inp.weight", rand(s["n_expert"], d).astype(np.float32))
        w.add_tensor(p + "ffn_gate_exps.weight", rand(s["n_expert"], s["ff"], d))
        w.add_tensor(p + "ffn_down_exps.weight", rand(s["n_expert"], d, s["ff"]))
        w.add_tensor(p + "ffn_up_exps.weight", rand(s["n_expert"], s["ff"], d))
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
    ap.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help="GGUF file whose tokenizer to copy")
    ap.add_argument("--quantize", nargs=3, metavar=("SRC", "DST", "TYPE"))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.write:
        write(a.write, a.tokenizer)
    if a.quantize:
        quantize(*a.quantize, a.threads)
    if not (a.write or a.quantize):
        ap.print_help()
        sys.exit(2)


if __name__ == "__main__":
    main()
