"""Importance resampling of texts and placing new models: ``lmmap select``, ``lmmap add``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from lmmap.exceptions import InputError, LmmapError
from lmmap.cli._app import (AllowOtherTextsOption, Interrupted, StoreOption, ThreadsOption, app, check_color_by,
                            check_embedding, check_replicates, console, lit, one_line, output_dir, print_files)
from lmmap.cli.map_cmds import UnitOption
from lmmap.cli.score_cmds import ExecutorOption, GpusPerModelOption, RayAddressOption, ShardTextsOption, executor_kwargs

if TYPE_CHECKING:  # annotations only: the heavy modules load when a command runs
    from lmmap.data.store import Store


def _model_list(models: list[str] | None, exclude: list[str] | None, store: Store) -> list[str] | None:
    """``--model``/``--exclude`` (each repeatable, or one comma-separated value) to a model list."""
    split = lambda xs: [m.strip() for x in (xs or []) for m in x.split(",") if m.strip()]  # noqa: E731
    chosen, dropped = split(models), split(exclude)
    if not chosen and not dropped:
        return None
    base = chosen or store.complete_models()
    unknown = [m for m in dropped if m not in base]
    if unknown:
        raise InputError(f"--exclude names model(s) not in the map: {', '.join(map(repr, unknown[:5]))}")
    return [m for m in base if m not in set(dropped)]


def _adaptive_interrupted(exc: BaseException) -> str:
    """What Ctrl-C during ``add --adaptive`` kept: the rounds already scored are in the store, and a rerun with the
    same seed draws the same texts, so it scores only those it lacks (as ``score`` says of its checkpoints)."""
    said = one_line(exc)
    kept = "the texts of the rounds already scored are kept in the store"
    if "rerun the same command to resume" in said:
        return f"{said}; {kept}"
    return (f"{said}; " if said else "") + f"{kept}; rerun the same command to resume (the same --seed draws the same texts)"


def _parse_n(text: str) -> int:
    """``--n`` as a positive integer; read as text so that 2.5 or 0 get the same clear message."""
    from lmmap.maths.resampling import check_sample_size

    try:
        value = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise InputError(f"--n must be a positive integer, got {text!r}") from None
    try:
        return check_sample_size(value)
    except LmmapError as exc:
        raise InputError(str(exc).replace("the resample size n", "--n")) from None


@app.command()
def select(
    method: Annotated[str, typer.Option("--method", metavar="uniform|ls|kl", help="Importance of a text: uniform, ls (‖Q^(s)‖²) or kl (sqrt Σ_ij (q_i−q_j)⁴).")],
    n: Annotated[str, typer.Option("--n", metavar="N", help="Number of texts drawn with replacement (the d unique ones are kept).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="SUBSET.json to write.")],
    store: StoreOption,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the draws.")] = 0,
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="Model that defines the map (repeatable; default: every model scored on all texts).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="Leave this model out of the map (repeatable).")] = None,
    texts_out: Annotated[Optional[Path], typer.Option("--texts-out", help="Also write the d texts as plain JSONL (index, text) to score elsewhere.")] = None,
    no_clip: Annotated[bool, typer.Option("--no-clip", help="Do not clip low log-likelihoods (the subset then records no threshold).")] = False,
):
    """Resample texts by importance: π from the map's models, n draws, the d unique texts with counts and weights."""
    from lmmap.analyses.select import select_from_store
    from lmmap.data.store import Store
    from lmmap.maths.resampling import warn_if_no_real_subset

    n_draws = _parse_n(n)
    s = Store(store)
    models = _model_list(model, exclude, s)
    sub = select_from_store(s, method, n_draws, random_state=seed, models=models, clip=not no_clip)
    sub.save(output)  # SUBSET.json is a data file, under the name the user gave
    console.print(lit(sub.summary()))
    warn_if_no_real_subset(sub.n, sub.d, sub.n_texts)
    if sub.n_excluded:
        console.print(
            f"{sub.n_excluded} text(s) that every model scores alike have π = 0 and were excluded "
            "(they add nothing to any distance)"
        )
    console.print(f"  subset  {lit(output)}")
    if texts_out is not None:
        sub.save_texts(texts_out, s)
        console.print(f"  texts   {lit(texts_out)}")


@app.command()
def add(
    models: Annotated[list[str], typer.Argument(help="Models to add: Hugging Face ids or local paths (or names already in the store).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output directory.")],
    store: StoreOption,
    subset: Annotated[Optional[Path], typer.Option("--subset", help="SUBSET.json from `lmmap select`: the new models are scored on its texts only (or use --adaptive).")] = None,
    adaptive: Annotated[bool, typer.Option("--adaptive", help="Instead of --subset: score each model in rounds of texts drawn by importance and stop once its KL to its nearest existing models is known to --target-se.")] = False,
    target_se: Annotated[float, typer.Option("--target-se", help="--adaptive: stop when the relative standard error of the KL to each of the --neighbors nearest existing models is at most this (0 < x < 1).")] = 0.05,
    neighbors: Annotated[Optional[int], typer.Option("--neighbors", show_default=False, help="--adaptive: how many nearest existing models must reach --target-se (default: 5, or every existing model when the map has fewer).")] = None,
    max_texts: Annotated[Optional[int], typer.Option("--max-texts", help="--adaptive: score at most this many texts per model (default: all N); adaptive.csv marks a model stopped there max-texts.")] = None,
    round_size: Annotated[int, typer.Option("--round", help="--adaptive: texts drawn per round (each round loads the model again; use more for large models).")] = 32,
    device: Annotated[Optional[str], typer.Option(help="Device for scoring (cpu, cuda, mps; default: best available).")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="Model dtype for scoring (float32, bfloat16, float16; default: scorer's).")] = None,
    convention: Annotated[Optional[str], typer.Option(help="reference or full (default: that of the map's models; another is refused).")] = None,
    batch_tokens: Annotated[Optional[int], typer.Option("--batch-tokens", help="Tokens per scoring batch.")] = None,
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="Truncate texts to this many tokens (default: the model's context).")] = None,
    stride: Annotated[Optional[int], typer.Option("--stride", help="Score long texts with a sliding window of this stride instead of truncating.")] = None,
    revision: Annotated[Optional[str], typer.Option("--revision", help="Model revision (hub branch, tag or commit).")] = None,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Allow models with custom code from the hub.")] = False,
    device_map: Annotated[Optional[str], typer.Option("--device-map", help="Passed to from_pretrained (auto: spread a large model over devices).")] = None,
    name: Annotated[Optional[list[str]], typer.Option("--name", help="Store the models under these names (repeat once per MODEL).")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars while scoring.")] = False,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Recompute the whole map (all positions may move) instead of placing the new models into it.")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Re-score and re-place models that are already in the map or store.")] = False,
    base_coords: Annotated[Optional[Path], typer.Option("--base-coords", help="coords.csv of an existing map (from `lmmap map`): the existing models keep exactly these positions.")] = None,
    embedding: Annotated[str, typer.Option("--embedding", metavar="auto|mds|tsne|pca", help="2-D embedding: auto (as `lmmap map`: classical MDS below 40 models, t-SNE from 40 on), mds, tsne or pca.")] = "auto",
    color_by: Annotated[str, typer.Option("--color-by", help="Metadata column that colours the map.")] = "model_type",
    k: Annotated[int, typer.Option("-k", help="Neighbours listed per model.")] = 10,
    R: Annotated[int, typer.Option("--R", help="Bootstrap replicates for the KL standard errors.")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the bootstrap replicates (with --subset) or of the draws (--adaptive).")] = 0,
    tsne_seed: Annotated[int, typer.Option("--tsne-seed", help="Random state of the 2-D embedding.")] = 42,
    allow_other_texts: AllowOtherTextsOption = False,
    threads: ThreadsOption = "auto",
    executor: ExecutorOption = "local",
    ray_address: RayAddressOption = None,
    gpus_per_model: GpusPerModelOption = None,
    shard_texts: ShardTextsOption = None,
    unit: UnitOption = "nats-per-text",
):
    """Score new models on a subset's texts only (or adaptively) and place them into the existing map."""
    from lmmap.map import check_unit
    from lmmap.parallel import set_threads

    check_unit(unit)  # a unit typo is refused before the store is read or anything is scored
    check_embedding(embedding)
    set_threads(threads)
    if adaptive:
        if subset is not None:
            raise InputError("--adaptive draws its own texts: drop --subset (or drop --adaptive to score the subset's texts)")
        if replace or rebuild or base_coords is not None:
            raise InputError("--replace, --rebuild and --base-coords do not apply to --adaptive")
    elif subset is None:
        raise InputError("give --subset SUBSET.json (from `lmmap select`), or --adaptive")
    else:
        check_replicates(R)
    from lmmap import report
    from lmmap.cli._progress import RichProgress
    from lmmap.data.store import Store

    s = Store(store)
    score_kwargs = dict(device=device, dtype=dtype, batch_tokens=batch_tokens, max_length=max_length, stride=stride,
                        revision=revision, device_map=device_map)
    score_kwargs = {k_: v for k_, v in score_kwargs.items() if v is not None}
    if trust_remote_code:
        score_kwargs["trust_remote_code"] = True
    score_kwargs.update(executor_kwargs(executor, ray_address, gpus_per_model, shard_texts))
    check_color_by(color_by, s.metadata().columns)
    with output_dir(output), RichProgress(console, enabled=not no_progress) as progress:
        if adaptive:
            from lmmap.analyses.adaptive import place_adaptive

            try:
                result = place_adaptive(
                    s, models, names=name or None, target_se=target_se, neighbors=neighbors, max_texts=max_texts,
                    round_size=round_size, random_state=seed, convention=convention, score_kwargs=score_kwargs,
                    embedding=embedding, embedding_random_state=tsne_seed, unit=unit, progress=progress,
                )
            except KeyboardInterrupt as exc:
                raise Interrupted(_adaptive_interrupted(exc)) from None
        else:
            from lmmap.analyses.place import add_models
            from lmmap.data.subset import Subset

            result = add_models(
                s, models, Subset.load(subset, store=s, allow_other_texts=allow_other_texts), names=name or None,
                convention=convention, rebuild=rebuild, replace=replace, R=R, random_state=seed,
                embedding=embedding, embedding_random_state=tsne_seed, base_coords=base_coords,
                score_kwargs=score_kwargs, unit=unit, progress=progress,
            )
        paths = report.write(result, output, k=k, color_by=color_by)
    for line in result.summary().splitlines():  # lit() shows a newline as "\n": one line at a time
        console.print(lit(line))
    print_files(paths)
