"""Direct logit attribution: how much each part of the network writes, straight into the residual
stream, toward one token's logit (or toward the difference between two tokens' logits), at one
position. TransformerLens's `cache.decompose_resid` / `stack_head_results` with
`apply_ln_to_stack`, for attn's models.

    >>> import attn
    >>> m = attn.Model.load()
    >>> r = m.logit_attribution("The Eiffel Tower is in the city of Paris. The Eiffel Tower is in the city of",
    ...                         target=" Paris", baseline=" London")
    >>> sorted(zip(r["values"], r["names"]))[-3:]      # the parts that push " Paris" over " London" most

The residual stream at the last block's output is a sum: the embeddings, then what each block's
attention and MLP add. The final norm divides that sum by one number (its RMS, or for LayerNorm
its standard deviation after centering), taken from the actual run and then held fixed, so the
logit is linear in the parts and each part gets its share:

    share(c) = (c / scale) . (gain * (W_U[target] - W_U[baseline])) / logit_scale

(LayerNorm: c centered first; its bias is one more part, "ln_final.bias"; phi2's unembedding bias
is "output.bias".) The attention of a
block splits further into its heads (z_h W_O_h, "L{l}H{h}"), its output bias ("L{l}.attn_bias")
and what the model's own arithmetic adds beyond float64 (the 8-bit activations of quantized
products: "L{l}.attn_rest", small). Models whose blocks norm their outputs before the add
(Gemma 2 / 3) get one part per attention block ("L{l}.attn"). The parts sum to "total", the
logit (difference) the frozen-scale formula gives, which matches the model's own "logit" up to the
rounding of its quantized unembedding. With a final softcap (Gemma 2) both are before the cap.
"""
from __future__ import annotations

import numpy as np

from . import _attn, circuits

__all__ = ["logit_attribution"]


def _token(model, what: str, token) -> int:
    if isinstance(token, str):
        ids = model.tokenize(token)
        if len(ids) != 1:
            raise ValueError(f"logit_attribution: {what} {token!r} is {len(ids)} tokens, not one")
        return ids[0]
    if not isinstance(token, (int, np.integer)) or isinstance(token, bool):
        raise TypeError(f"logit_attribution: {what} must be a token id or a one-token str, got {type(token).__name__}")
    vocab = model.config["vocab_size"]
    if not 0 <= token < vocab:
        raise ValueError(f"logit_attribution: {what} = {token} (must be in [0, {vocab}))")
    return int(token)


def logit_attribution(model, tokens, target, *, baseline=None, pos: int = -1, threads=None) -> dict:
    """The direct contribution of every part of the network to target's logit at position `pos`
    (minus baseline's, when given). `tokens`: text (read as generate reads a prompt) or ids;
    target / baseline: token ids or one-token strings. Returns {"names": [...], "values":
    float64 [parts] (in the order of the forward pass), "total": their sum, "logit": the
    model's own logit (difference) at pos, "scale": the final norm's frozen divisor, "pos"}."""
    c = model.config
    ids = model._ids("logit_attribution", tokens)
    n = len(ids)
    if not isinstance(pos, (int, np.integer)) or isinstance(pos, bool) or not -n <= pos < n:
        raise ValueError(f"logit_attribution: pos = {pos!r} (must be an integer in [-{n}, {n}))")
    pos = int(pos) % n
    t = _token(model, "target", target)
    b = None if baseline is None else _token(model, "baseline", baseline)

    L, H, hd = c["n_layers"], c["n_heads"], c["head_dim"]
    heads = not c["post_norms"]
    wanted = {"hook_embed", "hook_pos_embed"} | {
        f"blocks.{l}.{p}" for l in range(L) for p in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")}
    if heads:
        wanted |= {f"blocks.{l}.attn.hook_z" for l in range(L)}
    logits, cache = model.run_with_cache(ids, names=lambda name: name in wanted, threads=threads)

    # The unembedding direction with the final norm's gain folded in, and its frozen divisor.
    path = model.path
    names = set(_attn.tensor_names(path))
    out_w = circuits._output_weight(path)  # cached per file, as the circuits read it
    gain = _attn.read_tensor(path, "output_norm.weight").astype(np.float64)
    u = out_w[t].astype(np.float64) - (out_w[b].astype(np.float64) if b is not None else 0.0)
    x = cache[f"blocks.{L - 1}.hook_resid_post"][0, pos].astype(np.float64)
    eps = c["norm_eps"]
    if c["norm"] == "layer":
        scale = float(np.sqrt(((x - x.mean()) ** 2).mean() + eps))
        direction = gain * u
        direction = direction - direction.mean()  # (c - mean c) . g == c . (g - mean g)
    else:
        scale = float(np.sqrt((x * x).mean() + eps))
        direction = gain * u
    direction = direction / scale / c["logit_scale"]

    parts: list[tuple[str, float]] = []

    def add(name: str, vec: np.ndarray) -> None:
        parts.append((name, float(np.dot(vec.astype(np.float64), direction))))

    def at(name: str) -> np.ndarray:
        return cache[name][0, pos].astype(np.float64)

    if c["arch"] == "gpt2":
        add("embed", at("hook_embed"))
        add("pos_embed", at("hook_pos_embed"))
        rest = at("blocks.0.hook_resid_pre") - at("hook_embed") - at("hook_pos_embed")
        if np.abs(rest).max() > 0:
            add("embed_rest", rest)
    else:
        add("embed", at("blocks.0.hook_resid_pre"))
    rs = c["residual_scale"]
    for l in range(L):
        attn_out = at(f"blocks.{l}.hook_resid_mid") - at(f"blocks.{l}.hook_resid_pre")
        if heads:
            tensors = [f"blk.{l}.attn_output.weight"] + (
                [f"blk.{l}.attn_output.bias"] if f"blk.{l}.attn_output.bias" in names else [])
            read = _attn.read_tensors(path, tensors)
            w_o = read[0].astype(np.float64)  # [d_model, n_heads * head_dim]: y = W_O z
            z = cache[f"blocks.{l}.attn.hook_z"][0, pos].astype(np.float64)  # [n_heads, head_dim]
            per_head = rs * (w_o.T @ direction).reshape(H, hd)  # each head's z -> its share
            shares = (per_head * z).sum(axis=1)
            explained = rs * (w_o @ z.reshape(-1))
            for h in range(H):
                parts.append((f"L{l}H{h}", float(shares[h])))
            if len(read) > 1:
                bias = rs * read[1].astype(np.float64)
                add(f"L{l}.attn_bias", bias)
                explained = explained + bias
            add(f"L{l}.attn_rest", attn_out - explained)
        else:
            add(f"L{l}.attn", attn_out)
        add(f"L{l}.mlp", at(f"blocks.{l}.hook_resid_post") - at(f"blocks.{l}.hook_resid_mid"))
    if c["norm"] == "layer" and "output_norm.bias" in names:
        beta = _attn.read_tensor(path, "output_norm.bias").astype(np.float64)
        parts.append(("ln_final.bias", float(np.dot(beta, u)) / c["logit_scale"]))
    if "output.bias" in names:  # phi2's unembedding bias, added to the logits directly
        ob = _attn.read_tensor(path, "output.bias").astype(np.float64)
        parts.append(("output.bias", float(ob[t] - (ob[b] if b is not None else 0.0)) / c["logit_scale"]))

    row = logits[pos].astype(np.float64)
    logit = row[t] - (row[b] if b is not None else 0.0)
    if c["final_softcap"] > 0:  # attribute the logit before the cap
        cap = c["final_softcap"]
        pre = cap * np.arctanh(np.clip(row / cap, -1 + 1e-7, 1 - 1e-7))
        logit = pre[t] - (pre[b] if b is not None else 0.0)
    values = np.array([v for _, v in parts], dtype=np.float64)
    return {"names": [name for name, _ in parts], "values": values, "total": float(values.sum()),
            "logit": float(logit), "scale": scale, "pos": pos}
