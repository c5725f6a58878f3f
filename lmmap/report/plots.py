"""Figures: the model map (PNG and one self-contained HTML file) and small
generic scatter/line helpers for the other figures of lmmap.

Conventions, kept by every function here:

* Every string is literal text. In HTML it is passed through :func:`escape`
  before it reaches plotly, so a model called ``<script>…`` cannot inject
  markup; in PNGs ``$`` is escaped so matplotlib never parses mathtext. Write
  symbols in Unicode (``σ̂``, ``κ̂_d``), not LaTeX.
* Groups (model type, family…) are categorical; a missing value (None, NaN,
  empty) is drawn as ``"unknown"`` in grey. Categories are ordered by size, so
  the largest get the most distinct colours; past 20 categories the colours
  repeat with a different marker. No category colour is red (the ring of a
  contradicted lineage) or grey (unknown, lines); paths (trajectories, layers)
  are dark grey dashes of their own.
* PNGs are drawn on a bare :class:`matplotlib.figure.Figure` (Agg, no
  pyplot state, no display needed) at a fixed ``figsize × dpi``.
* HTML pages load plotly.js from ``plotly.min.js`` beside them: every HTML
  writer goes through :func:`_write_html`, which writes that one file per
  output folder (once, atomically), or once into the folder named by
  ``LMMAP_PLOTLY_JS_DIR`` for a whole session (:func:`plotly_js_for`). Pages
  stay small (tens of kB instead of 4.8 MB each) and still open offline from
  ``file://``; a page that cannot load its ``plotly.min.js`` shows a message
  saying so instead of a blank page.
* Maps of up to :data:`LABEL_MAX_MODELS` models name every point: in PNGs each
  label goes on the side of its dot with the fewest dots, lines and labels
  under it (then adjustText if labels still collide), in HTML each label sits
  on the side away from its nearest point, and a search box highlights a model
  by name. A far outlier is drawn at the edge of the frame that fits the rest
  (:func:`robust_frame`), with an arrow and its true position.
* Every writer creates missing parent folders, writes atomically (temporary
  file, fsync, rename) and returns the path written.
"""

from __future__ import annotations

import functools
import html
import io
import json
import math
import os
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from lmmap.exceptions import InputError

UNKNOWN = "unknown"
UNKNOWN_COLOR = "#9e9e9e"
# A model placed into a map whose metadata says nothing about it: drawn as "new", not as "unknown".
NEW_GROUP = "new (no metadata)"
NEW_COLOR = "#222222"
# tab10 and the light halves of tab20 without their reds (red is the ring of a contradicted lineage) and greys
# (grey is "unknown" and the lines), filled up with dark tab20b colours: 20 colours that stay apart.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b",
    "#e377c2", "#bcbd22", "#17becf", "#393b79", "#637939",
    "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#dbdb8d", "#9edae5", "#8c6d31", "#7b4173",
)  # fmt: skip
# matplotlib marker → plotly symbol, cycled once the colours run out.
MARKERS = (("o", "circle"), ("s", "square"), ("^", "triangle-up"), ("D", "diamond"),
           ("v", "triangle-down"), ("P", "cross"), ("X", "x"))  # fmt: skip
LINESTYLES = {  # matplotlib linestyle → plotly dash
    "-": "solid", "solid": "solid",
    "--": "dash", "dashed": "dash",
    ":": "dot", "dotted": "dot",
    "-.": "dashdot", "dashdot": "dashdot",
}  # fmt: skip
DEFAULT_DPI = 150
HIGHLIGHT_COLOR = "black"
FLAG_COLOR = "#d62728"
SEARCH_COLOR = "#e600e6"
# Up to this many models every point of a map is labelled (PNG and HTML).
LABEL_MAX_MODELS = 60
# Above this many models a map draws only the lines and rings that inform (see report.map.map_edges), thinner.
DENSE_MAP_MODELS = 40
# A model further from the map's median than this many times the 75th percentile of such distances, and
# isolated, is drawn at the frame's edge so that it does not squeeze the rest (robust_frame).
FAR_OUTLIER = 2.0
LABEL_ITERATIONS = 150  # adjustText steps per pass (a fixed count keeps the PNG reproducible)
PLOTLY_JS = "plotly.min.js"
# A folder for the one plotly.min.js that every page of a session loads (by a relative path), instead of a copy
# in each output folder.
PLOTLY_JS_DIR_ENV = "LMMAP_PLOTLY_JS_DIR"
# Lines between models: colour, width, matplotlib dash, opacity and legend text.
EDGE_STYLES = {
    "nn": ("#555555", 0.8, "-", 0.35, "nearest model by KL"),
    "lineage": ("#444444", 1.4, "-", 0.6, "declared base_model"),
    "contradiction": (FLAG_COLOR, 1.1, "--", 0.85, "nearest by KL, another lineage"),
    "placement": (HIGHLIGHT_COLOR, 1.2, "--", 0.75, "new → nearest by KL"),
    # Neutral and dashed: a path is not a category, and must not take a category's colour.
    "trajectory": ("#2b2b2b", 1.5, "-.", 0.85, "training trajectory (step order)"),
    "layers": ("#5c5c5c", 1.4, ":", 0.9, "layers of a model (logit lens, in order)"),
}  # fmt: skip


@dataclass(frozen=True)
class Edges:
    """Lines between models of a map: ``pairs`` of model names, drawn in the style of ``kind``.

    ``kind`` is one of :data:`EDGE_STYLES` (``nn``, ``lineage``,
    ``contradiction``, ``placement``, ``trajectory``); ``label`` replaces its legend text.
    """

    kind: str
    pairs: tuple
    label: str | None = None

    @property
    def style(self):
        colour, width, dash, alpha, label = EDGE_STYLES[self.kind]
        return colour, width, dash, alpha, self.label or label


# --------------------------------------------------------------------------- files


def _write(path, data: bytes | str) -> Path:
    from lmmap.data.atomic import atomic_write

    return atomic_write(_prepare(path), data)


def _save_png(fig, path: Path, dpi) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return _write(path, buf.getvalue())


# --------------------------------------------------------------------------- text


def escape(value) -> str:
    """``value`` as HTML-safe text (``&``, ``<``, ``>``, quotes escaped); None → ``""``."""
    return "" if value is None else html.escape(str(value), quote=True)


def _mpl_literal(value) -> str:
    # An unescaped pair of "$" would make matplotlib parse the text as mathtext.
    return "" if value is None else str(value).replace("$", r"\$")


def _html_lines(value) -> str:
    return "<br>".join(escape(line) for line in str(value).splitlines())


# --------------------------------------------------------------------------- groups


def group_labels(groups, n: int) -> list[str]:
    """One category string per point; missing values (None, NaN, NA, "") become ``"unknown"``."""
    if groups is None:
        return [UNKNOWN] * n
    groups = list(groups)
    if len(groups) != n:
        raise InputError(f"groups has {len(groups)} values but there are {n} points: give one group per model")
    return [UNKNOWN if _is_missing(g) else str(g) for g in groups]


def _is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # array-like values are not a single missing marker
        return False


def group_styles(labels: Sequence[str]) -> dict[str, tuple[str, int]]:
    """Colour and marker index for each category, ordered largest first, then :data:`NEW_GROUP`, ``"unknown"`` last.

    Returns ``{category: (hex colour, index into MARKERS)}`` in legend order.
    """
    counts = Counter(labels)
    known = sorted((c for c in counts if c not in (UNKNOWN, NEW_GROUP)), key=lambda c: (-counts[c], c))
    styles = {c: (PALETTE[i % len(PALETTE)], (i // len(PALETTE)) % len(MARKERS)) for i, c in enumerate(known)}
    if NEW_GROUP in counts:
        styles[NEW_GROUP] = (NEW_COLOR, 0)
    if UNKNOWN in counts:
        styles[UNKNOWN] = (UNKNOWN_COLOR, 0)
    return styles


def _point_styles(groups, n: int) -> tuple[list[str], dict[str, tuple[str, int]]]:
    # Without groups every point is "unknown"; draw it in the first colour, not grey.
    labels = group_labels(groups, n)
    if groups is None:
        return labels, {UNKNOWN: (PALETTE[0], 0)}
    return labels, group_styles(labels)


# --------------------------------------------------------------------------- ellipses


def ellipse_parameters(cov, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Width, height and angle (degrees) of the standard deviational ellipse of ``Σ``.

    With ``Σ = V diag(λ₁, λ₂) Vᵀ`` (λ₁ ≥ λ₂), the semi-axes are
    ``scale·√λ₁`` along ``v₁`` and ``scale·√λ₂`` along ``v₂`` (Yuill, 1971).
    Returned as matplotlib's :class:`~matplotlib.patches.Ellipse` wants them:
    full ``width = 2·scale·√λ₁``, ``height = 2·scale·√λ₂`` and the angle of
    ``v₁`` from the x axis in [0, 180). ``cov`` is 2×2 or (K, 2, 2); the
    results have shape () or (K,).
    """
    if not np.isfinite(scale) or scale <= 0:
        raise InputError(f"the ellipse scale must be a positive number, got {scale!r}", params=("scale",))
    # Imported here: the stability maths loads scipy, which a plot without ellipses never needs.
    from lmmap.maths.stability import ellipse_axes

    major, minor, angle = ellipse_axes(cov)
    return 2 * (scale * major), 2 * (scale * minor), angle


def ellipse_outline(center, cov, scale: float = 1.0, n_points: int = 64) -> np.ndarray:
    """(n_points + 1)×2 closed outline of the ellipse of :func:`ellipse_parameters` around ``center``."""
    width, height, angle = ellipse_parameters(cov, scale)
    t = np.linspace(0.0, 2 * np.pi, n_points + 1)
    a = np.radians(angle)
    rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    unit = np.column_stack([width / 2 * np.cos(t), height / 2 * np.sin(t)])
    return np.asarray(center, dtype=np.float64) + unit @ rotation.T


def _check_ellipses(ellipses, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    if ellipses is None:
        return None
    try:
        centres, covs = ellipses
    except (TypeError, ValueError):
        raise InputError("ellipses must be a pair (K×2 centres, K×2×2 covariances)") from None
    centres = np.asarray(centres, dtype=np.float64)
    covs = np.asarray(covs, dtype=np.float64)
    if centres.shape != (n, 2) or covs.shape != (n, 2, 2):
        raise InputError(
            f"ellipses must be (K×2 centres, K×2×2 covariances) with K = {n}, "
            f"got shapes {centres.shape} and {covs.shape}"
        )
    return centres, covs


# --------------------------------------------------------------------------- checks


def _check_coords(coords) -> np.ndarray:
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] == 0:
        raise InputError(f"coords must be a K×2 array of map positions, got shape {coords.shape}")
    if not np.all(np.isfinite(coords)):
        raise InputError("coords hold NaN or inf: recompute the embedding")
    return coords


def _check_names(names, n: int, what: str = "names") -> list[str]:
    names = [str(v) for v in names]
    if len(names) != n:
        raise InputError(f"{what} has {len(names)} entries but there are {n} points: give one per point")
    return names


def _highlight_mask(highlight, names: Sequence[str], what: str = "highlight") -> np.ndarray:
    mask = np.zeros(len(names), dtype=bool)
    if highlight is None:
        return mask
    if isinstance(highlight, str):
        highlight = [highlight]
    index = {name: i for i, name in enumerate(names)}
    missing = [h for h in highlight if str(h) not in index]
    if missing:
        raise InputError(f"cannot {what} {missing[:5]}: not among the map's model names")
    mask[[index[str(h)] for h in highlight]] = True
    return mask


def _check_edges(edges, names: Sequence[str]) -> list[tuple[Edges, np.ndarray]]:
    """Each edge set with its pairs as a P×2 array of point indices (self-pairs dropped)."""
    if edges is None:
        return []
    if isinstance(edges, Edges):
        edges = [edges]
    index = {name: i for i, name in enumerate(names)}
    out = []
    for e in edges:
        if not isinstance(e, Edges):
            raise InputError("edges must be a list of plots.Edges(kind, pairs)")
        if e.kind not in EDGE_STYLES:
            raise InputError(f"unknown edge kind {e.kind!r}: use one of {', '.join(EDGE_STYLES)}")
        pairs = []
        for pair in e.pairs:
            try:
                a, b = (str(v) for v in pair)
            except (TypeError, ValueError):
                raise InputError(f"an edge must be a pair of model names, got {pair!r}") from None
            unknown = [v for v in (a, b) if v not in index]
            if unknown:
                raise InputError(f"an edge names {unknown[0]!r}, which is not among the map's model names")
            if a != b:
                pairs.append((index[a], index[b]))
        out.append((e, np.array(pairs, dtype=np.int64).reshape(-1, 2)))
    return out


def _resolve_label(label, n: int) -> bool:
    if isinstance(label, str):
        if label != "auto":
            raise InputError(f"label must be True, False or 'auto', got {label!r}")
        return n <= LABEL_MAX_MODELS
    return bool(label)


def _axis_titles(axis_label) -> tuple[str, str]:
    if not axis_label:
        return "", ""
    if isinstance(axis_label, str):
        return f"{axis_label} 1", f"{axis_label} 2"
    x, y = axis_label
    return str(x), str(y)


def _check_xy(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise InputError(f"x and y must have the same length, got {x.size} and {y.size}")
    return x, y


def _prepare(path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------- matplotlib


def _new_figure(figsize, dpi):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Constrained layout makes room for a legend placed "outside" without
    # changing the figure's pixel size.
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)  # a renderer to measure labels with (adjustText), still no pyplot
    return fig, fig.add_subplot()


def _marker_size(n: int) -> float:
    # Points shrink as the map fills up: ~40 pt² for a few models, ~6 for 1,000+.
    return float(np.clip(3000.0 / max(n, 1), 6.0, 40.0))


def _legend_columns(n_categories: int) -> int:
    return max(1, math.ceil(n_categories / 28))


def _add_group_legend(fig, styles, counts, title, extra_handles=()):
    from matplotlib.lines import Line2D

    # Proxy handles of one fixed size: scatter sizes shrink with the number of
    # points, and legend entries copied from them would be dots or blobs.
    handles = [
        Line2D([], [], ls="", marker=MARKERS[m][0], color=c, ms=6, label=f"{_mpl_literal(g)} ({counts[g]})")
        for g, (c, m) in styles.items()
    ]
    handles += list(extra_handles)
    fig.legend(
        handles=handles,
        loc="outside right upper",
        title=_mpl_literal(title) if title else None,
        ncols=_legend_columns(len(handles)),
        fontsize="small" if len(handles) <= 28 else "x-small",
        frameon=False,
    )


def _default_figsize(n_legend_entries: int, width: float, height: float) -> tuple[float, float]:
    # Each legend column takes about 2.4 inches beside the axes.
    return (width + 2.4 * _legend_columns(n_legend_entries) if n_legend_entries else width, height)


def _map_inputs(coords, names, groups, highlight, flagged, ellipses, edges, label):
    """The checked inputs of a map picture, shared by the PNG and the HTML so both refuse the same things."""
    coords = _check_coords(coords)
    n = coords.shape[0]
    names = _check_names(names, n)
    labels, styles = _point_styles(groups, n)
    mask = _highlight_mask(highlight, names)
    flag = _highlight_mask(flagged, names, "flag")
    return (coords, n, names, labels, styles, mask, flag, _check_ellipses(ellipses, n), _check_edges(edges, names),
            _resolve_label(label, n))


# --------------------------------------------------------------------------- the frame of a map


@dataclass(frozen=True)
class Frame:
    """What a map picture shows: the data rectangle ``lo``–``hi`` and the models drawn at its edge.

    ``outliers``: K booleans, the models far outside the bulk of the map
    (:func:`robust_frame`); ``shown``: K×2 positions to draw, the outliers
    moved along the ray from the frame's centre to the frame's edge.
    """

    lo: np.ndarray
    hi: np.ndarray
    outliers: np.ndarray
    shown: np.ndarray

    @property
    def span(self) -> np.ndarray:
        return self.hi - self.lo


def robust_frame(coords, far: float = FAR_OUTLIER) -> Frame:
    """The frame that shows the bulk of a map, with far outliers moved to its edge.

    A model is an outlier when it lies more than ``far`` times the 75th
    percentile of the distances from the median position away from that
    median, no other model is near it (within that percentile), at most one
    model in ten is one, and leaving them out shrinks the frame to 80% or less.
    One far model would otherwise squeeze all the others into a corner of the
    picture. Maps of fewer than 8 models are shown whole.
    """
    coords = np.asarray(coords, dtype=np.float64)
    n = coords.shape[0]
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    whole = Frame(lo, hi, np.zeros(n, dtype=bool), coords.copy())
    if n < 8:
        return whole
    centre = np.median(coords, axis=0)
    r = np.hypot(*(coords - centre).T)
    scale = float(np.quantile(r, 0.75))
    candidates = r > far * scale
    if not scale > 0 or not candidates.any() or candidates.sum() > max(1, n // 10):
        return whole
    rest = coords[~candidates]
    gap = np.sqrt(((coords[candidates, None, :] - rest[None, :, :]) ** 2).sum(axis=-1)).min(axis=1)
    outliers = np.zeros(n, dtype=bool)
    outliers[np.flatnonzero(candidates)[gap > scale]] = True
    if not outliers.any():
        return whole
    ilo, ihi = coords[~outliers].min(axis=0), coords[~outliers].max(axis=0)
    if (ihi - ilo).max() > 0.8 * (hi - lo).max():
        return whole
    # Each outlier sits on the frame's edge (inset by 3% of its size) where the ray from the centre to it leaves.
    inset = 0.03 * max((ihi - ilo).max(), 1e-12)
    elo, ehi, mid = ilo - inset, ihi + inset, (ilo + ihi) / 2
    shown = coords.copy()
    for i in np.flatnonzero(outliers):
        d = coords[i] - mid
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.min(np.where(d > 0, (ehi - mid) / d, np.where(d < 0, (elo - mid) / d, np.inf)))
        shown[i] = mid + min(float(t), 1.0) * d
    return Frame(elo, ehi, outliers, shown)


def _map_point_size(n: int, ellipses: bool) -> float:
    # With ellipses the dots are drawn smaller, so that more ellipses show around them.
    return _marker_size(n) * (0.45 if ellipses else 1.0)


# The nominal plotting width of a map (inches): 8-inch figure less the axis labels and ticks.
_MAP_AXES_INCHES = 7.0


def visible_ellipse_scale(coords, covs, n: int | None = None, ratio: float = 2.0, quantile: float = 0.25) -> float:
    """A round factor (1, 2, 5, 10, 20, …) that makes most of a map's ellipses larger than their dots.

    The ``quantile`` (a quarter) of the major semi-axes, times the factor, is at
    least ``ratio`` times the radius of the dot that :func:`map_figure` draws on
    a frame of this map (:func:`robust_frame`, about 7 inches wide): three
    ellipses in four stand clear of their dots. 1 when they do as they are. A
    picture drawn with a factor other than 1 must say so.
    """
    coords = _check_coords(coords)
    n = coords.shape[0] if n is None else int(n)
    from lmmap.maths.stability import ellipse_axes

    major = ellipse_axes(np.asarray(covs, dtype=np.float64))[0]
    typical = float(np.quantile(major, quantile)) if np.size(major) else 0.0
    span = float(robust_frame(coords).span.max())
    if not typical > 0 or not span > 0:
        return 1.0
    dot_radius = math.sqrt(_map_point_size(n, True)) / 2 * span / (_MAP_AXES_INCHES * 72)
    need = ratio * dot_radius / typical
    if need <= 1:
        return 1.0
    decade = 10 ** math.floor(math.log10(need))
    return float(next(m * decade for m in (1, 2, 5, 10) if m * decade >= need))


def _map_figsize(frame: Frame, n_legend: int, title) -> tuple[float, float]:
    # The figure's height follows the frame's shape: equal axes in a square box would leave a wide map's top and
    # bottom empty.
    width = _default_figsize(n_legend, 8.0, 0)[0]
    span = frame.span
    size = span.max() if span.max() > 0 else 1.0
    aspect = (span[1] + 0.12 * size) / (span[0] + 0.2 * size)  # with the padding map_figure adds
    lines = 0 if not title else len(str(title).splitlines())
    rows = min(n_legend, 28)
    height = max(float(np.clip(_MAP_AXES_INCHES * aspect, 4.2, 8.0)) + 0.7 + 0.2 * lines, 0.22 * rows + 0.8)
    return width, height


def map_png(
    path,
    coords,
    names,
    groups=None,
    highlight=None,
    ellipses=None,
    title=None,
    label="auto",
    *,
    dpi=DEFAULT_DPI,
    **kwargs,
) -> Path:
    """Write the model map as a PNG scatter plot; see :func:`map_figure` for the parameters."""
    fig = map_figure(coords, names, groups, highlight, ellipses, title, label, dpi=dpi, **kwargs)
    return _save_png(fig, Path(path), dpi)


def map_figure(
    coords,
    names,
    groups=None,
    highlight=None,
    ellipses=None,
    title=None,
    label="auto",
    *,
    group_title=None,
    highlight_label="highlighted",
    ellipse_scale=1.0,
    edges=None,
    flagged=None,
    flagged_label="nearest model in another lineage",
    axis_label=None,
    frame="robust",
    figsize=None,
    dpi=DEFAULT_DPI,
):
    """The model map as a :class:`matplotlib.figure.Figure` (what :func:`map_png` saves).

    Parameters
    ----------
    coords : (K, 2) map positions (e.g. from :func:`lmmap.maths.embedding.embed`).
    names : K model names.
    groups : K category values (model type, family…) colouring the points; None → one colour.
    highlight : model names (e.g. newly added) drawn larger, black-edged and labelled in bold.
    ellipses : ``(centres K×2, covariances K×2×2)``: a standard deviational
        ellipse per model, semi-axes ``ellipse_scale·√λ`` (see :func:`ellipse_parameters`;
        :func:`visible_ellipse_scale` picks a factor that makes them visible, which the title must state).
        The dots are drawn smaller then.
    title : figure title (newlines allowed).
    label : write every model's name beside its point: True, False or
        ``"auto"`` (K ≤ :data:`LABEL_MAX_MODELS`). Each label is put on the side of
        its point with the fewest points and lines under it, then pushed apart
        with adjustText if labels still collide; a thin line joins a moved label to its point.
    group_title : legend title (e.g. ``"model_type"``).
    edges : :class:`Edges` (or a list of them): lines between models, drawn under the points.
        Above :data:`DENSE_MAP_MODELS` models they are drawn thinner and lighter.
    flagged : model names circled in red (e.g. a nearest neighbour that contradicts the declared lineage).
    axis_label : ``"MDS"`` gives axis titles "MDS 1" and "MDS 2"; or a pair of titles.
    frame : ``"robust"`` (default): far outliers (:func:`robust_frame`) are drawn
        at the frame's edge with an arrow pointing their way, and labelled with
        their name and true position; ``"full"``: every model where it is.
    figsize, dpi : inches and dots per inch; the PNG is ``figsize × dpi`` pixels.
        Default: 8 inches wide plus the legend, as tall as the map's shape needs.
    """
    from matplotlib.collections import LineCollection, PatchCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Ellipse

    coords, n, names, labels, styles, mask, flag, ell, edge_sets, label = _map_inputs(
        coords, names, groups, highlight, flagged, ellipses, edges, label)
    if frame not in ("robust", "full"):
        raise InputError(f"frame must be 'robust' or 'full', got {frame!r}", params=("frame",))
    fr = robust_frame(coords) if frame == "robust" else robust_frame(coords, far=np.inf)
    shown, far = fr.shown, fr.outliers
    dense = n > DENSE_MAP_MODELS

    extra = []
    for e, pairs in edge_sets:
        if len(pairs):
            colour, width, dash, alpha, text = _edge_style(e, dense)
            extra.append(Line2D([], [], color=colour, lw=width, ls=dash, alpha=max(alpha, 0.6), label=_mpl_literal(text)))
    n_legend = ((len(styles) if groups is not None else 0) + int(mask.any()) + int(flag.any()) + int(far.any())
                + len(extra))
    fig, ax = _new_figure(figsize or _map_figsize(fr, n_legend, title), dpi)
    fig.set_layout_engine("compressed")
    size = _map_point_size(n, ell is not None)
    label_array = np.asarray(labels, dtype=object)
    counts = Counter(labels)
    segments = []
    for e, pairs in edge_sets:
        if len(pairs):
            colour, width, dash, alpha, _ = _edge_style(e, dense)
            segments.append(shown[pairs])
            ax.add_collection(
                LineCollection(shown[pairs], colors=colour, linewidths=width, linestyles=dash, alpha=alpha, zorder=1)
            )
    if ell is not None:
        _, covs = ell
        width, height, angle = ellipse_parameters(covs, ellipse_scale)
        colours = [styles[g][0] for g in labels]
        # Centred on the dots as drawn: an outlier's ellipse moves to the frame's edge with it.
        patches = [Ellipse(c, w, h, angle=a) for c, w, h, a in zip(shown, width, height, angle)]
        # Their outlines are lines that labels keep off, like the edges'.
        for c, cov in zip(shown, covs):
            outline = ellipse_outline(c, cov, ellipse_scale, n_points=24)
            segments.append(np.stack([outline[:-1], outline[1:]], axis=1))
        ax.add_collection(
            PatchCollection(patches, facecolors="none", edgecolors=colours, linewidths=0.8, alpha=0.7, zorder=1)
        )
    for category, (colour, marker) in styles.items():
        sel = label_array == category
        ax.scatter(
            shown[sel, 0],
            shown[sel, 1],
            s=size,
            c=colour,
            marker=MARKERS[marker][0],
            linewidths=0,
            alpha=0.85,
            zorder=2,
        )
    if mask.any():
        ax.scatter(
            shown[mask, 0],
            shown[mask, 1],
            s=max(4 * size, 60.0),
            c=[styles[g][0] for g in label_array[mask]],
            edgecolors=HIGHLIGHT_COLOR,
            linewidths=1.5,
            zorder=4,
        )
        extra.append(
            Line2D([], [], ls="", marker="o", mfc="white", mec=HIGHLIGHT_COLOR, mew=1.5, ms=8,
                   label=_mpl_literal(highlight_label))
        )  # fmt: skip
    if flag.any():
        ring = (3.5 * size, 1.0) if dense else (max(5 * size, 90.0), 1.6)
        ax.scatter(
            shown[flag, 0], shown[flag, 1], s=ring[0], facecolors="none", edgecolors=FLAG_COLOR,
            linewidths=ring[1], zorder=3,
        )  # fmt: skip
        extra.append(
            Line2D([], [], ls="", marker="o", mfc="none", mec=FLAG_COLOR, mew=ring[1], ms=9,
                   label=_mpl_literal(f"{flagged_label} ({int(flag.sum())})"))
        )  # fmt: skip
    # A map of one point (or of identical ones) still gets a frame of its own size.
    pad = np.array([0.1, 0.06]) * (fr.span.max() if fr.span.max() > 0 else 10.0)
    ax.set_xlim(fr.lo[0] - pad[0], fr.hi[0] + pad[0])
    ax.set_ylim(fr.lo[1] - pad[1], fr.hi[1] + pad[1])
    if far.any():
        _mark_outliers(ax, coords, shown, far, fr)
        extra.append(
            Line2D([], [], ls="", marker=">", color="0.15", ms=7,
                   label=f"far off the map ({int(far.sum())}): at its edge")
        )  # fmt: skip
    # The frame is fixed and the figure shaped to it: the box, not the limits, adapts to equal axes ("compressed"
    # is the layout made for such axes; "constrained" can push the axis labels off the figure).
    ax.set_aspect("equal", adjustable="box")
    ax.tick_params(labelsize="small")
    xtitle, ytitle = _axis_titles(axis_label)
    ax.set_xlabel(_mpl_literal(xtitle))
    ax.set_ylabel(_mpl_literal(ytitle))
    if title:
        ax.set_title(_mpl_literal(title), fontsize=10)
    if groups is not None or extra:
        _add_group_legend(fig, styles if groups is not None else {}, counts, group_title, extra)
    to_label = (np.ones(n, dtype=bool) if label else mask) | far
    if to_label.any():
        texts = [f"{a} (at {x:.3g}, {y:.3g})" if o else a for a, (x, y), o in zip(names, coords, far)]
        segments = np.concatenate(segments) if segments else np.empty((0, 2, 2))
        _place_labels(fig, ax, shown, texts, to_label, mask, radius_pt=math.sqrt(size) / 2, segments=segments)
    return fig


def _edge_style(e: Edges, dense: bool):
    colour, width, dash, alpha, text = e.style
    if dense and e.kind in ("lineage", "nn", "contradiction"):
        # Many lines cross on a crowded map: thinner and lighter, so that the points stay readable.
        return colour, width * 0.6, dash, alpha * 0.6, text
    return colour, width, dash, alpha, text


def _mark_outliers(ax, coords, shown, far, fr: Frame) -> None:
    """An arrow from each outlier's dot on the frame's edge, pointing where the model really is."""
    mid = (fr.lo + fr.hi) / 2
    step = 0.045 * float(fr.span.max())
    for i in np.flatnonzero(far):
        d = coords[i] - mid
        d = d / (np.hypot(*d) or 1.0)
        arrow = ax.annotate("", xy=tuple(shown[i] + step * d), xytext=tuple(shown[i]), annotation_clip=False,
                            arrowprops=dict(arrowstyle="-|>", color="0.15", lw=1.2, shrinkA=3, shrinkB=0), zorder=4)
        arrow.set_in_layout(False)


# Where a label may sit around its point, in order of preference: right, above, left, below, then the diagonals.
_LABEL_SIDES = ((1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, 1), (-1, -1), (1, -1))


def _segment_samples(segments_px: np.ndarray, step: float = 6.0, cap: int = 20_000) -> np.ndarray:
    """Points every ``step`` pixels along each line (ends excluded: those are the models' own dots)."""
    if not len(segments_px):
        return np.empty((0, 2))
    a, b = segments_px[:, 0], segments_px[:, 1]
    length = np.hypot(*(b - a).T)
    counts = np.clip((length / step).astype(int), 0, 200)
    if counts.sum() > cap:
        counts = np.maximum((counts * cap / counts.sum()).astype(int), 0)
    # At least the middle of each line, however short (an ellipse's outline is many short ones).
    pieces = [a[k] + (b[k] - a[k]) * (np.arange(1, c) / c)[:, None] for k, c in enumerate(np.maximum(counts, 2))]
    return np.vstack(pieces) if pieces else np.empty((0, 2))


def _inside(points: np.ndarray, box) -> int:
    x0, y0, x1, y1 = box
    return int(((points[:, 0] > x0) & (points[:, 0] < x1) & (points[:, 1] > y0) & (points[:, 1] < y1)).sum())


def _place_labels(fig, ax, coords, names, to_label, bold, *, radius_pt=3.0, segments=None) -> None:
    """Names beside their points, never on them: each on the side with the fewest dots, lines and other labels
    under it, then moved apart (adjustText) if labels still collide."""
    small = 7 if to_label.sum() <= 30 else 6
    idx = np.flatnonzero(to_label)

    def style(i):
        return dict(
            fontsize=8 if bold[i] else small,
            fontweight="bold" if bold[i] else "normal",
            zorder=5,
            bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.7) if bold[i] else None,
        )

    texts = [ax.text(coords[i, 0], coords[i, 1], _mpl_literal(names[i]), **style(i)) for i in idx]
    for t in texts:
        t.set_in_layout(False)  # placed inside the axes below: where they start must not shape the layout
    # Lay the figure out first (legend, equal aspect): label sizes are measured in the final axes, and
    # freezing the layout keeps them there when the figure is saved.
    fig.canvas.draw()
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    points = to_px(coords)
    gap = (radius_pt + 2.5) * fig.dpi / 72
    segs = np.empty((0, 2, 2)) if segments is None or not len(segments) else np.asarray(segments, dtype=np.float64)
    lines = _segment_samples(to_px(segs.reshape(-1, 2)).reshape(-1, 2, 2)) if len(segs) else np.empty((0, 2))
    frame = ax.get_window_extent(renderer)
    placed: list[tuple[float, float, float, float]] = []
    for t, i in zip(texts, idx):
        ext = t.get_window_extent(renderer)
        w, h = ext.width + 2, ext.height + 2
        best = None
        for k, (dx, dy) in enumerate(_LABEL_SIDES):
            norm = math.hypot(dx, dy)
            anchor = points[i] + gap * np.array([dx, dy]) / norm
            x0 = anchor[0] if dx > 0 else anchor[0] - w if dx < 0 else anchor[0] - w / 2
            y0 = anchor[1] if dy > 0 else anchor[1] - h if dy < 0 else anchor[1] - h / 2
            box = (x0, y0, x0 + w, y0 + h)
            clash = sum(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed)
            outside = box[0] < frame.x0 or box[2] > frame.x1 or box[1] < frame.y0 or box[3] > frame.y1
            score = 4 * _inside(points, box) + _inside(lines, box) + 6 * clash + 50 * outside + 0.01 * k
            if best is None or score < best[0]:
                best = (score, anchor, dx, dy, box)
        _, anchor, dx, dy, box = best
        t.set_position(tuple(ax.transData.inverted().transform(anchor)))
        t.set_horizontalalignment("left" if dx > 0 else "right" if dx < 0 else "center")
        t.set_verticalalignment("bottom" if dy > 0 else "top" if dy < 0 else "center")
        placed.append(box)
    if len(idx) >= 2 and _overlapping_labels(fig, texts):
        try:
            from adjustText import adjust_text
        except ImportError:  # pragma: no cover - a dependency; without it the sides chosen above stay
            adjust_text = None
        if adjust_text is not None:
            # Iteration limits, not adjustText's default time limit: the same map gives the same picture on a busy
            # machine. The labels start beside their points, so they are not pushed away from where they start.
            common = dict(ax=ax, ensure_inside_axes=True, expand_axes=False, avoid_self=False,
                          target_x=coords[idx, 0], target_y=coords[idx, 1])
            adjust_text(texts, x=coords[:, 0], y=coords[:, 1], expand=(1.1, 1.3), iter_lim=LABEL_ITERATIONS, **common)
            if _overlapping_labels(fig, texts):
                adjust_text(texts, x=[], y=[], expand=(1.05, 1.2), iter_lim=2 * LABEL_ITERATIONS, **common)
    # A thin line from each label that moved away from its point back to the point.
    for t, i in zip(texts, idx):
        box = t.get_window_extent(renderer)
        px, py = points[i]
        if _distance_to_box(box, px, py) > gap + 5:
            tx, ty = ax.transData.inverted().transform(_nearest_on_box(box, px, py))
            ax.plot([tx, coords[i, 0]], [ty, coords[i, 1]], color="0.45", lw=0.5, alpha=0.8, zorder=4)


def _overlapping_labels(fig, texts) -> bool:
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts]
    return any(boxes[a].overlaps(boxes[b]) for a in range(len(boxes)) for b in range(a))


def _nearest_on_box(box, px, py):
    return min(max(px, box.x0), box.x1), min(max(py, box.y0), box.y1)


def _distance_to_box(box, px, py) -> float:
    qx, qy = _nearest_on_box(box, px, py)
    return math.hypot(px - qx, py - qy)


def scatter_png(
    path,
    x,
    y,
    labels=None,
    groups=None,
    xlabel="",
    ylabel="",
    title=None,
    diagonal=False,
    *,
    annotate=None,
    group_title=None,
    figsize=None,
    dpi=DEFAULT_DPI,
) -> Path:
    """Write a generic scatter plot (e.g. predicted vs true scores) as a PNG.

    ``labels`` name the points (needed for ``annotate``); ``groups`` colour
    them; ``diagonal=True`` draws ``y = x`` across the data range;
    ``annotate`` lists labels to write beside their points (e.g. the
    largest residuals). Default figsize: 6.4×5.6 inches plus room for the legend.
    """
    x, y = _check_xy(x, y)
    n = x.size
    names = _check_names(labels, n, "labels") if labels is not None else [str(i) for i in range(n)]
    group, styles = _point_styles(groups, n)
    path = _prepare(path)

    fig, ax = _new_figure(figsize or _default_figsize(len(styles) if groups is not None else 0, 6.4, 5.6), dpi)
    group_array = np.asarray(group, dtype=object)
    counts = Counter(group)
    for category, (colour, marker) in styles.items():
        sel = group_array == category
        ax.scatter(
            x[sel], y[sel], s=_marker_size(n) * 1.5, c=colour, marker=MARKERS[marker][0], linewidths=0, alpha=0.8
        )
    if diagonal:
        lo, hi = _finite_range(np.concatenate([x, y]))
        ax.plot([lo, hi], [lo, hi], color="0.4", lw=1, ls="--", zorder=0)
    if annotate is not None:
        for i in np.flatnonzero(_highlight_mask(annotate, names)):
            ax.annotate(_mpl_literal(names[i]), (x[i], y[i]), xytext=(4, 4), textcoords="offset points", fontsize=7)
    ax.set_xlabel(_mpl_literal(xlabel))
    ax.set_ylabel(_mpl_literal(ylabel))
    if title:
        ax.set_title(_mpl_literal(title))
    ax.grid(True, lw=0.4, alpha=0.5)
    if groups is not None:
        _add_group_legend(fig, styles, counts, group_title)
    return _save_png(fig, path, dpi)


def lines_png(
    path,
    series: Mapping[str, tuple],
    xlabel="",
    ylabel="",
    title=None,
    logx=False,
    logy=False,
    styles: Mapping[str, str] | None = None,
    *,
    colors: Mapping[str, str] | None = None,
    figsize=(6.4, 4.8),
    dpi=DEFAULT_DPI,
    integer_x: bool = False,
) -> Path:
    """Write line plots of named series ``{name: (x, y)}`` as a PNG.

    ``styles`` maps a series name to a line style (``"-"``, ``"--"``, ``":"``,
    ``"-."`` or their names); ``":"`` is the dotted baseline style. Solid and
    dashed series get point markers. ``colors`` optionally fixes a series'
    colour (any matplotlib/CSS colour). NaN in ``y`` leaves a gap.
    ``integer_x``: ticks at whole numbers only (layers, counts).
    """
    items = _check_series(series, styles, colors)
    path = _prepare(path)
    fig, ax = _new_figure(figsize, dpi)
    for i, (name, x, y, style, colour) in enumerate(items):
        ax.plot(
            x,
            y,
            ls=style,
            lw=1.5,
            marker="o" if LINESTYLES[style] in ("solid", "dash") else None,
            ms=3,
            color=colour or PALETTE[i % len(PALETTE)],
            label=_mpl_literal(name),
        )
    if logx:
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis, *_positive_range(np.concatenate([x for _, x, *_ in items])))
    if logy:
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis, *_positive_range(np.concatenate([y for _, _, y, *_ in items])))
    if integer_x and not logx:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(_mpl_literal(xlabel))
    ax.set_ylabel(_mpl_literal(ylabel))
    if title:
        ax.set_title(_mpl_literal(title))
    ax.grid(True, which="major", lw=0.4, alpha=0.5)
    ax.legend(fontsize="small", frameon=False)
    return _save_png(fig, path, dpi)


def _positive_range(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values) & (values > 0)]
    return (float(values.min()), float(values.max())) if values.size else (math.nan, math.nan)


def _plain_number(value: float) -> str:
    text = f"{value:.6g}"
    return text if "e" not in text else f"{value:g}"


def plain_log_ticks(axis, lo: float, hi: float) -> None:
    """Plain decimal tick labels (0.05, 0.1, 0.2) on a log ``axis`` whose data run from ``lo`` to ``hi``.

    matplotlib writes ticks inside a decade as ``3×10⁻¹``, which a reader has to
    decode. Over less than one decade the ticks are 1–9 × 10^k, over less than
    two 1, 2 and 5 × 10^k, over more the powers of ten only. Ranges below 10⁻⁴ or
    from 10⁶ on keep matplotlib's powers of ten.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if not (np.isfinite(lo) and np.isfinite(hi) and lo > 0 and hi >= lo) or lo < 1e-4 or hi >= 1e6:
        return
    decades = math.log10(hi / lo)
    plain = FuncFormatter(lambda v, _pos: _plain_number(v) if v > 0 else "")
    axis.set_major_formatter(plain)
    if decades < 1:
        subs = (2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)
    elif decades < 2:
        subs = (2.0, 5.0)
    else:
        axis.set_minor_formatter(NullFormatter())
        return
    axis.set_minor_locator(LogLocator(base=10.0, subs=subs))
    axis.set_minor_formatter(plain)


def _finite_range(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    return float(finite.min()), float(finite.max())


def _check_series(series, styles, colors) -> list[tuple[str, np.ndarray, np.ndarray, str, str | None]]:
    if not isinstance(series, Mapping) or not series:
        raise InputError("series must be a non-empty dict {name: (x, y)}")
    styles = dict(styles or {})
    colors = dict(colors or {})
    unknown = [k for k in list(styles) + list(colors) if k not in series]
    if unknown:
        raise InputError(f"styles/colors name series that do not exist: {unknown[:5]}; series are {list(series)[:10]}")
    items = []
    for name, xy in series.items():
        try:
            x, y = xy
        except (TypeError, ValueError):
            raise InputError(f"series {name!r} must be a pair (x, y)") from None
        x, y = _check_xy(x, y)
        style = styles.get(name, "-")
        if style not in LINESTYLES:
            raise InputError(f"style {style!r} of series {name!r} is not one of {sorted(LINESTYLES)}")
        colour = colors.get(name)
        items.append((str(name), x, y, style, _css_colour(colour) if colour is not None else None))
    return items


# --------------------------------------------------------------------------- plotly


@functools.lru_cache(maxsize=1)
def _plotly_bundle() -> bytes:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")


def ensure_plotlyjs(folder) -> Path:
    """Write ``plotly.min.js`` (the bundle of the installed plotly) into ``folder`` unless it is already there."""
    target = Path(folder) / PLOTLY_JS
    bundle = _plotly_bundle()
    try:
        same = target.stat().st_size == len(bundle) and target.read_bytes() == bundle
    except OSError:
        same = False
    if not same:
        _write(target, bundle)
    return target


def plotly_js_for(folder) -> tuple[Path, str]:
    """The ``plotly.min.js`` that a page written into ``folder`` loads, and the ``src`` the page names it by.

    By default the file beside the page (``src="plotly.min.js"``). With the
    environment variable :data:`PLOTLY_JS_DIR_ENV` (``LMMAP_PLOTLY_JS_DIR``)
    naming a folder, one copy there serves every page of a session, loaded
    by a relative path (a ``file://`` URL where there is none, e.g. another
    Windows drive); pages stay offline either way.
    """
    shared = os.environ.get(PLOTLY_JS_DIR_ENV, "").strip()
    if not shared:
        return Path(folder) / PLOTLY_JS, PLOTLY_JS
    target = Path(shared).expanduser().resolve() / PLOTLY_JS
    try:
        src = urllib.parse.quote(Path(os.path.relpath(target, Path(folder).resolve())).as_posix(), safe="/")
    except ValueError:
        src = target.as_uri()
    return target, src


_NO_PLOTLY_ID = "lmmap-no-plotly"
# Shown unless the script after it finds plotly.js loaded: a page opened without its plotly.min.js (or with
# JavaScript off) says why it is blank instead of staying blank.
_NO_PLOTLY_HTML = (
    '<div id="{id}" style="font: 15px/1.5 sans-serif; margin: 2em; padding: 1em 1.5em; max-width: 48em; '
    'border: 2px solid #b00020; background: #fff5f5; color: #222;">'
    "<b>This interactive figure could not be drawn.</b> It needs JavaScript and plotly.js, which it loads from "
    "<code>{src}</code> (relative to this page), and that file did not load. Keep the page beside that file: "
    "copy the whole output folder{shared}, not the page alone. The PNG of the same name shows the figure."
    "</div>\n"
    '<script type="text/javascript">(function () {{ var m = document.getElementById("{id}"); '
    'if (m && window.Plotly) {{ m.style.display = "none"; }} }})();</script>\n'
)


def _write_html(fig, path: Path, post_script: str | None = None) -> Path:
    # The one writer of every HTML page: plotly.js is loaded from plotly.min.js in the same folder (written once per
    # folder) or in the session's shared folder (plotly_js_for), so a run's pages stay small and open offline.
    path = _prepare(path)
    js, src = plotly_js_for(path.parent)
    page = fig.to_html(
        include_plotlyjs="directory" if src == PLOTLY_JS else src,
        full_html=True,
        config={"displaylogo": False, "responsive": True},
        post_script=post_script,
        div_id="lmmap-plot",
        default_height="88vh",
    )
    notice = _NO_PLOTLY_HTML.format(id=_NO_PLOTLY_ID, src=escape(urllib.parse.unquote(src)),
                                    shared=" and the shared plotly.min.js" if src != PLOTLY_JS else "")
    # Right after plotly.js's own script tag: parsed only once that script has loaded or failed, so the notice
    # never flashes while the page loads.
    tag = f'src="{src}"></script>'
    at = page.find(tag)
    at = at + len(tag) if at >= 0 else page.find("<body>") + len("<body>")
    page = page[:at] + "\n" + notice + page[at:]
    ensure_plotlyjs(js.parent)
    return _write(path, page)


def _plotly_layout(title, xlabel="", ylabel="", legend_title=None, equal_aspect=False) -> dict:
    layout = dict(
        template="plotly_white",
        title=dict(text=escape(title)) if title else None,
        xaxis=dict(title=dict(text=escape(xlabel))),
        yaxis=dict(title=dict(text=escape(ylabel))),
        legend=dict(title=dict(text=escape(legend_title)) if legend_title else None, itemsizing="constant"),
        hoverlabel=dict(align="left"),
    )
    if equal_aspect:
        layout["yaxis"]["scaleanchor"] = "x"
        layout["yaxis"]["scaleratio"] = 1
    return layout


def map_html(
    path,
    coords,
    names,
    groups=None,
    hover=None,
    highlight=None,
    ellipses=None,
    title=None,
    *,
    label="auto",
    group_title=None,
    highlight_label="highlighted",
    ellipse_scale=1.0,
    edges=None,
    flagged=None,
    flagged_label="nearest model in another lineage",
    axis_label=None,
    search=True,
) -> Path:
    """Write the interactive model map as an HTML page (plotly.js from ``plotly.min.js`` beside it).

    Hover shows the model name, its group (labelled ``group_title``, e.g. the
    ``--color-by`` column; default "group") and ``hover[i]`` (e.g. ``"nearest:
    a (0.12), b (0.20)"``; newlines become line breaks). With ``label`` (True,
    or "auto": K ≤ :data:`LABEL_MAX_MODELS`) every name is written beside its
    point, on the side away from its nearest point. ``search``: a box above
    the map that highlights the models whose name contains the text typed.
    Clicking a legend entry hides that group (with its ellipses) or that set of
    lines. All strings are escaped with :func:`escape`. Other parameters as
    :func:`map_figure`.
    """
    import plotly.graph_objects as go

    coords, n, names, labels, styles, mask, flag, ell, edge_sets, label = _map_inputs(
        coords, names, groups, highlight, flagged, ellipses, edges, label)
    extra = _check_names(hover, n, "hover") if hover is not None else [""] * n
    path = _prepare(path)

    label_array = np.asarray(labels, dtype=object)
    escaped = np.array([escape(a) for a in names], dtype=object)
    customdata = np.array(
        [[a, escape(g), _html_lines(h)] for a, g, h in zip(escaped, labels, extra)], dtype=object
    ).reshape(n, 3)
    hovertemplate = (
        "<b>%{customdata[0]}</b><br>" + escape(group_title or "group") + ": %{customdata[1]}<br>%{customdata[2]}<extra></extra>"
    )
    positions = _text_positions(coords, np.ones(n, dtype=bool) if label else mask)
    counts = Counter(labels)
    size = max(4.0, math.sqrt(_marker_size(n)) * 1.3)
    fig = go.Figure()
    for e, pairs in edge_sets:
        if not len(pairs):
            continue
        colour, width, dash, alpha, text = _edge_style(e, n > DENSE_MAP_MODELS)
        segments = np.concatenate([coords[pairs], np.full((len(pairs), 1, 2), np.nan)], axis=1).reshape(-1, 2)
        fig.add_trace(
            go.Scatter(
                x=segments[:, 0], y=segments[:, 1], mode="lines", name=escape(text), opacity=alpha, legendrank=2000,
                line=dict(color=colour, width=width, dash=LINESTYLES[dash]), hoverinfo="skip",
            )
        )  # fmt: skip
    for category, (colour, marker) in styles.items():
        sel = label_array == category
        fig.add_trace(
            go.Scatter(
                x=coords[sel, 0],
                y=coords[sel, 1],
                mode="markers+text" if label else "markers",
                # A highlighted model is named (in bold) by its own trace below, not twice.
                text=[("" if m else t) for t, m in zip(escaped[sel], mask[sel])] if label else None,
                textposition=list(positions[sel]) if label else None,
                textfont=dict(size=10 if n <= 30 else 9, color="#333333"),
                name=f"{escape(category)} ({counts[category]})",
                legendgroup=escape(category),
                showlegend=groups is not None,
                marker=dict(color=colour, symbol=MARKERS[marker][1], size=size, opacity=0.85),
                customdata=customdata[sel],
                hovertemplate=hovertemplate,
            )
        )
        if ell is not None:
            outline = _ellipse_polylines(ell[0][sel], ell[1][sel], ellipse_scale)
            fig.add_trace(
                go.Scatter(
                    x=outline[:, 0],
                    y=outline[:, 1],
                    mode="lines",
                    line=dict(color=colour, width=1),
                    opacity=0.5,
                    legendgroup=escape(category),
                    showlegend=False,
                    hoverinfo="skip",
                )
            )
    if flag.any():
        fig.add_trace(
            go.Scatter(
                x=coords[flag, 0], y=coords[flag, 1], mode="markers",
                name=escape(f"{flagged_label} ({int(flag.sum())})"),
                legendrank=2001,
                marker=dict(color="rgba(0,0,0,0)", size=size * 2.2, line=dict(color=FLAG_COLOR, width=2)),
                customdata=customdata[flag], hovertemplate=hovertemplate,
            )
        )  # fmt: skip
    if mask.any():
        fig.add_trace(
            go.Scatter(
                x=coords[mask, 0],
                y=coords[mask, 1],
                mode="markers+text",
                name=escape(highlight_label),
                text=[f"<b>{v}</b>" for v in escaped[mask]],
                textposition=list(positions[mask]),
                marker=dict(
                    color=[styles[g][0] for g in label_array[mask]],
                    size=size * 2,
                    line=dict(color=HIGHLIGHT_COLOR, width=2),
                ),
                customdata=customdata[mask],
                hovertemplate=hovertemplate,
            )
        )
    post_script = None
    if search:
        # Filled in by the search box's script: the models whose name matches what was typed.
        fig.add_trace(
            go.Scatter(
                x=[], y=[], mode="markers+text", name="search", showlegend=False, hoverinfo="skip",
                text=[], textposition="top center", textfont=dict(size=13, color=SEARCH_COLOR),
                marker=dict(color="rgba(0,0,0,0)", size=size * 2.6, line=dict(color=SEARCH_COLOR, width=3)),
            )
        )  # fmt: skip
        post_script = _search_script(names, escaped, coords, len(fig.data) - 1)
    legend_title = group_title if groups is not None else None
    xtitle, ytitle = _axis_titles(axis_label)
    layout = _plotly_layout(title, xtitle, ytitle, legend_title=legend_title, equal_aspect=True)
    if title:
        layout["title"] = dict(text=_html_lines(title), font=dict(size=15))
    fr = robust_frame(coords)
    if label or mask.any() or fr.outliers.any():
        # Labels beside the outermost points would be cut off at plotly's tight default range; far outliers are
        # left outside the first view (zoom out to see them) and marked at its edge by an arrow with their name.
        (x0, y0), (x1, y1) = fr.lo, fr.hi
        sx, sy = max(x1 - x0, 1e-9), max(y1 - y0, 1e-9)
        layout["xaxis"]["range"] = [x0 - 0.15 * sx, x1 + 0.15 * sx]
        layout["yaxis"]["range"] = [y0 - 0.08 * sy, y1 + 0.08 * sy]
        layout["annotations"] = _outlier_annotations(coords, escaped, fr)
    fig.update_layout(**layout)
    return _write_html(fig, path, post_script)


def _outlier_annotations(coords, escaped, fr: Frame) -> list[dict]:
    mid = (fr.lo + fr.hi) / 2
    out = []
    for i in np.flatnonzero(fr.outliers):
        d = coords[i] - mid
        d = d / (np.hypot(*d) or 1.0)
        x, y = fr.shown[i]
        out.append(dict(
            x=float(x), y=float(y), ax=float(-40 * d[0]), ay=float(40 * d[1]), showarrow=True, arrowhead=2,
            arrowwidth=1.5, arrowcolor="#262626", font=dict(size=11, color="#262626"),
            text=f"{escaped[i]} (at {coords[i, 0]:.3g}, {coords[i, 1]:.3g})",
        ))  # fmt: skip
    return out


def _text_positions(coords: np.ndarray, which: np.ndarray) -> np.ndarray:
    """For each point in ``which``, the side of it away from its nearest point: where its label is least likely to collide."""
    n = coords.shape[0]
    out = np.full(n, "top center", dtype=object)
    if n < 2:
        return out
    span = np.ptp(coords, axis=0).max() or 1.0
    idx = np.flatnonzero(which)
    for start in range(0, len(idx), 512):  # rows in blocks: K×K at once would not fit for very large maps
        rows = idx[start : start + 512]
        diff = coords[rows, None, :] - coords[None, :, :]
        dist = np.einsum("ijk,ijk->ij", diff, diff)
        dist[np.arange(len(rows)), rows] = np.inf
        away = diff[np.arange(len(rows)), dist.argmin(axis=1)] / span
        vertical = np.abs(away[:, 1]) >= np.abs(away[:, 0])
        out[rows] = np.where(
            vertical,
            np.where(away[:, 1] >= 0, "top center", "bottom center"),
            np.where(away[:, 0] > 0, "middle right", "middle left"),
        )
    return out


def _js_json(value) -> str:
    # JSON inside a <script> element: "<", ">" and "&" escaped so that no name can close the element.
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace(
        "\u2028", "\\u2028").replace("\u2029", "\\u2029")


_SEARCH_JS = """
(function () {
  var gd = document.getElementById("{plot_id}");
  var models = __MODELS__;
  var traceIndex = __TRACE__;
  var box = document.createElement("div");
  box.className = "lmmap-search";
  box.style.cssText = "font: 14px sans-serif; margin: 6px 12px;";
  var label = document.createElement("label");
  label.textContent = "Find a model: ";
  var input = document.createElement("input");
  input.type = "search";
  input.id = "lmmap-search";
  input.placeholder = "name or part of it";
  input.setAttribute("list", "lmmap-models");
  input.style.cssText = "width: 22em;";
  var list = document.createElement("datalist");
  list.id = "lmmap-models";
  models.forEach(function (m) { var o = document.createElement("option"); o.value = m.name; list.appendChild(o); });
  var status = document.createElement("span");
  status.id = "lmmap-search-status";
  status.style.cssText = "margin-left: 1em; color: #555;";
  label.appendChild(input);
  box.appendChild(label);
  box.appendChild(list);
  box.appendChild(status);
  gd.parentNode.insertBefore(box, gd);
  function matches(query) {
    var q = query.trim().toLowerCase();
    if (!q) return [];
    var exact = models.filter(function (m) { return m.name.toLowerCase() === q; });
    return exact.length ? exact : models.filter(function (m) { return m.name.toLowerCase().indexOf(q) >= 0; });
  }
  function show() {
    var found = matches(input.value);
    Plotly.restyle(gd, {
      x: [found.map(function (m) { return m.x; })],
      y: [found.map(function (m) { return m.y; })],
      text: [found.map(function (m) { return "<b>" + m.text + "</b>"; })]
    }, [traceIndex]);
    status.textContent = input.value.trim() ? found.length + (found.length === 1 ? " model" : " models") : "";
  }
  input.addEventListener("input", show);
  input.addEventListener("change", show);
})();
"""


def _search_script(names, escaped, coords, trace_index: int) -> str:
    models = [
        {"name": n, "text": t, "x": float(x), "y": float(y)} for n, t, (x, y) in zip(names, escaped, coords)
    ]
    return _SEARCH_JS.replace("__MODELS__", _js_json(models)).replace("__TRACE__", str(int(trace_index)))


def _ellipse_polylines(centres: np.ndarray, covs: np.ndarray, scale: float) -> np.ndarray:
    # One trace holds every ellipse of a group; NaN rows break the line between them.
    if len(centres) == 0:
        return np.empty((0, 2))
    pieces = []
    for c, s in zip(centres, covs):
        pieces.append(ellipse_outline(c, s, scale))
        pieces.append(np.full((1, 2), np.nan))
    return np.vstack(pieces)


def scatter_html(
    path,
    x,
    y,
    labels=None,
    groups=None,
    xlabel="",
    ylabel="",
    title=None,
    diagonal=False,
    *,
    hover=None,
    group_title=None,
) -> Path:
    """Interactive twin of :func:`scatter_png`: hover shows the label, group and ``hover[i]``."""
    import plotly.graph_objects as go

    x, y = _check_xy(x, y)
    n = x.size
    names = _check_names(labels, n, "labels") if labels is not None else [""] * n
    group = group_labels(groups, n)
    extra = _check_names(hover, n, "hover") if hover is not None else [""] * n
    styles = group_styles(group)
    path = _prepare(path)

    group_array = np.asarray(group, dtype=object)
    customdata = np.array(
        [[escape(a), escape(g), _html_lines(h)] for a, g, h in zip(names, group, extra)], dtype=object
    ).reshape(n, 3)
    hovertemplate = (
        "<b>%{customdata[0]}</b><br>"
        + (escape(group_title or "group") + ": %{customdata[1]}<br>" if groups is not None else "")
        + escape(xlabel or "x") + ": %{x:.4g}<br>"
        + escape(ylabel or "y") + ": %{y:.4g}<br>%{customdata[2]}<extra></extra>"
    )  # fmt: skip
    counts = Counter(group)
    fig = go.Figure()
    for category, (colour, marker) in styles.items():
        sel = group_array == category
        fig.add_trace(
            go.Scatter(
                x=x[sel],
                y=y[sel],
                mode="markers",
                name=f"{escape(category)} ({counts[category]})",
                showlegend=groups is not None,
                marker=dict(color=colour, symbol=MARKERS[marker][1], size=7, opacity=0.8),
                customdata=customdata[sel],
                hovertemplate=hovertemplate,
            )
        )
    if diagonal:
        lo, hi = _finite_range(np.concatenate([x, y]))
        fig.add_trace(
            go.Scatter(
                x=[lo, hi], y=[lo, hi], mode="lines", name="y = x", showlegend=False,
                line=dict(color="#666666", dash="dash", width=1), hoverinfo="skip",
            )
        )  # fmt: skip
    fig.update_layout(**_plotly_layout(title, xlabel, ylabel, group_title if groups is not None else None))
    return _write_html(fig, path)


def lines_html(
    path,
    series: Mapping[str, tuple],
    xlabel="",
    ylabel="",
    title=None,
    logx=False,
    logy=False,
    styles: Mapping[str, str] | None = None,
    *,
    colors: Mapping[str, str] | None = None,
    point_labels: Mapping[str, Sequence[str]] | None = None,
    integer_x: bool = False,
) -> Path:
    """Interactive twin of :func:`lines_png` (same ``series``, ``styles``, ``colors`` and ``integer_x``).

    ``point_labels``: for a series, one name per point (e.g. the model at each
    step), shown first in the point's hover text.
    """
    import plotly.graph_objects as go

    items = _check_series(series, styles, colors)
    point_labels = dict(point_labels or {})
    path = _prepare(path)
    fig = go.Figure()
    for i, (name, x, y, style, colour) in enumerate(items):
        dash = LINESTYLES[style]
        labels = point_labels.get(name)
        if labels is not None and len(labels) != len(x):
            raise InputError(f"point_labels of series {name!r} has {len(labels)} names for {len(x)} points",
                             params=("point_labels",))
        head = "%{customdata}<br>" if labels is not None else ""
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines+markers" if dash in ("solid", "dash") else "lines",
                name=escape(name),
                line=dict(color=colour or PALETTE[i % len(PALETTE)], dash=dash, width=2),
                marker=dict(size=5),
                customdata=None if labels is None else [escape(v) for v in labels],
                hovertemplate=head + escape(name) + "<br>x: %{x:.4g}<br>y: %{y:.4g}<extra></extra>",
            )
        )
    layout = _plotly_layout(title, xlabel, ylabel)
    # Said outright, not left to plotly's guess (which may read numbers as categories).
    layout["xaxis"]["type"] = "log" if logx else "linear"
    layout["yaxis"]["type"] = "log" if logy else "linear"
    if integer_x and not logx:
        layout["xaxis"]["tickformat"] = "d"
        layout["xaxis"]["dtick"] = max(1, int(np.ceil(max((np.nanmax(np.abs(x)) for _, x, *_ in items if len(x)), default=1) / 12)))
    fig.update_layout(**layout)
    return _write_html(fig, path)


def _css_colour(colour: str) -> str:
    # matplotlib names ("k", "C0", "0.4") are not CSS; convert through matplotlib.
    from matplotlib.colors import to_hex

    try:
        return to_hex(colour)
    except ValueError:
        raise InputError(f"{colour!r} is not a colour: use a name like 'black' or a hex code like '#1f77b4'") from None


__all__ = [
    "escape",
    "group_labels",
    "group_styles",
    "ellipse_parameters",
    "ellipse_outline",
    "Edges",
    "Frame",
    "robust_frame",
    "visible_ellipse_scale",
    "plain_log_ticks",
    "plotly_js_for",
    "ensure_plotlyjs",
    "map_figure",
    "map_png",
    "map_html",
    "scatter_png",
    "scatter_html",
    "lines_png",
    "lines_html",
]
