"""Running a plan's independent work units: serially, on a local thread pool, one slice of the
plan per process (shell job arrays: ``--task-index I --task-count N``), or one Dask task per
unit on a distributed cluster (``--dask-scheduler``, ``--dask-local N``).

Threads suit datatools' units: TIFF decoding, HDF5 reads and the compression codecs release the
GIL, so ``workers`` threads keep that many cores busy while memory stays at ``workers`` units.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from datatools.errors import OptionError

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """The number of cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class TaskSlice:
    """Task ``index`` of ``count`` independent processes sharing one plan (0-based)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise OptionError(f"--task-count {self.count}: must be >= 1")
        if not 0 <= self.index < self.count:
            raise OptionError(
                f"--task-index {self.index}: must be in 0..{self.count - 1} for --task-count "
                f"{self.count}"
            )

    def select(self, n_units: int) -> range:
        """The contiguous, disjoint range of unit indices this task owns (all tasks cover all)."""
        return range(n_units * self.index // self.count, n_units * (self.index + 1) // self.count)


def check_overwrite(task: TaskSlice | None, overwrite: bool) -> None:
    """Refuse ``overwrite`` for one of several tasks: it would remove the others' work.

    Raises:
        OptionError: ``overwrite`` with a ``task`` of a count above 1.
    """
    if task is not None and task.count > 1 and overwrite:
        raise OptionError(
            "--overwrite: cannot be combined with --task-count > 1 (a task would remove the "
            "others' work); remove the target first"
        )


def run_units(
    func: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int,
    in_flight: int | None = None,
) -> Iterator[R]:
    """Apply ``func`` to every item with ``workers`` threads; yield results as units finish.

    At most ``in_flight`` items (default ``workers``) are submitted and not yet yielded, so
    memory stays bounded by the units in flight.
    The first exception stops submitting, waits for running units, and is re-raised; so is
    ``KeyboardInterrupt`` in the caller (running units finish, queued ones are dropped).
    """
    if workers <= 1:
        for item in items:
            yield func(item)
        return
    limit = max(workers, in_flight or workers)
    pending: set[Future[R]] = set()
    source = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="datatools") as pool:
        try:
            for item in source:
                pending.add(pool.submit(func, item))
                if len(pending) >= limit:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    yield from _results(done)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from _results(done)
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def _results(done: Sequence[Future[R]] | set[Future[R]]) -> Iterator[R]:
    for future in done:
        yield future.result()


class Executor(Protocol):
    """Runs a plan's independent units; library functions take one, the CLI picks which.

    ``distributed`` executors run units in other processes, so the function they are given must
    be picklable and open its own files.
    """

    @property
    def distributed(self) -> bool:
        """Whether units run in other processes."""
        ...

    def map(self, func: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        """Apply ``func`` to every item; yield results as units finish (any order)."""
        ...


@dataclass(frozen=True)
class ThreadExecutor:
    """Units on ``workers`` threads of this process (``workers=1``: serially)."""

    workers: int = 1
    distributed: bool = False

    def map(self, func: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        return run_units(func, items, workers=self.workers)


class DaskExecutor:
    """One Dask task per unit on a ``distributed`` cluster, with a bounded number in flight.

    Never builds an array graph: units are submitted as plain tasks, at most ``in_flight``
    (default: twice the cluster's worker threads) at a time, so memory on the driver and the
    workers stays at a few units. Results come back to the caller, which records them.

    Args:
        client: a ``distributed.Client`` connected to the cluster.
        in_flight: futures submitted and not yet collected.
    """

    distributed = True

    def __init__(self, client: Any, in_flight: int | None = None) -> None:
        self.client = client
        threads = sum(client.nthreads().values()) or 1
        self.in_flight = in_flight or 2 * threads

    def map(self, func: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        from distributed import as_completed

        source = iter(items)
        pending = as_completed()
        for item in itertools.islice(source, self.in_flight):
            pending.add(self.client.submit(func, item, pure=False))
        try:
            for future in pending:
                result: R = future.result()
                for item in itertools.islice(source, 1):
                    pending.add(self.client.submit(func, item, pure=False))
                yield result
        except BaseException:
            for future in list(pending.futures):
                future.cancel()
            raise


@contextmanager
def dask_executor(
    scheduler: str | None = None, local_workers: int | None = None
) -> Iterator[DaskExecutor]:
    """Connect to a running Dask scheduler, or start a local cluster of worker processes.

    Args:
        scheduler: address such as ``tcp://host:8786``.
        local_workers: start a ``LocalCluster`` with this many single-threaded processes on
            the loopback interface instead.

    Raises:
        OptionError: neither or both given, or the ``cluster`` extra is not installed.
    """
    if (scheduler is None) == (local_workers is None):
        raise OptionError("--dask-scheduler/--dask-local: give exactly one")
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise OptionError(
            "--dask-scheduler/--dask-local: needs the cluster extra "
            "(pip install 'datatools[cluster]')"
        ) from exc
    if local_workers is not None:
        if local_workers < 1:
            raise OptionError(f"--dask-local {local_workers}: must be >= 1")
        with (
            LocalCluster(
                n_workers=local_workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=":0",
            ) as cluster,
            Client(cluster) as client,
        ):
            yield DaskExecutor(client)
        return
    try:
        client = Client(scheduler, timeout=30)
    except OSError as exc:
        raise OptionError(f"--dask-scheduler {scheduler}: cannot connect ({exc})") from exc
    with client:
        yield DaskExecutor(client)
