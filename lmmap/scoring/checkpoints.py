"""Training checkpoints as models of one trajectory (issue 15 §1; torch-free).

``lmmap score MODEL --revisions step1000,step2000`` scores hub revisions of
one model (Pythia-style branches), ``lmmap score DIR... --trajectory NAME``
local checkpoint directories. Each checkpoint is a model of its own in the
store, named ``MODEL@REVISION`` (``NAME@DIRNAME``), with the metadata columns
``trajectory`` and ``step`` that :mod:`lmmap.analyses.trajectory` and the
map read. A step is the last number in the revision or directory name
(``step1000`` → 1000, ``checkpoint-500`` → 500; see :func:`step_of`) unless
``steps`` gives them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lmmap.exceptions import InputError


@dataclass
class Checkpoint:
    """One checkpoint to score: where it is, what it is stored as, and its place in the trajectory."""

    source: str
    name: str
    revision: str | None
    trajectory: str
    step: float

    @property
    def metadata(self) -> dict:
        step = int(self.step) if float(self.step).is_integer() else self.step
        return {"trajectory": self.trajectory, "step": step}


MAX_STEP = 2**53


def split_list(value, what: str) -> list[str] | None:
    """``"a,b"`` or a sequence → a list of non-empty strings (None stays None)."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v).strip() for v in value]
    if not items or not all(items):
        raise InputError(f"{what} must be a comma-separated list without empty entries, got {value!r}", params=(what,))
    return items


def step_of(label: str) -> float | None:
    """The step a checkpoint's name ends with, or None.

    The number must end the name and follow a separator or a word that
    means a step: ``step1000``, ``checkpoint-500``, ``global_step7``,
    ``run_3`` give 1000, 500, 7, 3; ``tiny-gpt2``, ``final``, ``step1k`` give
    None (a model's own number is not a step).
    """
    m = re.search(r"(\d+(?:\.\d+)?)$", label)
    if not m:
        return None
    head = label[: m.start()]
    if head and head[-1] not in "-_@/. " and not re.search(r"(step|checkpoint|ckpt|iter|iteration|epoch)$", head.lower()):
        return None
    return float(m.group(1))


def expand_checkpoints(models: Sequence[str], *, revisions=None, trajectory: str | None = None, steps=None,
                       names: Sequence[str] | None = None, default_name=None) -> list[Checkpoint] | None:
    """The checkpoints named by ``revisions`` or ``trajectory`` (None when neither is given).

    Parameters
    ----------
    models : one hub id with ``revisions``; local checkpoint directories (or
        hub ids) with ``trajectory``.
    revisions : hub revisions (branches, tags, commits) of the one model.
    trajectory : the trajectory's name (default with ``revisions``: the
        model's stored name).
    steps : the step of each checkpoint, in order (default: the last number
        of each revision or directory name).
    names : with ``revisions``, the one name the checkpoints are stored
        under (``NAME@REVISION``).
    default_name : ``source → name`` for a model given without ``names``.
    """
    revisions = split_list(revisions, "revisions")
    step_list = split_list(steps, "steps")
    if revisions is None and trajectory is None:
        if step_list is not None:
            raise InputError("steps needs revisions or trajectory: give one of them too", params=("steps",))
        return None
    if trajectory is not None and not str(trajectory).strip():
        raise InputError("trajectory must be a non-empty name", params=("trajectory",))
    if revisions is not None:
        if len(models) != 1:
            raise InputError(f"revisions are revisions of one hub model; {len(models)} models were given",
                             params=("revisions",))
        if Path(models[0]).expanduser().is_dir():
            raise InputError(f"model {models[0]!r} is a local directory: revisions are for hub models; score local "
                             "checkpoint directories with {trajectory=NAME}", params=("revisions", "trajectory"))
        base = names[0] if names else (default_name or str)(models[0])
        labels, sources, revs = revisions, [models[0]] * len(revisions), revisions
        traj = str(trajectory).strip() if trajectory is not None else base
        out_names = [f"{base}@{r}" for r in revisions]
    else:
        if names:
            raise InputError(f"trajectory cannot be combined with {{names={names[0]}}}: the checkpoints are stored as "
                             "TRAJECTORY@DIRECTORY", params=("names", "trajectory"))
        traj = str(trajectory).strip()
        labels = [Path(m).expanduser().resolve().name if Path(m).expanduser().exists() else m.rstrip("/").split("/")[-1]
                  for m in models]
        sources, revs = list(models), [None] * len(models)
        out_names = [f"{traj}@{lab}" for lab in labels]
    if step_list is not None:
        if len(step_list) != len(sources):
            raise InputError(f"{len(step_list)} steps for {len(sources)} checkpoints: give one step per checkpoint",
                             params=("steps",))
        try:
            step_values = [float(s) for s in step_list]
        except ValueError:
            raise InputError(f"steps must be numbers, got {','.join(step_list)!r}", params=("steps",)) from None
    else:
        step_values = [step_of(lab) for lab in labels]
        missing = [lab for lab, s in zip(labels, step_values) if s is None]
        if missing:
            raise InputError(f"no step number in {missing[0]!r}: name checkpoints by their step (step1000, "
                             "checkpoint-1000) or give each checkpoint's step: {steps=S},S,...", params=("steps",))
    for lab, v in zip(labels, step_values):
        # A step is a count of training steps: NaN, inf or a negative one cannot order a trajectory, and one past
        # 2**53 is no longer an exact number (stored, it turned the whole step column into text).
        if not (math.isfinite(v) and 0 <= v <= MAX_STEP):
            raise InputError(f"steps must be numbers from 0 to {MAX_STEP:,} (training steps); {lab!r} has {v:g}",
                             params=("steps",))
    return [Checkpoint(src, n, r, traj, s) for src, n, r, s in zip(sources, out_names, revs, step_values)]
