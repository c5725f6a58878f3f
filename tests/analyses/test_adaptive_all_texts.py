"""Adaptive placement of a model whose target needs (nearly) every text (issue 22 §4).

Before: rounds of 32 draws until half the texts were drawn — 128 rounds and
2 min on a store of 5,000 texts where scoring them all takes under a second —
then the rest, reported as ``stopped_by=target`` with ``se_reached`` 0 and a
trace that fell to 0, and a log line per round. Now the rounds grow
geometrically, a model whose target is predicted to need most of the texts
left has them all scored at once and says so (``stopped_by=all-texts``, the
KL exact), the trace ends at its last estimate, and the log keeps a few lines
per model.
"""

import numpy as np
import pandas as pd
import pytest

from lmmap.analyses import adaptive as ad
from lmmap.data.store import Store
from lmmap.data.texts import TextSet
from synthetic import ecosystem_L

N = 5000


@pytest.fixture(scope="module")
def eco():
    names, L, kinds, _ = ecosystem_L(N, n_bases=6, ft_per_base=3, n_merges=3, n_unrelated=3, seed=1)
    held = [names.index("base2/ft1"), kinds.index("merge"), kinds.index("unrelated")]
    rest = [i for i in range(len(names)) if i not in held]
    return names, L, held, rest, ad.prepare_map(L[rest])


# -- the rounds -----------------------------------------------------------------------------------


def test_rounds_grow_geometrically_after_the_minimum():
    sizes = ad.round_sizes(32, 3, 13, N)
    assert sizes[:3] == [32, 32, 32]
    assert all(b == max(32, int(np.ceil((ad.ROUND_GROWTH - 1) * a)))
               for a, b in zip(np.cumsum(sizes)[2:-1], sizes[3:]))
    assert sum(sizes) > N  # 13 rounds reach N draws, where rounds of 32 took N / 32
    assert max(ad.round_sizes(32, 3, 40, N)) == N  # capped: one round never draws more than N


@pytest.mark.parametrize("which", [0, 1, 2])
def test_a_target_that_needs_every_text_scores_them_all_in_few_rounds(eco, which):
    names, L, held, rest, amap = eco
    row = L[held[which]]
    run = ad.simulate(amap, row, target_se=0.001, round_size=32, random_state=which)
    assert run.stopped_by == "all-texts" and run.texts_scored == N
    assert run.rounds <= 15
    # The KL is the full-data one, exactly: every text was scored.
    np.testing.assert_allclose(run.estimate.g, ad.true_sq_distances(amap, row), rtol=1e-12)
    assert run.se_reached == 0 and np.all(run.estimate.se == 0)
    # It was predicted from the trend of the SE, which an estimate had before the switch.
    assert run.se_estimated > 0.001 and run.predicted_texts > 0


def test_without_the_fill_in_rounds_still_grow(eco):
    # max_texts < N: no text beyond it, so no exact fill-in; the rounds grow until the cap.
    names, L, held, rest, amap = eco
    run = ad.simulate(amap, L[held[0]], target_se=0.001, max_texts=600, round_size=16, random_state=0)
    assert run.stopped_by == "max-texts" and run.texts_scored == 600
    assert run.rounds <= 12  # 600 texts took ≥ 38 rounds of 16
    assert not any(t["exact"] for t in run.trace)


def test_a_reachable_target_stops_by_target_and_is_not_filled_in(eco):
    names, L, held, rest, amap = eco
    for j, h in enumerate(held):
        run = ad.simulate(amap, L[h], target_se=0.05, round_size=32, random_state=10 + j)
        assert run.stopped_by == "target" and 0 < run.se_reached <= 0.05
        assert run.texts_scored < N / 4 and run.rounds <= 15


def test_se_reached_is_zero_only_with_all_texts(eco):
    names, L, held, rest, amap = eco
    for target, max_texts in [(0.001, None), (0.05, None), (0.001, 300), (0.2, None)]:
        run = ad.simulate(amap, L[held[1]], target_se=target, max_texts=max_texts, round_size=32, random_state=2)
        assert (run.se_reached == 0) == (run.stopped_by == "all-texts"), (target, max_texts, run.stopped_by)


def test_the_trace_ends_at_the_last_estimate_and_flags_the_exact_row(eco):
    names, L, held, rest, amap = eco
    run = ad.simulate(amap, L[held[0]], target_se=0.001, round_size=32, random_state=4)
    *estimated, last = run.trace
    assert estimated and not any(t["exact"] for t in estimated)
    assert all(np.isfinite(t["rel_se"]) and t["rel_se"] > 0 for t in estimated)  # never a drop to 0
    assert last["exact"] and last["rel_se"] == 0 and last["texts_scored"] == N
    assert last["round"] == run.rounds == estimated[-1]["round"] + 1


def test_the_draws_are_one_stream_whatever_the_rounds(eco):
    # A rerun with the same settings draws the same texts; other round sizes cut the same stream elsewhere.
    names, L, held, rest, amap = eco
    a = ad.simulate(amap, L[held[2]], target_se=0.05, round_size=32, random_state=7)
    b = ad.simulate(amap, L[held[2]], target_se=0.05, round_size=32, random_state=7)
    np.testing.assert_array_equal(a.draws, b.draws)
    np.testing.assert_array_equal(a.estimate.g, b.estimate.g)
    c = ad.simulate(amap, L[held[2]], target_se=0.1, round_size=20, random_state=7)
    k = min(len(a.draws), len(c.draws))
    np.testing.assert_array_equal(a.draws[:k], c.draws[:k])


# -- the driver: a store, the fake backend, the log --------------------------------------------------


N_STORE = 1200


@pytest.fixture(scope="module")
def fake():
    from lmmap.scoring.fake import BigramModel

    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 9))) for _ in range(300)]
    texts = [" ".join(rng.choice(words, rng.integers(5, 30))) for _ in range(N_STORE)]
    models = {}
    for b in range(2):
        base = BigramModel.from_name(f"base{b}").counts
        models[f"base{b}"] = BigramModel(base)
        for f in range(2):
            models[f"base{b}-ft{f}"] = BigramModel(base + rng.integers(0, 6, base.shape))
    # Each new model a small change of one fine-tune: its nearest model is told apart from the runner-up.
    new = {"new-a": BigramModel(models["base1-ft0"].counts + rng.integers(0, 2, base.shape)),
           "new-b": BigramModel(models["base0-ft1"].counts + rng.integers(0, 2, base.shape))}
    return texts, models, new


class Counting:
    """Wraps :func:`lmmap.scoring.score_models`, counting the calls and the texts asked for; ``kill_on``: raise
    KeyboardInterrupt on the first call asking for that many texts, after scoring them (as a kill during the
    store change's aftermath would)."""

    def __init__(self, real, kill_on=None):
        self.real, self.kill_on, self.calls, self.asked = real, kill_on, 0, []

    def __call__(self, store, models, **kw):
        self.calls += 1
        self.asked.append(len(kw["text_pos"]))
        out = self.real(store, models, **kw)
        if self.kill_on is not None and len(kw["text_pos"]) == self.kill_on:
            raise KeyboardInterrupt("killed")
        return out


@pytest.fixture(scope="module")
def template(fake, tmp_path_factory):
    """A store of the existing models, scored once; each test works on a copy."""
    from lmmap.scoring import score_models
    from lmmap.scoring.fake import FakeBackend

    texts, models, _ = fake
    path = tmp_path_factory.mktemp("template") / "store"
    store = Store.create(path, TextSet.from_texts(texts))
    score_models(store, list(models), backend=FakeBackend(models))
    store.set_metadata(pd.DataFrame({"model": list(models), "model_type": [m.split("-")[0] for m in models]}))
    return path


def _copy(template, path) -> Store:
    import shutil

    shutil.copytree(template, path)
    return Store(path)


def _place(store, fake, progress=None, target_se=0.002, **kw):
    from lmmap.scoring import FakeBackend, ScoringOptions

    _, models, new = fake
    return ad.place_adaptive(store, list(new), target_se=target_se, round_size=16, random_state=3, embedding="mds",
                             scoring=ScoringOptions(backend=FakeBackend({**models, **new})), progress=progress, **kw)


@pytest.fixture(scope="module")
def placed(fake, template, tmp_path_factory):
    """Both new models placed at a target that needs every text: (store, result, progress steps, scoring calls)."""
    import lmmap.scoring

    store = _copy(template, tmp_path_factory.mktemp("placed") / "store")
    counting = Counting(lmmap.scoring.score_models)
    steps = []
    with pytest.MonkeyPatch.context() as m:
        m.setattr(lmmap.scoring, "score_models", counting)
        res = _place(store, fake, progress=steps.append)
    return store, res, steps, counting


def _full_kl(store, fake, result):
    """The KL of each new model on all N texts, from its rows scored in full under another name."""
    from lmmap.scoring import score_models
    from lmmap.scoring.fake import FakeBackend

    _, models, new = fake
    score_models(store, list(new), names=[f"{n}-full" for n in new], backend=FakeBackend(new))
    amap = ad.prepare_map(store.matrix(result.existing_models)[1])
    return np.vstack([ad.true_sq_distances(amap, store.matrix([f"{n}-full"])[1][0]) / (2 * store.n_texts)
                      for n in result.new_models])


def test_the_driver_scores_every_text_says_so_and_gives_the_exact_kl(fake, placed):
    store, res, steps, counting = placed
    table = res.adaptive_table()
    assert list(table["stopped_by"]) == ["all-texts"] * 2 and (table["se_reached"] == 0).all()
    assert (table["texts_scored"] == N_STORE).all() and (table["rounds"] <= 10).all()
    assert counting.calls <= 10 and max(counting.asked) == N_STORE
    np.testing.assert_allclose(res.kl, _full_kl(store, fake, res), rtol=1e-9)
    assert np.all(res.kl_se == 0)
    assert "KL is exact" in res.summary()

    # The log: a line per model (why all its texts are scored), and the bars that stay on screen: the
    # rounds' and one scoring bar per model, whatever the number of rounds.
    lines = [s.message for s in steps if s.task is None and s.message]
    assert len(lines) <= 2 * len(res.new_models), lines
    for name in res.new_models:
        assert sum(line.startswith(f"{name}: ") for line in lines) == 1
        assert any("scoring the other" in line and "exact" in line for line in lines if line.startswith(name))
    finished = [s.task for s in steps if s.task is not None and s.finished]
    assert sorted(finished) == sorted(["adaptive rounds", *res.new_models]), finished


def test_the_report_draws_the_estimates_and_marks_the_exact_fill_in(placed, tmp_path, monkeypatch):
    from lmmap import report
    from lmmap.report import plots

    _, res, _, _ = placed
    drawn = {}
    real = plots.lines_png

    def capture(path, series, *a, **kw):
        drawn.update(series=series, styles=kw.get("styles", {}))
        return real(path, series, *a, **kw)

    monkeypatch.setattr(plots, "lines_png", capture)
    paths = report.write(res, tmp_path / "out")
    trace = pd.read_csv(paths["adaptive_trace.csv"])
    assert "exact" in trace.columns
    for name in res.new_models:
        rows = trace[trace["model"] == name]
        assert rows["exact"].tolist() == [False] * (len(rows) - 1) + [True]
        assert (rows["rel_se"].iloc[:-1] > 0).all() and rows["rel_se"].iloc[-1] == 0
        x, y = drawn["series"][name]
        assert len(x) == len(rows) - 1 and np.all(y > 0)  # the line ends at the last estimate
    # One mark for the exact fill-in, at N, naming the models.
    marker = f"all {N_STORE:,} texts scored, KL exact: new-a, new-b"
    assert drawn["styles"][marker] == "-." and np.all(drawn["series"][marker][0] == N_STORE)
    assert pd.read_csv(paths["adaptive.csv"])["stopped_by"].tolist() == ["all-texts"] * 2
    assert paths["adaptive_trace.png"].stat().st_size > 1000


def test_a_reachable_target_logs_one_line_per_model(fake, template, tmp_path):
    steps = []
    res = _place(_copy(template, tmp_path / "store"), fake, progress=steps.append, target_se=0.2)
    assert list(res.adaptive_table()["stopped_by"]) == ["target"] * 2
    lines = [s.message for s in steps if s.task is None and s.message]
    assert len(lines) == 2 and all("target reached" in line for line in lines), lines
    assert sum(s.finished for s in steps if s.task is not None) == 3


def test_a_run_killed_during_the_fill_in_resumes_and_a_rerun_scores_nothing(fake, template, placed, tmp_path,
                                                                           monkeypatch):
    import lmmap.scoring

    real = lmmap.scoring.score_models
    ref = placed[1]
    store = _copy(template, tmp_path / "store")
    monkeypatch.setattr(lmmap.scoring, "score_models", Counting(real, kill_on=N_STORE))
    with pytest.raises(KeyboardInterrupt):
        _place(store, fake)
    resumed = Counting(real)
    monkeypatch.setattr(lmmap.scoring, "score_models", resumed)
    res = _place(store, fake)
    np.testing.assert_array_equal(res.kl, ref.kl)
    pd.testing.assert_frame_equal(res.adaptive_table(), ref.adaptive_table())
    pd.testing.assert_frame_equal(res.trace_table(), ref.trace_table())
    # The same draws, which the killed run had stored: what was left is at most the fill-in.
    assert resumed.calls <= 1 and set(resumed.asked) <= {N_STORE}

    again = Counting(real)
    monkeypatch.setattr(lmmap.scoring, "score_models", again)
    rerun = _place(store, fake)
    assert again.calls == 0
    np.testing.assert_array_equal(rerun.kl, ref.kl)
    pd.testing.assert_frame_equal(rerun.trace_table(), ref.trace_table())
