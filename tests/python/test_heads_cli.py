"""The head-inspection commands of the attn CLI: `attn heads`, `attn ablate`, `attn inspect`.

They run on the default model (SmolLM2-135M-Instruct, fetched by scripts/setup.sh) and on the tiny
GPT-2 fixture; bad input must give a message and a non-zero exit."""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ATTN_BIN = os.path.join(ROOT, "build", "bin", "attn")
GPT2_TINY = os.path.join(ROOT, "tests", "fixtures", "gpt2_tiny.gguf")
FIELDS = {"layer", "head", "previous_token", "duplicate_token", "induction", "first_token", "entropy", "local",
          "role"}
ROLES = {"induction", "previous-token", "duplicate-token", "sink", "local", "diffuse"}


def run(*args, timeout=300):
    return subprocess.run([ATTN_BIN, *args], capture_output=True, text=True, timeout=timeout)


def test_heads_json_covers_every_head_of_smollm2():
    r = run("heads", "--json", "-t", "2")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert (j["layers"], j["heads"]) == (30, 9)
    scores = j["heads_scores"]
    assert len(scores) == 270
    assert [(s["layer"], s["head"]) for s in scores] == [(l, h) for l in range(30) for h in range(9)]
    for s in scores:
        assert set(s) >= FIELDS and s["role"] in ROLES
        for k in ("previous_token", "duplicate_token", "induction", "first_token", "local"):
            assert -1e-6 <= s[k] <= 1 + 1e-6, (s, k)
        assert s["entropy"] >= 0
    # SmolLM2 has clear induction and previous-token heads on the probe (README lists them).
    assert max(s["induction"] for s in scores) > 0.8
    assert max(s["previous_token"] for s in scores) > 0.8
    assert {"induction", "previous-token", "sink"} <= {s["role"] for s in scores}


def test_heads_table_and_text_mode():
    r = run("heads", "--model", GPT2_TINY, "--probe-length", "20", "--sequences", "2")
    assert r.returncode == 0, r.stderr
    assert "Strongest heads of each role" in r.stdout
    assert sum(1 for line in r.stdout.splitlines() if line[:1].isdigit() and "." in line.split()[0]) == 8
    r = run("heads", "--model", GPT2_TINY, "--json", "--text", "hello hello world world")
    assert r.returncode == 0, r.stderr
    assert "given text" in json.loads(r.stdout)["measured_on"]


def test_ablate_reports_a_loss_change():
    text = "The cat sat on the mat. The cat sat on the mat. The cat sat on the"
    r = run("ablate", "--heads", "18.6,17.3", "-t", "2", text)
    assert r.returncode == 0, r.stderr
    assert "zero-ablating 18.6,17.3" in r.stdout and "->" in r.stdout
    r = run("ablate", "--heads", "18.6", "--mode", "mean", text)
    assert r.returncode == 0 and "mean-ablating" in r.stdout


@pytest.mark.parametrize("args, fragment", [
    (["ablate", "--heads", "40.1", "some text"], "does not exist"),
    (["ablate", "--heads", "3-1", "some text"], "LAYER.HEAD"),
    (["ablate", "--heads", "1.1", "--mode", "half", "text"], "mode"),
    (["heads", "--model", "/nonexistent.gguf"], "does not exist"),
    (["heads", "--model", GPT2_TINY, "--probe-length", "500"], "probe"),
    (["inspect", "--model", GPT2_TINY, "--out", "/proc/attn-report", "hi"], "cannot create"),
])
def test_bad_input_exits_nonzero(args, fragment):
    r = run(*args, timeout=60)
    assert r.returncode != 0
    assert fragment in r.stderr + r.stdout, r.stderr


def test_inspect_writes_the_report(tmp_path):
    out = tmp_path / "report"
    r = run("inspect", "-n", "8", "-t", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "Strongest heads of each role" in r.stdout
    assert f"Report: {out}/report.html" in r.stdout
    heads = json.loads((out / "heads.json").read_text())
    assert len(heads["heads_scores"]) == 270
    assert heads["n_prompt"] < len(heads["tokens"]) == len(heads["token_ids"])
    for png in heads["heatmaps"]:
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 200
    html = (out / "report.html").read_text()
    assert "/*ATTN_DATA*/" not in html and "http://" not in html.replace("http://www.w3.org", "")


def test_inspect_report_carries_the_logit_lens(tmp_path, model):
    # The report's lens is Model.logit_lens on the report's tokens: each layer's top prediction,
    # its probability and the next token's (rounded to 3 decimals); --no-lens leaves it out.
    from viewer_data import load_report_data

    out = tmp_path / "report"
    r = run("inspect", "-t", "2", "--out", str(out), "The cat sat on the mat. The cat sat on the")
    assert r.returncode == 0, r.stderr
    data = load_report_data(str(out / "report.html"))
    lens, n = data["lens"], len(data["tokens"])
    want = model.logit_lens(data["token_ids"], k=1)
    assert lens["layers"] == 31 and len(lens["top"]) == len(lens["top_p"]) == len(lens["next_p"]) == 31 * n
    assert lens["top"] == want["top_ids"][:, :, 0].ravel().tolist()
    np.testing.assert_allclose(lens["top_p"], np.exp(want["top_logprobs"][:, :, 0]).ravel(), atol=6e-4)
    next_p = np.zeros((31, n))
    next_p[:, :-1] = np.exp(want["next_logprob"])
    np.testing.assert_allclose(lens["next_p"], next_p.ravel(), atol=6e-4)
    assert all(lens["texts"][str(t)] == model.detokenize([t]) for t in set(lens["top"]))
    r = run("inspect", "--no-lens", "--model", GPT2_TINY, "-t", "2", "--out", str(tmp_path / "r2"), "hello there")
    assert r.returncode == 0, r.stderr
    assert "lens" not in load_report_data(str(tmp_path / "r2" / "report.html"))


def test_inspect_report_works_in_a_real_browser(tmp_path):
    """The report of a real `attn inspect` run (SmolLM2, a prompt plus a continuation) in headless
    Chromium: loads without console errors, clicking a head zooms, hovering a token highlights,
    search filters, screenshots are not blank (tests/python/test_viewer.py's check_report)."""
    from test_viewer import check_report

    out = tmp_path / "report"
    r = run("inspect", "-n", "16", "-t", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    result = check_report(str(out / "report.html"))
    assert result["n"] == len(json.loads((out / "heads.json").read_text())["tokens"])


def test_model_report_equals_attn_inspect(tmp_path, model):
    """Model.report: the same viewer data as `attn inspect` on the same text (patterns, scores,
    lens), a page that works in the browser, and a Jupyter display in a sandboxed frame."""
    from viewer_data import load_report_data

    text = "The cat sat on the mat. The cat sat on the"
    out = tmp_path / "cli"
    r = run("inspect", "-t", "2", "--out", str(out), text)
    assert r.returncode == 0, r.stderr
    want = load_report_data(str(out / "report.html"))
    rep = model.report(text, threads=2)
    assert len(rep.heads) == 270 and rep.tokens == want["tokens"]
    rep.save(str(tmp_path / "py.html"))
    got = load_report_data(str(tmp_path / "py.html"))
    for key in ("token_ids", "tokens", "heads_scores", "patterns", "lens", "probe", "layers", "heads"):
        assert got[key] == want[key], key
    assert rep._repr_html_().startswith('<iframe sandbox="allow-scripts') and "&quot;" in rep._repr_html_()
    assert "lens" not in load_report_data_from(model.report(text, lens=False), tmp_path)
    with pytest.raises(ValueError, match="no tokens"):
        model.report([])


def load_report_data_from(rep, tmp_path):
    from viewer_data import load_report_data
    path = tmp_path / "tmp.html"
    rep.save(str(path))
    return load_report_data(str(path))
