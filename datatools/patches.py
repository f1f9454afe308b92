"""Training-ready patch datasets: 2D/3D patches of a volume, its labels, selected by a mask.

Two phases, both out of core:

1. **Plan.** Positions are chosen first: a grid over the ROI, or random / blue-noise centres
   (:mod:`datatools.sampling`). When a mask, ``min_fraction`` or per-class groups need voxel
   data, the mask and labels are streamed in slabs (a slab plus the patch halo in memory at a
   time) and every position is tested there. The plan holds the origins of the kept patches
   (``8 x ndim`` bytes each) and their classes.
2. **Extract.** Origins are ordered slab by slab (C order inside a slab), so each slab of the
   source (plus the halo its patches reach) is read once, its patches are cut out with one
   vectorised gather per batch, and appended to the output in their known row ranges.

Edges follow :mod:`datatools.edges`, at the border of the ROI: a patch never contains voxels
from outside the ROI (``symmetric`` / ``reflect`` mirror them, ``constant`` fills, ``shift``
moves the patch inside, ``drop`` skips it). Patches are ``(n, [c,] *size)`` in the source dtype;
``origins`` ``(n, ndim)`` are the voxel starts in source coordinates, (z, y, x), possibly
negative at mirrored edges. A patch's physical position is ``translation + origin * voxel_size``.

Peak memory: ``memory_limit`` (default 256 MiB) bounds the slabs in flight: each slab is at most
``memory_limit / (2 * (workers + 1))`` bytes of source plus labels including its halo (``workers``
threads read slabs ahead of the one being cut; 0 reads in the calling thread); plus one batch being
appended (at most 16 MiB), the writers' buffers (one chunk row, about 2 MiB, per array and
class) and the plan (``8 x ndim`` bytes per patch). Never the volume, never a float copy of it.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import h5py
import numpy as np
import zarr
from numpy.lib.stride_tricks import sliding_window_view

from datatools import __version__, target
from datatools.edges import PAD_MODES, EdgeMode, check_edge, check_fill, read_box
from datatools.errors import (
    DatatoolsError,
    InputError,
    OptionError,
    ResumeMismatchError,
    TargetError,
    WriteError,
)
from datatools.geometry import Box, RoiSpec, resolve_roi, spatial_axes
from datatools.progress import progress_bar
from datatools.sampling import check_selection, choose_origins, resolve_seed, slab_extent
from datatools.sources import OpenOptions, SourceSpec, Volume, open_volume
from datatools.writers import ArraySpec, ArrayWriter, open_writer

DEFAULT_MEMORY_LIMIT = 256 * 2**20
CHUNK_BYTES = 2 * 2**20
"""Target size of one output chunk (``chunk_rows`` patches), bytes."""
MAX_CHUNK_ROWS = 65536
ITER_BYTES = 512 * 2**10
"""Default batch of :func:`iter_patches`, bytes (small enough to stay in the CPU cache)."""
APPEND_BYTES = 16 * 2**20
"""Patches cut and appended at once (whole chunks), bytes: fewer, larger writer flushes."""
HDF5_SUFFIXES = (".h5", ".hdf5")
RECORD_GROUP = "patches"
"""Child group of a single-group Zarr target's ``.datatools/`` marker whose attributes hold the
options of its run, checked on rerun."""

T = TypeVar("T")
R = TypeVar("R")
Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class PatchOptions:
    """Every option that decides which patches a run writes; see :func:`extract_patches`."""

    size: int | tuple[int, ...]
    stride: int | tuple[int, ...] | None = None
    edge: str = "symmetric"
    fill: float = 0
    min_fraction: float = 0.0
    per_class: bool = False
    class_rule: str = "centre"
    max_per_class: int | None = None
    sampler: str = "grid"
    count: int | None = None
    min_distance: float | None = None
    max_patches: int | None = None
    roi: RoiSpec | Box | None = None

    @property
    def random(self) -> bool:
        """Whether these options make random choices (so a seed matters)."""
        caps = (self.max_patches, self.max_per_class)
        return self.sampler != "grid" or any(c is not None for c in caps)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (the ROI as ``z0:z1,...`` text)."""
        out = asdict(self)
        out["roi"] = None if self.roi is None else self.roi.to_text()
        return dict(json.loads(json.dumps(out)))


@dataclass(frozen=True)
class PatchGeometry:
    """Where patches lie in a volume.

    Attributes:
        axes: the source's axis letters in C order, e.g. ``"zyx"`` or ``"czyx"``.
        shape: the source's shape.
        roi: the region patches come from, over all source axes (non-spatial axes whole);
            edge modes apply at its border.
        size: patch extent per spatial axis, voxels (1 on the leading axes of 2D patches
            taken from a 3D volume).
        stride: grid step per spatial axis, voxels.
        kept: how many trailing spatial axes a stored patch has.
        edge: edge mode; ``fill``: the value outside the ROI for ``constant``.
    """

    axes: str
    shape: tuple[int, ...]
    roi: Box
    size: tuple[int, ...]
    stride: tuple[int, ...]
    kept: int
    edge: EdgeMode
    fill: float = 0

    @property
    def spatial(self) -> tuple[int, ...]:
        """Positions of the spatial axes in :attr:`axes`."""
        return tuple(i for i, a in enumerate(self.axes) if a in "zyx")

    @property
    def bounds(self) -> Box:
        """The ROI on the spatial axes only."""
        pick = self.spatial
        return Box(tuple(self.roi.start[i] for i in pick), tuple(self.roi.stop[i] for i in pick))

    @property
    def label_shape(self) -> tuple[int, ...]:
        """Shape of one stored label patch: the kept patch axes."""
        return self.size[len(self.size) - self.kept :]

    @property
    def item_shape(self) -> tuple[int, ...]:
        """Shape of one stored patch: the non-spatial extents, then the kept patch axes."""
        other = tuple(n for i, n in enumerate(self.shape) if i not in self.spatial)
        return other + self.label_shape

    @property
    def patch_axes(self) -> str:
        """Axis letters of the ``patches`` array, e.g. ``"nyx"`` or ``"nczyx"``."""
        letters = spatial_axes(self.axes)
        other = "".join(a for a in self.axes if a not in "zyx")
        return "n" + other + letters[len(letters) - self.kept :]

    @property
    def pad_edge(self) -> str:
        """The mode to read around the ROI with (``shift``/``drop`` never read outside)."""
        return self.edge if self.edge in PAD_MODES else "symmetric"

    def source_box(self, box: Box) -> Box:
        """A spatial box as a box over all source axes (non-spatial axes whole)."""
        start, stop = list(self.roi.start), list(self.roi.stop)
        for k, i in enumerate(self.spatial):
            start[i], stop[i] = box.start[k], box.stop[k]
        return Box(tuple(start), tuple(stop))


def make_geometry(volume: Volume, options: PatchOptions) -> PatchGeometry:
    """Check size, stride, edge, fill and ROI against ``volume``.

    ``size``: one int for every spatial axis, or fewer values for patches over the trailing
    axes taken at every index of the leading ones. ``stride`` (default ``size``): one int for
    every patch axis, or values for the trailing ones.

    Raises:
        OptionError: a size or stride <= 0 or with too many values, a bad edge or fill.
        RoiError: the ROI does not fit the volume.
    """
    letters = spatial_axes(volume.axes)
    n = len(letters)
    size = options.size
    values = (size,) * n if isinstance(size, int) else tuple(int(v) for v in size)
    text = _text(size)
    if not values or len(values) > n:
        raise OptionError(
            f"--size {text}: {len(values)} values for a volume with {n} spatial axes "
            f"({','.join(letters)})"
        )
    if any(v <= 0 for v in values):
        raise OptionError(f"--size {text}: every value must be > 0")
    kept = len(values)
    full_size = (1,) * (n - kept) + values
    stride = options.stride
    if stride is None:
        full_stride = full_size
    else:
        steps = (stride,) * kept if isinstance(stride, int) else tuple(int(v) for v in stride)
        text = _text(stride)
        if not steps or len(steps) > kept:
            raise OptionError(f"--stride {text}: {len(steps)} values for {kept}D patches")
        if any(v <= 0 for v in steps):
            raise OptionError(f"--stride {text}: every value must be > 0")
        full_stride = (1,) * (n - kept) + full_size[n - kept : n - len(steps)] + steps
    edge = check_edge(options.edge)
    if edge == "constant":
        check_fill(options.fill, volume.dtype)
    roi = resolve_roi(options.roi, volume.shape, volume.axes)
    return PatchGeometry(
        volume.axes, volume.shape, roi, full_size, full_stride, kept, edge, options.fill
    )


@dataclass(frozen=True, eq=False)
class PatchPlan:
    """Which patches a run writes, and in which order.

    Attributes:
        geometry: where patches lie.
        groups: output group (``""`` for one dataset, ``"class_<value>"`` per class) ->
            origins ``(n, ndim)`` int64 in row order.
        slab_extent: slab size per spatial axis in origin space, voxels: slab ``k`` holds the
            patches whose origins lie in ``[k * extent, (k + 1) * extent)``.
        slabs: ``(m, ndim)`` indices ``k`` of the slabs holding patches, in processing order.
        offsets: per group, ``(m + 1,)`` row offsets: slab ``i`` holds rows
            ``[offsets[i], offsets[i + 1])``.
        seed: the seed behind every random choice, ``None`` when nothing was random.
    """

    geometry: PatchGeometry
    groups: Mapping[str, Array]
    slab_extent: tuple[int, ...]
    slabs: Array
    offsets: Mapping[str, Array]
    seed: int | None

    @property
    def counts(self) -> dict[str, int]:
        """Rows per group."""
        return {name: len(origins) for name, origins in self.groups.items()}


def plan_patches(
    volume: Volume,
    options: PatchOptions,
    *,
    labels: Volume | None = None,
    mask: Volume | None = None,
    rng: int | np.random.Generator | None = None,
    memory_limit: int | None = None,
    workers: int = 1,
    extent: Sequence[int] | None = None,
) -> PatchPlan:
    """Choose the patches of ``volume`` and their order (arguments as :func:`extract_patches`).

    Reads only ``mask`` and ``labels``, tile by tile, and only when a mask, ``min_fraction`` or
    ``per_class`` needs them. Rows are ordered slab by slab, C order inside a slab; slabs
    follow the source chunks and ``memory_limit`` unless ``extent`` fixes them (a resumed run
    keeps its first run's order). Peak memory: one planning tile (``memory_limit / 2`` at
    most) plus ``8 x ndim`` bytes per patch.

    Raises:
        OptionError, RoiError: invalid options.
        InputError: labels or mask not on the source's grid, or nothing selected.
    """
    g = make_geometry(volume, options)
    sel = check_selection(
        options.sampler,
        stride_given=options.stride is not None,
        count=options.count,
        min_distance=options.min_distance,
        max_patches=options.max_patches,
        max_per_class=options.max_per_class,
        min_fraction=options.min_fraction,
        per_class=options.per_class,
        class_rule=options.class_rule,
        has_labels=labels is not None,
    )
    for role, companion in (("labels", labels), ("mask", mask)):
        if companion is not None:
            _check_companion(companion, g, role, volume.spec)
    limit = DEFAULT_MEMORY_LIMIT if memory_limit is None else memory_limit
    if limit <= 0:
        raise OptionError(f"--memory-limit {limit}: must be > 0")
    seed = resolve_seed(rng) if sel.random else None
    found = choose_origins(
        g.bounds,
        g.size,
        g.stride,
        g.edge,
        sel,
        labels=labels,
        mask=mask,
        seed=seed,
        memory_limit=limit,
    )
    groups = {("" if c is None else f"class_{c}"): o for c, o in found.items() if len(o)}
    if not groups:
        raise _nothing_error(g, options, volume, labels, mask)
    if extent is None:
        other = math.prod(n for i, n in enumerate(g.shape) if i not in g.spatial)
        per_voxel = volume.dtype.itemsize * other + (0 if labels is None else labels.dtype.itemsize)
        chunks = None if volume.chunks is None else [volume.chunks[i] for i in g.spatial]
        budget = max(1, limit // (2 * (max(0, workers) + 1)))
        extent = slab_extent(g.bounds.shape, g.size, chunks, per_voxel, budget)
    slabs, ordered, offsets = _order(groups, extent, g.bounds.start)
    return PatchPlan(g, ordered, tuple(int(e) for e in extent), slabs, offsets, seed)


def _check_companion(volume: Volume, g: PatchGeometry, role: str, source: str) -> None:
    """Labels and masks must be on the source's voxel grid, spatial axes only.

    Raises:
        InputError: other axes or another shape; float labels.
    """
    letters = spatial_axes(g.axes)
    shape = tuple(g.shape[i] for i in g.spatial)
    if volume.axes != letters or volume.shape != shape:
        raise InputError(
            f"{volume.spec}: {role} shape {_dims(volume.shape, volume.axes)} differs from the "
            f"spatial shape {_dims(shape, letters)} of {source} ({role} must be on the source's "
            "voxel grid)"
        )
    if role == "labels" and volume.dtype.kind == "f":
        raise InputError(f"{volume.spec}: labels have dtype {volume.dtype} (need integer labels)")


def _text(values: int | Sequence[int]) -> str:
    """Sizes as typed on the command line: ``64`` or ``32,64,64``."""
    return str(values) if isinstance(values, int) else ",".join(map(str, values))


def _dims(shape: Sequence[int], axes: str) -> str:
    return f"{' x '.join(map(str, shape))} ({','.join(axes)})"


def _nothing_error(
    g: PatchGeometry,
    options: PatchOptions,
    volume: Volume,
    labels: Volume | None,
    mask: Volume | None,
) -> DatatoolsError:
    """The error for a plan without patches (no empty dataset that looks complete)."""
    fraction = f"{options.min_fraction:g}"
    if mask is not None:
        return InputError(
            f"{mask.spec}: the mask selects no patch (no patch has a mask fraction >= {fraction} "
            "and a mask voxel; check the mask, its values > 0 count, or lower --min-fraction)"
        )
    if labels is not None and options.min_fraction > 0:
        return InputError(
            f"{labels.spec}: no patch has labels > 0 in a fraction >= {fraction} of its voxels "
            "(lower --min-fraction)"
        )
    return OptionError(
        f"--size {_text(options.size)}: no patch fits the ROI {g.bounds.to_text()} of "
        f"{volume.spec} with --edge {g.edge} (use a padding edge mode or a smaller --size)"
    )


def _order(
    groups: Mapping[str, Array], extent: Sequence[int], start: Sequence[int]
) -> tuple[Array, dict[str, Array], dict[str, Array]]:
    """Sort each group's origins by slab, then C order, and find each slab's row range.

    Origins before the ROI ``start`` (mirrored edges) join the first slab, which reads the
    same source chunks anyway.
    """
    ext = np.asarray(extent, dtype=np.int64)
    low = np.asarray(start, dtype=np.int64)
    everything = np.concatenate(list(groups.values()))
    first, last = everything.min(axis=0), everything.max(axis=0)
    k_first = np.floor_divide(np.maximum(first, low), ext)
    k_dims = tuple(int(d) for d in np.floor_divide(np.maximum(last, low), ext) - k_first + 1)
    o_dims = tuple(int(d) for d in last - first + 1)

    def slab_ids(origins: Array) -> Array:
        k = np.floor_divide(np.maximum(origins, low), ext) - k_first
        return np.asarray(np.ravel_multi_index(tuple(k.T), k_dims), dtype=np.int64)

    ids = np.unique(np.concatenate([slab_ids(o) for o in groups.values()]))
    slabs = np.stack(np.unravel_index(ids, k_dims), axis=1) + k_first
    ordered: dict[str, Array] = {}
    offsets: dict[str, Array] = {}
    for name, origins in groups.items():
        rows = slab_ids(origins)
        within = np.ravel_multi_index(tuple((origins - first).T), o_dims)
        order = np.lexsort((within, rows))
        ordered[name] = origins[order]
        offsets[name] = np.append(np.searchsorted(rows[order], ids), len(origins))
    return slabs, ordered, offsets


@dataclass(frozen=True, eq=False)
class PatchBatch:
    """Consecutive rows of one output group.

    Attributes:
        group: ``""`` or ``"class_<value>"``.
        start: row of the first patch in its group.
        patches: ``(b, [c,] *size)`` in the source dtype.
        labels: ``(b, *size)`` label patches, or ``None`` without labels.
        origins: ``(b, ndim)`` voxel start of each patch in source coordinates (z, y, x).
    """

    group: str
    start: int
    patches: Array
    labels: Array | None
    origins: Array


class _InMemory(Volume):
    """An in-memory array as a volume whose reads are views (no copy until patches are cut)."""

    kind = "array"

    def __init__(self, array: Array, axes: str | None, spec: str) -> None:
        array = np.asarray(array)
        if axes is None:
            axes = {2: "yx", 3: "zyx", 4: "czyx"}.get(array.ndim, "")
        super().__init__(spec, array.shape, array.dtype, axes)
        self._array = array

    def read(self, box: Box) -> Array:
        return self._array[box.slices()]


def _slab_jobs(plan: PatchPlan, done: Mapping[str, int]) -> Iterator[tuple[Box, dict[str, range]]]:
    """Per slab with rows still to write: the region its patches cover, and rows per group."""
    size = np.asarray(plan.geometry.size, dtype=np.int64)
    for i in range(len(plan.slabs)):
        rows: dict[str, range] = {}
        for name, offsets in plan.offsets.items():
            first, stop = max(int(offsets[i]), done.get(name, 0)), int(offsets[i + 1])
            if first < stop:
                rows[name] = range(first, stop)
        if rows:
            parts = [plan.groups[name][r.start : r.stop] for name, r in rows.items()]
            lo = np.min([p.min(axis=0) for p in parts], axis=0)
            hi = np.max([p.max(axis=0) for p in parts], axis=0) + size
            yield Box(tuple(lo), tuple(hi)), rows


def _prefetch(func: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``func`` over ``items``, results in order; ``workers`` threads run ahead of the caller
    (at most ``workers + 1`` results alive at once); 0 runs everything in the caller."""
    if workers < 1:
        yield from map(func, items)
        return
    pending: deque[Future[R]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="datatools-patches") as pool:
        try:
            for item in items:
                pending.append(pool.submit(func, item))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _batches(
    plan: PatchPlan,
    volume: Volume,
    labels: Volume | None,
    *,
    done: Mapping[str, int],
    batch_rows: int,
    workers: int,
) -> Iterator[PatchBatch]:
    """Cut the planned patches slab by slab; batches end on multiples of ``batch_rows``
    (whole output chunks). Peak memory: the slabs in flight plus one batch."""
    g = plan.geometry
    axes = tuple(range(len(g.spatial)))

    def load(job: tuple[Box, dict[str, range]]) -> tuple[Box, dict[str, range], Array, Any]:
        region, rows = job
        data = read_box(volume, g.source_box(region), g.pad_edge, fill=g.fill, bounds=g.roi)
        lab = None if labels is None else read_box(labels, region, g.pad_edge, bounds=g.bounds)
        return region, rows, data, lab

    for region, rows, data, lab in _prefetch(load, _slab_jobs(plan, done), workers):
        windows = sliding_window_view(np.moveaxis(data, g.spatial, axes), g.size, axis=axes)
        label_windows = None if lab is None else sliding_window_view(lab, g.size)
        for name, span in rows.items():
            first = span.start
            while first < span.stop:
                last = min(span.stop, (first // batch_rows + 1) * batch_rows)
                origins = plan.groups[name][first:last]
                at = tuple((origins - np.asarray(region.start)).T)
                patches = windows[at].reshape(len(origins), *g.item_shape)
                cut = None
                if label_windows is not None:
                    cut = label_windows[at].reshape(len(origins), *g.label_shape)
                yield PatchBatch(name, first, patches, cut, origins)
                first = last


def default_chunk_rows(item_shape: Sequence[int], dtype: np.dtype[Any]) -> int:
    """Patches per output chunk: about 2 MiB of patches (1 to 65,536)."""
    item_bytes = math.prod(item_shape) * np.dtype(dtype).itemsize
    return max(1, min(MAX_CHUNK_ROWS, CHUNK_BYTES // max(1, item_bytes)))


def iter_patches(
    array: Array,
    *,
    size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    edge: str = "symmetric",
    fill: float = 0,
    labels: Array | None = None,
    mask: Array | None = None,
    min_fraction: float = 0.0,
    per_class: bool = False,
    class_rule: str = "centre",
    max_per_class: int | None = None,
    sampler: str = "grid",
    count: int | None = None,
    min_distance: float | None = None,
    max_patches: int | None = None,
    rng: int | np.random.Generator | None = None,
    roi: RoiSpec | Box | None = None,
    axes: str | None = None,
    batch_rows: int | None = None,
    memory_limit: int | None = None,
) -> Iterator[PatchBatch]:
    """Patches of an in-memory array in batches, planned as :func:`extract_patches` plans.

    Options are checked and the plan is made at the call; batches come lazily::

        for batch in iter_patches(volume, size=(64, 64), edge="reflect"):
            train_step(batch.patches, batch.origins)

    Args:
        array: the volume, axes ``axes`` (default by ndim: ``yx``, ``zyx``, ``czyx``).
        labels, mask: arrays on the same spatial grid (spatial axes only).
        batch_rows: patches per batch (default about 512 KiB of patches, which stay in the
            CPU cache); a group's batches end on multiples of it.
        Others: as :func:`extract_patches`.

    Returns:
        An iterator of :class:`PatchBatch`, group by group within each slab. Peak memory:
        one batch, plus a slab copy only where patches cross the ROI border (interior slabs
        are views of ``array``).

    Raises:
        OptionError, RoiError, InputError: as :func:`extract_patches`.
    """
    options = PatchOptions(
        _ints(size),
        None if stride is None else _ints(stride),
        edge,
        fill,
        min_fraction,
        per_class,
        class_rule,
        max_per_class,
        sampler,
        count,
        min_distance,
        max_patches,
        roi,
    )
    volume = _InMemory(array, axes, "<array>")
    letters = spatial_axes(volume.axes)
    lab = None if labels is None else _InMemory(labels, letters, "<labels>")
    msk = None if mask is None else _InMemory(mask, letters, "<mask>")
    plan = plan_patches(volume, options, labels=lab, mask=msk, rng=rng, memory_limit=memory_limit)
    item_bytes = math.prod(plan.geometry.item_shape) * volume.dtype.itemsize
    rows = batch_rows or max(1, ITER_BYTES // item_bytes)
    if rows <= 0:
        raise OptionError(f"batch_rows {rows}: must be > 0")
    return _batches(plan, volume, lab, done={}, batch_rows=rows, workers=0)


def _ints(values: int | Sequence[int]) -> int | tuple[int, ...]:
    return values if isinstance(values, int) else tuple(int(v) for v in values)


@dataclass(frozen=True)
class PatchResult:
    """What :func:`extract_patches` wrote.

    Attributes:
        target: the output path.
        counts: rows per group (``""`` for a single dataset, else ``class_<value>``).
        item_shape: shape of one patch; ``dtype`` its dtype; ``patch_axes`` its axis letters.
        chunk_rows: patches per output chunk.
        written: rows written by this call (the others were written by an earlier run).
        seed: seed of the random choices (``None`` when nothing was random).
        seconds: wall time of this call.
        params: the options recorded in the output.
    """

    target: Path
    counts: dict[str, int]
    item_shape: tuple[int, ...]
    dtype: str
    patch_axes: str
    chunk_rows: int
    written: int
    seed: int | None
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """A few lines for the terminal."""
        shape = " x ".join(map(str, self.item_shape))
        lines = [
            f"{self.target}: {self.total} patches of {shape} {self.dtype} ({self.patch_axes}), "
            f"{self.chunk_rows} per chunk, complete",
            f"  {self.written} written now, {self.total - self.written} already done, "
            f"{self.seconds:.1f} s" + ("" if self.seed is None else f"; seed {self.seed}"),
        ]
        if "" not in self.counts:
            lines.append("  " + ", ".join(f"{g}: {n}" for g, n in self.counts.items()))
        return "\n".join(lines)


def extract_patches(
    source: SourceSpec | Volume,
    target_path: str | Path,
    *,
    size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    edge: str = "symmetric",
    fill: float = 0,
    labels: SourceSpec | Volume | None = None,
    mask: SourceSpec | Volume | None = None,
    min_fraction: float = 0.0,
    per_class: bool = False,
    class_rule: str = "centre",
    max_per_class: int | None = None,
    sampler: str = "grid",
    count: int | None = None,
    min_distance: float | None = None,
    max_patches: int | None = None,
    rng: int | np.random.Generator | None = None,
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
) -> PatchResult:
    """Write a patch dataset of ``source`` to ``target_path`` (Zarr group; HDF5 for ``.h5``).

    Output: ``patches`` ``(n, [c,] *size)`` in the source dtype; ``labels`` ``(n, *size)`` with
    ``labels``; ``origins`` ``(n, ndim)`` int64, the voxel start of each patch in the source
    (z, y, x; negative at mirrored edges); chunked along ``n``. With ``per_class``, one
    subgroup ``class_<value>`` holding these arrays per label value. Attributes: size,
    stride, edge, sampler, seed, source, its voxel size, translation and unit, counts, and
    every option. Rows come slab by slab (C order inside a slab); ``origins`` places them.

    A rerun with the same options completes an interrupted Zarr output (flushed rows are kept,
    the rest appended; an unfinished HDF5 file restarts) and leaves a finished one as it is;
    other options are refused unless ``overwrite``.

    Args:
        source: anything :func:`datatools.sources.open_volume` opens, or an open volume.
        target_path: ``.zarr`` folder, or ``.h5`` / ``.hdf5`` file (no ``per_class``).
        size: patch size, voxels: one int for every spatial axis, or fewer values for patches
            over the trailing axes at every index of the leading ones (``(64, 64)`` on
            (z, y, x): 2D patches from every slice). Channels are kept whole.
        stride: grid step (default ``size``, tiling); grid sampler only.
        edge: ``symmetric``, ``reflect``, ``constant`` (value ``fill``), ``shift`` or
            ``drop``, applied at the ROI border exactly as ``np.pad`` modes; patches never hold
            voxels from outside the ROI.
        labels: label volume on the source's grid; label patches are stored aligned.
        mask: keep a patch when its fraction of mask voxels (> 0) is at least ``min_fraction``
            and not zero (random samplers: centred on mask voxels). Without a mask,
            ``min_fraction`` applies to ``labels > 0``.
        per_class: a subgroup per label value; a patch belongs to the class of its centre
            voxel (``class_rule="centre"``), its most frequent label (``"majority"``, ties to
            the smaller value) or each label in it (``"any"``); other rules grid only.
        max_per_class: at most this many patches per class (a seeded random subset).
        sampler: ``grid``; ``random`` (``count`` centres drawn uniformly without replacement
            from the valid, mask or class voxels; per class with ``per_class``);
            ``blue-noise`` (random centres at least ``min_distance`` voxels apart, greedy
            Poisson-disk; ``count`` optional). Fewer than asked: a
            :class:`~datatools.sampling.SamplingWarning` gives the number obtained.
        max_patches: at most this many patches (per class with ``per_class``).
        rng: seed or generator for every random choice; the seed used is recorded.
        roi: region of the source, half-open voxels; non-spatial axes kept whole.
        chunk_rows: patches per chunk (default about 2 MiB); ``codec``/``level``: compression
            (default zstd; HDF5 gzip); ``zarr_format``: 3 or 2.
        open_options: level / series / gap choices for opening the inputs.
        memory_limit: bytes for slabs in flight (default 256 MiB). Peak memory: slabs of at
            most ``memory_limit / (2 x (workers + 1))`` bytes (source + labels + halo), plus a
            batch being appended (<= 16 MiB) and
            one chunk row (~2 MiB) per array and class, plus ``8 x ndim`` bytes per patch for
            the plan. Never the whole volume.
        workers: threads reading (decoding) slabs ahead of the one being cut and written;
            0 reads in the calling thread.
        overwrite: replace an existing output of datatools (never a foreign one).
        progress: a progress bar on stderr.

    Raises:
        OptionError, RoiError: invalid options (the message names the option).
        InputError, InputNotFoundError: unreadable inputs, labels or mask not on the source's
            grid, or nothing selected (then nothing is written).
        TargetError, ResumeMismatchError: the target is not ours or holds another run.
        WriteError: writing failed (a Zarr output stays resumable).
    """
    started = time.perf_counter()
    path = Path(target_path)
    hdf5 = path.suffix.lower() in HDF5_SUFFIXES
    options = PatchOptions(
        _ints(size),
        None if stride is None else _ints(stride),
        edge,
        fill,
        min_fraction,
        per_class,
        class_rule,
        max_per_class,
        sampler,
        count,
        min_distance,
        max_patches,
        roi,
    )
    if per_class and hdf5:
        raise OptionError(
            f"{path}: --per-class writes a subgroup per class; HDF5 targets hold one group "
            "(write a .zarr target)"
        )
    if zarr_format not in (2, 3):
        raise OptionError(f"--zarr-format {zarr_format}: must be 2 or 3")
    if workers < 0:
        raise OptionError(f"--workers {workers}: must be >= 0")
    if chunk_rows is not None and chunk_rows <= 0:
        raise OptionError(f"--chunk-rows {chunk_rows}: must be > 0")
    with ExitStack() as stack:
        volume = _open(source, open_options, stack)
        lab = None if labels is None else _open(labels, open_options, stack)
        msk = None if mask is None else _open(mask, open_options, stack)
        record = {
            **options.to_dict(),
            "source": volume.spec,
            "labels": None if lab is None else lab.spec,
            "mask": None if msk is None else msk.spec,
            "seed": resolve_seed(rng) if options.random else None,
            "chunk_rows": chunk_rows,
            "codec": codec,
            "level": level,
            "zarr_format": None if hdf5 else zarr_format,
        }
        output = _Output(path, hdf5=hdf5, per_class=per_class, overwrite=overwrite)
        extent = output.previous_extent(record)
        plan = plan_patches(
            volume,
            options,
            labels=lab,
            mask=msk,
            rng=record["seed"],
            memory_limit=memory_limit,
            workers=workers,
            extent=extent,
        )
        g = plan.geometry
        rows = chunk_rows or default_chunk_rows(g.item_shape, volume.dtype)
        record["slab_extent"] = list(plan.slab_extent)
        written = 0
        with ExitStack() as writing:
            writers = output.open(plan.groups, record, _arrays(g, volume, lab), rows, writing)
            done = {name: w.rows for name, w in writers.items()}
            bar = writing.enter_context(
                progress_bar(sum(plan.counts.values()), "patches", enabled=progress, unit="patch")
            )
            bar.update(sum(done.values()))
            per_batch = rows * max(1, APPEND_BYTES // (rows * _row_bytes(g, volume, lab)))
            for batch in _batches(
                plan, volume, lab, done=done, batch_rows=per_batch, workers=workers
            ):
                arrays = {"patches": batch.patches, "origins": batch.origins}
                if batch.labels is not None:
                    arrays["labels"] = batch.labels
                writers[batch.group].append(**arrays)
                written += len(batch.origins)
                bar.update(len(batch.origins))
        output.finish(plan.counts, _attributes(plan, volume, record))
    return PatchResult(
        path,
        plan.counts,
        g.item_shape,
        str(volume.dtype),
        g.patch_axes,
        rows,
        written,
        plan.seed,
        time.perf_counter() - started,
        record,
    )


def _row_bytes(g: PatchGeometry, volume: Volume, labels: Volume | None) -> int:
    """Bytes of one output row: patch, label patch and origin."""
    row = math.prod(g.item_shape) * volume.dtype.itemsize + 8 * len(g.spatial)
    return row + (0 if labels is None else math.prod(g.label_shape) * labels.dtype.itemsize)


def _open(spec: SourceSpec | Volume, options: OpenOptions | None, stack: ExitStack) -> Volume:
    if isinstance(spec, Volume):
        return spec
    return stack.enter_context(open_volume(spec, options))


def _arrays(g: PatchGeometry, volume: Volume, labels: Volume | None) -> dict[str, ArraySpec]:
    """Writer specs: ``patches``, ``labels`` when given, ``origins``; axis names as dims."""
    kept = g.patch_axes[len(g.patch_axes) - g.kept :]
    arrays = {"patches": ArraySpec(g.item_shape, volume.dtype, dims=tuple(g.patch_axes))}
    if labels is not None:
        arrays["labels"] = ArraySpec(g.label_shape, labels.dtype, dims=("n", *kept))
    arrays["origins"] = ArraySpec((len(g.spatial),), np.dtype("int64"), dims=("n", "axis"))
    return arrays


def _attributes(plan: PatchPlan, volume: Volume, record: Mapping[str, Any]) -> dict[str, Any]:
    """Group attributes: what the patches are and where they lie in the source."""
    g = plan.geometry
    return {
        "patch_axes": g.patch_axes,
        "origin_axes": spatial_axes(g.axes),
        "size": list(g.size),
        "stride": list(g.stride),
        "edge": g.edge,
        "fill": g.fill if g.edge == "constant" else None,
        "sampler": record["sampler"],
        "seed": plan.seed,
        "source": volume.spec,
        "source_shape": list(volume.shape),
        "source_axes": volume.axes,
        "roi": g.roi.to_text(),
        "voxel_size": None if volume.voxel_size is None else list(volume.voxel_size),
        "translation": None if volume.translation is None else list(volume.translation),
        "unit": volume.unit,
        "placement": "physical position of patch voxel i = translation + (origin + i) * "
        "voxel_size per spatial axis (origin_axes order)",
        "datatools_version": __version__,
        "params": dict(record),
    }


class _Output:
    """The target of :func:`extract_patches`: checks, writers, resume and final attributes.

    Layouts: a Zarr group owned by its writer, the run's options in the attributes of
    ``.datatools/patches`` so a rerun can check them; with ``per_class`` a Zarr group of ours
    (run record ``patches``) holding one writer-owned subgroup per class; an HDF5 file, its
    options in its ``params`` attribute once finished (an unfinished file restarts).
    """

    def __init__(self, path: Path, *, hdf5: bool, per_class: bool, overwrite: bool) -> None:
        self.path, self.hdf5, self.per_class, self.overwrite = path, hdf5, per_class, overwrite
        self.resume = False

    def previous_extent(self, record: Mapping[str, Any]) -> tuple[int, ...] | None:
        """Check an existing output against ``record``; its slab extent when resuming it.

        Raises:
            TargetError: the target exists and was not written by ``patches``.
            ResumeMismatchError: it was, with other options.
        """
        path = self.path
        if self.overwrite or not (path.exists() or path.is_symlink()):
            return None
        stored = self._stored()
        if stored is None:
            raise TargetError(
                f"{path}: exists and was not written by datatools patches (choose another "
                "target; --overwrite only replaces outputs of datatools)"
            )
        old = target.RunRecord("patches", {k: v for k, v in stored.items() if k != "slab_extent"})
        diff = target.diff_params(old, target.RunRecord("patches", dict(record)))
        if diff:
            raise ResumeMismatchError(
                f"{path}: exists from a run with other options ({diff}); rerun with the same "
                "options to resume, or add --overwrite to replace it"
            )
        self.resume = True
        return tuple(int(e) for e in stored["slab_extent"])

    def _stored(self) -> dict[str, Any] | None:
        path = self.path
        if self.hdf5:
            try:
                with h5py.File(path, "r") as file:
                    raw = file.attrs.get("params")
            except OSError:
                return None
            return dict(json.loads(raw)) if isinstance(raw, str | bytes) else None
        if not target.is_ours(path):
            return None
        record = target.read_record(path)
        if record.command == "patches":
            return record.params
        try:
            group = zarr.open_group(str(target.marker_dir(path) / RECORD_GROUP), mode="r")
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            return None
        return dict(group.attrs.asdict())

    def open(
        self,
        groups: Iterable[str],
        record: Mapping[str, Any],
        arrays: Mapping[str, ArraySpec],
        chunk_rows: int,
        stack: ExitStack,
    ) -> dict[str, ArrayWriter]:
        """One writer per output group, continuing what an earlier run flushed."""
        fmt: Literal[2, 3] = 2 if record["zarr_format"] == 2 else 3

        def writer(path: Path, *, append: bool, overwrite: bool) -> ArrayWriter:
            return stack.enter_context(
                open_writer(
                    path,
                    arrays,
                    chunk_rows=chunk_rows,
                    codec=record["codec"],
                    level=record["level"],
                    zarr_format=fmt,
                    append=append,
                    overwrite=overwrite,
                )
            )

        if not self.per_class:
            restart = self.overwrite or (self.hdf5 and not self.resume)
            out = writer(self.path, append=not restart, overwrite=restart)
            if not self.hdf5:
                zarr.create_group(
                    str(target.marker_dir(self.path) / RECORD_GROUP),
                    zarr_format=fmt,
                    attributes=dict(record),
                    overwrite=True,
                )
            return {"": out}
        outcome = target.claim(
            self.path,
            target.RunRecord("patches", dict(record)),
            overwrite=self.overwrite,
            populate=lambda folder: _create_group(folder, fmt),
        )
        if outcome == "resumed":
            target.clear_complete(self.path)
        return {name: writer(self.path / name, append=True, overwrite=False) for name in groups}

    def finish(self, counts: Mapping[str, int], attrs: Mapping[str, Any]) -> None:
        """Write the attributes (and ``count``, or per class ``counts``) after every writer
        closed; per class, mark the root complete.

        Raises:
            WriteError: the attributes cannot be written.
        """
        try:
            if self.hdf5:
                with h5py.File(self.path, "r+") as file:
                    for key, value in {**attrs, "count": counts[""]}.items():
                        file.attrs[key] = _hdf5_value(value)
            elif not self.per_class:
                root = zarr.open_group(str(self.path), mode="r+")
                root.attrs.update({**attrs, "count": counts[""]})
            else:
                root = zarr.open_group(str(self.path), mode="r+")
                root.attrs.update({**attrs, "counts": dict(counts)})
                for name, n in counts.items():
                    value = int(name.removeprefix("class_"))
                    group = zarr.open_group(str(self.path / name), mode="r+")
                    group.attrs.update({**attrs, "class_value": value, "count": n})
                target.mark_complete(self.path)
        except OSError as exc:
            raise WriteError(f"{self.path}: cannot write attributes ({exc})") from exc


def _create_group(folder: Path, zarr_format: Literal[2, 3]) -> None:
    zarr.create_group(str(folder), zarr_format=zarr_format)


def _hdf5_value(value: Any) -> Any:
    """HDF5 attributes hold numbers, strings and numeric arrays; anything else as JSON text."""
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
        return np.asarray(value)
    return json.dumps(value)
