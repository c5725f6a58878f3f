"""KL units on every output that reports KL (issue 15 §4): ``lmmap add`` (by a subset, and ``--adaptive``).

Bits per byte are checked against the nats-per-text numbers divided by
(mean UTF-8 bytes · ln 2), the mean computed here from the store's texts
(``w``-weighted on a subset map, over all N texts for an adaptive
placement): never through :meth:`ModelMap.unit_factor`, whose result is
what is tested. ``lmmap predict`` (benchmark scores), ``lmmap errors``
(relative or absolute errors: ratios, no unit) and ``lmmap stability``
(positions on the 2-D map) report no KL and take no ``--unit``.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest

from cli_main import run_main
from lmmap.analyses import adaptive as ad
from lmmap.analyses.place import add_models, place
from lmmap.analyses.select import select_from_store
from lmmap.data.store import Store
from lmmap.data.texts import TextSet
from lmmap.exceptions import InputError
from lmmap.map import ModelMap
from synthetic import LookupScorer, family_L

N = 240
LN2 = math.log(2.0)
# Maps of a few models lower t-SNE's perplexity to (K − 1)/3 and say so; expected here.
pytestmark = pytest.mark.filterwarnings("ignore:perplexity .* is too large")


def _texts(n):
    # Byte lengths from 9 to over 60, multi-byte characters included: the mean bytes is no round number.
    return [f"text {i} " + "é" * (i % 13) + "x" * (i % 7) + "漢" * (i % 5) for i in range(n)]


def _in_html(text: str, path) -> bool:
    """``text`` in the figure's hover (plotly writes "/" as its JSON escape)."""
    return text.replace("/", "\\u002f") in path.read_text() or text in path.read_text()


def _bytes(texts) -> np.ndarray:
    return np.array([len(t.encode("utf-8")) for t in texts], dtype=np.float64)


@pytest.fixture
def eco(tmp_path):
    """12 models in 3 families on N texts of varied byte lengths; one per family held out as 'new'."""
    names, L, fams = family_L(N, K_per=4, n_fam=3, seed=5)
    texts = _texts(N)
    store = Store.create(tmp_path / "store", TextSet.from_texts(texts))
    store.write_models([{"name": n, "loglik": row, "record": {"convention": "reference"}} for n, row in zip(names, L)])
    store.set_metadata(pd.DataFrame({"model": names, "model_type": fams}))
    held = [n for n in names if n.endswith("/m3")]
    rest = [n for n in names if n not in held]
    sub = select_from_store(store, "ls", 200, random_state=2, models=rest)
    return store, names, L, texts, held, rest, sub


# -- lmmap add --subset: analysis and files ---------------------------------------------------------


def test_a_placement_in_bits_per_byte_is_nats_over_weighted_mean_bytes_ln2(eco, tmp_path):
    from lmmap import report

    store, names, L, texts, held, rest, sub = eco
    nats = add_models(store, held, sub, R=30, random_state=1)
    bits = add_models(store, held, sub, R=30, random_state=1, unit="bits-per-byte")
    # The subset map's mean bytes: weighted by w = c/(nπ) over its d texts.
    b = _bytes(texts)[sub.text_pos]
    mean = float((sub.weights * b).sum() / sub.weights.sum())
    assert not np.isclose(mean, _bytes(texts).mean(), rtol=1e-3)  # the weights matter here
    f = 1.0 / (mean * LN2)
    assert nats.unit == "nats-per-text" and bits.unit == "bits-per-byte" and bits.unit_label == "bits/byte"
    np.testing.assert_allclose(bits.kl, nats.kl * f, rtol=1e-12)
    np.testing.assert_allclose(bits.kl_se, nats.kl_se * f, rtol=1e-12)
    np.testing.assert_allclose(bits.coords, nats.coords)  # the map does not depend on the unit
    # The nats themselves are g̃ / 2N of the weighted features, computed here from the raw rows.
    Xf = ModelMap(rest + held, np.vstack([store.matrix(rest, text_pos=sub.text_pos)[1],
                                          store.matrix(held, text_pos=sub.text_pos)[1]]),
                  threshold=sub.threshold, w=sub.weights, n_texts=N).features()
    direct = ((Xf[len(rest):, None, :] - Xf[None, :len(rest), :]) ** 2).sum(-1) / (2 * N)
    np.testing.assert_allclose(nats.kl, direct, rtol=1e-9)

    pn = report.write(nats, tmp_path / "nats")
    pb = report.write(bits, tmp_path / "bits")
    tn, tb = pd.read_csv(pn["placement.csv"]), pd.read_csv(pb["placement.csv"])
    assert list(tb.columns) == list(tn.columns) == ["new_model", "existing_model", "kl", "kl_se", "rank",
                                                    "lineage_p", "likely_parent"]
    # the lineage test does not depend on the unit either
    same = ["new_model", "existing_model", "rank", "lineage_p", "likely_parent"]
    assert tb[same].equals(tn[same])
    np.testing.assert_allclose(tb["kl"], tn["kl"] * f, rtol=1e-12)
    np.testing.assert_allclose(tb["kl_se"], tn["kl_se"] * f, rtol=1e-12)
    kn, kb = pd.read_csv(pn["kl.csv"], index_col=0), pd.read_csv(pb["kl.csv"], index_col=0)
    np.testing.assert_allclose(kb.to_numpy(), kn.to_numpy() * f, rtol=1e-12)
    nn, nb = pd.read_csv(pn["neighbors.csv"]), pd.read_csv(pb["neighbors.csv"])
    np.testing.assert_allclose(nb["kl"], nn["kl"] * f, rtol=1e-12)
    jn, jb = json.loads(pn["map.json"].read_text()), json.loads(pb["map.json"].read_text())
    assert jn["kl_unit"] == "nats-per-text" and jb["kl_unit"] == "bits-per-byte"
    assert jb["mean_text_bytes"] == pytest.approx(mean, rel=1e-12)
    assert _in_html("bits/byte", pb["map.html"]) and not _in_html("bits/byte", pn["map.html"])
    assert "bits/byte" in bits.summary() and "bits/byte" not in nats.summary()


def test_place_refuses_a_unit_it_cannot_give_in_one_line():
    rng = np.random.default_rng(0)
    L = rng.normal(-100, 5, size=(5, 20))
    mm = ModelMap([f"m{i}" for i in range(4)], L[:4], threshold=None)  # no text_bytes
    with pytest.raises(InputError, match="unit must be one of") as e:
        place(mm, ["new"], L[4:], unit="bits-per-token")
    assert e.value.params == ("unit",) and "\n" not in str(e.value)
    with pytest.raises(InputError, match="text_bytes") as e:
        place(mm, ["new"], L[4:], unit="bits-per-byte")
    assert e.value.params == ("unit",) and "\n" not in str(e.value)
    # With the byte lengths, the same placement: nats over (mean bytes · ln 2).
    nbytes = rng.integers(20, 200, size=20)
    mb = ModelMap(mm.names, mm.L, threshold=None, text_bytes=nbytes)
    a, b = place(mb, ["new"], L[4:], embedding="pca"), place(mb, ["new"], L[4:], embedding="pca", unit="bits-per-byte")
    np.testing.assert_allclose(b.kl, a.kl / (nbytes.mean() * LN2), rtol=1e-12)


def test_add_models_checks_the_unit_before_scoring(eco, monkeypatch):
    import lmmap.scoring

    store, names, L, texts, held, rest, sub = eco

    def never(*a, **k):
        raise AssertionError("scored before the unit was checked")

    monkeypatch.setattr(lmmap.scoring, "score_models", never)
    with pytest.raises(InputError, match="unit must be one of"):
        add_models(store, ["some/new-model"], sub, unit="bpb")


# -- lmmap add --adaptive ------------------------------------------------------------------------------


def _adaptive_store(path, names, L, held, texts):
    store = Store.create(path, TextSet.from_texts(texts))
    store.write_models([{"name": n, "loglik": row, "record": {"convention": "reference"}}
                        for n, row in zip(names, L) if n not in held])
    return store


def test_an_adaptive_placement_in_bits_per_byte_is_nats_over_mean_bytes_ln2(eco, tmp_path, monkeypatch):
    import lmmap.scoring
    from lmmap import report

    _, names, L, texts, held, rest, _ = eco
    rows = {f"src{j}": L[names.index(h)] for j, h in enumerate(held)}
    monkeypatch.setattr(lmmap.scoring, "score_models", LookupScorer(rows))
    kw = dict(names=["a", "b", "c"], target_se=0.2, neighbors=2, round_size=16, max_texts=64, random_state=3)
    nats = ad.place_adaptive(_adaptive_store(tmp_path / "s1", names, L, held, texts), list(rows), **kw)
    bits = ad.place_adaptive(_adaptive_store(tmp_path / "s2", names, L, held, texts), list(rows),
                             unit="bits-per-byte", **kw)
    # KL = g / 2N is a mean over all N texts, whichever were drawn: the mean bytes of all N.
    f = 1.0 / (_bytes(texts).mean() * LN2)
    assert [r.texts_scored for r in bits.runs.values()] == [r.texts_scored for r in nats.runs.values()]
    np.testing.assert_allclose(bits.kl, nats.kl * f, rtol=1e-12)
    np.testing.assert_allclose(bits.kl_se, nats.kl_se * f, rtol=1e-12)
    np.testing.assert_allclose(bits.coords, nats.coords)
    tn, tb = nats.trace_table(), bits.trace_table()
    np.testing.assert_allclose(tb["kl_nearest"], tn["kl_nearest"] * f, rtol=1e-12)
    np.testing.assert_allclose(tb["kl_se_nearest"], tn["kl_se_nearest"] * f, rtol=1e-12)
    assert tb["rel_se"].equals(tn["rel_se"]) and tb["nearest"].equals(tn["nearest"])
    # The nats: the trace's last KL to the nearest is the estimate g / 2N of the run.
    run = nats.runs["a"]
    j = int(np.argmin(run.estimate.g))
    assert tn[tn["model"] == "a"]["kl_nearest"].iloc[-1] == pytest.approx(max(run.estimate.g[j], 0) / (2 * N))

    pn, pb = report.write(nats, tmp_path / "on"), report.write(bits, tmp_path / "ob")
    np.testing.assert_allclose(pd.read_csv(pb["placement.csv"])["kl"], pd.read_csv(pn["placement.csv"])["kl"] * f,
                               rtol=1e-12)
    np.testing.assert_allclose(pd.read_csv(pb["kl.csv"], index_col=0).to_numpy(),
                               pd.read_csv(pn["kl.csv"], index_col=0).to_numpy() * f, rtol=1e-12)
    np.testing.assert_allclose(pd.read_csv(pb["adaptive_trace.csv"])["kl_nearest"],
                               pd.read_csv(pn["adaptive_trace.csv"])["kl_nearest"] * f, rtol=1e-12)
    jn, jb = json.loads(pn["adaptive.json"].read_text()), json.loads(pb["adaptive.json"].read_text())
    assert jn["kl_unit"] == "nats-per-text" and jb["kl_unit"] == "bits-per-byte"
    assert jb["mean_text_bytes"] == pytest.approx(_bytes(texts).mean(), rel=1e-12)
    assert "bits/byte" in bits.summary() and "bits/byte" not in nats.summary()
    assert _in_html("bits/byte", pb["map.html"])


def test_adaptive_refuses_a_unit_typo_before_anything(eco, tmp_path, monkeypatch):
    import lmmap.scoring

    _, names, L, texts, held, rest, _ = eco

    def never(*a, **k):
        raise AssertionError("scored before the unit was checked")

    monkeypatch.setattr(lmmap.scoring, "score_models", never)
    store = _adaptive_store(tmp_path / "s", names, L, held, texts)
    with pytest.raises(InputError, match="unit must be one of") as e:
        ad.place_adaptive(store, ["x"], unit="nats")
    assert e.value.params == ("unit",) and "\n" not in str(e.value)
    assert not (store.path / "adaptive").exists()  # no run marker written either


# -- the command line ------------------------------------------------------------------------------------


def test_cli_add_takes_a_unit(eco, tmp_path):
    store, names, L, texts, held, rest, sub = eco
    sub_path = sub.save(tmp_path / "sub.json")
    out = tmp_path / "out"
    code, stdout, err = run_main("add", *held, "--subset", sub_path, "-o", out, "--store", store.path,
                                 "--R", 20, "--unit", "bits-per-byte", "--no-progress")
    assert code == 0, err
    b = _bytes(texts)[sub.text_pos]
    f = 1.0 / ((sub.weights * b).sum() / sub.weights.sum() * LN2)
    nats = add_models(store, held, sub, R=20)
    got = pd.read_csv(out / "placement.csv")
    np.testing.assert_allclose(got["kl"], nats.table()["kl"] * f, rtol=1e-9)
    np.testing.assert_allclose(got["kl_se"], nats.table()["kl_se"] * f, rtol=1e-9)
    assert json.loads((out / "map.json").read_text())["kl_unit"] == "bits-per-byte"
    assert "bits/byte" in stdout


def test_cli_add_adaptive_takes_a_unit(eco, tmp_path, monkeypatch):
    import lmmap.scoring

    _, names, L, texts, held, rest, _ = eco
    rows = {f"src{j}": L[names.index(h)] for j, h in enumerate(held)}
    monkeypatch.setattr(lmmap.scoring, "score_models", LookupScorer(rows))
    s1 = _adaptive_store(tmp_path / "s1", names, L, held, texts)
    s2 = _adaptive_store(tmp_path / "s2", names, L, held, texts)
    args = ["add", *rows, "--adaptive", "--target-se", 0.2, "--neighbors", 2, "--round", 16, "--max-texts", 64,
            "--seed", 3, "--no-progress", *sum((["--name", n] for n in ("a", "b", "c")), [])]
    code, _, err = run_main(*args, "-o", tmp_path / "on", "--store", s1.path)
    assert code == 0, err
    code, stdout, err = run_main(*args, "-o", tmp_path / "ob", "--store", s2.path, "--unit", "bits-per-byte")
    assert code == 0, err
    f = 1.0 / (_bytes(texts).mean() * LN2)
    np.testing.assert_allclose(pd.read_csv(tmp_path / "ob" / "placement.csv")["kl"],
                               pd.read_csv(tmp_path / "on" / "placement.csv")["kl"] * f, rtol=1e-9)
    assert json.loads((tmp_path / "ob" / "adaptive.json").read_text())["kl_unit"] == "bits-per-byte"
    assert "bits/byte" in stdout


@pytest.mark.parametrize("extra", [["--subset", "sub.json"], ["--adaptive"]])
def test_cli_add_unit_typo_is_one_line_before_the_store_is_read(tmp_path, extra):
    out = tmp_path / "out"
    # The store does not exist: the unit is what is refused, before anything is read.
    code, _, err = run_main("add", "some-model", *[tmp_path / e if e.endswith(".json") else e for e in extra],
                            "-o", out, "--store", tmp_path / "no-store", "--unit", "bits-per-bytes")
    assert code == 1
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--unit must be one of nats-per-text, bits-per-byte" in lines[0], err
    assert not out.exists()
