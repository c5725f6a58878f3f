"""Rules of the package's shape that a refactoring must not break (docs/architecture.md)."""

from __future__ import annotations

import ast
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


@pytest.mark.parametrize("module", ["lmmap.maths.geometry", "lmmap.maths.resampling", "lmmap.maths.bootstrap", "lmmap.exceptions"])
def test_the_numeric_core_is_numpy_and_scipy_only(module):
    # arrays in, arrays out: no data frames, files, plots, consoles or torch
    assert _loaded_after_import(module) == []


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
