#!/usr/bin/env python3
"""attn serve: the time a /v1/completions request takes end to end against the server's own
prompt and generation timings (what HTTP, JSON and sampling add). Starts build/bin/attn serve on a
free port, sends one warm-up and ten requests of 64 greedy tokens, prints the medians.

    .venv/bin/python bench/bench_serve.py
"""
import json
import statistics
import subprocess
import time
import urllib.request

p = subprocess.Popen(["build/bin/attn", "serve", "--port", "0", "-t", "2"], stdout=subprocess.PIPE, text=True)
url = "http://" + p.stdout.readline().split("http://", 1)[1].split()[0]
def post(body):
    req = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode())
    t0 = time.perf_counter()
    with urllib.request.urlopen(req) as r:
        j = json.loads(r.read())
    return time.perf_counter() - t0, j
body = {"prompt": "The history of the printing press begins", "max_tokens": 64, "temperature": 0, "cache_prompt": False}
post(body)
walls, gen, pp = [], [], []
for _ in range(10):
    w, j = post(body)
    walls.append(w * 1000); gen.append(j["timings"]["predicted_ms"]); pp.append(j["timings"]["prompt_ms"])
    n = j["usage"]["completion_tokens"]
p.terminate()
print(f"{n} tokens: wall median {statistics.median(walls):.1f} ms, server prompt {statistics.median(pp):.1f} ms + generation {statistics.median(gen):.1f} ms, overhead {statistics.median(w - a - b for w, a, b in zip(walls, pp, gen)):.1f} ms; {n / statistics.median(walls) * 1000:.1f} tokens/s end to end")
