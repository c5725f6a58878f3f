"""Foundation benchmark: K = 1,018 models × N = 10,000 texts (random data).

Times (1) importing an NPZ matrix into a fresh store, (2) loading the store's
matrix, (3) clip + double-centering + KL matrix + neighbours, (4) t-SNE of the
1,018 rows, and reports peak memory. Targets (issue 2): (2)+(3) < 3 s with the
NPZ read of (1); t-SNE < 30 s.

    python benchmarks/bench_map.py [--K 1018] [--N 10000] [--no-tsne]
"""

import argparse
import resource
import tempfile
import sys
import time
from pathlib import Path

import numpy as np

from lmmap.maths import geometry as core
from lmmap.data.formats import read_vectors, write_vectors
from lmmap.data.transfer import import_vectors
from lmmap.map import ModelMap
from lmmap.data.store import Store
from lmmap.data.texts import TextSet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic data the tests use
from synthetic import lowrank_L  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--K", type=int, default=1018)
    ap.add_argument("--N", type=int, default=10000)
    ap.add_argument("--no-tsne", action="store_true")
    args = ap.parse_args()
    K, N = args.K, args.N
    L = lowrank_L(K, N)
    names = [f"org{i % 50}/model-{i}" for i in range(K)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ts = TextSet.from_texts([f"text {i}" for i in range(N)])
        ts.save(tmp / "texts.jsonl")
        write_vectors(tmp / "L.npz", names, L, text_set_id=ts.identity)

        t0 = time.perf_counter()
        vec = read_vectors(tmp / "L.npz")
        t_read = time.perf_counter() - t0

        t0 = time.perf_counter()
        import_vectors(tmp / "store", tmp / "L.npz", texts=tmp / "texts.jsonl")
        t_import = time.perf_counter() - t0

        store = Store(tmp / "store")
        t0 = time.perf_counter()
        got_names, got = store.matrix()
        t_load = time.perf_counter() - t0
        assert got_names == names and np.array_equal(got, vec.L)

        t0 = time.perf_counter()
        thr = core.clip_threshold(got)
        Q = core.double_center(core.clip(got, thr))
        KL = core.kl_from_squared_distances(core.squared_distances(Q), N)
        idx, _ = core.nearest_neighbors(KL, 10)
        t_math = time.perf_counter() - t0

        print(f"K = {K} models, N = {N} texts")
        print(f"  read NPZ                         {t_read:7.2f} s")
        print(f"  import into store ({K} Parquet files)  {t_import:7.2f} s")
        print(f"  load store matrix                {t_load:7.2f} s")
        print(f"  clip + double-centre + KL + kNN  {t_math:7.2f} s")
        print(f"  read + math (target < 3 s)       {t_read + t_math:7.2f} s")
        print(f"  load + math (target < 3 s)       {t_load + t_math:7.2f} s")
        if not args.no_tsne:
            mm = ModelMap(names, got)
            t0 = time.perf_counter()
            mm.embed("tsne")
            print(f"  t-SNE of {K} points (target < 30 s) {time.perf_counter() - t0:7.2f} s")
        print(f"  peak memory                      {peak_mb():7.0f} MB  (the K×N float64 matrix alone: {K * N * 8 / 2**20:.0f} MB)")


if __name__ == "__main__":
    main()
