"""attn.Trainer against PyTorch (tests/fixtures/make_train_fixture.py): loss, per-position losses,
every parameter gradient, and three clipped AdamW steps, for the attention-only model, the one
with an MLP, and the attention-only one with learned sinks (gpt-oss's).

Tolerances: gradients and the loss follow FlashAttention's rule against the float64 autograd
reference, max|ours - f64| <= 2 max|torch32 - f64| + atol, with atol = 1e-6 of the tensor's largest
gradient (float32 noise for tensors where torch32 happens to be nearly exact). After three steps
(adam_eps = 1e-3 makes every element well-conditioned, see the fixture script) float32 torch is
within after_err ~1e-7 of float64 torch; ours may differ by float32 rounding amplified through
three updates, so atol 2e-5 against `after` (steps of lr 1e-2 move parameters by ~1e-2).
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import attn

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
FILES = ["train_torch.npz", "train_torch_mlp.npz", "train_torch_sinks.npz"]


def load(name):
    path = os.path.join(FIXTURES, name)
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: run bench/.venv/bin/python tests/fixtures/make_train_fixture.py")
    z = np.load(path)
    cfg = json.loads(str(z["config"]))
    names = json.loads(str(z["names"]))
    return z, cfg, names


def make_trainer(cfg, threads=2):
    keys = ("vocab_size", "context", "n_layers", "d_model", "n_heads", "d_ff", "norm_eps", "batch", "steps", "lr",
            "warmup", "min_lr_ratio", "beta1", "beta2", "adam_eps", "weight_decay", "clip", "init_std", "seed")
    return attn.Trainer(**{k: cfg[k] for k in keys}, attn_sinks=cfg.get("attn_sinks", False), threads=threads)


def set_params(t, z, names):
    assert t.param_names() == names
    for n in names:
        t.set_param(n, z["param/" + n])
        np.testing.assert_array_equal(t.get_param(n), z["param/" + n])


@pytest.mark.parametrize("fixture", FILES)
def test_loss_and_gradients_match_torch(fixture):
    z, cfg, names = load(fixture)
    t = make_trainer(cfg)
    set_params(t, z, names)
    tokens = z["tokens"]

    loss = t.forward_backward(tokens)
    loss64, loss32 = float(z["loss"]), float(z["step_loss"][0])
    assert abs(loss - loss64) <= 2 * abs(loss32 - loss64) + 1e-6 * abs(loss64), (loss, loss32, loss64)

    losses = t.losses(tokens)
    assert losses.shape == (cfg["batch"], cfg["context"])
    np.testing.assert_allclose(losses, z["losses"], rtol=0, atol=2e-5)

    for n in names:
        g = t.get_grad(n).astype(np.float64)
        g64, g32 = z["grad/" + n], z["grad32/" + n].astype(np.float64)
        assert g.shape == g64.shape, n
        ours, naive = np.abs(g - g64).max(), np.abs(g32 - g64).max()
        atol = 1e-6 * max(np.abs(g64).max(), 1e-6)
        assert ours <= 2 * naive + atol, f"{n}: max|ours - f64| = {ours:.3g}, max|torch32 - f64| = {naive:.3g}"


@pytest.mark.parametrize("fixture", FILES)
def test_three_adamw_steps_match_torch(fixture):
    z, cfg, names = load(fixture)
    t = make_trainer(cfg)
    set_params(t, z, names)
    tokens = z["tokens"]
    for s in range(3):
        assert t.learning_rate(s) == pytest.approx(z["lr_steps"][s], rel=1e-6)
        loss = t.forward_backward(tokens)
        assert loss == pytest.approx(z["step_loss"][s], rel=1e-5, abs=1e-5)
        norm = t.update()
        assert norm == pytest.approx(z["grad_norm"][s], rel=1e-5)
        assert (cfg["clip"] / (norm + 1e-6) < 1) == bool(z["clipped"][s])
        assert t.step == s + 1
    after_loss = float(t.losses(tokens).astype(np.float64).mean())
    assert after_loss == pytest.approx(z["after_loss"][2], rel=1e-5, abs=1e-5)
    assert float(z["after_err"]) < 1e-5  # float32 torch is itself this close to float64 torch
    for n in names:
        np.testing.assert_allclose(t.get_param(n), z["after/" + n], rtol=0, atol=2e-5, err_msg=n)


def test_sinks_gradient_matches_finite_differences(tmp_path):
    # Learned sinks (attn_sinks): the gradient the fused backward returns for each layer's
    # blk.L.attn_sinks.weight against central differences of the trainer's own float32 loss.
    rng = np.random.default_rng(0)
    t = attn.Trainer(context=16, n_layers=2, d_model=32, n_heads=4, attn_sinks=True, batch=3, threads=2,
                     init_std=0.3)
    names = t.param_names()
    assert names.index("blk.0.attn_sinks.weight") == names.index("blk.0.attn_output.bias") + 1
    assert t.get_param("blk.0.attn_sinks.weight").tolist() == [0.0] * 4  # initialized to 0
    tokens = rng.integers(0, 256, (3, 17)).astype(np.int32)
    for layer in (0, 1):
        name = f"blk.{layer}.attn_sinks.weight"
        t.set_param(name, rng.standard_normal(4).astype(np.float32))
    t.forward_backward(tokens)
    for layer in (0, 1):
        name = f"blk.{layer}.attn_sinks.weight"
        grad, s = t.get_grad(name).copy(), t.get_param(name).copy()
        fd = []
        for h in range(4):
            e = np.zeros(4, np.float32)
            e[h] = 1e-2
            t.set_param(name, s + e)
            up = t.losses(tokens).mean(dtype=np.float64)
            t.set_param(name, s - e)
            fd.append((up - t.losses(tokens).mean(dtype=np.float64)) / 2e-2)
        t.set_param(name, s)
        np.testing.assert_allclose(grad, fd, rtol=2e-3, atol=2e-6, err_msg=name)
        assert np.abs(grad).max() > 1e-3
    # A head's pattern row gives 1 - p_sink to the keys; the checkpoint carries the sinks to the model.
    p = t.patterns(tokens[0, :16])
    assert (p.sum(-1) < 0.999).any() and (p.sum(-1) <= 1 + 1e-5).all()
    t.save(str(tmp_path / "sinks.gguf"))
    model = attn.Model.load(str(tmp_path / "sinks.gguf"))
    assert model.config["attn_sinks"]
    np.testing.assert_allclose(model.logits(tokens[0, :16].tolist()), t.logits(tokens[0, :16]), atol=1e-4)
    plain = attn.Trainer(context=16, n_layers=2, d_model=32, n_heads=4, batch=3, threads=1)
    with pytest.raises(ValueError, match="tensor 'blk.0.attn_sinks.weight' in the file is not a parameter"):
        plain.load(str(tmp_path / "sinks.gguf"))


def test_python_api_shapes_and_errors():
    t = attn.Trainer(vocab_size=11, context=7, n_layers=2, d_model=8, n_heads=2, d_ff=12, batch=2, threads=1)
    names = t.param_names()
    assert names[0] == "token_embd.weight" and names[-1] == "output.weight"
    assert t.get_param("blk.0.attn_qkv.weight").shape == (24, 8)
    assert t.get_param("blk.0.attn_qkv.bias").shape == (24,)
    assert t.get_param("blk.0.attn_qkv.weight").dtype == np.float32
    with pytest.raises(ValueError, match="must be \\(24, 8\\)"):
        t.set_param("blk.0.attn_qkv.weight", np.zeros((8, 24), np.float32))
    with pytest.raises(ValueError, match="no parameter named"):
        t.get_param("nope")
    tokens = np.random.default_rng(0).integers(0, 11, size=(2, 8)).astype(np.int32)
    loss = t.forward_backward(tokens)
    assert np.isfinite(loss)
    assert t.get_grad("output.weight").shape == (11, 8)
    assert t.losses(tokens).shape == (2, 7)
    assert t.logits(tokens[0, :5]).shape == (5, 11)
    p = t.patterns(tokens[0, :4])
    assert p.shape == (2, 2, 4, 4)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    assert t.update() > 0 and t.step == 1
    bad = tokens.copy()
    bad[1, 3] = 11
    with pytest.raises(ValueError, match=r"tokens\[1\]\[3\] = 11"):
        t.forward_backward(bad)
    with pytest.raises(ValueError, match="context \\+ 1"):
        t.forward_backward(tokens[:, :7])
    with pytest.raises(ValueError, match="d_model = 9 is not divisible by n_heads = 2"):
        attn.Trainer(vocab_size=11, context=7, d_model=9, n_heads=2)
    with pytest.raises(ValueError, match="lr"):
        attn.Trainer(lr=-1.0)
