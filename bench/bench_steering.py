"""What steering costs a generation: SmolLM2 (the default Q4_1 file), 128 greedy tokens (EOS banned so that
every run has 128) after one prompt, 2 threads, plain against a Python hook on every pass (attn.steering.add:
the hook runs with the GIL, on a copy of the residual rows) and against the same vector set as a control vector
(added inside the forward pass); interleaved, 5 runs each, median tokens/s of the generation passes.

    PYTHONPATH=build/python .venv/bin/python bench/bench_steering.py
"""
import time, statistics, numpy as np, attn
from attn import steering
m = attn.Model.load()
v = steering.vector(m, " love", " hate", layer=10)
hook = steering.add(10, v, scale=2.0)
cv = {9: 2.0 * v}
res = {"plain": [], "python hook": [], "control vector": []}
prompt = "Once upon a time, in a small village by the sea,"
for rep in range(5):
    for name in res:
        m.set_control_vector(cv if name == "control vector" else None)
        r = m.generate(prompt, max_tokens=128, hooks=[hook] if name == "python hook" else [], return_dict=True,
                       threads=2, logit_bias={2: -1e9})  # no EOS: 128 tokens every time
        assert len(r["tokens"]) == 128, len(r["tokens"])
        res[name].append(127 / (r["gen_ms"] / 1000))
m.set_control_vector(None)
for k, xs in res.items():
    print(f"{k:15s} median {statistics.median(xs):6.1f} tokens/s  (runs: {', '.join(f'{x:.1f}' for x in xs)})")
