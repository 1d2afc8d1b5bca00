"""Activation steering: push what a model writes toward a concept by adding a vector to its residual
stream at one layer on every forward pass of the generation. The vector is the difference of the
residual streams of two texts at their last token (ActAdd, Turner et al. 2023: " love" minus
" hate"); several pairs give the mean of their differences (contrastive activation addition,
Rimsky et al. 2024).

    >>> import attn
    >>> from attn import steering
    >>> m = attn.Model.load()
    >>> v = steering.vector(m, " love", " hate", layer=10)
    >>> m.generate("I think dogs are", max_tokens=30, hooks=[steering.add(10, v, scale=2.0)])

`attn generate --steer-add TEXT --steer-sub TEXT --steer-layer L --steer-scale S` does the same
from the command line (include/attn/steer.h).

llama.cpp's control vectors (the GGUF files of `--control-vector`, written by repeng and
llama-cvector-generator) are the same idea set on the model rather than passed as hooks: a
direction per block, added to the block's output at every position of every pass (every
generation, `attn serve`'s slots, perplexity). `load_control_vector` reads one for
`Model.set_control_vector`, `save_control_vector` writes one llama.cpp loads:

    >>> m.set_control_vector({9: 2.0 * v})        # block 9's output is block 10's input
    >>> cv = steering.control_vector(m, ["I love you", "This is wonderful"], ["I hate you", "This is terrible"])
    >>> steering.save_control_vector("love.gguf", {9: v}, model_hint="llama")
    >>> m.set_control_vector(steering.load_control_vector(m, "love.gguf", scale=2.0))
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np

__all__ = ["vector", "add", "control_vector", "load_control_vector", "save_control_vector"]


def _by_block(rows) -> dict:
    """Per-block rows (empty where a block has none) as {block: float32 [d_model]}."""
    return {layer: np.asarray(row, dtype=np.float32) for layer, row in enumerate(rows) if len(row)}


def _sequences(model, name: str, texts) -> list[list[int]]:
    """A text, token ids, or a non-empty list of either, as token id lists."""
    def one(t):
        if isinstance(t, str):
            return list(model.to_tokens(t))
        if isinstance(t, (list, tuple, np.ndarray)) and all(isinstance(i, (int, np.integer)) for i in t):
            return [int(i) for i in t]
        return None
    single = one(texts)
    if single is not None and (isinstance(texts, str) or len(texts) == 0 or not isinstance(texts[0], (list, tuple))):
        return [single]
    if isinstance(texts, (list, tuple)) and texts:
        seqs = [one(t) for t in texts]
        if all(s is not None for s in seqs):
            return seqs
    raise TypeError(f"steering.vector: {name} must be a text, token ids, or a non-empty list of them, got {texts!r}")


def vector(model, add, sub, layer: int, threads: int | None = None) -> np.ndarray:
    """blocks.{layer}.hook_resid_pre at the last token of `add` minus the same of `sub`, float32
    [d_model]; lists of texts (or of token id lists) give the mean of the pairs' differences.
    Texts are tokenized as generate does (BOS first when the model adds one). A model without BOS
    parks attention on its first token, whose activations are unlike the others': a text of one
    token gives the vector of that position (it can still steer)."""
    adds, subs = _sequences(model, "add", add), _sequences(model, "sub", sub)
    if len(adds) != len(subs):
        raise ValueError(f"steering.vector: {len(adds)} texts to add and {len(subs)} to subtract (give pairs)")
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"steering.vector: layer must be an integer, got {layer!r}")
    return model._m.steering_vector(adds, subs, layer, 0 if threads is None else int(threads))


def add(layer: int, vector: np.ndarray, scale: float = 1.0, from_position: int = 1,
        point: str = "hook_resid_pre") -> tuple[str, Callable]:
    """A hook (for generate's or run_with_hooks's `hooks`) that adds scale * vector to
    blocks.{layer}.{point} at every position >= from_position. The default from_position=1 leaves
    position 0 alone: models park unused attention there (the attention sink), and moving its
    activations breaks them."""
    v = np.ascontiguousarray(vector, dtype=np.float32)
    if v.ndim != 1:
        raise ValueError(f"steering.add: the vector must be 1-D [d_model], got shape {v.shape}")
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise ValueError(f"steering.add: layer = {layer!r} (must be an integer >= 0)")
    if isinstance(from_position, bool) or not isinstance(from_position, int) or from_position < 0:
        raise ValueError(f"steering.add: from_position = {from_position!r} (must be an integer >= 0)")
    delta = np.float32(scale) * v

    def hook(act: np.ndarray, point_: "object") -> None:
        if act.shape[-1] != delta.shape[0]:
            raise ValueError(f"steering.add: a vector of {delta.shape[0]} values for {point_.name}, whose rows "
                             f"have {act.shape[-1]}")
        first = max(0, from_position - point_.pos0)
        act[0, first:] += delta

    return f"blocks.{layer}.{point}", hook


def control_vector(model, add, sub, threads: int | None = None) -> dict:
    """The same differences at every block's output at once, {block: float32 [d_model]} for blocks
    1 to n_layers - 1 (a control vector has none for block 0): what `attn cvector` writes, for
    set_control_vector or save_control_vector. Block l's equals vector(..., layer=l + 1)."""
    adds, subs = _sequences(model, "add", add), _sequences(model, "sub", sub)
    if len(adds) != len(subs):
        raise ValueError(f"steering.control_vector: {len(adds)} texts to add and {len(subs)} to subtract (give pairs)")
    return _by_block(model._m.control_vector_from_pairs(adds, subs, 0 if threads is None else int(threads)))


def load_control_vector(model, path, scale: float = 1.0, layer_range: tuple[int, int] | None = None) -> dict:
    """The directions of llama.cpp control vector file(s) for this model, {block: float32 [d_model]}:
    `path` a file or a list of files (their directions add up, each times `scale`, or a list of
    (file, scale) pairs), blocks outside layer_range = (start, end) (inclusive) dropped, as
    llama.cpp's --control-vector-scaled and --control-vector-layer-range do. ValueError naming the
    file for one that is not a control vector of this model's width and depth."""
    items = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    files = []
    for item in items:
        p, s = item if isinstance(item, tuple) else (item, scale)
        files.append((os.fspath(p), float(s)))
    start, end = (-1, -1) if layer_range is None else (int(layer_range[0]), int(layer_range[1]))
    return _by_block(model._m.load_control_vectors(files, start, end))


def save_control_vector(path, directions: dict, model_hint: str = "") -> None:
    """Writes {block: vector} as a control vector file llama.cpp's --control-vector loads
    (general.architecture "controlvector", tensors direction.N; block 0 cannot have one)."""
    if not directions:
        raise ValueError("save_control_vector: no directions")
    n = max(int(k) for k in directions) + 1
    rows = [[] for _ in range(n)]
    for k, v in directions.items():
        rows[int(k)] = np.ascontiguousarray(v, dtype=np.float32).ravel().tolist()
    from . import _attn
    _attn.save_control_vector(str(path), rows, model_hint)
