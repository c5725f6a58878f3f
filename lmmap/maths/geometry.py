"""The numeric core of the model map: arrays in, arrays out, no I/O.

Symbols follow the papers (SPEC §1, §3, §4):

* ``L`` (K×N): ``L[i, s] = log p_i(x_s)``, total log-likelihood of text s
  under model i.
* ``Q`` (K×N): ``L`` clipped, then double-centred (rows first, then
  columns); row ``q_i`` is the coordinate of model i.
* ``w`` (d,): weights of resampled texts, ``w_t = c(u_t) / (n π_{u_t})``;
  ``w = None`` means every text has weight 1 (the full text set).
* ``g_ij = ‖q_i − q_j‖²_w = Σ_t w_t (q_i(x_t) − q_j(x_t))²`` and
  ``KL(p_i, p_j) ≈ g_ij / (2N)``.

Everything K×K is computed from a Gram matrix, never a pair loop.
"""

from __future__ import annotations

import numpy as np

from lmmap.exceptions import InputError

DEFAULT_CLIP_PERCENTILE = 2.0


def check_matrix(X, name: str = "L", *, columns: str = "texts", min_rows: int = 1, finite: bool = False) -> np.ndarray:
    """``X`` as a float64 (rows × ``columns``) matrix, or an :class:`InputError` naming ``name``.

    The one check behind every numeric entry point: 2-D, at least ``min_rows``
    rows and one column and, with ``finite``, no NaN or ±inf (the Gram
    products would spread a single one over a whole row of distances).
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise InputError(f"{name} must be a 2-D (models × {columns}) array, got shape {X.shape}", params=("X", name))
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"{name} is empty (shape {X.shape}): it needs at least one model and one {columns[:-1]}", params=("X", name))
    if X.shape[0] < min_rows:
        raise InputError(f"{name} needs at least {min_rows} models, got shape {X.shape}", params=("X", name))
    if finite and not np.all(np.isfinite(X)):
        i = int(np.argwhere(~np.isfinite(X))[0, 0])
        raise InputError(f"{name} has a non-finite value in row {i}: re-score that model or drop it", params=(name,))
    return X


def _as_weights(w, n_texts: int) -> np.ndarray | None:
    if w is None:
        return None
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (n_texts,):
        raise InputError(f"w must have one weight per text ({n_texts}), got shape {w.shape}", params=("w", "n_texts"))
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise InputError("w must be finite, non-negative and not all zero", params=("w",))
    return w


def check_finite(L, names=None) -> None:
    """Raise a ValueError naming the first model whose row of ``L`` holds NaN or ±inf."""
    L = np.asarray(L)
    if L.size > CLIP_SAMPLE_ENTRIES and np.isfinite(L.sum(dtype=np.float64)):
        return  # one float64 sum reads a large L once without a K×N mask; NaN and ±inf survive it
    bad = ~np.isfinite(L)
    if bad.any():
        i, s = np.argwhere(bad)[0]
        who = f"model {names[i]!r}" if names is not None else f"row {i}"
        raise InputError(
            f"{who} has a non-finite log-likelihood ({L[i, s]}) at text {s} "
            f"({int(bad[i].sum())} such values in that row); re-score it or drop it", params=("L",)
        )


def clip_threshold(L, percentile: float = DEFAULT_CLIP_PERCENTILE) -> float:
    """The clipping threshold: the ``percentile``-th percentile of all entries of ``L``."""
    L = check_matrix(L)
    if not 0 <= percentile <= 100:
        raise InputError(f"percentile must be in [0, 100], got {percentile}", params=("percentile",))
    return float(np.percentile(L, percentile))


def clip(L, threshold: float | None) -> np.ndarray:
    """Raise every entry of ``L`` below ``threshold`` to it (``None``: no clipping)."""
    L = check_matrix(L)
    if threshold is None:
        return L.copy()
    return np.maximum(L, threshold)


# Past this many entries the clipping percentile is taken on an evenly strided sample of ``L`` (this many
# entries): the exact percentile of 10⁹ log-likelihoods needs a copy of them all and a partition (4–8 GB, tens
# of seconds), while the sample's lands within a hundredth of a nat of it on log-likelihood matrices.
CLIP_SAMPLE_ENTRIES = 20_000_000
# Rows of ``L`` converted to float64 at a time by :func:`double_center_float32`.
_CENTER_BLOCK_BYTES = 64 << 20


def clip_threshold_sampled(L, percentile: float = DEFAULT_CLIP_PERCENTILE, max_entries: int = CLIP_SAMPLE_ENTRIES) -> float:
    """:func:`clip_threshold` of a large ``L`` (any float dtype, a memory map too) without copying it.

    Up to ``max_entries`` entries it is exactly :func:`clip_threshold`; beyond, the percentile of every
    ``⌈K·N / max_entries⌉``-th entry in row-major order (deterministic: the same ``L`` gives the same threshold).
    """
    L = np.asarray(L)
    if not 0 <= percentile <= 100:
        raise InputError(f"percentile must be in [0, 100], got {percentile}", params=("percentile",))
    if L.size <= max_entries:
        return clip_threshold(L, percentile)
    step = -(-L.size // max_entries)
    return float(np.percentile(np.asarray(L.reshape(-1)[::step], dtype=np.float64), percentile))


def double_center_float32(L, threshold: float | None, w=None, *, block_bytes: int = _CENTER_BLOCK_BYTES) -> np.ndarray:
    """``Q = double_center(clip(L, threshold), w)`` held in float32, for maps too large for float64.

    ``L`` (K×d, float32 or float64, a memory map too) is read in blocks of rows, each converted to float64:
    the row means (``w``-weighted), the column means and every entry of ``Q`` are computed in float64 and
    only the result is rounded to float32 (a relative error of 2⁻²⁴ ≈ 6e-8 per entry of ``Q``). Memory:
    ``Q`` itself and one block.
    """
    L = np.asarray(L)
    if L.ndim != 2 or 0 in L.shape:
        raise InputError(f"L must be a non-empty 2-D (models × texts) array, got shape {L.shape}", params=("L",))
    K, d = L.shape
    w = _as_weights(w, d)
    rows = max(1, block_bytes // (8 * d))
    row_mean = np.empty(K)
    col_sum = np.zeros(d)
    for s in range(0, K, rows):
        B = np.array(L[s:s + rows], dtype=np.float64)
        if threshold is not None:
            np.maximum(B, threshold, out=B)
        row_mean[s:s + rows] = B.mean(axis=1) if w is None else (B @ w) / w.sum()
        col_sum += B.sum(axis=0)
    col_mean = (col_sum - row_mean.sum()) / K
    Q = np.empty((K, d), dtype=np.float32)
    for s in range(0, K, rows):
        B = np.array(L[s:s + rows], dtype=np.float64)
        if threshold is not None:
            np.maximum(B, threshold, out=B)
        B -= row_mean[s:s + rows, None]
        B -= col_mean[None, :]
        Q[s:s + rows] = B
    return Q


def double_center(L, w=None) -> np.ndarray:
    """``Q``: centre each row of ``L`` by its (``w``-weighted) mean over texts, then each column by its mean over models.

    With resampled texts the row mean is ``Σ_t w_t L_it / Σ_t w_t`` (SPEC §4);
    the column mean is the plain mean over the K models.
    """
    L = check_matrix(L)
    w = _as_weights(w, L.shape[1])
    if w is None:
        row_mean = L.mean(axis=1, keepdims=True)
    else:
        row_mean = (L @ w)[:, None] / w.sum()
    Q = L - row_mean
    Q -= Q.mean(axis=0, keepdims=True)
    return Q


def weighted_features(Q, w=None) -> np.ndarray:
    """``Q W^{1/2}``: features whose plain Euclidean distances equal the ``w``-weighted ones."""
    if np.asarray(Q).dtype == np.float32:
        Q = np.asarray(Q)  # a float32 map (double_center_float32) stays float32: K·d may be 10⁹ entries
        if Q.ndim != 2:
            raise InputError(f"Q must be a 2-D (models × texts) array, got shape {Q.shape}", params=("Q",))
        w = _as_weights(w, Q.shape[1])
        return Q if w is None else Q * np.sqrt(w).astype(np.float32)[None, :]
    Q = check_matrix(Q, "Q")
    w = _as_weights(w, Q.shape[1])
    return Q if w is None else Q * np.sqrt(w)[None, :]


def distances_from_gram(a, b, gram) -> np.ndarray:
    """``a_i + b_j − 2·gram_ij``: squared distances from inner products, the one copy of the formula.

    ``gram`` holds ``⟨x_i, y_j⟩`` and ``a``, ``b`` the squared norms of the
    two sets of rows (the diagonal of ``gram`` when both sets are the same).
    Rounding is left as it falls: callers decide whether to clip at 0.
    """
    return a[:, None] + b[None, :] - 2.0 * gram


def squared_distances(Q, w=None, *, dtype=np.float64, nonnegative: bool = True) -> np.ndarray:
    """``G`` (K×K) with ``G_ij = g_ij = Σ_t w_t (q_i(x_t) − q_j(x_t))²``, from the Gram matrix.

    ``g_ij = a_i + a_j − 2 (Q W Qᵀ)_ij`` with ``a_i = Σ_t w_t q_i(x_t)²``.
    Rounding can make tiny entries negative; they are set to 0
    (``nonnegative``) and the diagonal to exactly 0. ``dtype=np.float32``
    forms the Gram product in float32 (then float64): it exists to measure
    what that rounding would cost (:func:`lmmap.analyses.errors.float32_rounding_error`),
    which is why clipping can be switched off there.
    """
    X = weighted_features(Q, w)
    if np.dtype(dtype) == np.float64:
        gram = X @ X.T
    else:
        X = X.astype(dtype)
        gram = (X @ X.T).astype(np.float64)
    a = np.diag(gram).copy()
    G = distances_from_gram(a, a, gram)
    if nonnegative:
        np.maximum(G, 0.0, out=G)
    np.fill_diagonal(G, 0.0)
    return G


def cross_squared_distances(X_rows, X_cols) -> np.ndarray:
    """``g_ij = ‖x_i − x_j‖²`` between the rows of ``X_rows`` (m×d) and of ``X_cols`` (K×d), from Gram products.

    With features ``Q̃ W^{1/2}`` (:func:`weighted_features`) these are the
    weighted distances ``g̃_ij``. Negative rounding is set to 0.
    """
    X_rows = np.asarray(X_rows, dtype=np.float64)
    X_cols = np.asarray(X_cols)
    a = np.einsum("ij,ij->i", X_rows, X_rows)
    K, d = X_cols.shape
    out = np.empty((X_rows.shape[0], K))
    # X_cols a block of rows at a time in float64: a float32 map of 10⁵ models is not copied whole (8 GB)
    step = max(1, _CENTER_BLOCK_BYTES // (8 * max(d, 1)))
    for s in range(0, K, step):
        B = np.asarray(X_cols[s:s + step], dtype=np.float64)
        out[:, s:s + step] = distances_from_gram(a, np.einsum("ij,ij->i", B, B), X_rows @ B.T)
    return np.maximum(out, 0.0, out=out)


def kl_from_squared_distances(G, n_texts: int) -> np.ndarray:
    """``KL(p_i, p_j) ≈ g_ij / (2N)`` where N is the size of the full text set ``D_N``.

    The one copy of the formula: every KL of lmmap (matrices, neighbour lists, cross blocks, standard errors —
    a standard error scales as its estimate — and the MDS scale, ``kl_from_squared_distances(1, N)``) goes
    through it. ``G``: an array or a number (then a numpy float).
    """
    if n_texts <= 0:
        raise InputError(f"n_texts (N) must be positive, got {n_texts}", params=("n_texts",))
    return np.asarray(G, dtype=np.float64) / (2.0 * n_texts)


def nearest_neighbors(D, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row of a K×K dissimilarity ``D``, the ``k`` nearest other rows.

    Returns ``(index, value)``, both K×k, sorted by increasing dissimilarity
    (ties broken by index, so results are reproducible).
    """
    D = np.asarray(D, dtype=np.float64)
    K = D.shape[0]
    if D.shape != (K, K):
        raise InputError(f"D must be square, got shape {D.shape}", params=("D",))
    if K < 2:
        raise InputError("neighbours need at least 2 models", params=("D",))
    k = int(min(k, K - 1))
    if k < 1:
        raise InputError("k must be at least 1", params=("k",))
    masked = D.copy()
    np.fill_diagonal(masked, np.inf)
    # A stable sort, not argpartition: argpartition keeps an arbitrary subset of the models tied at the k-th
    # value, so the ties would not be broken by index (K ≤ a few thousand here; lmmap.maths.knn beyond).
    idx = np.argsort(masked, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(masked, idx, axis=1)


def map_coordinates(L, threshold: float | None = None, w=None, clip_percentile: float | None = DEFAULT_CLIP_PERCENTILE):
    """Clip and double-centre ``L`` in one call; returns ``(Q, threshold)``.

    ``threshold`` given: clip with it (a stored map threshold). Otherwise, if
    ``clip_percentile`` is not None, compute it from ``L``; ``None`` for both
    switches clipping off.
    """
    L = check_matrix(L)
    if threshold is None and clip_percentile is not None:
        threshold = clip_threshold(L, clip_percentile)
    return double_center(clip(L, threshold), w), threshold
