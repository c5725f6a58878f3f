"""Data: the text set, the store of vectors, subset files, other formats, and the one atomic-write helper.

- :mod:`~lmmap.data.texts` — the fixed text set and its identity
- :mod:`~lmmap.data.store` — one Parquet file per model, transactional (stage → journal → rename)
- :mod:`~lmmap.data.subset` — ``SUBSET.json``: the texts of a resampled map with counts, π and weights
- :mod:`~lmmap.data.formats` — readers of other formats (the authors' pickles, NPZ, Parquet, CSV, JSONL)
- :mod:`~lmmap.data.transfer` — import into and export from a store
- :mod:`~lmmap.data.conventions` — the scoring conventions and their one check (no heavy imports)
- :mod:`~lmmap.data.atomic` — every file lmmap writes goes through it
"""
