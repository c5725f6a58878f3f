"""Usage errors (a missing option, an unknown option, a value of the wrong type) as one ``error:`` line.

click and typer print these as a usage block and a framed box and exit 2,
which lmmap keeps for its own bugs. :func:`lmmap.cli.main` runs the app with
``standalone_mode=False`` and hands every usage error here, so that a mistake
on the command line reads like every other refusal: one line that names the
option and says what to give it, exit 1.

typer ≥ 0.20 carries its own copy of click (``typer._click``) whose exception
classes are not click's; both sets are recognised.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

import click

from lmmap.cli._app import did_you_mean


def _exception_classes(name: str) -> tuple[type, ...]:
    found = [getattr(click.exceptions, name)]
    try:
        from typer._click import exceptions as vendored  # typer's own click (typer ≥ 0.20)
    except ImportError:
        pass
    else:
        if hasattr(vendored, name):
            found.append(getattr(vendored, name))
    return tuple(dict.fromkeys(found))


UsageError = _exception_classes("UsageError")
ClickException = _exception_classes("ClickException")
NoArgsIsHelpError = _exception_classes("NoArgsIsHelpError")
_BadParameter = _exception_classes("BadParameter")
_MissingParameter = _exception_classes("MissingParameter")
_NoSuchOption = _exception_classes("NoSuchOption")
_BadOptionUsage = _exception_classes("BadOptionUsage")

# Help texts that read badly after "give" are said here instead.
_GIVE = {
    "vectors": "the file (or folder) of vectors to import: a pickle, NPZ, Parquet, CSV or a folder of scorer JSONL",
}

# What a value of each kind must look like, by pydantic's error type (typer ≥ 0.20) or click's type name.
_KIND = {
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "integer": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "float": "a number",
    "bool_parsing": "true or false",
    "boolean": "true or false",
}


def _command(argv: Sequence[str]):
    """The command ``argv`` names, and its path (``lmmap texts build``), found by walking the groups.

    Some usage errors (an option given no value) carry no context, so the
    command is read from the arguments themselves.
    """
    import typer

    from lmmap.cli._app import app

    cmd = typer.main.get_command(app)
    path = ["lmmap"]
    for token in argv:
        commands = getattr(cmd, "commands", None)
        if not commands or token.startswith("-"):
            if commands is None:
                break
            continue
        if token not in commands:
            break
        cmd = commands[token]
        path.append(token)
    return " ".join(path), cmd


def _flags(param) -> str:
    opts = list(getattr(param, "opts", ()) or ()) + list(getattr(param, "secondary_opts", ()) or ())
    if getattr(param, "param_type_name", "") == "argument" or not opts or not opts[0].startswith("-"):
        name = str(getattr(param, "name", "") or "value").upper()
        return name + ("..." if getattr(param, "nargs", 1) == -1 else "")
    return "/".join(opts)


def _first_sentence(text: str) -> str:
    text = " ".join(str(text or "").split())
    text = re.split(r"(?<=[^.\s])\.\s", text, maxsplit=1)[0]
    text = text.rstrip(".")
    if not text:
        return ""
    first = text.split(" ", 1)[0]
    if first[:1].isupper() and (len(first) == 1 or first[1:2].islower()):  # "Output" → "output"; "SUBSET.json" stays
        text = text[0].lower() + text[1:]
    return text


def _give(param) -> str:
    """What to give ``param``, from its help text: ``the output directory``."""
    if param is None:
        return ""
    name = str(getattr(param, "name", "") or "")
    if name in _GIVE:
        return _GIVE[name]
    metavar = getattr(param, "metavar", None)
    if isinstance(metavar, str) and "|" in metavar:
        return "one of " + ", ".join(metavar.split("|"))
    what = _first_sentence(getattr(param, "help", "") or "")
    if not what:
        return ""
    first = what.split(" ", 1)[0]
    if first.lower() not in ("a", "an", "the", "one", "each", "every") and "." not in first:  # not "the FILE.csv"
        what = "the " + what
    return what


def _param_for(cmd, option: str):
    for param in getattr(cmd, "params", ()) or ():
        if option in (getattr(param, "opts", ()) or ()) or option in (getattr(param, "secondary_opts", ()) or ()):
            return param
    return None


def _plain(message: str) -> str:
    """click's sentence as a clause of ours: no capital at the start, no full stop at the end."""
    message = " ".join(str(message).split()).rstrip(".")
    if message[:1].isupper() and message[1:2].islower():
        message = message[0].lower() + message[1:]
    return message


def _bad_value(exc, flags: str) -> str:
    cause = exc.__cause__
    errors = []
    if cause is not None and hasattr(cause, "errors"):
        try:
            errors = list(cause.errors())
        except Exception:
            errors = []
    if errors:
        first = errors[0]
        value = first.get("input")
        kind = _KIND.get(str(first.get("type", "")))
        if kind:
            return f"{flags} takes {kind}, not {value!r}"
        msg = str(first.get("msg", "")).replace("Input should be", "must be")
        expected = (first.get("ctx") or {}).get("expected")
        if expected:
            return f"{flags} must be {expected}, not {value!r}"
        return f"invalid value {value!r} for {flags}: {_plain(msg)}"
    param_type = getattr(getattr(exc, "param", None), "type", None)
    kind = _KIND.get(str(getattr(param_type, "name", "")))
    message = _plain(getattr(exc, "message", "") or str(exc))
    if kind:  # click: "'zero' is not a valid integer."
        return f"{flags} takes {kind}: {message}"
    return f"invalid value for {flags}: {message}"


def usage_message(exc: BaseException, argv: Sequence[str]) -> str:
    """The one line that says what was wrong on the command line and what to give instead."""
    ctx = getattr(exc, "ctx", None)
    path, cmd = _command(argv)
    if ctx is not None and getattr(ctx, "command", None) is not None:
        path, cmd = ctx.command_path, ctx.command
    help_hint = f"`{path} --help` lists them"

    if isinstance(exc, _MissingParameter):
        param = getattr(exc, "param", None)
        flags = _flags(param) if param is not None else "a value"
        kind = "option" if flags.startswith("-") else "argument"
        give = _give(param)
        return f"missing {kind} {flags}: " + (f"give {give}" if give else f"`{path} --help` shows the usage")

    if isinstance(exc, _NoSuchOption):
        name = getattr(exc, "option_name", "") or ""
        possible = list(getattr(exc, "possibilities", None) or ())
        if possible:
            hint = "; did you mean " + " or ".join(sorted(possible)) + "?"
        else:
            # click offers no match for a short option (-K for -k): look among the command's own.
            opts = [o for p in getattr(cmd, "params", ()) or () for o in getattr(p, "opts", ()) or () if o[:1] == "-"]
            hint = did_you_mean(name, opts).replace("'", "")
        return f"unknown option {name} for `{path}`{hint} ({help_hint})"

    if isinstance(exc, _BadParameter):
        param = getattr(exc, "param", None)
        flags = _flags(param) if param is not None else "a value"
        return _bad_value(exc, flags)

    if isinstance(exc, _BadOptionUsage):
        name = getattr(exc, "option_name", "") or ""
        param = _param_for(cmd, name)
        if re.search(r"requires (an|\d+) arguments?", str(exc)):
            give = _give(param)
            flags = _flags(param) if param is not None else name
            return f"option {flags} needs a value" + (f": give {give}" if give else "")
        return f"{_plain(str(exc))} (`{path} --help` shows the usage)"

    message = getattr(exc, "message", None) or str(exc)
    extra = re.match(r"Got unexpected extra argument(?:\(s\)|s)? \((.*)\)", message)
    if extra:
        return f"unexpected argument(s) for `{path}`: {extra.group(1)} (`{path} --help` shows the usage)"
    unknown = re.match(r"No such command (['\"])(.*?)\1(?:\.|$)", message)
    if unknown:
        word = unknown.group(2)
        commands = list(getattr(cmd, "commands", {}) or {})
        return f"unknown command {word!r}{did_you_mean(word, commands)} (`{path} --help` lists the commands)"
    return f"{_plain(message)} (`{path} --help` shows the usage)"


def help_text(exc: BaseException) -> Optional[str]:
    """The help a bare group (``lmmap``, ``lmmap texts``) shows, if it was not printed already."""
    text = getattr(exc, "message", None) or ""
    return text if text.strip() else None
