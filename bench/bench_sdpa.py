#!/usr/bin/env python3
"""Side-by-side CPU benchmark of attention forward: attn.sdpa vs PyTorch SDPA vs onnxruntime.

One run, the same NumPy inputs for all three (torch.from_numpy views, no copies timed), the same thread count
(attn threads=T, torch.set_num_threads(T), onnxruntime intra_op_num_threads=T). Every row checks attn against
torch before timing. Median of many calls, measured in interleaved blocks so that load from elsewhere on the
machine hits all three alike. Peaks (fp32 FMA, bf16 dot, memory read bandwidth) are measured in the same run.

Run through bench/run.sh, which makes the venv with the peers and compiles the peak tools:
    bash bench/run.sh --quick                    # a subset, a few minutes
    bash bench/run.sh                            # the full grid
    bash bench/run.sh --filter 'S2048.*bf16'     # rows whose name matches a regex
    bash bench/run.sh --write-md                 # also replace the section in BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULE_DIR = ROOT / "build" / "python"
MD_BEGIN = "<!-- bench_sdpa:begin -->"
MD_END = "<!-- bench_sdpa:end -->"
F32_TOL = 1e-4  # max abs diff attn vs torch, f32, inputs N(0,1): both are ~1e-6 from exact
BF16_ATOL = 1e-3  # bf16 rule: |attn - ref| <= 2 * |torch_bf16 - ref| + BF16_ATOL (FlashAttention's rule)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------
# The grid
@dataclass
class Case:
    kind: str  # "prefill" | "decode" | "mem"
    B: int
    Hq: int
    Hkv: int
    Sq: int
    Sk: int
    D: int
    dtype: str  # "f32" | "bf16"
    causal: bool

    @property
    def shape(self) -> str:
        h = f"H{self.Hq}" if self.Hq == self.Hkv else f"H{self.Hq}/{self.Hkv}"
        s = f"S{self.Sq}" if self.Sq == self.Sk else f"Sq{self.Sq} Sk{self.Sk}"
        return f"B{self.B} {h} {s} D{self.D}"

    @property
    def name(self) -> str:
        prefix = "mem " if self.kind == "mem" else ("decode " if self.kind == "decode" else "")
        return f"{prefix}{self.shape} {self.dtype} {'causal' if self.causal else 'full'}"

    def unmasked_pairs(self) -> int:
        """(query, key) pairs that take part, per (batch, head); causal is aligned bottom-right."""
        if not self.causal:
            return self.Sq * self.Sk
        off = self.Sk - self.Sq  # query i sees keys j <= i + off
        return sum(min(self.Sk, max(0, i + off + 1)) for i in range(self.Sq))

    def flops(self) -> float:
        return 4.0 * self.B * self.Hq * self.unmasked_pairs() * self.D

    def kv_bytes(self) -> int:
        el = 4 if self.dtype == "f32" else 2
        return 2 * self.B * self.Hkv * self.Sk * self.D * el


def build_grid(quick: bool, mem_s: int | None) -> list[Case]:
    cases: list[Case] = []
    dtypes = ("f32", "bf16")
    if quick:
        for dt in dtypes:
            for S in (512, 2048):
                for c in (False, True):
                    cases.append(Case("prefill", 1, 8, 8, S, S, 64, dt, c))
        for c in (False, True):
            cases.append(Case("prefill", 1, 8, 8, 1024, 1024, 128, "f32", c))
        cases.append(Case("prefill", 1, 9, 3, 2048, 2048, 64, "f32", True))
        for dt in dtypes:
            cases.append(Case("decode", 1, 9, 3, 1, 8192, 64, dt, False))
        ms = mem_s or 8192
    else:
        for dt in dtypes:
            for S in (512, 1024, 2048, 4096):
                for H in (8, 16):
                    for D in (64, 128):
                        for c in (False, True):
                            cases.append(Case("prefill", 1, H, H, S, S, D, dt, c))
        for dt in dtypes:
            for c in (False, True):
                cases.append(Case("prefill", 1, 9, 3, 2048, 2048, 64, dt, c))
        for dt in dtypes:
            for Sk in (8192, 32768):
                cases.append(Case("decode", 1, 9, 3, 1, Sk, 64, dt, False))
        ms = mem_s or 32768
    for c in (False, True):
        cases.append(Case("mem", 1, 8, 8, ms, ms, 64, "f32", c))
    return cases


# ----------------------------------------------------------------------------------------------------------
# Machine facts and peaks
def lscpu_facts() -> dict:
    facts = {"model": "unknown", "cpus": os.cpu_count(), "avx512f": False, "avx512_bf16": False, "l3": ""}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            k, v = k.strip(), v.strip()
            if k == "Model name":
                facts["model"] = v
            elif k == "CPU(s)":
                facts["cpus"] = int(v)
            elif k == "L3 cache":
                facts["l3"] = v
            elif k == "Flags":
                flags = v.split()
                facts["avx512f"] = "avx512f" in flags
                facts["avx512_bf16"] = "avx512_bf16" in flags
    except (OSError, subprocess.CalledProcessError):
        pass
    return facts


def l3_bytes(facts: dict) -> int:
    m = re.match(r"([\d.]+)\s*([KMG])i?B", facts.get("l3", ""))
    if not m:
        return 32 << 20
    return int(float(m.group(1)) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)])


def run_peak_tool(path: str, threads: int, *extra: str) -> tuple[int, str]:
    try:
        p = subprocess.run([path, str(threads), *extra], capture_output=True, text=True, timeout=300)
        return p.returncode, p.stdout + p.stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        return -999, str(e)


def measure_peaks(args) -> dict:
    """fp32 FMA and bf16 dot GFLOP/s and read bandwidth GB/s at args.threads, from machine_peak."""
    peaks = {"fp32": None, "bf16": None, "read2": None, "read2v": None, "triad": None, "tool": None, "notes": []}
    T = args.threads

    def parse(text: str):
        def grab(pat):
            return [float(x) for x in re.findall(pat, text, flags=re.M)]

        fp = grab(r"^fp32 .*threads=\d+: ([\d.]+) GFLOP/s")
        bf = grab(r"^bf16 .*threads=\d+: ([\d.]+) GFLOP/s")
        for key, vals in (("fp32", fp), ("bf16", bf)):
            if vals:
                peaks[key] = max(vals)
        for key in ("read2", "read2v", "triad"):
            vals = grab(rf"^{key} threads=\d+: ([\d.]+) GB/s")
            if vals:
                peaks[key] = max(vals)  # the best of the tool's repetitions

    if args.peak_bin:
        rc, text = run_peak_tool(args.peak_bin, T)
        if rc == 0:
            parse(text)
            peaks["tool"] = "shared/tools/machine_peak.cpp"
        else:
            why = "SIGILL: this CPU lacks AVX-512" if rc in (-4, 132) else f"exit {rc}"
            peaks["notes"].append(f"shared machine_peak failed ({why}); used bench/machine_peak_avx2.cpp")
    if peaks["tool"] is None and args.peak_fallback_bin:
        rc, text = run_peak_tool(args.peak_fallback_bin, T)
        if rc == 0:
            parse(text)
            peaks["tool"] = "bench/machine_peak_avx2.cpp (AVX2 FMA)"
    elif args.peak_fallback_bin:
        rc, text = run_peak_tool(args.peak_fallback_bin, T, "bw")
        if rc == 0:
            parse(text)
    if peaks["tool"] is None:
        peaks["notes"].append("no peak tool ran: pass --peak-bin (bench/run.sh does)")
    if peaks["fp32"] and not peaks["bf16"]:
        peaks["notes"].append("no bf16 dot instruction: bf16 rows are compared with the fp32 FMA peak")
    set_bandwidth(peaks)
    return peaks


def set_bandwidth(peaks: dict) -> None:
    """peaks["bw"], peaks["bw_from"]: the better of read2 and read2v. read2 is machine_peak's figure; its loop
    sums into one float (a dependent chain), which on some CPUs measures add latency rather than memory; read2v
    reads the same streams with vector accumulators."""
    cands = [(peaks[k], k) for k in ("read2", "read2v") if peaks[k]]
    peaks["bw"], peaks["bw_from"] = max(cands) if cands else (None, None)


def each_peaks(peaks: dict) -> str:
    """' (fp32 a / b, bf16 c / d, read2v e / f)': the two measurements merge_peaks chose from."""
    each = peaks.get("each")
    if not each:
        return ""
    parts = [f"{k} {fmt(each[k][0], '.0f')} / {fmt(each[k][1], '.0f')}" for k in ("fp32", "bf16", "read2v")
             if each[k][0] or each[k][1]]
    return " (" + ", ".join(parts) + ")" if parts else ""


def merge_peaks(first: dict, second: dict) -> dict:
    """The best of two measurements of the peaks (one at the start of the run, one at the end): a busy moment
    on a shared machine lowers one of them, and a % of a lowered peak would read too high."""
    merged = dict(first)
    merged["notes"] = list(first["notes"]) + [n for n in second["notes"] if n not in first["notes"]]
    merged["each"] = {}
    for key in ("fp32", "bf16", "read2", "read2v", "triad"):
        vals = [v for v in (first.get(key), second.get(key)) if v]
        merged[key] = max(vals) if vals else None
        merged["each"][key] = (first.get(key), second.get(key))
    set_bandwidth(merged)
    return merged


# ----------------------------------------------------------------------------------------------------------
# Implementations
def make_inputs(case: Case, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    q = rng.standard_normal((case.B, case.Hq, case.Sq, case.D), dtype=np.float32)
    k = rng.standard_normal((case.B, case.Hkv, case.Sk, case.D), dtype=np.float32)
    v = rng.standard_normal((case.B, case.Hkv, case.Sk, case.D), dtype=np.float32)
    return q, k, v


def torch_causal_arg(case: Case, torch):
    """is_causal / attn_mask for torch's SDPA matching attn's bottom-right causal."""
    if not case.causal:
        return {}
    if case.Sq == case.Sk:
        return {"is_causal": True}  # top-left == bottom-right when square
    from torch.nn.attention.bias import causal_lower_right

    return {"attn_mask": causal_lower_right(case.Sq, case.Sk)}


def make_ort(case: Case, arrays, threads: int, op: str):
    """An onnxruntime session computing the same attention, bound to the inputs (zero-copy) and to a
    preallocated output. op: "attention" = ONNX Attention (opset 23, layout [B,H,S,D], GQA native);
    "mha" = com.microsoft.MultiHeadAttention (inputs [B,S,H*D], prepared outside the timing)."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if case.dtype != "f32":
        raise NotImplementedError("no bf16 CPU kernel in onnxruntime")
    if case.causal and case.Sq != case.Sk:
        raise NotImplementedError("causal alignment for Sq != Sk not expressed")
    q, k, v = arrays
    f = TensorProto.FLOAT
    if op == "attention":
        node = helper.make_node("Attention", ["q", "k", "v"], ["o"], is_causal=int(case.causal),
                                q_num_heads=case.Hq, kv_num_heads=case.Hkv)
        opsets = [helper.make_opsetid("", 23)]
        feeds = {"q": q, "k": k, "v": v}
        out_shape = q.shape
    elif op == "mha":
        if case.Hq != case.Hkv:
            raise NotImplementedError("MultiHeadAttention needs Hq == Hkv")
        node = helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["o"], domain="com.microsoft",
                                num_heads=case.Hq, unidirectional=int(case.causal))
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]

        def bsh(x):
            b, h, s, d = x.shape
            return np.ascontiguousarray(x.transpose(0, 2, 1, 3).reshape(b, s, h * d))

        feeds = {"q": bsh(q), "k": bsh(k), "v": bsh(v)}
        out_shape = feeds["q"].shape
    else:
        raise ValueError(op)
    graph = helper.make_graph([node], "sdpa", [helper.make_tensor_value_info(n, f, None) for n in "qkv"],
                              [helper.make_tensor_value_info("o", f, None)])
    model = helper.make_model(graph, opset_imports=opsets)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    io = sess.io_binding()
    for n, a in feeds.items():
        io.bind_cpu_input(n, a)
    out = np.empty(out_shape, np.float32)
    io.bind_output("o", "cpu", 0, np.float32, list(out.shape), out.ctypes.data)

    def run():
        sess.run_with_iobinding(io)

    def result():
        if op == "mha":
            b, h, s, d = q.shape
            return out.reshape(b, s, h, d).transpose(0, 2, 1, 3)
        return out

    return run, result, feeds  # feeds kept alive by the caller


# ----------------------------------------------------------------------------------------------------------
# Timing
def time_interleaved(fns: dict, target_s: float, min_reps: int, max_reps: int, blocks: int, before=None,
                     progress: str = "") -> dict:
    """Median seconds per call of each fn. Each fn has already been called once (the correctness check);
    one more untimed call calibrates the count; then `blocks` rounds, each running every fn reps/blocks
    times in a row, so slow drifts in machine load hit all fns alike. `before` (untimed) runs before each
    timed call."""
    pc = time.perf_counter
    est, reps = {}, {}
    for n, f in fns.items():
        t0 = pc()
        if before:
            before()
        t1 = pc()
        f()
        est[n] = pc() - t1
        wall = pc() - t0  # the untimed `before` counts towards the wall-clock budget
        reps[n] = int(min(max_reps, max(min_reps, math.ceil(target_s / max(wall, 1e-6)))))
    per_block = {n: max(1, math.ceil(r / blocks)) for n, r in reps.items()}
    times = {n: [] for n in fns}
    for b in range(blocks):
        for n, f in fns.items():
            for _ in range(per_block[n]):
                if before:
                    before()
                t0 = pc()
                f()
                times[n].append(pc() - t0)
            time.sleep(0.005)  # let other runtimes' spinning worker threads go to sleep
    return {n: (statistics.median(t), len(t)) for n, t in times.items()}


# ----------------------------------------------------------------------------------------------------------
# One row
@dataclass
class Row:
    case: Case
    ms: dict = field(default_factory=dict)  # impl -> median ms
    reps: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)  # impl -> why it did not run
    ort_op: str = ""
    diff: dict = field(default_factory=dict)  # name -> max abs diff
    ok: bool = True
    check: str = ""
    wall_s: float = 0.0


def run_case(case: Case, args, mods, peaks, flush) -> Row:
    import numpy as np

    attn, torch = mods["attn"], mods["torch"]
    T = args.threads
    row = Row(case)
    t_start = time.perf_counter()
    q, k, v = make_inputs(case, args.seed)
    gqa = case.Hq != case.Hkv
    impls = {}
    outs = {}

    # attn: NumPy arrays, f32 or ml_dtypes.bfloat16
    if "attn" in args.impls:
        if case.dtype == "bf16":
            bf = mods["ml_dtypes"].bfloat16
            qa, ka, va = q.astype(bf), k.astype(bf), v.astype(bf)
        else:
            qa, ka, va = q, k, v
        impls["attn"] = lambda: attn.sdpa(qa, ka, va, causal=case.causal, threads=T)

    # torch: views of the same arrays; bf16 converted once here, outside the timing
    tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
    if case.dtype == "bf16":
        tq, tk, tv = (x.to(torch.bfloat16) for x in (tq, tk, tv))
        if "attn" in args.impls:  # same rounding (nearest-even) on both sides: the same bits
            same = all(np.array_equal(t.view(torch.int16).numpy(), a.view(np.int16))
                       for t, a in ((tq, qa), (tk, ka), (tv, va)))
            if not same:
                log(f"  warning: torch and ml_dtypes bf16 inputs differ for {case.name}")
    sdpa = torch.nn.functional.scaled_dot_product_attention
    tkw = dict(torch_causal_arg(case, torch))
    if gqa:
        tkw["enable_gqa"] = True
    if "torch" in args.impls:
        impls["torch"] = lambda: sdpa(tq, tk, tv, **tkw)

    # onnxruntime: the fastest of the ops that express this computation
    ort_runs = {}
    if "ort" in args.impls:
        for op in args.ort_ops:
            try:
                ort_runs[op] = make_ort(case, (q, k, v), T, op)
            except Exception as e:  # noqa: BLE001 - any failure means "this op cannot run this row"
                row.errors[f"ort:{op}"] = str(e).splitlines()[0][:120]
        if not ort_runs:
            why = {v_ for k_, v_ in row.errors.items() if k_.startswith("ort:")}
            row.errors["ort"] = "; ".join(sorted(why))
        for op, (fn, _, _) in ort_runs.items():
            impls[f"ort:{op}"] = fn

    # Correctness, before timing (this call is also the warmup)
    for n, f in list(impls.items()):
        try:
            for _ in range(args.warmup):
                r = f()
            outs[n] = r if not n.startswith("ort:") else ort_runs[n[4:]][1]()
        except Exception as e:  # noqa: BLE001
            row.errors[n] = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
            del impls[n]

    def f32(x):
        if isinstance(x, torch.Tensor):
            return x.float().numpy()
        return np.asarray(x).astype(np.float32)

    def maxdiff(a, b):
        return float(np.max(np.abs(f32(a) - f32(b))))

    if case.dtype == "f32":
        ref = outs.get("torch")
        if ref is None and "attn" in outs:  # torch not run: compare with torch anyway
            ref = sdpa(tq, tk, tv, **tkw)
        if ref is not None:
            for n, o in outs.items():
                if n != "torch":
                    row.diff[n] = maxdiff(o, ref)
        d = row.diff.get("attn")
        if d is not None:
            row.ok = bool(np.isfinite(d) and d <= F32_TOL)
            row.check = f"max|attn-torch|={d:.2e} (tol {F32_TOL:g})"
    else:
        # reference: torch f32 on the same (bf16-rounded) inputs; attn must be within 2x torch-bf16's error
        ref = sdpa(tq.float(), tk.float(), tv.float(), **tkw)
        tb = outs.get("torch")
        if tb is None:
            tb = sdpa(tq, tk, tv, **tkw)
        e_torch = maxdiff(tb, ref)
        row.diff["torch_vs_f32ref"] = e_torch
        if "attn" in outs:
            e_attn = maxdiff(outs["attn"], ref)
            row.diff["attn"] = maxdiff(outs["attn"], tb)
            row.diff["attn_vs_f32ref"] = e_attn
            lim = 2 * e_torch + BF16_ATOL
            row.ok = bool(np.isfinite(e_attn) and e_attn <= lim)
            row.check = (f"max|attn-torch|={row.diff['attn']:.2e}, vs f32 ref: attn {e_attn:.2e}, "
                         f"torch {e_torch:.2e} (limit {lim:.2e})")
    if "attn" in outs and not row.ok:
        log(f"  MISMATCH {case.name}: {row.check}")
    outs.clear()

    # Timing
    if impls:
        before = flush if (case.kind == "decode" and not args.decode_hot) else None
        res = time_interleaved(impls, args.target_s, args.min_reps, args.max_reps, args.blocks, before)
        for n, (sec, cnt) in res.items():
            row.ms[n] = sec * 1e3
            row.reps[n] = cnt
    ort_ms = {n[4:]: ms for n, ms in row.ms.items() if n.startswith("ort:")}
    if ort_ms:
        row.ort_op = min(ort_ms, key=ort_ms.get)
        row.ms["ort"] = ort_ms[row.ort_op]
        row.diff["ort"] = row.diff.get(f"ort:{row.ort_op}", float("nan"))
    row.wall_s = time.perf_counter() - t_start
    return row


# ----------------------------------------------------------------------------------------------------------
# Memory rows: a child process per (impl, case) reading its own peak RSS
def proc_status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return -1


def mem_child(spec: dict) -> dict:
    """Runs in a fresh interpreter: imports (numpy + attn, or numpy + torch), allocates the inputs, resets the
    peak-RSS counter, makes one call, and reports the peak beyond (baseline + inputs) and the output.
    baseline = RSS just before the call - input bytes. Linux updates RSS counters in batches, so figures below
    about 1 MB are approximate."""
    import numpy as np

    impl, T = spec["impl"], spec["threads"]
    if impl == "attn":
        sys.path.insert(0, str(MODULE_DIR))
        import attn  # noqa: F401
    else:
        import torch

        torch.set_num_threads(T)
    base = proc_status("VmRSS")
    rng = np.random.default_rng(0)
    B, H, S, D = spec["B"], spec["H"], spec["S"], spec["D"]
    arrs = []
    for _ in range(3):
        a = np.empty((B, H, S, D), np.float32)
        rng.standard_normal(out=a, dtype=np.float32)  # no temporaries: the peak below holds only these
        arrs.append(a)
    q, k, v = arrs
    in_bytes = 3 * q.nbytes
    try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    rss_before = proc_status("VmRSS")
    t0 = time.perf_counter()
    if impl == "attn":
        out = attn.sdpa(q, k, v, causal=spec["causal"], threads=T)
        out_bytes = out.nbytes
    else:
        with torch.inference_mode():
            out = torch.nn.functional.scaled_dot_product_attention(
                torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), is_causal=spec["causal"])
        out_bytes = out.numel() * out.element_size()
    sec = time.perf_counter() - t0
    hwm = proc_status("VmHWM")
    return {"impl": impl, "base": base, "inputs": in_bytes, "output": out_bytes, "rss_before": rss_before,
            "hwm": hwm, "hwm_reset": reset, "extra": hwm - rss_before - out_bytes, "seconds": sec}


def run_mem(case: Case, args) -> list[dict]:
    res = []
    for impl in [i for i in ("attn", "torch") if i in args.impls]:
        spec = {"impl": impl, "threads": args.threads, "B": case.B, "H": case.Hq, "S": case.Sq, "D": case.D,
                "causal": case.causal}
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        p = subprocess.run([sys.executable, __file__, "--mem-child", json.dumps(spec)], capture_output=True,
                           text=True, env=env)
        if p.returncode != 0:
            res.append({"impl": impl, "error": (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]})
        else:
            res.append(json.loads(p.stdout.strip().splitlines()[-1]))
    return res


# ----------------------------------------------------------------------------------------------------------
# Reporting
def fmt(x, spec=".1f", na="n/a"):
    return na if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def table_rows(rows: list[Row], peaks: dict) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    ph = ["shape", "dtype", "causal", "attn ms", "torch ms", "ort ms", "attn GFLOP/s", "torch GFLOP/s",
          "ort GFLOP/s", "speedup vs torch", "speedup vs ort", "attn % peak", "max abs diff vs torch"]
    dh = ["shape", "dtype", "attn ms", "torch ms", "ort ms", "attn GB/s", "torch GB/s", "ort GB/s",
          "speedup vs torch", "speedup vs ort", "attn % BW", "max abs diff vs torch"]
    pre, dec = [], []
    for r in rows:
        c, ms = r.case, r.ms

        def rate(n, per):
            return per / (ms[n] * 1e-3) / 1e9 if n in ms else None

        def ratio(n):
            return f"{ms[n] / ms['attn']:.2f}x" if n in ms and "attn" in ms else "n/a"

        ort_ms = f"{ms['ort']:.2f} ({r.ort_op})" if "ort" in ms else "n/a"
        diff = fmt(r.diff.get("attn"), ".1e") + ("" if r.ok else " MISMATCH")
        if c.kind == "prefill":
            peak = peaks.get("fp32") if c.dtype == "f32" else (peaks.get("bf16") or peaks.get("fp32"))
            g = {n: rate(n, c.flops()) for n in ("attn", "torch", "ort")}
            pct = 100 * g["attn"] / peak if g["attn"] and peak else None
            pre.append([c.shape, c.dtype, "yes" if c.causal else "no", fmt(ms.get("attn"), ".2f"),
                        fmt(ms.get("torch"), ".2f"), ort_ms, fmt(g["attn"]), fmt(g["torch"]), fmt(g["ort"]),
                        ratio("torch"), ratio("ort"), fmt(pct, ".0f"), diff])
        else:
            g = {n: rate(n, c.kv_bytes()) for n in ("attn", "torch", "ort")}
            bw = peaks.get("bw")
            pct = 100 * g["attn"] / bw if g["attn"] and bw else None
            dec.append([c.shape, c.dtype, fmt(ms.get("attn"), ".3f"), fmt(ms.get("torch"), ".3f"), ort_ms,
                        fmt(g["attn"]), fmt(g["torch"]), fmt(g["ort"]), ratio("torch"), ratio("ort"),
                        fmt(pct, ".0f"), diff])
    return ph, pre, dh, dec


def mem_table(mem: list[tuple[Case, list[dict]]]) -> tuple[list[str], list[list[str]]]:
    h = ["shape", "causal", "impl", "inputs + output MB", "baseline RSS MB (imports, allocator)", "peak RSS MB",
         "extra MB (peak - baseline - inputs - output)", "one call s"]
    out = []
    mb = 1 / (1 << 20)
    for c, res in mem:
        for r in res:
            if "error" in r:
                out.append([c.shape + " f32", "yes" if c.causal else "no", r["impl"], "error: " + r["error"][:80],
                            "", "", "", ""])
                continue
            out.append([c.shape + " f32", "yes" if c.causal else "no", r["impl"],
                        f"{(r['inputs'] + r['output']) * mb:.0f}",
                        f"{(r['rss_before'] - r['inputs']) * mb:.0f}",
                        f"{r['hwm'] * mb:.0f}", f"{r['extra'] * mb:.1f}", f"{r['seconds']:.2f}"])
    return h, out


def text_table(h, rows) -> str:
    w = [max(len(str(x)) for x in col) for col in zip(h, *rows)] if rows else [len(x) for x in h]
    line = lambda r: "  ".join(str(x).rjust(n) for x, n in zip(r, w))  # noqa: E731
    return "\n".join([line(h), line(["-" * n for n in w])] + [line(r) for r in rows])


def md_table(h, rows) -> str:
    return "\n".join(["| " + " | ".join(h) + " |", "|" + "---|" * len(h)] + ["| " + " | ".join(r) + " |"
                                                                          for r in rows])


def versions(mods) -> dict:
    v = {"python": sys.version.split()[0]}
    for n in ("torch", "onnxruntime", "onnx", "numpy", "ml_dtypes"):
        m = mods.get(n)
        v[n] = getattr(m, "__version__", "n/a") if m else "n/a"
    a = mods.get("attn")
    v["attn"] = getattr(a, "__version__", "unknown") if a else "n/a"
    try:
        v["attn_simd"] = str(a.current_simd_target()) if a else "n/a"
    except Exception:  # noqa: BLE001 - an older module without it
        v["attn_simd"] = "unknown"
    try:
        git = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                             text=True)
        v["attn_git"] = git.stdout.strip() or "no commit"
    except OSError:
        v["attn_git"] = "unknown"
    return v


def render_md(args, facts, peaks, vers, rows, mem, started) -> str:
    ph, pre, dh, dec = table_rows(rows, peaks)
    mh, mrows = mem_table(mem)
    user_args, skip = [], False  # drop the peak-tool paths that run.sh adds
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a in ("--peak-bin", "--peak-fallback-bin"):
            skip = True
        elif not a.startswith(("--peak-bin=", "--peak-fallback-bin=")):
            user_args.append(a)
    via = "bash bench/run.sh" if os.environ.get("ATTN_BENCH_VIA_RUNSH") else "python bench/bench_sdpa.py"
    cmd = " ".join([via, shlex.join(user_args)]).strip()
    T = args.threads
    bf16_peak = (f"{peaks['bf16']:.0f} GFLOP/s" if peaks.get("bf16")
                 else "n/a (no bf16 dot instruction; bf16 % is of the fp32 FMA peak)")
    ort_ops = {"attention": "ONNX `Attention` (opset 23, [B,H,S,D], GQA native)",
               "mha": "`com.microsoft.MultiHeadAttention` (inputs [B,S,H*D] prepared untimed)"}
    lines = [
        MD_BEGIN,
        "## Attention forward on the CPU: attn.sdpa vs PyTorch SDPA vs onnxruntime",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC",
        f"- Machine: {facts['model']}, {facts['cpus']} cores, L3 {facts['l3'] or '?'}, "
        f"AVX-512 {'yes' if facts['avx512f'] else 'no'}, AVX512_BF16 {'yes' if facts['avx512_bf16'] else 'no'}; "
        f"1-min load average at start {facts['loadavg_start']:.2f}",
        f"- Command: `{cmd}`",
        f"- Versions: attn {vers['attn']} (git {vers['attn_git']}, SIMD target {vers['attn_simd']}), "
        f"torch {vers['torch']}, onnxruntime "
        f"{vers['onnxruntime']}, onnx {vers['onnx']}, numpy {vers['numpy']}, ml_dtypes {vers['ml_dtypes']}, "
        f"Python {vers['python']}",
        f"- Threads: {T} for all three (attn `threads={T}`, `torch.set_num_threads({T})`, onnxruntime "
        f"`intra_op_num_threads={T}`).",
        f"- Peaks measured in this run at {T} threads ({peaks.get('tool') or 'no tool'}), the better of a "
        f"measurement at the start and one at the end{each_peaks(peaks)}: fp32 FMA "
        f"{fmt(peaks.get('fp32'), '.0f')} GFLOP/s, bf16 dot {bf16_peak}, memory read "
        f"{fmt(peaks.get('bw'), '.1f')} GB/s ({peaks.get('bw_from') or 'n/a'}; read2 {fmt(peaks.get('read2'))}, "
        f"read2v {fmt(peaks.get('read2v'))}, triad {fmt(peaks.get('triad'))} GB/s)."
        + ("".join(f" {n}." for n in peaks["notes"]) if peaks["notes"] else ""),
        f"- Method: inputs N(0,1), the same NumPy arrays for all (torch.from_numpy; bf16: ml_dtypes for attn, "
        f"`.to(torch.bfloat16)` for torch, bit-identical). Median of >= {args.min_reps} calls (about "
        f"{args.target_s:g} s per impl and row) in {args.blocks} interleaved blocks, after a checked warmup "
        f"call. FLOPs = 4*B*Hq*Sq*Sk*D, causal counts only unmasked pairs. onnxruntime: the faster of "
        + ", ".join(ort_ops[o] for o in args.ort_ops)
        + " (column says which: attention / mha); it has no bf16 CPU kernel. Speedup = peer ms / attn ms. "
        "Check: f32 max |attn - torch| <= 1e-4; bf16 |attn - f32 ref| <= 2 * |torch bf16 - f32 ref| + 1e-3.",
    ]
    if pre:
        lines += ["", "### Prefill / self-attention (Sq = Sk)", "", md_table(ph, pre)]
    if dec:
        lines += ["", "### Decode (Sq = 1); GB/s = bytes of K and V read per call"
                  + ("" if args.decode_hot else ", caches flushed before each call"), "", md_table(dh, dec)]
    if mrows:
        lines += ["", "### Memory: one call in a fresh process, peak RSS beyond baseline + inputs + output", "",
                  md_table(mh, mrows)]
    lines.append(MD_END)
    return "\n".join(lines) + "\n"


def write_md(path: Path, section: str, begin: str = MD_BEGIN, end: str = MD_END):
    """Replaces the section between the markers `begin` and `end` (or appends it)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        a = text.index(begin)
        b = text.index(end, a) + len(end)
        tail = text[b:]
        text = text[:a] + section.rstrip("\n") + (tail if tail.startswith("\n") else "\n" + tail)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


# ----------------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a subset of the grid (memory row at S=8192)")
    p.add_argument("--filter", action="append", default=[],
                   help="regex on the row name, e.g. 'S2048', 'bf16', '^decode', '^mem', 'H16 S4096 D128 f32 "
                        "causal'; repeatable (any matches)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--impls", default="attn,torch,ort", help="comma list of attn,torch,ort")
    p.add_argument("--ort-ops", default="attention,mha",
                   help="onnxruntime ops to try, fastest reported: attention (ONNX Attention, opset 23), "
                        "mha (com.microsoft.MultiHeadAttention)")
    p.add_argument("--target-s", type=float, default=0.75, help="timed seconds per impl and row (about)")
    p.add_argument("--min-reps", type=int, default=5)
    p.add_argument("--max-reps", type=int, default=1000)
    p.add_argument("--blocks", type=int, default=5, help="interleaved blocks per row")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per impl before timing (the first "
                                                          "one is checked)")
    p.add_argument("--decode-hot", action="store_true",
                   help="do not flush the caches before decode calls (K/V of Sk=8192 fits in L3)")
    p.add_argument("--mem-s", type=int, default=None, help="sequence length of the memory rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--list", action="store_true", help="print the row names and exit")
    p.add_argument("--json", default=None, help="also write all results to this file")
    p.add_argument("--write-md", action="store_true", help="replace the bench_sdpa section of BENCHMARKS.md")
    p.add_argument("--md-path", default=str(ROOT / "BENCHMARKS.md"))
    p.add_argument("--peak-bin", default=None, help="compiled shared/tools/machine_peak.cpp")
    p.add_argument("--peak-fallback-bin", default=None, help="compiled bench/machine_peak_avx2.cpp")
    p.add_argument("--mem-child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.impls = [x for x in a.impls.split(",") if x]
    a.ort_ops = [x for x in a.ort_ops.split(",") if x]
    a.warmup = max(1, a.warmup)
    return a


def main():
    args = parse_args()
    if args.mem_child:
        print(json.dumps(mem_child(json.loads(args.mem_child))))
        return 0
    cases = build_grid(args.quick, args.mem_s)
    if args.filter:
        pats = [re.compile(f) for f in args.filter]
        cases = [c for c in cases if any(p.search(c.name) for p in pats)]
    if args.list:
        print("\n".join(c.name for c in cases))
        return 0
    started = _dt.datetime.now(_dt.timezone.utc)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch's OpenMP starts

    import numpy as np  # noqa: F401
    import ml_dtypes
    import torch

    mods = {"numpy": sys.modules["numpy"], "ml_dtypes": ml_dtypes, "torch": torch, "attn": None,
            "onnxruntime": None, "onnx": None}
    torch.set_num_threads(args.threads)
    if "ort" in args.impls:
        import onnx
        import onnxruntime

        mods["onnxruntime"], mods["onnx"] = onnxruntime, onnx
    sys.path.insert(0, str(MODULE_DIR))
    try:
        import attn

        mods["attn"] = attn
    except ImportError as e:
        if "attn" in args.impls:
            log(f"cannot import attn from {MODULE_DIR} ({e}); build the Python module first")
            return 2

    facts = lscpu_facts()
    facts["loadavg_start"] = os.getloadavg()[0]
    log(f"machine: {facts['model']}, {facts['cpus']} cores; threads={args.threads}; rows: {len(cases)}; "
        f"load average {facts['loadavg_start']:.2f}")
    if facts["loadavg_start"] > 0.5:
        log("warning: the machine is busy (load average above 0.5): timings will be noisy")
    peaks = measure_peaks(args)
    for n in peaks["notes"]:
        log("note:", n)
    log(f"peaks at {args.threads} threads: fp32 {fmt(peaks['fp32'])} GFLOP/s, bf16 {fmt(peaks['bf16'])} "
        f"GFLOP/s, read bw {fmt(peaks['bw'])} GB/s ({peaks['bw_from']}; read2 {fmt(peaks['read2'])}, read2v "
        f"{fmt(peaks['read2v'])}, triad {fmt(peaks['triad'])})")
    vers = versions(mods)
    log("versions:", ", ".join(f"{k} {v}" for k, v in vers.items()))

    flush_buf = np.ones(2 * l3_bytes(facts) // 4, np.float32)
    flush_sink: list[float] = []

    def flush():
        # read 2x L3 before a decode call: evicts K/V; reading, not writing, so that no dirty lines are left
        # for the timed call to write back
        flush_sink.append(float(flush_buf.sum()))
        del flush_sink[:-1]

    rows: list[Row] = []
    mem: list[tuple[Case, list[dict]]] = []
    t_all = time.perf_counter()
    with torch.inference_mode():
        for i, c in enumerate(cases, 1):
            t0 = time.perf_counter()
            if c.kind == "mem":
                log(f"[{i}/{len(cases)}] {c.name} ...")
                res = run_mem(c, args)
                mem.append((c, res))
                for r in res:
                    if "error" in r:
                        log(f"    {r['impl']}: error {r['error']}")
                    else:
                        log(f"    {r['impl']}: extra {r['extra'] / 2**20:.1f} MB over baseline "
                            f"{(r['rss_before'] - r['inputs']) / 2**20:.0f} MB + inputs/output "
                            f"{(r['inputs'] + r['output']) / 2**20:.0f} MB (peak {r['hwm'] / 2**20:.0f} MB), "
                            f"{r['seconds']:.2f} s"
                            + ("" if r["hwm_reset"] else " [VmHWM not reset]"))
                log(f"    ({time.perf_counter() - t0:.1f} s)")
                continue
            r = run_case(c, args, mods, peaks, flush)
            rows.append(r)
            msg = "  ".join(f"{n} {r.ms[n]:.3f} ms" for n in ("attn", "torch", "ort") if n in r.ms)
            if r.ort_op:
                msg += f" ({r.ort_op})"
            if "attn" in r.ms and "torch" in r.ms:
                msg += f"  speedup vs torch {r.ms['torch'] / r.ms['attn']:.2f}x"
            od = r.diff.get("ort")
            chk = r.check or "attn not run"
            if od is not None:
                chk += f"; max|ort-torch|={od:.1e}"
            log(f"[{i}/{len(cases)}] {c.name}: {msg}  [{chk}] ({r.wall_s:.1f} s)"
                + ("" if r.ok else "  <-- MISMATCH"))
            for n, e in r.errors.items():
                if not n.startswith("ort:"):  # "ort" sums up the ort:op errors when none ran
                    log(f"    {n}: {e}")
    total = time.perf_counter() - t_all
    peaks = merge_peaks(peaks, measure_peaks(args))
    each = peaks["each"]
    log(f"peaks again at the end: fp32 {fmt(each['fp32'][1])} GFLOP/s, bf16 {fmt(each['bf16'][1])} GFLOP/s, "
        f"read2v {fmt(each['read2v'][1])} GB/s; the tables use the better of the two")

    ph, pre, dh, dec = table_rows(rows, peaks)
    mh, mrows = mem_table(mem)
    if pre:
        print("\nPrefill (Sq = Sk)\n" + text_table(ph, pre))
    if dec:
        print("\nDecode (Sq = 1), GB/s of K+V" + ("" if args.decode_hot else ", caches flushed") + "\n"
              + text_table(dh, dec))
    if mrows:
        print("\nMemory (one call, fresh process)\n" + text_table(mh, mrows))
    bad = [r.case.name for r in rows if not r.ok]
    print(f"\n{len(rows) + len(mem)} rows in {total:.0f} s; correctness: "
          + (f"{len(bad)} MISMATCH: " + ", ".join(bad) if bad else "all attn outputs match torch"))

    if args.json:
        Path(args.json).write_text(json.dumps({
            "date": started.isoformat(), "machine": facts, "peaks": peaks, "versions": vers,
            "threads": args.threads, "argv": sys.argv[1:],
            "rows": [{"name": r.case.name, **r.case.__dict__, "flops": r.case.flops(), "kv_bytes": r.case.kv_bytes(),
                      "ms": r.ms, "reps": r.reps, "ort_op": r.ort_op, "diff": r.diff, "ok": r.ok,
                      "errors": r.errors} for r in rows],
            "mem": [{"name": c.name, "results": res} for c, res in mem]}, indent=1))
    if args.write_md:
        write_md(Path(args.md_path), render_md(args, facts, peaks, vers, rows, mem, started))
        log(f"wrote the bench_sdpa section of {args.md_path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
