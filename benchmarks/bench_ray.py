"""The Ray executor on this CPU: 8 small models × 1,000 texts, local against ``executor="ray"`` with 2 workers.

What Ray costs per model, and what two workers gain. The models are real
GPT-2s (4 layers, width 128, 4 heads, context 256, a 2,048-token byte-level
BPE trained on local text; random weights, each its own seed, saved with
``save_pretrained``); the texts are 1,000 chunks of 512 bytes of local text.
Nothing is downloaded; models and texts are cached in ``$LMMAP_BENCH_CACHE``
(default ``~/.cache/lmmap/bench``).

Runs, each into a fresh store:

- **local**: ``score_models(store, models)``, this process, one torch thread
  (what one Ray worker gets: ``num_cpus=1``);
- **ray**: ``executor="ray"`` on a private Ray instance of 2 CPUs on
  loopback, one task per model (the default), then 250 texts per task.

Per run: the wall time; the scoring time inside it (the records'
``seconds``: forward passes only); and the CPU time of this process and all
its descendants (Ray's daemons and workers: read from ``/proc``), which other
jobs on a shared machine do not inflate as they do wall time. Ray's overhead
per model is (CPU of the Ray run − CPU of the local run) / models: the
workers' start (importing torch), the transfer of texts and results, Ray's
daemons and scheduling. Ray's own start-up (``ray.init``) is timed apart.
The speed-up is local wall / Ray wall: meaningful only on an otherwise idle
machine (the load average is printed). The vectors of every run are checked
against the local run's.

    python benchmarks/bench_ray.py            # 8 models × 1,000 texts (~3 min on 2 cores)
    python benchmarks/bench_ray.py --quick    # 4 models × 200 texts
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# Ray reads this as it is imported: every socket of the private instance on 127.0.0.1.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_scoring import CACHE, cached_text_set, save_gpt2s, train_bpe  # noqa: E402

MODEL = dict(n_layer=4, n_embd=128, n_head=4, n_positions=256)
VOCAB = 2048
WORKERS = 2


def prepare(n_models: int, n_texts: int) -> tuple[list[Path], Path]:
    """The model directories and the text set (built once, then cached; the assets of bench_scoring.py)."""
    root = CACHE / f"ray-gpt2-{MODEL['n_layer']}x{MODEL['n_embd']}-v{VOCAB}"
    dirs = [root / f"model-{i}" for i in range(n_models)]
    if not all((d / "lmmap-bench.json").exists() for d in dirs):
        print(f"building {len(dirs)} benchmark models in {root} (once)…", flush=True)
        save_gpt2s(dirs, train_bpe(VOCAB), MODEL, seeds=range(len(dirs)), initializer_range=0.1)
    return dirs, cached_text_set(n_texts, 512, 1)


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and every live descendant, with what they reaped (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(d.name)] = int(fields[1])
        cpu[int(d.name)] = sum(int(x) for x in fields[11:15]) / tick  # utime stime cutime cstime
    me, total = os.getpid(), 0.0
    for pid in cpu:
        p = pid
        while p in parent and p != me and p > 1:
            p = parent[p]
        if p == me:
            total += cpu[pid]
    return total


def run(store, dirs, label, workers, **kw) -> dict:
    from lmmap.scoring import score_models

    c0, t0 = cpu_seconds(), time.perf_counter()
    st = score_models(store, [str(d) for d in dirs], device="cpu", **kw)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    bad = {n: s.message for n, s in st.items() if not s.ok}
    if bad:
        raise SystemExit(f"{label}: failed: {bad}")
    recs = store.records()
    scoring = sum(r["seconds"] for r in recs.values())
    loading = sum(r["load_seconds"] for r in recs.values())
    tokens = sum(int(store.vectors(n)["n_tokens"].sum()) for n in recs)
    out = dict(label=label, wall=wall, cpu=cpu, scoring=scoring, loading=loading, tokens=tokens, workers=workers)
    print(f"{label:32s} wall {wall:6.1f} s   CPU {cpu:6.1f} s   scoring {scoring:6.1f} s   model loads "
          f"{loading:5.1f} s   {tokens / wall:8,.0f} tokens/s   (load average {os.getloadavg()[0]:.1f})", flush=True)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 models × 200 texts")
    args = ap.parse_args(argv)
    n_models, n_texts = (4, 200) if args.quick else (8, 1000)
    dirs, texts_path = prepare(n_models, n_texts)

    from lmmap.data.store import Store
    from lmmap.data.texts import TextSet
    from lmmap.parallel import set_threads

    ts = TextSet.load(texts_path)
    print(f"{n_models} GPT-2 models ({MODEL['n_layer']} layers, width {MODEL['n_embd']}, context "
          f"{MODEL['n_positions']}, vocabulary {VOCAB}) × {len(ts)} texts of 512 bytes; {os.cpu_count()} CPUs",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        set_threads(1)  # as one Ray worker (num_cpus=1)
        local_store = Store.create(tmp / "local", ts)
        local = run(local_store, dirs, "local (1 thread)", 1)

        import ray

        results, startups = [local], []
        for label, shard in ((f"ray, {WORKERS} workers, 1 task/model", None),
                             (f"ray, {WORKERS} workers, {n_texts // 4} texts/task", n_texts // 4)):
            # a fresh instance per run: each pays for its cold workers (importing torch), as a new run does
            t0 = time.perf_counter()
            ray.init(address="local", num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
            startups.append(time.perf_counter() - t0)
            assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
            print(f"ray.init (a local instance, {WORKERS} CPUs, loopback): {startups[-1]:.1f} s", flush=True)
            store = Store.create(tmp / f"ray-{shard}", ts)
            results.append(run(store, dirs, label, WORKERS, executor="ray", shard_texts=shard))
            for n in local_store.records():
                a, b = local_store.vectors(n)["loglik"].to_numpy(), store.vectors(n)["loglik"].to_numpy()
                if not np.array_equal(a, b):
                    print(f"  note: {n}: max |Δ| {np.abs(a - b).max():.2e} nats against the local run (other "
                          "batches when sharded)", flush=True)
            ray.shutdown()
        startup = float(np.mean(startups))
    print()
    for r in results[1:]:
        print(f"{r['label']}: speed-up {local['wall'] / r['wall']:.2f}× over local (wall); Ray's overhead per model "
              f"{(r['cpu'] - local['cpu']) / n_models:+.2f} CPU-s over the local run's "
              f"{local['cpu'] / n_models:.2f} CPU-s per model; plus {startup:.1f} s start-up once", flush=True)


if __name__ == "__main__":
    main()
