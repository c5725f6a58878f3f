"""Maps of the whole hub (issue 24): every stage as a whole `lmmap` process, with its wall time and peak memory.

A synthetic ecosystem with lineage structure is written as an NPZ a batch of rows at a time (never K×N in
memory): F families, each a base model, fine-tunes of it that move along one of D domain directions shared
by every family (so that fine-tunes of different bases on one domain look alike), and checkpoints on the
way from a random start to the base; a per-text length effect common to all models and per-model noise.
Then, each as its own process (peak RSS from ``wait4``):

1. ``lmmap import`` of the NPZ into a new store (streamed; the store keeps its consolidated float32 matrix);
2. ``lmmap map`` (neighbours, t-SNE, PNG, HTML; no K×K matrix);
3. ``lmmap neighbors MODEL`` (answered from the lists `map` kept), three models;
4. ``lmmap select --method ls`` (a subset of texts), then ``lmmap import`` of 100 new models' vectors on
   the subset's texts and ``lmmap add`` of them against the map's coordinates (no rebuild);
5. exactness: for 200 sampled models, recall@10 of neighbors.csv against exact float64 k-NN computed here
   from the NPZ (float64, in blocks), and the largest difference of the KL values listed.

Goals (2 cores, 24 GB): K = 10,000 — `lmmap map` < 60 s, no output file over 100 MB; K = 100,000 —
import < 10 min, map < 15 min, peak < 16 GB, neighbors < 2 s, adding 100 models < 2 min; recall@10 ≥ 0.99.

    python benchmarks/bench_hub.py --K 10000 [--N 10000] [--workdir DIR] [--keep]
    python benchmarks/bench_hub.py --K 100000 --workdir /big/disk   # ~25 GB of disk
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import numpy.lib.format as npformat
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def ecosystem_rows(K: int, N: int, seed: int, start: int, stop: int, *, F: int, D: int):
    """Rows ``start:stop`` of the synthetic ``L`` (float64), and each row's family and kind; deterministic
    per row block (the same rows whatever the batch size)."""
    base_rng = np.random.default_rng(seed)
    length = base_rng.gamma(4.0, 60.0, size=N)  # texts of very different lengths: the common effect
    text_dirs = base_rng.standard_normal((8, N)) / np.sqrt(N) * 40.0  # where families differ
    domains = base_rng.standard_normal((D, N)) / np.sqrt(N) * 60.0  # what fine-tuning on a domain moves
    fam_pos = base_rng.standard_normal((F, 8))
    rows, fams, kinds = [], [], []
    for i in range(start, stop):
        r = np.random.default_rng([seed, i])
        f = i % F
        kind = ("base", "finetune", "finetune", "finetune", "checkpoint")[(i // F) % 5]
        x = -length + fam_pos[f] @ text_dirs
        if kind == "finetune":
            x = x + r.uniform(0.5, 1.5) * domains[r.integers(D)]
        elif kind == "checkpoint":
            x = x * r.uniform(1.05, 1.3)
        x = x + r.standard_normal(N) * r.gamma(4.0, 0.25)  # the model's own noise, of its own size
        rows.append(np.minimum(x, -1e-3))
        fams.append(f)
        kinds.append(kind)
    return np.vstack(rows), fams, kinds


def write_npz(path: Path, K: int, N: int, seed: int, *, F: int, D: int, names, batch: int = 500) -> None:
    """An NPZ of L (K×N float64) and the names, written a batch of rows at a time."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("L.npy", "w", force_zip64=True) as f:
            npformat.write_array_header_2_0(f, {"descr": "<f8", "fortran_order": False, "shape": (K, N)})
            for s in range(0, K, batch):
                f.write(ecosystem_rows(K, N, seed, s, min(K, s + batch), F=F, D=D)[0].astype("<f8").tobytes())
        with zf.open("models.npy", "w") as f:
            np.lib.format.write_array(f, np.array(names))


def run(args, env, label):
    """Run ``python -m lmmap ARGS``; wall seconds, peak RSS (GB), and the output."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "lmmap", *map(str, args)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    _, status, usage = os.wait4(p.pid, 0)
    out = p.stdout.read()
    seconds = time.perf_counter() - t0
    gb = usage.ru_maxrss / 2**20
    code = os.waitstatus_to_exitcode(status)
    print(f"  {label:<44} {seconds:8.1f} s   peak {gb:5.2f} GB   load {os.getloadavg()[0]:4.1f}"
          + ("" if code == 0 else f"   EXIT {code}"), flush=True)
    if code != 0:
        print(out[-3000:])
        raise SystemExit(f"{label} failed")
    return seconds, gb, out


def exact_check(npz: Path, out: Path, K: int, N: int, sample: int, seed: int, threshold: float):
    """recall@k and the largest |ΔKL| of neighbors.csv against float64 k-NN of ``sample`` rows, from the NPZ."""
    from lmmap.maths import geometry

    table = pd.read_csv(out / "neighbors.csv", keep_default_na=False)
    k = int(table["rank"].max())
    names = np.load(npz)["models"]
    pos = {n: i for i, n in enumerate(names)}
    rows = np.sort(np.random.default_rng(seed).choice(K, size=min(sample, K), replace=False))

    def blocks():
        with zipfile.ZipFile(npz) as zf, zf.open("L.npy") as f:
            version = npformat.read_magic(f)
            (npformat.read_array_header_2_0 if version == (2, 0) else npformat.read_array_header_1_0)(f)
            for s in range(0, K, 2000):
                n = min(K, s + 2000) - s
                yield s, np.frombuffer(f.read(n * N * 8), dtype="<f8").reshape(n, N)

    # Q in float64 as geometry.double_center does, without K×N in memory: two passes over the file.
    row_mean = np.empty(K)
    col = np.zeros(N)
    for s, B in blocks():
        C = np.maximum(B, threshold)
        row_mean[s:s + len(B)] = C.mean(axis=1)
        col += (C - row_mean[s:s + len(B), None]).sum(axis=0)
    col /= K
    Xs = None
    G = np.empty((len(rows), K))
    for s, B in blocks():
        Qb = np.maximum(B, threshold) - row_mean[s:s + len(B), None] - col
        if Xs is None:
            Xs = np.empty((len(rows), N))
        inside = (rows >= s) & (rows < s + len(B))
        Xs[inside] = Qb[rows[inside] - s]
    for s, B in blocks():
        Qb = np.maximum(B, threshold) - row_mean[s:s + len(B), None] - col
        G[:, s:s + len(B)] = geometry.cross_squared_distances(Xs, Qb)
    G[np.arange(len(rows)), rows] = np.inf
    exact = np.argsort(G, axis=1, kind="stable")[:, :k]
    got = table.set_index(["model", "rank"])
    hits, worst = [], 0.0
    for j, i in enumerate(rows):
        listed = got.loc[names[i]]
        idx = np.array([pos[n] for n in listed["neighbor"]])
        hits.append(len(set(idx) & set(exact[j])) / k)
        worst = max(worst, float(np.max(np.abs(listed["kl"].to_numpy() - G[j, idx] / (2 * N)))))
    return float(np.mean(hits)), worst, float(np.median(G[:, :][np.isfinite(G)]) / (2 * N))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--K", type=int, default=10_000)
    ap.add_argument("--N", type=int, default=10_000)
    ap.add_argument("--families", type=int, default=0, help="default K // 20")
    ap.add_argument("--domains", type=int, default=6)
    ap.add_argument("--new", type=int, default=100, help="models added to the map at the end")
    ap.add_argument("--subset-n", type=int, default=0, help="LS draws for the subset (default N // 4)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--reuse", type=Path, default=None,
                    help="the work folder of an earlier --keep run: time map, neighbors, select and add again on its "
                         "store (the import is not repeated)")
    ap.add_argument("--seed", type=int, default=24)
    args = ap.parse_args()
    K, N = args.K, args.N
    F = args.families or max(2, K // 20)
    work = args.reuse or Path(tempfile.mkdtemp(prefix="bench-hub-", dir=args.workdir))
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    print(f"K = {K:,} models × N = {N:,} texts ({F:,} families, {args.domains} domains); {os.cpu_count()} cores; "
          f"work in {work}", flush=True)
    try:
        from lmmap.data.texts import TextSet

        names = [f"fam{i % F}/{('base', 'ft', 'ft', 'ft', 'ckpt')[(i // F) % 5]}-{i}" for i in range(K)]
        store = work / "store"
        res = {}
        if not args.reuse:
            t0 = time.perf_counter()
            TextSet.from_texts([f"synthetic text {i}: " + "lorem ipsum " * (1 + i % 7) for i in range(N)]).save(
                work / "texts.jsonl")
            write_npz(work / "L.npz", K, N, args.seed, F=F, D=args.domains, names=names)
            print(f"  {'synthetic L.npz (written in batches)':<44} {time.perf_counter() - t0:8.1f} s   "
                  f"{(work / 'L.npz').stat().st_size / 2**30:.2f} GB", flush=True)
            meta = pd.DataFrame({"model": names, "family": [f"fam{i % F}" for i in range(K)],
                                 "model_type": [("base", "finetune", "finetune", "finetune", "checkpoint")[(i // F) % 5]
                                                for i in range(K)]})
            meta.to_csv(work / "models.csv", index=False)
            res["import"] = run(["import", "--vectors", work / "L.npz", "--store", store, "--texts",
                                 work / "texts.jsonl", "--metadata", work / "models.csv"], env, "lmmap import")
        shutil.rmtree(work / "map", ignore_errors=True)
        res["map"] = run(["map", "-o", work / "map", "--store", store, "--color-by", "family"], env, "lmmap map")
        sizes = {p.name: p.stat().st_size for p in (work / "map").iterdir()}
        print("    files: " + ", ".join(f"{n} {s / 2**20:.1f} MB" for n, s in sorted(sizes.items())), flush=True)
        for name in (names[0], names[K // 2], names[-1]):
            res[f"neighbors {name}"] = run(["neighbors", name, "--store", store], env, f"lmmap neighbors {name}")
        d = args.subset_n or N // 4
        res["select"] = run(["select", "--store", store, "--method", "ls", "--n", d, "-o", work / "sub.json"], env,
                            f"lmmap select --method ls --n {d:,}")
        from lmmap.data.subset import Subset

        text_pos = Subset.load(work / "sub.json").text_pos
        m = args.new
        Lnew, _, _ = ecosystem_rows(K + m, N, args.seed, K, K + m, F=F, D=args.domains)
        new = [f"new/{i}" for i in range(m)]
        np.savez(work / "new.npz", L=Lnew[:, text_pos], models=np.array(new), text_pos=text_pos)
        res["import new"] = run(["import", "--vectors", work / "new.npz", "--store", store, "--replace"], env,
                                f"lmmap import of {m} new models (subset texts)")
        shutil.rmtree(work / "added", ignore_errors=True)
        res["add"] = run(["add", *new, "--subset", work / "sub.json", "--store", store, "-o", work / "added",
                          "--base-coords", work / "map" / "coords.csv"], env, f"lmmap add of {m} models")
        threshold = json.loads((work / "map" / "map.json").read_text())["clip_threshold"]
        t0 = time.perf_counter()
        recall, worst, median_kl = exact_check(work / "L.npz", work / "map", K, N, 200, args.seed, threshold)
        print(f"  exactness on 200 models: recall@10 {recall:.4f}, largest |ΔKL| of the neighbours listed "
              f"{worst:.2e} nats/text (median KL {median_kl:.3g}); {time.perf_counter() - t0:.0f} s", flush=True)
        print(f"  largest output file: {max(sizes.values()) / 2**20:.1f} MB")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
