"""The bookkeeping both executors share: what is stored, what to resume, records, failures, the store write.

The local executor (:mod:`lmmap.scoring.driver`) and the Ray executor
(:mod:`lmmap.scoring.executor`) score differently but must store the same
vector under the same record, key their checkpoints alike, and word a
model's outcome the same way; what they share lives here, public, so that
neither reaches into the other's private helpers.

    ScoringSettings   what changes the numbers; its hash keys checkpoints and extensions
    already_stored    the ``skipped`` status of a model whose outputs are all stored
    resume_plan       which texts are still to score, which come from checkpoints
    record            the SPEC §2 record stored with a vector
    metadata_rows     the metadata stored with a model's vectors (a plain model's, or its layers')
    store_vectors     one store change for a model's vectors; the ``scored`` status
    failure_of / failure_status   a model's failure as plain data, and its ``failed`` status
    settings_summary, first_line, done_before   pieces of messages
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmmap._version import __version__
from lmmap.exceptions import LmmapError, ScoringError
from lmmap.params import raw_message
from lmmap.progress import format_rate
from lmmap.scoring.protocol import Backend, NonFiniteError, ScoreStatus

SCORER = "lmmap"
# Bump when a change can alter the numbers: checkpoints from another version are then not reused.
SCORER_VERSION = "2"  # 2: GPT-2's GELU fused (bf16 rounding), the backend in the checkpoint key


@dataclass
class ScoringSettings:
    """Everything that changes the numbers; its hash keys checkpoints and says whether stored texts can be extended."""

    convention: str
    dtype: str
    max_length: int
    stride: int | None
    revision: str
    text_set_id: str
    backend: str = "hf"  # vLLM and transformers agree to ~1e-4, not bit for bit: never mix their checkpoints
    # Settings that only some runs have (the chat template, the logit lens's final norm): in the key only when
    # set, so that the keys of every other run, and their stored vectors' extension, stay as they were.
    options: dict = field(default_factory=dict)

    @property
    def truncation(self) -> str:
        return "truncate" if self.stride is None else "strided"

    def key(self, name: str) -> str:
        payload = {"model": name, "scorer_version": SCORER_VERSION, **self.__dict__}
        if not payload["options"]:
            del payload["options"]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def common_texts(frames) -> np.ndarray:
    """The texts every one of ``frames`` holds (none when there are no frames or one is None)."""
    if not frames or any(f is None for f in frames):
        return np.zeros(0, np.int64)
    out = np.unique(frames[0]["text_pos"].to_numpy().astype(np.int64))
    for f in frames[1:]:
        out = np.intersect1d(out, f["text_pos"].to_numpy().astype(np.int64))
    return out



def resume_plan(positions, stored: list, checkpointed: list | None) -> tuple[np.ndarray, np.ndarray]:
    """``(todo, resumed)``: of ``positions``, the texts still to score and those taken from checkpoints.

    ``stored`` and ``checkpointed``: each output's rows (DataFrames, None for
    an output with none; ``checkpointed`` None when no checkpoint is used).
    A model's outputs (the layers of a logit lens) are scored and
    checkpointed together, so a text is left out only when every output has
    it stored, or every output has it checkpointed.
    """
    todo = np.setdiff1d(positions, common_texts(stored))
    resumed = np.intersect1d(todo, common_texts(checkpointed)) if checkpointed is not None else todo[:0]
    return np.setdiff1d(todo, resumed), resumed


def already_stored(store, outs: list[str], positions, label: str, rows: list | None = None) -> ScoreStatus | None:
    """The ``skipped`` status when every one of ``outs`` is stored on all ``positions``, else None.

    ``rows``: the outputs' stored rows when the caller has read them (None for one not stored).
    """
    for j, o in enumerate(outs):
        if rows is not None:
            have = rows[j]
        else:
            have = store.vectors(o) if store.has_model(o) else None
        if have is None or not np.isin(positions, have["text_pos"].to_numpy()).all():
            return None
    for o in outs:
        store.clear_redundant_checkpoints(o)  # e.g. chunks of a scorer that lost a race for it
    what = "already in the store" if len(outs) == 1 else f"its {len(outs)} layers are already in the store"
    return ScoreStatus(label, "skipped",
                       f"{what} (pass {{replace=True}} to score it again)", n_resumed=len(positions), params=("replace",))


def metadata_rows(metadata: dict | None, outs: list[str], name: str, layers,
                  quantisation: str | None = None) -> "pd.DataFrame | None":
    """Metadata rows stored with the vectors: ``metadata`` for a plain model; ``layers_of``/``layer`` per layer.

    ``quantisation`` (what :func:`lmmap.scoring.hf.model_quantisation` found): stored as a plain model's
    ``quantisation``, so that the lineage test orders it after its related unquantised models.
    """
    import pandas as pd

    if quantisation and layers is None:
        metadata = {**(metadata or {}), "quantisation": quantisation}
    if layers is not None:
        rows = [{"model": o, "layers_of": name, "layer": int(k)} for o, k in zip(outs, layers)]
    elif metadata:
        rows = [{"model": name, **metadata}]
    else:
        return None
    return pd.DataFrame(rows)


def store_vectors(store, items, positions, *, metadata=None, replace, n_todo, n_before, L, stride, seconds,
                  texts_per_s, tokens_per_s, label) -> ScoreStatus:
    """Write the vectors of ``items`` (``(name, key, parts, record)``) and ``metadata`` in one change; clear checkpoints.

    ``parts``: the rows kept, checkpointed and new. One transaction
    (:meth:`~lmmap.data.store.Store.write_models`): every layer of a lensed
    model is stored, or none. ``label`` names the scored model in the status.
    """
    import pandas as pd

    from lmmap.data.store import ModelExistsError

    vectors, frames = [], []
    for name, _key, parts, record in items:
        # Rows kept from the stored version: name that version, so that texts another process adds to the
        # model meanwhile are merged, not lost (Store.write_models).
        extends = {} if parts[0] is None else {"extends": parts[0].attrs.get("added_ns")}
        parts = [p for p in parts if p is not None and len(p)]
        frame = pd.concat(parts, ignore_index=True).sort_values("text_pos") if parts else None
        wanted_all = len(frame) == store.n_texts
        frames.append(frame)
        vectors.append(dict(name=name, loglik=frame["loglik"].to_numpy(), n_tokens=frame["n_tokens"].to_numpy(),
                            truncated=frame["truncated"].to_numpy(),
                            text_pos=None if wanted_all else frame["text_pos"].to_numpy(), record=record,
                            **extends))
    try:
        try:
            store.write_models(vectors, replace=replace, metadata=metadata)
        except ModelExistsError:
            # Another process stored these models while this one scored them.
            same = all(store.has_model(n) and store.record(n).get("settings_key") == k
                       and np.isin(positions, store.vectors(n)["text_pos"].to_numpy()).all() for n, k, _, _ in items)
            if same:
                for name, *_ in items:
                    store.clear_checkpoint(name)
                return ScoreStatus(label, "skipped", "was completed by another process meanwhile; its stored vector "
                                   "(same settings) is kept", n_resumed=len(positions))
            if any("extends" in v for v in vectors):
                raise
            # the same model scored on other texts by another process: merge with what it stored
            store.write_models([{**v, "extends": None} for v in vectors], replace=replace, metadata=metadata)
    except ModelExistsError:
        theirs = next((store.record(n) for n, *_ in items if store.has_model(n)), {})
        raise ScoringError(
            f"model {label!r} was stored by another process meanwhile under other settings "
            f"({settings_summary(theirs)}); pass {{replace=True}} to overwrite it with this run's", params=("replace",)
        ) from None
    for name, *_ in items:
        store.clear_checkpoint(name)
    n_trunc = int(frames[0]["truncated"].sum())
    msg = f"{n_todo} texts scored" + (f", {n_before} resumed" if n_before else "")
    msg += f", {n_trunc} truncated to {L} tokens" if stride is None else f", strided (window {L}, stride {stride})"
    if len(items) > 1:
        msg += f"; {len(items)} layers stored as {items[0][0]} … {items[-1][0]}"
    if n_todo:
        msg += f" ({format_rate(texts_per_s)} texts/s, {format_rate(tokens_per_s)} tokens/s)"
    return ScoreStatus(label, "scored", msg, n_scored=n_todo, n_resumed=n_before, n_truncated=n_trunc,
                       seconds=seconds, texts_per_s=texts_per_s, tokens_per_s=tokens_per_s)


# Record fields the scorer gives (Scorer.describe), in the order SPEC §2 lists them; any others go after logprob_path.
_MODEL_FIELDS = ("device", "architecture", "tokenizer", "tokenizer_class")


def record(model: dict, settings: ScoringSettings, key, source, device, *, n_scored, n_before, adds_bos, prepended,
           seconds, load_seconds, texts_per_s, tokens_per_s, batch_tokens, mode, extra: dict | None = None) -> dict:
    """The SPEC §2 record stored with the vector (``model``: the scorer's ``describe()``)."""
    model = dict(model)
    rec = {
        "convention": settings.convention,
        "truncation": settings.truncation,
        "stride": settings.stride,
        "max_length": settings.max_length,
        "dtype": settings.dtype,
        "device": model.pop("device", None),
        "device_requested": device,
        "scorer": SCORER,
        "scorer_version": SCORER_VERSION,
        "settings_key": key,
        # absolute for a local directory: `lmmap score NAME` completes the model from any directory
        "source": str(Path(source).expanduser().resolve()) if Path(source).expanduser().is_dir() else str(source),
        "revision": settings.revision,
        **{k: model.pop(k, None) for k in _MODEL_FIELDS[1:]},
        "tokenizer_adds_bos": bool(adds_bos),
        "prepended_token": prepended,
        "n_texts_scored_this_run": int(n_scored),
        "n_texts_resumed": int(n_before),
        "seconds": round(seconds, 3),
        "load_seconds": round(load_seconds, 3),
        "texts_per_s": round(texts_per_s, 3),
        "tokens_per_s": round(tokens_per_s, 1),
        "batch_tokens": batch_tokens,
        "logprob_path": mode,
    }
    rec.update(model)  # library versions and other backend fields
    rec.update(extra or {})
    rec["lmmap_scorer"] = f"lmmap {__version__}"
    return rec


def settings_summary(rec: dict) -> str:
    """``scorer=lmmap, convention=reference, …``: a stored record's settings, for a refusal's message."""
    keys = ("scorer", "convention", "dtype", "max_length", "truncation", "revision")
    return ", ".join(f"{k}={rec.get(k)}" for k in keys if rec.get(k) is not None)


def failure_of(exc: Exception, backend: "Backend | None") -> tuple[str, str, tuple[str, ...]]:
    """``(kind, message, params)`` of a model's failure: plain data, so that a Ray worker can send it back.

    ``backend`` adds its hint to an unexpected error (None: a backend that could not even be made, no hint).
    """
    if isinstance(exc, NonFiniteError):
        return "nonfinite", raw_message(exc), tuple(exc.params)  # mentions kept in braces for the CLI
    if isinstance(exc, LmmapError):
        return "lmmap", raw_message(exc), tuple(getattr(exc, "params", ()))
    hint, params = backend.failure_hint(exc) if backend is not None else ("", ())
    return "other", f"{type(exc).__name__}: {first_line(exc)}{hint}", tuple(params)

def failure_status(name: str, failure: tuple[str, str, tuple[str, ...]], dtype: str) -> ScoreStatus:
    """The ``failed`` status of model ``name`` for a :func:`failure_of` triple (the same words from every executor)."""
    kind, message, params = failure
    if kind == "nonfinite":
        hint = " (try {dtype='float32'})" if dtype != "float32" else ""
        return ScoreStatus(name, "failed", f"model {name!r}: {message}; nothing was stored for it{hint}",
                           params=("dtype",) if hint else ())
    if kind == "lmmap":
        return ScoreStatus(name, "failed", message if name in message else f"model {name!r}: {message}",
                           params=tuple(params))
    return ScoreStatus(name, "failed", f"model {name!r}: {message}", params=tuple(params))


def done_before(out: dict) -> str:
    """``; N model(s) finished before it are stored`` for an interruption's message (``out``: name → status)."""
    done = [n for n, st in out.items() if st.status == "scored"]
    return f"; {len(done)} model(s) finished before it are stored" if done else ""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors can carry a traceback-like tail)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"
