"""Pass 2 of :mod:`datatools.instances`: cut one fixed-size window per instance from the image
(and the labels, for masks and zeroing) and write the crops as whole chunk rows.

A batch of consecutive chunk rows (instances in id order) is filled region by region (regions
tile the volume; each window belongs to the region holding the start of the voxels it needs),
then written through :meth:`datatools.writers.ArrayWriter.write_rows` while the next batch is
filled. A region is read whole when that decodes fewer source chunks than reading its windows
one by one, and whole regions stay in a cache of ``memory_limit / 2`` bytes. When ids follow
position (labels numbered in scan order), or the volume fits the cache, each image chunk is read
about once; with ids scattered in space over a larger volume, each batch (``memory_limit / 4``
bytes of crops) reads what its windows touch again.

Memory: two crop buffers of ``memory_limit / 4`` bytes and the region cache
(``memory_limit / 2``).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from datatools.edges import PAD_MODES, EdgeMode, mirror_index, read_box
from datatools.executor import run_units
from datatools.geometry import Box
from datatools.instances.label_stats import read_spatial
from datatools.progress import progress_bar
from datatools.sources import Volume
from datatools.writers import ArrayWriter

Array = np.ndarray[Any, Any]


class CropJob(Protocol):
    """What the crop pass needs to know about a run (``datatools.instances`` fills it)."""

    image: Volume
    labels: Volume
    bounds: Box
    size: tuple[int, ...]
    edge: EdgeMode
    channels: tuple[int, ...]
    masks: bool
    zero_others: bool
    zero_background: bool
    memory_limit: int
    workers: int

    @property
    def hdf5(self) -> bool: ...

    @property
    def zeroing(self) -> bool: ...

    @property
    def row_bytes(self) -> int: ...

    @property
    def spatial(self) -> str: ...

    @property
    def volume_shape(self) -> tuple[int, ...]: ...


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

    def _read(self, box: Box) -> Array:
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


class Cropper:
    """Pass 2: fills batches of chunk rows region by region and writes them.

    Regions tile the bounds; region ``j`` holds every voxel read by the windows whose needed
    voxels start in tile ``j`` (tile plus ``size - 1`` voxels per axis). For the windows of a
    batch in one region, the region is read whole when that decodes fewer source voxels (whole
    chunks) than reading each window's box, else window by window. Whole regions are kept in
    a least-recently-used cache of ``memory_limit / 2`` bytes, and batches visit regions in
    alternating order, so a region used by consecutive batches is read once. Two buffers of
    ``memory_limit / 4`` bytes alternate: one batch is written while the next is filled.

    Args:
        job: the run's settings.
        ids: ``(n,)`` instance ids in row order.
        origins: ``(n, ndim)`` window starts in source voxels, in row order.
        writer: a positional-fill writer of ``n`` rows with ``images`` (and ``masks``) in
            chunk rows of ``writer.chunk_rows``.
    """

    def __init__(self, job: CropJob, ids: Array, origins: Array, writer: ArrayWriter) -> None:
        self.job = job
        self.ids = ids
        self.origins = origins
        self.n = len(ids)
        self.writer = writer
        self.rows = writer.chunk_rows
        self.pad_edge = job.edge if job.edge in PAD_MODES else "constant"
        self.need_labels = job.masks or job.zeroing
        voxel_bytes = len(job.channels) * job.image.dtype.itemsize
        if self.need_labels:
            voxel_bytes += job.labels.dtype.itemsize
        budget = max(1, job.memory_limit // (4 * job.workers))
        self.tile = _region_tile(job.bounds, job.size, voxel_bytes, budget)
        starts, _ = _need_boxes(origins, job.size, job.bounds, job.edge)
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
        n = self.n
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
        return np.arange(k * self.rows, min((k + 1) * self.rows, self.n))

    def _fill(self, chunks: list[int], number: int) -> _Batch:
        """Cut the crops of chunk rows ``chunks`` into buffer ``number % 2``, region by region."""
        rows = np.concatenate([self._rows_of(k) for k in chunks])
        if len(self.buffers) <= number % 2:
            job = self.job
            shape = (min(self.n, self.per_batch * self.rows), *job.size)
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
        job = self.job
        size = np.asarray(job.size, np.int64)
        region = int(self.region_of[batch.rows[positions[0]]])
        origins = self.origins[batch.rows[positions]]
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
                out = read_box(
                    image_region,
                    Box((0, *window.start), (c, *window.stop)),
                    self.pad_edge,
                    bounds=full_bounds,
                    out=batch.images[pos],
                )
                if label_region is None:
                    continue
                lab = read_box(label_region, window, self.pad_edge, bounds=job.bounds)
                own = lab == self.ids[batch.rows[pos]]
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
        """Write chunk row ``batch.chunks[j]`` of the crops from the buffer; returns its row
        count."""
        k = batch.chunks[j]
        a = int(np.searchsorted(batch.rows, k * self.rows))
        b = a + self._rows_of(k).size
        arrays: dict[str, Array] = {"images": batch.images[a:b]}
        if batch.masks is not None:
            arrays["masks"] = batch.masks[a:b]
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
