"""Model cards: declared lineage, license, library, tags and parameter counts of local models.

Where a model's metadata is already declared: its card (``README.md``, YAML front matter as the Hugging
Face hub writes it: ``base_model`` as a string or a list, ``base_model_relation``, ``license``,
``library_name``, ``tags``), its ``config.json`` and its weights (``*.safetensors``: the parameter count is the
sum of the tensors' element counts, from each file's JSON header only).

Models are found in a local directory (a model directory, or a directory of them, ``org/name`` nesting
included) or in the Hugging Face cache (``models--org--name/snapshots/<commit>/``; :func:`hf_cache_dir`).
:func:`find_models` lists them, :func:`read_cards` reads them into a table indexed by model,
:func:`card_metadata` matches them to a store's models (by name, or by the source each model's record
names) and returns the metadata rows to merge (:meth:`lmmap.data.store.Store.merge_metadata`).
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lmmap.exceptions import FormatError, LmmapWarning

# The columns a card gives, in this order.
CARD_COLUMNS = ("base_model", "base_models", "base_model_relation", "license", "library_name", "tags", "n_params",
                "n_params_source")
# Larger than any card, config or safetensors header the hub holds (the format caps a header at 100 MB).
_MAX_CARD = 4 << 20
_MAX_HEADER = 100 << 20
# The hub's own tags that carry lineage: base_model:ORG/NAME and base_model:RELATION:ORG/NAME.
_RELATIONS = ("adapter", "finetune", "merge", "quantized")


@dataclass(frozen=True)
class CardModel:
    """A model found on disk: ``model_id`` (its hub id, or its path under the directory searched), ``path``
    (the directory holding its card, config and weights), ``hub_id`` (cache only) and ``revision`` (the
    cache snapshot's commit)."""

    model_id: str
    path: Path
    hub_id: str | None = None
    revision: str | None = None


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache: ``$HF_HUB_CACHE``, ``$HUGGINGFACE_HUB_CACHE``, ``$HF_HOME/hub``,
    ``$XDG_CACHE_HOME/huggingface/hub`` or ``~/.cache/huggingface/hub`` (huggingface_hub's order)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = Path(os.environ["XDG_CACHE_HOME"]).expanduser() if os.environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def _is_model_dir(path: Path) -> bool:
    if not path.is_dir():
        return False
    return any((path / f).is_file() for f in ("config.json", "adapter_config.json")) or any(path.glob("*.safetensors"))


def _is_cache(path: Path) -> bool:
    return any(p.is_dir() and p.name.startswith("models--") for p in path.iterdir())


def _snapshot(repo: Path) -> tuple[Path, str] | None:
    """The snapshot of a cached repository that ``refs/main`` names, else the newest one."""
    snaps = repo / "snapshots"
    if not snaps.is_dir():
        return None
    ref = repo / "refs" / "main"
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8", errors="replace").strip()
        if commit and (snaps / commit).is_dir():
            return snaps / commit, commit
    found = [p for p in snaps.iterdir() if p.is_dir()]
    if not found:
        return None
    newest = max(found, key=lambda p: p.stat().st_mtime)
    return newest, newest.name


def find_models(root: str | os.PathLike | None = None) -> list[CardModel]:
    """The models under ``root``: a Hugging Face cache (folders ``models--org--name``), a model directory, or a
    directory of model directories (``name/`` or ``org/name/``). Default: :func:`hf_cache_dir`."""
    if root is None:
        root = hf_cache_dir()
        if not root.is_dir():
            raise FormatError(f"no Hugging Face cache at {root} (from $HF_HUB_CACHE, $HF_HOME or ~/.cache/huggingface); "
                              "set HF_HUB_CACHE, or give the directory that holds your models")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FormatError(f"{root} is not a directory: give a directory of models (their README.md, config.json and "
                          "weights) or a Hugging Face cache")
    if _is_cache(root):
        out = []
        for repo in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("models--")):
            snap = _snapshot(repo)
            if snap is None:
                continue
            # The hub forbids "--" in names, so the folder name splits back into org/name unambiguously.
            hub_id = "/".join(repo.name.split("--")[1:])
            out.append(CardModel(hub_id, snap[0], hub_id=hub_id, revision=snap[1]))
        return out
    if _is_model_dir(root):
        return [CardModel(root.resolve().name, root)]
    out = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if _is_model_dir(child):
            out.append(CardModel(child.name, child))
            continue
        for grand in sorted(p for p in child.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if _is_model_dir(grand):
                out.append(CardModel(f"{child.name}/{grand.name}", grand))
    return out


# -- one card ------------------------------------------------------------------------------------------------


def read_front_matter(path: str | os.PathLike) -> dict:
    """The YAML front matter of a model card (``---`` lines around it at the top of ``README.md``); ``{}`` when
    the card has none."""
    import yaml

    path = Path(path)
    text = _read_text(path)
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    end = next((i for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), None)
    if end is None:
        raise FormatError(f"{path}: the card's YAML front matter has no closing '---' line; add one after it")
    try:
        data = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 2}" if mark is not None else ""  # + the opening '---' line
        raise FormatError(f"{path}{where}: the card's front matter is not valid YAML "
                          f"({getattr(exc, 'problem', None) or type(exc).__name__}); fix the card") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FormatError(f"{path}: the card's front matter is a YAML {type(data).__name__}, not a mapping of fields")
    return data


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > _MAX_CARD:
            raise FormatError(f"{path} is {size:,} bytes, more than any card or config; is it the right file?")
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{path}: not valid UTF-8; save it as UTF-8") from None


def _strings(value) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [str(v).strip() for v in items if v is not None and not isinstance(v, (dict, list)) and str(v).strip()]


def card_fields(front: dict) -> dict:
    """``base_model`` (the first base), ``base_models`` (all, when there are several), ``base_model_relation``,
    ``license``, ``library_name`` and ``tags`` (comma-separated) of a card's front matter; lineage from the
    hub's ``base_model:…`` tags when the fields do not declare it."""
    tags = _strings(front.get("tags"))
    bases = _strings(front.get("base_model"))
    relation = _strings(front.get("base_model_relation"))
    if not bases:
        for tag in tags:
            parts = tag.split(":")
            if parts[0] == "base_model" and len(parts) == 2:
                bases.append(parts[1])
            elif parts[0] == "base_model" and len(parts) == 3 and parts[1] in _RELATIONS:
                bases.append(parts[2])
                relation = relation or [parts[1]]
    lic = _strings(front.get("license"))
    if lic == ["other"] and _strings(front.get("license_name")):
        lic = _strings(front.get("license_name"))
    return {
        "base_model": bases[0] if bases else None,
        "base_models": ", ".join(bases) if len(bases) > 1 else None,
        "base_model_relation": relation[0] if relation else None,
        "license": ", ".join(lic) or None,
        "library_name": (_strings(front.get("library_name")) or [None])[0],
        "tags": ", ".join(t for t in tags if not t.startswith("base_model:")) or None,
    }


def safetensors_parameters(path: str | os.PathLike) -> int:
    """The number of parameters in a ``.safetensors`` file: the sum of its tensors' element counts, read from
    its header (8 bytes of little-endian length, then that many bytes of JSON) without the weights."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise FormatError(f"{path}: too short for a safetensors file; is the download complete?")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or n > path.stat().st_size - 8:
            raise FormatError(f"{path}: not a safetensors file (a header of {n:,} bytes); is the download complete?")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise FormatError(f"{path}: the safetensors header is not JSON; is the file damaged?") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: the safetensors header is not a table of tensors")
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        shape = info.get("shape") if isinstance(info, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise FormatError(f"{path}: tensor {name!r} has no valid shape in the header; is the file damaged?")
        total += math.prod(shape)
    return total


def _weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(_read_text(index)).get("weight_map", {})
            files = sorted({model_dir / str(f) for f in weight_map.values()})
            if files and all(f.is_file() and f.parent == model_dir for f in files):
                return files
        except (ValueError, AttributeError, RecursionError):
            pass
    return sorted(model_dir.glob("*.safetensors"))


def config_parameters(config: dict) -> int | None:
    """An estimate of a decoder's parameters from its ``config.json``: embeddings, attention, MLP and norms of a
    GPT-2/GPT-NeoX-style model (biases, LayerNorm) or a Llama-style one (gated MLP, no biases, RMSNorm), None
    when the sizes are not there. Exact for gpt2 (124,439,808), pythia-70m and Llama-2-7b; an estimate for
    others (mixtures of experts, adapters, other layouts)."""
    c = config.get("text_config") if isinstance(config.get("text_config"), dict) else config

    def first(*keys):
        for k in keys:
            v = c.get(k)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
        return None

    d = first("hidden_size", "n_embd", "d_model")
    n_layers = first("num_hidden_layers", "n_layer", "num_layers")
    vocab = first("vocab_size")
    heads = first("num_attention_heads", "n_head")
    if not (d and n_layers and vocab and heads):
        return None
    inner = first("intermediate_size", "n_inner", "ffn_dim") or 4 * d
    head_dim = first("head_dim") or d // heads
    kv = (first("num_key_value_heads") or heads) * head_dim
    q = heads * head_dim
    model_type = str(c.get("model_type", ""))
    gated = str(c.get("hidden_act", c.get("activation_function", ""))) in ("silu", "swish") or model_type in (
        "llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "olmo", "olmo2")
    tied = bool(c.get("tie_word_embeddings", True))
    embed = vocab * d * (1 if tied else 2)
    if gated:
        layer = d * q + 2 * d * kv + q * d + 3 * d * inner + 2 * d
        return embed + n_layers * layer + d
    positions = first("n_positions", "max_position_embeddings") if model_type in ("gpt2", "gpt_neo", "opt", "gpt_bigcode") else None
    layer = (d * q + q) + 2 * (d * kv + kv) + (q * d + d) + (d * inner + inner) + (inner * d + d) + 4 * d
    return embed + (positions or 0) * d + n_layers * layer + 2 * d


def count_parameters(model_dir: str | os.PathLike) -> tuple[int | None, str | None]:
    """``(parameters, where from)``: the safetensors headers (``"safetensors"``), else an estimate from
    ``config.json`` (``"config.json (estimate)"``), else ``(None, None)``."""
    model_dir = Path(model_dir)
    files = _weight_files(model_dir)
    if files:
        return sum(safetensors_parameters(f) for f in files), "safetensors"
    config = model_dir / "config.json"
    if config.is_file():
        n = config_parameters(_read_json(config))
        if n is not None:
            return n, "config.json (estimate)"
    return None, None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); fix or re-download it") from None
    except RecursionError:
        raise FormatError(f"{path}: nested too deeply to be a model config") from None
    if not isinstance(data, dict):
        raise FormatError(f"{path}: expected a JSON object of settings, got a {type(data).__name__}")
    return data


def read_card(model: CardModel) -> dict:
    """One model's fields (:data:`CARD_COLUMNS`): its card's front matter and its parameter count."""
    card = model.path / "README.md"
    fields = card_fields(read_front_matter(card)) if card.is_file() else card_fields({})
    n, where = count_parameters(model.path)
    fields.update(n_params=n, n_params_source=where)
    return fields


def read_cards(models: list[CardModel]) -> pd.DataFrame:
    """The fields of ``models`` (:data:`CARD_COLUMNS`), indexed by ``model_id``. A model whose card, config or
    weights cannot be read is left out with a note naming the file and why."""
    rows, ids = [], []
    for m in models:
        try:
            rows.append(read_card(m))
        except (FormatError, OSError) as exc:
            warnings.warn(f"{m.model_id}: left out ({exc})", LmmapWarning, stacklevel=2)
            continue
        ids.append(m.model_id)
    return pd.DataFrame(rows, index=pd.Index(ids, name="model"), columns=list(CARD_COLUMNS))


# -- cards to a store's models -------------------------------------------------------------------------------


def _resolved(path) -> Path | None:
    try:
        return Path(str(path)).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return None


def match_models(models: list[CardModel], records: dict[str, dict]) -> dict[str, CardModel]:
    """``{store model: the card model it is}``: the model whose record names it as its source (a hub id or a
    directory) first, then the one named like it (its hub id or path, then its directory's or hub name's last
    part, when only one model found is so named)."""
    out: dict[str, CardModel] = {}
    tails: dict[str, list[CardModel]] = {}
    by_hub = {m.hub_id: m for m in reversed(models) if m.hub_id is not None}
    by_path = {_resolved(m.path): m for m in reversed(models)}
    by_name = {key: m for m in reversed(models) for key in (m.model_id, m.hub_id) if key is not None}
    for m in models:
        tails.setdefault((m.hub_id or m.model_id).rsplit("/", 1)[-1], []).append(m)
    for name, rec in records.items():
        source = rec.get("source")
        found = None
        if source:
            found = by_hub.get(str(source))
            if found is None and ("/" in str(source) or os.sep in str(source)):
                where = _resolved(source)
                found = by_path.get(where) if where is not None else None
        if found is None:
            found = by_name.get(name)
        if found is None and (not source or rec.get("scorer") == "import"):
            only = tails.get(name.rsplit("/", 1)[-1], [])
            found = only[0] if len(only) == 1 else None
        if found is not None:
            out[name] = found
    return out


def card_metadata(records: dict[str, dict], root: str | os.PathLike | None = None) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Metadata rows, indexed by the store's model names, from the cards of the models found under ``root``
    (default: the Hugging Face cache) that match the store's models (``records``: ``Store.records()``).

    A ``base_model`` that is a model of the store (by name or by its record's source) is written as its
    store name, so that the map draws the line; another is kept as the card writes it. A layer or checkpoint
    of a model (``MODEL@…``, sharing its source) takes the card's other fields, not its lineage.

    Returns ``(metadata, store models without a card, card models matching no store model)``.
    """
    found = find_models(root)
    matched = match_models(found, records)
    used = list(dict.fromkeys(matched.values()))
    cards = read_cards(used)
    by_id = {m.model_id: m for m in used}
    # A hub id (or card id) to the store name of that model, for base_model.
    to_store: dict[str, str] = {}
    for name, rec in records.items():
        for key in (name, rec.get("source")):
            if key and (key not in to_store or ("@" in to_store[key] and "@" not in name)):
                to_store[str(key)] = name
    for name, m in matched.items():
        for key in (m.hub_id, m.model_id):
            if key and key not in to_store:
                to_store[key] = name
    rows = {}
    for name, m in matched.items():
        if m.model_id not in cards.index:
            continue
        row = cards.loc[m.model_id].to_dict()
        listed = next((v for v in (row.get("base_models"), row.get("base_model")) if isinstance(v, str) and v), "")
        bases = [b.strip() for b in listed.split(",") if b.strip()]
        if "@" in name and name not in (m.model_id, m.hub_id):
            # A layer or a checkpoint of the model (MODEL@layer3, MODEL@step1000): its lineage is its own
            # (layers_of, trajectory), not the card's base.
            row.update(base_model=None, base_models=None, base_model_relation=None)
        elif bases:
            in_store = [to_store[b] for b in bases if b in to_store and to_store[b] != name]
            row["base_model"] = in_store[0] if in_store else bases[0]
        rows[name] = row
    meta = pd.DataFrame.from_dict(rows, orient="index", columns=list(CARD_COLUMNS))
    meta.index.name = "model"
    meta = meta.dropna(axis=1, how="all")
    if "n_params" in meta.columns:
        meta["n_params"] = meta["n_params"].astype("Int64")
    without = [n for n in records if n not in rows]
    unused = [m.model_id for m in found if m.model_id not in by_id]
    return meta, without, unused


__all__ = ["CARD_COLUMNS", "CardModel", "card_fields", "card_metadata", "config_parameters", "count_parameters",
           "find_models", "hf_cache_dir", "match_models", "read_card", "read_cards", "read_front_matter",
           "safetensors_parameters"]
