"""Convert any volume datatools opens into a chunked OME-Zarr image (or an HDF5 dataset).

The work is a plan of units (:mod:`datatools.convert.plan`): boxes aligned to the output's chunk
grid (shard grid when sharded), so no two units write the same chunk or shard. A base unit reads
its box from the source once, encodes its level-0 chunks (and, with a pyramid, the level-1
chunks it covers) with the array's own codec and stores the files; the ledger inside the output
records the unit afterwards. Levels 2 and below are then built from the level above, in their
own units. A rerun with the same options skips recorded units; the OME metadata and the
completion flag are written when the last unit is recorded.

Memory: one unit is read while the previous one's chunks are encoded on ``workers`` threads, so
peak memory is about ``UNITS_IN_FLIGHT * 2 * unit_bytes`` (input plus a cast copy) plus
``workers`` encoded chunks. ``unit_bytes`` is 64 MiB by default, or
``memory_limit / (2 * UNITS_IN_FLIGHT)``. Units cover whole level-1 chunks, and whole source
strips or chunks where such a step fits in ``unit_bytes`` (each source byte is then decoded
once; source chunks that do not nest with the output's are cut, and those on unit borders are
decoded twice). A unit of level 2 or below reads ``prod(factors)`` times its size from the
level above, so it is that much smaller. Nothing grows with the volume.

Crash safety: a unit is recorded only after all its chunk files are written, so any killed
process leaves a resumable output. The files are not fsynced (one per chunk would cost more
than encoding them): after a power loss, verify the outputs that were being written.

Job arrays: each task converts its slice of the base units; whichever task sees every base unit
done builds levels 2 and below (a sixth of the work at most, by 2x2x2 factors) and finalizes. Two
tasks finishing at the same moment may both build a level unit; each skips a unit the other
recorded first, and they write identical bytes through atomic renames, so the result is the same.

Concurrent runs: one live run per Zarr output, or one per job-array task; a second one is
refused, naming the first (:mod:`datatools.ledger.lease`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datatools import ledger
from datatools.convert import hdf5_target, zarr_target
from datatools.convert.job import ConvertJob
from datatools.convert.options import ConvertOptions
from datatools.errors import OptionError
from datatools.executor import Executor, TaskSlice, check_overwrite
from datatools.inputs import open_input
from datatools.progress import counted
from datatools.sinks import label_image
from datatools.sources import SourceSpec, Volume, check_source_options
from datatools.stores import is_hdf5_target

log = logging.getLogger(__name__)


__all__ = ["ConvertOptions", "ConvertResult", "convert", "convert_many"]


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
        task_count: tasks sharing the output (``--task-count``); 1 without task slices.
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
    task_count: int = 1

    def summary(self) -> str:
        """One paragraph for the terminal."""
        dims = " x ".join(map(str, self.shape))
        state = "complete" if self.complete else "INCOMPLETE"
        rate = self.nbytes / 1e6 / self.seconds if self.seconds > 0 else 0.0
        levels = f", {counted(self.levels, 'level')}" if self.levels > 1 else ""
        lines = [
            f"{self.target}: {dims} {self.dtype}, chunks {' x '.join(map(str, self.chunks))}"
            f"{levels}, {self.format}, {state}",
            f"  {counted(self.units_written, 'unit')} written now, {self.units_skipped} already "
            f"done, of {self.units_total}; {self.nbytes / 1e6:.1f} MB in {self.seconds:.1f} s "
            f"({rate:.0f} MB/s)",
        ]
        if not self.complete and self.task_count > 1:
            lines.append(
                "  this task's share is done; the output is complete once every task has "
                "finished (datatools info shows the progress)"
            )
        elif not self.complete:
            lines.append("  rerun the same command to finish it")
        return "\n".join(lines)


def convert(
    source: SourceSpec | Volume,
    target_path: str | Path,
    options: ConvertOptions | None = None,
    *,
    executor: Executor | None = None,
    progress: bool = False,
    on_unit_done: Callable[[int], None] | None = None,
    **overrides: Any,
) -> ConvertResult:
    """Convert ``source`` (or its ROI) into an OME-Zarr image, or an HDF5 dataset for ``.h5``.

    Args:
        source: anything :func:`datatools.sources.open_volume` opens, or an open volume.
        target_path: output ``.zarr`` folder (OME-Zarr image, level arrays ``0``, ``1``, ...)
            or ``.h5``/``.hdf5`` file.
        options: every setting (:class:`ConvertOptions`); ``None`` for the defaults.
        executor: runs the units; default: this process, with ``workers`` encoding threads.
            A distributed one (:class:`datatools.executor.DaskExecutor`) runs one task per
            unit in worker processes, which open the source themselves.
        progress: show a progress bar on stderr.
        on_unit_done: called with each unit's ledger index after it is recorded.
        **overrides: fields of :class:`ConvertOptions` replaced by name, shared ones flat:
            ``convert("stack", "out.zarr", chunks=32, levels="auto", workers=4)``.

    The options in short: ``roi`` (half-open voxels, z, y, x; non-spatial axes kept whole);
    ``chunks`` (one int = every spatial axis, channels 1; clipped) and ``shards`` (Zarr v3, a
    multiple of ``chunks``); ``codec`` (``zstd`` (default), ``blosc-zstd``, ``blosc-lz4``,
    ``gzip``, ``none``; HDF5: ``gzip`` (default), ``lzf``, ``none``) and ``codec_level``;
    ``zarr_format`` 3 (OME-NGFF 0.5) or 2 (OME-NGFF 0.4, ``/`` chunk separator);
    ``voxel_size`` and ``unit`` (default from the source, else 1 with no unit); ``dtype``
    (lossless casts only unless ``allow_lossy_cast``: then values are rounded and clipped);
    ``levels`` (1, N or ``"auto"``), ``downsample`` (mean, median, mode, nearest, max) and
    ``factors``; ``as_labels`` (write the label image ``<target>/labels/<as_labels>`` of the
    OME-Zarr image ``target``, with the image's voxel size, translation, Zarr format and level
    count unless given; mode downsampling); ``workers`` (encoding threads, default: cores),
    ``memory_limit`` (bytes in flight; picks the unit size, module docstring) and ``task``
    (one slice of the base units, job arrays); ``overwrite`` (replace an existing output of
    datatools, never a foreign file or folder).

    Raises:
        InputError, InputNotFoundError: the source cannot be read.
        OptionError, RoiError: invalid options (message names the option).
        TargetError, ResumeMismatchError: the target cannot be used or holds another run.
        WriteError: the disk refused a write (the output stays resumable).
    """
    started = time.perf_counter()
    options = (options or ConvertOptions()).with_overrides(**overrides)
    path = Path(target_path)
    is_hdf5 = is_hdf5_target(path)
    label = None
    translation = None
    if options.as_labels is not None:
        label = label_image.open_image(path, options.as_labels)
        path, translation = label.path, label.translation
        options = options.with_overrides(
            zarr_format=label.zarr_format,
            voxel_size=label.voxel_size if options.voxel_size is None else options.voxel_size,
            unit=label.unit if options.unit is None else options.unit,
            levels=len(label.level_shapes) if options.levels is None else options.levels,
            downsample=options.downsample or "mode",
        )
        label_image.check_method(options.downsample or "mode")
    options = options.with_overrides(
        name=options.name or path.name.split(".")[0],
        levels=1 if options.levels is None else options.levels,
        downsample=options.downsample or "mean",
    )
    output, run = options.output, options.run
    check_overwrite(run.task, output.overwrite)
    if is_hdf5 and run.task is not None and run.task.count > 1:
        raise OptionError(f"{path}: HDF5 has a single writer; --task-count needs Zarr")
    distributed = executor is not None and executor.distributed
    if distributed and (is_hdf5 or isinstance(source, Volume)):
        raise OptionError(f"{path}: Dask runs need a Zarr target and a source given by path")
    volume = source if isinstance(source, Volume) else open_input(source, options.open_options)
    try:
        check_source_options(volume, options.open_options)
        ledger.check_not_input(path, volume.files())
        recorded = None if output.overwrite else _recorded_unit_shapes(path, is_hdf5)
        job = ConvertJob.prepare(
            volume,
            options,
            is_hdf5=is_hdf5,
            existing_unit_shapes=recorded,
            translation=translation,
        )
        if is_hdf5:
            written, skipped, complete = hdf5_target.run(
                job,
                path,
                options.dataset,
                overwrite=output.overwrite,
                progress=progress,
                on_unit_done=on_unit_done,
            )
        else:
            remote = None
            if distributed:
                assert not isinstance(source, Volume)
                remote = zarr_target.RemoteUnits(
                    _remote_source(source),
                    str(path.absolute()),
                    options,
                    tuple(tuple(s) for s in job.record.params["unit_shapes"]),
                    None if translation is None else tuple(translation),
                )
            if not output.overwrite:
                job.check_changed_inputs(path)
            if label is not None:
                _check_registration(job, label)
                label.prepare_group()
            [(written, skipped, complete)] = zarr_target.run(
                [(job, path)],
                run.task,
                output.overwrite,
                progress,
                on_unit_done,
                remote,
                executor,
            )
            if complete and label is not None:
                label.register()
    finally:
        if not isinstance(source, Volume):
            volume.close()
    if job.lossy_changed:
        log.warning(
            "%s: --allow-lossy-cast changed %d voxels (rounded, clipped to the %s range, or "
            "NaN set to 0)",
            volume.spec,
            job.lossy_changed,
            job.out_dtype,
        )
    zarr_format = output.zarr_format
    fmt = "HDF5" if is_hdf5 else f"OME-Zarr {_ngff(zarr_format)} (Zarr v{zarr_format})"
    return _result(job, path, written, skipped, complete, started, fmt, run.task)


def convert_many(
    sources: Sequence[Volume],
    targets: Sequence[str | Path],
    options: ConvertOptions | None = None,
    *,
    names: Sequence[str] | None = None,
    progress: bool = False,
    **overrides: Any,
) -> list[ConvertResult]:
    """Convert volumes of one shape, dtype and placement, each into its own OME-Zarr image,
    unit by unit: a unit is done for every volume in turn on one thread, so volumes that are
    views of one source sharing their reads (as the class masks of ``split_classes``) read
    each unit of it once. Every output is a plain :func:`convert` output (own ledger, resumable
    alone); ``options`` and ``overrides`` as :func:`convert` (``dtype``, ``allow_lossy_cast``,
    ``shards`` and ``as_labels`` are not used); ``names``: image names (default: the targets'
    stems); ``options.open_options``: how the volumes' source was opened, recorded in each
    output.

    Memory: as :func:`convert` for one volume (the unit buffers are shared).

    Raises:
        OptionError: the volumes differ in shape, dtype or plan, or an invalid option.
        TargetError, ResumeMismatchError, WriteError: as :func:`convert`.
    """
    started = time.perf_counter()
    options = (options or ConvertOptions()).with_overrides(**overrides)
    options = options.with_overrides(
        levels=1 if options.levels is None else options.levels,
        downsample=options.downsample or "mean",
        dtype=None,
        allow_lossy_cast=False,
        shards=None,
        as_labels=None,
    )
    output, run = options.output, options.run
    paths = [Path(t) for t in targets]
    if not sources or len(sources) != len(paths):
        raise OptionError(f"convert_many: {len(sources)} volumes for {len(paths)} targets")
    if any(is_hdf5_target(p) for p in paths):
        raise OptionError("convert_many: writes OME-Zarr targets only")
    check_overwrite(run.task, output.overwrite)
    if names is not None and len(names) != len(paths):
        raise OptionError(f"convert_many: {len(names)} names for {len(paths)} targets")
    # outputs that exist keep their unit shapes; new ones (a class added or removed since) take
    # the same, so every output has one plan
    recorded = [None if output.overwrite else _recorded_unit_shapes(p, False) for p in paths]
    shared = next((r for r in recorded if r is not None), None)
    jobs = []
    fingerprints: dict[tuple[Path, ...], dict[str, Any]] = {}  # taken once per source
    for k, (volume, path) in enumerate(zip(sources, paths, strict=True)):
        files = volume.files()
        ledger.check_not_input(path, files)
        named = options.with_overrides(name=names[k] if names else path.name.split(".")[0])
        shapes = shared if recorded[k] is None else recorded[k]
        if files not in fingerprints:
            fingerprints[files] = ledger.fingerprint_files(files)
        job = ConvertJob.prepare(
            volume,
            named,
            is_hdf5=False,
            existing_unit_shapes=shapes,
            warn=not k,
            fingerprint=fingerprints[files],
        )
        jobs.append(job)
    first = jobs[0]
    for job, path in zip(jobs[1:], paths[1:], strict=True):
        same_plan = job.plan.unit_shapes() == first.plan.unit_shapes()
        if (job.plan.shape, job.out_dtype) != (first.plan.shape, first.out_dtype) or not same_plan:
            raise OptionError(
                f"{path}: its volume or plan differs from {paths[0]}'s (convert_many needs "
                "volumes of one shape and dtype, and outputs written with the same options)"
            )
    if not output.overwrite:
        for job, path in zip(jobs, paths, strict=True):
            job.check_changed_inputs(path)
    outcomes = zarr_target.run(
        list(zip(jobs, paths, strict=True)), run.task, output.overwrite, progress
    )
    fmt = f"OME-Zarr {_ngff(output.zarr_format)} (Zarr v{output.zarr_format})"
    return [
        _result(job, path, written, skipped, complete, started, fmt, run.task)
        for job, path, (written, skipped, complete) in zip(jobs, paths, outcomes, strict=True)
    ]


def _result(
    job: ConvertJob,
    path: Path,
    written: list[int],
    skipped: int,
    complete: bool,
    started: float,
    fmt: str,
    task: TaskSlice | None,
) -> ConvertResult:
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
        format=fmt,
        params=job.record.params,
        task_count=1 if task is None else task.count,
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
    output = ledger.Hdf5Ledger(path) if is_hdf5 else ledger.ZarrLedger(path)
    record = output.read_record()
    if record is None or record.command != "convert":
        return None
    shapes = record.params.get("unit_shapes")
    return [list(map(int, s)) for s in shapes] if isinstance(shapes, list) else None
