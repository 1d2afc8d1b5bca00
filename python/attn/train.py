"""attn.Trainer: train a small GPT-2-style decoder from scratch on the CPU (include/attn/train.h).

    >>> import numpy as np, attn
    >>> t = attn.Trainer(vocab_size=256, context=64, n_layers=2, d_model=64, n_heads=4, batch=8)
    >>> tokens = np.random.randint(0, 256, size=(8, 65), dtype=np.int32)   # [batch, context + 1]
    >>> loss = t.forward_backward(tokens)    # mean cross-entropy; fills every gradient
    >>> norm = t.update()                    # clip, AdamW at learning_rate(step), step += 1

Parameters carry their GGUF names (token_embd.weight, blk.0.attn_qkv.weight, ...) and shapes
(rows, cols), vectors (cols,). Results are bit-identical from run to run.
"""
from __future__ import annotations

import numpy as np

from . import _attn


class Trainer:
    """The trainer's whole state: parameters, gradients, AdamW moments and the step.

    Model: vocab_size, context, n_layers, d_model, n_heads (head_dim = d_model / n_heads), d_ff
    (0 = attention-only), norm_eps, attn_sinks (gpt-oss's learned sinks: a parameter
    blk.L.attn_sinks.weight [n_heads] per layer, one more logit in each head's softmax). Options: batch, steps, lr (peak), warmup, min_lr_ratio (cosine
    floor), beta1, beta2, adam_eps, weight_decay (matrices only), clip (global norm, 0 = off),
    init_std, seed, threads (0 = every core). A bad setting raises ValueError naming it.
    """

    def __init__(self, vocab_size=256, context=256, n_layers=2, d_model=128, n_heads=4, d_ff=0, norm_eps=1e-5,
                 attn_sinks=False, batch=16, steps=1000, lr=1e-3, warmup=100, min_lr_ratio=0.1, beta1=0.9, beta2=0.95,
                 adam_eps=1e-8, weight_decay=0.1, clip=1.0, init_std=0.02, seed=0, threads=0):
        self._t = _attn.Trainer(vocab_size=int(vocab_size), context=int(context), n_layers=int(n_layers),
                                d_model=int(d_model), n_heads=int(n_heads), d_ff=int(d_ff),
                                norm_eps=float(norm_eps), attn_sinks=bool(attn_sinks), batch=int(batch), steps=int(steps), lr=float(lr),
                                warmup=int(warmup), min_lr_ratio=float(min_lr_ratio), beta1=float(beta1),
                                beta2=float(beta2), adam_eps=float(adam_eps), weight_decay=float(weight_decay),
                                clip=float(clip), init_std=float(init_std), seed=int(seed), threads=int(threads))

    @property
    def config(self) -> dict:
        return self._t.config

    @property
    def options(self) -> dict:
        return self._t.options

    def param_names(self) -> list[str]:
        """Parameter names in GGUF order."""
        return self._t.param_names()

    def get_param(self, name: str) -> np.ndarray:
        """A float32 copy of a parameter: (rows, cols), or (cols,) for a vector."""
        return self._t.get_param(name)

    def get_grad(self, name: str) -> np.ndarray:
        """A float32 copy of a parameter's gradient from the last forward_backward."""
        return self._t.get_grad(name)

    def set_param(self, name: str, value) -> None:
        """Overwrites a parameter (shape as get_param returns it; converted to float32)."""
        self._t.set_param(name, np.ascontiguousarray(value, dtype=np.float32))

    def forward_backward(self, tokens) -> float:
        """tokens: int [batch, context + 1]. Returns the mean loss; fills every gradient."""
        return self._t.forward_backward(_tokens(tokens, 2))

    def losses(self, tokens) -> np.ndarray:
        """Per-position losses [batch, context] of tokens [batch, context + 1] (forward only)."""
        return self._t.losses(_tokens(tokens, 2))

    def update(self) -> float:
        """Clips the gradients and applies one AdamW step; returns the norm before clipping."""
        return self._t.update()

    @property
    def step(self) -> int:
        return self._t.step

    @step.setter
    def step(self, s: int) -> None:
        self._t.step = int(s)

    def learning_rate(self, step: int) -> float:
        return self._t.learning_rate(int(step))

    def logits(self, tokens) -> np.ndarray:
        """Logits [n, vocab] of one sequence of n <= context tokens."""
        return self._t.logits(_tokens(tokens, 1))

    def patterns(self, tokens) -> np.ndarray:
        """Attention patterns [n_layers, n_heads, n, n] of one sequence (row = query)."""
        return self._t.patterns(_tokens(tokens, 1))

    def save(self, path: str) -> None:
        """Writes a GGUF checkpoint (model, AdamW moments, step) atomically."""
        self._t.save(str(path))

    def load(self, path: str) -> None:
        """Restores a checkpoint written by save for the same model config."""
        self._t.load(str(path))


def _tokens(tokens, ndim: int) -> np.ndarray:
    a = np.asarray(tokens)
    if a.ndim != ndim:
        want = "[batch, context + 1]" if ndim == 2 else "a 1-D sequence"
        raise ValueError(f"tokens: expected {want}, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"tokens: dtype {a.dtype} is not an integer type")
    if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
        raise ValueError("tokens: ids do not fit in int32")
    return np.ascontiguousarray(a, dtype=np.int32)
