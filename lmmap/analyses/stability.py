"""Stability of the 2-D map under text resampling: ellipses and Table 3 (SPEC §6; resampling paper §5.1, Appendix B.2).

R times: resample n texts (method M) from ``D_N``; build the map's features
``Q̃_d W^{1/2}`` from those texts alone (clip with the map's threshold,
w-weighted row centring, column centring; SPEC §4); embed them (t-SNE with
PCA initialisation and a fixed ``embedding_random_state``). Each
configuration is aligned by Procrustes to the embedding of the full ``Q``
and summarised per model (mean, covariance and its ellipse, Bias²,
Variance, MSE); the formulas are in :mod:`lmmap.maths.stability`.

:func:`map_stability` runs one setting (method, n) on a
:class:`~lmmap.map.ModelMap` and returns a :class:`StabilityResult`;
:func:`compare_stability` runs several against one shared reference and
returns a :class:`StabilityComparison` (Table 3). The R embeddings run on
worker processes (:func:`lmmap.parallel.parallel_map`). No files:
:func:`lmmap.report.write` writes either result.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from lmmap.exceptions import InputError
from lmmap.maths.bootstrap import check_replicates
from lmmap.maths.randomness import seed_of, seed_sequence
from lmmap.maths.resampling import (
    check_method, check_sample_size, default_resample_size, importance, note_if_no_real_subset, resample,
)
from lmmap.maths.stability import (
    align_all, as_configuration, bias_variance, centre, ellipse_axes, position_moments, resampled_features,
)
from lmmap.parallel import check_workers, parallel_map

DEFAULT_METHOD = "ls"
DEFAULT_N = 2900  # the paper's n for N = 10,000; the default is 29% of N (default_resample_size)


def reference_map(Q, embedding: str = "tsne", random_state: int = 42, **embed_kwargs) -> np.ndarray:
    """The reference configuration: the embedding of the full ``Q`` (K×N) (``auto``: MDS below 40 models, t-SNE above).

    A classical MDS map is on the scale of ``lmmap map``'s (squared distance ≈
    KL in nats per text, ``n_texts`` = N, the columns of ``Q``), so the
    ellipses, Bias² and Variance are in the map's units.
    """
    from lmmap.maths.embedding import embed, resolve_method

    Q = np.asarray(Q, dtype=np.float64)
    if Q.ndim == 2 and resolve_method(embedding, Q.shape[0]) == "mds":
        embed_kwargs.setdefault("n_texts", int(Q.shape[1]))
    return embed(Q, method=embedding, random_state=random_state, **embed_kwargs)


@dataclass
class StabilityResult:
    """R resampled maps of one setting aligned to the reference, and per-model statistics.

    ``reference`` is centred (K×2); ``aligned`` R×K×2; ``d`` the unique texts
    of each trial; ``mean`` K×2, ``cov`` K×2×2, ``bias2``/``variance``/``mse``
    (K,). ``model_map`` is the map the trials resampled (names, metadata,
    threshold), or None for a result built from bare arrays.
    """

    method: str
    n: int
    reference: np.ndarray
    aligned: np.ndarray
    d: np.ndarray
    mean: np.ndarray
    cov: np.ndarray
    bias2: np.ndarray
    variance: np.ndarray
    mse: np.ndarray
    model_map: Any = field(default=None, repr=False)
    embedding: str = "tsne"  # as requested (auto is resolved per map size)
    embedding_random_state: int = 42
    random_state: Any = 0

    @classmethod
    def from_configurations(cls, method: str, n: int, Ys, reference, d, **info) -> "StabilityResult":
        """Align raw configurations ``Ys`` (R×K×2) to ``reference`` and compute the statistics."""
        reference = centre(as_configuration(reference, "reference"))
        Zs = align_all(Ys, reference)
        mean, cov = position_moments(Zs)
        bias2, variance, mse = bias_variance(Zs, reference)
        return cls(method, int(n), reference, Zs, np.asarray(d), mean, cov, bias2, variance, mse, **info)

    @property
    def R(self) -> int:
        return self.aligned.shape[0]

    @property
    def label(self) -> str:
        return f"{self.method} n={self.n}"

    @property
    def names(self) -> list[str] | None:
        return None if self.model_map is None else list(self.model_map.names)

    def medians(self) -> dict[str, float]:
        """Table 3's entries: median Bias², Variance and MSE over models."""
        return {
            "bias2": float(np.median(self.bias2)),
            "variance": float(np.median(self.variance)),
            "mse": float(np.median(self.mse)),
        }

    def per_model(self, names=None):
        """One row per model: reference and mean positions, covariance, ellipse, Bias², Variance, MSE.

        ``names``: the models' names (default: those of the map).
        """
        import pandas as pd

        names = self.names if names is None else list(names)
        if names is None:
            raise InputError("give the models' names: this result has no map", params=("names",))
        if len(names) != self.mean.shape[0]:
            raise InputError(f"{len(names)} names for {self.mean.shape[0]} models", params=("names",))
        major, minor, angle = ellipse_axes(self.cov)
        return pd.DataFrame({
            "model": list(names),
            "x_ref": self.reference[:, 0], "y_ref": self.reference[:, 1],
            "x_mean": self.mean[:, 0], "y_mean": self.mean[:, 1],
            "cov_xx": self.cov[:, 0, 0], "cov_xy": self.cov[:, 0, 1], "cov_yy": self.cov[:, 1, 1],
            "sd_major": major, "sd_minor": minor, "angle_deg": angle,
            "bias2": self.bias2, "variance": self.variance, "mse": self.mse,
        })  # fmt: skip


def table3(results: Mapping[str, StabilityResult] | Iterable[StabilityResult]):
    """Table 3: one row per setting with the mean unique-text count d and the medians of Bias², Variance, MSE."""
    import pandas as pd

    items = results.items() if isinstance(results, Mapping) else [(r.label, r) for r in results]
    rows = []
    for label, r in items:
        rows.append({
            "setting": label, "method": r.method, "n": r.n, "R": r.R,
            "d_mean": float(np.mean(r.d)), "d_sd": float(np.std(r.d, ddof=1)) if r.R > 1 else 0.0,
            **r.medians(),
        })  # fmt: skip
    return pd.DataFrame(rows)


@dataclass
class StabilityComparison:
    """Several settings (method, n) of one map against one shared reference: Table 3 and one ellipse map each.

    ``results``: label (``"ls n=2900"``) → :class:`StabilityResult`, in the order asked for.
    """

    results: dict[str, StabilityResult]

    def __post_init__(self):
        if not self.results:
            raise InputError("a comparison needs at least one setting", params=("settings",))

    @property
    def first(self) -> StabilityResult:
        return next(iter(self.results.values()))

    @property
    def model_map(self):
        return self.first.model_map

    @property
    def R(self) -> int:
        return self.first.R

    @property
    def settings(self) -> list[tuple[str, int]]:
        return [(r.method, r.n) for r in self.results.values()]

    def table3(self):
        """Table 3 (see :func:`table3`)."""
        return table3(self.results)


# ----------------------------------------------------------------------------- the trials


def _trial(ss, L, pi, n, threshold, embedding, random_state, embed_kwargs):
    """One resampled map: draw, build ``Q̃_d W^{1/2}``, embed. Returns (K×2 configuration, d)."""
    from lmmap.maths.embedding import embed

    u, _, w = resample(pi, n, np.random.default_rng(ss))
    X = resampled_features(L, u, w, threshold)
    return embed(X, method=embedding, random_state=random_state, **embed_kwargs), u.size


def _map_arrays(mm) -> tuple[np.ndarray, np.ndarray]:
    """``(L, Q)`` of a ModelMap on the full text set."""
    if getattr(mm, "Q", None) is None or not hasattr(mm, "L") or not hasattr(mm, "names"):
        raise InputError(f"mm must be a ModelMap (lmmap.map.ModelMap(names, L) or ModelMap.from_store(store)), "
                         f"got {type(mm).__name__}", params=("mm",))
    if getattr(mm, "w", None) is not None:
        raise InputError("map stability resamples the full text set D_N: give the map of all N texts, "
                         "not of a resampled subset", params=("mm",))
    return np.asarray(mm.L, dtype=np.float64), np.asarray(mm.Q, dtype=np.float64)


def _prepare_embedding(embedding: str, K: int, embed_kwargs: dict, N: int | None = None) -> tuple[str, dict]:
    from lmmap.maths.embedding import DEFAULT_PERPLEXITY, effective_perplexity, resolve_method

    # Resolved once, so that every resampled map uses the method of the reference.
    method = resolve_method(embedding, K)
    kwargs = dict(embed_kwargs)
    if method == "mds" and N is not None:
        # The map's scale (KL = squared distance / 2N, N the full text set: a resampled map's features estimate
        # the full set's squared distances), not the features' own, which is √(2N) times larger.
        kwargs.setdefault("n_texts", int(N))
    if method == "tsne":
        # Lowered once here (with one warning) rather than once per map.
        kwargs["perplexity"] = effective_perplexity(kwargs.get("perplexity", DEFAULT_PERPLEXITY), K)
    return method, kwargs


def _run(mm, L, Q, method, n, R, reference, embedding, resolved, embedding_random_state, seed, workers, progress,
         embed_kwargs) -> StabilityResult:
    pi = importance(Q, method)
    seeds = seed_sequence(seed).spawn(R)
    # A partial of a module-level function pickles for the worker processes; joblib memory-maps L.
    trial = functools.partial(_trial, L=L, pi=pi, n=n, threshold=mm.threshold, embedding=resolved,
                              random_state=embedding_random_state, embed_kwargs=embed_kwargs)
    # Processes, not threads: openTSNE's gradient loop holds the GIL for part of each iteration.
    out = parallel_map(trial, seeds, workers=workers, backend="processes", progress=progress,
                       task=f"stability: {method} n={n}, R={R} maps", unit="maps")
    return StabilityResult.from_configurations(
        method, n, np.stack([o[0] for o in out]), reference, np.array([o[1] for o in out]), model_map=mm,
        embedding=embedding, embedding_random_state=embedding_random_state, random_state=seed,
    )  # fmt: skip


def _check_reference(reference, K: int) -> np.ndarray:
    reference = as_configuration(reference, "reference")
    if reference.shape[0] != K:
        raise InputError(f"the reference places {reference.shape[0]} models, the map has {K}", params=("reference",))
    return reference


def map_stability(
    mm,
    *,
    method: str = DEFAULT_METHOD,
    n: int | None = None,
    R: int = 100,
    reference=None,
    embedding: str = "tsne",
    embedding_random_state: int = 42,
    random_state=0,
    workers: int = 1,
    progress=None,
    **embed_kwargs,
) -> StabilityResult:
    """R maps from n texts resampled by ``method``, aligned to the full-data reference (Appendix B.2).

    Parameters
    ----------
    mm : ModelMap
        The map on the full text set ``D_N``; every resampled map is clipped with its threshold.
    method : uniform | ls | kl.
    n : texts drawn with replacement per map (default: 29% of N, the paper's 2,900 of 10,000).
    R : resampled maps.
    reference : the full-data configuration (K×2), e.g. shared between settings;
        default: the embedding of the map's ``Q``.
    embedding, embedding_random_state : the 2-D method (tsne | mds | pca | umap, or auto:
        mds below 40 models) and its fixed seed (42). MDS maps need no seed and
        are aligned by Procrustes like the others.
    random_state : int, numpy Generator or None
        Seeds the resampling; map r uses child r of ``SeedSequence(random_state)``, so
        results do not depend on ``workers``.
    workers : processes for the R embeddings (1: in this process; -1: every core).
    progress : None or a callable receiving :class:`lmmap.progress.Step` events (one per map).
    embed_kwargs : passed to :func:`lmmap.maths.embedding.embed` (perplexity, n_iter, ...).
    """
    return compare_stability(
        mm, [(method, n)], R=R, reference=reference, embedding=embedding,
        embedding_random_state=embedding_random_state, random_state=random_state, workers=workers,
        progress=progress, **embed_kwargs,
    ).first  # fmt: skip


def compare_stability(
    mm,
    settings: Iterable[tuple[str, int | None]],
    *,
    R: int = 100,
    reference=None,
    embedding: str = "tsne",
    embedding_random_state: int = 42,
    random_state=0,
    workers: int = 1,
    progress=None,
    **embed_kwargs,
) -> StabilityComparison:
    """:func:`map_stability` for each (method, n) of ``settings`` against one shared reference (Table 3).

    ``n = None`` is the default 29% of N. Duplicate settings run once. Each
    setting draws from the same ``random_state`` (as the command line always
    has). Settings whose n draws would leave no real subset are noted
    (:class:`~lmmap.exceptions.LmmapWarning`) before any work.
    """
    from lmmap.progress import say

    L, Q = _map_arrays(mm)
    K, N = L.shape
    checked = []
    for method, n in settings:
        checked.append((check_method(method), default_resample_size(N) if n is None else check_sample_size(n)))
    checked = list(dict.fromkeys(checked))
    if not checked:
        raise InputError("settings is empty: give at least one (method, n)", params=("settings",))
    R = check_replicates(R)
    workers = check_workers(workers)
    seed = seed_of(random_state)
    seed_of(embedding_random_state, "embedding_random_state")  # named here: deeper down it is "random_state"
    resolved, kwargs = _prepare_embedding(embedding, K, embed_kwargs, N)
    for method, n in checked:
        note_if_no_real_subset(Q, method, n, per_map=True)
    if reference is None:
        say(progress, f"reference map of {K} models on all {N} texts ({resolved})…")
        reference = reference_map(Q, resolved, embedding_random_state, **kwargs)
    reference = _check_reference(reference, K)
    results = {}
    for method, n in checked:
        results[f"{method} n={n}"] = _run(mm, L, Q, method, n, R, reference, embedding, resolved,
                                          embedding_random_state, seed, workers, progress, kwargs)
    return StabilityComparison(results)


__all__ = ["DEFAULT_METHOD", "DEFAULT_N", "StabilityComparison", "StabilityResult", "compare_stability",
           "map_stability", "reference_map", "table3"]
