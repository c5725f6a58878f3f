"""Parallel work: how many CPU threads torch uses (``--threads``), and the one parallel runner.

torch starts with one thread per core and its OpenMP threads spin while they
wait for each other. On a machine whose cores are busy with other work that
is the worst case. Measured on the 2-core development machine while other
jobs ran (load average 2.3–8.3), scoring a demo model on 300 texts, in 8
back-to-back pairs: torch's default 2 threads ran at 2.7–41 texts/s, one
thread at 26–290 texts/s — one thread was 3–24× faster in 7 pairs, and 2
threads 1.5× faster once (430 against 290 texts/s, when a core happened to be
free). The issue measured 8–20 against 117–120. So on 2 cores one thread is
the safe choice; on a larger machine the idle cores are worth using.

``auto`` (the default) is therefore: the idle cores — usable cores minus the
1-minute load average — keeping one core free for everything else, at least
1 and at most :data:`MAX_AUTO_THREADS`. ``OMP_NUM_THREADS`` set in the
environment wins over ``auto`` (the user has chosen). Give a number to
override both.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os

from lmmap.exceptions import InputError

MAX_AUTO_THREADS = 8
# Threads (and workers) beyond a few per core only slow the work down, and a huge count is worse than slow:
# torch.set_num_threads(10**5) exhausts memory starting OpenMP threads, 10**20 overflows torch's C int,
# and as many joblib processes would each load numpy. So a count is refused above this many per core.
THREADS_PER_CORE_LIMIT = 4
MIN_THREAD_LIMIT = 16


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def auto_threads() -> int:
    """The ``auto`` thread count: idle cores minus one, in 1..MAX_AUTO_THREADS (see the module text)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return min(int(env), max_threads())  # an environment value is not checked like a flag: it is capped
    cores = usable_cores()
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):
        busy = 0.0
    idle = cores - int(math.ceil(busy - 0.25))  # a load of 1.2 means a second core is partly taken
    return max(1, min(MAX_AUTO_THREADS, idle - 1))


def max_threads() -> int:
    """The most threads or workers lmmap accepts: :data:`THREADS_PER_CORE_LIMIT` per core of the machine."""
    return max(MIN_THREAD_LIMIT, THREADS_PER_CORE_LIMIT * (os.cpu_count() or 1))


def _check_count(n: int, name: str) -> int:
    top = max_threads()
    if n > top:
        cores = os.cpu_count() or 1
        raise InputError(f"{name} = {n:,} is more than this machine can use ({cores} core{'s' if cores != 1 else ''}); "
                         f"give at most {top}", params=(name,))
    return int(n)


def resolve_threads(n: int | str | None) -> int:
    """``n`` as a thread count: a positive integer, or ``None``/``"auto"`` for :func:`auto_threads`."""
    if n is None or (isinstance(n, str) and n.strip().lower() == "auto"):
        return auto_threads()
    if isinstance(n, str):
        try:
            n = int(n.strip())
        except ValueError:
            raise InputError(f"threads must be a positive integer or auto, got {n!r}", params=("threads",)) from None
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise InputError(f"threads must be a positive integer or auto, got {n!r}", params=("threads",))
    return _check_count(n, "threads")


def set_threads(n: int | str | None = "auto") -> int:
    """Set torch's intra-op threads to ``n`` (a count, or ``"auto"``/None); returns the previous count.

    Restore with :func:`restore_threads` (or ``set_threads(previous)``), or use
    :func:`threads` as a context manager. Without torch installed it only validates ``n``.
    """
    count = resolve_threads(n)
    try:
        import torch
    except ImportError:
        return count
    previous = torch.get_num_threads()
    if count != previous:
        torch.set_num_threads(count)
    return previous


def restore_threads(previous: int) -> None:
    """Give torch back the thread count :func:`set_threads` returned.

    Not checked against :func:`max_threads`: the count came from torch itself (``OMP_NUM_THREADS`` may have
    set it above the limit), and a restore in a ``finally`` must not fail.
    """
    try:
        import torch
    except ImportError:
        return
    if int(previous) != torch.get_num_threads():
        torch.set_num_threads(int(previous))


@contextlib.contextmanager
def threads(n: int | str | None = "auto"):
    """``with threads(1): ...`` — torch threads set for the block, the previous count restored after it."""
    count = resolve_threads(n)
    previous = set_threads(count)
    try:
        yield count
    finally:
        restore_threads(previous)




def check_workers(workers) -> int:
    """``workers`` as a positive count (at most :func:`max_threads`); ``-1`` (scikit-learn's convention) means
    every usable core."""
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers == 0 or workers < -1:
        raise InputError(f"workers must be a positive integer or -1 (all cores), got {workers!r}", params=("workers",))
    return usable_cores() if workers == -1 else _check_count(workers, "workers")


def parallel_map(fn, items, *, workers: int = 1, backend: str = "threads", progress=None, task: str = "",
                 unit: str = "items", blas_threads: int | None = None) -> list:
    """``[fn(x) for x in items]`` on ``workers`` workers, one BLAS thread each — lmmap's one parallel runner.

    ``backend="threads"`` suits numpy/LAPACK work, which releases the GIL and
    shares the K×N inputs without copies; ``"processes"`` (joblib's loky) suits
    work that holds the GIL (openTSNE's gradient loop), and passes large
    arrays to the workers as memory maps. Results keep the order of ``items``;
    ``progress`` (see :mod:`lmmap.progress`) gets one step per finished item.

    ``blas_threads``: BLAS threads per worker. Parallel workers always get one
    (several workers each running a multi-threaded BLAS oversubscribe the
    cores); a serial run keeps BLAS's own count unless ``blas_threads`` is
    given — many mid-sized ``eigh`` calls run faster one-threaded on shared
    cores (6× measured for the ridge folds).
    """
    from joblib import Parallel, delayed
    from threadpoolctl import threadpool_limits

    from lmmap.progress import Tracker

    if backend not in ("threads", "processes"):
        raise InputError(f"backend must be 'threads' or 'processes', got {backend!r}", params=("backend",))
    workers = check_workers(workers)
    items = list(items)
    serial = workers == 1 or len(items) <= 1
    limit = blas_threads if serial else (blas_threads or 1)
    with Tracker(progress, task, len(items), unit) as tracker, threadpool_limits(limits=limit, user_api="blas"):
        if serial:
            results = map(fn, items)
        else:
            kind = {"prefer": "threads"} if backend == "threads" else {"backend": "loky", "inner_max_num_threads": limit}
            results = Parallel(n_jobs=min(workers, len(items)), return_as="generator", **kind)(delayed(fn)(x) for x in items)
        out = []
        for result in results:
            out.append(result)
            tracker.advance()
        return out

__all__ = ["auto_threads", "check_workers", "max_threads", "parallel_map", "resolve_threads", "restore_threads",
           "set_threads", "threads", "usable_cores", "MAX_AUTO_THREADS"]
