"""Progress bars for the command line: rich bars drawn from the library's :class:`~lmmap.progress.Step` events.

The library reports (``progress=callable``); this is the only place that draws.
A bar shows its counts, the rate (per second, in the task's unit and in any
counter in ``info``, e.g. texts/s beside tokens/s) and the ETA.
"""

from __future__ import annotations

import threading
import time

from lmmap.progress import Step, format_rate


def _rate(x: float, seconds: float) -> str:
    return format_rate(x / max(seconds, 1e-9))


class RichProgress:
    """``with RichProgress(console) as progress: lmmap_function(..., progress=progress)``.

    ``enabled=False`` draws no bars but still prints messages (a step with no task).
    """

    def __init__(self, console, enabled: bool = True, messages: bool = True):
        self.console, self.enabled, self.messages = console, enabled, messages
        self._bar = None
        self._started = False  # a bar that never gets a task is never drawn (it would leave a blank line)
        self._tasks: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> "RichProgress":
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=self.console, transient=False,
            )
        return self

    def __exit__(self, *exc) -> bool:
        if self._bar is not None and self._started:
            self._bar.stop()
        return False

    def __call__(self, step: Step) -> None:
        from lmmap.params import cli_message
        from lmmap.cli._app import lit

        with self._lock:
            if step.task is None:
                if self.messages and step.message:
                    self.console.print(lit(cli_message(step.message, step.params)), highlight=False)
                return
            if self._bar is None:
                return
            if not self._started:
                self._bar.start()
                self._started = True
            if step.task not in self._tasks:
                task_id = self._bar.add_task(lit(step.task), total=step.total, detail="")
                self._tasks[step.task] = (task_id, time.perf_counter())
            task_id, start = self._tasks[step.task]
            self._bar.update(task_id, completed=step.done, total=step.total, detail=self._detail(step, start))
            if step.finished:
                del self._tasks[step.task]

    @staticmethod
    def _detail(step: Step, start: float) -> str:
        elapsed = time.perf_counter() - start
        # Integers in info are counters (shown with their rate); floats are readings (a loss), shown as they are.
        readings = {k: v for k, v in step.info.items() if isinstance(v, float)}
        counters = {k: v for k, v in step.info.items() if not k.endswith("_total") and k not in readings}
        counted = {k: v for k, v in counters.items() if f"{k}_total" in step.info}
        # The counts people follow: the counters with a total ("120/1,000 texts"), else the task's own unit
        # ("30/60 steps"); what the bar measures (tokens, for an honest ETA) shows as a rate.
        parts = [f"{v:,.0f}/{step.info[f'{k}_total']:,.0f} {k}" for k, v in counted.items()]
        if not counted:
            parts.append(f"{step.done:,.0f}" + (f"/{step.total:,.0f}" if step.total is not None else "") + f" {step.unit}")
        from lmmap.cli._app import sig

        parts += [f"{k} {sig(v)}" for k, v in readings.items()]  # loss 6.00 beside loss 6.06, not loss 6
        if elapsed > 0.5 and step.done:
            rates = [f"{_rate(v, elapsed)} {k}/s" for k, v in counters.items()]
            if step.unit not in counters and (counted or not counters):
                rates.append(f"{_rate(step.done, elapsed)} {step.unit}/s")
            parts.append(" ".join(rates))
        return " · ".join(parts)
