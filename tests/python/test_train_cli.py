"""`attn train` and `attn curves`: a tiny model trained on a small text, its files, bit-for-bit
reproducibility, resuming, and bad input (empty or binary corpus, a checkpoint that does not
match, a diverging run) giving a message, a non-zero exit and the last good checkpoint kept."""
from __future__ import annotations

import csv
import json
import os
import random
import subprocess

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ATTN_BIN = os.path.join(ROOT, "build", "bin", "attn")

TINY = ["--d-model", "32", "--heads", "4", "--context", "32", "--batch", "4", "--warmup", "2",
        "--eval-every", "5", "--eval-batches", "2", "--threads", "2"]


def run(*args, timeout=300):
    return subprocess.run([ATTN_BIN, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """About 60 KB of English-like text with repeated phrases."""
    rng = random.Random(0)
    words = ("the lord said unto moses and aaron in the land of egypt this month shall be unto you the "
             "beginning of months it shall be the first month of the year to you speak ye unto all").split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 20))) + "." for _ in range(1500)]
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def train(corpus, out, *extra, layers="2"):
    """`attn train` with the TINY settings, any of which `extra` overrides."""
    settings = {k: [v] for k, v in zip(TINY[::2], TINY[1::2])}
    flags = []
    i = 0
    while i < len(extra):
        j = i + 1
        while j < len(extra) and not extra[j].startswith("--"):
            j += 1
        if j > i + 1:
            settings[extra[i]] = list(extra[i + 1:j])  # an option and its value(s)
        else:
            flags.append(extra[i])
        i = j
    args = [a for k, values in settings.items() for a in (k, *values)]
    return run("train", "--corpus", corpus, "--out", str(out), "--layers", layers, *args, *flags)


def read_metrics(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_train_writes_checkpoint_metrics_and_curves(corpus, tmp_path):
    out = tmp_path / "run"
    r = train(corpus, out, "--steps", "20", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["steps"] == 20
    rows = read_metrics(out / "metrics.csv")
    assert [int(row["step"]) for row in rows] == [0, 5, 10, 15, 20]
    heads = [f"induction_{l}.{h}" for l in range(2) for h in range(4)] + [f"prev_{l}.{h}" for l in range(2)
                                                                          for h in range(4)]
    assert set(heads) <= set(rows[0])
    for row in rows:
        for h in heads:
            assert 0.0 <= float(row[h]) <= 1.0
    # The loss falls from about ln(256) on this very repetitive text.
    assert float(rows[0]["val_loss"]) > 5.0
    assert float(rows[-1]["loss"]) < float(rows[1]["loss"])
    assert abs(summary["val_loss"] - float(rows[-1]["val_loss"])) < 1e-4
    png = (out / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # The checkpoint opens like any model: info, generate and heads.
    ckpt = str(out / "model.gguf")
    r = run("info", ckpt)
    assert r.returncode == 0, r.stderr
    assert "gpt2" in r.stdout
    r = run("generate", "--model", ckpt, "-n", "8", "--json", "the lord")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["tokens"]) == 8
    # The probe shrinks to fit the 32-token context (BOS-less: 2 copies of 15 tokens).
    r = run("heads", "--model", ckpt, "--json")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert len(j["heads_scores"]) == 8 and "15 distinct" in j["measured_on"]
    r = run("inspect", "--model", ckpt, "-n", "4", "--out", str(out / "report"), "the lord said")
    assert r.returncode == 0, r.stderr
    assert (out / "report" / "report.html").stat().st_size > 1000


def test_train_with_sinks_writes_them_and_resumes(corpus, tmp_path):
    # --sinks: gpt-oss's learned sinks in every layer, saved in the gpt2 checkpoint, read by the
    # model loader, and required again by --resume (the same model settings).
    out = tmp_path / "sinks"
    r = train(corpus, out, "--steps", "10", "--sinks", "--until", "5")
    assert r.returncode == 0, r.stderr
    r = run("info", str(out / "model.gguf"))
    assert r.returncode == 0 and "blk.1.attn_sinks.weight" in r.stdout, r.stdout
    r = train(corpus, out, "--steps", "10", "--resume")
    assert r.returncode != 0 and "attn_sinks" in r.stderr, r.stderr
    r = train(corpus, out, "--steps", "10", "--sinks", "--resume", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["steps"] == 10


def test_training_is_reproducible_bit_for_bit(corpus, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert train(corpus, a, "--steps", "10", "--seed", "7").returncode == 0
    assert train(corpus, b, "--steps", "10", "--seed", "7").returncode == 0
    assert (a / "model.gguf").read_bytes() == (b / "model.gguf").read_bytes()
    ra, rb = read_metrics(a / "metrics.csv"), read_metrics(b / "metrics.csv")
    for x, y in zip(ra, rb, strict=True):
        x.pop("tokens_per_s"), y.pop("tokens_per_s")
        assert x == y
    c = tmp_path / "c"
    assert train(corpus, c, "--steps", "10", "--seed", "8").returncode == 0
    assert (a / "model.gguf").read_bytes() != (c / "model.gguf").read_bytes()


def test_resume_continues_exactly(corpus, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train(corpus, straight, "--steps", "20").returncode == 0
    r = train(corpus, resumed, "--steps", "20", "--until", "10")
    assert r.returncode == 0, r.stderr
    assert "step 10" in r.stdout or "10 steps" in r.stdout
    r = train(corpus, resumed, "--steps", "20", "--resume")
    assert r.returncode == 0, r.stderr
    assert (straight / "model.gguf").read_bytes() == (resumed / "model.gguf").read_bytes()
    assert [row["val_loss"] for row in read_metrics(straight / "metrics.csv")] == \
        [row["val_loss"] for row in read_metrics(resumed / "metrics.csv")]


def test_resume_with_other_settings_is_refused_and_keeps_the_checkpoint(corpus, tmp_path):
    out = tmp_path / "run"
    assert train(corpus, out, "--steps", "5").returncode == 0
    before = (out / "model.gguf").read_bytes()
    r = train(corpus, out, "--steps", "10", "--resume", layers="1")
    assert r.returncode != 0
    assert "block_count" in r.stderr or "layer" in r.stderr, r.stderr
    assert (out / "model.gguf").read_bytes() == before


def test_diverging_run_stops_with_the_last_good_checkpoint(corpus, tmp_path):
    out = tmp_path / "run"
    r = train(corpus, out, "--steps", "200", "--save-every", "2", "--lr", "1e30", "--clip", "0", "--warmup", "1")
    assert r.returncode != 0
    assert "not finite" in r.stderr, r.stderr
    assert "last good checkpoint" in r.stderr, r.stderr
    # The checkpoint left behind is a good one: its weights are finite and it runs.
    r2 = run("generate", "--model", str(out / "model.gguf"), "-n", "2", "--json", "the")
    assert r2.returncode == 0, r2.stderr


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"\x00\x01\x02\x03" * 4096, "not a text file: a NUL byte at offset 0"),
    (bytes(range(128, 256)) * 256, "not UTF-8 text"),
    (b"too short", "small"),
])
def test_bad_corpus_is_refused(tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    r = run("train", "--corpus", str(path), "--out", str(tmp_path / "run"), *TINY, "--steps", "2")
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
    assert not (tmp_path / "run" / "model.gguf").exists()


def test_missing_corpus_and_bad_settings(tmp_path, corpus):
    r = run("train", "--corpus", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "run"), "--steps", "2")
    assert r.returncode != 0 and "nope.txt" in r.stderr
    r = train(corpus, tmp_path / "run", "--heads", "5", "--steps", "2")  # 32 % 5 != 0
    assert r.returncode != 0 and "5" in r.stderr
    r = train(corpus, tmp_path / "run", "--lr", "-1", "--steps", "2")
    assert r.returncode != 0 and "lr" in r.stderr


def test_repeated_spans_are_recorded_and_resume_exactly(corpus, tmp_path):
    rep = ("--repeat-fraction", "0.5", "--repeat-span", "4", "12")
    straight, resumed, plain = tmp_path / "straight", tmp_path / "resumed", tmp_path / "plain"
    assert train(corpus, straight, "--steps", "20", *rep).returncode == 0
    data = json.loads((straight / "data.json").read_text())
    assert data["repeat_fraction"] == 0.5
    assert (data["repeat_min_span"], data["repeat_max_span"]) == (4, 12)
    assert data["corpus_bytes"] == os.path.getsize(corpus)
    r = train(corpus, resumed, "--steps", "20", "--until", "10", *rep)
    assert r.returncode == 0, r.stderr
    before = (resumed / "model.gguf").read_bytes()
    # Resuming with other data settings would draw other batches: refused, checkpoint kept.
    r = train(corpus, resumed, "--steps", "20", "--resume", "--repeat-fraction", "0.25", "--repeat-span", "4", "12")
    assert r.returncode != 0
    assert "repeat_fraction = 0.5" in r.stderr and "0.25" in r.stderr, r.stderr
    assert (resumed / "model.gguf").read_bytes() == before
    r = train(corpus, resumed, "--steps", "20", "--resume", *rep)
    assert r.returncode == 0, r.stderr
    assert (straight / "model.gguf").read_bytes() == (resumed / "model.gguf").read_bytes()
    # The repeated rows change what is trained on.
    assert train(corpus, plain, "--steps", "20").returncode == 0
    assert (straight / "model.gguf").read_bytes() != (plain / "model.gguf").read_bytes()
    plain_data = json.loads((plain / "data.json").read_text())
    assert (plain_data["repeat_fraction"], plain_data["repeat_min_span"], plain_data["repeat_max_span"]) == (0, 0, 0)
    # Without repeated rows the span flags draw nothing, so a resume may leave them out.
    r = train(corpus, plain, "--steps", "25", "--resume", "--repeat-span", "3", "5")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("flags, message", [
    (["--repeat-fraction", "1.5"], "--repeat-fraction 1.5 must be in [0, 1]"),
    (["--repeat-fraction", "-0.5"], "--repeat-fraction -0.5"),
    (["--repeat-fraction", "0.5", "--repeat-span", "20", "10"], "--repeat-span 20 10"),
    (["--repeat-fraction", "0.5", "--repeat-span", "8", "40"], "--context (32)"),
    (["--repeat-fraction", "0.5", "--repeat-span", "0", "4"], "1 <= MIN"),
])
def test_bad_repeat_flags_are_refused(corpus, tmp_path, flags, message):
    r = train(corpus, tmp_path / "run", "--steps", "2", *flags)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
    assert not (tmp_path / "run" / "model.gguf").exists()


def test_curves_draws_several_runs(corpus, tmp_path):
    for layers in ("1", "2"):
        r = train(corpus, tmp_path / f"L{layers}", "--steps", "10", layers=layers)
        assert r.returncode == 0, r.stderr
    png = tmp_path / "both.png"
    r = run("curves", str(tmp_path / "L1"), str(tmp_path / "L2"), "--labels", "1 layer", "2 layers", "--out",
            str(png))
    assert r.returncode == 0, r.stderr
    from PIL import Image
    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape[0] > 300 and img.shape[1] > 300
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 4  # lines in several colours, not a blank page
    r = run("curves", str(tmp_path / "missing"), "--out", str(png))
    assert r.returncode != 0 and "missing" in r.stderr


# Four records of a real 8,000-step run (2 layers x 4 heads, steps 2000-2750) whose curves made
# the plotter write outside the image: nearly flat segments (scores of 1e-9 to 1e-12) had x bounds
# far beyond the int range, converted to int. Tested through the per-head charts of `attn train`.
FLAT_RECORDS = {
    "loss": [1.69833, 1.6722, 1.65144, 1.62975], "val_loss": [1.80692, 1.78373, 1.77301, 1.74712],
    "icl": [0.0353858, 0.047812, 0.0434449, 0.0369171],
    "induction_0.0": [0.0114114, 0.0111431, 0.0103148, 0.00940193],
    "induction_0.1": [0.0109642, 0.0100667, 0.00885467, 0.00748972],
    "induction_0.2": [0.00569108, 0.00408281, 0.00251057, 0.00165541],
    "induction_0.3": [0.011815, 0.011788, 0.011722, 0.0117522],
    "induction_1.0": [8.92081e-10, 5.46088e-10, 2.5539e-10, 5.97431e-11],
    "induction_1.1": [3.15617e-11, 5.03929e-12, 7.973e-13, 5.76938e-13],
    "induction_1.2": [7.44373e-10, 1.14392e-10, 3.8884e-11, 5.91036e-11],
    "induction_1.3": [1.19974e-09, 9.8622e-10, 9.7703e-11, 1.47417e-10],
    "prev_0.0": [0.0409705, 0.041915, 0.0425175, 0.0439697], "prev_0.1": [0.043695, 0.0450935, 0.0472638, 0.0517422],
    "prev_0.2": [0.0544792, 0.0608666, 0.0702697, 0.0779091], "prev_0.3": [0.0378228, 0.0371421, 0.037044, 0.0362128],
    "prev_1.0": [0.269256, 0.284825, 0.285108, 0.290378], "prev_1.1": [0.239787, 0.243247, 0.258626, 0.252179],
    "prev_1.2": [0.228262, 0.247372, 0.255455, 0.255401], "prev_1.3": [0.27824, 0.289474, 0.295236, 0.297503],
}


def test_curves_survive_nearly_flat_lines(corpus, tmp_path):
    out = tmp_path / "run"
    assert train(corpus, out, "--steps", "15").returncode == 0
    rows = read_metrics(out / "metrics.csv")
    assert len(rows) == 4
    for i, row in enumerate(rows):
        for key, values in FLAT_RECORDS.items():
            row[key] = repr(values[i])
    with open(out / "metrics.csv", "w", newline="") as f:  # CRLF line ends, as csv writes them
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    r = train(corpus, out, "--steps", "15", "--resume")  # already at step 15: only redraws
    assert r.returncode == 0, r.stderr
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"


KJV = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "attn", "corpus", "kjv.txt")


def test_two_layers_form_an_induction_head_and_one_layer_does_not(tmp_path):
    """The demonstration (scripts/train_demo.sh) at 1,200 steps instead of 3,000: on the King James
    Bible with half the rows a repeated span, the 2-layer model's last layer grows an induction
    head and uses its context (ICL score falls), the 1-layer model's does not. About a minute."""
    assert os.path.exists(KJV), f"{KJV} is missing: scripts/setup.sh fetches it (scripts/fetch_corpus.sh)"
    result = {}
    for layers in ("1", "2"):
        out = tmp_path / f"L{layers}"
        r = run("train", "--corpus", KJV, "--out", str(out), "--layers", layers, "--d-model", "128", "--heads", "4",
                "--context", "64", "--batch", "32", "--steps", "1200", "--lr", "2e-3", "--repeat-fraction", "0.5",
                "--eval-every", "100", "--eval-batches", "2", "--threads", "2", "--json")
        assert r.returncode == 0, r.stderr
        result[layers] = json.loads(r.stdout)
        rows = read_metrics(out / "metrics.csv")
        first = max(float(v) for k, v in rows[1].items() if k.startswith("induction_"))  # step 100
        assert first < 0.1, f"{layers} layer(s): induction {first} at step 100, before any training to speak of"
    one, two = result["1"], result["2"]
    assert max(one["max_induction_per_layer"]) < 0.1, one
    assert two["max_induction_per_layer"][1] > 0.3, two
    assert two["icl"] < one["icl"] - 0.3, (one["icl"], two["icl"])
    assert two["val_loss"] < one["val_loss"] - 0.2, (one["val_loss"], two["val_loss"])
    # `attn heads` opens the checkpoint and finds the head too: its probe leaves out the bytes
    # that training never saw (the checkpoint marks them unused).
    r = run("heads", "--json", "--model", two["checkpoint"])
    assert r.returncode == 0, r.stderr
    scores = json.loads(r.stdout)["heads_scores"]
    best = max(scores, key=lambda h: h["induction"])
    assert best["layer"] == 1 and best["induction"] > 0.25, best
