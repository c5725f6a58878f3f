"""A scale for KL: the store's own reference points (issue 15 §4, after Kishino et al. 2025).

``scale(mm)`` sorts the map's model pairs by the relation the metadata
declares between them and summarises each kind's KL: between a fine-tune
and its base (``base_model``), between checkpoints of one lineage
(``model_type`` ``checkpoint``, and a checkpoint and its run's model),
between a quantised model and its original (a ``quantization`` column with
a value, and ``base_model``), and between unrelated families (different
``family``). "KL = 0.02 bits/byte" then reads against "a fine-tune moves
about this much".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lmmap.exceptions import InputError
from lmmap.map import UNIT_LABELS, check_unit

# The kinds of pairs, in the order they are shown.
RELATIONS = ("quantised ↔ original", "checkpoints of one run", "fine-tune ↔ base", "unrelated families", "all pairs")
QUANTIZATION_COLUMN = "quantization"


@dataclass
class ScaleResult:
    """Reference points of KL from the map's metadata.

    ``references``: one row per relation with pairs (relation, n_pairs,
    median, q25, q75, min, max); ``pairs``: every classified pair (model_a,
    model_b, relation, kl), ``all pairs`` included; KL in ``unit``.
    """

    unit: str
    references: pd.DataFrame
    pairs: pd.DataFrame
    n_models: int
    mean_text_bytes: float | None
    info: dict = field(default_factory=dict)

    @property
    def unit_label(self) -> str:
        return UNIT_LABELS[self.unit]

    def reference(self, relation: str) -> float | None:
        """The median KL of ``relation`` (None when the store has no such pair)."""
        row = self.references[self.references["relation"] == relation]
        return None if row.empty else float(row["median"].iloc[0])


def _column(mm, name: str) -> list | None:
    if mm.metadata is None or name not in mm.metadata.columns:
        return None
    out = []
    for v in mm.metadata[name].reindex(mm.names):
        out.append(None if v is None or (not isinstance(v, str) and pd.isna(v)) or not str(v).strip() else str(v).strip())
    return out


def relation_pairs(mm) -> pd.DataFrame:
    """Every pair of the map whose relation the metadata declares: columns model_a, model_b, relation."""
    from lmmap.map import _lineage_roots

    names = mm.names
    bases = mm.base_models()
    mtype = _column(mm, "model_type") or [None] * mm.K
    family = _column(mm, "family")
    quant = _column(mm, QUANTIZATION_COLUMN) or [None] * mm.K
    idx = {n: i for i, n in enumerate(names)}
    is_ckpt = [t == "checkpoint" for t in mtype]
    root = _lineage_roots(names, bases)
    rows, seen = [], set()

    def add(a, b, relation):
        key = tuple(sorted((a, b)))
        if key not in seen:
            seen.add(key)
            rows.append((*key, relation))

    for m, base in bases.items():
        i = idx[m]
        if quant[i] is not None:
            add(m, base, RELATIONS[0])
        elif is_ckpt[i]:
            add(m, base, RELATIONS[1])
        else:
            add(m, base, RELATIONS[2])
    ck = [n for n, c in zip(names, is_ckpt) if c]
    for a in range(len(ck)):
        for b in range(a + 1, len(ck)):
            if root[ck[a]] == root[ck[b]]:
                add(ck[a], ck[b], RELATIONS[1])
    if family is not None:
        for i in range(mm.K):
            for j in range(i + 1, mm.K):
                if family[i] and family[j] and family[i] != family[j]:
                    add(names[i], names[j], RELATIONS[3])
    return pd.DataFrame(rows, columns=["model_a", "model_b", "relation"])


def scale(mm, *, unit: str = "nats-per-text") -> ScaleResult:
    """Reference points of KL (in ``unit``) from ``mm``'s metadata (model_type, family, base_model, quantization).

    Raises :class:`~lmmap.exceptions.InputError` when the metadata declares
    no relation at all (no base_model, checkpoint or family).
    """
    check_unit(unit)
    KL = mm.kl(unit)
    rel = relation_pairs(mm)
    if rel.empty:
        raise InputError(
            "the map's metadata declares no relation between its models (columns base_model, model_type "
            "checkpoint, family or quantization): give them with {metadata=MODELS.csv}", params=("metadata",))
    i = np.fromiter((mm.index_of(a) for a in rel["model_a"]), np.int64, len(rel))
    j = np.fromiter((mm.index_of(b) for b in rel["model_b"]), np.int64, len(rel))
    rel["kl"] = KL[i, j]
    a, b = np.triu_indices(mm.K, 1)
    everything = pd.DataFrame({"model_a": np.asarray(mm.names, object)[a], "model_b": np.asarray(mm.names, object)[b],
                               "relation": RELATIONS[4], "kl": KL[a, b]})
    pairs = pd.concat([rel, everything], ignore_index=True)
    order = {r: k for k, r in enumerate(RELATIONS)}
    refs = []
    for relation, g in sorted(pairs.groupby("relation", sort=False), key=lambda x: order[x[0]]):
        v = g["kl"].to_numpy()
        refs.append((relation, len(v), float(np.median(v)), float(np.quantile(v, 0.25)), float(np.quantile(v, 0.75)),
                     float(v.min()), float(v.max())))
    references = pd.DataFrame(refs, columns=["relation", "n_pairs", "median", "q25", "q75", "min", "max"])
    info = {"unit": unit, "n_models": mm.K, "mean_text_bytes": mm.mean_text_bytes, "n_texts": int(mm.n_texts),
            "text_set_id": mm.text_set_id, "relations": list(references["relation"])}
    return ScaleResult(unit, references, pairs, mm.K, mm.mean_text_bytes, info)
