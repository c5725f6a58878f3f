"""``lmmap`` command line: a thin layer over the Python API (see README).

:func:`main` is the one place errors and warnings reach the user:

- an :class:`~lmmap.exceptions.LmmapError` (or a missing/unwritable file) is
  one line ``error: ...``, exit 1;
- Ctrl-C is one line ``interrupted: ...`` (what the library says it kept, if
  anything), exit 130;
- anything else is a bug in lmmap: one line ``internal error: ...``, exit 2,
  and the traceback only with ``LMMAP_DEBUG=1``;
- every warning (lmmap's own notes, a library's UserWarning or logged
  warning) is one line ``note: ...``, each message once.

- a usage error (a missing or unknown option, a value of the wrong type) is
  one line ``error: ...`` too, exit 1 (see :mod:`lmmap.cli._usage`); only
  ``--help`` and a bare ``lmmap`` / ``lmmap texts`` print the usage, exit 0.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import traceback
import warnings

import click
import typer

from lmmap.exceptions import LmmapError
from lmmap.params import for_cli
from rich.text import Text

from lmmap.cli._app import Interrupted, _notes_seen, app, console, err_console, one_line, print_error, print_note, visible
from lmmap.cli import _usage

# Importing a command module registers its commands on ``app``.
from lmmap.cli import store_cmds, admin_cmds, map_cmds, score_cmds, demo_cmds, resample_cmds, errors_cmds, predict_cmds, scale_cmds, trajectory_cmds, metadata_cmds, lineage_cmds  # noqa: E402,F401

# OSErrors that are about the user's files and disk, not about lmmap.
_USER_OS_ERRNOS = {
    errno.ENOENT, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.ENOSPC,
    errno.EROFS, errno.ENAMETOOLONG, errno.ELOOP, errno.EDQUOT, errno.ENOTEMPTY, errno.EXDEV,
    errno.EMFILE, errno.ENFILE, errno.EFBIG, errno.EINVAL,
}


def _debug() -> bool:
    return os.environ.get("LMMAP_DEBUG", "").strip() not in ("", "0", "false", "no")


def _os_message(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    paths = [p for p in (exc.filename, getattr(exc, "filename2", None)) if p is not None]
    if not paths:
        return what
    return f"{what}: {os.fsdecode(paths[0])}" + (f" -> {os.fsdecode(paths[1])}" if len(paths) > 1 else "")


class _NoteHandler(logging.Handler):
    """A library's logged warning (openTSNE, ...) becomes a one-line note instead of a raw stderr line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print_note(record.getMessage())
        except Exception:  # a note must never break the command
            pass


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print_note(for_cli(message) if isinstance(message, BaseException) else str(message))


def main(argv=None):
    """The ``lmmap`` entry point (``argv``: the arguments, default ``sys.argv[1:]``)."""
    debug = _debug()
    _notes_seen.clear()  # "once" is per command (main() may run many commands in one process)
    handler = _NoteHandler(level=logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    code = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.filterwarnings("always", category=UserWarning)
            warnings.filterwarnings("always", category=RuntimeWarning)
            if debug:
                warnings.simplefilter("always")
            warnings.showwarning = _show_warning
            args = list(sys.argv[1:] if argv is None else argv)
            try:
                # Not standalone: click would print its usage box and exit 2 for a usage error, before
                # lmmap could say it in one line. Commands return None (see _Group.invoke), so what
                # comes back is an exit code only when a command or --help/--version asked for one.
                result = app(args=args, prog_name="lmmap", standalone_mode=False)
                code = result if isinstance(result, int) and not isinstance(result, bool) else 0
            except SystemExit as exc:
                code = exc.code
            except _usage.NoArgsIsHelpError as exc:
                # A bare group prints its help (typer already has; plain click leaves it in the message).
                text = _usage.help_text(exc)
                if text:
                    console.print(text, markup=False, highlight=False)
                code = 0
            except _usage.UsageError as exc:
                print_error(_usage.usage_message(exc, args))
                code = 1
            except _usage.ClickException as exc:
                print_error(exc.format_message())
                code = 1
    except (Interrupted, KeyboardInterrupt) as exc:
        # The library may say what it kept ("4 checkpoints kept; rerun to resume").
        message = one_line(exc)
        err_console.print(Text.assemble(("interrupted", "bold"), f": {visible(message)}" if message else ""),
                          highlight=False)
        code = 130
    except LmmapError as exc:
        if debug:
            traceback.print_exc()
        message = for_cli(exc)
        if "is not an lmmap store" in message and "LMMAP_STORE" not in message:
            # From the command line the usual cause is a missing --store: say how to give one.
            message += "; or point --store / $LMMAP_STORE at an existing store"
        print_error(message)
        code = 1
    except OSError as exc:
        if debug:
            traceback.print_exc()
        if exc.errno in _USER_OS_ERRNOS or isinstance(exc, (FileNotFoundError, FileExistsError, PermissionError,
                                                               IsADirectoryError, NotADirectoryError)):
            print_error(_os_message(exc))
            code = 1
        else:
            code = _internal(exc, debug)
    except (click.exceptions.Abort, typer.Abort) as exc:
        # click turns Ctrl-C inside a command into Abort: the interruption, and what it says was kept, is its cause.
        message = one_line(exc.__cause__) if isinstance(exc.__cause__, KeyboardInterrupt) else ""
        err_console.print(Text.assemble(("interrupted", "bold"), f": {visible(message)}" if message else ""),
                          highlight=False)
        code = 130
    except Exception as exc:
        code = _internal(exc, debug)
    finally:
        root.removeHandler(handler)
    sys.exit(code)


def _internal(exc: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    detail = one_line(exc)
    err_console.print(
        Text.assemble(
            ("internal error:", "bold red"),
            f" {type(exc).__name__}" + (f": {visible(detail)}" if detail else "")
            + " — this is a bug in lmmap; please report it with the command you ran"
            + ("" if debug else " (set LMMAP_DEBUG=1 for the traceback)"),
        ),
        highlight=False,
    )
    return 2


__all__ = ["app", "main"]
