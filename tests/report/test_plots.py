import base64
import json
import re

import matplotlib.image as mpimg
import numpy as np
import pytest
from plotly_json import plotly_array, plotly_figure  # noqa: F401  (re-exported for older imports)
from matplotlib.colors import to_rgb

from lmmap.report import plots
from lmmap.exceptions import LmmapError

EVIL = "<script>alert(1)</script>"


def rotation(degrees):
    a = np.radians(degrees)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def small_map(k=6):
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(k, 2)) * 5
    names = [f"model-{i}" for i in range(k)]
    groups = ["llama", "llama", "gpt2", None, "gpt2", float("nan")][:k]
    return coords, names, groups


def has_colour(image, colour, tol=0.03):
    """Whether some pixel of an RGBA image shows ``colour`` drawn on white with opacity ≥ 0.5.

    A pixel ``p = a·c + (1 − a)·white`` gives the same ``a = (1 − p)/(1 − c)`` in every channel.
    """
    c = np.array(to_rgb(colour))
    p = image[..., :3].reshape(-1, 3)
    alpha = np.clip((1 - p) @ (1 - c) / ((1 - c) @ (1 - c)), 0, 1)
    blended = alpha[:, None] * c + (1 - alpha[:, None])
    return bool(((np.abs(blended - p) < tol).all(axis=1) & (alpha >= 0.5)).any())


# ----------------------------------------------------------------- pure helpers


def test_escape_makes_markup_inert():
    assert plots.escape("<a href='x'>&\"") == "&lt;a href=&#x27;x&#x27;&gt;&amp;&quot;"
    assert plots.escape(None) == ""
    assert plots.escape(3) == "3"


def test_ellipse_axes_are_square_roots_of_the_eigenvalues():
    cov = rotation(30) @ np.diag([9.0, 4.0]) @ rotation(30).T
    width, height, angle = plots.ellipse_parameters(cov)
    assert (width, height) == pytest.approx((6.0, 4.0))  # full axes 2·√9, 2·√4
    assert angle == pytest.approx(30.0)
    width, height, _ = plots.ellipse_parameters(cov, scale=2.0)
    assert (width, height) == pytest.approx((12.0, 8.0))


def test_ellipse_parameters_batch_vertical_and_degenerate():
    covs = np.array([np.diag([1.0, 16.0]), [[1.0, 1.0], [1.0, 1.0]]])
    width, height, angle = plots.ellipse_parameters(covs)
    assert width == pytest.approx([8.0, 2 * np.sqrt(2.0)])
    assert height == pytest.approx([2.0, 0.0], abs=1e-7)
    assert angle == pytest.approx([90.0, 45.0])


def test_ellipse_outline_lies_at_scale_mahalanobis_distance():
    cov = np.array([[2.0, 0.8], [0.8, 1.0]])
    centre = np.array([3.0, -1.0])
    outline = plots.ellipse_outline(centre, cov, scale=1.5, n_points=50)
    assert outline.shape == (51, 2)
    np.testing.assert_allclose(outline[0], outline[-1])  # closed
    diff = outline - centre
    mahalanobis = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
    np.testing.assert_allclose(mahalanobis, 1.5**2)


def test_group_styles_order_largest_first_and_unknown_grey_last():
    labels = plots.group_labels(["b", None, "a", "b", "", float("nan")], 6)
    assert labels == ["b", "unknown", "a", "b", "unknown", "unknown"]
    styles = plots.group_styles(labels)
    assert list(styles) == ["b", "a", "unknown"]
    assert styles["unknown"][0] == plots.UNKNOWN_COLOR


def test_many_groups_get_distinct_colour_marker_pairs():
    styles = plots.group_styles([f"g{i}" for i in range(60)])
    assert len(set(styles.values())) == 60


# ----------------------------------------------------------------- PNG


def test_map_png_is_an_image_of_the_requested_size_with_the_group_colours(tmp_path):
    coords, names, groups = small_map()
    path = plots.map_png(
        tmp_path / "sub" / "map.png", coords, names, groups, highlight=["model-2"], title="t", figsize=(6, 4), dpi=50
    )
    image = mpimg.imread(path)
    assert image.shape == (200, 300, 4)
    styles = plots.group_styles(plots.group_labels(groups, 6))
    for colour, _ in styles.values():
        assert has_colour(image, colour)


def test_map_png_with_ellipses_labels_and_math_like_names(tmp_path):
    coords, names, groups = small_map()
    names[0] = r"$\notacommand$ 100$"  # would break matplotlib's mathtext parser
    names[1] = EVIL
    covs = np.stack([np.diag([1.0, 0.25])] * 6)
    path = plots.map_png(tmp_path / "m.png", coords, names, groups, ellipses=(coords, covs), label=True, dpi=40)
    assert mpimg.imread(path).shape[2] == 4


def test_map_png_refuses_unknown_highlight_and_mismatched_inputs(tmp_path):
    coords, names, groups = small_map()
    with pytest.raises(LmmapError, match="not among the map's model names"):
        plots.map_png(tmp_path / "m.png", coords, names, highlight=["nope"])
    with pytest.raises(LmmapError, match="groups has 2 values"):
        plots.map_png(tmp_path / "m.png", coords, names, groups=["a", "b"])
    with pytest.raises(LmmapError, match="ellipses must be"):
        plots.map_png(tmp_path / "m.png", coords, names, ellipses=(coords, np.eye(2)))
    with pytest.raises(LmmapError, match="K×2"):
        plots.map_png(tmp_path / "m.png", coords[:, :1], names)


def test_scatter_png_with_diagonal(tmp_path):
    x = np.linspace(0, 100, 30)
    path = plots.scatter_png(
        tmp_path / "s.png", x, x + 5, labels=[f"m{i}" for i in range(30)], xlabel="true", ylabel="predicted",
        diagonal=True, annotate=["m3"], figsize=(4, 4), dpi=50,
    )  # fmt: skip
    image = mpimg.imread(path)
    assert image.shape == (200, 200, 4)
    assert has_colour(image, plots.PALETTE[0])


def test_lines_png_and_bad_styles(tmp_path):
    n = np.array([10, 100, 1000])
    series = {"LS": (n, 1 / np.sqrt(n)), "κ̂_d": (n, 2 / np.sqrt(n))}
    path = plots.lines_png(
        tmp_path / "l.png", series, "d", "σ̂", "errors", logx=True, logy=True, styles={"κ̂_d": ":"},
        colors={"κ̂_d": "k"}, figsize=(5, 4), dpi=40,
    )  # fmt: skip
    assert mpimg.imread(path).shape == (160, 200, 4)
    with pytest.raises(LmmapError, match="is not one of"):
        plots.lines_png(tmp_path / "x.png", series, styles={"LS": "wavy"})
    with pytest.raises(LmmapError, match="do not exist"):
        plots.lines_png(tmp_path / "x.png", series, styles={"KL": ":"})


# ----------------------------------------------------------------- HTML


def test_map_html_escapes_every_user_string_and_loads_plotly_from_its_folder(tmp_path):
    coords, names, groups = small_map()
    names[1] = EVIL
    groups = list(groups)
    groups[0] = "<b>type</b>"
    hover = [f"nearest: {EVIL} (0.12)"] * 6
    covs = np.stack([np.eye(2)] * 6)
    path = plots.map_html(
        tmp_path / "map.html", coords, names, groups, hover=hover, highlight=[EVIL], ellipses=(coords, covs),
        title="<i>my map</i>",
    )  # fmt: skip
    text = path.read_text(encoding="utf-8")
    assert "<script>alert(1)" not in text
    assert "&lt;script&gt;alert(1)" in text
    assert '<script src="http' not in text
    # plotly.js is written once beside the page, not into it: offline, and small.
    assert 'src="plotly.min.js"' in text and "plotly.js v" not in text and len(text) < 100_000
    assert (tmp_path / "plotly.min.js").read_text(encoding="utf-8").count("plotly.js v") >= 1

    data, layout = plotly_figure(path)
    points = [t for t in data if t["mode"] == "markers+text" and t.get("name") not in ("highlighted", "search")]
    shown = {c[0] for t in points for c in t["customdata"]}
    assert shown == {plots.escape(n) for n in names}
    assert {c[1] for t in points for c in t["customdata"]} == {"&lt;b&gt;type&lt;/b&gt;", "llama", "gpt2", "unknown"}
    assert all(c[2] == "nearest: &lt;script&gt;alert(1)&lt;/script&gt; (0.12)" for t in points for c in t["customdata"])
    assert layout["title"]["text"] == "&lt;i&gt;my map&lt;/i&gt;"
    highlighted = [t for t in data if t.get("name") == "highlighted"]
    assert highlighted[0]["text"] == ["<b>" + plots.escape(EVIL) + "</b>"]
    assert sum(t["mode"] == "lines" for t in data) == 4  # one ellipse trace per group
    # The search box's data: names as JSON in a script, with nothing that could end the script element.
    assert "\\u003cscript\\u003ealert(1)" in text


def test_map_html_ellipse_lines_are_closed_outlines(tmp_path):
    coords = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    covs = np.stack([np.diag([4.0, 1.0])] * 3)
    path = plots.map_html(tmp_path / "m.html", coords, ["a", "b", "c"], ellipses=(coords, covs))
    data, _ = plotly_figure(path)
    (lines,) = [t for t in data if t["mode"] == "lines"]
    assert lines["line"]["color"] == plots.PALETTE[0]  # no groups: one colour, not the "unknown" grey
    xy = np.column_stack([plotly_array(lines["x"]), plotly_array(lines["y"])])
    pieces = np.split(xy, np.flatnonzero(np.isnan(xy[:, 0])))
    outlines = [p[~np.isnan(p[:, 0])] for p in pieces if (~np.isnan(p[:, 0])).any()]
    assert len(outlines) == 3
    for outline, centre in zip(outlines, coords):
        np.testing.assert_allclose(outline[0], outline[-1], atol=1e-9)
        np.testing.assert_allclose(np.ptp(outline, axis=0), [4.0, 2.0], atol=1e-2)  # 2·√4, 2·√1
        np.testing.assert_allclose(outline.mean(axis=0), centre, atol=0.1)


def test_scatter_html_escapes_labels_and_draws_the_diagonal(tmp_path):
    path = plots.scatter_html(
        tmp_path / "s.html", [1, 2, 3], [1, 2, 4], labels=["a", EVIL, "c"], groups=["p", "q", None],
        xlabel="true <x>", diagonal=True,
    )  # fmt: skip
    text = path.read_text(encoding="utf-8")
    assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)" in text
    data, layout = plotly_figure(path)
    (diagonal,) = [t for t in data if t["mode"] == "lines"]
    np.testing.assert_array_equal(plotly_array(diagonal["x"]), [1.0, 4.0])
    np.testing.assert_array_equal(plotly_array(diagonal["y"]), [1.0, 4.0])
    assert layout["xaxis"]["title"]["text"] == "true &lt;x&gt;"


def test_lines_html_dotted_baseline_and_log_axes(tmp_path):
    n = [10, 100, 1000]
    path = plots.lines_html(
        tmp_path / "l.html", {"LS": (n, [0.3, 0.1, 0.03]), "κ̂_d": (n, [0.5, 0.2, 0.05])}, "d", "σ̂",
        logx=True, logy=True, styles={"κ̂_d": ":"}, colors={"κ̂_d": "k"},
    )  # fmt: skip
    data, layout = plotly_figure(path)
    by_name = {t["name"]: t for t in data}
    assert by_name["κ̂_d"]["line"]["dash"] == "dot" and by_name["κ̂_d"]["line"]["color"] == "#000000"
    assert by_name["LS"]["line"]["dash"] == "solid"
    assert layout["xaxis"]["type"] == layout["yaxis"]["type"] == "log"


# ----------------------------------------------------------------- labels, lines, one plotly.js per folder


def crowded_map(k=40, seed=3):
    """k models in a few tight clusters: labels beside their points would collide."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, 2)) * 6
    coords = centres[np.arange(k) % 5] + rng.normal(size=(k, 2)) * 0.6
    names = [f"org-{i % 5}/model-{i:02d}-ft" for i in range(k)]
    return coords, names, [f"type{i % 3}" for i in range(k)]


def test_map_png_labels_every_model_and_no_two_labels_overlap():
    coords, names, groups = crowded_map()
    fig = plots.map_figure(coords, names, groups, title="t", axis_label="MDS")
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == sorted(names)
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    overlapping = [(a, b) for a in range(len(boxes)) for b in range(a) if boxes[a].overlaps(boxes[b])]
    assert overlapping == []
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("MDS 1", "MDS 2")


def test_map_png_labels_stop_above_60_models_except_highlighted():
    coords, names, groups = crowded_map(k=61)
    fig = plots.map_figure(coords, names, groups, highlight=[names[7]])
    assert [t.get_text() for t in fig.axes[0].texts] == [names[7]]
    grid = np.column_stack([np.arange(60) % 6, np.arange(60) // 6]) * 10.0  # well apart: labels settle at once
    fig = plots.map_figure(grid, names[:60], groups[:60])
    assert len(fig.axes[0].texts) == 60


def test_map_figure_draws_edges_and_circles_flagged_models():
    from matplotlib.collections import LineCollection

    coords, names, groups = small_map()
    edges = [plots.Edges("nn", [(names[0], names[1]), (names[2], names[3])]), plots.Edges("lineage", [(names[4], names[0])])]
    fig = plots.map_figure(coords, names, groups, edges=edges, flagged=[names[5]])
    lines = [c for c in fig.axes[0].collections if isinstance(c, LineCollection)]
    assert [len(c.get_segments()) for c in lines] == [2, 1]
    np.testing.assert_allclose(lines[0].get_segments()[0], coords[[0, 1]])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "nearest model by KL" in legend and "declared base_model" in legend
    assert "lineage test: parent in another lineage (1)" in legend
    with pytest.raises(LmmapError, match="not among the map's model names"):
        plots.map_figure(coords, names, edges=[plots.Edges("nn", [("nope", names[0])])])
    with pytest.raises(LmmapError, match="unknown edge kind"):
        plots.map_figure(coords, names, edges=[plots.Edges("friends", [])])


def test_map_html_labels_small_maps_searches_names_and_names_the_group_column(tmp_path):
    coords, names, groups = small_map()
    edges = [plots.Edges("nn", [(names[0], names[1])])]
    path = plots.map_html(
        tmp_path / "m.html", coords, names, groups, group_title="family", edges=edges, flagged=[names[2]],
        axis_label="MDS", title="line one\nline two",
    )  # fmt: skip
    data, layout = plotly_figure(path)
    points = [t for t in data if t.get("legendgroup")]
    assert all(t["mode"] == "markers+text" for t in points)
    assert sorted(v for t in points for v in t["text"]) == sorted(names)
    assert all(p in ("top center", "bottom center", "middle left", "middle right") for t in points for p in t["textposition"])
    assert all("family: %{customdata[1]}" in t["hovertemplate"] and "type:" not in t["hovertemplate"] for t in points)
    (nn,) = [t for t in data if t.get("name") == "nearest model by KL"]
    np.testing.assert_allclose(plotly_array(nn["x"])[:2], coords[[0, 1], 0])
    assert any(t.get("name", "").startswith("lineage test: parent in another lineage") for t in data)
    (search,) = [t for t in data if t.get("name") == "search"]
    assert plotly_array(search["x"]).size == 0
    assert 'id = "lmmap-search"' in path.read_text(encoding="utf-8")
    assert layout["xaxis"]["title"]["text"] == "MDS 1" and layout["title"]["text"] == "line one<br>line two"
    # Above 60 models the names are on hover only; without a group column the hover says "group".
    many, many_names, _ = crowded_map(k=61)
    data, _ = plotly_figure(plots.map_html(tmp_path / "big.html", many, many_names, groups=["a"] * 61))
    (big,) = [t for t in data if t.get("legendgroup")]
    assert big["mode"] == "markers" and "group: " in big["hovertemplate"]


def test_every_html_writer_shares_one_plotly_js_per_folder(tmp_path):
    coords, names, groups = small_map()
    pages = [
        plots.map_html(tmp_path / "a.html", coords, names, groups),
        plots.scatter_html(tmp_path / "b.html", [1, 2], [2, 3]),
        plots.lines_html(tmp_path / "c.html", {"s": ([1, 2], [3, 4])}),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.html", "b.html", "c.html", "plotly.min.js"]
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert '<script charset="utf-8" src="plotly.min.js"></script>' in text and len(text) < 60_000
    js = tmp_path / "plotly.min.js"
    assert js.stat().st_size > 3_000_000
    js.write_text("truncated by a crash")  # a damaged copy is replaced by the next writer
    plots.scatter_html(tmp_path / "b.html", [1, 2], [2, 3])
    assert js.stat().st_size > 3_000_000 and "plotly.js v" in js.read_text(encoding="utf-8")[:2000]
