"""Which patches a run of :func:`datatools.patches.extract_patches` writes, and in which order.

Options are checked against the volume first (:func:`make_geometry`); then positions are chosen
(:mod:`datatools.patches.sampling`): a grid over the ROI, or random / blue-noise centres,
tested against the mask, ``min_fraction`` and the classes, with the mask and labels streamed in
tiles. The plan holds the origins of the kept patches (``8 x ndim`` bytes each) per output
group, ordered slab by slab (C order inside a slab), so extraction reads each slab of the source
once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from datatools.edges import PAD_MODES, EdgeMode, check_edge, check_fill, read_box
from datatools.errors import DatatoolsError, InputError, OptionError
from datatools.geometry import Box, resolve_roi, spatial_axes
from datatools.patches.choose import Region, check_selection, choose_origins
from datatools.patches.options import PatchOptions
from datatools.patches.sampling import resolve_seed, slab_extent
from datatools.sources import Volume

log = logging.getLogger(__name__)

DEFAULT_MEMORY_LIMIT = 256 * 2**20
"""Bytes for slabs in flight (and planning tiles) when the caller gives no limit."""

Array = np.ndarray[Any, Any]


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


@dataclass(frozen=True, eq=False)
class SlabPatches:
    """One slab of patches read into memory: cut at any planned origins inside its region.

    Attributes:
        geometry: where the patches lie.
        region: the slab, spatial voxels, covering every patch cut from it.
        windows: view of every patch position of the source (spatial axes first).
        label_windows: the same over the labels, or ``None``.
    """

    geometry: PatchGeometry
    region: Box
    windows: npt.NDArray[Any]
    label_windows: npt.NDArray[Any] | None

    @classmethod
    def read(
        cls, geometry: PatchGeometry, region: Box, volume: Volume, labels: Volume | None
    ) -> SlabPatches:
        """Read ``region`` of ``volume`` (all its non-spatial axes) and of ``labels``, outside
        the ROI by the geometry's edge mode. Memory: the region of both."""
        g = geometry
        axes = tuple(range(len(g.spatial)))
        data = read_box(volume, g.source_box(region), g.pad_edge, fill=g.fill, bounds=g.roi)
        windows = sliding_window_view(np.moveaxis(data, g.spatial, axes), g.size, axis=axes)
        label_windows = None
        if labels is not None:
            lab = read_box(labels, region, g.pad_edge, bounds=g.bounds)
            label_windows = sliding_window_view(lab, g.size)
        return cls(g, region, windows, label_windows)

    def cut(self, origins: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], npt.NDArray[Any] | None]:
        """Copies of the patches at ``origins`` (n, spatial axes; inside :attr:`region`):
        ``(n, *item_shape)``, and the label patches ``(n, *label_shape)`` or ``None``."""
        g = self.geometry
        at = tuple((origins - np.asarray(self.region.start)).T)
        patches = self.windows[at].reshape(len(origins), *g.item_shape)
        if self.label_windows is None:
            return patches, None
        return patches, self.label_windows[at].reshape(len(origins), *g.label_shape)


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
    if size is None:
        raise OptionError("--size: required (patch size in voxels, e.g. 64 or 64,64)")
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
    elif options.fill != 0:
        raise OptionError(
            f"--fill {options.fill:g}: used only with --edge constant (the edge is {edge})"
        )
    roi = resolve_roi(options.roi, volume.shape, volume.axes)
    extent = [n for n, a in zip(roi.shape, volume.axes, strict=True) if a in "zyx"]
    larger = [(a, s, e) for a, s, e in zip(letters, full_size, extent, strict=True) if s > e]
    if larger and edge in PAD_MODES:
        axis, want, have = larger[0]
        log.warning(
            "%s: patches of %d voxels along %s are larger than the ROI's %d: most of each patch "
            "is %s (give a smaller --size)",
            volume.spec,
            want,
            axis,
            have,
            "filled" if edge == "constant" else "mirrored",
        )
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
    follow the source chunks and ``memory_limit`` (cutting through chunks whose whole slabs
    would pass their share) unless ``extent`` fixes them (a resumed run keeps its first run's
    order). Peak memory: one planning tile (``memory_limit / 2`` at most) plus ``8 x ndim``
    bytes per patch.

    Raises:
        OptionError, RoiError: invalid options, or a patch larger than half the memory limit
            (:func:`check_slab_bytes`).
        InputError: labels or mask not on the source's grid, nothing selected, a source chunk
            (strip, tile) decoding to more than the memory limit, or resumed slabs larger than
            half of it.
    """
    g = make_geometry(volume, options)
    sel = check_selection(options, has_labels=labels is not None, has_mask=mask is not None)
    for role, companion in (("labels", labels), ("mask", mask)):
        if companion is not None:
            _check_companion(companion, g, role, volume.spec)
    limit = DEFAULT_MEMORY_LIMIT if memory_limit is None else memory_limit
    if limit <= 0:
        raise OptionError(f"--memory-limit {limit}: must be > 0")
    if extent is None:
        chunks = None if volume.chunks is None else [volume.chunks[i] for i in g.spatial]
        budget = max(1, limit // (2 * (max(0, workers) + 1)))
        per_voxel = _voxel_bytes(g, volume, labels)
        extent = slab_extent(g.bounds.shape, g.size, chunks, per_voxel, budget)
        if _slab_bytes(g, extent, per_voxel) > budget:
            # whole source chunks (one strip of a whole slice) would make larger slabs: cut
            # through them (a slab decodes the chunks it meets, as its neighbours do)
            extent = slab_extent(g.bounds.shape, g.size, None, per_voxel, budget)
    check_slab_bytes(g, volume, labels, extent, limit, _text(options.size or ()))
    seed = resolve_seed(rng) if sel.random else None
    found = choose_origins(
        Region(g.bounds, tuple(g.size), tuple(g.stride), g.edge),
        sel,
        labels=labels,
        mask=mask,
        seed=seed,
        memory_limit=limit,
    )
    groups = {("" if c is None else f"class_{c}"): o for c, o in found.items() if len(o)}
    if not groups:
        raise _nothing_error(g, options, volume, labels, mask)
    slabs, ordered, offsets = _order(groups, extent, g.bounds.start)
    return PatchPlan(g, ordered, tuple(int(e) for e in extent), slabs, offsets, seed)


def check_slab_bytes(
    g: PatchGeometry,
    volume: Volume,
    labels: Volume | None,
    extent: Sequence[int],
    limit: int,
    size: str,
) -> None:
    """Refuse patches or source pieces that cannot fit in memory, before anything is read or
    written.

    A slab holds the patches whose origins lie in one tile of ``extent``, plus their reach
    (``size - 1``), of the source (every channel) and the labels; even without read-ahead one
    slab is in memory at a time, so it must fit in half of ``limit``. A read decodes each
    source chunk (strip, tile) it meets whole, so one must fit in ``limit``. ``size``: the
    ``--size`` option as given, for the message.

    Raises:
        OptionError: one patch alone takes more than half the limit (``--size``).
        InputError: one chunk, strip or tile of the source decodes to more than the limit, or
            the slabs of the run being resumed take more than half of it.
    """
    per_voxel = _voxel_bytes(g, volume, labels)
    patch = math.prod(g.size) * per_voxel
    if patch > limit // 2:
        what = "source" if labels is None else "source and labels"
        raise OptionError(
            f"--size {size}: one patch of the {what} takes {patch} bytes, more than half "
            f"the memory limit ({limit} bytes) (give a smaller --size, or --memory-limit "
            f"{-(-2 * patch // 2**20)}M or more)"
        )
    piece = math.prod(volume.chunks or ()) * volume.dtype.itemsize
    if volume.chunks is not None and piece > limit:
        raise InputError(
            f"{volume.spec}: its smallest readable piece (a chunk, strip or tile of "
            f"{' x '.join(map(str, volume.chunks))}) decodes to {piece} bytes, more than the "
            f"memory limit ({limit} bytes) (give --memory-limit {-(-piece // 2**20)}M or more, "
            "or store the input in smaller chunks, strips or tiles)"
        )
    slab = _slab_bytes(g, extent, per_voxel)
    if slab > limit // 2:
        raise InputError(
            f"{volume.spec}: the slabs of {' x '.join(map(str, extent))} voxels this output was "
            f"started with take {slab} bytes with the patches' reach, more than half the memory "
            f"limit ({limit} bytes) (resume with --memory-limit {-(-2 * slab // 2**20)}M or more)"
        )


def _slab_bytes(g: PatchGeometry, extent: Sequence[int], per_voxel: int) -> int:
    """Bytes of the largest slab of ``extent``: a tile (at most the ROI) and the patches'
    reach."""
    reach = [min(e, n) + s - 1 for e, n, s in zip(extent, g.bounds.shape, g.size, strict=True)]
    return math.prod(reach) * per_voxel


def _voxel_bytes(g: PatchGeometry, volume: Volume, labels: Volume | None) -> int:
    """Bytes a slab holds per spatial voxel: the source's channels and the label."""
    other = math.prod(n for i, n in enumerate(g.shape) if i not in g.spatial)
    return volume.dtype.itemsize * other + (0 if labels is None else labels.dtype.itemsize)


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
        f"--size {_text(options.size or ())}: no patch fits the ROI {g.bounds.to_text()} of "
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
