"""The HTML maps as a person sees them: rendered by headless Chromium (playwright), offline.

Asserts what a reader relies on: every point and every label is drawn (in the
SVG, not only in the data), the page makes no request except for its own
``file://`` files (plotly.min.js beside it), the console stays free of errors,
and the search box highlights a model. The browser and the page
helpers are in ``browser.py`` (skipped where neither playwright nor a Chromium
binary exists, except on CI: ``needs_browser``).
"""

import numpy as np
import pandas as pd
import pytest
from browser import Page, browser, needs_browser  # noqa: F401  (browser: a fixture)

from lmmap import ModelMap, report
from lmmap.analyses.map import build_map
from lmmap.analyses.place import add_models
from lmmap.data.store import Store
from lmmap.analyses.select import select
from lmmap.data.texts import TextSet
from synthetic import family_L, lineage_L

pytestmark = needs_browser


def test_map_page_draws_every_model_and_label_offline_and_search_highlights(browser, tmp_path):
    names, L, meta = lineage_L(N=400, seed=0)
    meta.loc["lin1-ft-1", "base_model"] = "lin0"
    names[3] = "<img src=x onerror=alert(1)>"  # stays text
    meta = meta.rename(index={meta.index[3]: names[3]})
    mm = ModelMap(names, L, metadata=meta)
    result = build_map(mm)
    # One contradicted lineage, circled on the map: the lineage test's verdict, set here so the page is known.
    t = result.lineage
    t["flagged"] = t["model"] == "lin1-ft-1"
    t.loc[t["model"] == "lin1-ft-1", ["inferred_parent", "decision"]] = ["lin1", "derived"]
    paths = report.write(result, tmp_path / "map")
    page = Page(browser, paths["map.html"])
    page.check_offline_and_clean(tmp_path / "map")
    assert page.n_points() >= mm.K
    texts = page.svg_texts()
    assert sorted(t for t in texts if t) == sorted(names)  # every model named on the picture
    assert page.page.evaluate("document.querySelectorAll('img').length") == 0
    legend = page.page.evaluate("Array.from(document.querySelectorAll('.legendtext')).map(t => t.textContent)")
    assert "declared base_model" in legend and "lineage test: parent in another lineage (1)" in legend
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
