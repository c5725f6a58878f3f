"""The offline demo: a small ecosystem of real language models, built and mapped on this machine.

``lmmap demo -o OUT`` needs no network and no downloaded weights. It

1. collects text in three domains from files every Python installation has:
   **code** (the standard library's ``*.py`` sources), **docs** (the Python
   language reference prose shipped in ``pydoc_data``; module docstrings where
   that is missing) and **legal** (the licence texts of the installed packages
   and ``/usr/share/common-licenses``). Each domain's documents are split into
   a training part and a held-out part;
2. trains a byte-level BPE tokenizer on the training text (``tokenizers``);
3. trains GPT-2-style models from it (plain PyTorch, CPU): a ``base`` model on
   the mixture of domains with intermediate checkpoints, a second base from
   another seed, fine-tunes of ``base`` on each domain, and models trained
   from scratch on one domain each;
4. scores every model on a text set cut from the *held-out* documents with
   :func:`lmmap.scoring.score_models` (the same path as ``lmmap score``), and
5. builds the map (:class:`lmmap.ModelMap`), coloured by model type.

Everything lives under OUT (``data/``, ``tokenizer/``, ``models/``, ``store/``,
``map/``). Trained models, scores and the corpus are cached there, so a second
run only redraws the map. Metadata (``model_type``: base / checkpoint /
finetune / scratch; ``family``; ``domain``; ``parent``) goes into the store,
so ``lmmap map --store OUT/store`` can recolour it.
"""

from __future__ import annotations

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

import numpy as np
import pandas as pd

from . import __version__
from .exceptions import LmmapError

DEMO_FORMAT = 1  # bump to invalidate caches of older demo layouts
DOMAINS = ("code", "docs", "legal")
HELD_OUT_EVERY = 5  # one document in five is held out for the text set
MAX_DOC_BYTES = 64_000  # long documents (torch's licence) would crowd out the rest
MIN_DOMAIN_BYTES = 60_000


@dataclass(frozen=True)
class DemoModel:
    """One model of the ecosystem: trained from ``parent`` (or from scratch) on ``domain`` for ``steps`` steps."""

    name: str
    model_type: str  # base, checkpoint, finetune, scratch
    family: str
    domain: str  # a domain or "mix"
    steps: int
    lr: float
    seed: int = 0
    parent: str | None = None
    checkpoints: tuple[int, ...] = ()  # steps at which to save "<name>-step<k>" (model_type checkpoint)


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


def demo_plan(size: str = "full", seed: int = 0) -> DemoPlan:
    """The ecosystem for ``size``: ``full`` (13 models, about two minutes on 2 cores) or ``small`` (6 models, for tests)."""
    # Sizes are set by time: on 2 CPU cores training is bound by per-step overhead as much as by FLOPs,
    # so the models are narrow and each step sees 4 windows of 256 tokens.
    if size == "full":
        models = [
            DemoModel("base", "base", "base", "mix", 120, 2e-3, seed, checkpoints=(10, 30, 60)),
            DemoModel("base2", "base", "base2", "mix", 120, 2e-3, seed + 1, checkpoints=(30,)),
            *[DemoModel(f"base-ft-{d}", "finetune", "base", d, 25, 5e-4, seed, parent="base") for d in DOMAINS],
            DemoModel("base2-ft-code", "finetune", "base2", "code", 25, 5e-4, seed + 1, parent="base2"),
            *[DemoModel(f"scratch-{d}", "scratch", f"scratch-{d}", d, 60, 2e-3, seed + 2) for d in DOMAINS],
        ]
        return DemoPlan("full", 800_000, 100, 512, 1024, 2, 96, 4, 256, 4, tuple(models))
    if size == "small":
        models = [
            DemoModel("base", "base", "base", "mix", 60, 2e-3, seed, checkpoints=(15,)),
            *[DemoModel(f"base-ft-{d}", "finetune", "base", d, 12, 5e-4, seed, parent="base") for d in DOMAINS],
            DemoModel("scratch-code", "scratch", "scratch-code", "code", 30, 2e-3, seed + 2),
        ]
        return DemoPlan("small", 300_000, 50, 512, 1024, 2, 96, 4, 256, 4, tuple(models))
    raise LmmapError(f"--size must be full or small, got {size!r}")


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


def docs_documents() -> list[tuple[str, str]]:
    """The language reference's prose (``pydoc_data.topics``), or module docstrings where it is not installed."""
    try:
        from pydoc_data.topics import topics

        return [(f"pydoc_data/{k}", v) for k, v in sorted(topics.items())]
    except ImportError:
        import ast

        out = []
        for label, src in code_documents():
            try:
                tree = ast.parse(src)
            except SyntaxError:
                continue
            parts = [ast.get_docstring(n) for n in ast.walk(tree)
                     if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
            text = "\n\n".join(p for p in parts if p and len(p) > 200)
            if text:
                out.append((f"docstrings/{label}", text))
        return out


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


def _held_out(label: str) -> bool:
    return int(hashlib.sha1(label.encode()).hexdigest(), 16) % HELD_OUT_EVERY == 0


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
    for name in DOMAINS:
        docs = [(lbl, t[:MAX_DOC_BYTES]) for lbl, t in DOMAIN_SOURCES[name]() if t.strip()]
        held = [(lbl, t) for lbl, t in docs if _held_out(lbl)]
        train = [t for lbl, t in docs if not _held_out(lbl)]
        train = [train[i] for i in rng.permutation(len(train))]
        size = np.cumsum([len(t.encode()) for t in train])
        train = train[: int(np.searchsorted(size, plan.train_bytes_per_domain)) + 1]
        n_train, n_held = sum(len(t.encode()) for t in train), sum(len(t.encode()) for _, t in held)
        if n_train < MIN_DOMAIN_BYTES or n_held < plan.texts_per_domain * plan.chunk_bytes:
            raise LmmapError(
                f"the demo found too little {name} text on this machine ({n_train:,} bytes to train on, "
                f"{n_held:,} held out); it reads the Python standard library and installed packages' licences"
            )
        domains[name] = {"train": train, "heldout": held}
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"plan": [plan.train_bytes_per_domain, seed, DEMO_FORMAT], "domains": domains}))
    return domains


def demo_text_set(corpus, plan: DemoPlan, seed: int, workdir: Path):
    """``texts_per_domain`` chunks of ``chunk_bytes`` from each domain's held-out documents (source = domain)."""
    from .texts import TextSet, build_text_set

    texts, sources, chunk_idx = [], [], []
    workdir.mkdir(parents=True, exist_ok=True)
    for name in DOMAINS:
        path = workdir / f"heldout-{name}.jsonl"
        path.write_text("\n".join(json.dumps({"text": t}) for _, t in corpus[name]["heldout"]), encoding="utf-8")
        ts = build_text_set([path], chunk_bytes=plan.chunk_bytes, min_bytes=plan.chunk_bytes // 2,
                            n=plan.texts_per_domain, seed=seed)
        texts += ts.texts
        sources += [name] * len(ts)
        chunk_idx += ts.table.column("chunk_idx").to_pylist()
    return TextSet.from_texts(texts, sources=sources, chunk_idx=np.asarray(chunk_idx, dtype=np.int64))


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
    # A slice of each domain is enough for 2k merges and keeps this step to seconds.
    sample = [t for name in DOMAINS for t in corpus[name]["train"][:200]]
    tok.train_from_iterator(sample, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    fast.save_pretrained(out)
    marker.write_text(json.dumps({"fingerprint": fingerprint}))
    return fast


def token_streams(corpus, tokenizer) -> dict[str, np.ndarray]:
    """Each domain's training documents as one token stream, documents separated by the end-of-text token."""
    eot = tokenizer.eos_token_id
    streams = {}
    for name in DOMAINS:
        ids = tokenizer(corpus[name]["train"], add_special_tokens=False, verbose=False)["input_ids"]
        streams[name] = np.concatenate([np.asarray(x + [eot], dtype=np.int64) for x in ids])
    return streams


def sample_batch(streams: dict[str, np.ndarray], domain: str, batch_size: int, seq_len: int, rng) -> np.ndarray:
    """Random windows of ``seq_len`` tokens; for ``mix``, each row from a domain drawn uniformly."""
    names = list(DOMAINS) if domain == "mix" else [domain]
    rows = []
    for which in rng.integers(0, len(names), batch_size):
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
    task = progress.add_task(f"train {spec.name} ({spec.domain})", total=spec.steps, loss=float("nan"), rate="")
    t0, tokens = time.perf_counter(), 0
    for step in range(spec.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, spec.steps, spec.lr)
        x = torch.from_numpy(sample_batch(streams, spec.domain, plan.batch_size, plan.context, rng))
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += x.numel()
        rate = f"{tokens / (time.perf_counter() - t0):,.0f} tok/s"
        progress.update(task, advance=1, loss=float(loss), rate=rate)
        if step + 1 in spec.checkpoints:
            _save(model, tokenizer, models_dir / f"{spec.name}-step{step + 1}", spec, fingerprint, step + 1)
    _save(model, tokenizer, models_dir / spec.name, spec, fingerprint, spec.steps)


def _save(model, tokenizer, path: Path, spec: DemoModel, fingerprint: str, step: int) -> None:
    # The marker is written last: a directory without it (a run killed while saving) is trained again.
    (path / "lmmap-demo.json").unlink(missing_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "lmmap-demo.json").write_text(json.dumps({"spec": asdict(spec), "step": step, "fingerprint": fingerprint}))


def _is_trained(path: Path, spec: DemoModel, fingerprint: str) -> bool:
    marker = path / "lmmap-demo.json"
    if not marker.exists():
        return False
    info = json.loads(marker.read_text())
    return info.get("fingerprint") == fingerprint and info.get("spec") == json.loads(json.dumps(asdict(spec)))


def model_table(plan: DemoPlan) -> pd.DataFrame:
    """Every model of the plan (checkpoints included) with its metadata, parents before children."""
    rows = []
    for m in plan.models:
        for k in m.checkpoints:
            rows.append(dict(model=f"{m.name}-step{k}", model_type="checkpoint", family=m.family, domain=m.domain,
                             parent=m.parent or "", train_steps=k, seed=m.seed, trained_by=m.name))
        rows.append(dict(model=m.name, model_type=m.model_type, family=m.family, domain=m.domain,
                         parent=m.parent or "", train_steps=m.steps, seed=m.seed, trained_by=m.name))
    return pd.DataFrame(rows)


# -- the whole demo -----------------------------------------------------------------------


def run_demo(outdir="lmmap-demo", size: str = "full", force: bool = False, seed: int = 0, console=None,
             progress: bool = True, threads: int | None = 1) -> dict:
    """Build, score and map the demo ecosystem under ``outdir``; returns paths and a summary.

    ``threads``: torch threads for training and scoring (restored afterwards;
    ``None`` keeps the current setting). The demo's models are so small that a
    second thread gains little, while on a busy machine threads that wait for
    each other make every step many times slower, so one is the default.

    Returns a dict with ``paths`` (the map files), ``store``, ``models_dir``,
    ``n_models``, ``n_texts``, ``seconds`` and ``finetune_check`` (for each
    fine-tune: KL to its base and to the nearest from-scratch model).
    """
    import torch

    if threads is not None and threads < 1:
        raise LmmapError(f"--threads must be at least 1, got {threads}")
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run_demo(outdir, size, force, seed, console, progress)
    finally:
        torch.set_num_threads(old_threads)


def _run_demo(outdir, size, force, seed, console, progress) -> dict:
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .modelmap import ModelMap
    from .scoring import score_models
    from .store import Store

    t_start = time.perf_counter()
    console = console or Console(stderr=True)
    say = (lambda msg: console.print(msg, highlight=False, markup=False)) if progress else (lambda msg: None)
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
    if todo:
        streams = token_streams(corpus, tokenizer)
        say(f"training {len(todo)} model(s) on {', '.join(DOMAINS)} "
            f"({plan.n_layer} layers, width {plan.n_embd}, context {plan.context}; CPU, {torch.get_num_threads()} threads)")
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]:.2f}"), TextColumn("{task.fields[rate]}"), TimeRemainingColumn()]
        t_train = time.perf_counter()
        with Progress(*columns, console=console, disable=not progress) as bar:
            for m in todo:
                train_model(m, plan, tokenizer, streams, models_dir, fingerprint, bar)
        say(f"trained in {time.perf_counter() - t_train:.0f} s")
    else:
        say(f"{len(model_table(plan))} trained models found in {models_dir} (cached)")

    table = model_table(plan)
    texts = demo_text_set(corpus, plan, seed, out / "data")
    store = Store.create(out / "store", texts, exist_ok=True)
    store.set_metadata(table.drop(columns=["trained_by"]))
    names = table["model"].tolist()
    pending = [n for n in names if not store.has_model(n)]
    if pending:
        say(f"scoring {len(pending)} models on {len(texts)} held-out texts "
            f"({plan.texts_per_domain} per domain, {plan.chunk_bytes} bytes each)")
        t_score = time.perf_counter()
        status = score_models(store, [str(models_dir / n) for n in pending], names=pending, device="cpu",
                              dtype="float32", progress=progress, checkpoint_every=30.0,
                              console=console if progress else None)
        failed = {n: s.message for n, s in status.items() if not s.ok}
        if failed:
            raise LmmapError("the demo could not score: " + "; ".join(failed.values()))
        say(f"scored in {time.perf_counter() - t_score:.0f} s")
    if len(pending) < len(names):
        say(f"{len(names) - len(pending)} models already scored in {store.path} (cached)")

    say("building the map…")
    mm = ModelMap.from_store(store, models=names)
    paths = mm.write(out / "map", embedding="tsne", color_by="model_type")
    check = finetune_check(mm, table)
    if progress:
        _print_summary(console, mm, check)
    result = dict(
        paths={k: str(v) for k, v in paths.items()}, store=str(store.path), models_dir=str(models_dir),
        n_models=len(names), n_texts=len(texts), seconds=time.perf_counter() - t_start,
        finetune_check=check, example_model="base-ft-code",
    )
    (out / "demo.json").write_text(json.dumps({**_demo_id(plan, seed), "last_run": result}, indent=2, default=str))
    return result


def _all_saved(models_dir: Path, m: DemoModel, fingerprint: str) -> bool:
    dirs = [models_dir / m.name] + [models_dir / f"{m.name}-step{k}" for k in m.checkpoints]
    return all(_is_trained(d, m, fingerprint) for d in dirs)


def _demo_id(plan: DemoPlan, seed: int) -> dict:
    return {"lmmap_demo": DEMO_FORMAT, "size": plan.size, "seed": seed}


def _prepare_outdir(out: Path, plan: DemoPlan, seed: int, force: bool) -> None:
    """Refuse to write into a directory that is not a demo's; on ``force`` remove only what the demo made."""
    marker = out / "demo.json"
    if out.exists() and any(out.iterdir()) and not marker.exists():
        raise LmmapError(f"{out} exists and is not an lmmap demo directory; give a new or empty directory with -o")
    if marker.exists():
        info = json.loads(marker.read_text())
        same = {k: info.get(k) for k in ("lmmap_demo", "size", "seed")} == _demo_id(plan, seed)
        if not same and not force:
            raise LmmapError(
                f"{out} holds the demo with size={info.get('size')}, seed={info.get('seed')}; "
                "use another directory, or pass --force to rebuild it"
            )
        if force:
            for sub in ("data", "tokenizer", "models", "store", "map"):
                shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(_demo_id(plan, seed), indent=2))


def finetune_check(mm, table: pd.DataFrame) -> list[dict]:
    """For each fine-tune: estimated KL to its base and to the nearest model trained from scratch."""
    kl = mm.kl_frame()
    scratch = table.loc[table["model_type"] == "scratch", "model"].tolist()
    rows = []
    for r in table[table["model_type"] == "finetune"].itertuples():
        near = min(scratch, key=lambda s: kl.loc[r.model, s]) if scratch else None
        rows.append(dict(finetune=r.model, base=r.parent, kl_to_base=float(kl.loc[r.model, r.parent]),
                         nearest_scratch=near, kl_to_scratch=float(kl.loc[r.model, near]) if near else float("nan")))
    return rows


def _print_summary(console, mm, check: list[dict]) -> None:
    from rich.table import Table

    t = Table(title="fine-tunes stay near their base", title_justify="left")
    for col in ("fine-tune", "KL to base", "nearest from-scratch model", "its KL"):
        t.add_column(col, justify="right" if "KL" in col else "left")
    for r in check:
        t.add_row(r["finetune"], f"{r['kl_to_base']:.3f}", str(r["nearest_scratch"]), f"{r['kl_to_scratch']:.3f}")
    console.print(t)
    nn = mm.neighbor_table(1)
    console.print("nearest neighbour of each model: " + ", ".join(f"{a}→{b}" for a, b in zip(nn["model"], nn["neighbor"])),
                  highlight=False)


def main(argv=None) -> None:  # pragma: no cover - `python -m lmmap.demo`
    run_demo(*(argv or sys.argv[1:2] or ["lmmap-demo"]))


__all__ = ["run_demo", "demo_plan", "DemoModel", "DemoPlan", "__version__"]
