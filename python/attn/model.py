"""attn.Model: a GGUF language model (Llama or GPT-2 family) running on attn's kernels.

    >>> import attn
    >>> m = attn.Model.load()            # the default model, SmolLM2-135M-Instruct (Q4_1)
    >>> ids = m.tokenize("Hello world")
    >>> m.logits(ids).shape              # (n_tokens, vocab)
    >>> m.generate("Once upon a time", max_tokens=32)
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from . import _attn


def _threads(threads) -> int:
    if threads is None:
        return 0
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise ValueError(f"threads = {threads!r} (must be None or an integer >= 0)")
    return threads


def _token_list(name: str, tokens) -> list[int]:
    arr = np.asarray(tokens)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise TypeError(f"{name}: expected a 1-D sequence of integer token ids, got {arr.dtype} of shape {arr.shape}")
    if arr.size and (arr.min() < -(2**31) or arr.max() >= 2**31):
        raise ValueError(f"{name}: token id out of the int32 range")
    return [int(t) for t in arr]


class Model:
    """A loaded model. Use Model.load(path=None); None loads the default model."""

    def __init__(self, native: "_attn.Model"):
        self._m = native

    @staticmethod
    def load(path: str | None = None) -> "Model":
        if path is not None and not isinstance(path, str):
            raise TypeError(f"Model.load: path must be a str or None, got {type(path).__name__}")
        return Model(_attn.Model.load(path or ""))

    @staticmethod
    def default_path() -> str:
        return _attn.Model.default_path()

    @property
    def path(self) -> str:
        return self._m.path

    @property
    def config(self) -> dict:
        """The architecture's hyperparameters (n_layers, d_model, n_heads, ...)."""
        return self._m.config

    def tokenize(self, text: str | bytes, special: bool = True) -> list[int]:
        """Token ids of `text` (no BOS added). Special-token text such as <|im_start|> becomes
        its single id when `special`."""
        if isinstance(text, str):
            text = text.encode("utf-8", "surrogateescape")
        if not isinstance(text, (bytes, bytearray)):
            raise TypeError(f"tokenize: text must be str or bytes, got {type(text).__name__}")
        return list(self._m.tokenize(bytes(text), special))

    def detokenize_bytes(self, ids: Iterable[int]) -> bytes:
        return self._m.detokenize(_token_list("detokenize", list(ids)))

    def detokenize(self, ids: Iterable[int]) -> str:
        """The text of `ids`; bytes that are not valid UTF-8 on their own become U+FFFD."""
        return self.detokenize_bytes(ids).decode("utf-8", "replace")

    def logits(self, tokens: Sequence[int], threads: int | None = None) -> np.ndarray:
        """Next-token logits for every position: float32 [len(tokens), vocab]."""
        return self._m.logits(_token_list("logits", tokens), _threads(threads))

    def apply_chat_template(self, messages: Sequence[tuple[str, str]] | Sequence[dict], add_generation_prompt=True) -> str:
        pairs = [(m["role"], m["content"]) if isinstance(m, dict) else tuple(m) for m in messages]
        return self._m.apply_chat_template(pairs, add_generation_prompt)

    def generate(self, prompt: str | Sequence[int], max_tokens: int = 128, temperature: float = 0.0,
                 seed: int | None = None, *, top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
                 repetition_penalty: float = 1.0, stop: Sequence[str] | None = None, chat: bool = False,
                 threads: int | None = None, return_dict: bool = False):
        """Continues `prompt` (text, or token ids) and returns the generated text.

        temperature 0 is greedy. With chat=True the prompt is wrapped as a user message in the
        model's chat template. With return_dict=True, returns the tokens, text and timings."""
        if isinstance(prompt, str):
            if chat:
                prompt = self.apply_chat_template([("user", prompt)])
            ids = ([self._m.bos_id] if self._m.add_bos else []) + self.tokenize(prompt)
        else:
            ids = _token_list("generate", prompt)
        if not isinstance(max_tokens, int) or max_tokens < 0:
            raise ValueError(f"generate: max_tokens = {max_tokens!r} (must be an integer >= 0)")
        if seed is None:
            seed = int(np.random.default_rng().integers(0, 2**63))
        r = self._m.generate(ids, max_tokens, float(temperature), int(seed), int(top_k), float(top_p),
                             float(min_p), float(repetition_penalty), list(stop or []), _threads(threads))
        r["text"] = r["text"].decode("utf-8", "replace")
        return r if return_dict else r["text"]

    def __repr__(self) -> str:
        c = self.config
        return (f"Model({self.path!r}: {c['arch']}, {c['n_layers']} layers, d_model {c['d_model']}, "
                f"{c['n_heads']}/{c['n_kv_heads']} heads, vocab {c['vocab_size']})")
