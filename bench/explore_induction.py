"""Looks for hyperparameters at which attn's training model (bench/train_torch.py, the PyTorch
twin of include/attn/train.h) forms induction heads on the King James Bible within minutes on the
CPU: a 2-layer attention-only model should show the phase change (a head's induction score jumping
from < 0.1 to > 0.4, a bump in the training loss, the ICL score improving), a 1-layer one not.

    bible -f gen1:1-rev22:21 | sed -E 's/^[1-3]?[A-Za-z]+[0-9]+:[0-9]+ //' > /tmp/kjv_ind.txt
    bench/.venv/bin/python bench/explore_induction.py --layers 2 --steps 2000 --threads 2 \
        --out /tmp/ind/run.jsonl

Every --eval-every steps it logs one JSON line: step, time (training seconds, evaluation
excluded), train loss (mean since the last log), lr, val loss, ICL score, induction and
previous-token scores per layer and head. At the end a summary line: the phase-change step
(first log where the best induction score is > 0.4, with the last log where it was < 0.1),
final losses, max induction score per layer, tokens/s.

Scores (train_torch.head_scores / icl_score): probe = 4 sequences of R distinct random bytes
(bytes with corpus frequency >= 1e-4), each repeated twice, R = context/2 - 1; induction score =
mean attention from each query i in the second repeat to key i - R + 1; previous-token score =
mean attention from i to i - 1 (i >= 1). ICL = mean validation loss at positions
[context - 16, context) minus at [context/8 - 8, context/8 + 8), on fixed validation windows.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_torch as tt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="/tmp/kjv_ind.txt")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--d-ff", type=int, default=0)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--beta2", type=float, default=0.95)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--val-windows", type=int, default=32)
    ap.add_argument("--max-seconds", type=float, default=0, help="stop training after this many seconds")
    ap.add_argument("--repeat-frac", type=float, default=0.0,
                    help="fraction of training rows that are a text window of R' bytes, repeated, "
                         "then fresh text (R' uniform in [8, context/2]); 0 = plain windows only")
    ap.add_argument("--out", default="")
    ap.add_argument("--save", default="", help="torch.save the final params here")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    cfg = tt.TrainConfig(context=a.context, n_layers=a.layers, d_model=a.d_model, n_heads=a.heads,
                         d_ff=a.d_ff, batch=a.batch, steps=a.steps, lr=a.lr, warmup=a.warmup,
                         min_lr_ratio=a.min_lr_ratio, beta2=a.beta2, weight_decay=a.wd, clip=a.clip,
                         seed=a.seed)
    train, val = tt.load_corpus(a.corpus)
    rng = np.random.default_rng(a.seed)
    val_tokens = tt.random_windows(val, a.val_windows, a.context + 1, np.random.default_rng(999))
    probe, R = tt.induction_probe(train, a.context)
    # diagnostic: the same score on repeated validation text (in-distribution) instead of random bytes
    Rt = a.context // 2 - 1
    tprobe = tt.random_windows(val, 4, Rt, np.random.default_rng(7))
    tprobe = torch.cat([tprobe, tprobe], dim=1)
    params = tt.init_params_torch(cfg)
    opt = tt.make_optimizer(params, cfg)
    out = open(a.out, "w") if a.out else None

    def log(rec):
        line = json.dumps(rec)
        if out:
            out.write(line + "\n")
            out.flush()

    train_time, acc, n_acc = 0.0, 0.0, 0
    history = []

    def evaluate(step):
        ind, prev = tt.head_scores(params, cfg, probe, R)
        icl, vloss = tt.icl_score(params, cfg, val_tokens)
        tind, _ = tt.head_scores(params, cfg, tprobe, Rt)
        rec = {"step": step, "time": round(train_time, 2), "loss": acc / max(1, n_acc),
               "lr": tt.learning_rate(cfg, max(0, step - 1)), "val_loss": vloss, "icl": icl,
               "induction": np.round(ind, 4).tolist(), "prev": np.round(prev, 4).tolist(),
               "induction_text": np.round(tind, 4).tolist()}
        history.append(rec)
        log(rec)
        best = ind.max()
        print(f"step {step:5d} t {train_time:6.1f}s loss {rec['loss']:.4f} val {vloss:.4f} icl {icl:+.3f} "
              f"ind max/layer {[round(float(v), 3) for v in ind.max(axis=1)]} prev max/layer "
              f"{[round(float(v), 3) for v in prev.max(axis=1)]} text-ind {[round(float(v), 3) for v in tind.max(axis=1)]}",
              flush=True)
        return best

    evaluate(0)
    s = 0
    for s in range(a.steps):
        x = tt.random_windows(train, a.batch, a.context + 1, rng)
        if a.repeat_frac > 0:
            for b in range(a.batch):
                if rng.random() < a.repeat_frac:
                    r = int(rng.integers(8, a.context // 2 + 1))
                    x[b, r:2 * r] = x[b, :r].clone()
        t0 = time.perf_counter()
        l, _, _ = tt.train_step(params, opt, cfg, x, s)
        train_time += time.perf_counter() - t0
        acc += l
        n_acc += 1
        if (s + 1) % a.eval_every == 0 or s + 1 == a.steps:
            evaluate(s + 1)
            acc, n_acc = 0.0, 0
        if a.max_seconds and train_time > a.max_seconds:
            break
    steps_done = s + 1
    best = [max(r["induction"][L]) for r in history for L in range(a.layers)]
    ind_by_step = [max(max(h) for h in r["induction"]) for r in history]
    phase = next((r["step"] for r, v in zip(history, ind_by_step) if v > 0.4), None)
    last_low = None
    if phase is not None:
        last_low = max((r["step"] for r, v in zip(history, ind_by_step) if v < 0.1 and r["step"] < phase),
                       default=None)
    summary = {"summary": True, "config": json.loads(cfg.to_json()), "threads": a.threads,
               "steps_done": steps_done, "train_seconds": round(train_time, 1),
               "tokens_per_s": round(steps_done * a.batch * a.context / train_time),
               "final_loss": history[-1]["loss"], "final_val_loss": history[-1]["val_loss"],
               "final_icl": history[-1]["icl"], "first_icl": history[0]["icl"],
               "min_icl": min(r["icl"] for r in history),
               "phase_step_gt_0.4": phase, "last_step_lt_0.1": last_low,
               "max_induction_per_layer": [round(max(max(r["induction"][L]) for r in history), 4)
                                           for L in range(a.layers)],
               "final_induction_per_layer": [round(max(history[-1]["induction"][L]), 4)
                                             for L in range(a.layers)]}
    del best
    if a.save:
        torch.save({n: t.detach() for n, t in params.items()}, a.save)
    log(summary)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
