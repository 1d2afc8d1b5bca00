#!/usr/bin/env python3
"""Training throughput on the CPU (issue 5): attn.Trainer vs its PyTorch twin (bench/train_torch.py).

One run, the same model, batch, token batches and thread count for both (attn threads=T,
torch.set_num_threads(T), OMP_NUM_THREADS / MKL_NUM_THREADS set before torch starts). A step is the
whole training step: forward + backward + global-norm clipping + AdamW update (with the schedule's lr):
  attn   t.forward_backward(tokens int32 [B, T+1]); t.update()
  torch  train_torch.train_step(params, opt, cfg, tokens int64 [B, T+1], s)   (eager; F.scaled_dot_product_
         attention for the attention, torch.optim.AdamW(foreach=False) as the twin specifies; with
         --torch-opt fused the fused CPU AdamW kernel is timed too and the faster torch is reported)
Tokens per step = B x T (the predicted positions); tokens/s = B x T / median step time.

Correctness, per row, before timing: a fresh attn.Trainer (seed 0); its initial parameters are copied into
torch (get_param), then both take two steps on the same batches. Reported: |loss_attn - loss_torch| of step 1
(same parameters: forward agreement), |grad norm| difference of step 1 (backward), loss difference of step 2
(after one clipped AdamW step: optimizer agreement) and the largest parameter difference after step 2.
Timing then continues from that state: median of many steps, measured in interleaved blocks (A, B, A, B, ...)
so that load from elsewhere on the machine hits both alike (bench_sdpa.time_interleaved).

Tokens: random bytes (default; the step's cost does not depend on them), or windows of a text file
(--text FILE). A fixed pool of batches is drawn once and both sides cycle through it in the same order.

    bench/.venv/bin/python bench/bench_train.py                         # 4 models, threads 2 then 1
    bench/.venv/bin/python bench/bench_train.py --threads 2 --write-md  # also replace the section in BENCHMARKS.md
    bench/.venv/bin/python bench/bench_train.py --filter 'd256' --text ~/.cache/attn/corpus/kjv.txt
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench_sdpa import fmt, lscpu_facts, md_table, text_table, time_interleaved, versions, write_md  # noqa: E402

MD_BEGIN = "<!-- bench_train:begin -->"
MD_END = "<!-- bench_train:end -->"
LOSS_TOL = 1e-4  # |loss_attn - loss_torch| at step 1 from the same parameters (float32, loss ~5.5): ~1e-6 seen


def log(*a):
    print(*a, file=sys.stderr, flush=True)


@dataclass
class Case:
    n_layers: int
    d_model: int
    n_heads: int
    d_ff: int
    context: int
    batch: int
    vocab: int = 256

    @property
    def name(self) -> str:
        kind = f"MLP d_ff {self.d_ff}" if self.d_ff else "attn-only"
        return f"L{self.n_layers} d{self.d_model} H{self.n_heads} {kind}, T{self.context} B{self.batch}"

    @property
    def tokens(self) -> int:
        return self.batch * self.context

    def n_params(self) -> int:
        d, f, L = self.d_model, self.d_ff, self.n_layers
        per = 2 * d + 3 * d * d + 3 * d + d * d + d
        if f:
            per += 2 * d + f * d + f + d * f + d
        return self.vocab * d + self.context * d + L * per + 2 * d + self.vocab * d


GRID = [
    Case(2, 128, 4, 0, 256, 16),     # the demo-sized model
    Case(2, 64, 4, 0, 128, 32),
    Case(2, 128, 4, 512, 256, 16),
    Case(4, 256, 8, 1024, 256, 8),
]


@dataclass
class Row:
    case: Case
    threads: int
    ms: dict = field(default_factory=dict)
    reps: dict = field(default_factory=dict)
    torch_opt: str = ""
    check: dict = field(default_factory=dict)
    ok: bool = True
    wall_s: float = 0.0


def make_batches(case: Case, args, np):
    """n_batches token batches [B, T+1]: attn's int32 arrays and torch's int64 tensors, same values."""
    rng = np.random.default_rng(args.seed)
    W = case.context + 1
    if args.text:
        data = np.frombuffer(Path(args.text).read_bytes(), dtype=np.uint8)
        if len(data) <= W:
            raise SystemExit(f"--text {args.text}: {len(data)} bytes, fewer than context + 1 = {W}")
        out = []
        for _ in range(args.n_batches):
            starts = rng.integers(0, len(data) - W, size=case.batch)
            out.append(np.stack([data[s:s + W] for s in starts]).astype(np.int32))
        return out
    return [rng.integers(0, case.vocab, size=(case.batch, W), dtype=np.int32) for _ in range(args.n_batches)]


def run_case(case: Case, T: int, args, attn, torch, tt, np) -> Row:
    row = Row(case, T)
    torch.set_num_threads(T)
    tr = attn.Trainer(vocab_size=case.vocab, context=case.context, n_layers=case.n_layers, d_model=case.d_model,
                      n_heads=case.n_heads, d_ff=case.d_ff, batch=case.batch, steps=args.steps, lr=args.lr,
                      seed=args.seed, threads=T)
    cfg = tt.TrainConfig(vocab_size=case.vocab, context=case.context, n_layers=case.n_layers,
                         d_model=case.d_model, n_heads=case.n_heads, d_ff=case.d_ff, batch=case.batch,
                         steps=args.steps, lr=args.lr, seed=args.seed)
    names = tr.param_names()
    want = [n for n, _ in tt.param_shapes(cfg)]
    if names != want:
        raise SystemExit(f"parameter names differ: attn {names[:4]}... torch {want[:4]}...")
    xs = make_batches(case, args, np)
    xts = [torch.from_numpy(x.astype(np.int64)) for x in xs]

    # torch optimizers to time: the twin's (foreach=False); with --torch-opt fused also AdamW(fused=True) on a
    # second copy of the same parameters (same math, one kernel per tensor)
    variants = {"twin": None} if args.torch_opt == "twin" else {"twin": None, "fused": None}
    for v in variants:
        params = {n: torch.from_numpy(tr.get_param(n).copy()).requires_grad_(True) for n in names}
        opt = tt.make_optimizer(params, cfg)
        if v == "fused":
            opt = torch.optim.AdamW([{"params": g["params"], "weight_decay": g["weight_decay"]}
                                     for g in opt.param_groups],
                                    lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps, fused=True)
        variants[v] = [params, opt, 0]  # params, optimizer, next step

    # correctness: two steps from the same parameters on the same batches
    la1 = tr.forward_backward(xs[0])
    ga1 = tr.update()
    la2 = tr.forward_backward(xs[1])
    ga2 = tr.update()
    for v, st in variants.items():
        params, opt, _ = st
        lt1, gt1, _ = tt.train_step(params, opt, cfg, xts[0], 0)
        lt2, gt2, _ = tt.train_step(params, opt, cfg, xts[1], 1)
        st[2] = 2
        dp = max(float(np.abs(tr.get_param(n) - params[n].detach().numpy()).max()) for n in names)
        c = {"loss1_attn": la1, "loss1_torch": lt1, "dloss1": abs(la1 - lt1), "gnorm1_attn": ga1,
             "gnorm1_torch": gt1, "dgnorm1_rel": abs(ga1 - gt1) / max(abs(gt1), 1e-30), "dloss2": abs(la2 - lt2),
             "dgnorm2_rel": abs(ga2 - gt2) / max(abs(gt2), 1e-30), "dparam2": dp}
        if v == "twin":
            row.check = c
        else:
            row.check["fused_dloss2"] = c["dloss2"]
            row.check["fused_dparam2"] = c["dparam2"]
    row.ok = bool(row.check["dloss1"] <= LOSS_TOL and row.check["dloss2"] <= LOSS_TOL
                  and row.check.get("fused_dloss2", 0.0) <= LOSS_TOL)
    n_b = len(xs)
    a_step = [2]

    def attn_step():
        i = a_step[0]
        tr.forward_backward(xs[i % n_b])
        tr.update()
        a_step[0] = i + 1

    def torch_step(st):
        def f():
            params, opt, s = st
            tt.train_step(params, opt, cfg, xts[s % n_b], s)
            st[2] = s + 1
        return f

    fns = {"attn": attn_step}
    for v, st in variants.items():
        fns["torch " + v] = torch_step(st)
    res = time_interleaved(fns, args.target_s, args.min_reps, args.max_reps, args.blocks)
    for n, (sec, cnt) in res.items():
        row.ms[n] = sec * 1e3
        row.reps[n] = cnt
    tms = {v: row.ms["torch " + v] for v in variants}
    row.torch_opt = min(tms, key=tms.get)
    row.ms["torch"] = tms[row.torch_opt]
    del tr, variants, fns
    gc.collect()
    return row


def table(rows: list[Row], show_opt: bool) -> tuple[list[str], list[list[str]]]:
    h = ["model", "params", "tokens/step", "threads", "attn ms/step", "torch ms/step", "attn tokens/s",
         "torch tokens/s", "attn / torch", "step-1 loss diff vs torch"]
    if show_opt:
        h.insert(6, "torch twin / fused ms")
    out = []
    for r in rows:
        c, ms = r.case, r.ms
        tok = {n: c.tokens / (ms[n] * 1e-3) for n in ("attn", "torch") if n in ms}
        tms = f"{ms['torch']:.1f}" + (f" ({r.torch_opt})" if show_opt else "")
        line = [c.name, f"{c.n_params() / 1e6:.2f} M", str(c.tokens), str(r.threads), f"{ms['attn']:.1f}", tms,
                f"{tok['attn']:.0f}", f"{tok['torch']:.0f}", f"{ms['torch'] / ms['attn']:.2f}x",
                f"{r.check['dloss1']:.1e}" + ("" if r.ok else " MISMATCH")]
        if show_opt:
            line.insert(6, f"{fmt(ms.get('torch twin'))} / {fmt(ms.get('torch fused'))}")
        out.append(line)
    return h, out


def render_md(args, facts, vers, rows, started, load_end, total_s) -> str:
    h, body = table(rows, args.torch_opt != "twin")
    cmd = "bench/.venv/bin/python bench/bench_train.py " + shlex.join(sys.argv[1:])
    ratios = [r.ms["torch"] / r.ms["attn"] for r in rows]
    worst = min(rows, key=lambda r: r.ms["torch"] / r.ms["attn"])
    d1 = max(r.check["dloss1"] for r in rows)
    dg = max(r.check["dgnorm1_rel"] for r in rows)
    d2 = max(r.check["dloss2"] for r in rows)
    dp = max(r.check["dparam2"] for r in rows)
    tok = f"windows of `{args.text}`" if args.text else "random bytes"
    torch_opt = ("`torch.optim.AdamW(foreach=False)` (the twin's)" if args.torch_opt == "twin" else
                 "the faster of `torch.optim.AdamW(foreach=False)` (the twin's) and `AdamW(fused=True)` "
                 "(column says which)")
    lines = [
        MD_BEGIN,
        "## Training throughput (issue 5): attn.Trainer vs PyTorch, same model, batch and threads",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC",
        f"- Machine: {facts['model']}, {facts['cpus']} cores, L3 {facts['l3'] or '?'}, "
        f"AVX-512 {'yes' if facts['avx512f'] else 'no'}; 1-min load average {facts['loadavg_start']:.2f} at the "
        f"start, {load_end:.2f} at the end",
        f"- Command: `{cmd}` ({total_s:.0f} s)",
        f"- Versions: attn (git {vers['attn_git']}, SIMD target {vers['attn_simd']}), torch {vers['torch']} (eager, "
        f"CPU), numpy {vers['numpy']}, Python {vers['python']}",
        "- Threads: the same for both in each row (attn `threads=T`, `torch.set_num_threads(T)`, "
        "OMP_NUM_THREADS / MKL_NUM_THREADS set before torch starts).",
        f"- Step: forward + backward + global-norm clip (1.0) + AdamW (lr schedule, weight decay 0.1 on matrices) on "
        f"a [B, T+1] batch of {tok}, the same {args.n_batches} batches cycled in the same order by both; vocab 256. "
        f"torch: `bench/train_torch.py` (`train_step`, `F.scaled_dot_product_attention`), optimizer {torch_opt}. "
        f"Tokens/s = B x T / median step. Median of >= {args.min_reps} steps (about {args.target_s:g} s per impl "
        f"and row) in {args.blocks} interleaved blocks (attn, torch, attn, torch, ...).",
        f"- Check: both start from attn's initial parameters (copied into torch with `get_param`) and take two steps "
        f"on the same batches. Largest differences over all rows: step-1 loss {d1:.1e} (loss ~5.5), step-1 grad "
        f"norm {dg:.1e} relative, step-2 loss {d2:.1e}, parameters after step 2 {dp:.1e}.",
    ]
    lines += load_notes(facts, load_end, rows)
    lines += [
        "",
        md_table(h, body),
        "",
        f"attn / torch = torch ms / attn ms (above 1 = attn faster): {min(ratios):.2f}x to {max(ratios):.2f}x; "
        f"the issue's target is at least 1.0x; lowest: {worst.case.name} at {worst.threads} thread(s).",
        MD_END,
    ]
    return "\n".join(lines) + "\n"


def load_notes(facts, load_end, rows: list[Row]) -> list[str]:
    """A caveat line when the machine was busy: other processes then shared the cores, and a row at T threads
    ran oversubscribed. Names the rows where a side's T > 1 step was slower than its own 1-thread step."""
    load = max(facts["loadavg_start"], load_end)
    if load <= 0.5:
        return []
    one = {(r.case.name, n): r.ms[n] for r in rows if r.threads == 1 for n in ("attn", "torch")}
    slower = []
    for r in rows:
        for n in ("attn", "torch"):
            base = one.get((r.case.name, n))
            if r.threads > 1 and base is not None and r.ms[n] > base:
                slower.append(f"{n} {r.case.name} ({r.ms[n]:.0f} ms at {r.threads} threads vs {base:.0f} at 1)")
    text = (f"- Caveat: the machine was busy (1-min load average {facts['loadavg_start']:.2f} at the start, "
            f"{load_end:.2f} at the end, on {facts['cpus']} cores): other processes shared the cores, so rows "
            f"with more than one thread ran oversubscribed. Interleaving spreads the load over both sides in "
            f"time, but each side's threading suffers from it differently; rerun on a quiet machine before "
            f"reading those ratios as final.")
    if slower:
        text += " Slower at more threads than at 1 in this run: " + "; ".join(slower) + "."
    return [text]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="thread counts, in this order")
    p.add_argument("--filter", action="append", default=[], help="regex on the model name; repeatable")
    p.add_argument("--text", default=None, help="token batches from windows of this file's bytes "
                                                "(default: random bytes)")
    p.add_argument("--n-batches", type=int, default=8, help="size of the pool of token batches")
    p.add_argument("--torch-opt", choices=("twin", "fused"), default="twin",
                   help="twin: time the twin's AdamW(foreach=False); fused: also AdamW(fused=True), report faster")
    p.add_argument("--target-s", type=float, default=5.0, help="timed seconds per impl and row (about)")
    p.add_argument("--min-reps", type=int, default=5)
    p.add_argument("--max-reps", type=int, default=200)
    p.add_argument("--blocks", type=int, default=5, help="interleaved blocks per row")
    p.add_argument("--steps", type=int, default=1000, help="schedule length (lr), as attn train's default")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--module-dir", default=str(ROOT / "build" / "python"), help="where the attn package is")
    p.add_argument("--json", default=None, help="also write all results to this file")
    p.add_argument("--write-md", action="store_true", help="replace the bench_train section of BENCHMARKS.md")
    p.add_argument("--md-path", default=str(ROOT / "BENCHMARKS.md"))
    return p.parse_args(argv)


def main():
    args = parse_args()
    cases = GRID
    if args.filter:
        pats = [re.compile(f) for f in args.filter]
        cases = [c for c in cases if any(p.search(c.name) for p in pats)]
    started = _dt.datetime.now(_dt.timezone.utc)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before torch's OpenMP starts; set_num_threads per row
        os.environ[var] = str(max(args.threads))

    import numpy as np
    import torch

    import train_torch as tt

    sys.path.insert(0, args.module_dir)
    try:
        import attn
    except ImportError as e:
        log(f"cannot import attn from {args.module_dir} ({e}); build the Python module first")
        return 2
    facts = lscpu_facts()
    facts["loadavg_start"] = os.getloadavg()[0]
    vers = versions({"torch": torch, "numpy": np, "attn": attn})
    log(f"machine: {facts['model']}, {facts['cpus']} cores; threads {args.threads}; load average "
        f"{facts['loadavg_start']:.2f}; attn {vers['attn_simd']} from {attn.__file__}; torch {torch.__version__}")
    if facts["loadavg_start"] > 0.5:
        log("warning: the machine is busy (load average above 0.5): timings will be noisy; the ratio is "
            "measured interleaved and holds up better than the absolute figures")

    rows = []
    t_all = time.perf_counter()
    jobs = [(c, T) for T in args.threads for c in cases]
    for i, (c, T) in enumerate(jobs, 1):
        t0 = time.perf_counter()
        r = run_case(c, T, args, attn, torch, tt, np)
        r.wall_s = time.perf_counter() - t0
        rows.append(r)
        k = r.check
        msg = "  ".join(f"{n} {r.ms[n]:.1f} ms" for n in r.ms if n != "torch")
        log(f"[{i}/{len(jobs)}] {c.name}, {T} thread(s): {msg}  -> {r.ms['torch'] / r.ms['attn']:.2f}x  "
            f"[loss1 {k['loss1_attn']:.6f} vs {k['loss1_torch']:.6f} (|d| {k['dloss1']:.1e}), gnorm1 rel "
            f"{k['dgnorm1_rel']:.1e}, |d loss2| {k['dloss2']:.1e}, |d param| {k['dparam2']:.1e}] "
            f"({r.wall_s:.1f} s, load {os.getloadavg()[0]:.2f})" + ("" if r.ok else "  <-- MISMATCH"))
    total = time.perf_counter() - t_all
    load_end = os.getloadavg()[0]

    h, body = table(rows, args.torch_opt != "twin")
    print(f"\nTraining step (forward + backward + clip + AdamW), float32, {started:%Y-%m-%d}, {facts['model']}, "
          f"attn {vers['attn_simd']}, torch {torch.__version__}, tokens: "
          f"{'windows of ' + args.text if args.text else 'random bytes'}, load average {facts['loadavg_start']:.2f} "
          f"at the start, {load_end:.2f} at the end\n")
    print(text_table(h, body))
    print("\nMarkdown:\n" + md_table(h, body))
    bad = [f"{r.case.name} x{r.threads}" for r in rows if not r.ok]
    print(f"\n{len(rows)} rows in {total:.0f} s; correctness: "
          + (f"{len(bad)} MISMATCH: " + ", ".join(bad) if bad else
             f"step-1 and step-2 losses match torch within {LOSS_TOL:g} on every row"))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "date": started.isoformat(), "machine": facts, "load_end": load_end, "versions": vers,
            "argv": sys.argv[1:], "text": args.text,
            "rows": [{"name": r.case.name, **r.case.__dict__, "threads": r.threads, "tokens": r.case.tokens,
                      "params": r.case.n_params(), "ms": r.ms, "reps": r.reps, "torch_opt": r.torch_opt,
                      "tokens_per_s": {n: r.case.tokens / (r.ms[n] * 1e-3) for n in r.ms},
                      "check": r.check, "ok": r.ok} for r in rows]}, indent=1))
    if args.write_md:
        write_md(Path(args.md_path), render_md(args, facts, vers, rows, started, load_end, total), MD_BEGIN, MD_END)
        log(f"wrote the bench_train section of {args.md_path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
