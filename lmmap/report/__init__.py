"""Files from results: ``write(result, outdir)`` for every analysis.

Each Result type has one writer module here, and every writer has the same
shape (built with :class:`lmmap.report.files.Files`): its tables as CSV, its
figures as PNG plus interactive HTML (one ``plotly.min.js`` per folder), and
one JSON of the parameters and provenance (lmmap version, time, text set).
Writers take arrays and tables from the result; they compute nothing a
reader could not get from the result itself, except the picture.

Writers import matplotlib/plotly only when they run, so importing this
package is light.
"""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path

from lmmap.exceptions import InputError

# Result class (module.qualname) -> the module whose ``write(result, outdir, **options)`` writes it.
WRITERS = {
    "lmmap.analyses.map.MapResult": "lmmap.report.map",
    "lmmap.analyses.place.Placement": "lmmap.report.place",
    "lmmap.analyses.adaptive.AdaptiveResult": "lmmap.report.adaptive",
    "lmmap.analyses.predict.PredictionResult": "lmmap.report.predict",
    "lmmap.analyses.errors.ErrorAnalysis": "lmmap.report.errors",
    "lmmap.analyses.stability.StabilityResult": "lmmap.report.stability",
    "lmmap.analyses.stability.StabilityComparison": "lmmap.report.stability",
    "lmmap.data.subset.Subset": "lmmap.report.select",
    "lmmap.analyses.scale.ScaleResult": "lmmap.report.scale",
    "lmmap.analyses.trajectory.TrajectoryResult": "lmmap.report.trajectory",
    "lmmap.analyses.lineage.LineageResult": "lmmap.report.lineage",
    "lmmap.analyses.lineage.ProvenanceResult": "lmmap.report.provenance",
}


def writer_for(result):
    """The writer module of ``result``'s type (or of its nearest base class that has one)."""
    if any(f"{c.__module__}.{c.__qualname__}" == "lmmap.map.ModelMap" for c in type(result).__mro__):
        # A map is the input of analyses, not a result: its files need the embedding, neighbours and lineage.
        raise InputError("a ModelMap is not a result: build its map first, "
                         "report.write(lmmap.analyses.map.build_map(mm, ...), outdir)", params=("result",))
    for cls in type(result).__mro__:
        module = WRITERS.get(f"{cls.__module__}.{cls.__qualname__}")
        if module is not None:
            return importlib.import_module(module)
    raise InputError(f"no writer for a {type(result).__name__}; results that can be written: "
                     + ", ".join(sorted(k.rsplit(".", 1)[1] for k in WRITERS)), params=("result",))


def write(result, outdir: str | os.PathLike, **options) -> dict[str, Path]:
    """Write ``result``'s tables, figures and parameters under ``outdir``; returns ``{file name: path}``.

    ``options``: how to present it (``color_by``, ``unit`` ...), each a keyword of its writer's ``write``;
    one a writer does not take is refused, naming those it does, rather than silently ignored.
    """
    writer = writer_for(result)
    accepted = [p.name for p in inspect.signature(writer.write).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise InputError(f"the writer of a {type(result).__name__} takes no option {unknown[0]!r}; it takes "
                         + (", ".join(accepted) if accepted else "none"), params=("options",))
    return writer.write(result, outdir, **options)


__all__ = ["WRITERS", "write", "writer_for"]
