"""Map pictures of the whole hub (issue 24): the large form above ``plots.LARGE_MAP_MODELS`` models.

The PNG shades the density under small dots and names only the largest groups; the HTML draws every point by
WebGL (``scattergl``), stores each name once, and keeps its search box. The page of 100,000 models is opened in
headless Chromium (``browser.py``), offline.
"""

import json
import time
import warnings

import matplotlib.image as mpimg
import numpy as np
import pytest
from browser import Page, WEBGL_DRAWN, browser, needs_browser  # noqa: F401  (browser: a fixture)
from matplotlib.collections import PolyCollection
from plotly_json import plotly_array

from lmmap.exceptions import LmmapError, LmmapWarning
from lmmap.report import plots

EVIL = "<img src=x onerror=alert(1)>"


def hub(K, n_families=None, seed=0):
    """K models in families of Zipf-like sizes (a few large, very many small, one in ten without a family)."""
    rng = np.random.default_rng(seed)
    n_families = n_families or max(5, K // 40)
    weight = 1.0 / np.arange(1, n_families + 1) ** 1.1
    family = rng.choice(n_families, size=K, p=weight / weight.sum())
    centres = rng.normal(size=(n_families, 2)) * 10
    coords = centres[family] + rng.normal(size=(K, 2)) * rng.gamma(2.0, 0.4, size=(K, 1))
    names = [f"org{f}/fam{f}-model-{i}" for i, f in enumerate(family)]
    groups = [None if u < 0.1 else f"fam{f}" for f, u in zip(family, rng.random(K))]
    return coords, names, groups


def largest(groups, n):
    counts = {}
    for g in groups:
        if g is not None:
            counts[g] = counts.get(g, 0) + 1
    return sorted(counts, key=lambda g: (-counts[g], g))[:n]


def named_groups(groups):
    """The groups a large map names: the largest, of at least LARGE_MAP_LABEL_SHARE of the models each."""
    top = largest(groups, plots.LARGE_MAP_GROUP_LABELS)
    return [g for g in top if groups.count(g) >= plots.common.LARGE_MAP_LABEL_SHARE * len(groups)]


# ----------------------------------------------------------------- PNG


def test_large_map_png_shades_the_density_and_names_only_the_largest_groups(tmp_path):
    K = 20_000
    coords, names, groups = hub(K)
    assert K > plots.LARGE_MAP_MODELS
    start = time.perf_counter()
    fig = plots.map_figure(coords, names, groups, highlight=[names[7]], group_title="family")
    ax = fig.axes[0]
    hexbins = [c for c in ax.collections if isinstance(c, PolyCollection) and c.get_array() is not None]
    assert len(hexbins) == 1
    counts = np.asarray(hexbins[0].get_array())
    assert counts.sum() == K and counts.max() > 50 * counts.min()  # dense and sparse hexagons, each shaded
    assert len(np.unique(hexbins[0].get_facecolors()[:, 0])) > 20
    # Names: the largest groups (at their median position) and the highlighted model; no model is named otherwise.
    texts = [t.get_text() for t in ax.texts]
    assert len(named_groups(groups)) >= 8
    assert sorted(texts) == sorted(named_groups(groups) + [names[7]])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(legend) <= plots.LARGE_MAP_COLOURS + 5
    assert any(t.startswith("other groups: ") for t in legend) and any(t.startswith("unknown (") for t in legend)
    # The picture: dark where the models crowd, white where there are none.
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float) / 255
    height = image.shape[0]

    def pixel(x, y):
        px, py = ax.transData.transform((x, y))
        return image[int(height - py), int(px)].mean()

    first = np.array(groups, dtype=object) == largest(groups, 1)[0]
    lo, hi = ax.get_xlim(), ax.get_ylim()
    assert pixel(*np.median(coords[first], axis=0)) < 0.7
    assert pixel(lo[0] + 0.01 * (lo[1] - lo[0]), hi[0] + 0.01 * (hi[1] - hi[0])) > 0.99
    path = plots.map_png(tmp_path / "map.png", coords, names, groups, group_title="family")
    assert time.perf_counter() - start < 60
    png = mpimg.imread(path)
    assert png.shape[2] == 4 and png.shape[0] > 600 and (png[..., :3] < 0.5).any()


def test_small_maps_keep_their_form_and_large_is_checked(tmp_path):
    coords, names, groups = hub(300, n_families=5)
    fig = plots.map_figure(coords, names, groups)
    assert not [c for c in fig.axes[0].collections if isinstance(c, PolyCollection) and c.get_array() is not None]
    # The large form of a handful of models, odd names and one far model included, draws without complaint.
    coords, names = coords[:8].copy(), names[:8]
    coords[0] = 1e4
    names[1] = EVIL
    fig = plots.map_figure(coords, names, ["$x$", None, "a", "a", "b", "b", "b", "c"], highlight=[EVIL], large=True)
    assert EVIL in [t.get_text() for t in fig.axes[0].texts]
    plots.map_png(tmp_path / "tiny.png", coords, names, large=True)
    plots.map_html(tmp_path / "tiny.html", coords, names, large=True)
    with pytest.raises(LmmapError, match="large must be True, False or None"):
        plots.map_png(tmp_path / "x.png", coords, names, large="yes")


def test_large_maps_leave_out_lines_beyond_the_limit_and_ellipses_in_html_with_a_warning(tmp_path, monkeypatch):
    coords, names, groups = hub(50, n_families=3)
    nn = plots.Edges("nn", tuple(zip(names[:-1], names[1:])))
    lineage = plots.Edges("lineage", ((names[0], names[1]),))
    monkeypatch.setattr(plots.common, "LARGE_MAP_MAX_LINES", 10)
    with pytest.warns(LmmapWarning, match=r"leaves out its lines 'nearest model by KL' \(49\): more than 10 lines"):
        fig = plots.map_figure(coords, names, groups, edges=[nn, lineage], large=True)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "declared base_model" in legend and "nearest model by KL" not in legend
    covs = np.stack([np.eye(2)] * 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.map_png(tmp_path / "e.png", coords, names, groups, ellipses=(coords, covs), large=True)
    with pytest.warns(LmmapWarning, match="has no ellipses"):
        plots.map_html(tmp_path / "e.html", coords, names, groups, ellipses=(coords, covs), large=True)


# ----------------------------------------------------------------- HTML


def page_figure(path):
    """The data and layout plotly wrote into a page, read whole (a layout with annotations has "}, {" in it, which
    the pattern of :func:`plotly_json.plotly_figure` takes for its end)."""
    text = path.read_text(encoding="utf-8")
    at = text.index("[", text.index("Plotly.newPlot("))
    decoder = json.JSONDecoder()
    data, end = decoder.raw_decode(text, at)
    layout, _ = decoder.raw_decode(text, text.index("{", end))
    return data, layout


def point_traces(data):
    return [t for t in data if t.get("name") not in ("search", "highlighted") and t.get("mode") == "markers"
            and "legendrank" in t and t["legendrank"] < 2000]


def test_large_map_html_is_webgl_and_compact_with_each_name_once(tmp_path):
    K = 20_000
    coords, names, groups = hub(K)
    names[3] = EVIL
    hover = [f"nearest: {names[(i + 1) % K]} (KL 0.123)\nsecond line" for i in range(K)]
    path = plots.map_html(tmp_path / "map.html", coords, names, groups, hover=hover, group_title="family",
                          highlight=[names[5]], flagged=names[10:20])
    data, layout = page_figure(path)
    assert {t["type"] for t in data} == {"scattergl"}
    points = point_traces(data)
    assert sum(len(t["customdata"]) for t in points) == K
    assert sorted(v for t in points for v in t["customdata"]) == sorted(plots.escape(n) for n in names)
    assert all(t["x"]["dtype"] == "f4" and "text" not in t for t in points)
    x = np.concatenate([plotly_array(t["x"]) for t in points])
    assert np.sort(x) == pytest.approx(np.sort(coords[:, 0]), rel=1e-6)
    assert all("family: " in t["hovertemplate"] or t["name"].startswith("other groups") for t in points)
    text = path.read_text(encoding="utf-8")
    assert EVIL not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    # The largest groups are named once each, at their median position; the highlighted model too.
    notes = [a["text"] for a in layout["annotations"]]
    assert sorted(notes) == sorted([f"<b>{g}</b>" for g in named_groups(groups)]
                                   + [f"<b>{plots.escape(names[5])}</b>"])
    # A name, its hover lines and a position: about 150 bytes a model.
    assert path.stat().st_size < 200 * K


@pytest.mark.slow
@needs_browser
def test_page_of_100000_models_loads_offline_draws_every_point_by_webgl_and_searches(browser, tmp_path):
    K = 100_000
    coords, names, groups = hub(K)
    names[3] = EVIL
    hover = [f"nearest: {names[(i + 1) % K]} (KL 0.123), {names[(i + 2) % K]} (KL 0.2)" for i in range(K)]
    start = time.perf_counter()
    path = plots.map_html(tmp_path / "hub" / "map.html", coords, names, groups, hover=hover, group_title="family",
                          flagged=names[100:200])
    written = time.perf_counter() - start
    assert written < 60
    start = time.perf_counter()
    page = Page(browser, path, drawn=WEBGL_DRAWN, timeout=120)
    loaded = time.perf_counter() - start
    assert loaded < 60, loaded  # a few seconds with software WebGL on two cores
    page.check_offline_and_clean(tmp_path / "hub")
    traces = page.page.evaluate(
        "() => document.querySelector('.js-plotly-plot')._fullData.map("
        "d => ({type: d.type, name: d.name, n: d.x.length, names: (d.customdata || []).length}))"
    )
    assert all(t["type"] == "scattergl" for t in traces)
    # the red rings of flagged models are a trace of their own (named as the legend says), on top of their points
    shown = [t for t in traces if t["name"] != "search" and not t["name"].startswith(plots.FLAG_LABEL)]
    assert sum(t["n"] for t in shown) == K and sum(t["names"] for t in shown) == K
    # Hover: the mouse over a model (the first one of the largest group: drawn on top) shows its name, group and
    # neighbours.
    top = largest(groups, 1)[0]
    j = groups.index(top)
    page.page.mouse.move(*page.page.evaluate(
        "([x, y]) => { const g = document.getElementById('lmmap-plot'), box = g.querySelector('.nsewdrag')"
        ".getBoundingClientRect(), l = g._fullLayout; return [box.left + l.xaxis.l2p(x), box.top + l.yaxis.l2p(y)]; }",
        [float(coords[j, 0]), float(coords[j, 1])],
    ))
    page.page.wait_for_selector(".hoverlayer .hovertext", timeout=10_000)
    tip = page.page.text_content(".hoverlayer .hovertext")
    assert f"family: {top}" in tip and "nearest: " in tip
    # The search box: a whole name rings and names exactly that model; part of one, every match (up to a limit).
    i = next(j for j, n in enumerate(names) if n.startswith("org3/"))
    page.page.fill("#lmmap-search", names[i].upper())
    found = page.trace("search")
    assert found["customdata"] == [names[i]] and page.page.text_content("#lmmap-search-status") == "1 model"
    assert found["x"] == pytest.approx([coords[i, 0]], rel=1e-6)
    notes = page.page.evaluate("Array.from(document.querySelectorAll('.annotation-text')).map(t => t.textContent)")
    assert names[i] in notes
    page.page.fill("#lmmap-search", "<img")
    assert page.trace("search")["customdata"] == [plots.escape(EVIL)]
    assert page.page.evaluate("document.querySelectorAll('img').length") == 0
    page.page.fill("#lmmap-search", "org0/")
    status = page.page.text_content("#lmmap-search-status")
    assert status.endswith("ringed, 12 named)") and len(page.trace("search")["x"]) == 1000
    page.screenshot(tmp_path, "hub.png")
    assert page.errors == []
