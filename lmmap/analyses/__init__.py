"""Analyses of a map: each takes a :class:`lmmap.ModelMap` and returns a Result; none writes files or prints.

- :mod:`~lmmap.analyses.map` — the map itself: coordinates, neighbours and KL, their errors, lineage → ``MapResult``
- :mod:`~lmmap.analyses.select` — importance resampling of texts → :class:`~lmmap.data.subset.Subset`
- :mod:`~lmmap.analyses.place` — new models placed into a map → ``Placement``
- :mod:`~lmmap.analyses.adaptive` — new models scored in rounds until their KL is known → ``AdaptiveResult``
- :mod:`~lmmap.analyses.errors` — Table 1 and the error curves → ``ErrorAnalysis``
- :mod:`~lmmap.analyses.stability` — maps from resampled texts, Table 3 and ellipses → ``StabilityResult``
- :mod:`~lmmap.analyses.predict` — ridge prediction of benchmark scores → ``PredictionResult``
- :mod:`~lmmap.analyses.scale` — reference points for reading a KL (fine-tune↔base, unrelated, ...) → ``ScaleResult``
- :mod:`~lmmap.analyses.trajectory` — KL along a training run's checkpoints → ``TrajectoryResult``
- :mod:`~lmmap.analyses.lineage` — which model came from which: a test of every pair → ``LineageResult``;
  ``provenance(mm, a, b)`` for one pair → ``ProvenanceResult``

``lmmap.report.write(result, outdir)`` turns any of them into files.
"""
