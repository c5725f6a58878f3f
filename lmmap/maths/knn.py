"""Nearest models without a K×K matrix: an exact blocked search and a randomised approximate one.

Symbols follow the papers (SPEC §1, §3) and :mod:`lmmap.maths.geometry`:

* ``Q`` (K×N): the double-centred log-likelihoods, row ``q_i`` the coordinate
  of model i (or ``Q W^{1/2}`` on a resampled subset,
  :func:`~lmmap.maths.geometry.weighted_features`: every function here takes
  any K×d feature matrix ``X`` whose Euclidean distances are the map's).
* ``g_ij = ‖q_i − q_j‖² = A_i + A_j − 2⟨q_i, q_j⟩`` with ``A_i = ‖q_i‖²``, and
  ``KL(p_i, p_j) ≈ g_ij / (2N)``.

Neither search ever holds K×K numbers: the exact one forms tiles of the
upper triangle of the Gram matrix one at a time (K²·N flops; a block of
query rows × all K rows, 2·m·K·N, for m chosen rows), the approximate one
searches all K rows in r ≪ N dimensions (2·K²·r flops) and then computes
``g`` exactly for C candidates per row only (2·K·C·N flops).

**Approximate search** (:func:`approximate_knn`). A randomised SVD gives
``r`` orthonormal directions ``V`` (N×r) and the coordinates ``Z = Q V``
(K×r; ``= U·S`` for an exact SVD), with ``a_i = ‖z_i‖²`` and the part of
each row the projection discards, ``ρ_i = A_i − a_i = ‖(I − V Vᵀ) q_i‖²``.
Then exactly

    g_ij = ĝ_ij + ‖P⊥q_i − P⊥q_j‖²,   ĝ_ij = ‖z_i − z_j‖²,
    ĝ_ij ≤ g_ij ≤ ĝ_ij + (√ρ_i + √ρ_j)².

Candidates are ranked by ``ĝ_ij + ρ_i + ρ_j = A_i + A_j − 2⟨z_i, z_j⟩`` — the
residuals taken as orthogonal, as per-text noise nearly is — not by ``ĝ``
alone: when models differ in how noisy they are (they do: a small model's
log-likelihoods scatter more than a large one's), ranking by ``ĝ`` pulls
the noisiest models in as everyone's neighbours. On synthetic matrices with
per-model noise levels (``tests/synthetic.py:lowrank_L`` plus noise of a
Gamma-distributed scale per model; r = 64, 50 candidates) the recall@10 of
the candidates was 0.83 by ``ĝ`` and 0.9999 by this key (K = 3,000, N =
2,000, exact SVD), 0.92 and 0.9996 (K = 2,000, N = 1,000, the randomised
one). The
``C`` candidates of each row are then re-ranked by their exact ``g`` and the
``k`` nearest kept; a model is missed only if the key ranked it below ``C``
others. :func:`knn` measures the recall on a sample of rows against the
exact search.

**Precision** ("float32 where it is safe, float64 where it is not"). Gram
products in float32 are used only to *choose* candidates. Every ``g``
returned is computed in float64 as ``A_i + A_j − 2⟨q_i, q_j⟩`` (norms and
the dot products of each row with its candidates in float64, from ``X`` as
given), the formula and precision of
:func:`~lmmap.maths.geometry.squared_distances`; negative rounding is set to
0, as there. Against that dense float64 computation the returned values
differ by rounding only, ``|Δg| ≲ 1e-15·(A_i + A_j)`` (largest relative
difference of KL observed in the tests and the benchmark: below 1e-12).

**Ties** are broken by index, exactly: among equally distant models the lower
indices are kept and listed first, the order a stable sort of each row of
the K×K matrix gives (with float32 products: among the ``g`` computed in
float64). ``geometry.nearest_neighbors`` sorts its k entries the same way but
picks them with ``argpartition``, which keeps an arbitrary subset of the
models tied at the k-th distance; its lists and these can differ only among
exactly equidistant models, with identical distances.

**Selection** of the smallest entries of each row of a block: a threshold
from a sample of the row's columns, one comparison pass, and a sort of the
few entries below it (:func:`_smallest`); 4× faster than ``argpartition`` on
100,000-wide rows, exact whatever the sample.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np

from lmmap.exceptions import InputError
from lmmap.maths.geometry import kl_from_squared_distances
from lmmap.maths.randomness import check_random_state
from lmmap.progress import Tracker, say

# Memory for one block of rows × all K rows (its values, comparison mask and temporaries together).
BLOCK_BYTES = 256 * 2**20
# Query rows per step of the exact re-ranking: a slab of this many bytes.
RERANK_SLAB_BYTES = 2 * 2**20
# ``knn(method="auto")`` searches exactly while K²·d (the exact search's flops) is at most this: up to
# K = 4,500 models on N = 10,000 texts. Measured at K = N = 10,000 (2 cores, loaded): exact with the 90
# neighbours t-SNE needs 68 s, approximate 23 s (recall@10 1.0 on 200 rows) plus 3 s for the 90 by the
# projection's key (recall@90 0.987).
EXACT_MAX_FLOPS = 2e11
# Rows per side of a tile of the exact search over all rows (8 MB of float64 per tile).
DEFAULT_TILE = 1024
DEFAULT_N_COMPONENTS = 64
DEFAULT_N_ITER = 4
DEFAULT_N_OVERSAMPLES = 10
DEFAULT_RECALL_ROWS = 200
METHODS = ("auto", "exact", "approximate")

# Column stride of the sample that sets each row's selection threshold (:func:`_smallest`).
_STRIDE = 16


# -- checks ---------------------------------------------------------------------------------------------------------

def _check_features(X, name: str = "Q") -> np.ndarray:
    """``X`` as a float32 or float64 (K×d) array, not copied when it already is one; finite, K ≥ 2."""
    X = np.asarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if X.ndim != 2:
        raise InputError(f"{name} must be a 2-D (models × texts) array, got shape {X.shape}", params=(name,))
    if X.shape[1] == 0:
        raise InputError(f"{name} is empty (shape {X.shape}): it needs at least one text", params=(name,))
    if X.shape[0] < 2:
        raise InputError(f"neighbours need at least 2 models, {name} has shape {X.shape}", params=(name,))
    # One float64 sum reads X once without a K×N mask; NaN and ±inf survive it.
    if not np.isfinite(X.sum(dtype=np.float64)):
        bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
        if bad.size:
            raise InputError(f"{name} has a non-finite value in row {int(bad[0])}: re-score that model or drop it",
                             params=(name,))
    return X


def _check_k(k, K: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}", params=("k",))
    return int(min(k, K - 1))


def _check_rows(rows, K: int) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.ndim != 1 or not (rows.size == 0 or np.issubdtype(rows.dtype, np.integer)):
        raise InputError("rows must be a 1-D array of model indices", params=("rows",))
    rows = rows.astype(np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= K):
        raise InputError(f"rows must be model indices from 0 to {K - 1}", params=("rows",))
    return rows


def _block_rows(K: int, bytes_per_entry: int, block_rows) -> int:
    if block_rows is not None:
        if isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)) or block_rows < 1:
            raise InputError(f"block_rows must be a positive integer, got {block_rows!r}", params=("block_rows",))
        return int(block_rows)
    return max(1, BLOCK_BYTES // (K * bytes_per_entry))


def _dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise InputError(f"dtype must be float32 or float64, got {dt}", params=("dtype",))
    return dt


def row_norms(X, *, block_rows: int = 4096) -> np.ndarray:
    """``A_i = ‖x_i‖²`` in float64 (K,), accumulated in float64 whatever the dtype of ``X``."""
    X = np.asarray(X)
    A = np.empty(X.shape[0])
    for s in range(0, X.shape[0], block_rows):
        B = np.asarray(X[s:s + block_rows], dtype=np.float64)
        np.einsum("ij,ij->i", B, B, out=A[s:s + block_rows])
    return A


# -- selection ------------------------------------------------------------------------------------------------------

def _smallest_by_partition(D: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_smallest` by ``argpartition``: for short rows, and rows the sampled threshold failed."""
    if n >= D.shape[1]:
        part = np.argsort(D, axis=1, kind="stable")[:, :n]
        return part, np.take_along_axis(D, part, axis=1)
    part = np.argpartition(D, n - 1, axis=1)[:, :n]
    vals = np.take_along_axis(D, part, axis=1)
    # argpartition keeps an arbitrary subset of the entries tied with the n-th value: where some were left out,
    # a stable sort of the row makes the lowest indices win.
    nth = vals.max(axis=1)
    tied = np.count_nonzero(D <= nth[:, None], axis=1) > n
    if tied.any():
        sub = D[tied]
        part[tied] = np.argsort(sub, axis=1, kind="stable")[:, :n]
        vals[tied] = np.take_along_axis(sub, part[tied], axis=1)
    order = np.lexsort((part, vals), axis=1)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def _smallest(D: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` smallest entries of each row of ``D``, sorted by (value, index): ``(index, value)``, exactly.

    A threshold per row from every :data:`_STRIDE`-th column (its q-th
    smallest, q chosen so that about 2n entries of the whole row lie below),
    one comparison pass, and a sort of the few entries under it: 1.2 ns per
    entry of a 134×100,000 float32 block against 4.6–7 ns for
    ``argpartition`` (which also leaves ties at the n-th value to chance).
    The result does not depend on the sample: every entry up to the n-th
    smallest lies under any threshold with at least n entries under it, and
    rows with fewer go to ``argpartition``.
    """
    b, K = D.shape
    if K < 32 * n:
        return _smallest_by_partition(D, n)
    sub = D[:, ::_STRIDE]
    q = min(sub.shape[1] - 1, -(-2 * n // _STRIDE) + 4)
    tau = np.partition(sub, q, axis=1)[:, q]
    rows, cols = np.divmod(np.flatnonzero(D <= tau[:, None]), K)
    counts = np.bincount(rows, minlength=b)
    ok = counts >= n
    idx = np.empty((b, n), dtype=np.int64)
    vals = np.empty((b, n), dtype=D.dtype)
    if ok.any():
        keep = ok[rows]
        rows, cols = rows[keep], cols[keep]
        v = D[rows, cols]
        order = np.lexsort((cols, v, rows))
        starts = np.cumsum(counts[ok]) - counts[ok]
        take = order[starts[:, None] + np.arange(n)]
        idx[ok], vals[ok] = cols[take], v[take]
    if not ok.all():
        idx[~ok], vals[~ok] = _smallest_by_partition(D[~ok], n)
    return idx, vals


def _top_k_of(cand: np.ndarray, g: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` candidates of each row with the smallest exact ``g``, ties broken by index."""
    order = np.lexsort((cand, g), axis=1)[:, :k]
    return np.take_along_axis(cand, order, axis=1), np.take_along_axis(g, order, axis=1)


# -- the blocked searches -------------------------------------------------------------------------------------------

def _exact_search64(X, A, rows, k, block_rows, tracker):
    """Float64 Gram blocks: ``g = max(A_i + A_j − 2⟨x_i, x_j⟩, 0)`` as in ``geometry.squared_distances``."""
    m = rows.size
    idx = np.empty((m, k), dtype=np.int64)
    val = np.empty((m, k))
    b = _block_rows(X.shape[0], 24, block_rows)
    for s in range(0, m, b):
        r = rows[s:s + b]
        D = X[r] @ X.T
        D *= -2.0
        D += A[None, :]
        D += A[r][:, None]
        np.maximum(D, 0.0, out=D)
        D[np.arange(r.size), r] = np.inf
        idx[s:s + b], val[s:s + b] = _smallest(D, k)
        tracker.advance(r.size)
    return idx, val


def _merge(idx_a, val_a, idx_b, val_b, n):
    """Per row, the ``n`` smallest by (value, index) of two lists."""
    idx = np.concatenate([idx_a, idx_b], axis=1)
    val = np.concatenate([val_a, val_b], axis=1)
    order = np.lexsort((idx, val), axis=1)[:, :n]
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(val, order, axis=1)


def _exact_all(X, A, n, tile, tracker):
    """Every row's ``n`` smallest ``g_ij`` (j ≠ i), sorted by (g, index), from tiles of the upper triangle.

    ``g`` is symmetric, so each tile ``(I, J)`` with ``J ≥ I`` serves rows I
    (columns J) and, transposed, rows J (columns I): K²·d flops instead of
    2·K²·d, and each row keeps a running list merged tile by tile. The
    values are ``max(A_i + A_j − 2⟨x_i, x_j⟩, 0)`` in ``X``'s dtype (the same
    number for ``(i, j)`` and ``(j, i)``).
    """
    K = X.shape[0]
    Ad = A.astype(X.dtype)
    best_idx = np.full((K, n), -1, dtype=np.int64)
    best_val = np.full((K, n), np.inf, dtype=X.dtype)
    for i0 in range(0, K, tile):
        I = slice(i0, min(i0 + tile, K))
        for j0 in range(i0, K, tile):
            J = slice(j0, min(j0 + tile, K))
            D = X[I] @ X[J].T
            D *= -2.0
            D += Ad[J][None, :]
            D += Ad[I][:, None]
            np.maximum(D, 0.0, out=D)
            if j0 == i0:
                np.fill_diagonal(D, np.inf)
            li, lv = _smallest(D, min(n, D.shape[1]))
            best_idx[I], best_val[I] = _merge(best_idx[I], best_val[I], li + j0, lv, n)
            if j0 != i0:
                Dt = np.ascontiguousarray(D.T)
                li, lv = _smallest(Dt, min(n, Dt.shape[1]))
                best_idx[J], best_val[J] = _merge(best_idx[J], best_val[J], li + i0, lv, n)
        tracker.advance(I.stop - i0)
    return best_idx, best_val


def _candidate_search(Y, key_norms, rows, n, block_rows, tracker):
    """For each query row, the ``n`` rows ``j ≠ i`` of smallest ``key_norms_j − 2⟨y_i, y_j⟩`` (in ``Y``'s dtype).

    The row constant is left out: only the order within a row matters.
    Returns (m, n) indices sorted by that key.
    """
    K, d = Y.shape
    m = rows.size
    cand = np.empty((m, n), dtype=np.int64)
    kn = key_norms.astype(Y.dtype)
    fold = d < 512
    if fold:
        # [y_i, 1]·[−2y_j, key_j]: the product is the key itself, which saves two passes over each block
        # (half the time of the whole step in r = 64 dimensions). ×(−2) is exact in binary floating point.
        left = np.empty((K, d + 1), dtype=Y.dtype)
        left[:, :d], left[:, d] = Y, 1
        right = np.empty((K, d + 1), dtype=Y.dtype)
        np.multiply(Y, -2, out=right[:, :d])
        right[:, d] = kn
    b = _block_rows(K, Y.dtype.itemsize + 16, block_rows)
    for s in range(0, m, b):
        r = rows[s:s + b]
        if fold:
            S = left[r] @ right.T
        else:
            S = Y[r] @ Y.T
            S *= -2.0
            S += kn[None, :]
        S[np.arange(r.size), r] = np.inf
        cand[s:s + b] = _smallest(S, n)[0]
        tracker.advance(r.size)
    return cand


def pair_squared_distances(X, rows, cand, A=None, *, block_rows=None) -> np.ndarray:
    """``g_ij`` (m×C, float64) between each row ``rows[i]`` and the rows ``cand[i, :]`` (its candidates), exactly.

    ``g = max(A_i + A_j − 2⟨x_i, x_j⟩, 0)`` with norms and dot products in
    float64 (rows of a float32 ``X`` are upcast as they are read): the
    formula and precision of the dense float64 computation, at a cost of
    m·C·d multiply-adds instead of K²·d.
    """
    X = np.asarray(X)
    rows = np.asarray(rows, dtype=np.int64)
    cand = np.asarray(cand, dtype=np.int64)
    A = row_norms(X) if A is None else A
    m, C = cand.shape
    dots = np.empty((m, C))
    # The query slab (b×d float64, ~2 MB) is read once per candidate column: small enough to stay in cache,
    # which made this 2.7× faster than 12 MB slabs at d = 10,000 (1.0 against 2.7 ns per multiply-add).
    b = block_rows or max(8, RERANK_SLAB_BYTES // (X.shape[1] * 8))
    for s in range(0, m, b):
        Xi = np.asarray(X[rows[s:s + b]], dtype=np.float64)
        for c in range(C):
            Xj = np.asarray(X[cand[s:s + b, c]], dtype=np.float64)
            np.einsum("ij,ij->i", Xi, Xj, out=dots[s:s + b, c])
    g = A[rows][:, None] + A[cand] - 2.0 * dots
    return np.maximum(g, 0.0, out=g)


def exact_knn_rows(X, rows, k: int, *, block_rows=None, dtype=np.float64, progress=None):
    """The ``k`` nearest other rows of ``X`` to each row in ``rows``: ``(index, g)``, both (len(rows))×k.

    Parameters
    ----------
    X : (K, d) features whose squared Euclidean distances are ``g`` (``Q``, or ``Q W^{1/2}``).
    rows : 1-D int array of the query models (a sample for measuring recall; one model for ``neighbors MODEL``).
    k : neighbours per row (at most K − 1).
    block_rows : query rows per Gram block (default: a block of rows × K within :data:`BLOCK_BYTES`).
    dtype : ``float64``: Gram products in float64, ``g`` exactly as
        :func:`~lmmap.maths.geometry.squared_distances` computes it, ties broken
        by index. ``float32``: candidates (``k`` plus ``max(k, 8)`` spares) from
        float32 products (a quarter to half less time), then their ``g`` in float64
        (:func:`pair_squared_distances`); the result differs from the float64 one
        only if more than the spares fall within float32 rounding of the k-th
        distance.
    progress : callable receiving :class:`lmmap.progress.Step` events, or None.

    Returns
    -------
    index : (m, k) int64, nearest first; ties broken by index.
    g : (m, k) float64 squared distances ``g_ij``.

    Cost: 2·m·K·d flops, memory one block (never K×K).
    """
    X = _check_features(X, "X")
    K = X.shape[0]
    rows = _check_rows(rows, K)
    k = _check_k(k, K)
    dt = _dtype(dtype)
    A = row_norms(X)
    with Tracker(progress, "nearest models (exact)", total=rows.size, unit="models") as tracker:
        if dt == np.float64:
            X64 = X if X.dtype == np.float64 else X.astype(np.float64)
            return _exact_search64(X64, A, rows, k, block_rows, tracker)
        n = min(K - 1, k + max(k, 8))
        X32 = X if X.dtype == np.float32 else X.astype(np.float32)
        cand = _candidate_search(X32, A, rows, n, block_rows, tracker)
    return _top_k_of(cand, pair_squared_distances(X, rows, cand, A), k)


def exact_knn(X, k: int, *, block_rows=None, dtype=np.float64, progress=None):
    """The ``k`` nearest other rows of every row of ``X`` (K×d): ``(index, g)``, both K×k.

    Gram products in tiles of ``block_rows`` × ``block_rows`` rows (default
    :data:`DEFAULT_TILE`) over the upper triangle only (g is symmetric):
    K²·d flops, never K×K in memory (a tile and a K×k list). With
    ``dtype=float64`` (default) indices and values equal
    ``geometry.nearest_neighbors(geometry.squared_distances(X), k)`` up to
    rounding (values to ~1e-12 relative), with ties broken by index (see
    :func:`exact_knn_rows` for ``float32``). KL: ``g / (2N)``
    (:func:`~lmmap.maths.geometry.kl_from_squared_distances`).
    """
    X = _check_features(X, "X")
    K = X.shape[0]
    k = _check_k(k, K)
    dt = _dtype(dtype)
    tile = DEFAULT_TILE if block_rows is None else _block_rows(K, 24, block_rows)
    A = row_norms(X)
    with Tracker(progress, "nearest models (exact)", total=K, unit="models") as tracker:
        if dt == np.float64:
            return _exact_all(X if X.dtype == np.float64 else X.astype(np.float64), A, k, tile, tracker)
        n = min(K - 1, k + max(k, 8))
        cand, _ = _exact_all(X if X.dtype == np.float32 else X.astype(np.float32), A, n, tile, tracker)
    return _top_k_of(cand, pair_squared_distances(X, np.arange(K), cand, A), k)


# -- the projection -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Projection:
    """``Z = Q V``: the rows of ``Q`` in ``r`` orthonormal directions ``V`` from a randomised SVD.

    Attributes
    ----------
    Z : (K, r) float64 coordinates; ``ĝ_ij = ‖z_i − z_j‖² ≤ g_ij`` (an orthogonal projection shortens every pair).
    components : (N, r) float64 ``V``, orthonormal to float64 precision, ordered by singular value.
    singular_values : (r,) the singular values of ``Q V`` (≈ the top r of ``Q``).
    residual : (K,) ``ρ_i = A_i − ‖z_i‖² = ‖(I − V Vᵀ) q_i‖²`` (≥ 0); per pair,
        ``0 ≤ g_ij − ĝ_ij ≤ (√ρ_i + √ρ_j)²``.
    captured : ``‖Z‖²_F / Σ_i ‖q_i − q̄‖²``, the fraction of the spread of the rows kept.
    mean_distortion : the mean of ``g_ij − ĝ_ij`` over the K(K−1) ordered pairs ``i ≠ j``, exactly (not a
        bound): ``2(K Σ_i ρ_i − ‖P⊥ Σ_i q_i‖²) / (K(K−1))``, which for a column-centred ``Q`` is
        ``2 Σ_i ρ_i / (K−1)`` ≥ ``2 Σ_{l>r} σ_l² / (K−1)`` (equality for the exact SVD). In units of ``g``;
        divide by 2N for KL.
    """

    Z: np.ndarray
    components: np.ndarray
    singular_values: np.ndarray
    residual: np.ndarray
    captured: float
    mean_distortion: float


_CONTROLLER = []


@contextlib.contextmanager
def _one_blas_thread():
    """Run small dense algebra (K×l by l×l products, l×l factorisations) on one BLAS thread.

    On this 2-core machine under load, every BLAS call with two threads
    waited 10–150 ms for the second one whatever its size (the randomised SVD
    of a 2,000×1,000 matrix: 0.6–1.4 s with two threads, 0.08 s with one).
    The big products with ``Q`` keep all threads. No-op without threadpoolctl
    (a scikit-learn dependency).
    """
    if not _CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController

            _CONTROLLER.append(ThreadpoolController())
        except ImportError:  # pragma: no cover
            _CONTROLLER.append(None)
    if _CONTROLLER[0] is None:  # pragma: no cover
        yield
        return
    with _CONTROLLER[0].limit(limits=1, user_api="blas"):
        yield


def _cholesky_qr(Y: np.ndarray) -> np.ndarray | None:
    """``Y R⁻¹`` with ``RᵀR = YᵀY`` (float64), or None when the Gram is not positive definite.

    Only products of ``Y`` with small matrices and l×l factorisations
    (LAPACK's Householder QR of a 3,000×74 block took 10 ms on one thread,
    this 1 ms).
    """
    Y = np.asarray(Y, dtype=np.float64)
    try:
        R = np.linalg.cholesky(Y.T @ Y).T  # upper: YᵀY = RᵀR
        return Y @ np.linalg.inv(R)
    except np.linalg.LinAlgError:
        return None


def _orth(Y: np.ndarray) -> np.ndarray:
    """An orthonormal float64 basis of the columns of ``Y``: Cholesky QR twice (the second pass restores
    orthogonality to float64 precision); Householder QR when ``Y`` is (nearly) rank-deficient."""
    B = _cholesky_qr(Y)
    B = None if B is None else _cholesky_qr(B)
    if B is None or not np.all(np.isfinite(B)) or np.abs(B.T @ B - np.eye(B.shape[1])).max() > 1e-10:
        return np.linalg.qr(np.asarray(Y, dtype=np.float64))[0]
    return B


def _normalize(Y: np.ndarray) -> np.ndarray:
    """A well-scaled basis of the span of ``Y`` between power steps (one Cholesky QR; Householder if that fails)."""
    B = _cholesky_qr(Y)
    if B is None or not np.all(np.isfinite(B)):
        B = np.linalg.qr(Y)[0]
    return B.astype(Y.dtype, copy=False)


def randomized_projection(Q, n_components: int = DEFAULT_N_COMPONENTS, *, n_oversamples: int = DEFAULT_N_OVERSAMPLES,
                          n_iter: int = DEFAULT_N_ITER, random_state=None, dtype=np.float32, A=None) -> Projection:
    """Project the rows of ``Q`` (K×N) onto ``r = n_components`` top right singular directions (randomised SVD).

    Halko, Martinsson & Tropp (2011), Algorithm 4.4: a Gaussian sketch of
    ``r + n_oversamples`` columns, ``n_iter`` power iterations (each normalised
    by a Cholesky QR), all products with ``Q`` in ``dtype`` (float32:
    about twice as fast as float64 and as good for finding the subspace). The
    basis is then re-orthonormalised in float64 and ``Z = Q V`` formed in
    float64 (one more pass over ``Q``), so that ``ĝ ≤ g`` and the
    ``residual``, ``captured`` and ``mean_distortion`` figures of
    :class:`Projection` hold to float64 rounding whatever ``dtype`` is.
    ``Z`` equals ``U·S`` of the SVD of ``Q`` restricted to ``V``.

    ``Q`` should be the double-centred coordinates (or ``Q W^{1/2}``);
    distances do not depend on centring, ``captured`` is measured about the
    mean row. ``A``: the row norms ``‖q_i‖²`` if already computed.
    Cost: ``(2·n_iter + 2)·2·K·N·(r + n_oversamples)`` flops in ``dtype`` plus
    ``2·K·N·(r + n_oversamples)`` in float64; memory: a ``dtype`` copy of ``Q``
    unless it already is one.
    """
    Q = _check_features(Q, "Q")
    K, N = Q.shape
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise InputError(f"n_components must be a positive integer, got {n_components!r}", params=("n_components",))
    if not isinstance(n_iter, (int, np.integer)) or n_iter < 0:
        raise InputError(f"n_iter must be a non-negative integer, got {n_iter!r}", params=("n_iter",))
    if not isinstance(n_oversamples, (int, np.integer)) or n_oversamples < 0:
        raise InputError(f"n_oversamples must be a non-negative integer, got {n_oversamples!r}",
                         params=("n_oversamples",))
    dt = _dtype(dtype)
    rng = np.random.default_rng(check_random_state(random_state))
    r = int(min(n_components, K, N))
    ell = int(min(r + n_oversamples, K, N))
    Qd = Q if Q.dtype == dt else Q.astype(dt)
    P = Qd @ rng.standard_normal((N, ell)).astype(dt)
    for _ in range(n_iter):
        with _one_blas_thread():
            P = _normalize(P)
        P = Qd.T @ P
        with _one_blas_thread():
            P = _normalize(P)
        P = Qd @ P
    with _one_blas_thread():
        P = _orth(P).astype(dt, copy=False)
    P = Qd.T @ P
    with _one_blas_thread():
        W = _orth(P)  # N×ell row-space basis, orthonormal in float64
    del Qd, P
    if Q.dtype == np.float64:
        Y = Q @ W  # K×ell, float64
    else:  # upcast a block of rows at a time, not a float64 copy of all of Q
        b = max(1, BLOCK_BYTES // (8 * N))
        Y = np.concatenate([Q[s:s + b].astype(np.float64) @ W for s in range(0, K, b)])
    with _one_blas_thread():
        # Right singular vectors of Y from its ell×ell Gram: whatever their precision, W·Ṽ stays orthonormal,
        # so Z = Q V is an exact projection.
        lam, Vy = np.linalg.eigh(Y.T @ Y)
        top = np.argsort(lam)[::-1][:r]
        s, Vy = np.sqrt(np.maximum(lam[top], 0.0)), Vy[:, top]
        Z = Y @ Vy
        V = W @ Vy
    A = row_norms(Q) if A is None else np.asarray(A, dtype=np.float64)
    rho = np.maximum(A - np.einsum("ij,ij->i", Z, Z), 0.0)
    c = Q.sum(axis=0, dtype=np.float64)  # Σ_i q_i (0 for a column-centred Q)
    c_perp = max(float(c @ c) - float(np.sum((c @ V) ** 2)), 0.0)
    total = max(float(A.sum()) - float(c @ c) / K, 0.0)
    kept = float(np.sum(Z * Z)) - float(np.sum((c @ V) ** 2)) / K  # Σ_i ‖z_i − z̄‖²
    captured = 1.0 if total == 0 else min(1.0, kept / total)
    mean_distortion = 2.0 * (K * float(rho.sum()) - c_perp) / (K * (K - 1))
    return Projection(Z=Z, components=V, singular_values=s, residual=rho, captured=float(captured),
                      mean_distortion=max(mean_distortion, 0.0))


# -- the approximate search -----------------------------------------------------------------------------------------

def default_n_candidates(k: int) -> int:
    """Candidates re-ranked exactly per row by default: ``max(4k, 50)``."""
    return max(4 * int(k), 50)


def _approximate(Q, k, *, n_components, n_candidates, n_iter, random_state, dtype, block_rows, progress):
    Q = _check_features(Q, "Q")
    K = Q.shape[0]
    k = _check_k(k, K)
    dt = _dtype(dtype)
    C = default_n_candidates(k) if n_candidates is None else n_candidates
    if isinstance(C, bool) or not isinstance(C, (int, np.integer)) or C < k:
        raise InputError(f"n_candidates must be an integer of at least k ({k}), got {n_candidates!r}",
                         params=("n_candidates",))
    C = int(min(C, K - 1))
    A = row_norms(Q)
    say(progress, f"randomised SVD: {n_components} components of {K:,} models")
    proj = randomized_projection(Q, n_components, n_iter=n_iter, random_state=random_state, dtype=dt, A=A)
    rows = np.arange(K)
    with Tracker(progress, "nearest models (candidates)", total=K, unit="models") as tracker:
        # Key A_j − 2⟨z_i, z_j⟩ = ĝ_ij + ρ_i + ρ_j − A_i: residuals taken as orthogonal (see the module docstring).
        cand = _candidate_search(np.ascontiguousarray(proj.Z, dtype=dt), A, rows, C, block_rows, tracker)
    say(progress, f"exact distances of {C} candidates per model")
    idx, g = _top_k_of(cand, pair_squared_distances(Q, rows, cand, A), k)
    return idx, g, proj, C


def approximate_knn(Q, k: int, *, n_components: int = DEFAULT_N_COMPONENTS, n_candidates: int | None = None,
                    n_iter: int = DEFAULT_N_ITER, random_state=None, dtype=np.float32, block_rows=None,
                    progress=None):
    """The ``k`` nearest other rows of ``Q`` (K×N), approximately: ``(index, g)``, both K×k.

    1. ``Z = Q V`` from :func:`randomized_projection` (``n_components = r``).
    2. Per row, the ``n_candidates = C`` (default ``max(4k, 50)``) rows of
       smallest ``A_i + A_j − 2⟨z_i, z_j⟩`` (``ĝ_ij + ρ_i + ρ_j``), from blocked
       ``dtype`` products in r dimensions: 2·K²·r flops.
    3. Their exact ``g_ij`` in float64 in full dimension
       (:func:`pair_squared_distances`, K·C·N multiply-adds) and the ``k``
       smallest kept, ties broken by index.

    Every value returned is an exact ``g_ij`` (float64); what can be wrong is
    only which models are listed — a true neighbour that step 2 ranked below
    C others is missed (the next nearest candidate takes its place). Measure
    it with :func:`recall_at_k` against :func:`exact_knn_rows` on a sample
    (:func:`knn` does). ``random_state`` seeds the sketch.
    """
    idx, g, _, _ = _approximate(Q, k, n_components=n_components, n_candidates=n_candidates, n_iter=n_iter,
                                random_state=random_state, dtype=dtype, block_rows=block_rows, progress=progress)
    return idx, g


def recall_at_k(idx_found, idx_exact) -> float:
    """Mean over rows of the fraction of the exact neighbours ``idx_exact[i]`` present in ``idx_found[i]``.

    Both (m, k) index arrays of the same rows (``idx_found`` may list more
    than k). Ties at the k-th distance count a tied alternative as a miss.
    """
    f, e = np.asarray(idx_found), np.asarray(idx_exact)
    if f.ndim != 2 or e.ndim != 2 or f.shape[0] != e.shape[0]:
        raise InputError(f"idx_found and {{idx_exact}} must be (rows × k) arrays of the same rows, "
                         f"got shapes {f.shape} and {e.shape}", params=("idx_found", "idx_exact"))
    if e.size == 0:
        return 1.0
    hits = (e[:, :, None] == f[:, None, :]).any(axis=2)
    return float(hits.mean())


# -- the one entry point --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Neighbors:
    """The ``k`` nearest models of every model, from :func:`knn`.

    Attributes
    ----------
    idx : (K, k) int64, nearest first, ties broken by index.
    sqdist : (K, k) float64 ``g_ij``, computed exactly in float64 whatever the method.
    kl : (K, k) float64 ``g_ij / (2N)``, N = ``n_texts``.
    method : ``"exact"`` or ``"approximate"``.
    n_texts : the N of ``kl``.
    recall : approximate only: recall@k on ``recall_rows`` against the exact search (None for exact).
    recall_rows : the sampled rows (int64), or None.
    n_components, n_candidates, captured, mean_distortion_kl : approximate only (None for exact):
        ``r``, ``C``, :attr:`Projection.captured` and :attr:`Projection.mean_distortion` / (2N).
    """

    idx: np.ndarray
    sqdist: np.ndarray
    kl: np.ndarray
    method: str
    n_texts: int
    recall: float | None = None
    recall_rows: np.ndarray | None = None
    n_components: int | None = None
    n_candidates: int | None = None
    captured: float | None = None
    mean_distortion_kl: float | None = None
    #: approximate only: the randomised projection, for more neighbours by its key (:func:`projected_neighbors`)
    projection: Projection | None = field(default=None, repr=False, compare=False)


def projected_neighbors(projection: Projection, k: int, *, block_rows=None, dtype=np.float32, progress=None):
    """The ``k`` nearest rows of every row by the projection's key alone: ``(index, key)``, both K×k.

    ``key_ij = A_i + A_j − 2⟨z_i, z_j⟩ = ĝ_ij + ρ_i + ρ_j`` — the squared distance with the residuals taken
    as orthogonal (the module docstring says why this key and not ``ĝ``). No pass over ``Q``: 2·K²·r flops.
    For what needs many neighbours and not their exact distances — the t-SNE affinities of a large map,
    whose 90 neighbours re-ranked exactly would cost 90·K·N multiply-adds — not for the neighbour lists
    lmmap reports (:func:`knn`).
    """
    Z = np.asarray(projection.Z)
    K = Z.shape[0]
    k = _check_k(k, K)
    dt = _dtype(dtype)
    A = np.einsum("ij,ij->i", Z, Z) + projection.residual
    rows = np.arange(K)
    with Tracker(progress, "nearest models (projected)", total=K, unit="models") as tracker:
        idx = _candidate_search(np.ascontiguousarray(Z, dtype=dt), A, rows, k, block_rows, tracker)
    key = np.empty(idx.shape)
    for s in range(0, K, 4096):  # Z[idx] of all rows at once would be K·k·r floats (4.6 GB at K = 10⁵)
        key[s:s + 4096] = np.einsum("ij,ikj->ik", Z[s:s + 4096], Z[idx[s:s + 4096]])
    key = A[:, None] + A[idx] - 2.0 * key
    return idx, np.maximum(key, 0.0)


def resolve_method(method: str, K: int, d: int) -> str:
    """What ``method`` stands for with K models in d dimensions: ``auto`` is exact while K²·d ≤ :data:`EXACT_MAX_FLOPS`."""
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}", params=("method",))
    if method != "auto":
        return method
    return "exact" if float(K) * K * d <= EXACT_MAX_FLOPS else "approximate"


def knn(Q, k: int = 10, *, method: str = "auto", n_texts: int | None = None, random_state=None,
        n_components: int = DEFAULT_N_COMPONENTS, n_candidates: int | None = None, n_iter: int = DEFAULT_N_ITER,
        recall_rows: int = DEFAULT_RECALL_ROWS, dtype=np.float32, block_rows=None, progress=None) -> Neighbors:
    """The ``k`` nearest models of every model by estimated KL, without a K×K matrix.

    Parameters
    ----------
    Q : (K, d) features: ``Q`` on the full text set, ``Q W^{1/2}`` on a resampled one.
    k : neighbours per model (at most K − 1).
    method : ``exact`` (:func:`exact_knn`), ``approximate`` (:func:`approximate_knn`) or ``auto``: exact while
        its tiles cost at most :data:`EXACT_MAX_FLOPS` (K²·d flops; K = 4,500 at d = 10,000),
        approximate above.
    n_texts : N in ``KL = g / (2N)`` (the full text set's size); default ``d``.
    random_state : seeds the sketch of the randomised SVD and the sample of rows whose recall is measured.
    n_components, n_candidates, n_iter : of :func:`approximate_knn`.
    recall_rows : approximate only: how many rows (sampled without replacement) to check against the
        exact search (2·recall_rows·K·d flops); 0 skips the check.
    dtype : products used to choose candidates (float32 default; float64 for the exact method gives
        :func:`exact_knn`'s exact tie-breaking). Returned values are float64 in every case.
    progress : callable receiving :class:`lmmap.progress.Step` events, or None.
    """
    Q = _check_features(Q, "Q")
    K, d = Q.shape
    k = _check_k(k, K)
    if n_texts is None:
        n_texts = d
    if isinstance(n_texts, bool) or not isinstance(n_texts, (int, np.integer)) or n_texts < 1:
        raise InputError(f"n_texts (N) must be a positive integer, got {n_texts!r}", params=("n_texts",))
    if isinstance(recall_rows, bool) or not isinstance(recall_rows, (int, np.integer)) or recall_rows < 0:
        raise InputError(f"recall_rows must be a non-negative integer, got {recall_rows!r}", params=("recall_rows",))
    check_random_state(random_state)
    how = resolve_method(method, K, d)
    if how == "exact":
        idx, g = exact_knn(Q, k, dtype=dtype, block_rows=block_rows, progress=progress)
        return Neighbors(idx=idx, sqdist=g, kl=kl_from_squared_distances(g, n_texts), method="exact", n_texts=int(n_texts))
    # One generator for both draws: an int seed reproduces the sketch and the sample.
    rng = np.random.default_rng(random_state)
    idx, g, proj, C = _approximate(Q, k, n_components=n_components, n_candidates=n_candidates, n_iter=n_iter,
                                   random_state=rng, dtype=dtype, block_rows=block_rows, progress=progress)
    recall, sample = None, None
    if recall_rows:
        sample = np.sort(rng.choice(K, size=min(int(recall_rows), K), replace=False)).astype(np.int64)
        exact_idx, _ = exact_knn_rows(Q, sample, k, dtype=np.float32, block_rows=block_rows, progress=progress)
        recall = recall_at_k(idx[sample], exact_idx)
    return Neighbors(idx=idx, sqdist=g, kl=kl_from_squared_distances(g, n_texts), method="approximate", n_texts=int(n_texts),
                     recall=recall, recall_rows=sample, n_components=int(proj.Z.shape[1]), n_candidates=C,
                     captured=proj.captured, projection=proj,
                     mean_distortion_kl=float(kl_from_squared_distances(proj.mean_distortion, n_texts)))


__all__ = [
    "BLOCK_BYTES", "EXACT_MAX_FLOPS", "Neighbors", "Projection", "approximate_knn", "default_n_candidates",
    "exact_knn", "exact_knn_rows", "pair_squared_distances", "knn", "projected_neighbors", "randomized_projection",
    "recall_at_k",
    "resolve_method", "row_norms",
]
