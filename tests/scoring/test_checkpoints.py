"""Training checkpoints scored as one trajectory (issue 15 §1): ``--trajectory NAME`` over local checkpoint
directories and ``--revisions`` of a hub model (an offline hub cache, tests/scoring/hub_cache.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cli_main import run_main
from lmmap.data.store import Store
from lmmap.data.texts import TextSet
from lmmap.exceptions import InputError
from lmmap.scoring.checkpoints import expand_checkpoints, step_of


def test_steps_are_read_from_names_or_given():
    labels = ("step1000", "checkpoint-500", "global_step7", "v2-step30", "run_3", "final", "step1k", "tiny-gpt2",
              "model-v2")
    assert [step_of(s) for s in labels] == [1000, 500, 7, 30, 3, None, None, None, None]
    cks = expand_checkpoints(["org/m"], revisions="step10,step30")
    assert [(c.source, c.name, c.revision, c.trajectory, c.step) for c in cks] == [
        ("org/m", "org/m@step10", "step10", "org/m", 10), ("org/m", "org/m@step30", "step30", "org/m", 30)]
    cks = expand_checkpoints(["org/m"], revisions=["main", "v1"], steps="100,50", trajectory="run", names=["m"])
    assert [(c.name, c.trajectory, c.step, c.metadata) for c in cks] == [
        ("m@main", "run", 100, {"trajectory": "run", "step": 100}), ("m@v1", "run", 50, {"trajectory": "run", "step": 50})]
    assert expand_checkpoints(["a", "b"]) is None


@pytest.mark.parametrize("kwargs, words", [
    (dict(models=["org/m"], revisions="main"), "no step number in 'main'"),
    (dict(models=["org/m", "org/n"], revisions="step1"), "revisions are revisions of one hub model; 2 models"),
    (dict(models=["org/m"], revisions="step1,,step2"), "without empty entries"),
    (dict(models=["org/m"], revisions="step1,step2", steps="1"), "1 steps for 2 checkpoints"),
    (dict(models=["org/m"], revisions="step1", steps="one"), "steps must be numbers"),
    (dict(models=["org/m"], steps="1"), "steps needs revisions or trajectory"),
    (dict(models=["a/step1"], trajectory="run", names=["x"]), "trajectory cannot be combined with names=x"),
])
def test_bad_checkpoint_options_are_input_errors(kwargs, words):
    models = kwargs.pop("models")
    with pytest.raises(InputError, match=words):
        expand_checkpoints(models, **kwargs)


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory, tiny_tokenizer, make_tiny_gpt2):
    root = tmp_path_factory.mktemp("run")
    return [make_tiny_gpt2(root / f"checkpoint-{s}", tiny_tokenizer, seed=s) for s in (30, 10, 60)]


@pytest.fixture
def store(tmp_path, stdlib_texts) -> Store:
    texts = [d[200:200 + 60 + 9 * k] for k, d in enumerate(stdlib_texts[20:32])]
    return Store.create(tmp_path / "store", TextSet.from_texts(texts))


def test_local_checkpoints_become_a_trajectory_in_the_store_and_on_the_map(store, run_dirs, tmp_path):
    code, out, err = run_main("score", *run_dirs, "--trajectory", "run", "--store", store.path, "--device", "cpu",
                              "--no-progress")
    assert code == 0, err
    names = ["run@checkpoint-10", "run@checkpoint-30", "run@checkpoint-60"]
    assert sorted(store.model_names()) == names
    meta = store.metadata()
    assert meta.loc[names, "trajectory"].tolist() == ["run"] * 3 and meta.loc[names, "step"].tolist() == [10, 30, 60]
    code, out, err = run_main("trajectory", "run", "-o", tmp_path / "traj", "--store", store.path)
    assert code == 0, err
    table = pd.read_csv(tmp_path / "traj" / "trajectory.csv")
    assert table["model"].tolist() == names and table["step"].tolist() == [10, 30, 60]
    # KL to the previous checkpoint, recomputed from the stored vectors (double-centred, g/2N).
    from lmmap.map import ModelMap

    mm = ModelMap.from_store(store)
    i = [mm.index_of(n) for n in names]
    assert table["kl_to_previous"].iloc[1] == pytest.approx(mm.kl()[i[1], i[0]], rel=1e-9)
    code, _, err = run_main("map", "--store", store.path, "-o", tmp_path / "map", "--edges", "nn")
    assert code == 0, err
    assert "training trajectory (step order)" in (tmp_path / "map" / "map.html").read_text()


def test_a_checkpoint_without_a_step_in_its_name_is_a_one_line_error(store, run_dirs, tmp_path, tiny_gpt2_dir):
    code, out, err = run_main("score", run_dirs[0], tiny_gpt2_dir, "--trajectory", "run", "--store", store.path,
                              "--device", "cpu", "--no-progress")
    assert code == 1 and "no step number in 'tiny-gpt2'" in err and "--steps" in err and "Traceback" not in err
    code, out, err = run_main("score", run_dirs[0], tiny_gpt2_dir, "--trajectory", "run", "--steps", "1,2",
                              "--store", store.path, "--device", "cpu", "--no-progress")
    assert code == 0, err
    assert store.metadata().loc[["run@checkpoint-30", "run@tiny-gpt2"], "step"].tolist() == [1, 2]


def test_revisions_of_a_local_directory_are_refused(store, run_dirs):
    code, out, err = run_main("score", run_dirs[0], "--revisions", "step1,step2", "--store", store.path,
                              "--no-progress")
    assert code == 1 and "is a local directory: revisions are for hub models" in err and "--trajectory" in err


def test_hub_revisions_become_a_trajectory_each_at_its_commit(store, tiny_run_hub, tmp_path):
    hub = tiny_run_hub
    code, out, err = run_main("score", hub.repo_id, "--revisions", ",".join(hub.revisions), "--store", store.path,
                              "--device", "cpu", "--no-progress")
    assert code == 0, err
    names = [f"{hub.repo_id}@{r}" for r in hub.revisions]
    assert sorted(store.model_names()) == sorted(names)
    meta = store.metadata()
    assert meta.loc[names, "trajectory"].tolist() == [hub.repo_id] * 3
    assert meta.loc[names, "step"].tolist() == [hub.steps[r] for r in hub.revisions]
    from lmmap.scoring.hf import load_model, score_texts

    for rev, name in zip(hub.revisions, names):
        assert store.record(name)["revision"] == hub.commits[rev]
        model, tok = load_model(str(hub.checkpoints[rev]), device="cpu")  # the checkpoint's own directory
        want, _, _ = score_texts(model, tok, store.texts.texts)
        np.testing.assert_allclose(store.vectors(name)["loglik"], want, rtol=0, atol=1e-5)
    # A checkpoint scored on some texts only is completed by its name, at the commit it was scored from.
    store2 = Store.create(tmp_path / "s2", store.texts)
    from lmmap.scoring import score_models

    score_models(store2, [hub.repo_id], revisions=["step10"], device="cpu", text_pos=[0, 1, 2])
    st = score_models(store2, [f"{hub.repo_id}@step10"], device="cpu")[f"{hub.repo_id}@step10"]
    assert st.status == "scored" and st.n_resumed == 3
    np.testing.assert_allclose(store2.vectors(names[0])["loglik"], store.vectors(names[0])["loglik"], atol=1e-5)


def test_an_unknown_revision_fails_that_checkpoint_in_one_line_and_the_others_are_stored(store, tiny_run_hub):
    hub = tiny_run_hub
    code, out, err = run_main("score", hub.repo_id, "--revisions", "step10,step99", "--store", store.path,
                              "--device", "cpu", "--no-progress")
    assert code == 1 and "Traceback" not in err
    assert "revision 'step99' is not in the local Hugging Face cache" in err and "cached revisions: main, step10" in err
    assert store.model_names() == [f"{hub.repo_id}@step10"]
