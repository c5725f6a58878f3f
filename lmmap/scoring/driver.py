"""The scoring driver: models in, vectors in the store out — batched, checkpointed, resumable (SPEC §2).

:func:`score_models` loads each model through a backend
(:mod:`lmmap.scoring.protocol`; ``"hf"`` by default, ``"fake"`` for tests),
scores the store's texts (or a subset of them), saves checkpoints as it goes
so that a killed run resumes where it stopped, and stores the vector with
everything SPEC §2 asks for. It talks only to :class:`lmmap.data.store.Store`
and to a :class:`~lmmap.scoring.protocol.Scorer`; it never prints: progress
and one-line messages go to ``progress`` (:mod:`lmmap.progress`).

:func:`iter_scores` and :func:`score_texts` are the pure compute under it: a
loaded scorer and texts in, log-likelihoods out. Texts are sorted by length
and cut into batches of at most ``batch_tokens`` padded tokens
(:func:`~lmmap.scoring.encoding.plan_batches`); a text's log-likelihood is
the sum over its rows (one, or its windows when strided), accumulated with
array operations: no Python object is built per token.
"""

from __future__ import annotations

import gc
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from lmmap._version import __version__
from lmmap.exceptions import InputError, LmmapError, ScoringError
from lmmap.progress import ProgressFn, Tracker, format_rate, say
from lmmap.scoring.encoding import (
    Encoded, chat_template_id, check_convention, encode_texts, make_rows, plan_batches, resolve_max_length, rows_tokens,
)
from lmmap.scoring.protocol import Backend, NonFiniteError, Scorer, ScoreStatus, TextScores

SCORER = "lmmap"
# Bump when a change can alter the numbers: checkpoints from another version are then not reused.
SCORER_VERSION = "2"  # 2: GPT-2's GELU fused (bf16 rounding), the backend in the checkpoint key
DEFAULT_CHECKPOINT_EVERY = 60.0  # seconds between checkpoints
BACKENDS = ("hf", "vllm", "fake")


def get_backend(backend: "str | Backend") -> Backend:
    """The backend named ``backend`` (``"hf"``: transformers; ``"vllm"``: vLLM's offline engine; ``"fake"``: the
    test n-gram models), or ``backend`` itself."""
    if isinstance(backend, str):
        if backend == "hf":
            from lmmap.scoring.hf import HFBackend

            return HFBackend()
        if backend == "vllm":
            from lmmap.scoring.vllm import VLLMBackend

            return VLLMBackend()
        if backend == "fake":
            from lmmap.scoring.fake import FakeBackend

            return FakeBackend()
        raise InputError(f"backend must be one of {', '.join(BACKENDS)} or a Backend object, got {backend!r}",
                         params=("backend",))
    if not all(hasattr(backend, a) for a in ("name", "check", "load", "revision", "failure_hint")):
        raise InputError(f"backend must be one of {', '.join(BACKENDS)} or a Backend object, got {backend!r}",
                         params=("backend",))
    return backend


# -- pure compute: texts in, vectors out --------------------------------------------------


def iter_scores(
    scorer: Scorer,
    texts: Sequence[str],
    *,
    convention: str = "reference",
    max_length: int | None = None,
    stride: int | None = None,
    batch_tokens: int | None = None,
    positions: Sequence[int] | None = None,
    tracker: Tracker | None = None,
    encoded: Encoded | None = None,
    info: dict | None = None,
) -> Iterator[TextScores]:
    """Score ``texts`` batch by batch, yielding the texts each batch completes.

    ``positions`` only name texts in error messages (default: 0..n-1).
    ``tracker`` advances by each batch's tokens, with counters ``texts`` and
    ``texts_total``. ``info``, when given, receives how the batches were
    computed (``mode``, ``batch_tokens``, ``n_batches``, ``n_rows``).
    """
    L = resolve_max_length(scorer.context_length, max_length, stride)
    enc = encoded or encode_texts(scorer.tokenizer, texts, convention, L, stride, positions)
    rows = make_rows(enc.sequences, L, stride)
    if len(rows.ids) == 0:
        return
    plan = scorer.prepare(rows.ids[0], batch_tokens)
    budget = int(plan["batch_tokens"])
    if budget < 1:
        raise InputError(f"batch_tokens must be positive, got {batch_tokens}", params=("batch_tokens",))
    lengths = rows.lengths
    batches = plan_batches(lengths, budget)
    if info is not None:
        info.update(mode=plan["mode"], batch_tokens=budget, n_batches=len(batches), n_rows=len(rows.ids))
    n_texts = len(enc.sequences)
    remaining = np.bincount(rows.text, minlength=n_texts)
    total = None  # (texts,) or, for a scorer with several outputs (the layers of a logit lens), (texts, outputs)
    texts_done = 0
    for batch in batches:
        sums = scorer.score([rows.ids[i] for i in batch], rows.first[batch])
        if total is None:
            total = np.zeros((n_texts,) + np.shape(sums)[1:], dtype=np.float64)
        owners = rows.text[batch]
        np.add.at(total, owners, sums)
        np.subtract.at(remaining, owners, 1)
        done = np.unique(owners[remaining[owners] == 0])
        finite = np.isfinite(total[done]) if total.ndim == 1 else np.isfinite(total[done]).all(axis=1)
        bad = done[~finite]
        if len(bad):
            pos = int(bad[0]) if positions is None else int(positions[bad[0]])
            value = total[bad[0]] if total.ndim == 1 else total[bad[0]][~np.isfinite(total[bad[0]])][0]
            raise NonFiniteError(f"non-finite log-likelihood ({value}) for the text at position {pos}", pos)
        texts_done += len(done)
        if tracker is not None:
            tracker.advance(int(lengths[batch].sum()), texts=texts_done, texts_total=n_texts)
        if len(done):
            yield TextScores(done, total[done].copy(), enc.n_tokens[done], enc.truncated[done])


def score_texts(
    scorer: Scorer,
    texts: Sequence[str],
    *,
    convention: str = "reference",
    max_length: int | None = None,
    stride: int | None = None,
    batch_tokens: int | None = None,
    progress: ProgressFn = None,
    description: str = "scoring",
    chat_template: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(loglik, n_tokens, truncated)`` of each text under a loaded scorer (see :mod:`lmmap.scoring.encoding`).

    Pure compute: nothing is read from or written to a store.
    ``chat_template``: prompt→response texts wrapped in the tokenizer's chat
    template. A scorer with several outputs (the layers of a logit lens) gives
    ``loglik`` a column per output. Raises
    :class:`~lmmap.scoring.protocol.NonFiniteError` if a text's
    log-likelihood is NaN or infinite.
    """
    L = resolve_max_length(scorer.context_length, max_length, stride)
    enc = encode_texts(scorer.tokenizer, texts, convention, L, stride, chat_template=chat_template)
    n = len(enc.sequences)
    layers = getattr(scorer, "layers", None)
    loglik = np.full((n,) if layers is None else (n, len(layers)), np.nan)
    with Tracker(progress, description, rows_tokens(enc, L, stride), unit="tokens") as tracker:
        for part in iter_scores(scorer, texts, convention=convention, max_length=L, stride=stride,
                                batch_tokens=batch_tokens, tracker=tracker, encoded=enc):
            loglik[part.index] = part.loglik
    return loglik, enc.n_tokens.copy(), enc.truncated.copy()


# -- the store-level driver ---------------------------------------------------------------


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


def score_models(
    store,
    models: Sequence[str],
    *,
    names: Sequence[str] | None = None,
    text_pos: Iterable[int] | None = None,
    device: str = "auto",
    dtype: str = "float32",
    convention: str = "reference",
    batch_tokens: int | None = None,
    max_length: int | None = None,
    stride: int | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    replace: bool = False,
    progress: ProgressFn = None,
    checkpoint_every: float = DEFAULT_CHECKPOINT_EVERY,
    device_map: str | None = None,
    logits_memory: int | None = None,
    backend: "str | Backend" = "hf",
    executor: str = "local",
    ray_address: str | None = None,
    gpus_per_model: float | None = None,
    shard_texts: int | None = None,
    packing: str = "auto",
    layers=None,
    final_norm: str | None = None,
    chat_template: bool = False,
    revisions=None,
    trajectory: str | None = None,
    steps=None,
) -> dict[str, ScoreStatus]:
    """Score each model on the store's texts (or on ``text_pos`` only) and store its vector.

    Parameters
    ----------
    store : a :class:`~lmmap.data.store.Store` or its path.
    models : local directories, hub names, or names of models in the store
        (scored by lmmap: completes them from the source in their record,
        under their recorded settings).
    names : the name each model is stored under; by default a short name: a
        directory's own name (``./runs/my-checkpoint`` → ``my-checkpoint``), a
        hub id as it is (``org/name``). Two models that would get one name
        are refused.
    text_pos : the store's text positions to score (default: all).
    device, dtype, trust_remote_code, revision, device_map, logits_memory :
        how the backend loads and runs the model.
    convention, max_length, stride : how texts are scored (SPEC §2, see
        :mod:`lmmap.scoring.encoding`).
    batch_tokens : padded tokens per batch (default: the backend's for the device).
    replace : score again models already in the store.
    progress : ``None`` (silent) or a callable getting :class:`lmmap.progress.Step`
        events: one task per model in tokens (counters ``texts``,
        ``texts_total``), and a one-line message per model's outcome.
    checkpoint_every : seconds between checkpoints (0: after every batch), so
        a killed run resumes with the missing texts only (``executor="ray"``:
        each completed shard is checkpointed as it arrives).
    backend : ``"hf"`` (transformers), ``"vllm"`` (vLLM's offline engine,
        :mod:`lmmap.scoring.vllm`), ``"fake"`` (exact n-gram models for tests,
        :mod:`lmmap.scoring.fake`) or a :class:`~lmmap.scoring.protocol.Backend`.
    executor : ``"local"`` (this process, one model after another) or
        ``"ray"``: one Ray task per (model, shard of texts) on a Ray cluster
        (:mod:`lmmap.scoring.executor`); this process alone writes the store
        and checkpoints every completed shard. Needs ``pip install 'lmmap[ray]'``.
    ray_address : ``executor="ray"`` only: the cluster to join (``"auto"``: the
        one started on this node with ``ray start``; ``"HOST:PORT"``;
        ``"ray://HOST:PORT"``). Default: a private Ray instance on this machine,
        bound to loopback (or the Ray connection this process already has).
    gpus_per_model : ``executor="ray"`` only: GPUs each task asks Ray for
        (default 0: CPU tasks).
    shard_texts : ``executor="ray"`` only: texts per task (default: all of a
        model's texts in one task). Smaller shards spread a model over more
        workers and lose less when a worker dies, at one model load per shard.
    packing : ``backend="hf"``: ``"auto"`` packs rows of different lengths into
        shared sequences where that saves work (always under flash-attention
        varlen), ``"on"`` wherever the model allows, ``"off"`` keeps padded batches
        (see :mod:`lmmap.scoring.hf`).
    layers : ``backend="hf"``: ``"all"`` or indices of the model's
        ``hidden_states`` (0 = the embeddings): the logit lens, every layer
        from one forward pass, each stored as ``NAME@layerK`` with metadata
        ``layers_of`` and ``layer`` (:mod:`lmmap.scoring.layers`).
    final_norm : with ``layers``, the final norm's module path when lmmap
        cannot find it (e.g. ``"model.norm"``).
    chat_template : texts with prompts are wrapped in the tokenizer's chat
        template (a user turn, then the text as the assistant's); the
        template's identity is recorded (:mod:`lmmap.scoring.encoding`).
    revisions : hub revisions of one model (``["step1000", "step2000"]``),
        each stored as ``MODEL@REVISION`` with metadata ``trajectory`` and
        ``step`` (:mod:`lmmap.scoring.checkpoints`).
    trajectory : local checkpoint directories of one training run, stored as
        ``TRAJECTORY@DIRECTORY`` with metadata ``trajectory`` and ``step``.
    steps : each checkpoint's step (default: the last number of each
        revision or directory name).

    Returns
    -------
    dict name → :class:`~lmmap.scoring.protocol.ScoreStatus`. A model already
    in the store is skipped (unless ``replace``), or extended with the texts
    it lacks when it was scored under the same settings. A model that fails
    to load or gives a non-finite value is ``failed`` and nothing is recorded
    for it; the others go on.
    """
    from lmmap.data.store import Interrupted, Store, check_model_name
    from lmmap.scoring.checkpoints import expand_checkpoints
    from lmmap.scoring.layers import parse_layers

    progress = _check_progress(progress)
    layers = parse_layers(layers)
    if final_norm is not None and layers is None:
        raise InputError("final_norm needs layers (it names the norm the logit lens applies)", params=("final_norm",))
    if revisions is not None and revision is not None:
        raise InputError("revision cannot be combined with revisions (a trajectory of revisions): give one of them",
                         params=("revision",))
    if packing != "auto":
        if backend != "hf":
            raise InputError(f"packing={packing!r} applies to backend='hf' only", params=("packing", "backend"))
        from lmmap.scoring.hf import HFBackend

        backend = HFBackend(packing=packing)  # an object: the Ray executor sends it to its tasks as it is
    be = get_backend(backend)
    if layers is not None and be.name != "hf":
        raise InputError(f"backend={be.name!r} cannot score layers (they come from transformers' hidden states): "
                         "use backend='hf'", params=("backend",))
    store = store if isinstance(store, Store) else Store(store)
    models = [str(m) for m in models]
    if not models:
        raise InputError("name at least one model to score", params=("models",))
    per_model: list[dict] = [{} for _ in models]
    checkpoints = expand_checkpoints(models, revisions=revisions, trajectory=trajectory, steps=steps, names=names,
                                     default_name=default_model_name)
    if checkpoints is not None:
        models = [c.source for c in checkpoints]
        names = [c.name for c in checkpoints]
        per_model = [{"metadata": c.metadata, **({"revision": c.revision} if c.revision else {})}
                     for c in checkpoints]
    if names is None:
        names = []
        stored = None
        for i, m in enumerate(models):
            if not Path(m).expanduser().exists():
                stored = store.records() if stored is None else stored
                if m in stored:  # a stored model's name: complete it from the source it was scored from
                    models[i], own = _stored_source(store, m, stored[m], revision)
                    # completing keeps the recorded settings; replace rescores under the ones given
                    per_model[i] = {} if replace else own
                    # a lensed layer is completed as its model's layer (a vector of one column of the lens)
                    names.append(str(stored[m]["layers_of"]) if "layers" in own else m)
                    continue
            names.append(default_model_name(m))
    else:
        names = [str(n) for n in names]
    if len(names) != len(models):
        raise InputError(f"{len(names)} names for {len(models)} models: give one name per model")
    for n in names:
        check_model_name(n)
    first: dict[str, str] = {}
    for src, n in zip(models, names):
        if n in first:
            if first[n] == src:
                raise InputError(f"model {n!r} is listed twice; give each model once")
            raise InputError(
                f"models {first[n]!r} and {src!r} would both be stored as {n!r}; "
                "score them one at a time, each with its own names=NAME", params=("names",)
            )
        first[n] = src
    check_convention(convention)
    be.check(device=device, dtype=dtype)
    if batch_tokens is not None and batch_tokens < 1:
        raise InputError(f"batch_tokens must be positive, got {batch_tokens}", params=("batch_tokens",))
    if max_length is not None and max_length < 2:
        raise InputError(f"max_length must be at least 2, got {max_length}", params=("max_length",))
    if stride is not None and stride < 1:
        raise InputError(f"stride must be positive, got {stride}", params=("stride",))
    if checkpoint_every < 0:
        raise InputError(f"checkpoint_every must be >= 0 seconds, got {checkpoint_every}",
                         params=("checkpoint_every",))
    positions = _check_positions(text_pos, store.n_texts)
    from lmmap.scoring import executor as _executor

    _executor.check_options(executor, ray_address, gpus_per_model, shard_texts)
    options = dict(
        device=device, dtype=dtype, convention=convention, batch_tokens=batch_tokens, max_length=max_length,
        stride=stride, trust_remote_code=trust_remote_code, revision=revision, replace=replace, progress=progress,
        checkpoint_every=checkpoint_every, device_map=device_map, logits_memory=logits_memory,
        chat_template=bool(chat_template),
        **({} if layers is None else {"layers": layers, "final_norm": final_norm}),
    )
    if executor == "ray":
        return _executor.score_models_ray(
            store, backend, be, list(zip(models, names, per_model)), positions, options,
            ray_address=ray_address, gpus_per_model=gpus_per_model, shard_texts=shard_texts,
        )
    out = {}
    for source, name, own in zip(models, names, per_model):
        try:
            status = _score_one(store, be, source, name, positions, **{**options, **own})
        except Interrupted as exc:
            raise Interrupted(f"{name!r}: {exc}{_done_before(out)}") from None
        except KeyboardInterrupt:
            n = store.checkpoint_chunks(name)
            kept = (f"{n} checkpoint chunk(s) of {name!r} kept; rerun the same command to resume" if n
                    else f"nothing of {name!r} was scored yet")
            raise Interrupted(kept + _done_before(out)) from None
        except Exception as exc:  # one model's failure must not stop the others
            status = failure_status(name, failure_of(exc, be), {**options, **own}["dtype"])
        finally:
            gc.collect()
        out[name] = status
        say(progress, f"{status.status} {name}" + (f": {status.message}" if status.message else ""), status.params)
    return out


def failure_of(exc: Exception, backend: Backend) -> tuple[str, str, tuple[str, ...]]:
    """``(kind, message, params)`` of a model's failure: plain data, so that a Ray worker can send it back."""
    if isinstance(exc, NonFiniteError):
        return "nonfinite", str(exc), tuple(exc.params)
    if isinstance(exc, LmmapError):
        return "lmmap", str(exc), tuple(getattr(exc, "params", ()))
    hint, params = backend.failure_hint(exc)
    return "other", f"{type(exc).__name__}: {first_line(exc)}{hint}", tuple(params)


def failure_status(name: str, failure: tuple[str, str, tuple[str, ...]], dtype: str) -> ScoreStatus:
    """The ``failed`` status of model ``name`` for a :func:`failure_of` triple (the same words from every executor)."""
    kind, message, params = failure
    if kind == "nonfinite":
        hint = " (try dtype='float32')" if dtype != "float32" else ""
        return ScoreStatus(name, "failed", f"model {name!r}: {message}; nothing was stored for it{hint}",
                           params=("dtype",) if hint else ())
    if kind == "lmmap":
        return ScoreStatus(name, "failed", message if name in message else f"model {name!r}: {message}",
                           params=tuple(params))
    return ScoreStatus(name, "failed", f"model {name!r}: {message}", params=tuple(params))


def _check_progress(progress):
    # progress=False was the old "no bars"; True asked the library to draw, which it no longer does.
    if progress is None or progress is False:
        return None
    if not callable(progress):
        raise InputError(
            f"progress must be None or a callable taking lmmap.progress.Step events (e.g. print), got {progress!r}",
            params=("progress",),
        )
    return progress


def _done_before(out: dict) -> str:
    done = [n for n, st in out.items() if st.status == "scored"]
    return f"; {len(done)} model(s) finished before it are stored" if done else ""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


def default_model_name(source: str) -> str:
    """The name a model is stored under by default: a local directory's own name; a hub id as it is."""
    path = Path(source).expanduser()
    if path.exists():
        return path.resolve().name or str(path.resolve())
    return source


def _stored_source(store, name: str, rec: dict, revision) -> tuple[str, dict]:
    """Where to load stored model ``name`` from, and the settings it was scored under."""
    if rec.get("scorer") != SCORER or not rec.get("source"):
        raise InputError(
            f"model {name!r} was imported ({rec.get('source') or 'from a file'}), not scored by lmmap, so lmmap "
            f"does not know where the model is: score it from its directory or hub id with names={name!r}",
            params=("names",),
        )
    own = {k: rec[k] for k in ("convention", "dtype", "max_length", "stride") if rec.get(k) is not None}
    if rec.get("chat_template"):
        own["chat_template"] = True
    if rec.get("layer") is not None and rec.get("layers_of"):
        own.update(layers=(int(rec["layer"]),), final_norm=rec.get("final_norm"))
    source = str(rec["source"])
    # A hub model scored at a revision (a trajectory's checkpoint) is completed at the commit it was scored from.
    if revision is None and re.fullmatch(r"[0-9a-f]{40}", str(rec.get("revision") or "")) and not Path(source).is_dir():
        own["revision"] = rec["revision"]
    return source, own


def _check_positions(text_pos, n_texts: int) -> np.ndarray:
    if text_pos is None:
        return np.arange(n_texts, dtype=np.int64)
    pos = np.asarray(list(text_pos) if not isinstance(text_pos, np.ndarray) else text_pos, dtype=np.int64)
    if pos.ndim != 1 or len(pos) == 0:
        raise InputError("text_pos must be a non-empty list of text positions", params=("text_pos",))
    if pos.min() < 0 or pos.max() >= n_texts:
        raise InputError(f"text_pos must hold positions in 0..{n_texts - 1}; got {int(pos.min())}..{int(pos.max())}",
                         params=("text_pos",))
    return np.unique(pos)


def _score_one(store, backend: Backend, source, name, positions, *, device, dtype, convention, batch_tokens,
               max_length, stride, trust_remote_code, revision, replace, progress, checkpoint_every, device_map,
               logits_memory, layers=None, final_norm=None, chat_template=False, metadata=None) -> ScoreStatus:
    """Score one model (one vector, or one per layer with ``layers``) and store it with its ``metadata`` rows."""
    from lmmap.scoring.layers import layer_name, parse_layers

    layers = parse_layers(layers)
    # Which stored vectors this source gives is known before loading, except for layers="all".
    known = [name] if layers is None else None if layers == "all" else [layer_name(name, k) for k in layers]
    if known is not None and not replace:
        done = _already_stored(store, known, positions, name)
        if done is not None:
            return done
    t_load = time.perf_counter()
    lens = {} if layers is None else {"layers": layers, "final_norm": final_norm}
    scorer = backend.load(source, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                          revision=revision, device_map=device_map, logits_memory=logits_memory, **lens)
    try:
        load_seconds = time.perf_counter() - t_load
        outs = [name] if layers is None else [layer_name(name, k) for k in scorer.layers]
        if known is None and not replace:
            done = _already_stored(store, outs, positions, name)
            if done is not None:
                return done
        L = resolve_max_length(scorer.context_length, max_length, stride)
        described = scorer.describe()
        options = {}
        if chat_template:
            options["chat_template"] = chat_template_id(scorer.tokenizer)
        if layers is not None:
            options["final_norm"] = described.get("final_norm")
        settings = ScoringSettings(convention, dtype, L, stride, backend.revision(source, revision), store.text_set_id,
                                   backend.name, options)
        keys = [settings.key(o) for o in outs]
        kept: list = [None] * len(outs)  # rows already stored for each output that its new vector keeps
        todo = positions
        for j, o in enumerate(outs):
            if store.has_model(o) and not replace:
                old = store.record(o)
                if old.get("settings_key") != keys[j]:
                    raise InputError(
                        f"model {o!r} is already in the store under other settings ({_settings_summary(old)}), "
                        "and lacks some of the texts asked for; pass replace=True to rescore it", params=("replace",),
                    )
                kept[j] = store.vectors(o)
        cks = [store.load_checkpoint(o, k) for o, k in zip(outs, keys)]
        todo, resumed = resume_plan(positions, kept, cks)
        fresh = np.union1d(todo, resumed)
        kept = [None if k is None else k[~k["text_pos"].isin(fresh)] for k in kept]
        cks = [c[c["text_pos"].isin(resumed)] for c in cks]
        n_before = len(positions) - len(todo)
        if len(resumed):
            say(progress, f"{name}: resuming from a checkpoint: {len(resumed)} of {len(positions)} texts already "
                "scored")
        texts = store.texts.texts
        new = _score_positions(
            store, list(zip(outs, keys)), scorer, [texts[i] for i in todo], todo, convention=convention,
            max_length=L, stride=stride, batch_tokens=batch_tokens, progress=progress,
            checkpoint_every=checkpoint_every, chat_template=chat_template, task=name,
        )
        enc: Encoded = new["encoding"]
        info = new.get("info") or {}
        items = []
        for j, o in enumerate(outs):
            extra = {} if layers is None else {"layer": int(scorer.layers[j]), "layers_of": name}
            if chat_template:
                extra["chat_template"] = options["chat_template"]
            record = _record(
                described, settings, keys[j], source, device, n_scored=len(enc.sequences), n_before=n_before,
                adds_bos=enc.tokenizer_adds_bos, prepended=enc.prepended, seconds=new["seconds"],
                load_seconds=load_seconds, texts_per_s=new["texts_per_s"], tokens_per_s=new["tokens_per_s"],
                batch_tokens=info.get("batch_tokens", batch_tokens or scorer.default_batch_tokens),
                mode=info.get("mode"), extra=extra,
            )
            items.append((o, keys[j], [kept[j], cks[j], new["frames"][j]], record))
        meta = _metadata_rows(metadata, outs, name, None if layers is None else scorer.layers)
        return store_vectors(store, items, positions, metadata=meta, replace=replace or any(k is not None for k in kept),
                             n_todo=len(todo), n_before=n_before, L=L, stride=stride, seconds=new["seconds"],
                             texts_per_s=new["texts_per_s"], tokens_per_s=new["tokens_per_s"], label=name)
    finally:
        scorer.close()


def _common_texts(frames) -> np.ndarray:
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
    todo = np.setdiff1d(positions, _common_texts(stored))
    resumed = np.intersect1d(todo, _common_texts(checkpointed)) if checkpointed is not None else todo[:0]
    return np.setdiff1d(todo, resumed), resumed


def _already_stored(store, outs: list[str], positions, label: str, rows: list | None = None) -> ScoreStatus | None:
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
                       f"{what} (pass replace=True to score it again)", n_resumed=len(positions), params=("replace",))


def _metadata_rows(metadata: dict | None, outs: list[str], name: str, layers) -> "pd.DataFrame | None":
    """Metadata rows stored with the vectors: ``metadata`` for a plain model; ``layers_of``/``layer`` per layer."""
    import pandas as pd

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
            f"({_settings_summary(theirs)}); pass replace=True to overwrite it with this run's", params=("replace",)
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


def _score_positions(store, outs: list[tuple[str, str]], scorer: Scorer, texts, positions, *, convention, max_length,
                     stride, batch_tokens, progress, checkpoint_every, chat_template=False, task=None) -> dict:
    """Score ``texts`` (at store ``positions``) for the outputs ``outs`` (``(name, key)``), saving checkpoints.

    One output, or one per lensed layer (the scorer's sums then have a
    column per output). Returns the finished rows as one DataFrame per output.
    """
    import pandas as pd

    enc = encode_texts(scorer.tokenizer, texts, convention, max_length, stride, positions, chat_template=chat_template)
    cols = {"text_pos": [], "loglik": [], "n_tokens": [], "truncated": []}
    done = {k: [] for k in cols}
    pending = {k: [] for k in cols}
    last_ck = time.perf_counter()

    def column(loglik, j):
        return loglik if loglik.ndim == 1 else loglik[:, j]

    def flush():
        if pending["text_pos"]:
            cat = {k: np.concatenate(v) for k, v in pending.items()}
            for j, (name, key) in enumerate(outs):
                store.save_checkpoint(name, key, cat["text_pos"], column(cat["loglik"], j), cat["n_tokens"],
                                      cat["truncated"])
            for k, v in pending.items():
                done[k].extend(v)
                v.clear()

    task = task or outs[0][0]
    task = task if len(task) <= 40 else "…" + task[-39:]
    info: dict = {}
    t0 = time.perf_counter()
    with Tracker(progress, task, max(rows_tokens(enc, max_length, stride), 1), unit="tokens") as tracker:
        try:
            for part in iter_scores(
                scorer, texts, convention=convention, max_length=max_length, stride=stride,
                batch_tokens=batch_tokens, positions=positions, tracker=tracker, encoded=enc, info=info,
            ):
                pending["text_pos"].append(positions[part.index])
                pending["loglik"].append(part.loglik)
                pending["n_tokens"].append(part.n_tokens)
                pending["truncated"].append(part.truncated)
                if time.perf_counter() - last_ck >= checkpoint_every:
                    flush()
                    last_ck = time.perf_counter()
        except BaseException:
            # Keep what is finished (Ctrl-C, a bad text, out of memory): the next run resumes from it.
            flush()
            raise
    seconds = time.perf_counter() - t0
    for k, v in pending.items():
        done[k].extend(v)
    empty = {"text_pos": np.int64, "loglik": np.float64, "n_tokens": np.int64, "truncated": bool}
    cat = {k: np.concatenate(v) if v else np.array([], dtype=empty[k]) for k, v in done.items()}
    frames = [pd.DataFrame({**cat, "loglik": column(cat["loglik"], j) if len(cat["loglik"]) else cat["loglik"]})
              for j in range(len(outs))]
    tokens = int(enc.n_tokens.sum())
    return {
        "frames": frames,
        "seconds": seconds,
        "texts_per_s": len(texts) / seconds if seconds > 0 else 0.0,
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
        "encoding": enc,
        "info": info,
    }


# Record fields the scorer gives (Scorer.describe), in the order SPEC §2 lists them; any others go after logprob_path.
_MODEL_FIELDS = ("device", "architecture", "tokenizer", "tokenizer_class")


def _record(model: dict, settings: ScoringSettings, key, source, device, *, n_scored, n_before, adds_bos, prepended,
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


def _settings_summary(rec: dict) -> str:
    keys = ("scorer", "convention", "dtype", "max_length", "truncation", "revision")
    return ", ".join(f"{k}={rec.get(k)}" for k in keys if rec.get(k) is not None)
