#!/usr/bin/env python3
"""Timing of attn.circuits on a real model (default: SmolLM2-135M-Instruct Q4_1), and the heads
with the highest OV copying score.

    PYTHONPATH=build/python .venv/bin/python bench/bench_circuits.py [--model PATH] [--repeats 3]

Figures (medians of --repeats, after one untimed warm-up that reads and caches the embedding
and W_U W_E):
  qk      circuits.qk_circuit_top_pairs(layer, head, top=20) over the full vocabulary
  qk_scan the same top-20 search without the Cauchy-Schwarz pruning (every vocab x vocab entry
          computed, in the same float32 row blocks): the peer that shows what the pruning buys
  cs      circuits.copying_scores for every head; cs_cold includes computing W_U W_E (cache cleared)
The load average is printed before and after: the machine is shared, and BLAS timings on two
cores swing badly when other work runs.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import numpy as np

import attn
from attn import circuits


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def unpruned_scan(E: np.ndarray, W_Q: np.ndarray, W_K: np.ndarray, top: int) -> np.ndarray:
    # Every entry of the vocab x vocab QK circuit, in row blocks, keeping the running top scores.
    queries = E @ W_Q.astype(np.float32)
    keys_t = np.ascontiguousarray((E @ W_K.astype(np.float32)).T)
    n = queries.shape[0]
    block = max(1, circuits._BLOCK_ENTRIES // n)
    best = np.full(top, -np.inf, dtype=np.float32)
    for start in range(0, n, block):
        flat = (queries[start : start + block] @ keys_t).ravel()
        cand = flat[flat > best.min()]
        best = np.partition(np.concatenate([best, cand]), -top)[-top:]
    return np.sort(best)[::-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GGUF path (default: attn's default model)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--heads", default="0.0,5.4,15.3,29.8", help="layer.head list for the QK timing")
    args = ap.parse_args()

    print(f"# {datetime.date.today()}  {platform.node()}  {platform.processor() or platform.machine()}  "
          f"cpus={os.cpu_count()}  numpy {np.__version__}  loadavg before {os.getloadavg()}")
    model = attn.Model.load(args.model)
    c = model.config
    print(f"# model {os.path.basename(model.path)}: {c['n_layers']} layers x {c['n_heads']} heads "
          f"({c['n_kv_heads']} KV), vocab {c['vocab_size']}")

    t = time.perf_counter()
    E = circuits.embedding(model)
    print(f"read embedding: {time.perf_counter() - t:.2f} s")

    for spec in args.heads.split(","):
        layer, head = (int(x) for x in spec.split("."))
        qk_s, pairs = timed(lambda: circuits.qk_circuit_top_pairs(model, layer, head, top=20), args.repeats)
        hw = circuits.head_weights(model, layer, head)
        scan_s, best = timed(lambda: unpruned_scan(E, hw.W_Q, hw.W_K, 20), 1)
        assert np.allclose(best, [p["score"] for p in pairs], rtol=1e-4), (best, pairs)
        top = pairs[0]
        print(f"qk {layer}.{head}: {qk_s:.2f} s (unpruned scan {scan_s:.2f} s); best pair "
              f"{top['query_text']!r} -> {top['key_text']!r} {top['score']:.3f}")

    circuits.clear_cache()
    circuits.embedding(model)
    t = time.perf_counter()
    scores = circuits.copying_scores(model)
    cold = time.perf_counter() - t
    cs_s, scores = timed(lambda: circuits.copying_scores(model), args.repeats)
    print(f"copying_scores, {scores.size} heads: {cs_s:.2f} s (cold, with W_U W_E: {cold:.2f} s)")

    order = np.argsort(-scores, axis=None)[:10]
    print("top 10 copying heads (layer.head score):")
    for flat in order:
        layer, head = divmod(int(flat), c["n_heads"])
        print(f"  {layer}.{head}  {scores[layer, head]:+.4f}")
    print(f"heads with score > 0: {(scores > 0).sum()} / {scores.size}; mean {scores.mean():+.4f}")
    print(f"# loadavg after {os.getloadavg()}")


if __name__ == "__main__":
    main()
