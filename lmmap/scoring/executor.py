"""Scoring on a Ray cluster: one Ray task per (model, shard of texts); this process alone writes the store.

:func:`score_models_ray` is what :func:`lmmap.scoring.driver.score_models`
runs with ``ExecutorOptions("ray")``. Everything that touches the store stays in the
driver (this process): which models are stored, which texts are checkpointed,
checkpointing each completed shard, writing the vector. A task only loads the
model through the same backend code path as the local executor
(:func:`~lmmap.scoring.registry.get_backend`, ``Backend.load``,
:func:`~lmmap.scoring.compute.iter_scores`; the record and the store write
from :mod:`lmmap.scoring.bookkeeping`) and returns plain arrays for its
shard — ``loglik``, ``n_tokens``, ``truncated`` — and what the record needs
(``scorer.describe()``, the context length, the revision). Workers therefore
need no shared filesystem with the driver: only lmmap installed and the model
reachable (a hub id, or a path that exists on every node).

Promises (the local path's):

- nothing lost: every completed shard is checkpointed by the driver into the
  store's ``partial/`` checkpoints at once, so an interrupted or failed run,
  rerun, scores only the shards it lacks; a worker that dies mid-task (a
  killed process, a lost node) has its task retried by Ray (``max_retries``);
- nothing duplicated: a task's result reaches the driver once (Ray delivers
  each object reference's value once), and the vector is written once;
- the same numbers: a shard is scored by the same code as the local
  executor, so with one shard per model the batches, and the numbers, are the
  local run's; the record equals the local run's but for timings and the
  ``executor``/``shards`` fields.

The settings key of a model's checkpoints needs its context length and
revision, which only a loaded model knows, and the driver never loads models.
So the driver *guesses* the key (the stored record's, or the one checkpoint
directory there is), skips the texts checkpointed under it, and checks the
guess when the first shard returns its true key; a wrong guess only costs
scoring the skipped texts after all.

With ``layers`` (the logit lens) a model has several outputs, one stored
vector per layer: a task returns a column per layer, the driver checkpoints
every layer's column and stores them all in one change. Which layers
``layers="all"`` names is guessed the same way (the layers the store holds of
the model) and checked by the first shard.

Ray is bound to loopback when lmmap starts it (no ``ray_address``): a private
instance on this machine that no other host can reach.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmmap.exceptions import InputError, ScoringError
from lmmap.progress import Tracker, say
from lmmap.scoring.bookkeeping import (
    ScoringSettings, already_stored, done_before, failure_of, failure_status, first_line, metadata_rows, record,
    resume_plan, settings_summary, store_vectors,
)
from lmmap.scoring.options import ExecutorOptions, ScoringOptions
from lmmap.scoring.protocol import ScoreStatus
# Ray retries a task whose worker died (a killed process, a lost node) this many times; an exception raised by
# the scoring code itself is not retried: it is the model's failure, reported once.
MAX_RETRIES = 3
CONNECT_TIMEOUT = 5.0  # seconds to wait for a Ray address to answer
# Models' record fields that describe the run, not the model: they may differ between executors.
TIMING_FIELDS = ("seconds", "load_seconds", "texts_per_s", "tokens_per_s")


def import_ray():
    """The ``ray`` module, or an :class:`InputError` that says how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError("{executor='ray'} needs Ray, which is not installed: pip install 'lmmap[ray]'",
                         params=("executor",)) from None
    return ray


def connect(ray_address: str | None = None, gpus_per_model: float | None = None):
    """Join a Ray cluster (or start a private one on loopback) and check it has the GPUs asked for; the ``ray`` module.

    An existing connection of this process (``ray.init`` called before) is used as it is.
    """
    ray = import_ray()
    if not ray.is_initialized():
        quiet = dict(log_to_driver=False, logging_level=logging.WARNING)
        if ray_address is None:
            _start_on_loopback(ray, quiet)
        else:
            target = _resolve(ray_address)
            host = _check_answers(ray_address, target)
            try:
                # A cluster on this machine's loopback (a test cluster, `ray start --head` bound to 127.0.0.1):
                # Ray would otherwise rewrite 127.0.0.1 into the machine's network address and wait for minutes.
                with _loopback_mode(host in LOOPBACK):
                    ray.init(address=target, **quiet)
            except Exception as exc:
                raise InputError(f"could not join the Ray cluster at {{ray_address={ray_address!r}}}: "
                                 f"{type(exc).__name__}: {_line(exc)}", params=("ray_address",)) from None
    if gpus_per_model:
        have = float(ray.cluster_resources().get("GPU", 0))
        where = f"at {ray_address}" if ray_address else "this process uses"
        if have < gpus_per_model:
            raise InputError(
                f"{{gpus_per_model={gpus_per_model:g}}}, but the Ray cluster {where} has "
                + (f"{have:g} GPU(s)" if have else "no GPUs") + " (score on CPUs: leave gpus_per_model out)",
                params=("gpus_per_model",),
            )
    return ray


LOOPBACK = ("127.0.0.1", "localhost", "::1")


class _loopback_mode:
    """Ray's single-machine mode while a Ray instance starts or is joined: every address is 127.0.0.1.

    By default Ray takes the machine's network address and listens on all
    interfaces. Its single-machine mode (what it does on macOS and Windows)
    binds loopback: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read by Ray's
    processes as they start (they inherit this environment) and, in this
    process, when ``ray`` was imported — hence the constant set as well. Both
    are restored on leaving, so that a later ``ray.init`` of the caller's
    behaves as Ray's default.
    """

    VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

    def __init__(self, on: bool = True):
        self.on = on

    def __enter__(self):
        if self.on:
            from ray._private import ray_constants

            self.constants = ray_constants
            self.old = os.environ.get(self.VAR), getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
            os.environ[self.VAR], ray_constants.ENABLE_RAY_CLUSTER = "0", False
        return self

    def __exit__(self, *exc):
        if self.on:
            old_env, old_flag = self.old
            if old_env is None:
                os.environ.pop(self.VAR, None)
            else:
                os.environ[self.VAR] = old_env
            self.constants.ENABLE_RAY_CLUSTER = old_flag
        return False


def _start_on_loopback(ray, quiet: dict) -> None:
    """Start a private Ray instance on this machine whose every socket listens on 127.0.0.1 only."""
    try:
        with _loopback_mode():
            ray.init(address="local", include_dashboard=False, **quiet)
    except Exception as exc:
        raise ScoringError(f"could not start a local Ray instance: {type(exc).__name__}: {_line(exc)}",
                           params=("executor",)) from None
    ips = {n["NodeManagerAddress"] for n in ray.nodes()}
    if ips != {"127.0.0.1"}:  # never leave an instance reachable from other hosts
        ray.shutdown()
        raise ScoringError(f"the local Ray instance did not bind loopback (it took {', '.join(sorted(ips))}); "
                           "start a cluster yourself and pass {ray_address}", params=("ray_address",))


def _resolve(address: str) -> str:
    """``auto`` → the ``HOST:PORT`` of the cluster started on this node (Ray's own lookup); others as they are."""
    if address != "auto":
        return address
    try:
        from ray._private.services import get_ray_address_from_environment

        found = get_ray_address_from_environment("auto", None)
    except Exception as exc:  # none recorded, or a Ray without this helper: Ray's own message
        raise InputError(f"no Ray cluster found for {{ray_address='auto'}} ({_line(exc)}); start one on this node with "
                         "`ray start --head`, or give HOST:PORT", params=("ray_address",)) from None
    if not found or found == "auto":
        raise InputError("no Ray cluster found for {ray_address='auto'} (none was started on this node with "
                         "`ray start --head`); give HOST:PORT", params=("ray_address",))
    return found


def _check_answers(address: str, target: str) -> str:
    """Fail fast, naming the address, when nothing listens there (Ray itself would retry for minutes); the host."""
    hostport = target[len("ray://"):] if target.startswith("ray://") else target
    host, _, port = hostport.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise InputError(f"ray_address must be auto, HOST:PORT or ray://HOST:PORT, got {address!r}",
                         params=("ray_address",))
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__).lower()
        where = "" if target == address else f" (the cluster last started on this node: {target})"
        raise InputError(f"no Ray cluster answers at {{ray_address={address!r}}}{where}: {reason} within "
                         f"{CONNECT_TIMEOUT:g} s; start one with `ray start --head` or check the address",
                         params=("ray_address",)) from None
    return host


def _line(exc: BaseException) -> str:
    return first_line(exc)


# -- the task -------------------------------------------------------------------------------


def score_shard(source: str, texts, text_pos: np.ndarray, options: ScoringOptions) -> dict:
    """Score the texts at ``text_pos`` (indices into ``texts``) with model ``source``: the body of one Ray task.

    Loads the model as the local executor does and returns plain data (no
    store): ``ok``; the shard's ``text_pos``, ``loglik`` (a column per layer
    with ``options.layers``, the logit lens), ``n_tokens``, ``truncated``;
    ``layers`` (the lensed layers, or None); ``max_length`` (L), ``revision``, ``describe``,
    ``default_batch_tokens``, ``adds_bos``, ``prepended``, ``info``,
    ``seconds``, ``load_seconds``, ``pid``. A failure of the model is returned
    (``ok`` False, ``failure``: a :func:`~lmmap.scoring.bookkeeping.failure_of`
    triple), not raised: Ray retries only a worker's death.
    """
    from lmmap.scoring.compute import iter_scores
    from lmmap.scoring.encoding import chat_template_id, encode_texts, resolve_max_length
    from lmmap.scoring.registry import get_backend

    text_pos = np.asarray(text_pos, dtype=np.int64)
    be = None
    try:
        be = get_backend(options.backend)
        t_load = time.perf_counter()
        scorer = be.load(source, **options.load_kwargs(be))
        try:
            load_seconds = time.perf_counter() - t_load
            L = resolve_max_length(scorer.context_length, options.max_length, options.stride)
            shard = [texts[i] for i in text_pos]
            enc = encode_texts(scorer.tokenizer, shard, options.convention, L, options.stride, text_pos,
                               chat_template=options.chat_template)
            layers = getattr(scorer, "layers", None)
            loglik = np.full((len(shard),) if layers is None else (len(shard), len(layers)), np.nan)
            info: dict = {}
            t0 = time.perf_counter()
            for part in iter_scores(scorer, shard, convention=options.convention, max_length=L,
                                    stride=options.stride, batch_tokens=options.batch_tokens,
                                    positions=text_pos, encoded=enc, info=info):
                loglik[part.index] = part.loglik
            return dict(
                ok=True, text_pos=text_pos, loglik=loglik, layers=None if layers is None else [int(k) for k in layers],
                n_tokens=np.asarray(enc.n_tokens, np.int64),
                truncated=np.asarray(enc.truncated, bool), max_length=L,
                revision=be.revision(source, options.revision), backend=be.name, describe=dict(scorer.describe()),
                chat_template=chat_template_id(scorer.tokenizer) if options.chat_template else None,
                default_batch_tokens=scorer.default_batch_tokens, adds_bos=bool(enc.tokenizer_adds_bos),
                prepended=enc.prepended, info=info, seconds=time.perf_counter() - t0, load_seconds=load_seconds,
                pid=os.getpid(),
            )
        finally:
            scorer.close()
    except Exception as exc:  # the model's failure, reported by the driver like the local executor's
        return dict(ok=False, failure=failure_of(exc, be), pid=os.getpid())


# -- the driver -----------------------------------------------------------------------------


@dataclass
class _Job:
    """One model's scoring: what is kept, what is queued, what came back.

    A model writes one stored vector, or one per layer with ``layers`` (the
    logit lens): its *outputs*. They are scored, checkpointed and stored
    together, as by the local executor.
    """

    source: str
    name: str
    opts: ScoringOptions
    positions: np.ndarray
    replace: bool = False
    progress: object = None
    metadata: dict | None = None  # stored with a plain model's vector (a trajectory's checkpoint: its step)
    outs: list | None = None  # the outputs' names; None until a task says which layers "all" is
    existing: list = field(default_factory=list)  # per output: its stored rows (a DataFrame) when extended, or None
    guesses: list | None = None  # per output: the checkpoint key whose texts were skipped, until a shard confirms it
    ck: list | None = None  # per output: the checkpointed rows kept (DataFrames, the same texts for every output)
    # texts not queued: stored, or checkpointed under the guessed keys
    skipped: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    keys: list | None = None  # per output: the settings key, from the first shard
    settings: object = None
    shard_size: int | None = None
    in_flight: int = 0
    queued: int = 0
    n_shards: int = 0
    n_todo: int = 0
    results: list = field(default_factory=list)
    status: ScoreStatus | None = None


def score_models_ray(store, be, models, positions, where: ExecutorOptions, *, replace: bool = False,
                     progress=None) -> dict[str, ScoreStatus]:
    """:func:`~lmmap.scoring.driver.score_models` with ``ExecutorOptions("ray")`` (arguments already checked there).

    ``be``: the resolved backend (its failure hints; sent to every task,
    which loads its model with it); ``models``: ``(source, name,
    ScoringOptions, metadata)`` of each model; ``where``: the cluster, GPUs
    and shard size.
    """
    from lmmap.data.store import Interrupted

    ray_address, gpus_per_model, shard_texts = where.ray_address, where.gpus_per_model, where.shard_texts
    import_ray()  # not installed: say so before any work
    statuses: dict[str, ScoreStatus] = {}
    counts = dict(models=0, texts=0, texts_total=0, tokens=0, failed=0)
    jobs: list[_Job] = []
    queue: deque = deque()
    for source, name, opts, metadata in models:
        job = _Job(source, name, opts, positions, replace=replace, progress=progress, metadata=metadata,
                   shard_size=shard_texts)
        try:
            skipped = _prepare(store, job)
        except Exception as exc:
            skipped = _failure(job, exc, be)
        if skipped is not None:
            counts["models" if skipped.ok else "failed"] += 1
            _finish(job, skipped, statuses, progress)
            continue
        jobs.append(job)
        todo = np.setdiff1d(job.positions, job.skipped)
        counts["texts_total"] += len(todo)
        # A model with nothing left to score still gets one (empty) task: its settings key and its record.
        for shard in _shards(todo, shard_texts) or [todo]:
            queue.append((job, shard))
            job.queued += 1
    if not jobs:  # nothing to score: no cluster needed
        return {name: statuses[name] for _, name, _, _ in models}

    ray = connect(ray_address, gpus_per_model)
    resources = ray.cluster_resources()
    gpus = float(gpus_per_model or 0)
    slots = int(resources.get("GPU", 0) // gpus) if gpus else int(resources.get("CPU", 1))
    # Two tasks per slot in flight: a worker that finishes finds the next task queued, and a failed model's
    # later shards are mostly not submitted yet.
    window = max(2, 2 * slots)
    # A GPU task runs in a fresh worker process (max_calls=1, Ray's default for GPU tasks): a process that has
    # initialised CUDA cannot move to the GPU Ray gives its next task, nor give back all the memory it held
    # (ray-project/ray#29624). It costs importing torch again per task (~5 s here on CPU). CPU workers are
    # reused: the import is paid once per worker.
    remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=MAX_RETRIES, max_calls=1 if gpus else 0)(score_shard)
    texts_ref = ray.put(list(store.texts.texts))
    # Each model's options go to the object store once, not once per task. They carry the backend object made
    # here, not its name: a backend registered in this process (register_backend) is unknown to the workers.
    opts_refs: dict = {}
    pending: dict = {}
    n_models = len(models)
    label = f"scoring {n_models} model{'s' if n_models != 1 else ''} on Ray"

    def submit():
        while queue and len(pending) < window:
            job, shard = queue.popleft()
            job.queued -= 1
            if job.status is not None:
                continue
            if id(job) not in opts_refs:
                opts_refs[id(job)] = ray.put(job.opts.replace(backend=be))
            ref = remote.remote(job.source, texts_ref, shard, opts_refs[id(job)])
            pending[ref] = (job, shard)
            job.in_flight += 1
            job.n_shards += 1

    def cancel(job=None):
        # A failed model's other shards are interrupted, their workers kept (force=False); Ctrl-C stops all
        # tasks at once, killing their workers (force=True): the worker processes are Ray's, not the user's.
        for ref, (j, _) in list(pending.items()):
            if job is None or j is job:
                try:
                    ray.cancel(ref, force=job is None)
                except Exception:  # already finished, or its worker is gone
                    pass

    with Tracker(progress, label, None, unit="tokens") as tracker:
        def report(tokens: int = 0):
            running = len({id(j) for j, _ in pending.values()})
            if counts["texts"]:  # the total in tokens is estimated from the texts done: ETA
                tracker.total = max(tracker.done, counts["tokens"] / counts["texts"] * max(counts["texts_total"], 1))
            tracker.advance(tokens, models=counts["models"], models_total=n_models, texts=counts["texts"],
                            texts_total=counts["texts_total"], running=float(running), failed=float(counts["failed"]))

        try:
            submit()
            report()
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                if not ready:
                    continue
                ref = ready[0]
                job, shard = pending.pop(ref)
                job.in_flight -= 1
                try:
                    res = ray.get(ref)
                except ray.exceptions.TaskCancelledError:
                    continue
                except ray.exceptions.RayError as exc:  # its worker died on every try (or the node is gone)
                    kept = len(job.results)
                    res = dict(ok=False, failure=("other", (
                        f"a Ray worker died while scoring {len(shard)} of its texts, on all {MAX_RETRIES + 1} tries "
                        f"({type(exc).__name__}: {_line(exc)}); its {kept} completed shard(s) are kept: rerun to resume"
                    ), ()))
                if job.status is not None:
                    continue
                try:
                    tokens, requeued = _take(store, job, res, queue)
                    counts["texts_total"] += requeued
                except Interrupted:
                    raise
                except Exception as exc:
                    job.status = _failure(job, exc, be)
                    tokens = 0
                if job.status is None and res.get("ok"):
                    counts["texts"] += len(res["text_pos"])
                    counts["tokens"] += tokens
                    report(tokens)  # the shard is checkpointed: Ctrl-C from here on keeps it
                    if not job.in_flight and not job.queued:
                        try:
                            job.status = _store(store, job)
                        except Interrupted as exc:
                            raise Interrupted(f"{job.name!r}: {exc}{done_before(statuses)}") from None
                        except Exception as exc:
                            job.status = _failure(job, exc, be)
                if job.status is not None:
                    cancel(job)  # a failed model's other shards; a model found stored has none left
                    if not job.status.ok:
                        counts["failed"] += 1
                    else:
                        counts["models"] += 1
                    _finish(job, job.status, statuses, progress)
                    report()
                submit()
        except KeyboardInterrupt:
            cancel()
            kept = {j.name: sum(len(r["text_pos"]) > 0 for r in j.results) for j in jobs if j.status is None}
            kept = {name: n for name, n in kept.items() if n}
            what = (", ".join(f"{n} shard(s) of {name!r}" for name, n in kept.items()) + " kept; rerun the same "
                    "command to resume") if kept else "no shard of an unfinished model was completed"
            raise Interrupted(what + done_before(statuses)) from None
    return {name: statuses[name] for _, name, _, _ in models}


def _finish(job: _Job, status: ScoreStatus, statuses: dict, progress) -> None:
    statuses[job.name] = status
    say(progress, f"{status.status} {job.name}" + (f": {status.message}" if status.message else ""), status.params)


def _failure(job: _Job, exc: Exception, be) -> ScoreStatus:
    return failure_status(job.name, failure_of(exc, be), job.opts.dtype)


def _shards(todo: np.ndarray, size: int | None) -> list[np.ndarray]:
    if len(todo) == 0:
        return []
    size = len(todo) if size is None else int(size)
    return [todo[i:i + size] for i in range(0, len(todo), size)]


def _checkpoint_keys(store, name: str) -> list[str]:
    """The settings keys under which checkpoint chunks of ``name`` are kept (the store knows where)."""
    return store.checkpoint_keys(name)


def _outputs(store, job: _Job) -> list[str] | None:
    """The stored models ``job`` writes: its name, or one per lensed layer (None: ``layers="all"``, not known yet).

    Which layers ``"all"`` is, only the loaded model knows. Until a task
    says, the layers this store holds of the model, stored or checkpointed,
    are the guess (:func:`_is_guess`): every layer is checkpointed and stored
    together, so a run of ``"all"`` left all of them.
    """
    from lmmap.scoring.layers import layer_name

    layers = job.opts.layers
    if layers is None:
        return [job.name]
    if layers != "all":
        return [layer_name(job.name, k) for k in layers]
    outs: list[str] = []
    while store.has_model(o := layer_name(job.name, len(outs))) or _checkpoint_keys(store, o):
        outs.append(o)
    return outs or None


def _is_guess(job: _Job) -> bool:
    return job.opts.layers == "all"


def _stored_rows(store, outs: list[str], replace: bool) -> list:
    return [store.vectors(o) if not replace and store.has_model(o) else None for o in outs]


def _prepare(store, job: _Job) -> ScoreStatus | None:
    """What is already done for ``job`` (stored rows, checkpointed rows under the guessed keys); a status if all is."""
    job.outs = outs = _outputs(store, job)
    if outs is None:
        return None
    job.existing = _stored_rows(store, outs, job.replace)
    # Guessed outputs (layers="all") all stored are checked by a task, which loads the model and tells its layers.
    if not job.replace and not _is_guess(job):
        done = already_stored(store, outs, job.positions, job.name, rows=job.existing)
        if done is not None:
            return done
    keys = [_checkpoint_keys(store, o) for o in outs]
    guesses = [store.record(o).get("settings_key") if e is not None else k[0] if len(k) == 1 else None
               for o, e, k in zip(outs, job.existing, keys)]
    cks = None
    # Loading a checkpoint removes the other keys' chunks: only when the guessed key's are the only ones.
    if all(g is not None and k == [g] for g, k in zip(guesses, keys)):
        cks = [store.load_checkpoint(o, g) for o, g in zip(outs, guesses)]
        job.guesses = guesses
    todo, resumed = resume_plan(job.positions, job.existing, cks)
    if cks is not None:
        job.ck = [c[c["text_pos"].isin(resumed)] for c in cks]
    job.skipped = np.setdiff1d(job.positions, todo)
    return None


def _take(store, job: _Job, res: dict, queue: deque) -> tuple[int, int]:
    """Take one shard's result for ``job``: check its keys (the first), checkpoint it for every output.

    Returns its tokens (0 when the model failed) and how many texts were
    queued again (those skipped on a guess the first shard shows wrong).
    """
    from lmmap.scoring.layers import layer_name

    if not res["ok"]:
        job.status = failure_status(job.name, res["failure"], job.opts.dtype)
        return 0, 0
    opts = job.opts
    lensed = res.get("layers")
    options = {}
    if res.get("chat_template"):
        options["chat_template"] = res["chat_template"]
    if lensed is not None:
        options["final_norm"] = res["describe"].get("final_norm")
    settings = ScoringSettings(opts.convention, opts.dtype, int(res["max_length"]), opts.stride,
                               res["revision"], store.text_set_id, res["backend"], options)
    outs = [job.name] if lensed is None else [layer_name(job.name, k) for k in lensed]
    keys = [settings.key(o) for o in outs]
    requeued = 0
    if job.keys is None:
        requeued = _confirm(store, job, outs, keys, queue)
        job.keys, job.settings = keys, settings
        if job.status is not None:  # every layer of "all" was stored already
            return 0, 0
    elif keys != job.keys:
        raise ScoringError(f"model {job.name!r}: two shards were scored under different settings "
                           f"({job.settings.max_length}/{job.settings.revision} and {res['max_length']}/"
                           f"{res['revision']}); is the model the same on every node?")
    n = len(res["text_pos"])
    if n:
        loglik = np.asarray(res["loglik"])
        for j, (o, k) in enumerate(zip(outs, keys)):
            store.save_checkpoint(o, k, res["text_pos"], loglik if loglik.ndim == 1 else loglik[:, j],
                                  res["n_tokens"], res["truncated"])
    job.results.append(res)
    job.n_todo += n
    return int(np.sum(res["n_tokens"])), requeued


def _confirm(store, job: _Job, outs: list[str], keys: list[str], queue: deque) -> int:
    """The first shard's true outputs and keys against the guesses: requeue what was skipped wrongly; how many texts."""
    if _is_guess(job) and not job.replace:
        # As the local executor, which loads the model to learn its layers: all stored is skipped, whatever the
        # settings asked.
        job.status = already_stored(store, outs, job.positions, job.name)
        if job.status is not None:
            return 0
    again = np.zeros(0, np.int64)
    if outs != job.outs:
        # layers="all" of a model whose layers in the store are another set: nothing skipped stands
        again, job.skipped, job.ck = job.skipped, np.zeros(0, np.int64), None
        job.outs, job.existing = outs, _stored_rows(store, outs, job.replace)
    for o, rows, k in zip(outs, job.existing, keys):
        if rows is not None and store.record(o).get("settings_key") != k:
            raise InputError(
                f"model {o!r} is already in the store on {len(rows)} texts under other settings "
                f"({settings_summary(store.record(o))}), and lacks some of the texts asked for; pass {{replace=True}} "
                "to rescore it", params=("replace",),
            )
    if job.ck is not None and job.guesses != keys:
        # The checkpoints were written under other settings: their texts must be scored after all.
        from_ck = job.ck[0]["text_pos"].to_numpy().astype(np.int64)
        again, job.skipped, job.ck = np.union1d(again, from_ck), np.setdiff1d(job.skipped, from_ck), None
    for shard in reversed(_shards(again, job.shard_size)):
        queue.appendleft((job, shard))
        job.queued += 1
    for o, k in zip(outs, keys):
        store.load_checkpoint(o, k)  # removes chunks of other settings, as the local executor does
    if job.ck is not None and len(job.ck[0]):
        say(job.progress, f"{job.name}: resuming from a checkpoint: {len(job.ck[0])} of "
            f"{len(job.positions)} texts already scored")
    return len(again)


def _store(store, job: _Job) -> ScoreStatus:
    """All shards of ``job`` are in: write its vectors and records in one change (the local executor's code)."""
    import pandas as pd

    opts = job.opts
    res = [r for r in job.results if r["ok"]]
    scored = [r for r in res if len(r["text_pos"])]
    first = (scored or res)[0]
    lensed = first.get("layers")
    width = 1 if lensed is None else len(lensed)
    pos = np.concatenate([r["text_pos"] for r in res]).astype(np.int64)
    loglik = np.concatenate([np.asarray(r["loglik"], np.float64).reshape(len(r["text_pos"]), width) for r in res])
    n_tokens = np.concatenate([r["n_tokens"] for r in res]).astype(np.int64)
    truncated = np.concatenate([r["truncated"] for r in res]).astype(bool)
    seconds = float(sum(r["seconds"] for r in res))
    tokens = int(n_tokens.sum())
    texts_per_s = len(pos) / seconds if seconds > 0 else 0.0
    tokens_per_s = tokens / seconds if seconds > 0 else 0.0
    n_before = len(job.positions) - job.n_todo
    info = first["info"]
    items = []
    for j, (o, key) in enumerate(zip(job.outs, job.keys)):
        new = pd.DataFrame({"text_pos": pos, "loglik": loglik[:, j], "n_tokens": n_tokens, "truncated": truncated})
        ck = None if job.ck is None else job.ck[j]
        rows = job.existing[j] if job.existing else None
        if rows is not None:  # the stored rows this run did not score again
            fresh = pos if ck is None else np.union1d(pos, ck["text_pos"].to_numpy())
            rows = rows[~rows["text_pos"].isin(fresh)]
        extra = {"executor": "ray", "shards": len(scored), **job.settings.options}
        if lensed is not None:
            extra.update(layer=int(lensed[j]), layers_of=job.name)
        rec = record(
            first["describe"], job.settings, key, job.source, opts.device, n_scored=job.n_todo,
            n_before=n_before, adds_bos=first["adds_bos"], prepended=first["prepended"], seconds=seconds,
            load_seconds=float(sum(r["load_seconds"] for r in res)), texts_per_s=texts_per_s,
            tokens_per_s=tokens_per_s, batch_tokens=info.get("batch_tokens", opts.batch_tokens
                                                             or first["default_batch_tokens"]),
            mode=info.get("mode"), extra=extra,
        )
        items.append((o, key, [rows, ck, new], rec))
    meta = metadata_rows(job.metadata, job.outs, job.name, lensed, quantisation=first["describe"].get("quantisation"))
    return store_vectors(store, items, job.positions, metadata=meta,
                         replace=job.replace or any(e is not None for e in job.existing), n_todo=job.n_todo,
                         n_before=n_before, L=job.settings.max_length, stride=opts.stride, seconds=seconds,
                         texts_per_s=texts_per_s, tokens_per_s=tokens_per_s, label=job.name)
