"""Check the built HTML book (``_build/html``) in a real headless Chromium.

Needs Debian's chromium and chromium-driver (``scripts/install_browser.sh``) and a
built book (``make html``).  The book root defaults to the repository root; set
``SAELIB_BOOK_ROOT`` to check another Jupyter Book.  One screenshot per page is
written to ``_build/screenshots/`` for humans to look at.

Besides errors, each page must be readable offline (it requests nothing from any origin
but the book's own, so its maths is typeset by the book's copy of MathJax and no TeX is
left raw) and must not clip wide output (a table or printed text wider than the page
sits in a box that scrolls sideways).
"""

import base64
import contextlib
import functools
import http.server
import json
import os
import re
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

BOOK_ROOT = Path(os.environ.get("SAELIB_BOOK_ROOT") or Path(__file__).resolve().parents[2])
HTML_DIR = BOOK_ROOT / "_build" / "html"
SHOT_DIR = BOOK_ROOT / "_build" / "screenshots"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-sync"
    " --disable-background-networking --disable-component-update --disable-dev-shm-usage"
    " --window-size=1280,1024"
).split()
# Classes myst-nb (Jupyter Book 1.x) gives error outputs, seen in a built book:
# <div class="cell_output docutils container">
#   <div class="output traceback highlight-ipythontb notranslate">  (error output)
#   <div class="output stderr highlight-myst-ansi notranslate">     (stderr stream)
# plus docutils' inline error reports (class "system-message").
ERROR_SELECTOR = (
    ".output.traceback, .output.stderr, .cell_output .traceback, .cell_output .error,"
    " .system-message"
)
SOURCE_SUFFIX = re.compile(r"\.(md|ipynb|rst|myst)$")
# Harmless console errors of Jupyter Book 1.x itself, ignored:
# - pydata-sphinx-theme logs an error when a fresh profile has no stored light/dark mode;
# - Chromium asks for /favicon.ico by itself when the book declares no favicon.
KNOWN_CONSOLE_ERRORS = (
    r"pydata-sphinx-theme\.js.*Got invalid theme mode: \. Resetting to auto",
    r"/favicon\.ico - Failed to load resource",
)
# Elements that make the browser fetch their src/href when the page loads.
FETCHED_ATTRIBUTES = (
    "script[src], img[src], iframe[src], embed[src], source[src], video[src], audio[src],"
    " link[rel~=stylesheet][href], link[rel~=preload][href], link[rel~=icon][href]"
)
# Sphinx writes $..$ and $$..$$ as <span|div class="math">\(..\)</span> for MathJax to
# typeset; once typeset, each holds an <mjx-container>.
UNTYPESET_MATH = (
    "return [...document.querySelectorAll('.math')]"
    ".filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.trim().slice(0, 80))"
)
# TeX delimiters left in the text of the page outside code, after typesetting.
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{")
PROSE_TEXT = """
const skip = 'pre, code, script, style, mjx-container, .highlight, .cell_input';
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
const out = [];
while (walker.nextNode()) {
  const n = walker.currentNode;
  if (!n.parentElement.closest(skip)) out.push(n.textContent);
}
return out.join(' ');
"""
# Tables and printed text whose content runs past the right edge of the article, with no
# box between them and the article that scrolls sideways: their right part is cut off
# (or spills over the margin).  Returns [tag, class, content width, room].
CLIPPED_OUTPUT = """
const article = document.querySelector('article.bd-article, main, [role=main]') || document.body;
const limit = article.getBoundingClientRect().right + 1;
const scrolls = e => ['auto', 'scroll'].includes(getComputedStyle(e).overflowX);
const clipped = [];
for (const e of article.querySelectorAll('table, pre')) {
  const box = e.getBoundingClientRect();
  if (box.width === 0) continue;  // inside a collapsed cell
  const right = box.left + Math.max(e.scrollWidth, box.width);
  if (right <= limit) continue;
  let held = false;
  for (let a = e; a && a !== article; a = a.parentElement) {
    if (scrolls(a) && a.getBoundingClientRect().right <= limit) { held = true; break; }
  }
  if (!held) clipped.push([e.tagName.toLowerCase(), e.className,
                           Math.round(right - box.left), Math.round(limit - box.left)]);
}
return clipped;
"""


def toc_pages(toc_file: Path) -> list[str]:
    """Page paths (no extension) of a jb-book ``_toc.yml``: root, then every ``file:``."""
    toc = yaml.safe_load(toc_file.read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            for key in ("parts", "chapters", "sections"):
                walk(entry.get(key))

    walk([{k: v for k, v in toc.items() if k in ("parts", "chapters", "sections")}])
    return [SOURCE_SUFFIX.sub("", p) for p in pages]


@contextlib.contextmanager
def serve(directory: Path):
    """Serve ``directory`` on 127.0.0.1 at a free port in a background thread."""
    quiet = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    handler = functools.partial(quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def page_problems(driver, url: str, screenshot: Path | None = None) -> list[str]:
    """Load ``url`` in ``driver`` and describe everything wrong with the page."""
    try:
        urllib.request.urlopen(url).close()
    except urllib.error.HTTPError as err:
        return [f"HTTP {err.code} for {url}"]
    driver.get_log("browser")  # drop messages from earlier pages
    driver.get_log("performance")
    driver.get(url)
    loaded = (
        "return document.readyState == 'complete' && [...document.images].every(i => i.complete)"
    )
    # Lazy images only load near the viewport: make them eager, then wait for them all.
    driver.execute_script("for (const i of document.images) i.loading = 'eager';")
    WebDriverWait(driver, 20).until(lambda d: d.execute_script(loaded))
    problems = []
    if driver.execute_script("return document.querySelector('.math') !== null"):
        problems += typeset_problems(driver)
    broken = "return [...document.images].filter(i => !(i.naturalWidth > 0)).map(i => i.src)"
    problems += [f"broken image: {src}" for src in driver.execute_script(broken)]
    main = "article.bd-article, main, [role=main]"
    if not driver.execute_script(
        f"return (document.querySelector('{main}') || document.body).innerText.trim()"
    ):
        problems.append("main text is empty")
    for cls, text in driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".map(e => [e.className, e.innerText.trim().slice(0, 300)]);",
        ERROR_SELECTOR,
    ):
        problems.append(f"error output (class {cls!r}): {text!r}")
    outputs = driver.execute_script(
        "return Array.from(document.querySelectorAll('.cell_output')).map(e => e.innerText);"
    )
    if any("Traceback (most recent call last)" in text for text in outputs):
        problems.append("a cell output contains 'Traceback (most recent call last)'")
    origin = re.match(r"https?://[^/]+", url).group(0)
    problems += [f"non-local request: {u}" for u in foreign_urls(driver, origin)]
    for tag, cls, width, room in driver.execute_script(CLIPPED_OUTPUT):
        problems.append(
            f"clipped output: <{tag} class={cls!r}> is {width}px wide with {room}px of room"
            " and no sideways scrollbar"
        )
    for entry in driver.get_log("browser"):
        known = any(re.search(k, entry["message"]) for k in KNOWN_CONSOLE_ERRORS)
        if entry["level"] == "SEVERE" and origin in entry["message"] and not known:
            problems.append(f"console error: {entry['message']}")
    if screenshot is not None:  # the whole page, not just the window
        height = driver.execute_script("return document.documentElement.scrollHeight")
        clip = {"x": 0, "y": 0, "width": 1280, "height": min(height, 12000), "scale": 1}
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"captureBeyondViewport": True, "clip": clip}
        )
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
    return problems


def typeset_problems(driver) -> list[str]:
    """Wait for MathJax to typeset the page; describe maths it left as raw TeX."""
    ready = "return !!(window.MathJax && MathJax.startup && MathJax.startup.promise)"
    try:
        WebDriverWait(driver, 20).until(lambda d: d.execute_script(ready))
    except TimeoutException:
        return ["the page has maths but MathJax did not load"]
    driver.set_script_timeout(30)
    driver.execute_async_script("MathJax.startup.promise.then(arguments[0], arguments[0]);")
    problems = [f"untypeset maths: {tex!r}" for tex in driver.execute_script(UNTYPESET_MATH)]
    raw = sorted(set(RAW_TEX.findall(driver.execute_script(PROSE_TEXT))))
    if raw:
        problems.append(f"raw TeX in the page text: {' '.join(raw)}")
    return problems


def foreign_urls(driver, origin: str) -> list[str]:
    """Network URLs the page requested, or put in a fetched src/href, not under ``origin``.

    Only network schemes count: the browser's own chrome:// pages are not the book's.
    """
    requested = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requested.append(message["params"]["request"]["url"])
    referenced = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.src || e.href);",
        FETCHED_ATTRIBUTES,
    )
    network = ("http", "https", "ws", "wss", "ftp", "file")
    return sorted(
        {
            u
            for u in requested + referenced
            if urllib.parse.urlsplit(u).scheme in network and not u.startswith(origin + "/")
        }
    )


def missing_browser() -> str | None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    return f"{', '.join(missing)} not found: run scripts/install_browser.sh" if missing else None


@pytest.fixture(scope="module")
def driver():
    if missing_browser():
        pytest.fail(missing_browser())
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        # "performance" logs the DevTools network events: every request the page makes.
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        drv = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        yield drv
        drv.quit()


@pytest.fixture(scope="module")
def book_url():
    if not (HTML_DIR / "index.html").is_file():
        pytest.fail(f"{HTML_DIR / 'index.html'} is missing: run `make html` first")
    with serve(HTML_DIR) as url:
        yield url


TOC = BOOK_ROOT / "_toc.yml"
PAGES = toc_pages(TOC) if TOC.is_file() else []


def test_prerequisites():
    assert not missing_browser(), missing_browser()
    assert TOC.is_file(), f"{TOC} is missing: the book has no table of contents"
    assert PAGES, f"{TOC} lists no pages"
    assert (HTML_DIR / "index.html").is_file(), f"{HTML_DIR}: no index.html; run `make html`"


@pytest.mark.parametrize("page", PAGES)
def test_page(driver, book_url, page):
    assert (HTML_DIR / f"{page}.html").is_file(), f"{page}.html was not built"
    problems = page_problems(driver, f"{book_url}/{page}.html", SHOT_DIR / f"{page}.png")
    assert not problems, f"{page}.html:\n  " + "\n  ".join(problems)


def test_checker_finds_problems(driver, tmp_path):
    (tmp_path / "bad.html").write_text(
        "<html><head><title>bad</title></head><body><main><p>Some text</p>"
        '<img src="missing.png"><div class="cell_output"><div class="output traceback">'
        "Traceback (most recent call last)</div></div></main></body></html>"
    )
    # A page that asks another origin for a script, leaves its maths untypeset and
    # cuts off a wide printed table (example.invalid never resolves: RFC 2606).
    (tmp_path / "offline.html").write_text(
        "<html><head><title>offline</title>"
        '<script src="https://example.invalid/mathjax.js"></script></head><body>'
        '<main style="width: 400px"><p>Some text</p>'
        '<span class="math notranslate">\\(x^2\\)</span>'
        '<div style="overflow: hidden"><pre style="overflow: visible">'
        + "wide " * 200
        + "</pre></div></main></body></html>"
    )
    # MathJax "loaded" (a stand-in that typesets nothing): the maths stays raw TeX.
    (tmp_path / "raw.html").write_text(
        "<html><head><title>raw</title><script>"
        "window.MathJax = {startup: {promise: Promise.resolve()}};</script></head><body>"
        '<main><p>Some text</p><span class="math notranslate">\\(x^2\\)</span></main>'
        "</body></html>"
    )
    with serve(tmp_path) as url:
        problems = page_problems(driver, f"{url}/bad.html")
        assert page_problems(driver, f"{url}/nope.html") == [f"HTTP 404 for {url}/nope.html"]
    assert any(p.startswith("broken image") and "missing.png" in p for p in problems), problems
    assert any("error output (class 'output traceback')" in p for p in problems), problems
    assert any("console error" in p and "missing.png" in p for p in problems), problems
    assert not any(p.startswith(("non-local", "clipped", "untypeset")) for p in problems)

    with serve(tmp_path) as url:
        problems = page_problems(driver, f"{url}/offline.html")
        raw = page_problems(driver, f"{url}/raw.html")
    assert "non-local request: https://example.invalid/mathjax.js" in problems, problems
    assert "the page has maths but MathJax did not load" in problems, problems
    assert any(p.startswith("clipped output: <pre") for p in problems), problems
    assert raw == ["untypeset maths: '\\\\(x^2\\\\)'", "raw TeX in the page text: \\( \\)"], raw
