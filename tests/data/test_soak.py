"""Soak: 4 processes scoring real tiny models, 1 importing (killed at random moments), 1 mapping and 1
listing the same store for about a minute; afterwards every model is there exactly once and every vector
equals an uninterrupted computation."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from lmmap.data.store import Store
from lmmap.data.texts import TextSet

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
SOAK_SECONDS = float(os.environ.get("LMMAP_SOAK_SECONDS", "60"))
N_IMPORTED = 40

SCORER = textwrap.dedent(
    """
    import json, os, random, sys, time
    import torch
    torch.set_num_threads(1)
    import transformers  # noqa: F401  (its first import takes a minute on a busy machine: before the start)
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401
    from lmmap.scoring import score_models
    from lmmap.data.store import Store
    store_path, models, go, seed, log = sys.argv[1:]
    models = json.loads(models)
    rng = random.Random(int(seed))
    store = Store(store_path)
    counts = {}
    open(log + ".ready", "w").close()
    while not os.path.exists(go):  # the test writes the deadline once every scorer has imported torch
        time.sleep(0.05)
    deadline = float(open(go).read())
    while time.time() < deadline:
        src = rng.choice(models)
        replace = rng.random() < 0.3  # rescoring a stored model must leave it stored, with the same numbers
        t = time.time()
        for name, st in score_models(store, [src], device="cpu", progress=False, replace=replace,
                                     checkpoint_every=0, batch_tokens=256).items():
            key = st.status + (" (completed by another process)" if "another process" in st.message else "")
            counts[key] = counts.get(key, 0) + 1
            if not st.ok:
                print("FAILED", name, st.message, file=sys.stderr, flush=True)
    json.dump(counts, open(log, "w"))
    """
)

READER = textwrap.dedent(
    """
    import json, os, sys, time, warnings
    import numpy as np
    from lmmap.data.store import Store
    from lmmap.exceptions import LmmapError
    warnings.simplefilter("ignore")
    mode, store_path, npz, go, log = sys.argv[1:]
    imported = np.load(npz)
    imp_names = list(imported["models"])
    n_ok, problems = 0, []
    while not os.path.exists(go):
        time.sleep(0.05)
    deadline = float(open(go).read())
    while time.time() < deadline:
        time.sleep(0.02)  # leave the (few) cores to the writers
        store = Store(store_path)
        if mode == "map":
            try:
                names, L = store.matrix()
            except LmmapError as exc:  # an empty store at the start
                if "holds no models" not in str(exc):
                    problems.append(str(exc))
                continue
            if not np.isfinite(L).all():
                problems.append("non-finite values in the matrix")
            got = [n for n in names if n.startswith("imp-")]
            if got and got != imp_names:
                problems.append(f"map saw {len(got)} of {len(imp_names)} imported models")
            if got:
                rows = L[[names.index(n) for n in imp_names]]
                if not np.array_equal(rows, imported["L"]):
                    problems.append("imported vectors differ")
        else:
            names = store.model_names()
            got = [n for n in names if n.startswith("imp-")]
            if len(got) not in (0, len(imp_names)):
                problems.append(f"listing saw {len(got)} of {len(imp_names)} imported models")
            if len(set(names)) != len(names):
                problems.append("a model listed twice")
        n_ok += 1
    json.dump({"iterations": n_ok, "problems": problems[:20], "n_problems": len(problems)}, open(log, "w"))
    """
)


def test_soak(tmp_path, stdlib_texts, tiny_tokenizer, make_tiny_gpt2):
    import torch

    from lmmap.scoring import score_models

    torch.set_num_threads(1)
    chunks = [t[i:i + 300] for t in stdlib_texts[20:30] for i in range(0, 3000, 300)]
    ts = TextSet.from_texts(chunks[:30])
    store = Store.create(tmp_path / "store", ts)
    models = [str(make_tiny_gpt2(tmp_path / "models" / f"tiny-{i}", tiny_tokenizer, seed=i)) for i in range(6)]
    rng = np.random.default_rng(0)
    npz = tmp_path / "imp.npz"
    imp_L = -rng.uniform(10, 3000, size=(N_IMPORTED, len(ts)))
    np.savez(npz, L=imp_L, models=np.array([f"imp-{i:02d}" for i in range(N_IMPORTED)]))
    (tmp_path / "scorer.py").write_text(SCORER)
    (tmp_path / "reader.py").write_text(READER)

    # how long one import takes here, to spread the kills over it
    scratch = Store.create(tmp_path / "scratch", ts)
    t = time.time()
    subprocess.run([sys.executable, "-m", "lmmap", "import", "--vectors", str(npz), "--store", str(scratch.path)],
                   env=ENV, check=True, capture_output=True)
    import_seconds = time.time() - t

    # Scorers import torch first (slow on a busy machine); everyone starts together once they have.
    go = tmp_path / "go"
    procs = []
    for i in range(4):
        procs.append(subprocess.Popen(
            [sys.executable, str(tmp_path / "scorer.py"), str(store.path), json.dumps(models), str(go),
             str(i), str(tmp_path / f"scorer{i}.json")], env=ENV, stderr=subprocess.PIPE))
    for mode in ("map", "list"):
        procs.append(subprocess.Popen(
            [sys.executable, str(tmp_path / "reader.py"), mode, str(store.path), str(npz), str(go),
             str(tmp_path / f"{mode}.json")], env=ENV, stderr=subprocess.PIPE))
    wait_until = time.time() + 300
    while not all((tmp_path / f"scorer{i}.json.ready").exists() for i in range(4)):
        assert time.time() < wait_until and all(p.poll() is None for p in procs), "a scorer did not start"
        time.sleep(0.1)
    deadline = time.time() + SOAK_SECONDS
    go.write_text(str(deadline))

    # the importer, killed at random moments (about one run in four completes)
    pyrng = random.Random(0)
    kills = completed = 0
    t0 = time.time()
    while time.time() < deadline:
        p = subprocess.Popen([sys.executable, "-m", "lmmap", "import", "--vectors", str(npz), "--store",
                              str(store.path), "--replace"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            # about one run in three is left to finish
            p.wait(timeout=pyrng.uniform(0.3, 1.5) * import_seconds if pyrng.random() < 0.7 else 120)
            completed += 1
            err = p.stderr.read().decode()
            assert p.returncode == 0 and "Traceback" not in err, err
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            kills += 1
        p.stderr.close()
    errors = []
    for p in procs:
        _, err = p.communicate(timeout=600)
        if p.returncode != 0 or b"FAILED" in err or b"Traceback" in err:
            errors.append(err.decode()[-3000:])
    duration = time.time() - t0
    for e in errors:
        print("PROCESS ERROR:", e)
    assert not errors, errors
    # one last uninterrupted import, as a user would rerun a killed one
    subprocess.run([sys.executable, "-m", "lmmap", "import", "--vectors", str(npz), "--store", str(store.path),
                    "--replace"], env=ENV, check=True, capture_output=True)
    # finish what the scorers left (a model nobody picked), then compare with a clean computation
    score_models(store, models, device="cpu", progress=False, batch_tokens=256)

    final = Store(store.path)
    names = final.model_names()
    assert sorted(names) == sorted([f"imp-{i:02d}" for i in range(N_IMPORTED)] + [f"tiny-{i}" for i in range(6)])
    assert len(list((store.path / "models").glob("*.parquet"))) == len(names)  # each model exactly once
    clean = Store.create(tmp_path / "clean", ts)
    score_models(clean, models, device="cpu", progress=False, batch_tokens=256)
    got_names, got = final.matrix([f"tiny-{i}" for i in range(6)])
    _, want = clean.matrix([f"tiny-{i}" for i in range(6)])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(final.matrix([f"imp-{i:02d}" for i in range(N_IMPORTED)])[1], imp_L)
    report = final.check()
    assert report.ok, report.problems()

    scored: dict[str, int] = {}
    for i in range(4):
        for k, v in json.loads((tmp_path / f"scorer{i}.json").read_text()).items():
            scored[k] = scored.get(k, 0) + v
    readers = {m: json.loads((tmp_path / f"{m}.json").read_text()) for m in ("map", "list")}
    for m, r in readers.items():
        assert r["n_problems"] == 0, (m, r["problems"])
    figures = {"seconds": round(duration, 1), "scoring runs": scored, "imports killed": kills,
               "imports completed": completed, "maps": readers["map"]["iterations"],
               "listings": readers["list"]["iterations"]}
    print("soak figures:", json.dumps(figures))
    (Path(os.environ.get("LMMAP_SOAK_REPORT", tmp_path / "soak.json"))).write_text(json.dumps(figures, indent=1))
    assert kills >= 3 and sum(scored.values()) >= 4
