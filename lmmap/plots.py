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
  repeat with a different marker.
* PNGs are drawn on a bare :class:`matplotlib.figure.Figure` (Agg, no
  pyplot state, no display needed) at a fixed ``figsize × dpi``; HTML files
  embed plotly.js (``include_plotlyjs=True``) and work offline.
* Every writer creates missing parent folders and returns the path written.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .exceptions import LmmapError

UNKNOWN = "unknown"
UNKNOWN_COLOR = "#9e9e9e"
# tab10, then the light halves of tab20: 20 colours that stay apart.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
    "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
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
        raise LmmapError(f"groups has {len(groups)} values but there are {n} points: give one group per model")
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
    """Colour and marker index for each category, ordered largest first, ``"unknown"`` last.

    Returns ``{category: (hex colour, index into MARKERS)}`` in legend order.
    """
    counts = Counter(labels)
    known = sorted((c for c in counts if c != UNKNOWN), key=lambda c: (-counts[c], c))
    styles = {c: (PALETTE[i % len(PALETTE)], (i // len(PALETTE)) % len(MARKERS)) for i, c in enumerate(known)}
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
    cov = np.asarray(cov, dtype=np.float64)
    if cov.shape[-2:] != (2, 2):
        raise LmmapError(f"a covariance must be 2×2 (or K×2×2), got shape {cov.shape}")
    if not np.all(np.isfinite(cov)):
        raise LmmapError("a covariance holds NaN or inf: compute it from at least two finite positions")
    if not np.isfinite(scale) or scale <= 0:
        raise LmmapError(f"the ellipse scale must be a positive number, got {scale!r}")
    # eigh wants symmetric input; averaging removes round-off asymmetry.
    eigvals, eigvecs = np.linalg.eigh((cov + np.swapaxes(cov, -1, -2)) / 2)
    # Round-off can leave a tiny negative eigenvalue for a degenerate Σ.
    semi = scale * np.sqrt(np.clip(eigvals, 0.0, None))
    major = eigvecs[..., :, 1]  # eigh sorts ascending: column 1 belongs to λ₁
    angle = np.degrees(np.arctan2(major[..., 1], major[..., 0])) % 180.0
    return 2 * semi[..., 1], 2 * semi[..., 0], angle


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
        raise LmmapError("ellipses must be a pair (K×2 centres, K×2×2 covariances)") from None
    centres = np.asarray(centres, dtype=np.float64)
    covs = np.asarray(covs, dtype=np.float64)
    if centres.shape != (n, 2) or covs.shape != (n, 2, 2):
        raise LmmapError(
            f"ellipses must be (K×2 centres, K×2×2 covariances) with K = {n}, "
            f"got shapes {centres.shape} and {covs.shape}"
        )
    return centres, covs


# --------------------------------------------------------------------------- checks


def _check_coords(coords) -> np.ndarray:
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] == 0:
        raise LmmapError(f"coords must be a K×2 array of map positions, got shape {coords.shape}")
    if not np.all(np.isfinite(coords)):
        raise LmmapError("coords hold NaN or inf: recompute the embedding")
    return coords


def _check_names(names, n: int, what: str = "names") -> list[str]:
    names = [str(v) for v in names]
    if len(names) != n:
        raise LmmapError(f"{what} has {len(names)} entries but there are {n} points: give one per point")
    return names


def _highlight_mask(highlight, names: Sequence[str]) -> np.ndarray:
    mask = np.zeros(len(names), dtype=bool)
    if highlight is None:
        return mask
    if isinstance(highlight, str):
        highlight = [highlight]
    index = {name: i for i, name in enumerate(names)}
    missing = [h for h in highlight if str(h) not in index]
    if missing:
        raise LmmapError(f"cannot highlight {missing[:5]}: not among the map's model names")
    mask[[index[str(h)] for h in highlight]] = True
    return mask


def _check_xy(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise LmmapError(f"x and y must have the same length, got {x.size} and {y.size}")
    return x, y


def _prepare(path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------- matplotlib


def _new_figure(figsize, dpi):
    from matplotlib.figure import Figure

    # Constrained layout makes room for a legend placed "outside" without
    # changing the figure's pixel size.
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
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


def map_png(
    path,
    coords,
    names,
    groups=None,
    highlight=None,
    ellipses=None,
    title=None,
    label=False,
    *,
    group_title=None,
    highlight_label="highlighted",
    ellipse_scale=1.0,
    figsize=None,
    dpi=DEFAULT_DPI,
) -> Path:
    """Write the model map as a PNG scatter plot.

    Parameters
    ----------
    path : output file (``.png``).
    coords : (K, 2) map positions (e.g. from :func:`lmmap.embedding.embed`).
    names : K model names.
    groups : K category values (model type, family…) colouring the points; None → one colour.
    highlight : model names (e.g. newly added) drawn larger, black-edged and labelled.
    ellipses : ``(centres K×2, covariances K×2×2)``: a standard deviational
        ellipse per model, semi-axes ``ellipse_scale·√λ`` (see :func:`ellipse_parameters`).
    title : figure title.
    label : write every model's name beside its point (readable for small maps only).
    group_title : legend title (e.g. ``"model_type"``).
    figsize, dpi : inches and dots per inch; the PNG is ``figsize × dpi`` pixels.
        Default figsize widens with the number of legend columns.
    """
    from matplotlib.collections import PatchCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Ellipse

    coords = _check_coords(coords)
    n = coords.shape[0]
    names = _check_names(names, n)
    labels, styles = _point_styles(groups, n)
    mask = _highlight_mask(highlight, names)
    ell = _check_ellipses(ellipses, n)
    path = _prepare(path)

    n_legend = (len(styles) if groups is not None else 0) + int(mask.any())
    fig, ax = _new_figure(figsize or _default_figsize(n_legend, 8.0, 7.5), dpi)
    size = _marker_size(n)
    label_array = np.asarray(labels, dtype=object)
    counts = Counter(labels)
    if ell is not None:
        centres, covs = ell
        width, height, angle = ellipse_parameters(covs, ellipse_scale)
        colours = [styles[g][0] for g in labels]
        patches = [Ellipse(c, w, h, angle=a) for c, w, h, a in zip(centres, width, height, angle)]
        ax.add_collection(
            PatchCollection(patches, facecolors="none", edgecolors=colours, linewidths=0.6, alpha=0.55, zorder=1)
        )
    for category, (colour, marker) in styles.items():
        sel = label_array == category
        ax.scatter(
            coords[sel, 0],
            coords[sel, 1],
            s=size,
            c=colour,
            marker=MARKERS[marker][0],
            linewidths=0,
            alpha=0.85,
            zorder=2,
        )
    extra = []
    if mask.any():
        ax.scatter(
            coords[mask, 0],
            coords[mask, 1],
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
    to_label = np.ones(n, dtype=bool) if label else mask
    for i in np.flatnonzero(to_label):
        ax.annotate(
            _mpl_literal(names[i]),
            coords[i],
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=8 if mask[i] else 6,
            fontweight="bold" if mask[i] else "normal",
            zorder=5,
            bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.7) if mask[i] else None,
        )
    ax.set_aspect("equal", adjustable="datalim")
    ax.tick_params(labelsize="small")
    if title:
        ax.set_title(_mpl_literal(title))
    if groups is not None or extra:
        _add_group_legend(fig, styles if groups is not None else {}, counts, group_title, extra)
    fig.savefig(path, dpi=dpi)
    return path


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
    fig.savefig(path, dpi=dpi)
    return path


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
) -> Path:
    """Write line plots of named series ``{name: (x, y)}`` as a PNG.

    ``styles`` maps a series name to a line style (``"-"``, ``"--"``, ``":"``,
    ``"-."`` or their names); ``":"`` is the dotted baseline style. Solid and
    dashed series get point markers. ``colors`` optionally fixes a series'
    colour (any matplotlib/CSS colour). NaN in ``y`` leaves a gap.
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
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(_mpl_literal(xlabel))
    ax.set_ylabel(_mpl_literal(ylabel))
    if title:
        ax.set_title(_mpl_literal(title))
    ax.grid(True, which="major", lw=0.4, alpha=0.5)
    ax.legend(fontsize="small", frameon=False)
    fig.savefig(path, dpi=dpi)
    return path


def _finite_range(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    return float(finite.min()), float(finite.max())


def _check_series(series, styles, colors) -> list[tuple[str, np.ndarray, np.ndarray, str, str | None]]:
    if not isinstance(series, Mapping) or not series:
        raise LmmapError("series must be a non-empty dict {name: (x, y)}")
    styles = dict(styles or {})
    colors = dict(colors or {})
    unknown = [k for k in list(styles) + list(colors) if k not in series]
    if unknown:
        raise LmmapError(f"styles/colors name series that do not exist: {unknown[:5]}; series are {list(series)[:10]}")
    items = []
    for name, xy in series.items():
        try:
            x, y = xy
        except (TypeError, ValueError):
            raise LmmapError(f"series {name!r} must be a pair (x, y)") from None
        x, y = _check_xy(x, y)
        style = styles.get(name, "-")
        if style not in LINESTYLES:
            raise LmmapError(f"style {style!r} of series {name!r} is not one of {sorted(LINESTYLES)}")
        colour = colors.get(name)
        items.append((str(name), x, y, style, _css_colour(colour) if colour is not None else None))
    return items


# --------------------------------------------------------------------------- plotly


def _write_html(fig, path: Path) -> Path:
    # The whole plotly.js bundle goes into the file: it must open offline.
    fig.write_html(path, include_plotlyjs=True, full_html=True, config={"displaylogo": False})
    return path


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
    group_title="type",
    highlight_label="highlighted",
    ellipse_scale=1.0,
) -> Path:
    """Write the interactive model map as ONE self-contained HTML file (plotly.js embedded).

    Hover shows the model name, its group (labelled ``group_title``) and
    ``hover[i]`` (e.g. ``"nearest: a (0.12), b (0.20)"``; newlines become line
    breaks). Clicking a legend entry hides that group and its ellipses. All
    strings are escaped with :func:`escape`. Other parameters as :func:`map_png`.
    """
    import plotly.graph_objects as go

    coords = _check_coords(coords)
    n = coords.shape[0]
    names = _check_names(names, n)
    labels, styles = _point_styles(groups, n)
    extra = _check_names(hover, n, "hover") if hover is not None else [""] * n
    mask = _highlight_mask(highlight, names)
    ell = _check_ellipses(ellipses, n)
    path = _prepare(path)

    label_array = np.asarray(labels, dtype=object)
    customdata = np.array(
        [[escape(a), escape(g), _html_lines(h)] for a, g, h in zip(names, labels, extra)], dtype=object
    ).reshape(n, 3)
    hovertemplate = (
        "<b>%{customdata[0]}</b><br>" + escape(group_title) + ": %{customdata[1]}<br>%{customdata[2]}<extra></extra>"
    )
    counts = Counter(labels)
    size = max(4.0, math.sqrt(_marker_size(n)) * 1.3)
    fig = go.Figure()
    for category, (colour, marker) in styles.items():
        sel = label_array == category
        fig.add_trace(
            go.Scatter(
                x=coords[sel, 0],
                y=coords[sel, 1],
                mode="markers",
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
    if mask.any():
        fig.add_trace(
            go.Scatter(
                x=coords[mask, 0],
                y=coords[mask, 1],
                mode="markers+text",
                name=escape(highlight_label),
                text=[escape(v) for v in np.asarray(names, dtype=object)[mask]],
                textposition="top center",
                marker=dict(
                    color=[styles[g][0] for g in label_array[mask]],
                    size=size * 2,
                    line=dict(color=HIGHLIGHT_COLOR, width=2),
                ),
                customdata=customdata[mask],
                hovertemplate=hovertemplate,
            )
        )
    legend_title = group_title if groups is not None else None
    fig.update_layout(**_plotly_layout(title, legend_title=legend_title, equal_aspect=True))
    return _write_html(fig, path)


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
) -> Path:
    """Interactive twin of :func:`lines_png` (same ``series``, ``styles`` and ``colors``)."""
    import plotly.graph_objects as go

    items = _check_series(series, styles, colors)
    path = _prepare(path)
    fig = go.Figure()
    for i, (name, x, y, style, colour) in enumerate(items):
        dash = LINESTYLES[style]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines+markers" if dash in ("solid", "dash") else "lines",
                name=escape(name),
                line=dict(color=colour or PALETTE[i % len(PALETTE)], dash=dash, width=2),
                marker=dict(size=5),
                hovertemplate=escape(name) + "<br>x: %{x:.4g}<br>y: %{y:.4g}<extra></extra>",
            )
        )
    layout = _plotly_layout(title, xlabel, ylabel)
    if logx:
        layout["xaxis"]["type"] = "log"
    if logy:
        layout["yaxis"]["type"] = "log"
    fig.update_layout(**layout)
    return _write_html(fig, path)


def _css_colour(colour: str) -> str:
    # matplotlib names ("k", "C0", "0.4") are not CSS; convert through matplotlib.
    from matplotlib.colors import to_hex

    try:
        return to_hex(colour)
    except ValueError:
        raise LmmapError(f"{colour!r} is not a colour: use a name like 'black' or a hex code like '#1f77b4'") from None


__all__ = [
    "escape",
    "group_labels",
    "group_styles",
    "ellipse_parameters",
    "ellipse_outline",
    "map_png",
    "map_html",
    "scatter_png",
    "scatter_html",
    "lines_png",
    "lines_html",
]
