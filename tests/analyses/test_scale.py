"""KL on a readable scale (issue 15 §4): reference points from the metadata, medians recomputed here."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lmmap import ModelMap, report
from lmmap.analyses.scale import scale
from lmmap.exceptions import InputError

NAMES = ["A", "A-ft1", "A-ft2", "A-step10", "A-step30", "A-q4", "B", "B-ft"]
META = pd.DataFrame(
    {
        "model_type": ["base", "finetune", "finetune", "checkpoint", "checkpoint", "quantized", "base", "finetune"],
        "family": ["a", "a", "a", "a", "a", "a", "b", "b"],
        "base_model": ["", "A", "A", "A", "A", "A", "", "B"],
        "quantization": [None, None, None, None, None, "int4", None, None],
    },
    index=pd.Index(NAMES, name="model"),
)


def make_map():
    rng = np.random.default_rng(7)
    L = rng.normal(-200, 10, size=(len(NAMES), 40))
    nbytes = rng.integers(100, 1000, size=40)
    return ModelMap(NAMES, L, threshold=None, metadata=META, text_bytes=nbytes), nbytes


def test_reference_medians_equal_an_independent_computation():
    mm, nbytes = make_map()
    res = scale(mm, unit="bits-per-byte")
    L = mm.L
    Q = L - L.mean(0) - L.mean(1)[:, None] + L.mean()

    def kl(a, b):  # variance of the log-likelihood difference / (2 · mean bytes · ln 2)
        i, j = NAMES.index(a), NAMES.index(b)
        assert np.var(L[i] - L[j]) / 2 == pytest.approx(((Q[i] - Q[j]) ** 2).mean() / 2)
        return np.var(L[i] - L[j]) / (2 * nbytes.mean() * np.log(2))

    want = {
        "fine-tune ↔ base": [kl("A-ft1", "A"), kl("A-ft2", "A"), kl("B-ft", "B")],
        "checkpoints of one run": [kl("A-step10", "A"), kl("A-step30", "A"), kl("A-step10", "A-step30")],
        "quantised ↔ original": [kl("A-q4", "A")],
        "unrelated families": [kl(a, b) for a in NAMES[:6] for b in NAMES[6:]],
    }
    for relation, values in want.items():
        assert res.reference(relation) == pytest.approx(np.median(values), rel=1e-10), relation
        assert int(res.references.set_index("relation").loc[relation, "n_pairs"]) == len(values)
    assert res.reference("all pairs") == pytest.approx(
        np.median([kl(a, b) for k, a in enumerate(NAMES) for b in NAMES[k + 1:]]), rel=1e-10)
    nats = scale(mm, unit="nats-per-text")
    assert nats.reference("fine-tune ↔ base") == pytest.approx(
        res.reference("fine-tune ↔ base") * nbytes.mean() * np.log(2), rel=1e-10)


def test_no_relations_and_unit_typos_are_one_line_errors():
    mm, _ = make_map()
    with pytest.raises(InputError, match="unit must be one of"):
        scale(mm, unit="bits")
    bare = ModelMap(NAMES, mm.L, threshold=None, text_bytes=mm.text_bytes)
    with pytest.raises(InputError, match="declares no relation"):
        scale(bare)


def test_write_scale_files(tmp_path):
    mm, _ = make_map()
    paths = report.write(scale(mm), tmp_path / "scale")
    assert {"scale.csv", "pairs.csv", "scale.png", "scale.html", "scale.json", "plotly.min.js"} <= set(paths)
    table = pd.read_csv(paths["scale.csv"])
    assert list(table["relation"])[-1] == "all pairs"
    info = json.loads(paths["scale.json"].read_text())
    assert info["unit"] == "nats-per-text" and "provenance" in info  # the one default unit (issue 22 §7)


def test_cli_scale(tmp_path):
    from typer.testing import CliRunner

    from lmmap.cli import app
    from lmmap.data.store import Store
    from lmmap.data.texts import TextSet

    mm, _ = make_map()
    store = Store.create(tmp_path / "store", TextSet.from_texts([f"text number {i}" for i in range(40)]))
    store.write_models([{"name": n, "loglik": row} for n, row in zip(NAMES, mm.L)])
    store.set_metadata(META.reset_index())
    res = CliRunner().invoke(app, ["scale", "-o", str(tmp_path / "out"), "--store", str(store.path)])
    assert res.exit_code == 0, res.output
    assert "fine-tune ↔ base" in res.output and (tmp_path / "out" / "scale.png").exists()
