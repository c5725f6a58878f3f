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


MATHS = sorted(f"lmmap.maths.{p.stem}" for p in (PACKAGE / "maths").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("module", MATHS + ["lmmap.exceptions", "lmmap.progress", "lmmap.map", "lmmap.report",
                                            "lmmap.scoring", "lmmap.scoring.encoding", "lmmap.scoring.protocol",
                                            "lmmap.scoring.fake"])
def test_the_numeric_core_and_the_seams_load_nothing_heavy(module):
    # maths/: arrays in, arrays out — no data frames, files, plots, consoles or torch. The seams
    # (progress events, the scoring protocol, the report dispatcher) are importable without them too.
    allowed = {"lmmap.map": {"pandas", "pyarrow"}}.get(module, set())  # ModelMap carries metadata as a DataFrame
    assert [m for m in _loaded_after_import(module) if m not in allowed] == []


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports (at the top or inside a function), as absolute names."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}:{node.lineno}: relative import (lmmap uses absolute ones)"
            out += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


# What each layer may import from lmmap (docs/architecture.md); lower layers never reach up.
LAYERS = {
    "maths": ("lmmap.maths", "lmmap.exceptions", "lmmap.parallel", "lmmap.progress"),
    "data": ("lmmap.data", "lmmap.maths", "lmmap.exceptions", "lmmap._version", "lmmap.progress", "lmmap.parallel"),
    "scoring": ("lmmap.scoring", "lmmap.data", "lmmap.exceptions", "lmmap.progress", "lmmap.parallel",
                "lmmap._version"),
    "analyses": ("lmmap.analyses", "lmmap.maths", "lmmap.map", "lmmap.data", "lmmap.exceptions", "lmmap.progress",
                 "lmmap.parallel", "lmmap._version", "lmmap.scoring", "lmmap.scoring.score_models"),
    "report": ("lmmap.report", "lmmap.maths", "lmmap.map", "lmmap.analyses", "lmmap.data", "lmmap.exceptions",
               "lmmap._version"),
}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_each_layer_imports_only_the_layers_below_it(layer):
    allowed = LAYERS[layer]
    offenders = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for lineno, name in _imports(path):
            if name == "lmmap" or not name.startswith("lmmap."):
                continue
            if name.startswith("lmmap.") and not any(name == a or name.startswith(a + ".") for a in allowed):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{lineno} imports {name}")
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
