"""``lmmap metadata``: set, show and gather the models' metadata (set, show, from-cards)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from lmmap.cli._app import _SpecTyper, app, console, lit, print_note, print_table, visible
from lmmap.cli._options import option

metadata_app = _SpecTyper(help="Set, show and gather the models' metadata (base_model, model_type, family, ...).",
                          no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(metadata_app, name="metadata")

SHOW_LIMIT = 10  # names listed in a line before "… (N in all)"


def _names(names, limit: int = SHOW_LIMIT) -> str:
    names = list(names)
    shown = ", ".join(lit(repr(str(n))) for n in names[:limit])
    return shown + (f" … ({len(names)} in all)" if len(names) > limit else "")


def _report(summary: dict, what: str, dry_run: bool) -> None:
    verb = "would set" if dry_run else "set"
    cols = summary["columns"]
    console.print(f"{verb} {len(cols)} column(s) for {summary['models']} model(s) from {lit(what)}"
                  + (f": {', '.join(lit(c) for c in cols[:SHOW_LIMIT])}{' …' if len(cols) > SHOW_LIMIT else ''}" if cols else ""))
    if summary["new_columns"]:
        console.print(f"  new column(s): {', '.join(lit(c) for c in summary['new_columns'])}")
    if summary["new_rows"]:
        console.print(f"  model(s) without metadata before: {len(summary['new_rows'])}")
    console.print(f"  stored value(s) {'that would change' if dry_run else 'changed'}: {summary['changed']}")
    if summary["dropped_columns"]:
        console.print(f"  column(s) dropped (--replace): {', '.join(lit(c) for c in summary['dropped_columns'])}")
    if summary["dropped_rows"]:
        console.print(f"  model row(s) dropped (--replace): {_names(summary['dropped_rows'])}")
    if summary["unknown"]:
        console.print(f"  kept for model(s) not in the store (--allow-unknown): {_names(summary['unknown'])}")
    if dry_run:
        console.print("nothing was changed (--dry-run)")


@metadata_app.command("set")
def set_(
    table: Annotated[Path, typer.Argument(help="MODELS.csv: a `model` column and one column per attribute.",
                                          metavar="MODELS_CSV")],
    store: option("store"),
    replace: option("metadata_replace"),
    allow_unknown: option("allow_unknown"),
    dry_run: option("dry_run"),
):
    """Merge a table into the store's metadata by model name (new columns added; empty cells keep what is stored), in one change."""
    from lmmap.data.formats import read_metadata_csv
    from lmmap.data.store import Store

    s = Store(store)
    summary = s.merge_metadata(read_metadata_csv(table), replace=replace, allow_unknown=allow_unknown,
                               dry_run=dry_run, source=str(table))
    _report(summary, str(table), dry_run)


def _value(value, csv: bool = False) -> str:
    """A cell as ``lmmap models`` shows it, but a whole number in full (n_params 6738415616, not 6.73842e+09)."""
    from lmmap.cli.store_cmds import _cell

    import numpy as np

    if isinstance(value, (float, np.floating)) and float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return _cell(value, csv)


def _whole(value):
    """A whole number read back as a float (a column with empty cells) as an int again."""
    return int(value) if isinstance(value, float) and value.is_integer() and abs(value) < 2**53 else value


def _write_csv(df) -> None:
    """CSV on stdout, control characters shown visibly (``--format json`` is the lossless form)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([visible(c) for c in df.columns])
    for row in df.itertuples(index=False):
        w.writerow([visible(_value(v, csv=True)) for v in row])
    sys.stdout.write(buf.getvalue())


def _table(df, title: str) -> None:
    table = Table(title=title)
    for c in df.columns:
        table.add_column(lit(c), overflow="fold")
    for row in df.itertuples(index=False):
        table.add_row(*[lit(_value(v)) for v in row])
    print_table(table)


@metadata_app.command("show")
def show(
    store: option("store"),
    fmt: option("format"),
):
    """The store's metadata: one row per model that has some, one column per attribute."""
    from lmmap.cli.store_cmds import _plain
    from lmmap.data.store import Store

    s = Store(store)
    df = s.metadata().reset_index()
    if fmt == "json":
        rows = [{str(k): _whole(_plain(v)) for k, v in row.items()} for row in df.to_dict(orient="records")]
        sys.stdout.write(json.dumps(rows, ensure_ascii=True, indent=1) + "\n")
        return
    if fmt == "csv":
        _write_csv(df)
        return
    if not len(df):
        console.print(f"no metadata in {lit(s.path)}; add some with `lmmap metadata set MODELS.csv` or "
                      "`lmmap metadata from-cards`")
        return
    _table(df, f"metadata of {len(df)} models in {lit(s.path)}")


@metadata_app.command("from-cards")
def from_cards(
    store: option("store"),
    dry_run: option("dry_run"),
    path: Annotated[Optional[Path], typer.Argument(
        help="A directory of models (or one model) with their README.md and config.json, or a Hugging Face cache "
             "(default: $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub).", show_default=False,
        metavar="PATH")] = None,
):
    """Metadata from the models' own cards: base_model, base_model_relation, license, library_name, tags, and n_params (safetensors headers, or config.json)."""
    from lmmap.data.formats import card_metadata, hf_cache_dir
    from lmmap.data.store import Store

    s = Store(store)
    where = path if path is not None else hf_cache_dir()
    meta, without, unused = card_metadata(s.records(), path)
    if without:
        print_note(f"{len(without)} model(s) of the store have no card under {where}: "
                   + ", ".join(repr(n) for n in without[:SHOW_LIMIT])
                   + (f" … ({len(without)} in all)" if len(without) > SHOW_LIMIT else ""))
    if path is not None and unused:
        print_note(f"{len(unused)} model(s) under {where} match no model of the store (by name or recorded source): "
                   + ", ".join(repr(n) for n in unused[:SHOW_LIMIT]) + (" …" if len(unused) > SHOW_LIMIT else ""))
    if not len(meta) or not len(meta.columns):
        console.print(f"no card under {lit(where)} matches a model of the store; nothing was changed")
        return
    if dry_run:
        _table(meta.reset_index(), f"from the cards under {lit(where)}")
    summary = s.merge_metadata(meta, dry_run=dry_run, source=f"the cards under {where}")
    _report(summary, f"the cards under {where}", dry_run)
