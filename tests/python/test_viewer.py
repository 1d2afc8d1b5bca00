"""The attention viewer page (tools/attn/report/report.html) in a real headless Chromium.

The pages here are rendered from synthetic data (viewer_data.py); check_report(path) runs the same
checks on any report, e.g. one `attn inspect` wrote:

    from test_viewer import check_report
    check_report("out/report.html")          # opens its own browser; or check_report(path, driver)

The tests need Debian's chromium and chromium-driver (scripts/setup.sh installs them) and selenium
(python/requirements.txt); they skip only when the browser or its driver is not installed.
"""

from __future__ import annotations

import io
import os
import shutil
import time

import numpy as np
import pytest

import viewer_data

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")


def new_driver(width: int = 1400, height: int = 1000):
    """A headless Chromium driven by chromedriver, with the browser console recorded."""
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("chromium or chromedriver is not installed (scripts/setup.sh installs chromium, chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in containers
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--force-device-scale-factor=1",
        "--window-size=%d,%d" % (width, height),
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


@pytest.fixture(scope="module")
def driver():
    d = new_driver()
    yield d
    d.quit()


# ---- what the page should show, computed here from the data, not by the page ----


def display_text(token: str) -> str:
    """A token as the strip shows it: spaces ·, newlines ↵, tabs ⇥, other controls as pictures."""
    if token == "":
        return "∅"
    out = []
    for ch in token:
        if ch == " ":
            out.append("·")
        elif ch == "\n":
            out.append("↵")
        elif ch == "\t":
            out.append("⇥")
        elif ord(ch) < 0x20:
            out.append(chr(0x2400 + ord(ch)))
        elif ch == "\x7f":
            out.append("␡")
        else:
            out.append(ch)
    return "".join(out)


def row_and_column(data: dict, index: int, i: int) -> tuple[set[int], set[int]]:
    """Keys that query i attends to, and the later queries that attend to key i (weight > 0)."""
    rows, cols, vals = viewer_data.head_csr(data, index)
    n = data["patterns"]["n"]
    lo, hi = int(rows[i]), int(rows[i + 1])
    attends = {int(c) for c, v in zip(cols[lo:hi], vals[lo:hi]) if v > 0}
    queries = np.repeat(np.arange(n), np.diff(rows.astype(np.int64)))
    by = {int(q) for q in queries[(cols == i) & (vals > 0)] if q != i}
    return attends, by


LENS_WINDOW = 8  # positions in the logit lens table


def lens_expected(data: dict, pos: int) -> dict:
    """The logit lens table for the window ending at `pos`, from the data: the header tokens, one row
    per layer from the output down to the embeddings (label, then per position: predicted text, top_p,
    whether it is the next token), and the next tokens. A prediction is the next token where its id is
    the next token's id; in data without token_ids, where its text is the next token's and the lens
    gives the next token the top prediction's probability (to 0.0015: both are rounded)."""
    lens, tokens, ids = data["lens"], data["tokens"], data.get("token_ids")
    n, rows = len(tokens), lens["layers"]
    window = list(range(max(0, pos - LENS_WINDOW + 1), pos + 1))
    body = []
    for layer in reversed(range(rows)):
        cells = []
        for t in window:
            k = layer * n + t
            text = lens["texts"][str(lens["top"][k])]
            if t == n - 1:
                hit = False
            elif ids is not None:
                hit = lens["top"][k] == ids[t + 1]
            else:
                hit = text == tokens[t + 1] and abs(lens["next_p"][k] - lens["top_p"][k]) <= 0.0015
            cells.append((t, display_text(text), lens["top_p"][k], hit))
        body.append((layer, "embed" if layer == 0 else "L%d" % (layer - 1), cells))
    return {
        "head": [(t, "#%d" % t, display_text(tokens[t])) for t in window],
        "body": body,
        "next": [display_text(tokens[t + 1]) if t < n - 1 else "" for t in window],
    }


# ---- page helpers ----


def load(driver, path: str, timeout: float = 120) -> float:
    """Opens a report and waits for the viewer to be ready; returns the seconds it took."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("browser")  # drop what earlier pages logged
    start = time.perf_counter()
    driver.get("file://" + os.path.abspath(path))
    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script(
            "return !!(window.attnViewer && (attnViewer.state.ready || attnViewer.state.error))")
    )
    return time.perf_counter() - start


def console_problems(driver) -> list:
    return [e for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "WARNING")]


def js(driver, expr: str, *args):
    return driver.execute_script("return " + expr, *args)


def token_classes(driver) -> dict:
    return js(
        driver,
        """{hover: [...document.querySelectorAll('#strip .tok.hover, #strip .tok.pinned')].map(e => +e.dataset.i),
            attends: [...document.querySelectorAll('#strip .tok.attends')].map(e => +e.dataset.i),
            by: [...document.querySelectorAll('#strip .tok.attended-by')].map(e => +e.dataset.i)}""",
    )


def hover_element(driver, el):
    """Moves the real mouse onto an element's first line box (tokens can wrap)."""
    from selenium.webdriver.common.action_chains import ActionChains

    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
    box = js(
        driver,
        """(() => { const r = arguments[0].getClientRects()[0], b = arguments[0].getBoundingClientRect();
                  return [r.left + r.width / 2 - (b.left + b.width / 2),
                          r.top + r.height / 2 - (b.top + b.height / 2)]; })()""",
        el,
    )
    ActionChains(driver, duration=20).move_to_element_with_offset(el, int(box[0]), int(box[1])).perform()


def image_stats(png: bytes) -> tuple[int, float]:
    """(distinct colours, standard deviation of the pixel values) of a PNG."""
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    flat = img.reshape(-1, 3).astype(np.uint32)
    colours = len(np.unique((flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]))
    return colours, float(img.std())


def lens_table(driver) -> dict:
    """The logit lens table as the page shows it, in the shape of lens_expected."""
    got = js(
        driver,
        """(() => { const tb = document.getElementById('lens-table');
          return {
            head: [...tb.querySelectorAll('thead th[data-t]')].map(e =>
              [+e.dataset.t, e.querySelector('.ix').textContent, e.querySelector('.tokname').textContent]),
            body: [...tb.querySelectorAll('tbody tr')].map(r => [+r.dataset.l, r.querySelector('th').textContent,
              [...r.querySelectorAll('td')].map(c => [+c.dataset.t, c.querySelector('.tokname').textContent,
                c.querySelector('.p').textContent, c.classList.contains('hit')])]),
            next: [...tb.querySelectorAll('tfoot td')].map(c => c.textContent),
          }; })()""",
    )
    return {
        "head": [tuple(h) for h in got["head"]],
        "body": [(layer, label, [tuple(c) for c in cells]) for layer, label, cells in got["body"]],
        "next": got["next"],
    }


def check_lens_table(driver, data: dict, pos: int):
    """The page's lens table shows the window ending at `pos` as the data says (probabilities to 2
    decimals, compared as numbers so that a tie like 0.125 may round either way)."""
    want, got = lens_expected(data, pos), lens_table(driver)
    assert js(driver, "attnViewer.state.lensPos") == pos
    assert got["head"] == want["head"]
    assert got["next"] == want["next"]
    assert [(layer, label) for layer, label, _ in got["body"]] == [(layer, label) for layer, label, _ in want["body"]]
    for (layer, _, got_cells), (_, _, want_cells) in zip(got["body"], want["body"]):
        shown = [(t, text, hit) for t, text, _, hit in got_cells]
        assert shown == [(t, text, hit) for t, text, _, hit in want_cells], layer
        for (t, _, shown, _), (_, _, p, _) in zip(got_cells, want_cells):
            assert len(shown.split(".")[-1]) == 2 and abs(float(shown) - p) <= 0.005 + 1e-9, (layer, t, shown, p)


def set_search(driver, text: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.ID, "search")
    box.send_keys(Keys.ESCAPE)  # the page clears its search on Escape
    if text:
        box.send_keys(text)
    assert js(driver, "attnViewer.state.query") == text


def thumb_sets(driver) -> tuple[set[int], set[int]]:
    got = js(
        driver,
        """[[...document.querySelectorAll('canvas.thumb.match')].map(e => +e.dataset.index),
            [...document.querySelectorAll('canvas.thumb.dim')].map(e => +e.dataset.index)]""",
    )
    return set(got[0]), set(got[1])


# ---- the checks, on any report ----


def check_report(path: str, driver=None) -> dict:
    """Opens a report in headless Chromium and checks it end to end: it loads without console errors
    or warnings and without network requests; the grid, strip and header match the data; clicking a
    thumbnail zooms into that head; hovering a token highlights exactly the tokens the data says;
    hovering the heatmap shows the cell's weight; the search box filters and picks heads; the page
    and the zoomed heatmap are not blank. Returns {"load_s", "timings", "n"}."""
    own = driver is None
    if own:
        driver = new_driver()
    try:
        return _check_report(driver, path)
    finally:
        if own:
            driver.quit()


def _check_report(driver, path: str) -> dict:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    data = viewer_data.load_report_data(path)
    layers, heads, n = data["layers"], data["heads"], len(data["tokens"])
    n_prompt = data.get("n_prompt", n)
    roles = [s["role"] for s in data["heads_scores"]]

    # Loads, cleanly and offline.
    load_s = load(driver, path)
    assert js(driver, "attnViewer.state.error") is None
    assert console_problems(driver) == []
    assert js(driver, "performance.getEntriesByType('resource').map(e => e.name)") == []
    assert js(driver, "attnViewer.state.thumbsDrawn") == layers * heads
    assert js(driver, "attnViewer.state.zoomDraws") >= 1
    assert data["model"] in driver.find_element(By.ID, "model-name").text

    # The logit lens panel: shown (with the last window) when the report has lens data, else hidden.
    lens_panel = driver.find_element(By.ID, "lens-panel")
    has_lens = data.get("lens") is not None and n > 0
    assert lens_panel.is_displayed() == has_lens
    if has_lens:
        assert js(driver, "attnViewer.state.lensError") is None
        assert not driver.find_element(By.ID, "lens-error").is_displayed()
        size = js(driver, "(() => { const c = document.getElementById('lens-map'); return [c.width, c.height]; })()")
        assert size == [n, data["lens"]["layers"]]
        check_lens_table(driver, data, n - 1)

    # The grid: one thumbnail per head, coloured by its role.
    thumbs = js(driver, "[...document.querySelectorAll('canvas.thumb')]"
                        ".map(e => [+e.dataset.layer, +e.dataset.head, e.dataset.role])")
    assert thumbs == [[i // heads, i % heads, roles[i]] for i in range(layers * heads)]
    legend = js(driver, "[...document.querySelectorAll('#legend .chip')].map(e => e.dataset.role)")
    assert set(roles) <= set(legend)

    # The strip: one span per token, shown as the data says, prompt and generated told apart.
    strip = js(driver, "[...document.querySelectorAll('#strip .tok')]"
                       ".map(e => [e.textContent, e.classList.contains('gen')])")
    assert [s[0] for s in strip] == [display_text(t) for t in data["tokens"]]
    assert [s[1] for s in strip] == [i >= n_prompt for i in range(n)]

    # Clicking a thumbnail zooms into that head.
    start = js(driver, "attnViewer.state.selected")
    layer, head = (layers - 1, heads - 1) if (start["layer"], start["head"]) != (layers - 1, heads - 1) else (0, 0)
    draws = js(driver, "attnViewer.state.zoomDraws")
    thumb = driver.find_element(By.CSS_SELECTOR, 'canvas.thumb[data-layer="%d"][data-head="%d"]' % (layer, head))
    thumb.click()
    index = layer * heads + head
    assert js(driver, "attnViewer.state.selected") == {"layer": layer, "head": head, "index": index}
    assert driver.find_element(By.ID, "zoom-title").text == "Layer %d · Head %d" % (layer, head)
    assert driver.find_element(By.ID, "zoom-role").text == roles[index]
    panel = driver.find_element(By.ID, "zoom-panel")
    assert (panel.get_attribute("data-layer"), panel.get_attribute("data-head")) == (str(layer), str(head))
    assert "selected" in thumb.get_attribute("class").split()
    assert js(driver, "document.querySelectorAll('canvas.thumb.selected').length") == 1
    assert js(driver, "attnViewer.state.zoomDraws") > draws

    # Hovering a token tints where it looks (its row) and who looks at it (its column).
    i = n_prompt + (n - n_prompt) // 2 if n > n_prompt else n // 2
    attends, by = row_and_column(data, index, i)
    hover_element(driver, driver.find_element(By.CSS_SELECTOR, '#strip .tok[data-i="%d"]' % i))
    assert js(driver, "attnViewer.state.hoverToken") == i
    if has_lens:
        assert js(driver, "attnViewer.state.lensPos") == i
    got = token_classes(driver)
    assert got["hover"] == [i]
    assert set(got["attends"]) == attends
    assert set(got["by"]) == by
    driver.find_element(By.CSS_SELECTOR, '#strip-mode button[data-mode="row"]').click()
    js(driver, "attnViewer.hoverToken(arguments[0])", i)
    got = token_classes(driver)
    assert set(got["attends"]) == attends and got["by"] == []
    driver.find_element(By.CSS_SELECTOR, '#strip-mode button[data-mode="both"]').click()
    hover_element(driver, driver.find_element(By.CSS_SELECTOR, '#strip .tok[data-i="%d"]' % i))
    assert set(token_classes(driver)["by"]) == by
    ActionChains(driver, duration=20).move_to_element(driver.find_element(By.ID, "tok-info")).perform()
    assert js(driver, "attnViewer.state.hoverToken") == -1
    assert token_classes(driver) == {"hover": [], "attends": [], "by": []}
    if has_lens:
        assert js(driver, "attnViewer.state.lensPos") == n - 1

    # Hovering a heatmap cell names its query and key and shows its weight.
    rows, cols, vals = viewer_data.head_csr(data, index)
    lo, hi = int(rows[i]), int(rows[i + 1])
    k = int(cols[lo + int(np.argmax(vals[lo:hi]))]) if hi > lo else i
    js(driver, "attnViewer.zoomTo(arguments[0], arguments[1], 24)", max(0, i - 12), max(0, k - 12))
    pt = js(driver, "attnViewer.cellPoint(arguments[0], arguments[1])", i, k)
    overlay = driver.find_element(By.ID, "zoom-overlay")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", overlay)
    ActionChains(driver, duration=20).move_to_element_with_offset(
        overlay, int(pt["x"] - pt["width"] / 2), int(pt["y"] - pt["height"] / 2)
    ).perform()
    cell = js(driver, "attnViewer.state.hoverCell")
    assert (cell["q"], cell["k"]) == (i, k)
    tip = driver.find_element(By.ID, "tip")
    assert tip.is_displayed()
    weight = js(driver, "attnViewer.weight(...arguments)", layer, head, i, k)
    in_row = vals[lo:hi][cols[lo:hi] == k]
    expected = in_row[0] / data["patterns"]["scale"] if len(in_row) else 0.0
    assert weight == pytest.approx(expected)
    assert "#%d" % i in tip.text and "#%d" % k in tip.text
    if expected > 0:
        assert "%.3f" % expected in tip.text
    js(driver, "attnViewer.fitView()")

    # The search box filters the grid and picks a head.
    pick_layer, pick_head = min(5, layers - 1), min(3, heads - 1)
    for query in ("L%dH%d" % (pick_layer, pick_head), "%d.%d" % (pick_layer, pick_head)):
        set_search(driver, query)
        assert js(driver, "attnViewer.state.selected") == {
            "layer": pick_layer, "head": pick_head, "index": pick_layer * heads + pick_head}
        assert thumb_sets(driver)[0] == {pick_layer * heads + pick_head}
    set_search(driver, "L%d" % pick_layer)
    match, dim = thumb_sets(driver)
    assert match == {pick_layer * heads + h for h in range(heads)}
    assert len(dim) == layers * heads - heads
    assert js(driver, "attnViewer.state.selected.layer") == pick_layer
    role = max(set(roles), key=roles.count)
    set_search(driver, role)
    match, _ = thumb_sets(driver)
    assert match == {j for j, r in enumerate(roles) if r == role}
    assert roles[js(driver, "attnViewer.state.selected.index")] == role
    assert driver.find_element(By.ID, "zoom-role").text == role
    set_search(driver, "zzzz-no-such-role")
    assert js(driver, "attnViewer.state.matches") == []
    assert "bad" in driver.find_element(By.ID, "search-note").get_attribute("class").split()
    set_search(driver, "")
    assert thumb_sets(driver) == (set(), set())

    # Not blank: the page has many colours, and so does the zoomed heatmap.
    driver.execute_script("window.scrollTo(0, 0)")
    colours, spread = image_stats(driver.get_screenshot_as_png())
    assert colours > 200 and spread > 10, (colours, spread)
    zoom_colours, _ = image_stats(driver.find_element(By.ID, "zoom").screenshot_as_png)
    assert zoom_colours > 20, zoom_colours

    assert console_problems(driver) == []
    return {"load_s": load_s, "timings": js(driver, "attnViewer.state.timings"), "n": n}


# ---- tests ----


@pytest.fixture(scope="module")
def report_48(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("viewer") / "r48.html"
    return viewer_data.render(viewer_data.make_data(48, seed=1), str(path))


def test_small_report(driver, report_48):
    check_report(report_48, driver)


@pytest.mark.parametrize(
    "n,layers,heads,kv_heads,index_bytes",
    [(1, 2, 3, 3, 2), (2, 1, 1, 1, 2), (37, 4, 32, 8, 4)],
    ids=["one-token", "one-head", "wide-grid-uint32-indices"],
)
def test_other_shapes(driver, tmp_path, n, layers, heads, kv_heads, index_bytes):
    data = viewer_data.make_data(n, layers, heads, kv_heads, seed=2, index_bytes=index_bytes)
    check_report(viewer_data.render(data, str(tmp_path / "r.html")), driver)


def test_learned_sink_score_shown_only_for_models_with_sinks(driver, tmp_path):
    # A selected head's scores list the learned sink's share when the model has sinks (gpt-oss,
    # attn train --sinks), and not otherwise.
    data = viewer_data.make_data(16, 2, 2, 2, seed=4)
    plain = viewer_data.render(data, str(tmp_path / "plain.html"))
    for i, s in enumerate(data["heads_scores"]):
        s["learned_sink"] = 0.1 * (i + 1)
    sinks = viewer_data.render(data, str(tmp_path / "sinks.html"))
    metrics = "[...document.querySelectorAll('#score-list .score')].map(e => e.dataset.metric)"
    load(driver, plain)
    assert js(driver, "attnViewer.state.error") is None and console_problems(driver) == []
    assert "learned_sink" not in js(driver, metrics) and "first_token" in js(driver, metrics)
    load(driver, sinks)
    assert js(driver, "attnViewer.state.error") is None and console_problems(driver) == []
    assert "learned_sink" in js(driver, metrics)


def test_markup_in_tokens_stays_text(driver, tmp_path):
    # "<!--" followed by "<script" would put an HTML parser in the script's double-escaped state, where
    # the element's own </script> no longer ends it; the page must still load and show these as text.
    data = viewer_data.make_data(24, 3, 4, 2, seed=3)
    data["tokens"][3:9] = ["<!--", "<script>", "</script>", "</SCRIPT >", "<script>window.attnPwned = 1</script>",
                           "&lt;"]
    path = viewer_data.render(data, str(tmp_path / "r.html"))
    check_report(path, driver)
    assert js(driver, "document.querySelectorAll('script').length") == 2
    assert js(driver, "typeof window.attnPwned") == "undefined"


def test_keyboard_moves_between_heads(driver, report_48):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    load(driver, report_48)
    js(driver, "attnViewer.selectHead(3, 4)")
    ActionChains(driver, duration=20).send_keys(Keys.ARROW_RIGHT).send_keys(Keys.ARROW_DOWN).perform()
    assert js(driver, "attnViewer.state.selected") == {"layer": 4, "head": 5, "index": 4 * 9 + 5}
    js(driver, "attnViewer.pinToken(10)")
    ActionChains(driver, duration=20).send_keys(Keys.ESCAPE).perform()
    assert js(driver, "[attnViewer.state.hoverToken, attnViewer.state.pinnedToken]") == [-1, -1]
    assert console_problems(driver) == []


def test_heatmap_wheel_zoom_drag_and_double_click(driver, report_48):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By

    load(driver, report_48)
    overlay = driver.find_element(By.ID, "zoom-overlay")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", overlay)
    pt = js(driver, "attnViewer.cellPoint(30, 20)")
    dx, dy = int(pt["x"] - pt["width"] / 2), int(pt["y"] - pt["height"] / 2)
    for _ in range(4):
        ActionChains(driver).scroll_from_origin(ScrollOrigin.from_element(overlay, dx, dy), 0, -120).perform()
    time.sleep(0.1)  # the redraw waits for an animation frame
    view = js(driver, "attnViewer.state.view")
    assert view["size"] < 48
    assert view["q0"] <= 30 < view["q0"] + view["size"] and view["k0"] <= 20 < view["k0"] + view["size"]
    ActionChains(driver, duration=20).move_to_element_with_offset(overlay, dx, dy).click_and_hold().move_by_offset(
        120, 120).release().perform()
    time.sleep(0.1)
    moved = js(driver, "attnViewer.state.view")
    assert moved["size"] == view["size"] and (moved["q0"], moved["k0"]) != (view["q0"], view["k0"])
    ActionChains(driver).double_click(overlay).perform()
    assert js(driver, "attnViewer.state.view") == {"q0": 0, "k0": 0, "size": 48}
    assert console_problems(driver) == []


def test_template_without_data_explains_itself(driver):
    load(driver, viewer_data.TEMPLATE)
    assert "template" in js(driver, "attnViewer.state.error")
    assert js(driver, "!document.getElementById('fatal').hidden")
    assert console_problems(driver) == []


def test_1500_tokens(driver, tmp_path):
    """Load and render time at S = 1,500 (printed, not asserted: tests never assert a time), with the
    logit lens over 31 rows (30 layers + the embeddings)."""
    data = viewer_data.make_data(1500, seed=4)
    path = viewer_data.render(data, str(tmp_path / "r1500.html"))
    result = check_report(path, driver)
    assert data["lens"]["layers"] == 31
    hover_ms = js(driver, """(() => { const t0 = performance.now();
        for (let i = 0; i < 100; i++) attnViewer.hoverToken(700 + i);
        attnViewer.hoverToken(-1);
        return (performance.now() - t0) / 101; })()""")
    assert js(driver, "attnViewer.state.lensPos") == 1499
    assert console_problems(driver) == []
    mb = os.path.getsize(path) / 1e6
    print("\nviewer: S=1500, 30x9 heads, %.1f MB page: loaded and drawn in %.2f s (page timings, ms: %s); "
          "hovering a token (strip tints + lens table): %.2f ms" % (mb, result["load_s"], result["timings"], hover_ms))


# ---- the logit lens panel ----


def lens_cells(data: dict):
    """(layer, position, top id, top_p, next_p) of every lens entry."""
    lens, n = data["lens"], len(data["tokens"])
    for k, (top, top_p, next_p) in enumerate(zip(lens["top"], lens["top_p"], lens["next_p"])):
        yield k // n, k % n, top, top_p, next_p


def lens_pixel(driver, layer: int, t: int) -> list:
    """The overview map's colour for (layer, position): the canvas has one pixel per cell, the last layer on top."""
    return js(driver, """(() => { const c = document.getElementById('lens-map'),
        ctx = c.getContext('2d', {willReadFrequently: true});
        return [...ctx.getImageData(arguments[1], c.height - 1 - arguments[0], 1, 1).data]; })()""", layer, t)


def hover_lens_map(driver, layer: int, t: int, click: bool = False):
    """Moves the real mouse onto the overview map's cell (layer, position), and clicks it if asked."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.ID, "lens-map")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    r = js(driver, "(() => { const c = arguments[0], r = c.getBoundingClientRect();"
                   " return [r.width, r.height, c.width, c.height]; })()", canvas)
    w, h, n, rows = r
    dx = int((t + 0.5) / n * w - w / 2)
    dy = int((rows - 1 - layer + 0.5) / rows * h - h / 2)
    chain = ActionChains(driver, duration=20).move_to_element_with_offset(canvas, dx, dy)
    if click:
        chain = chain.click()
    chain.perform()


def test_synthetic_lens_data_is_consistent():
    data = viewer_data.make_data(300, layers=12, heads=2, kv_heads=2, seed=7)
    lens, tokens = data["lens"], data["tokens"]
    n, rows = len(tokens), 13
    assert lens["layers"] == rows
    assert len(lens["top"]) == len(lens["top_p"]) == len(lens["next_p"]) == rows * n
    ids = data["token_ids"]
    assert [viewer_data.VOCAB[i] for i in ids] == tokens
    hits = np.zeros(rows)
    for layer, t, top, top_p, next_p in lens_cells(data):
        assert lens["texts"][str(top)] == viewer_data.VOCAB[top]
        assert 0 < top_p <= 1 and 0 <= next_p <= top_p
        if t == n - 1:
            assert next_p == 0
        elif top == ids[t + 1]:
            assert next_p == top_p
            hits[layer] += 1
        else:
            assert next_p < top_p
    assert set(lens["texts"]) == {str(v) for v in lens["top"]}
    assert hits[-1] > 3 * max(1, hits[0])  # deeper layers get the next token right more often
    plain = viewer_data.make_data(300, layers=12, heads=2, kv_heads=2, seed=7, lens=False)
    assert "lens" not in plain and plain == {k: v for k, v in data.items() if k != "lens"}


def test_lens_panel_hidden_without_lens_data(driver, tmp_path):
    from selenium.webdriver.common.by import By

    path = viewer_data.render(viewer_data.make_data(24, 3, 4, 2, seed=6, lens=False), str(tmp_path / "r.html"))
    check_report(path, driver)  # asserts the panel is hidden
    assert not driver.find_element(By.ID, "lens-panel").is_displayed()
    assert js(driver, "[attnViewer.state.lensError, attnViewer.state.lensPos, attnViewer.state.lensMode]") == [
        None, 23, "next"]
    js(driver, "attnViewer.setLensPos(5), attnViewer.setLensMode('top')")  # harmless without data
    assert js(driver, "attnViewer.state.lensMode") == "top"
    assert console_problems(driver) == []


def test_lens_panel_shown_with_lens_data(driver, report_48):
    from selenium.webdriver.common.by import By

    load(driver, report_48)
    panel = driver.find_element(By.ID, "lens-panel")
    assert panel.is_displayed()
    assert panel.find_element(By.TAG_NAME, "h2").text.lower() == "logit lens"
    assert "final norm and unembedding" in panel.text
    buttons = js(driver, "[...document.querySelectorAll('#lens-mode button')]"
                         ".map(b => [b.dataset.mode, b.classList.contains('on')])")
    assert buttons == [["next", True], ["top", False]]
    assert js(driver, "[attnViewer.state.lensMode, attnViewer.state.lensPos, attnViewer.state.lensError]") == [
        "next", 47, None]
    # The panel sits in the detail column, after the Tokens panel.
    assert js(driver, "document.getElementById('strip-panel').nextElementSibling.id") == "lens-panel"
    colours, _ = image_stats(driver.find_element(By.ID, "lens-map").screenshot_as_png)
    assert colours > 20, colours
    assert console_problems(driver) == []


def test_lens_table_matches_data(driver, report_48):
    data = viewer_data.load_report_data(report_48)
    load(driver, report_48)
    check_lens_table(driver, data, 47)
    for pos in (20, 21, 24, 22, 15, 3, 0, 1, 47, 8, 9, 7):  # jumps, and slides by less than the window either way
        js(driver, "attnViewer.setLensPos(arguments[0])", pos)
        check_lens_table(driver, data, pos)
    # The window at 20 is a meaningful check: it holds hits and misses, and a last row with text.
    want = lens_expected(data, 20)
    flags = [hit for _, _, cells in want["body"] for _, _, _, hit in cells]
    assert any(flags) and not all(flags)
    # The table shows the same predictions in both modes; only its tint follows the mode.
    js(driver, "attnViewer.setLensPos(20)")
    bg = "[...document.querySelectorAll('#lens-table tbody td')].map(c => c.style.backgroundColor)"
    before = js(driver, bg)
    js(driver, "attnViewer.setLensMode('top')")
    check_lens_table(driver, data, 20)
    assert js(driver, bg) != before
    js(driver, "attnViewer.setLensMode('next')")
    assert js(driver, bg) == before
    assert console_problems(driver) == []


def test_lens_hits_without_token_ids(driver, tmp_path):
    # Reports without token_ids mark a hit by the prediction's text and probability; on consistent
    # data that gives the same cells as the ids do.
    data = viewer_data.make_data(48, seed=1)
    def hits(d):
        return {(pos, layer): [c[3] for c in cells]
                for pos in (20, 47) for layer, _, cells in lens_expected(d, pos)["body"]}

    with_ids = hits(data)
    del data["token_ids"]
    without = hits(data)
    assert with_ids == without and any(any(v) for v in without.values())
    path = viewer_data.render(data, str(tmp_path / "r.html"))
    load(driver, path)
    for pos in (20, 47):
        js(driver, "attnViewer.setLensPos(arguments[0])", pos)
        check_lens_table(driver, data, pos)
    assert console_problems(driver) == []


def test_lens_mode_toggle_recolours_map(driver, report_48):
    from selenium.webdriver.common.by import By

    data = viewer_data.load_report_data(report_48)
    load(driver, report_48)
    # The cell where p(top prediction) most exceeds p(next token).
    layer, t, _, top_p, next_p = max(lens_cells(data), key=lambda c: c[3] - c[4])
    assert top_p - next_p > 0.5
    pale = lens_pixel(driver, layer, t)
    driver.find_element(By.CSS_SELECTOR, '#lens-mode button[data-mode="top"]').click()
    assert js(driver, "attnViewer.state.lensMode") == "top"
    assert js(driver, "[...document.querySelectorAll('#lens-mode button.on')].map(b => b.dataset.mode)") == ["top"]
    dark = lens_pixel(driver, layer, t)
    # The ramp darkens with the value: the cell is much darker showing top_p than showing next_p.
    assert sum(dark[:3]) < sum(pale[:3]) - 150, (pale, dark)
    assert pale[3] == dark[3] == 255
    driver.find_element(By.CSS_SELECTOR, '#lens-mode button[data-mode="next"]').click()
    assert js(driver, "attnViewer.state.lensMode") == "next"
    assert lens_pixel(driver, layer, t) == pale
    # A cell the lens gives (almost) no chance to the next token is (almost) white.
    layer0, t0 = next((c[0], c[1]) for c in lens_cells(data) if c[4] < 0.005)
    assert min(lens_pixel(driver, layer0, t0)[:3]) >= 245
    assert console_problems(driver) == []


def test_lens_follows_strip_hover(driver, report_48):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    data = viewer_data.load_report_data(report_48)
    load(driver, report_48)
    js(driver, "attnViewer.setLensPos(10)")
    token = lambda i: driver.find_element(By.CSS_SELECTOR, '#strip .tok[data-i="%d"]' % i)  # noqa: E731
    hover_element(driver, token(30))
    assert js(driver, "attnViewer.state.lensPos") == 30
    check_lens_table(driver, data, 30)
    hover_element(driver, token(33))
    assert js(driver, "attnViewer.state.lensPos") == 33
    ActionChains(driver, duration=20).move_to_element(driver.find_element(By.ID, "tok-info")).perform()
    assert js(driver, "attnViewer.state.hoverToken") == -1
    check_lens_table(driver, data, 10)  # back to the position set before
    # A pinned token holds the window; Escape unpins and it goes back.
    hover_element(driver, token(25))
    token(25).click()
    assert js(driver, "attnViewer.state.pinnedToken") == 25
    ActionChains(driver, duration=20).move_to_element(driver.find_element(By.ID, "tok-info")).perform()
    assert js(driver, "attnViewer.state.lensPos") == 25
    js(driver, "attnViewer.hoverToken(-1)")  # a hover that ends while a token is pinned
    assert js(driver, "attnViewer.state.lensPos") == 25
    ActionChains(driver, duration=20).send_keys(Keys.ESCAPE).perform()
    assert js(driver, "attnViewer.state.pinnedToken") == -1
    check_lens_table(driver, data, 10)
    assert console_problems(driver) == []


def test_lens_map_hover_and_click(driver, report_48):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    data = viewer_data.load_report_data(report_48)
    tokens, lens = data["tokens"], data["lens"]
    n, rows = len(tokens), lens["layers"]
    load(driver, report_48)
    tip = driver.find_element(By.ID, "tip")

    hover_lens_map(driver, 0, 5)
    assert js(driver, "attnViewer.state.lensHover") == {"l": 0, "t": 5}
    assert tip.is_displayed()
    text = tip.text
    k = 0 * n + 5
    assert "embeddings" in text and "#5" in text
    assert display_text(tokens[5]) in text
    assert display_text(lens["texts"][str(lens["top"][k])]) in text
    assert display_text(tokens[6]) in text and "next token" in text

    hover_lens_map(driver, rows - 1, n - 1)
    assert js(driver, "attnViewer.state.lensHover") == {"l": rows - 1, "t": n - 1}
    text = tip.text
    assert "after layer %d" % (rows - 2) in text and "embeddings" not in text
    assert "next token" not in text  # the last position has no next token
    assert display_text(lens["texts"][str(lens["top"][(rows - 1) * n + n - 1])]) in text

    # Clicking picks the window's last position; the outline covers the window's columns.
    hover_lens_map(driver, rows // 2, 12, click=True)
    check_lens_table(driver, data, 12)
    box = js(driver, """(() => { const m = document.getElementById('lens-map').getBoundingClientRect(),
        w = document.getElementById('lens-win').getBoundingClientRect();
        return [m.left, m.width, w.left, w.right]; })()""")
    left, width, win_left, win_right = box
    assert abs(win_left - (left + 5 / n * width)) <= 3 and abs(win_right - (left + 13 / n * width)) <= 3, box
    # The window stays there after strip hovers.
    js(driver, "attnViewer.hoverToken(40), attnViewer.hoverToken(-1)")
    assert js(driver, "attnViewer.state.lensPos") == 12
    ActionChains(driver, duration=20).move_to_element(driver.find_element(By.ID, "tok-info")).perform()
    assert not tip.is_displayed()
    assert js(driver, "attnViewer.state.lensHover") is None
    assert console_problems(driver) == []


def _lens_short_top(d):
    d["lens"]["top"] = d["lens"]["top"][:-1]


def _lens_more_layers(d):
    d["lens"]["layers"] += 1


def _lens_missing_text(d):
    del d["lens"]["texts"][str(d["lens"]["top"][0])]


def _lens_bad_probability(d):
    d["lens"]["next_p"][5] = "high"


def _lens_not_an_object(d):
    d["lens"] = [1, 2, 3]


@pytest.mark.parametrize(
    "spoil,message",
    [
        (_lens_short_top, "lens.top has"),
        (_lens_more_layers, "lens.layers"),
        (_lens_missing_text, "no text for token id"),
        (_lens_bad_probability, "lens.next_p[5]"),
        (_lens_not_an_object, "lens is not an object"),
    ],
    ids=["top-too-short", "layers-mismatch", "missing-text", "bad-probability", "not-an-object"],
)
def test_malformed_lens_data_shows_an_error_in_its_panel(driver, tmp_path, spoil, message):
    from selenium.webdriver.common.by import By

    data = viewer_data.make_data(20, 3, 4, 2, seed=8)
    spoil(data)
    path = viewer_data.render(data, str(tmp_path / "r.html"))
    load(driver, path)
    assert js(driver, "[attnViewer.state.ready, attnViewer.state.error]") == [True, None]
    error = js(driver, "attnViewer.state.lensError")
    assert error and message in error
    assert driver.find_element(By.ID, "lens-panel").is_displayed()
    box = driver.find_element(By.ID, "lens-error")
    assert box.is_displayed() and message in box.text
    assert not driver.find_element(By.ID, "lens-body").is_displayed()
    assert not driver.find_element(By.ID, "fatal").is_displayed()
    # The rest of the page works: heads can be selected, tokens hovered.
    thumb = driver.find_element(By.CSS_SELECTOR, 'canvas.thumb[data-layer="2"][data-head="1"]')
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", thumb)
    thumb.click()
    assert js(driver, "attnViewer.state.selected") == {"layer": 2, "head": 1, "index": 9}
    assert driver.find_element(By.ID, "zoom-title").text == "Layer 2 · Head 1"
    hover_element(driver, driver.find_element(By.CSS_SELECTOR, '#strip .tok[data-i="15"]'))
    assert js(driver, "attnViewer.state.hoverToken") == 15
    js(driver, "attnViewer.setLensMode('top'), attnViewer.setLensPos(3)")
    assert console_problems(driver) == []


def test_lens_markup_in_texts_stays_text(driver, tmp_path):
    from selenium.webdriver.common.by import By

    data = viewer_data.make_data(24, 3, 4, 2, seed=3)
    lens, n = data["lens"], 24
    rows = lens["layers"]
    markup = [" </script>", "<b>", '<img src=x onerror="window.attnPwned = 1">', "<!--", "&lt;", "a\tb\n</td>"]
    for j, text in enumerate(markup):  # new ids, predicted at the output row for positions 16..21
        k = (rows - 1) * n + 16 + j
        lens["top"][k] = 90000 + j
        lens["texts"][str(90000 + j)] = text
        lens["next_p"][k] = round(lens["top_p"][k] / 2, 4)
    # One of them is right: the text goes on with "<b>" (id 90001) after position 20.
    data["tokens"][21] = "<b>"
    data["token_ids"][21] = 90001
    k = (rows - 2) * n + 20
    lens["top"][k] = 90001
    lens["next_p"][k] = lens["top_p"][k]
    path = viewer_data.render(data, str(tmp_path / "r.html"))
    check_report(path, driver)  # the table at the last window (16..23) shows the markup as text
    assert js(driver, "document.querySelectorAll('#lens-panel b, #lens-panel img, #lens-panel td td').length") == 0
    assert js(driver, "document.querySelectorAll('script').length") == 2
    assert js(driver, "typeof window.attnPwned") == "undefined"
    shown = js(driver, "[...document.querySelectorAll('#lens-table tbody tr:first-child td .tokname')]"
                       ".map(e => e.textContent)")
    assert shown[:6] == [display_text(t) for t in markup]
    hit = js(driver, "document.querySelector('#lens-table td[data-l=\"%d\"][data-t=\"20\"]').classList.contains('hit')"
             % (rows - 2))
    assert hit
    hover_lens_map(driver, rows - 1, 18)
    tip = driver.find_element(By.ID, "tip")
    assert tip.is_displayed() and display_text(markup[2]) in tip.text
    assert js(driver, "document.querySelectorAll('#tip img').length") == 0
    assert console_problems(driver) == []
