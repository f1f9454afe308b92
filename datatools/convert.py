"""Convert any volume datatools opens into a chunked OME-Zarr image (or an HDF5 dataset).

The work is a plan of units: boxes of the output aligned to its chunk grid (shard grid when
sharded), so no two units write the same chunk or shard. Each unit reads its box from the source
once, encodes its chunks with the array's own codec and stores the bytes; the ledger inside the
output records the unit afterwards. A rerun with the same options skips recorded units; the OME
metadata and completion marker are written when the last unit is recorded.

Two units are in flight (one being read while the previous one's chunks are encoded on
``workers`` threads), so peak memory is about ``UNITS_IN_FLIGHT * 2 * unit_bytes`` (input plus a
cast copy) plus ``workers`` encoded chunks. ``unit_bytes`` is 64 MiB by default, or
``memory_limit / (2 * UNITS_IN_FLIGHT)``, but at least one chunk (shard) row that covers whole
source strips or chunks, so each source byte is decoded once. It never grows with the volume.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import zarr

from datatools import __version__, target
from datatools.codecs import Codec, parse_codec
from datatools.errors import OptionError, ResumeMismatchError, TargetError, WriteError
from datatools.executor import TaskSlice, run_units
from datatools.geometry import (
    Box,
    RoiSpec,
    count_tiles,
    normalize_chunks,
    resolve_roi,
    spatial_axes,
    tile_box,
)
from datatools.ome_zarr import Placement, image_attributes, normalize_unit
from datatools.progress import progress_bar
from datatools.sources import OpenOptions, SourceSpec, Volume, open_volume, spec_text

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 64
DEFAULT_UNIT_BYTES = 64 * 2**20
UNITS_IN_FLIGHT = 3
HDF5_SUFFIXES = (".h5", ".hdf5")
LEVEL_PATH = "0"


def default_workers() -> int:
    """The number of cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class ConvertPlan:
    """The units of a conversion.

    Attributes:
        roi: the source box being converted (all axes, source voxels).
        chunks: output chunk shape.
        shards: output shard shape (a multiple of ``chunks``) or ``None``.
        unit_shape: shape of one unit, a multiple of the write block (shard or chunk).
    """

    roi: Box
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    unit_shape: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        """Output array shape."""
        return self.roi.shape

    @property
    def block(self) -> tuple[int, ...]:
        """The unit of writing: a shard when sharded, else a chunk."""
        return self.shards or self.chunks

    @property
    def n_units(self) -> int:
        return count_tiles(Box.from_shape(self.shape), self.unit_shape)

    def unit(self, index: int) -> Box:
        """Unit ``index`` (C order) as a box of the output."""
        counts = [-(-s // u) for s, u in zip(self.shape, self.unit_shape, strict=True)]
        coords = np.unravel_index(index, counts)
        start = tuple(int(c) * u for c, u in zip(coords, self.unit_shape, strict=True))
        stop = tuple(
            min(a + u, s) for a, u, s in zip(start, self.unit_shape, self.shape, strict=True)
        )
        return Box(start, stop)


def plan_units(
    roi: Box,
    chunks: Sequence[int],
    shards: Sequence[int] | None,
    *,
    itemsize: int,
    unit_bytes: int,
    source_chunks: Sequence[int] | None = None,
) -> ConvertPlan:
    """Choose the unit shape: grow a write block along the last axes, then the earlier ones,
    while the unit stays within ``unit_bytes``; never split a source chunk (strip, tile) where
    that can be helped, so each source byte is decoded once."""
    block = tuple(shards or chunks)
    shape = roi.shape
    granule = list(block)
    if source_chunks is not None:
        for ax, (b, s) in enumerate(zip(block, source_chunks, strict=True)):
            granule[ax] = min(math.lcm(b, s), -(-shape[ax] // b) * b)
    unit = list(block)
    for ax in reversed(range(len(shape))):
        full = -(-shape[ax] // block[ax]) * block[ax]
        per = itemsize * math.prod(unit[:ax] + unit[ax + 1 :])
        fit = unit_bytes // per
        if fit >= full:
            unit[ax] = full
            continue
        unit[ax] = min(full, max(granule[ax], (fit // granule[ax]) * granule[ax]))
        break
    return ConvertPlan(roi, tuple(chunks), None if shards is None else tuple(shards), tuple(unit))


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion did.

    Attributes:
        target: the output path.
        shape, dtype, chunks, shards: the output array.
        units_total: units in the whole plan; ``units_written`` by this call;
            ``units_skipped`` already recorded by an earlier run (or other tasks).
        nbytes: uncompressed bytes written by this call.
        seconds: wall time of this call.
        complete: the output is finished (metadata and completion marker written).
    """

    target: Path
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
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
        lines = [
            f"{self.target}: {dims} {self.dtype}, chunks {' x '.join(map(str, self.chunks))}, "
            f"{self.format}, {state}",
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
    name: str | None = None,
    dataset: str = "data",
    open_options: OpenOptions | None = None,
    workers: int | None = None,
    memory_limit: int | None = None,
    task: TaskSlice | None = None,
    overwrite: bool = False,
    progress: bool = False,
    on_unit_done: Callable[[int], None] | None = None,
) -> ConvertResult:
    """Convert ``source`` (or its ROI) into an OME-Zarr image, or an HDF5 dataset for ``.h5``.

    Args:
        source: anything :func:`datatools.sources.open_volume` opens, or an open volume.
        target_path: output ``.zarr`` folder (OME-Zarr image, level array ``0``) or ``.h5`` file.
        roi: region of the source, half-open voxels (z, y, x); non-spatial axes kept whole.
        chunks: output chunk shape; one int = every spatial axis (channels: 1), clipped.
        shards: Zarr v3 shard shape, a multiple of ``chunks``; ``None`` for no sharding.
        codec: ``zstd``, ``blosc-zstd``, ``blosc-lz4``, ``gzip``, ``none`` (HDF5: ``gzip``,
            ``lzf``, ``none``; default there ``gzip``); ``level`` its compression level.
        zarr_format: 3 (OME-NGFF 0.5) or 2 (OME-NGFF 0.4, ``/`` chunk separator).
        voxel_size: physical voxel size per spatial axis (z, y, x); default from the source,
            else 1 with no unit. ``unit``: its OME-NGFF length unit (``nm``, ``um`` accepted).
        dtype: output dtype; only lossless casts unless ``allow_lossy_cast`` (then values are
            rounded and clipped to the dtype's range).
        name: image name in the metadata (default: the target's stem).
        dataset: HDF5 dataset path.
        open_options: level / series / gap choices for opening ``source``.
        workers: threads encoding chunks (default: cores). ``memory_limit``: bytes for data in
            flight; picks the unit size. Peak memory ~ ``3 * 2 * unit_bytes`` (module docs).
        task: run only this slice of the plan (job arrays); the last task to finish finalizes.
        overwrite: replace an existing output of datatools (never a foreign file or folder).
        progress: show a progress bar on stderr.
        on_unit_done: called with each unit's index after it is recorded (progress hooks).

    Raises:
        InputError, InputNotFoundError: the source cannot be read.
        OptionError, RoiError: invalid options (message names the option).
        TargetError, ResumeMismatchError: the target cannot be used or holds another run.
        WriteError: the disk refused a write (the output stays resumable).
    """
    started = time.perf_counter()
    target_path = Path(target_path)
    is_hdf5 = target_path.suffix.lower() in HDF5_SUFFIXES
    if task is not None and task.count > 1 and overwrite:
        raise OptionError(
            "--overwrite: cannot be combined with --task-count > 1 (a task would remove the "
            "others' work); remove the target first"
        )
    if is_hdf5 and task is not None and task.count > 1:
        raise OptionError(f"{target_path}: HDF5 has a single writer; --task-count needs Zarr")
    if zarr_format not in (2, 3):
        raise OptionError(f"--zarr-format {zarr_format}: must be 2 or 3")
    if isinstance(codec, str):
        codec = parse_codec(
            codec if not (is_hdf5 and codec == "zstd") else "gzip", level, hdf5=is_hdf5
        )
    volume = source if isinstance(source, Volume) else open_volume(source, open_options)
    try:
        job = _Job.prepare(
            volume,
            target_path,
            roi=roi,
            chunks=chunks,
            shards=shards,
            codec=codec,
            zarr_format=zarr_format,
            voxel_size=voxel_size,
            unit=unit,
            dtype=dtype,
            allow_lossy_cast=allow_lossy_cast,
            name=name or target_path.name.split(".")[0],
            workers=workers or default_workers(),
            memory_limit=memory_limit,
            is_hdf5=is_hdf5,
            existing_unit_shape=_existing_unit_shape(target_path, is_hdf5, overwrite),
        )
        if is_hdf5:
            written, skipped, complete = _run_hdf5(job, dataset, overwrite, progress, on_unit_done)
        else:
            written, skipped, complete = _run_zarr(job, task, overwrite, progress, on_unit_done)
        nbytes = sum(job.plan.unit(i).size for i in written) * job.out_dtype.itemsize
    finally:
        if not isinstance(source, Volume):
            volume.close()
    fmt = (
        "HDF5"
        if is_hdf5
        else ("OME-Zarr 0.5 (Zarr v3)" if zarr_format == 3 else "OME-Zarr 0.4 (Zarr v2)")
    )
    return ConvertResult(
        target=target_path,
        shape=job.plan.shape,
        dtype=str(job.out_dtype),
        chunks=job.plan.chunks,
        shards=job.plan.shards,
        units_total=job.plan.n_units,
        units_written=len(written),
        units_skipped=skipped,
        nbytes=nbytes,
        seconds=time.perf_counter() - started,
        complete=complete,
        format=fmt,
        params=job.record.params,
    )


def _existing_unit_shape(path: Path, is_hdf5: bool, overwrite: bool) -> tuple[int, ...] | None:
    """A resumed run keeps the unit shape of the run that created the output."""
    if overwrite:
        return None
    record: target.RunRecord | None = None
    if is_hdf5:
        for candidate in (_hdf5_partial(path), path):
            record = _hdf5_record(candidate)
            if record is not None:
                break
    elif target.is_ours(path):
        record = target.read_record(path)
    if record is None or record.command != "convert" or "unit_shape" not in record.params:
        return None
    return tuple(int(v) for v in record.params["unit_shape"])


@dataclass
class _Job:
    volume: Volume
    path: Path
    plan: ConvertPlan
    codec: Codec
    out_dtype: np.dtype[Any]
    allow_lossy_cast: bool
    zarr_format: int
    placement: Placement
    name: str
    workers: int
    record: target.RunRecord

    @classmethod
    def prepare(
        cls,
        volume: Volume,
        path: Path,
        *,
        roi: RoiSpec | Box | None,
        chunks: int | Sequence[int],
        shards: int | Sequence[int] | None,
        codec: Codec,
        zarr_format: int,
        voxel_size: Sequence[float] | None,
        unit: str | None,
        dtype: str | None,
        allow_lossy_cast: bool,
        name: str,
        workers: int,
        memory_limit: int | None,
        is_hdf5: bool,
        existing_unit_shape: tuple[int, ...] | None,
    ) -> _Job:
        box = resolve_roi(roi, volume.shape, volume.axes)
        chunk_shape = _chunk_shape(chunks, box.shape, volume.axes)
        shard_shape = None
        if shards is not None:
            if is_hdf5 or zarr_format == 2:
                raise OptionError("--shards: sharding needs a Zarr v3 target (--zarr-format 3)")
            shard_shape = _shard_shape(shards, chunk_shape, box.shape, volume.axes)
        out_dtype = _out_dtype(volume, dtype, allow_lossy_cast)
        placement = _placement(volume, voxel_size, unit).shifted(
            [s for s, a in zip(box.start, volume.axes, strict=True) if a in "zyx"]
        )
        workers = max(1, workers)
        unit_bytes = DEFAULT_UNIT_BYTES
        itemsize = max(volume.dtype.itemsize, out_dtype.itemsize)
        if memory_limit is not None:
            block_bytes = math.prod(shard_shape or chunk_shape) * itemsize
            needed = 2 * UNITS_IN_FLIGHT * block_bytes
            if memory_limit < needed:
                raise OptionError(
                    f"--memory-limit {memory_limit}: too small for the "
                    f"{'shards' if shard_shape else 'chunks'} in flight (needs >= {needed} "
                    "bytes; use smaller --chunks)"
                )
            unit_bytes = memory_limit // (2 * UNITS_IN_FLIGHT)
        if existing_unit_shape is not None and len(existing_unit_shape) == len(box.shape):
            plan = ConvertPlan(box, chunk_shape, shard_shape, existing_unit_shape)
        else:
            plan = plan_units(
                box,
                chunk_shape,
                shard_shape,
                itemsize=itemsize,
                unit_bytes=unit_bytes,
                source_chunks=volume.chunks,
            )
        params: dict[str, Any] = {
            "source": spec_text(volume.spec),
            "roi": box.to_text(),
            "chunks": list(chunk_shape),
            "shards": None if shard_shape is None else list(shard_shape),
            "codec": codec.to_dict(),
            "format": "hdf5" if is_hdf5 else f"zarr{zarr_format}",
            "dtype": str(out_dtype),
            "voxel_size": list(placement.voxel_size),
            "translation": list(placement.translation),
            "unit": placement.unit,
            "name": name,
            "unit_shape": list(plan.unit_shape),
            "units_total": plan.n_units,
        }
        return cls(
            volume=volume,
            path=path,
            plan=plan,
            codec=codec,
            out_dtype=out_dtype,
            allow_lossy_cast=allow_lossy_cast,
            zarr_format=zarr_format,
            placement=placement,
            name=name,
            workers=workers,
            record=target.RunRecord("convert", params),
        )

    def read_unit(self, index: int) -> tuple[int, Box, np.ndarray[Any, Any]]:
        """Read unit ``index`` (its output box) from the source, cast to the output dtype."""
        box = self.plan.unit(index)
        data = self.volume.read(box.shift(self.plan.roi.start))
        return index, box, _cast(data, self.out_dtype, self.allow_lossy_cast, self.volume.spec, box)

    @property
    def axes(self) -> str:
        return self.volume.axes


def _chunk_shape(chunks: int | Sequence[int], shape: Sequence[int], axes: str) -> tuple[int, ...]:
    if isinstance(chunks, int):
        if chunks <= 0:
            raise OptionError(f"--chunks {chunks}: every value must be > 0")
        per_axis = tuple(chunks if a in "zyx" else 1 for a in axes)
        return normalize_chunks(per_axis, shape)
    return normalize_chunks(chunks, shape)


def _shard_shape(
    shards: int | Sequence[int], chunks: tuple[int, ...], shape: Sequence[int], axes: str
) -> tuple[int, ...]:
    if isinstance(shards, int):
        values = tuple(shards if a in "zyx" else c for a, c in zip(axes, chunks, strict=True))
    else:
        values = tuple(shards)
        if len(values) != len(chunks):
            raise OptionError(
                f"--shards {','.join(map(str, values))}: give one value or {len(chunks)} values"
            )
    if any(v <= 0 for v in values):
        raise OptionError(f"--shards {','.join(map(str, values))}: every value must be > 0")
    bad = [(s, c) for s, c in zip(values, chunks, strict=True) if s % c]
    if bad:
        raise OptionError(
            f"--shards {','.join(map(str, values))}: not a multiple of the chunks "
            f"{','.join(map(str, chunks))}"
        )
    return tuple(min(s, -(-n // c) * c) for s, c, n in zip(values, chunks, shape, strict=True))


def _out_dtype(volume: Volume, dtype: str | None, allow_lossy_cast: bool) -> np.dtype[Any]:
    if dtype is None:
        return volume.dtype
    try:
        out = np.dtype(dtype)
    except TypeError as exc:
        raise OptionError(
            f"--dtype {dtype}: not a numpy dtype (e.g. uint8, uint16, float32)"
        ) from exc
    if out.kind not in "biuf":
        raise OptionError(f"--dtype {dtype}: datatools writes bool, integer or float data")
    return out


def _cast(
    data: np.ndarray[Any, Any],
    dtype: np.dtype[Any],
    lossy: bool,
    spec: str,
    box: Box,
) -> np.ndarray[Any, Any]:
    if data.dtype == dtype:
        return data
    if np.can_cast(data.dtype, dtype, "safe"):
        return data.astype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if lossy:
            values = np.rint(data) if data.dtype.kind == "f" else data
            clipped: np.ndarray[Any, Any] = np.clip(values, info.min, info.max)
            return clipped.astype(dtype)
        bad = (data < info.min) | (data > info.max)
        if data.dtype.kind == "f":
            bad |= np.isnan(data) | (data != np.rint(data))
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            voxel = tuple(a + w for a, w in zip(box.start, where, strict=True))
            raise OptionError(
                f"--dtype {dtype}: {spec} holds {data[where]!r} at output voxel {voxel}, which "
                f"{dtype} cannot hold exactly (add --allow-lossy-cast to round and clip)"
            )
        return data.astype(dtype)
    converted = data.astype(dtype)
    if not lossy and not np.array_equal(converted.astype(data.dtype), data):
        raise OptionError(
            f"--dtype {dtype}: casting {data.dtype} data from {spec} to {dtype} loses precision "
            "(add --allow-lossy-cast)"
        )
    return converted


def _placement(volume: Volume, voxel_size: Sequence[float] | None, unit: str | None) -> Placement:
    n = len(spatial_axes(volume.axes))
    if voxel_size is not None:
        values = tuple(float(v) for v in voxel_size)
        if len(values) == 1:
            values = values * n
        if len(values) != n or any(v <= 0 for v in values):
            raise OptionError(
                f"--voxel-size {','.join(map(str, voxel_size))}: give 1 or {n} positive values "
                f"({','.join(spatial_axes(volume.axes))})"
            )
    elif volume.voxel_size is not None:
        values = volume.voxel_size
    else:
        log.warning(
            "%s: no voxel size in the source; writing scale 1 (give --voxel-size and --unit)",
            volume.spec,
        )
        values = (1.0,) * n
    unit_name = normalize_unit(unit) if unit is not None else normalize_unit(volume.unit)
    translation = volume.translation if volume.translation is not None else (0.0,) * n
    if voxel_size is not None and volume.voxel_size is not None:
        translation = tuple(
            t / old * new
            for t, old, new in zip(translation, volume.voxel_size, values, strict=True)
        )
    return Placement(values, tuple(translation), unit_name)


# --- Zarr -----------------------------------------------------------------------------------


def _create_zarr(job: _Job) -> Callable[[Path], None]:
    def populate(tmp: Path) -> None:
        group = zarr.create_group(tmp, zarr_format=job.zarr_format)  # type: ignore[arg-type]
        group.attrs.update({"datatools": _provenance(job, complete=False)})
        kwargs: dict[str, Any] = {}
        if job.zarr_format == 3:
            kwargs["compressors"] = job.codec.zarr_compressors(job.out_dtype)
            kwargs["dimension_names"] = list(job.axes)
            if job.plan.shards is not None:
                kwargs["shards"] = job.plan.shards
        else:
            kwargs["compressors"] = job.codec.encoder(job.out_dtype)
            kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
        group.create_array(
            LEVEL_PATH,
            shape=job.plan.shape,
            chunks=job.plan.chunks,
            dtype=job.out_dtype,
            fill_value=0,
            **kwargs,
        )

    return populate


def _provenance(job: _Job, *, complete: bool) -> dict[str, Any]:
    return {"version": __version__, "command": "convert", "complete": complete, **job.record.params}


class _ChunkWriter:
    """Encodes chunks with the array's codec and stores them as files, atomically."""

    def __init__(self, job: _Job, pool: ThreadPoolExecutor) -> None:
        self.job = job
        self.pool = pool
        self.encoder = job.codec.encoder(job.out_dtype)
        array = zarr.open_array(job.path / LEVEL_PATH, mode="r+")
        self.array = array
        self.root = job.path / LEVEL_PATH
        self.encode_key = array.metadata.encode_chunk_key
        self.chunk_bytes = math.prod(job.plan.chunks) * job.out_dtype.itemsize
        self.dtype = job.out_dtype.newbyteorder("<")

    def write_unit(self, index: int) -> int:
        _, box, data = self.job.read_unit(index)
        if self.job.plan.shards is not None:
            self.array[box.slices()] = data
        else:
            chunks = list(tile_box(box, self.job.plan.chunks))
            views = [data[chunk.relative_to(box.start).slices()] for chunk in chunks]
            for _ in self.pool.map(self._write_chunk, chunks, views):
                pass
        return index

    def _write_chunk(self, chunk: Box, data: np.ndarray[Any, Any]) -> None:
        key = self.encode_key(
            tuple(a // c for a, c in zip(chunk.start, self.job.plan.chunks, strict=True))
        )
        path = self.root / key
        if not data.any():
            path.unlink(missing_ok=True)
            return
        if data.shape != self.job.plan.chunks:
            padded = np.zeros(self.job.plan.chunks, dtype=self.dtype)
            padded[tuple(slice(0, s) for s in data.shape)] = data
            data = padded
        raw = np.ascontiguousarray(data, dtype=self.dtype)
        payload = raw.data if self.encoder is None else memoryview(self.encoder.encode(raw))
        _write_atomic(path, payload.cast("B"))


def _write_atomic(path: Path, payload: memoryview) -> None:
    tmp = path.parent / f".{path.name}.{threading.get_ident()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = payload
        while view:
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _run_zarr(
    job: _Job,
    task: TaskSlice | None,
    overwrite: bool,
    progress: bool,
    on_unit_done: Callable[[int], None] | None,
) -> tuple[list[int], int, bool]:
    how = target.claim(job.path, job.record, overwrite=overwrite, populate=_create_zarr(job))
    if how == "resumed":
        target.clean_stray_files(job.path / LEVEL_PATH)
    ledger = target.Ledger(job.path)
    done = ledger.done()
    mine = range(job.plan.n_units) if task is None else task.select(job.plan.n_units)
    todo = [i for i in mine if i not in done]
    unit_bytes = math.prod(job.plan.unit_shape) * job.out_dtype.itemsize
    written: list[int] = []
    readers = min(2, job.workers)
    with (
        ThreadPoolExecutor(job.workers, thread_name_prefix="datatools-encode") as pool,
        progress_bar(
            len(todo) * unit_bytes // 10**6, f"convert {job.path.name}", enabled=progress, unit="MB"
        ) as bar,
    ):
        writer = _ChunkWriter(job, pool)
        try:
            for index in run_units(writer.write_unit, todo, workers=readers):
                ledger.mark(index)
                written.append(index)
                bar.update(unit_bytes / 1e6)
                if on_unit_done is not None:
                    on_unit_done(index)
        except OSError as exc:
            raise WriteError(
                f"{job.path}: write failed ({exc.strerror or exc}); rerun the same command to "
                "resume"
            ) from exc
    complete = _finalize_zarr(job, ledger)
    return written, len(mine) - len(todo), complete


def _finalize_zarr(job: _Job, ledger: target.Ledger) -> bool:
    if len(ledger.done()) < job.plan.n_units:
        return False
    if target.is_complete(job.path):
        return True
    group = zarr.open_group(job.path, mode="r+")
    attrs = image_attributes(
        job.axes, [(LEVEL_PATH, job.placement)], name=job.name, zarr_format=job.zarr_format
    )
    attrs["datatools"] = _provenance(job, complete=True)
    group.attrs.update(attrs)
    target.mark_complete(job.path)
    return True


# --- HDF5 -----------------------------------------------------------------------------------

H5_RECORD_ATTR = "datatools"
H5_LEDGER = "_datatools_ledger"


def _hdf5_partial(path: Path) -> Path:
    return path.with_name(path.name + target.PARTIAL_SUFFIX)


def _hdf5_record(path: Path) -> target.RunRecord | None:
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as fh:
            raw = fh.attrs.get(H5_RECORD_ATTR)
    except OSError:
        return None
    if raw is None:
        return None
    return target.RunRecord.from_dict(json.loads(raw))


def _run_hdf5(
    job: _Job,
    dataset: str,
    overwrite: bool,
    progress: bool,
    on_unit_done: Callable[[int], None] | None,
) -> tuple[list[int], int, bool]:
    path = job.path
    partial = _hdf5_partial(path)
    target.check_target_location(path)
    for candidate in (path, partial):
        if not candidate.exists():
            continue
        record = _hdf5_record(candidate)
        if record is None:
            raise TargetError(
                f"{candidate}: exists and is not an output of datatools (choose another target)"
            )
        if overwrite:
            candidate.unlink()
            continue
        differences = target.diff_params(record, job.record)
        if differences:
            raise ResumeMismatchError(
                f"{candidate}: exists from a run with other options ({differences}); rerun with "
                "the same options to resume, or add --overwrite to replace it"
            )
        if candidate == path:
            return [], job.plan.n_units, True
    try:
        fh = h5py.File(partial, "a")
    except OSError as exc:
        raise WriteError(f"{partial}: cannot open for writing ({exc})") from exc
    unit_bytes = math.prod(job.plan.unit_shape) * job.out_dtype.itemsize
    written: list[int] = []
    with fh:
        if H5_RECORD_ATTR not in fh.attrs:
            fh.attrs[H5_RECORD_ATTR] = json.dumps(job.record.to_dict())
            ds = fh.create_dataset(
                dataset,
                shape=job.plan.shape,
                dtype=job.out_dtype,
                chunks=job.plan.chunks,
                **job.codec.hdf5_kwargs(),
            )
            ds.attrs["axes"] = job.axes
            ds.attrs["voxel_size"] = list(job.placement.voxel_size)
            ds.attrs["translation"] = list(job.placement.translation)
            ds.attrs["unit"] = job.placement.unit or ""
            fh.create_dataset(H5_LEDGER, shape=(job.plan.n_units,), dtype="uint8")
        ds = fh[dataset]
        ledger = fh[H5_LEDGER]
        done = np.asarray(ledger[:]).astype(bool)
        todo = [i for i in range(job.plan.n_units) if not done[i]]
        with progress_bar(
            len(todo) * unit_bytes // 10**6, f"convert {path.name}", enabled=progress, unit="MB"
        ) as bar:
            try:
                readers = min(2, job.workers)
                for index, box, data in run_units(job.read_unit, todo, workers=readers):
                    ds[box.slices()] = data
                    ledger[index] = 1
                    fh.flush()
                    written.append(index)
                    bar.update(unit_bytes / 1e6)
                    if on_unit_done is not None:
                        on_unit_done(index)
            except OSError as exc:
                raise WriteError(f"{partial}: write failed ({exc}); rerun to resume") from exc
        del fh[H5_LEDGER]
    os.replace(partial, path)
    return written, job.plan.n_units - len(todo), True
