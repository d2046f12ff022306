"""Check the built HTML book (``_build/html``) in a real headless Chromium.

Needs Debian's chromium and chromium-driver (``scripts/install_browser.sh``) and a
built book (``make html``).  The book root defaults to the repository root; set
``SAELIB_BOOK_ROOT`` to check another Jupyter Book.  One screenshot per page is
written to ``_build/screenshots/`` for humans to look at.
"""

import base64
import contextlib
import functools
import http.server
import os
import re
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from selenium import webdriver
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
# - Sphinx 7 writes inline scripts added with add_js_file(None, body=...) twice, so each
#   page redeclares sphinx-thebe's const (fixed in Sphinx 8 by sphinx-doc/sphinx#13402,
#   but jupyter-book 1.0.4 pins sphinx~=7.0);
# - pydata-sphinx-theme logs an error when a fresh profile has no stored light/dark mode;
# - Chromium asks for /favicon.ico by itself when the book declares no favicon.
KNOWN_CONSOLE_ERRORS = (
    r"Identifier 'THEBE_JS_URL' has already been declared",
    r"pydata-sphinx-theme\.js.*Got invalid theme mode: \. Resetting to auto",
    r"/favicon\.ico - Failed to load resource",
)


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
    driver.get(url)
    loaded = (
        "return document.readyState == 'complete' && [...document.images].every(i => i.complete)"
    )
    # Lazy images only load near the viewport: make them eager, then wait for them all.
    driver.execute_script("for (const i of document.images) i.loading = 'eager';")
    WebDriverWait(driver, 20).until(lambda d: d.execute_script(loaded))
    problems = []
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
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
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
    with serve(tmp_path) as url:
        problems = page_problems(driver, f"{url}/bad.html")
        assert page_problems(driver, f"{url}/nope.html") == [f"HTTP 404 for {url}/nope.html"]
    assert any(p.startswith("broken image") and "missing.png" in p for p in problems), problems
    assert any("error output (class 'output traceback')" in p for p in problems), problems
    assert any("console error" in p and "missing.png" in p for p in problems), problems
