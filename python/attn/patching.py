"""Activation patching (causal tracing; TransformerLens's `patching` module): run a corrupted input,
put back one activation from a clean run, and see how much of the clean behaviour returns. What
can be restored by one cell is what carries the information there.

    >>> import attn
    >>> from attn import patching
    >>> m = attn.Model.load()
    >>> clean = "The Eiffel Tower is in the city of"
    >>> corrupted = "The Colosseum is in the city of"          # the same number of tokens
    >>> metric = patching.logit_diff(m, " Paris", " Rome")      # at the last position
    >>> r = patching.patch(m, clean, corrupted, metric, what="resid_pre")
    >>> r["values"].shape                                        # [n_layers, n_pos]

Every cell is one forward pass of the corrupted tokens with a hook that writes the clean value into
that cell (a row of the residual stream, or one head's output at every position), so a model of
30 layers on 12 tokens costs 360 passes. A pass with a hook that changes nothing gives the plain
pass's numbers bit for bit, so a cell whose clean and corrupted values are equal reads exactly
"corrupted".
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["patch", "logit_diff", "POINTS"]

# What `patch` can restore: per layer and position (a row of [pos, d_model]), or per layer and
# head ("z": the head's output before W_O, at every position).
POINTS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z")


def logit_diff(model, target, baseline, pos: int = -1) -> Callable[[np.ndarray], float]:
    """A metric: logits[pos, target] - logits[pos, baseline] (token ids or one-token strings)."""
    from .attribution import _token

    t, b = _token(model, "target", target), _token(model, "baseline", baseline)

    def metric(logits: np.ndarray) -> float:
        return float(logits[pos, t]) - float(logits[pos, b])

    return metric


def patch(model, clean, corrupted, metric: Callable[[np.ndarray], float], *, what: str = "resid_pre",
          threads=None) -> dict:
    """For each layer and position (what = resid_pre, resid_mid, resid_post, attn_out, mlp_out) or
    each layer and head (what = "z"), the metric of the corrupted run with that one activation
    taken from the clean run. clean / corrupted: texts (read as generate reads a prompt) or token
    ids, of the same length; metric(logits float32 [n, vocab]) -> float. Returns {"values":
    float64 [n_layers, n_pos] or [n_layers, n_heads], "clean": metric of the clean run,
    "corrupted": metric of the corrupted run}."""
    if what not in POINTS:
        raise ValueError(f"patch: what = {what!r} (one of {', '.join(POINTS)})")
    if not callable(metric):
        raise TypeError(f"patch: metric must be callable (logits -> float), got {type(metric).__name__}")
    clean_ids = model._ids("patch", clean)
    bad_ids = model._ids("patch", corrupted)
    if len(clean_ids) != len(bad_ids):
        raise ValueError(f"patch: clean and corrupted have {len(clean_ids)} and {len(bad_ids)} tokens "
                         "(they must have the same number)")
    c = model.config
    L, n = c["n_layers"], len(clean_ids)
    point = "attn.hook_z" if what == "z" else f"hook_{what}"
    names = {f"blocks.{l}.{point}" for l in range(L)}
    clean_logits, cache = model.run_with_cache(clean_ids, names=lambda name: name in names, threads=threads)

    def measure(logits) -> float:
        value = metric(logits)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(f"patch: the metric returned {value!r}, not a number") from None

    result = {"clean": measure(clean_logits),
              "corrupted": measure(model.run_with_hooks(bad_ids, threads=threads))}
    cols = c["n_heads"] if what == "z" else n
    values = np.empty((L, cols), dtype=np.float64)
    for l in range(L):
        full = f"blocks.{l}.{point}"
        source = cache[full]
        for j in range(cols):
            def restore(act, hook, j=j, source=source):
                if what == "z":
                    act[0, :, j] = source[0, :, j]
                else:
                    act[0, j] = source[0, j]

            values[l, j] = measure(model.run_with_hooks(bad_ids, hooks=[(full, restore)], threads=threads))
    result["values"] = values
    return result
