"""The HTML maps as a person sees them: rendered by headless Chromium (playwright), offline.

Asserts what a reader relies on: every point and every label is drawn (in the
SVG, not only in the data), the page makes no request except for its own
``file://`` files (plotly.min.js beside it), the console stays free of errors,
and the search box highlights a model. Skipped only where neither playwright
nor a Chromium binary exists; CI installs both (Debian's ``chromium`` package;
playwright's own browser downloads are not used). ``LMMAP_CHROMIUM`` points
to another binary; ``LMMAP_SCREENSHOTS=DIR`` keeps the screenshots.
"""

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmmap import ModelMap, report
from lmmap.analyses.map import build_map
from lmmap.analyses.place import add_models
from lmmap.data.store import Store
from lmmap.analyses.select import select
from lmmap.data.texts import TextSet
from synthetic import family_L, lineage_L

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
if (sync_playwright is None or chromium_path() is None) and os.environ.get("CI", "").lower() not in ("true", "1"):
    pytest.skip("playwright or chromium is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    assert sync_playwright is not None, "playwright is missing: pip install -e .[test]"
    path = chromium_path()
    assert path is not None, "chromium is missing: apt-get install chromium (or set LMMAP_CHROMIUM)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """A page opened from file:// that records console errors and every request it makes."""

    def __init__(self, browser, html: Path):
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors, self.requests = [], []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        # Anything but a local file is refused outright, so an offline failure cannot hide behind a timeout.
        self.page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://") else route.abort())
        self.page.goto(html.resolve().as_uri())
        self.page.wait_for_selector(".scatterlayer .point", timeout=30_000)

    def svg_texts(self) -> list[str]:
        return self.page.evaluate("Array.from(document.querySelectorAll('.scatterlayer .textpoint text')).map(t => t.textContent)")

    def n_points(self) -> int:
        return self.page.evaluate("document.querySelectorAll('.scatterlayer .point').length")

    def trace(self, name: str) -> dict:
        return self.page.evaluate(
            # _fullData: what plotly.js drew, with the base64 arrays of the page decoded.
            "(name) => { const t = document.getElementById('lmmap-plot')._fullData.find(d => d.name === name);"
            " return {x: Array.from(t.x, v => (v === null ? NaN : v)), text: Array.from(t.text || [])}; }",
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


def test_map_page_draws_every_model_and_label_offline_and_search_highlights(browser, tmp_path):
    names, L, meta = lineage_L(N=400, seed=0)
    meta.loc["lin1-ft-1", "base_model"] = "lin0"  # one contradicted lineage, circled on the map
    names[3] = "<img src=x onerror=alert(1)>"  # stays text
    meta = meta.rename(index={meta.index[3]: names[3]})
    mm = ModelMap(names, L, metadata=meta)
    paths = report.write(build_map(mm), tmp_path / "map")
    page = Page(browser, paths["map.html"])
    page.check_offline_and_clean(tmp_path / "map")
    assert page.n_points() >= mm.K
    texts = page.svg_texts()
    assert sorted(t for t in texts if t) == sorted(names)  # every model named on the picture
    assert page.page.evaluate("document.querySelectorAll('img').length") == 0
    legend = page.page.evaluate("Array.from(document.querySelectorAll('.legendtext')).map(t => t.textContent)")
    assert "declared base_model" in legend and "nearest model in another lineage (1)" in legend
    assert page.page.evaluate("document.querySelector('.gtitle').textContent").startswith(f"Model map: {mm.K} models")
    # The search box: part of a name highlights every match, a whole name exactly one.
    page.page.fill("#lmmap-search", "lin3-ft")
    assert page.trace("search")["text"] == ["<b>lin3-ft-3</b>", "<b>lin3-ft-0</b>"]
    assert page.page.text_content("#lmmap-search-status") == "2 models"
    page.page.fill("#lmmap-search", "LIN4")
    hit = page.trace("search")
    assert hit["text"] == ["<b>lin4</b>"]
    coords = mm.embed("auto")
    assert hit["x"] == pytest.approx([coords[names.index("lin4"), 0]])
    assert page.svg_texts().count("lin4") == 2  # its label and the search's bold one
    shot = page.screenshot(tmp_path, "map.png")
    assert shot.stat().st_size > 20_000
    page.check_offline_and_clean(tmp_path / "map")


def test_placed_map_page_shows_new_models_and_their_lines(browser, tmp_path):
    names, L, fams = family_L(300, 5, 4, 0, spread_shape=2.0, spread_scale=5.0, noise=0.4)
    store = Store.create(tmp_path / "store", TextSet.from_texts([f"text {i} " * 4 for i in range(L.shape[1])]))
    store.write_models([{"name": n, "loglik": row} for n, row in zip(names, L)])
    store.set_metadata(pd.DataFrame({"model": names, "model_type": fams}))
    held = [n for n in names if n.endswith("/m4")]
    rest = [n for n in names if n not in held]
    sub = select(store, "ls", 300, random_state=1, models=rest)
    res = add_models(store, held, sub, R=20)
    paths = report.write(res, tmp_path / "added")
    page = Page(browser, paths["map.html"])
    page.check_offline_and_clean(tmp_path / "added")
    texts = [t for t in page.svg_texts() if t]
    assert sorted(set(texts)) == sorted(names)
    assert all(texts.count(m) == 1 for m in names)  # a new model is named once, in bold
    lines = page.trace("new → nearest by KL")
    assert int(np.sum(~np.isnan(np.array(lines["x"], dtype=float)))) == 2 * len(held)
    assert page.page.evaluate("document.querySelectorAll('.scatterlayer .js-line').length") >= 1
    page.screenshot(tmp_path, "placed.png")
