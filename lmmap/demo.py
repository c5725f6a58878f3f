"""The offline demo: a small ecosystem of real language models, built and mapped on this machine.

``lmmap demo -o OUT`` needs no network and no downloaded weights. It

1. collects text in three domains from files every Python installation has:
   **code** (the standard library's ``*.py`` sources), **docs** (the Python
   language reference prose shipped in ``pydoc_data`` and the standard
   library's docstrings) and **legal** (the licence texts of the installed
   packages and ``/usr/share/common-licenses``). Each domain's documents are
   split into a training part and a held-out part (a source file's code and
   its docstrings fall on the same side);
2. trains a byte-level BPE tokenizer on the training text (``tokenizers``);
3. trains GPT-2-style models from it (plain PyTorch, CPU): three base runs on
   the mixture of domains (with intermediate checkpoints), fine-tunes of them
   on single domains, and models trained from scratch on one domain each —
   six lineages (``family``). One fine-tune is trained but left out of the
   store (``models/base2-ft-docs``), so that ``lmmap add`` has a real new
   model to place;
4. cuts the text set (1,020 texts: 340 of up to 384 bytes per domain) from the
   *held-out* documents and scores every model on it with
   :func:`lmmap.scoring.score_models` (the same path as ``lmmap score``);
5. measures a benchmark-like score of every model — its top-5 next-token
   accuracy (%) on held-out chunks of each domain that are *not* in the text
   set — into ``OUT/scores.csv``, and writes ``OUT/models.csv`` (``model_type``,
   ``family``, ``base_model`` — the model a fine-tune or checkpoint derives
   from, empty for a model trained from scratch — ``domain``, ...), which it
   loads into the store's metadata;
6. builds the map (:class:`lmmap.ModelMap`), prints how far each fine-tune is
   from its base and from the nearest from-scratch model, and prints the
   README's session with this demo's paths and demo-scale arguments;
7. scores the layers of ``base`` (the logit lens, ``lmmap score --layers all``)
   into a store of their own beside copies of the models (``lens-store/``),
   and writes the KL along the layers (``layers/``) and that map
   (``lens-map/``).

Everything lives under OUT (``data/``, ``tokenizer/``, ``models/``,
``store/``, ``map/``, ``lens-store/``, ``layers/``, ``lens-map/``,
``models.csv``, ``scores.csv``). Trained models, scores
and the corpus are cached there, so a second run only redraws the map.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import json
import re
import shutil
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lmmap._version import __version__
from lmmap.exceptions import InputError, LmmapError
from lmmap.progress import Tracker
from lmmap.progress import say as progress_message

if TYPE_CHECKING:  # annotations only: scoring loads when the demo scores
    from lmmap.scoring.options import ExecutorOptions

DEMO_FORMAT = 2  # bump to invalidate caches of older demo layouts
DOMAINS = ("code", "docs", "legal")
HELD_OUT_EVERY = 5  # one document in five is held out for the text set and the benchmark
MAX_DOC_BYTES = 64_000  # long documents (torch's licence) would crowd out the rest
MIN_DOMAIN_BYTES = 60_000
BENCH_CHUNKS = 48  # held-out chunks per domain (not in the text set) behind each accuracy score
MIN_BENCH_CHUNKS = 16
EXAMPLE_FINETUNE = "base-ft-code"
LENS_MODEL = "base"  # the model whose layers the demo scores (the logit lens)


@dataclass(frozen=True)
class DemoModel:
    """One model of the ecosystem: trained from ``parent`` (or from scratch) on ``domain`` for ``steps`` steps.

    ``held_out``: trained and given a benchmark score, but not scored into the
    store and not listed in ``models.csv`` — the new model ``lmmap add`` places.
    """

    name: str
    model_type: str  # base, checkpoint, finetune, scratch
    family: str
    domain: str  # a domain or "mix"
    steps: int
    lr: float
    seed: int = 0
    parent: str | None = None
    checkpoints: tuple[int, ...] = ()  # steps at which to save "<name>-step<k>" (model_type checkpoint)
    held_out: bool = False
    mix: tuple[float, ...] | None = None  # for domain "mix": the share of each of DOMAINS (default: equal)


@dataclass(frozen=True)
class DemoPlan:
    size: str
    train_bytes_per_domain: int
    texts_per_domain: int
    chunk_bytes: int
    vocab_size: int
    n_layer: int
    n_embd: int
    n_head: int
    context: int
    batch_size: int
    models: tuple[DemoModel, ...] = field(default_factory=tuple)

    def model_config(self) -> dict:
        return dict(n_layer=self.n_layer, n_embd=self.n_embd, n_head=self.n_head, n_positions=self.context)

    @property
    def held_out(self) -> list[str]:
        return [m.name for m in self.models if m.held_out]


def demo_plan(size: str = "full", seed: int = 0) -> DemoPlan:
    """The ecosystem for ``size``: ``full`` (15 models in the store + 1 held out, 6 lineages, 1,020 texts) or ``small`` (6 models, for tests)."""
    # Sizes are set by time: on 2 CPU cores training is bound by per-step overhead as much as by FLOPs,
    # so the models are narrow and each step sees 4 windows of 256 tokens.
    if size == "full":
        models = [
            # Three pretraining mixtures, as different labs' base models have: the lineages differ
            # by more than their seeds, and a gentle fine-tune keeps its base's character.
            DemoModel("base", "base", "base", "mix", 100, 2e-3, seed, checkpoints=(10, 30, 60)),
            DemoModel("base2", "base", "base2", "mix", 100, 2e-3, seed + 1, checkpoints=(30,), mix=(0.6, 0.2, 0.2)),
            DemoModel("base3", "base", "base3", "mix", 90, 3e-3, seed + 3, mix=(0.15, 0.45, 0.4)),
            *[DemoModel(f"base-ft-{d}", "finetune", "base", d, 25, 3e-4, seed, parent="base") for d in DOMAINS],
            DemoModel("base2-ft-code", "finetune", "base2", "code", 25, 3e-4, seed + 1, parent="base2"),
            DemoModel("base3-ft-legal", "finetune", "base3", "legal", 25, 3e-4, seed + 3, parent="base3"),
            *[DemoModel(f"scratch-{d}", "scratch", f"scratch-{d}", d, 50, 2e-3, seed + 2) for d in DOMAINS],
            DemoModel("base2-ft-docs", "finetune", "base2", "docs", 25, 3e-4, seed + 1, parent="base2", held_out=True),
        ]
        return DemoPlan("full", 800_000, 340, 384, 1024, 2, 96, 4, 256, 4, tuple(models))
    if size == "small":
        models = [
            DemoModel("base", "base", "base", "mix", 60, 2e-3, seed, checkpoints=(15,)),
            *[DemoModel(f"base-ft-{d}", "finetune", "base", d, 12, 5e-4, seed, parent="base") for d in DOMAINS],
            DemoModel("scratch-code", "scratch", "scratch-code", "code", 30, 2e-3, seed + 2),
        ]
        return DemoPlan("small", 300_000, 50, 512, 1024, 2, 96, 4, 256, 4, tuple(models))
    raise InputError(f"--size must be full or small, got {size!r}", params=("size",))


# -- the corpus ---------------------------------------------------------------------------


def _stdlib() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def code_documents() -> list[tuple[str, str]]:
    """``(label, text)`` of the standard library's Python sources (tests and bundled data excluded)."""
    lib = _stdlib()
    skip = {"site-packages", "dist-packages", "test", "tests", "idle_test", "pydoc_data", "__pycache__", "ensurepip"}
    docs = []
    for p in sorted(lib.rglob("*.py")):
        rel = p.relative_to(lib)
        if skip & set(rel.parts[:-1]):
            continue
        docs.append((f"stdlib/{rel}", p.read_bytes().decode("utf-8", errors="replace")))
    return docs


def docstring_documents() -> list[tuple[str, str]]:
    """The longer docstrings of each standard-library module, one document per source file."""
    out = []
    for label, src in code_documents():
        try:
            tree = ast.parse(src)
        except (SyntaxError, ValueError):
            continue
        parts = [ast.get_docstring(n) for n in ast.walk(tree)
                 if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        text = "\n\n".join(p for p in parts if p and len(p) > 200)
        if text:
            out.append((f"docstrings/{label}", text))
    return out


def docs_documents() -> list[tuple[str, str]]:
    """Documentation prose: the language reference (``pydoc_data.topics``, where installed) and the stdlib's docstrings."""
    try:
        from pydoc_data.topics import topics

        reference = [(f"pydoc_data/{k}", v) for k, v in sorted(topics.items())]
    except ImportError:
        reference = []
    return reference + docstring_documents()


def legal_documents() -> list[tuple[str, str]]:
    """Licence texts: the installed packages', the standard library's and ``/usr/share/common-licenses``."""
    pattern = re.compile(r"(^|/)(LICEN[CS]E|COPYING|NOTICE)[^/]*$", re.IGNORECASE)
    files: list[tuple[str, Path]] = []
    for dist in importlib.metadata.distributions():
        for f in dist.files or []:
            if ".dist-info" in str(f) and pattern.search(str(f)):
                files.append((f"{dist.metadata['Name']}/{Path(str(f)).name}", Path(dist.locate_file(f))))
    lic = _stdlib() / "LICENSE.txt"
    if lic.exists():
        files.append(("python/LICENSE.txt", lic))
    common = Path("/usr/share/common-licenses")
    if common.is_dir():
        files += [(f"common-licenses/{p.name}", p) for p in sorted(common.iterdir()) if p.is_file()]
    docs, seen = [], set()
    for label, path in sorted(files):
        try:
            text = path.read_bytes()[:MAX_DOC_BYTES].decode("utf-8", errors="replace")
        except OSError:
            continue
        digest = hashlib.sha1(" ".join(text.split()).encode()).hexdigest()
        if digest in seen or len(text) < 200:
            continue  # the same MIT licence in fifty packages is one document
        seen.add(digest)
        docs.append((label, text))
    return docs


DOMAIN_SOURCES = {"code": code_documents, "docs": docs_documents, "legal": legal_documents}


def _split_key(label: str) -> str:
    # A source file's docstrings fall on the same side of the split as its code: no held-out
    # docstring was seen in training through the code domain.
    return label[len("docstrings/"):] if label.startswith("docstrings/") else label


def _held_out(label: str) -> bool:
    return int(hashlib.sha1(_split_key(label).encode()).hexdigest(), 16) % HELD_OUT_EVERY == 0


def collect_corpus(data_dir: Path, plan: DemoPlan, seed: int, say) -> dict[str, dict[str, list[str]]]:
    """``{domain: {"train": [...], "heldout": [(label, text)...]}}``, cached in ``data_dir``."""
    path = data_dir / "corpus.json"
    if path.exists():
        corpus = json.loads(path.read_text())
        if corpus.get("plan") == [plan.train_bytes_per_domain, seed, DEMO_FORMAT]:
            return corpus["domains"]
    say("collecting text from this machine (code, docs, legal)…")
    rng = np.random.default_rng(seed)
    domains = {}
    needed = (plan.texts_per_domain + MIN_BENCH_CHUNKS) * plan.chunk_bytes
    for name in DOMAINS:
        docs = [(lbl, t[:MAX_DOC_BYTES]) for lbl, t in DOMAIN_SOURCES[name]() if t.strip()]
        held = [(lbl, t) for lbl, t in docs if _held_out(lbl)]
        train = [t for lbl, t in docs if not _held_out(lbl)]
        train = [train[i] for i in rng.permutation(len(train))]
        size = np.cumsum([len(t.encode()) for t in train])
        train = train[: int(np.searchsorted(size, plan.train_bytes_per_domain)) + 1]
        n_train, n_held = sum(len(t.encode()) for t in train), sum(len(t.encode()) for _, t in held)
        if n_train < MIN_DOMAIN_BYTES or n_held < needed:
            raise LmmapError(
                f"the demo found too little {name} text on this machine ({n_train:,} bytes to train on, "
                f"{n_held:,} held out, {needed:,} needed); it reads the Python standard library and installed "
                "packages' licences — try --size small"
            )
        domains[name] = {"train": train, "heldout": held}
    data_dir.mkdir(parents=True, exist_ok=True)
    _write_text(path, json.dumps({"plan": [plan.train_bytes_per_domain, seed, DEMO_FORMAT], "domains": domains}))
    return domains


def demo_text_set(corpus, plan: DemoPlan, seed: int, workdir: Path):
    """The text set and the benchmark chunks, both cut from each domain's held-out documents.

    Each domain's held-out documents are cut into ``chunk_bytes`` chunks; a
    seeded permutation puts ``texts_per_domain`` of them in the text set
    (source = domain) and up to :data:`BENCH_CHUNKS` of the rest in the
    benchmark. Returns ``(TextSet, {domain: [chunk, ...]})``.
    """
    from lmmap.data.texts import TextSet, build_text_set

    texts, sources, chunk_idx, bench, seen = [], [], [], {}, set()
    workdir.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(DOMAINS):
        path = workdir / f"heldout-{name}.jsonl"
        _write_text(path, "\n".join(json.dumps({"text": t}) for _, t in corpus[name]["heldout"]))
        ts = build_text_set([path], chunk_bytes=plan.chunk_bytes, min_bytes=plan.chunk_bytes // 2)
        keep = [i for i, t in enumerate(ts.texts) if t not in seen]  # a text belongs to one domain only
        order = [keep[i] for i in np.random.default_rng([seed, k]).permutation(len(keep))]
        n = plan.texts_per_domain
        if len(order) < n + MIN_BENCH_CHUNKS:
            raise LmmapError(
                f"the demo found {len(order)} held-out {name} chunks; it needs {n} for the text set and "
                f"{MIN_BENCH_CHUNKS} for the benchmark — try --size small"
            )
        chosen = sorted(order[:n])
        ci = ts.table.column("chunk_idx").to_pylist()
        texts += [ts.texts[i] for i in chosen]
        sources += [name] * n
        chunk_idx += [ci[i] for i in chosen]
        seen.update(texts[-n:])
        bench[name] = [ts.texts[i] for i in order[n : n + BENCH_CHUNKS]]
    texts_set = TextSet.from_texts(texts, sources=sources, chunk_idx=np.asarray(chunk_idx, dtype=np.int64))
    return texts_set, bench


def _write_text(path: Path, text: str) -> None:
    """Write atomically: a killed run leaves the old file or the new one, never half of one."""
    from lmmap.data.atomic import atomic_write

    atomic_write(path, text)


# -- tokenizer and models -----------------------------------------------------------------


def train_tokenizer(corpus, vocab_size: int, out: Path, fingerprint: str):
    """A byte-level BPE tokenizer trained on every domain's training text (cached in ``out``)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    marker = out / "lmmap-demo.json"
    if marker.exists() and json.loads(marker.read_text()).get("fingerprint") == fingerprint:
        return AutoTokenizer.from_pretrained(out)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    # A slice of each domain is enough for 1k merges and keeps this step to seconds.
    sample = [t for name in DOMAINS for t in corpus[name]["train"][:200]]
    tok.train_from_iterator(sample, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    fast.save_pretrained(out)
    _write_text(marker, json.dumps({"fingerprint": fingerprint}))
    return fast


def token_streams(corpus, tokenizer) -> dict[str, np.ndarray]:
    """Each domain's training documents as one token stream, documents separated by the end-of-text token."""
    eot = tokenizer.eos_token_id
    streams = {}
    for name in DOMAINS:
        ids = tokenizer(corpus[name]["train"], add_special_tokens=False, verbose=False)["input_ids"]
        streams[name] = np.concatenate([np.asarray(x + [eot], dtype=np.int64) for x in ids])
    return streams


def sample_batch(streams: dict[str, np.ndarray], domain: str, batch_size: int, seq_len: int, rng,
                 mix: tuple[float, ...] | None = None) -> np.ndarray:
    """Random windows of ``seq_len`` tokens; for ``mix``, each row from a domain drawn with the shares ``mix`` (default equal)."""
    names = list(DOMAINS) if domain == "mix" else [domain]
    p = None if mix is None or domain != "mix" else np.asarray(mix, dtype=float) / np.sum(mix)
    rows = []
    for which in rng.choice(len(names), size=batch_size, p=p):
        s = streams[names[which]]
        start = int(rng.integers(0, len(s) - seq_len))
        rows.append(s[start : start + seq_len])
    return np.stack(rows)


def _lr_at(step: int, steps: int, lr: float) -> float:
    """Linear warm-up over the first tenth, then cosine decay to a tenth of ``lr``."""
    warm = max(1, steps // 10)
    if step < warm:
        return lr * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * t)))


def train_model(spec: DemoModel, plan: DemoPlan, tokenizer, streams, models_dir: Path, fingerprint: str, progress):
    """Train ``spec`` (from its parent's weights or from scratch), saving it and its checkpoints with save_pretrained."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(spec.seed)
    if spec.parent is None:
        cfg = GPT2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, **plan.model_config())
        model = GPT2LMHeadModel(cfg)
    else:
        model = GPT2LMHeadModel.from_pretrained(models_dir / spec.parent)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.95), weight_decay=0.01)
    rng = np.random.default_rng([spec.seed, int(hashlib.sha1(spec.name.encode()).hexdigest()[:8], 16)])
    tokens = 0
    with Tracker(progress, f"train {spec.name} ({spec.domain})", spec.steps, "steps") as tracker:
        for step in range(spec.steps):
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, spec.steps, spec.lr)
            x = torch.from_numpy(sample_batch(streams, spec.domain, plan.batch_size, plan.context, rng, spec.mix))
            loss = model(input_ids=x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            tokens += x.numel()
            tracker.advance(1, tokens=tokens, loss=loss.item())
            if step + 1 in spec.checkpoints:
                _save(model, tokenizer, models_dir / f"{spec.name}-step{step + 1}", spec, fingerprint, step + 1)
        _save(model, tokenizer, models_dir / spec.name, spec, fingerprint, spec.steps)


def _save(model, tokenizer, path: Path, spec: DemoModel, fingerprint: str, step: int) -> None:
    # The marker is written last: a directory without it (a run killed while saving) is trained again.
    (path / "lmmap-demo.json").unlink(missing_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    _write_text(path / "lmmap-demo.json", json.dumps({"spec": asdict(spec), "step": step, "fingerprint": fingerprint}))


def _is_trained(path: Path, spec: DemoModel, fingerprint: str) -> bool:
    marker = path / "lmmap-demo.json"
    if not marker.exists():
        return False
    info = json.loads(marker.read_text())
    return info.get("fingerprint") == fingerprint and info.get("spec") == json.loads(json.dumps(asdict(spec)))


def model_table(plan: DemoPlan, held_out: bool = False) -> pd.DataFrame:
    """The plan's models (checkpoints included) with their metadata, parents before children.

    Columns: ``model``, ``model_type``, ``family``, ``base_model`` (the model
    a fine-tune or checkpoint derives from — a checkpoint's is its run's final
    model; empty for a model trained from scratch), ``domain``,
    ``train_steps``, ``seed``, ``trajectory`` and ``step`` (a model saved with
    checkpoints and its checkpoints form the trajectory named after the
    model, ordered by step; empty for other models). ``held_out``: list the
    held-out models too.
    """
    rows = []
    for m in plan.models:
        if m.held_out and not held_out:
            continue
        # A model saved with checkpoints is a training trajectory (named after the model) whose last point is
        # the model itself; models without checkpoints get empty cells so that `lmmap trajectory` lists only runs.
        traj = m.name if m.checkpoints else ""
        for k in m.checkpoints:
            rows.append(dict(model=f"{m.name}-step{k}", model_type="checkpoint", family=m.family, base_model=m.name,
                             domain=m.domain, train_steps=k, seed=m.seed, trajectory=traj, step=k))
        rows.append(dict(model=m.name, model_type=m.model_type, family=m.family, base_model=m.parent or "",
                         domain=m.domain, train_steps=m.steps, seed=m.seed, trajectory=traj,
                         step=m.steps if m.checkpoints else None))
    # Int64: the step column stays integral ("10", not "10.0") although models without checkpoints have none.
    return pd.DataFrame(rows).astype({"step": "Int64"})


# -- benchmark-like scores --------------------------------------------------------------------


def next_token_accuracy(model, tokenizer, chunks: list[str], context: int, batch: int = 32, top: int = 5) -> float:
    """Percentage of next tokens among ``model``'s ``top`` guesses over ``chunks``, each chunk scored on its own.

    Top-5 rather than top-1: the demo's models are small and briefly trained,
    and their single best guess is most often the same frequent token, which
    hides the differences between them.
    """
    import torch

    ids = [x[:context] for x in tokenizer(chunks, add_special_tokens=False)["input_ids"] if len(x) >= 2]
    ids.sort(key=len)  # batches of similar lengths: little padding to compute
    pad = tokenizer.eos_token_id
    correct = total = 0
    with torch.no_grad():
        for b in range(0, len(ids), batch):
            part = ids[b : b + batch]
            width = max(map(len, part))
            x = torch.full((len(part), width), pad, dtype=torch.long)
            mask = torch.zeros((len(part), width), dtype=torch.long)
            for i, row in enumerate(part):
                x[i, : len(row)] = torch.tensor(row)
                mask[i, : len(row)] = 1
            guess = model(input_ids=x, attention_mask=mask).logits[:, :-1].topk(top, dim=-1).indices
            valid = mask[:, 1:].bool()
            correct += int(((guess == x[:, 1:, None]).any(-1) & valid).sum())
            total += int(valid.sum())
    return 100.0 * correct / max(total, 1)


def benchmark_scores(models_dir: Path, names: list[str], bench: dict[str, list[str]], context: int,
                     cache: Path, fingerprint: str) -> pd.DataFrame:
    """``top5_<domain>`` (top-5 next-token accuracy, %) of each model, indexed by model; cached in ``cache``."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    key = hashlib.sha256(json.dumps([fingerprint, context, bench], sort_keys=True).encode()).hexdigest()[:16]
    rows: dict[str, dict] = {}
    if cache.exists():
        info = json.loads(cache.read_text())
        if info.get("key") == key:
            rows = info.get("rows", {})
    todo = [n for n in names if n not in rows]
    if todo:
        tokenizer = AutoTokenizer.from_pretrained(models_dir / todo[0])
        for name in todo:
            model = GPT2LMHeadModel.from_pretrained(models_dir / name).eval()
            rows[name] = {f"top5_{d}": round(next_token_accuracy(model, tokenizer, bench[d], context), 3) for d in DOMAINS}
        _write_text(cache, json.dumps({"key": key, "rows": rows}))
    table = pd.DataFrame.from_dict({n: rows[n] for n in names}, orient="index")
    return table.rename_axis("model")


# -- the session the README walks through -------------------------------------------------------


def session_commands(outdir, plan: DemoPlan, n_texts: int) -> list[str]:
    """The README's "A session" with this demo's paths and demo-scale arguments, one command a line.

    Outputs go to ``session/`` in the working directory.
    """
    from lmmap.maths.resampling import default_resample_size

    out = Path(outdir).as_posix()
    n = default_resample_size(n_texts)
    families = {m.family for m in plan.models if not m.held_out}
    group = "family" if len(families) >= 5 else "none"
    lines = [
        f"export LMMAP_STORE={out}/store",
        "lmmap models",
        "lmmap map -o session/map",
        f"lmmap neighbors {EXAMPLE_FINETUNE} -k 5 --se",
        f"lmmap select --method ls --n {n} -o session/subset.json",
    ]
    for name in plan.held_out:
        lines.append(f"lmmap add {out}/models/{name} --subset session/subset.json -o session/placed")
        lines.append(f"lmmap add {out}/models/{name} --name {name}-adaptive --adaptive --target-se 0.1 -o session/adaptive")
    lines += [
        f"lmmap trajectory {LENS_MODEL} -o session/trajectory",
        f"lmmap layers {LENS_MODEL} --store {out}/lens-store -o session/layers",
        "lmmap scale -o session/scale",
        "lmmap errors -o session/errors",
        f"lmmap stability -o session/stability --method ls --n {n} --R 20",
        f"lmmap predict --scores {out}/scores.csv --group-by {group} -o session/predict",
    ]
    return lines


# -- the whole demo -----------------------------------------------------------------------


def run_demo(outdir="lmmap-demo", size: str = "full", force: bool = False, random_state: int = 0, progress=None,
             threads: int | str | None = "auto", executor: str = "local", ray_address: str | None = None,
             gpus_per_model: float | None = None, shard_texts: int | None = None) -> dict:
    """Build, score and map the demo ecosystem under ``outdir``; returns paths and a summary.

    ``random_state`` seeds everything (corpus split, training, text set):
    the same value rebuilds the same demo; an int from 0 to 2**32 − 4 (the
    models are seeded ``random_state`` .. ``random_state + 3``). ``progress``: ``None`` or a
    callable receiving :class:`lmmap.progress.Step` events (training steps,
    scoring tokens, one-line stage messages).

    ``threads``: torch threads for training and scoring — a number, or
    ``"auto"`` (see :mod:`lmmap.parallel`: one on a machine with two cores,
    the idle cores less one on a larger one); restored afterwards. ``None``
    keeps the current setting.

    ``executor``, ``ray_address``, ``gpus_per_model``, ``shard_texts``: how
    the models are scored (see :func:`lmmap.scoring.score_models`; checked
    before any training).

    Returns a dict with ``paths`` (the map files), ``store``, ``models_dir``,
    ``models_csv``, ``scores_csv``, ``held_out`` (models trained but not in
    the store), ``n_models``, ``n_texts``, ``seconds`` (wall), ``cpu_seconds``
    (this process's CPU time: about the wall time on an idle machine with one
    thread), ``threads``,
    ``finetune_check`` (for each fine-tune: KL to its base and to the nearest
    from-scratch model), ``kl_summary``, ``nearest`` (each model's nearest
    neighbour by KL) and ``session`` (the README's commands).
    """
    from lmmap.maths.randomness import check_seed
    from lmmap.parallel import resolve_threads, restore_threads, set_threads
    from lmmap.scoring import executor as _executor
    from lmmap.scoring.options import ExecutorOptions

    # The models are seeded random_state..random_state+3 (demo_plan); torch and numpy refuse seeds outside
    # 0..2**32-1 only once training has begun.
    check_seed(random_state, span=4)
    if threads is not None:
        resolve_threads(threads)
    executor_options = ExecutorOptions(executor, ray_address=ray_address, gpus_per_model=gpus_per_model,
                                       shard_texts=shard_texts)  # checked here: refused before any training
    if executor == "ray":
        _executor.import_ray()  # not installed: say so now, not after training
    previous = set_threads(threads) if threads is not None else None
    try:
        with _quiet_transformers():
            return _run_demo(outdir, size, force, random_state, progress, executor_options)
    finally:
        if previous is not None:
            restore_threads(previous)


class _quiet_transformers:
    """transformers' info lines and save_pretrained's progress bars off while the demo runs (restored after)."""

    def __enter__(self):
        try:
            from transformers.utils import logging as tlog
        except ImportError:
            self._tlog = None
            return self
        self._tlog = tlog
        self._verbosity = tlog.get_verbosity()
        self._bars = tlog.is_progress_bar_enabled()
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
        try:
            from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars

            self._hub_bars = not are_progress_bars_disabled()
            disable_progress_bars()
        except ImportError:
            self._hub_bars = False
        return self

    def __exit__(self, *exc):
        if self._tlog is not None:
            self._tlog.set_verbosity(self._verbosity)
            if self._bars:
                self._tlog.enable_progress_bar()
            if self._hub_bars:
                from huggingface_hub.utils import enable_progress_bars

                enable_progress_bars()
        return False


def _run_demo(outdir, size, force, seed, progress, executor_options: "ExecutorOptions | None" = None) -> dict:
    import torch

    from lmmap import scoring
    from lmmap.data.formats import read_metadata_csv
    from lmmap.map import ModelMap
    from lmmap.data.store import Store

    t_start, cpu_start = time.perf_counter(), time.process_time()
    say = functools.partial(progress_message, progress)
    plan = demo_plan(size, seed)
    out = Path(outdir)
    _prepare_outdir(out, plan, seed, force)

    corpus = collect_corpus(out / "data", plan, seed, say)
    fingerprint = hashlib.sha256(
        json.dumps([DEMO_FORMAT, plan.size, plan.vocab_size, seed, plan.model_config(), plan.batch_size,
                    [len(corpus[d]["train"]) for d in DOMAINS], [sum(map(len, corpus[d]["train"])) for d in DOMAINS]]).encode()
    ).hexdigest()[:16]
    say(f"tokenizer: byte-level BPE, {plan.vocab_size} tokens")
    tokenizer = train_tokenizer(corpus, plan.vocab_size, out / "tokenizer", fingerprint)

    models_dir = out / "models"
    todo, retrain = [], set()
    for m in plan.models:  # parents come first; a retrained parent invalidates its fine-tunes
        if m.parent in retrain or not _all_saved(models_dir, m, fingerprint):
            todo.append(m)
            retrain.add(m.name)
    full_table = model_table(plan, held_out=True)
    if todo:
        streams = token_streams(corpus, tokenizer)
        say(f"training {len(todo)} model(s) on {', '.join(DOMAINS)} "
            f"({plan.n_layer} layers, width {plan.n_embd}, context {plan.context}; CPU, {torch.get_num_threads()} "
            f"thread{'s' if torch.get_num_threads() > 1 else ''})")
        t_train = time.perf_counter()
        for m in todo:
            train_model(m, plan, tokenizer, streams, models_dir, fingerprint, progress)
        say(f"trained in {time.perf_counter() - t_train:.0f} s")
    else:
        say(f"{len(full_table)} trained models found in {models_dir} (cached)")

    table = model_table(plan)
    texts, bench = demo_text_set(corpus, plan, seed, out / "data")
    models_csv = out / "models.csv"
    _write_text(models_csv, table.to_csv(index=False))
    store = Store.create(out / "store", texts, exist_ok=True)
    store.set_metadata(read_metadata_csv(models_csv).reset_index())
    names = table["model"].tolist()
    pending = [n for n in names if not store.has_model(n)]
    if pending:
        say(f"scoring {len(pending)} models on {len(texts)} held-out texts "
            f"({plan.texts_per_domain} per domain, {plan.chunk_bytes} bytes each)")
        t_score = time.perf_counter()
        status = scoring.score_models(store, [str(models_dir / n) for n in pending], names=pending, device="cpu",
                                      dtype="float32", progress=progress, checkpoint_every=30.0,
                                      executor=executor_options)
        failed = {n: s.message for n, s in status.items() if not s.ok}
        if failed:
            raise LmmapError("the demo could not score: " + "; ".join(failed.values()))
        say(f"scored in {time.perf_counter() - t_score:.0f} s")
    if len(pending) < len(names):
        say(f"{len(names) - len(pending)} models already scored in {store.path} (cached)")

    all_names = full_table["model"].tolist()
    say(f"benchmark: top-5 next-token accuracy of {len(all_names)} models on {BENCH_CHUNKS} held-out chunks per domain "
        "(not in the text set)")
    scores = benchmark_scores(models_dir, all_names, bench, plan.context, out / "data" / "scores-cache.json", fingerprint)
    scores_csv = out / "scores.csv"
    _write_text(scores_csv, scores.to_csv())

    say("building the map…")
    mm = ModelMap.from_store(store, models=names)
    from lmmap import report
    from lmmap.analyses.map import build_map

    paths = report.write(build_map(mm), out / "map", color_by="model_type")
    lens = logit_lens(store, models_dir, out, names, progress, say, executor_options)
    check = finetune_check(mm, table)
    summary = kl_summary(check)
    session = session_commands(out, plan, len(texts))
    seconds, cpu_seconds = time.perf_counter() - t_start, time.process_time() - cpu_start
    nn = mm.neighbor_table(1)
    result = dict(
        paths={k: str(v) for k, v in paths.items()}, store=str(store.path), models_dir=str(models_dir),
        models_csv=str(models_csv), scores_csv=str(scores_csv), held_out=plan.held_out,
        n_models=len(names), n_texts=len(texts), seconds=seconds, cpu_seconds=cpu_seconds,
        threads=torch.get_num_threads(),
        finetune_check=check, kl_summary=summary, nearest=dict(zip(nn["model"], nn["neighbor"])), example_model=EXAMPLE_FINETUNE, session=session,
        lens=lens,
    )
    _write_text(out / "demo.json", json.dumps({**_demo_id(plan, seed), "last_run": result}, indent=2, default=str))
    return result


def logit_lens(store, models_dir: Path, out: Path, names: list[str], progress, say,
               executor_options: "ExecutorOptions | None" = None) -> dict:
    """The layers of :data:`LENS_MODEL` (``lmmap score --layers all``) in a store of their own, beside the models.

    ``OUT/lens-store`` holds every model of the demo's store (copied, with
    its metadata) and ``LENS_MODEL@layer0..K``; its own store keeps the main
    map's story (and its nearest neighbours) as it is. Writes the layers' KL
    (``OUT/layers``, :func:`lmmap.analyses.trajectory.layers`) and the map
    with the layers' path (``OUT/lens-map``). Returns their paths and the
    KL of each layer to the model's output (nats per text). ``executor_options``:
    as for the demo's models (:func:`run_demo`).
    """
    from lmmap import report, scoring
    from lmmap.analyses.map import build_map
    from lmmap.analyses.trajectory import layers
    from lmmap.data.store import Store
    from lmmap.map import ModelMap

    lens_store = Store.create(out / "lens-store", store.texts, exist_ok=True)
    missing = [n for n in names if not lens_store.has_model(n)]
    if missing:
        vectors = []
        for n in missing:
            v = store.vectors(n)
            vectors.append(dict(name=n, loglik=v["loglik"].to_numpy(), n_tokens=v["n_tokens"].to_numpy(),
                                truncated=v["truncated"].to_numpy(), record=store.record(n)))
        meta = store.metadata().reset_index()
        lens_store.write_models(vectors, metadata=meta[meta["model"].isin(missing)])
    status = scoring.score_models(lens_store, [str(models_dir / LENS_MODEL)], names=[LENS_MODEL], layers="all",
                                  device="cpu", dtype="float32", progress=progress, checkpoint_every=30.0,
                                  executor=executor_options)
    if not status[LENS_MODEL].ok:
        raise LmmapError(f"the demo could not score the layers of {LENS_MODEL}: {status[LENS_MODEL].message}")
    lensed = [n for n in lens_store.model_names() if lens_store.record(n).get("layers_of") == LENS_MODEL]
    family = store.metadata()["family"].get(LENS_MODEL) if "family" in store.metadata() else None
    # The map colours by model_type: the layers get their own colour (and the lensed model's lineage).
    lens_store.set_metadata(pd.DataFrame({"model": lensed, "model_type": "layer", "family": family}))
    mm = ModelMap.from_store(lens_store)
    result = layers(mm, LENS_MODEL)
    paths = report.write(result, out / "layers")
    lens_map = report.write(build_map(mm), out / "lens-map", color_by="model_type")
    paths.update({f"lens-{k}": v for k, v in lens_map.items()})
    say(f"logit lens: {len(result.table)} layers of {LENS_MODEL} in {lens_store.path} (KL to the model's output: "
        + ", ".join(f"layer {r.layer} {r.kl_to_final:.0f}" for r in result.table.itertuples()) + " nats/text)")
    return {"store": str(lens_store.path), "paths": {k: str(v) for k, v in paths.items()},
            "kl_to_output": dict(zip(result.table["model"], result.table["kl_to_final"].round(3)))}


def _all_saved(models_dir: Path, m: DemoModel, fingerprint: str) -> bool:
    dirs = [models_dir / m.name] + [models_dir / f"{m.name}-step{k}" for k in m.checkpoints]
    return all(_is_trained(d, m, fingerprint) for d in dirs)


def _demo_id(plan: DemoPlan, seed: int) -> dict:
    return {"lmmap_demo": DEMO_FORMAT, "size": plan.size, "seed": seed}


def _prepare_outdir(out: Path, plan: DemoPlan, seed: int, force: bool) -> None:
    """Refuse to write into a directory that is not a demo's; on ``force`` remove only what the demo made."""
    marker = out / "demo.json"
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a new or empty directory with -o", params=("out",))
    if out.exists() and any(out.iterdir()) and not marker.exists():
        raise InputError(f"{out} exists and is not an lmmap demo directory; give a new or empty directory with -o", params=("out",))
    if marker.exists():
        info = json.loads(marker.read_text())
        same = {k: info.get(k) for k in ("lmmap_demo", "size", "seed")} == _demo_id(plan, seed)
        if not same and not force:
            raise InputError(
                f"{out} holds the demo with size={info.get('size')}, seed={info.get('seed')}"
                + ("" if info.get("lmmap_demo") == DEMO_FORMAT else " of an older lmmap")
                + "; use another directory, or pass --force to rebuild it", params=("out", "seed")
            )
        if force:
            for sub in ("data", "tokenizer", "models", "store", "map", "lens-store", "layers", "lens-map"):
                shutil.rmtree(out / sub, ignore_errors=True)
            for name in ("models.csv", "scores.csv"):
                (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    _write_text(marker, json.dumps(_demo_id(plan, seed), indent=2))


def finetune_check(mm, table: pd.DataFrame) -> list[dict]:
    """For each fine-tune in the map: estimated KL to its base and to the nearest model trained from scratch."""
    kl = mm.kl_frame()
    scratch = table.loc[table["model_type"] == "scratch", "model"].tolist()
    rows = []
    for r in table[table["model_type"] == "finetune"].itertuples():
        if r.model not in kl.index:
            continue
        near = min(scratch, key=lambda s: kl.loc[r.model, s]) if scratch else None
        rows.append(dict(finetune=r.model, base=r.base_model, kl_to_base=float(kl.loc[r.model, r.base_model]),
                         nearest_scratch=near, kl_to_scratch=float(kl.loc[r.model, near]) if near else float("nan")))
    return rows


def kl_summary(check: list[dict]) -> dict:
    """The ranges the README quotes: each fine-tune's KL to its base, and how many times larger its KL to scratch is."""
    if not check:
        return {}
    to_base = [r["kl_to_base"] for r in check]
    ratio = [r["kl_to_scratch"] / r["kl_to_base"] for r in check if r["kl_to_base"] > 0]
    return dict(kl_to_base_min=min(to_base), kl_to_base_max=max(to_base),
                ratio_min=min(ratio) if ratio else float("nan"), ratio_max=max(ratio) if ratio else float("nan"))


def main(argv=None) -> None:  # pragma: no cover - `python -m lmmap.demo`
    run_demo(*(argv or sys.argv[1:2] or ["lmmap-demo"]))


__all__ = ["run_demo", "demo_plan", "session_commands", "DemoModel", "DemoPlan", "__version__"]
