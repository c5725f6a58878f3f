"""Every result type round-trips through ``lmmap.report.write`` (issue 23 §6): its files hold the result's numbers.

One case per entry of :data:`lmmap.report.WRITERS`: a small real result built by the public analyses on a
synthetic map, written to ``tmp_path``, read back — CSV with pandas, the JSON of parameters, the PNG's header
and size, the HTML's plotly figure — and compared with the result itself, number for number. A case names every
CSV and JSON its writer writes; a table or parameter file nobody reads back fails the test, and so does a new
Result type without a writer or a writer without a case here.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import struct
import warnings

import numpy as np
import pandas as pd
import pytest

from lmmap import report
from lmmap.map import ModelMap
from plotly_json import plotly_array, plotly_figure
from synthetic import LookupScorer, ecosystem, family_L, lineage_L, make_store

# Maps of a few models lower t-SNE's perplexity and say so; notes of the analyses are not what is tested here.
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The smallest figure any writer draws is wider than this (the maps and curves are ~1,300-1,600 px).
MIN_PNG_WIDTH = 400

MAP_RESULT = "lmmap.analyses.map.MapResult"  # issue 23: build_map(mm) -> MapResult, written by report/map.py
MODEL_MAP = "lmmap.map.ModelMap"  # before it: report.write(mm) computed the map while writing it


# -- reading back ---------------------------------------------------------------------------------------------------


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _plain(v):
    """A cell as written and read back: NaN, None and '' are all 'missing'; numbers as floats; the rest as text."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and v == ""):
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    return str(v)


def assert_csv_holds(path, expected: pd.DataFrame, index: bool = False):
    """The CSV at ``path`` has ``expected``'s columns, in order, and its values: numbers to the last bit that
    pandas' ``repr`` keeps (a float64 round-trips exactly), text as text."""
    got = pd.read_csv(path, index_col=0 if index else None)
    exp = expected.copy()
    if index:
        got.index = got.index.astype(str)
        exp.index = exp.index.astype(str)
        assert list(got.index) == list(exp.index), f"{path.name}: rows"
    assert [str(c) for c in got.columns] == [str(c) for c in exp.columns], f"{path.name}: columns"
    assert len(got) == len(exp), f"{path.name}: {len(got)} rows written, the result has {len(exp)}"
    for g, e in zip(got.columns, exp.columns):
        a, b = got[g], exp[e]
        if pd.api.types.is_numeric_dtype(b) and not pd.api.types.is_bool_dtype(b):
            np.testing.assert_allclose(a.to_numpy(dtype=float), b.to_numpy(dtype=float), rtol=1e-15, atol=0,
                                       equal_nan=True, err_msg=f"{path.name}: column {e}")
        else:
            assert [_plain(x) for x in a] == [_plain(x) for x in b], f"{path.name}: column {e}"


def read_json(path) -> dict:
    info = json.loads(path.read_text(encoding="utf-8"))
    assert "provenance" in info and info["provenance"]["lmmap_version"], f"{path.name}: no provenance block"
    return info


def assert_json_holds(path, expected: dict):
    """Each key of ``expected`` is in the JSON with that value (numbers to rounding, arrays as lists)."""
    info = read_json(path)
    for key, value in expected.items():
        assert key in info, f"{path.name} has no {key!r}"
        got = info[key]
        if isinstance(value, (float, np.floating)) or (isinstance(value, (list, np.ndarray)) and len(value)
                                                       and isinstance(np.asarray(value).flat[0], (float, np.floating))):
            np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(value, dtype=float), rtol=1e-12,
                                       err_msg=f"{path.name}: {key}")
        else:
            assert got == (value.tolist() if isinstance(value, np.ndarray) else value), f"{path.name}: {key}"
    return info


def html_points(path) -> np.ndarray:
    """Every (x, y) the plotly figure in ``path`` draws, from every trace that has both."""
    data, _ = plotly_figure(path)
    pts = [np.column_stack([plotly_array(t["x"]), plotly_array(t["y"])]) for t in data
           if "x" in t and "y" in t and t["x"] is not None and t["y"] is not None]
    return np.vstack(pts) if pts else np.zeros((0, 2))


def assert_html_draws(path, coords, names=()):
    """The page's figure draws each of ``coords`` (K×2) and names each of ``names``."""
    pts = html_points(path)
    for xy in np.asarray(coords, dtype=float):
        assert np.isclose(pts, xy, rtol=1e-9, atol=1e-12).all(axis=1).any(), f"{path.name} does not draw {xy}"
    text = path.read_text(encoding="utf-8")
    for n in names:
        assert n in text or json.dumps(n)[1:-1] in text or n.replace("/", "\\u002f") in text, \
            f"{path.name} does not name {n!r}"


# -- one case per writer --------------------------------------------------------------------------------------------
# Each builds a result and returns (result, write options, checks). ``checks``: file name → a callable run on its
# path; every CSV and JSON the writer writes must have one.


def _lineage_map(N=200, seed=2):
    names, L, meta = lineage_L(N=N, n_lineages=3, seed=seed)
    return ModelMap(names, L, metadata=meta)


def case_map(tmp_path):
    mm = _lineage_map()
    if MAP_RESULT in report.WRITERS:
        from lmmap.analyses.map import build_map

        result = build_map(mm, k=3)
        coords, neighbors, lineage, options = result.coords, result.neighbors, result.lineage, {}
    else:
        # TODO(issue 23): the API before build_map, kept so this case runs on either side of the change; drop this
        # branch once ModelMap is no longer a WRITERS key (report.write(mm) embedded and searched while writing).
        result, options = mm, {"k": 3}
        coords, neighbors, lineage = mm.embed("auto", random_state=42), mm.neighbor_table(3), mm.lineage()
    checks = {
        "kl.csv": lambda p: assert_csv_holds(p, mm.kl_frame(), index=True),
        "coords.csv": lambda p: assert_csv_holds(p, pd.DataFrame({"model": mm.names, "x": coords[:, 0],
                                                                  "y": coords[:, 1]})),
        "neighbors.csv": lambda p: assert_csv_holds(p, neighbors),
        "lineage.csv": lambda p: assert_csv_holds(p, lineage),
        "map.json": lambda p: assert_json_holds(p, {"models": mm.names, "n_models": mm.K, "n_texts": mm.n_texts,
                                                    "clip_threshold": mm.threshold, "kl_unit": "nats-per-text"}),
        "map.html": lambda p: assert_html_draws(p, coords, mm.names),
    }
    assert len(lineage), "the case should exercise lineage.csv"
    return result, options, checks


def case_placement(tmp_path):
    from lmmap.analyses.place import add_models
    from lmmap.analyses.select import select_from_store

    names, L, meta = lineage_L(N=200, n_lineages=3, seed=5)
    store = make_store(tmp_path, names, L, meta.reset_index())
    held = ["lin1-ft-1", "lin2-ft-3"]
    assert set(held) <= set(names)  # in the store: placed from their stored vectors, nothing is scored
    rest = [n for n in names if n not in held]
    result = add_models(store, held, select_from_store(store, "ls", 150, random_state=1, models=rest), R=10, k=4)
    assert list(result.new_models) == held and not result.failed
    mm = result.map
    checks = {
        "placement.csv": lambda p: assert_csv_holds(p, result.table()),
        "lineage.csv": lambda p: assert_csv_holds(p, result.lineage),
        "kl.csv": lambda p: assert_csv_holds(p, mm.kl_frame(result.unit), index=True),
        "coords.csv": lambda p: assert_csv_holds(p, pd.DataFrame({
            "model": mm.names, "x": result.coords[:, 0], "y": result.coords[:, 1],
            "new": np.isin(mm.names, result.new_models)})),
        "neighbors.csv": lambda p: assert_csv_holds(p, mm.neighbor_table(4, unit=result.unit)),
        "map.json": lambda p: assert_json_holds(p, {"new_models": list(result.new_models),
                                                    "existing_models": len(result.existing_models),
                                                    "R": result.R, "kl_unit": result.unit,
                                                    "clip_threshold": mm.threshold}),
        "map.html": lambda p: assert_html_draws(p, result.coords, held),
    }
    return result, {}, checks


def case_adaptive(tmp_path, monkeypatch):
    import lmmap.scoring
    from lmmap.analyses import adaptive as ad
    from lmmap.data.store import Store
    from lmmap.data.texts import TextSet

    names, L, fams = family_L(240, K_per=4, n_fam=3, seed=5)
    held = [n for n in names if n.endswith("/m3")]
    store = Store.create(tmp_path / "store", TextSet.from_texts([f"text {i} " + "x" * (i % 7) for i in range(240)]))
    store.write_models([{"name": n, "loglik": row, "record": {"convention": "reference"}}
                        for n, row in zip(names, L) if n not in held])
    store.set_metadata(pd.DataFrame({"model": [n for n in names if n not in held],
                                     "model_type": [f for n, f in zip(names, fams) if n not in held]}))
    rows = {f"src{j}": L[names.index(h)] for j, h in enumerate(held)}
    monkeypatch.setattr(lmmap.scoring, "score_models", LookupScorer(rows))
    result = ad.place_adaptive(store, list(rows), names=["a", "b", "c"], target_se=0.2, neighbors=2, round_size=16,
                               max_texts=64, random_state=3)
    existing = list(result.existing_models)
    assert not result.failed and list(result.new_models) == ["a", "b", "c"]
    checks = {
        "placement.csv": lambda p: assert_csv_holds(p, result.table()),
        "kl.csv": lambda p: assert_csv_holds(p, result.kl_frame(), index=True),
        "adaptive.csv": lambda p: assert_csv_holds(p, result.adaptive_table()),
        "adaptive_trace.csv": lambda p: assert_csv_holds(p, result.trace_table()),
        "coords.csv": lambda p: assert_csv_holds(p, pd.DataFrame({
            "model": existing + list(result.new_models), "x": result.coords[:, 0], "y": result.coords[:, 1],
            "new": [False] * len(existing) + [True] * len(result.new_models)})),
        "adaptive.json": lambda p: assert_json_holds(p, {
            "new_models": list(result.new_models), "existing_models": len(existing), "n_texts": result.n_texts,
            "target_se": result.target_se, "neighbors": result.neighbors, "clip_threshold": result.threshold,
            "kl_unit": result.unit}),
        "map.html": lambda p: assert_html_draws(p, result.coords, ["a", "b", "c"]),
    }
    assert result.coords is not None
    np.testing.assert_allclose(result.kl_frame().to_numpy(), result.kl)  # the frame the CSV is checked against
    return result, {}, checks


def case_prediction(tmp_path):
    from lmmap.analyses import predict as P

    names, L, Q, fam, table, _ = ecosystem(K=30, N=60, n_families=6, n_bench=2, seed=21)
    result = P.predict_scores(Q, names, table.drop(index=names[:2]), groups=fam, n_repeats=1, include_mean=True)
    checks = {
        "correlations.csv": lambda p: assert_csv_holds(p, result.summary),
        "predictions.csv": lambda p: assert_csv_holds(p, result.predictions),
        "contamination.csv": lambda p: assert_csv_holds(p, result.flagged()),
        "new_predictions.csv": lambda p: assert_csv_holds(p, result.new),
        "predict.json": lambda p: assert_json_holds(p, json.loads(json.dumps(
            {"targets": result.summary.to_dict(orient="records")}, default=float))),
    }
    for slug in [f"pred_{s}" for s in ("bench0", "bench1", "benchmark_mean")]:
        checks[f"{slug}.html"] = (lambda s: lambda p: _prediction_page(p, result, s))(slug)
    return result, {}, checks


def _prediction_page(path, result, slug):
    """A target's figure draws each model's (true, out-of-fold predicted) score of that target."""
    target = read_json(path.parent / "predict.json")["figures"][slug]
    rows = result.predictions[result.predictions["target"] == target]
    assert len(rows)
    assert_html_draws(path, rows[["true", "predicted"]].to_numpy(dtype=float))


def case_errors(tmp_path):
    from lmmap.analyses.errors import analyse_errors

    names, L, _ = lineage_L(N=200, n_lineages=2, seed=1)
    result = analyse_errors(ModelMap(names, L), mode="analytic", n_grid=[20, 50, 100, 200], targets=[50])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table1 = result.texts_needed()
    checks = {
        "errors.csv": lambda p: assert_csv_holds(p, result.curves()),
        "kappa.csv": lambda p: assert_csv_holds(p, result.kappa_curve()),
        "table1.csv": lambda p: assert_csv_holds(p, table1),
        "errors.json": lambda p: assert_json_holds(p, {
            "K": result.K, "N": result.N, "R": result.R, "error": result.error, "mode": result.mode,
            "methods": list(result.methods), "n_grid": result.n_grid.tolist(), "targets": result.targets.tolist(),
            "tau_unif_N": float(np.sqrt(result.tau2_unif_N()))}),
    }
    return result, {}, checks


def _stability(mm):
    from lmmap.analyses.stability import compare_stability

    return compare_stability(mm, [("ls", 120), ("uniform", 120)], R=3, embedding="auto", random_state=1)


def _stability_checks(comparison, results):
    first = comparison.first
    names = first.names

    def per_model():
        frames = []
        for label, r in results.items():
            df = r.per_model(names)
            df.insert(0, "setting", label)
            frames.append(df)
        return pd.concat(frames, ignore_index=True)

    checks = {
        "reference.csv": lambda p: assert_csv_holds(p, pd.DataFrame({"model": names, "x": first.reference[:, 0],
                                                                     "y": first.reference[:, 1]})),
        "table3.csv": lambda p: assert_csv_holds(p, comparison.table3()),
        "stability_models.csv": lambda p: assert_csv_holds(p, per_model()),
        "stability.json": lambda p: assert_json_holds(p, {"K": len(names), "R": comparison.R,
                                                          "settings": [{"method": m, "n": n}
                                                                       for m, n in comparison.settings]}),
    }
    return checks


def case_stability_comparison(tmp_path):
    comparison = _stability(_lineage_map())
    return comparison, {}, _stability_checks(comparison, comparison.results)


def case_stability_result(tmp_path):
    from lmmap.analyses.stability import StabilityComparison

    result = _stability(_lineage_map()).first
    comparison = StabilityComparison({result.label: result})  # what the writer makes of one result
    checks = _stability_checks(comparison, comparison.results)
    checks["stability.json"] = lambda p: assert_json_holds(p, {"K": len(result.names), "R": result.R,
                                                               "settings": [{"method": result.method,
                                                                             "n": result.n}]})
    return result, {}, checks


def case_subset(tmp_path):
    from lmmap.analyses.select import select
    from lmmap.data.subset import Subset

    names, L, _ = lineage_L(N=200, n_lineages=2, seed=3)
    sub = select(ModelMap(names, L), "ls", 60, random_state=0, unbound=True)

    def check(path):
        back = Subset.load(path)
        for attr in ("text_pos", "counts", "weights"):
            np.testing.assert_array_equal(getattr(back, attr), getattr(sub, attr), err_msg=attr)
        assert (back.method, back.n, back.d, back.random_state) == (sub.method, sub.n, sub.d, sub.random_state)
        assert back.threshold == sub.threshold
        raw = json.loads(path.read_text(encoding="utf-8"))
        assert raw  # a JSON object, readable without lmmap

    return sub, {}, {"SUBSET.json": check}


def case_scale(tmp_path):
    from lmmap.analyses.scale import scale

    names, L, meta = lineage_L(N=200, n_lineages=3, seed=1)
    result = scale(ModelMap(names, L, metadata=meta))
    checks = {
        "scale.csv": lambda p: assert_csv_holds(p, result.references),
        "pairs.csv": lambda p: assert_csv_holds(p, result.pairs),
        "scale.json": lambda p: assert_json_holds(p, json.loads(json.dumps(result.info, default=_jsonable))),
    }
    return result, {}, checks


def _jsonable(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    return str(o)


def case_trajectory(tmp_path):
    from lmmap.analyses.trajectory import trajectory

    rng = np.random.default_rng(0)
    N = 200
    final = rng.normal(-80, 10, N)
    rows = {"run@300": final, **{f"run@{s}": final + rng.normal(0, sc, N) for s, sc in ((10, 8.0), (100, 4.0))},
            "other": final + rng.normal(0, 5, N)}
    meta = pd.DataFrame({"trajectory": ["run", "run", "run", ""], "step": ["300", "10", "100", ""]},
                        index=pd.Index(list(rows), name="model"))
    result = trajectory(ModelMap(list(rows), np.stack(list(rows.values())), metadata=meta), "run")
    checks = {
        "trajectory.csv": lambda p: assert_csv_holds(p, result.table),
        "trajectory.json": lambda p: assert_json_holds(p, {**json.loads(json.dumps(result.info, default=_jsonable)),
                                                           "log_axes": False}),
    }
    return result, {}, checks


def case_lineage(tmp_path):
    from lmmap.analyses.lineage import lineage
    from lineage_ecosystem import lineage_ecosystem

    names, L, truth = lineage_ecosystem(N=400, n_bases=6, seed=3)[:3]
    result = lineage(ModelMap(names, L))
    read = pd.read_parquet  # pairs.parquet: every pair tested, as the result holds them

    def pairs(p):
        got, exp = read(p), result.pairs
        assert list(got.columns) == list(exp.columns) and len(got) == len(exp)
        for c in ("rho", "statistic", "p_value", "p_adjusted"):
            np.testing.assert_allclose(got[c].to_numpy(float), exp[c].to_numpy(float), rtol=1e-15)
        assert list(got["model_a"]) == list(exp["model_a"]) and list(got["model_b"]) == list(exp["model_b"])

    checks = {
        "lineage.csv": lambda p: assert_csv_holds(p, result.table),
        "pairs.parquet": pairs,
        "lineage.json": lambda p: assert_json_holds(p, {"alpha": result.info["alpha"]}),
        "lineage.html": lambda p: assert_html_draws(p, result.coords),
    }
    return result, {}, checks


def case_provenance(tmp_path):
    from lmmap.analyses.lineage import provenance
    from lineage_ecosystem import lineage_ecosystem

    names, L, _ = lineage_ecosystem(N=400, n_bases=6, seed=4)[:3]
    result = provenance(ModelMap(names, L), names[0], names[1])
    checks = {
        "evidence.csv": lambda p: assert_csv_holds(p, result.texts),
        "provenance.json": lambda p: assert_json_holds(p, {"a": result.a, "b": result.b, "statistic": result.statistic,
                                                           "p_value": result.p_value, "reading": result.reading}),
    }
    return result, {}, checks


CASES = {
    MAP_RESULT if MAP_RESULT in report.WRITERS else MODEL_MAP: case_map,
    "lmmap.analyses.place.Placement": case_placement,
    "lmmap.analyses.adaptive.AdaptiveResult": case_adaptive,
    "lmmap.analyses.predict.PredictionResult": case_prediction,
    "lmmap.analyses.errors.ErrorAnalysis": case_errors,
    "lmmap.analyses.stability.StabilityResult": case_stability_result,
    "lmmap.analyses.stability.StabilityComparison": case_stability_comparison,
    "lmmap.data.subset.Subset": case_subset,
    "lmmap.analyses.scale.ScaleResult": case_scale,
    "lmmap.analyses.trajectory.TrajectoryResult": case_trajectory,
    "lmmap.analyses.lineage.LineageResult": case_lineage,
    "lmmap.analyses.lineage.ProvenanceResult": case_provenance,
}


# -- the tests --------------------------------------------------------------------------------------------------------


def test_every_writer_has_a_round_trip_case_and_every_case_a_writer():
    assert set(CASES) == set(report.WRITERS), (
        f"writers without a case: {sorted(set(report.WRITERS) - set(CASES))}; "
        f"cases without a writer: {sorted(set(CASES) - set(report.WRITERS))}")


def test_every_result_type_of_the_analyses_has_a_writer():
    """A class named ``...Result`` in lmmap.analyses (a new analysis' result) must be written by some writer."""
    import pkgutil

    import lmmap.analyses

    found = set()
    for info in pkgutil.iter_modules(lmmap.analyses.__path__):
        module = importlib.import_module(f"lmmap.analyses.{info.name}")
        for name, cls in vars(module).items():
            if inspect.isclass(cls) and cls.__module__ == module.__name__ and name.endswith("Result"):
                found.add(f"{cls.__module__}.{cls.__qualname__}")
    assert found, "no Result classes found: the scan is broken"
    assert found <= set(report.WRITERS), f"Result types without a writer: {sorted(found - set(report.WRITERS))}"


@pytest.mark.parametrize("key", sorted(CASES))
def test_result_round_trips_through_report_write(key, tmp_path, monkeypatch):
    case = CASES[key]
    args = (tmp_path, monkeypatch) if case is case_adaptive else (tmp_path,)
    result, options, checks = case(*args)
    cls = type(result)
    assert f"{cls.__module__}.{cls.__qualname__}" == key, "the case builds another type than its key"
    outdir = tmp_path / "out"
    paths = report.write(result, outdir, **options)
    assert paths and all(p.exists() for p in paths.values())
    assert {name for name in paths} >= set(checks), f"not written: {sorted(set(checks) - set(paths))}"
    # Every table and parameter file is read back by the case: nothing written goes unchecked.
    unchecked = sorted(n for n in paths if n.endswith((".csv", ".json")) and n not in checks)
    assert unchecked == [], f"{key}: files written that the round-trip case does not read back: {unchecked}"
    for name, check in checks.items():
        check(paths[name])
    # Figures: a real PNG beside each page, and a page whose figure has data.
    for name, path in paths.items():
        if name.endswith(".png"):
            width, height = _png_size(path)
            assert width >= MIN_PNG_WIDTH and height >= 200, f"{name}: {width}×{height}"
        elif name.endswith(".html"):
            data, _ = plotly_figure(path)
            assert data and any(t.get("x") is not None or t.get("y") is not None for t in data), name
            assert (path.with_suffix(".png")).name in paths, f"{name} has no PNG beside it"


@pytest.mark.parametrize("key", sorted(CASES))
def test_a_writer_refuses_an_option_it_does_not_take_and_writes_nothing(key, tmp_path, monkeypatch):
    """Writers have strict signatures: a misspelt option (``colour_by``) is one line naming the ones taken, not
    silently ignored; every writer's options are keyword-only, with no catch-all."""
    from lmmap.exceptions import InputError

    module = report.writer_for(_result_type_stub(key))
    params = inspect.signature(module.write).parameters.values()
    assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params), f"{key}: a catch-all parameter"
    assert all(p.kind is p.KEYWORD_ONLY for p in list(params)[2:]), f"{key}: options must be keyword-only"
    case = CASES[key]
    result, _, _ = case(tmp_path, monkeypatch) if case is case_adaptive else case(tmp_path)
    with pytest.raises(InputError, match=r"takes no option 'colour_by'; it takes"):
        report.write(result, tmp_path / "never", colour_by="family")
    assert not (tmp_path / "never").exists()


def _result_type_stub(key):
    """An instance-free stand-in whose type is ``key``'s class, for :func:`report.writer_for`."""
    module, _, name = key.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return cls.__new__(cls)
