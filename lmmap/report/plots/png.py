"""PNG figures, drawn by matplotlib on a bare :class:`matplotlib.figure.Figure` (Agg, no pyplot state): the map
(:func:`map_png`, :func:`map_figure`, labels beside their dots by :func:`_place_labels`), scatter and line plots.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from pathlib import Path
from typing import Mapping

import numpy as np

from lmmap.exceptions import InputError
from lmmap.report.plots.common import (DEFAULT_DPI, DENSE_MAP_MODELS, FLAG_COLOR, FLAG_LABEL, Frame, HIGHLIGHT_COLOR,
                                       LABEL_ITERATIONS, LARGE_MAP_NAMED, LINESTYLES, MARKERS, PALETTE, UNKNOWN,
                                       _MAP_AXES_INCHES, _axis_titles, _check_names, _check_series,
                                       _check_xy, _edge_style, _finite_range, _highlight_mask, _large_edges,
                                       _map_inputs, _map_point_size, _marker_size, _point_styles, _prepare,
                                       _resolve_large, _write, ellipse_outline, ellipse_parameters, group_centres,
                                       large_groups, robust_frame)


def _save_png(fig, path: Path, dpi) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return _write(path, buf.getvalue())


def _mpl_literal(value) -> str:
    # An unescaped pair of "$" would make matplotlib parse the text as mathtext.
    return "" if value is None else str(value).replace("$", r"\$")


# --------------------------------------------------------------------------- matplotlib


def _new_figure(figsize, dpi):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Constrained layout makes room for a legend placed "outside" without
    # changing the figure's pixel size.
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)  # a renderer to measure labels with (adjustText), still no pyplot
    return fig, fig.add_subplot()


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
    flagged_label=FLAG_LABEL,
    axis_label=None,
    frame="robust",
    figsize=None,
    dpi=DEFAULT_DPI,
    large=None,
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
    flagged : model names circled in red (e.g. where the lineage test contradicts the declared lineage);
        ``flagged_label`` the legend's words for them.
    axis_label : ``"MDS"`` gives axis titles "MDS 1" and "MDS 2"; or a pair of titles.
    frame : ``"robust"`` (default): far outliers (:func:`robust_frame`) are drawn
        at the frame's edge with an arrow pointing their way, and labelled with
        their name and true position; ``"full"``: every model where it is.
    figsize, dpi : inches and dots per inch; the PNG is ``figsize × dpi`` pixels.
        Default: 8 inches wide plus the legend, as tall as the map's shape needs.
    large : draw the map in its large form (None: above :data:`LARGE_MAP_MODELS` models): the density shaded
        in grey hexagons under small dots, a colour for each of the largest groups (the rest "other groups"),
        names only for the largest groups (at their median position) and for highlighted and far models (up to
        :data:`LARGE_MAP_NAMED`), at most :data:`LARGE_MAP_MAX_LINES` lines (a warning names what is left out).
    """
    from matplotlib.collections import LineCollection, PatchCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Ellipse

    coords, n, names, labels, styles, mask, flag, ell, edge_sets, label = _map_inputs(
        coords, names, groups, highlight, flagged, ellipses, edges, label)
    if frame not in ("robust", "full"):
        raise InputError(f"frame must be 'robust' or 'full', got {frame!r}", params=("frame",))
    fr = robust_frame(coords) if frame == "robust" else robust_frame(coords, far=np.inf)
    if _resolve_large(large, n):
        return _large_map_figure(
            coords, names, labels, groups is not None, mask, flag, ell, edge_sets, fr, title=title,
            group_title=group_title, highlight_label=highlight_label, ellipse_scale=ellipse_scale,
            flagged_label=flagged_label, axis_label=axis_label, figsize=figsize, dpi=dpi,
        )  # fmt: skip
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


def _large_map_figure(coords, names, labels, grouped, mask, flag, ell, edge_sets, fr: Frame, *, title, group_title,
                      highlight_label, ellipse_scale, flagged_label, axis_label, figsize, dpi):
    """The large form of :func:`map_figure` (see its ``large``): what a map of 100,000 models can show."""
    from matplotlib.collections import EllipseCollection, LineCollection
    from matplotlib.colors import ListedColormap, LogNorm
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib import colormaps

    n = len(names)
    shown, far = fr.shown, fr.outliers
    groups = large_groups(labels, grouped)
    edge_sets = [(e, pairs) for e, pairs in _large_edges(edge_sets) if len(pairs)]
    handles = [
        Line2D([], [], ls="", marker="o", color=colour, ms=6,
               label=_mpl_literal(f"{name}: {k:,} groups ({count:,})" if k > 1 else f"{name} ({count:,})"))
        for name, colour, count, k in groups.entries
    ] if grouped else []  # fmt: skip
    extra = [Patch(facecolor="0.6", edgecolor="none", label="shade: models per hexagon (log scale)")]
    for e, _ in edge_sets:
        colour, width, dash, alpha, text = _edge_style(e, True)
        extra.append(Line2D([], [], color=colour, lw=width, ls=dash, alpha=max(alpha, 0.6), label=_mpl_literal(text)))
    n_legend = len(handles) + len(extra) + int(mask.any()) + int(flag.any()) + int(far.any())
    fig, ax = _new_figure(figsize or _map_figsize(fr, n_legend, title), dpi)
    fig.set_layout_engine("compressed")
    pad = np.array([0.1, 0.06]) * (fr.span.max() if fr.span.max() > 0 else 10.0)
    lo, hi = fr.lo - pad, fr.hi + pad
    # The density first, in greys that start light (white would be an empty hexagon): where dots pile up into one
    # blot of colour, the shade under and around them still tells a thousand models from ten.
    greys = ListedColormap(colormaps["Greys"](np.linspace(0.12, 0.85, 256)))
    ax.hexbin(shown[:, 0], shown[:, 1], gridsize=int(np.clip(math.sqrt(n) / 2, 40, 150)), mincnt=1,
              extent=(lo[0], hi[0], lo[1], hi[1]), cmap=greys, norm=LogNorm(), linewidths=0, zorder=0)
    for e, pairs in edge_sets:
        colour, width, dash, alpha, _ = _edge_style(e, True)
        ax.add_collection(LineCollection(shown[pairs], colors=colour, linewidths=width * 0.6, linestyles=dash,
                                         alpha=alpha, zorder=1))
    colours = np.array([c for _, c, _, _ in groups.entries], dtype=object)
    if ell is not None:
        width, height, angle = ellipse_parameters(ell[1], ellipse_scale)
        ax.add_collection(EllipseCollection(width, height, angle, units="xy", offsets=shown,
                                            offset_transform=ax.transData, facecolors="none",
                                            edgecolors=list(colours[groups.codes]), linewidths=0.4, alpha=0.5,
                                            zorder=1))
    # Small groups under large ones would vanish: the largest group is drawn first, "other" and "unknown" before it.
    size = float(np.clip(20_000 / n, 1.0, 4.0))
    order = [e for e, (name, _, _, k) in enumerate(groups.entries) if k > 1 or name == UNKNOWN]
    order += [e for e in range(len(groups.entries)) if e not in order]
    for e in order:
        sel = groups.codes == e
        ax.scatter(shown[sel, 0], shown[sel, 1], s=size, c=colours[e], marker="o", linewidths=0, alpha=0.6,
                   zorder=2, rasterized=True)
    if mask.any():
        ax.scatter(shown[mask, 0], shown[mask, 1], s=40.0, c=list(colours[groups.codes[mask]]),
                   edgecolors=HIGHLIGHT_COLOR, linewidths=1.2, zorder=4)
        extra.append(Line2D([], [], ls="", marker="o", mfc="white", mec=HIGHLIGHT_COLOR, mew=1.5, ms=8,
                            label=_mpl_literal(highlight_label)))
    if flag.any():
        ax.scatter(shown[flag, 0], shown[flag, 1], s=18.0, facecolors="none", edgecolors=FLAG_COLOR, linewidths=0.8,
                   zorder=3)
        extra.append(Line2D([], [], ls="", marker="o", mfc="none", mec=FLAG_COLOR, mew=1.0, ms=8,
                            label=_mpl_literal(f"{flagged_label} ({int(flag.sum()):,})")))
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    # Far models are drawn at the frame's edge; only the farthest few get an arrow and a name.
    named_far = np.zeros(n, dtype=bool)
    if far.any():
        dist = np.hypot(*(coords - (fr.lo + fr.hi) / 2).T)
        named_far[np.flatnonzero(far)[np.argsort(-dist[far], kind="stable")[:LARGE_MAP_NAMED]]] = True
        _mark_outliers(ax, coords, shown, named_far, fr)
        extra.append(Line2D([], [], ls="", marker=">", color="0.15", ms=7,
                            label=f"far off the map ({int(far.sum()):,}): at its edge"))
    ax.set_aspect("equal", adjustable="box")
    ax.tick_params(labelsize="small")
    xtitle, ytitle = _axis_titles(axis_label)
    ax.set_xlabel(_mpl_literal(xtitle))
    ax.set_ylabel(_mpl_literal(ytitle))
    if title:
        ax.set_title(_mpl_literal(title), fontsize=10)
    _add_group_legend(fig, {}, {}, group_title if grouped else None, handles + extra)
    # Names: the largest groups at their median position, then highlighted models (the first few) and far ones.
    models = np.flatnonzero(mask)[:LARGE_MAP_NAMED]
    models = np.concatenate([models, np.flatnonzero(named_far & ~mask)])
    anchors = np.vstack([group_centres(shown, groups), shown[models]])
    texts = [groups.entries[e][0] for e in groups.named]
    texts += [f"{names[i]} (at {coords[i, 0]:.3g}, {coords[i, 1]:.3g})" if far[i] else names[i] for i in models]
    if texts:
        _place_labels(fig, ax, anchors, texts, np.ones(len(texts), dtype=bool), np.ones(len(texts), dtype=bool),
                      radius_pt=2.0)
    return fig


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
