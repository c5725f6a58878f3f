"""Paths through the map: KL along a run's checkpoints, or along a model's layers (issue 15 §1, §2).

A *trajectory* is declared in the map's metadata: the models whose column
``trajectory`` holds the same name, ordered by the numeric column ``step``
(the final model is the one with the largest step); ``lmmap score
--revisions/--trajectory`` writes both. The *layers* of a model scored with
the logit lens (``lmmap score --layers``) are the models whose column
``layers_of`` names it, ordered by ``layer``. ``trajectory(mm, name)`` and
``layers(mm, model)`` give, for each point of the path, the KL to the
previous point and to the last one (the final checkpoint; the last layer,
which is the model itself).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lmmap.exceptions import InputError
from lmmap.map import UNIT_LABELS, check_unit

TRAJECTORY_COLUMN = "trajectory"
STEP_COLUMN = "step"
# kind → (the column naming the path, the column ordering it, what a point is, the path's noun)
PATHS = {
    "trajectory": (TRAJECTORY_COLUMN, STEP_COLUMN, "checkpoint", "trajectory"),
    "layers": ("layers_of", "layer", "layer", "layers of model"),
}


@dataclass
class TrajectoryResult:
    """The KL along one training trajectory.

    Attributes
    ----------
    name : str
        The trajectory's name (the metadata column ``trajectory``).
    unit : str
        The unit of KL (``nats-per-text`` or ``bits-per-byte``).
    table : pandas.DataFrame
        One row per checkpoint in step order: model, step, kl_to_previous
        (NaN on the first row), kl_to_final (0 on the last row).
    info : dict
        Parameters for ``trajectory.json``.
    """

    name: str
    unit: str
    table: pd.DataFrame
    info: dict = field(default_factory=dict)
    kind: str = "trajectory"  # or "layers": the table's order column is then ``layer``

    @property
    def order_column(self) -> str:
        """``step`` (a trajectory) or ``layer`` (a model's layers)."""
        return PATHS[self.kind][1]

    @property
    def point(self) -> str:
        """What one point of the path is: ``checkpoint`` or ``layer``."""
        return PATHS[self.kind][2]

    @property
    def unit_label(self) -> str:
        return UNIT_LABELS[self.unit]

    @property
    def final(self) -> str:
        """The final model (the largest step or layer)."""
        return str(self.table["model"].iloc[-1])


def _present(v) -> bool:
    return v is not None and not (not isinstance(v, str) and pd.isna(v)) and bool(str(v).strip())


def trajectories(mm, kind: str = "trajectory") -> dict[str, list[tuple[str, object]]]:
    """``{path name: [(model, raw step), ...]}`` in the map's model order, from the metadata.

    ``kind``: ``trajectory`` (columns ``trajectory``, ``step``) or ``layers``
    (``layers_of``, ``layer``). Empty when the metadata lacks the column.
    """
    group_col, order_col = PATHS[kind][:2]
    meta = mm.metadata
    if meta is None or group_col not in meta.columns:
        return {}
    traj = meta[group_col].reindex(mm.names)
    step = meta[order_col].reindex(mm.names) if order_col in meta.columns else pd.Series(None, index=mm.names)
    out: dict[str, list] = {}
    for model, t, raw in zip(mm.names, traj.to_numpy(), step.to_numpy()):
        if _present(t):
            out.setdefault(str(t).strip(), []).append((model, raw))
    return out


def _numeric_step(model: str, raw, kind: str = "trajectory") -> float:
    """The step of ``model`` as a number; a missing or non-numeric step is an InputError naming the model."""
    order_col, point = PATHS[kind][1], PATHS[kind][2]
    try:
        value = float(str(raw).strip()) if _present(raw) else float("nan")
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise InputError(f"model {model!r} of the {'trajectory' if kind == 'trajectory' else 'layers'} has "
                         f"{order_col} {raw!r}, not a number: "
                         f"give every {point} a numeric metadata column {order_col!r}", params=("name",))
    return value


def ordered_checkpoints(mm, name: str, kind: str = "trajectory") -> list[tuple[str, float]]:
    """The points of path ``name`` as ``[(model, step)]`` in step (layer) order (ties kept in map order)."""
    group_col, _, _, noun = PATHS[kind]
    known = trajectories(mm, kind)
    if name not in known:
        listed = ", ".join(repr(k) for k in sorted(known)) or f"none (no metadata column {group_col!r})"
        what = "trajectories" if kind == "trajectory" else "models with layers"
        raise InputError(f"no {noun} {name!r} in the map's metadata; known {what}: {listed}", params=("name",))
    return order_points(name, known[name], kind)


def order_points(name: str, members: list, kind: str = "trajectory") -> list[tuple[str, float]]:
    """``members`` of path ``name`` (``[(model, raw step)]``, from :func:`trajectories`) as ``[(model, step)]`` in
    step (layer) order; fewer than two points or a step that is not a number is an InputError."""
    _, _, point, noun = PATHS[kind]
    points = [(m, _numeric_step(m, raw, kind)) for m, raw in members]
    if len(points) < 2:
        raise InputError(f"{noun} {name!r} has {len(points)} {point} in the map; a path needs at least 2",
                         params=("name",))
    # A stable sort: equal steps keep the map's order, so the result is the same on every run.
    return sorted(points, key=lambda p: p[1])


def trajectory(mm, name: str, *, unit: str = "nats-per-text", kind: str = "trajectory") -> TrajectoryResult:
    """KL between consecutive points of path ``name`` and from each to the last one.

    Parameters
    ----------
    mm : lmmap.map.ModelMap
        The map; its metadata declares the path (columns ``trajectory`` and
        ``step``, or ``layers_of`` and ``layer``).
    name : str
        The trajectory's name (or, ``kind="layers"``, the lensed model's).
    unit : str
        ``nats-per-text`` (default) or ``bits-per-byte``.
    kind : str
        ``trajectory`` (a training run's checkpoints) or ``layers`` (a
        model's layers, :func:`layers`).

    Returns
    -------
    TrajectoryResult

    Raises
    ------
    lmmap.exceptions.InputError
        An unknown path (the known ones are listed), fewer than two points
        in the map, or a step that is not a number.
    """
    check_unit(unit)
    if kind not in PATHS:
        raise InputError(f"kind must be one of {', '.join(PATHS)}, got {kind!r}", params=("kind",))
    order_col = PATHS[kind][1]
    points = ordered_checkpoints(mm, name, kind)
    KL = mm.kl(unit)
    idx = np.array([mm.index_of(m) for m, _ in points], dtype=np.int64)
    prev = np.full(len(idx), np.nan)
    prev[1:] = KL[idx[1:], idx[:-1]]
    to_final = KL[idx, idx[-1]]
    steps = np.array([s for _, s in points])
    # Integral steps read as integers in the CSV (10, not 10.0).
    step_col = steps.astype(np.int64) if np.all(steps == np.round(steps)) else steps
    table = pd.DataFrame({"model": [m for m, _ in points], order_col: step_col, "kl_to_previous": prev,
                          "kl_to_final": to_final})
    info = {("trajectory" if kind == "trajectory" else "layers_of"): name, "kind": kind, "unit": unit,
            "models": table["model"].tolist(), f"{order_col}s": step_col.tolist(),
            "final": table["model"].iloc[-1], "n_models_in_map": mm.K, "n_texts": int(mm.n_texts),
            "text_set_id": mm.text_set_id}
    return TrajectoryResult(name, unit, table, info, kind)


def layers(mm, model: str, *, unit: str = "nats-per-text") -> TrajectoryResult:
    """KL between consecutive layers of ``model`` (scored with ``layers``) and from each layer to the last.

    The last layer is the model itself (its vector equals the plain
    score), so ``kl_to_final`` says how far each layer's next-token
    distribution is from the model's output.
    """
    return trajectory(mm, model, unit=unit, kind="layers")


__all__ = ["TrajectoryResult", "trajectory", "layers", "trajectories", "ordered_checkpoints", "order_points",
           "PATHS"]
