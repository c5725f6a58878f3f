"""Which model came from which (issue 25): ``lineage(mm)`` tests every pair of models, ``provenance(mm, a, b)`` one.

The numeric core is :mod:`lmmap.maths.lineage` (the statistic, its null, the
Holm correction, direction and merges); this module names the models, reads
the metadata (a declared ``base_model``, checkpoints' ``trajectory`` and
``step``), fits the null on declared-unrelated pairs where the metadata has
enough of them, and decides for every model:

* ``derived`` — from ``parent`` (and ``parent2`` for a merge): a model whose
  residual correlation with it is significant after the correction, oriented
  as its ancestor. The directions' estimate leaves the pair's own lineages
  out (:func:`lmmap.maths.lineage.leave_out_statistics`): on maps of
  :data:`LEAVE_OUT_MIN_K`–:data:`LEAVE_OUT_MAX_K` models every candidate
  pair's statistic is computed without the two models' nearest candidates;
  on other maps up to :data:`CONFIRM_MAX_K` models an inferred parent the
  metadata do not declare must stay significant (Bonferroni over the model's
  K − 1 tests) without the two lineages (column ``confirm_statistic``);
* ``independent`` — no stored model is its parent (unrelated to all, or the
  root of a lineage: its relatives are its descendants);
* ``undecided`` — related at α before the correction but not after, or a
  parent not confirmed without the two lineages.

Nothing K×K is formed past :data:`lmmap.map.DENSE_MAX_K` models: candidate
parents come from a sketch of the residuals searched by :mod:`lmmap.maths.knn`.

**The map's rings** (column ``flagged``; :func:`lmmap.analyses.map.build_map`
draws them): a model the test calls ``derived`` is flagged when

* it has a declared base (``base_model``, or a checkpoint of a declared
  trajectory) and none of its inferred parents is in its declared lineage
  (the tree of ``base_model`` links with trajectories and lensed layers) —
  the test disagrees with the metadata (a parent elsewhere in its own
  declared lineage, a sibling or a quantisation of its base, is a
  refinement, not a contradiction); or
* it has none (no metadata, or the root of a lineage) and an inferred parent
  belongs to another declared lineage (one of at least two models) — the
  test puts it in a lineage the metadata does not.

``independent`` and ``undecided`` models are never flagged: an unconfirmed
declared base is not evidence against it (the test has little power on few
texts).

:func:`likely_parents` asks the question of ``lmmap add``: each new model
against the existing ones only (an m×K block of products, whatever K).
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lmmap.exceptions import InputError
from lmmap.map import LINEAGE_TEST_MIN_MODELS, ModelMap
from lmmap.maths import lineage as core
from lmmap.progress import ProgressFn, say

MIN_LINEAGE_MODELS = LINEAGE_TEST_MIN_MODELS
DECISIONS = ("derived", "independent", "undecided")
# A merge's first parent: between two related candidates a and b, b explains the merge better when
# ρ(i, b | a) exceeds ρ(i, a | b) by this many sampling sds (1/√(d − 3) in Fisher's z) — a fine-tune in a merge
# beats its own base, which it hides. (The null's sd would not do: it is inflated by the population
# structure, which two near-identical candidates share.)
TIE_SDS = 3.0
# A parent: two candidates whose statistics differ by less than this many null sds are a tie, and a tie goes
# to the one that is the other's ancestor (a quantisation of the parent explains a fine-tune as well as the
# parent). Measured: moving by the partial correlations instead sends fine-tunes to siblings (the domain's
# leftover structure makes a sibling look like a better explainer).
TIE_NULL_SDS = 2.0
# A merge of two related models (fine-tunes of one base) lies between them: given the merge, their residual
# correlation falls to at most −this many null sds in Fisher's z (measured on real tiny models: weight averages of
# two fine-tunes −2.9 to −4.2; a light fine-tune between its base and a full fine-tune on its domain −2.7; every
# other related triple above −1).
MERGE_BETWEEN_SDS = 2.5
# ... and its two parents explain its other relations: ρ(i, d | a, b) below this for every other related d
# (measured: synthetic weight averages −0.52 to 0.08; real ones up to 0.42 with their parents' base, which a merge
# of two fine-tunes stays nearer to than either, on 10 maps of six real lineages; a base between two of its
# fine-tunes, which the removed directions can make look anti-correlated, keeps 0.54–0.95 with its other children).
MERGE_EXPLAINED_RHO = 0.45
# Residual correlation from which two models are near-identical copies (an 8-bit copy of a small model: 0.9999).
COPY_RHO = 0.99
# Orientations that the structure and the loss do not override.
FIXED_DIRECTIONS = ("declared", "quantisation", "run", "merge")
# A model with the lower log-likelihood on at least this share of the texts is the degraded copy of the other.
DEGRADED_SHARE = 0.9
# Up to this many models each inferred parent is confirmed under directions estimated without the two lineages
# (a K×K eigendecomposition per parent; past it the leakage it corrects is diluted: measured at K = 2,546, a
# false-positive rate of 8e-5 without it).
CONFIRM_MAX_K = 500
# Up to this many models every candidate pair is tested without the two models' LEAVE_OUT_NEIGHBOURS nearest
# candidates in the directions' estimate (a K×K eigendecomposition per pair: 0.3 s at K = 66, about 10 s at 200).
LEAVE_OUT_MAX_K = 200
LEAVE_OUT_NEIGHBOURS = 8
# ... from this many: on the demo's 15 models two neighbourhoods are most of the map (measured: three of its six
# right parents lost); smaller maps confirm each inferred parent instead (CONFIRM_MAX_K).
LEAVE_OUT_MIN_K = 40
# Declared lineages calibrate the null when they cover at least this share of the map's models.
DECLARED_COVERAGE = 0.5


@dataclass(eq=False)
class LineageResult:
    """What :func:`lineage` found; :mod:`lmmap.report.lineage` writes it.

    ``table``: one row per model — model, parent, parent2 (merges), statistic (``(z − μ₀)/σ₀`` of the pair with its
    parent, or with its best candidate), confirm_statistic (the statistic with its parent under directions estimated
    without the two lineages; NaN when not computed), rho, p_value, p_adjusted, decision, direction (how the pair
    was oriented: declared; quantisation — a model whose checkpoint is quantised (metadata ``quantisation``) after
    a related one whose checkpoint is not; run — a point of a declared training run before a model outside any;
    merge; loss — the copy worse on at least 90 % of the texts is the degraded one; structure — the more central;
    copy — two near-identical models (ρ ≥ 0.99) that nothing else ordered: the structure's guess, which the data
    cannot confirm; variance, weak),
    declared_base, agreement (agree; disagree — a parent other than the declared one; unconfirmed — a declared base
    the test does not find, which is no evidence against it; new — a parent where none is declared; or empty),
    n_children, nearest_kl (the nearest model by KL, for comparison), flagged (the map's red ring, see "The map's
    rings" in the module docstring).
    ``pairs``: every pair tested (model_a, model_b, rho, z, statistic, p_value, p_adjusted, significant,
    ancestor). ``info``: rank, null (source, μ₀, σ₀, pairs), alpha, correction, K, d.
    """

    map: ModelMap
    table: pd.DataFrame
    pairs: pd.DataFrame
    alpha: float
    info: dict = field(default_factory=dict)
    #: (K, 2) positions of the models for the tree figure (``coords=`` of :func:`lineage`, else the map's
    #: ``embed("auto")``); None when the caller draws no figure (``build_map`` has its own)
    coords: np.ndarray | None = None

    @property
    def names(self) -> list[str]:
        return self.map.names

    def parents(self) -> dict[str, str]:
        """``{model: parent}`` of the models called derived (a merge: its first parent)."""
        t = self.table[self.table["decision"] == "derived"]
        return dict(zip(t["model"], t["parent"]))


@dataclass
class ProvenanceResult:
    """One pair: ``a``, ``b``, rho, statistic, p_value, p_adjusted, reading (one line), ancestor (or None),
    direction_t, and ``texts`` (the texts that carry the evidence: position, contribution)."""

    a: str
    b: str
    rho: float
    statistic: float
    p_value: float
    p_adjusted: float
    reading: str
    ancestor: str | None
    direction_t: float
    texts: pd.DataFrame
    info: dict = field(default_factory=dict)


# -- checks and metadata ------------------------------------------------------------------------------------------

def _check_map(mm) -> None:
    if not isinstance(mm, ModelMap):
        raise InputError(f"mm must be a ModelMap, got {type(mm).__name__}", params=("mm",))
    if mm.K < MIN_LINEAGE_MODELS:
        raise InputError(f"a lineage test needs a map of at least {MIN_LINEAGE_MODELS} models (the null is fitted "
                         f"from pairs of unrelated ones); got {mm.K}", params=("mm",))


def _column(mm, name):
    if mm.metadata is None or name not in mm.metadata.columns:
        return None
    return mm.metadata[name].reindex(mm.names).tolist()


def _declared(mm):
    """``(roots, declared_mask, steps, trajectories)``: each model's declared lineage (base_model, trajectory,
    layers), which models have a declared relative, and checkpoints' steps."""
    from lmmap.map import _lineage_roots

    bases = mm.base_models()
    root = _lineage_roots(mm.names, bases, mm._kin_links())
    roots = np.array([root[n] for n in mm.names], dtype=object)
    _, inverse, counts = np.unique(roots.astype(str), return_inverse=True, return_counts=True)
    declared = counts[inverse] >= 2
    steps = _column(mm, "step")
    traj = _column(mm, "trajectory")
    steps = np.array([np.nan if s is None or pd.isna(s) else float(s) for s in steps]) if steps else None
    if traj is not None:
        traj = np.array([t.strip() if isinstance(t, str) and t.strip() else None for t in traj], dtype=object)
    return bases, roots, declared, steps, traj


def _quantised(mm) -> np.ndarray:
    """Which models are declared quantised copies (metadata ``quantisation``: what ``lmmap score`` found in the
    checkpoint, :mod:`lmmap.scoring.quantisation`, or given by hand; any non-empty value but false/no/0)."""
    col = _column(mm, "quantisation")
    if col is None:
        return np.zeros(mm.K, dtype=bool)
    return np.array([not (v is None or (isinstance(v, float) and np.isnan(v)) or v is False
                          or str(v).strip().lower() in ("", "false", "no", "0", "none", "nan"))
                     for v in col], dtype=bool)


def _declared_ancestor(i, j, names, bases, steps, traj):
    """+1: ``i`` is declared the ancestor of ``j``; −1: ``j`` of ``i``; 0: nothing declared."""
    if bases.get(names[j]) == names[i]:
        return 1
    if bases.get(names[i]) == names[j]:
        return -1
    if _same_run(i, j, names, steps, traj) and np.isfinite(steps[i]) and np.isfinite(steps[j]) \
            and steps[i] != steps[j]:
        return 1 if steps[i] < steps[j] else -1
    return 0


def _same_run(i, j, names, steps, traj) -> bool:
    """``i`` and ``j`` are points of one declared training run (``trajectory`` — the run's name — and ``step``)."""
    if steps is None or traj is None or traj[i] is None:
        return False
    return traj[i] == traj[j] or traj[i] == names[j] or traj[j] == names[i]


def _later_points(names, steps, traj) -> np.ndarray:
    """Which models are a point of a declared run after its first step (the run's own model, named as the run,
    counts among its points, as in :func:`_same_run`)."""
    if steps is None or traj is None:
        return np.zeros(len(names), dtype=bool)
    runs, first = set(traj) - {None}, {}
    for n, t, st in zip(names, traj, steps):
        for run in ({t} | ({n} & runs)) - {None}:
            if np.isfinite(st):
                first[run] = min(first.get(run, np.inf), st)
    return np.array([t is not None and np.isfinite(st) and st > first.get(t, np.inf) for t, st in zip(traj, steps)],
                    dtype=bool)


def _features_and_basis(mm, rank, random_state):
    """The map's features with each text weighted (:func:`lmmap.maths.lineage.text_scales`) and the directions
    removed before pairs are compared, carried into them: what every test of this module compares."""
    X = mm.features()
    basis = core.lineage_basis(X, rank=rank, random_state=random_state)
    return core.rescale_texts(X, basis, core.text_scales(X, basis, random_state=random_state))


# -- the analysis --------------------------------------------------------------------------------------------------

def lineage(mm: ModelMap, *, alpha: float = core.DEFAULT_ALPHA, random_state=0, rank: int | None = None,
            k: int = core.N_CANDIDATES, coords=None, progress: ProgressFn = None) -> LineageResult:
    """For every model of ``mm``: its most likely parent among the map's models, the statistic, its p-value
    against "unrelated" and a decision (see the module docstring and :mod:`lmmap.maths.lineage`).

    Parameters
    ----------
    alpha : significance level in (0, 1); Holm-corrected within each model's K − 1 possible parents.
    random_state : seeds the sample of models the directions are estimated on, the sketch and the null's random
        pairs (large maps only).
    rank : principal directions removed (default: the Kaiser rule, from the data).
    k : candidate parents per model (nearest by residual correlation).
    coords : (K, 2) positions for the tree figure; ``None`` takes the map's ``embed("auto")``, ``False``
        draws none (``build_map`` passes its own map).
    """
    import lmmap.map as map_module
    from lmmap.maths.randomness import check_random_state

    _check_map(mm)
    alpha = core.check_alpha(alpha)
    check_random_state(random_state)
    from lmmap.params import check

    check("lineage_rank", rank, what="rank")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}", params=("k",))
    K, names = mm.K, mm.names
    dense = K <= map_module.DENSE_MAX_K
    say(progress, f"principal directions of {K:,} models…")
    X, basis = _features_and_basis(mm, rank, random_state)
    norms2 = core.residual_norms2(X, basis)
    kk = int(min(k, K - 1))
    say(progress, f"candidate parents ({kk} per model, {basis.rank} directions removed)…")
    cand = core.candidates(X, basis, kk, dense=dense, random_state=random_state, progress=progress)
    rows = np.repeat(np.arange(K), kk)
    rho = core.pair_correlations(X, basis, rows, cand.ravel(), norms2).reshape(K, kk)
    z = core.fisher_z(rho)

    bases, roots, declared, steps, traj = _declared(mm)
    quantised = _quantised(mm)
    null_source, zn = _null_sample(X, basis, norms2, roots, declared, dense, random_state)
    mu, sigma = core.fit_null(zn)
    left_out = LEAVE_OUT_MIN_K <= K <= LEAVE_OUT_MAX_K
    if left_out:
        # Small maps: each candidate pair's statistic under directions estimated without the two models' nearest
        # relatives (their lineages, as far as the candidates tell), against its own null. On a map of a few large
        # lineages those are a large share of the models, and the map's own directions take much of their shared
        # idiosyncrasy away (measured on 66-model ecosystems: fine-tune–parent pairs past the Bonferroni
        # threshold 8–46% → 42–79%; unrelated pairs under it: mean −0.4, sd 1.0).
        say(progress, f"{K * kk:,} candidate pairs, each without its two neighbourhoods…")
        keys_u = np.unique(np.sort(np.stack([rows, cand.ravel()], axis=1), axis=1), axis=0)
        near = cand[:, :LEAVE_OUT_NEIGHBOURS]
        fams = [set(near[a].tolist()) | set(near[b].tolist()) | {int(a), int(b)} for a, b in keys_u]
        st = core.leave_out_statistics(X, basis, keys_u[:, 0], keys_u[:, 1], fams)
        lookup = {(int(a), int(b)): v for (a, b), v in zip(keys_u, st)}
        z = mu + sigma * np.array([lookup[(min(i, j), max(i, j))] for i, j in zip(rows, cand.ravel())]).reshape(K, kk)
    p = core.p_values(z, mu, sigma)
    p_holm = core.holm_rows(p, K - 1)

    # One entry per unordered pair: the larger of the two Holm adjustments (valid in both models' families);
    # a pair listed by one model only gets Bonferroni's (K − 1)·p from the other, which bounds Holm's.
    pair = {}
    for i, j, rr, zz, pp, hh in zip(rows, cand.ravel(), rho.ravel(), z.ravel(), p.ravel(), p_holm.ravel()):
        key = (min(i, j), max(i, j))
        if key in pair:
            pair[key][3] = max(pair[key][3], hh)
            pair[key][4] = True
        else:
            pair[key] = [rr, zz, pp, hh, False]
    keys = np.array(list(pair), dtype=np.int64).reshape(-1, 2)
    vals = np.array(list(pair.values()), dtype=np.float64).reshape(-1, 5)
    both = vals[:, 4].astype(bool)
    vals[~both, 3] = np.maximum(vals[~both, 3], np.minimum(1.0, (K - 1) * vals[~both, 2]))
    sig = vals[:, 3] <= alpha
    stat = (vals[:, 1] - mu) / sigma

    say(progress, f"orienting {int(sig.sum())} related pairs…")
    # Orientation of every significant pair: +1 when keys[:, 0] is the ancestor.
    orient = np.zeros(len(keys), dtype=np.int64)
    how = np.full(len(keys), "", dtype=object)
    dir_t = np.zeros(len(keys))
    s_idx = np.flatnonzero(sig)
    if s_idx.size:
        dir_t[s_idx] = core.direction_t(X, basis, keys[s_idx, 0], keys[s_idx, 1])
    for n in s_idx:
        a, b = keys[n]
        dec = _declared_ancestor(a, b, names, bases, steps, traj)
        if dec:
            orient[n], how[n] = dec, "declared"
        elif quantised[a] != quantised[b]:
            # A model whose checkpoint is quantised (lmmap score records it) comes after the related models that
            # are not: quantising makes a deployable end product. The log-likelihoods cannot order a model and its
            # 8-bit copy (measured on tiny GPT-2 models: 0.0003 nats per text, of either sign).
            orient[n], how[n] = (1 if quantised[b] else -1), "quantisation"
        elif traj is not None and (traj[a] is None) != (traj[b] is None):
            # A point of a declared training run (a checkpoint, or the run's final model) and a model that is
            # not: the run came first — models are fine-tuned from released runs, not runs from fine-tunes. The
            # data cannot tell a base from a light fine-tune of it (measured on real tiny models: the light
            # fine-tune is the more central and took the base's place as parent of its siblings).
            orient[n], how[n] = (1 if traj[a] is not None else -1), "run"
        else:
            orient[n] = 1 if dir_t[n] >= 0 else -1
            how[n] = "variance" if abs(dir_t[n]) >= 2 else "weak"
    index = {tuple(kv): n for n, kv in enumerate(keys)}

    def rho_of(a, b):
        n = index.get((min(a, b), max(a, b)))
        if n is not None:
            return vals[n, 0]
        return float(core.pair_correlations(X, basis, [a], [b], norms2)[0])

    def sig_of(a, b):
        n = index.get((min(a, b), max(a, b)))
        return n is not None and bool(sig[n])

    partners = [[] for _ in range(K)]
    for n in s_idx:
        a, b = keys[n]
        partners[a].append((b, n))
        partners[b].append((a, n))

    def ancestor_of(n, i):
        """Is the other model of significant pair ``n`` an ancestor of ``i``?"""
        a, b = keys[n]
        return (orient[n] == 1 and b == i) or (orient[n] == -1 and a == i)

    sampling_sd = 1.0 / np.sqrt(max(X.shape[1] - 3, 1))

    def margin(i, a, b):
        """(z(ρ_ib·a) − z(ρ_ia·b)) in sampling sds: positive when ``b`` explains ``i`` better than ``a`` does."""
        r_ia, r_ib, r_ab = rho_of(i, a), rho_of(i, b), rho_of(a, b)
        return float(core.fisher_z(core.partial_correlation(r_ib, r_ia, r_ab))
                     - core.fisher_z(core.partial_correlation(r_ia, r_ib, r_ab))) / sampling_sd

    def best_explainer(i, j, pool, prefer_ancestors):
        """Walk from candidate ``j`` of ``i`` to a related candidate of ``pool`` that explains ``i`` better (by
        more than :data:`TIE_SDS`) or, when ``prefer_ancestors``, to ``j``'s ancestor (not an earlier point of
        ``j``'s declared run) whose statistic is within :data:`TIE_NULL_SDS` of ``j``'s."""
        seen = {j}
        moved = True
        while moved:
            moved = False
            for j2, n2 in pool:
                if j2 in seen or j2 == i:
                    continue
                m = index.get((min(j, j2), max(j, j2)))
                if m is None or not sig[m]:
                    continue
                if prefer_ancestors:
                    # (Not back along a declared run: its later point is the nearer parent, not a guess.) The tie is
                    # judged by the plain residual correlations, not each pair's left-out statistic, whose own
                    # directions and null can part a near copy from its original (measured: a quantisation then
                    # took a fine-tune of its original as parent; synthetic LS fine-tunes 2 of 300 worse, real
                    # ones unchanged).
                    better = ancestor_of(m, j) and not _same_run(j, j2, names, steps, traj) \
                        and (core.fisher_z(rho_of(i, j)) - core.fisher_z(rho_of(i, j2))) / sigma < TIE_NULL_SDS
                else:
                    better = margin(i, j, j2) > TIE_SDS
                if better:
                    j, moved = j2, True
                    seen.add(j2)
                    break
        return j

    def explains(i, a, b):
        """``(statistic, p)`` of ρ(i, a | b): does ``a`` explain ``i`` beyond ``b``?"""
        zp = core.fisher_z(core.partial_correlation(rho_of(i, a), rho_of(i, b), rho_of(a, b)))
        return (zp - mu) / sigma, float(core.p_values(zp, mu, sigma))

    def explained(i, d, a, b):
        """ρ(i, d | a, b): what is left of the relation of ``i`` and ``d`` once ``a`` and ``b`` are accounted for."""
        pc = core.partial_correlation
        return float(pc(pc(rho_of(i, d), rho_of(i, a), rho_of(d, a)), pc(rho_of(i, b), rho_of(i, a), rho_of(b, a)),
                        pc(rho_of(d, b), rho_of(d, a), rho_of(b, a))))

    def original(j):
        """``j``, or the model ``j`` is a near-identical copy of where the metadata order the two (a merge's parent
        and its quantised copy explain the merge equally well)."""
        for j2, n2 in partners[j]:
            if vals[n2, 0] >= COPY_RHO and how[n2] in ("declared", "quantisation", "run") and ancestor_of(n2, j):
                return j2
        return j

    def parents_of_merge(i, a, b):
        oa, ob = original(a), original(b)
        return (a, b) if i in (oa, ob) or oa == ob else (oa, ob)

    # Merges: a collider — two partners that both explain the model beyond the other, either unrelated to each
    # other, or related (two fine-tunes of one base) with the model between them: given it, they are strongly
    # anti-correlated (ρ(a, b | i) ≤ −MERGE_BETWEEN_SDS null sds; a fork, the base of two fine-tunes, leaves them
    # about uncorrelated, a chain base → fine-tune → its fine-tune too). The second test takes every pair of
    # partners, related to each other or not: two fine-tunes of one base need not be significantly related on a small
    # map, and the first test only looks past the model's best explainer, which can be the base (measured on real
    # maps of six lineages: the base then took the merge as its child).
    merge_of = {}
    # A point of a declared run after its first comes from the run's earlier points: training continues, it does
    # not average two models (a run's final model can look like the merge of its last checkpoint and another run's
    # first: early checkpoints share the untrained state).
    later_point = _later_points(names, steps, traj)
    for i in range(K):
        if len(partners[i]) < 2 or later_point[i]:
            continue
        ps = sorted(partners[i], key=lambda t: -vals[t[1], 1])
        ps = [(j, n) for j, n in ps if _declared_ancestor(i, j, names, bases, steps, traj) != 1]
        if len(ps) < 2:
            continue
        j1 = best_explainer(i, ps[0][0], ps, False)
        best = None
        for j2, n2 in ps:
            if j2 == j1 or sig_of(j1, j2):
                continue
            tp, pp = explains(i, j2, j1)
            if pp * (K - 2) <= alpha and (best is None or tp > best[1]):
                best = (j2, tp)
        if best is not None:
            merge_of[i] = parents_of_merge(i, j1, best[0])
            continue
        between = None
        for x, (a, _) in enumerate(ps):
            for b, _ in ps[x + 1:]:
                r_ab, r_ia, r_ib = rho_of(a, b), rho_of(i, a), rho_of(i, b)
                # A near-identical copy leaves nothing to condition on (its partial correlations are noise); two
                # points of one declared chain (a run's checkpoints) have every later point between them.
                if max(r_ab, r_ia, r_ib) >= COPY_RHO \
                        or _declared_ancestor(a, b, names, bases, steps, traj):
                    continue
                gap = core.fisher_z(core.partial_correlation(r_ab, r_ia, r_ib)) / sigma
                if gap > -MERGE_BETWEEN_SDS or (between is not None and gap >= between[2]):
                    continue
                (ta, pa), (tb, pb) = explains(i, a, b), explains(i, b, a)
                if max(pa, pb) * (K - 2) > alpha:
                    continue
                # A merge's two parents explain its other relations; a base between two of its fine-tunes (whose
                # correlation the removed directions can push below the fork's) does not explain its other
                # children away. Its own near-identical copies are left out of the check.
                if any(explained(i, d, a, b) >= MERGE_EXPLAINED_RHO for d, _ in ps
                       if d not in (a, b) and rho_of(i, d) < COPY_RHO):
                    continue
                between = (a, b, gap) if ta >= tb else (b, a, gap)
        if between is not None:
            merge_of[i] = parents_of_merge(i, *between[:2])
    for i, (j1, j2) in merge_of.items():
        # A merge descends from everything it is related to: its relatives are its parents' relatives.
        for j, n in partners[i]:
            if how[n] != "declared":
                orient[n] = 1 if keys[n, 1] == i else -1
                how[n] = "merge"
    # The rest by structure: in a lineage the ancestor is the more central model (the parent of several
    # fine-tunes is related to each more closely than they are to one another; a quantisation's relations are
    # its original's, each slightly weakened); a tie (a lineage of two) by the variation each adds.
    central = np.zeros(K)
    for i in range(K):
        if i not in merge_of:
            central[i] = sum(stat[n] for j, n in partners[i] if j not in merge_of)
    for n in s_idx:
        if how[n] in FIXED_DIRECTIONS:
            continue
        a, b = keys[n]
        gap = central[a] - central[b]
        if abs(gap) > 1e-9 * max(abs(central[a]), 1.0):
            orient[n] = 1 if gap > 0 else -1
            how[n] = "structure"
    # A copy worse on almost every text is a degraded copy of the other (a quantisation costs a little
    # likelihood everywhere; a fine-tune gains on its domain): this overrides the structure, whose evidence
    # between two near-identical models is weak.
    loose = np.array([n for n in s_idx if how[n] not in FIXED_DIRECTIONS], dtype=np.int64)
    if loose.size:
        share = core.worse_share(mm.L, keys[loose, 0], keys[loose, 1], mm.w)
        for n, sh in zip(loose, share):
            if sh >= DEGRADED_SHARE or sh <= 1 - DEGRADED_SHARE:
                orient[n], how[n] = (-1 if sh >= DEGRADED_SHARE else 1), "loss"
    for n in s_idx:
        # Near-identical copies that the loss did not order (an 8-bit copy of a small model: measured, a mean
        # difference of 0.0003 nats per text either way): the order is the structure's guess, and is labelled so.
        if how[n] == "structure" and vals[n, 0] >= COPY_RHO:
            how[n] = "copy"
    ancestors = [[(j, n) for j, n in partners[i] if ancestor_of(n, i)] for i in range(K)]
    # A child that is itself a merge's parent must not take the merge as its parent.
    rows_out = []
    children = np.zeros(K, dtype=np.int64)
    parent_idx = np.full(K, -1)
    chosen_pair = np.full(K, -1)
    for i in range(K):
        if i in merge_of:
            j1, j2 = merge_of[i]
            parent_idx[i] = j1
            chosen_pair[i] = index[(min(i, j1), max(i, j1))]
            continue
        anc = sorted(ancestors[i], key=lambda t: -vals[t[1], 1])
        if later_point[i]:
            # ... and its parent is in its run: another run's checkpoint at the same stage shares only the untrained
            # state (measured on the synthetic LS subsets: three runs' second checkpoints took the first run's).
            anc = [(j, n) for j, n in anc if _declared_ancestor(i, j, names, bases, steps, traj) == -1]
        if not anc:
            continue
        j = best_explainer(i, anc[0][0], anc, True)
        n = index[(min(i, j), max(i, j))]
        parent_idx[i], chosen_pair[i] = j, n
    # Confirmation (small maps): each inferred parent again, under directions estimated without the two models'
    # lineages (:func:`core.leave_out_statistics`); a parent that does not pass the model's Bonferroni threshold
    # there is dropped and the model is undecided.
    confirm = np.full(K, np.nan)
    unconfirmed = np.zeros(K, dtype=bool)
    if not left_out and K <= CONFIRM_MAX_K and basis.shift_rank + basis.rank > 0:
        from scipy.special import ndtri

        thr = float(ndtri(1 - alpha / max(K - 1, 1)))
        # A pair the metadata declare (base_model, a trajectory's steps) needs no confirmation: the question there
        # is only whether the data contradict it (measured on the demo's 15 models, confirming declared pairs
        # dropped three of its six right parents: leaving two lineages out of so small a map moves everything).
        tests = [(i, int(parent_idx[i])) for i in range(K)
                 if parent_idx[i] >= 0 and not _declared_ancestor(i, int(parent_idx[i]), names, bases, steps, traj)]
        tests += [(i, int(merge_of[i][1])) for i in merge_of]
        if tests:
            say(progress, f"confirming {len(tests)} inferred parents without their lineages…")
            fams = [{a, b} | {x for x, _ in partners[a]} | {x for x, _ in partners[b]} for a, b in tests]
            st = core.leave_out_statistics(X, basis, [a for a, _ in tests], [b for _, b in tests], fams)
            for (a, b), v in zip(tests, st):
                if parent_idx[a] == b:
                    confirm[a] = v
                if v < thr:
                    if parent_idx[a] == b:
                        parent_idx[a], chosen_pair[a], unconfirmed[a] = -1, -1, True
                        merge_of.pop(a, None)
                    elif a in merge_of and merge_of[a][1] == b:
                        merge_of.pop(a)
    for i in range(K):
        if parent_idx[i] >= 0:
            children[parent_idx[i]] += 1
        if i in merge_of:
            children[merge_of[i][1]] += 1

    # Each model's best candidate (for the models with no parent: how close it came).
    best_n = np.array([index[(min(i, cand[i, 0]), max(i, cand[i, 0]))] for i in range(K)])
    nearest_idx, nearest_kl = mm.nearest(1)
    declared_base = [bases.get(n, "") for n in names]
    for i in range(K):
        n = chosen_pair[i] if chosen_pair[i] >= 0 else best_n[i]
        if parent_idx[i] >= 0:
            decision = "derived"
            direction = how[n]
        else:
            decision = "undecided" if unconfirmed[i] or (vals[best_n[i], 2] <= alpha and not sig[best_n[i]]) \
                else "independent"
            direction = ""
        parent = names[parent_idx[i]] if parent_idx[i] >= 0 else ""
        parent2 = names[merge_of[i][1]] if i in merge_of else ""
        db = declared_base[i]
        if db:
            # A declared base the test does not find is unconfirmed, not contradicted: at the test's power (few
            # texts, a heavy fine-tune, a checkpoint) "independent" is no evidence against it.
            agreement = ("agree" if db in (parent, parent2) else "disagree") if decision == "derived" \
                else "unconfirmed"
        else:
            agreement = "new" if decision == "derived" else ""
        inferred = [j for j in (parent_idx[i], merge_of.get(i, (-1, -1))[1]) if j >= 0]
        if not inferred:
            flagged = False
        elif db or (traj is not None and traj[i] is not None and declared[i]):
            flagged = all(roots[j] != roots[i] for j in inferred)
        else:
            flagged = any(declared[j] and roots[j] != roots[i] for j in inferred)
        rows_out.append(dict(
            model=names[i], parent=parent, parent2=parent2, statistic=float(stat[n]), rho=float(vals[n, 0]),
            p_value=float(vals[n, 2]), p_adjusted=float(vals[n, 3]), decision=decision, direction=direction,
            candidate=names[keys[n, 1] if keys[n, 0] == i else keys[n, 0]], declared_base=db, agreement=agreement,
            n_children=int(children[i]), nearest_kl=names[nearest_idx[i, 0]], kl_to_nearest=float(nearest_kl[i, 0]),
            confirm_statistic=float(confirm[i]), flagged=flagged))
    table = pd.DataFrame(rows_out)
    name_arr = np.asarray(names, dtype=object)
    anc_name = np.where(orient == 1, name_arr[keys[:, 0]], np.where(orient == -1, name_arr[keys[:, 1]], ""))
    pairs = pd.DataFrame({
        "model_a": name_arr[keys[:, 0]], "model_b": name_arr[keys[:, 1]], "rho": vals[:, 0], "z": vals[:, 1],
        "statistic": stat, "p_value": vals[:, 2], "p_adjusted": vals[:, 3], "significant": sig,
        "ancestor": anc_name, "direction": how, "direction_t": dir_t})
    pairs = pairs.sort_values("statistic", ascending=False, kind="stable").reset_index(drop=True)
    info = dict(alpha=alpha, correction="holm within each model's K-1 possible parents", rank=basis.rank,
                rank_rule="given" if rank is not None else "kaiser (eigenvalues above their mean)",
                null=dict(source=null_source, mu=mu, sigma=sigma, pairs=int(len(zn))), n_models=K,
                n_texts=int(mm.n_texts), n_map_texts=int(mm.L.shape[1]), weighted=mm.w is not None,
                candidates_per_model=kk, dense=dense, random_state=random_state, text_set_id=mm.text_set_id)
    if coords is None:
        coords = mm.embed("auto")
    return LineageResult(map=mm, table=table, pairs=pairs, alpha=alpha, info=info,
                         coords=None if coords is False else np.asarray(coords, dtype=np.float64))


def _null_sample(X, basis, norms2, roots, declared, dense, random_state):
    """``(source, z)`` of the pairs that calibrate the null: declared-unrelated pairs where declared lineages
    cover at least :data:`DECLARED_COVERAGE` of the models, else all pairs (small maps) or random pairs."""
    K = len(roots)
    use_declared = declared.mean() >= DECLARED_COVERAGE
    rng = np.random.default_rng(random_state)
    if dense:
        i, j = np.triu_indices(K, 1)
    else:
        m = core.NULL_PAIRS * (3 if use_declared else 1)
        i, j = rng.integers(0, K, m), rng.integers(0, K, m)
        keep = i != j
        i, j = i[keep], j[keep]
    source = "all pairs" if dense else "random pairs"
    if use_declared:
        keep = declared[i] & declared[j] & (roots[i] != roots[j])
        if keep.sum() >= core.MIN_NULL_PAIRS:
            i, j, source = i[keep][:core.NULL_PAIRS], j[keep][:core.NULL_PAIRS], "declared unrelated pairs"
    if source != "declared unrelated pairs" and len(i) > core.NULL_PAIRS:
        # (This truncated i alone on dense maps of more than 200 models, and failed on the mismatch.)
        pick = rng.choice(len(i), core.NULL_PAIRS, replace=False) if dense else slice(core.NULL_PAIRS)
        i, j = i[pick], j[pick]
    return source, core.fisher_z(core.pair_correlations(X, basis, i, j, norms2))


def inferred_parents(mm: ModelMap, alpha: float = core.DEFAULT_ALPHA, **kwargs) -> dict[str, str]:
    """``{model: parent}`` of every model :func:`lineage` calls derived — what a map can draw as its inferred
    lineage lines beside the declared ``base_model`` ones (:meth:`lmmap.map.ModelMap.base_models`)."""
    return lineage(mm, alpha=alpha, **kwargs).parents()


PLACED_DECISIONS = ("derived", "ancestor", "undecided", "independent")


def likely_parents(mm: ModelMap, models, *, among=None, alpha: float = core.DEFAULT_ALPHA, rank: int | None = None,
                   random_state=0) -> tuple[pd.DataFrame, np.ndarray]:
    """Each of ``models``' most likely parent among ``among`` (default: the map's other models) — what
    ``lmmap add`` reports for the models it placed.

    The basis and the null are those of :func:`lineage` on the whole of ``mm``; each model is tested against
    every model of ``among`` (an m×n block of inner products, nothing K×K; Holm within its n tests) and its
    best partner, when significant, oriented by the metadata (``base_model``, trajectory steps) or else
    presumed its parent (a model being added is usually the newer one; the variation each adds,
    :func:`lmmap.maths.lineage.direction_t`, is reported but pointed the wrong way for fine-tunes). The structural
    tie-breaks and merges of :func:`lineage` need the whole map's tests and are not made here.

    Returns ``(table, p_adjusted)``: ``table`` one row per model — model, likely_parent (when ``derived``),
    related_to (its best partner), statistic, rho, p_value, p_adjusted, decision (:data:`PLACED_DECISIONS`:
    ``ancestor`` when the metadata declare the partner derived from the model), direction (declared, quantisation,
    presumed), direction_t; ``p_adjusted`` (m×n) the Holm-adjusted p-value of every pair, in the order of ``among``.
    """
    import lmmap.map as map_module

    _check_map(mm)
    alpha = core.check_alpha(alpha)
    names = mm.names
    models = [str(m) for m in models]
    rows = np.array([mm.index_of(m) for m in models], dtype=np.int64)
    among = [n for n in names if n not in set(models)] if among is None else [str(a) for a in among]
    cols = np.array([mm.index_of(a) for a in among], dtype=np.int64)
    if not len(models) or len(cols) < 1:
        raise InputError("likely_parents needs at least one model and one model to compare it with",
                         params=("models", "among"))
    dense = mm.K <= map_module.DENSE_MAX_K
    X, basis = _features_and_basis(mm, rank, random_state)
    norms2 = core.residual_norms2(X, basis)
    Zr = basis.Zr
    Xr = np.asarray(X[rows], dtype=np.float64)
    ip = np.empty((len(rows), len(cols)))
    for s in range(0, len(cols), core.PAIR_BLOCK):
        c = cols[s:s + core.PAIR_BLOCK]
        ip[:, s:s + core.PAIR_BLOCK] = Xr @ np.asarray(X[c], dtype=np.float64).T - Zr[rows] @ Zr[c].T
    den = np.sqrt(norms2[rows][:, None] * norms2[cols][None, :])
    rho = np.clip(np.divide(ip, den, out=np.zeros_like(ip), where=den > 0), -core.RHO_MAX, core.RHO_MAX)
    self_pair = rows[:, None] == cols[None, :]
    rho[self_pair] = -core.RHO_MAX
    z = core.fisher_z(rho)
    bases, roots, declared, steps, traj = _declared(mm)
    quantised = _quantised(mm)
    source, zn = _null_sample(X, basis, norms2, roots, declared, dense, random_state)
    mu, sigma = core.fit_null(zn)
    p = core.p_values(z, mu, sigma)
    p[self_pair] = 1.0
    n_tests = np.maximum(len(cols) - self_pair.sum(axis=1), 1)
    p_adj = np.vstack([core.holm_rows(p[r:r + 1], int(n_tests[r])) for r in range(len(rows))])
    out = []
    for r, i in enumerate(rows):
        b = int(np.argmax(np.where(self_pair[r], -np.inf, z[r])))
        j = int(cols[b])
        decision, direction, t, parent = "independent", "", 0.0, ""
        if p_adj[r, b] <= alpha:
            dec = _declared_ancestor(j, i, names, bases, steps, traj)
            t = float(core.direction_t(X, basis, [j], [i])[0])
            if dec:
                up, direction = dec == 1, "declared"
            elif quantised[i] != quantised[j]:
                up, direction = bool(quantised[i]), "quantisation"
            else:
                # The variation each adds (direction_t) points the wrong way for fine-tunes whose shift the basis
                # removes (measured: base → fine-tune came out "ancestor"); a model being added is presumed the
                # newer one, and direction_t is reported beside.
                up, direction = True, "presumed"
            decision = "derived" if up else "ancestor"
            parent = names[j] if up else ""
        elif p[r, b] <= alpha:
            decision = "undecided"
        out.append(dict(model=names[i], likely_parent=parent, related_to=names[j],
                        statistic=float((z[r, b] - mu) / sigma), rho=float(rho[r, b]), p_value=float(p[r, b]),
                        p_adjusted=float(p_adj[r, b]), decision=decision, direction=direction, direction_t=t))
    return pd.DataFrame(out), p_adj


def provenance(mm: ModelMap, a: str, b: str, *, alpha: float = core.DEFAULT_ALPHA, rank: int | None = None,
               top: int = 10, random_state=0) -> ProvenanceResult:
    """The test for one pair: statistic, p-value (Holm within the two models' families), a one-line reading,
    the direction the data suggest and the ``top`` texts that carry the evidence (largest ``e_a(s)·e_b(s)``, the
    residuals of the weighted texts, as the test compares them)."""
    import lmmap.map as map_module

    _check_map(mm)
    alpha = core.check_alpha(alpha)
    i, j = mm.index_of(a), mm.index_of(b)
    if i == j:
        raise InputError(f"a and b must be two different models, got {a!r} twice", params=("a", "b"))
    dense = mm.K <= map_module.DENSE_MAX_K
    X, basis = _features_and_basis(mm, rank, random_state)
    norms2 = core.residual_norms2(X, basis)
    rho = float(core.pair_correlations(X, basis, [i], [j], norms2)[0])
    bases, roots, declared, steps, traj = _declared(mm)
    source, zn = _null_sample(X, basis, norms2, roots, declared, dense, random_state)
    mu, sigma = core.fit_null(zn)
    z = float(core.fisher_z(rho))
    stat = (z - mu) / sigma
    p = float(core.p_values(z, mu, sigma))
    p_adj = min(1.0, (mm.K - 1) * p)
    t = float(core.direction_t(X, basis, [i], [j])[0])
    dec = _declared_ancestor(i, j, mm.names, bases, steps, traj)
    ancestor = None
    if p_adj <= alpha:
        if dec:
            ancestor, how = (a if dec == 1 else b), "declared"
        else:
            ancestor = a if t >= 0 else b
            how = "clearly" if abs(t) >= 2 else "weakly"
        other = b if ancestor == a else a
        via = "as declared" if how == "declared" else f"{how}, by their own variation (t = {abs(t):.1f})"
        reading = (f"related (statistic {stat:.1f} null sds, p = {p_adj:.2g} corrected): {other} looks derived "
                   f"from {ancestor} ({via})")
    elif p <= alpha:
        reading = f"undecided: related at α = {alpha:g} before the correction (p = {p:.2g}), not after ({p_adj:.2g})"
    else:
        reading = f"no evidence of a common origin (statistic {stat:.1f} null sds, p = {p:.2g})"
    Zr, Vr = basis.Zr, basis.Vr
    ea = np.asarray(X[i], dtype=np.float64) - Zr[i] @ Vr.T
    eb = np.asarray(X[j], dtype=np.float64) - Zr[j] @ Vr.T
    contrib = ea * eb / max(np.sqrt(norms2[i] * norms2[j]), 1e-300)
    order = np.argsort(-contrib, kind="stable")[:int(top)]
    texts = pd.DataFrame({"position": order, "contribution": contrib[order], "residual_a": ea[order],
                          "residual_b": eb[order]})
    share = float(contrib[contrib > 0].sum() and contrib[order].clip(min=0).sum() / contrib[contrib > 0].sum())
    info = dict(alpha=alpha, rank=basis.rank, null=dict(source=source, mu=mu, sigma=sigma, pairs=int(len(zn))),
                top_share=share, n_models=mm.K, text_set_id=mm.text_set_id)
    return ProvenanceResult(a=a, b=b, rho=rho, statistic=stat, p_value=p, p_adjusted=p_adj, reading=reading,
                            ancestor=ancestor, direction_t=t, texts=texts, info=info)


class _CallableModule(types.ModuleType):
    """``lmmap.analyses.lineage(mm, ...)`` (the issue's spelling) calls :func:`lineage`; the module's other
    names stay reachable as attributes."""

    def __call__(self, *args, **kwargs):
        return lineage(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["LineageResult", "PLACED_DECISIONS", "ProvenanceResult", "inferred_parents", "likely_parents", "lineage",
           "provenance"]
