"""The typer application and safe printing.

Each command module (``lmmap/cli/<capability>.py``) imports ``app`` from here
and registers its commands with ``@app.command()``; ``lmmap/cli/__init__.py``
imports them all. Commands stay thin: parse, call the Python API, print. Their
options are declared in the parameter spec (``lmmap/params.py``) and built by
``lmmap/cli/_options.py:option``; ``app.command()`` takes their defaults from it.

Printing rule: everything a user supplied (model names, metadata values, file
paths, column names, exception messages) goes through :func:`lit` before it
is embedded in a ``console.print`` string. ``lit`` escapes rich markup (so
``[bold red]x`` prints as written and ``[/bold]`` cannot crash a listing) and
shows terminal control characters visibly (``\\x1b``, ``\\u202e`` ...), so a
name can never move the cursor, set a hyperlink or reorder the line. The
consoles below also show control characters visibly in anything that reaches
them as a string, and never crash on a stray markup tag, as a second line of
defence for a print site that forgot ``lit``.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import sys
import unicodedata
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterable, Iterator, Optional

import click
import typer
import typer.core
from rich.console import Console
from rich.errors import MarkupError
from rich.text import Text

from lmmap._version import __version__
from lmmap.cli._options import with_spec_defaults
from lmmap.exceptions import InputError

# -- literal printing ----------------------------------------------------------

# Characters that would act on a terminal or on the text's layout instead of
# being seen: C0/C1 controls and DEL (Cc), format characters such as the bidi
# overrides and zero-width spaces (Cf), lone surrogates (Cs: also unencodable)
# and the Unicode line/paragraph separators. ZWJ/ZWNJ stay: they join emoji and
# scripts and cannot move anything.
_KEEP_FORMAT = {"\u200c", "\u200d"}
_ESCAPE_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _needs_escape(ch: str) -> bool:
    return ch not in _KEEP_FORMAT and unicodedata.category(ch) in _ESCAPE_CATEGORIES


def _show(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    cp = ord(ch)
    if cp <= 0xFF:
        return f"\\x{cp:02x}"
    if cp <= 0xFFFF:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def visible(s: object) -> str:
    """``s`` as text with every control, format or surrogate character written as an escape (``\\x1b``)."""
    s = str(s)
    if s.isprintable():  # the common case: nothing to do
        return s
    return "".join(_show(ch) if _needs_escape(ch) else ch for ch in s)


_TAG = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def lit(s: object) -> str:
    """``s`` to embed in a ``console.print`` string: printed exactly as written, control characters visible.

    Like ``rich.markup.escape`` but without its extra backslash after a trailing one, which is printed
    when the name is followed by plain text (``name\\`` would show as ``name\\\\``).
    """
    return _TAG.sub(lambda m: f"{m.group(1)}{m.group(1)}\\{m.group(2)}", visible(s))


def one_line(s: object) -> str:
    """A message on one line: its own line breaks (and the indentation after them) become single spaces."""
    return re.sub(r"\s*[\r\n]+\s*", " ", str(s)).strip()


class _LiteralConsole(Console):
    """A console that never lets a string act on the terminal, and never crashes on stray markup."""

    def render_str(self, text: str, **kwargs) -> Text:  # type: ignore[override]
        text = visible(text)
        try:
            return super().render_str(text, **kwargs)
        except MarkupError:
            kwargs["markup"] = False
            return super().render_str(text, **kwargs)

    def print(self, *objects, soft_wrap: Optional[bool] = None, **kwargs) -> None:  # type: ignore[override]
        # Lines of text are never cut by inserted newlines (a path read from a pipe must stay whole);
        # tables and other renderables are still fitted to the width.
        if soft_wrap is None:
            soft_wrap = all(isinstance(o, (str, Text)) for o in objects)
        super().print(*objects, soft_wrap=soft_wrap, **kwargs)

    def status(self, status, **kwargs):  # type: ignore[override]
        # rich's spinner parses a string as markup whatever the console says.
        if isinstance(status, str):
            try:
                status = Text.from_markup(visible(status))
            except MarkupError:
                status = Text(visible(status))
        return super().status(status, **kwargs)


# emoji off: a model called ``:smile:`` is printed as written.
console = _LiteralConsole(emoji=False)
err_console = _LiteralConsole(stderr=True, emoji=False)


def print_error(message: object) -> None:
    """``error: MESSAGE`` on stderr, on one line, literally."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", visible(one_line(message))), highlight=False)


_notes_seen: set[str] = set()


def print_note(message: object) -> None:
    """``note: MESSAGE`` on stderr, on one line, literally; a message already shown is not repeated."""
    text = one_line(message)
    if not text or text in _notes_seen:
        return
    _notes_seen.add(text)
    err_console.print(Text.assemble(("note:", "yellow"), " ", visible(text)), highlight=False)


def fail(message: str, code: int = 1):
    """Print a one-line error (no traceback) and exit: user errors are not crashes.

    ``message`` is plain text (it is printed literally, whatever it contains).
    """
    print_error(message)
    raise typer.Exit(code)


# -- numbers -------------------------------------------------------------------
# One rule per printed column or line, so that 199 never stands beside 198.3: a column of one quantity
# shares its decimals; values of different quantities on one line keep three significant figures.

def shared_decimals(*columns: Iterable[float], digits: int = 3, max_decimals: int = 6) -> int:
    """Decimals for every value of ``columns``: ``digits`` significant figures for the largest value and at least
    two for the smallest non-zero one (0 to ``max_decimals``)."""
    import math

    sizes = [abs(float(v)) for col in columns for v in col if v is not None and math.isfinite(float(v)) and v != 0]
    if not sizes:
        return 0
    big = digits - 1 - math.floor(math.log10(max(sizes)))
    small = 1 - math.floor(math.log10(min(sizes)))
    return max(0, min(max_decimals, max(big, small)))


def fixed(value: float, decimals: int) -> str:
    """``value`` with ``decimals`` decimals and thousands separators; ``–`` for a missing value; never ``-0.0``."""
    import math

    if value is None or not math.isfinite(float(value)):
        return "–"
    text = f"{float(value):,.{decimals}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.,") else text


def sig(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant figures, trailing zeros kept (``1.10``, not ``1.1`` beside ``1.77``)."""
    import math

    value = float(value)
    if not math.isfinite(value):
        return "–"
    if value == 0:
        return "0"
    exponent = int(f"{abs(value):.{digits - 1}e}".split("e")[1])  # after rounding: 99.96 → 1.00e+02
    return fixed(value, max(0, digits - 1 - exponent))


# -- suggestions ---------------------------------------------------------------

def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices``, or ``""``."""
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(word), choices, n=3, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in choices}
        close = [lowered[c] for c in difflib.get_close_matches(str(word).lower(), list(lowered), n=3, cutoff=0.6)]
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"


def _listing(choices: list[str], limit: int = 20) -> str:
    shown = ", ".join(repr(c) for c in choices[:limit])
    return shown + (f" … ({len(choices)} in all)" if len(choices) > limit else "")


def check_choice(value: str, choices: Iterable[str], what: str, hint: str = "") -> None:
    """Raise :class:`InputError` if ``value`` is not one of ``choices``: close matches first, then the valid values."""
    choices = list(dict.fromkeys(str(c) for c in choices))
    if value in choices:
        return
    if not choices:
        raise InputError(f"unknown {what} {value!r}: there are none" + (f"; {hint}" if hint else ""))
    raise InputError(
        f"unknown {what} {value!r}{did_you_mean(value, choices)} (valid: {_listing(choices)})"
        + (f"; {hint}" if hint else "")
    )


def check_model(name: str, names: Iterable[str]) -> None:
    """A clear error, with close matches, for a model that is not in the store."""
    check_choice(name, names, "model", hint="`lmmap models` lists them")


def check_color_by(column: Optional[str], metadata_columns: Iterable[str], default: str = "model_type") -> None:
    """``--color-by`` must name a metadata column (the default may be absent: the map is then one colour)."""
    cols = [str(c) for c in metadata_columns if str(c) != "model"]
    if not column or column in cols or (column == default and default not in cols):  # "": one colour
        return
    check_choice(column, cols, "--color-by column",
                 hint="add columns with --metadata MODELS.csv (a `model` column and one column per attribute)")


# -- output directories ----------------------------------------------------------

@contextmanager
def output_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Create the output directory ``path``; if the command fails, remove what it created.

    A directory that existed before is left in place (only a new one is
    removed, with any parents created for it), so a failed command never
    leaves a half-written output directory behind.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"output {path} exists and is not a directory; choose another -o/--output", params=("output",))
    created = None
    for p in [path, *path.parents]:
        if p.exists():
            break
        created = p
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise


# -- the application -------------------------------------------------------------

from lmmap.exceptions import Interrupted  # noqa: E402,F401  (the one class; importable from here, as before)


class _Group(typer.core.TyperGroup):
    def invoke(self, ctx: click.Context):
        try:
            super().invoke(ctx)
        except KeyboardInterrupt as exc:
            # Carried past typer (which turns Ctrl-C into a silent exit 130) as Abort; main() reads its cause.
            raise click.exceptions.Abort() from exc
        # main() runs click non-standalone, where a command's return value would be taken for an exit code.
        return None


# typer shows ``<bool>`` as the "type" of a flag, which reads as if the flag
# took a value; a flag shows no type (like click and git), options keep theirs.
_display_type_rich = typer.core.TyperOption.display_type_rich


def _flag_aware_display_type(self, ctx):
    if getattr(self, "is_flag", False) and not getattr(self, "count", False):
        return None
    return _display_type_rich(self, ctx)


typer.core.TyperOption.display_type_rich = _flag_aware_display_type  # type: ignore[method-assign]

class _SpecTyper(typer.Typer):
    """A typer app whose commands take their options' defaults from the spec (:mod:`lmmap.cli._options`)."""

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)

        def decorator(fn):
            register(with_spec_defaults(fn))
            return fn

        return decorator


app = _SpecTyper(
    name="lmmap",
    help="Map language models by their log-likelihood vectors.",
    cls=_Group,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
texts_app = _SpecTyper(help="Build and inspect text sets.", no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(texts_app, name="texts")


def _version(value: bool):
    if value:
        console.print(f"lmmap {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version of lmmap and exit.", callback=_version, is_eager=True),
    ] = False,
):
    """Map language models by their log-likelihood vectors."""


DEFAULT_STORE = "lmmap-store"


def default_store() -> str:
    # A string, not a Path: Path("s3://b/p") would fold the URL's "//".
    return os.environ.get("LMMAP_STORE", DEFAULT_STORE)


def stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def print_table(table) -> None:
    """A rich table on stdout: fitted to a terminal; as wide as it needs when piped (no cell folded into strips)."""
    if stdout_is_terminal():
        console.print(table)
    else:
        _LiteralConsole(width=100_000, emoji=False, highlight=False).print(table)


def print_files(paths: dict) -> None:
    """The files a command wrote, one a line, their paths in one column however long the names."""
    width = max((len(str(name)) for name in paths), default=0)
    for name, p in paths.items():
        console.print(f"  {lit(name):{width}s}  {lit(p)}")
