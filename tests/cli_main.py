"""Run ``lmmap ARGS`` in this process through the entry point's own error handling (shared by the tests)."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout


def run_main(*args) -> tuple[int, str, str]:
    """``lmmap ARGS`` through :func:`lmmap.cli.main`: ``(exit code, stdout, stderr)``."""
    from lmmap.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()
