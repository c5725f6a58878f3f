"""Adding new models to a map from a subset of texts (paper §5.2): numbers, files, bad input, the demo ecosystem."""

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lmmap import ModelMap
from lmmap.maths import geometry as core
from lmmap.maths.bootstrap import bootstrap_sq_distance_se
from lmmap.cli import app
from lmmap.exceptions import LmmapError
from lmmap import report
from lmmap.analyses.place import add_models, cross_sq_distance_se, cross_squared_distances, place, place_points
from lmmap.data.store import Store
from lmmap.analyses.select import select
from lmmap.data.texts import TextSet
from synthetic import family_L as _family_L

runner = CliRunner()
N = 400
# Maps of a few models lower t-SNE's perplexity to (K − 1)/3 and say so; expected here.
pytestmark = pytest.mark.filterwarnings("ignore:perplexity .* is too large")


def family_L(N, K_per=5, n_fam=4, seed=0):
    return _family_L(N, K_per, n_fam, seed, spread_shape=2.0, spread_scale=5.0, noise=0.4)


@pytest.fixture
def eco(tmp_path):
    """A store of 20 models in 4 families; one model per family is held out of the map as 'new'."""
    names, L, fams = family_L(N)
    store = Store.create(tmp_path / "store", TextSet.from_texts([f"text {i} " * 4 for i in range(N)]))
    store.write_models([{"name": n, "loglik": row} for n, row in zip(names, L)])
    store.set_metadata(pd.DataFrame({"model": names, "model_type": fams}))
    held = [n for n in names if n.endswith("/m4")]
    rest = [n for n in names if n not in held]
    sub = select(store, "ls", 400, random_state=1, models=rest)  # d ≈ 160 of N = 400
    return store, names, L, held, rest, sub


# -- numeric core ---------------------------------------------------------------------------------


def test_cross_distances_are_the_block_of_the_full_matrix():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(7, 30))
    G = core.squared_distances(X)
    np.testing.assert_allclose(cross_squared_distances(X[5:], X[:5]), G[5:, :5], rtol=1e-10, atol=1e-10)


def test_cross_se_is_the_block_of_the_full_bootstrap():
    # Same replicate draws (same seed, same multinomial calls): the block equals the full K×K bootstrap's.
    rng = np.random.default_rng(1)
    Q = rng.standard_t(4, size=(6, 40))
    counts = rng.integers(1, 5, size=40)
    w = rng.uniform(0.5, 2, size=40)
    full = bootstrap_sq_distance_se(Q, w, counts, R=50, random_state=3)
    X = core.weighted_features(Q, w)
    block = cross_sq_distance_se(X[4:], X[:4], counts, R=50, random_state=3)
    np.testing.assert_allclose(block, full[4:, :4], rtol=1e-7, atol=1e-9)


def test_place_points_keeps_the_base_and_lands_near_the_right_family():
    rng = np.random.default_rng(2)
    centers = rng.normal(0, 10, size=(3, 50))
    X = np.vstack([c + rng.normal(0, 1, size=(6, 50)) for c in centers])
    base = X[[i for i in range(18) if i % 6]]  # 5 per family
    new = X[[0, 6, 12]]  # one per family
    from lmmap.maths.embedding import embed

    coords = embed(base, "tsne", random_state=42)
    placed = place_points(base, coords, new, "tsne")
    for f in range(3):
        nearest = np.argmin(((coords - placed[f]) ** 2).sum(axis=1))
        assert nearest // 5 == f
    pca = place_points(base, embed(base, "pca"), new, "pca")
    assert pca.shape == (3, 2)


# -- add_models ------------------------------------------------------------------------------------


def test_add_models_places_held_out_models(eco, tmp_path):
    store, names, L, held, rest, sub = eco
    out = tmp_path / "out"
    res = add_models(store, held, sub, R=200)
    report.write(res, out)
    assert res.scored == [] and res.new_models == held and res.existing_models == rest
    # KL of new × existing: the subset map of all of them (w-weighted, stored threshold).
    idx = [names.index(m) for m in rest + held]
    mm = ModelMap(rest + held, L[idx][:, sub.text_pos], threshold=sub.threshold, w=sub.weights, n_texts=N)
    np.testing.assert_allclose(res.kl, mm.kl()[len(rest):, : len(rest)], rtol=1e-10)
    # Adding models never changes the estimates among the existing ones.
    alone = ModelMap.from_store(store, models=rest, subset=sub)
    np.testing.assert_allclose(res.map.kl()[: len(rest), : len(rest)], alone.kl(), rtol=1e-9, atol=1e-15)
    # Against the full text set (clipped with the same stored threshold): nearly the same numbers.
    # (These synthetic texts are noisier than real ones: over 20 seeds the smallest r is 0.988.
    # The demo-ecosystem test below holds real models to the 0.99.)
    full = ModelMap(rest + held, L[idx], threshold=sub.threshold)
    kl_full = full.kl()[len(rest):, : len(rest)]
    for i in range(len(held)):
        assert np.corrcoef(res.kl[i], kl_full[i])[0, 1] > 0.98
    # Each new model's nearest existing model is of its family.
    for i, m in enumerate(held):
        assert rest[int(np.argmin(res.kl[i]))].split("/")[0] == m.split("/")[0]
    assert np.all(res.kl_se > 0)
    # Files.
    for name in ("placement.csv", "kl.csv", "coords.csv", "neighbors.csv", "map.png", "map.html", "map.json"):
        assert (out / name).exists(), name
    pl = pd.read_csv(out / "placement.csv")
    assert list(pl.columns[:4]) == ["new_model", "existing_model", "kl", "kl_se"]
    assert len(pl) == len(held) * len(rest)
    row = pl[(pl.new_model == held[0]) & (pl.existing_model == rest[3])].iloc[0]
    assert row.kl == pytest.approx(res.kl[0, 3]) and row.kl_se == pytest.approx(res.kl_se[0, 3])
    coords = pd.read_csv(out / "coords.csv")
    assert list(coords["model"]) == rest + held and coords["new"].sum() == len(held)
    # The existing models keep the positions of their full map (what `lmmap map` draws for them).
    # 16 models: the default map is classical MDS of KL, and the new models are placed by Gower's formula.
    base = ModelMap.from_store(store, models=rest).embed("auto", random_state=42)
    np.testing.assert_allclose(coords[["x", "y"]].to_numpy()[: len(rest)], base, atol=1e-9)
    # New models land beside their family in 2-D as well.
    xy = coords[["x", "y"]].to_numpy()
    for i, m in enumerate(held):
        nearest = np.argmin(((xy[: len(rest)] - xy[len(rest) + i]) ** 2).sum(axis=1))
        assert rest[nearest].split("/")[0] == m.split("/")[0]
    info = json.loads((out / "map.json").read_text())
    assert info["new_models"] == held and info["subset"]["method"] == "ls" and info["embedding"] == "mds"


def test_place_from_arrays_is_add_models_without_the_store(eco):
    store, names, L, held, rest, sub = eco
    ref = add_models(store, held, sub, embedding="pca", R=30, random_state=4)
    mm = ModelMap.from_store(store, models=rest, subset=sub)
    L_new = L[[names.index(m) for m in held]][:, sub.text_pos]
    res = place(mm, held, L_new, embedding="pca", R=30, random_state=4)
    np.testing.assert_allclose(res.kl, ref.kl, rtol=1e-12)
    np.testing.assert_allclose(res.kl_se, ref.kl_se, rtol=1e-12)
    np.testing.assert_allclose(res.coords, ref.coords, atol=1e-9)
    assert res.method == ref.method == "pca" and ref.subset is sub and res.subset is None
    with pytest.raises(LmmapError, match="L_new must be"):
        place(mm, held, L_new[:, :-1])


def test_models_scored_on_the_subset_only_are_placed_identically(eco):
    store, names, L, held, rest, sub = eco
    ref = add_models(store, held[:2], sub, embedding="pca")
    # The same models as if scored elsewhere on the subset's texts only (e.g. `select --texts-out`).
    for m in held[:2]:
        store.write_model(m + "@sub", L[names.index(m), sub.text_pos], text_pos=sub.text_pos)
    part = add_models(store, [m + "@sub" for m in held[:2]], sub, embedding="pca")
    assert part.scored == []
    np.testing.assert_allclose(part.kl, ref.kl, rtol=1e-12)
    np.testing.assert_allclose(part.coords, ref.coords, atol=1e-9)


def test_standard_error_matches_spread_over_independent_subsets(eco):
    """The bootstrap SE of one subset ≈ the SD of KL estimates across 150 independent subsets (within 30%)."""
    store, names, L, held, rest, sub = eco
    res = add_models(store, held[:1], sub, embedding="pca", R=400)
    idx = [names.index(m) for m in rest + held[:1]]
    full = ModelMap(rest + held[:1], L[idx], threshold=sub.threshold)
    from lmmap.maths import resampling as imp

    pi = imp.importance(ModelMap(rest, L[[names.index(m) for m in rest]], threshold=sub.threshold).Q, "ls")
    rng = np.random.default_rng(9)
    est = []
    for _ in range(150):
        u, c, w = imp.resample(pi, sub.n, rng)
        Qd = core.double_center(core.clip(L[idx][:, u], sub.threshold), w)
        est.append(core.squared_distances(Qd, w)[-1, :-1] / (2 * N))
    sd = np.std(est, axis=0, ddof=1)
    ratio = np.median(res.kl_se[0] / sd)
    assert 0.7 < ratio < 1.3, ratio
    assert np.corrcoef(np.mean(est, axis=0), full.kl()[-1, :-1])[0, 1] > 0.99


def test_rebuild_and_base_coords(eco, tmp_path):
    store, names, L, held, rest, sub = eco
    given = pd.DataFrame({"model": rest, "x": np.arange(len(rest), dtype=float), "y": np.zeros(len(rest))})
    res = add_models(store, held, sub, base_coords=given)
    np.testing.assert_array_equal(res.coords[: len(rest)], given[["x", "y"]].to_numpy())
    given.to_csv(tmp_path / "coords.csv", index=False)
    res2 = add_models(store, held, sub, base_coords=tmp_path / "coords.csv")
    np.testing.assert_allclose(res2.coords, res.coords)
    with pytest.raises(LmmapError, match="no position"):
        add_models(store, held, sub, base_coords=given.iloc[1:])
    reb = add_models(store, held, sub, rebuild=True, embedding="pca")
    report.write(reb, tmp_path / "rebuilt")
    assert reb.rebuilt and reb.coords.shape == (len(names), 2)
    np.testing.assert_allclose(reb.coords, reb.map.embed("pca"))


def test_placed_map_labels_models_highlights_new_ones_and_draws_their_nearest_lines(eco, tmp_path):
    from plotly_json import plotly_array, plotly_figure

    store, names, L, held, rest, sub = eco
    # A model given as a directory path is shown (and stored) under the directory's own name.
    (tmp_path / "models" / "fam1-m4-copy").mkdir(parents=True)
    store.write_model("fam1-m4-copy", L[names.index("fam1/m4")])
    res = add_models(store, [held[0], str(tmp_path / "models" / "fam1-m4-copy")], sub)
    paths = report.write(res, tmp_path / "out")
    assert res.new_models == [held[0], "fam1-m4-copy"] and res.scored == []
    data, layout = plotly_figure(paths["map.html"])
    (new,) = [t for t in data if t.get("name") == "new"]
    assert new["text"] == [f"<b>{held[0]}</b>", "<b>fam1-m4-copy</b>"]
    points = [t for t in data if t.get("legendgroup")]
    # Every existing model labelled beside its point; the new ones by the bold labels of their own trace.
    assert sorted(v for t in points for v in t["text"] if v) == sorted(rest)
    assert all("model_type: %{customdata[1]}" in t["hovertemplate"] for t in points)
    (lines,) = [t for t in data if t.get("name") == "new → nearest by KL"]
    xy = np.column_stack([plotly_array(lines["x"]), plotly_array(lines["y"])])
    segments = xy[~np.isnan(xy[:, 0])].reshape(-1, 2, 2)
    K = len(rest)
    for i, seg in enumerate(segments):
        np.testing.assert_allclose(seg[0], res.coords[K + i])
        np.testing.assert_allclose(seg[1], res.coords[int(np.argmin(res.kl[i]))])
    assert "2 new" in layout["title"]["text"] and "classical MDS" in layout["title"]["text"]
    assert paths["map.html"].stat().st_size < 100_000 and (tmp_path / "out" / "plotly.min.js").exists()


def test_a_new_model_identical_to_an_existing_one_is_named(eco):
    from lmmap.exceptions import LmmapWarning

    store, names, L, held, rest, sub = eco
    store.write_model("copy-of-m0", L[names.index(rest[0])])
    with pytest.warns(LmmapWarning, match=r"'copy-of-m0' is identical to 'fam0/m0' \(KL (≈ \de-\d+|= 0)\)"):
        res = add_models(store, ["copy-of-m0"], sub)
    assert res.kl[0].min() < 1e-9
    with warnings.catch_warnings():
        warnings.simplefilter("error", LmmapWarning)  # a merely close model is not "identical"
        add_models(store, held[:1], sub)


# -- bad input -----------------------------------------------------------------------------------


def test_model_already_in_the_map_is_refused(eco):
    store, names, L, held, rest, sub = eco
    with pytest.raises(LmmapError, match="already in the map.*replace=True"):
        add_models(store, [rest[0]], sub)
    with pytest.raises(LmmapError, match="given twice"):
        add_models(store, [held[0], held[0]], sub)


def test_convention_mismatch_is_refused(eco):
    store, names, L, held, rest, sub = eco
    store.write_model("full-conv", L[names.index(held[0])], record={"convention": "full"})
    with pytest.raises(LmmapError, match="'full' convention.*convention=reference and replace=True"):
        add_models(store, ["full-conv"], sub)
    with pytest.raises(LmmapError, match="cannot join it"):
        add_models(store, [held[0]], sub, convention="full")


def test_subset_of_another_text_set_or_map_is_refused(eco, tmp_path):
    store, names, L, held, rest, sub = eco
    other = Store.create(tmp_path / "other", TextSet.from_texts([f"other {i}" for i in range(N)]))
    other.write_models([{"name": n, "loglik": row} for n, row in zip(names, L)])
    with pytest.raises(LmmapError, match="another text set"):
        add_models(other, held, sub)
    store.remove_model(rest[0])
    with pytest.raises(LmmapError, match="another map"):
        add_models(store, held, sub)


def test_changed_vectors_are_detected(eco):
    store, names, L, held, rest, sub = eco
    store.write_model(rest[0], L[names.index(rest[0])] - 500, replace=True)  # moves the 2nd percentile
    with pytest.raises(LmmapError, match="select again"):
        add_models(store, held, sub)


def test_cli_add_places_stored_models(eco, tmp_path):
    store, names, L, held, rest, sub = eco
    sp = sub.save(tmp_path / "SUBSET.json")
    out = tmp_path / "added"
    res = runner.invoke(
        app, ["add", *held, "--subset", str(sp), "-o", str(out), "--store", str(store.path), "--embedding", "pca", "--R", "20"],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert "nearest" in res.output
    pl = pd.read_csv(out / "placement.csv")
    assert set(pl["new_model"]) == set(held)
    res = runner.invoke(app, ["add", rest[0], "--subset", str(sp), "-o", str(out), "--store", str(store.path)])
    assert res.exit_code != 0 and "already in the map" in str(res.exception)


def test_cli_add_seeds_the_bootstrap_and_tsne_seed_the_embedding(eco, tmp_path):
    store, names, L, held, rest, sub = eco
    sp = sub.save(tmp_path / "SUBSET.json")
    out = tmp_path / "seeded"
    res = runner.invoke(
        app, ["add", *held, "--subset", str(sp), "-o", str(out), "--store", str(store.path), "--embedding", "tsne",
              "--R", "20", "--seed", "3", "--tsne-seed", "7"],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    info = json.loads((out / "map.json").read_text())
    assert info["random_state"] == 3 and info["embedding_random_state"] == 7 and "provenance" in info
    ref = add_models(store, held, sub, R=20, random_state=3, embedding="tsne", embedding_random_state=7)
    pl = pd.read_csv(out / "placement.csv")
    row = pl[(pl.new_model == held[0]) & (pl.existing_model == rest[0])].iloc[0]
    assert row.kl_se == pytest.approx(ref.kl_se[0, 0], rel=1e-9)
    coords = pd.read_csv(out / "coords.csv")
    np.testing.assert_allclose(coords[["x", "y"]].to_numpy(), ref.coords, atol=1e-6)


def test_cli_messages_name_the_flags(eco, tmp_path):
    import subprocess
    import sys

    store, names, L, held, rest, sub = eco
    sp = sub.save(tmp_path / "SUBSET.json")
    proc = subprocess.run(
        [sys.executable, "-m", "lmmap", "add", rest[0], "--subset", str(sp), "-o", str(tmp_path / "o"), "--store",
         str(store.path)], capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1 and "pass --replace to re-score" in proc.stderr, proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "lmmap", "add", "x", "--adaptive", "--target-se", "1.5", "-o", str(tmp_path / "o"),
         "--store", str(store.path)], capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1 and "--target-se must be a number between 0 and 1 (exclusive) (a relative standard error" in proc.stderr, proc.stderr


# -- real scoring: tiny transformers models built locally (tests/conftest.py) ---------------------


@pytest.fixture(scope="module")
def tiny_eco(tmp_path_factory, stdlib_texts, tiny_tokenizer, make_tiny_gpt2):
    """A store of 48 real texts scored fully by 4 tiny GPT-2 models; a 5th model directory to add."""
    pytest.importorskip("torch")
    from lmmap.scoring import score_models

    root = tmp_path_factory.mktemp("tiny-eco")
    texts = [doc[start : start + 200] for doc in stdlib_texts[20:36] for start in (0, 400, 900)]
    store = Store.create(root / "store", TextSet.from_texts([t for t in texts if t.strip()]))
    dirs = [make_tiny_gpt2(root / f"m{i}", tiny_tokenizer, seed=10 + i) for i in range(5)]
    status = score_models(store, [str(d) for d in dirs[:4]], device="cpu")
    assert all(s.ok for s in status.values())
    existing = list(status)  # the names they are stored under (the directories' own names)
    return store, existing, str(dirs[4])


def test_add_scores_the_new_model_on_the_subset_texts_only(tiny_eco, tmp_path):
    from lmmap.scoring import score_models

    store, existing, new = tiny_eco
    sub = select(store, "ls", 30, random_state=0)
    assert sub.models == existing and sub.d < store.n_texts
    sp = sub.save(tmp_path / "SUBSET.json")
    # The command line end to end: score the model directory on the subset's texts, store it as "tiny-new".
    out = tmp_path / "out"
    cli = runner.invoke(
        app, ["add", new, "--name", "tiny-new", "--subset", str(sp), "-o", str(out), "--store", str(store.path),
              "--device", "cpu", "--no-progress", "--embedding", "pca", "--R", "50"],
        catch_exceptions=False,
    )
    assert cli.exit_code == 0, cli.output
    assert "scored 1" in cli.output
    rec = store.record("tiny-new")
    assert rec["n_scored"] == sub.d and rec["convention"] == "reference"
    np.testing.assert_array_equal(store.vectors("tiny-new")["text_pos"], sub.text_pos)
    placed = pd.read_csv(out / "placement.csv")
    assert set(placed["new_model"]) == {"tiny-new"} and len(placed) == len(existing)
    # Adding it again scores nothing; the same model scored on every text gives the same placement.
    res = add_models(store, ["tiny-new"], sub, embedding="pca", R=50)
    assert res.scored == []
    score_models(store, [new], names=["full-copy"], device="cpu")
    assert store.record("full-copy")["n_scored"] == store.n_texts
    copy = add_models(store, ["full-copy"], sub, embedding="pca", R=50)
    np.testing.assert_allclose(res.kl, copy.kl, rtol=1e-6)
    by_model = placed.set_index("existing_model")["kl"]
    np.testing.assert_allclose(by_model.loc[res.existing_models], res.kl[0], rtol=1e-9)
    # A different convention is refused before any model is loaded.
    with pytest.raises(LmmapError, match="cannot join it"):
        add_models(store, [new], sub, names=["other"], convention="full")


# -- the demo ecosystem (paper §5.2): hold models out, select with LS, add them back -----------------

DEMO_HELD_OUT = ("base-ft-docs", "base2-ft-code", "scratch-legal")  # and one intermediate checkpoint


def demo_held_out(store, names):
    """A fine-tune of each base, a model trained from scratch and a middle training checkpoint."""
    meta = store.metadata()
    ckpts = [m for m in names if m in meta.index and meta.loc[m, "model_type"] == "checkpoint"]
    return [m for m in DEMO_HELD_OUT if m in names] + ckpts[len(ckpts) // 2 : len(ckpts) // 2 + 1]


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory, demo_full):
    """A copy of the demo ecosystem's store (13 trained models, 300 texts) and its models' directory."""
    demo, _ = demo_full
    work = tmp_path_factory.mktemp("demo-store")
    shutil.copytree(demo["store"], work / "store")
    return Store(work / "store"), Path(demo["models_dir"])


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_demo_ecosystem_models_added_back_from_an_ls_subset(demo_store, tmp_path):
    """Hold 4 demo models out, select with LS from the rest (d ≈ 22% of N), score them on the subset
    only and place them: their KL estimates to the existing models correlate with those from the full
    text set at r ≥ 0.99 (the paper: 0.996–0.997 at N = 10,000).

    The demo has N = 300 texts, so d ≈ 66 and one selection is noisier than the paper's d = 2,192:
    over selections the median r is 0.995–0.998 but about one in ten falls below 0.99 (lowest seen
    0.97). So the criterion r ≥ 0.99 is asserted for the median over 20 selections (seeds 0–19),
    and the scored run (seed 0) must reach r ≥ 0.98 for every model.
    """
    from lmmap.maths import resampling as imp
    from lmmap.scoring import ScoringOptions

    store, models_dir = demo_store
    names = store.complete_models()
    held = demo_held_out(store, names)
    rest = [m for m in names if m not in held]
    assert len(held) == 4 and len(rest) >= 8
    N, K = store.n_texts, len(rest)
    pi = imp.importance(ModelMap.from_store(store, models=rest).Q, "ls")
    n = imp.n_for_expected_unique(pi, 0.22 * N)
    sub = select(store, "ls", n, random_state=0, models=rest)
    assert 0.15 * N < sub.d < 0.30 * N
    # Scored afresh from the models' directories, on the subset's texts only.
    sources = [str(models_dir / m) for m in held]
    fresh = [m + "@subset" for m in held]  # the default names (directory names) are taken by the stored originals
    res = add_models(store, sources, sub, names=fresh, scoring=ScoringOptions(device="cpu"))
    report.write(res, tmp_path / "out")
    assert res.scored == fresh
    assert all(store.record(s)["n_scored"] == sub.d for s in fresh)
    full_kl = ModelMap.from_store(store, models=rest + held, threshold=sub.threshold).kl()[K:, :K]
    r_run = np.array([np.corrcoef(res.kl[i], full_kl[i])[0, 1] for i in range(len(held))])
    # The same criterion over 20 selections (the held-out models' stored full vectors give their
    # subset values: scoring is deterministic, as the scored run shows).
    np.testing.assert_allclose(res.kl, ModelMap.from_store(store, models=rest + held, subset=sub).kl()[K:, :K], rtol=1e-6)
    r_seeds = []
    for seed in range(20):
        s = select(store, "ls", n, random_state=seed, models=rest)
        kl = ModelMap.from_store(store, models=rest + held, subset=s).kl()[K:, :K]
        r_seeds.append([np.corrcoef(kl[i], full_kl[i])[0, 1] for i in range(len(held))])
    r_median = np.median(r_seeds, axis=0)
    print(f"\ndemo: n = {n}, d = {sub.d} of N = {N}, {K} existing models; KL correlation subset vs full, "
          "scored run (median over 20 selections): "
          + ", ".join(f"{m} {a:.4f} ({b:.4f})" for m, a, b in zip(held, r_run, r_median)))
    assert np.all(r_median >= 0.99), dict(zip(held, r_median))
    assert np.all(r_run >= 0.98), dict(zip(held, r_run))
    # The nearest existing model from all texts is among the two nearest from the subset
    # (near-ties, e.g. two checkpoints 1% apart, may swap).
    for i in range(len(held)):
        assert int(np.argmin(full_kl[i])) in np.argsort(res.kl[i])[:2]


def test_a_placed_model_is_told_its_likely_parent():
    """Issue 25: `lmmap add` reports the lineage test of each new model against the existing ones."""
    from lineage_ecosystem import lineage_ecosystem, store_metadata

    from lmmap.analyses.place import place

    names, L, truth = lineage_ecosystem(N=1500, n_bases=12, n_independent=6, n_merges=0, seed=3)
    new = [next(n for n in names if n.startswith("base4-ft")), "indep2"]
    keep = [i for i, n in enumerate(names) if n not in new]
    mm = ModelMap([names[i] for i in keep], L[keep], metadata=store_metadata(truth))
    result = place(mm, new, L[[names.index(n) for n in new]], embedding="pca", R=5)
    t = result.lineage.set_index("model")
    # On a map this small (76 models) the new fine-tune's closest relative by the test is its base or a
    # sibling (the fine-tunes share what is left of the fine-tuning shifts): its lineage, never another.
    parent = t.loc[new[0], "likely_parent"]
    assert t.loc[new[0], "decision"] == "derived" and truth.loc[parent, "lineage"] == "base4", parent
    assert t.loc["indep2", "decision"] == "independent" and t.loc["indep2", "likely_parent"] == ""
    assert f"likely parent {parent}" in result.summary().splitlines()[1]
    assert "no likely parent" in result.summary().splitlines()[2]
    table = result.table()
    row = table[(table["new_model"] == new[0]) & table["likely_parent"]]
    assert row["existing_model"].tolist() == [parent] and row["lineage_p"].iloc[0] <= 0.05
    assert result.lineage_p.shape == (2, mm.K) and not table.loc[table["new_model"] == "indep2", "likely_parent"].any()
