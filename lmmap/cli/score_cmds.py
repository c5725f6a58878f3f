"""Commands that compute log-likelihoods: score (models on the store's texts) and demo (offline end to end)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..exceptions import LmmapError
from ._app import StoreOption, app, console, err_console, fail


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
):
    """Score models on the store's texts; a killed run resumes from its checkpoints."""
    from ..scoring import score_models
    from ..store import Store

    if name is not None and len(models) != 1:
        fail(f"--name names one model, but {len(models)} were given")
    s = Store(store)
    text_pos = None
    if subset is not None:
        from ..subset import Subset

        sub = Subset.load(subset)
        sub.check_store(s)
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
    console.print(f"{done} scored, {skipped} skipped, {len(failed)} failed; store {s.path}")
    if failed:
        fail(f"{len(failed)} model(s) failed and were not stored: {', '.join(failed)} (messages above)")


@app.command()
def demo(
    output: Annotated[Path, typer.Option("-o", "--output", help="Where the models, the store and the map go.")] = Path("lmmap-demo"),
    size: Annotated[str, typer.Option(help="full (13 models) or small (6 models, for a quick look).")] = "full",
    force: Annotated[bool, typer.Option("--force", help="Retrain and rescore everything instead of reusing OUTPUT's cache.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the training runs and the text sample.")] = 0,
    threads: Annotated[int, typer.Option(help="Torch threads (the demo's models are tiny: one is fastest on a busy machine).")] = 1,
):
    """Build a small ecosystem of real models from text on this machine, score them and draw their map (offline)."""
    from ..demo import run_demo

    try:
        result = run_demo(output, size=size, force=force, seed=seed, console=err_console, threads=threads)
    except LmmapError as exc:
        fail(str(exc))
    console.print(f"[bold]demo map of {result['n_models']} models on {result['n_texts']} texts[/] "
                  f"({result['seconds']:.0f} s):")
    for label, p in result["paths"].items():
        console.print(f"  {label:14s} {p}")
    console.print(f"explore it further with e.g. `lmmap neighbors {result['example_model']} --store {result['store']}`")
