"""Benchmark scores as people keep them (issue 26): lm-evaluation-harness results and the Open LLM Leaderboard.

The files are written here in the tools' own formats: an lm-eval 0.4 ``results_<timestamp>.json`` (results per
task with ``metric,filter`` keys and their ``_stderr``, ``config.model_args``, ``model_name``), lm_eval's
``--output_path`` layout (``<model_sanitized>/results_<ts>.json``), and the leaderboard's ``contents`` CSV
(an HTML-linked ``Model`` column, ``fullname``, ``Average ⬆️`` and the v2 benchmarks).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmmap.data.formats import read_score_file
from lmmap.data.formats import scores as S
from lmmap.exceptions import FormatError, LmmapWarning


def lm_eval_results(model: str, results: dict, *, model_args: str | None = None, name: bool = True,
                    date: float = 1714560000.0) -> dict:
    """What lm-eval 0.4 writes to results_<timestamp>.json (the parts that matter, in its own shape)."""
    out = {
        "results": {
            task: {"alias": task, **{k: v for metric, value in metrics.items()
                                      for k, v in ((metric, value), (metric.replace(",", "_stderr,", 1), 0.01))}}
            for task, metrics in results.items()
        },
        "group_subtasks": {task: [] for task in results},
        "configs": {task: {"task": task, "dataset_path": f"allenai/{task}", "num_fewshot": 0} for task in results},
        "versions": {task: 1.0 for task in results},
        "n-shot": {task: 0 for task in results},
        "higher_is_better": {task: {"acc": True} for task in results},
        "n-samples": {task: {"original": 100, "effective": 100} for task in results},
        "config": {"model": "hf", "model_args": model_args or f"pretrained={model},dtype=float32", "batch_size": "auto",
                   "batch_sizes": [64], "device": "cuda:0", "use_cache": None, "limit": None, "bootstrap_iters": 100000,
                   "gen_kwargs": None, "random_seed": 0, "numpy_seed": 1234, "torch_seed": 1234, "fewshot_seed": 1234},
        "git_hash": "8138fd52", "date": date, "pretty_env_info": "PyTorch version: 2.3.0", "transformers_version": "4.40.1",
        "upper_git_hash": None, "task_hashes": {}, "model_source": "hf",
        "start_time": 1000.0, "end_time": 1100.0, "total_evaluation_time_seconds": "100.0",
    }
    if name:
        out["model_name"] = model
        out["model_name_sanitized"] = model.replace("/", "__")
    return out


def write_run(root: Path, model: str, stamp: str, results: dict, **kw) -> Path:
    folder = root / model.replace("/", "__")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"results_{stamp}.json"
    path.write_text(json.dumps(lm_eval_results(model, results, **kw), indent=2))
    return path


def test_one_lm_eval_results_file(tmp_path):
    path = write_run(tmp_path, "EleutherAI/pythia-70m", "2024-05-01T12-00-00.123456", {
        "arc_easy": {"acc,none": 0.43, "acc_norm,none": 0.38},
        "gsm8k": {"exact_match,strict-match": 0.02, "exact_match,flexible-extract": 0.03},
    })
    table = read_score_file(path)
    assert list(table.index) == ["EleutherAI/pythia-70m"]
    assert list(table.columns) == ["arc_easy:acc", "arc_easy:acc_norm", "gsm8k:exact_match:strict-match",
                                   "gsm8k:exact_match:flexible-extract"]
    assert table.loc["EleutherAI/pythia-70m", "arc_easy:acc"] == 0.43  # as lm-eval writes it: a fraction


def test_the_model_name_comes_from_model_args_when_the_file_has_no_model_name(tmp_path):
    path = write_run(tmp_path, "x", "2024-05-01T12-00-00", {"piqa": {"acc,none": 0.6}}, name=False,
                     model_args="pretrained=/models/my-ft,dtype=bfloat16,trust_remote_code=True")
    assert list(read_score_file(path).index) == ["/models/my-ft"]
    data = lm_eval_results("x", {"piqa": {"acc,none": 0.6}}, name=False)
    data["config"]["model_args"] = {"pretrained": "org/dict-args"}
    path.write_text(json.dumps(data))
    assert list(read_score_file(path).index) == ["org/dict-args"]
    data["config"]["model_args"] = "dtype=float32"
    path.write_text(json.dumps(data))
    with pytest.raises(FormatError, match=r"results_.*\.json: names no model .*\"model_name\""):
        read_score_file(path)


def test_a_directory_of_runs_one_row_per_model_the_newest_winning(tmp_path):
    write_run(tmp_path, "org/a", "2024-05-01T10-00-00.000001", {"arc_easy": {"acc,none": 0.40}, "piqa": {"acc,none": 0.61}})
    write_run(tmp_path, "org/a", "2024-06-01T10-00-00.000001", {"arc_easy": {"acc,none": 0.45}})
    write_run(tmp_path, "org/b", "2024-05-02T10-00-00", {"arc_easy": {"acc,none": 0.50}, "piqa": {"acc,none": 0.70}})
    (tmp_path / "org__b" / "samples_arc_easy_2024-05-02T10-00-00.jsonl").write_text('{"doc_id": 0}\n')
    with pytest.warns(LmmapWarning, match=r"model 'org/a' has 2 result files .* the newest, "
                                          r"org__a/results_2024-06-01T10-00-00.000001.json, wins"):
        table = read_score_file(tmp_path)
    assert sorted(table.index) == ["org/a", "org/b"]
    assert table.loc["org/a", "arc_easy:acc"] == 0.45  # the newer run
    assert table.loc["org/a", "piqa:acc"] == 0.61  # only the older run has it: kept
    with pytest.raises(FormatError, match=r"no lm-evaluation-harness results \(results_\*\.json\)"):
        (tmp_path / "empty").mkdir()
        read_score_file(tmp_path / "empty")


def test_a_damaged_results_file_is_named_with_its_line(tmp_path):
    path = tmp_path / "results_2024-05-01T10-00-00.json"
    path.write_text('{\n  "results": {\n    "arc_easy": {"acc,none": 0.5,}\n  }\n}\n')
    with pytest.raises(FormatError, match=r"results_2024-05-01T10-00-00.json:3: not valid JSON"):
        read_score_file(path)
    path.write_text(json.dumps({"model_name": "x", "scores": {}}))
    with pytest.raises(FormatError, match="not an lm-evaluation-harness results file"):
        read_score_file(path)


LEADERBOARD_HEADER = ["eval_name", "Precision", "Type", "T", "Weight type", "Architecture", "Model", "fullname",
                      "Model sha", "Average ⬆️", "Hub License", "Hub ❤️", "#Params (B)", "Available on the hub",
                      "IFEval Raw", "IFEval", "BBH Raw", "BBH", "MATH Lvl 5 Raw", "MATH Lvl 5", "GPQA Raw", "GPQA",
                      "MUSR Raw", "MUSR", "MMLU-PRO Raw", "MMLU-PRO", "Base Model"]


def leaderboard_row(model: str, precision: str, scores: list[float]) -> list:
    link = (f'<a target="_blank" href="https://huggingface.co/{model}" style="color: var(--link-text-color); '
            f'text-decoration: underline;text-decoration-style: dotted;">{model}</a>  '
            f'<a target="_blank" href="https://huggingface.co/datasets/open-llm-leaderboard/'
            f'{model.replace("/", "__")}-details" style="color: var(--link-text-color); text-decoration: underline;'
            f'text-decoration-style: dotted;">📑</a>')
    ifeval, bbh, math, gpqa, musr, mmlu = scores
    return [f"{model.replace('/', '_')}_{precision}", precision, "🟢 pretrained", "🟢", "Original", "LlamaForCausalLM",
            link, model, "0" * 40, float(np.mean(scores)), "apache-2.0", 12, 7.0, True,
            ifeval / 100, ifeval, bbh / 100, bbh, math / 100, math, gpqa / 100, gpqa, musr / 100, musr, mmlu / 100, mmlu,
            model]


def test_the_open_llm_leaderboard_csv(tmp_path):
    rows = [leaderboard_row("org/a", "bfloat16", [40.1, 30.2, 5.0, 7.5, 9.1, 25.3]),
            leaderboard_row("org/b", "bfloat16", [20.0, 10.0, 1.0, 2.0, 3.0, 12.0]),
            leaderboard_row("org/a", "float16", [41.0, 30.0, 5.2, 7.4, 9.0, 25.0])]
    path = tmp_path / "open-llm-leaderboard.csv"
    pd.DataFrame(rows, columns=LEADERBOARD_HEADER).to_csv(path, index=False)
    with pytest.warns(LmmapWarning, match=r"1 model\(s\) have more than one row \(e.g. 'org/a'\); the first row"):
        table = read_score_file(path)
    assert list(table.index) == ["org/a", "org/b"]
    assert list(table.columns) == ["Average", "IFEval", "BBH", "MATH Lvl 5", "GPQA", "MUSR", "MMLU-PRO"]
    assert table.loc["org/a", "IFEval"] == 40.1  # the first row (bfloat16)
    # Without fullname: the name is the Model column's link text.
    pd.DataFrame(rows[:2], columns=LEADERBOARD_HEADER).drop(columns=["fullname"]).to_csv(path, index=False)
    assert list(read_score_file(path).index) == ["org/a", "org/b"]


def test_links_are_stripped_from_model_names():
    assert S.strip_links('<a href="https://huggingface.co/org/m">org/m</a>  <a href="x">📑</a>') == "org/m"
    assert S.strip_links("[org/m](https://huggingface.co/org/m)") == "org/m"
    assert S.strip_links("  org/m ") == "org/m"


def test_a_plain_scores_csv_is_read_as_before(tmp_path):
    path = tmp_path / "scores.csv"
    pd.DataFrame({"model": ["a", "b"], "bench": [1.0, 2.0]}).to_csv(path, index=False)
    table = read_score_file(path)
    assert list(table.index) == ["a", "b"] and list(table.columns) == ["bench"]


def test_predict_reads_lm_eval_runs_and_matches_names_by_the_recorded_source(tmp_path):
    from synthetic import ecosystem, make_store

    from lmmap.analyses import predict as P
    from lmmap.data.store import Store
    from lmmap.data.texts import TextSet

    names, L, Q, fam, table, _ = ecosystem(K=30, N=80, n_families=6, n_bench=1, seed=7)
    texts = TextSet.from_texts([f"text number {i}" for i in range(L.shape[1])])
    store = Store.create(tmp_path / "store", texts)
    # The first model was scored from a local directory: lmmap names it by the directory, lm-eval by its path.
    source = f"/models/{names[0]}-dir"
    store.write_models([{"name": n, "loglik": L[i], "record": {"scorer": "lmmap", "source": source} if i == 0 else None}
                        for i, n in enumerate(names)])
    store.set_metadata(pd.DataFrame({"model": names, "lineage": fam}))
    runs = tmp_path / "lm-eval"
    for i, n in enumerate(names[:25]):
        model = source if i == 0 else n
        write_run(runs, model, "2024-05-01T10-00-00", {"arc_easy": {"acc,none": float(table.loc[n, "bench0"]) / 100}})
    write_run(runs, names[25].replace("model", "modle"), "2024-05-01T10-00-00", {"arc_easy": {"acc,none": 0.5}})
    with pytest.warns(LmmapWarning) as caught:
        result = P.predict_store(store, runs, group_by="lineage", n_repeats=1)
    notes = [str(w.message) for w in caught]
    assert any("1 score row(s) named by their source matched stored models" in n for n in notes), notes
    note = next(n for n in notes if "not in the store" in n)
    assert note.startswith("matched 25 of 30 models of the map; ")
    assert re.search(r"did you mean '" + re.escape(names[25]) + "'", note)
    assert "arc_easy:acc" in set(result.summary["target"])
    assert names[0] in set(result.predictions["model"])
