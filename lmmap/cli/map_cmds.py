"""Commands that build and query the model map: map, neighbors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..modelmap import ModelMap
from ..store import Store
from ._app import StoreOption, app, console


def load_map(store: Store, subset: Path | None, no_clip: bool, allow_mixed: bool, metadata: Path | None = None) -> ModelMap:
    """The map of every model in ``store`` (on ``subset``'s texts when given)."""
    sub = None
    if subset is not None:
        from ..subset import Subset

        sub = Subset.load(subset)
    models = store.models_with_texts(sub.text_pos) if sub is not None else None
    mm = ModelMap.from_store(store, models=models, subset=sub, clip=not no_clip, allow_mixed=allow_mixed)
    if metadata is not None:
        from ..formats import read_metadata_csv

        extra = read_metadata_csv(metadata)
        mm.metadata = extra.combine_first(mm.metadata) if mm.metadata is not None and len(mm.metadata) else extra
    return mm


@app.command("map")
def map_(
    output: Annotated[Path, typer.Option("-o", "--output", help="Output directory.")],
    store: StoreOption,
    subset: Annotated[Optional[Path], typer.Option("--subset", help="SUBSET.json from `lmmap select`: map from its texts only.")] = None,
    metadata: Annotated[Optional[Path], typer.Option("--metadata", help="MODELS.csv with extra metadata columns.")] = None,
    no_clip: Annotated[bool, typer.Option("--no-clip", help="Do not clip low log-likelihoods.")] = False,
    embedding: Annotated[str, typer.Option(help="2-D embedding: tsne, pca (or umap if installed).")] = "tsne",
    color_by: Annotated[str, typer.Option("--color-by", help="Metadata column that colours the map.")] = "model_type",
    k: Annotated[int, typer.Option("-k", help="Neighbours listed per model.")] = 10,
    se: Annotated[bool, typer.Option("--se", help="Add bootstrap standard errors of the KL estimates.")] = False,
    R: Annotated[int, typer.Option("--R", help="Bootstrap replicates for --se.")] = 100,
    seed: Annotated[int, typer.Option(help="Random state of the embedding.")] = 42,
    allow_mixed: Annotated[bool, typer.Option("--allow-mixed", help="Allow models scored under different conventions in one map.")] = False,
):
    """Build the model map: KL estimates, neighbours, and a 2-D map (PNG and HTML)."""
    s = Store(store)
    mm = load_map(s, subset, no_clip, allow_mixed, metadata)
    with console.status(f"embedding {mm.K} models ({embedding})…"):
        paths = mm.write(output, embedding=embedding, color_by=color_by, k=k, se=se, R=R, random_state=seed)
    console.print(f"map of {mm.K} models on {mm.L.shape[1]} texts (clip threshold {mm.threshold if mm.threshold is None else f'{mm.threshold:.2f}'}):")
    for name, p in paths.items():
        console.print(f"  {name:14s} {p}")


@app.command()
def neighbors(
    model: Annotated[str, typer.Argument(help="A model in the store.")],
    store: StoreOption,
    k: Annotated[int, typer.Option("-k", help="How many neighbours.")] = 10,
    subset: Annotated[Optional[Path], typer.Option("--subset", help="Use the map of a subset's texts.")] = None,
    no_clip: Annotated[bool, typer.Option("--no-clip")] = False,
    se: Annotated[bool, typer.Option("--se", help="Add bootstrap standard errors.")] = False,
    R: Annotated[int, typer.Option("--R", help="Bootstrap replicates for --se.")] = 100,
    allow_mixed: Annotated[bool, typer.Option("--allow-mixed")] = False,
):
    """The models nearest to MODEL by estimated KL divergence."""
    mm = load_map(Store(store), subset, no_clip, allow_mixed)
    df = mm.neighbors(model, k=k, se=se, R=R)
    table = Table(title=f"nearest models to {model}")
    table.add_column("rank", justify="right")
    table.add_column("model")
    table.add_column("KL", justify="right")
    if se:
        table.add_column("± SE", justify="right")
    for row in df.itertuples(index=False):
        cells = [str(row.rank), str(row.neighbor), f"{row.kl:.4g}"]
        if se:
            cells.append(f"{row.kl_se:.2g}")
        table.add_row(*cells)
    console.print(table)
