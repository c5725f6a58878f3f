"""Benchmark scores as people keep them: ``SCORES.csv``, lm-evaluation-harness results, the Open LLM Leaderboard.

:func:`read_score_file` reads any of them into one table indexed by model, one numeric column per score:

- ``SCORES.csv``: a ``model`` column and one column per benchmark (:func:`~.metadata.read_metadata_csv`);
- lm-evaluation-harness (0.4) results, ``results_<timestamp>.json``, one run of one model: the model from
  ``model_name`` (or ``config.model_name``, or ``pretrained=`` in ``config.model_args``), one column per
  task metric (``arc_easy`` / ``acc,none`` → ``arc_easy:acc``; another filter than ``none`` stays in the
  name: ``gsm8k:exact_match:strict-match``; standard errors and aliases left out), values as lm-eval
  writes them (accuracies as fractions);
- a directory of them, searched recursively as lm-eval writes ``output_path/<model>/results_<ts>.json``:
  one row per model; when a model has several result files, the newest wins where they overlap (a note
  says so);
- the Open LLM Leaderboard's CSV: the model from ``fullname`` (else ``Model``, links stripped, else
  ``eval_name``) and its score columns (``IFEval``, ``BBH``, ``MATH Lvl 5``, ``GPQA``, ``MUSR``,
  ``MMLU-PRO``, ``Average ⬆️`` as ``Average``; the first leaderboard's ``ARC`` … ``GSM8K``).
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from datetime import datetime
from pathlib import Path

import pandas as pd

from lmmap.data.formats.common import _one_line
from lmmap.data.formats.metadata import read_metadata_csv
from lmmap.exceptions import FormatError, LmmapWarning

# Far above any results file lm-eval writes (its per-task configs included).
_MAX_RESULTS = 64 << 20
LEADERBOARD_NAME_COLUMNS = ("fullname", "Model", "eval_name")
LEADERBOARD_SCORES = ("Average ⬆️", "IFEval", "BBH", "MATH Lvl 5", "GPQA", "MUSR", "MMLU-PRO",
                      "ARC", "HellaSwag", "MMLU", "TruthfulQA", "Winogrande", "GSM8K")
_RENAMED = {"Average ⬆️": "Average"}
_TIMESTAMP = re.compile(r"results_(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d+)?)\.json$")


def read_score_file(path: str | os.PathLike) -> pd.DataFrame:
    """Benchmark scores indexed by model (see the module's text for the formats), from ``path``: a CSV, an
    lm-evaluation-harness results JSON, or a directory of them."""
    path = Path(path)
    if path.is_dir():
        return read_lm_eval_dir(path)
    if not path.is_file():
        raise FormatError(f"{path} does not exist or is not a file")
    if path.suffix.lower() == ".json":
        return read_lm_eval(path)
    header = _csv_header(path)
    if "model" not in header and any(c in header for c in LEADERBOARD_NAME_COLUMNS):
        return read_leaderboard_csv(path)
    return read_metadata_csv(path)


def _csv_header(path: Path) -> list[str]:
    import csv

    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return next(csv.reader(f), [])
    except (UnicodeDecodeError, csv.Error):
        return []


# -- lm-evaluation-harness ----------------------------------------------------------------------------------


def _load_json(path: Path) -> dict:
    size = path.stat().st_size
    if size > _MAX_RESULTS:
        raise FormatError(f"{path} is {size:,} bytes, more than an lm-evaluation-harness results file; is it one?")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); is the file complete?") from None
    except (UnicodeDecodeError, RecursionError):
        raise FormatError(f"{path}: not a JSON text in UTF-8") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise FormatError(f"{path}: not an lm-evaluation-harness results file (no 'results' object); give the "
                          "results_<timestamp>.json that lm_eval --output_path writes, or a CSV with a 'model' column")
    return data


def _model_args(args) -> dict:
    if isinstance(args, dict):
        return {str(k): v for k, v in args.items()}
    if isinstance(args, str):
        out = {}
        for part in args.split(","):
            key, eq, value = part.partition("=")
            if eq:
                out[key.strip()] = value.strip()
        return out
    return {}


def lm_eval_model_name(data: dict) -> str | None:
    """The model of an lm-eval results file: ``model_name``, ``config.model_name``, or ``pretrained=`` (or
    ``model=``, ``path=``) in ``config.model_args``."""
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    for value in (data.get("model_name"), config.get("model_name")):
        if isinstance(value, str) and value.strip():
            return value.strip()
    args = _model_args(config.get("model_args"))
    for key in ("pretrained", "model", "path", "engine"):
        value = args.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def lm_eval_scores(data: dict) -> dict[str, float]:
    """``{task:metric: value}`` of an lm-eval results object (standard errors and aliases left out)."""
    out: dict[str, float] = {}
    tables = [data.get("results"), data.get("groups")]
    for table in tables:
        if not isinstance(table, dict):
            continue
        for task, metrics in table.items():
            if not isinstance(metrics, dict):
                continue
            for key, value in metrics.items():
                metric, _, filt = str(key).partition(",")
                if metric == "alias" or metric.endswith("_stderr") or isinstance(value, bool):
                    continue
                if not isinstance(value, (int, float)) or not math.isfinite(value):
                    continue
                column = f"{task}:{metric}" if filt in ("", "none") else f"{task}:{metric}:{filt}"
                out.setdefault(column, float(value))
    return out


def _when(path: Path, data: dict) -> float:
    """When a results file was written: its name's timestamp (lm-eval's ``results_2024-05-01T12-00-00.123.json``),
    else its ``date``, else the file's time."""
    m = _TIMESTAMP.search(path.name)
    if m:
        text = m.group(1)
        for fmt in ("%Y-%m-%dT%H-%M-%S.%f", "%Y-%m-%dT%H-%M-%S"):
            try:
                return datetime.strptime(text, fmt).timestamp()
            except ValueError:
                pass
    date = data.get("date")
    if isinstance(date, (int, float)) and not isinstance(date, bool) and math.isfinite(date):
        return float(date)
    return path.stat().st_mtime


def _one_run(path: Path) -> tuple[str, dict[str, float], dict]:
    data = _load_json(path)
    name = lm_eval_model_name(data)
    if name is None:
        raise FormatError(f"{path}: names no model (no 'model_name', no pretrained= in config.model_args); "
                          "add \"model_name\": \"ORG/NAME\" at the top of the file")
    scores = lm_eval_scores(data)
    if not scores:
        raise FormatError(f"{path}: model {name!r} has no numeric task metric in 'results'")
    return name, scores, data


def read_lm_eval(path: str | os.PathLike) -> pd.DataFrame:
    """One lm-evaluation-harness results file: one row (its model), one column per task metric."""
    path = Path(path)
    name, scores, _ = _one_run(path)
    return pd.DataFrame([scores], index=pd.Index([name], name="model"))


def read_lm_eval_dir(path: str | os.PathLike) -> pd.DataFrame:
    """Every ``results_*.json`` under ``path`` (recursively): one row per model. A model with several files takes
    each value from the newest file that has it (a note names the model and its files)."""
    path = Path(path)
    files = sorted(p for p in path.rglob("results_*.json") if p.is_file())
    if not files:
        raise FormatError(f"{path}: no lm-evaluation-harness results (results_*.json) in it or below; give the "
                          "--output_path folder of lm_eval, one results file, or a CSV with a 'model' column")
    runs: dict[str, list[tuple[float, Path, dict]]] = {}
    for f in files:
        name, scores, data = _one_run(f)
        runs.setdefault(name, []).append((_when(f, data), f, scores))
    rows = {}
    for name, found in runs.items():
        found.sort(key=lambda r: (r[0], str(r[1])), reverse=True)
        merged: dict[str, float] = {}
        for _, _, scores in found:
            for k, v in scores.items():
                merged.setdefault(k, v)
        rows[name] = merged
        if len(found) > 1:
            older = ", ".join(str(f.relative_to(path)) for _, f, _ in found[1:4]) + (" …" if len(found) > 4 else "")
            warnings.warn(
                f"model {name!r} has {len(found)} result files in {path}; where they overlap the newest, "
                f"{found[0][1].relative_to(path)}, wins over {older}", LmmapWarning, stacklevel=2)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    return table


# -- the Open LLM Leaderboard -------------------------------------------------------------------------------

_LINK_MD = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_ANCHOR = re.compile(r"<a\b[^>]*>(.*?)</a>", re.S | re.I)
_TAG = re.compile(r"<[^>]+>")


def strip_links(text: str) -> str:
    """A model name out of a leaderboard cell: the text of its first HTML or markdown link, tags removed."""
    text = str(text)
    m = _ANCHOR.search(text)
    if m:
        text = m.group(1)
    text = _LINK_MD.sub(lambda m: m.group(1), text)
    return _TAG.sub("", text).strip()


def read_leaderboard_csv(path: str | os.PathLike) -> pd.DataFrame:
    """The Open LLM Leaderboard's CSV (its ``contents`` table): model names from ``fullname`` (else ``Model``
    without its links, else ``eval_name``), its score columns. A model listed more than once (in two
    precisions) keeps its first row, with a note."""
    path = Path(path)
    try:
        df = pd.read_csv(path, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise FormatError(f"{path}: cannot read as CSV ({_one_line(exc)})") from None
    column = next(c for c in LEADERBOARD_NAME_COLUMNS if c in df.columns)
    names = df[column].map(lambda v: strip_links(v) if isinstance(v, str) else None)
    missing = names.isna() | (names == "")
    if missing.any():
        raise FormatError(f"{path}: line {int(missing.to_numpy().nonzero()[0][0]) + 2} has no model name in {column!r}")
    cols = [c for c in LEADERBOARD_SCORES if c in df.columns]
    if not cols:
        raise FormatError(f"{path}: no leaderboard score columns ({', '.join(LEADERBOARD_SCORES[1:7])} …); for other "
                          "scores write a CSV with a 'model' column and one column per benchmark")
    table = df[cols].rename(columns=_RENAMED)
    table.index = pd.Index(names.to_list(), name="model")
    dup = table.index.duplicated()
    if dup.any():
        first = table.index[dup][0]
        warnings.warn(f"{path}: {int(dup.sum())} model(s) have more than one row (e.g. {first!r}); the first row "
                      "of each is used", LmmapWarning, stacklevel=2)
        table = table[~dup]
    return table


__all__ = ["LEADERBOARD_NAME_COLUMNS", "LEADERBOARD_SCORES", "lm_eval_model_name", "lm_eval_scores",
           "read_leaderboard_csv", "read_lm_eval", "read_lm_eval_dir", "read_score_file", "strip_links"]
