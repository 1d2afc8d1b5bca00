#!/usr/bin/env python3
"""attn perplexity vs llama.cpp's perplexity loop on the same GGUF, text, chunks and threads: speed
(tokens of the chunks evaluated per second) and the two perplexities.

llama.cpp runs llama-perplexity's loop through llama-cpp-python's low-level API (the wheel does
not ship the llama-perplexity program): per chunk, a cleared KV cache (f16) and one llama_decode
of the chunk's tokens with outputs requested for the second half only, as llama-perplexity does.
Only llama_decode is timed on its side (its NLLs are then computed in NumPy, untimed); attn's time
is `attn perplexity --json`'s own "seconds", which includes its scoring. Engines alternate for
--rounds rounds, each in a fresh process; the table quotes medians.

    bash bench/run_model.sh --help >/dev/null          # builds bench/.venv-llama once
    bench/.venv-llama/bin/python bench/bench_perplexity.py --chunks 10 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATTN = os.path.join(ROOT, "build", "bin", "attn")
CACHE = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
DEFAULT_MODEL = os.path.join(CACHE, "attn", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_TEXT = os.path.join(CACHE, "attn", "corpus", "kjv.txt")


def llama_child(args) -> None:
    import time

    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(model_path=args.model, n_ctx=args.context, n_batch=args.context, n_ubatch=args.context,
                          n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    ctx = llm._ctx.ctx
    vocab = llm.n_vocab()
    with open(args.text, "rb") as f:
        text = f.read()
    add_bos = llm._model.add_bos_token()
    tokens = llm.tokenize(text, add_bos=add_bos, special=False)
    n_ctx, first = args.context, args.context // 2
    n_chunks = min(len(tokens) // n_ctx, args.chunks)
    batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
    seconds, nll = 0.0, []
    for c in range(n_chunks):
        chunk = list(tokens[c * n_ctx:(c + 1) * n_ctx])
        if add_bos:
            chunk[0] = llm.token_bos()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        batch.n_tokens = n_ctx
        for i, t in enumerate(chunk):
            batch.token[i] = t
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1 if i >= first else 0
        t0 = time.perf_counter()
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama_decode failed")
        seconds += time.perf_counter() - t0
        rows = np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx), shape=(n_ctx - first, vocab))
        rows = rows[:n_ctx - 1 - first].astype(np.float64)
        m = rows.max(axis=1)
        lse = m + np.log(np.exp(rows - m[:, None]).sum(axis=1))
        nll.extend(lse - rows[np.arange(len(rows)), chunk[first + 1:]])
    llama_cpp.llama_batch_free(batch)
    print(json.dumps({"ppl": float(np.exp(np.mean(nll))), "seconds": seconds, "chunks": n_chunks,
                      "version": llama_cpp.__version__}))


def run(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--text", default=DEFAULT_TEXT)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--llama-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.llama_child:
        llama_child(args)
        return
    common = ["--model", args.model, "--text", args.text, "--context", str(args.context), "--chunks",
              str(args.chunks), "--threads", str(args.threads)]
    attn_cmd = [ATTN, "perplexity", "--model", args.model, "-f", args.text, "-c", str(args.context), "--chunks",
                str(args.chunks), "-t", str(args.threads), "--json"]
    llama_cmd = [sys.executable, os.path.abspath(__file__), "--llama-child", *common]
    a_rate, l_rate, a_ppl, l_ppl, version = [], [], 0.0, 0.0, ""
    for r in range(args.rounds):
        a = run(attn_cmd)
        l = run(llama_cmd)
        n = a["chunks"] * args.context
        assert l["chunks"] == a["chunks"], (a["chunks"], l["chunks"])
        a_rate.append(n / a["seconds"])
        l_rate.append(n / l["seconds"])
        a_ppl, l_ppl, version = a["ppl"], l["ppl"], l["version"]
        print(f"round {r + 1}: attn {a_rate[-1]:.1f} tokens/s, llama.cpp {l_rate[-1]:.1f} tokens/s", flush=True)
    am, lm = statistics.median(a_rate), statistics.median(l_rate)
    print(f"{os.path.basename(args.model)}, {os.path.basename(args.text)}: {a['chunks']} chunks of {args.context}, "
          f"{args.threads} threads, llama-cpp-python {version}")
    print(f"attn      {am:8.1f} tokens/s  PPL {a_ppl:.4f}")
    print(f"llama.cpp {lm:8.1f} tokens/s  PPL {l_ppl:.4f}")
    print(f"ratio     {am / lm:8.2f}x        PPL difference {100 * (a_ppl / l_ppl - 1):+.2f}%")


if __name__ == "__main__":
    main()
