"""What the PNG and HTML figures share: categories and their colours and markers, lines between models
(:class:`Edges`), the frame of a map (:func:`robust_frame`), ellipses, the checks of every input, and the one
atomic file writer. No drawing library is imported here (``matplotlib.colors`` only inside :func:`_css_colour`).
"""

from __future__ import annotations

import html
import math
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from lmmap.exceptions import InputError, LmmapWarning


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
# The legend's words for the red rings of a map (lmmap.report.map: the lineage test against the metadata).
FLAG_LABEL = "lineage test: parent in another lineage"
# Up to this many models every point of a map is labelled (PNG and HTML).
LABEL_MAX_MODELS = 60
# Above this many models a map draws only the lines and rings that inform (see report.map.map_edges), thinner.
DENSE_MAP_MODELS = 40
# A model further from the map's median than this many times the 75th percentile of such distances, and
# isolated, is drawn at the frame's edge so that it does not squeeze the rest (robust_frame).
FAR_OUTLIER = 2.0
LABEL_ITERATIONS = 150  # adjustText steps per pass (a fixed count keeps the PNG reproducible)
# Above this many models a map is drawn in its large form (maps of the whole hub): plotly's SVG scatter makes a DOM
# node per point and stops panning smoothly at a few thousand, while WebGL (scattergl) keeps 100,000 responsive; in a
# PNG this many dots hide one another, so the density is shaded under them; and a legend or colour per group, a name
# per point or a search list of every name no longer fits. Up to it, maps look as they always have.
LARGE_MAP_MODELS = 5_000
# On a large map the largest groups keep a colour of their own (the palette's 20); the rest share OTHER_COLOR.
LARGE_MAP_COLOURS = len(PALETTE)
OTHER_GROUPS = "other groups"
OTHER_COLOR = "#c7c7c7"  # lighter than "unknown": groups that are known, only too small for a colour
# ... and the largest of them are named at their median position (their members are not named one by one), those
# of at least LARGE_MAP_LABEL_SHARE of the models: a name over a handful of dots among thousands says nothing.
LARGE_MAP_GROUP_LABELS = 12
LARGE_MAP_LABEL_SHARE = 0.005
# At most this many highlighted, searched or far models are named on a large map, and at most this many lines drawn:
# beyond, names cover the map and lines cover its points (and cost seconds and megabytes for nothing readable).
LARGE_MAP_NAMED = 20
LARGE_MAP_MAX_LINES = 200_000
# Lines between models: colour, width, matplotlib dash, opacity and legend text.
EDGE_STYLES = {
    "nn": ("#555555", 0.8, "-", 0.35, "nearest model by KL"),
    "lineage": ("#444444", 1.4, "-", 0.6, "declared base_model"),
    "inferred": ("#444444", 1.2, "--", 0.6, "inferred parent (lineage test)"),
    "contradiction": (FLAG_COLOR, 1.1, "--", 0.85, "inferred parent, another lineage"),
    "placement": (HIGHLIGHT_COLOR, 1.2, "--", 0.75, "new → nearest by KL"),
    # Neutral and dashed: a path is not a category, and must not take a category's colour.
    "trajectory": ("#2b2b2b", 1.5, "-.", 0.85, "training trajectory (step order)"),
    "layers": ("#5c5c5c", 1.4, ":", 0.9, "layers of a model (logit lens, in order)"),
}  # fmt: skip


@dataclass(frozen=True)
class Edges:
    """Lines between models of a map: ``pairs`` of model names, drawn in the style of ``kind``.

    ``kind`` is one of :data:`EDGE_STYLES` (``nn``, ``lineage``, ``inferred``,
    ``contradiction``, ``placement``, ``trajectory``, ``layers``); ``label`` replaces its legend text.
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


# --------------------------------------------------------------------------- text


def escape(value) -> str:
    """``value`` as HTML-safe text (``&``, ``<``, ``>``, quotes escaped); None → ``""``."""
    return "" if value is None else html.escape(str(value), quote=True)


# --------------------------------------------------------------------------- groups


def group_labels(groups, n: int) -> list[str]:
    """One category string per point; missing values (None, NaN, NA, "") become ``"unknown"``."""
    if groups is None:
        return [UNKNOWN] * n
    groups = list(groups)
    if len(groups) != n:
        raise InputError(f"groups has {len(groups)} values but there are {n} points: give one group per model", params=("groups", "n"))
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
        raise InputError(f"the ellipse {{scale}} must be a positive number, got {scale!r}", params=("scale",))
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
        raise InputError("ellipses must be a pair (K×2 centres, K×2×2 covariances)", params=("ellipses",)) from None
    centres = np.asarray(centres, dtype=np.float64)
    covs = np.asarray(covs, dtype=np.float64)
    if centres.shape != (n, 2) or covs.shape != (n, 2, 2):
        raise InputError(
            f"ellipses must be (K×2 centres, K×2×2 covariances) with K = {n}, "
            f"got shapes {centres.shape} and {covs.shape}", params=("ellipses", "n")
        )
    return centres, covs


# --------------------------------------------------------------------------- large maps


@dataclass(frozen=True)
class LargeGroups:
    """The groups of a large map (above :data:`LARGE_MAP_MODELS` models) as drawn: the largest with a colour each,
    the rest as :data:`OTHER_GROUPS`, then :data:`NEW_GROUP` and ``"unknown"``.

    ``codes``: K indices into ``entries``; ``entries``: ``(name, colour, models, groups)`` in legend order
    (``groups`` > 1 only for the other groups); ``named``: the entries named on the map (the largest real groups).
    """

    codes: np.ndarray
    entries: tuple
    named: tuple


def large_groups(labels: Sequence[str], grouped: bool) -> LargeGroups:
    """:class:`LargeGroups` of the K category strings ``labels`` (``grouped``: whether the map has a group column)."""
    counts = Counter(labels)
    if not grouped:
        return LargeGroups(np.zeros(len(labels), dtype=np.int64), ((UNKNOWN, PALETTE[0], len(labels), 1),), ())
    known = sorted((c for c in counts if c not in (UNKNOWN, NEW_GROUP)), key=lambda c: (-counts[c], c))
    keep = known if len(known) <= LARGE_MAP_COLOURS else known[: LARGE_MAP_COLOURS - 1]
    entries = [(c, PALETTE[i], counts[c], 1) for i, c in enumerate(keep)]
    rest = known[len(keep):]
    code = {c: i for i, c in enumerate(keep)}
    if rest:
        code.update((c, len(entries)) for c in rest)
        entries.append((OTHER_GROUPS, OTHER_COLOR, sum(counts[c] for c in rest), len(rest)))
    for c, colour in ((NEW_GROUP, NEW_COLOR), (UNKNOWN, UNKNOWN_COLOR)):
        if c in counts:
            code[c] = len(entries)
            entries.append((c, colour, counts[c], 1))
    codes = np.fromiter((code[g] for g in labels), dtype=np.int64, count=len(labels))
    named = [i for i, c in enumerate(keep[:LARGE_MAP_GROUP_LABELS]) if counts[c] >= LARGE_MAP_LABEL_SHARE * len(labels)]
    return LargeGroups(codes, tuple(entries), tuple(named))


def group_centres(coords: np.ndarray, groups: LargeGroups) -> np.ndarray:
    """The median position of each named group of a large map (where its name is written)."""
    return np.array([np.median(coords[groups.codes == e], axis=0) for e in groups.named]).reshape(-1, 2)


def _resolve_large(large, n: int) -> bool:
    if large is None:
        return n > LARGE_MAP_MODELS
    if not isinstance(large, (bool, np.bool_)):
        raise InputError(f"large must be True, False or None (above {LARGE_MAP_MODELS:,} models), got {large!r}",
                         params=("large",))
    return bool(large)


def _large_edges(edge_sets):
    """The line sets a large map draws: all of them while they come to at most :data:`LARGE_MAP_MAX_LINES` lines,
    and a warning naming the sets left out."""
    kept, total, dropped = [], 0, []
    for e, pairs in edge_sets:
        if total + len(pairs) > LARGE_MAP_MAX_LINES:
            dropped.append((e, pairs))
            continue
        kept.append((e, pairs))
        total += len(pairs)
    if dropped:
        what = ", ".join(f"{EDGE_STYLES[e.kind][4]!r} ({len(p):,})" for e, p in dropped)
        warnings.warn(f"the map leaves out its lines {what}: more than {LARGE_MAP_MAX_LINES:,} lines would cover "
                      "its points", LmmapWarning, stacklevel=3)
    return kept


# --------------------------------------------------------------------------- checks


def _check_coords(coords) -> np.ndarray:
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] == 0:
        raise InputError(f"coords must be a K×2 array of map positions, got shape {coords.shape}", params=("coords",))
    if not np.all(np.isfinite(coords)):
        raise InputError("coords hold NaN or inf: recompute the embedding", params=("coords",))
    return coords


def _check_names(names, n: int, what: str = "names") -> list[str]:
    names = [str(v) for v in names]
    if len(names) != n:
        raise InputError(f"{what} has {len(names)} entries but there are {n} points: give one per point", params=("names", "n", what))
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
        raise InputError(f"cannot {what} {missing[:5]}: not among the map's model names", params=("names", what))
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
            raise InputError("edges must be a list of plots.Edges(kind, pairs)", params=("edges",))
        if e.kind not in EDGE_STYLES:
            raise InputError(f"unknown edge kind {e.kind!r}: use one of {', '.join(EDGE_STYLES)}", params=("edges",))
        pairs = []
        for pair in e.pairs:
            try:
                a, b = (str(v) for v in pair)
            except (TypeError, ValueError):
                raise InputError(f"an edge must be a pair of model names, got {pair!r}", params=("names",)) from None
            unknown = [v for v in (a, b) if v not in index]
            if unknown:
                raise InputError(f"an edge names {unknown[0]!r}, which is not among the map's model names", params=("names",))
            if a != b:
                pairs.append((index[a], index[b]))
        out.append((e, np.array(pairs, dtype=np.int64).reshape(-1, 2)))
    return out


def _resolve_label(label, n: int) -> bool:
    if isinstance(label, str):
        if label != "auto":
            raise InputError(f"label must be True, False or 'auto', got {label!r}", params=("label",))
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
        raise InputError(f"x and y must have the same length, got {x.size} and {y.size}", params=("x", "y"))
    return x, y


def _prepare(path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _marker_size(n: int) -> float:
    # Points shrink as the map fills up: ~40 pt² for a few models, ~6 for 1,000+.
    return float(np.clip(3000.0 / max(n, 1), 6.0, 40.0))


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
    if candidates.sum() * len(rest) <= 4_000_000:
        gap = np.sqrt(((coords[candidates, None, :] - rest[None, :, :]) ** 2).sum(axis=-1)).min(axis=1)
    else:  # a hub-sized map: the candidates × rest distances would take gigabytes; a k-d tree gives the same minima
        from scipy.spatial import cKDTree

        gap = cKDTree(rest).query(coords[candidates])[0]
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


def _edge_style(e: Edges, dense: bool):
    colour, width, dash, alpha, text = e.style
    if dense and e.kind in ("lineage", "inferred", "nn", "contradiction"):
        # Many lines cross on a crowded map: thinner and lighter, so that the points stay readable.
        return colour, width * 0.6, dash, alpha * 0.6, text
    return colour, width, dash, alpha, text


def _finite_range(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    return float(finite.min()), float(finite.max())


def _check_series(series, styles, colors) -> list[tuple[str, np.ndarray, np.ndarray, str, str | None]]:
    if not isinstance(series, Mapping) or not series:
        raise InputError("series must be a non-empty dict {name: (x, y)}", params=("series",))
    styles = dict(styles or {})
    colors = dict(colors or {})
    unknown = [k for k in list(styles) + list(colors) if k not in series]
    if unknown:
        raise InputError(f"styles/colors name series that do not exist: {unknown[:5]}; series are {list(series)[:10]}", params=("series", "styles", "colors"))
    items = []
    for name, xy in series.items():
        try:
            x, y = xy
        except (TypeError, ValueError):
            raise InputError(f"series {name!r} must be a pair (x, y)", params=("series",)) from None
        x, y = _check_xy(x, y)
        style = styles.get(name, "-")
        if style not in LINESTYLES:
            raise InputError(f"style {style!r} of series {name!r} is not one of {sorted(LINESTYLES)}", params=("series",))
        colour = colors.get(name)
        items.append((str(name), x, y, style, _css_colour(colour) if colour is not None else None))
    return items


def _css_colour(colour: str) -> str:
    # matplotlib names ("k", "C0", "0.4") are not CSS; convert through matplotlib.
    from matplotlib.colors import to_hex

    try:
        return to_hex(colour)
    except ValueError:
        raise InputError(f"{colour!r} is not a colour: use a name like 'black' or a hex code like '#1f77b4'", params=("colour",)) from None
