"""What a reader of each figure would stumble on (issue 22 §9–15, and §7's units), each checked on the figure itself.

Small synthetic maps only: every test here runs in a few seconds.
"""

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from matplotlib.text import Annotation

from lmmap import ModelMap, report
from lmmap.analyses.map import build_map
from lmmap.report import plots
from lmmap.report import map as map_report
from synthetic import lineage_L


@pytest.fixture
def captured(monkeypatch):
    """Every matplotlib figure map_png and lines_png draw, with the keywords lines_png was given."""
    figures, lines = [], []
    map_figure, lines_png, save = plots.map_figure, plots.lines_png, plots._save_png

    def keep_map(*args, **kwargs):
        figures.append(map_figure(*args, **kwargs))
        return figures[-1]

    def keep_lines(path, series, *args, **kwargs):
        lines.append((series, args, kwargs))
        return lines_png(path, series, *args, **kwargs)

    def keep_saved(fig, path, dpi):
        if fig not in figures:
            figures.append(fig)
        return save(fig, path, dpi)

    # map_png calls map_figure, and every PNG writer _save_png, inside plots.png: patched there as well.
    for module in (plots, plots.png):
        monkeypatch.setattr(module, "map_figure", keep_map)
        monkeypatch.setattr(module, "_save_png", keep_saved)
    monkeypatch.setattr(plots, "lines_png", keep_lines)
    return figures, lines


def blob_with_outlier(k=14, seed=0, far=(60.0, 2.0)):
    rng = np.random.default_rng(seed)
    coords = np.vstack([rng.normal(size=(k, 2)) * 4, [far]])
    names = [f"m{i:02d}" for i in range(k)] + ["far-away"]
    return coords, names


def label_texts(ax):
    """The model labels of a map's axes (arrows are annotations with no text)."""
    return [t for t in ax.texts if t.get_text() and not isinstance(t, Annotation)]


def pixels_per_unit(ax):
    (x0, y0), (x1, y1) = ax.transData.transform([(0.0, 0.0), (1.0, 1.0)])
    return x1 - x0, y1 - y0


# ------------------------------------------------------------------ §9 stability


def test_stability_map_is_on_the_maps_scale_with_axis_labels_and_its_unit(tmp_path, captured):
    from lmmap.analyses.stability import compare_stability

    names, L, meta = lineage_L(N=300, n_lineages=3, seed=2)
    mm = ModelMap(names, L, metadata=meta)
    result = compare_stability(mm, [("ls", 120)], R=4, embedding="auto", random_state=1)
    r = result.first
    # The reference is the map of `lmmap map` itself (MDS: squared distance ≈ KL), not √(2N) times it.
    np.testing.assert_allclose(r.reference, mm.embed("mds"), atol=1e-8)
    span_map, span_stab = np.ptp(mm.embed("mds"), axis=0).max(), np.ptp(r.mean, axis=0).max()
    assert 0.8 < span_stab / span_map < 1.25
    report.write(result, tmp_path, color_by="model_type")
    figures, _ = captured
    (fig,) = figures
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("MDS 1", "MDS 2")
    assert "nats/text" in ax.get_title() and "Bias²" in ax.get_title()
    # Bias² and Variance are squared map distances: KL's unit, the scale of the map's KL.
    assert np.median(r.variance) < np.median(mm.kl()[np.triu_indices(mm.K, 1)])


def test_stability_ellipses_are_scaled_until_they_stand_clear_of_their_dots(tmp_path, captured):
    rng = np.random.default_rng(3)
    coords = rng.uniform(-50, 50, size=(20, 2))
    names = [f"m{i}" for i in range(20)]
    covs = np.stack([np.diag([0.04, 0.01])] * 20)  # sd 0.2: a speck on a map 100 wide

    def ratio(scale):
        fig = plots.map_figure(coords, names, ellipses=(coords, covs), ellipse_scale=scale)
        fig.canvas.draw()
        ax = fig.axes[0]
        width_px = plots.ellipse_parameters(covs, scale)[0] * pixels_per_unit(ax)[0]
        dot_px = np.sqrt(ax.collections[-1].get_sizes()[0]) * fig.dpi / 72
        return float(np.median(width_px / dot_px))

    assert ratio(1.0) < 1  # as drawn before: every ellipse hidden behind its dot
    scale = plots.visible_ellipse_scale(coords, covs)
    assert scale > 1 and scale in {m * 10.0**e for m in (1, 2, 5) for e in range(0, 4)}
    assert ratio(scale) > 1
    # The writer says by how much.
    from lmmap.analyses.stability import StabilityResult
    from lmmap.report.stability import figure_title

    r = StabilityResult.from_configurations("ls", 100, np.stack([coords, coords + 0.1]), coords, np.array([80, 81]))
    assert f"drawn {scale:g}× larger" in figure_title(r, "mds", scale)
    assert "× larger" not in figure_title(r, "mds", 1.0)


# ------------------------------------------------------------------ §10 scale


def test_scale_plot_ticks_do_not_overlap_no_point_is_cut_and_it_is_full_size(tmp_path, captured):
    import matplotlib.image as mpimg

    from lmmap.analyses.scale import scale

    names, L, meta = lineage_L(N=300, n_lineages=4, seed=1)
    result = scale(ModelMap(names, L, metadata=meta), unit="nats-per-text")
    paths = report.write(result, tmp_path)
    figures, _ = captured
    (fig,) = figures
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    lo, hi = ax.get_xlim()
    ticks = [t for t, v in zip(ax.get_xticklabels(), ax.get_xticks()) if lo <= v <= hi and t.get_text()]
    boxes = [t.get_window_extent(renderer) for t in ticks]
    assert len(ticks) >= 2 and not any(boxes[a].overlaps(boxes[b]) for a in range(len(boxes)) for b in range(a))
    assert not any("10^" in t.get_text() or "×" in t.get_text() for t in ticks)
    # Every dot lies inside the frame with room to spare (more than its radius), not cut at an edge.
    frame = ax.get_window_extent(renderer)
    for c in ax.collections:
        x = ax.transData.transform(c.get_offsets())[:, 0]
        radius = np.sqrt(c.get_sizes().max()) * fig.dpi / 72 / 2
        assert x.max() + radius < frame.x1 and x.min() - radius > frame.x0 - 1
    assert mpimg.imread(paths["scale.png"]).shape[1] >= 1300  # as wide as the other figures (was 800 px)


# ------------------------------------------------------------------ §11 log ticks


def test_log_axes_with_a_small_range_have_plain_decimal_tick_labels(tmp_path, captured):
    x = np.array([30, 60, 90, 120, 160, 190])
    series = {"model": (x, np.array([0.13, 0.11, 0.135, 0.085, 0.065, 0.05])), "target 0.1": (x, np.full(6, 0.1))}
    plots.lines_png(tmp_path / "trace.png", series, "texts scored", "relative SE", logy=True)
    figures, _ = captured
    ax = figures[-1].axes[0]
    figures[-1].canvas.draw()
    lo, hi = ax.get_ylim()
    shown = [t.get_text() for t in ax.yaxis.get_ticklabels(which="both") if t.get_text()]
    assert shown and all(re.fullmatch(r"\d+(\.\d+)?", s) for s in shown), shown
    assert {"0.05", "0.1"} <= set(shown)
    assert lo > 0 and hi < 1


# ------------------------------------------------------------------ §12 maps


def test_mds_map_frame_leaves_a_far_outlier_out_and_marks_it(tmp_path):
    coords, names = blob_with_outlier()
    fig = plots.map_figure(coords, names, groups=["a"] * 7 + ["b"] * 8, axis_label="MDS")
    fig.canvas.draw()
    ax = fig.axes[0]
    x0, x1 = ax.get_xlim()
    assert x1 < 60  # the far model does not set the frame ...
    assert np.ptp(coords[:-1, 0]) > 0.5 * (x1 - x0)  # ... so the others fill it
    (label,) = [t for t in label_texts(ax) if t.get_text().startswith("far-away")]
    assert "(at 60, 2)" in label.get_text()  # ... and it is named with its true position
    arrows = [t for t in ax.texts if isinstance(t, Annotation) and t.arrow_patch is not None]
    assert len(arrows) == 1 and arrows[0].xy[0] > arrows[0].xyann[0]  # pointing its way (right)
    assert any(t.get_text().startswith("far off the map (1)") for t in fig.legends[0].get_texts())
    # Without the outlier nothing is moved.
    fig = plots.map_figure(coords[:-1], names[:-1])
    assert not [t for t in fig.axes[0].texts if isinstance(t, Annotation) and t.arrow_patch is not None]
    # The HTML page opens on the same frame, with an arrow that names the model.
    from plotly_json import plotly_figure

    _, layout = plotly_figure(plots.map_html(tmp_path / "m.html", coords, names))
    assert layout["xaxis"]["range"][1] < 60
    (note,) = layout["annotations"]
    assert note["text"].startswith("far-away") and note["showarrow"]


def test_the_map_figure_is_shaped_to_its_frame():
    rng = np.random.default_rng(1)
    wide = rng.uniform(size=(12, 2)) * [100.0, 30.0]
    fig = plots.map_figure(wide, [f"m{i}" for i in range(12)], title="a\nb\nc")
    width, height = fig.get_size_inches()
    assert height < 0.75 * width  # not a square box around a wide map


def crosses(p, q, box, n=50):
    """Whether the line from p to q (pixels) runs through ``box`` (its ends, the models' dots, left out)."""
    points = p + (q - p) * np.linspace(0.1, 0.9, n)[:, None]
    return bool(((points[:, 0] > box.x0) & (points[:, 0] < box.x1) & (points[:, 1] > box.y0)
                 & (points[:, 1] < box.y1)).any())


def test_no_label_sits_on_a_dot_or_a_line():
    names, L, meta = lineage_L(N=300, n_lineages=3, seed=2)
    mm = ModelMap(names, L, metadata=meta)
    coords = mm.embed("mds")
    edges, flagged = map_report.map_edges(mm)
    fig = plots.map_figure(coords, names, groups=mm.groups("model_type"), edges=edges, flagged=flagged)
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    dots = ax.transData.transform(coords)
    texts = label_texts(ax)
    assert sorted(t.get_text() for t in texts) == sorted(names)
    for t in texts:
        i = names.index(t.get_text())
        anchor = ax.transData.transform(t.get_position())
        assert np.hypot(*(anchor - dots[i])) > 3  # the label starts beside its dot, not on it
        box = t.get_window_extent(renderer)
        assert not box.contains(*dots[i])
        covered = [names[j] for j, (x, y) in enumerate(dots) if box.contains(x, y)]
        assert covered == [], (t.get_text(), covered)
    # Labels keep off the lineage and trajectory lines too (5 of 14 sat on one before).
    index = {n: i for i, n in enumerate(names)}
    pairs = [(index[a], index[b]) for e in edges for a, b in e.pairs]
    on_lines = [t.get_text() for t in texts
                if any(crosses(dots[a], dots[b], t.get_window_extent(renderer)) for a, b in pairs)]
    assert len(on_lines) <= 1, on_lines


def test_category_palette_keeps_clear_of_the_rings_red_and_paths_have_their_own_style():
    ring = np.array(to_rgb(plots.FLAG_COLOR))
    distances = [np.linalg.norm(np.array(to_rgb(c)) - ring) for c in plots.PALETTE]
    assert plots.FLAG_COLOR not in plots.PALETTE and min(distances) > 0.3
    assert len(set(plots.PALETTE)) == len(plots.PALETTE) == 20
    for kind in ("trajectory", "layers"):
        colour, _, dash, _, _ = plots.EDGE_STYLES[kind]
        r, g, b = to_rgb(colour)
        assert colour not in plots.PALETTE and max(r, g, b) - min(r, g, b) < 0.05  # grey, not a category's colour
        assert dash != plots.EDGE_STYLES["lineage"][2]  # and not the lineage's solid line


def lineage_with_orphan(n_lineages):
    """A lineage ecosystem plus 'orphan', a near copy of lin2-ft-2 with no declared lineage: lin2-ft-2's nearest."""
    names, L, meta = lineage_L(N=300, n_lineages=n_lineages, n_finetunes=3, n_checkpoints=1, n_scratch=6, seed=4)
    i = names.index("lin2-ft-2")
    L = np.vstack([L, L[i] + np.random.default_rng(0).normal(0, 0.5, L.shape[1])])
    meta = pd.concat([meta, pd.DataFrame({"model_type": ["finetune"], "family": ["orphan"], "base_model": [""],
                                          "domain": ["d2"]}, index=pd.Index(["orphan"], name="model"))])
    return ModelMap(names + ["orphan"], np.minimum(L, -0.01), metadata=meta)


def test_dense_maps_draw_rings_without_their_red_lines():
    from lmmap.analyses.map import lineage_table
    from lmmap.report.map import compose_edges

    for n_lineages, dense in ((4, False), (9, True)):
        mm = lineage_with_orphan(n_lineages)
        assert (mm.K > plots.DENSE_MAP_MODELS) == dense
        # The lineage test's verdict, set here: lin2-ft-2 derived from orphan, a model of no declared lineage.
        test = pd.DataFrame({"model": mm.names, "parent": "", "parent2": "", "decision": "independent",
                             "statistic": 0.0, "p_value": 0.5, "p_adjusted": 1.0, "direction": "",
                             "flagged": [m == "lin2-ft-2" for m in mm.names], "nearest_kl": mm.names[0],
                             "kl_to_nearest": 0.1})
        test.loc[test["model"] == "lin2-ft-2", ["parent", "decision"]] = ["orphan", "derived"]
        table = lineage_table(mm, mm.lineage(), type("R", (), {"table": test})())
        edges, flagged = compose_edges(mm, "base_model", (), table, [])
        assert flagged == ["lin2-ft-2"]
        assert [e.kind for e in edges] == (["lineage"] if dense else ["lineage", "contradiction"])
        bases = mm.base_models()
        assert edges[0].style[4] == (f"declared base_model ({len(bases)} lines)" if dense else "declared base_model")
    assert map_report.flagged_label(mm) == plots.FLAG_LABEL
    fig = plots.map_figure(mm.embed("mds"), mm.names, mm.groups("model_type"), edges=edges, flagged=flagged,
                           flagged_label=map_report.flagged_label(mm), label=False)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert f"declared base_model ({len(bases)} lines)" in legend and f"{plots.FLAG_LABEL} (1)" in legend


def test_docs_demo_map_is_the_current_picture():
    """docs/demo-map.png was regenerated with today's map: shaped to its frame (not the old 1560×1125 square box)."""
    import matplotlib.image as mpimg

    image = mpimg.imread(Path(__file__).resolve().parents[2] / "docs" / "demo-map.png")
    assert image.shape[1] == 1560 and image.shape[0] != 1125


# ------------------------------------------------------------------ §13 placed map


@pytest.fixture
def placed(tmp_path):
    from lmmap.analyses.place import add_models
    from lmmap.analyses.select import select
    from lmmap.data.store import Store
    from lmmap.data.texts import TextSet

    names, L, meta = lineage_L(N=300, n_lineages=3, seed=5)
    store = Store.create(tmp_path / "store", TextSet.from_texts([f"text {i} " * 4 for i in range(L.shape[1])]))
    store.write_models([{"name": n, "loglik": row} for n, row in zip(names, L)])
    held = ["lin1-ft-2", "lin2-ft-3"]
    meta = meta.reset_index()
    meta.loc[meta["model"] == "lin2-ft-3", "model_type"] = None  # what we know of it: nothing but its lineage
    store.set_metadata(meta)
    rest = [n for n in names if n not in held]
    sub = select(store, "ls", 200, random_state=1, models=rest)
    return add_models(store, held, sub, R=10), held, rest


def test_placed_map_keeps_the_maps_lines_and_colours_a_new_model_by_what_is_known(placed, tmp_path, captured):
    from plotly_json import plotly_figure

    result, held, rest = placed
    paths = report.write(result, tmp_path / "placed")
    data, _ = plotly_figure(paths["map.html"])
    by_name = {t.get("name"): t for t in data}
    assert "declared base_model" in by_name and "training trajectory (step order)" not in by_name
    groups = {t["legendgroup"]: [c[0] for c in t["customdata"]] for t in data if t.get("legendgroup")}
    assert "lin1-ft-2" in groups["finetune"]  # its model_type is known: drawn as one
    assert groups[plots.NEW_GROUP] == ["lin2-ft-3"]  # nothing known: the "new" style ...
    assert "unknown" not in groups  # ... not the grey of unknown
    figures, _ = captured
    legend = [t.get_text() for t in figures[-1].legends[0].get_texts()]
    assert "declared base_model" in legend and f"{plots.NEW_GROUP} (1)" in legend
    assert plots.group_styles([plots.NEW_GROUP, "a"])[plots.NEW_GROUP][0] == plots.NEW_COLOR != plots.UNKNOWN_COLOR


# ------------------------------------------------------------------ §14 Figure 2


def test_figure2_says_what_is_plotted_in_words_with_the_symbol_second(tmp_path, captured):
    from lmmap.analyses.errors import analyse_errors

    names, L, meta = lineage_L(N=200, n_lineages=2, seed=1)
    result = analyse_errors(ModelMap(names, L), mode="analytic", n_grid=[20, 50, 100, 200], targets=[50])
    report.write(result, tmp_path)
    _, lines = captured
    (_, _, kw), = lines
    ylabel, title = kw["ylabel"], kw["title"]
    assert ylabel.startswith("error of the estimated KL") and ylabel.index("σ̂") > ylabel.index("KL")
    assert "no unit" in ylabel and "g̃" not in ylabel
    assert title.startswith("Error of the KL estimates") and "texts" in title
    assert "σ̂" not in title


# ------------------------------------------------------------------ §15 plotly.min.js


def test_outputs_written_with_a_shared_plotly_folder_hold_one_plotly_js(tmp_path, monkeypatch):
    names, L, meta = lineage_L(N=200, n_lineages=2, seed=1)
    mm = ModelMap(names, L, metadata=meta)
    monkeypatch.setenv(plots.PLOTLY_JS_DIR_ENV, str(tmp_path / "shared"))
    result = build_map(mm)
    a = report.write(result, tmp_path / "session" / "map")
    b = report.write(result, tmp_path / "session" / "again")
    copies = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob(plots.PLOTLY_JS))
    assert copies == ["shared/plotly.min.js"]
    assert a[plots.PLOTLY_JS] == b[plots.PLOTLY_JS] == (tmp_path / "shared" / plots.PLOTLY_JS).resolve()
    page = a["map.html"].read_text(encoding="utf-8")
    assert '<script charset="utf-8" src="../../shared/plotly.min.js"></script>' in page
    assert "https://" not in page.split("<body>")[1].split("</script>")[0]  # offline: no CDN
    # Without the option every folder keeps its own copy, as before.
    monkeypatch.delenv(plots.PLOTLY_JS_DIR_ENV)
    c = report.write(result, tmp_path / "alone")
    assert c[plots.PLOTLY_JS] == tmp_path / "alone" / plots.PLOTLY_JS and c[plots.PLOTLY_JS].exists()
    assert 'src="plotly.min.js"' in c["map.html"].read_text(encoding="utf-8")


def test_a_page_without_its_plotly_js_says_so_and_hides_the_message_when_plotly_loads(tmp_path):
    page = plots.scatter_html(tmp_path / "p.html", [1, 2], [3, 4]).read_text(encoding="utf-8")
    notice = re.search(r'<div id="lmmap-no-plotly"[^>]*>(.*?)</div>', page, re.S)
    assert notice and "could not be drawn" in notice.group(1) and "plotly.min.js" in notice.group(1)
    # After plotly's own script tag (parsed once it loaded or failed), before the plot, and hidden when it loaded.
    assert page.index('src="plotly.min.js"></script>') < notice.start() < page.index('id="lmmap-plot"')
    assert "window.Plotly" in page[notice.end():page.index('id="lmmap-plot"')]
    if shutil.which("node"):
        _run_page_scripts_in_node(page, tmp_path, plotly_loaded=True, expect="none")
        _run_page_scripts_in_node(page, tmp_path, plotly_loaded=False, expect="")


def _run_page_scripts_in_node(page, tmp_path, plotly_loaded, expect):
    """The notice's own script against a stand-in DOM: hidden when window.Plotly exists, shown when it does not."""
    import subprocess

    start = page.index('<div id="lmmap-no-plotly"')
    script = re.search(r"<script[^>]*>(.*?)</script>", page[start:], re.S).group(1)
    js = (
        "const el = {style: {display: ''}};\n"
        "global.document = {getElementById: (id) => (id === 'lmmap-no-plotly' ? el : null)};\n"
        f"global.window = {{{'Plotly: {}' if plotly_loaded else ''}}};\n"
        f"{script}\nprocess.stdout.write(JSON.stringify(el.style.display));\n"
    )
    (tmp_path / "notice.js").write_text(js, encoding="utf-8")
    out = subprocess.run(["node", str(tmp_path / "notice.js")], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f'"{expect}"'


def _chromium():
    for candidate in (os.environ.get("LMMAP_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):  # fmt: skip
        if candidate and Path(candidate).exists():
            return candidate
    return None


def test_a_page_copied_alone_shows_the_message_in_a_browser(tmp_path):
    """As test_html_browser.py drives Chromium: the page beside its plotly.min.js draws and hides the message; the
    same page copied alone shows it."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - depends on the machine
        sync_playwright = None
    if (sync_playwright is None or _chromium() is None) and os.environ.get("CI", "").lower() not in ("true", "1"):
        pytest.skip("playwright or chromium is not installed (apt-get install chromium)")
    page_path = plots.scatter_html(tmp_path / "out" / "p.html", [1, 2], [3, 4])
    alone = tmp_path / "copied" / "p.html"
    alone.parent.mkdir()
    shutil.copy(page_path, alone)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            seen = {}
            for name, path in (("beside", page_path), ("alone", alone)):
                page = browser.new_page()
                page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://")
                           else route.abort())
                page.goto(path.resolve().as_uri())
                page.wait_for_load_state("load")
                seen[name] = page.is_visible("#lmmap-no-plotly")
                page.close()
        finally:
            browser.close()
    assert seen == {"beside": False, "alone": True}


# ------------------------------------------------------------------ §7 units on every figure


def test_every_map_title_states_its_units():
    names, L, meta = lineage_L(N=200, n_lineages=2, seed=1)
    mm = ModelMap(names, L, metadata=meta, text_bytes=np.full(200, 1000))
    assert "nats/text" in map_report.title(mm, "mds")
    bpb = map_report.title(mm, "mds", unit="bits-per-byte")
    assert "squared map distance ≈ KL in nats/text" in bpb and "bits/byte" in bpb
    assert "t-SNE axes have no unit" in map_report.title(mm, "tsne") and "nats/text" in map_report.title(mm, "tsne")


def test_map_with_bits_per_byte_names_its_unit_on_the_png(tmp_path, captured):
    names, L, meta = lineage_L(N=200, n_lineages=2, seed=1)
    mm = ModelMap(names, L, metadata=meta, text_bytes=np.full(200, 1000))
    report.write(build_map(mm), tmp_path, unit="bits-per-byte")
    figures, _ = captured
    assert "bits/byte" in figures[-1].axes[0].get_title()
