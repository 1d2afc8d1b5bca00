"""attn against llama.cpp on K-quant files made from the default model (a live check, not a test).

llama.cpp's own quantizer (llama-cpp-python's `llama_model_quantize`) requantizes the default
SmolLM2-135M-Instruct Q4_1 file to Q2_K, Q3_K_S / M / L, Q4_K_M, Q5_K_M, Q6_K, IQ4_NL and IQ4_XS
(rows of 576 values, not a multiple of 256, fall back to IQ4_NL / Q5_0 / Q5_1 / Q8_0 as llama.cpp
decides), then both engines compute the
next-token logits of the 512-token text of tests/fixtures/smollm2_llamacpp.json and the script
prints top-1 agreement and the mean row-centered logit difference.

    bench/.venv-llama/bin/python bench/compare_kquants.py [--out-dir /tmp] [--types Q3_K_M ...]
(bench/run_model.sh creates bench/.venv-llama; build attn first.)"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "build", "python"))

import attn  # noqa: E402
import llama_cpp  # noqa: E402

# llama.cpp's LLAMA_FTYPE_MOSTLY_*
FTYPES = {"Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18,
          "IQ4_NL": 25, "IQ4_XS": 30}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default="/tmp")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--types", nargs="+", choices=list(FTYPES), default=list(FTYPES))
    args = ap.parse_args()
    src = attn.Model.default_path()
    ids = json.load(open(os.path.join(ROOT, "tests", "fixtures", "smollm2_llamacpp.json")))["next_token"]["ids"]
    for name in args.types:
        ftype = FTYPES[name]
        path = os.path.join(args.out_dir, f"SmolLM2-135M-Instruct.{name}.gguf")
        if not os.path.exists(path):
            p = llama_cpp.llama_model_quantize_default_params()
            p.ftype, p.allow_requantize, p.nthread = ftype, True, args.threads
            if llama_cpp.llama_model_quantize(src.encode(), path.encode(), ctypes.byref(p)) != 0:
                raise SystemExit(f"llama_model_quantize failed for {name}")
        llm = llama_cpp.Llama(model_path=path, n_ctx=len(ids) + 8, n_batch=len(ids), n_ubatch=len(ids),
                              logits_all=True, n_threads=args.threads, verbose=False)
        llm.eval(ids)
        ref = np.array(llm.scores[:len(ids)])
        model = attn.Model.load(path)
        for kv in ("f32", "f16"):
            ours = model.logits(ids, kv_type=kv, threads=args.threads)
            same = ours.argmax(-1) == ref.argmax(-1)
            top2 = np.sort(ref, -1)[:, -2:]
            clear = (top2[:, 1] - top2[:, 0]) >= 0.25
            diff = ours - ref
            diff -= diff.mean(1, keepdims=True)
            print(f"{name} ({os.path.getsize(path) / 2**20:.0f} MiB), attn KV cache {kv}: top-1 agreement "
                  f"{same.mean():.4f} over {len(ids)} positions ({same[clear].mean():.4f} where llama.cpp's top-2 "
                  f"gap >= 0.25); mean |row-centered logit difference| {np.abs(diff).mean():.4f}")
        del llm


if __name__ == "__main__":
    main()
