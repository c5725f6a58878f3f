"""Commands that build and query the model map: map, neighbors."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from lmmap.cli._app import (AllowOtherTextsOption, StoreOption, app, check_color_by, check_embedding, check_model,
                            check_replicates, console, fixed, lit, output_dir, print_files, print_note, print_table,
                            shared_decimals)

UnitOption = Annotated[str, typer.Option("--unit", metavar="nats-per-text|bits-per-byte", help="Unit of every KL: nats-per-text (KL = g / 2N), or bits-per-byte (KL / (mean text bytes · ln 2), the unit of Kishino et al. 2025, comparable across text sets).")]
# The options that say which map to build, shared by every command that builds one (map, scale, trajectory, layers).
SubsetOption = Annotated[Optional[Path], typer.Option("--subset", help="SUBSET.json from `lmmap select`: map from its texts only.")]
NoClipOption = Annotated[bool, typer.Option("--no-clip", help="Do not clip low log-likelihoods.")]
AllowMixedOption = Annotated[bool, typer.Option("--allow-mixed", help="Allow models scored under different conventions in one map.")]

if TYPE_CHECKING:  # annotations only: the heavy modules load when a command runs
    from lmmap.map import ModelMap
    from lmmap.data.store import Store


def load_map(store: Store, subset: Path | None, no_clip: bool, allow_mixed: bool, metadata: Path | None = None,
             allow_other_texts: bool = False) -> ModelMap:
    """The map of every model in ``store`` (on ``subset``'s texts when given)."""
    from lmmap.map import ModelMap

    sub = None
    if subset is not None:
        from lmmap.data.subset import Subset

        sub = Subset.load(subset, store=store, allow_other_texts=allow_other_texts)
    mm = ModelMap.from_store(store, subset=sub, clip=not no_clip, allow_mixed=allow_mixed)
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
    output: Annotated[Path, typer.Option("-o", "--output", help="Output directory.")],
    store: StoreOption,
    subset: SubsetOption = None,
    metadata: Annotated[Optional[Path], typer.Option("--metadata", help="MODELS.csv with extra metadata columns.")] = None,
    no_clip: NoClipOption = False,
    embedding: Annotated[str, typer.Option("--embedding", metavar="auto|mds|tsne|pca|umap", help="2-D embedding: auto (classical MDS of KL below 40 models, t-SNE from 40 on), mds, tsne, pca (or umap if installed).")] = "auto",
    edges: Annotated[str, typer.Option("--edges", metavar="auto|nn|base_model|none", help="Lines on the map: nn (each model to its nearest by KL), base_model (declared lineage from the metadata column base_model; models whose nearest model is in another lineage are circled), none. auto: base_model when that column names models of the map, else nn.")] = "auto",
    color_by: Annotated[str, typer.Option("--color-by", help="Metadata column that colours the map.")] = "model_type",
    k: Annotated[int, typer.Option("-k", help="Neighbours listed per model.")] = 10,
    se: Annotated[bool, typer.Option("--se", help="Add bootstrap standard errors of the KL estimates.")] = False,
    R: Annotated[int, typer.Option("--R", help="Bootstrap replicates for --se.")] = 100,
    tsne_seed: Annotated[int, typer.Option("--tsne-seed", help="Random state of the 2-D embedding (t-SNE, UMAP).")] = 42,
    allow_mixed: AllowMixedOption = False,
    allow_other_texts: AllowOtherTextsOption = False,
    unit: UnitOption = "nats-per-text",
    full_kl: Annotated[bool, typer.Option("--full-kl", help="Also write the K×K KL matrix as kl.npy (float32; rows and columns in map.json's models order). Without it the matrix is written (as kl.csv) only up to 2,000 models.")] = False,
):
    """Build the model map: KL estimates, neighbours, and a 2-D map (PNG and HTML)."""
    check_replicates(R, needed=se)
    from lmmap.data.store import Store
    from lmmap.map import check_unit
    from lmmap.maths.randomness import check_seed

    check_unit(unit)
    check_embedding(embedding)
    check_seed(tsne_seed, "embedding_random_state")  # the library calls it random_state: name the flag given

    s = Store(store)
    mm = load_map(s, subset, no_clip, allow_mixed, metadata, allow_other_texts)
    check_color_by(color_by, [] if mm.metadata is None else mm.metadata.columns)
    method, edges = mm.embedding_method(embedding), mm.resolve_edges(edges)  # bad values refused before any output
    mm.unit_factor(unit)
    from lmmap import report
    from lmmap.report.map import check_full_kl, full_kl_cost, writes_kl_csv

    if full_kl:
        check_full_kl(mm.K)
    with output_dir(output), console.status(f"embedding {mm.K} models ({lit(method)})…"):
        paths = report.write(mm, output, embedding=embedding, color_by=color_by, k=k, se=se, R=R,
                             random_state=tsne_seed, edges=edges, unit=unit, full_kl=full_kl)
    if not full_kl and not writes_kl_csv(mm):
        print_note(f"no KL matrix written for {mm.K:,} models (neighbors.csv has each model's nearest); "
                   f"--full-kl writes it as kl.npy: {full_kl_cost(mm.K)}")
    console.print(f"map of {mm.K} models on {mm.L.shape[1]} texts ({clipping(mm.threshold)}):")
    print_files(paths)


@app.command()
def neighbors(
    model: Annotated[str, typer.Argument(help="A model in the store (`lmmap models` lists them).")],
    store: StoreOption,
    k: Annotated[int, typer.Option("-k", help="How many neighbours (at least 1).")] = 10,
    subset: Annotated[Optional[Path], typer.Option("--subset", help="Use the map of a subset's texts.")] = None,
    no_clip: NoClipOption = False,
    se: Annotated[bool, typer.Option("--se", help="Add bootstrap standard errors.")] = False,
    R: Annotated[int, typer.Option("--R", help="Bootstrap replicates for --se (2 to 100,000).")] = 100,
    allow_mixed: AllowMixedOption = False,
    allow_other_texts: AllowOtherTextsOption = False,
    unit: UnitOption = "nats-per-text",
):
    """The models nearest to MODEL by estimated KL divergence."""
    from lmmap.exceptions import InputError
    from lmmap.map import UNIT_LABELS, check_unit

    check_unit(unit)

    # Everything the user can get wrong is checked before any vector is read.
    if k < 1:
        raise InputError(f"-k must be at least 1, got {k}")
    check_replicates(R, needed=se)
    from lmmap.data.store import Store

    s = Store(store)
    check_model(model, s.model_names())
    mm = load_map(s, subset, no_clip, allow_mixed, allow_other_texts=allow_other_texts)
    if model not in mm.names:
        raise InputError(
            f"model {model!r} is in the store but not in this map (it lacks some of the map's texts); "
            f"`lmmap score {model}` scores its missing texts"
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
