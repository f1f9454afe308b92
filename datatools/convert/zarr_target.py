"""The OME-Zarr target of ``convert``: run a plan's units into an image group's level arrays.

A base unit reads its box from the source once, encodes its level-0 chunks (and, with a pyramid,
the level-1 chunks it covers) with the array's own codec on the encoding pool and stores the
files; the ledger inside the output records the unit afterwards. Levels 2 and below are then
built from the level above, in their own units. The OME metadata and the completion flag are
written when the last unit is recorded (:func:`run`). Sharded arrays are written through
zarr-python. Memory: the units in flight (see :mod:`datatools.convert`).

Concurrent runs: :func:`run` takes the output's lease before it writes a unit (one live run
per output, or one per job-array task: :mod:`datatools.ledger.lease`) and gives it back when it
returns or fails. Before each unit it checks that it still holds the lease and that the unit is
not recorded done; a unit found done is skipped, never rewritten. Level-0 and level-1 chunk
files are created in place only when new and replaced atomically otherwise, lower levels
(which two finishing tasks may both build) always atomically
(:mod:`datatools.sinks.chunk_files`), so a run resumed after another finished the output never
leaves a torn chunk.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datatools import __version__, ledger
from datatools.convert.job import Array, ConvertJob
from datatools.convert.options import ConvertOptions
from datatools.convert.plan import LevelPlan
from datatools.downsample import downsample as merge
from datatools.errors import OptionError, TargetError, WriteError
from datatools.executor import Executor, TaskSlice, ThreadExecutor
from datatools.geometry import Box, tile_box
from datatools.inputs import open_input
from datatools.ledger import ZarrLedger
from datatools.ledger.lease import Lease
from datatools.ngff import for_zarr_format
from datatools.progress import progress_bar
from datatools.sinks.chunk_files import ChunkFiles, spread_order

__all__ = ["RemoteUnits", "run"]


def _populate(job: ConvertJob) -> Callable[[Path], None]:
    """Creates the image group and its empty level arrays in a fresh folder."""

    def populate(folder: Path) -> None:
        import zarr

        group = zarr.create_group(folder, zarr_format=job.zarr_format)  # type: ignore[arg-type]
        group.attrs.update({"datatools": _provenance(job, complete=False)})
        for k, (shape, _) in enumerate(job.plan.levels):
            kwargs: dict[str, Any] = {}
            if job.zarr_format == 3:
                kwargs["compressors"] = job.codec.zarr_compressors(job.out_dtype)
                kwargs["dimension_names"] = list(job.axes)
                if job.plan.shards is not None:
                    kwargs["shards"] = job.plan.level_shards(k)
            else:
                kwargs["compressors"] = job.codec.encoder(job.out_dtype)
                kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
            group.create_array(
                str(k),
                shape=shape,
                chunks=job.plan.level_chunks(k),
                dtype=job.out_dtype,
                fill_value=0,
                **kwargs,
            )

    return populate


def _provenance(job: ConvertJob, *, complete: bool) -> dict[str, Any]:
    return {"version": __version__, "command": "convert", "complete": complete, **job.record.params}


class _LevelWriter:
    """Writes whole blocks of one level array: chunk files encoded on the pool, or through
    zarr-python for sharded arrays."""

    def __init__(
        self, job: ConvertJob, path: Path, pool: ThreadPoolExecutor, *, atomic: bool
    ) -> None:
        import zarr

        self.pool = pool
        self.sharded = job.plan.shards is not None
        self.array = zarr.open_array(path, mode="r+")
        self.files = (
            None
            if self.sharded
            else ChunkFiles(path, job.codec.encoder(job.out_dtype), atomic=atomic)
        )

    def tasks(self, box: Box, data: Array) -> list[Callable[[], None]]:
        """Tasks for the pool that store ``data`` at ``box`` (aligned to this level's chunk or
        shard grid): one per chunk, or one for the whole box when sharded."""

        if self.files is None:
            array = self.array
            return [lambda: array.__setitem__(box.slices(), data)]
        files = self.files
        return [
            functools.partial(files.write, chunk, data[chunk.relative_to(box.start).slices()])
            for chunk in spread_order(tile_box(box, files.chunks))
        ]

    def write(self, box: Box, data: Array) -> None:
        """Store ``data`` at ``box`` (aligned to this level's chunk or shard grid)."""
        self.run(self.tasks(box, data))

    def run(self, tasks: Sequence[Callable[[], None]]) -> None:
        """Run ``tasks`` on the pool and wait for them all."""
        for _ in self.pool.map(_call, tasks):
            pass

    def read(self, box: Box) -> Array:
        """Read ``box`` back (to build the next level), decoding chunks on the pool."""
        if self.files is None:
            return np.asarray(self.array[box.slices()])
        return self.files.read(box, self.pool)


class _ZarrRun:
    """Executes a job's units, by ledger index, into an OME-Zarr folder; a unit the ledger
    records done is skipped, and with a ``lease`` each unit first checks it is still held."""

    def __init__(
        self,
        job: ConvertJob,
        path: Path,
        pool: ThreadPoolExecutor,
        buffers: threading.local | None = None,
        lease: Lease | None = None,
    ) -> None:
        self.job = job
        self.ledger = ZarrLedger(path)
        self.lease = lease
        # levels 0 and 1 are written by base units only, by the run holding the lease, and read
        # by no one before the unit is recorded: new files are created in place. Two tasks
        # finishing at once may both build a unit of a lower level while the other reads it, so
        # those files are always replaced atomically
        self.levels = [
            _LevelWriter(job, path / str(k), pool, atomic=k >= 2)
            for k in range(len(job.plan.levels))
        ]
        self._buffers = threading.local() if buffers is None else buffers

    def _buffer(self) -> Array:
        """This thread's reused unit buffer (one per reading thread and dtype, shared by the
        runs given the same ``buffers``: a unit is finished before the thread reads another)."""
        dtype = self.job.volume.dtype
        found: dict[str, Array] = self._buffers.__dict__.setdefault("units", {})
        buffer = found.get(dtype.str)
        if buffer is None:
            buffer = found[dtype.str] = np.empty(math.prod(self.job.plan.unit_shape), dtype)
        return buffer

    def unit(self, index: int) -> tuple[int, bool]:
        """Run the unit with ledger index ``index`` unless it is recorded done; returns it, and
        whether it was written now.

        Raises:
            TargetError: this run lost its lease (another run took the output over).
        """
        if self.lease is not None:
            self.lease.check()
        if self.ledger.is_done(index):
            return index, False
        plan = self.job.plan
        if index < plan.n_base_units:
            self._base_unit(index)
        else:
            level = next(lv for lv in reversed(plan.pyramid) if lv.offset <= index)
            self._level_unit(level, index - level.offset)
        return index, True

    def _base_unit(self, index: int) -> None:
        """Level 0 from the source, and level 1 from that data when there is a pyramid. The
        whole unit is merged by one task on the pool while the others encode its level-0
        chunks (merging chunk by chunk is 4x slower: short strided rows)."""
        _, box, data = self.job.read_unit(index, self._buffer())
        tasks = self.levels[0].tasks(box, data)
        if len(self.levels) == 1:
            self.levels[0].run(tasks)
            return
        factors = self.job.plan.levels[1][1]
        merged: list[Array] = []
        tasks.insert(0, lambda: merged.append(merge(data, factors, self.job.method)))
        self.levels[0].run(tasks)
        start = tuple(a // f for a, f in zip(box.start, factors, strict=True))
        small = merged[0]
        self.levels[1].write(
            Box(start, tuple(a + s for a, s in zip(start, small.shape, strict=True))), small
        )

    def _level_unit(self, level: LevelPlan, index: int) -> None:
        """One unit of level ``k`` >= 2, from level ``k - 1``."""
        box = level.unit(index)
        above = self.levels[level.level - 1]
        source = Box(
            tuple(a * f for a, f in zip(box.start, level.factors, strict=True)),
            tuple(
                min(b * f, n)
                for b, f, n in zip(box.stop, level.factors, above.array.shape, strict=True)
            ),
        )
        merged = merge(above.read(source), level.factors, self.job.method)
        self.levels[level.level].write(box, merged)


def _call(task: Callable[[], None]) -> None:
    task()


@dataclass(frozen=True)
class RemoteUnits:
    """A picklable unit function for distributed executors: each worker process opens the
    source and the output once (cached) and runs units by ledger index.

    Attributes:
        source: the source spec (a path, or a tuple of slice paths).
        path: the output folder (already created by the driver).
        options: the run's options, as the driver resolved them.
        unit_shapes: the plan's unit shapes (the driver's, so every worker plans the same).
        translation: the label image's translation, or ``None``.
    """

    source: str | tuple[str, ...]
    path: str
    options: ConvertOptions
    unit_shapes: tuple[tuple[int, ...], ...]
    translation: tuple[float, ...] | None = None

    def __call__(self, index: int) -> tuple[int, bool]:
        return _worker_run(self).unit(index)


@functools.lru_cache(maxsize=4)
def _worker_run(units: RemoteUnits) -> _ZarrRun:
    """The open source, job and writers of ``units`` in this worker process (kept for reuse;
    one encoding thread, the worker's own parallelism is its process count)."""
    source = units.source if isinstance(units.source, str) else list(units.source)
    volume = open_input(source, units.options.open_options)
    job = ConvertJob.prepare(
        volume,
        units.options,
        is_hdf5=False,
        existing_unit_shapes=units.unit_shapes,
        translation=units.translation,
        warn=False,  # warned by the driver
    )
    return _ZarrRun(job, Path(units.path), ThreadPoolExecutor(1))


@dataclass
class _Output:
    """One output of :func:`run`: its job, folder, ledger, lease (``None`` when it was complete
    already) and what this call did."""

    job: ConvertJob
    path: Path
    ledger: ZarrLedger
    lease: Lease | None
    todo: set[int]
    skipped: int
    created: bool
    written: list[int] = field(default_factory=list)
    found_done: set[int] = field(default_factory=set)
    """Units of ``todo`` found recorded done when their turn came (another run did them)."""

    def check_lease(self) -> None:
        """Make sure this run still holds the output's lease (none is held when the output was
        complete already).

        Raises:
            TargetError: another run took the lease over.
        """
        if self.lease is not None:
            self.lease.check()


def run(
    outputs: Sequence[tuple[ConvertJob, Path]],
    task: TaskSlice | None,
    overwrite: bool,
    progress: bool,
    on_unit_done: Callable[[int], None] | None = None,
    remote: RemoteUnits | None = None,
    executor: Executor | None = None,
) -> list[tuple[list[int], int, bool]]:
    """Run the units of one or more jobs with the same plan (same units) into their folders.

    Each base unit is done for every output in turn on one thread, so sources that share their
    reads (the class masks of one label volume) read it once. Per output, the units written
    now, the units found done, and whether the output is complete. ``remote`` (a distributed
    ``executor``) takes a single output. Each unfinished output's lease (for ``task``, or the
    whole plan) is held from its claim until this call returns or fails; ``on_unit_done`` is
    called for each unit this call records.

    Raises:
        TargetError, ResumeMismatchError: a target cannot be used or holds another run;
            another live run holds its lease, or took it over from this one; ``task`` has
            another count than the output's other tasks.
        WriteError: the disk refused a write (the outputs stay resumable).
        OptionError: the source refutes the options (a value the dtype cannot hold); outputs
            this call created are removed first (not with ``task`` or a distributed
            ``executor``: others may be writing them).
    """
    n_base = outputs[0][0].plan.n_base_units
    mine = range(n_base) if task is None else task.select(n_base)
    with contextlib.ExitStack() as leases:
        runs: list[_Output] = []
        for job, path in outputs:
            output = ZarrLedger(path)
            how = output.claim(job.record, overwrite=overwrite, populate=_populate(job))
            # a complete output is not written: it needs no lease
            lease = None if output.is_complete() else leases.enter_context(output.lease(task))
            if how == "resumed" and task is None:
                # temporaries of a killed run; with task slices other tasks may be writing right
                # now, so those are cleaned by whichever task finalizes
                ledger.clean_stray_files(path)
            done = output.done()
            todo = {i for i in mine if i not in done}
            skipped = len(mine) - len(todo)
            runs.append(_Output(job, path, output, lease, todo, skipped, how == "created"))
        complete = _run_units(runs, task, progress, on_unit_done, remote, executor)
    return [(out.written, out.skipped, done) for out, done in zip(runs, complete, strict=True)]


def _run_units(
    runs: list[_Output],
    task: TaskSlice | None,
    progress: bool,
    on_unit_done: Callable[[int], None] | None,
    remote: RemoteUnits | None,
    executor: Executor | None,
) -> list[bool]:
    """The units of ``runs`` (claimed, leases held), their pyramids and finalization; whether
    each output is complete. Raises as :func:`run`."""
    plan = runs[0].job.plan
    pending = sorted(set().union(*(out.todo for out in runs)))
    megabytes = [math.prod(plan.unit_shape) * out.job.out_dtype.itemsize / 1e6 for out in runs]
    total = sum(len(out.todo) * mb for out, mb in zip(runs, megabytes, strict=True))
    where = runs[0].path if len(runs) == 1 else runs[0].path.parent
    workers = runs[0].job.workers
    with (
        ThreadPoolExecutor(workers, thread_name_prefix="datatools-encode") as pool,
        progress_bar(int(total), f"convert {where.name}", enabled=progress, unit="MB") as bar,
    ):
        runner: Executor
        units: list[Callable[[int], tuple[int, bool]]]
        if executor is not None and executor.distributed and remote is not None:
            units, runner = [remote], executor
        else:
            buffers = threading.local()
            units = [_ZarrRun(out.job, out.path, pool, buffers, out.lease).unit for out in runs]
            runner = ThreadExecutor(min(2, workers))

        def base_unit(index: int) -> tuple[int, bool]:
            for out, unit in zip(runs, units, strict=True):
                if index in out.todo and not unit(index)[1]:
                    out.found_done.add(index)
            return index, True

        try:
            for index, wrote in runner.map(base_unit if len(runs) > 1 else units[0], pending):
                recorded = False
                for out, mb in zip(runs, megabytes, strict=True):
                    if index not in out.todo:
                        continue
                    bar.update(mb)
                    if not wrote or index in out.found_done:
                        out.skipped += 1  # another run recorded it meanwhile
                        continue
                    out.check_lease()
                    out.ledger.mark_done([index])
                    out.written.append(index)
                    recorded = True
                if recorded and on_unit_done is not None:
                    on_unit_done(index)
            for out, unit in zip(runs, units, strict=True):
                _run_pyramid(out, unit, runner, on_unit_done)
            grace = 0.0 if task is None else ledger.STRAY_GRACE_SECONDS
            return [_finalize(out, grace) for out in runs]
        except TargetError:
            raise  # a lease lost to another run (an OSError too, but no write failed)
        except OSError as exc:
            raise WriteError(
                f"{where}: write failed ({exc.strerror or exc}); rerun the same command to resume"
            ) from exc
        except OptionError:
            # the source refutes the options (a value the dtype cannot hold): an output this
            # call created would only block the corrected command. Not with task slices or a
            # distributed executor (others may be writing it); read errors keep the output
            # resumable
            if task is None and runner is not executor:
                for out in runs:
                    if out.created:
                        if out.lease is not None:
                            out.lease.release()
                        with contextlib.suppress(OSError):
                            out.ledger.remove()
            raise


def _run_pyramid(
    out: _Output,
    unit: Callable[[int], tuple[int, bool]],
    runner: Executor,
    on_unit_done: Callable[[int], None] | None,
) -> None:
    """Levels 2 and below of ``out``, level by level, once every base unit is recorded (by
    this task or others); a unit another task records first is skipped."""
    plan = out.job.plan
    for level in plan.pyramid:
        done = out.ledger.done()
        if not all(i in done for i in range(plan.n_base_units)):
            return
        todo = [level.offset + i for i in range(level.n_units)]
        todo = [i for i in todo if i not in done]
        out.skipped += level.n_units - len(todo)
        for index, wrote in runner.map(unit, todo):
            if not wrote:
                out.skipped += 1
                continue
            out.check_lease()
            out.ledger.mark_done([index])
            out.written.append(index)
            if on_unit_done is not None:
                on_unit_done(index)


def _finalize(out: _Output, grace: float) -> bool:
    """Write the OME metadata and mark ``out`` complete once every unit is done (by any task);
    whether it is complete. Leftovers of killed runs older than ``grace`` seconds are cleaned
    first."""
    job, path = out.job, out.path
    if len(out.ledger.done()) < job.plan.n_units:
        return False
    if out.ledger.is_complete():
        return True
    out.check_lease()
    # the last tasks of a job array may finish together and all get here: a minute's grace
    # keeps their files in flight; attributes are replaced atomically
    ledger.clean_stray_files(path, older_than=grace)
    levels = [(str(k), p) for k, p in enumerate(job.level_placements())]
    ngff = for_zarr_format(job.zarr_format)
    write = ngff.label_image_attributes if job.image_label else ngff.image_attributes
    attrs = write(job.axes, levels, name=job.name)
    attrs["datatools"] = _provenance(job, complete=True)
    ledger.update_attributes(path, attrs)
    out.ledger.mark_complete()
    return True
