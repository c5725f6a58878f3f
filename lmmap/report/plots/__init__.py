"""Figures: the model map (PNG and one self-contained HTML file) and small
generic scatter/line helpers for the other figures of lmmap.

Three modules, one responsibility each: :mod:`~lmmap.report.plots.common`
(categories, styles, lines, frames, ellipses, input checks, the atomic
writer), :mod:`~lmmap.report.plots.png` (matplotlib) and
:mod:`~lmmap.report.plots.html` (plotly and plotly.js). Every name other
modules use is importable from here.

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
* Maps of more than :data:`LARGE_MAP_MODELS` models (the hub: 100,000) are drawn in a large form: the PNG
  shades the density in grey hexagons under small dots, the HTML draws by WebGL (``scattergl``) with each name
  stored once; a colour for each of the :data:`LARGE_MAP_COLOURS` largest groups (the rest "other groups"),
  names only for the largest groups (at their median position), highlighted, searched and far models, and at
  most :data:`LARGE_MAP_MAX_LINES` lines (a warning names what is left out).
* Every writer creates missing parent folders, writes atomically (temporary
  file, fsync, rename) and returns the path written.
"""

from __future__ import annotations

from lmmap.report.plots.common import (DEFAULT_DPI, DENSE_MAP_MODELS, EDGE_STYLES, Edges, FAR_OUTLIER, FLAG_COLOR,
                                       FLAG_LABEL, Frame, HIGHLIGHT_COLOR, LABEL_ITERATIONS, LABEL_MAX_MODELS, LARGE_MAP_COLOURS,
                                       LARGE_MAP_GROUP_LABELS, LARGE_MAP_MAX_LINES, LARGE_MAP_MODELS, LARGE_MAP_NAMED,
                                       LINESTYLES, MARKERS, NEW_COLOR, NEW_GROUP, OTHER_COLOR, OTHER_GROUPS, PALETTE,
                                       SEARCH_COLOR, UNKNOWN, UNKNOWN_COLOR, LargeGroups, ellipse_outline,
                                       ellipse_parameters, escape, group_labels, group_styles, large_groups,
                                       robust_frame, visible_ellipse_scale)
from lmmap.report.plots.png import (_mpl_literal, _new_figure, _place_labels, _save_png, lines_png, map_figure, map_png,
                                    plain_log_ticks, scatter_png)
from lmmap.report.plots.html import (PLOTLY_JS, PLOTLY_JS_DIR_ENV, _write_html, ensure_plotlyjs, lines_html, map_html,
                                     plotly_js_for, scatter_html)

__all__ = [
    "escape",
    "group_labels",
    "group_styles",
    "ellipse_parameters",
    "ellipse_outline",
    "Edges",
    "Frame",
    "robust_frame",
    "large_groups",
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
