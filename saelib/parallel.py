"""Independent runs (one per seed) in worker processes: the chapters' seeds on every core.

    tables = map_seeds(partial(run_one_seed, params), range(5), workers=2)

Small SAEs train faster on one thread than on two (their products are too small to share),
so a chapter's seeds run in ``workers`` processes of ``threads`` threads each instead of
one after another on every thread. A "seed" may be any picklable task key, e.g.
``(seed, part)`` to split a seed's work into parts of similar cost so that every worker
stays busy. Each worker sets its thread count before it runs anything, so a seed's numbers
do not depend on how many workers there are. ``fn`` must be picklable: a module-level
function (or a ``functools.partial`` of one) of ``saelib``, not one defined in a notebook.
``workers=1`` runs in this process (same numbers, easier to debug).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TypeVar

import torch

from saelib.progress import progress_bar
from saelib.validation import check_int

T = TypeVar("T")

__all__ = ["default_workers", "map_seeds", "seed_parts"]


def default_workers(n_tasks: int, threads: int = 1) -> int:
    """As many workers as the cores allow at ``threads`` each, at most one per task."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(n_tasks, (cores or 1) // threads))


def seed_parts(seeds: Sequence[int], parts: Sequence[str]) -> list[tuple[int, str]]:
    """Every ``(seed, part)`` key, part-major: with ``parts`` listed costliest first, every
    seed's costliest part is submitted first, so that the workers finish together."""
    return [(seed, part) for part in parts for seed in seeds]


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def _call(fn: Callable[[int], T], seed: int, threads: int) -> T:
    _set_threads(threads)
    return fn(seed)


def map_seeds(
    fn: Callable[[int], T],
    seeds: Sequence[int],
    *,
    workers: int = 0,
    threads: int = 1,
    progress: bool = True,
    desc: str = "seeds",
) -> list[T]:
    """``[fn(s) for s in seeds]``, run in ``workers`` processes of ``threads`` threads each.

    ``workers=0`` picks :func:`default_workers`. Results come back in the order of
    ``seeds``. A failing seed raises its error, with the seed named, once the others stop.
    """
    check_int("workers", workers, low=0)
    check_int("threads", threads, low=1)
    seeds = list(seeds)
    workers = workers or default_workers(len(seeds), threads)
    bar = progress_bar(progress, total=len(seeds), desc=desc)
    try:
        if workers == 1:
            before = torch.get_num_threads()
            try:
                results = []
                for seed in seeds:
                    try:
                        results.append(_call(fn, seed, threads))
                    except Exception as err:
                        raise RuntimeError(f"seed {seed} failed: {err!r}") from err
                    bar.update(1)
                return results
            finally:
                torch.set_num_threads(before)
        context = multiprocessing.get_context("spawn")  # fork is unsafe with torch threads
        results: dict[int, T] = {}
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(_call, fn, seed, threads): i for i, seed in enumerate(seeds)}
            for future in as_completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                except Exception as err:
                    for other in futures:
                        other.cancel()
                    raise RuntimeError(f"seed {seeds[i]} failed: {err!r}") from err
                bar.update(1)
        return [results[i] for i in range(len(seeds))]
    finally:
        bar.close()
