#!/usr/bin/env python3
"""Chat templates, attn's Jinja interpreter vs Python's jinja2: the 70 real templates of
tests/fixtures/chat_templates/ on their ten conversations each (tests/fixtures/chat_templates_jinja.json),
the cases jinja2 renders.

jinja2 is set up as transformers sets it up for chat templates (ImmutableSandboxedEnvironment,
trim_blocks, lstrip_blocks, loopcontrols, its tojson and globals; tests/fixtures/make_jinja_fixtures.py),
each template compiled once. attn: attn.ChatTemplate(source), parsed once. Both render every case
--rounds times in this process, one thread, interleaved per template; the figures are the median
over rounds of one pass over all cases, divided by the number of cases (microseconds per rendering),
plus the one-time parse / compile of all templates. Every rendering is also compared: the outputs
must be equal. Measures how much a chat request's prompt costs before the model runs.

Needs jinja2 3.1 and the built module: e.g. bench/.venv-llama (llama-cpp-python depends on jinja2),
or any Python 3.11 venv with jinja2 and numpy:
    PYTHONPATH=build/python bench/.venv-llama/bin/python bench/bench_jinja.py --write-md
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
BEGIN, END = "<!-- jinja-bench:begin -->", "<!-- jinja-bench:end -->"
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, FIXTURES)
os.environ.setdefault("ATTN_NUM_THREADS", "1")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--write-md", action="store_true", help="record the table in BENCHMARKS.md")
    args = ap.parse_args()

    import jinja2

    import attn
    from make_jinja_fixtures import make_environment  # transformers' environment, as the fixture used

    with open(os.path.join(FIXTURES, "chat_templates_jinja.json"), encoding="utf-8") as f:
        fixture = json.load(f)
    now = fixture["strftime_now"].replace("T", " ")
    env = make_environment()
    templates = []
    compile_jinja = compile_attn = 0.0
    for t in fixture["templates"]:
        with open(os.path.join(FIXTURES, "chat_templates", t["file"]), encoding="utf-8") as f:
            source = f.read()
        t0 = time.perf_counter()
        compiled = env.from_string(source)
        t1 = time.perf_counter()
        parsed = attn.ChatTemplate(source)
        t2 = time.perf_counter()
        compile_jinja += t1 - t0
        compile_attn += t2 - t1
        cases = [c["context"] for c in t["cases"] if "rendered" in c]
        for c in cases:
            if parsed.render(now=now, **c) != compiled.render(**c):
                raise SystemExit(f"{t['file']}: attn and jinja2 differ")
        templates.append((compiled, parsed, cases))
    n_cases = sum(len(c) for _, _, c in templates)

    jinja_us, attn_us = [], []
    for _ in range(args.rounds):
        tj = ta = 0.0
        for compiled, parsed, cases in templates:
            t0 = time.perf_counter()
            for c in cases:
                compiled.render(**c)
            t1 = time.perf_counter()
            for c in cases:
                parsed.render(now=now, **c)
            t2 = time.perf_counter()
            tj += t1 - t0
            ta += t2 - t1
        jinja_us.append(tj / n_cases * 1e6)
        attn_us.append(ta / n_cases * 1e6)
    mj, ma = statistics.median(jinja_us), statistics.median(attn_us)
    import subprocess

    from bench_model import machine, write_section

    exe = sys.executable
    if exe.startswith(ROOT + os.sep):
        exe = os.path.relpath(exe, ROOT)
    cmd = "PYTHONPATH=build/python " + shlex.join([exe, "bench/bench_jinja.py", *sys.argv[1:]])
    git = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [BEGIN, "## Chat templates: attn's Jinja interpreter vs jinja2", "",
             f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {machine()}",
             f"- Command: `{cmd}` (git {git}); jinja2 {jinja2.__version__} set up as transformers sets it up",
             f"- The {len(templates)} real templates of tests/fixtures/chat_templates/ on the {n_cases} cases jinja2 "
             f"renders (every output equal to jinja2's); one thread; median over {args.rounds} rounds. attn's render "
             "includes the Python binding's way in (the variables as JSON text, parsed in C++); `attn serve` renders "
             "from C++ directly.",
             "",
             "| | attn | jinja2 | jinja2 / attn |",
             "|---|---:|---:|---:|",
             f"| render, us per rendering | {ma:.1f} | {mj:.1f} | {mj / ma:.2f}x |",
             f"| parse (attn) / compile (jinja2) all templates, ms | {compile_attn * 1e3:.1f} | "
             f"{compile_jinja * 1e3:.1f} | {compile_jinja / compile_attn:.2f}x |",
             END]
    table = "\n".join(lines)
    print(table)
    if args.write_md:
        write_section(BEGIN, END, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
