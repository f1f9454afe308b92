"""Running a plan's independent work units: serially, on a local thread pool, or one slice of
the plan per process (shell job arrays: ``--task-index I --task-count N``).

Threads suit datatools' units: TIFF decoding, HDF5 reads and the compression codecs release the
GIL, so ``workers`` threads keep that many cores busy while memory stays at ``workers`` units.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

from datatools.errors import OptionError

T = TypeVar("T")
R = TypeVar("R")


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
