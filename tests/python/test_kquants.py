"""The K block formats (Q2_K ... Q6_K: 256-value super-blocks, as Q2_K, Q3_K_M, Q4_K_M, ... GGUF
files use them), IQ4_XS, and the 32-value Q5_0 / Q5_1 / IQ4_NL those files fall back to: attn's
decoding against the `gguf` package's (llama.cpp's own Python reader, an independent
implementation), on random blocks written into a GGUF file; and the reader's table of every ggml
type against the package's."""
from __future__ import annotations

import os

import numpy as np
import pytest

import attn
from attn import _attn

gguf = pytest.importorskip("gguf")  # python/requirements.txt pins gguf==0.19.0

BYTES = {"Q4_K": 144, "Q5_K": 176, "Q6_K": 210, "Q5_0": 22, "Q5_1": 24, "Q2_K": 84, "Q3_K": 110, "IQ4_NL": 18,
         "IQ4_XS": 136, "MXFP4": 17}
BLOCK = {"Q4_K": 256, "Q5_K": 256, "Q6_K": 256, "Q5_0": 32, "Q5_1": 32, "Q2_K": 256, "Q3_K": 256, "IQ4_NL": 32,
         "IQ4_XS": 256, "MXFP4": 32}
D_AT = {"Q6_K": 208, "Q2_K": 80, "Q3_K": 108}  # where the f16 scale d sits (else byte 0)
DMIN_AT = {"Q4_K": 2, "Q5_K": 2, "Q5_1": 2, "Q2_K": 82}  # the f16 min / dmin


def _random_blocks(rng, qtype: str, rows: int, cols: int) -> np.ndarray:
    nb = rows * cols // BLOCK[qtype]
    blocks = rng.integers(0, 256, size=(nb, BYTES[qtype]), dtype=np.uint8)
    if qtype == "MXFP4":  # an E8M0 exponent byte, every value 0..255 (2^-127 .. 2^128 before halving)
        return blocks.reshape(rows, cols // BLOCK[qtype] * BYTES[qtype])
    # f16 scales of moderate size (random bytes could be NaN or infinity)
    d = (rng.uniform(-0.05, 0.05, size=nb)).astype(np.float16).view(np.uint8).reshape(nb, 2)
    at = D_AT.get(qtype, 0)
    blocks[:, at:at + 2] = d
    if qtype in DMIN_AT:
        at = DMIN_AT[qtype]
        blocks[:, at:at + 2] = (rng.uniform(-0.1, 0.1, size=nb)).astype(np.float16).view(np.uint8).reshape(nb, 2)
    return blocks.reshape(rows, cols // BLOCK[qtype] * BYTES[qtype])


@pytest.mark.parametrize("qtype", list(BYTES))
def test_k_blocks_decode_as_the_gguf_package_does(tmp_path, qtype):
    rng = np.random.default_rng(7)
    rows, cols = 5, 768
    raw = _random_blocks(rng, qtype, rows, cols)
    path = str(tmp_path / f"{qtype}.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_tensor("w", raw, raw_dtype=getattr(gguf.GGMLQuantizationType, qtype))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with np.errstate(over="ignore"):  # MXFP4's largest exponents overflow to infinity, as in attn
        want = gguf.quants.dequantize(raw, getattr(gguf.GGMLQuantizationType, qtype)).astype(np.float32)
    got = _attn.read_tensor(path, "w")
    assert got.shape == (rows, cols)
    np.testing.assert_allclose(got, want.reshape(rows, cols), rtol=1e-6, atol=1e-7)


def test_every_ggml_type_parses_with_the_gguf_packages_sizes(tmp_path):
    """One tensor of every type the gguf package knows: attn's reader parses the file, `attn info`
    lists each tensor with the package's type name and byte count, and the types attn cannot
    compute with are refused by name when read."""
    import subprocess
    rng = np.random.default_rng(3)
    path = str(tmp_path / "all.gguf")
    w = gguf.GGUFWriter(path, "llama")
    want = {}
    for qt in gguf.GGMLQuantizationType:
        if qt.name == "Q8_1":  # the package says 40 bytes (two f32), ggml's block_q8_1 has two f16: 36
            continue
        block, size = gguf.GGML_QUANT_SIZES[qt]
        raw = rng.integers(0, 256, size=(2, 256 // block * size), dtype=np.uint8)
        w.add_tensor(f"t.{qt.name}", raw, raw_dtype=qt)
        want[f"t.{qt.name}"] = (qt.name, raw.size)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    exe = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "build", "bin", "attn")
    out = subprocess.run([exe, "info", path], capture_output=True, text=True, check=True).stdout
    seen = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] in want:
            seen[parts[0]] = (parts[1], int(parts[-1]))
    assert seen == want
    supported = {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
                 "Q6_K", "IQ4_NL", "IQ4_XS", "MXFP4"}
    refused = [line for line in out.splitlines() if line.strip().startswith("attn cannot compute with")]
    assert len(refused) == 1
    assert set(refused[0].split("with", 1)[1].replace(",", " ").split()) == {t for t, _ in want.values()} - supported
    for name, (tname, _) in want.items():
        if tname in supported:
            continue
        with pytest.raises(ValueError, match=f"type {tname}, which attn cannot dequantize"):
            _attn.read_tensor(path, name)


@pytest.mark.parametrize("fixture, min_top1", [("qwen3moe_mxfp4_llamacpp.json", 0.95),
                                               ("gptoss_mxfp4_llamacpp.json", 0.85)])
def test_an_mxfp4_file_llamacpp_made_runs_as_llamacpp_runs_it(fixture, min_top1):
    # tests/fixtures/make_mxfp4_fixture.py: the tiny Qwen3-MoE and gpt-oss quantized by llama.cpp as
    # MXFP4_MOE (experts MXFP4, the rest Q8_0) and llama.cpp's logits on them. Both engines multiply
    # with 8-bit activations but round differently: measured, the median row differs by 1.3% / 1.4%
    # of the largest logit on Qwen3-MoE (as on the same model quantized all to Q8_0; one row of the
    # 37-token case by 15%, where the router's top-2 choice flips between the engines) and by 2.3% /
    # 2.2% on gpt-oss, whose quantized routers have near-ties (gaps of 0.003-0.008 between the 2nd and
    # 3rd logit): top-1 agreement 90% / 89% there (llama.cpp against transformers on the same
    # dequantized weights: 85% / 95%, medians 5.3% / 3.9%).
    import json

    fixtures = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
    with open(os.path.join(fixtures, fixture)) as f:
        golden = json.load(f)
    path = os.path.join(fixtures, golden["file"])
    names = _attn.tensor_names(path)
    assert "blk.0.ffn_gate_exps.weight" in names
    model = attn.Model.load(path)
    for case in golden["cases"]:
        want = np.asarray(case["logits"], dtype=np.float32)
        got = model.logits(case["ids"], kv_type="f32")
        rows = np.abs(got - want).max(-1) / np.abs(want).max()
        assert np.median(rows) < 0.03, np.median(rows)
        assert (got.argmax(-1) == want.argmax(-1)).mean() >= min_top1
    # The expert stacks are MXFP4, decoded as the gguf package decodes them.
    r = gguf.GGUFReader(path)
    t = next(t for t in r.tensors if t.name == "blk.0.ffn_up_exps.weight")
    assert t.tensor_type == gguf.GGMLQuantizationType.MXFP4
    want = gguf.quants.dequantize(np.array(t.data), gguf.GGMLQuantizationType.MXFP4)
    np.testing.assert_array_equal(_attn.read_tensor(path, "blk.0.ffn_up_exps.weight").reshape(want.shape), want)
