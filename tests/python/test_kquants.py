"""The K block formats (Q4_K, Q5_K, Q6_K: 256-value super-blocks, as Q4_K_M / Q5_K_M / Q6_K GGUF
files use them) and the 5-bit Q5_0 / Q5_1 those files fall back to: attn's decoding against the `gguf` package's (llama.cpp's own Python reader, an
independent implementation), on random blocks written into a GGUF file."""
from __future__ import annotations

import numpy as np
import pytest

import attn
from attn import _attn

gguf = pytest.importorskip("gguf")  # python/requirements.txt pins gguf==0.19.0

BYTES = {"Q4_K": 144, "Q5_K": 176, "Q6_K": 210, "Q5_0": 22, "Q5_1": 24}
BLOCK = {"Q4_K": 256, "Q5_K": 256, "Q6_K": 256, "Q5_0": 32, "Q5_1": 32}


def _random_blocks(rng, qtype: str, rows: int, cols: int) -> np.ndarray:
    nb = rows * cols // BLOCK[qtype]
    blocks = rng.integers(0, 256, size=(nb, BYTES[qtype]), dtype=np.uint8)
    # f16 scales of moderate size (random bytes could be NaN or infinity)
    d = (rng.uniform(-0.05, 0.05, size=nb)).astype(np.float16).view(np.uint8).reshape(nb, 2)
    if qtype == "Q6_K":
        blocks[:, 208:210] = d
    else:
        blocks[:, 0:2] = d
    if qtype in ("Q4_K", "Q5_K", "Q5_1"):  # dmin / m
        blocks[:, 2:4] = (rng.uniform(-0.1, 0.1, size=nb)).astype(np.float16).view(np.uint8).reshape(nb, 2)
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
    want = gguf.quants.dequantize(raw, getattr(gguf.GGMLQuantizationType, qtype)).astype(np.float32)
    got = _attn.read_tensor(path, "w")
    assert got.shape == (rows, cols)
    np.testing.assert_allclose(got, want.reshape(rows, cols), rtol=1e-6, atol=1e-7)
