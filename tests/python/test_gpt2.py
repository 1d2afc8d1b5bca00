"""The GPT-2 path against Hugging Face transformers: a tiny random GPT-2 saved by transformers,
converted to GGUF as llama.cpp's converter does, its logits committed as a fixture
(tests/fixtures/make_gpt2_fixture.py has the versions and the layout)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import attn

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")


@pytest.fixture(scope="module")
def golden():
    with open(os.path.join(FIXTURES, "gpt2_tiny_logits.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("kind, key", [("f32", "logits"), ("f16", "logits_f16_weights")])
def test_logits_match_transformers(golden, kind, key):
    model = attn.Model.load(os.path.join(FIXTURES, golden["files"][kind]))
    assert model.config["arch"] == "gpt2"
    for case in golden["cases"]:
        want = np.asarray(case[key], dtype=np.float32).reshape(case["shape"])
        got = model.logits(case["ids"])
        # Both sides compute in float32 from the same weights; the differences are summation
        # order only, so a tolerance of 1e-4 of the logit scale catches any real mistake (a
        # dropped bias or a swapped transpose moves logits by O(1) here).
        scale = float(np.abs(want).max())
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale)
        assert (got.argmax(-1) == np.asarray(case["argmax"])).all()


def test_incremental_decoding_matches_one_batch(golden):
    model = attn.Model.load(os.path.join(FIXTURES, "gpt2_tiny.gguf"))
    ids = golden["cases"][0]["ids"]
    full = model.logits(ids)
    r = model.generate(ids[:5], max_tokens=6, return_dict=True)
    # Greedy continuation through the KV cache agrees with argmax of a fresh forward pass.
    seq = list(ids[:5])
    for t in r["tokens"]:
        assert t == int(model.logits(seq)[-1].argmax())
        seq.append(t)
    assert np.isfinite(full).all()


def test_prompt_longer_than_context_is_an_error(golden):
    model = attn.Model.load(os.path.join(FIXTURES, "gpt2_tiny.gguf"))
    n_ctx = model.config["context_length"]
    with pytest.raises(ValueError, match="context"):
        model.generate([1] * (n_ctx + 1), max_tokens=1)
    with pytest.raises(ValueError, match="capacity|context"):
        model.logits([1] * (n_ctx + 1))


def _rewrite(src: str, dst: str, *, arch: str | None = None, drop: str | None = None,
             reshape: str | None = None) -> None:
    """Copies a GGUF file with one change, through llama.cpp's own gguf package."""
    import gguf

    r = gguf.GGUFReader(src)
    new_arch = arch or r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, new_arch)
    for name, field in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        value = field.contents()
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(name, value, vtype, sub_type=field.types[-1])
        else:
            w.add_key_value(name, value, vtype)
    for t in r.tensors:
        if t.name == drop:
            continue
        data = np.array(t.data)
        if t.name == reshape:
            data = data[:-1]  # one row short
        w.add_tensor(t.name, data, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("change, fragment", [
    ({"arch": "mamba"}, "architecture 'mamba' is not supported"),
    ({"drop": "blk.1.ffn_up.weight"}, "'blk.1.ffn_up.weight' is missing"),
    ({"drop": "output_norm.bias"}, "'output_norm.bias' is missing"),
    ({"reshape": "blk.0.attn_qkv.weight"}, "blk.0.attn_qkv.weight' has shape"),
])
def test_broken_models_are_rejected_with_the_reason(tmp_path, change, fragment):
    dst = str(tmp_path / "broken.gguf")
    _rewrite(os.path.join(FIXTURES, "gpt2_tiny.gguf"), dst, **change)
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        attn.Model.load(dst)


def test_a_rewritten_copy_still_loads(tmp_path):
    # The rewriting helper itself is faithful: an unchanged copy gives the same logits.
    dst = str(tmp_path / "copy.gguf")
    src = os.path.join(FIXTURES, "gpt2_tiny.gguf")
    _rewrite(src, dst)
    ids = [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(attn.Model.load(dst).logits(ids), attn.Model.load(src).logits(ids))
