"""llama.cpp's control vectors (--control-vector, Model.set_control_vector, attn.steering's
load/save_control_vector) against llama.cpp itself: tests/fixtures/smollm2_cvec_llamacpp.json holds
what llama.cpp computes for SmolLM2 with tests/fixtures/smollm2_love_cvec.gguf (a file attn wrote;
make_control_vector_fixture.py), under two scales and a layer range."""
import json
import os
import subprocess
import urllib.request

import numpy as np
import pytest

import attn
from attn import steering
from test_serve import ATTN_BIN

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
CVEC = os.path.join(FIXTURES, "smollm2_love_cvec.gguf")


def _agreement(m, case):
    """(top-1 agreements, mean and max |log-probability difference| over llama.cpp's top 3)."""
    logits = m.logits(case["tokens"]).astype(np.float64)
    agree, diffs = 0, []
    for p, row in enumerate(case["rows"]):
        lp = logits[p] - logits[p].max() - np.log(np.exp(logits[p] - logits[p].max()).sum())
        agree += int(np.argmax(lp)) == row["top"][0][0]
        diffs += [abs(lp[i] - (v - row["lse"])) for i, v in row["top"][:3]]
    return agree, float(np.mean(diffs)), float(max(diffs))


@pytest.fixture
def fresh_model():
    m = attn.Model.load()
    yield m
    m.set_control_vector(None)


def test_control_vectors_match_llama_cpp(fresh_model):
    m = fresh_model
    with open(os.path.join(FIXTURES, "smollm2_cvec_llamacpp.json")) as f:
        fx = json.load(f)
    assert fx["directions"] == [5, 9]
    for shift in (0, -1, 1):  # the right block, and one off either way
        for case in fx["cases"]:
            s = case["setting"]
            if s["scale"] == 0:
                m.set_control_vector(None)
            else:
                cv = steering.load_control_vector(m, CVEC, scale=s["scale"], layer_range=s["layers"])
                assert sorted(cv) == ([9] if s["layers"] == [8, 31] else [5, 9])
                m.set_control_vector({k + shift: v for k, v in cv.items()})
            agree, mean, worst = _agreement(m, case)
            n = len(case["rows"])
            if shift == 0 or s["scale"] == 0:
                # Measured 2026-12-05: 17-19 of 19 top-1s, mean 0.05-0.09 nats, max 0.42.
                assert agree >= n - 2 and mean < 0.15 and worst < 0.8, (s, case["prompt"], agree, mean, worst)
            else:
                assert mean > 0.4, (shift, s, case["prompt"], mean)  # measured 1.0-2.1: the block matters


def test_set_control_vector_and_files(fresh_model, tmp_path):
    m = fresh_model
    v = steering.vector(m, " love", " hate", layer=10)
    # The control vector at block 9's output is the steering hook at block 10's input, everywhere.
    hooked = m.generate("I think dogs are", max_tokens=16, hooks=[steering.add(10, v, scale=2.0, from_position=0)])
    path = tmp_path / "love.gguf"
    steering.save_control_vector(path, {9: v}, model_hint="llama")
    m.set_control_vector(steering.load_control_vector(m, path, scale=2.0))
    assert sorted(m.control_vector) == [9]
    np.testing.assert_array_equal(m.control_vector[9], 2.0 * v)
    assert m.generate("I think dogs are", max_tokens=16) == hooked
    m.set_control_vector(None)
    assert m.control_vector == {}
    assert m.generate("I think dogs are", max_tokens=16) != hooked
    with pytest.raises(ValueError, match="block 30"):
        m.set_control_vector({30: v})
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        m.set_control_vector({4: np.zeros(3)})
    with pytest.raises(ValueError, match="no direction.N tensors"):
        steering.load_control_vector(m, m.path)
    with pytest.raises(ValueError, match="direction.5: the model has blocks 0 to 1"):
        steering.load_control_vector(attn.Model.load(os.path.join(FIXTURES, "llama_tiny.gguf")), CVEC)


def test_cli_and_server_apply_control_vectors(fresh_model):
    m = fresh_model
    m.set_control_vector(steering.load_control_vector(m, CVEC, scale=2.0))
    want = m.generate("I think dogs are", max_tokens=12)
    r = subprocess.run([ATTN_BIN, "generate", "-n", "12", "--control-vector-scaled", CVEC, "2", "--json",
                        "I think dogs are"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["text"] == want
    bad = subprocess.run([ATTN_BIN, "generate", "-n", "2", "--control-vector-scaled", CVEC, "x", "Hi"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "the scale is not a number" in bad.stderr
    bad = subprocess.run([ATTN_BIN, "generate", "-n", "2", "--control-vector", m.path, "Hi"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "no direction.N tensors" in bad.stderr
    proc = subprocess.Popen([ATTN_BIN, "serve", "--port", "0", "-t", "2", "--control-vector-scaled", CVEC, "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = "http://" + proc.stdout.readline().split("http://", 1)[1].split()[0]
        body = json.dumps({"prompt": "I think dogs are", "max_tokens": 12, "temperature": 0}).encode()
        req = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert json.loads(resp.read())["choices"][0]["text"] == want
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_control_vectors_from_pairs(fresh_model, tmp_path):
    m = fresh_model
    pos, neg = ["I love you", "This is wonderful"], ["I hate you", "This is terrible"]
    cv = steering.control_vector(m, pos, neg)
    assert sorted(cv) == list(range(1, 30))
    np.testing.assert_allclose(cv[9], steering.vector(m, pos, neg, layer=10), rtol=0, atol=1e-5)
    # attn cvector writes the same directions, in a file llama.cpp's format reads.
    (tmp_path / "pos.txt").write_text("I love you\nThis is wonderful\n")
    (tmp_path / "neg.txt").write_text("I hate you\r\nThis is terrible\n\n")
    out = tmp_path / "cv.gguf"
    r = subprocess.run([ATTN_BIN, "cvector", "--positive-file", str(tmp_path / "pos.txt"), "--negative-file",
                        str(tmp_path / "neg.txt"), "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("2 pairs; directions for blocks 1 to 29")
    loaded = steering.load_control_vector(m, out)
    assert sorted(loaded) == sorted(cv)
    for layer, v in cv.items():
        np.testing.assert_allclose(loaded[layer], v, rtol=0, atol=1e-5)
    import gguf
    assert gguf.GGUFReader(str(out)).fields["general.architecture"].contents() == "controlvector"
    bad = subprocess.run([ATTN_BIN, "cvector", "--positive", "a", "-o", str(tmp_path / "x.gguf")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "1 positive and 0 negative texts" in bad.stderr
    assert not (tmp_path / "x.gguf").exists()
