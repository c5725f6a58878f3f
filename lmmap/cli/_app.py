"""The typer application and the options every command shares.

Each command module (``lmmap/cli/<capability>.py``) imports ``app`` from here
and registers its commands with ``@app.command()``; ``lmmap/cli/__init__.py``
imports them all. Commands stay thin: parse, call the Python API, print.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    name="lmmap",
    help="Map language models by their log-likelihood vectors.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
texts_app = typer.Typer(help="Build and inspect text sets.", no_args_is_help=True)
app.add_typer(texts_app, name="texts")

console = Console()
err_console = Console(stderr=True)

DEFAULT_STORE = "lmmap-store"


def default_store() -> Path:
    return Path(os.environ.get("LMMAP_STORE", DEFAULT_STORE))


StoreOption = Annotated[
    Path,
    typer.Option(
        "--store",
        help="Store directory (default: $LMMAP_STORE or ./lmmap-store).",
        default_factory=default_store,
        show_default=False,
    ),
]


def fail(message: str, code: int = 1):
    """Print a one-line error (no traceback) and exit: user errors are not crashes."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
