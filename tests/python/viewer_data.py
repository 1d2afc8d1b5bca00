"""Synthetic data for the attention viewer page (tools/attn/report/report.html).

`attn inspect` fills the page with a model's real attention; this module builds data in the same
schema without a model, so the page can be developed and tested on its own:

    python tests/python/viewer_data.py --tokens 1500 --out /tmp/r.html

The heads follow a structured layout (previous-token and local heads early, duplicate-token and
induction heads in the middle, many sink heads, a few diffuse ones), and every pattern is a real
causal softmax over a handful of candidate keys per query, so rows sum to 1 and the scores in
heads_scores are measured on the patterns themselves. The data also holds a synthetic logit lens
(make_lens: what each layer's residual stream predicts next), unless make_data(lens=False) or --no-lens.

It also reads a rendered report back (load_report_data, head_csr), which the browser tests use to
check the page against the data independently of the page's own decoding.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPLATE = os.path.join(ROOT, "tools", "attn", "report", "report.html")
PLACEHOLDER = "/*ATTN_DATA*/"
ROLES = ["induction", "previous-token", "duplicate-token", "sink", "local", "diffuse"]

# Word pieces like a byte-level BPE's decoded tokens, plus the awkward ones a real report holds:
# newlines, tabs, empty pieces, replacement characters, wide characters, and HTML that must stay text.
_WORDS = (
    " the a an of to in and that it was for on with as he she they you at by from this had not but all"
    " were when we there can one time little girl boy dog cat house tree sun moon river king queen"
    " happy sad big small ran saw said went found looked into over under after before then once upon"
    " forest garden friend mother father story day night light dark water bird flower"
).split()
_PIECES = [" " + w for w in _WORDS] + ["ing", "ed", "s", ",", ".", "!", "?", "'s", " \"", "\"", "Once", "The"]
_ODD = ["\n", "\n\n", "\t", "", "\ufffd", " 日本", "語", " 😀", "  ", " </script>", " <!--", " &amp;", "<b>",
        " café"]
VOCAB = _PIECES + _ODD  # token id -> text; every text is distinct


def make_tokens(n: int, n_prompt: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """Token texts and ids: a random prompt, then text that often copies earlier spans (so
    induction and duplicate-token heads have something to find)."""
    vocab = VOCAB
    odd_ids = np.arange(len(_PIECES), len(vocab))
    ids = np.empty(n, dtype=np.int64)
    i = 0
    while i < n:
        if i >= 8 and i >= min(n_prompt, 16) and rng.random() < 0.45:
            # copy a span of 4..24 tokens from earlier text
            length = int(rng.integers(4, 25))
            start = int(rng.integers(0, max(1, i - length)))
            span = ids[start : min(start + length, i)]
            take = min(len(span), n - i)
            ids[i : i + take] = span[:take]
            i += take
        else:
            ids[i] = int(rng.choice(odd_ids)) if rng.random() < 0.06 else int(rng.integers(0, len(_PIECES)))
            i += 1
    if n > 0:
        ids[0] = vocab.index("Once")
    return [vocab[t] for t in ids], ids


def _previous_occurrence(ids: np.ndarray) -> np.ndarray:
    """For every position, the last earlier position holding the same id, or -1."""
    last: dict[int, int] = {}
    prev = np.full(len(ids), -1, dtype=np.int64)
    for i, t in enumerate(ids.tolist()):
        prev[i] = last.get(t, -1)
        last[t] = i
    return prev


def _role_layout(layers: int, heads: int, rng: np.random.Generator) -> list[str]:
    """A role for every head, layer-major, shaped like a small model's: positional heads early,
    copying heads in the middle, sinks everywhere and most of all late."""
    out = []
    for layer in range(layers):
        d = layer / max(1, layers - 1)
        weights = {
            "previous-token": 0.35 * (1 - d) ** 2 + 0.02,
            "local": 0.25 * (1 - d) + 0.03,
            "duplicate-token": 0.15 * np.exp(-(((d - 0.35) / 0.2) ** 2)) + 0.01,
            "induction": 0.3 * np.exp(-(((d - 0.55) / 0.18) ** 2)) + 0.01,
            "sink": 0.15 + 0.45 * d,
            "diffuse": 0.08 + 0.1 * d,
        }
        p = np.array([weights[r] for r in ROLES])
        out += [ROLES[k] for k in rng.choice(len(ROLES), size=heads, p=p / p.sum())]
    return out


def _head_pattern(role: str, prev_occ: np.ndarray, rng: np.random.Generator):
    """One head's causal pattern as (rows, cols, weights) float64 entries, sorted by (row, col),
    with weights summing to 1 in every row."""
    n = len(prev_occ)
    i = np.arange(n)
    k_rand = 10 if role == "diffuse" else 5
    # Candidate keys per query: sink, self, the 7 previous tokens, the induction target (the token
    # after the previous copy), the previous copy itself, and a few random earlier keys.
    induction = np.where(prev_occ >= 0, prev_occ + 1, 0)
    duplicate = np.where(prev_occ >= 0, prev_occ, 0)
    cand = [np.zeros(n, np.int64), i] + [np.maximum(i - d, 0) for d in range(1, 8)]
    cand += [induction, duplicate]
    cand += [(rng.random(n) * (i + 1)).astype(np.int64) for _ in range(k_rand)]
    keys = np.stack(cand, axis=1)  # [n, K]
    strength = rng.uniform(0.7, 1.3)
    logits = rng.normal(0.0, 1.2 if role == "diffuse" else 0.6, size=keys.shape)
    has_copy = prev_occ >= 0
    if role == "previous-token":
        logits[:, 2] += 6.0 * strength
    elif role == "sink":
        logits[:, 0] += 5.5 * strength
    elif role == "local":
        for d in range(0, 8):
            logits[:, 1 + d] += (3.2 - 0.35 * d) * strength
    elif role == "induction":
        logits[:, 9] += np.where(has_copy, 6.5 * strength, -9.0)
        logits[:, 0] += 2.5
    elif role == "duplicate-token":
        logits[:, 10] += np.where(has_copy, 6.0 * strength, -9.0)
        logits[:, 0] += 2.5
    elif role == "diffuse":
        logits[:, 0] += 1.0
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    # Candidates can coincide (i - 3 clipped to 0 is the sink): add their weights.
    flat = (i[:, None] * n + keys).ravel()
    uniq, inverse = np.unique(flat, return_inverse=True)
    weights = np.bincount(inverse, weights=w.ravel())
    return uniq // n, uniq % n, weights


def _scores(rows, cols, weights, prev_occ: np.ndarray, role: str, layer: int, head: int) -> dict:
    n = len(prev_occ)
    i = np.arange(n)
    full = np.zeros(n)

    def mean_at(target, valid):
        hit = np.zeros(n)
        sel = (cols == target[rows]) & valid[rows]
        np.add.at(hit, rows[sel], weights[sel])
        return float(hit[valid].mean()) if valid.any() else 0.0

    has_copy = prev_occ >= 0
    ent = -weights * np.log(np.maximum(weights, 1e-12))
    np.add.at(full, rows, ent)
    local = np.zeros(n)
    near = (rows - cols) <= 4
    np.add.at(local, rows[near], weights[near])
    return {
        "layer": layer,
        "head": head,
        "previous_token": round(mean_at(i - 1, i >= 1), 4),
        "duplicate_token": round(mean_at(prev_occ, has_copy), 4),
        "induction": round(mean_at(prev_occ + 1, has_copy), 4),
        "first_token": round(mean_at(np.zeros(n, np.int64), i >= 1), 4),
        "entropy": round(float(full.mean()), 4),
        "local": round(float(local.mean()), 4),
        "role": role,
    }


def make_lens(ids, texts, layers: int, rng: np.random.Generator) -> dict:
    """Synthetic logit-lens data (the `lens` field of the viewer's schema) for a text of token ids
    `ids` in a vocabulary `texts` (id -> text) through a model of `layers` layers: layers + 1 rows, row
    0 the embeddings. The lens gets the next token right more often, and is surer, the deeper it reads;
    early rows often predict the input token itself. Consistent like a real lens: where top is the
    next token, next_p == top_p, elsewhere next_p < top_p; next_p is 0 at the last position."""
    ids = np.asarray(ids, dtype=np.int64)
    n, rows, vocab = len(ids), layers + 1, len(texts)
    nxt = np.full(n, -1, dtype=np.int64)
    nxt[:-1] = ids[1:]
    has_next = nxt >= 0
    depth = (np.arange(rows) / max(1, layers))[:, None]  # [rows, 1]: 0 at the embeddings, 1 at the output
    hit = (rng.random((rows, n)) < 0.03 + 0.6 * depth**1.5) & has_next[None, :]
    top = rng.integers(0, vocab, size=(rows, n))
    echo = rng.random((rows, n)) < 0.6 * (1 - depth) ** 2  # the embeddings read back as the input token
    top = np.where(echo, ids[None, :], top)
    clash = ~hit & (top == nxt[None, :])  # a miss must not be the next token
    top[clash] = (top[clash] + rng.integers(1, vocab, size=int(clash.sum()))) % vocab
    top = np.where(hit, nxt[None, :], top)
    sure = 0.04 + 0.9 * depth * rng.uniform(0.35, 1.0, (rows, n)) + rng.normal(0.0, 0.04, (rows, n))
    top_p = np.round(np.clip(sure, 0.01, 0.99), 4)
    next_p = np.where(hit, top_p, np.round(top_p * rng.uniform(0.0, 0.9, (rows, n)) ** 2, 4))
    next_p[:, ~has_next] = 0.0
    return {
        "layers": rows,
        "top": [int(v) for v in top.ravel()],
        "top_p": [float(v) for v in top_p.ravel()],
        "next_p": [float(v) for v in next_p.ravel()],
        "texts": {str(int(i)): texts[int(i)] for i in np.unique(top)},
    }


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()).decode("ascii")


def make_data(
    n_tokens: int = 48,
    layers: int = 30,
    heads: int = 9,
    kv_heads: int = 3,
    n_prompt: int | None = None,
    seed: int = 0,
    model: str = "Synthetic SmolLM2-shaped model",
    index_bytes: int | None = None,
    lens: bool = True,
) -> dict:
    """A data object in the viewer's schema (see the comment at the top of report.html).
    index_bytes forces the width of the key indices (2 or 4); by default 2 when n <= 65535.
    lens=False leaves out the logit lens (drawn from its own random stream, so the rest of the data
    is the same either way)."""
    rng = np.random.default_rng(seed)
    n = int(n_tokens)
    if n_prompt is None:
        n_prompt = max(1, n // 3) if n > 1 else n
    tokens, ids = make_tokens(n, n_prompt, rng)
    prev_occ = _previous_occurrence(ids)
    roles = _role_layout(layers, heads, rng)
    if index_bytes is None:
        index_bytes = 2 if n <= 65535 else 4
    index_dtype = {2: np.uint16, 4: np.uint32}[index_bytes]
    head_entries, scores = [], []
    for idx, role in enumerate(roles):
        layer, head = divmod(idx, heads)
        rows, cols, weights = _head_pattern(role, prev_occ, rng)
        scores.append(_scores(rows, cols, weights, prev_occ, role, layer, head))
        vals = np.rint(weights * 255).astype(np.int64)
        keep = vals > 0
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
        offsets = np.zeros(n + 1, dtype=np.uint32)
        np.cumsum(np.bincount(rows, minlength=n), out=offsets[1:])
        head_entries.append(
            {"rows": _b64(offsets), "cols": _b64(cols.astype(index_dtype)), "vals": _b64(vals.astype(np.uint8))}
        )
    out = {
        "model": model,
        "layers": layers,
        "heads": heads,
        "kv_heads": kv_heads,
        "prompt": "".join(tokens[:n_prompt]),
        "tokens": tokens,
        "token_ids": [int(t) for t in ids],
        "n_prompt": n_prompt,
        "roles": list(ROLES),
        "heads_scores": scores,
        "probe": "synthetic patterns from tests/python/viewer_data.py (seed %d), scored on the text below" % seed,
        "patterns": {
            "n": n,
            "scale": 255,
            "index_bytes": 2 if index_dtype == np.uint16 else 4,
            "heads": head_entries,
        },
    }
    if lens:
        out["lens"] = make_lens(ids, VOCAB, layers, np.random.default_rng([seed, 1]))
    return out


def render(data: dict, out_path: str, template_path: str = TEMPLATE) -> str:
    """Writes the viewer page with `data` in it, as `attn inspect` does (tools/attn/report.cc):
    every '<' in the JSON becomes \\u003c so no token text can close the data's <script>."""
    with open(template_path, encoding="utf-8") as f:
        page = f.read()
    if page.count(PLACEHOLDER) != 1:
        raise ValueError("%s: expected the placeholder %s once" % (template_path, PLACEHOLDER))
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    page = page.replace(PLACEHOLDER, text)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(page)
    return out_path


_DATA_RE = re.compile(r'<script id="attn-data" type="application/json">(.*?)</script>', re.S)


def load_report_data(path: str) -> dict:
    """The data object inside a rendered report (ours or one `attn inspect` wrote)."""
    with open(path, encoding="utf-8") as f:
        m = _DATA_RE.search(f.read())
    if not m:
        raise ValueError("%s: no <script id=\"attn-data\"> element" % path)
    return json.loads(m.group(1))


def head_csr(data: dict, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, vals) of head `index` (layer * heads + head), decoded from base64."""
    p = data["patterns"]
    h = p["heads"][index]
    index_dtype = "<u2" if p["index_bytes"] == 2 else "<u4"
    rows = np.frombuffer(base64.b64decode(h["rows"]), dtype="<u4")
    cols = np.frombuffer(base64.b64decode(h["cols"]), dtype=index_dtype)
    vals = np.frombuffer(base64.b64decode(h["vals"]), dtype=np.uint8)
    return rows, cols, vals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=48, help="sequence length S (default 48)")
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--heads", type=int, default=9)
    ap.add_argument("--kv-heads", type=int, default=3)
    ap.add_argument("--prompt-tokens", type=int, default=None, help="how many of the tokens are the prompt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-lens", action="store_true", help="leave out the logit lens data")
    ap.add_argument("--out", default="report.html", help="where to write the page (default report.html)")
    args = ap.parse_args()
    data = make_data(args.tokens, args.layers, args.heads, args.kv_heads, args.prompt_tokens, args.seed,
                     lens=not args.no_lens)
    render(data, args.out)
    mb = os.path.getsize(args.out) / 1e6
    print("%s: %d tokens, %d x %d heads, %.1f MB" % (args.out, args.tokens, args.layers, args.heads, mb))


if __name__ == "__main__":
    main()
