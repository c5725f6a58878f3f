"""The Hugging Face transformers backend: causal LMs from a directory or the hub (SPEC §2).

torch and transformers are imported when a model is loaded or scored, never
when this module is imported. :class:`HFBackend` loads a model into an
:class:`HFScorer` (the :class:`~lmmap.scoring.protocol.Scorer` the driver
uses); :func:`score_texts` scores texts under a model and tokenizer already
loaded (e.g. in a notebook).

Speed and memory: the driver cuts texts into batches of at most
``batch_tokens`` padded tokens. The model's decoder runs once per batch; its
hidden states at the scored positions only (never at padding) go through the
output layer in tiles of positions × vocabulary entries, each tile's logits in
float32, the log-normaliser accumulated across tiles (running maximum and
rescaled sum) and the target logit picked from its tile. So no
batch×length×vocabulary tensor exists: at most ``logits_memory`` bytes of
logits, however large the vocabulary. Models whose output is not
``lm_head(decoder(x))`` (logit soft-capping, scaling) are detected by a probe
at load time and scored from their own full logits instead, with batches
shrunk to keep those under ``FALLBACK_LOGITS_MEMORY``.

Padding-free batches (``packing``): rows are laid end to end with
``position_ids`` restarting at 0 for each, and transformers (5.x) turns
those into a block-diagonal causal mask for SDPA and eager attention, or
``cu_seqlens`` for flash attention's varlen kernels (passed explicitly, so no
layer has to infer them). A probe at load time checks that a model scores
packed rows as it scores them padded, else batches stay padded and the mode
says why. On CUDA, without ``batch_tokens``, the budget is sized from free
GPU memory (:func:`cuda_batch_tokens`); a batch that still runs out of memory
is split in two and retried, and the budget lowered (:meth:`HFScorer.score`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import re
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from lmmap.exceptions import InputError, ScoringError
from lmmap.progress import ProgressFn
from lmmap.scoring.bookkeeping import first_line
from lmmap.scoring.encoding import scored_positions

if TYPE_CHECKING:  # annotations only: torch is imported when a model is loaded
    import torch

DTYPES = ("float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda", "mps")
# Padded tokens per batch. On a CPU, ~1,000 tokens already make the matrix products run at full
# rate, and larger batches are slower (measured: 1,024 beat 4,096 by ~10% for a 6×512 GPT-2) because
# the activations fall out of cache; GPUs want many more.
DEFAULT_BATCH_TOKENS = {"cpu": 1024, "mps": 8192, "cuda": 32768}
# Bytes of logits alive at once (float32, plus the half-precision ones they come from), and the
# vocabulary entries per tile. On a CPU, tiles of 1,024 positions × 2,048 entries (8 MiB) stay in cache,
# which runs the output layer about 1.4× faster than whole-vocabulary chunks; a GPU wants big tiles.
DEFAULT_LOGITS_MEMORY = {"cpu": 8 * 2**20, "mps": 256 * 2**20, "cuda": 512 * 2**20}
DEFAULT_VOCAB_BLOCK = {"cpu": 2048}
# Models scored through their own forward (see LogProbComputer) hold B×T×V logits: batches keep them under this.
FALLBACK_LOGITS_MEMORY = 2 * 2**30
# Packing (padding-free batches): "auto" packs where it saves work, "on" wherever the model allows it, "off" never.
# A CUDA token budget sized from free memory (see cuda_batch_tokens) stays within these: below the floor a GPU
# idles between kernels; above the ceiling nothing is gained and one out-of-memory retry costs more.
CUDA_BATCH_TOKENS_RANGE = (2048, 131072)
# Any of these in a model directory means its tokenizer was saved with it.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model",
                   "vocab.txt", "sentencepiece.bpe.model", "merges.txt", "tiktoken.model")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")


def _torch():
    """torch, or an error saying how to install it."""
    try:
        import torch
        import transformers  # noqa: F401  (needed too: fail here, not at load time)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ScoringError(
            "scoring models needs torch and transformers: pip install 'lmmap[models]' "
            "(install the torch build for your machine first)"
        ) from exc
    return torch


# -- settings -----------------------------------------------------------------------------


def check_device(device: str) -> str:
    """``device`` if it names a device lmmap knows (torch is not needed to check it)."""
    if device not in DEVICES and not re.fullmatch(r"cuda:\d+", str(device)):
        raise InputError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), got {device!r}", params=("device",))
    return device


def resolve_device(device: str = "auto") -> "torch.device":
    """``auto`` picks cuda, then mps, then cpu; an explicit device must exist."""
    check_device(device)
    torch = _torch()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"{{device={device!r}}} cannot be used: no CUDA GPU is visible to torch {torch.__version__}; "
                         "use {device='cpu'}",
                         params=("device",))
    if device == "mps" and not mps:
        raise InputError("{device='mps'} cannot be used: the Apple MPS backend is not available here; use {device='cpu'}",
                         params=("device",))
    return torch.device(device)


def resolve_dtype(dtype: str) -> "torch.dtype":
    if str(dtype) not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}", params=("dtype",))
    return getattr(_torch(), str(dtype))


def check_packing(packing: str) -> str:
    """``packing`` if it is one of ``auto``, ``on``, ``off`` (the parameter spec's choices)."""
    from lmmap.params import check

    return check("packing", packing)


def cuda_batch_tokens(free_bytes: int, *, hidden_size: int, intermediate_size: int, vocab_size: int,
                      dtype_bytes: int, logits_memory: int, logits_mode: bool = False, hidden_states: int = 0,
                      reserve_bytes: int = 2 * 2**30, fraction: float = 0.5) -> int:
    """Tokens per batch that fit in ``free_bytes`` of GPU memory (a pure function of these numbers).

    Under ``inference_mode`` a decoder frees each layer's activations as the
    next begins, so the number of layers does not matter (the weights are
    already out of ``free_bytes``): the peak is one layer's working set per
    token, in the model's dtype — the residual stream and its normalised
    copy, q, k, v and the attention output (≤ 6 × hidden, fewer with grouped
    keys), the gated MLP's gate, up and product (3 × intermediate), and the
    decoder's last hidden states with the copy gathered at scored positions
    (2 × hidden). The output layer's float32 tiles are bounded by
    ``logits_memory`` whatever the batch; a model scored through its own
    forward (``logits_mode``) also holds its batch × vocabulary logits, and
    the logit lens keeps every layer's states (``hidden_states`` entries of
    ``hidden`` per token) until the forward ends. Of
    what is left after ``reserve_bytes`` (allocator fragmentation, kernels'
    workspaces) ``fraction`` is used: an out-of-memory batch is split and
    retried anyway, but each retry costs a forward.
    """
    per_token = dtype_bytes * (8 * hidden_size + 3 * intermediate_size + (vocab_size if logits_mode else 0)
                               + hidden_states * hidden_size)
    usable = (free_bytes - reserve_bytes - logits_memory) * fraction
    lo, hi = CUDA_BATCH_TOKENS_RANGE
    tokens = int(usable // per_token) if usable > 0 else 0
    # Multiples of 256 tokens keep the matrix products' shapes friendly to the tensor cores.
    return int(min(hi, max(lo, tokens // 256 * 256)))


def model_batch_tokens_for_cuda(model, logits_memory: int, logits_mode: bool, hidden_states: int = 0) -> int:
    """:func:`cuda_batch_tokens` for a loaded model on its (first) GPU, from ``torch.cuda.mem_get_info``."""
    import torch

    cfg = model.config
    cfg = getattr(cfg, "get_text_config", lambda: cfg)()
    def first_int(names, default):
        return next((getattr(cfg, a) for a in names if isinstance(getattr(cfg, a, None), int)), default)

    hidden = first_int(("hidden_size", "n_embd", "d_model"), int(model.get_input_embeddings().weight.shape[1]))
    inter = first_int(("intermediate_size", "n_inner", "ffn_dim"), 4 * hidden)  # GPT-2's n_inner is None: 4 × width
    param = next(model.parameters())
    free, _total = torch.cuda.mem_get_info(param.device)
    return cuda_batch_tokens(free, hidden_size=hidden, intermediate_size=inter,
                             vocab_size=int(model.get_input_embeddings().weight.shape[0]),
                             dtype_bytes=param.element_size(), logits_memory=logits_memory, logits_mode=logits_mode,
                             hidden_states=hidden_states)


def model_context_length(model) -> int:
    """The model's context length, read from its config as the authors' scorer does."""
    cfg = model.config
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    return 2048


def default_batch_tokens(model) -> int:
    dev = model.get_input_embeddings().weight.device.type
    return DEFAULT_BATCH_TOKENS.get(dev, DEFAULT_BATCH_TOKENS["cpu"])


# -- loading ------------------------------------------------------------------------------


def describe_revision(source: str, revision: str | None = None) -> str:
    """What identifies the weights: the hub commit hash when known, else the directory and its files' mtime.

    Part of the checkpoint key, so a retrained local model never resumes from
    the old model's checkpoint.
    """
    path = Path(source)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file()]
        weights = [p for p in files if p.name.endswith(WEIGHT_SUFFIXES)] or files
        newest = max((p.stat().st_mtime for p in weights), default=0.0)
        stamp = _dt.datetime.fromtimestamp(newest, _dt.timezone.utc).isoformat(timespec="microseconds")
        return f"{path.resolve()} (weights modified {stamp})"
    try:
        from transformers.utils import cached_file

        cfg = cached_file(source, "config.json", revision=revision, local_files_only=True,
                          _raise_exceptions_for_missing_entries=False)
    except Exception:  # not cached yet, or an old transformers: fall back to what the user asked for
        cfg = None
    if cfg:
        m = re.search(r"snapshots[/\\]([0-9a-f]{40})[/\\]", str(cfg))
        if m:
            return m.group(1)
    return revision or "main (commit unknown)"


def _flash_attention_usable(device: str, dtype: str) -> bool:
    """flash-attn is installed, and the model will run in half precision on a CUDA GPU."""
    import importlib.util

    if dtype not in ("bfloat16", "float16") or importlib.util.find_spec("flash_attn") is None:
        return False
    torch = _torch()
    return torch.cuda.is_available() and (device == "auto" or str(device).startswith("cuda"))


def _accelerate_available() -> bool:
    try:
        import accelerate  # noqa: F401
    except ImportError:
        return False
    return True


def cuda_device_map(weight_bytes: int, free_bytes: int, device_index: int, headroom: float = 0.8) -> dict | str:
    """Where a model goes on CUDA (a pure function of these numbers).

    ``{"": device_index}``, the whole model on that GPU, when its weights take
    at most ``headroom`` of the GPU's free memory (the rest holds the
    batches); else ``"auto"``: accelerate spreads it over the visible GPUs, and
    CPU memory if need be. One model per GPU is what scoring many models wants
    (a GPU each, through the Ray executor); ``"auto"`` for a model that fits
    would spread it over every visible GPU, which then take turns on each batch.
    """
    return {"": int(device_index)} if weight_bytes <= headroom * free_bytes else "auto"


def weight_bytes(source: str, *, dtype: "torch.dtype", revision: str | None = None,
                 trust_remote_code: bool = False) -> int | None:
    """The bytes of ``source``'s parameters in ``dtype``, counted on a model built on the meta device (no memory,
    nothing loaded); None when its configuration cannot be read."""
    torch = _torch()
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        with _quiet_transformers():
            cfg = AutoConfig.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code)
    except Exception:  # the loader that follows reports what is wrong with the model
        return None
    itemsize = torch.empty(0, dtype=dtype).element_size()
    return sum(p.numel() for p in model.parameters()) * itemsize  # parameters() yields a tied matrix once


def load_model(
    source: str,
    *,
    device: str = "auto",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    revision: str | None = None,
    device_map: str | dict | None = None,
    attn_implementation: str | None = None,
):
    """``(model, tokenizer)`` for a local directory or a hub name, in eval mode on ``device``.

    On CUDA, with accelerate installed, a model whose weights fit one GPU is
    loaded straight onto it (the current GPU, or ``cuda:N``); a larger one gets
    ``device_map="auto"`` (as the authors' scorer does), so it spreads over
    the GPUs (and CPU memory) instead of failing (:func:`cuda_device_map`).
    Remote code runs only when ``trust_remote_code`` is passed.
    ``attn_implementation`` (e.g. ``"flash_attention_2"``) is asked of
    transformers; a model that refuses it is loaded with its default
    attention instead.
    """
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(source)
    if not path.exists() and (source.startswith((".", "/", "~")) or source.count("/") > 1):
        raise ScoringError(f"model {source!r}: no such directory (and not a hub name of the form org/name)")
    if path.is_dir() and not (path / "config.json").exists():
        raise ScoringError(f"model {source!r}: the directory has no config.json; point at a save_pretrained() directory")
    if path.is_dir() and revision:
        raise InputError(f"model {source!r}: {{revision}} is for hub models, not for a local directory",
                         params=("revision",))
    if path.is_dir() and not any((path / f).exists() for f in TOKENIZER_FILES):
        raise ScoringError(
            f"model {source!r}: the directory has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); "
            "save the tokenizer next to the model with tokenizer.save_pretrained(DIR)"
        )
    if device_map is None and dev.type == "cuda" and _accelerate_available():
        if dev.index is not None:
            device_map = {"": dev.index}  # the GPU asked for, loaded straight onto it
        else:
            torch = _torch()
            index = torch.cuda.current_device()
            size = weight_bytes(source, dtype=torch_dtype, revision=revision, trust_remote_code=trust_remote_code)
            device_map = "auto" if size is None else cuda_device_map(size, torch.cuda.mem_get_info(index)[0], index)
    kwargs = dict(revision=revision, trust_remote_code=trust_remote_code)
    if not path.is_dir():
        # Asked of the hub only when it answers: transformers retries an unreachable hub for about a minute
        # before it reads the cache (or fails), printing each retry.
        offline = _hub_offline(source, revision)
        if offline:
            kwargs["local_files_only"] = True
    # transformers renamed torch_dtype to dtype in 4.56; older releases reject the new name.
    dtype_kw = "dtype" if _version_tuple(transformers.__version__) >= (4, 56) else "torch_dtype"
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            load = dict(kwargs, **{dtype_kw: torch_dtype}, device_map=device_map)
            model = None
            if attn_implementation is not None:
                try:
                    model = AutoModelForCausalLM.from_pretrained(source, **load,
                                                                 attn_implementation=attn_implementation)
                except (ValueError, ImportError):  # this architecture has no such attention: its default will do
                    model = None
            if model is None:
                model = AutoModelForCausalLM.from_pretrained(source, **load)
    except Exception as exc:
        missing = "" if path.is_dir() else _not_cached_message(source, revision, exc)
        if missing:
            raise ScoringError(missing, params=("revision",)) from exc
        needs_code = "trust_remote_code" in str(exc) and not trust_remote_code
        hint = "; it needs its own modelling code: pass {trust_remote_code=True} if you trust it" if needs_code else ""
        raise ScoringError(f"model {source!r} could not be loaded: {type(exc).__name__}: {first_line(exc)}{hint}",
                           params=("trust_remote_code",) if needs_code else ()) from exc
    if device_map is None:
        model.to(dev)
    model.eval()
    fuse_activations(model)
    return model, tokenizer


def _hub_offline(source: str, revision: str | None) -> bool:
    """Whether hub name ``source`` must be read from the local cache alone (offline mode, or no hub answers).

    Raises :class:`ScoringError` at once when it is not in the cache either,
    so that a mistyped name fails in a second, not after a minute of retries.
    """
    try:
        from huggingface_hub import constants
        from huggingface_hub.file_download import repo_folder_name
    except ImportError:  # pragma: no cover - transformers needs huggingface_hub
        return False
    offline = bool(constants.is_offline_mode()) or not _hub_answers(constants.ENDPOINT)
    if not offline:
        return False
    repo = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=source, repo_type="model")
    if not (repo / "snapshots").is_dir():
        why = "offline mode is on (HF_HUB_OFFLINE=1)" if constants.is_offline_mode() else \
            f"the hub ({constants.ENDPOINT}) could not be reached"
        raise ScoringError(f"model {source!r} is neither a directory nor in the local Hugging Face cache "
                           f"({constants.HF_HUB_CACHE}), and {why}: check the name, or download it where the hub "
                           "is reachable")
    return True


def _hub_answers(endpoint: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub's endpoint opens within ``timeout`` seconds (no request is sent)."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _not_cached_message(source: str, revision: str | None, exc: BaseException) -> str:
    """A one-line reason when hub model ``source`` failed because the hub could not be asked and the local
    cache lacks it or its revision; "" for any other failure (bad files, remote code, a refused revision)."""
    try:
        from huggingface_hub import constants
        from huggingface_hub.errors import LocalEntryNotFoundError
        from huggingface_hub.file_download import repo_folder_name
    except ImportError:  # pragma: no cover - an older huggingface_hub: keep transformers' message
        return ""
    # transformers wraps huggingface_hub's "not in the cache and cannot ask the hub" error: find it in the chain.
    chain, seen = exc, set()
    while chain is not None and not isinstance(chain, LocalEntryNotFoundError) and id(chain) not in seen:
        seen.add(id(chain))
        chain = chain.__cause__ or chain.__context__
    if chain is None or id(chain) in seen:
        return ""
    repo = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=source, repo_type="model")
    refs = sorted(p.name for p in (repo / "refs").iterdir() if p.is_file()) if (repo / "refs").is_dir() else []
    why = "offline mode is on (HF_HUB_OFFLINE=1)" if constants.is_offline_mode() else "the hub could not be reached"
    if not refs:
        return (f"model {source!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and {why}; "
                "download it where the hub is reachable, or point HF_HOME at a cache that holds it")
    return (f"model {source!r}: revision {revision or 'main'!r} is not in the local Hugging Face cache and {why} "
            f"(cached revisions: {', '.join(refs)})")


def fuse_activations(model) -> int:
    """Swap GPT-2's ``gelu_new`` (six elementwise passes in Python) for torch's one fused tanh-GELU kernel.

    The same function (transformers' own ``gelu_pytorch_tanh``), computed in
    float32 inside the kernel: measured on this CPU for the MLP's 1,024 × 2,048
    activations, 23 → 8 ms in bfloat16 and 16 → 7.5 ms in float32 (17% of a
    bfloat16 GPT-2's scoring time was this activation); float32 results
    change by rounding only (~1e-7), bfloat16 ones get more accurate (one
    rounding instead of six). Returns the number of modules swapped.
    """
    try:
        from transformers.activations import GELUTanh, NewGELUActivation
    except ImportError:  # pragma: no cover - an older transformers: leave the model as it is
        return 0
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is NewGELUActivation:
                setattr(module, name, GELUTanh())
                swapped += 1
    return swapped


@contextlib.contextmanager
def _quiet_transformers():
    """No per-shard loading bars: lmmap shows its own progress, one line per model."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


# -- the log-probability computation ------------------------------------------------------


class LogProbComputer:
    """Sums of target log-probabilities for batches of rows, with bounded logits memory.

    ``mode`` is ``"hidden"`` when the model's logits equal its output layer
    applied to its decoder's hidden states (checked on a probe input). Then
    the output layer runs only at scored positions, one tile of
    ``chunk_positions`` positions × ``vocab_block`` vocabulary entries at a
    time, and the log-normaliser is accumulated across the vocabulary tiles
    (a running maximum and a rescaled running sum of exponentials, in
    float32). On a CPU the tiles are sized to stay in cache, which makes the
    output layer's matrix product and the exponentials markedly faster than
    one pass over full-vocabulary logits; memory no longer grows with the
    vocabulary at all. Otherwise ``"logits"``: the model's own forward, its
    logits converted to float32 a chunk of positions at a time, batches
    shrunk so that those logits stay under ``FALLBACK_LOGITS_MEMORY``.

    ``packing`` (``auto``, ``on``, ``off``; see :class:`HFScorer`) lays a
    batch's rows out padded or packed (:meth:`row_logliks`); ``layout`` says
    which, and ``packing_unsupported`` why a model was left padded.

    ``lens`` (a :class:`lmmap.scoring.layers.LogitLens`): the sums are taken
    for each of its layers (one column each) from one forward pass, the
    output layer applied, tile by tile, to every layer's normed states.
    """

    def __init__(self, model, logits_memory: int | None = None, probe_ids: np.ndarray | None = None,
                 vocab_block: int | None = None, packing: str = "auto", lens=None):
        import torch

        self.model = model
        self.input_device = model.get_input_embeddings().weight.device
        self.head = model.get_output_embeddings()
        self.vocab_size = int(self.head.weight.shape[0]) if self.head is not None else int(model.config.vocab_size)
        self.param_dtype = next(model.parameters()).dtype
        self.base = getattr(model, "base_model", None)
        head_device = self.head.weight.device if self.head is not None else self.input_device
        if logits_memory is None:
            logits_memory = DEFAULT_LOGITS_MEMORY.get(head_device.type, DEFAULT_LOGITS_MEMORY["cuda"])
        if logits_memory <= 0:
            raise InputError(f"logits_memory must be positive, got {logits_memory}", params=("logits_memory",))
        self.logits_memory = int(logits_memory)
        block = vocab_block or DEFAULT_VOCAB_BLOCK.get(head_device.type, self.vocab_size)
        self.vocab_block = max(1, min(int(block), self.vocab_size))
        self.mode = "hidden" if self._hidden_path_matches(probe_ids) else "logits"
        # The logit lens (lmmap.scoring.layers): the output layer applied to several layers' hidden states.
        self.lens = lens
        if lens is not None and self.mode != "hidden":
            raise ScoringError(f"model {lens.name!r}: its logits are not its output layer applied to its hidden states "
                               "(e.g. soft-capped), so its {layers} cannot be scored; score it without layers",
                               params=("layers",))
        # Tiles need the plain weight matrix; any other output module (quantised, hooked) is called whole.
        self.tiled = (
            self.mode == "hidden" and type(self.head) is torch.nn.Linear and self.head.weight.device.type != "meta"
        )
        if not self.tiled:
            self.vocab_block = self.vocab_size
        self.packing = check_packing(packing)
        self.attn_implementation = str(getattr(model.config, "_attn_implementation", None) or "eager")
        # Flash attention takes a packed batch as one sequence with cu_seqlens (varlen): no mask, no FLOP on padding.
        self.varlen = "flash" in self.attn_implementation
        self.packing_unsupported = ""  # why packing was refused, when it was
        if self.packing != "off":
            self.packing_unsupported = self._packing_problem(probe_ids)

    @property
    def layout(self) -> str:
        """How batches are laid out: ``padded``, ``packed (varlen)``, ``packed (block mask)``, or ``auto ...``."""
        if self.packing == "off":
            return "padded"
        if self.packing_unsupported:
            return f"padded (packing unsupported: {self.packing_unsupported})"
        if self.varlen:
            return "packed (varlen)"
        return "packed (block mask)" if self.packing == "on" else "packed where it saves padding (block mask)"

    @property
    def can_pack(self) -> bool:
        return self.packing != "off" and not self.packing_unsupported

    @property
    def chunk_positions(self) -> int:
        """Positions per tile: float32 logits (+ the half-precision ones they come from) within ``logits_memory``."""
        import torch

        per_position = self.vocab_block * (4 + (2 if self.param_dtype != torch.float32 else 0))
        return max(1, self.logits_memory // per_position)

    def max_batch_tokens(self, batch_tokens: int) -> int:
        """The token budget: in ``logits`` mode the model's own B×T×V logits must fit the memory bound too."""
        import torch

        if self.mode == "hidden":
            return batch_tokens
        itemsize = torch.tensor([], dtype=self.param_dtype).element_size()
        return max(1, min(batch_tokens, FALLBACK_LOGITS_MEMORY // (self.vocab_size * itemsize)))

    def _decoder_hidden(self, input_ids, attention_mask, **packed):
        out = self.base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **packed)
        return out[0] if isinstance(out, tuple) else out.last_hidden_state

    def _packing_problem(self, probe_ids) -> str:
        """Why this model cannot score packed batches ("" when it can), found by scoring a probe both ways.

        Two different rows packed into one sequence must give the numbers they
        give padded: a model that ignores ``position_ids`` for its mask (or
        computes positions from the attention mask) lets the second row see
        the first, or gives it wrong positions, and fails this by nats.
        """
        import torch

        ids = np.asarray(probe_ids if probe_ids is not None else [], dtype=np.int64)
        if len(ids) < 8:
            ids = np.arange(1, 17, dtype=np.int64) % self.vocab_size
        a = ids[:16]
        b = ids[: min(len(ids), 16) - 3][::-1].copy()
        rows, first = [a, b], np.ones(2, dtype=np.int64)
        try:
            with torch.inference_mode():
                padded = self.row_logliks(rows, first, layout="padded")
                packed = self.row_logliks(rows, first, layout="one-lane")
        except Exception as exc:  # a forward without position_ids, or one that rejects the varlen arguments
            return f"{type(exc).__name__}: {first_line(exc)}"
        n = np.array([len(a) - 1, len(b) - 1])
        n = n[:, None] if packed.ndim == 2 else n  # one column per lensed layer
        tol = 1e-4 if self.param_dtype == torch.float32 else 5e-2  # nats per token
        if not np.isfinite(packed).all() or (np.abs(packed - padded) > tol * n).any():
            return f"packed rows score differently ({np.abs(packed - padded).max():.3g} nats)"
        return ""

    def _packs(self, lengths: np.ndarray, one_lane: bool = False) -> tuple[np.ndarray, np.ndarray, int, int]:
        """``(lane, offset, n_lanes, width)`` of each row, packed, or None when this batch is better padded.

        Varlen (flash attention): every row in one lane, back to back. Block
        mask: rows go first-fit (longest first) into lanes as wide as the
        longest row; the mask's attention costs lanes × width², so fewer lanes
        than rows saves both the matrix products' and the attention's work.
        ``one_lane`` puts every row in one lane whatever the attention (the probe).
        """
        B = len(lengths)
        if self.varlen or one_lane:
            off = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            return np.zeros(B, np.int64), off, 1, int(lengths.sum())
        W = int(lengths.max())
        order = np.argsort(-lengths, kind="stable")
        lane, off = np.empty(B, np.int64), np.empty(B, np.int64)
        fill: list[int] = []  # per lane: tokens used (a Python loop per row, never per token)
        for b in order:
            n = int(lengths[b])
            for k, used in enumerate(fill):
                if used + n <= W:
                    lane[b], off[b] = k, used
                    fill[k] = used + n
                    break
            else:
                lane[b], off[b] = len(fill), 0
                fill.append(n)
        return lane, off, len(fill), W

    def _hidden_path_matches(self, probe_ids) -> bool:
        import torch

        if self.head is None or self.base is None or self.base is self.model or not hasattr(self.head, "weight"):
            return False
        ids = np.arange(1, 9) % self.vocab_size if probe_ids is None or len(probe_ids) < 2 else np.asarray(probe_ids[:16])
        x = torch.as_tensor(ids, dtype=torch.long, device=self.input_device)[None, :]
        try:
            with torch.inference_mode():
                full = self.model(input_ids=x, use_cache=False).logits.float()
                hidden = self._decoder_hidden(x, None)
                mine = self.head(hidden.to(self.head.weight.device)).float().to(full.device)
        except Exception:  # a decoder with another calling convention: use the model's own forward
            return False
        if mine.shape != full.shape:
            return False
        tol = 1e-4 if self.param_dtype == torch.float32 else 2e-2
        scale = 1.0 + float(full.abs().max())
        return bool((mine - full).abs().max() <= tol * scale)

    def row_logliks(self, ids: Sequence[np.ndarray], first: np.ndarray, layout: str | None = None) -> np.ndarray:
        """``Σ_{p ≥ first[b]} log p(ids[b][p] | ids[b][:p])`` for each row b, as float64.

        ``layout`` (``"padded"``, ``"packed"``, or ``"one-lane"``: every row in
        one packed sequence) overrides the choice made from ``packing`` (for
        tests and the probe). In ``auto``, a batch that packing would not
        shorten by a lane stays padded, which keeps the mask-free causal fast
        path for rows of equal length.
        """
        import torch

        B = len(ids)
        lengths = np.fromiter((len(r) for r in ids), np.int64, B)
        packing = None
        if layout in ("packed", "one-lane") or (layout is None and self.can_pack and B > 1):
            packing = self._packs(lengths, one_lane=layout == "one-lane")
            if layout is None and self.packing == "auto" and not self.varlen and packing[2] == B:
                packing = None  # no lane saved: padded is as cheap and keeps the mask-free path for equal rows
        row, pos = scored_positions(lengths, first)
        M = len(row)
        extra = {}
        if packing is None:
            T = int(lengths.max())
            flat = np.zeros((B, T), dtype=np.int64)
            for b, r in enumerate(ids):
                flat[b, : len(r)] = r
            at_lane, at_pos = row, pos
            # All rows of equal length need no mask, which lets attention take its causal fast path.
            mask = None
            if (lengths != T).any():
                mask = torch.from_numpy((np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)).to(self.input_device)
        else:
            lane, off, n_lanes, W = packing
            flat = np.zeros((n_lanes, W), dtype=np.int64)
            # Positions restart at 0 for every row; transformers then builds the block-diagonal causal mask
            # (SDPA, eager) from them, and flash attention its cu_seqlens. A lane's unused tail is one more
            # sequence of its own (positions from 0), never seen by the rows and never scored.
            position_ids = np.tile(np.arange(W, dtype=np.int64), (n_lanes, 1))
            ends = np.zeros(n_lanes, np.int64)
            for b, r in enumerate(ids):
                flat[lane[b], off[b] : off[b] + len(r)] = r
                position_ids[lane[b], off[b] : off[b] + len(r)] = np.arange(len(r))
                ends[lane[b]] = max(ends[lane[b]], off[b] + len(r))
            for k in np.nonzero(ends < W)[0]:
                position_ids[k, ends[k] :] = np.arange(W - ends[k])
            at_lane, at_pos = lane[row], off[row] + pos
            mask = None
            extra["position_ids"] = torch.from_numpy(position_ids).to(self.input_device)
            if self.varlen:
                cu = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)).to(self.input_device)
                extra.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=int(lengths.max()),
                             max_length_k=int(lengths.max()))
        targets = flat[at_lane, at_pos]
        input_ids = torch.from_numpy(flat).to(self.input_device)
        if self.lens is not None:
            # One forward for every layer: each layer's states at the scored positions go through the output layer.
            out = self.base(input_ids=input_ids, attention_mask=mask, use_cache=False, output_hidden_states=True,
                            **extra)
            states = out.hidden_states
            dev = states[0].device
            index = (torch.from_numpy(at_lane).to(dev), torch.from_numpy(at_pos - 1).to(dev))
            srcs = [self.lens.head_input(states, k, index) for k in self.lens.layers]
            del out, states
            rows = torch.from_numpy(row)
            sums = torch.zeros((B, len(srcs)), dtype=torch.float64)
            for j, src in enumerate(srcs):
                sums[:, j].index_add_(0, rows, self._head_logprobs(src, torch.from_numpy(targets)).double())
            return sums.numpy()
        if self.mode == "hidden":
            hidden = self._decoder_hidden(input_ids, mask, **extra)
            # Hidden states at the positions that predict a scored token: padding never reaches the output layer.
            src = hidden[torch.from_numpy(at_lane).to(hidden.device), torch.from_numpy(at_pos - 1).to(hidden.device)]
            del hidden
            logp = self._head_logprobs(src, torch.from_numpy(targets))
        else:
            logits_all = self.model(input_ids=input_ids, attention_mask=mask, use_cache=False, **extra).logits
            r = torch.from_numpy(at_lane).to(logits_all.device)
            p = torch.from_numpy(at_pos - 1).to(logits_all.device)
            tgt = torch.from_numpy(targets).to(logits_all.device)
            logp = torch.empty(M, dtype=torch.float32)
            chunk = self.chunk_positions
            for s in range(0, M, chunk):
                logits = logits_all[r[s : s + chunk], p[s : s + chunk]].float()
                logp[s : s + chunk] = _target_logprobs(logits, tgt[s : s + chunk]).cpu()
                del logits
            del logits_all
        sums = torch.zeros(B, dtype=torch.float64).index_add_(0, torch.from_numpy(row), logp.double())
        return sums.numpy()

    def _head_logprobs(self, src: "torch.Tensor", targets: "torch.Tensor") -> "torch.Tensor":
        """``log softmax(head(src))[target]`` per row, tile by tile (see the class docstring)."""
        import torch

        dev = self.head.weight.device
        targets = targets.to(dev)
        M, chunk, vb, V = src.shape[0], self.chunk_positions, self.vocab_block, self.vocab_size
        out = torch.empty(M, dtype=torch.float32)
        weight, bias = self.head.weight, getattr(self.head, "bias", None)
        for s in range(0, M, chunk):
            h = src[s : s + chunk].to(dev)
            t = targets[s : s + chunk]
            if not self.tiled:
                out[s : s + chunk] = _target_logprobs(self.head(h).float(), t).cpu()
                continue
            n = h.shape[0]
            run_max = torch.full((n,), -float("inf"), device=dev)
            run_sum = torch.zeros(n, device=dev)
            target_logit = torch.empty(n, device=dev)
            if s == 0:
                # One buffer per tile kind, reused by every tile: on a CPU a fresh multi-MiB tensor per tile is
                # fresh pages, and their first touch cost more than converting the tile to float32 (profiled).
                buf32 = torch.empty(n * vb, dtype=torch.float32, device=dev)
                buf16 = torch.empty(n * vb, dtype=h.dtype, device=dev) if h.dtype != torch.float32 else None
            for v0 in range(0, V, vb):
                v1 = min(v0 + vb, V)
                tile = buf32[: n * (v1 - v0)].view(n, v1 - v0)
                raw = tile if buf16 is None else buf16[: n * (v1 - v0)].view(n, v1 - v0)
                if bias is None:
                    torch.mm(h, weight[v0:v1].t(), out=raw)
                else:
                    torch.addmm(bias[v0:v1], h, weight[v0:v1].t(), out=raw)
                if buf16 is not None:
                    tile.copy_(raw)
                here = ((t >= v0) & (t < v1)).nonzero()[:, 0]
                target_logit[here] = tile[here, t[here] - v0]
                new_max = torch.maximum(run_max, tile.amax(dim=-1))
                # Rescale the sum so far to the new maximum, then add this tile's exponentials (in place).
                run_sum.mul_((run_max - new_max).exp_()).add_(tile.sub_(new_max[:, None]).exp_().sum(dim=-1))
                run_max = new_max
            out[s : s + chunk] = (target_logit - run_sum.log_() - run_max).cpu()
        return out


def _is_out_of_memory(exc: BaseException) -> bool:
    """torch's out-of-memory error (CUDA, and the RuntimeError of MPS and older torch builds)."""
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(exc, oom) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def _free_accelerator_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _target_logprobs(logits: "torch.Tensor", targets: "torch.Tensor") -> "torch.Tensor":
    """``logit[target] - logsumexp(logits)`` per row, in float32 (SPEC §2 numerics).

    ``logits`` (float32, a chunk nobody else holds) is overwritten: shifting and
    exponentiating in place makes two passes over it and allocates nothing
    of its size, where ``torch.logsumexp`` allocates a temporary as large.
    """
    target = logits.gather(1, targets[:, None])[:, 0]
    peak = logits.amax(dim=-1, keepdim=True)
    lse = logits.sub_(peak).exp_().sum(dim=-1).log_().add_(peak[:, 0])
    return target - lse


# -- the backend --------------------------------------------------------------------------


def model_quantisation(model) -> str | None:
    """What marks a loaded transformers ``model`` as quantised (:mod:`lmmap.scoring.quantisation`): its
    ``quantization_config`` (``"bitsandbytes 8-bit"``, ``"gptq 4-bit"``), or the grid its weight matrices lie on
    (``"int8 absmax per column"``), or None.

    Reads at most ``MAX_MATRICES`` matrices of the transformer blocks (embeddings, norms and the output layer,
    which quantisers often keep, are not read), in the dtype they were loaded in (bfloat16 is too coarse to
    tell an 8-bit grid: then only 4-bit grids and the config are checked). A matrix of more than
    ``MAX_ELEMENTS`` entries is read as ``MAX_SLICE`` whole rows and, apart, ``MAX_SLICE`` whole columns (a
    scale per row or group needs whole rows, one per column whole columns; a single scale for such a matrix
    is not looked for).
    """
    import torch

    from lmmap.scoring import quantisation as q

    qc = getattr(getattr(model, "config", None), "quantization_config", None)
    if qc:
        return q.quantisation_label(qc)
    skip = ("embed", "wte", "wpe", "lm_head", "norm")
    params = [p for n, p in model.named_parameters()
              if p.ndim == 2 and p.is_floating_point() and not any(k in n.lower() for k in skip)]
    if not params:
        return None
    pick = np.unique(np.linspace(0, len(params) - 1, min(q.MAX_MATRICES, len(params))).round().astype(int))
    mats, eps = [], 0.0
    with torch.no_grad():
        for k in pick:
            p = params[k].detach()
            eps = max(eps, float(torch.finfo(p.dtype).eps))
            if p.numel() <= q.MAX_ELEMENTS:
                mats.append(p.to("cpu", torch.float64).numpy())
            else:
                mats.append([p[:q.MAX_SLICE].to("cpu", torch.float64).numpy(),
                             p[:, :q.MAX_SLICE].to("cpu", torch.float64).numpy()])
    return q.weight_grid(mats, eps)


class HFScorer:
    """A loaded transformers model and its tokenizer as a :class:`~lmmap.scoring.protocol.Scorer`.

    ``packing``: ``"auto"`` (default) packs rows of a batch into shared
    sequences where the model allows it and it saves work (always under
    flash attention, whose varlen kernels spend nothing on padding; under
    SDPA or eager attention when rows of unequal length fit in fewer lanes),
    ``"on"`` packs every batch the model allows, ``"off"`` pads. A model
    whose numbers change when packed (checked on a probe) is padded, and
    ``prepare``'s ``mode`` says so.

    A batch that runs out of memory is split in two and retried, down to
    one row; the largest batch that ran since caps the following ones (see
    :meth:`score`).
    """

    def __init__(self, model, tokenizer, *, logits_memory: int | None = None, name: str | None = None,
                 packing: str = "auto", layers=None, final_norm: str | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.name = name if name is not None else str(getattr(tokenizer, "name_or_path", ""))
        self.lens = None
        if layers is not None:
            from lmmap.scoring.layers import LogitLens

            self.lens = LogitLens(model, layers, final_norm, self.name)
        self.logits_memory = logits_memory
        self.packing = check_packing(packing)
        self.context_length = model_context_length(model)
        self.default_batch_tokens = default_batch_tokens(model)
        self.computer: LogProbComputer | None = None
        self.token_cap: int | None = None  # rows × longest row a batch may have, lowered by out-of-memory errors
        self.n_oom_splits = 0

    def prepare(self, probe_ids: np.ndarray, batch_tokens: int | None) -> dict:
        self.computer = LogProbComputer(self.model, self.logits_memory, probe_ids=probe_ids, packing=self.packing,
                                        lens=self.lens)
        if batch_tokens is None and self.computer.input_device.type == "cuda":
            batch_tokens = model_batch_tokens_for_cuda(self.model, self.computer.logits_memory,
                                                       self.computer.mode == "logits",
                                                       0 if self.lens is None else self.lens.n_hidden)
        budget = self.computer.max_batch_tokens(batch_tokens or self.default_batch_tokens)
        mode = f"{self.computer.mode}, {self.computer.layout}"
        if self.lens is not None:
            mode = f"logit lens ({len(self.lens.layers)} layers, final norm {self.lens.norm_path}), {mode}"
        return {"mode": mode, "batch_tokens": budget}

    @property
    def layers(self) -> tuple[int, ...] | None:
        """The lensed layers (``score`` then returns one column per layer), or None."""
        return None if self.lens is None else self.lens.layers

    def score(self, ids: Sequence[np.ndarray], first: np.ndarray) -> np.ndarray:
        """The rows' sums; a batch that runs out of memory is split in two and each half retried.

        Recursively, down to one row: a row that does not fit alone is a
        :class:`~lmmap.exceptions.ScoringError` naming the model and the
        row's length. After a split, ``token_cap`` (rows × longest row) is
        what the failed batch had less one, so the following batches are cut
        to fit before they run instead of failing first. Rows are scored
        independently, so the sums do not depend on how a batch is cut.
        """
        import torch

        first = np.asarray(first)
        with torch.inference_mode():
            return self._score_fitting(list(ids), first)

    def _score_fitting(self, ids: list, first: np.ndarray) -> np.ndarray:
        lengths = np.fromiter((len(r) for r in ids), np.int64, len(ids))
        cost = len(ids) * int(lengths.max())
        if self.token_cap is not None and cost > self.token_cap and len(ids) > 1:
            return self._split(ids, first)
        try:
            return self.computer.row_logliks(ids, first)
        except Exception as exc:
            if not _is_out_of_memory(exc):
                raise
            oom = f"{type(exc).__name__}: {first_line(exc)}"
        # Out of the except block: the traceback (and the batch's tensors its frames hold) is released here.
        _free_accelerator_memory()
        self.n_oom_splits += 1
        self.token_cap = max(1, min(self.token_cap or cost, cost - 1))
        if len(ids) == 1:
            raise ScoringError(
                f"model {self.name!r}: one row of {cost} tokens does not fit in memory ({oom}); "
                "lower max_length, or score long texts in windows with stride",
                params=("max_length", "stride"),
            )
        return self._split(ids, first)

    def _split(self, ids: list, first: np.ndarray) -> np.ndarray:
        h = len(ids) // 2
        return np.concatenate([self._score_fitting(ids[:h], first[:h]), self._score_fitting(ids[h:], first[h:])])

    def describe(self) -> dict:
        import torch
        import transformers

        model = self.model
        first_param = next(model.parameters())
        spread = len(set(map(str, (getattr(model, "hf_device_map", None) or {}).values()))) > 1
        return {
            "device": "device_map:auto" if spread else str(first_param.device),
            "architecture": (getattr(model.config, "architectures", None) or [type(model).__name__])[0],
            "tokenizer": getattr(self.tokenizer, "name_or_path", self.name),
            "tokenizer_class": type(self.tokenizer).__name__,
            "torch_version": torch.__version__,
            "transformers_version": transformers.__version__,
            # A quantised copy cannot be told from its original by log-likelihoods; its checkpoint can.
            "quantisation": model_quantisation(model),
            **({} if self.lens is None else self.lens.describe()),
        }

    def close(self) -> None:
        self.model = self.computer = None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class HFBackend:
    """Loads causal LMs with transformers (``AutoModelForCausalLM``): local directories or hub names."""

    name = "hf"
    # Options of ScoringOptions that only some backends take (lmmap.scoring.options.BACKEND_SPECIFIC): this one's.
    load_options = ("packing", "layers", "final_norm")

    def __init__(self, packing: str = "auto"):
        self.packing = check_packing(packing)

    def check(self, *, device: str, dtype: str) -> None:
        resolve_dtype(dtype)
        resolve_device(device)

    def load(self, source: str, *, device: str = "auto", dtype: str = "float32", trust_remote_code: bool = False,
             revision: str | None = None, device_map=None, logits_memory: int | None = None,
             packing: str | None = None, layers=None, final_norm: str | None = None) -> HFScorer:
        packing = check_packing(packing or self.packing)
        # Packed batches want flash attention's varlen kernels, where installed (CUDA, half precision).
        attn = "flash_attention_2" if packing != "off" and _flash_attention_usable(device, dtype) else None
        model, tokenizer = load_model(source, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                                      revision=revision, device_map=device_map, attn_implementation=attn)
        return HFScorer(model, tokenizer, logits_memory=logits_memory, name=source, packing=packing, layers=layers,
                        final_norm=final_norm)

    def revision(self, source: str, revision: str | None) -> str:
        return describe_revision(source, revision)

    def failure_hint(self, exc: BaseException) -> tuple[str, tuple[str, ...]]:
        if "out of memory" in str(exc).lower() or isinstance(exc, MemoryError):
            hint = " (out of memory: batch_tokens must be lower"
            hint += ")" if _accelerate_available() else ", or pip install accelerate so that a large model is spread over devices)"
            return hint, ("batch_tokens",)
        return "", ()


def score_texts(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    convention: str = "reference",
    max_length: int | None = None,
    stride: int | None = None,
    batch_tokens: int | None = None,
    logits_memory: int | None = None,
    progress: ProgressFn = None,
    description: str = "scoring",
    packing: str = "auto",
    layers=None,
    final_norm: str | None = None,
    chat_template: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(loglik, n_tokens, truncated)`` of each text under a loaded transformers model and its tokenizer.

    Pure compute (see :func:`lmmap.scoring.compute.score_texts`): nothing is
    read from or written to a store. ``packing``: see :class:`HFScorer`.
    ``layers`` (``"all"`` or indices of ``hidden_states``; see
    :mod:`lmmap.scoring.layers`): ``loglik`` has one column per layer, the
    output layer applied to each layer's normed hidden states.
    ``chat_template``: texts with prompts are wrapped in the tokenizer's chat
    template (:mod:`lmmap.scoring.encoding`). Raises
    :class:`~lmmap.scoring.protocol.NonFiniteError` if a text's
    log-likelihood is NaN or infinite.
    """
    from lmmap.scoring.compute import score_texts as _score_texts

    scorer = HFScorer(model, tokenizer, logits_memory=logits_memory, packing=packing, layers=layers,
                      final_norm=final_norm)
    return _score_texts(scorer, texts,
                        convention=convention,
                        max_length=max_length, stride=stride, batch_tokens=batch_tokens, progress=progress,
                        description=description, chat_template=chat_template)
