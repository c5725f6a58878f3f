"""Importance resampling of texts and placing new models: ``lmmap select``, ``lmmap add``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from lmmap.exceptions import InputError
from lmmap.cli._app import Interrupted, app, check_color_by, console, lit, one_line, output_dir, print_files
from lmmap.cli._options import option
from lmmap.cli.score_cmds import executor_options

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
        raise InputError(f"--exclude names model(s) not in the map: {', '.join(map(repr, unknown[:5]))}", params=("exclude",))
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
            raise InputError(f"--n must be a positive integer, got {text!r}", params=("n",)) from None
    return check_sample_size(value)  # its error names n, which the command line shows as --n


@app.command()
def select(
    method: option("method"),
    n: option("n"),
    output: option("subset_output"),
    store: option("store"),
    seed: option("random_state"),
    model: option("model"),
    exclude: option("exclude"),
    texts_out: option("texts_out"),
    no_clip: option("no_clip"),
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
    output: option("output"),
    store: option("store"),
    subset: option("subset"),
    adaptive: option("adaptive"),
    target_se: option("target_se"),
    neighbors: option("neighbors"),
    max_texts: option("max_texts"),
    round_size: option("round_size"),
    backend: option("backend"),
    base_url: option("base_url"),
    api_key_env: option("api_key_env"),
    tokenizer: option("tokenizer"),
    concurrency: option("concurrency"),
    device: option("device"),
    dtype: option("dtype"),
    convention: option("add_convention"),
    batch_tokens: option("batch_tokens"),
    max_length: option("max_length"),
    stride: option("stride"),
    revision: option("revision"),
    trust_remote_code: option("trust_remote_code"),
    device_map: option("device_map"),
    name: option("names"),
    no_progress: option("no_progress"),
    rebuild: option("rebuild"),
    replace: option("replace"),
    base_coords: option("base_coords"),
    embedding: option("embedding"),
    color_by: option("color_by"),
    metadata: option("metadata"),
    k: option("k"),
    R: option("R"),
    seed: option("random_state"),
    tsne_seed: option("embedding_random_state"),
    allow_other_texts: option("allow_other_texts"),
    threads: option("threads"),
    executor: option("executor"),
    ray_address: option("ray_address"),
    gpus_per_model: option("gpus_per_model"),
    shard_texts: option("shard_texts"),
    unit: option("unit"),
):
    """Score new models on a subset's texts only (or adaptively) and place them into the existing map."""
    from lmmap.parallel import set_threads

    set_threads(threads)
    if adaptive:
        if subset is not None:
            raise InputError("--adaptive draws its own texts: drop --subset (or drop --adaptive to score the subset's texts)",
                             params=("adaptive", "subset"))
        if replace or rebuild:
            raise InputError("--replace and --rebuild do not apply to --adaptive",
                             params=("adaptive", "replace", "rebuild"))
    elif subset is None:
        raise InputError("give --subset SUBSET.json (from `lmmap select`), or --adaptive", params=("subset", "adaptive"))
    from lmmap import report
    from lmmap.cli._progress import RichProgress
    from lmmap.data.store import Store
    from lmmap.scoring.options import ScoringOptions

    s = Store(store)
    given = dict(backend=backend, device=device, dtype=dtype, batch_tokens=batch_tokens, max_length=max_length,
                 stride=stride, revision=revision, device_map=device_map, base_url=base_url, api_key_env=api_key_env,
                 tokenizer=tokenizer, concurrency=concurrency)
    # Flags left out keep ScoringOptions' defaults; the convention is the analysis's (the map's, or --convention).
    scoring_options = ScoringOptions(trust_remote_code=trust_remote_code,
                                     **{k_: v for k_, v in given.items() if v is not None})
    where = executor_options(executor, ray_address, gpus_per_model, shard_texts)
    extra = None
    if metadata is not None:  # read before any scoring: a bad file costs nothing
        from lmmap.data.formats import read_metadata_csv

        extra = read_metadata_csv(metadata)
    check_color_by(color_by, [*s.metadata().columns, *([] if extra is None else extra.columns)])
    with output_dir(output), RichProgress(console, enabled=not no_progress) as progress:
        if adaptive:
            from lmmap.analyses.adaptive import place_adaptive

            try:
                result = place_adaptive(
                    s, models, names=name or None, target_se=target_se, neighbors=neighbors, max_texts=max_texts,
                    round_size=round_size, random_state=seed, convention=convention, scoring=scoring_options,
                    executor=where, embedding=embedding, embedding_random_state=tsne_seed, unit=unit, progress=progress,
                    base_coords=base_coords,
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
                scoring=scoring_options, executor=where, unit=unit, k=k, progress=progress,
            )
        if extra is not None:  # colours and declared lines of the placed map; the file wins where both say
            if getattr(result, "map", None) is not None:
                result.map.add_metadata(extra)
            else:
                have = result.metadata is not None and len(result.metadata)
                result.metadata = extra.combine_first(result.metadata) if have else extra
        paths = report.write(result, output, color_by=color_by)
    for line in result.summary().splitlines():  # lit() shows a newline as "\n": one line at a time
        console.print(lit(line))
    print_files(paths)
