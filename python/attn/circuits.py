"""Circuits of one attention head, read straight from the weights (Elhage et al. 2021,
"A Mathematical Framework for Transformer Circuits").

    >>> import attn
    >>> from attn import circuits
    >>> m = attn.Model.load()
    >>> circuits.qk_circuit_top_pairs(m, layer=3, head=2, top=5)   # which token attends to which
    >>> circuits.ov_copying_score(m, layer=3, head=2)              # does the head copy what it reads?
    >>> circuits.copying_scores(m)                                 # float64 [n_layers, n_heads]

Conventions are TransformerLens's (row vectors, x @ W): W_E [vocab, d_model], W_Q / W_K / W_V
[d_model, d_head], W_O [d_head, d_model], W_U [d_model, vocab]. Then

    QK circuit  W_E W_Q W_K^T W_E^T   [query token, key token]   (Elhage: W_E^T W_Q^T W_K W_E)
    OV circuit  W_E W_V W_O W_U       [source token, output token] (Elhage: W_U W_O W_V W_E)

Weights come from the GGUF file through attn's own dequantization (_attn.read_tensor), so
they are the numbers the forward pass multiplies by.

What is folded in and what is left out (as TransformerLens's fold_ln does):
  - The attention-input norm's gain (RMSNorm or LayerNorm gamma of blk.N.attn_norm) is folded
    into W_Q, W_K and W_V: W = diag(gamma) W. The final norm's gain (output_norm) is folded into
    W_U the same way.
  - The norm's division by the RMS / standard deviation of the residual is not part of a weight
    and is left out (each token's embedding enters unnormalized), as is LayerNorm's centering.
  - Biases (GPT-2's b_Q, b_K, b_V, b_O and the norms' betas) are ignored in the circuits;
    head_weights() still returns b_Q / b_K / b_V for anyone who wants them.
  - GPT-2's position embeddings are left out: these are token-content circuits.
  - No 1/sqrt(d_head) attention scale: QK scores are the raw bilinear form, as in
    TransformerLens's model.QK.
  - Rotary models (llama): the QK circuit is the content-only circuit at relative position 0,
    where the query's and key's rotations cancel (R_m^T R_m = I), so the rotation is omitted.
    (llama.cpp's converter permutes the rows of W_Q and W_K inside each head for its rotary
    layout; the same permutation on both sides leaves q . k unchanged.)

GQA: query head h reads KV head h // (n_heads // n_kv_heads), so heads of one group share W_K
and W_V and differ in W_Q and W_O.

Weights are cached per file path (the embedding, the output matrix when untied, and the
d_model x d_model product W_U W_E, the costly reads); a file rewritten in place under the same
path would need `clear_cache()`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from . import _attn

__all__ = [
    "HeadWeights",
    "head_weights",
    "embedding",
    "unembedding",
    "qk_top_pairs_from_weights",
    "qk_circuit_top_pairs",
    "ov_eigenvalues_from_weights",
    "ov_eigenvalues",
    "copying_score",
    "ov_copying_score",
    "copying_scores",
    "clear_cache",
]

# Score entries held at once while scanning the vocab x vocab QK circuit: 2^24 float32 = 64 MiB.
_BLOCK_ENTRIES = 1 << 24


# ---- reading weights ----------------------------------------------------------------------


def _config(model) -> dict:
    c = model.config
    if c["arch"] not in ("llama", "gpt2"):
        raise ValueError(f"circuits: arch = {c['arch']!r} (supported: 'llama', 'gpt2')")
    return c


def _check_index(what: str, value, count: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"circuits: {what} must be an integer, got {type(value).__name__}")
    if not 0 <= value < count:
        raise ValueError(f"circuits: {what} = {value} (must be in [0, {count}))")
    return int(value)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)  # cached arrays are shared between callers
    return a


@functools.lru_cache(maxsize=1)
def _token_embd(path: str) -> np.ndarray:
    return _readonly(_attn.read_tensor(path, "token_embd.weight"))  # [vocab, d_model]


@functools.lru_cache(maxsize=1)
def _output_weight(path: str) -> np.ndarray:
    # output.weight [vocab, d_model] (logits = W_out @ norm(x)), or the embedding when tied.
    if "output.weight" in _attn.tensor_names(path):
        return _readonly(_attn.read_tensor(path, "output.weight"))
    return _token_embd(path)


def embedding(model) -> np.ndarray:
    """W_E: float32 [vocab, d_model], read-only (cached)."""
    _config(model)
    return _token_embd(model.path)


def unembedding(model) -> np.ndarray:
    """W_U: float32 [d_model, vocab] with the final norm's gain folded in (a new array)."""
    _config(model)
    gamma = _attn.read_tensor(model.path, "output_norm.weight")
    return (_output_weight(model.path) * gamma[None, :]).T


@dataclass
class HeadWeights:
    """One head's slices in TransformerLens's layout, attention-norm gain folded into W_Q/K/V.
    float64: the file's values, dequantized to float32, times the gain without rounding."""

    layer: int
    head: int
    kv_head: int  # the KV head this query head reads (GQA)
    W_Q: np.ndarray  # [d_model, d_head]
    W_K: np.ndarray  # [d_model, d_head]
    W_V: np.ndarray  # [d_model, d_head]
    W_O: np.ndarray  # [d_head, d_model]
    b_Q: np.ndarray | None = None  # [d_head], GPT-2 only; not used by the circuits
    b_K: np.ndarray | None = None
    b_V: np.ndarray | None = None


def _layer_tensors(path: str, arch: str, layer: int) -> dict:
    names = [f"blk.{layer}.attn_norm.weight", f"blk.{layer}.attn_output.weight"]
    if arch == "gpt2":
        names += [f"blk.{layer}.attn_qkv.weight", f"blk.{layer}.attn_qkv.bias"]
    else:
        names += [f"blk.{layer}.attn_{x}.weight" for x in "qkv"]
    return dict(zip((n.split(".", 2)[2] for n in names), _attn.read_tensors(path, names)))


def _head_weights(c: dict, t: dict, layer: int, head: int) -> HeadWeights:
    d, hd, n_heads, n_kv = c["d_model"], c["head_dim"], c["n_heads"], c["n_kv_heads"]
    kv_head = head // (n_heads // n_kv)
    gamma = t["attn_norm.weight"]  # [d_model]
    q_rows, kv_rows = slice(head * hd, (head + 1) * hd), slice(kv_head * hd, (kv_head + 1) * hd)
    bias = {}
    if c["arch"] == "gpt2":
        # attn_qkv.weight [3 d_model, d_model]: output rows are [q | k | v], each head-major.
        w, b = t["attn_qkv.weight"], t["attn_qkv.bias"]
        wq, wk, wv = w[:d], w[d : 2 * d], w[2 * d :]
        bias = dict(b_Q=b[:d][q_rows].copy(), b_K=b[d : 2 * d][kv_rows].copy(), b_V=b[2 * d :][kv_rows].copy())
    else:
        wq, wk, wv = t["attn_q.weight"], t["attn_k.weight"], t["attn_v.weight"]  # [out, d_model]

    def fold(rows: np.ndarray) -> np.ndarray:  # [d_head, d_model] (GGUF, y = W x) -> TL [d_model, d_head]
        return np.ascontiguousarray(rows.T.astype(np.float64) * gamma[:, None])

    w_o = t["attn_output.weight"]  # [d_model, n_heads * d_head]
    return HeadWeights(
        layer=layer,
        head=head,
        kv_head=kv_head,
        W_Q=fold(wq[q_rows]),
        W_K=fold(wk[kv_rows]),
        W_V=fold(wv[kv_rows]),
        W_O=np.ascontiguousarray(w_o[:, q_rows].T, dtype=np.float64),
        **bias,
    )


def head_weights(model, layer: int, head: int) -> HeadWeights:
    """Head `head` of layer `layer` (TransformerLens layout, attention-norm gain folded into
    W_Q/W_K/W_V). GQA-aware: the K and V slices are those of KV head head // (n_heads //
    n_kv_heads). For GPT-2 the fused attn_qkv weight and bias are split into q | k | v."""
    c = _config(model)
    layer = _check_index("layer", layer, c["n_layers"])
    head = _check_index("head", head, c["n_heads"])
    return _head_weights(c, _layer_tensors(model.path, c["arch"], layer), layer, head)


# ---- QK circuit ---------------------------------------------------------------------------


def _token_ids(tokens, vocab: int) -> np.ndarray | None:
    if tokens is None:
        return None
    ids = np.asarray(tokens)
    if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
        raise TypeError(f"circuits: tokens must be a 1-D sequence of integer ids, got {ids.dtype} of shape {ids.shape}")
    if ids.size == 0:
        raise ValueError("circuits: tokens is empty")
    bad = ids[(ids < 0) | (ids >= vocab)]
    if bad.size:
        raise ValueError(f"circuits: token id {int(bad[0])} is out of range (vocab size {vocab})")
    return np.unique(ids)


def qk_top_pairs_from_weights(W_E: np.ndarray, W_Q: np.ndarray, W_K: np.ndarray, top: int = 20, tokens=None):
    """The `top` largest entries of W_E W_Q W_K^T W_E^T (rows: query tokens, columns: key
    tokens), optionally over the token ids `tokens` only (for both queries and keys).

    Returns (query ids, key ids, scores float64), best first. The vocab x vocab matrix is never
    held: blocks of query rows are multiplied against the keys (float32 products), keeping the
    running `top` best entries. The search is exact and pruned by Cauchy-Schwarz,
    q . k <= |q| |k|: queries and keys are sorted by norm, largest first, so a block of queries
    whose largest norm is q_max only needs the prefix of keys with q_max |k| above the current
    `top`-th best score, and the scan stops when that prefix is empty. The winners are
    rescored in float64.
    """
    if not isinstance(top, (int, np.integer)) or isinstance(top, bool) or top < 1:
        raise ValueError(f"circuits: top = {top!r} (must be an integer >= 1)")
    ids = _token_ids(tokens, W_E.shape[0])
    E = W_E if ids is None else W_E[ids]
    queries = E @ np.asarray(W_Q, dtype=np.float32)  # [n, d_head] float32 (E is float32)
    keys = E @ np.asarray(W_K, dtype=np.float32)
    n = queries.shape[0]
    top = min(int(top), n * n)

    # Largest norm first; the bound is loosened by 1e-4 relative so float32 rounding of a score
    # can never prune an entry that belongs in the top.
    q_norm = np.linalg.norm(queries.astype(np.float64), axis=1)
    k_norm = np.linalg.norm(keys.astype(np.float64), axis=1)
    q_order, k_order = np.argsort(-q_norm, kind="stable"), np.argsort(-k_norm, kind="stable")
    queries, q_norm = queries[q_order], q_norm[q_order]
    keys_t, k_norm = np.ascontiguousarray(keys[k_order].T), k_norm[k_order]  # [d_head, n]
    block = max(1, _BLOCK_ENTRIES // n)

    best_q = np.empty(0, dtype=np.int64)  # positions in the sorted orders
    best_k = np.empty(0, dtype=np.int64)
    best_score = np.empty(0, dtype=np.float32)
    threshold = -np.inf  # the top-th best score once `top` entries are held
    for start in range(0, n, block):
        n_keys = n
        if threshold > 0:  # only keys with q_max |k| >= threshold can reach the top
            n_keys = int(np.count_nonzero(q_norm[start] * k_norm >= threshold * (1 - 1e-4)))
            if n_keys == 0:
                break  # later queries have smaller norms: nothing left can qualify
        scores = queries[start : start + block] @ keys_t[:, :n_keys]  # [rows, n_keys]
        flat = scores.ravel()
        cand = np.flatnonzero(flat > threshold) if best_score.size == top else np.arange(flat.size)
        if cand.size > top:
            cand = cand[np.argpartition(flat[cand], -top)[-top:]]
        rows, cols = np.divmod(cand, n_keys)
        best_q = np.concatenate([best_q, rows + start])
        best_k = np.concatenate([best_k, cols])
        best_score = np.concatenate([best_score, flat[cand]])
        if best_score.size > top:
            keep = np.argpartition(best_score, -top)[-top:]
            best_q, best_k, best_score = best_q[keep], best_k[keep], best_score[keep]
        if best_score.size == top:
            threshold = float(best_score.min())

    q, k = q_order[best_q], k_order[best_k]  # back to positions in E
    exact = np.einsum("id,id->i", E[q].astype(np.float64) @ W_Q, E[k].astype(np.float64) @ W_K)
    order = np.lexsort((k, q, -exact))  # best first; ties by (query, key) for a stable output
    q, k, exact = q[order], k[order], exact[order]
    if ids is not None:
        q, k = ids[q], ids[k]
    return q, k, exact


def qk_circuit_top_pairs(model, layer: int, head: int, top: int = 20, tokens=None) -> list[dict]:
    """The (query token, key token) pairs with the largest QK-circuit entries
    W_E W_Q^h W_K^h^T W_E^T of head `head` in layer `layer`: which token, as a query, most
    wants to attend to which token as a key, by content alone.

    Norm gains are folded into W_Q / W_K (TransformerLens's fold_ln); LayerNorm centering,
    biases, position embeddings and the 1/sqrt(d_head) scale are left out. For rotary models
    this is the content-only circuit at relative position 0 (the rotation is omitted).
    `tokens` restricts both queries and keys to those ids. Computed blockwise over the
    vocabulary (never a vocab x vocab matrix in memory).

    Returns a list of dicts {query_token, key_token, query_text, key_text, score}, best first.
    """
    hw = head_weights(model, layer, head)
    q, k, s = qk_top_pairs_from_weights(embedding(model), hw.W_Q, hw.W_K, top, tokens)
    return [
        dict(query_token=int(a), key_token=int(b), query_text=model.detokenize([int(a)]),
             key_text=model.detokenize([int(b)]), score=float(v))
        for a, b, v in zip(q, k, s)
    ]


# ---- OV circuit ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _unembed_embed(path: str) -> np.ndarray:
    # W_U W_E = diag(gamma_final) W_out^T W_E [d_model, d_model] in float64, summed over the
    # vocabulary in chunks (no float64 copy of a whole vocab x d_model matrix). Shared by every
    # head of the model.
    W_E, W_out = _token_embd(path), _output_weight(path)
    m = np.zeros((W_out.shape[1], W_E.shape[1]))
    for start in range(0, W_E.shape[0], 8192):
        part = slice(start, start + 8192)
        m += W_out[part].T.astype(np.float64) @ W_E[part].astype(np.float64)
    gamma = _attn.read_tensor(path, "output_norm.weight").astype(np.float64)
    return _readonly(gamma[:, None] * m)


def _ov_small(W_V: np.ndarray, W_O: np.ndarray, unembed_embed: np.ndarray) -> np.ndarray:
    # The OV circuit is A B with A = W_E W_V [vocab, d_head] and B = W_O W_U [d_head, vocab].
    # A B and B A = W_O (W_U W_E) W_V [d_head, d_head] have the same nonzero eigenvalues
    # (Sylvester / the standard AB-BA argument), so the small product is enough.
    return W_O.astype(np.float64) @ (unembed_embed @ W_V.astype(np.float64))


def _sorted_eigenvalues(m: np.ndarray) -> np.ndarray:
    ev = np.linalg.eigvals(m)
    return ev[np.lexsort((ev.imag, ev.real, -np.abs(ev)))]  # largest magnitude first


def ov_eigenvalues_from_weights(W_E: np.ndarray, W_V: np.ndarray, W_O: np.ndarray, W_U: np.ndarray) -> np.ndarray:
    """The d_head eigenvalues of W_O W_U W_E W_V, which are the nonzero eigenvalues of the
    [vocab, vocab] OV circuit W_E W_V W_O W_U (plus zeros where the head's rank is below d_head).
    complex128, largest magnitude first."""
    return _sorted_eigenvalues(_ov_small(W_V, W_O, W_U.astype(np.float64) @ W_E.astype(np.float64)))


def ov_eigenvalues(model, layer: int, head: int) -> np.ndarray:
    """Eigenvalues of head `head`'s OV circuit W_U W_O^h W_V^h W_E (Elhage's orientation; the
    same spectrum as TransformerLens's W_E W_V W_O W_U), from the small d_head x d_head product
    (W_V^h W_E)(W_U W_O^h): no vocab x vocab matrix. Returns the d_head eigenvalues
    (complex128, largest magnitude first); the full circuit's other vocab - d_head eigenvalues
    are zero. Norm gains are folded into W_V and W_U; centering and biases are ignored."""
    hw = head_weights(model, layer, head)
    return _sorted_eigenvalues(_ov_small(hw.W_V, hw.W_O, _unembed_embed(model.path)))


def copying_score(eigenvalues: np.ndarray) -> float:
    """sum(lambda) / sum(|lambda|), in [-1, 1]: +1 when every eigenvalue is positive real (the
    head copies the tokens it attends to into the logits), -1 when all are negative real.

    A real matrix's complex eigenvalues come in conjugate pairs, so sum(lambda) (= the trace) is
    real; we take the real part to drop rounding residue. |sum| <= sum(|.|) (triangle
    inequality) keeps the ratio in [-1, 1]; a conjugate pair a +- bi adds 2a above and
    2 sqrt(a^2 + b^2) below, so rotation-like (complex) structure pulls the score toward 0.
    Zero eigenvalues add nothing to either sum, so the small product's spectrum gives the
    same score as the full vocab x vocab circuit. 0 for an all-zero spectrum.
    """
    ev = np.asarray(eigenvalues)
    total = float(np.abs(ev).sum())
    return float(ev.sum().real) / total if total > 0 else 0.0


def ov_copying_score(model, layer: int, head: int) -> float:
    """copying_score(ov_eigenvalues(model, layer, head)): positive for heads whose OV circuit
    copies tokens (Elhage et al. 2021)."""
    return copying_score(ov_eigenvalues(model, layer, head))


def copying_scores(model) -> np.ndarray:
    """OV copying score of every head: float64 [n_layers, n_heads]. W_U W_E [d_model, d_model]
    is computed once (cached per file); each head then costs a d_head x d_head eigenproblem."""
    c = _config(model)
    unembed_embed = _unembed_embed(model.path)
    out = np.empty((c["n_layers"], c["n_heads"]))
    for layer in range(c["n_layers"]):
        tensors = _layer_tensors(model.path, c["arch"], layer)
        ue_v = {}  # kv_head -> (W_U W_E) W_V [d_model, d_head], shared by a GQA group's heads
        small = np.empty((c["n_heads"], c["head_dim"], c["head_dim"]))
        for head in range(c["n_heads"]):
            hw = _head_weights(c, tensors, layer, head)
            if hw.kv_head not in ue_v:
                ue_v[hw.kv_head] = unembed_embed @ hw.W_V
            small[head] = hw.W_O @ ue_v[hw.kv_head]
        out[layer] = [copying_score(ev) for ev in np.linalg.eigvals(small)]  # batched eigenproblems
    return out


def clear_cache() -> None:
    """Drops the cached embedding, unembedding and W_U W_E."""
    for f in (_token_embd, _output_weight, _unembed_embed):
        f.cache_clear()
