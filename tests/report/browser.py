"""Headless Chromium (playwright) for the tests of HTML pages: the browser fixture and a :class:`Page` opened from
file:// that records console errors and every request it makes.

A test marked :data:`needs_browser` (or a module with ``pytestmark = needs_browser``) is skipped where neither
playwright nor a Chromium binary exists, except on CI, which installs both (Debian's ``chromium`` package; playwright's own browser downloads are not used).
``LMMAP_CHROMIUM`` points to another binary; ``LMMAP_SCREENSHOTS=DIR`` keeps the screenshots.
"""

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path():
    for candidate in (os.environ.get("LMMAP_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):  # fmt: skip
        if candidate and Path(candidate).exists():
            return candidate
    return None


try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

# `make test` installs Debian's chromium where it can; a machine without it skips these tests, but CI must run them.
needs_browser = pytest.mark.skipif(
    (sync_playwright is None or chromium_path() is None) and os.environ.get("CI", "").lower() not in ("true", "1"),
    reason="playwright or chromium is not installed (apt-get install chromium)",
)


@pytest.fixture(scope="module")
def browser():
    assert sync_playwright is not None, "playwright is missing: pip install -e .[test]"
    path = chromium_path()
    assert path is not None, "chromium is missing: apt-get install chromium (or set LMMAP_CHROMIUM)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


# The page is drawn: SVG points (plotly's scatter) or, for a map drawn by WebGL, its plot laid out and its canvas there.
SVG_DRAWN = ".scatterlayer .point"
WEBGL_DRAWN = ("() => { const g = document.getElementById('lmmap-plot');"
               " return !!(g && g._fullLayout && g._fullData && g.querySelector('canvas.gl-canvas')); }")


class Page:
    """A page opened from file:// that records console errors and every request it makes.

    ``drawn``: a CSS selector (default: SVG points) or, starting with ``() =>``, a JavaScript function that is true
    once the page is drawn; ``timeout`` in seconds.
    """

    def __init__(self, browser, html: Path, drawn: str = SVG_DRAWN, timeout: float = 30):
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors, self.requests = [], []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        # Anything but a local file is refused outright, so an offline failure cannot hide behind a timeout.
        self.page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://") else route.abort())
        self.page.goto(html.resolve().as_uri(), timeout=timeout * 1000)
        if drawn.startswith("() =>"):
            self.page.wait_for_function(drawn, timeout=timeout * 1000)
        else:
            self.page.wait_for_selector(drawn, timeout=timeout * 1000)

    def svg_texts(self) -> list[str]:
        return self.page.evaluate("Array.from(document.querySelectorAll('.scatterlayer .textpoint text')).map(t => t.textContent)")

    def n_points(self) -> int:
        return self.page.evaluate("document.querySelectorAll('.scatterlayer .point').length")

    def trace(self, name: str) -> dict:
        return self.page.evaluate(
            # _fullData: what plotly.js drew, with the base64 arrays of the page decoded.
            "(name) => { const t = document.getElementById('lmmap-plot')._fullData.find(d => d.name === name);"
            " return {x: Array.from(t.x, v => (v === null ? NaN : v)), text: Array.from(t.text || []),"
            " customdata: Array.from(t.customdata || [])}; }",
            name,
        )

    def screenshot(self, tmp_path: Path, name: str) -> Path:
        folder = Path(os.environ.get("LMMAP_SCREENSHOTS") or tmp_path)
        folder.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(folder / name), full_page=True)
        return folder / name

    def check_offline_and_clean(self, folder: Path):
        assert self.errors == []
        assert self.requests and all(u.startswith("file://") for u in self.requests), self.requests
        assert any(u.endswith("/plotly.min.js") for u in self.requests)
        assert all(Path(u[len("file://"):]).parent == folder.resolve() for u in self.requests)
