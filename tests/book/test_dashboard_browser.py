"""Feature dashboard pages in a real headless Chromium, in light and dark colour schemes:
the highlighted tokens are visible on screen (the pixels of the faintest and the strongest
highlight differ from the page), and nothing is requested from any other origin.

Needs Debian's chromium and chromium-driver (``scripts/install_browser.sh``). The first test
renders pages here from a dashboard of a tiny random Llama; the second reads chapter 07's page
of the built book (``_build/html``), in the book's light and dark themes.
"""

import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from selenium.webdriver.common.by import By
from test_html import HTML_DIR, driver  # noqa: F401  (the shared headless Chromium fixture)

from saelib.lm.dashboard import DashboardConfig, compute_dashboard
from saelib.lm.dashboard_html import page_name, write_site
from saelib.lm.site import Site
from saelib.saes import SAEConfig, make_sae


@pytest.fixture(scope="module")
def pages(tiny_lm, tmp_path_factory):
    lm, _ = tiny_lm
    torch.manual_seed(0)
    sae = make_sae(SAEConfig(d_in=32, d_sae=8, architecture="relu")).eval()
    tokens = torch.randint(2, 20, (6, 10), generator=torch.Generator().manual_seed(1))
    site = Site(model=lm.name, hook="blocks.1.hook_resid_post", scale=3.0)
    config = DashboardConfig(n_top=5, n_groups=2, per_group=2, reservoir=4, n_promoted=3)
    dash = compute_dashboard(sae, lm, tokens, site, [2, 5], config, progress=False)
    return write_site(dash, tmp_path_factory.mktemp("dash") / "html"), dash


def rgb(css: str) -> tuple[int, ...]:
    return tuple(int(float(v)) for v in re.findall(r"[\d.]+", css)[:3])


def dominant(png: bytes) -> tuple[int, ...]:
    """The most frequent pixel colour of a screenshot (a token's background, not its glyphs)."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    return tuple(int(c) for c in colours[counts.argmax()])


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_highlighted_tokens_are_visible_in_both_schemes(driver, pages, scheme):  # noqa: F811
    folder, dash = pages
    feature = {"name": "prefers-color-scheme", "value": scheme}
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [feature]})
    driver.get_log("performance")  # drop earlier events
    driver.get((folder / page_name(int(dash.latents[0]))).as_uri())
    page = rgb(driver.execute_script("return getComputedStyle(document.body).backgroundColor"))
    assert (sum(page) / 3 > 128) == (scheme == "light"), f"{scheme} scheme not applied: {page}"
    spans = driver.find_elements(By.CSS_SELECTOR, ".tok.on")
    assert spans, "no highlighted token on the page"
    alphas = [float(s.get_attribute("style").split(":")[1].strip(" ;")) for s in spans]
    for i in {alphas.index(min(alphas)), alphas.index(max(alphas))}:
        colour = dominant(spans[i].screenshot_as_png)
        diff = max(abs(a - b) for a, b in zip(colour, page, strict=True))
        assert diff >= 30, f"token with alpha {alphas[i]} shows {colour} on {page} ({scheme})"
    requests = [
        json.loads(e["message"])["message"]["params"]["request"]["url"]
        for e in driver.get_log("performance")
        if '"Network.requestWillBeSent"' in e["message"]
    ]
    assert requests and all(u.startswith(("file://", "data:")) for u in requests), requests


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_chapter_07_highlights_are_visible_in_the_book(driver, theme):  # noqa: F811
    """The first dashboard embedded in the built chapter, under the book's own theme switch:
    its faintest and strongest highlighted tokens differ on screen from the page."""
    chapter = HTML_DIR / "book" / "07_latent_dashboards.html"
    assert chapter.is_file(), f"{chapter} missing: run make html first"
    feature = {"name": "prefers-color-scheme", "value": theme}
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [feature]})
    driver.get(chapter.as_uri())
    driver.execute_script(f"document.documentElement.dataset.theme = '{theme}'")
    page = rgb(driver.execute_script("return getComputedStyle(document.body).backgroundColor"))
    assert (sum(page) / 3 > 128) == (theme == "light"), f"{theme} theme not applied: {page}"
    spans = driver.find_element(By.CSS_SELECTOR, ".saelib-dash").find_elements(
        By.CSS_SELECTOR, ".tok.on"
    )
    assert spans, "no highlighted token in the first dashboard"
    alphas = [float(s.get_attribute("style").split(":")[1].strip(" ;")) for s in spans]
    for i in {alphas.index(min(alphas)), alphas.index(max(alphas))}:
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", spans[i])
        colour = dominant(spans[i].screenshot_as_png)
        diff = max(abs(a - b) for a, b in zip(colour, page, strict=True))
        assert diff >= 30, f"token with alpha {alphas[i]} shows {colour} on {page} ({theme})"
