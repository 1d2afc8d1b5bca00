#!/usr/bin/env python3
"""attn vs llama.cpp on a real model: prompt processing (pp) and generation (tg) speed, peak memory,
and a live check that both produce the same greedy tokens.

Each engine runs in its own process (so its peak RSS is its own, read with wait4), on the same
GGUF file, the same prompt token ids and the same thread count; attn through `attn bench --json`,
llama.cpp through llama-cpp-python's low-level calls (llama_decode timed with perf_counter, the
same span attn times: the forward passes, not sampling). Engines alternate, each run repeats
`--repeats` times inside its process, and the table quotes medians.

    bash bench/run_model.sh --threads 2 --repeats 3 --rounds 2 --write-md
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATTN = os.path.join(ROOT, "build", "bin", "attn")
DEFAULT_MODEL = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "attn", "models",
                             "SmolLM2-135M-Instruct.Q4_1.gguf")
LIVE_PROMPT = "The history of the printing press begins"
BEGIN, END = "<!-- model-bench:begin -->", "<!-- model-bench:end -->"


def run_child(cmd: list[str]) -> tuple[dict, float]:
    """Runs cmd, returns (its JSON stdout, the peak RSS in MB that the child reports of itself)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {shlex.join(cmd)}\n{err}")
    j = json.loads(out.strip().splitlines()[-1])
    return j, float(j.get("peak_rss_mb", 0.0))


def llama_child(args) -> None:
    import resource
    import time

    import llama_cpp
    import numpy as np

    with open(args.prompt_file) as f:
        spec = json.load(f)
    prompt, n_gen, repeats = spec["prompt_ids"], spec["gen_tokens"], spec["repeats"]
    # A q8_0 cache in llama.cpp needs its flash-attention path (a quantized V cache requires it).
    cache = dict(type_k=8, type_v=8, flash_attn=True) if args.kv_type == "q8_0" else {}
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=len(prompt) + n_gen, n_batch=len(prompt), n_ubatch=len(prompt),
                          n_threads=args.threads, n_threads_batch=args.threads, verbose=False, **cache)
    ctx = llm._ctx.ctx
    vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(llm._model.model))

    def last_logits():
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(vocab,))

    def decode(tokens: list[int], pos0: int) -> float:
        arr = (llama_cpp.llama_token * len(tokens))(*tokens)  # kept alive until llama_decode returns
        batch = llama_cpp.llama_batch_get_one(arr, len(tokens))
        t0 = time.perf_counter()
        rc = llama_cpp.llama_decode(ctx, batch)
        dt = time.perf_counter() - t0
        if rc != 0:
            raise SystemExit(f"llama_decode returned {rc}")
        return dt

    pp, tg = [], []
    for _ in range(repeats):
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        pp.append(len(prompt) / decode(prompt, 0))
        t = 0.0
        for i in range(n_gen):
            t += decode([int(np.argmax(last_logits()))], len(prompt) + i)
        tg.append(n_gen / t)
    # Live greedy check on the given prompt ids.
    live = spec.get("live_prompt_ids")
    live_tokens, live_gaps = [], []
    if live:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        decode(live, 0)
        for i in range(spec["live_tokens"]):
            row = last_logits()
            nxt = int(np.argmax(row))
            top2 = np.partition(row, -2)[-2:]
            live_tokens.append(nxt)
            live_gaps.append(float(top2[1] - top2[0]))
            decode([nxt], len(live) + i)
    print(json.dumps({"pp_tokens_per_s": pp, "tg_tokens_per_s": tg, "pp_median": statistics.median(pp),
                      "tg_median": statistics.median(tg), "live_tokens": live_tokens, "live_gaps": live_gaps,
                      "version": llama_cpp.__version__,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


NEAR_TIE = 0.25  # as in tests/python/test_llamacpp.py


def teacher_forced(args, prompt_ids: list[int], want: list[int], gaps: list[float]) -> str:
    """attn's next-token choice at each of llama.cpp's greedy steps, given llama.cpp's earlier tokens
    (one near-tie then does not end the comparison): a sentence for the table."""
    sys.path.insert(0, os.path.join(ROOT, "build", "python"))
    try:
        import attn
    except ImportError as e:
        return f"(teacher-forced check skipped: {e})"
    model = attn.Model.load(args.model)
    choice = model.logits(prompt_ids + want[:-1], threads=args.threads,
                          kv_type=args.kv_type)[len(prompt_ids) - 1:].argmax(-1)
    agree = [int(c) == t for c, t in zip(choice, want)]
    clear = [a for a, g in zip(agree, gaps) if g >= NEAR_TIE]
    return (f"Teacher-forced (attn given llama.cpp's previous tokens): {sum(agree)} of {len(want)} steps agree, "
            f"{sum(clear)} of {len(clear)} where llama.cpp's top-2 gap is >= {NEAR_TIE}.")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3, help="runs inside each process")
    ap.add_argument("--rounds", type=int, default=2, help="alternating process launches per engine")
    ap.add_argument("--live-tokens", type=int, default=64, help="greedy tokens compared live (0 = skip)")
    ap.add_argument("--kv-type", default="f16", choices=["f16", "bf16", "f32", "q8_0"],
                    help="attn's KV cache storage (llama.cpp's is f16, its default, except for q8_0: both q8_0)")
    ap.add_argument("--attn-simd-target", default="",
                    help="run attn on this SIMD target (e.g. AVX2: what a CPU without AVX-512 gets; default the best)")
    ap.add_argument("--write-md", action="store_true", help="write the table into BENCHMARKS.md")
    ap.add_argument("--llama-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--prompt-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.llama_child:
        return llama_child(args)

    common = ["-t", str(args.threads), "--model", args.model]
    live_ids, attn_live = [], []
    if args.live_tokens:
        g, _ = run_child([ATTN, "generate", "--json", "--ignore-eos", "-n", str(args.live_tokens), "--kv-type",
                          args.kv_type, *common, LIVE_PROMPT])
        live_ids, attn_live = g["prompt_tokens"], g["tokens"]

    attn_runs, llama_runs = [], []
    spec_path = None
    for r in range(args.rounds):
        j, rss = run_child([ATTN, "bench", "--json", "-p", str(args.prompt_tokens), "-n", str(args.gen_tokens),
                            "-r", str(args.repeats), "--kv-type", args.kv_type, *common,
                            *(["--simd-target", args.attn_simd_target] if args.attn_simd_target else [])])
        attn_runs.append((j, rss))
        print(f"[round {r + 1}] attn   pp {j['pp_median']:.1f}  tg {j['tg_median']:.1f} tokens/s  peak {rss:.0f} MB",
              file=sys.stderr)
        if spec_path is None:
            fd, spec_path = tempfile.mkstemp(suffix=".json")
            with os.fdopen(fd, "w") as f:
                json.dump({"prompt_ids": j["prompt_ids"], "gen_tokens": args.gen_tokens, "repeats": args.repeats,
                           "live_prompt_ids": live_ids, "live_tokens": args.live_tokens}, f)
        j2, rss2 = run_child([sys.executable, os.path.abspath(__file__), "--llama-child", "--prompt-file", spec_path,
                              "--model", args.model, "--threads", str(args.threads), "--kv-type", args.kv_type])
        llama_runs.append((j2, rss2))
        print(f"[round {r + 1}] llama  pp {j2['pp_median']:.1f}  tg {j2['tg_median']:.1f} tokens/s  peak {rss2:.0f} MB",
              file=sys.stderr)
    os.unlink(spec_path)

    def med(runs, key):
        return statistics.median(x for j, _ in runs for x in j[key])

    a_pp, a_tg = med(attn_runs, "pp_tokens_per_s"), med(attn_runs, "tg_tokens_per_s")
    l_pp, l_tg = med(llama_runs, "pp_tokens_per_s"), med(llama_runs, "tg_tokens_per_s")
    a_mem, l_mem = max(r for _, r in attn_runs), max(r for _, r in llama_runs)
    llama_live = llama_runs[0][0]["live_tokens"]
    same = next((i for i, (a, b) in enumerate(zip(attn_live, llama_live)) if a != b), min(len(attn_live), len(llama_live)))
    date = datetime.date.today().isoformat()
    cmd = "bash bench/run_model.sh " + shlex.join(sys.argv[1:])
    lines = [
        f"Model `{os.path.basename(args.model)}`, {args.threads} threads, {machine()}, {date}; "
        f"llama-cpp-python {llama_runs[0][0]['version']}. Command: `{cmd}`. Medians of "
        f"{args.rounds} x {args.repeats} runs; peak memory = max RSS of the engine's process. KV cache: "
        + (f"q8_0 in both (llama.cpp: type_k = type_v = q8_0, flash_attn on). " if args.kv_type == "q8_0" else
           f"{args.kv_type} in attn, f16 in llama.cpp (its default). ") + "attn's SIMD target: "
        f"{attn_runs[0][0]['simd_target']}.",
        "",
        "| measure | attn | llama.cpp | attn / llama.cpp |",
        "|---|---:|---:|---:|",
        f"| prompt processing, pp{args.prompt_tokens} (tokens/s) | {a_pp:.1f} | {l_pp:.1f} | {a_pp / l_pp:.2f}x |",
        f"| generation, tg{args.gen_tokens} (tokens/s) | {a_tg:.1f} | {l_tg:.1f} | {a_tg / l_tg:.2f}x |",
        f"| peak memory (MB) | {a_mem:.0f} | {l_mem:.0f} | {a_mem / l_mem:.2f}x |",
    ]
    if args.live_tokens:
        lines += ["", f"Live greedy check on \"{LIVE_PROMPT}\": the first {same} of {args.live_tokens} generated "
                      f"tokens are identical. {teacher_forced(args, live_ids, llama_live, llama_runs[0][0]['live_gaps'])}"]
    text = "\n".join(lines)
    print(text)
    if args.write_md:
        path = write_section(BEGIN, END, f"{BEGIN}\n{text}\n{END}", heading="## Model: attn vs llama.cpp")
        print(f"wrote {path}", file=sys.stderr)


def write_section(begin: str, end: str, block: str, heading: str | None = None) -> str:
    """Puts `block` (which starts with `begin` and ends with `end`) into BENCHMARKS.md in place of
    the section between those markers, or at the end of the file (after `heading`) when there is
    none yet; returns the file's path."""
    path = os.path.join(ROOT, "BENCHMARKS.md")
    with open(path) as f:
        md = f.read()
    if begin in md and end in md:
        md = md[:md.index(begin)] + block + md[md.index(end) + len(end):]
    else:
        md = md.rstrip("\n") + "\n\n" + (heading + "\n\n" if heading else "") + block + "\n"
    with open(path, "w") as f:
        f.write(md)
    return path


if __name__ == "__main__":
    main()
