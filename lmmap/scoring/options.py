"""How to score (:class:`ScoringOptions`) and where (:class:`ExecutorOptions`): frozen, checked on construction.

:func:`lmmap.scoring.score_models` takes one of each; the analyses that score
(``add_models``, ``place_adaptive``) pass them through unchanged. A bad value
is refused when the options are built, before any store is opened or model
loaded, in one line naming the parameter, what it may be, and what it was::

    ScoringOptions(device="cpu", dtype="bfloat16", batch_tokens=4096)
    ExecutorOptions("ray", shard_texts=500)

What a backend alone can check (its devices and dtypes, whether it takes a
backend-specific option such as ``packing``) is checked by
:meth:`ScoringOptions.check_for` once the backend is known.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from dataclasses import dataclass

from lmmap.exceptions import InputError
from lmmap.params import check
from lmmap.scoring.protocol import Backend

DEFAULT_CHECKPOINT_EVERY = 60.0  # seconds between checkpoints
# Options that only some backends' ``load`` takes, with what they let a backend do (for the message when one
# cannot): a backend lists those it takes in its ``load_options`` attribute.
BACKEND_SPECIFIC = {
    "packing": "pack rows",
    "layers": "score layers",
    "final_norm": "score layers",
    "base_url": "reach a server",
    "api_key_env": "use an API key",
    "tokenizer": "take a separate tokenizer",
    "concurrency": "send concurrent requests",
}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class ScoringOptions:
    """How models are loaded and their texts scored (everything but which models, texts and executor).

    backend : a registered name (``"hf"``: transformers, ``"vllm"``, ``"fake"``,
        or one a plug-in registers, :mod:`lmmap.scoring.registry`) or a
        :class:`~lmmap.scoring.protocol.Backend` object.
    device, dtype, trust_remote_code, revision, device_map, logits_memory :
        how the backend loads and runs a model.
    convention, max_length, stride : how texts are scored (SPEC §2, :mod:`lmmap.scoring.encoding`).
    batch_tokens : padded tokens per batch (default: the backend's for the device).
    checkpoint_every : seconds between checkpoints (0: after every batch).
    chat_template : wrap texts with prompts in the tokenizer's chat template.
    packing : ``backend="hf"``: ``auto``, ``on`` or ``off`` (:mod:`lmmap.scoring.hf`).
    layers, final_norm : ``backend="hf"``: the logit lens (``"all"`` or layer indices,
        normalised to ``"all"`` or a sorted tuple; :mod:`lmmap.scoring.layers`).
    base_url, api_key_env : for a backend that scores through a server: its
        URL (``http://`` or ``https://``) and the *name* of the environment
        variable holding its API key (never the key itself: options are
        recorded and sent to workers).
    tokenizer, concurrency : ``backend="openai"``: the served model's tokenizer
        (a hub id or directory) and the requests in flight at once
        (:mod:`lmmap.scoring.openai`).
    """

    backend: "str | Backend" = "hf"
    device: str = "auto"
    dtype: str = "float32"
    convention: str = "reference"
    batch_tokens: int | None = None
    max_length: int | None = None
    stride: int | None = None
    trust_remote_code: bool = False
    revision: str | None = None
    device_map: str | None = None
    logits_memory: int | None = None
    checkpoint_every: float = DEFAULT_CHECKPOINT_EVERY
    chat_template: bool = False
    packing: str = "auto"
    layers: "str | tuple[int, ...] | None" = None
    final_norm: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    tokenizer: str | None = None
    concurrency: int | None = None

    def __post_init__(self):
        from lmmap.data.conventions import check_convention
        from lmmap.scoring.layers import parse_layers
        from lmmap.scoring.registry import backend_names, is_backend, unknown_backend_message

        if isinstance(self.backend, str):
            if self.backend not in backend_names():
                raise InputError(unknown_backend_message(self.backend), params=("backend",))
        elif not is_backend(self.backend):
            raise InputError(unknown_backend_message(self.backend), params=("backend",))
        # device and dtype: which are allowed is the backend's to say (check_for), once it is known.
        check_convention(self.convention)
        # The ranges and their messages are the parameter spec's (lmmap.params), as on the command line.
        for param in ("batch_tokens", "max_length", "stride", "checkpoint_every", "packing", "concurrency"):
            object.__setattr__(self, param, check(param, getattr(self, param)))
        value = self.logits_memory  # library-only (no flag): bytes the logits of one batch may take
        if value is not None and (not _whole(value) or value < 1):
            raise InputError(f"logits_memory must be a positive integer (bytes), got {value!r}",
                             params=("logits_memory",))
        if value is not None:
            object.__setattr__(self, "logits_memory", int(value))
        for param in ("trust_remote_code", "chat_template"):
            if not isinstance(getattr(self, param), bool):
                raise InputError(f"{param} must be True or False, got {getattr(self, param)!r}", params=(param,))
        for param in ("revision", "device_map", "final_norm", "tokenizer"):
            value = getattr(self, param)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InputError(f"{param} must be a non-empty string or None, got {value!r}", params=(param,))
        object.__setattr__(self, "layers", parse_layers(self.layers))  # "1,3" and [3, 1] mean (1, 3)
        if self.final_norm is not None and self.layers is None:
            raise InputError("final_norm needs layers (it names the norm the logit lens applies)",
                             params=("final_norm",))
        if self.base_url is not None and (not isinstance(self.base_url, str)
                                          or not re.fullmatch(r"https?://[^\s/]+(/\S*)?", self.base_url)):
            raise InputError(f"base_url must be an http:// or https:// URL, got {self.base_url!r}",
                             params=("base_url",))
        if self.base_url is not None and "@" in self.base_url.split("://", 1)[1].split("/", 1)[0]:
            # The URL is not repeated: what precedes the @ is a password.
            raise InputError("base_url must not hold credentials (USER:PASSWORD@HOST): put the API key in an "
                             "environment variable and name it with {api_key_env=NAME}",
                             params=("base_url", "api_key_env"))
        if self.api_key_env is not None and (not isinstance(self.api_key_env, str)
                                             or not _ENV_NAME.fullmatch(self.api_key_env)):
            shown = self.api_key_env if not isinstance(self.api_key_env, str) else f"{len(self.api_key_env)} characters"
            # The value may be a key pasted by mistake: its length is shown, never the value.
            raise InputError(f"api_key_env must name an environment variable (such as OPENAI_API_KEY) that holds "
                             f"the key, not the key itself; got {shown}", params=("api_key_env",))

    def replace(self, **changes) -> "ScoringOptions":
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    def backend_name(self) -> str:
        return self.backend if isinstance(self.backend, str) else str(getattr(self.backend, "name", self.backend))

    def check_for(self, backend: Backend) -> None:
        """Raise :class:`InputError` for an option ``backend`` cannot use (its device and dtype, its specific options).

        Nothing is loaded.
        """
        takes = set(getattr(backend, "load_options", ()))
        # What the backend cannot do at all is said before what it lacks here (vLLM not installed, a device).
        for param, can in BACKEND_SPECIFIC.items():
            value = getattr(self, param)
            if value != _DEFAULTS[param] and param not in takes:
                # Mentions in braces: the command line shows flags ("--backend vllm cannot score layers").
                raise InputError(f"{{backend={backend.name!r}}} cannot {can} ({{{param}={_shown(value)}}})"
                                 f"{_who(param)}", params=("backend", param))
        backend.check(device=self.device, dtype=self.dtype)

    def load_kwargs(self, backend: Backend) -> dict:
        """The keyword arguments of ``backend.load``: the common ones, and the backend-specific ones that are set.

        A backend-specific option left at its default is not passed, so a
        backend whose ``load`` lacks it (a plug-in written before it
        existed) still loads.
        """
        kw = dict(device=self.device, dtype=self.dtype, trust_remote_code=self.trust_remote_code,
                  revision=self.revision, device_map=self.device_map, logits_memory=self.logits_memory)
        takes = set(getattr(backend, "load_options", ()))
        kw.update({p: getattr(self, p) for p in BACKEND_SPECIFIC if p in takes and getattr(self, p) != _DEFAULTS[p]})
        return kw


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ScoringOptions)}


def _shown(value) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return repr(value)


def _who(param: str) -> str:
    """``; use {backend='hf'}``: the registered backends that take ``param`` (none found: nothing)."""
    from lmmap.scoring.registry import backend_class, backend_names

    who = [n for n in backend_names() if param in getattr(backend_class(n), "load_options", ())]
    return f"; use {' or '.join(f'{{backend={n!r}}}' for n in who)}" if who else ""


@dataclass(frozen=True)
class ExecutorOptions:
    """Where models are scored.

    executor : ``"local"`` (this process, one model after another) or
        ``"ray"``: one Ray task per (model, shard of texts)
        (:mod:`lmmap.scoring.executor`); ``pip install 'lmmap[ray]'``.
    ray_address : ``"ray"`` only: the cluster to join (``"auto"``, ``"HOST:PORT"``,
        ``"ray://HOST:PORT"``); default a private instance on loopback.
    gpus_per_model : ``"ray"`` only: GPUs each task asks for (default 0).
    shard_texts : ``"ray"`` only: texts per task (default: all of a model's).
    """

    executor: str = "local"
    ray_address: str | None = None
    gpus_per_model: float | None = None
    shard_texts: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "executor", check("executor", self.executor))
        if self.executor == "local":
            for param in ("ray_address", "gpus_per_model", "shard_texts"):
                value = getattr(self, param)
                if value is not None:
                    raise InputError(f"{{{param}={value}}} needs {{executor='ray'}} (the local executor scores in "
                                     "this process)", params=(param, "executor"))
            return
        for param in ("shard_texts", "gpus_per_model"):
            object.__setattr__(self, param, check(param, getattr(self, param)))
        if self.ray_address is not None and (not isinstance(self.ray_address, str) or not self.ray_address.strip()):
            raise InputError(f"ray_address must be auto, HOST:PORT or ray://HOST:PORT, got {self.ray_address!r}",
                             params=("ray_address",))

    def replace(self, **changes) -> "ExecutorOptions":
        return dataclasses.replace(self, **changes)


SCORING_FIELDS = tuple(f.name for f in dataclasses.fields(ScoringOptions))
EXECUTOR_FIELDS = tuple(f.name for f in dataclasses.fields(ExecutorOptions))


def resolve_options(options: ScoringOptions | None = None, executor: "ExecutorOptions | str | None" = None,
                    **keywords) -> tuple[ScoringOptions, ExecutorOptions]:
    """``(ScoringOptions, ExecutorOptions)`` from options objects and loose keywords (their field names).

    A keyword given overrides that field of ``options`` (or of the
    defaults): ``score_models(store, models, options=opts, convention="full")``.
    ``executor`` may be the executor's name, as before the options objects.
    An unknown keyword is refused naming the closest field.
    """
    if options is not None and not isinstance(options, ScoringOptions):
        raise InputError(f"options must be a ScoringOptions, got {type(options).__name__}", params=("options",))
    if isinstance(executor, str):
        keywords.setdefault("executor", executor)
        executor = None
    elif executor is not None and not isinstance(executor, ExecutorOptions):
        raise InputError(f"executor must be 'local', 'ray' or an ExecutorOptions, got {executor!r}",
                         params=("executor",))
    unknown = [k for k in keywords if k not in SCORING_FIELDS and k not in EXECUTOR_FIELDS]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], SCORING_FIELDS + EXECUTOR_FIELDS, n=1)
        raise InputError(f"{unknown[0]} is not a scoring option" + (f"; did you mean {close[0]}?" if close else
                         f" (ScoringOptions fields: {', '.join(SCORING_FIELDS)})"), params=(unknown[0],))
    scoring = {k: v for k, v in keywords.items() if k in SCORING_FIELDS}
    where = {k: v for k, v in keywords.items() if k in EXECUTOR_FIELDS}
    options = options or ScoringOptions()
    executor = executor or ExecutorOptions()
    return (options.replace(**scoring) if scoring else options,
            executor.replace(**where) if where else executor)
