"""HTML figures, drawn by plotly: the map (:func:`map_html`, with a search box), scatter and line plots, and
where a page finds plotly.js (:func:`plotly_js_for`; one ``plotly.min.js`` per folder or per session) and the
message a page shows without it (:func:`_write_html`).
"""

from __future__ import annotations

import functools
import json
import math
import os
import urllib.parse
import warnings
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from lmmap.exceptions import InputError, LmmapWarning
from lmmap.report.plots.common import (DENSE_MAP_MODELS, FLAG_COLOR, FLAG_LABEL, Frame, HIGHLIGHT_COLOR,
                                       LARGE_MAP_MODELS, LARGE_MAP_NAMED, LINESTYLES, MARKERS, PALETTE, SEARCH_COLOR, UNKNOWN,
                                       _axis_titles, _check_names, _check_series, _check_xy, _edge_style,
                                       _finite_range, _large_edges, _map_inputs, _marker_size, _prepare,
                                       _resolve_large, _write, ellipse_outline, escape, group_centres, group_labels,
                                       group_styles, large_groups, robust_frame)


PLOTLY_JS = "plotly.min.js"
# A folder for the one plotly.min.js that every page of a session loads (by a relative path), instead of a copy
# in each output folder.
PLOTLY_JS_DIR_ENV = "LMMAP_PLOTLY_JS_DIR"


def _html_lines(value) -> str:
    return "<br>".join(escape(line) for line in str(value).splitlines())


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
    flagged_label=FLAG_LABEL,
    axis_label=None,
    search=True,
    large=None,
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

    ``large`` (None: above :data:`LARGE_MAP_MODELS` models): the large form,
    drawn by WebGL (plotly's ``scattergl``) so that 100,000 points pan and
    zoom; a colour for each of the largest groups, the names of the largest
    groups at their median position, and the search box; no ellipses (a
    warning says so). See :func:`map_figure`.
    """
    import plotly.graph_objects as go

    coords, n, names, labels, styles, mask, flag, ell, edge_sets, label = _map_inputs(
        coords, names, groups, highlight, flagged, ellipses, edges, label)
    extra = _check_names(hover, n, "hover") if hover is not None else [""] * n
    path = _prepare(path)
    if _resolve_large(large, n):
        return _large_map_html(
            path, coords, names, labels, groups is not None, hover is not None and any(extra), extra, mask, flag,
            ell, edge_sets, title=title, group_title=group_title, highlight_label=highlight_label,
            flagged_label=flagged_label, axis_label=axis_label, search=search,
        )  # fmt: skip

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


def _large_map_html(path, coords, names, labels, grouped, hovered, extra, mask, flag, ell, edge_sets, *, title,
                    group_title, highlight_label, flagged_label, axis_label, search) -> Path:
    """The large form of :func:`map_html` (see its ``large``).

    Compact at 100,000 models: positions as float32 (seven digits, far finer than a screen can show; plotly writes
    them in binary), each name once (a trace's ``customdata``, which the search box reads back too), the group in
    the trace's hover template rather than at every point, and no text drawn per point.
    """
    import plotly.graph_objects as go

    if ell is not None:
        warnings.warn(f"the HTML map of more than {LARGE_MAP_MODELS:,} models has no ellipses (the PNG has): "
                      "an outline per model would make the page too large to open", LmmapWarning, stacklevel=3)
    n = len(names)
    groups = large_groups(labels, grouped)
    xy = coords.astype(np.float32)
    escaped = np.array([escape(a) for a in names], dtype=object)
    lines = np.array([_html_lines(h) for h in extra], dtype=object) if hovered else None
    label_array = np.asarray(labels, dtype=object)
    column = escape(group_title or "group")
    fig = go.Figure()
    for e, pairs in _large_edges(edge_sets):
        if not len(pairs):
            continue
        colour, width, dash, alpha, text = _edge_style(e, True)
        segments = np.concatenate([xy[pairs], np.full((len(pairs), 1, 2), np.nan, dtype=np.float32)], axis=1)
        segments = segments.reshape(-1, 2)
        fig.add_trace(go.Scattergl(
            x=segments[:, 0], y=segments[:, 1], mode="lines", name=escape(text), opacity=alpha, legendrank=2000,
            line=dict(color=colour, width=width * 0.6, dash=LINESTYLES[dash]), hoverinfo="skip",
        ))  # fmt: skip
    size = float(np.clip(math.sqrt(20_000 / n) * 3, 3.0, 6.0))
    point_traces = []
    # WebGL draws the traces in order: "other" and "unknown" first, under the groups with a colour of their own; the
    # legend keeps the largest group first.
    order = [e for e, (name, _, _, k) in enumerate(groups.entries) if k > 1 or name == UNKNOWN]
    for e in order + [e for e in range(len(groups.entries)) if e not in order]:
        name, colour, count, k = groups.entries[e]
        sel = groups.codes == e
        if k > 1:  # the other groups: each point says which
            head = [f"{column}: {escape(g)}" for g in label_array[sel]]
            text = [f"{a}<br>{b}" for a, b in zip(head, lines[sel])] if lines is not None else head
            template = "<b>%{customdata}</b><br>%{hovertext}<extra></extra>"
            legend = f"{escape(name)}: {k:,} groups ({count:,})"
        else:
            text = list(lines[sel]) if lines is not None else None
            template = ("<b>%{customdata}</b>" + (f"<br>{column}: {escape(name)}" if grouped else "")
                        + ("<br>%{hovertext}" if lines is not None else "") + "<extra></extra>")
            legend = f"{escape(name)} ({count:,})"
        point_traces.append(len(fig.data))
        fig.add_trace(go.Scattergl(
            x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=legend, showlegend=grouped, legendrank=1000 + e,
            marker=dict(color=colour, size=size, opacity=0.7, line=dict(width=0)),
            customdata=list(escaped[sel]), hovertext=text, hovertemplate=template,
        ))  # fmt: skip
    colours = np.array([c for _, c, _, _ in groups.entries], dtype=object)
    if flag.any():
        fig.add_trace(go.Scattergl(
            x=xy[flag, 0], y=xy[flag, 1], mode="markers", name=escape(f"{flagged_label} ({int(flag.sum()):,})"),
            legendrank=2001, hoverinfo="skip",
            marker=dict(color="rgba(0,0,0,0)", size=size * 2.5, line=dict(color=FLAG_COLOR, width=1.5)),
        ))  # fmt: skip
    # Every trace is WebGL (an SVG trace would be drawn under the WebGL points); names are annotations (drawn over
    # them), the first few highlighted models' here and the search's by its script.
    annotations = []
    if mask.any():
        fig.add_trace(go.Scattergl(
            x=xy[mask, 0], y=xy[mask, 1], mode="markers", name=escape(highlight_label), legendrank=2002,
            marker=dict(color=list(colours[groups.codes[mask]]), size=size * 2.5,
                        line=dict(color=HIGHLIGHT_COLOR, width=2)),
            customdata=list(escaped[mask]), hovertemplate="<b>%{customdata}</b><extra></extra>",
        ))  # fmt: skip
        annotations += [_name_annotation(x, y, escaped[i], HIGHLIGHT_COLOR)
                        for i, (x, y) in zip(np.flatnonzero(mask)[:LARGE_MAP_NAMED], xy[mask][:LARGE_MAP_NAMED])]
    post_script = None
    if search:
        fig.add_trace(go.Scattergl(
            x=[], y=[], mode="markers", name="search", showlegend=False, customdata=[],
            hovertemplate="<b>%{customdata}</b><extra></extra>",
            marker=dict(color="rgba(0,0,0,0)", size=size * 3.5, line=dict(color=SEARCH_COLOR, width=3)),
        ))  # fmt: skip
        post_script = _large_search_script(point_traces, len(fig.data) - 1)
    xtitle, ytitle = _axis_titles(axis_label)
    layout = _plotly_layout(title, xtitle, ytitle, legend_title=group_title if grouped else None, equal_aspect=True)
    if title:
        layout["title"] = dict(text=_html_lines(title), font=dict(size=15))
    layout["hovermode"] = "closest"
    fr = robust_frame(coords)
    centres = group_centres(coords, groups)
    annotations += [
        dict(x=float(x), y=float(y), text=f"<b>{escape(groups.entries[e][0])}</b>", showarrow=False,
             font=dict(size=12, color="#1a1a1a"), bgcolor="rgba(255,255,255,0.7)")
        for e, (x, y) in zip(groups.named, centres)
    ]  # fmt: skip
    if fr.outliers.any():
        # Far models are left outside the first view (zoom out to see them); the farthest few are marked at its edge.
        (x0, y0), (x1, y1) = fr.lo, fr.hi
        sx, sy = max(x1 - x0, 1e-9), max(y1 - y0, 1e-9)
        layout["xaxis"]["range"] = [x0 - 0.05 * sx, x1 + 0.05 * sx]
        layout["yaxis"]["range"] = [y0 - 0.05 * sy, y1 + 0.05 * sy]
        annotations += _outlier_annotations(coords, escaped, fr, limit=LARGE_MAP_NAMED)
    layout["annotations"] = annotations
    fig.update_layout(**layout)
    return _write_html(fig, path, post_script)


def _name_annotation(x, y, text, colour) -> dict:
    # A model's name just above its dot; ``text`` is escaped.
    return dict(x=float(x), y=float(y), text=f"<b>{text}</b>", showarrow=False, yshift=14,
                font=dict(size=12, color=colour), bgcolor="rgba(255,255,255,0.75)")


def _outlier_annotations(coords, escaped, fr: Frame, limit: int | None = None) -> list[dict]:
    mid = (fr.lo + fr.hi) / 2
    out = []
    far = np.flatnonzero(fr.outliers)
    if limit is not None:  # the farthest first
        far = far[np.argsort(-np.hypot(*(coords[far] - mid).T), kind="stable")[:limit]]
    for i in far:
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


# The search box above a map's plot (an input with suggestions and a count), shared by both search scripts.
_SEARCH_BOX_JS = """  var box = document.createElement("div");
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
  var status = document.createElement("span");
  status.id = "lmmap-search-status";
  status.style.cssText = "margin-left: 1em; color: #555;";
  label.appendChild(input);
  box.appendChild(label);
  box.appendChild(list);
  box.appendChild(status);
  gd.parentNode.insertBefore(box, gd);
"""
_SEARCH_JS = """
(function () {
  var gd = document.getElementById("{plot_id}");
  var models = __MODELS__;
  var traceIndex = __TRACE__;
__BOX__  models.forEach(function (m) { var o = document.createElement("option"); o.value = m.name; list.appendChild(o); });
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


# The search box of a large map: the names are read back from the point traces (stored once, escaped, in their
# customdata), suggestions are the first few matches only (a list of 100,000 options would stall the page), and at
# most SEARCH_RINGS matches are ringed and SEARCH_NAMED named (more names would cover one another).
SEARCH_RINGS = 1_000
SEARCH_NAMED = 12
_LARGE_SEARCH_JS = """
(function () {
  var gd = document.getElementById("{plot_id}");
  var traces = __TRACES__;
  var traceIndex = __TRACE__;
  var rings = __RINGS__, named = __NAMED__;
__BOX__  var models = null;
  function unescapeHtml(s) {
    return s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"').replace(/&#x27;/g, "'")
      .replace(/&amp;/g, "&");
  }
  function load() {
    models = [];
    traces.forEach(function (t) {
      var d = gd._fullData[t], names = d.customdata || [];
      for (var i = 0; i < names.length; i++) {
        var name = unescapeHtml(String(names[i]));
        models.push({name: name, key: name.toLowerCase(), text: names[i], x: d.x[i], y: d.y[i]});
      }
    });
  }
  function matches(query) {
    var q = query.trim().toLowerCase();
    if (!q) return [];
    if (models === null) load();
    var exact = models.filter(function (m) { return m.key === q; });
    return exact.length ? exact : models.filter(function (m) { return m.key.indexOf(q) >= 0; });
  }
  var fixed = (gd.layout.annotations || []).slice();
  function show() {
    var found = matches(input.value), first = found.slice(0, rings);
    Plotly.restyle(gd, {
      x: [first.map(function (m) { return m.x; })],
      y: [first.map(function (m) { return m.y; })],
      customdata: [first.map(function (m) { return m.text; })]
    }, [traceIndex]);
    Plotly.relayout(gd, {annotations: fixed.concat(first.slice(0, named).map(function (m) {
      return {x: m.x, y: m.y, text: "<b>" + m.text + "</b>", showarrow: false, yshift: 16,
              font: {size: 13, color: "__COLOUR__"}, bgcolor: "rgba(255,255,255,0.8)"};
    }))});
    list.textContent = "";
    found.slice(0, 20).forEach(function (m) {
      var o = document.createElement("option"); o.value = m.name; list.appendChild(o);
    });
    var n = found.length;
    status.textContent = !input.value.trim() ? "" : (n === 1 ? "1 model" : n.toLocaleString("en") + " models")
      + (n > rings ? " (the first " + rings.toLocaleString("en") + " ringed, " + named + " named)"
         : n > named ? " (" + named + " named)" : "");
  }
  input.addEventListener("input", show);
  input.addEventListener("change", show);
})();
"""


def _large_search_script(point_traces, trace_index: int) -> str:
    return (_LARGE_SEARCH_JS.replace("__BOX__", _SEARCH_BOX_JS).replace("__TRACES__", _js_json([int(t) for t in point_traces]))
            .replace("__TRACE__", str(int(trace_index))).replace("__RINGS__", str(SEARCH_RINGS)).replace("__NAMED__", str(SEARCH_NAMED)).replace("__COLOUR__", SEARCH_COLOR))


def _search_script(names, escaped, coords, trace_index: int) -> str:
    models = [
        {"name": n, "text": t, "x": float(x), "y": float(y)} for n, t, (x, y) in zip(names, escaped, coords)
    ]
    return _SEARCH_JS.replace("__BOX__", _SEARCH_BOX_JS).replace("__MODELS__", _js_json(models)).replace("__TRACE__", str(int(trace_index)))


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
