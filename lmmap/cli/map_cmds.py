"""Commands that build and query the model map: map, neighbors."""

from __future__ import annotations

import math
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


NEIGHBOR_METADATA_COLUMNS = 3  # metadata columns `neighbors --metadata` shows beside each neighbour


def keep_neighbors(store, result) -> None:
    """Keep a large map's neighbour lists in its store, so that `lmmap neighbors MODEL` reads them (under a
    second) instead of building the map again: only for the map of every model of the store, clipped as by
    default, read from its consolidated matrix (``store_state``)."""
    from lmmap.map import DENSE_MAX_K

    mm = result.map
    if mm.store_state is None or mm.K <= DENSE_MAX_K or mm.threshold is None or mm.w is not None:
        return
    if not store.save_neighbors(mm.store_state, result.neighbors, float(mm.threshold)):
        print_note("the store changed while the map was built: its neighbour lists were not kept "
                   "(`lmmap neighbors` computes them)")


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
    alpha: option("alpha"),
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
                           full_kl=full_kl, alpha=alpha)
        with output_dir(output):
            paths = report.write(result, output, unit=unit, color_by=color_by)
    keep_neighbors(s, result)
    if not full_kl and not writes_kl_csv(mm):
        print_note(f"no KL matrix written for {mm.K:,} models (neighbors.csv has each model's nearest); "
                   f"--full-kl writes it as kl.npy: {full_kl_cost(mm.K)}")
    console.print(f"map of {mm.K} models on {mm.L.shape[1]} texts ({clipping(mm.threshold)}):")
    if result.inferred is not None:
        counts = result.inferred.table["decision"].value_counts()
        flagged = result.flagged()
        console.print(f"lineage test (α = {alpha:g}): {counts.get('derived', 0)} models derived, "
                      f"{len(flagged)} circled where it contradicts the metadata"
                      + (": " + ", ".join(lit(m) for m in flagged[:10]) + (" …" if len(flagged) > 10 else "")
                         if flagged else ""))
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
    metadata: option("metadata"),
):
    """The models nearest to MODEL by estimated KL divergence (with --metadata, each with its first columns there)."""
    from lmmap.exceptions import InputError
    from lmmap.map import UNIT_LABELS

    # Every option's range was checked by its spec (lmmap.params) while the command line was read.
    from lmmap.data.store import Store

    s = Store(store)
    # The lists `lmmap map` kept for this state of a large store answer at once (default map only).
    df = None if (subset is not None or no_clip or se) else s.stored_neighbors(model, k)
    text_bytes = None
    if df is not None and unit != "nats-per-text":
        from lmmap.map import _store_text_bytes

        text_bytes = _store_text_bytes(s, None)
        df = None if text_bytes is None else df
    if df is not None:
        meta = s.metadata()
        if metadata is not None:
            from lmmap.data.formats import read_metadata_csv

            extra = read_metadata_csv(metadata)
            meta = extra.combine_first(meta) if len(meta) else extra
        if text_bytes is not None:  # as ModelMap.unit_factor: KL / (mean bytes · ln 2)
            df["kl"] = df["kl"] / (float(text_bytes.mean()) * math.log(2.0))
    else:
        check_model(model, s.model_names())
        mm = load_map(s, subset, no_clip, allow_mixed, metadata, allow_other_texts=allow_other_texts)
        if model not in mm.names:
            raise InputError(
                f"model {model!r} is in the store but not in this map (it lacks some of the map's texts); "
                f"`lmmap score {model}` scores its missing texts", params=("model",)
            )
        df = mm.neighbors(model, k=k, se=se, R=R, unit=unit)
        meta = mm.metadata
    table = Table(title=f"nearest models to {lit(model)}")
    table.add_column("rank", justify="right")
    table.add_column("model")
    table.add_column(f"KL ({UNIT_LABELS[unit]})", justify="right")
    if se:
        table.add_column("± SE", justify="right")
    shown = []
    if metadata is not None:  # the file's own columns, first three, beside each neighbour
        import pandas as pd

        from lmmap.data.formats import read_metadata_csv

        shown = [str(c) for c in read_metadata_csv(metadata).columns[:NEIGHBOR_METADATA_COLUMNS]]
        for c in shown:
            table.add_column(lit(c))
    # An estimate and its standard error share their decimals (80.2 ± 2.7, not 80.18 ± 2.7).
    dec = shared_decimals(df["kl"], df["kl_se"] if se else [])
    for row in df.itertuples(index=False):
        cells = [str(row.rank), lit(row.neighbor), fixed(row.kl, dec)]
        if se:
            cells.append(fixed(row.kl_se, dec))
        for c in shown:
            value = meta[c].get(row.neighbor) if meta is not None and c in meta.columns else None
            cells.append("" if value is None or bool(pd.isna(value)) else lit(value))
        table.add_row(*cells)
    print_table(table)
