#!/usr/bin/env python3
"""Prompt lookup decoding, attn vs llama.cpp: each engine with and without drafts from the prompt,
on chat prompts that quote their input and ones that do not.

attn: Model.generate(lookup=8) (at most 8 drafts, n-grams of 3 then 2, the draft length chosen
from the share of drafts that held). llama.cpp: llama-cpp-python's Llama.create_completion with
draft_model=LlamaPromptLookupDecoding(num_pred_tokens=10, max_ngram_size=2), its defaults. Same
GGUF, same prompt ids, greedy, f16 KV cache, the same threads; both in this process, the four
configurations interleaved in each round; every call evaluates its whole prompt (llama.cpp's prompt
cache reset). The figure is the wall time of one request (prompt + up to --tokens tokens); the
table gives medians and each engine's speedup from lookup, and checks that lookup leaves each
engine's text unchanged.

    bench/.venv-llama/bin/python bench/bench_lookup.py --write-md
"""
from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- lookup-bench:begin -->", "<!-- lookup-bench:end -->"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_model import machine, write_section  # noqa: E402

PROMPTS = {
    "quote": "Repeat this text exactly:\nThe quick brown fox jumps over the lazy dog. The rain in Spain stays "
             "mainly in the plain. Peter Piper picked a peck of pickled peppers. She sells sea shells by the "
             "sea shore.",
    "rename": "Rename the variable x to count in this code and show the whole code:\n\n"
              "def tally(items):\n    x = 0\n    for item in items:\n        if item:\n            x += 1\n"
              "    return x\n",
    "story": "Write a short story about a robot who learns to paint.",
    "code": "Fix the bug in this Python function and return the whole corrected function:\n\n"
            "def average(values):\n    total = 0\n    for v in values:\n        total += v\n"
            "    return total / len(value)\n",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GGUF file (default: attn's default model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--lookup", type=int, default=8, help="attn's most drafts per pass")
    ap.add_argument("--write-md", action="store_true", help="write the table into BENCHMARKS.md")
    args = ap.parse_args()

    sys.path.insert(0, os.path.join(ROOT, "build", "python"))
    import attn
    import llama_cpp
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    path = args.model or attn.Model.default_path()
    model = attn.Model.load(path)
    kw = dict(model_path=path, n_ctx=1024, n_threads=args.threads, n_threads_batch=args.threads, verbose=False,
              logits_all=False)
    llm = llama_cpp.Llama(**kw)
    llm_lookup = llama_cpp.Llama(**kw, draft_model=LlamaPromptLookupDecoding(num_pred_tokens=10, max_ngram_size=2))

    def run_attn(ids, lookup):
        t0 = time.perf_counter()
        r = model.generate(ids, args.tokens, threads=args.threads, lookup=lookup, return_dict=True)
        return time.perf_counter() - t0, r["tokens"], r

    def run_llama(engine, ids):
        engine.reset()  # no prompt cache: the whole prompt is evaluated, as attn's fresh session does
        t0 = time.perf_counter()
        out = engine.create_completion(ids, max_tokens=args.tokens, temperature=0.0, top_k=1)
        dt = time.perf_counter() - t0
        return dt, out["usage"]["completion_tokens"], out

    rows = []
    for name, text in PROMPTS.items():
        ids = model.to_tokens(model.apply_chat_template([("user", text)]))
        times = {k: [] for k in ("attn", "attn_lookup", "llama", "llama_lookup")}
        outs = {}
        for rnd in range(args.rounds + 1):  # round 0 warms up
            for key in times:
                if key.startswith("attn"):
                    dt, toks, extra = run_attn(ids, args.lookup if key.endswith("lookup") else 0)
                else:
                    dt, toks, extra = run_llama(llm_lookup if key.endswith("lookup") else llm, ids)
                if rnd > 0:
                    times[key].append(dt)
                outs[key] = (toks, extra)
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        a, al = outs["attn"][1], outs["attn_lookup"][1]
        row = dict(prompt=name, prompt_tokens=len(ids), attn_tokens=len(a["tokens"]),
                   llama_tokens=outs["llama"][0], **{k + "_ms": v for k, v in med.items()},
                   drafted=al["drafted"], kept=al["draft_accepted"],
                   attn_same=a["tokens"] == al["tokens"],
                   llama_same=outs["llama"][1]["choices"][0]["text"] == outs["llama_lookup"][1]["choices"][0]["text"])
        rows.append(row)
        print(f"{name:7s} attn {med['attn']:7.1f} -> {med['attn_lookup']:7.1f} ms ({med['attn'] / med['attn_lookup']:.2f}x, "
              f"{row['kept']}/{row['drafted']} drafts kept, same text: {row['attn_same']});  llama.cpp "
              f"{med['llama']:7.1f} -> {med['llama_lookup']:7.1f} ms ({med['llama'] / med['llama_lookup']:.2f}x, "
              f"same text: {row['llama_same']})", flush=True)

    cmd = "bench/.venv-llama/bin/python bench/bench_lookup.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    git = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [BEGIN, "## Prompt lookup decoding: attn vs llama.cpp, each with and without drafts", "",
             f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {machine()}",
             f"- Command: `{cmd}` (git {git}); llama-cpp-python {llama_cpp.__version__}",
             f"- Model: {os.path.basename(path)}; chat prompts, greedy, up to {args.tokens} tokens, {args.threads} "
             f"threads, f16 KV cache; median wall time of one request (prompt + answer) over {args.rounds} rounds, "
             "the four configurations interleaved. attn `lookup=" + str(args.lookup) + "`; llama.cpp "
             "`LlamaPromptLookupDecoding(num_pred_tokens=10, max_ngram_size=2)` (llama-cpp-python's defaults). "
             "The speedups are each engine's own; across engines the answers differ (greedy texts part where "
             "the two engines' logits differ, BENCHMARKS' agreement section) and llama-cpp-python's high-level "
             "API adds Python work per token, so its absolute times are not llama.cpp's C++ speed (the model "
             "table above is).",
             "",
             "| prompt | prompt tokens | answer tokens (attn / llama.cpp) | attn ms | attn + lookup ms | attn speedup | "
             "drafts kept / run | llama.cpp ms | llama.cpp + lookup ms | llama.cpp speedup | "
             "text unchanged (attn / llama.cpp) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['prompt']} | {r['prompt_tokens']} | {r['attn_tokens']} / {r['llama_tokens']} | "
                     f"{r['attn_ms']:.1f} | {r['attn_lookup_ms']:.1f} | {r['attn_ms'] / r['attn_lookup_ms']:.2f}x | "
                     f"{r['kept']} / {r['drafted']} | {r['llama_ms']:.1f} | {r['llama_lookup_ms']:.1f} | "
                     f"{r['llama_ms'] / r['llama_lookup_ms']:.2f}x | "
                     f"{'yes' if r['attn_same'] else 'NO'} / {'yes' if r['llama_same'] else 'no'} |")
    lines.append(END)
    table = "\n".join(lines)
    print(table)
    if args.write_md:
        write_section(BEGIN, END, table)


if __name__ == "__main__":
    main()
