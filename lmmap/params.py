"""lmmap's parameters, declared once: name, type, range or choices, default, flag and help.

One :class:`Param` per parameter serves both sides of the package:

- the library validates an argument with :func:`check` (``check("R", R)``), which raises an
  :class:`~lmmap.exceptions.InputError` in one format, naming the parameter, what is allowed and what was
  given — ``R must be an integer from 2 to 100,000 (a standard error needs at least two), got 1`` — with
  ``params=("R",)``;
- the command line builds every option from the same entry (``lmmap/cli/_options.py``: flag, help,
  default, metavar, and :func:`check` as the option's callback), and shows an error that begins with a
  parameter's name with its flag instead (:func:`cli_message`: ``--R must be an integer from ...``).

A flag names one parameter. Where two commands give one flag different meanings or defaults (``-o`` is a
directory for ``map`` and a file for ``select``), each meaning is its own :class:`Param` restricted to its
``commands``, with ``why`` saying why it is not one.

This module imports nothing but the standard library and :mod:`lmmap.exceptions`: every layer may use it,
and ``lmmap --help`` builds its options from it without loading numpy.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from lmmap.exceptions import InputError

# The limits below are the library's: its modules read them from here (maths/randomness.py: MAX_SEED) or a
# test holds them equal (maths/bootstrap.py: MAX_REPLICATES, maths/errors.py: EPS0_RANGE ...).

# numpy's legacy RandomState (scikit-learn's folds and PCA, openTSNE) refuses seeds outside 0..2³²−1, deep
# inside the work; refusing them at the start names the parameter before anything runs.
MAX_SEED = 2**32 - 1
# More replicates than any error estimate needs (a typo of 10**6 would run for hours).
MAX_REPLICATES = 100_000
# A resample size beyond what a multinomial draw handles.
MAX_SAMPLE_SIZE = 10**12
EPS0_RANGE = (1e-150, 1e150)
UNITS = ("nats-per-text", "bits-per-byte")
EMBEDDINGS = ("auto", "mds", "tsne", "pca", "umap")
RESAMPLING_METHODS = ("uniform", "ls", "kl")

REQUIRED = ...  # the default of a parameter that must be given


@dataclass(frozen=True)
class Param:
    """One parameter: what the library checks and what the command line declares.

    ``type``: ``int``, ``float``, ``str``, ``bool`` or ``Path`` (of one value; ``multiple``: a repeatable
    option, a list). ``interval``: ``(lo, hi)``, either end ``None`` for none, closed unless ``open`` says
    which end is open. ``special``: values allowed outside the interval, with their meaning (``{-1: "all
    cores"}``). ``note``: why the range is what it is, said in the error. ``flag``: the option's main flag;
    ``aliases``: its other spellings. ``commands``: the commands the option belongs to when another
    :class:`Param` shares its flag elsewhere (``why`` says why the two differ); ``None``: any command.
    ``default_factory``: a default computed when the command runs (``$LMMAP_STORE``).
    """

    name: str
    type: type
    default: Any
    flag: str
    help: str
    choices: Optional[tuple] = None
    interval: Optional[tuple] = None
    open: tuple = (False, False)
    special: Optional[dict] = None
    note: Optional[str] = None
    metavar: Optional[str] = None
    aliases: tuple = ()
    multiple: bool = False
    allow_inf: bool = False
    commands: Optional[tuple] = None
    why: Optional[str] = None
    default_factory: Any = None
    show_default: bool = True
    short_first: bool = False

    @property
    def base(self) -> type:
        """The type of one value (``int`` for ``Optional[int]``)."""
        args = [a for a in getattr(self.type, "__args__", ()) if a is not type(None)]
        return args[0] if args else self.type

    @property
    def required(self) -> bool:
        return self.default is REQUIRED and self.default_factory is None

    @property
    def flags(self) -> tuple:
        """Every spelling of the option: the main flag first, or the short one (``-o/--output``, as usage
        messages have always said it)."""
        if self.short_first:
            return (*self.aliases, self.flag)
        return (self.flag, *self.aliases)

    @property
    def ranged(self) -> bool:
        """Is there a value of the right type that :func:`check` refuses?"""
        return self.interval is not None or self.choices is not None or self.base is float

    def allowed(self) -> str:
        """What the parameter may be, in words: ``an integer from 2 to 100,000``, ``a positive integer``, ``one of
        auto, mds``."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        kind = {int: "an integer", float: "a number"}.get(self.base, f"a {self.base.__name__}")
        text = kind
        if self.interval is None and self.base is float and not self.allow_inf:
            text = "a finite number"
        elif self.base is int and self.interval is not None and self.interval[0] in (0, 1) and not self.open[0]:
            # The words people use for counts and seeds: "a positive integer", "a non-negative integer".
            lo, hi = self.interval
            text = ("a positive integer" if lo == 1 else "a non-negative integer") + \
                   (f" up to {_num(hi)}" if hi is not None else "")
        elif self.interval is not None:
            lo, hi = self.interval
            if lo is not None and hi is not None:
                if self.open == (True, True):
                    text += f" between {_num(lo)} and {_num(hi)} (exclusive)"
                else:
                    text += f" from {_num(lo)}{' (exclusive)' if self.open[0] else ''} to {_num(hi)}" \
                            f"{' (exclusive)' if self.open[1] else ''}"
            elif lo is not None:
                text += f" {'>' if self.open[0] else '≥'} {_num(lo)}"
            elif hi is not None:
                text += f" {'<' if self.open[1] else '≤'} {_num(hi)}"
        for value, meaning in (self.special or {}).items():
            text += f", or {value} ({meaning})"
        return text


def _num(x) -> str:
    # Thousands separators: 4,294,967,295 reads at a glance, 4294967295 does not.
    return f"{x:g}" if isinstance(x, float) else f"{x:,}"


def _p(name, type, default, flag, help, **kw) -> Param:
    return Param(name, type, default, flag, help, **kw)


_OUTPUT_WHY = "-o names what the command writes: a directory for the analyses, a file for select, export, texts build"
_REPLACE_WHY = "--replace replaces models (score, add, import) or the whole metadata table (metadata set)"

# Every option of every command, once. The key is the Python parameter of the library where there is one
# (random_state, n_folds, names ...), so that a library error listing it in ``params`` shows this flag.
_SPEC = [
    # -- where things are -------------------------------------------------------------------------------
    _p("store", str, REQUIRED, "--store", "Store: a directory, or s3://bucket/prefix (any fsspec URL with a "
       "registered backend) (default: $LMMAP_STORE or ./lmmap-store).",
       default_factory="lmmap.cli._app:default_store", show_default=False),
    _p("output", Path, REQUIRED, "--output", "Output directory.", aliases=("-o",), short_first=True,
       commands=("map", "add", "errors", "stability", "predict", "scale", "trajectory", "layers", "lineage"), why=_OUTPUT_WHY),
    _p("subset_output", Path, REQUIRED, "--output", "SUBSET.json to write.", aliases=("-o",), short_first=True, commands=("select",),
       why=_OUTPUT_WHY),
    _p("export_output", Path, REQUIRED, "--output", "FILE.parquet (long), FILE.csv (wide) or FILE.npz.",
       aliases=("-o",), short_first=True, commands=("export",), why=_OUTPUT_WHY),
    _p("texts_output", Path, REQUIRED, "--output", "Output text set (.jsonl or .parquet).", aliases=("-o",), short_first=True,
       commands=("texts build",), why=_OUTPUT_WHY),
    _p("demo_output", Path, Path("lmmap-demo"), "--output",
       "Where the models, the store, models.csv, scores.csv and the map go.", aliases=("-o",), short_first=True, commands=("demo",),
       why="the demo alone writes to a default place: it needs nothing but itself"),
    _p("subset", Optional[Path], None, "--subset",
       "SUBSET.json from `lmmap select`: use only its texts (to map, score, place new models or predict)."),
    _p("metadata", Optional[Path], None, "--metadata",
       "MODELS.csv: a `model` column and metadata columns (base_model, model_type, family, quantization, "
       "trajectory, step, a group column ...)."),
    _p("allow_other_texts", bool, False, "--allow-other-texts",
       "Use a subset file although it records another (or no) text-set identity: its positions are taken as they are."),
    # -- the map ----------------------------------------------------------------------------------------
    _p("no_clip", bool, False, "--no-clip", "Do not clip low log-likelihoods (a subset then records no threshold)."),
    _p("allow_mixed", bool, False, "--allow-mixed", "Allow models scored under different conventions in one map."),
    _p("unit", str, "nats-per-text", "--unit",
       "Unit of every KL: nats-per-text (KL = g / 2N), or bits-per-byte (KL / (mean text bytes · ln 2), the unit "
       "of Kishino et al. 2025, comparable across text sets).", choices=UNITS, metavar="|".join(UNITS)),
    _p("embedding", str, "auto", "--embedding",
       "2-D embedding: auto (classical MDS of KL below 40 models, t-SNE from 40 on), mds (needs the K×K KL: up "
       "to 2,000 models), tsne (PCA initialisation; past 2,000 models from the neighbour lists with FFT "
       "gradients on every core: about 1 min at 10,000 models, 5 at 100,000 here), pca (seconds), or umap if "
       "installed.", choices=EMBEDDINGS, metavar="|".join(EMBEDDINGS)),
    _p("embedding_random_state", int, 42, "--tsne-seed",
       "Random state of the 2-D embedding (t-SNE, UMAP; the paper: 42).", interval=(0, MAX_SEED),
       aliases=("--random-state",)),
    _p("edges", str, "auto", "--edges",
       "Lines on the map: nn (each model to its nearest by KL), base_model (declared lineage from the metadata "
       "column base_model, solid), lineage (the declared lines plus, dashed, the parent the lineage test infers for "
       "each model without a declared base), none. With base_model and lineage a model is circled in red where the "
       "lineage test contradicts the metadata (its inferred parent is outside its declared lineage, or a model "
       "without metadata is derived from a declared lineage). auto: lineage when base_model names models of the "
       "map, else nn.",
       choices=("auto", "nn", "base_model", "lineage", "none"), metavar="auto|nn|base_model|lineage|none"),
    _p("color_by", str, "model_type", "--color-by", "Metadata column that colours the map."),
    _p("k", int, 10, "-k", "Neighbours listed per model.", interval=(1, None)),
    _p("se", bool, False, "--se", "Add bootstrap standard errors of the KL estimates."),
    _p("R", int, 100, "--R",
       "Replicates: bootstrap redraws of the standard errors (map and neighbors with --se, add), resampling "
       "trials (errors) or resampled maps (stability).", interval=(2, MAX_REPLICATES),
       note="a standard error needs at least two"),
    _p("random_state", int, 0, "--seed",
       "Random seed of the draws: resampling, bootstrap replicates, folds, trials, samples, the demo's training.",
       interval=(0, MAX_SEED)),
    _p("full_kl", bool, False, "--full-kl",
       "Also write the K×K KL matrix as kl.npy (float32; rows and columns in map.json's models order). Without it "
       "the matrix is written (as kl.csv) only up to 2,000 models."),
    _p("log", bool, False, "--log", "Draw the steps or layers and KL on log axes (layer 0 left out)."),
    # -- lineage ----------------------------------------------------------------------------------------
    _p("alpha", float, 0.05, "--alpha",
       "Lineage: significance level of 'derived' (Holm-corrected within each model's K−1 possible parents: an "
       "unrelated model is called derived with probability at most alpha).", interval=(0.0, 1.0), open=(True, True)),
    _p("lineage_rank", Optional[int], None, "--rank",
       "Lineage: principal directions removed before models are compared (default: those whose eigenvalue is "
       "above the mean, the Kaiser rule).", interval=(0, None), show_default=False),
    # -- which models -----------------------------------------------------------------------------------
    _p("model", str, None, "--model",
       "Model that defines the map (repeatable; default: every model scored on all texts).", aliases=("-m",),
       multiple=True),
    _p("exclude", str, None, "--exclude", "Leave this model out of the map (repeatable).", multiple=True),
    # -- scoring ----------------------------------------------------------------------------------------
    _p("device", str, "auto", "--device", "cpu, cuda, mps or auto (the best available)."),
    _p("dtype", str, "float32", "--dtype", "float32, bfloat16 or float16 (log-softmax is always float32)."),
    _p("convention", str, "reference", "--convention",
       "reference (the authors': first token unscored) or full (BOS/EOS prepended).",
       choices=("reference", "full"), commands=("score", "import"),
       why="add joins the map's convention unless told: its default is none"),
    _p("add_convention", Optional[str], None, "--convention",
       "reference or full (default: that of the map's models; another is refused).",
       choices=("reference", "full"), commands=("add",),
       why="add joins the map's convention unless told: its default is none"),
    _p("batch_tokens", Optional[int], None, "--batch-tokens",
       "Tokens per batch (default: 1024 on CPU; on CUDA sized from free GPU memory; --backend vllm: tokens per "
       "engine call, 16384 on CPU).", interval=(1, None)),
    _p("max_length", Optional[int], None, "--max-length",
       "Context length (default: the model's); longer texts are truncated.", interval=(2, None)),
    _p("stride", Optional[int], None, "--stride",
       "Score long texts with a sliding window moving this many tokens, instead of truncating.", interval=(1, None)),
    _p("trust_remote_code", bool, False, "--trust-remote-code",
       "Run the model's own code from its repository (only for code you trust)."),
    _p("revision", Optional[str], None, "--revision", "Hub revision (branch, tag or commit)."),
    _p("device_map", Optional[str], None, "--device-map",
       "Passed to from_pretrained (auto: spread a large model over devices)."),
    _p("replace", bool, False, "--replace",
       "Replace models already in the store: score them again (add: and place them again).",
       commands=("score", "add", "import"), why=_REPLACE_WHY),
    _p("no_progress", bool, False, "--no-progress", "No progress bars."),
    _p("name", Optional[str], None, "--name", "Store a single model under this name instead of MODEL.",
       commands=("score",), why="score names one model; add takes one name per model, repeated"),
    _p("names", str, None, "--name", "Store the models under these names (repeat once per MODEL).", multiple=True,
       commands=("add",), why="score names one model; add takes one name per model, repeated"),
    _p("checkpoint_every", float, 60.0, "--checkpoint-every", "Seconds between checkpoints (0: after every batch).",
       interval=(0.0, None), allow_inf=True),
    _p("backend", str, "hf", "--backend",
       "hf (transformers), vllm (vLLM's offline engine; pip install 'lmmap[vllm]') or openai (a model behind an "
       "OpenAI-compatible server, --base-url). All score lmmap's own token ids: the numbers agree within 1e-3 nats "
       "per text. Or a backend a plug-in registers (entry points lmmap.backends): the library checks the name.",
       metavar="hf|vllm|openai|NAME"),
    _p("base_url", Optional[str], None, "--base-url",
       "--backend openai: the server's OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1; its /completions must "
       "return the prompt's log-probabilities (echo with logprobs, as vLLM's server does).", metavar="URL"),
    _p("api_key_env", Optional[str], None, "--api-key-env",
       "--backend openai: the environment variable that holds the server's API key (its name, not the key: the "
       "key is never stored, logged or shown).", metavar="VAR"),
    _p("tokenizer", Optional[str], None, "--tokenizer",
       "--backend openai: the served model's tokenizer, a hub id or directory (default: MODEL, then the path the "
       "server reports); texts are tokenised here and sent as token ids.", metavar="HUB_ID|DIR"),
    _p("concurrency", Optional[int], None, "--concurrency",
       "--backend openai: requests in flight at once (default 8).", interval=(1, 1024), metavar="C"),
    _p("packing", str, "auto", "--packing",
       "--backend hf: pack rows of different lengths into shared sequences, no padding (auto: where it saves work; "
       "flash-attention varlen on GPUs).", choices=("auto", "on", "off"), metavar="auto|on|off"),
    _p("threads", str, "auto", "--threads",
       "Torch threads for training and scoring. auto: the idle cores minus one (1 on a busy 2-core machine, where "
       "one thread measured 3–24× faster than torch's default); $OMP_NUM_THREADS wins over auto.",
       metavar="auto|N"),
    _p("executor", str, "local", "--executor",
       "local: score in this process, one model after another; ray: one Ray task per (model, shard of texts) on a "
       "Ray cluster, this process alone writing the store (pip install 'lmmap\\[ray]').",
       choices=("local", "ray"), metavar="local|ray"),
    _p("ray_address", Optional[str], None, "--ray-address",
       "--executor ray: the cluster to join (auto: the one started on this node with `ray start`). Default: a "
       "private Ray instance on this machine, listening on loopback only.", metavar="auto|HOST:PORT"),
    _p("gpus_per_model", Optional[float], None, "--gpus-per-model",
       "--executor ray: GPUs each task asks Ray for (default: 0, CPU tasks).", interval=(0.0, None), metavar="G"),
    _p("shard_texts", Optional[int], None, "--shard-texts",
       "--executor ray: texts per task (default: all of a model's texts). Smaller shards spread a model over more "
       "workers and lose less when a worker dies, at one model load per shard.", interval=(1, None), metavar="S"),
    _p("layers", Optional[str], None, "--layers",
       "The logit lens: score every layer (or these indices of transformers' hidden_states; 0 = the embeddings) "
       "from one forward pass, the output layer applied after the final norm; each layer is stored as MODEL@layerK.",
       metavar="all|0,4,8"),
    _p("final_norm", Optional[str], None, "--final-norm",
       "--layers: the final norm's module path (e.g. model.norm) when lmmap does not find it.", metavar="ATTR"),
    _p("chat_template", bool, False, "--chat-template",
       "Texts with prompts: apply the tokenizer's chat template (the prompt as the user's turn, the text as the "
       "assistant's); recorded with the vector."),
    _p("revisions", Optional[str], None, "--revisions",
       "Hub revisions of one model (e.g. step1000,step2000): each stored as MODEL@REV, a trajectory with its step.",
       metavar="REV,REV,..."),
    _p("trajectory", Optional[str], None, "--trajectory",
       "The models are checkpoints of one training run: each stored as NAME@DIRECTORY, with its step (the last "
       "number in the directory name, or --steps).", metavar="NAME"),
    _p("steps", Optional[str], None, "--steps", "--revisions/--trajectory: the step of each checkpoint, in order.",
       metavar="S,S,..."),
    # -- add ----------------------------------------------------------------------------------------------
    _p("adaptive", bool, False, "--adaptive",
       "Instead of --subset: score each model in rounds of texts drawn by importance and stop once its KL to its "
       "nearest existing models is known to --target-se."),
    _p("target_se", float, 0.2, "--target-se",
       "--adaptive: stop when the relative standard error of the KL to each of the --neighbors nearest existing "
       "models is at most this (and the nearest is told apart from the runner-up).", interval=(0.0, 1.0),
       open=(True, True), note="a relative standard error: 0.05 stops when each KL is known within about 5%"),
    _p("neighbors", Optional[int], None, "--neighbors",
       "--adaptive: how many nearest existing models must reach --target-se (default: 5, or every existing model "
       "when the map has fewer).", interval=(1, None), show_default=False),
    _p("max_texts", Optional[int], None, "--max-texts",
       "--adaptive: score at most this many texts per model (default: all N); adaptive.csv marks a model stopped "
       "there max-texts.", interval=(8, None)),
    _p("round_size", int, 32, "--round",
       "--adaptive: texts drawn per round (each round loads the model again; use more for large models).",
       interval=(4, None)),
    _p("rebuild", bool, False, "--rebuild",
       "Recompute the whole map (all positions may move) instead of placing the new models into it."),
    _p("base_coords", Optional[Path], None, "--base-coords",
       "coords.csv of an existing map (from `lmmap map`): the existing models keep exactly these positions."),
    # -- select, errors, stability -----------------------------------------------------------------------
    _p("method", str, REQUIRED, "--method",
       "Importance of a text: uniform, ls (‖Q^(s)‖²) or kl (sqrt Σ_ij (q_i−q_j)⁴).",
       choices=RESAMPLING_METHODS, metavar="uniform|ls|kl", commands=("select",),
       why="select must be told its method; stability compares against ls by default"),
    _p("stability_method", str, "ls", "--method", "Resampling method: uniform, ls or kl.",
       choices=RESAMPLING_METHODS, metavar="uniform|ls|kl", commands=("stability",),
       why="select must be told its method; stability compares against ls by default"),
    _p("n", str, REQUIRED, "--n", "Number of texts drawn with replacement (the d unique ones are kept).",
       metavar="N", commands=("select",),
       why="--n counts draws (select: required, read as text so that 2.5 is refused in words; stability: a "
           "default from N) or chunks (texts build)"),
    _p("stability_n", Optional[int], None, "--n",
       "Texts drawn with replacement per map (default: 29% of N, the paper's 2,900 of 10,000).",
       interval=(1, MAX_SAMPLE_SIZE), commands=("stability",),
       why="--n counts draws (select, stability) or chunks (texts build)"),
    _p("texts_n", Optional[int], None, "--n", "Sample this many chunks (default: keep all).", interval=(1, None),
       commands=("texts build",), why="--n counts draws (select, stability) or chunks (texts build)"),
    _p("texts_out", Optional[Path], None, "--texts-out",
       "Also write the d texts as plain JSONL (index, text) to score elsewhere."),
    _p("methods", str, "uniform,ls,kl", "--methods",
       "Comma-separated resampling methods (uniform is always included: τ_unif,N and κ̂ need it)."),
    _p("n_grid", Optional[str], None, "--n-grid",
       "Resample sizes, e.g. 10:90:10,100:900:100,1000:10000:1000 (default: 1–9 × each power of ten from 10 up to "
       "N, and N: the paper's grid at N = 10,000). N and the Table 1 targets are added."),
    _p("error", str, "relative", "--error",
       "e_ij = (g̃−g)/max(g, ε₀) (relative) or (g̃−g)/C (absolute, §4.2).", choices=("relative", "absolute"),
       metavar="relative|absolute"),
    _p("targets", Optional[str], None, "--targets",
       "Table 1 targets d, comma-separated (default: 5%, 25%, 50%, 75% of N to two digits: the paper's "
       "500,2500,5000,7500 at N = 10,000). Targets not below N are noted and left N/A.", commands=("errors",),
       why="errors' targets are text counts, predict's are benchmark columns"),
    _p("mode", str, "both", "--mode",
       "Simulate R trials, use the closed form of Lemma 2 (seconds), or both (default; adds the agreement z-score).",
       choices=("simulate", "analytic", "both"), metavar="simulate|analytic|both"),
    _p("kappa_source", str, "simulated", "--kappa",
       "κ̂_d for Table 1: τ_unif,d simulated at n = d, or sqrt(N/d)·κ̂_N.", choices=("simulated", "theory"),
       metavar="simulated|theory", aliases=("--kappa-source",)),
    _p("precision", str, "auto", "--precision",
       "Gram arithmetic of the simulation; auto uses float32 only where its rounding is < 5% of the smallest τ.",
       choices=("auto", "float32", "float64"), metavar="auto|float32|float64"),
    _p("eps0", float, 1e-3, "--eps0", "ε₀ in max(g_ij, ε₀).", interval=EPS0_RANGE),
    _p("workers", int, 1, "--workers",
       "Parallel workers: threads (errors, predict's folds) or processes (stability's embeddings).",
       interval=(1, None), special={-1: "all cores"}, aliases=("--jobs",)),
    _p("compare", str, None, "--compare", "Another setting to compare, e.g. uniform:10000 (repeatable).",
       metavar="METHOD:N", multiple=True),
    # -- predict ------------------------------------------------------------------------------------------
    _p("scores", Optional[Path], None, "--scores",
       "SCORES.csv: a 'model' column and one numeric column per benchmark; or lm-evaluation-harness results_*.json "
       "(a file, or a directory searched recursively), or an Open LLM Leaderboard CSV (default: the store "
       "metadata's score_* columns)."),
    _p("group_by", str, "model_type", "--group-by",
       "Metadata column whose groups never straddle train and test ('none': each model its own group)."),
    _p("n_repeats", int, 5, "--seeds", "Repetitions of the cross-validation (seeds SEED..SEED+n-1).",
       interval=(1, None)),
    _p("n_folds", int, 5, "--folds", "Outer cross-validation folds.", interval=(2, None)),
    _p("n_inner", int, 5, "--inner-folds", "Inner folds that choose α.", interval=(2, None)),
    _p("threshold", float, 2.0, "--threshold",
       "Flag a model whose true score exceeds its prediction by more than this many residual sds."),
    _p("level", float, 0.9, "--level", "Coverage of the prediction intervals for unscored models.",
       interval=(0.0, 1.0), open=(True, True)),
    _p("score_targets", Optional[str], None, "--targets", "Comma-separated score columns to use (default: all).",
       commands=("predict",), why="errors' targets are text counts, predict's are benchmark columns"),
    _p("no_mean", bool, False, "--no-mean", "Do not add the benchmarks' mean as a target."),
    _p("no_loglik", bool, False, "--no-loglik", "Do not add the mean log-likelihood as a target."),
    _p("score_range", str, "0,100", "--score-range",
       "Range of the scores; predictions are clipped to it ('none': no clipping)."),
    _p("no_plots", bool, False, "--no-plots", "Skip the predicted-versus-true figures."),
    # -- the store ----------------------------------------------------------------------------------------
    _p("init_texts", Path, REQUIRED, "--texts", "The text set every model will be scored on.", commands=("init",),
       why="init needs its text set; import may create the store from one, or check it"),
    _p("texts", Optional[Path], None, "--texts", "The vectors' text set: creates the store, or is checked against it.",
       commands=("import",), why="init needs its text set; import may create the store from one, or check it"),
    _p("vectors", Path, REQUIRED, "--vectors",
       "Pickle (authors' format), NPZ, Parquet, CSV, or a directory of the authors' scorer JSONL."),
    _p("allow_pickle", bool, False, "--allow-pickle", "Allow reading a pickle (through a restricted unpickler)."),
    _p("columns", Optional[str], None, "--columns",
       "Columns to show: comma-separated names, or 'all'. Default for the table: model, n_scored, complete, "
       "convention and model_type/family/base_model when present; for csv and json: all.",
       metavar="all|COL,COL,..."),
    _p("format", str, "table", "--format",
       "table (for people; plain and unwrapped when piped), csv or json (for scripts).",
       choices=("table", "csv", "json"), metavar="table|csv|json"),
    _p("include_partial", bool, False, "--include-partial",
       "Wide formats (.csv, .npz): also export models scored on only some texts, with NaN for the others."),
    _p("repair", bool, False, "--repair",
       "Fix what is found (roll forward or drop unfinished changes, remove leftovers, rename old-style files)."),
    # -- metadata -----------------------------------------------------------------------------------------
    _p("metadata_replace", bool, False, "--replace",
       "Replace the store's whole metadata table with this file (models and columns it lacks are dropped) instead "
       "of merging it in.", commands=("metadata set",), why=_REPLACE_WHY),
    _p("allow_unknown", bool, False, "--allow-unknown",
       "Also keep rows for models that are not in the store (yet) instead of refusing the file."),
    _p("dry_run", bool, False, "--dry-run", "Show what would be set, and change nothing."),
    # -- texts build ----------------------------------------------------------------------------------------
    _p("chunk_bytes", int, 1024, "--chunk-bytes", "Chunk size in bytes (never splits a UTF-8 character).",
       interval=(4, None), note="one UTF-8 character"),
    _p("min_bytes", int, 256, "--min-bytes", "Drop chunks shorter than this.", interval=(0, None)),
    _p("on_bad_utf8", str, "error", "--on-bad-utf8", "Files that are not UTF-8: error, skip or replace.",
       choices=("error", "skip", "replace")),
    _p("prompt_field", Optional[str], None, "--prompt-field",
       "Build a prompt→response text set from JSONL/Parquet records: field P is each text's prompt (scored as "
       "log p(text | prompt)); no chunking.", metavar="P"),
    _p("text_field", str, "text", "--text-field", "With --prompt-field: the field holding the response text.",
       metavar="T"),
    # -- demo ---------------------------------------------------------------------------------------------
    _p("size", str, "full", "--size",
       "full (15 models + 1 held out for `lmmap add`, 1,020 texts) or small (6 models, for a quick look).",
       choices=("full", "small")),
    _p("force", bool, False, "--force", "Retrain and rescore everything instead of reusing OUTPUT's cache."),
]

PARAMS: dict[str, Param] = {}
for _param in _SPEC:
    assert _param.name not in PARAMS, f"parameter {_param.name} declared twice"
    PARAMS[_param.name] = _param
del _param


def flag_of(name: str) -> str:
    """The flag of parameter ``name`` on the command line (a name outside the spec: ``--name-with-dashes``)."""
    p = PARAMS.get(name)
    return p.flag if p is not None else "--" + name.replace("_", "-")


def check(name: str, value, *, what: str | None = None, interval: tuple | None = None, note: str | None = None):
    """``value`` if parameter ``name`` may take it (ints as ``int``, numbers as ``float``); an
    :class:`InputError` otherwise: ``{what} must be {allowed}, got {value!r}``, with ``params=(what,)``.

    ``what``: the parameter as the caller names it, where that differs from the spec's entry
    (``check("stability_n", n, what="n")``: the range of a resample size, for a function whose argument is
    ``n``). ``interval`` and ``note`` narrow the spec's range for one call (the seeds ``seed..seed+k`` must all
    be valid seeds). ``None`` passes for a parameter whose default is ``None``.
    """
    p = PARAMS[name]
    if interval is not None or note is not None:
        # A narrower range for this call; its own note (or none: "") replaces the spec's, which may not apply.
        p = Param(**{**p.__dict__, "interval": interval or p.interval, "note": p.note if note is None else note})
    shown = what or name
    if value is None and p.default is None:
        return None
    ok, out = _conforms(p, value)
    if not ok:
        note_text = f" ({p.note})" if p.note else ""
        raise InputError(f"{shown} must be {p.allowed()}{note_text}, got {value!r}{_close_match(p, value)}",
                         params=(shown,))
    return out


def _close_match(p: Param, value) -> str:
    """``"; did you mean 'tsne'?"`` for a near miss among ``p.choices`` (a typo, another case), or ``""``."""
    if p.choices is None or not isinstance(value, str):
        return ""
    import difflib

    choices = [str(c) for c in p.choices]
    close = difflib.get_close_matches(value, choices, n=3, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in choices}
        close = [lowered[c] for c in difflib.get_close_matches(value.lower(), list(lowered), n=3, cutoff=0.6)]
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?" if close else ""


def _conforms(p: Param, value) -> tuple[bool, Any]:
    base = p.base
    if p.choices is not None:
        return (value in p.choices, value) if isinstance(value, str) else (False, value)
    if base is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            return False, value
        value = int(value)
        if p.special and value in p.special:
            return True, value
        return _inside(p, value), value
    if base is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False, value
        value = float(value)
        if math.isnan(value) or (math.isinf(value) and not p.allow_inf):
            return False, value
        return _inside(p, value), value
    return True, value


def _inside(p: Param, value) -> bool:
    if p.interval is None:
        return True
    lo, hi = p.interval
    (lo_open, hi_open) = p.open
    if lo is not None and (value < lo or (lo_open and value == lo)):
        return False
    if hi is not None and (value > hi or (hi_open and value == hi)):
        return False
    return True


# A parameter named inside a sentence is written in braces: "pass {allow_pickle=True} if you trust it",
# "sizes ({n_grid}) up to ...", "give it as {texts=TEXTS.jsonl}" (in an f-string: ``{{texts={path}}}``).
# Python shows the mention as written, without the braces (``allow_pickle=True``: LmmapError.__str__
# calls :func:`python_message`); the command line shows the flag (``--allow-pickle``, ``--texts
# TEXTS.jsonl``: :func:`cli_message`). Only a parameter the message lists in ``params`` is read this way,
# so other braces (a set, a dict) are left alone.


def _mentions(message: str, params, cli: bool) -> str:
    if "{" not in message or not params:
        return message
    out, i = [], 0
    while True:
        j = message.find("{", i)
        k = message.find("}", j + 1) if j >= 0 else -1
        if j < 0 or k < 0:
            break
        inner = message[j + 1:k]
        name, eq, value = inner.partition("=")
        if name not in params or "{" in inner:
            out.append(message[i:j + 1])
            i = j + 1
            continue
        out.append(message[i:j])
        if not cli:
            out.append(inner)
        elif not eq or value == "True":
            out.append(flag_of(name))
        else:
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]  # a Python string's quotes: on the command line the value goes bare
            out.append(f"{flag_of(name)} {value}")
        i = k + 1
    return "".join(out) + message[i:]


def python_message(message: str, params) -> str:
    """``message`` as Python shows it: each mention of a parameter of ``params`` without its braces
    (``pass {allow_pickle=True}`` → ``pass allow_pickle=True``)."""
    return _mentions(message, params, cli=False)


def raw_message(exc: BaseException) -> str:
    """An exception's message with its mentions still in braces (``str(exc)`` shows them as Python), to pass
    on with its ``params`` (a progress step, a model's failed status) for :func:`cli_message`."""
    return exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)


def for_cli(exc: BaseException) -> str:
    """An exception's or warning's message as the command line shows it (:func:`cli_message`)."""
    return cli_message(raw_message(exc), getattr(exc, "params", ()))


def cli_message(message: str, params) -> str:
    """``message`` as the command line shows it: a message that begins with one of its ``params`` (as every
    :func:`check` message does: ``R must be ...``) begins with that parameter's flag instead (``--R must be
    ...``), and each mention in braces (``pass {allow_pickle=True}``) shows the flag (``pass --allow-pickle``).
    Nothing else is touched: a parameter's name is a word elsewhere in a sentence (``metadata``)."""
    message = _mentions(message, params, cli=True)
    for name in params:
        if message.startswith(name) and message[len(name):len(name) + 1] in (" ", ",", ":", ""):
            return flag_of(name) + message[len(name):]
    return message


__all__ = ["EMBEDDINGS", "EPS0_RANGE", "MAX_REPLICATES", "MAX_SAMPLE_SIZE", "MAX_SEED", "PARAMS", "Param", "REQUIRED",
           "RESAMPLING_METHODS", "UNITS", "check", "cli_message", "flag_of", "for_cli", "python_message",
           "raw_message"]
