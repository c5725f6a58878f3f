"""Commands that build and query the model map: map, neighbors."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from lmmap.cli._app import (app, check_color_by, check_model, console, fixed, lit, output_dir, print_files, print_note,
                            print_table, shared_decimals)
from lmmap.cli._options import option

if TYPE_CHECKING:  # annotations only: the heavy modules load when a command runs
    from lmmap.map import ModelMap
    from lmmap.data.store import Store


def load_map(store: Store | Path, subset: Path | None, no_clip: bool, allow_mixed: bool, metadata: Path | None = None,
             allow_other_texts: bool = False, *, models: list[str] | None = None,
             exclude: list[str] | None = None) -> ModelMap:
    """The map every command builds (the one loader of the command line): the models of ``store`` (a Store or
    its path) that :meth:`lmmap.map.ModelMap.from_store` takes — every model scored on all the map's texts,
    or ``--model``/``--exclude`` (``models``, ``exclude``) — on ``subset``'s texts when given, with the extra
    ``metadata`` columns of a MODELS.csv."""
    from lmmap.data.store import Store
    from lmmap.map import ModelMap

    store = store if isinstance(store, Store) else Store(store)
    chosen = None
    if models or exclude:
        from lmmap.cli.resample_cmds import _model_list

        chosen = _model_list(models, exclude, store)
    sub = None
    if subset is not None:
        from lmmap.data.subset import Subset

        sub = Subset.load(subset, store=store, allow_other_texts=allow_other_texts)
    mm = ModelMap.from_store(store, models=chosen, subset=sub, clip=not no_clip, allow_mixed=allow_mixed)
    if metadata is not None:
        from lmmap.data.formats import read_metadata_csv

        mm.add_metadata(read_metadata_csv(metadata))
    return mm


def clipping(threshold: float | None) -> str:
    """The map's clipping in words: what the threshold does, not only its name."""
    if threshold is None:
        return "log-likelihoods not clipped"
    return f"log-likelihoods clipped at {threshold:.2f} nats"


@app.command("map")
def map_(
    output: option("output"),
    store: option("store"),
    subset: option("subset"),
    metadata: option("metadata"),
    no_clip: option("no_clip"),
    embedding: option("embedding"),
    edges: option("edges"),
    color_by: option("color_by"),
    k: option("k"),
    se: option("se"),
    R: option("R"),
    tsne_seed: option("embedding_random_state"),
    allow_mixed: option("allow_mixed"),
    allow_other_texts: option("allow_other_texts"),
    unit: option("unit"),
    full_kl: option("full_kl"),
):
    """Build the model map: KL estimates, neighbours, and a 2-D map (PNG and HTML)."""
    # Every option's range was checked by its spec (lmmap.params) while the command line was read.
    from lmmap.data.store import Store

    s = Store(store)
    mm = load_map(s, subset, no_clip, allow_mixed, metadata, allow_other_texts)
    check_color_by(color_by, [] if mm.metadata is None else mm.metadata.columns)
    method = mm.embedding_method(embedding)
    mm.unit_factor(unit)
    from lmmap import report
    from lmmap.analyses.map import build_map, full_kl_cost
    from lmmap.report.map import writes_kl_csv

    with console.status(f"embedding {mm.K} models ({lit(method)})…"):
        # build_map refuses bad settings (edges, --full-kl past its limit) before anything is computed, and
        # everything is computed before the output folder is made.
        result = build_map(mm, embedding=embedding, embedding_random_state=tsne_seed, edges=edges, k=k, se=se, R=R,
                           full_kl=full_kl)
        with output_dir(output):
            paths = report.write(result, output, unit=unit, color_by=color_by)
    if not full_kl and not writes_kl_csv(mm):
        print_note(f"no KL matrix written for {mm.K:,} models (neighbors.csv has each model's nearest); "
                   f"--full-kl writes it as kl.npy: {full_kl_cost(mm.K)}")
    console.print(f"map of {mm.K} models on {mm.L.shape[1]} texts ({clipping(mm.threshold)}):")
    print_files(paths)


@app.command()
def neighbors(
    model: Annotated[str, typer.Argument(help="A model in the store (`lmmap models` lists them).")],
    store: option("store"),
    k: option("k"),
    subset: option("subset"),
    no_clip: option("no_clip"),
    se: option("se"),
    R: option("R"),
    allow_mixed: option("allow_mixed"),
    allow_other_texts: option("allow_other_texts"),
    unit: option("unit"),
):
    """The models nearest to MODEL by estimated KL divergence."""
    from lmmap.exceptions import InputError
    from lmmap.map import UNIT_LABELS

    # Every option's range was checked by its spec (lmmap.params) while the command line was read.
    from lmmap.data.store import Store

    s = Store(store)
    check_model(model, s.model_names())
    mm = load_map(s, subset, no_clip, allow_mixed, allow_other_texts=allow_other_texts)
    if model not in mm.names:
        raise InputError(
            f"model {model!r} is in the store but not in this map (it lacks some of the map's texts); "
            f"`lmmap score {model}` scores its missing texts", params=("model",)
        )
    df = mm.neighbors(model, k=k, se=se, R=R, unit=unit)
    table = Table(title=f"nearest models to {lit(model)}")
    table.add_column("rank", justify="right")
    table.add_column("model")
    table.add_column(f"KL ({UNIT_LABELS[unit]})", justify="right")
    if se:
        table.add_column("± SE", justify="right")
    # An estimate and its standard error share their decimals (80.2 ± 2.7, not 80.18 ± 2.7).
    dec = shared_decimals(df["kl"], df["kl_se"] if se else [])
    for row in df.itertuples(index=False):
        cells = [str(row.rank), lit(row.neighbor), fixed(row.kl, dec)]
        if se:
            cells.append(fixed(row.kl_se, dec))
        table.add_row(*cells)
    print_table(table)
