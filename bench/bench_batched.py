#!/usr/bin/env python3
"""Batched decoding, attn vs llama.cpp: P sequences processed and generated together (what a server
with P parallel slots does), as llama.cpp's llama-batched-bench measures it.

For each P: every sequence gets the same prompt (one pass of P x prompt tokens: pp), then each step
decodes one greedy token for each of the P sequences in one pass (tg); tokens/s count all P
sequences' tokens. attn through `attn bench --parallel P --json`; llama.cpp through
llama-cpp-python's low-level API (one llama_batch with P sequence ids, a unified KV cache, f16 as
attn's), each in its own process, the same GGUF, prompt ids and thread count. Engines alternate
within each round; the table quotes the median of the repeats over all rounds.

    bench/.venv-llama/bin/python bench/bench_batched.py --parallel 1 2 4 8 16 --write-md
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATTN = os.path.join(ROOT, "build", "bin", "attn")
DEFAULT_MODEL = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "attn", "models",
                             "SmolLM2-135M-Instruct.Q4_1.gguf")
BEGIN, END = "<!-- batched-bench:begin -->", "<!-- batched-bench:end -->"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_model import machine, write_section  # noqa: E402  (the same machine line as the model table)


def llama_child(args) -> None:
    import time

    import llama_cpp
    import numpy as np

    with open(args.prompt_file) as f:
        spec = json.load(f)
    prompt, n_gen, repeats, P = spec["prompt_ids"], spec["gen_tokens"], spec["repeats"], spec["parallel"]
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(args.model.encode(), llama_cpp.llama_model_default_params())
    cp = llama_cpp.llama_context_default_params()
    cp.n_ctx = P * (len(prompt) + n_gen + 8)
    cp.n_batch = cp.n_ubatch = P * len(prompt)
    cp.n_seq_max = P
    cp.kv_unified = True
    cp.n_threads = cp.n_threads_batch = args.threads
    ctx = llama_cpp.llama_init_from_model(model, cp)
    if not ctx:
        raise SystemExit("llama_init_from_model failed")
    vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
    batch = llama_cpp.llama_batch_init(P * len(prompt), 0, P)

    def decode(rows: list[tuple[int, int, int, bool]]) -> float:  # (token, pos, seq, logits)
        batch.n_tokens = len(rows)
        for i, (t, pos, seq, out) in enumerate(rows):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = t, pos, 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = 1 if out else 0
        t0 = time.perf_counter()
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama_decode failed")
        return time.perf_counter() - t0

    def argmax(i: int) -> int:
        return int(np.argmax(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, i), shape=(vocab,))))

    n = len(prompt)
    pp, tg = [], []
    for _ in range(repeats):
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        rows = [(t, p, s, p == n - 1) for s in range(P) for p, t in enumerate(prompt)]
        pp.append(P * n / decode(rows))
        nxt = [argmax(s * n + n - 1) for s in range(P)]
        t = 0.0
        for i in range(n_gen):
            t += decode([(nxt[s], n + i, s, True) for s in range(P)])
            nxt = [argmax(s) for s in range(P)]
        tg.append(P * n_gen / t)
    llama_cpp.llama_batch_free(batch)
    print(json.dumps({"pp_tokens_per_s": pp, "tg_tokens_per_s": tg, "version": llama_cpp.__version__}))


def run(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"failed ({out.returncode}): {shlex.join(cmd)}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--write-md", action="store_true", help="replace the table in BENCHMARKS.md")
    ap.add_argument("--llama-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--prompt-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.llama_child:
        return llama_child(args)

    started = datetime.datetime.now(datetime.timezone.utc)
    rows = []
    version = "?"
    for P in args.parallel:
        attn_pp, attn_tg, llama_pp, llama_tg = [], [], [], []
        for _ in range(args.rounds):
            a = run([ATTN, "bench", "--model", args.model, "-t", str(args.threads), "-p", str(args.prompt_tokens),
                     "-n", str(args.gen_tokens), "-r", str(args.repeats), "--parallel", str(P), "--json"])
            attn_pp += a["pp_tokens_per_s"]
            attn_tg += a["tg_tokens_per_s"]
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                json.dump({"prompt_ids": a["prompt_ids"], "gen_tokens": args.gen_tokens, "repeats": args.repeats,
                           "parallel": P}, f)
            try:
                ll = run([sys.executable, os.path.abspath(__file__), "--llama-child", "--model", args.model,
                          "--threads", str(args.threads), "--prompt-file", f.name])
            finally:
                os.unlink(f.name)
            llama_pp += ll["pp_tokens_per_s"]
            llama_tg += ll["tg_tokens_per_s"]
            version = ll["version"]
        r = {"P": P, "attn_pp": statistics.median(attn_pp), "llama_pp": statistics.median(llama_pp),
             "attn_tg": statistics.median(attn_tg), "llama_tg": statistics.median(llama_tg)}
        rows.append(r)
        print(f"P={P:3d}  pp attn {r['attn_pp']:8.1f}  llama.cpp {r['llama_pp']:8.1f}  ({r['attn_pp'] / r['llama_pp']:.2f}x)"
              f"   tg attn {r['attn_tg']:7.1f}  llama.cpp {r['llama_tg']:7.1f}  ({r['attn_tg'] / r['llama_tg']:.2f}x)",
              flush=True)
    seconds = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    git = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cmd = "bench/.venv-llama/bin/python bench/bench_batched.py " + shlex.join(sys.argv[1:])
    md = [BEGIN,
          "## Batched decoding (P sequences together, as a server's slots): attn vs llama.cpp",
          "",
          f"- Date: {started:%Y-%m-%d %H:%M} UTC; machine: {machine()}; load average "
          f"{os.getloadavg()[0]:.2f} at the end",
          f"- Command: `{cmd}` ({seconds:.0f} s); attn git {git}, llama-cpp-python {version}",
          f"- Model: `{os.path.basename(args.model)}`, {args.threads} threads, prompt {args.prompt_tokens} tokens per "
          f"sequence, {args.gen_tokens} greedy tokens per sequence; f16 KV cache on both sides (llama.cpp: one "
          f"unified cache of P sequence ids); medians of {args.repeats} repeats x {args.rounds} rounds, engines "
          "alternating. Tokens/s count all P sequences' tokens.",
          "",
          "| P | pp attn | pp llama.cpp | ratio | tg attn | tg llama.cpp | ratio |",
          "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['P']} | {r['attn_pp']:.1f} | {r['llama_pp']:.1f} | {r['attn_pp'] / r['llama_pp']:.2f}x | "
                  f"{r['attn_tg']:.1f} | {r['llama_tg']:.1f} | {r['attn_tg'] / r['llama_tg']:.2f}x |")
    md.append(END)
    text = "\n".join(md)
    print(text)
    if args.write_md:
        write_section(BEGIN, END, text)


if __name__ == "__main__":
    main()
