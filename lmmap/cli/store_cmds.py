"""Commands for text sets and the store: texts build, init, import, models, export."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lmmap.cli._app import app, check_choice, console, err_console, lit, print_table, texts_app, visible
from lmmap.cli._options import option


@texts_app.command("build")
def texts_build(
    sources: Annotated[list[Path], typer.Argument(help="Plain-text, JSONL (a `text` field) or Parquet files, or directories.")],
    output: option("texts_output"),
    chunk_bytes: option("chunk_bytes"),
    min_bytes: option("min_bytes"),
    n: option("texts_n"),
    seed: option("random_state"),
    on_bad_utf8: option("on_bad_utf8"),
    prompt_field: option("prompt_field"),
    text_field: option("text_field"),
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
    texts: option("init_texts"),
    store: option("store"),
):
    """Create a new store on a text set."""
    from lmmap.data.store import Store
    from lmmap.data.texts import TextSet

    s = Store.create(store, TextSet.load(texts))
    console.print(f"created store {lit(s.path)} on {s.n_texts} texts ({s.text_set_id[:19]}…)")


@app.command("import")
def import_(
    vectors: option("vectors"),
    store: option("store"),
    allow_pickle: option("allow_pickle"),
    texts: option("texts"),
    metadata: option("metadata"),
    convention: option("convention"),
    replace: option("replace"),
):
    """Import log-likelihood vectors (and metadata) into the store."""
    from lmmap.cli._progress import RichProgress
    from lmmap.data.transfer import import_vectors

    # A bar only where someone watches: an import that fails leaves its one error line and nothing else.
    with RichProgress(err_console, enabled=err_console.is_terminal) as progress:
        names = import_vectors(store, vectors, allow_pickle=allow_pickle, texts=texts, metadata=metadata,
                               convention=convention, replace=replace, progress=progress)
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
    store: option("store"),
    columns: option("columns"),
    fmt: option("format"),
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
    output: option("export_output"),
    store: option("store"),
    include_partial: option("include_partial"),
):
    """Export the models' log-likelihoods (.parquet: every stored row; .csv/.npz: the complete models)."""
    from lmmap.data.store import Store
    from lmmap.data.transfer import export_vectors

    path = export_vectors(Store(store), output, include_partial=include_partial)
    console.print(f"wrote {lit(path)}")
