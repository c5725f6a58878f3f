"""Rules of the package's shape that a refactoring must not break (docs/architecture.md)."""

from __future__ import annotations

import ast
import builtins
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lmmap"
HEAVY = ("torch", "transformers", "matplotlib", "plotly", "rich", "pandas", "pyarrow", "openTSNE", "typer")
BARE = {"ValueError", "KeyError", "TypeError", "RuntimeError"}


def _loaded_after_import(module: str) -> list[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out))
    return [m for m in HEAVY if m in loaded]


def test_import_lmmap_loads_nothing_heavy():
    assert _loaded_after_import("lmmap") == []


MATHS = sorted(f"lmmap.maths.{p.stem}" for p in (PACKAGE / "maths").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("module", MATHS + ["lmmap.exceptions", "lmmap.progress", "lmmap.map", "lmmap.report",
                                            "lmmap.scoring", "lmmap.scoring.encoding", "lmmap.scoring.protocol",
                                            "lmmap.scoring.fake", "lmmap.params", "lmmap.demo"])
def test_the_numeric_core_and_the_seams_load_nothing_heavy(module):
    # maths/: arrays in, arrays out — no data frames, files, plots, consoles or torch. The seams
    # (progress events, the scoring protocol, the report dispatcher) are importable without them too.
    # ModelMap carries metadata as a DataFrame; the demo builds a store (Parquet) but loads torch, transformers
    # and the plotting libraries only when it runs.
    allowed = {"lmmap.map": {"pandas", "pyarrow"}, "lmmap.demo": {"pandas", "pyarrow"}}.get(module, set())
    assert [m for m in _loaded_after_import(module) if m not in allowed] == []


def test_the_parameter_spec_loads_not_even_numpy():
    """lmmap/params.py: the standard library and lmmap.exceptions only (``lmmap --help`` builds its options from it)."""
    code = "import sys, lmmap.params; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, as absolute names: the whole AST (top level, functions, methods, branches),
    ``from a import b`` as both ``a`` and ``a.b``, and ``importlib.import_module("lmmap...")`` with a literal name."""
    out = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # a relative import (`from . import x`): refused by test_no_relative_imports
                continue
            out += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Call) and _dynamic_import(node) is not None:
            out.append((node.lineno, _dynamic_import(node)))
    return out


def _dynamic_import(call: ast.Call) -> str | None:
    """The module a call ``importlib.import_module("name")`` / ``import_module("name")`` / ``__import__("name")``
    loads, when ``name`` is a literal absolute name; None otherwise."""
    f = call.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
    if name not in ("import_module", "__import__") or not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and not arg.value.startswith("."):
        return arg.value
    return None


def _functions_and_lines(tree: ast.Module) -> dict[int, str]:
    """For each line inside a function, the innermost function's name (lines at module or class level: absent)."""
    where: dict[int, str] = {}

    def visit(node, fn):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else fn
            if inner is not None and hasattr(child, "lineno"):
                for line in range(child.lineno, (getattr(child, "end_lineno", None) or child.lineno) + 1):
                    where[line] = inner
            visit(child, inner)

    visit(tree, None)
    return where


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Lines of ``if TYPE_CHECKING:`` blocks: imports for annotations, never run (nothing is loaded)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, child.end_lineno + 1))
    return lines


def _runtime_imports(path: Path) -> list[tuple[int, str]]:
    """:func:`_imports` less those under ``if TYPE_CHECKING:`` (the library rules are about what gets loaded)."""
    skip = _type_checking_lines(_tree(path))
    return [(lineno, name) for lineno, name in _imports(path) if lineno not in skip]


def test_the_import_scan_sees_imports_anywhere(tmp_path):
    """The scan the layer rules rest on: imports in functions, methods and branches, ``from a import b`` as
    ``a.b``, a literal ``importlib.import_module``; ``if TYPE_CHECKING:`` imports are not loaded at run time."""
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "import lmmap.maths\n"
        "if TYPE_CHECKING:\n    import torch\n"
        "def f():\n    from lmmap import report\n    if True:\n        import lmmap.cli._app as app\n"
        "class C:\n    def m(self):\n        import importlib\n        importlib.import_module('lmmap.scoring.hf')\n"
    )
    names = {name for _, name in _imports(src)}
    assert {"lmmap.maths", "lmmap.report", "lmmap.cli._app", "lmmap.scoring.hf", "torch"} <= names
    assert "torch" not in {name for _, name in _runtime_imports(src)}
    inside = _functions_and_lines(_tree(src))
    assert inside[6] == "f" and inside[12] == "m" and 2 not in inside


def test_no_relative_imports():
    """lmmap uses absolute imports only (the layer rules read module names)."""
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} from {'.' * node.level}{node.module or ''} import"
                 for path in sorted(PACKAGE.rglob("*.py")) for node in ast.walk(_tree(path))
                 if isinstance(node, ast.ImportFrom) and node.level]
    assert offenders == [], "\n".join(offenders)


# Modules every layer may use: the exception tree, progress events, the one parallel runner, the version, and the
# parameter spec (lmmap/params.py: the standard library and lmmap.exceptions only).
BASE = ("lmmap.exceptions", "lmmap.progress", "lmmap.parallel", "lmmap._version", "lmmap.params")

# What each layer may import from lmmap (docs/architecture.md); lower layers never reach up. Keys are folders or
# files of lmmap/; every module of lmmap/ belongs to one of them or to ENTRY.
LAYERS = {
    "maths": ("lmmap.maths", *BASE),
    "data": ("lmmap.data", "lmmap.maths", *BASE),
    "scoring": ("lmmap.scoring", "lmmap.data", *BASE),
    # map.py: the numeric core and nothing of files (data/) or pictures (report/).
    "map.py": ("lmmap.map", "lmmap.maths", *BASE),
    "analyses": ("lmmap.analyses", "lmmap.maths", "lmmap.map", "lmmap.data", "lmmap.scoring", *BASE),
    "report": ("lmmap.report", "lmmap.maths", "lmmap.map", "lmmap.analyses", "lmmap.data", *BASE),
    # demo.py runs the whole session of `lmmap demo` (a store, tiny models scored, analyses) and writes its folder
    # (report.write of the map, the layers, the lensed map): everything but the command line, which draws its progress.
    "demo.py": ("lmmap.demo", "lmmap.data", "lmmap.maths", "lmmap.map", "lmmap.analyses", "lmmap.scoring",
                "lmmap.report", *BASE),
    # The bottom: each may use only what is below it.
    # lmmap.params formats the exceptions' messages (python_message), imported inside a function: params imports
    # InputError from here, so the two are one bottom unit.
    "exceptions.py": ("lmmap.params",),
    "_version.py": (),
    # A progress step's message names parameters as the exceptions do, and is shown to Python the same way.
    "progress.py": ("lmmap.exceptions", "lmmap.params"),
    "params.py": ("lmmap.exceptions",),
    "parallel.py": ("lmmap.exceptions", "lmmap.progress"),
    "cli": ("lmmap",),  # anything
}
# Entry points and the package's lazy re-exports: they may name anything.
ENTRY = ("__init__.py", "__main__.py", "_entry.py")

# Libraries a layer never imports, not even inside a function (the fresh-interpreter checks above see only what
# loads at import time): the numeric core is numpy/scipy; the map holds no files or pictures; only the command line
# has a console; pictures are drawn by report/ alone.
FORBIDDEN = {
    "maths": ("pandas", "pyarrow", "duckdb", "torch", "transformers", "rich", "matplotlib", "plotly", "typer"),
    "map.py": ("pyarrow", "duckdb", "torch", "transformers", "rich", "matplotlib", "plotly", "typer"),
    "analyses": ("rich", "typer", "matplotlib", "plotly"),
    "report": ("rich", "typer"),
    "data": ("rich", "typer", "matplotlib", "plotly"),
    "scoring": ("rich", "typer", "matplotlib", "plotly"),
    "demo.py": ("rich", "typer", "matplotlib", "plotly"),
}


def _layer_files(layer: str) -> list[Path]:
    target = PACKAGE / layer
    return sorted(target.rglob("*.py")) if target.is_dir() else [target]


def test_every_module_belongs_to_a_layer():
    """A new module of lmmap/ (a new top-level file above all) must be given its rule here and in the docs."""
    covered = {p for layer in LAYERS for p in _layer_files(layer)} | {PACKAGE / e for e in ENTRY}
    stray = sorted(str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py") if p not in covered)
    assert stray == [], "modules without a layer rule: " + ", ".join(stray)


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_each_layer_imports_only_the_layers_below_it(layer):
    allowed = LAYERS[layer]
    offenders = []
    for path in _layer_files(layer):
        for lineno, name in _imports(path):
            if name == "lmmap" or not name.startswith("lmmap."):
                continue
            if not any(name == a or name.startswith(a + ".") for a in allowed):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{lineno} imports {name}")
    assert offenders == [], "\n".join(offenders)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_the_libraries_it_must_not_even_inside_a_function(layer):
    offenders = []
    for path in _layer_files(layer):
        for lineno, name in _runtime_imports(path):
            if name.split(".")[0] in FORBIDDEN[layer]:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{lineno} imports {name}")
    assert offenders == [], "\n".join(offenders)


# torch and transformers: only inside functions, and only of the backends that run a model. (docs/architecture.md
# names hf.py and layers.py; vllm.py is the other backend: vLLM's engine is torch, its tokenizer config transformers;
# openai.py tokenises on the client with a transformers tokenizer.)
MODEL_BACKENDS = ("hf.py", "layers.py", "vllm.py", "openai.py")


def test_scoring_imports_torch_and_transformers_only_inside_the_backends_functions():
    offenders = []
    for path in _layer_files("scoring"):
        tree = _tree(path)
        inside = _functions_and_lines(tree)
        for lineno, name in _runtime_imports(path):
            if name.split(".")[0] not in ("torch", "transformers"):
                continue
            if path.name not in MODEL_BACKENDS or lineno not in inside:
                where = "at module level" if lineno not in inside else f"in {inside[lineno]}()"
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{lineno} imports {name} {where}")
    assert offenders == [], "\n".join(offenders)


def test_only_the_command_line_draws_or_prints():
    """Progress bars and consoles (rich) live in cli/; the library reports through callbacks and warnings."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "cli":
            continue
        for lineno, name in _imports(path):
            if name == "rich" or name.startswith("rich."):
                offenders.append(f"lmmap/{rel}:{lineno} imports {name}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"lmmap/{rel}:{node.lineno} print(")
    assert offenders == [], "\n".join(offenders)


def test_every_result_type_has_a_writer():
    import importlib

    from lmmap import report

    for key, module in report.WRITERS.items():
        mod_name, cls_name = key.rsplit(".", 1)
        assert hasattr(importlib.import_module(mod_name), cls_name), key
        assert callable(importlib.import_module(module).write), module


def test_the_library_raises_only_its_own_exceptions():
    """User errors are LmmapError subclasses (the CLI prints them on one line); bare built-ins would be tracebacks."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "exceptions.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                func = node.exc.func
                if isinstance(func, ast.Name) and func.id in BARE:
                    offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} raise {func.id}(")
    assert offenders == [], "\n".join(offenders)


# Every built-in exception class (FileNotFoundError, ValueError, KeyError, OSError, ...): raised by library code, the
# command line would report it as an internal error (a bug), not as the user's mistake on one line.
BUILTIN_EXCEPTIONS = {n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)}

# Where raising a built-in is right, and why. (exception, function it is raised in or "*" for any).
ALLOWED_BUILTIN_RAISES = {
    # PEP 562: a module's __getattr__ (and an object's) must raise AttributeError, or hasattr(), getattr(x, n, default)
    # and `from lmmap import missing` misbehave (lmmap/__init__.py, lmmap/scoring/__init__.py: lazy names).
    ("AttributeError", "__getattr__"): "the __getattr__ protocol",
    # An abstract method of a Protocol or base class: calling it is a programming error, never a user's.
    ("NotImplementedError", "*"): "an abstract method's body",
    # Re-raising Ctrl-C after cleanup, so that it reaches cli/__init__.py:main's one-line handling.
    ("KeyboardInterrupt", "*"): "re-raising Ctrl-C",
    # A storage backend reports a file that is absent, or not one lmmap would read, as the file system does
    # (lmmap/data/storage/local.py, objects.py): the store catches OSError from every backend in one place and
    # words it as a StoreError naming the file.
    ("OSError", "_read_plain"): "a storage backend's read, as the file system reports it",
    ("OSError", "_get"): "a storage backend's read, as the file system reports it",
    ("FileNotFoundError", "read"): "a storage backend's read, as the file system reports it",
}


def _builtin_raises(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line, exception, enclosing function)`` of each ``raise Builtin(...)`` / ``raise Builtin`` in ``path``."""
    tree = _tree(path)
    inside = _functions_and_lines(tree)
    # A module that binds a built-in's name itself (class FooError, an import) raises its own class, not the built-in.
    own = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    own |= {(a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
            for a in n.names}
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Raise) or node.exc is None:
            continue
        exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        if isinstance(exc, ast.Name) and exc.id in BUILTIN_EXCEPTIONS and exc.id not in own:
            name = exc.id
        elif (isinstance(exc, ast.Attribute) and isinstance(exc.value, ast.Name) and exc.value.id == "builtins"
              and exc.attr in BUILTIN_EXCEPTIONS):
            name = exc.attr
        else:
            continue
        out.append((node.lineno, name, inside.get(node.lineno)))
    return out


def test_library_code_never_raises_a_builtin_exception():
    """Outside cli/, a user's mistake or a bad file is an LmmapError (one line, with its parameter), never a built-in
    such as FileNotFoundError, ValueError, KeyError, TypeError, RuntimeError or OSError; ALLOWED_BUILTIN_RAISES lists
    the few places where a built-in is the protocol, each with its reason."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "cli" or rel.name == "exceptions.py":
            continue
        for lineno, name, function in _builtin_raises(path):
            if (name, function) in ALLOWED_BUILTIN_RAISES or (name, "*") in ALLOWED_BUILTIN_RAISES:
                continue
            offenders.append(f"lmmap/{rel}:{lineno} raise {name} (in {function or 'module level'})")
    assert offenders == [], "\n".join(offenders)


def test_the_builtin_raise_scan_sees_what_it_must(tmp_path):
    """The scan itself: calls and bare classes, nested functions, builtins.X; not re-raises, nor a module's own class."""
    src = tmp_path / "m.py"
    src.write_text(
        "import builtins\n"
        "class KeyError(Exception):\n    pass\n"
        "def f(p):\n"
        "    def g():\n        raise FileNotFoundError(p)\n"
        "    try:\n        g()\n    except OSError as e:\n        raise\n"
        "    raise builtins.OSError(2, 'x')\n"
        "def __getattr__(name):\n    raise AttributeError(name)\n"
        "def h(e):\n    raise e\n"
        "def k():\n    raise KeyError('own class')\n"
        "raise ValueError\n"
    )
    found = {(name, fn) for _, name, fn in _builtin_raises(src)}
    assert found == {("FileNotFoundError", "g"), ("OSError", "f"), ("AttributeError", "__getattr__"),
                     ("ValueError", None)}


def test_every_exception_class_belongs_to_the_tree():
    from lmmap import exceptions

    tree = [getattr(exceptions, n) for n in ("InputError", "FormatError", "StoreError", "ScoringError", "NonFiniteError")]
    assert all(issubclass(c, exceptions.LmmapError) for c in tree)
    assert issubclass(exceptions.NonFiniteError, exceptions.ScoringError)
    assert issubclass(exceptions.LmmapWarning, UserWarning)


def test_the_command_line_starts_without_the_data_and_model_libraries():
    # `lmmap --help` imports every command module; pandas, pyarrow, torch and the plotting
    # libraries load only when a command that needs them runs.
    loaded = _loaded_after_import("lmmap.cli")
    assert [m for m in loaded if m not in ("rich", "typer")] == []
    code = "import sys, lmmap.cli; print('numpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
