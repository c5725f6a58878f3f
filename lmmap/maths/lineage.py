"""Which model came from which: a test of shared per-text idiosyncrasy for every pair of models (issue 25).

Symbols follow the papers (SPEC §1, §3): ``L`` (K×N) log-likelihoods, ``Q`` its
double-centred rows ``q_i``, or ``X = Q W^{1/2}`` on a resampled subset (every
function here takes any K×d feature matrix whose inner products are the map's).

**Why not the nearest model.** A fine-tune is its parent moved far along the
direction in which its fine-tuning domain moves every model trained on it;
its nearest model by KL (``‖q_i − q_j‖²/2N``) is then whatever else was
trained on that domain. What a fine-tune keeps is its parent's per-text
idiosyncrasy: the part of ``q_i`` that the population's dominant directions
(skills, domains, training stage) do not explain.

**The statistic.** ``X ≈ Z Vᵀ`` on its top ``r`` principal directions ``V``
(d×r, ``Z = X V``); the residual of model i is ``e_i = x_i − z_i Vᵀ`` and the
statistic of a pair is the Fisher transform of their residual correlation

    ρ_ij = ⟨e_i, e_j⟩ / (‖e_i‖ ‖e_j‖),   ⟨e_i, e_j⟩ = ⟨x_i, x_j⟩ − ⟨z_i, z_j⟩,   z_ij = atanh(ρ_ij)

(rows of a double-centred ``Q`` sum to 0 and ``V`` lies in their span, so
``ρ`` is a Pearson correlation over texts). Every pair costs one inner
product of ``X`` and one of ``Z``: no residual matrix is formed.

**Which directions.** Measured on synthetic ecosystems
(``tests/lineage_ecosystem.py``; ``benchmarks/bench_lineage.py``) with the
true generating subspace as an oracle, the residual correlation of a
fine-tune and its base is 0.955 and unrelated pairs spread 0.033 — the plain
top-``r`` principal directions gave 0.88 and 0.11–0.15, for two reasons:

1. A lineage of m models shares one idiosyncrasy and so carries an eigenvalue
   m times a single model's; removing (or half-removing) it correlates two
   unrelated lineages' residuals. :func:`population_basis` weights each model
   ``1/(1 + its relatives)`` (as genetics does for PCA on related samples),
   so that a lineage counts as about one model.
2. Fine-tunes move far along their domain's direction; estimated from the
   models, that direction is blurred by every model's idiosyncrasy, and the
   blur left in the residuals pairs siblings and unrelated fine-tunes on the
   same domain. :func:`with_shift_directions` estimates it from the
   differences ``x_i − x_j`` of clearly related pairs (the pair's shared
   idiosyncrasy cancels), then re-estimates the population's directions
   outside it.

``r`` (the population's part) is the number of eigenvalues above their mean
(the Kaiser–Guttman rule), on the weighted Gram matrix; the shifts' number
the same rule on the differences (the domains' eigenvalues stand 6–50× above
the mean there, the rest below 1×).

**Which texts.** Once the directions are removed, each text is weighted by
its residual spread over the models to the power −1/2 (:func:`text_scales`,
:func:`rescale_texts`): the statistic is the correlation of ``e_i(t)·s_t``
and ``e_j(t)·s_t``. A few texts on which the residuals vary a lot
(memorised or forgotten at random) otherwise drown the many that carry a
parent's idiosyncrasy. (On maps of at least :data:`TEXT_SCALE_MIN_K` models.)

**Calibration.** Under "unrelated", ``z_ij`` is not ``N(0, 1/(N−3))``: texts
differ in scale, and the residuals of K models on directions estimated from
those K models are correlated (at K = 132 the null sd was about 7× the
textbook one). So the null is fitted from pairs known or presumed unrelated
— pairs in different declared lineages where the metadata has them, else
all pairs (or a random sample of them): most pairs of a map are unrelated —
as ``N(μ₀, σ₀²)`` with ``μ₀`` the median and ``σ₀`` 1.4826 × the median
absolute deviation (robust to the related pairs among them). The p-value
is one-sided, ``p_ij = 1 − Φ((z_ij − μ₀)/σ₀)``: relatedness raises ``ρ``.

**Many pairs.** Each model is tested against its K − 1 possible parents and
the question a user asks is per model ("is this one derived from anything?"),
so the p-values are corrected by Holm's step-down procedure within each
model's family of K − 1 tests (:func:`holm_rows`): an unrelated model is
called derived with probability at most α, whatever K. (Benjamini–Hochberg
over all K(K−1)/2 pairs controls the share of false calls among calls
instead; at K = 10,000 with about 30,000 true relations its per-pair
threshold lets about 0.3 false partners per model through — every model
would have a good chance of a false parent.) Pairs that are never computed
(at large K only candidate pairs are) count as not rejected, which keeps the
correction valid.

**Direction.** The statistic is symmetric; what the data can say about
direction is (i) a derived model adds variation of its own, so the
descendant of a pair is the one with the larger residual norm ``‖e‖²``
(:func:`direction_t`: a t statistic from the per-text differences
``e_i(s)² − e_j(s)²``), and (ii) a merge is a collider: both parents explain
it given the other (:func:`partial_correlation`), and they are unrelated to
each other or, when related (two fine-tunes of one base), anti-correlated
given the merge, which a common parent between two of its children is not.
It cannot say which of two checkpoints came first (a later one can be the
less idiosyncratic) — metadata does (``step``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmmap.exceptions import InputError

DEFAULT_ALPHA = 0.05
# Dimensions of the random sketch of the residuals in which large maps find candidate pairs.
SKETCH_DIMS = 512
# Candidate parents per model (nearest by residual correlation); all K − 1 up to this many + 1.
N_CANDIDATES = 10
# Random pairs that calibrate the null at large K.
NULL_PAIRS = 20_000
# Fewer null pairs than this: the robust fit is not trusted (the analysis falls back to all pairs).
MIN_NULL_PAIRS = 10
# Pairs per block of the pairwise products (bounds the temporary (pairs × d) arrays).
PAIR_BLOCK = 2048
# Models whose Gram matrix estimates the removed directions (a random sample of them on larger maps).
BASIS_SAMPLE = 2000
# Correlations are clipped here before atanh: a duplicated model has ρ = 1.
RHO_MAX = 1 - 1e-12
# Texts are weighted by their residual spread to this power, negated (:func:`text_scales`; measured on ten real
# maps of six lineages: the fine-tunes of one recipe found 0.93 → 0.98 at 0.5, 0.985 at 0.75 and 1, where the
# merges' precision falls, 0.96 → 0.89 → 0.82).
TEXT_SCALE_POWER = 0.5
# ... on maps of at least this many models. On fewer, a text's spread is mostly that of the few lineages' own
# idiosyncrasies, the very signal (measured on the demo's 15 models: its fine-tunes' statistics 4.1 → 3.5 null sds,
# one of them under the threshold; maps of 31–158 models, real and synthetic, gain).
TEXT_SCALE_MIN_K = 20


def check_alpha(alpha) -> float:
    """``alpha`` in (0, 1), or a one-line :class:`InputError`."""
    from lmmap.params import check

    return check("alpha", alpha)


@dataclass
class Basis:
    """The population's dominant directions: ``Z = X V`` (K×m), ``V`` (d×m) orthonormal, ``lam`` (m,) the
    eigenvalues of ``X Xᵀ`` they carry, ``rank`` the ``r`` chosen (the first ``r`` columns are removed),
    ``mean_eigenvalue`` the Kaiser threshold ``‖X‖²_F / (number of non-zero eigenvalues)``."""

    Z: np.ndarray
    V: np.ndarray
    lam: np.ndarray
    rank: int
    mean_eigenvalue: float
    #: the models' weights in the principal directions (1/(1 + relatives)), None when unweighted
    weights: np.ndarray | None = None
    #: how many of the ``rank`` directions are derivation's shifts (:func:`with_shift_directions`)
    shift_rank: int = 0

    @property
    def Zr(self) -> np.ndarray:
        return self.Z[:, :self.rank]

    @property
    def Vr(self) -> np.ndarray:
        return self.V[:, :self.rank]


def kaiser_rank(lam, mean_eigenvalue: float, K: int) -> int:
    """``#{k : λ_k > mean λ}``, at most ``K − 3`` (a residual needs room for a pair and a third model)."""
    lam = np.asarray(lam, dtype=np.float64)
    return int(max(0, min(int((lam > mean_eigenvalue).sum()), K - 3)))


def structure_basis(X, *, rank: int | None = None, weights=None) -> Basis:
    """The top principal directions of ``X`` (K×d), from the eigenvectors of the K×K Gram matrix (each row
    weighted ``√weights``), and the rank ``r`` removed before pairs are compared. ``rank``: use this ``r``
    instead of the Kaiser rule (:func:`kaiser_rank`). :func:`lineage_basis` calls it on at most
    :data:`BASIS_SAMPLE` models.
    """
    X = np.asarray(X, dtype=np.float64)
    K, d = X.shape
    sw = None if weights is None else np.sqrt(np.asarray(weights, dtype=np.float64))
    Xw = X if sw is None else X * sw[:, None]
    mean_eig = float(np.einsum("ij,ij->", Xw, Xw)) / max(1, min(K - 1, d - 1))
    lam, U = np.linalg.eigh(Xw @ Xw.T)
    order = np.argsort(lam)[::-1][:max(1, min(K - 1, d - 1))]
    lam, U = np.maximum(lam[order], 0.0), U[:, order]
    keep = lam > 1e-12 * max(lam[0], 1e-300)
    lam, U = lam[keep], U[:, keep]
    V = (Xw.T @ U) / np.sqrt(lam)
    Z = X @ V
    r = kaiser_rank(lam, mean_eig, K) if rank is None else int(rank)
    if not 0 <= r <= min(len(lam), K - 3):
        raise InputError(f"rank must be from 0 to {min(len(lam), K - 3)} for this map, got {rank}", params=("rank",))
    return Basis(Z=Z, V=V, lam=lam, rank=r, mean_eigenvalue=mean_eig,
                 weights=None if weights is None else np.asarray(weights, dtype=np.float64))


def project(X, V) -> np.ndarray:
    """``X V`` in float64, a block of rows at a time (``X`` may be a float32 memory map)."""
    out = np.empty((X.shape[0], V.shape[1]))
    for s in range(0, X.shape[0], 4096):
        out[s:s + 4096] = np.asarray(X[s:s + 4096], dtype=np.float64) @ V
    return out


def _pair_dots(X, i, j) -> np.ndarray:
    out = np.empty(len(i))
    for s in range(0, len(i), PAIR_BLOCK):
        a = np.asarray(X[i[s:s + PAIR_BLOCK]], dtype=np.float64)
        b = np.asarray(X[j[s:s + PAIR_BLOCK]], dtype=np.float64)
        out[s:s + PAIR_BLOCK] = np.einsum("ij,ij->i", a, b)
    return out


def residual_norms2(X, basis: Basis) -> np.ndarray:
    """``‖e_i‖² = ‖x_i‖² − ‖z_i‖²`` for every model (K,)."""
    X = np.asarray(X)
    idx = np.arange(X.shape[0])
    return np.maximum(_pair_dots(X, idx, idx) - (basis.Zr ** 2).sum(axis=1), 0.0)


def pair_correlations(X, basis: Basis, i, j, norms2=None) -> np.ndarray:
    """Residual correlations ``ρ_ij`` of the pairs ``(i[k], j[k])``, vectorised over pairs."""
    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    norms2 = residual_norms2(X, basis) if norms2 is None else norms2
    Zr = basis.Zr
    ip = _pair_dots(X, i, j) - np.einsum("ij,ij->i", Zr[i], Zr[j])
    den = np.sqrt(norms2[i] * norms2[j])
    return np.clip(np.divide(ip, den, out=np.zeros_like(ip), where=den > 0), -RHO_MAX, RHO_MAX)


def residual_correlation_matrix(X, basis: Basis) -> np.ndarray:
    """All ``ρ_ij`` (K×K, diagonal 1) from one Gram matrix: for small maps only."""
    Xd = np.asarray(X, dtype=np.float64)
    Zr = basis.Zr
    G = Xd @ Xd.T - Zr @ Zr.T
    d = np.sqrt(np.maximum(np.diag(G), 1e-300))
    return np.clip(G / d[:, None] / d[None, :], -1.0, 1.0)


def fisher_z(rho) -> np.ndarray:
    return np.arctanh(np.clip(np.asarray(rho, dtype=np.float64), -RHO_MAX, RHO_MAX))


def fit_null(z) -> tuple[float, float]:
    """``(μ₀, σ₀)`` of the null: the median and 1.4826 × the median absolute deviation of ``z``."""
    z = np.asarray(z, dtype=np.float64)
    z = z[np.isfinite(z)]
    if z.size < MIN_NULL_PAIRS:
        raise InputError(f"the null needs at least {MIN_NULL_PAIRS} pairs of unrelated models, got {z.size}: "
                         "a map of more models, or metadata that declares more lineages", params=("mm",))
    mu = float(np.median(z))
    sigma = float(1.4826 * np.median(np.abs(z - mu)))
    if not sigma > 0:
        sigma = float(z.std()) or 1e-12
    return mu, sigma


def p_values(z, mu: float, sigma: float) -> np.ndarray:
    """One-sided ``p = 1 − Φ((z − μ₀)/σ₀)``."""
    from scipy.special import ndtr

    return ndtr(-(np.asarray(z, dtype=np.float64) - mu) / sigma)


def holm_rows(p, n_tests: int) -> np.ndarray:
    """Holm-adjusted p-values of each row of ``p`` (K×k, the row's smallest p-values among its ``n_tests``
    tests; the others, never computed, count as not rejected): ``max_{l≤k} min(1, (n_tests − l + 1)·p_(l))``."""
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p, axis=1, kind="stable")
    ps = np.take_along_axis(p, order, axis=1)
    factor = n_tests - np.arange(ps.shape[1])[None, :]
    adj = np.maximum.accumulate(np.minimum(1.0, factor * ps), axis=1)
    out = np.empty_like(adj)
    np.put_along_axis(out, order, adj, axis=1)
    return out


def candidates(X, basis: Basis, k: int, *, dense: bool = True, random_state=0, progress=None) -> np.ndarray:
    """Each model's ``k`` candidate parents (K×k indices): its most correlated models after the residualisation.

    ``dense``: from the K×K residual correlations. Otherwise nothing K×K: the residuals are sketched to
    :data:`SKETCH_DIMS` random dimensions (``E S`` = ``X S − Z (Vᵀ S)``, a Johnson–Lindenstrauss sketch:
    correlations kept within about ±0.05; on no more texts than that, the residuals themselves), normalised,
    and searched by :func:`lmmap.maths.knn.knn` (Euclidean distance of unit rows is ``2 − 2ρ``); the statistics
    are then computed exactly.
    """
    K = np.asarray(X).shape[0]
    k = int(min(k, K - 1))
    if dense:
        C = residual_correlation_matrix(X, basis)
        np.fill_diagonal(C, -np.inf)
        idx = np.argpartition(-C, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(C, idx, axis=1)
        return np.take_along_axis(idx, np.argsort(-vals, axis=1, kind="stable"), axis=1)
    from lmmap.maths import knn

    rng = np.random.default_rng(random_state)
    d = np.asarray(X).shape[1]
    m = int(min(SKETCH_DIMS, d))
    # No more texts than the sketch's dimensions: the residuals themselves (a sketch of as many dimensions would
    # only distort their correlations).
    S = None if d <= SKETCH_DIMS else rng.standard_normal((d, m)).astype(np.float32) / np.sqrt(m)
    Y = np.empty((K, m), dtype=np.float32)
    Vt = basis.Vr.T.astype(np.float32)
    VS = (Vt if S is None else Vt @ S) if basis.rank else None
    for s in range(0, K, 4096):
        blk = np.array(X[s:s + 4096], dtype=np.float32)  # a copy: X itself is not changed below
        if S is not None:
            blk = blk @ S
        if VS is not None:
            blk -= basis.Zr[s:s + 4096].astype(np.float32) @ VS
        Y[s:s + 4096] = blk
    Y /= np.maximum(np.linalg.norm(Y, axis=1, keepdims=True), 1e-30)
    found = knn.knn(Y, k, method="exact", random_state=random_state, progress=progress)
    return found.idx


def direction_t(X, basis: Basis, i, j) -> np.ndarray:
    """For each pair, ``t = Σ_s (e_j(s)² − e_i(s)²) / SE``: positive when ``j`` carries more variation of its
    own than ``i`` (``j`` is then the descendant). ``SE = √(d · var_s(e_j(s)² − e_i(s)²))``."""
    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    out = np.empty(len(i))
    Zr, Vr = basis.Zr, basis.Vr
    for s in range(0, len(i), PAIR_BLOCK // 4 or 1):
        a, b = i[s:s + PAIR_BLOCK // 4], j[s:s + PAIR_BLOCK // 4]
        ea = np.asarray(X[a], dtype=np.float64) - Zr[a] @ Vr.T
        eb = np.asarray(X[b], dtype=np.float64) - Zr[b] @ Vr.T
        diff = eb ** 2 - ea ** 2
        se = np.sqrt(diff.shape[1] * diff.var(axis=1))
        out[s:s + len(a)] = np.divide(diff.sum(axis=1), se, out=np.zeros(len(a)), where=se > 0)
    return out


def worse_share(L, i, j, w=None) -> np.ndarray:
    """For each pair, the share of texts (weighted by ``w`` on a subset map) on which model ``i`` has the lower
    log-likelihood: near 1 when ``i`` is a degraded copy of ``j`` (quantised, pruned), worse almost everywhere."""
    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    w = None if w is None else np.asarray(w, dtype=np.float64)
    out = np.empty(len(i))
    step = PAIR_BLOCK // 4 or 1
    for s in range(0, len(i), step):
        lt = np.asarray(L[i[s:s + step]]) < np.asarray(L[j[s:s + step]])
        out[s:s + step] = lt.mean(axis=1) if w is None else (lt @ w) / w.sum()
    return out


def partial_correlation(r_ab, r_ac, r_bc) -> np.ndarray:
    """``ρ_ab·c``: the correlation of a and b once c is accounted for (a merge keeps it high for its second
    parent given the first; a sibling through the parent does not)."""
    r_ab, r_ac, r_bc = (np.asarray(v, dtype=np.float64) for v in (r_ab, r_ac, r_bc))
    den = np.sqrt(np.maximum((1 - r_ac ** 2) * (1 - r_bc ** 2), 1e-24))
    return np.clip((r_ab - r_ac * r_bc) / den, -RHO_MAX, RHO_MAX)


def relatives_count(X, basis: Basis) -> np.ndarray:
    """How many models each model is clearly related to under ``basis`` (K,): pairs whose statistic passes a
    Bonferroni threshold over the model's K − 1 tests, against the null fitted from all pairs (dense: K×K)."""
    from scipy.special import ndtri

    X = np.asarray(X)
    K = X.shape[0]
    thr = float(ndtri(1 - DEFAULT_ALPHA / max(K - 1, 1)))
    Z = fisher_z(residual_correlation_matrix(X, basis))
    mu, sigma = fit_null(Z[np.triu_indices(K, 1)])
    S = (Z - mu) / sigma
    np.fill_diagonal(S, -np.inf)
    return (S > thr).sum(axis=1)


def population_basis(X, *, rank: int | None = None, rounds: int = 2) -> Basis:
    """The population's directions: :func:`structure_basis` with each model weighted ``1/(1 + its relatives)``
    (:func:`relatives_count` under the previous estimate), ``rounds`` times from the unweighted one.

    Why: a lineage of m models that share one idiosyncrasy carries an eigenvalue m times a single model's,
    and the Kaiser rule would remove it — or mix it into the population's directions, whose removal then
    makes two unrelated lineages' residuals correlated (measured: whole lineages paired at 4–6 null sds).
    Weighted, a lineage counts as about one model, as in the PCA of genetics on related samples. Dense
    (K×K); :func:`lineage_basis` calls it on a sample of models past :data:`BASIS_SAMPLE`.
    """
    basis = structure_basis(X, rank=rank)
    for _ in range(rounds):
        w = 1.0 / (1.0 + relatives_count(X, basis))
        basis = structure_basis(X, rank=rank, weights=w)
    return basis


def with_shift_directions(X, basis: Basis, i, j) -> Basis:
    """The directions removed before pairs are compared, re-estimated with the directions in which derivation
    moves models: the principal directions ``W`` of the differences ``x_i − x_j`` of related pairs (a model
    and its likely parent), then the population's directions of ``X`` outside ``W`` (weighted as ``basis``).

    A fine-tune's domain shift is estimated far better from these differences, where the pair's shared
    idiosyncrasy cancels, than from the models themselves, where every model's idiosyncrasy blurs it (a
    blurred shift left in the residuals makes siblings, and unrelated fine-tunes on the same domain, look
    related). ``W``'s size: the Kaiser rule on the differences' eigenvalues (measured on the synthetic
    ecosystems: the domains' directions stand 6–50× above the mean, the rest below 1×).
    """
    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    K = np.asarray(X).shape[0]
    if len(i) < 3:
        return basis
    D = np.asarray(X[i], dtype=np.float64) - np.asarray(X[j], dtype=np.float64)
    lam, U = np.linalg.eigh(D @ D.T)
    order = np.argsort(lam)[::-1]
    lam, U = np.maximum(lam[order], 0.0), U[:, order]
    n_nonzero = max(1, min(len(i), D.shape[1]) - 1)
    r = int((lam > lam.sum() / n_nonzero).sum())
    r = max(0, min(r, len(i) - 1, K - 4))
    if r == 0:
        return basis
    W = (D.T @ U[:, :r]) / np.sqrt(np.maximum(lam[:r], 1e-300))
    W, _ = np.linalg.qr(W)
    Xp = project(np.asarray(X), W)
    rest = np.asarray(X, dtype=np.float64) - Xp @ W.T
    pop = structure_basis(rest, weights=basis.weights)
    # The population's directions are those above the map's Kaiser threshold, as before the shifts were taken
    # out (the threshold of what is left would fall with the shifts' energy and let lineages' directions in).
    keep = int(max(0, min((pop.lam > basis.mean_eigenvalue).sum(), K - 3 - r)))
    V, _ = np.linalg.qr(np.hstack([W, pop.V[:, :keep]]))
    Z = project(np.asarray(X), V)
    return Basis(Z=Z, V=V, lam=np.concatenate([lam[:r], pop.lam[:keep]]), rank=V.shape[1],
                 mean_eigenvalue=basis.mean_eigenvalue, weights=basis.weights, shift_rank=r)


def basis_sample(K: int, random_state=0) -> np.ndarray:
    """The :data:`BASIS_SAMPLE` models (sorted indices) a map of ``K`` > that many estimates its directions and
    text weights on: one sample per ``random_state``, so both come from the same models."""
    return np.sort(np.random.default_rng(random_state).choice(K, BASIS_SAMPLE, replace=False))


def lineage_basis(X, *, rank: int | None = None, random_state=0) -> Basis:
    """The directions removed before pairs are compared: the population's, each model weighted
    ``1/(1 + its relatives)`` (:func:`population_basis`), re-estimated beside the directions in which derivation
    moves models, from the differences of each model and its clearly related best partner
    (:func:`with_shift_directions`). ``rank`` given: that many population directions, no shifts.

    Past :data:`BASIS_SAMPLE` models the directions are estimated on a random sample of that many (shared
    structure: a sample estimates it as well as the measured dense maps of that size) and every model is
    then projected on them: nothing K×K, and the cost grows with K by one pass over ``X``.
    """
    from scipy.special import ndtri

    K = np.asarray(X).shape[0]
    sample = None
    Xs = X
    if K > BASIS_SAMPLE:
        sample = basis_sample(K, random_state)
        Xs = np.asarray(X[sample], dtype=np.float64)
    basis = population_basis(Xs, rank=rank)
    if rank is None:
        Ks = Xs.shape[0]
        C = fisher_z(residual_correlation_matrix(Xs, basis))
        mu, sigma = fit_null(C[np.triu_indices(Ks, 1)])
        np.fill_diagonal(C, -np.inf)
        best = np.argmax(C, axis=1)
        related = (C[np.arange(Ks), best] - mu) / sigma > ndtri(1 - DEFAULT_ALPHA / max(Ks - 1, 1))
        pairs = np.unique(np.sort(np.stack([np.arange(Ks)[related], best[related]], axis=1), axis=1), axis=0)
        basis = with_shift_directions(Xs, basis, pairs[:, 0], pairs[:, 1])
    if sample is not None:
        basis = Basis(Z=project(X, basis.V), V=basis.V, lam=basis.lam, rank=basis.rank,
                      mean_eigenvalue=basis.mean_eigenvalue, weights=None, shift_rank=basis.shift_rank)
    return basis


def text_scales(X, basis: Basis, *, power: float | None = None, random_state=0) -> np.ndarray:
    """Each text's weight in the pairs' comparison (d,): ``s_t = (σ_t / median σ)^(−power)``, ``σ_t`` the spread
    (1.4826 × the median absolute deviation) over the models of their residuals ``e_i(t)`` off ``basis``, on at
    most :data:`BASIS_SAMPLE` models (a random sample past that); ``power`` defaults to :data:`TEXT_SCALE_POWER`.
    All 1 on maps of fewer than :data:`TEXT_SCALE_MIN_K` models.

    Why: the statistic's noise is mostly a few texts on which the models' residuals vary a lot — texts that
    training memorises or forgets at random — and they drown the many texts that carry a parent's idiosyncrasy.
    Weighting by ``σ_t^(−1/2)`` (half-way to the inverse-variance weights of least squares) measured best on real
    models (:data:`TEXT_SCALE_POWER`). The spread is taken *after* the removed directions, not of ``X``: scaling by
    the raw spread hides the texts along which whole domains move, and a domain's shift with them (measured: one
    of five shifts lost, its fine-tunes' residual correlation with their base 0.93 → 0.62).
    """
    K, d = X.shape
    power = TEXT_SCALE_POWER if power is None else float(power)
    if power == 0 or K < TEXT_SCALE_MIN_K:
        return np.ones(d)
    idx = np.arange(K) if K <= BASIS_SAMPLE else basis_sample(K, random_state)
    E = np.asarray(X[idx], dtype=np.float64) - basis.Zr[idx] @ basis.Vr.T
    sd = 1.4826 * np.median(np.abs(E - np.median(E, axis=0)), axis=0)
    ref = float(np.median(sd))
    if not ref > 0:
        return np.ones(d)
    return (np.maximum(sd, 1e-3 * ref) / ref) ** (-power)


def rescale_texts(X, basis: Basis, s) -> tuple[np.ndarray, Basis]:
    """``Y = X diag(s)`` and ``basis`` carried into it: the removed span becomes that of ``diag(s) V_r``
    (orthonormalised; a model's component ``a·v`` along a removed direction is ``a·diag(s) v`` in ``Y``, so
    exactly what was removed before is removed after). ``Y`` keeps ``X``'s float32 if it is one; all ``s`` 1:
    ``X`` and ``basis`` themselves, no copy."""
    s = np.asarray(s, dtype=np.float64)
    if (s == 1).all():
        return X, basis
    dtype = np.float32 if X.dtype == np.float32 else np.float64
    Y = np.empty(X.shape, dtype=dtype)
    for a in range(0, X.shape[0], 4096):
        Y[a:a + 4096] = np.asarray(X[a:a + 4096], dtype=np.float64) * s[None, :]
    r = basis.rank
    V = np.linalg.qr(basis.Vr * s[:, None])[0] if r else np.zeros((X.shape[1], 0))
    return Y, Basis(Z=project(Y, V), V=V, lam=basis.lam[:r], rank=r, mean_eigenvalue=basis.mean_eigenvalue,
                    weights=basis.weights, shift_rank=basis.shift_rank)


def leave_out_statistics(X, basis: Basis, i, j, families) -> np.ndarray:
    """``(z_ij − μ₀)/σ₀`` of each pair ``(i[k], j[k])`` under the directions re-estimated without the models of
    ``families[k]`` (their weight set to 0), against the null of all pairs under those directions (dense).

    Why: the population's directions are estimated from the map's models, the pair's own lineages among them,
    and a direction that mixes two lineages' shared idiosyncrasies correlates their residuals once removed
    (measured on the synthetic ecosystems: two unrelated lineages paired at 3.4–4.3 null sds fall to −3 to −5
    when their models are left out; every true parent–child pair stays above 4). The shift directions
    (:func:`with_shift_directions`, from differences in which a lineage's idiosyncrasy cancels) are kept.
    """
    X = np.asarray(X, dtype=np.float64)
    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    K = X.shape[0]
    r = basis.shift_rank
    keep = basis.rank - r
    W = basis.V[:, :r]
    rest = X - (X @ W) @ W.T if r else X
    G = X @ X.T
    Gr = rest @ rest.T
    w0 = np.ones(K) if basis.weights is None else np.asarray(basis.weights, dtype=np.float64)
    ZW = X @ W
    iu = np.triu_indices(K, 1)
    out = np.empty(len(i))
    groups: dict = {}  # pairs that leave out the same models share one estimate (the children of one parent)
    for k, fam in enumerate(families):
        groups.setdefault(frozenset(int(f) for f in fam), []).append(k)
    for fam, members in groups.items():
        w = w0.copy()
        w[np.asarray(sorted(fam), dtype=np.int64)] = 0.0
        sw = np.sqrt(w)
        lam, U = np.linalg.eigh(sw[:, None] * Gr * sw[None, :])
        order = np.argsort(lam)[::-1][:keep]
        lam, U = np.maximum(lam[order], 1e-300), U[:, order]
        V = (rest.T @ (sw[:, None] * U)) / np.sqrt(lam)
        Zp = X @ V
        # V ⟂ W (V lies in rest's row space): the residual Gram is G − ZW ZWᵀ − Zp Zpᵀ.
        R = G - ZW @ ZW.T - Zp @ Zp.T
        d = np.sqrt(np.maximum(np.diag(R), 1e-300))
        C = fisher_z(np.clip(R / d[:, None] / d[None, :], -1.0, 1.0))
        mu, sigma = fit_null(C[iu])
        for k in members:
            out[k] = (C[i[k], j[k]] - mu) / sigma
    return out


__all__ = ["Basis", "DEFAULT_ALPHA", "basis_sample", "candidates", "check_alpha", "direction_t", "fisher_z",
           "fit_null", "holm_rows", "kaiser_rank", "leave_out_statistics", "lineage_basis", "p_values",
           "pair_correlations", "partial_correlation", "population_basis", "project", "relatives_count",
           "rescale_texts", "residual_correlation_matrix", "residual_norms2", "structure_basis", "text_scales",
           "with_shift_directions", "worse_share"]
