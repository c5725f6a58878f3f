"""Commands for text sets and the store: texts build, init, import, models, export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..exceptions import LmmapError
from ..store import Store
from ..texts import TextSet, build_text_set
from ._app import StoreOption, app, console, texts_app


@texts_app.command("build")
def texts_build(
    sources: Annotated[list[Path], typer.Argument(help="Plain-text, JSONL (a `text` field) or Parquet files, or directories.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output text set (.jsonl or .parquet).")],
    chunk_bytes: Annotated[int, typer.Option(help="Chunk size in bytes (never splits a UTF-8 character).")] = 1024,
    min_bytes: Annotated[int, typer.Option(help="Drop chunks shorter than this.")] = 256,
    n: Annotated[Optional[int], typer.Option("--n", help="Sample this many chunks (default: keep all).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
    on_bad_utf8: Annotated[str, typer.Option(help="Files that are not UTF-8: error, skip or replace.")] = "error",
):
    """Cut documents into fixed-size chunks, de-duplicate and sample N of them."""
    ts = build_text_set(sources, chunk_bytes=chunk_bytes, min_bytes=min_bytes, n=n, seed=seed, on_bad_utf8=on_bad_utf8)
    ts.save(output)
    console.print(f"wrote {len(ts)} texts to {output} (identity {ts.identity[:19]}…)")


@texts_app.command("info")
def texts_info(path: Annotated[Path, typer.Argument(help="A text set (.jsonl or .parquet).")]):
    """Size and identity of a text set."""
    ts = TextSet.load(path)
    sizes = [len(t.encode()) for t in ts.texts]
    console.print(f"{path}: {len(ts)} texts, {sum(sizes)} bytes (min {min(sizes)}, max {max(sizes)}), identity {ts.identity}")


@app.command()
def init(
    texts: Annotated[Path, typer.Option("--texts", help="The text set every model will be scored on.")],
    store: StoreOption,
):
    """Create a new store on a text set."""
    s = Store.create(store, TextSet.load(texts))
    console.print(f"created store {s.path} on {s.n_texts} texts ({s.text_set_id[:19]}…)")


@app.command("import")
def import_(
    vectors: Annotated[Path, typer.Option("--vectors", help="Pickle (authors' format), NPZ, Parquet, CSV, or a directory of the authors' scorer JSONL.")],
    store: StoreOption,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Allow reading a pickle (through a restricted unpickler).")] = False,
    texts: Annotated[Optional[Path], typer.Option("--texts", help="The vectors' text set: creates the store, or is checked against it.")] = None,
    metadata: Annotated[Optional[Path], typer.Option("--metadata", help="MODELS.csv: a `model` column and metadata columns.")] = None,
    convention: Annotated[str, typer.Option(help="The scoring convention the vectors were computed under.")] = "reference",
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite models already in the store.")] = False,
):
    """Import log-likelihood vectors (and metadata) into the store."""
    from ..io import import_vectors

    names = import_vectors(
        store, vectors, allow_pickle=allow_pickle, texts=texts, metadata=metadata, convention=convention, replace=replace
    )
    console.print(f"imported {len(names)} models into {store}")


@app.command()
def models(
    store: StoreOption,
    columns: Annotated[Optional[str], typer.Option(help="Comma-separated record/metadata columns to show.")] = None,
):
    """List the models in the store with their metadata."""
    from ..io import model_table

    df = model_table(Store(store))
    if columns:
        want = [c.strip() for c in columns.split(",")]
        missing = [c for c in want if c not in df.columns]
        if missing:
            raise LmmapError(f"no column {missing[0]!r}; available: {', '.join(df.columns)}")
        df = df[["model", *[c for c in want if c != "model"]]]
    table = Table(title=f"{len(df)} models in {store}")
    for c in df.columns:
        table.add_column(str(c), overflow="fold")
    for row in df.itertuples(index=False):
        table.add_row(*["" if v is None else str(v) for v in row])
    console.print(table)


@app.command()
def export(
    output: Annotated[Path, typer.Option("-o", "--output", help="FILE.parquet (long), FILE.csv (wide) or FILE.npz.")],
    store: StoreOption,
):
    """Export the log-likelihood matrix of all models."""
    from ..io import export_vectors

    path = export_vectors(Store(store), output)
    console.print(f"wrote {path}")
