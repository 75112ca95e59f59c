"""Run many independent simulations in parallel: a local process pool, or a Dask cluster.

``map_jobs(fn, items, jobs=N)`` returns ``[fn(x) for x in items]`` in input order, computed by N
worker processes on this machine (``jobs=1``: in this process, no pool). Runs are deterministic
functions of their inputs, so the result is the same whichever way it was computed. With
``scheduler="tcp://host:8786"`` the items go to that Dask distributed scheduler instead (the
optional extra ``tiosim[dask]``); dask is imported only then. ``fn`` and the items must be
picklable (a module-level function; plain data).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class JobsError(Exception):
    """The runner cannot start as asked (a missing extra, an unreachable scheduler)."""


def map_jobs(fn: Callable[[T], R], items: Sequence[T], *, jobs: int = 1, scheduler: str | None = None,
             progress: Callable[[int, int], None] | None = None) -> list[R]:
    """``[fn(x) for x in items]``, in input order; ``progress(done, total)`` after each item."""
    items = list(items)
    total = len(items)
    if scheduler is not None:
        return _dask_map(fn, items, scheduler, progress)
    if jobs < 1:
        raise JobsError(f"--jobs {jobs}: expected a positive number of worker processes")
    if jobs == 1 or total <= 1:
        out = []
        for i, item in enumerate(items):
            out.append(fn(item))
            if progress is not None:
                progress(i + 1, total)
        return out
    # fork where there is one (workers start at once and need no importable __main__); spawn elsewhere
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    results: list[Any] = [None] * total
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(jobs, total), mp_context=context) as pool:
        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            results[futures[future]] = future.result()
            if progress is not None:
                progress(done, total)
    return results


def _dask_map(fn: Callable[[T], R], items: list[T], scheduler: str,
              progress: Callable[[int, int], None] | None) -> list[R]:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise JobsError("--scheduler needs Dask distributed: pip install 'tiosim[dask]'") from None
    try:
        client = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise JobsError(f"--scheduler {scheduler}: cannot connect to the Dask scheduler ({exc})") from None
    try:
        # pure=False: equal items are still separate runs (their index differs anyway)
        futures = client.map(fn, items, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(items)
        for done, future in enumerate(as_completed(futures), 1):
            results[index[future.key]] = future.result()
            if progress is not None:
                progress(done, len(items))
        return results
    finally:
        client.close()
