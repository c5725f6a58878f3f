"""The files of one pair's provenance test (:class:`lmmap.analyses.lineage.ProvenanceResult`).

``provenance.json`` (the pair, the statistic, its p-values, the reading and which way the pair points, with
the test's parameters and provenance) and ``evidence.csv`` (the texts that carry the evidence: position and
contribution, largest first): ``lmmap.report.write(lmmap.analyses.lineage.provenance(mm, a, b), outdir)``.
"""

from __future__ import annotations

import os
from pathlib import Path

from lmmap.report.files import Files


def write(result, outdir: str | os.PathLike) -> dict[str, Path]:
    files = Files(outdir)
    files.table("evidence.csv", result.texts)
    fields = ("a", "b", "rho", "statistic", "p_value", "p_adjusted", "reading", "ancestor", "direction_t")
    files.json("provenance.json", {**{f: getattr(result, f) for f in fields}, **result.info},
               text_set_id=result.info.get("text_set_id"))
    return files.paths
