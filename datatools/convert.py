"""Convert any volume datatools opens into a chunked OME-Zarr image (or an HDF5 dataset).

The work is a plan of units (:mod:`datatools.convert_plan`): boxes aligned to the output's chunk
grid (shard grid when sharded), so no two units write the same chunk or shard. A base unit reads
its box from the source once, encodes its level-0 chunks (and, with a pyramid, the level-1
chunks it covers) with the array's own codec and stores the files; the ledger inside the output
records the unit afterwards. Levels 2 and below are then built from the level above, in their
own units. A rerun with the same options skips recorded units; the OME metadata and the
completion flag are written when the last unit is recorded.

Memory: one unit is read while the previous one's chunks are encoded on ``workers`` threads, so
peak memory is about ``UNITS_IN_FLIGHT * 2 * unit_bytes`` (input plus a cast copy) plus
``workers`` encoded chunks. ``unit_bytes`` is 64 MiB by default, or
``memory_limit / (2 * UNITS_IN_FLIGHT)``, but at least one chunk (shard) row that covers whole
source strips or chunks (each source byte is decoded once) and whole level-1 chunks. It never
grows with the volume.

Job arrays: each task converts its slice of the base units; whichever task sees every base unit
done builds levels 2 and below (a sixth of the work at most, by 2x2x2 factors) and finalizes. Two
tasks finishing at the same moment may both build a level unit; they write identical bytes
through atomic renames, so the result is the same.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr

from datatools import __version__, hdf5_image, label_image, target
from datatools.chunk_files import ChunkFiles, spread_order
from datatools.codecs import Codec, parse_codec
from datatools.convert_plan import (
    DEFAULT_CHUNK,
    Array,
    ConvertJob,
    LevelPlan,
    default_workers,
)
from datatools.downsample import downsample as merge
from datatools.errors import OptionError, WriteError
from datatools.executor import Executor, TaskSlice, ThreadExecutor
from datatools.geometry import Box, RoiSpec, tile_box
from datatools.ome_zarr import image_attributes
from datatools.progress import progress_bar
from datatools.sources import OpenOptions, SourceSpec, Volume, open_volume

HDF5_SUFFIXES = (".h5", ".hdf5")
STRAY_GRACE_SECONDS = 60.0
"""Temporary files younger than this survive the clean-up at finalization (another task may
be writing them)."""

__all__ = ["ConvertResult", "convert", "default_workers"]


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion did.

    Attributes:
        target: the output path.
        shape, dtype, chunks, shards: the level-0 array.
        levels: number of resolution levels written.
        units_total: units in the whole plan; ``units_written`` by this call;
            ``units_skipped`` already recorded by an earlier run (or other tasks).
        nbytes: uncompressed level-0 bytes written by this call.
        seconds: wall time of this call.
        complete: the output is finished (metadata and completion flag written).
    """

    target: Path
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    levels: int
    units_total: int
    units_written: int
    units_skipped: int
    nbytes: int
    seconds: float
    complete: bool
    format: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One paragraph for the terminal."""
        dims = " x ".join(map(str, self.shape))
        state = "complete" if self.complete else "INCOMPLETE"
        rate = self.nbytes / 1e6 / self.seconds if self.seconds > 0 else 0.0
        levels = f", {self.levels} levels" if self.levels > 1 else ""
        lines = [
            f"{self.target}: {dims} {self.dtype}, chunks {' x '.join(map(str, self.chunks))}"
            f"{levels}, {self.format}, {state}",
            f"  {self.units_written} units written now, {self.units_skipped} already done, "
            f"of {self.units_total}; {self.nbytes / 1e6:.1f} MB in {self.seconds:.1f} s "
            f"({rate:.0f} MB/s)",
        ]
        if not self.complete:
            lines.append("  rerun the same command (or the remaining tasks) to finish it")
        return "\n".join(lines)


def convert(
    source: SourceSpec | Volume,
    target_path: str | Path,
    *,
    roi: RoiSpec | Box | None = None,
    chunks: int | Sequence[int] = DEFAULT_CHUNK,
    shards: int | Sequence[int] | None = None,
    codec: str | Codec = "zstd",
    level: int | None = None,
    zarr_format: int = 3,
    voxel_size: Sequence[float] | None = None,
    unit: str | None = None,
    dtype: str | None = None,
    allow_lossy_cast: bool = False,
    levels: int | Literal["auto"] | None = None,
    downsample: str | None = None,
    factors: Sequence[int] | None = None,
    as_labels: str | None = None,
    name: str | None = None,
    dataset: str = "data",
    open_options: OpenOptions | None = None,
    workers: int | None = None,
    memory_limit: int | None = None,
    task: TaskSlice | None = None,
    overwrite: bool = False,
    executor: Executor | None = None,
    progress: bool = False,
    on_unit_done: Callable[[int], None] | None = None,
) -> ConvertResult:
    """Convert ``source`` (or its ROI) into an OME-Zarr image, or an HDF5 dataset for ``.h5``.

    Args:
        source: anything :func:`datatools.sources.open_volume` opens, or an open volume.
        target_path: output ``.zarr`` folder (OME-Zarr image, level arrays ``0``, ``1``, ...)
            or ``.h5``/``.hdf5`` file.
        roi: region of the source, half-open voxels (z, y, x); non-spatial axes kept whole.
        chunks: output chunk shape; one int = every spatial axis (channels: 1), clipped.
        shards: Zarr v3 shard shape, a multiple of ``chunks``; ``None`` for no sharding.
        codec: ``zstd``, ``blosc-zstd``, ``blosc-lz4``, ``gzip``, ``none`` (HDF5: ``gzip``,
            ``lzf``, ``none``; ``zstd`` there means ``gzip``); ``level``: compression level.
        zarr_format: 3 (OME-NGFF 0.5) or 2 (OME-NGFF 0.4, ``/`` chunk separator).
        voxel_size: physical voxel size per spatial axis (z, y, x); default from the source,
            else 1 with no unit. ``unit``: its OME-NGFF length unit (``nm``, ``um`` accepted).
        dtype: output dtype; only lossless casts unless ``allow_lossy_cast`` (then values are
            rounded and clipped to the dtype's range).
        levels: resolution levels (default 1: no pyramid), or ``"auto"`` (until a level fits
            one chunk). ``downsample``: mean (default), median, mode, nearest or max.
            ``factors``: per spatial axis (default 2, or only the finer axes for anisotropic
            voxels).
        as_labels: write the source as the label image ``<target>/labels/<as_labels>`` of the
            OME-Zarr image ``target`` (integer data; downsample mode (default) or nearest; the
            image's voxel size, translation, Zarr format and level count unless given).
        name: image name in the metadata (default: the target's stem).
        dataset: HDF5 dataset path.
        open_options: level / series / gap choices for opening ``source``.
        workers: threads encoding chunks (default: cores). ``memory_limit``: bytes for data in
            flight; picks the unit size (module docstring).
        task: run only this slice of the base units (job arrays); see the module docstring.
        executor: runs the units; default: this process, with ``workers`` encoding threads.
            A distributed one (:class:`datatools.executor.DaskExecutor`) runs one task per
            unit in worker processes, which open the source themselves.
        overwrite: replace an existing output of datatools (never a foreign file or folder).
        progress: show a progress bar on stderr.
        on_unit_done: called with each unit's ledger index after it is recorded.

    Raises:
        InputError, InputNotFoundError: the source cannot be read.
        OptionError, RoiError: invalid options (message names the option).
        TargetError, ResumeMismatchError: the target cannot be used or holds another run.
        WriteError: the disk refused a write (the output stays resumable).
    """
    started = time.perf_counter()
    path = Path(target_path)
    is_hdf5 = path.suffix.lower() in HDF5_SUFFIXES
    label = None
    translation = None
    if as_labels is not None:
        label = label_image.open_image(path, as_labels)
        path, zarr_format, translation = label.path, label.zarr_format, label.translation
        voxel_size = label.voxel_size if voxel_size is None else voxel_size
        unit = label.unit if unit is None else unit
        levels = len(label.level_shapes) if levels is None else levels
        downsample = downsample or "mode"
        label_image.check_method(downsample)
        label.prepare_group()
    levels = 1 if levels is None else levels
    downsample = downsample or "mean"
    if task is not None and task.count > 1 and overwrite:
        raise OptionError(
            "--overwrite: cannot be combined with --task-count > 1 (a task would remove the "
            "others' work); remove the target first"
        )
    if is_hdf5 and task is not None and task.count > 1:
        raise OptionError(f"{path}: HDF5 has a single writer; --task-count needs Zarr")
    if zarr_format not in (2, 3):
        raise OptionError(f"--zarr-format {zarr_format}: must be 2 or 3")
    if isinstance(codec, str):
        codec = parse_codec("gzip" if is_hdf5 and codec == "zstd" else codec, level, hdf5=is_hdf5)
    distributed = executor is not None and executor.distributed
    if distributed and (is_hdf5 or isinstance(source, Volume)):
        raise OptionError(f"{path}: Dask runs need a Zarr target and a source given by path")
    volume = source if isinstance(source, Volume) else open_volume(source, open_options)
    try:
        prepare: dict[str, Any] = {
            "roi": roi,
            "chunks": chunks if isinstance(chunks, int) else tuple(chunks),
            "shards": shards if shards is None or isinstance(shards, int) else tuple(shards),
            "codec": codec,
            "zarr_format": zarr_format,
            "voxel_size": None if voxel_size is None else tuple(voxel_size),
            "unit": unit,
            "dtype": dtype,
            "allow_lossy_cast": allow_lossy_cast,
            "levels": levels,
            "downsample": downsample,
            "factors": None if factors is None else tuple(factors),
            "name": name or path.name.split(".")[0],
            "workers": workers or default_workers(),
            "memory_limit": memory_limit,
            "is_hdf5": is_hdf5,
            "translation": translation,
            "as_labels": as_labels,
        }
        job = ConvertJob.prepare(
            volume,
            **prepare,
            existing_unit_shapes=None if overwrite else _recorded_unit_shapes(path, is_hdf5),
        )
        if is_hdf5:
            written, skipped, complete = hdf5_image.run(
                job, path, dataset, overwrite=overwrite, progress=progress,
                on_unit_done=on_unit_done,
            )  # fmt: skip
        else:
            remote = None
            if distributed:
                prepare["existing_unit_shapes"] = tuple(
                    tuple(s) for s in job.record.params["unit_shapes"]
                )
                assert not isinstance(source, Volume)
                remote = RemoteUnits(
                    _remote_source(source),
                    open_options or OpenOptions(),
                    str(path.absolute()),
                    tuple(sorted(prepare.items())),
                )
            if label is not None:
                _check_registration(job, label)
            written, skipped, complete = _run_zarr(
                job, path, task, overwrite, progress, on_unit_done, remote, executor
            )
            if complete and label is not None:
                label.register()
    finally:
        if not isinstance(source, Volume):
            volume.close()
    base = [i for i in written if i < job.plan.n_base_units]
    return ConvertResult(
        target=path,
        shape=job.plan.shape,
        dtype=str(job.out_dtype),
        chunks=job.plan.chunks,
        shards=job.plan.shards,
        levels=len(job.plan.levels),
        units_total=job.plan.n_units,
        units_written=len(written),
        units_skipped=skipped,
        nbytes=sum(job.plan.unit(i).size for i in base) * job.out_dtype.itemsize,
        seconds=time.perf_counter() - started,
        complete=complete,
        format="HDF5" if is_hdf5 else f"OME-Zarr {_ngff(zarr_format)} (Zarr v{zarr_format})",
        params=job.record.params,
    )


def _check_registration(job: ConvertJob, label: label_image.LabelTarget) -> None:
    """A label image must cover its image voxel for voxel, level for level.

    Raises:
        OptionError: its level shapes differ from the image's.
    """
    shapes = tuple(label_image.spatial_shape(shape, job.axes) for shape, _ in job.plan.levels)
    if shapes != label.level_shapes:
        raise OptionError(
            f"--as-labels {label.name}: level shapes {list(shapes)} differ from the image's "
            f"{list(label.level_shapes)} (give the image's ROI, --levels and --factors)"
        )


def _remote_source(source: SourceSpec) -> str | tuple[str, ...]:
    return str(source) if isinstance(source, str | Path) else tuple(str(p) for p in source)


def _ngff(zarr_format: int) -> str:
    return "0.5" if zarr_format == 3 else "0.4"


def _recorded_unit_shapes(path: Path, is_hdf5: bool) -> list[list[int]] | None:
    """A resumed run keeps the unit shapes of the run that created the output."""
    record = hdf5_image.existing_record(path) if is_hdf5 else None
    if not is_hdf5 and target.is_ours(path):
        record = target.read_record(path)
    if record is None or record.command != "convert":
        return None
    shapes = record.params.get("unit_shapes")
    return [list(map(int, s)) for s in shapes] if isinstance(shapes, list) else None


def _populate(job: ConvertJob) -> Callable[[Path], None]:
    """Creates the image group and its empty level arrays in a fresh folder."""

    def populate(folder: Path) -> None:
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
    """Executes a job's units, by ledger index, into an OME-Zarr folder."""

    def __init__(self, job: ConvertJob, path: Path, pool: ThreadPoolExecutor) -> None:
        self.job = job
        # levels 0 and 1 are written by base units only, each by one task and read by no one
        # before the unit is recorded; two tasks finishing at once may both build a unit of a
        # lower level while the other reads it, so those files are replaced atomically
        self.levels = [
            _LevelWriter(job, path / str(k), pool, atomic=k >= 2)
            for k in range(len(job.plan.levels))
        ]
        self._buffers = threading.local()

    def _buffer(self) -> Array:
        """This thread's reused unit buffer (one per reading thread)."""
        buffer: Array | None = getattr(self._buffers, "unit", None)
        if buffer is None:
            buffer = np.empty(math.prod(self.job.plan.unit_shape), self.job.volume.dtype)
            self._buffers.unit = buffer
        return buffer

    def unit(self, index: int) -> int:
        """Run the unit with ledger index ``index``; returns it."""
        plan = self.job.plan
        if index < plan.n_base_units:
            self._base_unit(index)
        else:
            level = next(lv for lv in reversed(plan.pyramid) if lv.offset <= index)
            self._level_unit(level, index - level.offset)
        return index

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
        self.levels[level.level].write(box, merge(above.read(source), level.factors,
                                                   self.job.method))  # fmt: skip


def _call(task: Callable[[], None]) -> None:
    task()


@dataclass(frozen=True)
class RemoteUnits:
    """A picklable unit function for distributed executors: each worker process opens the
    source and the output once (cached) and runs units by ledger index.

    Attributes:
        source: the source spec (a path, or a tuple of slice paths).
        open_options: how to open it.
        path: the output folder (already created by the driver).
        prepare: keyword arguments of :meth:`ConvertJob.prepare`, as sorted pairs.
    """

    source: str | tuple[str, ...]
    open_options: OpenOptions
    path: str
    prepare: tuple[tuple[str, Any], ...]

    def __call__(self, index: int) -> int:
        return _worker_run(self).unit(index)


@functools.lru_cache(maxsize=4)
def _worker_run(units: RemoteUnits) -> _ZarrRun:
    """The open source, job and writers of ``units`` in this worker process (kept for reuse;
    one encoding thread, the worker's own parallelism is its process count)."""
    source = units.source if isinstance(units.source, str) else list(units.source)
    volume = open_volume(source, units.open_options)
    job = ConvertJob.prepare(volume, **dict(units.prepare))
    return _ZarrRun(job, Path(units.path), ThreadPoolExecutor(1))


def _run_zarr(
    job: ConvertJob,
    path: Path,
    task: TaskSlice | None,
    overwrite: bool,
    progress: bool,
    on_unit_done: Callable[[int], None] | None,
    remote: RemoteUnits | None,
    executor: Executor | None,
) -> tuple[list[int], int, bool]:
    how = target.claim(path, job.record, overwrite=overwrite, populate=_populate(job))
    if how == "resumed" and task is None:
        # temporaries of a killed run; with task slices other tasks may be writing right now,
        # so those are cleaned by whichever task finalizes
        target.clean_stray_files(path)
    ledger = target.Ledger(path)
    done = ledger.done()
    plan = job.plan
    n_base = plan.n_base_units
    mine = range(n_base) if task is None else task.select(n_base)
    todo = [i for i in mine if i not in done]
    skipped = len(mine) - len(todo)
    unit_bytes = math.prod(plan.unit_shape) * job.out_dtype.itemsize
    written: list[int] = []
    with (
        ThreadPoolExecutor(job.workers, thread_name_prefix="datatools-encode") as pool,
        progress_bar(
            len(todo) * unit_bytes // 10**6, f"convert {path.name}", enabled=progress, unit="MB"
        ) as bar,
    ):
        runner: Executor
        if executor is not None and executor.distributed and remote is not None:
            func: Callable[[int], int] = remote
            runner = executor
        else:
            func = _ZarrRun(job, path, pool).unit
            runner = ThreadExecutor(min(2, job.workers))
        phases = [todo] if not plan.pyramid else [todo, *([] for _ in plan.pyramid)]
        try:
            for phase, units in enumerate(phases):
                if phase:
                    done = ledger.done()
                    if not all(i in done for i in range(n_base)):
                        break
                    level = plan.pyramid[phase - 1]
                    units = [level.offset + i for i in range(level.n_units)]
                    units = [i for i in units if i not in done]
                    skipped += level.n_units - len(units)
                for index in runner.map(func, units):
                    ledger.mark(index)
                    written.append(index)
                    if on_unit_done is not None:
                        on_unit_done(index)
                    if not phase:
                        bar.update(unit_bytes / 1e6)
        except OSError as exc:
            raise WriteError(
                f"{path}: write failed ({exc.strerror or exc}); rerun the same command to resume"
            ) from exc
    return written, skipped, _finalize(job, path, ledger)


def _finalize(job: ConvertJob, path: Path, ledger: target.Ledger) -> bool:
    if len(ledger.done()) < job.plan.n_units:
        return False
    if target.is_complete(path):
        return True
    # the last tasks of a job array may finish together and all get here: a minute's grace
    # keeps their files in flight; attributes are replaced atomically
    target.clean_stray_files(path, older_than=STRAY_GRACE_SECONDS)
    levels = [(str(k), p) for k, p in enumerate(job.level_placements())]
    attrs = image_attributes(job.axes, levels, name=job.name, zarr_format=job.zarr_format)
    if job.image_label:
        image_label = {"source": {"image": "../../"}}
        if job.zarr_format == 3:
            attrs["ome"]["image-label"] = image_label
        else:
            attrs["image-label"] = {"version": "0.4", **image_label}
    attrs["datatools"] = _provenance(job, complete=True)
    target.update_group_attributes(path, attrs)
    target.mark_complete(path)
    return True
