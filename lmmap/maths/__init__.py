"""The numeric core: arrays in, arrays out (numpy and scipy; no files, data frames, torch or printing).

- :mod:`~lmmap.maths.geometry` — clip, double-centre (``L → Q``), weighted features ``Q W^{1/2}``, squared
  distances ``g_ij`` (incl. cross blocks), KL ``= g/(2N)`` (the one copy of the formula), neighbours
- :mod:`~lmmap.maths.knn` — the ``k`` nearest models without a K×K matrix: blocked exact products, or a
  randomized projection whose candidates are re-ranked exactly (recall@k measured on a sample)
- :mod:`~lmmap.maths.resampling` — text importance ``π`` (uniform, LS, KL), draws, weights ``w = c/(nπ)``,
  closed-form errors
- :mod:`~lmmap.maths.bootstrap` — the one Welford bootstrap loop; standard errors of ``g̃`` (K×K, and the
  cross block of new models against a map's)
- :mod:`~lmmap.maths.errors` — ``τ²``, ``σ̂``, ``κ̂`` (Table 1 and the error curves)
- :mod:`~lmmap.maths.stability` — Procrustes alignment, position moments, the one ellipse
- :mod:`~lmmap.maths.ridge` — kernel ridge paths, folds, ``α`` selection, cross-validation; ridge with ``α``
  by closed-form leave-one-out (the adaptive estimator's prediction)
- :mod:`~lmmap.maths.embedding` — 2-D embeddings (MDS, t-SNE, PCA) that can place new points
"""
