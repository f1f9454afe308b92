"""Who reads what: DDP ranks, DataLoader workers, per-epoch seeds.

torch is never imported here: ranks come from ``torch.distributed`` and workers from
``torch.utils.data.get_worker_info`` only when the caller already imported them (a process
cannot have an initialised process group, or be a DataLoader worker, without having done so).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import sys
import weakref
from multiprocessing.sharedctypes import RawValue
from typing import Any

import numpy as np

from datatools.errors import OptionError


def resolve_ranks(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)``: as given, else from an initialised ``torch.distributed``
    process group, else ``(0, 1)``.

    Raises:
        OptionError: only one of the two given, ``world_size < 1``, or ``rank`` outside
            ``[0, world_size)``.
    """
    if rank is None and world_size is None:
        dist: Any = sys.modules.get("torch.distributed")
        if dist is not None and dist.is_available() and dist.is_initialized():
            return int(dist.get_rank()), int(dist.get_world_size())
        return 0, 1
    if rank is None or world_size is None:
        raise OptionError(
            f"rank {rank}, world_size {world_size}: give both, or neither to take them from "
            "torch.distributed"
        )
    if world_size < 1:
        raise OptionError(f"world_size {world_size}: must be >= 1")
    if not 0 <= rank < world_size:
        raise OptionError(f"rank {rank}: must be in [0, {world_size}) for world_size {world_size}")
    return int(rank), int(world_size)


def worker_split() -> tuple[int, int]:
    """``(worker id, number of workers)`` of the current DataLoader worker; ``(0, 1)`` outside
    one."""
    data: Any = sys.modules.get("torch.utils.data")
    info = None if data is None else data.get_worker_info()
    return (0, 1) if info is None else (int(info.id), int(info.num_workers))


def share(n: int, index: int, count: int) -> range:
    """Part ``index`` of ``count`` near-equal contiguous parts of ``range(n)`` (sizes differ by
    at most one, the larger ones first)."""
    base, extra = divmod(n, count)
    start = index * base + min(index, extra)
    return range(start, start + base + (index < extra))


def rank_share(n: int, rank: int, world_size: int, drop_last: bool) -> range:
    """Rank ``rank``'s contiguous part of ``range(n)``: :func:`share`'s, or with
    ``drop_last`` exactly ``n // world_size`` items (the ``n % world_size`` last ones left
    out)."""
    if drop_last:
        per = n // world_size
        return range(rank * per, (rank + 1) * per)
    return share(n, rank, world_size)


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed in ``[0, 2**63)`` derived from ``(seed, epoch)`` (the same in every process)."""
    state = np.random.SeedSequence((seed, epoch)).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def check_seed(seed: int) -> int:
    """``seed`` as an int.

    Raises:
        OptionError: a negative seed.
    """
    if seed < 0:
        raise OptionError(f"seed {seed}: must be >= 0")
    return int(seed)


class SharedEpoch:
    """An epoch number that DataLoader workers see change, persistent workers included.

    A dataset is copied into each worker when the worker starts; with
    ``persistent_workers=True`` that copy lives for the whole run, so an epoch set later in the
    main process would never reach it. This value lives in shared memory, shared by the process
    that made it (its owner) and that process's DataLoader workers, fork or spawn. Any other
    process (a DDP rank started by spawn with the dataset, say) takes its own copy at its first
    use, or before it starts processes of its own, and becomes the owner of that copy. Pickled
    any other way (to a file, to Dask) it is a plain number again.
    """

    def __init__(self, value: int = 0) -> None:
        self._owner = os.getpid()
        self._shared: Any = RawValue("q", int(value))
        _EPOCHS.add(self)

    @property
    def value(self) -> int:
        return int(self._local().value)

    @value.setter
    def value(self, epoch: int) -> None:
        self._local().value = int(epoch)

    def _local(self) -> Any:
        """The shared value, after taking a copy of it in a process that is neither its owner
        nor one of the owner's DataLoader workers."""
        if self._owner != os.getpid() and not _in_worker():
            self._shared = RawValue("q", int(self._shared.value))
            self._owner = os.getpid()
        return self._shared

    def __getstate__(self) -> dict[str, Any]:
        if multiprocessing.context.get_spawning_popen() is not None:
            return {"shared": self._local(), "owner": self._owner}
        return {"value": self.value}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "shared" in state:
            self._shared, self._owner = state["shared"], state["owner"]
        else:
            self._shared, self._owner = RawValue("q", state["value"]), os.getpid()
        _EPOCHS.add(self)


def _in_worker() -> bool:
    data: Any = sys.modules.get("torch.utils.data")
    return data is not None and data.get_worker_info() is not None


_EPOCHS: weakref.WeakSet[SharedEpoch] = weakref.WeakSet()
"""Every SharedEpoch of this process, so each one not owned here takes its own copy before this
process forks (its DataLoader workers must share the copy it will use)."""
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=lambda: [epoch._local() for epoch in list(_EPOCHS)])
