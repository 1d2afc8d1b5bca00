"""attn.Model: a GGUF language model (Llama or GPT-2 family) running on attn's kernels.

    >>> import attn
    >>> m = attn.Model.load()            # the default model, SmolLM2-135M-Instruct (Q4_1)
    >>> ids = m.tokenize("Hello world")
    >>> m.logits(ids).shape              # (n_tokens, vocab)
    >>> m.generate("Once upon a time", max_tokens=32)

A look inside, with TransformerLens's names and shapes (batch 1):

    >>> logits, cache = m.run_with_cache("The cat sat. The cat", names=lambda n: "pattern" in n)
    >>> cache["blocks.3.attn.hook_pattern"].shape          # [1, n_heads, q_pos, k_pos]
    >>> def knock_out(z, hook):                             # z: [1, pos, n_heads, d_head]
    ...     z[:, :, 2] = 0
    >>> m.run_with_hooks("The cat sat. The cat", hooks=[("blocks.5.attn.hook_z", knock_out)])
    >>> m.head_scores()                                     # every head's detector scores
    >>> m.ablate("The cat sat. The cat", heads=[(5, 2)])    # loss change without head 5.2
"""
from __future__ import annotations

import difflib
import json
import numbers
from typing import Callable, Iterable, Sequence, Union

import numpy as np

from . import _attn, attribution, circuits


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


def _constraint(name: str, grammar, json_schema) -> tuple[str, str]:
    """grammar (GBNF text) and json_schema (a dict or its JSON text) as the strings the engine takes."""
    if grammar is not None and not isinstance(grammar, str):
        raise TypeError(f"{name}: grammar must be GBNF text (a str), got {type(grammar).__name__}")
    if json_schema is None:
        schema = ""
    elif isinstance(json_schema, str):
        schema = json_schema
    elif isinstance(json_schema, (dict, bool)):
        schema = json.dumps(json_schema)
    else:
        raise TypeError(f"{name}: json_schema must be a dict or its JSON text, got {type(json_schema).__name__}")
    if grammar == "" or (isinstance(json_schema, str) and json_schema == ""):
        raise ValueError(f"{name}: an empty grammar or json_schema (give None for no constraint)")
    return grammar or "", schema


def _logit_bias(name: str, bias) -> list[tuple[int, float]]:
    if bias is None:
        return []
    if not isinstance(bias, dict):
        raise TypeError(f"{name}: logit_bias must be a dict of token id -> bias, got {type(bias).__name__}")
    out = []
    for k, v in bias.items():
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or not 0 <= k < 2**31:
            raise ValueError(f"{name}: logit_bias key {k!r} is not a token id")
        out.append((int(k), float(v)))
    return out


def _int(what: str, name: str, x, minimum: int) -> int:
    if not isinstance(x, numbers.Integral) or isinstance(x, bool) or x < minimum:
        raise ValueError(f"{what}: {name} = {x!r} (must be an integer >= {minimum})")
    return int(x)


# Points whose columns are heads x head_dim: TransformerLens shows them as [batch, pos, head, d_head].
_HEAD_POINTS = frozenset({"attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_rot_q", "attn.hook_rot_k",
                          "attn.hook_z"})
def _kv_dtype(call: str, kv_type: str):
    kv_types = {"f16": _attn.DType.float16, "bf16": _attn.DType.bfloat16, "f32": _attn.DType.float32,
                "q8_0": _attn.DType.q8_0}
    if kv_type not in kv_types:
        raise ValueError(f"{call}: kv_type = {kv_type!r} (must be one of {', '.join(kv_types)})")
    return kv_types[kv_type]


def _lookup(call: str, lookup) -> int:
    if not isinstance(lookup, int) or isinstance(lookup, bool) or not 0 <= lookup <= 23:
        raise ValueError(f"{call}: lookup = {lookup!r} (must be an integer in [0, 23])")
    return lookup


_ATTENTION_POINTS = frozenset({"attn.hook_attn_scores", "attn.hook_pattern"})

NamesFilter = Union[None, str, Sequence[str], Callable[[str], bool]]


def _full_name(name: str, layer: int) -> str:
    return name if layer < 0 else f"blocks.{layer}.{name}"


def _replacement(full: str, act: np.ndarray, result) -> np.ndarray:
    """A hook's returned array, checked and made float32 C-contiguous."""
    try:
        r = np.asarray(result)
    except (TypeError, ValueError) as e:
        raise ValueError(f"hook {full}: the returned value is not an array ({e})") from None
    if r.shape != act.shape:
        raise ValueError(f"hook {full}: the returned array has shape {r.shape}, expected {act.shape}")
    if not np.can_cast(r.dtype, np.float32, casting="same_kind"):
        raise ValueError(f"hook {full}: the returned array's dtype {r.dtype} cannot be cast to float32")
    return np.ascontiguousarray(r, dtype=np.float32)


class HookPoint:
    """The second argument of a hook function: the point's full name, its layer (-1 for
    hook_embed, hook_pos_embed and ln_final.hook_normalized) and pos0, the position of the
    activation's first row (0 in run_with_hooks; in generate, where the pass's tokens sit: the
    prompt's pass starts at 0, each new token's pass holds that one token)."""

    __slots__ = ("name", "layer", "pos0")

    def __init__(self, name: str, layer: int, pos0: int = 0):
        self.name = name
        self.layer = layer
        self.pos0 = pos0

    def __repr__(self) -> str:
        return f"HookPoint({self.name!r}, layer={self.layer}, pos0={self.pos0})"


class Session:
    """The KV caches of one sequence, kept between Model.generate(..., session=) calls: each call
    evaluates only the prompt tokens after those already cached. Not for concurrent use."""

    def __init__(self, native: "_attn.Session"):
        self._s = native
        self._stream: "GenerationStream | None" = None  # a stream generating in this session

    def _check_idle(self, what: str) -> None:
        if self._stream is not None and not self._stream._done:
            raise RuntimeError(f"{what}: the session is in use by a running stream "
                               "(iterate it to its end or close() it first)")

    @property
    def n_past(self) -> int:
        """Positions in the cache."""
        self._check_idle("Session.n_past")
        return self._s.n_past

    @property
    def tokens(self) -> list[int]:
        """The cached token ids."""
        self._check_idle("Session.tokens")
        return list(self._s.tokens)

    @property
    def capacity(self) -> int:
        return self._s.capacity

    def reset(self) -> None:
        """Forgets every position."""
        self._check_idle("Session.reset")
        self._s.reset()


class GenerationStream:
    """A generation's text as it comes: Model.generate(..., stream=True). Iterating gives str pieces
    as soon as they are final (each ends on a whole character; a piece that could begin a stop
    string waits until it cannot), and together they are the text generate() returns for the same
    arguments. The generation runs on a thread of its own (the GIL is free while it computes).
    `result` is generate()'s dict (return_dict=True) once the generation has ended, None before.
    close(), leaving a `with` block or dropping the stream stops it before its next forward pass
    (stop_reason "cancelled"). An error raises from the iteration."""

    def __init__(self, native: "_attn.TextStream", logprobs: int, echo: bool, session: Session | None):
        self._s = native
        self._logprobs = logprobs
        self._echo = echo
        self._session = session
        self._done = False
        self._result: dict | None = None
        if session is not None:
            session._stream = self

    def __iter__(self) -> "GenerationStream":
        return self

    def __next__(self) -> str:
        if self._done:
            raise StopIteration
        try:
            piece = self._s.next()
        except BaseException:
            self._end()
            raise
        if piece is None:
            self._end()
            raise StopIteration
        return piece.decode("utf-8", "replace")

    def _end(self) -> None:
        if self._done:
            return
        self._s.close()
        self._done = True
        r = self._s.result(self._logprobs, self._echo)
        if r is not None:
            r["text"] = r["text"].decode("utf-8", "replace")
        self._result = r

    @property
    def result(self) -> dict | None:
        """generate()'s dict for the whole generation once it has ended (else None)."""
        return self._result

    def close(self) -> None:
        """Stops the generation (if it still runs) and waits for its thread."""
        self._end()

    def __enter__(self) -> "GenerationStream":
        return self

    def __exit__(self, *exc) -> None:
        self._end()

    def __del__(self) -> None:
        s = getattr(self, "_s", None)
        if s is not None and not getattr(self, "_done", True):
            s.close()


class Report:
    """The attention viewer's page for one text (Model.report): one self-contained HTML file."""

    def __init__(self, html: str, data: dict):
        self.html = html
        self._data = data

    @property
    def heads(self) -> list[dict]:
        """Every head's scores and role, layer-major (as `attn heads --json` gives them)."""
        return self._data["heads_scores"]

    @property
    def tokens(self) -> list[str]:
        return self._data["tokens"]

    def save(self, path: str) -> None:
        """Writes the page (open it in a browser; it needs no network)."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.html)

    def _repr_html_(self) -> str:
        # Jupyter: the page in a sandboxed frame of its own, so its script and styles stay inside.
        import html as _html
        return ('<iframe sandbox="allow-scripts allow-popups" style="width:100%;height:900px;border:0" srcdoc="'
                + _html.escape(self.html, quote=True) + '"></iframe>')

    def __repr__(self) -> str:
        return f"<attn.Report: {len(self.tokens)} tokens, {len(self.heads)} heads, {len(self.html):,} bytes>"


def _event_stream(native: "_attn.OpenAiStream"):
    """The chunks of an OpenAI stream as dicts; closing the generator cancels the request."""
    try:
        while (event := native.next()) is not None:
            yield json.loads(event)
    finally:
        native.close()


class Model:
    """A loaded model. Use Model.load(path=None); None loads the default model."""

    def __init__(self, native: "_attn.Model"):
        self._m = native
        self._points: dict[str, tuple[str, int]] | None = None  # full name -> (name, layer), in pass order
        self._head_dim = int(native.config["head_dim"])

    @staticmethod
    def load(path: str | None = None, *, chat_template: str | None = None) -> "Model":
        """Opens a GGUF model (None: the default model). chat_template: a Jinja chat template to use
        instead of the file's (llama.cpp's --chat-template-file; ValueError if it does not parse)."""
        if path is not None and not isinstance(path, str):
            raise TypeError(f"Model.load: path must be a str or None, got {type(path).__name__}")
        if chat_template is not None and not isinstance(chat_template, str):
            raise TypeError(f"Model.load: chat_template must be a str or None, got {type(chat_template).__name__}")
        return Model(_attn.Model.load(path or "", chat_template))

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

    def to_tokens(self, text: str) -> list[int]:
        """Token ids of `text` as the model reads a prompt: BOS first when the model adds one
        (as generate does), then tokenize(text)."""
        if not isinstance(text, str):
            raise TypeError(f"to_tokens: text must be a str, got {type(text).__name__}")
        return ([self._m.bos_id] if self._m.add_bos else []) + self.tokenize(text)

    def detokenize_bytes(self, ids: Iterable[int]) -> bytes:
        return self._m.detokenize(_token_list("detokenize", list(ids)))

    def detokenize(self, ids: Iterable[int]) -> str:
        """The text of `ids`; bytes that are not valid UTF-8 on their own become U+FFFD."""
        return self.detokenize_bytes(ids).decode("utf-8", "replace")

    def logits(self, tokens: Sequence[int], threads: int | None = None, kv_type: str = "f32") -> np.ndarray:
        """Next-token logits for every position: float32 [len(tokens), vocab]. kv_type: the KV
        cache's storage, "f32" (exact, the default), "f16" (as generate() and llama.cpp), "bf16" or
        "q8_0" (8-bit blocks of 32 values with a float16 scale, as llama.cpp's q8_0 cache)."""
        return self._m.logits(_token_list("logits", tokens), _threads(threads), _kv_dtype("logits", kv_type))

    def perplexity(self, text: str | Sequence[int], context: int | None = None, chunks: int | None = None,
                   kv_type: str = "f16", base: "Model | None" = None, base_kv_type: str | None = None,
                   threads: int | None = None) -> dict:
        """The perplexity of `text` as llama.cpp's llama-perplexity measures it: the tokens (BOS
        first when the model adds one, special-token text kept as text) are cut into chunks of
        `context`, each evaluated on its own with its first token replaced by BOS when the model
        adds one, and the second half of each chunk is scored. `context`: 512 by default, or the
        model's context length when that is shorter. `chunks` limits how many are used.

        Returns {"ppl", "ppl_stderr", "nll" (mean, nats), "tokens", "context", "chunks",
        "scored_tokens", "chunk_ppl" (running estimate after each chunk), "token_nll" (every
        scored token's NLL), "seconds"}. With `base` (another model of the same vocabulary) or
        `base_kv_type` (the base is then this model with that KV cache type; default "f32"), also
        "kl": {"base_ppl", "base_ppl_stderr", "mean", "stderr", "median", "p99", "max" (KL
        divergence of this model's next-token distributions from the base's, nats),
        "top1_agreement", "delta_p_mean", "delta_p_rms" (p(next) minus the base's)}."""
        if isinstance(text, str):
            ids = ([self._m.bos_id] if self._m.add_bos else []) + self.tokenize(text, special=False)
        else:
            ids = _token_list("perplexity", text)
        for name, v in (("context", context), ("chunks", chunks)):
            if v is not None and (not isinstance(v, numbers.Integral) or isinstance(v, bool)):
                raise TypeError(f"perplexity: {name} must be an integer, got {type(v).__name__}")
        if chunks is not None and chunks < 1:
            raise ValueError(f"perplexity: chunks = {chunks} (must be >= 1, or None for every chunk)")
        if base is not None and not isinstance(base, Model):
            raise TypeError(f"perplexity: base must be a Model, got {type(base).__name__}")
        compare = base is not None or base_kv_type is not None
        return self._m.perplexity(ids, 0 if context is None else int(context), -1 if chunks is None else int(chunks),
                                  _threads(threads),
                                  _kv_dtype("perplexity", kv_type),
                                  (base._m if base is not None else self._m) if compare else None,
                                  _kv_dtype("perplexity", base_kv_type or "f32"))

    @property
    def chat_format(self) -> str:
        """The chat format the file's template is recognized as, by llama.cpp's name for it:
        "chatml", "llama3", "gemma", "phi3", "mistral-v7", "mistral-v1", "mistral-v3",
        "mistral-v3-tekken", "llama2", "llama2-sys", "llama2-sys-bos", "llama2-sys-strip", or ""
        for a template of another format (apply_chat_template then runs it as Jinja)."""
        return self._m.chat_format

    @property
    def chat_template(self) -> str:
        """The file's tokenizer.chat_template (a Jinja program), or "" when it has none."""
        return self._m.chat_template

    def apply_chat_template(self, messages: Sequence[tuple[str, str]] | Sequence[dict], add_generation_prompt=True,
                            *, tools: Sequence[dict] | None = None, jinja: bool | None = None,
                            **template_kwargs) -> str:
        """The conversation as the model's prompt text (EncodePrompt / to_tokens adds BOS where the model
        has one). messages are (role, content) pairs or OpenAI-style dicts.

        jinja=None (default): llama.cpp's built-in rendering when the template is one of the formats
        chat_format names, else the file's own Jinja template run by attn's interpreter; jinja=True:
        always the file's template, rendered as Hugging Face transformers renders it; jinja=False: the
        built-in formats only (ValueError for others). tools (OpenAI function definitions), extra
        variables (template_kwargs, e.g. enable_thinking=False) and message keys beyond role and
        content (tool_calls, name, tool_call_id, ...) reach only a Jinja template, so they imply it."""
        dicts = [dict(m) if isinstance(m, dict) else {"role": m[0], "content": m[1]} for m in messages]
        extra = tools is not None or template_kwargs or any(set(m) - {"role", "content"} for m in dicts)
        if jinja is True or extra:
            if jinja is False:
                raise ValueError("apply_chat_template: tools, template variables and message keys other than "
                                 "role / content need the Jinja template (jinja=False was given)")
            context = {"messages": dicts, "add_generation_prompt": bool(add_generation_prompt), **template_kwargs}
            if tools is not None:
                context["tools"] = list(tools)
            try:
                text = json.dumps(context, ensure_ascii=False)
            except TypeError as e:
                raise TypeError(f"apply_chat_template: the messages, tools and variables must be JSON data: {e}") from None
            return self._m.render_chat_template(text)
        for m in dicts:
            if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise TypeError(f"apply_chat_template: each message needs a str role and content, got {m!r}")
        pairs = [(m["role"], m["content"]) for m in dicts]
        return self._m.apply_chat_template(pairs, add_generation_prompt, 0 if jinja is None else 1)

    def create_chat_completion(self, messages: Sequence[dict], *, jinja: bool = False,
                               reasoning_format: str = "deepseek", threads: int | None = None, **params):
        """OpenAI's chat completion, answered in this process as `attn serve` answers
        /v1/chat/completions (the same request parser, prompt and response code): messages, then any of
        its fields as keywords (max_tokens, temperature, top_p, seed, stop, n, logprobs / top_logprobs,
        response_format, tools / tool_choice, grammar, json_schema, chat_template_kwargs, ...). Returns
        the response as a dict ({"choices": [{"message": {...}, "finish_reason": ...}], "usage": ...}).
        jinja=True and reasoning_format="none" are serve's --jinja and --reasoning-format none.
        stream=True returns an iterator of the stream's chunks as dicts (`attn serve`'s events:
        delta.role, then delta.content / reasoning_content pieces as they are generated, the
        finish chunk, the usage chunk with stream_options={"include_usage": True}); closing it, or
        dropping it, cancels the request. ValueError names a bad field."""
        return self._openai({"messages": list(messages), **params}, True, jinja, reasoning_format, threads)

    def create_completion(self, prompt: str | Sequence[int], *, threads: int | None = None, **params):
        """OpenAI's (legacy) completion, answered as `attn serve` answers /v1/completions: the prompt
        (text or token ids), then its fields as keywords (max_tokens defaults to 16 as in OpenAI's API;
        logprobs, echo, n, stop, grammar, ...). Returns the response as a dict, or with stream=True
        an iterator of its chunks as dicts."""
        return self._openai({"prompt": prompt if isinstance(prompt, str) else list(prompt), **params}, False,
                            False, "none", threads)

    def _openai(self, body: dict, chat: bool, jinja: bool, reasoning_format: str, threads):
        if reasoning_format not in ("deepseek", "none"):
            raise ValueError(f"reasoning_format = {reasoning_format!r} (deepseek or none)")
        try:
            text = json.dumps(body, ensure_ascii=False)
        except TypeError as e:
            raise TypeError(f"the request's fields must be JSON data: {e}") from None
        if body.get("stream") is True:
            return _event_stream(self._m.openai_stream(text, chat, bool(jinja), reasoning_format == "deepseek",
                                                       _threads(threads)))
        return json.loads(self._m.openai(text, chat, bool(jinja), reasoning_format == "deepseek", _threads(threads)))

    def generate(self, prompt: str | Sequence[int], max_tokens: int = 128, temperature: float = 0.0,
                 seed: int | None = None, *, top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
                 repetition_penalty: float = 1.0, stop: Sequence[str] | None = None, chat: bool = False,
                 threads: int | None = None, kv_type: str = "f16", session: "Session | None" = None,
                 context_shift: int | None = None, logprobs: int | None = None, echo: bool = False,
                 frequency_penalty: float = 0.0, presence_penalty: float = 0.0,
                 logit_bias: dict[int, float] | None = None, json_mode: bool = False, grammar: str | None = None,
                 json_schema: dict | str | None = None, lookup: int = 0, return_dict: bool = False,
                 stream: bool = False, hooks: Sequence[tuple[str | Callable[[str], bool], Callable]] = (),
                 draft_model: "Model | None" = None, draft_max: int = 8, draft_p_min: float = 0.75,
                 draft_adaptive: bool = False):
        """Continues `prompt` (text, or token ids) and returns the generated text.

        temperature 0 is greedy. With chat=True the prompt is wrapped as a user message in the
        model's chat template. kv_type is the KV cache's storage: "f16" (as llama.cpp's), "bf16",
        "q8_0" (8 bits per value plus a scale per 32; head_dim a multiple of 32) or "f32" (exact, as
        logits() computes). With a `session` (from new_session(); its own
        kv_type applies), the cached tokens that begin the prompt are reused and only the rest is
        evaluated: pass the whole conversation each turn. With return_dict=True, returns the
        tokens, text, timings and how many prompt tokens were evaluated and taken from the cache.
        context_shift=k: when the model's context is full, keep its first k positions (attention
        sinks), forget half of the rest and go on (their keys rotated to the new positions;
        "context_shifts" counts them); None ends the generation there (stop_reason "context").
        logprobs=k (0-20; needs return_dict=True) adds "logprobs": for each sampled token (and an
        EOS that ended the generation, which is not in "tokens") {"token", "logprob", "top": [(id,
        logprob)] of the k most likely}, under the model's own distribution (log-softmax of the
        logits, before penalty and temperature); echo=True adds "prompt_logprobs", the same for
        every prompt token after the first (the whole prompt is then evaluated, even in a session).
        frequency_penalty / presence_penalty (OpenAI's, llama.cpp's penalty_freq / _present): a
        token seen c times in the last 64 tokens loses c * frequency_penalty + presence_penalty
        from its logit; logit_bias {token id: bias} is added to those logits first (-inf bans).
        json_mode=True (OpenAI's json_object response format): only tokens that keep the text a
        prefix of one JSON object are drawn, and the generation ends once the object is complete
        (unless max_tokens or a stop string cut it first). grammar (GBNF text, llama.cpp's format,
        start rule "root") does the same for the grammar's sentences; json_schema (a dict or its
        JSON text; OpenAI's structured outputs) for the JSON that the schema allows (converted to a
        grammar). Give at most one of json_mode, grammar and json_schema.
        lookup=k (0-23; llama.cpp's lookup decoding, transformers' prompt_lookup_num_tokens):
        after each token, up to k tokens that followed an earlier occurrence of the last 3 (or 2)
        tokens of the prompt and text are drafted and checked in the same forward pass; the
        result is the one without it, token for token (and logprob for logprob), in fewer passes
        where the text repeats its prompt (quoting, editing, extracting). The dict's "drafted" and
        "draft_accepted" count the drafts run and kept.
        draft_model (another Model with the same vocabulary, usually a smaller one; llama.cpp's
        --model-draft): speculative decoding, its greedy drafts of up to draft_max tokens (1-23,
        stopping where its top token's probability is below draft_p_min) checked the same way;
        the draft model keeps a KV cache of its own; with draft_adaptive it rests where its drafts
        do not pay for their passes (the text is the same either way). Not with lookup or hooks.
        stream=True returns a GenerationStream at once: iterate it for the text piece by piece as
        it is generated (its .result is the dict once it has ended).
        hooks: as run_with_hooks's, run on every forward pass of the generation: the prompt's
        (in pieces of up to 512 tokens) and then each new token's, with the KV cache (hook.pos0
        says where the activation's rows sit). Editing an activation steers what comes next
        (attn.steering). Not with lookup or stream."""
        kv_dtype = _kv_dtype("generate", kv_type)
        lookup = _lookup("generate", lookup)
        grammar, json_schema = _constraint("generate", grammar, json_schema)
        if logprobs is not None and (not isinstance(logprobs, int) or isinstance(logprobs, bool)
                                     or not 0 <= logprobs <= 20):
            raise ValueError(f"generate: logprobs = {logprobs!r} (must be None or an integer in [0, 20])")
        if (logprobs is not None or echo) and not (return_dict or stream):
            raise ValueError("generate: logprobs and echo need return_dict=True (or stream=True: in its .result)")
        if echo and logprobs is None:
            raise ValueError("generate: echo=True needs logprobs (an integer in [0, 20])")
        if session is not None and not isinstance(session, Session):
            raise TypeError(f"generate: session must come from Model.new_session(), got {type(session).__name__}")
        if isinstance(prompt, str):
            if chat:
                prompt = self.apply_chat_template([("user", prompt)])
            ids = self.to_tokens(prompt)
        else:
            ids = _token_list("generate", prompt)
        if not isinstance(max_tokens, int) or max_tokens < 0:
            raise ValueError(f"generate: max_tokens = {max_tokens!r} (must be an integer >= 0)")
        if seed is None:
            seed = int(np.random.default_rng().integers(0, 2**63))
        if context_shift is not None and (not isinstance(context_shift, int) or context_shift < 0):
            raise ValueError(f"generate: context_shift = {context_shift!r} (must be None or an integer >= 0)")
        if not isinstance(stream, bool):
            raise TypeError(f"generate: stream must be a bool, got {type(stream).__name__}")
        if session is not None:
            session._check_idle("generate")
        hooked, dispatch = self._hook_dispatch("generate", hooks)
        if hooked and (stream or lookup):
            raise ValueError("generate: hooks exclude " + ("stream=True" if stream else "lookup"))
        args = _attn.GenerateArgs(
            max_tokens=max_tokens, temperature=float(temperature), seed=int(seed), top_k=int(top_k),
            top_p=float(top_p), min_p=float(min_p), repetition_penalty=float(repetition_penalty),
            stop=list(stop or []), threads=_threads(threads), kv_dtype=kv_dtype,
            context_keep=-1 if context_shift is None else context_shift,
            logprobs=-1 if logprobs is None else logprobs, prompt_logprobs=bool(echo),
            frequency_penalty=float(frequency_penalty), presence_penalty=float(presence_penalty),
            logit_bias=_logit_bias("generate", logit_bias), json_mode=bool(json_mode), grammar=grammar,
            json_schema=json_schema, lookup=lookup)
        if draft_model is not None:
            if not isinstance(draft_model, Model):
                raise TypeError(f"generate: draft_model must be an attn.Model, got {type(draft_model).__name__}")
            if not isinstance(draft_max, int) or isinstance(draft_max, bool) or not 1 <= draft_max <= 23:
                raise ValueError(f"generate: draft_max = {draft_max!r} (must be an integer in [1, 23])")
            if not 0.0 <= float(draft_p_min) <= 1.0:
                raise ValueError(f"generate: draft_p_min = {draft_p_min!r} (must be in [0, 1])")
            args.set_draft(draft_model._m, draft_max, float(draft_p_min), bool(draft_adaptive))
        native_session = None if session is None else session._s
        if stream:
            s = GenerationStream(self._m.generate_stream(ids, args, native_session),
                                 -1 if logprobs is None else logprobs, bool(echo), session)
            s._draft_model = draft_model  # alive while the stream runs
            return s
        r = self._m.generate(ids, args, native_session, hooked, dispatch if hooked else None)
        r["text"] = r["text"].decode("utf-8", "replace")
        return r if return_dict else r["text"]

    def generate_batch(self, prompts: Sequence[str | Sequence[int]], max_tokens: int = 128,
                       temperature: float = 0.0, seed: int | None = None, *, top_k: int = 40, top_p: float = 0.95,
                       min_p: float = 0.05, repetition_penalty: float = 1.0, stop: Sequence[str] | None = None,
                       chat: bool = False, threads: int | None = None, kv_type: str = "f16",
                       context_shift: int | None = None, logprobs: int | None = None,
                       frequency_penalty: float = 0.0, presence_penalty: float = 0.0,
                       logit_bias: dict[int, float] | None = None, json_mode: bool = False,
                       grammar: str | None = None, json_schema: dict | str | None = None, lookup: int = 0,
                       return_dict: bool = False) -> list:
        """Continues several prompts together and returns a list of texts (or of generate()'s dicts).

        Each prompt is a sequence of its own (its own KV cache, stop rules and sampler); every step
        runs all unfinished sequences' next tokens through one forward pass, so each weight is read
        once for all of them (llama.cpp's batched decoding). Options as in generate(); prompt i
        samples with seed + i, so it draws what generate(prompt i, seed=seed + i) draws. For a
        model whose weights are in integer formats and up to 24 prompts, each result equals
        generate()'s on its own prompt token for token; otherwise they agree within rounding.
        lookup=k drafts as in generate(), every sequence's drafts in the step's pass (up to 24 rows
        in all; a sequence whose drafts would pass that runs without them that step)."""
        kv_dtype = _kv_dtype("generate_batch", kv_type)
        lookup = _lookup("generate_batch", lookup)
        grammar, json_schema = _constraint("generate_batch", grammar, json_schema)
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
            raise TypeError("generate_batch: prompts must be a list of prompts (texts or token-id lists)")
        if len(prompts) == 0:
            raise ValueError("generate_batch: no prompts")
        if logprobs is not None and (not isinstance(logprobs, int) or isinstance(logprobs, bool)
                                     or not 0 <= logprobs <= 20):
            raise ValueError(f"generate_batch: logprobs = {logprobs!r} (must be None or an integer in [0, 20])")
        if logprobs is not None and not return_dict:
            raise ValueError("generate_batch: logprobs needs return_dict=True")
        ids = []
        for i, p in enumerate(prompts):
            if isinstance(p, str):
                ids.append(self.to_tokens(self.apply_chat_template([("user", p)]) if chat else p))
            else:
                ids.append(_token_list(f"generate_batch: prompt {i}", p))
        if not isinstance(max_tokens, int) or max_tokens < 0:
            raise ValueError(f"generate_batch: max_tokens = {max_tokens!r} (must be an integer >= 0)")
        if seed is None:
            seed = int(np.random.default_rng().integers(0, 2**62))
        if context_shift is not None and (not isinstance(context_shift, int) or context_shift < 0):
            raise ValueError(f"generate_batch: context_shift = {context_shift!r} (must be None or an integer >= 0)")
        rs = self._m.generate_batch(ids, max_tokens, float(temperature), int(seed), int(top_k), float(top_p),
                                    float(min_p), float(repetition_penalty), list(stop or []), _threads(threads),
                                    kv_dtype, -1 if context_shift is None else context_shift,
                                    -1 if logprobs is None else logprobs, float(frequency_penalty),
                                    float(presence_penalty), _logit_bias("generate_batch", logit_bias),
                                    bool(json_mode), grammar, json_schema, lookup)
        for r in rs:
            r["text"] = r["text"].decode("utf-8", "replace")
        return rs if return_dict else [r["text"] for r in rs]

    def embed(self, inputs: str | Sequence[int] | Sequence[str | Sequence[int]], *, pooling: str = "mean",
              normalize: bool = True, threads: int | None = None, kv_type: str = "f16") -> np.ndarray:
        """Text embeddings, as llama.cpp's --embeddings computes them: one forward pass per input
        (a fresh sequence; texts tokenized with the model's own BOS rule), the final norm's output
        of every token (what the unembedding reads) pooled into one vector of d_model floats:
        pooling "mean" (every token), "last" (the last token's: a causal model has read the
        whole text there) or "cls" (the first token's); unit L2 norm when normalize. One input
        (a text, or a list of token ids) gives a vector [d_model]; a list of them a matrix
        [len(inputs), d_model]."""
        kv_dtype = _kv_dtype("embed", kv_type)
        if pooling not in ("mean", "last", "cls"):
            raise ValueError(f"embed: pooling = {pooling!r} (must be 'mean', 'last' or 'cls')")
        single = isinstance(inputs, str) or (isinstance(inputs, Sequence) and len(inputs) > 0
                                             and all(isinstance(t, numbers.Integral) for t in inputs))
        if isinstance(inputs, np.ndarray) and inputs.ndim == 1:
            single = True
        items = [inputs] if single else list(inputs)
        if not items:
            raise ValueError("embed: no inputs")
        ids = []
        for i, x in enumerate(items):
            if isinstance(x, str):
                ids.append(self.to_tokens(x))
            else:
                ids.append(_token_list(f"embed: input {i}", x))
        out = self._m.embed(ids, pooling, bool(normalize), _threads(threads), kv_dtype)
        return out[0] if single else out

    def new_session(self, kv_type: str = "f16", capacity: int = 512) -> "Session":
        """KV caches kept between generate(..., session=) calls (a conversation). The capacity
        grows as needed up to the model's context length."""
        cap = min(int(capacity), int(self.config["context_length"]))
        return Session(_attn.Session(self._m, cap, _kv_dtype("new_session", kv_type)))

    # ---- A look inside: hooks, caches, head statistics, ablation -------------------------------

    def set_control_vector(self, directions: dict | None) -> None:
        """Sets a control vector: {block: float32 [d_model]}, each added to that block's output
        (before blocks.{block}.hook_resid_post) at every position of every later pass (generate,
        run_with_hooks, logits, chat completions); None or {} removes it. attn.steering reads and
        writes llama.cpp's control vector files. Not while a stream of this model runs."""
        n, d = self.config["n_layers"], self.config["d_model"]
        rows = [[] for _ in range(n)]
        for layer, v in (directions or {}).items():
            if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
                raise ValueError(f"set_control_vector: block {layer!r} (the model has blocks 0 to {n - 1})")
            a = np.ascontiguousarray(v, dtype=np.float32)
            if a.shape != (d,):
                raise ValueError(f"set_control_vector: block {layer}: shape {a.shape}, expected ({d},)")
            rows[layer] = a.tolist()
        self._m.set_control_vector(rows if directions else [])

    @property
    def control_vector(self) -> dict:
        """The control vector set, {block: float32 [d_model]} ({} when none)."""
        from .steering import _by_block
        return _by_block(self._m.control_vector())

    def hook_names(self) -> list[str]:
        """Every hook point of this model, by full TransformerLens name, in the order a forward
        pass visits them (hook_embed, blocks.0.hook_resid_pre, ..., ln_final.hook_normalized)."""
        return list(self._hook_points())

    def run_with_cache(self, tokens: str | Sequence[int], names: NamesFilter = None,
                       threads: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Runs `tokens` (ids, or text tokenized as generate does, BOS first when the model adds
        one) and returns (logits float32 [n, vocab], cache): a dict from full hook names to
        float32 arrays in TransformerLens's shapes (batch 1), in the order of the forward pass:
            hook_embed, hook_pos_embed, blocks.{l}.hook_resid_pre/mid/post, hook_attn_out,
            hook_mlp_out, ln1/ln2.hook_normalized, ln_final.hook_normalized   [1, pos, d_model]
            attn.hook_q, hook_rot_q, hook_z                           [1, pos, n_heads, d_head]
            attn.hook_k, hook_v, hook_rot_k                        [1, pos, n_kv_heads, d_head]
            mlp.hook_pre, hook_post                                             [1, pos, d_ff]
            attn.hook_attn_scores, hook_pattern                    [1, n_heads, q_pos, k_pos]
        names: None (every point; the attention points cost 2 x 4 n_heads n^2 bytes per layer),
        a full name, a list of them, or a predicate on the full name. Only the chosen points are
        copied out; a name that no point has raises ValueError."""
        ids = self._ids("run_with_cache", tokens)
        keys = self._select("run_with_cache", names)
        logits, captured = self._m.run(ids, _threads(threads), keys, [], None)
        return logits, {_full_name(name, layer): self._tl_shape(name, a) for name, layer, a in captured}

    def run_with_hooks(self, tokens: str | Sequence[int],
                       hooks: Sequence[tuple[str | Callable[[str], bool], Callable]] = (),
                       threads: int | None = None) -> np.ndarray:
        """Runs `tokens` with hooks and returns the logits, float32 [n, vocab].

        hooks: [(name_or_predicate, fn), ...]. fn(activation, hook) is called at every point whose
        full name equals the name (or satisfies the predicate), in list order; activation is a
        writable float32 array in the shape run_with_cache gives that point and hook a HookPoint
        (.name, .layer). Edit the activation in place, or return an array of the same shape to
        replace it (None keeps it); what the hook leaves is what the rest of the pass reads.
        The activation is the hook's own copy (written back when the hook returns), so keeping it
        is safe. A hook on attn.hook_pattern (or hook_attn_scores) makes that layer compute its
        pattern explicitly, and hook_z then follows the edited pattern. Exceptions raised by a
        hook propagate unchanged."""
        ids = self._ids("run_with_hooks", tokens)
        hooked, dispatch = self._hook_dispatch("run_with_hooks", hooks)
        logits, _ = self._m.run(ids, _threads(threads), [], hooked, dispatch if hooked else None)
        return logits

    def _hook_dispatch(self, where: str, hooks) -> tuple[list, Callable]:
        """The (name, layer) keys the hooks touch, in forward order, and the callback the native
        code calls at each: it runs the hooks of that point in list order."""
        points = self._hook_points()
        by_key: dict[tuple[str, int], list[Callable]] = {}
        for i, spec in enumerate(hooks):
            try:
                target, fn = spec
            except (TypeError, ValueError):
                raise TypeError(f"{where}: hooks[{i}] = {spec!r} is not a (name or predicate, fn) pair") from None
            if not callable(fn):
                raise TypeError(f"{where}: hooks[{i}]: the hook function {fn!r} is not callable")
            for key in self._select(f"{where}: hooks[{i}]", target):
                by_key.setdefault(key, []).append(fn)
        hooked = [key for key in points.values() if key in by_key]

        def dispatch(name: str, layer: int, pos0: int, array: np.ndarray) -> np.ndarray:
            full = _full_name(name, layer)
            act = self._tl_shape(name, array)
            point = HookPoint(full, layer, pos0)
            for fn in by_key[(name, layer)]:
                result = fn(act, point)
                if result is not None:
                    act = _replacement(full, act, result)
            return act

        return hooked, dispatch

    def head_scores(self, tokens: str | Sequence[int] | None = None, *, probe_length: int = 64,
                    sequences: int = 4, seed: int = 0, threads: int | None = None) -> list[dict]:
        """Detector scores of every head (layer-major), as dicts with layer, head, previous_token,
        duplicate_token, induction, first_token, local, entropy (nats), learned_sink (the share of
        attention a learned sink takes: gpt-oss, attn train --sinks; 0 without) and role.

        With tokens=None, runs the standard probe: `sequences` sequences of `probe_length`
        distinct random tokens repeated once (BOS first when the model adds one), seeded by
        `seed`. Else scores the given tokens (ids, or text tokenized as generate does). The
        statistics come from the fused attention kernel; no pattern is materialized, so long
        texts cost O(n) memory. Definitions: include/attn/heads.h."""
        if tokens is None:
            length = _int("head_scores", "probe_length", probe_length, 2)
            count = _int("head_scores", "sequences", sequences, 1)
            return self._m.probe_heads(length, count, _int("head_scores", "seed", seed, 0), _threads(threads))
        return self._m.score_heads(self._ids("head_scores", tokens), _threads(threads))

    @staticmethod
    def describe_probe(probe_length: int = 64, sequences: int = 4, seed: int = 0) -> str:
        """A sentence describing the probe head_scores() runs with these settings."""
        return _attn.Model.describe_probe(_int("describe_probe", "probe_length", probe_length, 2),
                                          _int("describe_probe", "sequences", sequences, 1),
                                          _int("describe_probe", "seed", seed, 0))

    @staticmethod
    def role_names() -> list[str]:
        """The role labels head_scores() gives, in the order they are tested."""
        return list(_attn.Model.role_names())

    def ablate(self, tokens: str | Sequence[int], heads: Sequence[tuple[int, int]], mode: str = "zero",
               threads: int | None = None) -> dict:
        """Ablates the heads [(layer, head), ...] by replacing their slice of hook_z with zeros
        (mode "zero") or with the head's mean output over the text (mode "mean"), and returns
        {"loss", "ablated_loss", "delta", "tokens"}: mean next-token cross-entropy (nats) over
        the `tokens` - 1 predictions, without and with the ablation."""
        ids = self._ids("ablate", tokens)
        if mode not in ("zero", "mean"):
            raise ValueError(f"ablate: mode = {mode!r} (must be 'zero' or 'mean')")
        if isinstance(heads, tuple) and len(heads) == 2 and all(isinstance(x, numbers.Integral) for x in heads):
            heads = [heads]  # one (layer, head)
        pairs = []
        for h in heads:
            try:
                layer, head = h
            except (TypeError, ValueError):
                raise ValueError(f"ablate: head {h!r} is not a (layer, head) pair") from None
            pairs.append((_int("ablate", "layer", layer, 0), _int("ablate", "head", head, 0)))
        return self._m.ablate(ids, pairs, mode, _threads(threads))

    def report(self, tokens: str | Sequence[int], *, lens: bool = True, probe_length: int | None = None,
               sequences: int = 4, seed: int = 0, threads: int | None = None) -> "Report":
        """The attention viewer of `attn inspect` for a text (or token ids), as a Report: every head's
        pattern and role (scored on the induction probe: `sequences` x `probe_length` random tokens,
        seeded), and the logit lens (texts up to 1,024 tokens; lens=False leaves it out). In Jupyter
        the Report shows itself; .save(path) writes the self-contained page; .html is its text and
        .heads the heads' scores (as heads.json has them)."""
        ids = self._ids("report", tokens)
        length = 0 if probe_length is None else _int("report", "probe_length", probe_length, 2)
        html, heads = self._m.report(ids, tokens if isinstance(tokens, str) else self.detokenize(ids), bool(lens),
                                     length, _int("report", "sequences", sequences, 1),
                                     _int("report", "seed", seed, 0), _threads(threads))
        return Report(html.decode("utf-8"), json.loads(heads))

    def logit_lens(self, tokens: str | Sequence[int], *, k: int = 5, threads: int | None = None) -> dict:
        """The logit lens (nostalgebraist 2020): the residual stream after each block read through
        the model's own final norm and unembedding, as if the later blocks were skipped. Row l of
        every array is the residual after l blocks (0: the embeddings; n_layers: the last block's
        output, whose lens is the model's own prediction, bit for bit). One forward pass; the
        head runs at the model's speed (its own quantized products).

        Returns {"tokens": ids, "top_ids": int32 [n_layers + 1, pos, k] (most likely first),
        "top_logprobs": float32 [n_layers + 1, pos, k], "next_logprob": float32 [n_layers + 1,
        pos - 1] (at position t, the log-probability of the text's token t + 1) and "next_rank":
        int32 [n_layers + 1, pos - 1] (its rank; 0 = the lens's top prediction)}."""
        ids = self._ids("logit_lens", tokens)
        r = self._m.logit_lens(ids, _int("logit_lens", "k", k, 1), _threads(threads))
        r["tokens"] = ids
        return r

    def logit_attribution(self, tokens: str | Sequence[int], target, *, baseline=None, pos: int = -1,
                          threads: int | None = None) -> dict:
        """Direct logit attribution (attn.attribution): each part's direct contribution (the
        embeddings, every head, attention biases, every MLP) to target's logit at `pos`, minus
        baseline's when given, through the final norm with its scale frozen. Returns {"names",
        "values" (float64, in the forward pass's order), "total" (their sum), "logit" (the
        model's own), "scale", "pos"}."""
        return attribution.logit_attribution(self, tokens, target, baseline=baseline, pos=pos, threads=threads)

    def _ids(self, what: str, tokens) -> list[int]:
        if isinstance(tokens, str):
            return self.to_tokens(tokens)
        return _token_list(what, tokens)

    def _hook_points(self) -> dict[str, tuple[str, int]]:
        if self._points is None:
            self._points = {_full_name(name, layer): (name, layer) for name, layer in self._m.hook_points()}
        return self._points

    def _select(self, what: str, names) -> list[tuple[str, int]]:
        """The (name, layer) keys a names filter picks, in pass order."""
        points = self._hook_points()
        if names is None:
            return list(points.values())
        if isinstance(names, str):
            names = [names]
        elif callable(names):
            return [key for full, key in points.items() if names(full)]
        elif not isinstance(names, (list, tuple, set, frozenset)) or not all(isinstance(n, str) for n in names):
            raise TypeError(f"{what}: names must be None, a str, a list of str or a predicate, got {names!r}")
        for n in names:
            if n not in points:
                close = difflib.get_close_matches(n, list(points), n=3)
                hint = f"did you mean {', '.join(close)}?" if close else (
                    "names are like " + ", ".join(list(points)[i] for i in (0, 1, len(points) - 1)))
                raise ValueError(f"{what}: no hook point named {n!r} in this model ({len(points)} points; "
                                 f"{hint} Model.hook_names() lists them)")
        wanted = set(names)
        return [key for full, key in points.items() if full in wanted]

    def _tl_shape(self, name: str, a: np.ndarray) -> np.ndarray:
        # a: [heads, rows, cols] from the C++ side (heads = 1 outside the attention points).
        if name in _ATTENTION_POINTS:
            return a[np.newaxis]
        if name in _HEAD_POINTS:
            return a.reshape(1, a.shape[1], -1, self._head_dim)
        return a

    def qk_circuit(self, layer: int, head: int, top: int = 20, tokens=None) -> list[dict]:
        """Top (query token, key token) pairs of a head's QK circuit (attn.circuits.qk_circuit_top_pairs)."""
        return circuits.qk_circuit_top_pairs(self, layer, head, top=top, tokens=tokens)

    def ov_copying_score(self, layer: int, head: int) -> float:
        """A head's OV copying score sum(lambda) / sum(|lambda|) in [-1, 1] (attn.circuits.ov_copying_score)."""
        return circuits.ov_copying_score(self, layer, head)

    def copying_scores(self) -> np.ndarray:
        """OV copying score of every head, float64 [n_layers, n_heads] (attn.circuits.copying_scores)."""
        return circuits.copying_scores(self)

    def __repr__(self) -> str:
        c = self.config
        return (f"Model({self.path!r}: {c['arch']}, {c['n_layers']} layers, d_model {c['d_model']}, "
                f"{c['n_heads']}/{c['n_kv_heads']} heads, vocab {c['vocab_size']})")
