"""Training trajectories: KL along a run's checkpoints (issue 15 §1).

A trajectory is declared in the map's metadata: the models whose column
``trajectory`` holds the same name, ordered by the numeric column ``step``
(the final model is the one with the largest step). ``trajectory(mm, name)``
gives, for each checkpoint, the KL to the previous checkpoint and to the
final model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lmmap.exceptions import InputError
from lmmap.map import UNIT_LABELS, check_unit

TRAJECTORY_COLUMN = "trajectory"
STEP_COLUMN = "step"


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

    @property
    def unit_label(self) -> str:
        return UNIT_LABELS[self.unit]

    @property
    def final(self) -> str:
        """The final model (the largest step)."""
        return str(self.table["model"].iloc[-1])


def _present(v) -> bool:
    return v is not None and not (not isinstance(v, str) and pd.isna(v)) and bool(str(v).strip())


def trajectories(mm) -> dict[str, list[tuple[str, object]]]:
    """``{trajectory name: [(model, raw step), ...]}`` in the map's model order, from the metadata.

    Empty when the metadata has no ``trajectory`` column.
    """
    meta = mm.metadata
    if meta is None or TRAJECTORY_COLUMN not in meta.columns:
        return {}
    traj = meta[TRAJECTORY_COLUMN].reindex(mm.names)
    step = meta[STEP_COLUMN].reindex(mm.names) if STEP_COLUMN in meta.columns else pd.Series(None, index=mm.names)
    out: dict[str, list] = {}
    for model in mm.names:
        t = traj.loc[model]
        if _present(t):
            out.setdefault(str(t).strip(), []).append((model, step.loc[model]))
    return out


def _numeric_step(model: str, raw) -> float:
    """The step of ``model`` as a number; a missing or non-numeric step is an InputError naming the model."""
    try:
        value = float(str(raw).strip()) if _present(raw) else float("nan")
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise InputError(f"model {model!r} of the trajectory has step {raw!r}, not a number: give every "
                         f"checkpoint a numeric metadata column {STEP_COLUMN!r}", params=("name",))
    return value


def ordered_checkpoints(mm, name: str) -> list[tuple[str, float]]:
    """The checkpoints of trajectory ``name`` as ``[(model, step)]`` in step order (ties kept in map order)."""
    known = trajectories(mm)
    if name not in known:
        listed = ", ".join(repr(k) for k in sorted(known)) or "none (no metadata column 'trajectory')"
        raise InputError(f"no trajectory {name!r} in the map's metadata; known trajectories: {listed}",
                         params=("name",))
    points = [(m, _numeric_step(m, raw)) for m, raw in known[name]]
    if len(points) < 2:
        raise InputError(f"trajectory {name!r} has {len(points)} checkpoint in the map; a trajectory needs at "
                         "least 2", params=("name",))
    # A stable sort: equal steps keep the map's order, so the result is the same on every run.
    return sorted(points, key=lambda p: p[1])


def trajectory(mm, name: str, *, unit: str = "nats-per-text") -> TrajectoryResult:
    """KL between consecutive checkpoints of trajectory ``name`` and from each to the final one.

    Parameters
    ----------
    mm : lmmap.map.ModelMap
        The map; its metadata declares the trajectory (columns ``trajectory``
        and ``step``).
    name : str
        The trajectory's name.
    unit : str
        ``nats-per-text`` (default) or ``bits-per-byte``.

    Returns
    -------
    TrajectoryResult

    Raises
    ------
    lmmap.exceptions.InputError
        An unknown trajectory (the known ones are listed), fewer than two
        checkpoints in the map, or a step that is not a number.
    """
    check_unit(unit)
    points = ordered_checkpoints(mm, name)
    KL = mm.kl(unit)
    idx = np.array([mm.index_of(m) for m, _ in points], dtype=np.int64)
    prev = np.full(len(idx), np.nan)
    prev[1:] = KL[idx[1:], idx[:-1]]
    to_final = KL[idx, idx[-1]]
    steps = np.array([s for _, s in points])
    # Integral steps read as integers in the CSV (10, not 10.0).
    step_col = steps.astype(np.int64) if np.all(steps == np.round(steps)) else steps
    table = pd.DataFrame({"model": [m for m, _ in points], "step": step_col, "kl_to_previous": prev,
                          "kl_to_final": to_final})
    info = {"trajectory": name, "unit": unit, "models": table["model"].tolist(), "steps": step_col.tolist(),
            "final": table["model"].iloc[-1], "n_models_in_map": mm.K, "n_texts": int(mm.n_texts),
            "text_set_id": mm.text_set_id}
    return TrajectoryResult(name, unit, table, info)


__all__ = ["TrajectoryResult", "trajectory", "trajectories", "ordered_checkpoints"]
