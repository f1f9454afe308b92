"""One fixed-size crop per labelled object, stacked as ``(i, c, z, y, x)`` with ids and statistics.

Two streaming passes over volumes larger than memory:

1. Statistics (:mod:`datatools.label_stats`): the labels are read slab by slab; per id the voxel
   count, bounding box and centroid. The filters (``ids``, ``min_voxels``, ``max_voxels``,
   ``exclude_border``) and the edge mode then fix the plan: the instances, ids ascending, and
   one window each.
2. Crops: a batch of consecutive chunk rows (instances in id order) is filled region by region
   (regions tile the volume; each window belongs to the region holding the start of the voxels
   it needs), then written as whole chunk rows through :mod:`datatools.writers` while the next
   batch is filled. A region is read whole when that decodes fewer source chunks than reading
   its windows one by one, and whole regions stay in a cache of ``memory_limit / 2`` bytes.
   When ids follow position (labels numbered in scan order), or the volume fits the cache, each
   image chunk is read about once. With ids scattered in space over a larger volume, each batch
   (``memory_limit / 4`` bytes of crops) reads what its windows touch again: raise
   ``memory_limit`` to cut the number of batches.

Memory: two crop buffers of ``memory_limit / 4`` bytes, the region cache (``memory_limit / 2``),
and the per-instance statistics (about 120 bytes per labelled instance in 3D); pass 1 streams
label slabs of ``memory_limit / (2 x workers)`` bytes.

Window placement: a window of ``size`` voxels per spatial axis has its voxel ``size // 2`` on the
centroid rounded half up, so it starts at ``floor(centroid + 0.5) - size // 2``. Where it crosses
the border of the volume (or ROI), ``edge`` decides as in :mod:`datatools.edges`: ``constant``
(zeros), ``symmetric`` / ``reflect`` (mirrored, as ``np.pad``), ``shift`` (window moved inside),
``drop`` (instance skipped). Masks and ``zero_others`` / ``zero_background`` use the labels
window read the same way, so they match the image crop voxel for voxel.

Output (a Zarr group, v3 or v2, or an HDF5 file ``.h5`` / ``.hdf5``), chunked along ``i``:

- ``images`` ``(i, c, z, y, x)`` in the image dtype; 2D ``(i, c, y, x)``; c = 1 for one channel
- ``masks`` ``(i, 1, z, y, x)`` uint8, 1 on the instance inside its window (``masks=True``)
- ``instance_ids`` ``(i,)`` int64, ascending
- ``centroid`` ``(i, ndim)`` float64, mean voxel coordinate (z, y, x) in source voxels
- ``bbox`` ``(i, 2, ndim)`` int64, ``[start, stop)`` in source voxels
- ``voxel_count`` ``(i,)`` int64
- ``origins`` ``(i, ndim)`` int64, window start in source voxels (outside the volume where a
  padded window crosses the border)

The group attribute ``instances`` (HDF5: root attribute, JSON text) records the options, the
source specs, ``count``, ``voxel_size``, ``translation`` and ``unit``: the physical position of
a crop's voxel 0 is ``translation + origin * voxel_size``.

Resume: chunk rows are recorded as they are written. A rerun with the same options recomputes
the statistics, checks that the plan is the same (``count`` and ``plan_digest``), and writes only
the missing chunk rows; a rerun on a complete output returns at once. Other options are refused
unless ``overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import zarr

from datatools import __version__
from datatools import target as owned
from datatools.codecs import parse_codec
from datatools.edges import PAD_MODES, EdgeMode, check_edge, mirror_index, place_origins, read_box
from datatools.errors import InputError, OptionError, ResumeMismatchError, TargetError
from datatools.executor import run_units
from datatools.geometry import Box, RoiSpec, resolve_roi, spatial_axes
from datatools.label_stats import LabelStats, label_stats, read_spatial
from datatools.progress import progress_bar
from datatools.sources import OpenOptions, SourceSpec, Volume, open_volume, spec_text
from datatools.writers import HDF5_SUFFIXES, ArraySpec, ArrayWriter, open_writer

Array = np.ndarray[Any, Any]

ATTRIBUTE = "instances"
DEFAULT_MEMORY = 512 * 2**20
CHUNK_BYTES = 8 * 2**20
MAX_CHUNK_ROWS = 256
IMAGE_AXES = ("zyx", "czyx", "yx", "cyx")
CHECKED = (
    "image", "labels", "roi", "size", "edge", "channels", "masks", "zero_others",
    "zero_background", "ids", "min_voxels", "max_voxels", "exclude_border", "chunk_rows",
    "format", "codec", "level",
)  # fmt: skip
"""Options a rerun must repeat to resume an output."""


@dataclass(frozen=True)
class InstancePlan:
    """The instances to crop, ids ascending, and their windows (source voxels, C order).

    Attributes:
        stats: count, bounding box and centroid of each kept instance.
        origins: ``(n, ndim)`` int64 window starts.
        labelled: instances in the labels (inside the ROI) before filtering.
        removed: instances each filter removed, in the order applied.
    """

    stats: LabelStats
    origins: Array
    labelled: int
    removed: dict[str, int]

    @property
    def n(self) -> int:
        return self.stats.n

    def digest(self) -> str:
        """A short hash of ids and origins: a rerun resumes only the same plan."""
        h = hashlib.sha256(self.stats.ids.astype("<i8").tobytes())
        h.update(self.origins.astype("<i8").tobytes())
        return h.hexdigest()[:16]


def plan_instances(
    stats: LabelStats,
    bounds: Box,
    size: Sequence[int],
    edge: str,
    *,
    ids: Sequence[int] | None = None,
    min_voxels: int = 0,
    max_voxels: int | None = None,
    exclude_border: bool = False,
    labels_name: str = "labels",
) -> InstancePlan:
    """Filter instances and place their windows.

    Args:
        stats: statistics of the labels inside ``bounds``.
        bounds: the spatial region treated as the volume (the ROI), voxels.
        size: window extent per spatial axis, voxels.
        edge: :data:`datatools.edges.EDGE_MODES` value; ``shift`` moves windows inside
            ``bounds``, ``drop`` removes instances whose window crosses it.
        ids: keep only these ids (each must occur).
        min_voxels, max_voxels: keep instances with ``min_voxels <= count <= max_voxels``.
        exclude_border: remove instances whose bounding box touches the border of ``bounds``.
        labels_name: the labels' path, for messages.

    Raises:
        InputError: the labels hold no instance.
        OptionError: ``ids`` names ids that do not occur (listed), no instance is left after
            the filters, or ``shift`` with a window larger than ``bounds``.
    """
    where = "" if bounds.start == (0,) * bounds.ndim else f" inside the ROI {bounds.to_text()}"
    if stats.n == 0:
        raise InputError(f"{labels_name}: holds no instances{where} (every voxel is 0)")
    labelled = stats.n
    removed: dict[str, int] = {}

    def apply(name: str, keep: Array) -> None:
        nonlocal stats
        removed[name] = int(stats.n - np.count_nonzero(keep))
        stats = stats.select(keep)

    if ids is not None:
        wanted = np.unique(np.asarray(ids, dtype=np.int64))
        missing = np.setdiff1d(wanted, stats.ids)
        if missing.size:
            shown = ", ".join(str(int(v)) for v in missing[:20])
            more = f" and {missing.size - 20} more" if missing.size > 20 else ""
            raise OptionError(
                f"{labels_name}: --ids names ids that do not occur{where}: {shown}{more}"
            )
        apply("ids", np.isin(stats.ids, wanted))
    if min_voxels > 0:
        apply("min_voxels", stats.voxel_count >= min_voxels)
    if max_voxels is not None:
        apply("max_voxels", stats.voxel_count <= max_voxels)
    if exclude_border:
        start = np.asarray(bounds.start, np.int64)
        stop = np.asarray(bounds.stop, np.int64)
        touching = np.any((stats.bbox_start == start) | (stats.bbox_stop == stop), axis=1)
        apply("exclude_border", ~touching)
    size_arr = np.asarray(size, np.int64)
    origins = np.floor(stats.centroid + 0.5).astype(np.int64) - size_arr // 2
    origins, keep = place_origins(origins, tuple(int(s) for s in size), bounds, edge)
    if edge == "drop":
        origins = origins[keep]
        apply("edge_drop", keep)
    if stats.n == 0:
        shown = ", ".join(f"{name} {count}" for name, count in removed.items() if count)
        raise OptionError(
            f"{labels_name}: no instances left after filters ({labelled} labelled{where}; "
            f"removed by {shown}) (relax the filters)"
        )
    return InstancePlan(stats, origins, labelled, removed)


@dataclass(frozen=True)
class InstanceResult:
    """What :func:`extract_instances` did.

    Attributes:
        target: the output path.
        count: instances in the output (rows along ``i``).
        labelled: instances in the labels (inside the ROI) before filtering.
        removed: instances each filter removed, in the order applied.
        size: window extent per spatial axis; ``channels`` the output's c.
        chunk_rows: rows per chunk along ``i``.
        rows_written: rows written by this call; ``rows_skipped`` by earlier runs.
        seconds: wall time of this call.
        complete: the output is finished.
        format: ``zarr3``, ``zarr2`` or ``hdf5``.
    """

    target: Path
    count: int
    labelled: int
    removed: dict[str, int]
    size: tuple[int, ...]
    channels: int
    chunk_rows: int
    rows_written: int
    rows_skipped: int
    seconds: float
    complete: bool
    format: str
    params: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """A few lines for the terminal."""
        window = " x ".join(map(str, self.size))
        state = "complete" if self.complete else "INCOMPLETE"
        rate = self.rows_written / self.seconds if self.seconds > 0 else 0.0
        filters = ", ".join(f"{k} {v}" for k, v in self.removed.items() if v) or "none"
        lines = [
            f"{self.target}: {self.count} instances of {self.channels} x {window}, "
            f"{self.format}, {state}",
            f"  {self.labelled} labelled; removed by filters: {filters}",
            f"  {self.rows_written} written now, {self.rows_skipped} already done; "
            f"{self.seconds:.1f} s ({rate:.0f} instances/s)",
        ]
        return "\n".join(lines)


def extract_instances(
    image: SourceSpec | Volume,
    labels: SourceSpec | Volume,
    target: str | Path,
    *,
    size: int | Sequence[int],
    masks: bool = False,
    zero_others: bool = False,
    zero_background: bool = False,
    edge: str = "constant",
    ids: Sequence[int] | None = None,
    min_voxels: int = 0,
    max_voxels: int | None = None,
    exclude_border: bool = False,
    channels: Sequence[int] | None = None,
    roi: RoiSpec | Box | None = None,
    chunk_rows: int | None = None,
    codec: str | None = None,
    level: int | None = None,
    zarr_format: int = 3,
    open_options: OpenOptions | None = None,
    memory_limit: int | None = None,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = False,
) -> InstanceResult:
    """Crop a fixed-size window around every instance of ``labels`` from ``image``.

    Args:
        image: ``(z, y, x)``, ``(c, z, y, x)``, ``(y, x)`` or ``(c, y, x)``; anything
            :func:`datatools.sources.open_volume` opens, or an open volume.
        labels: integer labels with the image's spatial shape; 0 is background, ids need not be
            contiguous.
        target: output ``.zarr`` group or ``.h5`` / ``.hdf5`` file (layout: module docs).
        size: window extent in voxels; one int for every spatial axis, or one per axis
            (z, y, x).
        masks: add ``masks`` ``(i, 1, *size)`` uint8, 1 where the instance is.
        zero_others: set voxels of other instances in the window to 0.
        zero_background: set every voxel that is not the instance to 0 (implies the above).
        edge: ``constant`` (zeros), ``symmetric``, ``reflect``, ``shift`` or ``drop``.
        ids: crop only these ids (each must occur in the labels).
        min_voxels, max_voxels: crop instances with ``min_voxels <= voxels <= max_voxels``.
        exclude_border: skip instances whose bounding box touches the volume's (ROI's) border.
        channels: channel indices of a multichannel image to keep, in this order.
        roi: region of the volume, half-open voxels (z, y, x); instances are measured inside it
            and it is the border for ``edge``; coordinates stay those of the source.
        chunk_rows: instances per chunk along ``i`` (default: about 8 MiB of crops, at most 256).
        codec: ``zstd`` (Zarr default), ``blosc-zstd``, ``blosc-lz4``, ``gzip`` (HDF5 default),
            ``lzf``, ``none``; ``level`` its compression level.
        zarr_format: 3 (default) or 2.
        open_options: level / series / gap choices for opening ``image`` and ``labels``.
        memory_limit: bytes for data in flight (default 512 MiB): two alternating crop
            buffers of a quarter each, half for image (and labels) regions; label slabs of
            ``memory_limit / (2 x workers)`` in pass 1.
        workers: threads reading slabs and encoding chunks.
        overwrite: replace an existing output of datatools (never a foreign file or folder).
        progress: show progress bars on stderr.

    Returns:
        Counts, filters and timing. Peak memory: about ``memory_limit`` plus the per-instance
        statistics (about 120 bytes per labelled instance for 3D labels).

    Raises:
        InputError, InputNotFoundError: an input cannot be read; labels that are not integers,
            or whose spatial shape differs from the image's; no instances.
        OptionError, RoiError: invalid options; ``ids`` that do not occur (listed); no instance
            left after the filters.
        TargetError, ResumeMismatchError: the target exists and is not ours, or holds another
            run.
        WriteError: the disk refused a write (the output stays resumable).
    """
    started = time.perf_counter()
    path = Path(target)
    image_vol = image if isinstance(image, Volume) else open_volume(image, open_options)
    try:
        labels_vol = labels if isinstance(labels, Volume) else open_volume(labels, open_options)
        try:
            job = _Job.prepare(
                image_vol,
                labels_vol,
                path,
                size=size,
                masks=masks,
                zero_others=zero_others,
                zero_background=zero_background,
                edge=edge,
                ids=ids,
                min_voxels=min_voxels,
                max_voxels=max_voxels,
                exclude_border=exclude_border,
                channels=channels,
                roi=roi,
                chunk_rows=chunk_rows,
                codec=codec,
                level=level,
                zarr_format=zarr_format,
                memory_limit=DEFAULT_MEMORY if memory_limit is None else memory_limit,
                workers=max(1, workers),
            )
            return job.run(overwrite=overwrite, progress=progress, started=started)
        finally:
            if not isinstance(labels, Volume):
                labels_vol.close()
    finally:
        if not isinstance(image, Volume):
            image_vol.close()


def _normalize_size(size: int | Sequence[int], spatial: str) -> tuple[int, ...]:
    values = (size,) if isinstance(size, int) else tuple(int(s) for s in size)
    text = ",".join(map(str, values))
    if len(values) not in (1, len(spatial)):
        raise OptionError(
            f"--size {text}: {len(values)} values for an image with {len(spatial)} spatial "
            f"axes ({','.join(spatial)}) (give 1 or {len(spatial)} values)"
        )
    if any(v <= 0 for v in values):
        raise OptionError(f"--size {text}: every value must be > 0")
    return values * len(spatial) if len(values) == 1 else values


def _check_inputs(image: Volume, labels: Volume) -> None:
    if image.axes not in IMAGE_AXES:
        raise InputError(
            f"{image.spec}: axes ({','.join(image.axes)}) are not (z,y,x), (c,z,y,x), (y,x) or "
            "(c,y,x) (instances need a 2D or 3D image, optionally with channels)"
        )
    spatial = spatial_axes(image.axes)
    if labels.dtype.kind not in "iu":
        raise InputError(
            f"{labels.spec}: labels have dtype {labels.dtype} (instance labels must be integers, "
            "0 = background)"
        )
    image_shape = _spatial_shape(image)
    labels_shape = _spatial_shape(labels)
    extra = [n for n, a in zip(labels.shape, labels.axes, strict=True) if a not in "zyx"]
    if (
        spatial_axes(labels.axes) != spatial
        or labels_shape != image_shape
        or any(n != 1 for n in extra)
    ):
        raise InputError(
            f"{labels.spec}: labels shape {_dims(labels.shape)} ({','.join(labels.axes)}) does "
            f"not match the spatial shape {_dims(image_shape)} ({','.join(spatial)}) of the "
            f"image {image.spec} (give labels of the same volume)"
        )


def _spatial_shape(volume: Volume) -> tuple[int, ...]:
    return tuple(n for n, a in zip(volume.shape, volume.axes, strict=True) if a in "zyx")


def _dims(shape: Sequence[int]) -> str:
    return " x ".join(map(str, shape))


def _check_channels(channels: Sequence[int] | None, count: int, spec: str) -> tuple[int, ...]:
    if channels is None:
        return tuple(range(count))
    chosen = tuple(int(c) for c in channels)
    text = ",".join(map(str, chosen))
    if not chosen or any(not 0 <= c < count for c in chosen):
        raise OptionError(
            f"--channels {text}: {spec} has {count} channel{'s' if count > 1 else ''} "
            f"(indices 0..{count - 1})"
        )
    if len(set(chosen)) != len(chosen):
        raise OptionError(f"--channels {text}: a channel is named twice")
    return chosen


def _chunk_rows(chunk_rows: int | None, row_bytes: int, memory_limit: int) -> int:
    """Rows per chunk: as given, else the largest power of two with crops of at most
    ``CHUNK_BYTES`` (at most ``MAX_CHUNK_ROWS``)."""
    if chunk_rows is not None:
        if isinstance(chunk_rows, bool) or chunk_rows < 1:
            raise OptionError(f"--chunk-rows {chunk_rows}: must be a positive number of rows")
        rows = int(chunk_rows)
    else:
        fit = max(1, min(MAX_CHUNK_ROWS, CHUNK_BYTES // max(1, row_bytes)))
        rows = 1 << (fit.bit_length() - 1)
    if rows * row_bytes > memory_limit // 4:
        raise OptionError(
            f"--memory-limit {memory_limit}: too small for one chunk row of crops "
            f"({rows} x {row_bytes} bytes; give at least {4 * rows * row_bytes} or lower "
            "--chunk-rows)"
        )
    return rows


@dataclass
class _Job:
    """Everything both passes need, checked before anything is written."""

    image: Volume
    labels: Volume
    path: Path
    bounds: Box
    size: tuple[int, ...]
    edge: EdgeMode
    channels: tuple[int, ...]
    masks: bool
    zero_others: bool
    zero_background: bool
    filters: dict[str, Any]
    chunk_rows: int
    codec: str
    level: int | None
    zarr_format: int
    memory_limit: int
    workers: int
    params: dict[str, Any]

    @classmethod
    def prepare(
        cls,
        image: Volume,
        labels: Volume,
        path: Path,
        *,
        size: int | Sequence[int],
        masks: bool,
        zero_others: bool,
        zero_background: bool,
        edge: str,
        ids: Sequence[int] | None,
        min_voxels: int,
        max_voxels: int | None,
        exclude_border: bool,
        channels: Sequence[int] | None,
        roi: RoiSpec | Box | None,
        chunk_rows: int | None,
        codec: str | None,
        level: int | None,
        zarr_format: int,
        memory_limit: int,
        workers: int,
    ) -> _Job:
        _check_inputs(image, labels)
        spatial = spatial_axes(image.axes)
        window = _normalize_size(size, spatial)
        mode = check_edge(edge)
        if zarr_format not in (2, 3):
            raise OptionError(f"--zarr-format {zarr_format}: must be 2 or 3")
        if min_voxels < 0:
            raise OptionError(f"--min-voxels {min_voxels}: must be >= 0")
        if max_voxels is not None and max_voxels < max(1, min_voxels):
            raise OptionError(
                f"--max-voxels {max_voxels}: must be >= 1 and >= --min-voxels {min_voxels}"
            )
        if memory_limit <= 0:
            raise OptionError(f"--memory-limit {memory_limit}: must be > 0")
        box = resolve_roi(roi, image.shape, image.axes)
        bounds = Box(
            tuple(a for a, ax in zip(box.start, image.axes, strict=True) if ax in spatial),
            tuple(b for b, ax in zip(box.stop, image.axes, strict=True) if ax in spatial),
        )
        n_channels = image.shape[0] if image.axes[0] == "c" else 1
        chosen = _check_channels(channels, n_channels, image.spec)
        row_bytes = (len(chosen) * image.dtype.itemsize + (1 if masks else 0)) * math.prod(window)
        rows = _chunk_rows(chunk_rows, row_bytes, memory_limit)
        hdf5 = path.suffix.lower() in HDF5_SUFFIXES
        chosen_codec = parse_codec(codec or ("gzip" if hdf5 else "zstd"), level, hdf5=hdf5)
        filters: dict[str, Any] = {
            "ids": None if ids is None else sorted({int(v) for v in ids}),
            "min_voxels": int(min_voxels),
            "max_voxels": None if max_voxels is None else int(max_voxels),
            "exclude_border": bool(exclude_border),
        }
        params: dict[str, Any] = {
            "image": spec_text(image.spec),
            "labels": spec_text(labels.spec),
            "roi": bounds.to_text(),
            "size": list(window),
            "edge": mode,
            "channels": None if channels is None else list(chosen),
            "masks": bool(masks),
            "zero_others": bool(zero_others),
            "zero_background": bool(zero_background),
            **filters,
            "chunk_rows": rows,
            "format": "hdf5" if hdf5 else f"zarr{zarr_format}",
            "codec": chosen_codec.name,
            "level": chosen_codec.effective_level,
        }
        return cls(
            image=image,
            labels=labels,
            path=path,
            bounds=bounds,
            size=window,
            edge=mode,
            channels=chosen,
            masks=masks,
            zero_others=zero_others,
            zero_background=zero_background,
            filters=filters,
            chunk_rows=rows,
            codec=chosen_codec.name,
            level=chosen_codec.effective_level,
            zarr_format=zarr_format,
            memory_limit=memory_limit,
            workers=workers,
            params=params,
        )

    @property
    def hdf5(self) -> bool:
        return bool(self.params["format"] == "hdf5")

    @property
    def zeroing(self) -> bool:
        return self.zero_others or self.zero_background

    @property
    def row_bytes(self) -> int:
        """Bytes of one instance's crops in the batch buffer (image, and mask)."""
        voxel = len(self.channels) * self.image.dtype.itemsize + (1 if self.masks else 0)
        return voxel * math.prod(self.size)

    @property
    def spatial(self) -> str:
        """Spatial axis letters, ``"zyx"`` or ``"yx"``."""
        return spatial_axes(self.image.axes)

    @property
    def volume_shape(self) -> tuple[int, ...]:
        """Spatial shape of the image (and labels), voxels."""
        return _spatial_shape(self.image)

    @property
    def slab_bytes(self) -> int:
        """Budget of one slab (region) being read; ``workers`` of them are in flight."""
        return max(1, self.memory_limit // (2 * self.workers))

    def run(self, *, overwrite: bool, progress: bool, started: float) -> InstanceResult:
        stored = None if overwrite else _stored(self.path)
        if stored is not None:
            _check_resume(self.path, stored, self.params)
            if stored.get("complete"):
                return self._result(stored, written=0, skipped=int(stored["count"]), t0=started)
        stats = label_stats(
            self.labels,
            self.bounds,
            slab_bytes=self.slab_bytes,
            workers=self.workers,
            progress=progress,
        )
        plan = plan_instances(
            stats,
            self.bounds,
            self.size,
            self.edge,
            ids=self.filters["ids"],
            min_voxels=self.filters["min_voxels"],
            max_voxels=self.filters["max_voxels"],
            exclude_border=self.filters["exclude_border"],
            labels_name=self.labels.spec,
        )
        attrs = self._attributes(plan)
        if stored is not None:
            _check_resume(self.path, stored, attrs, keys=("count", "plan_digest"))
        else:
            self._create(plan.n, attrs, overwrite=overwrite)
        with self._open(plan.n, append=True) as writer:
            written, skipped = _Cropper(self, plan, writer).run(progress)
        return self._result(attrs, written=written, skipped=skipped, t0=started)

    def _layout(self) -> dict[str, ArraySpec]:
        spatial = self.spatial
        dims = ("i", "c", *spatial)
        ndim = len(spatial)
        arrays = {
            "images": ArraySpec((len(self.channels), *self.size), self.image.dtype, dims=dims),
        }
        if self.masks:
            arrays["masks"] = ArraySpec((1, *self.size), np.uint8, dims=dims)
        arrays.update(
            instance_ids=ArraySpec((), np.int64, dims=("i",)),
            centroid=ArraySpec((ndim,), np.float64, dims=("i", "axis")),
            bbox=ArraySpec((2, ndim), np.int64, dims=("i", "bound", "axis")),
            voxel_count=ArraySpec((), np.int64, dims=("i",)),
            origins=ArraySpec((ndim,), np.int64, dims=("i", "axis")),
        )
        return arrays

    def _open(self, n: int, *, append: bool, overwrite: bool = False) -> ArrayWriter:
        return open_writer(
            self.path,
            self._layout(),
            chunk_rows=self.chunk_rows,
            codec=self.codec,
            level=self.level,
            zarr_format=3 if self.zarr_format == 3 else 2,
            total_rows=n,
            append=append,
            overwrite=overwrite,
        )

    def _create(self, n: int, attrs: dict[str, Any], *, overwrite: bool) -> None:
        """Create the empty output, then record its attributes before any crop is written.

        The writer is opened and closed once (no rows: it stays incomplete) so that the
        attributes land where the writer keeps them when it reopens the output to fill it.
        """
        self._open(n, append=False, overwrite=overwrite).close()
        _store(self.path, attrs)

    def _attributes(self, plan: InstancePlan) -> dict[str, Any]:
        spatial = self.spatial
        n = len(spatial)
        voxel_size = self.image.voxel_size or self.labels.voxel_size or (1.0,) * n
        translation = self.image.translation or self.labels.translation or (0.0,) * n
        return {
            **self.params,
            "command": "instances",
            "version": __version__,
            "axes": "ic" + spatial,
            "count": plan.n,
            "labelled": plan.labelled,
            "removed": plan.removed,
            "plan_digest": plan.digest(),
            "window_centre": "floor(centroid + 0.5) is window voxel size // 2",
            "voxel_size": list(voxel_size),
            "translation": list(translation),
            "unit": self.image.unit or self.labels.unit,
        }

    def _result(
        self, attrs: dict[str, Any], *, written: int, skipped: int, t0: float
    ) -> InstanceResult:
        return InstanceResult(
            target=self.path,
            count=int(attrs["count"]),
            labelled=int(attrs["labelled"]),
            removed=dict(attrs["removed"]),
            size=self.size,
            channels=len(self.channels),
            chunk_rows=int(attrs["chunk_rows"]),
            rows_written=written,
            rows_skipped=skipped,
            seconds=time.perf_counter() - t0,
            complete=True,
            format=str(self.params["format"]),
            params=attrs,
        )


def _stored(path: Path) -> dict[str, Any] | None:
    """The ``instances`` attributes of an existing output of ours (plus ``complete``), ``None``
    when there is no output of datatools at ``path``.

    Raises:
        TargetError: an output of datatools that ``instances`` did not make.
    """
    if path.suffix.lower() in HDF5_SUFFIXES:
        partial = Path(f"{path}{owned.PARTIAL_SUFFIX}")
        for candidate, final in ((path, True), (partial, False)):
            meta = _hdf5_attrs(candidate)
            if meta is not None:
                record = meta.get("datatools")
                complete = final and isinstance(record, dict) and record.get("complete") is True
                return _ours(candidate, meta.get(ATTRIBUTE), complete)
        return None
    if not owned.is_ours(path):
        return None
    try:
        attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
    except (OSError, ValueError) as exc:
        raise TargetError(f"{path}: cannot read the output's attributes ({exc})") from exc
    return _ours(path, attrs.get(ATTRIBUTE), owned.is_complete(path))


def _ours(path: Path, attrs: Any, complete: bool) -> dict[str, Any]:
    if not isinstance(attrs, dict) or attrs.get("command") != "instances":
        raise TargetError(
            f"{path}: exists and was not made by datatools instances (choose another target, or "
            "--overwrite to replace an output of datatools)"
        )
    return {**attrs, "complete": complete}


def _hdf5_attrs(path: Path) -> dict[str, Any] | None:
    """Root attributes of an HDF5 output of datatools (JSON decoded); ``None`` otherwise."""
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as file:
            raw = {key: file.attrs[key] for key in ("datatools", ATTRIBUTE) if key in file.attrs}
    except OSError:
        return None
    if "datatools" not in raw:
        return None
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            out[key] = None
    return out


def _store(path: Path, attrs: dict[str, Any]) -> None:
    """Record the ``instances`` attributes in a new, still empty output."""
    if path.suffix.lower() in HDF5_SUFFIXES:
        with h5py.File(f"{path}{owned.PARTIAL_SUFFIX}", "r+") as file:
            file.attrs[ATTRIBUTE] = json.dumps(attrs)
        return
    zarr.open_group(str(path), mode="r+").attrs.update({ATTRIBUTE: attrs})


def _check_resume(
    path: Path, stored: dict[str, Any], new: dict[str, Any], keys: Sequence[str] = CHECKED
) -> None:
    """Refuse to continue an output made with other options (or from other labels).

    Raises:
        ResumeMismatchError: naming each difference.
    """
    old = owned.RunRecord("instances", {k: stored.get(k) for k in keys})
    now = owned.RunRecord("instances", {k: new.get(k) for k in keys})
    differences = owned.diff_params(old, now)
    if differences:
        raise ResumeMismatchError(
            f"{path}: exists from a run with other options or inputs ({differences}); rerun with "
            "the same options to resume, or add --overwrite to replace it"
        )


class _RegionVolume(Volume):
    """A region of a volume held in memory, addressed in the whole volume's coordinates.

    :func:`datatools.edges.read_box` reads windows from it with the true border of the volume
    (mirroring stays exact); reading outside the region is an internal error.
    """

    kind = "region"

    def __init__(self, data: Array, start: Sequence[int], shape: Sequence[int], axes: str) -> None:
        super().__init__("<region>", shape, data.dtype, axes)
        self.data = data
        self.region = Box(
            tuple(start), tuple(a + n for a, n in zip(start, data.shape, strict=True))
        )

    def read(self, box: Box) -> Array:
        """A view of ``box`` (which must lie inside the region)."""
        if not self.region.contains(box):
            raise ValueError(f"window box {box} needs voxels outside the region {self.region}")
        return self.data[box.relative_to(self.region.start).slices()]


def _need_boxes(origins: Array, size: Sequence[int], bounds: Box, edge: str) -> tuple[Array, Array]:
    """Start and stop, per axis, of the voxels each window reads from the volume: the window
    clipped to ``bounds``, widened for a mirroring window to the positions it mirrors from
    (at most ``size`` voxels per axis either way)."""
    size_arr = np.asarray(size, np.int64)
    lo = np.asarray(bounds.start, np.int64)
    hi = np.asarray(bounds.stop, np.int64)
    starts = np.clip(origins, lo, hi)
    stops = np.clip(origins + size_arr, lo, hi)
    if edge in ("symmetric", "reflect"):
        crossing = np.flatnonzero(np.any((origins < lo) | (origins + size_arr > hi), axis=1))
        for i in crossing:
            for ax, (n, a, b) in enumerate(zip(size_arr, lo, hi, strict=True)):
                first = int(origins[i, ax]) - int(a)
                mirrored = mirror_index(np.arange(first, first + int(n)), int(b - a), edge)
                starts[i, ax] = int(mirrored.min()) + a
                stops[i, ax] = int(mirrored.max()) + 1 + a
    return starts, stops


def _region_tile(
    bounds: Box, size: Sequence[int], voxel_bytes: int, budget: int
) -> tuple[int, ...]:
    """Tile shape of the region grid: regions (tile + window - 1) shaped like the window,
    scaled up as far as ``budget`` bytes allow, so the overlap read twice stays small."""
    extent = bounds.shape

    def region(k: float) -> tuple[int, ...]:
        return tuple(min(e, max(s, int(k * s))) for e, s in zip(extent, size, strict=True))

    lo, hi = 1.0, float(max(extent))
    while hi - lo > 0.01:
        k = (lo + hi) / 2
        if math.prod(region(k)) * voxel_bytes <= budget:
            lo = k
        else:
            hi = k
    shape = region(lo)
    return tuple(
        e if r >= e else max(1, r - s + 1) for e, r, s in zip(extent, shape, size, strict=True)
    )


Regions = tuple[_RegionVolume, _RegionVolume | None]
"""A region of the image (channels first) and, when masks or zeroing need them, of the labels."""


@dataclass
class _Batch:
    """Chunk rows being filled or written: their source rows and the buffer holding crops."""

    chunks: list[int]
    rows: Array
    images: Array
    masks: Array | None


class _Cropper:
    """Pass 2: fills batches of chunk rows region by region and writes them.

    Regions tile the bounds; region ``j`` holds every voxel read by the windows whose needed
    voxels start in tile ``j`` (tile plus ``size - 1`` voxels per axis). For the windows of a
    batch in one region, the region is read whole when that decodes fewer source voxels (whole
    chunks) than reading each window's box, else window by window. Whole regions are kept in
    a least-recently-used cache of ``memory_limit / 2`` bytes, and batches visit regions in
    alternating order, so a region used by consecutive batches is read once. Two buffers of
    ``memory_limit / 4`` bytes alternate: one batch is written while the next is filled.
    """

    def __init__(self, job: _Job, plan: InstancePlan, writer: ArrayWriter) -> None:
        self.job = job
        self.plan = plan
        self.writer = writer
        self.rows = writer.chunk_rows
        self.pad_edge = job.edge if job.edge in PAD_MODES else "constant"
        self.need_labels = job.masks or job.zeroing
        voxel_bytes = len(job.channels) * job.image.dtype.itemsize
        if self.need_labels:
            voxel_bytes += job.labels.dtype.itemsize
        budget = max(1, job.memory_limit // (4 * job.workers))
        self.tile = _region_tile(job.bounds, job.size, voxel_bytes, budget)
        starts, _ = _need_boxes(plan.origins, job.size, job.bounds, job.edge)
        cell = (starts - np.asarray(job.bounds.start)) // np.asarray(self.tile)
        self.grid = tuple(-(-e // t) for e, t in zip(job.bounds.shape, self.tile, strict=True))
        self.region_of = np.ravel_multi_index(tuple(cell.T), self.grid)
        self.per_batch = max(1, (job.memory_limit // 4) // (self.rows * job.row_bytes))
        self.cache = _RegionCache(job.memory_limit // 2)
        chunks = job.image.chunks
        self.chunks = (
            None
            if chunks is None
            else np.asarray(
                [c for c, a in zip(chunks, job.image.axes, strict=True) if a in "zyx"], np.int64
            )
        )
        self.buffers: list[tuple[Array, Array | None]] = []

    def run(self, progress: bool) -> tuple[int, int]:
        """Write every chunk row not yet recorded; returns (rows written, rows skipped)."""
        n = self.plan.n
        total_chunks = -(-n // self.rows)
        done = self.writer.done
        todo = [k for k in range(total_chunks) if k not in done]
        skipped = sum(self._rows_of(k).size for k in done if k < total_chunks)
        written = 0
        writers = 1 if self.job.hdf5 else self.job.workers  # h5py writes from one thread
        writing: list[Future[int]] = []
        with (
            progress_bar(n - skipped, "instances", enabled=progress, unit="inst") as bar,
            ThreadPoolExecutor(writers, thread_name_prefix="datatools-write") as pool,
        ):
            try:
                for number, first in enumerate(range(0, len(todo), self.per_batch)):
                    batch = self._fill(todo[first : first + self.per_batch], number)
                    written += _finish(writing, bar)
                    writing = [pool.submit(self._write, batch, j) for j in range(len(batch.chunks))]
                written += _finish(writing, bar)
            except BaseException:
                for future in writing:
                    future.cancel()
                raise
        return written, skipped

    def _rows_of(self, k: int) -> Array:
        return np.arange(k * self.rows, min((k + 1) * self.rows, self.plan.n))

    def _fill(self, chunks: list[int], number: int) -> _Batch:
        """Cut the crops of chunk rows ``chunks`` into buffer ``number % 2``, region by region."""
        rows = np.concatenate([self._rows_of(k) for k in chunks])
        if len(self.buffers) <= number % 2:
            job = self.job
            shape = (min(self.plan.n, self.per_batch * self.rows), *job.size)
            self.buffers.append(
                (
                    np.empty((shape[0], len(job.channels), *shape[1:]), job.image.dtype),
                    np.empty((shape[0], 1, *shape[1:]), np.uint8) if job.masks else None,
                )
            )
        images, masks = self.buffers[number % 2]
        batch = _Batch(chunks, rows, images, masks)
        regions = self.region_of[rows]
        order = np.argsort(-regions if number % 2 else regions, kind="stable")
        groups = np.split(order, np.flatnonzero(np.diff(regions[order])) + 1)
        for _ in run_units(lambda g: self._cut(batch, g), groups, workers=self.job.workers):
            pass
        return batch

    def _region_box(self, index: int) -> Box:
        """Region ``index``: its tile plus ``size - 1`` voxels per axis, inside the bounds."""
        job = self.job
        cell = np.unravel_index(index, self.grid)
        start = tuple(
            a + int(c) * t for a, c, t in zip(job.bounds.start, cell, self.tile, strict=True)
        )
        stop = tuple(
            min(a + t + s - 1, b)
            for a, t, s, b in zip(start, self.tile, job.size, job.bounds.stop, strict=True)
        )
        return Box(start, stop)

    def _read(self, box: Box) -> Regions:
        """Image (channels first) and, when needed, labels of ``box``."""
        job = self.job
        image = self._read_image(box)
        if not self.need_labels:
            return image, None
        data = read_spatial(job.labels, box)
        return image, _RegionVolume(data, box.start, job.volume_shape, job.spatial)

    def _cost(self, starts: Array, stops: Array) -> Array:
        """Voxels the source decodes to read each box ``[starts, stops)``: the boxes grown to
        the source's chunk grid (the boxes themselves when it has none)."""
        if self.chunks is None:
            result: Array = np.prod(stops - starts, axis=1)
        else:
            c = self.chunks
            result = np.prod((-(-stops // c) - starts // c) * c, axis=1)
        return result

    def _shared_region(self, index: int, origins: Array) -> Regions | None:
        """Region ``index`` from the cache, or read now when that decodes fewer voxels than
        reading each window's own box; ``None`` to read window by window."""
        cached = self.cache.get(index)
        if cached is not None:
            return cached
        starts, stops = _need_boxes(origins, self.job.size, self.job.bounds, self.job.edge)
        box = self._region_box(index)
        whole = self._cost(np.asarray([box.start]), np.asarray([box.stop]))[0]
        if whole > self._cost(starts, stops).sum():
            return None
        regions = self._read(box)
        self.cache.put(index, regions)
        return regions

    def _cut(self, batch: _Batch, positions: Array) -> None:
        """Cut the windows at buffer rows ``positions`` (all in one region) into the buffer."""
        job, plan = self.job, self.plan
        size = np.asarray(job.size, np.int64)
        region = int(self.region_of[batch.rows[positions[0]]])
        origins = plan.origins[batch.rows[positions]]
        shared = self._shared_region(region, origins)
        try:
            c = len(job.channels)
            full_bounds = Box((0, *job.bounds.start), (c, *job.bounds.stop))
            for pos, origin in zip(positions, origins, strict=True):
                window = Box(tuple(origin), tuple(origin + size))
                if shared is None:
                    starts, stops = _need_boxes(origin[None], job.size, job.bounds, job.edge)
                    image_region, label_region = self._read(Box(tuple(starts[0]), tuple(stops[0])))
                else:
                    image_region, label_region = shared
                out = batch.images[pos]
                inner = window.intersect(job.bounds)
                if inner == window or (self.pad_edge == "constant" and inner is not None):
                    # One copy straight into the buffer (read_box would pad a new array first).
                    if inner != window:
                        out[...] = 0
                    where = (slice(None), *inner.relative_to(window.start).slices())
                    out[where] = image_region.read(Box((0, *inner.start), (c, *inner.stop)))
                else:
                    out[...] = read_box(
                        image_region,
                        Box((0, *window.start), (c, *window.stop)),
                        self.pad_edge,
                        bounds=full_bounds,
                    )
                if label_region is None:
                    continue
                lab = read_box(label_region, window, self.pad_edge, bounds=job.bounds)
                own = lab == plan.stats.ids[batch.rows[pos]]
                if batch.masks is not None:
                    batch.masks[pos, 0] = own
                if job.zero_background:
                    out[:, ~own] = 0
                elif job.zero_others:
                    out[:, (lab != 0) & ~own] = 0
        finally:
            if shared is not None:
                self.cache.release(region)

    def _read_image(self, box: Box) -> _RegionVolume:
        job = self.job
        c = len(job.channels)
        if job.image.axes[0] == "c":
            first, last = min(job.channels), max(job.channels) + 1
            data = job.image.read(Box((first, *box.start), (last, *box.stop)))
            if job.channels != tuple(range(first, last)):
                data = data[np.asarray(job.channels) - first]
        else:
            data = job.image.read(box)[None]
        return _RegionVolume(data, (0, *box.start), (c, *job.volume_shape), "c" + job.spatial)

    def _write(self, batch: _Batch, j: int) -> int:
        """Write chunk row ``batch.chunks[j]`` from the buffer; returns its row count."""
        k = batch.chunks[j]
        a = int(np.searchsorted(batch.rows, k * self.rows))
        b = a + self._rows_of(k).size
        index = batch.rows[a:b]
        stats = self.plan.stats.select(index)
        arrays: dict[str, Array] = {"images": batch.images[a:b]}
        if batch.masks is not None:
            arrays["masks"] = batch.masks[a:b]
        arrays.update(
            instance_ids=stats.ids,
            centroid=stats.centroid,
            bbox=stats.bbox,
            voxel_count=stats.voxel_count,
            origins=self.plan.origins[index],
        )
        self.writer.write_rows(k * self.rows, **arrays)
        return b - a


def _finish(futures: list[Future[int]], bar: Any) -> int:
    """Wait for chunk-row writes; re-raise the first failure; returns the rows written."""
    rows = 0
    for future in futures:
        rows += future.result()
        bar.update(future.result())
    return rows


class _RegionCache:
    """Regions read from the volume, least recently used first out, within ``capacity`` bytes.

    Regions in use (between :meth:`get`/:meth:`put` and :meth:`release`) are never evicted;
    they count towards the capacity. Thread-safe.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[int, Regions] = OrderedDict()
        self._in_use: dict[int, int] = {}
        self._lock = threading.Lock()

    def get(self, key: int) -> Regions | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                self._in_use[key] = self._in_use.get(key, 0) + 1
            return item

    def put(self, key: int, item: Regions) -> None:
        with self._lock:
            self._items[key] = item
            self._in_use[key] = self._in_use.get(key, 0) + 1
            total = sum(_nbytes(v) for v in self._items.values())
            for old in list(self._items):
                if total <= self.capacity:
                    break
                if old not in self._in_use:
                    total -= _nbytes(self._items.pop(old))

    def release(self, key: int) -> None:
        with self._lock:
            self._in_use[key] -= 1
            if not self._in_use[key]:
                del self._in_use[key]


def _nbytes(item: Regions) -> int:
    image, labels = item
    return int(image.data.nbytes) + (0 if labels is None else int(labels.data.nbytes))
