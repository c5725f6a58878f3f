"""The files of a subset (:class:`lmmap.data.subset.Subset`): ``write(subset, outdir)``.

``SUBSET.json`` (the subset itself, :meth:`Subset.save`: a data file that
``lmmap map --subset``, ``lmmap add`` and ``ModelMap.from_store`` read back)
and, with ``texts=True``, ``texts.jsonl``: the d texts to score elsewhere.
``lmmap select -o SUBSET.json`` writes the same file under a name of the user's choosing.
"""

from __future__ import annotations

import os
from pathlib import Path


def write(subset, outdir: str | os.PathLike, *, texts: bool = False, store=None) -> dict[str, Path]:
    """Write ``SUBSET.json`` (and ``texts.jsonl`` with ``texts``; from ``store`` unless the subset carries them)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {"SUBSET.json": subset.save(outdir / "SUBSET.json")}
    if texts:
        paths["texts.jsonl"] = subset.save_texts(outdir / "texts.jsonl", store)
    return paths
