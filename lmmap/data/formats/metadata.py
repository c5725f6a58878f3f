"""Model metadata: the user's tables (``MODELS.csv``, ``SCORES.csv``), model lists
(``models_1018.yaml``), and the metadata rows that lmmap's exports carry inside the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from lmmap.data.formats.common import _check_names, _one_line
from lmmap.exceptions import FormatError


def _metadata_records(metadata: pd.DataFrame, names: list[str]) -> list[dict]:
    """Metadata rows of the exported models as JSON-ready dicts with a ``model`` key."""
    df = metadata.copy()
    if "model" in df.columns:
        df = df.set_index("model")
    df = df[df.index.isin(names)]
    # to_json handles numpy types, NaN -> null and dates -> ISO strings.
    return json.loads(df.rename_axis("model").reset_index().to_json(orient="records", date_format="iso"))


def _metadata_from_records(path, records) -> pd.DataFrame | None:
    if not isinstance(records, list) or not all(isinstance(r, dict) and "model" in r for r in records):
        raise FormatError(f"{path}: damaged model metadata (expected a list of rows with 'model'); re-export the file")
    if not records:
        return None
    return pd.DataFrame(records).set_index("model")


def _metadata_from_json(path, text):
    if text is None:
        return None
    try:
        records = json.loads(text)
    except (ValueError, RecursionError):
        raise FormatError(f"{path}: damaged 'metadata_json'; re-export the file") from None
    return _metadata_from_records(path, records)


def read_model_list(path: str | os.PathLike) -> list[str]:
    """The model names in a YAML list such as the authors' ``models_1018.yaml``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path} does not exist or is not a file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise FormatError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except UnicodeDecodeError:
        raise FormatError(f"{path}: not valid UTF-8; save it as UTF-8") from None
    if data is None:
        raise FormatError(f"{path} is empty: expected a YAML list of model names")
    if not isinstance(data, list):
        raise FormatError(f"{path}: expected a YAML list of model names (- org/name), got a {type(data).__name__}")
    for i, item in enumerate(data):
        if not isinstance(item, str):
            raise FormatError(f"{path}: item {i + 1} is {item!r}, not a model name; quote it if it is one")
    return _check_names(path, data)


def read_metadata_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A model metadata table (``MODELS.csv``, ``SCORES.csv``): a ``model`` column and any others, indexed by model."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise FormatError(f"{path} is empty: expected a header with a 'model' column")
    try:
        df = pd.read_csv(path, dtype={"model": str}, keep_default_na=True)
        if "model" in df.columns:
            # A model may be called NA, None, null or nan: pandas would read those names as missing values.
            # The names are read again as written; elsewhere those words still mean "no value".
            # An empty cell stays missing (a row without a name is refused by the store).
            names = pd.read_csv(path, usecols=["model"], dtype=str, keep_default_na=False, na_filter=False)["model"]
            df["model"] = names.where(names != "", None).to_numpy()
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise FormatError(f"{path}: cannot read as CSV ({_one_line(exc)})") from None
    if "model" not in df.columns:
        raise FormatError(
            f"{path}: no 'model' column (columns: {', '.join(map(str, df.columns[:10]))}); "
            "add one holding each model's name"
        )
    missing = df["model"].isna() | (df["model"].str.strip() == "")
    if missing.any():
        raise FormatError(f"{path}: line {int(np.flatnonzero(missing.to_numpy())[0]) + 2} has no model name")
    dup = df["model"][df["model"].duplicated()]
    if len(dup):
        name = dup.iloc[0]
        lines = (np.flatnonzero((df["model"] == name).to_numpy()) + 2).tolist()
        raise FormatError(f"{path}: model {name!r} has more than one row (lines {lines[0]} and {lines[1]}); keep one")
    return df.set_index("model")
