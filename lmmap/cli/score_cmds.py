"""Commands that compute log-likelihoods: score (models on the store's texts) and demo (offline end to end)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lmmap.exceptions import LmmapError
from lmmap.cli._app import AllowOtherTextsOption, StoreOption, ThreadsOption, app, console, err_console, fail, lit


@app.command()
def score(
    models: Annotated[list[str], typer.Argument(help="Causal LMs: local save_pretrained() directories or hub names.")],
    store: StoreOption,
    device: Annotated[str, typer.Option(help="cpu, cuda, mps or auto.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16 (log-softmax is always float32).")] = "float32",
    convention: Annotated[str, typer.Option(help="reference (the authors': first token unscored) or full (BOS/EOS prepended).")] = "reference",
    subset: Annotated[Optional[Path], typer.Option("--subset", help="SUBSET.json from `lmmap select`: score only its texts.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Store a single model under this name instead of MODEL.")] = None,
    batch_tokens: Annotated[Optional[int], typer.Option("--batch-tokens", help="Padded tokens per batch (default: 1024 on CPU, 32768 on CUDA).")] = None,
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="Context length (default: the model's); longer texts are truncated.")] = None,
    stride: Annotated[Optional[int], typer.Option("--stride", help="Score long texts with a sliding window moving this many tokens, instead of truncating.")] = None,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Run the model's own code from its repository (only for code you trust).")] = False,
    revision: Annotated[Optional[str], typer.Option(help="Hub revision (branch, tag or commit).")] = None,
    device_map: Annotated[Optional[str], typer.Option("--device-map", help="Passed to from_pretrained (auto: spread a large model over devices).")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Score again models already in the store.")] = False,
    checkpoint_every: Annotated[float, typer.Option("--checkpoint-every", help="Seconds between checkpoints (0: after every batch).")] = 60.0,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars.")] = False,
    allow_other_texts: AllowOtherTextsOption = False,
    threads: ThreadsOption = "auto",
):
    """Score models on the store's texts; a killed run resumes from its checkpoints."""
    from lmmap.scoring.hf import score_models
    from lmmap.data.store import Store
    from lmmap.parallel import set_threads

    if name is not None and len(models) != 1:
        fail(f"--name names one model, but {len(models)} were given")
    set_threads(threads)
    s = Store(store)
    text_pos = None
    if subset is not None:
        from lmmap.analyses.select import Subset

        sub = Subset.load(subset, store=s, allow_other_texts=allow_other_texts)
        text_pos = sub.text_pos
    statuses = score_models(
        s, models, names=None if name is None else [name], text_pos=text_pos, device=device, dtype=dtype,
        convention=convention, batch_tokens=batch_tokens, max_length=max_length, stride=stride,
        trust_remote_code=trust_remote_code, revision=revision, replace=replace, progress=not no_progress,
        checkpoint_every=checkpoint_every, device_map=device_map, console=err_console,
    )
    failed = [n for n, st in statuses.items() if not st.ok]
    done = sum(st.status == "scored" for st in statuses.values())
    skipped = sum(st.status == "skipped" for st in statuses.values())
    console.print(f"{done} scored, {skipped} skipped, {len(failed)} failed; store {lit(s.path)}")
    if failed:
        fail(f"{len(failed)} model(s) failed and were not stored: {', '.join(failed)} (messages above)")


@app.command()
def demo(
    output: Annotated[Path, typer.Option("-o", "--output", help="Where the models, the store, models.csv, scores.csv and the map go.")] = Path("lmmap-demo"),
    size: Annotated[str, typer.Option(help="full (15 models + 1 held out for `lmmap add`, 1,020 texts) or small (6 models, for a quick look).")] = "full",
    force: Annotated[bool, typer.Option("--force", help="Retrain and rescore everything instead of reusing OUTPUT's cache.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the training runs and the text sample.")] = 0,
    threads: Annotated[str, typer.Option(help="Torch threads for training and scoring: a number, or auto (1 on a 2-core machine, where a second thread is many times slower once the cores are busy; the idle cores less one on a larger machine).")] = "auto",
):
    """Build a small ecosystem of real models from text on this machine, score them and draw their map (offline)."""
    from lmmap.demo import run_demo
    from lmmap.parallel import resolve_threads

    resolve_threads(threads)  # a bad value fails before any work
    try:
        result = run_demo(output, size=size, force=force, seed=seed, console=err_console, threads=threads)
    except LmmapError as exc:
        fail(str(exc))
    console.print(f"[bold]demo map of {result['n_models']} models on {result['n_texts']} texts[/] "
                  f"({result['seconds']:.0f} s on this machine, {result['cpu_seconds']:.0f} s of CPU, "
                  f"{result['threads']} torch thread(s)):")
    for label, p in result["paths"].items():
        console.print(f"  {label:14s} {lit(p)}")
    console.print(f"  {'models.csv':14s} {lit(result['models_csv'])}")
    console.print(f"  {'scores.csv':14s} {lit(result['scores_csv'])}")
    if result["held_out"]:
        console.print(f"held out of the store for `lmmap add`: {lit(', '.join(result['held_out']))}")
    console.print("the README's session on this demo (outputs go to ./session/):", highlight=False)
    for line in result["session"]:
        console.print(f"  {lit(line)}", highlight=False, soft_wrap=True)
