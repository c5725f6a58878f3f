"""Progress of long work, as events: the library reports, the caller draws.

Long-running functions take ``progress=None | callable``. The callable gets
one :class:`Step` per update; the library never builds a progress bar or
prints. The command line turns steps into rich bars with rate and ETA
(:mod:`lmmap.cli._progress`); a notebook can pass ``print`` or its own
widget.

A *task* is one bar (``"scoring gpt2"``, ``"trials"``); ``done`` and
``total`` are cumulative counts in ``unit``. A step with ``message`` and no
task is a line to show (a stage starting, a note on what was kept).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass(frozen=True)
class Step:
    """One progress event.

    ``info``: what else to show. Integers are counters, shown with their rate
    (``{"texts": 120, "texts_total": 1000}``: 120/1,000 texts, texts/s);
    floats are readings shown as they are (``{"loss": 2.31}``).
    """

    task: str | None = None
    done: float = 0
    total: float | None = None
    unit: str = "items"
    info: dict = field(default_factory=dict)
    message: str | None = None
    finished: bool = False
    params: tuple[str, ...] = ()  # parameters the message names (the CLI shows their flags; see lmmap.exceptions)

    def __str__(self) -> str:
        # ``message`` keeps its parameter mentions in braces for the CLI; Python readers get the Python names.
        from lmmap.params import python_message

        message = python_message(self.message, self.params) if self.message else self.message
        if self.task is None:
            return message or ""
        total = "" if self.total is None else f"/{self.total:g}"
        return f"{self.task}: {self.done:g}{total} {self.unit}" + (f" — {message}" if message else "")


ProgressFn = Optional[Callable[[Step], None]]


def format_rate(per_second: float) -> str:
    """A rate as every line shows it (the bar and the line after it agree: ``198.3 texts/s`` in both):
    one decimal below 1,000, whole numbers with thousands separators from 1,000 on."""
    return f"{per_second:,.1f}" if abs(per_second) < 999.95 else f"{per_second:,.0f}"


def say(progress: ProgressFn, message: str, params: tuple[str, ...] = ()) -> None:
    """Send a one-line message (no bar) to ``progress``, if any; ``params``: the parameters it names."""
    if progress is not None:
        progress(Step(message=message, params=tuple(params)))


class Tracker:
    """Counts work done on one task and reports each update to ``progress``.

    Thread-safe: workers of a parallel map may call :meth:`advance` at once.
    Use as a context manager; leaving it sends a ``finished`` step.
    """

    def __init__(self, progress: ProgressFn, task: str, total: float | None, unit: str = "items"):
        self.progress, self.task, self.total, self.unit = progress, task, total, unit
        self.done = 0.0
        self.info: dict = {}
        self._lock = threading.Lock()

    def advance(self, amount: float = 1, **info) -> None:
        if self.progress is None:
            return
        with self._lock:
            self.done += amount
            self.info.update(info)
            self.progress(Step(self.task, self.done, self.total, self.unit, dict(self.info)))

    def __enter__(self) -> "Tracker":
        if self.progress is not None:
            self.progress(Step(self.task, 0, self.total, self.unit))
        return self

    def __exit__(self, *exc) -> bool:
        if self.progress is not None:
            self.progress(Step(self.task, self.done, self.total, self.unit, dict(self.info), finished=True))
        return False
