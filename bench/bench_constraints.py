"""The cost of constrained generation (JSON mode, a JSON schema, a GBNF grammar) per generated token,
outside the forward passes, on the default model: BENCHMARKS.md "Constrained generation's cost".

    PYTHONPATH=build/python .venv/bin/python bench/bench_constraints.py

Each case runs Model.generate(prompt, max_tokens=100, threads=2) five times; the figure is the wall
time minus the forward passes (prompt_ms + gen_ms) per generated token, median of the five.
"""
import statistics
import time

import attn

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer"},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 3},
    },
    "required": ["name", "age", "hobbies"],
}


def main() -> None:
    m = attn.Model.load()
    chat = m.apply_chat_template([("user", "Describe a person in JSON.")])
    story = "Once upon a time"
    sampled = {"temperature": 0.8, "seed": 3}
    cases = [("no constraint", chat, {}), ("JSON mode", chat, {"json_mode": True}),
             ("JSON schema", chat, {"json_schema": PERSON}),
             ('grammar [^"]*', story, {"grammar": 'root ::= [^"]*', **sampled}),
             ("no constraint (sampled)", story, sampled)]
    for name, prompt, kwargs in cases:
        outside, tokens = [], 0
        for _ in range(5):
            t0 = time.perf_counter()
            r = m.generate(prompt, max_tokens=100, threads=2, return_dict=True, **kwargs)
            wall_ms = (time.perf_counter() - t0) * 1000
            tokens = len(r["tokens"])
            outside.append((wall_ms - r["prompt_ms"] - r["gen_ms"]) / max(1, tokens))
        print(f"{name:24s} {tokens:4d} tokens  {statistics.median(outside):.3f} ms per token outside the forward passes")


if __name__ == "__main__":
    main()
