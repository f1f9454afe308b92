"""One fixed-size crop per labelled object, stacked as ``(i, c, z, y, x)`` with ids and statistics.

Two streaming passes over volumes larger than memory:

1. Statistics (:mod:`datatools.instances.label_stats`): the labels are read slab by slab; per id
   the voxel count, bounding box and centroid. The filters (``ids``, ``min_voxels``, ``max_voxels``,
   ``exclude_border``) and the edge mode then fix the plan: the instances, ids ascending, and
   one window each.
2. Crops (:mod:`datatools.instances.crops`): the per-instance tables are written at once, then
   a batch of consecutive chunk rows (instances in id order) is filled region by region
   (regions tile the volume; each window belongs to the region holding the start of the voxels
   it needs) and written as whole chunk rows through :mod:`datatools.writers` while the next
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
the crops in chunks of ``chunk_rows``, the small per-instance tables in chunks of about
``TABLE_ROWS`` rows (a multiple of ``chunk_rows``, so a batch of crops meets one table chunk):

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
a crop's voxel 0 is ``translation + origin * voxel_size``. It is written when the output is
created, together with the run record (command ``instances``, shown by ``datatools info``),
which holds the options and the plan.

Resume: chunk rows are recorded as they are written. A rerun with the same options recomputes
the statistics, checks that the plan is the same (``count``, ``plan_digest``, ``labelled``,
``removed``), and writes only the missing chunk rows; a rerun on a complete output returns at
once. Other options, or image or label files changed since the output was started
(:mod:`datatools.ledger.fingerprint`), are refused unless ``overwrite``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datatools import __version__
from datatools import ledger as owned
from datatools.edges import EdgeMode, check_edge
from datatools.errors import OptionError, ResumeMismatchError, TargetError
from datatools.executor import default_workers
from datatools.geometry import Box, resolve_roi, spatial_axes
from datatools.inputs import open_input
from datatools.instances.checks import (
    check_channels,
    check_ids,
    check_inputs,
    pick_chunk_rows,
    spatial_shape,
    window_size,
)
from datatools.instances.crops import Cropper
from datatools.instances.label_stats import label_stats
from datatools.instances.options import DEFAULT_MEMORY, InstanceOptions
from datatools.instances.plan import InstancePlan, plan_instances
from datatools.instances.result import InstanceResult
from datatools.options import OutputOptions
from datatools.sinks.codecs import parse_codec
from datatools.sources import (
    SourceSpec,
    Volume,
    check_source_options,
    source_choices,
    spec_text,
)
from datatools.stores import HDF5_SUFFIXES
from datatools.writers import ArraySpec, RunRecord, open_writer, read_run

__all__ = [
    "InstanceOptions",
    "InstancePlan",
    "InstanceResult",
    "extract_instances",
    "plan_instances",
]

Array = np.ndarray[Any, Any]

COMMAND = "instances"
ATTRIBUTE = "instances"
TABLE_ROWS = 16384
"""Rows per chunk of the per-instance tables, about (a multiple of at least 2 of the crops')."""
CHECKED = (
    "image", "labels", "roi", "size", "edge", "channels", "masks", "zero_others",
    "zero_background", "ids", "min_voxels", "max_voxels", "exclude_border", "chunk_rows",
    "format", "codec", "level", "source_level", "series",
)  # fmt: skip
"""Options a rerun must repeat to resume an output."""
PLANNED = ("count", "plan_digest", "labelled", "removed")
"""What pass 1 found; a rerun resumes only the same plan."""


def extract_instances(
    image: SourceSpec | Volume,
    labels: SourceSpec | Volume,
    target: str | Path,
    options: InstanceOptions | None = None,
    *,
    progress: bool = False,
    **overrides: Any,
) -> InstanceResult:
    """Crop a fixed-size window around every instance of ``labels`` from ``image``.

    Args:
        image: ``(z, y, x)``, ``(c, z, y, x)``, ``(y, x)`` or ``(c, y, x)``; anything
            :func:`datatools.sources.open_volume` opens, or an open volume.
        labels: integer labels with the image's spatial shape; 0 is background, ids need not be
            contiguous.
        target: output ``.zarr`` group or ``.h5`` / ``.hdf5`` file (layout: module docs).
        options: every setting (:class:`InstanceOptions`), ``None`` for the defaults; fields
            may be replaced by keyword (``overrides``), shared ones flat:
            ``extract_instances(img, lab, "cells.zarr", size=32, masks=True, workers=2)``.
        progress: show progress bars on stderr.

    The options (fields of :class:`InstanceOptions`):
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
            ``lzf``, ``none``; ``codec_level`` its compression level.
        zarr_format: 3 (default) or 2.
        open_options: level / series / gap choices for opening ``image`` and ``labels``.
        memory_limit: bytes for data in flight (default 512 MiB): two alternating crop
            buffers of a quarter each, half for image (and labels) regions; label slabs of
            ``memory_limit / (2 x workers)`` in pass 1.
        workers: threads reading slabs and encoding chunks (default: one per core).
        overwrite: replace an existing output of datatools (never a foreign file or folder).

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
    options = (options or InstanceOptions()).with_overrides(**overrides)
    open_options = options.open_options
    path = Path(target)
    image_vol = image if isinstance(image, Volume) else open_input(image, open_options)
    try:
        labels_vol = (
            labels
            if isinstance(labels, Volume)
            else open_input(labels, open_options, companion=True)
        )
        try:
            check_source_options(image_vol, open_options)
            owned.check_not_input(path, image_vol.files() + labels_vol.files())
            job = _Job.prepare(image_vol, labels_vol, path, options)
            return job.run(overwrite=options.output.overwrite, progress=progress, started=started)
        finally:
            if not isinstance(labels, Volume):
                labels_vol.close()
    finally:
        if not isinstance(image, Volume):
            image_vol.close()


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
    options: InstanceOptions

    @classmethod
    def prepare(cls, image: Volume, labels: Volume, path: Path, options: InstanceOptions) -> _Job:
        output, run = options.output, options.run
        size, masks, edge, channels = options.size, options.masks, options.edge, options.channels
        zero_others, zero_background = options.zero_others, options.zero_background
        ids, min_voxels, max_voxels = options.ids, options.min_voxels, options.max_voxels
        chunk_rows, codec, level = output.chunk_rows, output.codec, output.codec_level
        zarr_format = output.zarr_format
        memory_limit = DEFAULT_MEMORY if run.memory_limit is None else run.memory_limit
        if size is None:
            raise OptionError("--size: required (window in voxels, e.g. 32 or 32,64,64)")
        check_inputs(image, labels)
        spatial = spatial_axes(image.axes)
        window = window_size(size, spatial)
        mode = check_edge(edge)
        check_ids(ids)
        if min_voxels < 0:
            raise OptionError(f"--min-voxels {min_voxels}: must be >= 0")
        if max_voxels is not None and max_voxels < max(1, min_voxels):
            raise OptionError(
                f"--max-voxels {max_voxels}: must be >= 1 and >= --min-voxels {min_voxels}"
            )
        box = resolve_roi(options.roi, image.shape, image.axes)
        bounds = Box(
            tuple(a for a, ax in zip(box.start, image.axes, strict=True) if ax in spatial),
            tuple(b for b, ax in zip(box.stop, image.axes, strict=True) if ax in spatial),
        )
        n_channels = image.shape[0] if image.axes[0] == "c" else 1
        chosen = check_channels(channels, n_channels, image.spec)
        row_bytes = (len(chosen) * image.dtype.itemsize + (1 if masks else 0)) * math.prod(window)
        rows = pick_chunk_rows(chunk_rows, row_bytes, memory_limit)
        hdf5 = path.suffix.lower() in HDF5_SUFFIXES
        chosen_codec = parse_codec(codec or ("gzip" if hdf5 else "zstd"), level, hdf5=hdf5)
        filters: dict[str, Any] = {
            "ids": None if ids is None else sorted({int(v) for v in ids}),
            "min_voxels": int(min_voxels),
            "max_voxels": None if max_voxels is None else int(max_voxels),
            "exclude_border": bool(options.exclude_border),
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
            **source_choices(options.open_options),
            owned.SOURCE_FILES: owned.fingerprint_files(image.files() + labels.files()),
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
            workers=run.workers or default_workers(),
            params=params,
            options=options,
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
        return spatial_shape(self.image)

    @property
    def slab_bytes(self) -> int:
        """Budget of one slab (region) being read; ``workers`` of them are in flight."""
        return max(1, self.memory_limit // (2 * self.workers))

    def run(self, *, overwrite: bool, progress: bool, started: float) -> InstanceResult:
        stored = None if overwrite else read_run(self.path)
        if stored is not None:
            if stored.command != COMMAND:
                raise TargetError(
                    f"{self.path}: exists and was not made by datatools instances (choose "
                    "another target, or --overwrite to replace an output of datatools)"
                )
            _check_resume(self.path, stored.params, self.params)
            if stored.complete:
                count = int(stored.params["count"])
                return self._result(stored.params, written=0, skipped=count, t0=started)
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
            self.options,
            labels_name=self.labels.spec,
        )
        params = {
            **self.params,
            "count": plan.n,
            "plan_digest": plan.digest(),
            "labelled": plan.labelled,
            "removed": plan.removed,
        }
        if stored is not None:
            _check_resume(self.path, stored.params, params, keys=PLANNED)
        storage = OutputOptions(
            chunk_rows=self.chunk_rows,
            codec=self.codec,
            codec_level=self.level,
            zarr_format=self.zarr_format,
            overwrite=overwrite,
        )
        with open_writer(
            self.path,
            self._layout(plan.n),
            storage,
            total_rows=plan.n,
            record=RunRecord(COMMAND, params),
            attributes={ATTRIBUTE: self._attributes(params)},
            append=stored is not None,
        ) as writer:
            writer.write_rows(
                0,
                instance_ids=plan.stats.ids,
                centroid=plan.stats.centroid,
                bbox=plan.stats.bbox,
                voxel_count=plan.stats.voxel_count,
                origins=plan.origins,
            )
            cropper = Cropper(self, plan.stats.ids, plan.origins, writer)
            written, skipped = cropper.run(progress)
        return self._result(params, written=written, skipped=skipped, t0=started)

    def _layout(self, n: int) -> dict[str, ArraySpec]:
        """Writer specs: crops in chunks of ``chunk_rows``; tables in chunks of a multiple (at
        least 2, so they form a stream of their own, written apart) of it, up to ``TABLE_ROWS``
        or the ``n`` rows rounded up."""
        spatial = self.spatial
        dims = ("i", "c", *spatial)
        ndim = len(spatial)
        arrays = {
            "images": ArraySpec((len(self.channels), *self.size), self.image.dtype, dims=dims),
        }
        if self.masks:
            arrays["masks"] = ArraySpec((1, *self.size), np.uint8, dims=dims)
        rows = self.chunk_rows
        table = rows * max(2, min(TABLE_ROWS // rows, -(-n // rows)))
        arrays.update(
            instance_ids=ArraySpec((), np.int64, dims=("i",), chunk_rows=table),
            centroid=ArraySpec((ndim,), np.float64, dims=("i", "axis"), chunk_rows=table),
            bbox=ArraySpec((2, ndim), np.int64, dims=("i", "bound", "axis"), chunk_rows=table),
            voxel_count=ArraySpec((), np.int64, dims=("i",), chunk_rows=table),
            origins=ArraySpec((ndim,), np.int64, dims=("i", "axis"), chunk_rows=table),
        )
        return arrays

    def _attributes(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The ``instances`` group attribute: options, plan, and physical placement."""
        spatial = self.spatial
        n = len(spatial)
        voxel_size = self.image.voxel_size or self.labels.voxel_size or (1.0,) * n
        translation = self.image.translation or self.labels.translation or (0.0,) * n
        return {
            **params,
            "command": COMMAND,
            "version": __version__,
            "axes": "ic" + spatial,
            "window_centre": "floor(centroid + 0.5) is window voxel size // 2",
            "voxel_size": list(voxel_size),
            "translation": list(translation),
            "unit": self.image.unit or self.labels.unit,
        }

    def _result(
        self, attrs: Mapping[str, Any], *, written: int, skipped: int, t0: float
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
            params=dict(attrs),
        )


def _check_resume(
    path: Path, stored: Mapping[str, Any], new: Mapping[str, Any], keys: Sequence[str] = CHECKED
) -> None:
    """Refuse to continue an output made with other options (or from other labels).

    Raises:
        ResumeMismatchError: naming each difference.
    """
    # keys an earlier version did not record stay out of the old record (see LATER_PARAMS)
    old = owned.RunRecord(COMMAND, {k: stored.get(k) for k in keys if k in stored})
    now = owned.RunRecord(COMMAND, {k: new.get(k) for k in keys})
    differences = owned.diff_params(old, now)
    if differences:
        raise ResumeMismatchError(
            f"{path}: exists from a run with other options or inputs ({differences}); rerun with "
            "the same options to resume, or add --overwrite to replace it"
        )
    owned.check_same_sources(path, stored, new)
