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
    """Load and render time at S = 1,500 (printed, not asserted: tests never assert a time)."""
    data = viewer_data.make_data(1500, seed=4)
    path = viewer_data.render(data, str(tmp_path / "r1500.html"))
    result = check_report(path, driver)
    mb = os.path.getsize(path) / 1e6
    print("\nviewer: S=1500, 30x9 heads, %.1f MB page: loaded and drawn in %.2f s (page timings, ms: %s)"
          % (mb, result["load_s"], result["timings"]))
