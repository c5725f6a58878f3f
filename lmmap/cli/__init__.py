"""``lmmap`` command line: a thin layer over the Python API (see README)."""

from __future__ import annotations

import sys

from ..exceptions import LmmapError
from ._app import app, err_console

# Importing a command module registers its commands on ``app``.
from . import store_cmds, map_cmds, score_cmds, resample_cmds, errors_cmds, predict_cmds  # noqa: E402,F401


def main(argv=None):
    try:
        app(args=argv, standalone_mode=True)
    except (LmmapError, FileNotFoundError, FileExistsError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)


__all__ = ["app", "main"]
