"""The chat page of `attn serve` (tools/attn/serve_ui/chat.html) in a real headless Chromium.

The tests serve the page themselves, so they need no server built with it: a small HTTP server here
answers "/" with chat.html, passes /v1/* through (streaming, chunk by chunk) to a real
`build/bin/attn serve` on the default model, records the chat requests the page sends, and answers
POST /inspect with a small fake report holding the last message's text.

The tests need chromium and chromedriver (scripts/setup.sh installs them) and selenium; they skip
when the browser or its driver is not installed (test_viewer.new_driver).
"""
from __future__ import annotations

import html
import http.client
import http.server
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request

import pytest

from test_serve import server  # noqa: F401  (the attn serve fixture)
from test_viewer import new_driver

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAGE = os.path.join(ROOT, "tools", "attn", "serve_ui", "chat.html")


# ---- the real server, and the test's own server in front of it ----


class Front:
    """The page's server: chat.html at "/", /v1/* and /slots passed to attn serve, a fake /inspect."""

    def __init__(self, upstream: str):
        host, port = upstream[len("http://"):].rsplit(":", 1)
        self.upstream = (host, int(port))
        self.chat_bodies: list[dict] = []     # the bodies of the page's chat requests, as sent
        self.inject: dict = {}                # fields added to chat requests on the way (not recorded)
        self.inspect_bodies: list[dict] = []
        self.inspect_delay = 0.0
        self.inspect_error: str | None = None  # answer /inspect with this error (500)
        self.fake_chat: list[bytes] | None = None  # answer chat requests with these pieces instead of attn serve
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path == "/":
                    with open(PAGE, "rb") as f:
                        self.answer(200, f.read(), "text/html; charset=utf-8")
                elif self.path.startswith(("/v1/", "/slots", "/health")):
                    self.proxy(None)
                else:
                    self.answer(404, b'{"error": {"message": "not found", "type": "not_found_error", "code": 404}}',
                                "application/json")

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/inspect":
                    front.fake_inspect(self, body)
                elif self.path.startswith("/v1/"):
                    if self.path == "/v1/chat/completions":
                        request = json.loads(body)
                        front.chat_bodies.append(request)
                        if front.inject:
                            body = json.dumps({**request, **front.inject}).encode()
                        if front.fake_chat is not None:
                            self.pieces(front.fake_chat)
                            return
                    self.proxy(body)
                else:
                    self.answer(404, b'{"error": {"message": "not found"}}', "application/json")

            def answer(self, status: int, data: bytes, content_type: str):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def pieces(self, pieces: list[bytes]):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for piece in pieces:
                    self.wfile.write(piece)
                    self.wfile.flush()
                    time.sleep(0.004)

            def proxy(self, body: bytes | None):
                # HTTP/1.0 answer without a length: each piece goes out as it arrives, the end is the close.
                conn = http.client.HTTPConnection(*front.upstream, timeout=120)
                try:
                    headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    self.send_response(resp.status)
                    for name in ("Content-Type", "Cache-Control"):
                        if resp.getheader(name):
                            self.send_header(name, resp.getheader(name))
                    self.end_headers()
                    while True:
                        data = resp.read1(65536)
                        if not data:
                            break
                        self.wfile.write(data)
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the page left (Stop): closing our connection ends the generation upstream
                finally:
                    conn.close()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d/" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def fake_inspect(self, handler, body: bytes):
        request = json.loads(body)
        self.inspect_bodies.append(request)
        time.sleep(self.inspect_delay)
        if self.inspect_error is not None:
            error = {"error": {"message": self.inspect_error, "type": "server_error", "code": 500}}
            handler.answer(500, json.dumps(error).encode(), "application/json")
            return
        last = request["messages"][-1]["content"]
        page = ('<!DOCTYPE html><html><head><meta charset="utf-8"><title>fake report</title></head><body>'
                '<h1>fake report</h1><pre id="last">%s</pre></body></html>' % html.escape(last))
        handler.answer(200, page.encode(), "text/html; charset=utf-8")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def front(server):
    f = Front(server)
    yield f
    f.close()


@pytest.fixture(scope="module")
def driver():
    d = new_driver(1200, 900)
    d.set_script_timeout(60)
    yield d
    d.quit()


@pytest.fixture
def page(driver, front):
    """The chat page, freshly loaded and ready, with the front's records cleared."""
    from selenium.webdriver.support.ui import WebDriverWait

    front.chat_bodies.clear()
    front.inspect_bodies.clear()
    front.inject, front.inspect_delay, front.inspect_error, front.fake_chat = {}, 0.0, None, None
    driver.get_log("browser")
    driver.get(front.url)
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return !!(window.attnChat && (attnChat.state.ready || attnChat.state.error))"))
    return driver


# ---- helpers ----


def js(driver, expr: str, *args):
    return driver.execute_script("return " + expr, *args)


def wait_for(predicate, timeout: float = 30, what: str = "condition", interval: float = 0.01):
    end = time.perf_counter() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.perf_counter() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def set_field(driver, element_id: str, value: str):
    driver.execute_script(
        "const e = document.getElementById(arguments[0]); e.value = arguments[1];"
        "e.dispatchEvent(new Event('input', {bubbles: true}));", element_id, value)


def start(driver, text: str):
    assert driver.execute_script("attnChat.send(arguments[0]); return attnChat.state.busy", text)


def finish(driver, timeout: float = 60):
    wait_for(lambda: not js(driver, "attnChat.state.busy"), timeout, "the answer to end")


def ask(driver, text: str, timeout: float = 60) -> dict:
    """Sends a message through the page, waits for the answer, and returns it (messages()[-1])."""
    start(driver, text)
    finish(driver, timeout)
    return js(driver, "attnChat.messages()")[-1]


def post(url: str, body: dict):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())


def get(url: str):
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read().decode())


def input_enabled(driver) -> bool:
    return js(driver, "!document.getElementById('input').disabled && !document.getElementById('send').hidden"
                      " && !document.getElementById('send').disabled && document.getElementById('stop').hidden")


def last_assistant(driver, selector: str = ".bubble"):
    return driver.execute_script(
        "const all = document.querySelectorAll('#conversation .msg.assistant');"
        "const m = all[all.length - 1]; const e = m && m.querySelector(arguments[0]);"
        "return e ? e.textContent : null;", selector)


# ---- tests ----


def test_the_page_is_self_contained():
    with open(PAGE, encoding="utf-8") as f:
        text = f.read()
    assert len(text.encode()) < 60_000
    assert ')attn_embed"' not in text  # the delimiter of the raw string the binary embeds it in
    # No resources from elsewhere: no external scripts, styles, fonts or images.
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', text, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//|@import", text, re.I)
    assert "innerHTML" not in text and "insertAdjacentHTML" not in text and "document.write" not in text


def test_the_page_loads_and_names_the_model(page, server):
    model = get(server + "/v1/models")["data"][0]["id"]
    state = js(page, "attnChat.state")
    assert state["ready"] is True and state["busy"] is False and state["error"] is None
    assert state["model"] == model
    assert page.find_element("id", "model").text == model
    assert "attn" in page.find_element("tag name", "h1").text
    assert page.find_element("id", "status").text == "ready"
    # The settings' defaults.
    assert js(page, "[document.getElementById('system').value, document.getElementById('temperature').value,"
                    " document.getElementById('max-tokens').value, document.getElementById('show-thinking').checked]"
              ) == ["", "0.7", "256", True]
    assert js(page, "attnChat.messages()") == []
    problems = [e for e in page.get_log("browser") if e.get("level") in ("SEVERE", "WARNING")]
    assert not problems, problems


def test_a_streamed_answer_equals_the_plain_one(page, front, server):
    # A fresh evaluation on both sides (cache_prompt false), so greedy answers are equal to the bit.
    front.inject = {"cache_prompt": False}
    set_field(page, "temperature", "0")
    set_field(page, "max-tokens", "24")
    # Record the answer's length at every change of the conversation while it streams.
    page.execute_script(
        "window.lengths = []; new MutationObserver(() => {"
        "  const b = document.querySelectorAll('#conversation .msg.assistant .bubble');"
        "  if (b.length) window.lengths.push(b[b.length - 1].textContent.length);"
        "}).observe(document.getElementById('conversation'), {childList: true, subtree: true, characterData: true});")
    question = "What is the capital of France?"
    answer = ask(page, question)
    assert answer["role"] == "assistant" and not answer.get("error") and not answer.get("stopped"), answer
    assert js(page, "attnChat.state.chunks") > 1
    assert len(set(js(page, "window.lengths")) - {0}) >= 2  # the text grew in steps, not at once

    sent = front.chat_bodies[-1]
    messages = [{"role": "user", "content": question}]
    assert sent["messages"] == messages
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["temperature"] == 0 and sent["max_tokens"] == 24

    status, plain = post(server + "/v1/chat/completions", {"messages": messages, "temperature": 0,
                                                                "max_tokens": 24, "cache_prompt": False})
    assert status == 200, plain
    assert answer["content"] == plain["choices"][0]["message"]["content"] != ""
    assert last_assistant(page) == answer["content"]
    assert answer["usage"]["completion_tokens"] == plain["usage"]["completion_tokens"]
    usage = last_assistant(page, ".usage")
    assert re.match(r"%d tokens · [0-9.]+ tokens/s" % plain["usage"]["completion_tokens"], usage), usage
    assert page.find_element("id", "status").text == "ready"
    assert input_enabled(page)


def test_the_system_prompt_goes_first(page, front):
    system = "You are a pirate. Answer in one sentence."
    set_field(page, "system", system)
    set_field(page, "max-tokens", "8")
    first = ask(page, "Hello!")
    assert not first.get("error"), first
    assert front.chat_bodies[-1]["messages"] == [{"role": "system", "content": system},
                                                 {"role": "user", "content": "Hello!"}]
    # The next request carries the whole conversation, the system message still first.
    ask(page, "And who are you?")
    assert front.chat_bodies[-1]["messages"] == [
        {"role": "system", "content": system}, {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": first["content"]}, {"role": "user", "content": "And who are you?"}]
    # New chat clears the conversation.
    page.find_element("id", "new-chat").click()
    assert js(page, "attnChat.messages()") == []
    assert js(page, "document.querySelectorAll('#conversation .msg').length") == 0


def test_stop_keeps_the_partial_answer_and_frees_the_server(page, server):
    set_field(page, "max-tokens", "2000")
    start(page, "Write a very long story about a dragon who learns to bake bread.")
    wait_for(lambda: len(last_assistant(page) or "") > 0, 30, "the first text")
    assert js(page, "attnChat.state.busy")
    assert page.find_element("id", "stop").is_displayed() and not page.find_element("id", "send").is_displayed()
    t0 = time.perf_counter()
    assert js(page, "attnChat.stop()") is True
    wait_for(lambda: not js(page, "attnChat.state.busy"), 2, "busy to end after stop()")
    assert time.perf_counter() - t0 < 2
    answer = js(page, "attnChat.messages()")[-1]
    assert answer["stopped"] is True and not answer.get("error") and answer["content"] != "", answer
    time.sleep(0.3)
    assert last_assistant(page) == answer["content"] == js(page, "attnChat.messages()")[-1]["content"]
    assert "stopped" in last_assistant(page, ".note")
    assert input_enabled(page)
    assert "ready" in page.find_element("id", "status").text
    # The server's generation ended with the connection: its slots are free and a short request is quick.
    wait_for(lambda: not any(s["is_processing"] for s in get(server + "/slots")), 5, "the slots to be free",
             interval=0.05)
    t0 = time.perf_counter()
    status, r = post(server + "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                                            "max_tokens": 4, "temperature": 0})
    assert status == 200 and r["usage"]["completion_tokens"] <= 4
    assert time.perf_counter() - t0 < 5
    # New chat while generating ends that answer; the next message is sent at once.
    start(page, "Write another very long story, about a cat.")
    wait_for(lambda: len(last_assistant(page) or "") > 0, 30, "the first text")
    page.find_element("id", "new-chat").click()
    assert js(page, "attnChat.messages()") == [] and input_enabled(page)
    set_field(page, "max-tokens", "4")
    answer = ask(page, "Hi")
    assert [m["role"] for m in js(page, "attnChat.messages()")] == ["user", "assistant"]
    assert not answer.get("error") and not answer.get("stopped") and answer["content"], answer


def test_a_refused_request_shows_the_server_message(page, server):
    set_field(page, "max-tokens", "-5")
    answer = ask(page, "Hi")
    status, refused = post(server + "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                                                  "max_tokens": -5})
    assert status == 400
    want = refused["error"]["message"]
    assert answer["error"] == want and answer["content"] == ""
    assert js(page, "attnChat.state.error") == want
    assert want in page.find_element("id", "status").text
    assert last_assistant(page, ".note") == want
    assert input_enabled(page)
    # Fixed, the next message is answered (the failed turn is not sent back as a message).
    set_field(page, "max-tokens", "4")
    again = ask(page, "Hello")
    assert not again.get("error") and again["content"] != "", again
    assert js(page, "attnChat.state.error") is None
    assert page.find_element("id", "status").text == "ready"


def test_markup_stays_text(page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    set_field(page, "max-tokens", "4")
    text = "<b>bold</b> <script>x</script>\nsecond line & <i>more</i>"
    # Typed: Shift+Enter adds a line, Enter sends.
    box = page.find_element("id", "input")
    box.click()
    (ActionChains(page).send_keys("<b>bold</b> <script>x</script>").key_down(Keys.SHIFT).send_keys(Keys.ENTER)
     .key_up(Keys.SHIFT).send_keys("second line & <i>more</i>").perform())
    assert box.get_attribute("value") == text and not js(page, "attnChat.state.busy")
    box.send_keys(Keys.ENTER)
    wait_for(lambda: js(page, "attnChat.state.requests") == 1, 5, "Enter to send")
    finish(page)
    assert box.get_attribute("value") == ""
    assert js(page, "document.querySelector('#conversation .msg.user .bubble').textContent") == text
    assert js(page, "document.querySelectorAll('#conversation b, #conversation i, #conversation script').length") == 0
    assert js(page, "getComputedStyle(document.querySelector('#conversation .msg.user .bubble')).whiteSpace") == \
        "pre-wrap"
    assert js(page, "attnChat.messages()")[0] == {"role": "user", "content": text}


def test_look_inside_posts_the_conversation_and_opens_the_report(page, front):
    from selenium.webdriver.common.by import By

    set_field(page, "temperature", "0")
    set_field(page, "max-tokens", "8")
    first = ask(page, "Name a color.")
    second = ask(page, "Name another one.")
    assert first["content"] and second["content"]
    buttons = page.find_elements(By.CSS_SELECTOR, "#conversation .msg.assistant .inspect")
    assert len(buttons) == 2 and buttons[0].text == "Look inside"

    # The first answer's button: the conversation up to that answer, not beyond.
    front.inspect_delay = 0.6
    main = page.current_window_handle
    handles = set(page.window_handles)
    buttons[0].click()
    wait_for(lambda: buttons[0].text == "inspecting…" and not buttons[0].is_enabled(), 2, "the button to say inspecting")
    wait_for(lambda: buttons[0].text == "Look inside" and buttons[0].is_enabled(), 10, "the inspection to end")
    assert front.inspect_bodies[-1] == {"messages": [{"role": "user", "content": "Name a color."},
                                                     {"role": "assistant", "content": first["content"]}]}
    new = set(page.window_handles) - handles
    link = page.find_elements(By.CSS_SELECTOR, "#conversation .msg.assistant .report-link")[0]
    if new:
        assert not link.is_displayed()
        (tab,) = new
        page.switch_to.window(tab)
        try:
            wait_for(lambda: page.execute_script(
                "const e = document.getElementById('last'); return e && e.textContent;") == first["content"],
                10, "the report in the new tab")
            assert page.current_url.startswith("blob:")
        finally:
            page.close()
            page.switch_to.window(main)
    else:  # the popup was blocked: a link to the report instead
        assert link.is_displayed() and link.text == "open the report"
        assert link.get_attribute("href").startswith("blob:")

    # An error from /inspect shows under the message; no tab is left open.
    front.inspect_delay, front.inspect_error = 0.0, "inspect: the text has too many tokens"
    handles = set(page.window_handles)
    buttons[1].click()
    wait_for(lambda: len(front.inspect_bodies) == 2 and buttons[1].is_enabled(), 10, "the failed inspection")
    assert front.inspect_bodies[-1]["messages"][-1] == {"role": "assistant", "content": second["content"]}
    assert len(front.inspect_bodies[-1]["messages"]) == 4
    wait_for(lambda: "too many tokens" in last_assistant(page, ".inspect-error"), 5, "the error under the message")
    wait_for(lambda: set(page.window_handles) == handles, 5, "the waiting tab to close")
    assert not js(page, "attnChat.state.busy") and input_enabled(page)


def split_anywhere(text: str, size: int = 11) -> list[bytes]:
    """An event stream cut into pieces that end mid-line, mid-character and between \r and \n."""
    data = text.encode()
    return [data[i:i + size] for i in range(0, len(data), size)]


def chunk(delta: dict | None = None, finish: str | None = None, **extra) -> dict:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"object": "chat.completion.chunk", "choices": choices, **extra}


def test_split_events_thinking_and_an_error_event(page, front):
    # Reasoning and content, events cut at odd places, \r\n line ends, a comment and a multi-byte character.
    events = [chunk({"role": "assistant", "content": ""}), chunk({"reasoning_content": "Let me think.\nParis"}),
              chunk({"reasoning_content": " is it."}), chunk({"content": "The capital "}),
              chunk({"content": "is Paris — Élysée.\n\nDone."}), chunk({}, "stop"),
              chunk(None, usage={"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16})]
    text = ": a comment\r\n\r\n" + "".join("data: %s\r\n\r\n" % json.dumps(e, ensure_ascii=False) for e in events)
    front.fake_chat = split_anywhere(text + "data: [DONE]\r\n\r\n")
    answer = ask(page, "Where?")
    assert answer["content"] == "The capital is Paris — Élysée.\n\nDone." and not answer.get("error"), answer
    assert answer["reasoning"] == "Let me think.\nParis is it."
    assert js(page, "attnChat.state.chunks") == 4
    assert last_assistant(page) == answer["content"]
    assert last_assistant(page, ".thinking .think") == answer["reasoning"]
    assert last_assistant(page, ".usage").startswith("7 tokens · ")
    thinking = page.find_element("css selector", "#conversation .msg.assistant .thinking")
    assert thinking.is_displayed()
    page.execute_script("document.getElementById('settings').open = true")
    page.find_element("id", "show-thinking").click()
    assert not thinking.is_displayed() and not js(page, "document.getElementById('show-thinking').checked")
    # The conversation sent next leaves the reasoning out.
    front.fake_chat = split_anywhere("".join(
        "data: %s\n\n" % json.dumps(e) for e in [chunk({"role": "assistant", "content": ""}),
                                                  chunk({"content": "Half an ans"}),
                                                  {"error": {"message": "the model broke", "code": 500}}]), 5)
    broken = ask(page, "More?")
    assert front.chat_bodies[-1]["messages"][1] == {"role": "assistant", "content": answer["content"]}
    assert broken["error"] == "the model broke" and broken["content"] == "Half an ans", broken
    assert "the model broke" in page.find_element("id", "status").text
    assert last_assistant(page) == "Half an ans" and last_assistant(page, ".note") == "the model broke"
    assert input_enabled(page)
    # A stream that ends without its end is an error, not a finished answer.
    front.fake_chat = [b'data: {"choices": [{"index": 0, "delta": {"content": "Cut"}}]}\n\ndata: {"cho']
    cut = ask(page, "And?")
    assert cut["content"] == "Cut" and "ended early" in cut["error"], cut
