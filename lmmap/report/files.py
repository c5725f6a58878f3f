"""The one shape of a report folder: CSV tables, PNG + HTML figures, a JSON of parameters and provenance.

Every file is written atomically (:mod:`lmmap.data.atomic`): a reader never
sees half a table, and an interrupted writer leaves the previous file.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from pathlib import Path

import numpy as np

from lmmap._version import __version__
from lmmap.data.atomic import atomic_write


def provenance(**extra) -> dict:
    """What produced a report: lmmap's version and the time, plus ``extra`` (text set id, store ...)."""
    return {
        "lmmap_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        f = float(o)
        return None if not math.isfinite(f) else f
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    return str(o)


def to_json(payload: dict) -> str:
    """``payload`` as indented JSON; numpy scalars and arrays, paths and sets become plain values."""
    return json.dumps(payload, indent=2, default=_jsonable) + "\n"


class Files:
    """The files of one report, written under ``outdir`` and collected in :attr:`paths` (name → path)."""

    def __init__(self, outdir: str | os.PathLike):
        self.outdir = Path(outdir)
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.paths: dict[str, Path] = {}

    def path(self, name: str) -> Path:
        """Reserve ``name`` (for a file another function writes, e.g. a figure) and return its path."""
        self.paths[name] = self.outdir / name
        return self.paths[name]

    def table(self, name: str, df, index: bool = False) -> Path:
        """``df`` as CSV (``index``: write the data frame's index as the first column)."""
        return self.text(name, df.to_csv(index=index))

    def json(self, name: str, params: dict, **provenance_extra) -> Path:
        """The parameters of the analysis with their provenance under ``"provenance"``."""
        payload = {**params, "provenance": provenance(**provenance_extra)}
        return self.text(name, to_json(payload))

    def parquet(self, name: str, df) -> Path:
        """``df`` as a Parquet file (pyarrow; no index), written atomically like every other file."""
        import io

        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return self.text(name, buf.getvalue())

    def text(self, name: str, data: str | bytes) -> Path:
        atomic_write(self.path(name), data)
        return self.paths[name]

    def figure(self, stem: str, draw_png, draw_html=None) -> None:
        """``stem``.png by ``draw_png(path)`` and, when given, ``stem``.html by ``draw_html(path)``.

        The HTML loads ``plotly.min.js`` from its folder (written once per folder
        by :mod:`lmmap.report.plots`), or from the session's shared folder
        (``LMMAP_PLOTLY_JS_DIR``), so it is listed too, where it is.
        """
        draw_png(self.path(f"{stem}.png"))
        if draw_html is not None:
            from lmmap.report.plots import PLOTLY_JS, plotly_js_for

            draw_html(self.path(f"{stem}.html"))
            self.paths[PLOTLY_JS] = plotly_js_for(self.outdir)[0]
