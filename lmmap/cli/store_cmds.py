"""Commands for text sets and the store: texts build, init, import, models, export."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from lmmap.cli._app import StoreOption, app, check_choice, console, lit, print_table, texts_app, visible


@texts_app.command("build")
def texts_build(
    sources: Annotated[list[Path], typer.Argument(help="Plain-text, JSONL (a `text` field) or Parquet files, or directories.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output text set (.jsonl or .parquet).")],
    chunk_bytes: Annotated[int, typer.Option(help="Chunk size in bytes (never splits a UTF-8 character).")] = 1024,
    min_bytes: Annotated[int, typer.Option(help="Drop chunks shorter than this.")] = 256,
    n: Annotated[Optional[int], typer.Option("--n", help="Sample this many chunks (default: keep all).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
    on_bad_utf8: Annotated[str, typer.Option(help="Files that are not UTF-8: error, skip or replace.")] = "error",
    prompt_field: Annotated[Optional[str], typer.Option("--prompt-field", metavar="P", help="Build a prompt→response text set from JSONL/Parquet records: field P is each text's prompt (scored as log p(text | prompt)); no chunking.")] = None,
    text_field: Annotated[str, typer.Option("--text-field", metavar="T", help="With --prompt-field: the field holding the response text.")] = "text",
):
    """Cut documents into fixed-size chunks, de-duplicate and sample N of them (or, with --prompt-field, take prompt→response records)."""
    from lmmap.data.texts import build_prompt_text_set, build_text_set

    if prompt_field is not None:
        ts = build_prompt_text_set(sources, prompt_field=prompt_field, text_field=text_field, n=n, random_state=seed)
        ts.save(output)
        console.print(f"wrote {len(ts)} prompt→response texts to {lit(output)} (identity {ts.identity[:19]}…)")
        return
    ts = build_text_set(sources, chunk_bytes=chunk_bytes, min_bytes=min_bytes, n=n, random_state=seed,
                        on_bad_utf8=on_bad_utf8)
    ts.save(output)
    console.print(f"wrote {len(ts)} texts to {lit(output)} (identity {ts.identity[:19]}…)")


@texts_app.command("info")
def texts_info(path: Annotated[Path, typer.Argument(help="A text set (.jsonl or .parquet).")]):
    """Size and identity of a text set."""
    from lmmap.data.texts import TextSet

    ts = TextSet.load(path)
    sizes = [len(t.encode("utf-8", "surrogatepass")) for t in ts.texts] or [0]
    console.print(f"{lit(path)}: {len(ts)} texts, {sum(sizes)} bytes (min {min(sizes)}, max {max(sizes)}), identity {ts.identity}")


@app.command()
def init(
    texts: Annotated[Path, typer.Option("--texts", help="The text set every model will be scored on.")],
    store: StoreOption,
):
    """Create a new store on a text set."""
    from lmmap.data.store import Store
    from lmmap.data.texts import TextSet

    s = Store.create(store, TextSet.load(texts))
    console.print(f"created store {lit(s.path)} on {s.n_texts} texts ({s.text_set_id[:19]}…)")


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
    from lmmap.data.transfer import import_vectors

    names = import_vectors(
        store, vectors, allow_pickle=allow_pickle, texts=texts, metadata=metadata, convention=convention, replace=replace
    )
    console.print(f"imported {len(names)} models into {lit(store)}")


MODEL_FORMATS = ("table", "csv", "json")
# What a person needs first; the rest is one `--columns all` away.
DEFAULT_COLUMNS = ("model", "n_scored", "complete", "convention", "model_type", "family", "base_model")


def _cell(value, csv: bool = False) -> str:
    import numpy as np  # here, not at the top: `lmmap --help` loads no numpy

    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return ("true" if value else "false") if csv else ("yes" if value else "no")
    if isinstance(value, (float, np.floating)):
        return f"{float(value):g}"
    return str(value)


def _plain(value):
    """A JSON-ready value (numpy scalars to Python, NaN to null)."""
    import numpy as np

    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


@app.command()
def models(
    store: StoreOption,
    columns: Annotated[Optional[str], typer.Option(
        "--columns", metavar="all|COL,COL,...",
        help="Columns to show: comma-separated names, or 'all'. Default for the table: model, n_scored, complete, "
             "convention and model_type/family/base_model when present; for csv and json: all.",
    )] = None,
    fmt: Annotated[str, typer.Option(
        "--format", metavar="table|csv|json",
        help="table (for people; plain and unwrapped when piped), csv or json (for scripts).",
    )] = "table",
):
    """List the models in the store with their metadata."""
    from lmmap.data.store import Store
    from lmmap.data.transfer import model_table

    check_choice(fmt, MODEL_FORMATS, "--format")

    s = Store(store)
    df = model_table(s)
    if "n_scored" in df.columns:
        df.insert(df.columns.get_loc("n_scored") + 1, "complete", df["n_scored"] == s.n_texts)
    if columns is None or columns.strip() == "":
        want = [c for c in DEFAULT_COLUMNS if c in df.columns] if fmt == "table" else list(df.columns)
    elif columns.strip().lower() == "all":
        want = list(df.columns)
    else:
        want = [c.strip() for c in columns.split(",") if c.strip()]
        for c in want:
            check_choice(c, [str(x) for x in df.columns], "--columns column")
        want = ["model", *[c for c in dict.fromkeys(want) if c != "model"]]
    df = df[want]
    if fmt == "json":
        rows = [{str(k): _plain(v) for k, v in row.items()} for row in df.to_dict(orient="records")]
        # ensure_ascii: lossless for scripts and inert on a terminal (no raw control characters).
        sys.stdout.write(json.dumps(rows, ensure_ascii=True, indent=1) + "\n")
        return
    if fmt == "csv":
        _write_csv(df)
        return
    table = Table(title=f"{len(df)} models in {lit(s.path)} ({s.n_texts} texts)")
    for c in df.columns:
        table.add_column(lit(c), overflow="fold")
    for row in df.itertuples(index=False):
        table.add_row(*[lit(_cell(v)) for v in row])
    print_table(table)


def _write_csv(df) -> None:
    """CSV on stdout. Control characters are shown visibly here too (``--format json`` is the lossless form)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([visible(c) for c in df.columns])
    for row in df.itertuples(index=False):
        w.writerow([visible(_cell(v, csv=True)) for v in row])
    sys.stdout.write(buf.getvalue())


@app.command()
def export(
    output: Annotated[Path, typer.Option("-o", "--output", help="FILE.parquet (long), FILE.csv (wide) or FILE.npz.")],
    store: StoreOption,
    include_partial: Annotated[bool, typer.Option("--include-partial", help="Wide formats (.csv, .npz): also export "
                                                  "models scored on only some texts, with NaN for the others.")] = False,
):
    """Export the models' log-likelihoods (.parquet: every stored row; .csv/.npz: the complete models)."""
    from lmmap.data.store import Store
    from lmmap.data.transfer import export_vectors

    path = export_vectors(Store(store), output, include_partial=include_partial)
    console.print(f"wrote {lit(path)}")
