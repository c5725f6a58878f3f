"""Issue 24: adaptive placement into a large map (past lmmap.map.DENSE_MAX_K models) forms nothing K×K.

DENSE_MAX_K is lowered so that a map of a few dozen models is "large"; ModelMap.squared_distances and the
t-SNE of the existing models raise, and the estimates must agree with those of the small (dense) path. The
new models go to the median of their nearest models' given positions (``base_coords``), as `lmmap add` does.
"""

import numpy as np
import pandas as pd
import pytest

import lmmap.map as map_mod
from cli_main import run_main
from lmmap.analyses import adaptive as ad
from lmmap.analyses.place import LARGE_PLACE_NEIGHBORS, _median_of_nearest
from lmmap.data.store import Store
from lmmap.data.texts import TextSet
from lmmap.exceptions import InputError
from synthetic import LookupScorer, ecosystem_L

N = 400
pytestmark = pytest.mark.filterwarnings("ignore:perplexity .* is too large")


@pytest.fixture(scope="module")
def eco():
    names, L, kinds, _ = ecosystem_L(N, n_bases=8, ft_per_base=3, n_merges=4, n_unrelated=3, seed=7)
    held = [names.index("base1/ft0"), kinds.index("merge")]
    rest = [i for i in range(len(names)) if i not in held]
    return names, L, held, rest


def _store(path, eco):
    names, L, held, rest = eco
    store = Store.create(path, TextSet.from_texts([f"text {i}" for i in range(N)]))
    store.write_models([{"name": names[i], "loglik": L[i], "record": {"convention": "reference"}} for i in rest])
    return store


def _coords(eco):
    names, _, _, rest = eco
    rng = np.random.default_rng(0)
    return pd.DataFrame({"model": [names[i] for i in rest], "x": rng.normal(size=len(rest)),
                         "y": rng.normal(size=len(rest))})


def _no_k_by_k(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("built a K×K matrix or embedded the K models")

    monkeypatch.setattr(map_mod, "DENSE_MAX_K", 10)
    monkeypatch.setattr(map_mod.ModelMap, "squared_distances", refuse)
    monkeypatch.setattr(map_mod.ModelMap, "embed", refuse)
    monkeypatch.setattr(ad.AdaptiveMap, "C", property(lambda self: None, lambda self, v: (v is None) or refuse()),
                        raising=False)


def test_prepare_map_past_dense_max_k_forms_nothing_k_by_k_and_estimates_alike(eco, monkeypatch):
    names, L, held, rest = eco
    dense = ad.prepare_map(L[rest])
    monkeypatch.setattr(map_mod, "DENSE_MAX_K", 10)
    large = ad.prepare_map(L[rest])
    assert dense.C is not None and large.C is None
    np.testing.assert_allclose(large.sqnorms, dense.sqnorms, rtol=1e-10)
    np.testing.assert_allclose(large.S[:10], dense.S[:10], rtol=1e-6)
    assert large.lineage_rank == dense.lineage_rank
    for h in held:
        s = ad.draw_round(dense.pi, 200, np.random.default_rng(h))
        y = dense.y_of(L[h][s], s)
        a, b = ad.estimate_sq_distances(dense, s, y), ad.estimate_sq_distances(large, s, y)
        np.testing.assert_allclose(b.g, a.g, rtol=1e-6)
        np.testing.assert_allclose(b.se, a.se, rtol=1e-5)
        np.testing.assert_allclose(ad.true_sq_distances(large, L[h]), ad.true_sq_distances(dense, L[h]), rtol=1e-9)
    # Gram columns are formed once per model the prediction uses, never all K.
    assert 0 < len(large._gram_cols) < len(rest)


def test_place_adaptive_into_a_large_map_uses_the_given_positions(eco, tmp_path, monkeypatch):
    import lmmap.scoring

    names, L, held, rest = eco
    rows = {f"src{j}": L[h] for j, h in enumerate(held)}
    kw = dict(target_se=0.1, round_size=16, random_state=1, names=["ft", "merge"], base_coords=_coords(eco))
    monkeypatch.setattr(lmmap.scoring, "score_models", LookupScorer(rows))
    small = ad.place_adaptive(_store(tmp_path / "small", eco), list(rows), **kw)

    _no_k_by_k(monkeypatch)
    monkeypatch.setattr(lmmap.scoring, "score_models", LookupScorer(rows))
    large = ad.place_adaptive(_store(tmp_path / "large", eco), list(rows), **kw)
    assert large.amap.C is None
    # The same draws and stops, estimates equal to round-off of the randomised SVD.
    assert [large.runs[n].texts_scored for n in large.new_models] == [small.runs[n].texts_scored
                                                                     for n in small.new_models]
    np.testing.assert_allclose(large.kl, small.kl, rtol=1e-5)
    assert (large.kl.argmin(axis=1) == small.kl.argmin(axis=1)).all()
    xy = _coords(eco)[["x", "y"]].to_numpy()
    np.testing.assert_array_equal(large.coords[:len(rest)], xy)
    np.testing.assert_allclose(large.coords[len(rest):], _median_of_nearest(xy, large.kl, LARGE_PLACE_NEIGHBORS))
    assert large.table_rows is not None and len(large.table()) <= 2 * large.table_rows


def test_a_large_map_without_positions_is_refused_before_scoring(eco, tmp_path, monkeypatch):
    import lmmap.scoring

    names, L, held, rest = eco
    scorer = LookupScorer({"src0": L[held[0]]})
    monkeypatch.setattr(lmmap.scoring, "score_models", scorer)
    _no_k_by_k(monkeypatch)
    store = _store(tmp_path / "s", eco)
    with pytest.raises(InputError, match="base_coords"):
        ad.place_adaptive(store, ["src0"], names=["ft"], round_size=16)
    assert scorer.calls == 0
    # No map asked for: nothing to embed, the placement goes on.
    res = ad.place_adaptive(store, ["src0"], names=["ft"], round_size=16, embedding=None, target_se=0.2)
    assert res.coords is None and res.kl.shape == (1, len(rest))


def test_cli_accepts_base_coords_with_adaptive(eco, tmp_path, monkeypatch):
    import lmmap.scoring

    names, L, held, rest = eco
    monkeypatch.setattr(lmmap.scoring, "score_models", LookupScorer({"src0": L[held[0]]}))
    _no_k_by_k(monkeypatch)
    store = _store(tmp_path / "s", eco)
    coords = tmp_path / "coords.csv"
    _coords(eco).to_csv(coords, index=False)
    code, out, err = run_main("add", "src0", "--adaptive", "--name", "ft", "--target-se", "0.2", "--round", 16,
                              "--base-coords", coords, "--threads", 1, "--no-progress", "-o", tmp_path / "out",
                              "--store", store.path)
    assert code == 0, err
    got = pd.read_csv(tmp_path / "out" / "coords.csv")
    assert list(got["model"])[:len(rest)] == [names[i] for i in rest]
    np.testing.assert_allclose(got[["x", "y"]].to_numpy()[:len(rest)], _coords(eco)[["x", "y"]].to_numpy())
