#!/usr/bin/env python3
"""Inspection at kernel speed: attn's interpretability tools against the same analyses done the
TransformerLens way, in PyTorch on Hugging Face transformers' model of the same GGUF file
(transformers dequantizes it to float32), same tokens, same thread count, in one run.

    bash bench/run.sh --setup-only && bench/.venv/bin/pip install -r bench/requirements-inspect.txt
    PYTHONPATH=build/python bench/.venv/bin/python bench/bench_inspect.py [--threads 2] [--repeats 3]

Tasks (medians of --repeats after a warm-up):
  cache     a forward pass keeping the residual stream of every layer (attn: run_with_cache on the
            resid points; torch: output_hidden_states=True) on --tokens tokens
  patterns  a forward pass keeping every head's attention pattern (attn: run_with_cache on
            hook_pattern; torch: output_attentions=True, eager attention) on --tokens tokens
  lens      the logit lens: every layer's residual through the final norm and unembedding, top-1
            token and the next token's log-probability at every position (--tokens tokens)
  patching  activation patching of resid_pre at every layer and position (a pass per cell) of the
            clean / corrupted pair below, metric = logit(" Paris") - logit(" Rome") at the end
The two sides compute in different precisions (attn: the file's Q4_1 weights with 8-bit
activations; torch: float32 weights), so the script also reports how far their answers agree.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import numpy as np
import torch

import attn
from attn import patching

CLEAN, CORRUPTED = "The Eiffel Tower is in the city of", "The Colosseum is in the city of"
TEXT = ("The old lighthouse keeper, Tom Harrow, climbed the stairs every night. Tom Harrow lit the lamp, wiped "
        "the glass and watched the sea. One stormy night a small boat came close to the rocks, and Tom Harrow, "
        "the old lighthouse keeper, saw it. He said, \"I will never forget that night.\" The next day, Tom Harrow, "
        "the old lighthouse keeper, walked down to the harbour and told the fishermen what he had seen.")


def timed(fn, repeats: int):
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def torch_model(path: str):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                             dtype=torch.float32, attn_implementation="eager")
    return m.eval()


def torch_lens(tm, ids: torch.Tensor):
    with torch.no_grad():
        hs = tm(ids, output_hidden_states=True).hidden_states  # embeddings, then after each layer
        top, nxt = [], []
        for l, h in enumerate(hs):
            # The last entry is already normed by transformers; the others go through the final norm.
            x = h if l == len(hs) - 1 else tm.model.norm(h)
            lp = torch.log_softmax(tm.lm_head(x)[0].float(), dim=-1)
            top.append(lp.argmax(dim=-1))
            nxt.append(lp[torch.arange(ids.shape[1] - 1), ids[0, 1:]])
        return torch.stack(top).numpy(), torch.stack(nxt).numpy()


def torch_patch(tm, clean: torch.Tensor, corrupted: torch.Tensor, t: int, b: int) -> np.ndarray:
    layers = tm.model.layers
    with torch.no_grad():
        clean_hs = tm(clean, output_hidden_states=True).hidden_states
        out = np.empty((len(layers), clean.shape[1]))
        for l, layer in enumerate(layers):
            for p in range(clean.shape[1]):
                def pre(module, args, kwargs, l=l, p=p):
                    h = (args[0] if args else kwargs["hidden_states"]).clone()
                    h[:, p] = clean_hs[l][:, p]
                    if args:
                        return (h,) + tuple(args[1:]), kwargs
                    kwargs["hidden_states"] = h
                    return args, kwargs

                handle = layer.register_forward_pre_hook(pre, with_kwargs=True)
                try:
                    logits = tm(corrupted).logits[0, -1]
                finally:
                    handle.remove()
                out[l, p] = float(logits[t] - logits[b])
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="GGUF file (default: attn's default model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=96, help="tokens of the text for cache / patterns / lens")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    path = args.model or attn.Model.default_path()
    m = attn.Model.load(path)
    tm = torch_model(path)
    ids = m.to_tokens(TEXT)[: args.tokens]
    tids = torch.tensor([ids])
    L = m.config["n_layers"]
    resid = {f"blocks.{l}.hook_resid_pre" for l in range(L)} | {f"blocks.{L - 1}.hook_resid_post"}
    rows = []

    def add(task, fn_attn, fn_torch):
        ta, ra = timed(fn_attn, args.repeats)
        tt, rt = timed(fn_torch, args.repeats)
        rows.append((task, ta, tt))
        print(f"{task:10s} attn {ta * 1e3:9.1f} ms   torch {tt * 1e3:9.1f} ms   {tt / ta:5.2f}x", flush=True)
        return ra, rt

    with torch.no_grad():
        add("cache", lambda: m.run_with_cache(ids, names=lambda n: n in resid, threads=args.threads),
            lambda: tm(tids, output_hidden_states=True))
        add("patterns", lambda: m.run_with_cache(ids, names=lambda n: n.endswith("hook_pattern"), threads=args.threads),
            lambda: tm(tids, output_attentions=True))
    lens_a, lens_t = add("lens", lambda: m.logit_lens(ids, k=1, threads=args.threads), lambda: torch_lens(tm, tids))
    agree = float((lens_a["top_ids"][:, :, 0] == lens_t[0]).mean())
    dnext = float(np.abs(lens_a["next_logprob"] - lens_t[1]).max())
    t_id, b_id = m.tokenize(" Paris")[0], m.tokenize(" Rome")[0]
    metric = patching.logit_diff(m, t_id, b_id)
    clean, bad = m.to_tokens(CLEAN), m.to_tokens(CORRUPTED)
    pa, pt = add("patching", lambda: patching.patch(m, clean, bad, metric, threads=args.threads),
                 lambda: torch_patch(tm, torch.tensor([clean]), torch.tensor([bad]), t_id, b_id))
    with torch.no_grad():
        tc = tm(torch.tensor([clean])).logits[0, -1]
        tb = tm(torch.tensor([bad])).logits[0, -1]
    t_clean, t_bad = float(tc[t_id] - tc[b_id]), float(tb[t_id] - tb[b_id])
    rec_a = (pa["values"] - pa["corrupted"]) / (pa["clean"] - pa["corrupted"])
    rec_t = (pt - t_bad) / (t_clean - t_bad)
    print(f"lens: top-1 agreement {agree:.1%} over {lens_a['top_ids'].shape[0]} x {len(ids)} cells; "
          f"largest next-token log-probability difference {dnext:.2f}")
    print(f"patching: recovered-fraction tables differ by at most {np.abs(rec_a - rec_t).max():.3f} "
          f"(clean / corrupted metric attn {pa['clean']:.2f} / {pa['corrupted']:.2f}, torch {t_clean:.2f} / {t_bad:.2f})")
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
          f"{args.threads} threads, torch {torch.__version__}, {os.getloadavg()[0]:.2f} load")


if __name__ == "__main__":
    main()
