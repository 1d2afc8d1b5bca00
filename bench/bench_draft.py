#!/usr/bin/env python3
"""Speculative decoding with a draft model (attn generate --model-draft): the default SmolLM2-135M
(Q4_1) drafting for the same weights dequantized to F32 (the target; --target-type f16 for F16),
greedy, with and without the draft, on chat prompts that quote their input and ones that do not.

The target is made here from the default file (llama.cpp's gguf package: each Q4_1 tensor
dequantized and stored as F32 or F16, the metadata copied), so the pair is one model in two precisions:
a stand-in for the usual pair of a large model and a small one of its family (none of which is on
PyPI). Both in this process through attn.Model.generate; the configurations interleaved in each
round; the figure is the wall time of one request (prompt + --tokens tokens), medians. The table
checks that the draft leaves the text unchanged and reports the drafts kept.

    bench/.venv/bin/python bench/bench_draft.py --write-md
"""
from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- draft-bench:begin -->", "<!-- draft-bench:end -->"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_lookup import PROMPTS  # noqa: E402
from bench_model import machine, write_section  # noqa: E402


def dequantized_copy(src: str, dst: str, dtype: str) -> None:
    """src with every quantized tensor stored as `dtype` ("f16" or "f32"; F32 ones as they are)."""
    import gguf

    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, r.fields["general.architecture"].contents())
    for name, field in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        vtype = field.types[0]
        if name == "general.file_type":
            w.add_key_value(name, int(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32),
                            vtype)
        elif vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(name, field.contents(), vtype, sub_type=field.types[-1])
        else:
            w.add_key_value(name, field.contents(), vtype)
    for t in r.tensors:
        if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            w.add_tensor(t.name, np.array(t.data), raw_shape=list(reversed(t.shape.tolist())),
                         raw_dtype=t.tensor_type)
        else:
            w.add_tensor(t.name, gguf.quants.dequantize(t.data, t.tensor_type).astype(
                np.float16 if dtype == "f16" else np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--draft-max", type=int, default=16, help="the second draft configuration's")
    ap.add_argument("--draft-p-min", type=float, default=0.5, help="the second draft configuration's")
    ap.add_argument("--target-type", choices=("f16", "f32"), default="f32",
                    help="the dequantized target's tensor type")
    ap.add_argument("--write-md", action="store_true", help="write the table into BENCHMARKS.md")
    args = ap.parse_args()

    sys.path.insert(0, os.path.join(ROOT, "build", "python"))
    import attn

    draft = attn.Model.load()
    target_path = os.path.join(os.path.dirname(draft.path),
                               f"SmolLM2-135M-Instruct.{args.target_type.upper()}-from-Q4_1.gguf")
    if not os.path.exists(target_path):
        dequantized_copy(draft.path, target_path + ".tmp", args.target_type)
        os.replace(target_path + ".tmp", target_path)
    target = attn.Model.load(target_path)
    drafts = [(8, 0.75, False), (8, 0.75, True), (args.draft_max, args.draft_p_min, False)]
    configs = {"target alone": {}}
    for m, p, a in drafts:
        configs[f"draft {m}/{p}{' adaptive' if a else ''}"] = {"draft_model": draft, "draft_max": m,
                                                              "draft_p_min": p, "draft_adaptive": a}
    rows = []
    for name, text in PROMPTS.items():
        prompt = target.apply_chat_template([("user", text)])
        times = {c: [] for c in configs}
        results = {}
        for _ in range(args.rounds):
            for c, kw in configs.items():
                t0 = time.perf_counter()
                r = target.generate(prompt, args.tokens, threads=args.threads, return_dict=True, **kw)
                times[c].append(time.perf_counter() - t0)
                results[c] = r
        med = {c: statistics.median(v) for c, v in times.items()}
        plain = results["target alone"]
        cells = []
        for c in list(configs)[1:]:
            r = results[c]
            cells.append((med[c], r["drafted"], r["draft_accepted"], r["text"] == plain["text"]))
        rows.append((name, len(plain["tokens"]), med["target alone"], cells))
        print(f"{name:8s} {len(plain['tokens']):4d} tokens  alone {med['target alone']:.2f} s  " + "  ".join(
            f"{c}: {t:.2f} s ({med['target alone'] / t:.2f}x, kept {k}/{d}, same {same})"
            for c, (t, d, k, same) in zip(list(configs)[1:], cells)), flush=True)

    if args.write_md:
        cmd = "bench/.venv/bin/python bench/bench_draft.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        lines = [
            BEGIN,
            "## Speculative decoding with a draft model (`--model-draft`)",
            "",
            f"{datetime.date.today().isoformat()}, {machine()}, {args.threads} threads. Command: `{cmd}`.",
            f"Target: SmolLM2-135M-Instruct dequantized to {args.target_type.upper()} (made by the script from "
            "the default Q4_1 file); draft: the default Q4_1 file. Greedy, f16 KV cache, "
            f"{args.tokens} tokens; wall time of one request (prompt + answer), median of {args.rounds} "
            "interleaved rounds; the drafts with draft_max / draft_p_min as each column says (8 / 0.75: "
            "the defaults), adaptive: with draft_adaptive (`--draft-adaptive`).",
            "",
            "| prompt | tokens | target alone (s) | "
            + " | ".join(f"draft {m} / {p}{' adaptive' if a else ''} (s) | speedup | drafts kept / run"
                         for m, p, a in drafts)
            + " | same text |",
            "|---|---:|---:|" + "---:|---:|---:|" * len(drafts) + "---|",
        ]
        for name, n, alone, cells in rows:
            lines.append(f"| {name} | {n} | {alone:.2f} | " + " | ".join(
                f"{t:.2f} | {alone / t:.2f}x | {k} / {d}" for t, d, k, _ in cells)
                + f" | {'yes' if all(c[3] for c in cells) else 'NO'} |")
        lines.append(END)
        print(write_section(BEGIN, END, "\n".join(lines)))


if __name__ == "__main__":
    main()
