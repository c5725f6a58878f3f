"""The parameter spec (lmmap/params.py) is the one declaration of every option (issue 23).

Every typer option of every command is built from a spec entry (flag, aliases, help, default, metavar);
each flag is declared once; every spec check names the parameter in Python and the flag on the command
line; an out-of-range value of every ranged option is one ``error:`` line naming its flag; and every
``raise InputError(`` in lmmap/ lists the parameters it concerns (``params=``) unless listed below.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

from cli_main import run_main
from lmmap.exceptions import InputError
from lmmap.params import PARAMS, REQUIRED, check, cli_message, flag_of, for_cli

PACKAGE = Path(__file__).resolve().parents[1] / "lmmap"


def _commands():
    """``(command name, click command)`` for every command of ``lmmap`` (``texts build`` included)."""
    import typer

    from lmmap.cli import app

    out = []

    def walk(group, prefix=""):
        for name, cmd in sorted(group.commands.items()):
            if hasattr(cmd, "commands"):
                walk(cmd, f"{prefix}{name} ")
            else:
                out.append((prefix + name, cmd))

    walk(typer.main.get_command(app))
    return out


COMMANDS = _commands()
OPTIONS = [(name, opt) for name, cmd in COMMANDS for opt in cmd.params
           if opt.param_type_name == "option" and opt.name != "help"]


def _spec_for(command: str, opts) -> list:
    return [p for p in PARAMS.values() if p.flag in opts and (p.commands is None or command in p.commands)]


def _default(opt):
    return opt.default() if callable(opt.default) else opt.default


def test_there_are_commands_and_options():
    assert len(COMMANDS) >= 19 and len(OPTIONS) >= 200


@pytest.mark.parametrize("command,opt", OPTIONS, ids=[f"{c} {o.opts[0]}" for c, o in OPTIONS])
def test_every_option_is_built_from_its_spec_entry(command, opt):
    found = _spec_for(command, opt.opts)
    assert len(found) == 1, (command, opt.opts, [p.name for p in found])
    p = found[0]
    assert sorted(opt.opts) == sorted(p.flags)
    assert opt.help == p.help
    assert opt.metavar == p.metavar
    assert opt.required == p.required
    if p.default_factory is not None:
        from lmmap.cli._options import _factory

        assert opt.default is _factory(p)
    elif not p.required:
        assert _default(opt) == p.default, (command, opt.opts)
    if p.multiple:
        assert opt.multiple


def test_each_flag_is_declared_once():
    by_flag: dict[str, list] = {}
    for p in PARAMS.values():
        for f in p.flags:
            by_flag.setdefault(f, []).append(p)
    for flag, params in by_flag.items():
        if len(params) == 1:
            continue
        # One flag, several meanings: each says where it applies and why it is not one parameter.
        seen: set = set()
        for p in params:
            assert p.commands and p.why, (flag, p.name)
            assert not seen & set(p.commands), (flag, p.name, seen & set(p.commands))
            seen |= set(p.commands)


def test_a_flag_has_one_help_and_one_default_in_every_command():
    seen: dict[tuple, tuple] = {}
    for command, opt in OPTIONS:
        (p,) = _spec_for(command, opt.opts)
        key = (opt.opts[0], p.name)
        value = (opt.help, None if callable(opt.default) else _default(opt), opt.metavar)
        assert seen.setdefault(key, value) == value, (command, key)
    # The historical duplicates are one entry now.
    for name in ("R", "random_state", "embedding_random_state", "device", "dtype", "batch_tokens", "workers"):
        assert name in PARAMS and PARAMS[name].commands is None, name


def test_every_spec_entry_is_used_by_some_command():
    used = {p.name for command, opt in OPTIONS for p in _spec_for(command, opt.opts)}
    assert set(PARAMS) - used == set()


def _bad_values(p) -> list:
    """Values of the right type that the spec refuses."""
    if p.choices is not None:
        return ["no-such-choice"]
    out = []
    if p.interval is not None:
        lo, hi = p.interval
        step = 1 if p.base is int else 0.5
        if lo is not None:
            below = lo if p.open[0] else lo - step
            if not (p.special and below in p.special):
                out.append(below)
            else:
                out.append(min(p.special) - step)
        if hi is not None:
            out.append(hi if p.open[1] else hi + max(step, abs(hi)))
    if p.base is float:
        out.append(math.nan)
    return out


RANGED = [(p, v) for p in PARAMS.values() if p.ranged for v in _bad_values(p)]


@pytest.mark.parametrize("p,value", RANGED, ids=[f"{p.name}={v}" for p, v in RANGED])
def test_every_check_names_the_parameter_in_python_and_the_flag_on_the_command_line(p, value):
    with pytest.raises(InputError) as err:
        check(p.name, value)
    message = str(err.value)
    assert err.value.params == (p.name,)
    assert message.startswith(f"{p.name} must be {p.allowed()}") and f"got {value!r}" in message, message
    assert "\n" not in message
    assert for_cli(err.value).startswith(f"{p.flag} must be "), for_cli(err.value)


def test_check_returns_the_value_and_lets_none_pass_where_none_is_the_default():
    assert check("R", 100) == 100 and check("eps0", 1e-3) == 1e-3 and check("unit", "bits-per-byte")
    assert check("workers", -1) == -1 and check("checkpoint_every", math.inf) == math.inf
    assert check("neighbors", None) is None
    with pytest.raises(InputError, match=r"^R must be an integer from 2 to 100,000 .*, got True$"):
        check("R", True)  # a bool is not a count
    with pytest.raises(InputError) as err:
        check("random_state", 2**32, what="embedding_random_state")
    assert err.value.params == ("embedding_random_state",) and for_cli(err.value).startswith("--tsne-seed must be")


def test_mentions_in_braces_read_as_python_names_or_flags():
    err = InputError("pass {allow_pickle=True}; or {on_bad_utf8='skip'} ({n_grid}) {a set} {texts=T.jsonl}",
                     params=("allow_pickle", "on_bad_utf8", "n_grid", "texts"))
    assert str(err) == "pass allow_pickle=True; or on_bad_utf8='skip' (n_grid) {a set} texts=T.jsonl"
    assert for_cli(err) == "pass --allow-pickle; or --on-bad-utf8 skip (--n-grid) {a set} --texts T.jsonl"
    # Only a leading name is a flag; elsewhere a parameter's name is a word.
    assert cli_message("metadata has no column; give metadata", ("metadata",)) == \
        "--metadata has no column; give metadata"
    assert flag_of("n_folds") == "--folds" and flag_of("not_in_the_spec") == "--not-in-the-spec"


def test_the_library_limits_are_the_specs():
    from lmmap.map import UNITS
    from lmmap.maths import bootstrap, errors, randomness, resampling
    from lmmap.maths.embedding import METHODS

    assert PARAMS["R"].interval == (2, bootstrap.MAX_REPLICATES)
    assert PARAMS["random_state"].interval == (0, randomness.MAX_SEED)
    assert PARAMS["eps0"].interval == errors.EPS0_RANGE and PARAMS["eps0"].default == errors.EPS0
    assert PARAMS["error"].choices == errors.ERRORS and PARAMS["precision"].choices == errors.PRECISIONS
    assert PARAMS["stability_n"].interval == (1, resampling.MAX_SAMPLE_SIZE)
    assert PARAMS["method"].choices == resampling.METHODS
    assert PARAMS["unit"].choices == UNITS and PARAMS["embedding"].choices == METHODS


# -- the real command line ------------------------------------------------------------------------------

# Values a required option needs so that the command line parses up to the bad value.
_REQUIRED_VALUE = {Path: "lmmap-params-test-nothing-here", str: "x"}


def _sweep_cases():
    cases = []
    for command, cmd in COMMANDS:
        args = [a for a in cmd.params if a.param_type_name == "argument"]
        for opt in cmd.params:
            if opt.param_type_name != "option" or opt.name == "help":
                continue
            (p,) = _spec_for(command, opt.opts)
            if not p.ranged or p.multiple:
                continue
            for value in _bad_values(p):
                line = [*command.split(), p.flag, str(value)]
                for other in cmd.params:
                    if other.param_type_name == "option" and other.required and other is not opt:
                        (q,) = _spec_for(command, other.opts)
                        line += [q.flag, _REQUIRED_VALUE.get(q.base, "x")]
                line += ["x" for _ in args]
                cases.append(pytest.param(line, p.flag, id=" ".join(line[: len(command.split()) + 2])))
    return cases


@pytest.mark.parametrize("line,flag", _sweep_cases())
def test_an_out_of_range_value_is_one_line_naming_its_flag(tmp_path, monkeypatch, line, flag):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LMMAP_STORE", str(tmp_path / "no-store"))
    code, out, err = run_main(*line)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1, (code, out, err)
    assert lines[0].startswith(f"error: {flag} must be "), lines[0]
    assert list(tmp_path.iterdir()) == []  # refused while the command line is read: nothing was made


# -- every InputError names its parameter -----------------------------------------------------------------

# (file, enclosing function) -> why its InputError concerns no parameter of the call (a file's content, a
# stored record, an internal state); every other ``raise InputError(`` lists ``params=``.
_SUBSET_FILE = "a field of a SUBSET.json (its content, read back from a file), not an argument of the call"
NO_PARAMETER = {
    ("lmmap/cli/_app.py", "check_choice"): "the command line's own check: its `what` is the flag or the thing itself",
    ("lmmap/cli/errors_cmds.py", "parse_int_list"): "parses a flag's text; its `what` is the flag itself",
    ("lmmap/data/subset.py", "__post_init__"): _SUBSET_FILE,
    ("lmmap/data/subset.py", "_validate"): _SUBSET_FILE,
    ("lmmap/data/subset.py", "_int_scalar"): _SUBSET_FILE,
    ("lmmap/data/subset.py", "_int_array"): _SUBSET_FILE,
    ("lmmap/data/subset.py", "_float_array"): _SUBSET_FILE,
    ("lmmap/data/subset.py", "_one_dim"): _SUBSET_FILE,
    ("lmmap/data/texts.py", "__post_init__"): "a text set's table (its content, read from a file)",
    ("lmmap/map.py", "squared_distances"): "the size of the map itself (K), no argument: the K×K matrix would not fit",
    ("lmmap/maths/embedding.py", "place_by_kl"): "the fitted embedding's own method (an MDS map), no argument",
}


def _input_errors_without_params():
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        parents = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            func = node.exc.func
            if (getattr(func, "id", None) or getattr(func, "attr", None)) != "InputError":
                continue
            if any(k.arg == "params" for k in node.exc.keywords):
                continue
            scope = node
            while scope in parents and not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
                scope = parents[scope]
            where = (str(path.relative_to(PACKAGE.parent)), getattr(scope, "name", "<module>"))
            out.append((*where, node.lineno))
    return out


def test_every_input_error_lists_its_parameters():
    missing = [f"{f}:{line} ({fn})" for f, fn, line in _input_errors_without_params() if (f, fn) not in NO_PARAMETER]
    assert missing == [], f"{len(missing)} InputError(s) without params=:\n" + "\n".join(missing)


def test_the_allowlist_has_no_stale_entries():
    used = {(f, fn) for f, fn, _ in _input_errors_without_params()}
    assert set(NO_PARAMETER) - used == set()
    assert all(why.strip() for why in NO_PARAMETER.values())
