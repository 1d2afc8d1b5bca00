"""PyTorch twin of attn's trainer (include/attn/train.h, issue 5): the same model, parameter
names and shapes (attn's GGUF names), AdamW, gradient clipping and learning-rate schedule, so
tests/fixtures/make_train_fixture.py can produce reference numbers and bench/explore_induction.py
can look for hyperparameters before the C++ trainer exists.

    bench/.venv/bin/python -c "import sys; sys.path.insert(0, 'bench'); import train_torch"

Model (GPT-2 layout, byte-level vocab by default):
    h = token_embd[x_t] + position_embd[t]
    per layer L:  a = LayerNorm(h; attn_norm)    qkv = a W_qkv^T + b_qkv   (q | k | v, head j at j*dh)
                  z = causal softmax(q k^T / sqrt(dh)) v                  (per head)
                      (with attn_sinks: the sink softmax below)
                  h = h + z W_o^T + b_o
                  if d_ff > 0:  h = h + GELU_tanh(LayerNorm(h; ffn_norm) W_up^T + b_up) W_down^T + b_down
    logits = LayerNorm(h; output_norm) W_out^T    (untied, no bias)
    loss   = mean over batch and positions of -log softmax(logits_t)[x_{t+1}]

Learned attention sinks (cfg.attn_sinks, as in OpenAI's gpt-oss; off by default): one more
parameter per layer, sinks = blk.L.attn_sinks.weight [n_heads], one logit per head that joins
every query row's softmax but has no value. For head j, query i and key m <= i:
    s_im = q_i . k_m / sqrt(dh)      (the sink logit is NOT scaled)
    p_im = exp(s_im) / (exp(sinks[j]) + sum_{m' <= i} exp(s_im'))      z_i = sum_m p_im v_m
i.e. softmax over the row's causal scores concatenated with sinks[j], then the sink's column
dropped (transformers' gpt-oss eager attention: torch.cat([scores, sinks.reshape(1, H, 1, 1)
.expand(B, H, T, 1)], -1), softmax, [..., :-1]), so each row's weights sum to < 1. sinks = -inf
is the model without sinks. forward writes it as explicit torch ops (there is no sink in
F.scaled_dot_product_attention), so with sinks fused_attention is ignored. With the flag off,
parameters, init, config JSON (to_json leaves the key out) and every number are exactly what the
twin gave before the flag existed.

Parameters, in GGUF order (matrices are [rows, cols] = [out, in], as attn stores them):
    token_embd.weight [vocab, d]      position_embd.weight [context, d]
    blk.L.attn_norm.weight/.bias [d]  blk.L.attn_qkv.weight [3d, d] / .bias [3d]
    blk.L.attn_output.weight [d, d] / .bias [d]
    blk.L.attn_sinks.weight [n_heads]                                                  (attn_sinks)
    blk.L.ffn_norm.weight/.bias [d]   blk.L.ffn_up.weight [d_ff, d] / .bias [d_ff]     (d_ff > 0)
    blk.L.ffn_down.weight [d, d_ff] / .bias [d]                                        (d_ff > 0)
    output_norm.weight/.bias [d]      output.weight [vocab, d]

Initialization (init_params_torch): every matrix N(0, init_std), the output projections
(attn_output.weight, ffn_down.weight) N(0, init_std / sqrt(2 n_layers)); biases 0, norm weights 1,
sinks 0 (vectors take no draws, so the sinks do not move any other parameter's draw).
(attn's C++ trainer draws from its own RNG, so only the distribution is shared.)

Optimizer step (train_step / apply_update), exactly:
    1. g = d(mean loss)/d(param) for every param.
    2. clip (torch.nn.utils.clip_grad_norm_): n = sqrt(sum over all params of sum g^2);
       if clip > 0: g *= min(1, clip / (n + 1e-6)).   ("clipped" means clip / (n + 1e-6) < 1)
    3. lr_s = learning_rate(s) for the 0-based step s (see below).
    4. AdamW (torch.optim.AdamW, foreach=False, amsgrad=False), t = s + 1:
          decay params (every 2-D matrix, embeddings included):  p *= 1 - lr_s * weight_decay
          m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
          p -= (lr_s / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + adam_eps)
       Biases, norm weights and sinks (every vector) get no decay.
Learning rate at 0-based step s (learning_rate):
    s < warmup:  lr * (s + 1) / warmup
    else:        p = min(1, (s - warmup) / max(1, steps - warmup))
                 lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + cos(pi p)))
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class TrainConfig:
    # model (attn::TrainModelConfig)
    vocab_size: int = 256
    context: int = 256
    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 4
    d_ff: int = 0
    norm_eps: float = 1e-5
    attn_sinks: bool = False  # learned attention sinks (blk.L.attn_sinks.weight [n_heads])
    # options (attn::TrainOptions)
    batch: int = 16
    steps: int = 1000
    lr: float = 1e-3
    warmup: int = 100
    min_lr_ratio: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    weight_decay: float = 0.1
    clip: float = 1.0
    init_std: float = 0.02
    seed: int = 0

    def to_json(self) -> str:
        """Sorted keys; "attn_sinks" only when true, so a flag-off config writes the JSON it did
        before the flag existed (from_json reads a missing key as false)."""
        d = dataclasses.asdict(self)
        if not d["attn_sinks"]:
            del d["attn_sinks"]
        return json.dumps(d, sort_keys=True)

    @staticmethod
    def from_json(s: str) -> "TrainConfig":
        """A config JSON without "attn_sinks" (older fixtures) means attn_sinks = False."""
        return TrainConfig(**json.loads(s))


def param_shapes(cfg: TrainConfig) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) in GGUF order; matrices (rows, cols), vectors (n,)."""
    d, out = cfg.d_model, []
    out.append(("token_embd.weight", (cfg.vocab_size, d)))
    out.append(("position_embd.weight", (cfg.context, d)))
    for L in range(cfg.n_layers):
        p = f"blk.{L}."
        out += [(p + "attn_norm.weight", (d,)), (p + "attn_norm.bias", (d,)),
                (p + "attn_qkv.weight", (3 * d, d)), (p + "attn_qkv.bias", (3 * d,)),
                (p + "attn_output.weight", (d, d)), (p + "attn_output.bias", (d,))]
        if cfg.attn_sinks:
            out.append((p + "attn_sinks.weight", (cfg.n_heads,)))
        if cfg.d_ff > 0:
            out += [(p + "ffn_norm.weight", (d,)), (p + "ffn_norm.bias", (d,)),
                    (p + "ffn_up.weight", (cfg.d_ff, d)), (p + "ffn_up.bias", (cfg.d_ff,)),
                    (p + "ffn_down.weight", (d, cfg.d_ff)), (p + "ffn_down.bias", (d,))]
    out += [("output_norm.weight", (d,)), ("output_norm.bias", (d,)),
            ("output.weight", (cfg.vocab_size, d))]
    return out


def is_decay(name: str, shape) -> bool:
    """Weight decay applies to 2-D matrices (embeddings included), not biases, norms or sinks."""
    return len(shape) == 2


def init_params_torch(cfg: TrainConfig, generator: torch.Generator | None = None,
                      dtype=torch.float32) -> dict[str, torch.Tensor]:
    """The header's initialization, drawn with torch's RNG (seeded by cfg.seed if no generator)."""
    if generator is None:
        generator = torch.Generator().manual_seed(cfg.seed)
    params = {}
    out_scale = 1.0 / math.sqrt(2 * cfg.n_layers)
    for name, shape in param_shapes(cfg):
        if len(shape) == 2:
            std = cfg.init_std * (out_scale if name.endswith(("attn_output.weight", "ffn_down.weight")) else 1.0)
            t = torch.randn(shape, generator=generator, dtype=torch.float32) * std
        elif name.endswith("norm.weight"):
            t = torch.ones(shape)
        else:  # biases and sinks
            t = torch.zeros(shape)
        params[name] = t.to(dtype).requires_grad_(True)
    return params


def forward(params: dict[str, torch.Tensor], cfg: TrainConfig, x: torch.Tensor,
            return_patterns: bool = False, fused_attention: bool = True):
    """x: int64 [B, T] (T <= context). Returns logits [B, T, vocab] (and, with return_patterns,
    a list per layer of attention weights [B, H, T, T]; with sinks, the weights on the keys, the
    sink's column dropped). fused_attention uses F.scaled_dot_product_attention (same math, faster
    on CPU); otherwise, and always with cfg.attn_sinks, the softmax is written out."""
    B, T = x.shape
    d, H = cfg.d_model, cfg.n_heads
    dh = d // H
    h = params["token_embd.weight"][x] + params["position_embd.weight"][:T]
    patterns = []
    mask = None
    for L in range(cfg.n_layers):
        p = f"blk.{L}."
        a = F.layer_norm(h, (d,), params[p + "attn_norm.weight"], params[p + "attn_norm.bias"], cfg.norm_eps)
        qkv = F.linear(a, params[p + "attn_qkv.weight"], params[p + "attn_qkv.bias"])
        q, k, v = qkv.view(B, T, 3, H, dh).permute(2, 0, 3, 1, 4)  # each [B, H, T, dh]
        if return_patterns or not fused_attention or cfg.attn_sinks:
            if mask is None:
                mask = torch.ones(T, T, dtype=torch.bool).tril()
            s = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
            s = s.masked_fill(~mask, float("-inf"))
            if cfg.attn_sinks:  # the sink's logit (unscaled) joins each row's softmax, then is dropped
                sink = params[p + "attn_sinks.weight"].reshape(1, H, 1, 1).expand(B, H, T, 1)
                w = torch.softmax(torch.cat([s, sink], dim=-1), dim=-1)[..., :-1]
            else:
                w = torch.softmax(s, dim=-1)
            if return_patterns:
                patterns.append(w.detach())
            z = w @ v
        else:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        z = z.transpose(1, 2).reshape(B, T, d)
        h = h + F.linear(z, params[p + "attn_output.weight"], params[p + "attn_output.bias"])
        if cfg.d_ff > 0:
            a = F.layer_norm(h, (d,), params[p + "ffn_norm.weight"], params[p + "ffn_norm.bias"], cfg.norm_eps)
            u = F.gelu(F.linear(a, params[p + "ffn_up.weight"], params[p + "ffn_up.bias"]), approximate="tanh")
            h = h + F.linear(u, params[p + "ffn_down.weight"], params[p + "ffn_down.bias"])
    h = F.layer_norm(h, (d,), params["output_norm.weight"], params["output_norm.bias"], cfg.norm_eps)
    logits = F.linear(h, params["output.weight"])
    return (logits, patterns) if return_patterns else logits


def losses(params, cfg: TrainConfig, tokens: torch.Tensor, **kw) -> torch.Tensor:
    """tokens [B, T+1] -> per-position losses [B, T] (position t predicts tokens[:, t+1])."""
    logits = forward(params, cfg, tokens[:, :-1], **kw)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1),
                           reduction="none").view(tokens.shape[0], -1)


def loss(params, cfg: TrainConfig, tokens: torch.Tensor, **kw) -> torch.Tensor:
    return losses(params, cfg, tokens, **kw).mean()


def learning_rate(cfg: TrainConfig, s: int) -> float:
    if s < cfg.warmup:
        return cfg.lr * (s + 1) / cfg.warmup
    p = min(1.0, (s - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


def make_optimizer(params: dict[str, torch.Tensor], cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [t for n, t in params.items() if is_decay(n, t.shape)]
    no_decay = [t for n, t in params.items() if not is_decay(n, t.shape)]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps, foreach=False)


def apply_update(params, opt: torch.optim.Optimizer, cfg: TrainConfig, s: int) -> tuple[float, bool]:
    """Clips the grads already in params, sets lr = learning_rate(s), steps AdamW.
    Returns (global grad norm before clipping, clipped)."""
    ts = list(params.values())
    if cfg.clip > 0:
        norm = float(torch.nn.utils.clip_grad_norm_(ts, cfg.clip))
    else:
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.grad) for t in ts])))
    clipped = cfg.clip > 0 and cfg.clip / (norm + 1e-6) < 1.0
    lr = learning_rate(cfg, s)
    for g in opt.param_groups:
        g["lr"] = lr
    opt.step()
    return norm, clipped


def train_step(params, opt, cfg: TrainConfig, tokens: torch.Tensor, s: int, **kw):
    """One full step on tokens [B, context+1]. Returns (loss, grad norm, clipped)."""
    for t in params.values():
        t.grad = None
    l = loss(params, cfg, tokens, **kw)
    l.backward()
    norm, clipped = apply_update(params, opt, cfg, s)
    return float(l.detach()), norm, clipped


# ---- corpus, probes, scores -------------------------------------------------------------------

def load_corpus(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Bytes of the corpus split 95% train / 5% validation."""
    data = np.frombuffer(open(path, "rb").read(), dtype=np.uint8)
    n = int(len(data) * 0.95)
    return data[:n], data[n:]


def random_windows(data: np.ndarray, batch: int, length: int, rng: np.random.Generator) -> torch.Tensor:
    starts = rng.integers(0, len(data) - length, size=batch)
    return torch.from_numpy(np.stack([data[s:s + length] for s in starts]).astype(np.int64))


def induction_probe(train: np.ndarray, context: int, n_seq: int = 4, seed: int = 1234) -> tuple[torch.Tensor, int]:
    """n_seq sequences of R distinct random bytes (bytes with corpus frequency >= 1e-4), each
    repeated twice: [n_seq, 2R], R = context // 2 - 1 (capped by the number of such bytes)."""
    counts = np.bincount(train, minlength=256) / len(train)
    allowed = np.nonzero(counts >= 1e-4)[0]
    R = min(context // 2 - 1, len(allowed))
    rng = np.random.default_rng(seed)
    seqs = [rng.choice(allowed, size=R, replace=False) for _ in range(n_seq)]
    x = np.stack([np.concatenate([s, s]) for s in seqs])
    return torch.from_numpy(x.astype(np.int64)), R


@torch.no_grad()
def head_scores(params, cfg: TrainConfig, probe: torch.Tensor, R: int) -> tuple[np.ndarray, np.ndarray]:
    """Induction and previous-token scores [n_layers, n_heads]."""
    _, pats = forward(params, cfg, probe, return_patterns=True)
    T = probe.shape[1]
    ind, prev = [], []
    qi = torch.arange(R, T)
    pi = torch.arange(1, T)
    for w in pats:  # [B, H, T, T]
        ind.append(w[:, :, qi, qi - R + 1].mean(dim=(0, 2)))
        prev.append(w[:, :, pi, pi - 1].mean(dim=(0, 2)))
    return torch.stack(ind).numpy(), torch.stack(prev).numpy()


@torch.no_grad()
def icl_score(params, cfg: TrainConfig, val_tokens: torch.Tensor) -> tuple[float, float]:
    """(ICL score, mean validation loss): mean loss at positions [context-16, context) minus mean
    loss at [context/8 - 8, context/8 + 8) (negative = later positions benefit from context)."""
    l = losses(params, cfg, val_tokens)
    c = cfg.context
    late = l[:, c - 16:c].mean()
    e = c // 8
    early = l[:, max(0, e - 8):e + 8].mean()
    return float(late - early), float(l.mean())
