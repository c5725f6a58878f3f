"""The scoring driver: models in, vectors in the store out — batched, checkpointed, resumable (SPEC §2).

:func:`score_models` loads each model through a backend (looked up by name in
:mod:`lmmap.scoring.registry`; ``"hf"`` by default, ``"fake"`` for tests),
scores the store's texts (or a subset of them), saves checkpoints as it goes
so that a killed run resumes where it stopped, and stores the vector with
everything SPEC §2 asks for. How to score is one
:class:`~lmmap.scoring.options.ScoringOptions`, where one
:class:`~lmmap.scoring.options.ExecutorOptions` (this process, or Ray:
:mod:`lmmap.scoring.executor`). It talks only to
:class:`lmmap.data.store.Store` and to a
:class:`~lmmap.scoring.protocol.Scorer`; it never prints: progress and
one-line messages go to ``progress`` (:mod:`lmmap.progress`).

The pure compute under it (:func:`iter_scores`, :func:`score_texts`) lives
in :mod:`lmmap.scoring.compute`, the bookkeeping it shares with the Ray
executor (records, resume plans, the store write) in
:mod:`lmmap.scoring.bookkeeping`; both are re-exported here.
"""

from __future__ import annotations

import gc
import re
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from lmmap.exceptions import InputError
from lmmap.progress import ProgressFn, Tracker, say
from lmmap.scoring.bookkeeping import (  # noqa: F401  (SCORER, SCORER_VERSION, ScoringSettings: re-exported)
    SCORER, SCORER_VERSION, ScoringSettings, already_stored, done_before, failure_of, failure_status, first_line,
    metadata_rows, record, resume_plan, settings_summary, store_vectors,
)
from lmmap.scoring.compute import iter_scores, score_texts  # noqa: F401  (re-exported: the driver's pure compute)
from lmmap.scoring.encoding import Encoded, chat_template_id, encode_texts, resolve_max_length, rows_tokens
from lmmap.scoring.options import (  # noqa: F401  (DEFAULT_CHECKPOINT_EVERY: re-exported)
    DEFAULT_CHECKPOINT_EVERY, ExecutorOptions, ScoringOptions, resolve_options,
)
from lmmap.scoring.protocol import Backend, ScoreStatus, Scorer
from lmmap.scoring.registry import get_backend  # noqa: F401  (re-exported)


def score_models(
    store,
    models: Sequence[str],
    *,
    names: Sequence[str] | None = None,
    text_pos: Iterable[int] | None = None,
    options: ScoringOptions | None = None,
    executor: "ExecutorOptions | str | None" = None,
    replace: bool = False,
    progress: ProgressFn = None,
    revisions=None,
    trajectory: str | None = None,
    steps=None,
    **keywords,
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
    options : how to score: a :class:`~lmmap.scoring.options.ScoringOptions`
        (backend, device, dtype, convention, batch_tokens, max_length, stride,
        trust_remote_code, revision, device_map, logits_memory,
        checkpoint_every, chat_template, packing, layers, final_norm,
        base_url, api_key_env; see there). Default: ``ScoringOptions()``.
    executor : where: an :class:`~lmmap.scoring.options.ExecutorOptions`, or
        just its name, ``"local"`` (this process, one model after another) or
        ``"ray"``: one Ray task per (model, shard of texts) on a Ray cluster
        (:mod:`lmmap.scoring.executor`); this process alone writes the store
        and checkpoints every completed shard. Needs ``pip install 'lmmap[ray]'``.
    replace : score again models already in the store.
    progress : ``None`` (silent) or a callable getting :class:`lmmap.progress.Step`
        events: one task per model in tokens (counters ``texts``,
        ``texts_total``), and a one-line message per model's outcome.
    revisions : hub revisions of one model (``["step1000", "step2000"]``),
        each stored as ``MODEL@REVISION`` with metadata ``trajectory`` and
        ``step`` (:mod:`lmmap.scoring.checkpoints`).
    trajectory : local checkpoint directories of one training run, stored as
        ``TRAJECTORY@DIRECTORY`` with metadata ``trajectory`` and ``step``.
    steps : each checkpoint's step (default: the last number of each
        revision or directory name).
    **keywords : any field of ``ScoringOptions`` or ``ExecutorOptions``
        (``device="cpu"``, ``backend="fake"``, ``shard_texts=100``): it
        overrides that field of ``options`` / ``executor``.

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

    progress = _check_progress(progress)
    opts, where = resolve_options(options, executor, **keywords)
    if revisions is not None and opts.revision is not None:
        raise InputError("revision cannot be combined with revisions (a trajectory of revisions): give one of them",
                         params=("revision",))
    be = get_backend(opts.backend)
    opts.check_for(be)  # the backend's devices, dtypes and options: refused before the store is opened
    store = store if isinstance(store, Store) else Store(store)
    models = [str(m) for m in models]
    if not models:
        raise InputError("name at least one model to score", params=("models",))
    own: list[dict] = [{} for _ in models]  # per model: the settings that differ from opts
    metadata: list[dict | None] = [None for _ in models]
    checkpoints = expand_checkpoints(models, revisions=revisions, trajectory=trajectory, steps=steps, names=names,
                                     default_name=default_model_name)
    if checkpoints is not None:
        models = [c.source for c in checkpoints]
        names = [c.name for c in checkpoints]
        own = [{"revision": c.revision} if c.revision else {} for c in checkpoints]
        metadata = [c.metadata for c in checkpoints]
    if names is None:
        names = []
        stored = None
        for i, m in enumerate(models):
            if not Path(m).expanduser().exists():
                stored = store.records() if stored is None else stored
                if m in stored:  # a stored model's name: complete it from the source it was scored from
                    models[i], recorded = _stored_source(store, m, stored[m], opts.revision)
                    # completing keeps the recorded settings; replace rescores under the ones given
                    own[i] = {} if replace else recorded
                    # a lensed layer is completed as its model's layer (a vector of one column of the lens)
                    names.append(str(stored[m]["layers_of"]) if "layers" in recorded else m)
                    continue
            names.append(default_model_name(m))
    else:
        names = [str(n) for n in names]
    if len(names) != len(models):
        raise InputError(f"{len(names)} names for {len(models)} models: give one name per model", params=("models", "names"))
    for n in names:
        check_model_name(n)
    first: dict[str, str] = {}
    for src, n in zip(models, names):
        if n in first:
            if first[n] == src:
                raise InputError(f"model {n!r} is listed twice; give each model once", params=("models",))
            raise InputError(
                f"models {first[n]!r} and {src!r} would both be stored as {n!r}; "
                "score them one at a time, each with its own {names=NAME}", params=("names",)
            )
        first[n] = src
    positions = _check_positions(text_pos, store.n_texts)
    jobs = [(source, name, opts.replace(**o) if o else opts, meta)
            for source, name, o, meta in zip(models, names, own, metadata)]
    if where.executor == "ray":
        from lmmap.scoring import executor as _executor

        return _executor.score_models_ray(store, be, jobs, positions, where, replace=replace, progress=progress)
    out = {}
    for source, name, o, meta in jobs:
        try:
            status = _score_one(store, be, source, name, positions, o, replace=replace, progress=progress,
                                metadata=meta)
        except Interrupted as exc:
            raise Interrupted(f"{name!r}: {exc}{done_before(out)}") from None
        except KeyboardInterrupt:
            n = store.checkpoint_chunks(name)
            kept = (f"{n} checkpoint chunk(s) of {name!r} kept; rerun the same command to resume" if n
                    else f"nothing of {name!r} was scored yet")
            raise Interrupted(kept + done_before(out)) from None
        except Exception as exc:  # one model's failure must not stop the others
            status = failure_status(name, failure_of(exc, be), o.dtype)
        finally:
            gc.collect()
        out[name] = status
        say(progress, f"{status.status} {name}" + (f": {status.message}" if status.message else ""), status.params)
    return out


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
            f"does not know where the model is: score it from its directory or hub id with {{names={name!r}}}",
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


def _score_one(store, backend: Backend, source, name, positions, opts: ScoringOptions, *, replace: bool, progress,
               metadata=None) -> ScoreStatus:
    """Score one model (one vector, or one per layer with ``opts.layers``) and store it with its ``metadata`` rows."""
    from lmmap.scoring.layers import layer_name

    layers = opts.layers
    # Which stored vectors this source gives is known before loading, except for layers="all".
    known = [name] if layers is None else None if layers == "all" else [layer_name(name, k) for k in layers]
    if known is not None and not replace:
        done = already_stored(store, known, positions, name)
        if done is not None:
            return done
    t_load = time.perf_counter()
    scorer = backend.load(source, **opts.load_kwargs(backend))
    try:
        load_seconds = time.perf_counter() - t_load
        outs = [name] if layers is None else [layer_name(name, k) for k in scorer.layers]
        if known is None and not replace:
            done = already_stored(store, outs, positions, name)
            if done is not None:
                return done
        L = resolve_max_length(scorer.context_length, opts.max_length, opts.stride)
        described = scorer.describe()
        options = {}
        if opts.chat_template:
            options["chat_template"] = chat_template_id(scorer.tokenizer)
        if layers is not None:
            options["final_norm"] = described.get("final_norm")
        settings = ScoringSettings(opts.convention, opts.dtype, L, opts.stride, backend.revision(source, opts.revision),
                                   store.text_set_id, backend.name, options)
        keys = [settings.key(o) for o in outs]
        kept: list = [None] * len(outs)  # rows already stored for each output that its new vector keeps
        for j, o in enumerate(outs):
            if store.has_model(o) and not replace:
                old = store.record(o)
                if old.get("settings_key") != keys[j]:
                    raise InputError(
                        f"model {o!r} is already in the store under other settings ({settings_summary(old)}), "
                        "and lacks some of the texts asked for; pass {replace=True} to rescore it", params=("replace",),
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
            store, list(zip(outs, keys)), scorer, [texts[i] for i in todo], todo, convention=opts.convention,
            max_length=L, stride=opts.stride, batch_tokens=opts.batch_tokens, progress=progress,
            checkpoint_every=opts.checkpoint_every, chat_template=opts.chat_template, task=name,
        )
        enc: Encoded = new["encoding"]
        info = new.get("info") or {}
        items = []
        for j, o in enumerate(outs):
            extra = {} if layers is None else {"layer": int(scorer.layers[j]), "layers_of": name}
            if opts.chat_template:
                extra["chat_template"] = options["chat_template"]
            rec = record(
                described, settings, keys[j], source, opts.device, n_scored=len(enc.sequences), n_before=n_before,
                adds_bos=enc.tokenizer_adds_bos, prepended=enc.prepended, seconds=new["seconds"],
                load_seconds=load_seconds, texts_per_s=new["texts_per_s"], tokens_per_s=new["tokens_per_s"],
                batch_tokens=info.get("batch_tokens", opts.batch_tokens or scorer.default_batch_tokens),
                mode=info.get("mode"), extra=extra,
            )
            items.append((o, keys[j], [kept[j], cks[j], new["frames"][j]], rec))
        meta = metadata_rows(metadata, outs, name, None if layers is None else scorer.layers,
                             quantisation=described.get("quantisation"))
        return store_vectors(store, items, positions, metadata=meta, replace=replace or any(k is not None for k in kept),
                             n_todo=len(todo), n_before=n_before, L=L, stride=opts.stride, seconds=new["seconds"],
                             texts_per_s=new["texts_per_s"], tokens_per_s=new["tokens_per_s"], label=name)
    finally:
        scorer.close()


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
