"""``--threads``: torch's thread count for scoring and training (lmmap/threads.py)."""

from __future__ import annotations

import pytest

from lmmap import parallel as T
from lmmap.exceptions import InputError


def test_auto_keeps_a_core_free_and_honours_omp_num_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(T, "usable_cores", lambda: 2)
    monkeypatch.setattr(T.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert T.auto_threads() == 1  # 2 cores: a second thread risks a 10× slowdown once the machine gets busy
    monkeypatch.setattr(T, "usable_cores", lambda: 16)
    assert T.auto_threads() == T.MAX_AUTO_THREADS
    monkeypatch.setattr(T.os, "getloadavg", lambda: (12.3, 0.0, 0.0))
    assert T.auto_threads() == 2  # 16 cores, ~13 busy: the idle ones less one
    monkeypatch.setattr(T.os, "getloadavg", lambda: (40.0, 0.0, 0.0))
    assert T.auto_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert T.auto_threads() == 3


def test_thread_counts_are_validated():
    assert T.resolve_threads(2) == 2 and T.resolve_threads("4") == 4 and T.resolve_threads("auto") >= 1
    for bad in (0, -1, "two", 1.5, True):
        with pytest.raises(InputError, match="threads must be a positive integer or auto"):
            T.resolve_threads(bad)


def test_set_threads_sets_torch_and_the_context_restores_it():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with T.threads(other) as n:
        assert n == other and torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    previous = T.set_threads(other)
    try:
        assert previous == before and torch.get_num_threads() == other
    finally:
        T.set_threads(previous)


def _square(x):
    return x * x


@pytest.mark.parametrize("backend,workers", [("threads", 1), ("threads", 2), ("processes", 2)])
def test_parallel_map_keeps_order_and_reports_each_item(backend, workers):
    from lmmap.parallel import parallel_map

    steps = []
    out = parallel_map(_square, range(7), workers=workers, backend=backend, progress=steps.append, task="sq")
    assert out == [x * x for x in range(7)]
    done = [s.done for s in steps if s.task == "sq" and not s.finished]
    assert done == list(range(8)) and steps[-1].finished and steps[-1].total == 7


def test_parallel_map_refuses_bad_workers_and_backends():
    from lmmap.parallel import parallel_map

    for bad in (0, -2, 1.5, True):
        with pytest.raises(InputError, match="workers must be"):
            parallel_map(_square, [1], workers=bad)
    with pytest.raises(InputError, match="backend must be"):
        parallel_map(_square, [1], backend="mpi")
