"""The lineage test on real log-likelihoods: 50 tiny GPT-2 models with known lineage (issue 25).

The fixture is one of ``benchmarks/bench_lineage_real.py``'s maps of six base lineages (``--fixture`` rebuilds it):
models trained on this project's machine by :func:`lmmap.demo.train_model` (six base runs on different domain
mixtures with their checkpoints, fine-tunes on three domains, six from-scratch models), 8-bit copies and weight
averages of two fine-tunes built with transformers, each scored by ``score_models`` on the same 3,000 texts; the
metadata are what ``lmmap score`` recorded (``trajectory``/``step`` of the runs, ``quantisation`` of the copies).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmmap.analyses.lineage import lineage
from lmmap.map import ModelMap

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "lineage_real_map.npz"


def _load():
    """``(truth, map)``: each model's kind and parents, and the map with the metadata scoring recorded."""
    with np.load(FIXTURE) as f:
        names = [str(n) for n in f["names"]]
        L = f["L"] / 1e4
        models = json.loads(str(f["models"]))
        threshold = float(f["threshold"])
    truth = pd.DataFrame.from_dict(models, orient="index")
    md = truth[["trajectory", "step", "quantisation"]].astype(object).where(truth[["trajectory", "step",
                                                                                   "quantisation"]].notna(), np.nan)
    return truth, ModelMap(names, L, threshold=threshold, metadata=md)


@pytest.fixture(scope="module")
def real():
    truth, mm = _load()
    return truth, lineage(mm, coords=False).table.set_index("model")


def _of(truth, kind):
    return [m for m in truth.index if truth.loc[m, "kind"] == kind]


def test_merges_of_one_bases_fine_tunes_get_both_parents(real):
    """A weight average of two fine-tunes of one base lies between them, and its other relatives are not all
    explained by the two (here ρ(merge, d | both parents) = 0.34 for the fine-tune of one parent, 0.28 for the
    base): both parents are found. Before (the rule's threshold 0.3), the base took `base4`'s merge as its child."""
    truth, t = real
    same_base = [m for m in _of(truth, "merge")
                 if len({p.split("-ft-")[0] for p in truth.loc[m, "parents"]}) == 1]
    assert len(same_base) == 3
    for m in same_base:
        assert {t.loc[m, "parent"], t.loc[m, "parent2"]} == set(truth.loc[m, "parents"]), t.loc[m]
    not_merges = [m for m in truth.index if truth.loc[m, "kind"] != "merge"]
    assert (t.loc[not_merges, "parent2"] == "").all()


def test_8bit_copies_come_after_their_original(real):
    truth, t = real
    for q in _of(truth, "quant"):
        assert t.loc[q, "parent"] == truth.loc[q, "parents"][0] and t.loc[q, "direction"] == "quantisation"


def test_fine_tunes_find_their_base_where_kl_nearest_does_not(real):
    truth, t = real
    fts = _of(truth, "finetune")
    right = sum(t.loc[m, "decision"] == "derived" and t.loc[m, "parent"] in truth.loc[m, "parents"] for m in fts)
    by_kl = sum(t.loc[m, "nearest_kl"] in truth.loc[m, "parents"] for m in fts)
    assert right >= 0.85 * len(fts) and by_kl <= 0.25 * len(fts), (right, by_kl, len(fts))
    wrong_lineage = [m for m in fts if t.loc[m, "decision"] == "derived"
                     and t.loc[m, "parent"].split("-")[0] != m.split("-")[0]]
    assert not wrong_lineage


def test_weighting_texts_by_their_spread_raises_the_parents_above_the_null(real, monkeypatch):
    """Each text weighted by its residual spread to the power −1/2 (``TEXT_SCALE_POWER``): on these real models the
    fine-tunes' statistics with their right parent rise (median 5.5 → 6.9 null sds) and one from-scratch model
    fewer is given a parent (`scratch-legal`, paired with the other seed on its domain without the weights)."""
    import lmmap.maths.lineage as core

    truth, t = real
    fts = _of(truth, "finetune")

    def median_and_roots(table):
        right = [table.loc[m, "statistic"] for m in fts if table.loc[m, "parent"] in truth.loc[m, "parents"]]
        roots = [m for m in truth.index if not truth.loc[m, "parents"] and table.loc[m, "decision"] == "derived"]
        return float(np.median(right)), len(right), roots

    weighted = median_and_roots(t)
    monkeypatch.setattr(core, "TEXT_SCALE_POWER", 0.0)
    plain = median_and_roots(lineage(_load()[1], coords=False).table.set_index("model"))
    assert weighted[0] > plain[0] + 1.0 and weighted[1] >= plain[1], (weighted, plain)
    assert len(weighted[2]) < len(plain[2]), (weighted, plain)
