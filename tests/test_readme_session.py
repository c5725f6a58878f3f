"""The README's "A session" runs verbatim on the demo's store, and is what the demo prints.

The commands are parsed from README.md (the first ``bash`` block under
"## A session"), so the README cannot drift from what works: each line is an
``export NAME=VALUE`` or an ``lmmap ...`` command (trailing ``# comments``
allowed); each command runs in a fresh process (``python -m lmmap``) in a
directory that holds a copy of the demo's output as ``lmmap-demo/``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def session_block(text: str | None = None) -> list[str]:
    """The command lines of the first ``bash`` block of the README's "## A session" section."""
    text = README.read_text(encoding="utf-8") if text is None else text
    section = re.search(r"^## A session\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert section, "README.md has no '## A session' section"
    block = re.search(r"^```bash\n(.*?)^```", section.group(1), flags=re.S | re.M)
    assert block, "the README's session has no ```bash block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.strip().startswith("#")]


def parse(line: str) -> list[str]:
    words = shlex.split(line, comments=True)
    assert words and (words[0] == "lmmap" or (words[0] == "export" and len(words) == 2 and "=" in words[1])), (
        f"the README's session may hold only `export NAME=VALUE` and `lmmap ...` lines (it is run by this test): {line!r}"
    )
    return words


def test_the_session_block_parses_and_needs_no_network():
    lines = session_block()
    assert len(lines) >= 8
    commands = [parse(line) for line in lines]
    verbs = [c[1] for c in commands if c[0] == "lmmap"]
    for verb in ("map", "neighbors", "select", "add", "errors", "stability", "predict"):
        assert verb in verbs, f"the session lost `lmmap {verb}`"
    # Hub models and files the demo does not make belong in another section.
    assert "score" not in verbs and "import" not in verbs
    assert not any("gpt2" in w or "my-checkpoint" in w for c in commands for w in c)


def test_the_demo_prints_the_readme_session():
    from lmmap.demo import demo_plan, session_commands

    plan = demo_plan("full")
    printed = session_commands("lmmap-demo", plan, 3 * plan.texts_per_domain)
    assert [" ".join(parse(line)) for line in session_block()] == [" ".join(shlex.split(c)) for c in printed]


def test_a_line_the_test_cannot_run_is_refused():
    text = "## A session\n\n```bash\nexport A=b\nlmmap models\ncurl http://x\n```\n\n## Next\n"
    lines = session_block(text)
    assert len(lines) == 3
    with pytest.raises(AssertionError, match="may hold only"):
        parse(lines[2])


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_every_session_command_runs_on_the_demo_store(demo_full, tmp_path):
    result, demo_dir = demo_full
    work = tmp_path / "work"
    work.mkdir()
    # A copy: the session writes into the store (`add`), and the shared fixture must stay as built.
    shutil.copytree(demo_dir, work / "lmmap-demo", ignore=shutil.ignore_patterns("map", "partial"))
    env = {k: v for k, v in os.environ.items() if k != "LMMAP_STORE"}
    env.setdefault("OMP_NUM_THREADS", "1")
    timings = []
    for line in session_block():
        words = parse(line)
        if words[0] == "export":
            name, value = words[1].split("=", 1)
            env[name] = value
            continue
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", *words], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        timings.append((line.split("#")[0].strip(), time.perf_counter() - t0))
        out = r.stdout + r.stderr
        assert r.returncode == 0, f"`{line}` failed (exit {r.returncode}):\n{out[-3000:]}"
        assert "Traceback" not in out and "internal error" not in out, f"`{line}`:\n{out[-3000:]}"
    for made in ("session/map/map.png", "session/subset.json", "session/placed", "session/errors/table1.csv",
                 "session/stability/table3.csv", "session/predict/correlations.csv"):
        assert (work / made).exists(), made
    print("\n".join(f"{s:6.1f} s  {c}" for c, s in timings))


def python_block(text: str | None = None) -> str:
    """The first ``python`` block of the README's "## Python API" section."""
    text = README.read_text(encoding="utf-8") if text is None else text
    section = re.search(r"^## Python API\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert section, "README.md has no '## Python API' section"
    block = re.search(r"^```python\n(.*?)^```", section.group(1), flags=re.S | re.M)
    assert block, "the README's Python API has no ```python block"
    return block.group(1)


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_the_python_api_example_runs_on_the_demo_store(demo_full, tmp_path, monkeypatch):
    """The README's Python example, verbatim, in a directory holding the demo as ``lmmap-demo/``.

    Its two placeholders are given here: ``corpus/`` (a folder of text) and
    ``loglik_vector`` (one number per text of the text set it builds).
    """
    import numpy as np

    result, demo_dir = demo_full
    shutil.copytree(demo_dir, tmp_path / "lmmap-demo", ignore=shutil.ignore_patterns("map", "partial"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    words = np.array("the a map of models texts likelihood each one new base tune code docs law".split())
    rng = np.random.default_rng(0)
    for i in range(5):  # about 13 MB: enough 1 KB chunks for the example's 10,000 texts
        lines = [" ".join(words[rng.integers(0, len(words), 12)]) for _ in range(42_000)]
        (corpus / f"doc{i}.txt").write_text("\n".join(lines))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    class Vector:  # the text set is built by the example itself: size the placeholder on first use
        def __array__(self, dtype=None, copy=None):
            from lmmap import Store

            n = Store("my-store").n_texts
            return -np.random.default_rng(0).gamma(3.0, 100.0, n)

    namespace = {"loglik_vector": Vector(), "__name__": "readme"}
    exec(compile(python_block(), "README.md (Python API)", "exec"), namespace)
    for made in ("map/map.png", "subset.json", "placed/placement.csv", "placed-adaptive/adaptive.csv",
                 "predict/correlations.csv"):
        assert (tmp_path / made).exists(), made
    assert namespace["placed"].new_models == ["base2-ft-docs"]
    assert namespace["res"].adaptive_table()["model"].tolist() == ["docs-adaptive"]
