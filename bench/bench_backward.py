#!/usr/bin/env python3
"""Side-by-side CPU benchmark of the attention backward pass: attn.sdpa_backward vs PyTorch SDPA's backward.

Same conventions as bench_sdpa.py (its timing and table helpers are reused): one run, the same NumPy inputs
for both (torch.from_numpy views), the same thread count (attn threads=T, torch.set_num_threads(T)), a
correctness check of every row before timing, medians of many calls measured in interleaved blocks so that
load from elsewhere on the machine hits both alike.

What is timed is the backward alone, given the forward's saved state:
  attn   attn.sdpa_backward(q, k, v, out, lse, dout, ...)       out, lse from attn.sdpa(return_lse=True)
  torch  torch.autograd.grad(out, (q, k, v), dout, retain_graph=True) after one forward with requires_grad;
         for each row both of torch's CPU backends that run it are tried (flash: the fused CPU flash-attention
         kernel, math: the unfused composite) and the faster is reported.
FLOPs: backward = 2.5 x forward = 2.5 x 4 B H P D, P the (query, key) pairs that take part (about half under
causal), as MACHINE.md counts them.

    bench/.venv/bin/python bench/bench_backward.py                   # B1 H8 S{512,1024,2048} D64, causal and not
    bench/.venv/bin/python bench/bench_backward.py --extra           # also GQA 8/2 and D128 rows
    bench/.venv/bin/python bench/bench_backward.py --module-dir build-bwd/python --filter S2048
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench_sdpa import fmt, lscpu_facts, md_table, text_table, time_interleaved  # noqa: E402

F32_TOL = 1e-4  # max abs diff attn vs torch per gradient (f32 inputs N(0,1)): both are ~1e-6 from exact


def log(*a):
    print(*a, file=sys.stderr, flush=True)


@dataclass
class Case:
    B: int
    Hq: int
    Hkv: int
    S: int
    D: int
    causal: bool

    @property
    def name(self) -> str:
        h = f"H{self.Hq}" if self.Hq == self.Hkv else f"H{self.Hq}/{self.Hkv}"
        return f"B{self.B} {h} S{self.S} D{self.D} {'causal' if self.causal else 'full'}"

    def flops(self) -> float:
        pairs = self.S * (self.S + 1) // 2 if self.causal else self.S * self.S
        return 2.5 * 4.0 * self.B * self.Hq * pairs * self.D


def build_grid(extra: bool) -> list[Case]:
    cases = [Case(1, 8, 8, S, 64, c) for S in (512, 1024, 2048) for c in (False, True)]
    if extra:
        cases += [Case(1, 8, 2, 2048, 64, c) for c in (False, True)]
        cases += [Case(1, 8, 8, 1024, 128, c) for c in (False, True)]
    return cases


@dataclass
class Row:
    case: Case
    ms: dict = field(default_factory=dict)
    reps: dict = field(default_factory=dict)
    torch_backend: str = ""
    diff: float = float("nan")
    ok: bool = True
    errors: dict = field(default_factory=dict)


def run_case(case: Case, args, attn, torch) -> Row:
    import numpy as np
    from torch.nn.attention import SDPBackend, sdpa_kernel

    T = args.threads
    row = Row(case)
    rng = np.random.default_rng(args.seed)
    q = rng.standard_normal((case.B, case.Hq, case.S, case.D), dtype=np.float32)
    k = rng.standard_normal((case.B, case.Hkv, case.S, case.D), dtype=np.float32)
    v = rng.standard_normal((case.B, case.Hkv, case.S, case.D), dtype=np.float32)
    dout = rng.standard_normal((case.B, case.Hq, case.S, case.D), dtype=np.float32)

    out, lse = attn.sdpa(q, k, v, causal=case.causal, return_lse=True, threads=T)
    impls = {"attn": lambda: attn.sdpa_backward(q, k, v, out, lse, dout, causal=case.causal, threads=T)}
    grads = {"attn": impls["attn"]()}

    # torch: each backend's forward once (outside the timing), its backward timed with retain_graph
    tq, tk, tv = (torch.from_numpy(x).requires_grad_() for x in (q, k, v))
    tdout = torch.from_numpy(dout)
    kw = {"is_causal": case.causal, "enable_gqa": case.Hq != case.Hkv}
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("math", SDPBackend.MATH)):
        try:
            with sdpa_kernel([backend]):
                tout = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, **kw)

            def bwd(tout=tout):
                return torch.autograd.grad(tout, (tq, tk, tv), tdout, retain_graph=True)

            grads[name] = [g.numpy() for g in bwd()]
            impls[name] = bwd
        except Exception as e:  # noqa: BLE001 - this backend cannot run this row
            row.errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}"

    ref = grads.get("flash") or grads.get("math")
    if ref is not None:
        row.diff = max(float(np.abs(a - b).max()) for a, b in zip(grads["attn"], ref))
        row.ok = bool(np.isfinite(row.diff) and row.diff <= F32_TOL)
    grads.clear()

    res = time_interleaved(impls, args.target_s, args.min_reps, args.max_reps, args.blocks)
    for n, (sec, cnt) in res.items():
        row.ms[n] = sec * 1e3
        row.reps[n] = cnt
    torch_ms = {n: row.ms[n] for n in ("flash", "math") if n in row.ms}
    if torch_ms:
        row.torch_backend = min(torch_ms, key=torch_ms.get)
        row.ms["torch"] = torch_ms[row.torch_backend]
    return row


def table(rows: list[Row], peak: float | None) -> tuple[list[str], list[list[str]]]:
    h = ["shape", "causal", "attn ms", "torch ms (backend)", "torch flash ms", "torch math ms", "attn GFLOP/s",
         "torch GFLOP/s", "attn / torch GFLOP/s", "attn % fp32 peak", "max abs diff vs torch"]
    out = []
    for r in rows:
        c, ms = r.case, r.ms
        g = {n: c.flops() / (ms[n] * 1e-3) / 1e9 if n in ms else None for n in ("attn", "torch")}
        ratio = f"{ms['torch'] / ms['attn']:.2f}x" if "torch" in ms and "attn" in ms else "n/a"
        pct = 100 * g["attn"] / peak if g["attn"] and peak else None
        shape = c.name.rsplit(" ", 1)[0]
        out.append([shape, "yes" if c.causal else "no", fmt(ms.get("attn"), ".2f"),
                    f"{fmt(ms.get('torch'), '.2f')} ({r.torch_backend or 'n/a'})", fmt(ms.get("flash"), ".2f"),
                    fmt(ms.get("math"), ".2f"), fmt(g["attn"]), fmt(g["torch"]), ratio, fmt(pct, ".0f"),
                    fmt(r.diff, ".1e") + ("" if r.ok else " MISMATCH")])
    return h, out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--extra", action="store_true", help="also GQA 8/2 S2048 and D128 S1024 rows")
    p.add_argument("--filter", action="append", default=[], help="regex on the row name; repeatable")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--target-s", type=float, default=1.5, help="timed seconds per impl and row (about)")
    p.add_argument("--min-reps", type=int, default=5)
    p.add_argument("--max-reps", type=int, default=500)
    p.add_argument("--blocks", type=int, default=5, help="interleaved blocks per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--peak-gflops", type=float, default=None,
                   help="fp32 FMA peak at --threads (bench/run.sh's machine_peak), for the %% column")
    p.add_argument("--module-dir", default=str(ROOT / "build" / "python"), help="where the attn package is")
    p.add_argument("--json", default=None, help="also write all results to this file")
    return p.parse_args(argv)


def main():
    args = parse_args()
    cases = build_grid(args.extra)
    if args.filter:
        pats = [re.compile(f) for f in args.filter]
        cases = [c for c in cases if any(p.search(c.name) for p in pats)]
    started = _dt.datetime.now(_dt.timezone.utc)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch's OpenMP starts

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, args.module_dir)
    try:
        import attn
    except ImportError as e:
        log(f"cannot import attn from {args.module_dir} ({e}); build the Python module first")
        return 2
    facts = lscpu_facts()
    load = os.getloadavg()[0]
    log(f"machine: {facts['model']}, {facts['cpus']} cores; threads={args.threads}; load average {load:.2f}; "
        f"attn {attn.current_simd_target()} from {attn.__file__}; torch {torch.__version__}, numpy {np.__version__}")
    if load > 0.5:
        log("warning: the machine is busy (load average above 0.5): timings will be noisy; the ratio is "
            "measured interleaved and holds up better than the absolute figures")

    rows = []
    t_all = time.perf_counter()
    for i, c in enumerate(cases, 1):
        t0 = time.perf_counter()
        r = run_case(c, args, attn, torch)
        rows.append(r)
        msg = "  ".join(f"{n} {r.ms[n]:.2f} ms" for n in ("attn", "flash", "math") if n in r.ms)
        log(f"[{i}/{len(cases)}] {c.name}: {msg}  max|attn-torch| {r.diff:.1e} ({time.perf_counter() - t0:.1f} s)"
            + ("" if r.ok else "  <-- MISMATCH"))
        for n, e in r.errors.items():
            log(f"    torch {n}: {e}")
    h, body = table(rows, args.peak_gflops)
    print(f"\nAttention backward, float32, {args.threads} threads, {started:%Y-%m-%d}, {facts['model']}, "
          f"attn {attn.current_simd_target()}, torch {torch.__version__}, load average at start {load:.2f}\n")
    print(text_table(h, body))
    print("\nMarkdown:\n" + md_table(h, body))
    bad = [r.case.name for r in rows if not r.ok]
    print(f"\n{len(rows)} rows in {time.perf_counter() - t_all:.0f} s; correctness: "
          + (f"{len(bad)} MISMATCH: " + ", ".join(bad) if bad else "all attn gradients match torch"))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "date": started.isoformat(), "machine": facts, "threads": args.threads, "load_start": load,
            "torch": torch.__version__, "attn_simd": attn.current_simd_target(), "argv": sys.argv[1:],
            "rows": [{"name": r.case.name, **r.case.__dict__, "flops": r.case.flops(), "ms": r.ms, "reps": r.reps,
                      "torch_backend": r.torch_backend, "diff": r.diff, "ok": r.ok, "errors": r.errors}
                     for r in rows]}, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
