"""Which patches a run keeps: the selection options checked together
(:func:`check_selection`), and the origins chosen per output group (:func:`choose_origins`),
from a region, an edge mode and optional label and mask volumes streamed tile by tile (never
the whole volume). The building blocks (positions, keyed random choice, blue noise, window
counts, tiles) are in :mod:`datatools.patches.sampling`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from datatools.edges import read_box
from datatools.errors import OptionError
from datatools.geometry import Box
from datatools.patches.options import PatchOptions
from datatools.patches.sampling import (
    SamplingWarning,
    SmallestKeys,
    aligned_tiles,
    axis_positions,
    blue_noise_candidates,
    centre_box,
    label_classes,
    mesh,
    mix_keys,
    point_ids,
    poisson_disk,
    random_points,
    slab_extent,
    window_counts,
)
from datatools.sources.base import Volume

Array = np.ndarray[Any, Any]
Sampler = Literal["grid", "random", "blue-noise"]
SAMPLERS: tuple[Sampler, ...] = ("grid", "random", "blue-noise")
CLASS_RULES = ("centre", "majority", "any")
PLAN_BYTES_PER_VOXEL = 64
"""Working memory per voxel of a planning tile besides mask and labels (window sums, keys)."""
MIN_PLAN_BYTES = 2**20
"""Planning tiles may use this much even under a smaller memory limit (fewer, larger reads)."""


@dataclass(frozen=True)
class Selection:
    """Which positions a run keeps; build it with :func:`check_selection`.

    Attributes:
        sampler: ``grid``, ``random`` or ``blue-noise``.
        count: positions a random sampler draws (per class with ``per_class``).
        min_distance: blue-noise spacing between centres, voxels (Euclidean).
        max_patches, max_per_class: caps per output group (a seeded random subset).
        min_fraction: least fraction of mask voxels (else labels > 0) in a patch.
        per_class: one output group per label value; ``class_rule`` assigns patches.
    """

    sampler: Sampler = "grid"
    count: int | None = None
    min_distance: float | None = None
    max_patches: int | None = None
    max_per_class: int | None = None
    min_fraction: float = 0.0
    per_class: bool = False
    class_rule: str = "centre"

    @property
    def cap(self) -> int | None:
        """Most positions per output group."""
        caps = [c for c in (self.max_patches, self.max_per_class) if c is not None]
        return min(caps) if caps else None

    @property
    def target(self) -> int | None:
        """Positions a random sampler aims for per output group (``None``: as many as fit)."""
        caps = [c for c in (self.count, self.cap) if c is not None]
        return min(caps) if caps else None

    @property
    def random(self) -> bool:
        """Whether any choice is random (so a seed matters)."""
        return self.sampler != "grid" or self.cap is not None


def check_selection(
    options: PatchOptions, *, has_labels: bool = False, has_mask: bool = False
) -> Selection:
    """Check the sampling options together (``has_labels``, ``has_mask``: whether the run
    has label and mask volumes).

    Raises:
        OptionError: an unknown sampler or rule, a value out of range, or options that do not
            go together (random without ``count``, ``per_class`` without labels, ...).
    """
    sampler, count, min_distance = options.sampler, options.count, options.min_distance
    max_patches, max_per_class = options.max_patches, options.max_per_class
    min_fraction, per_class, class_rule = (
        options.min_fraction,
        options.per_class,
        options.class_rule,
    )
    stride_given = options.stride is not None
    chosen: Sampler | None = next((s for s in SAMPLERS if s == sampler), None)
    if chosen is None:
        raise OptionError(f"--sampler {sampler}: unknown sampler (choose {', '.join(SAMPLERS)})")
    for name, value in (("count", count), ("max-patches", max_patches)):
        if value is not None and value <= 0:
            raise OptionError(f"--{name} {value}: must be > 0")
    if max_per_class is not None and max_per_class <= 0:
        raise OptionError(f"--max-per-class {max_per_class}: must be > 0")
    if chosen == "random" and count is None:
        raise OptionError("--sampler random: needs --count N (how many patches to draw)")
    if chosen == "blue-noise" and min_distance is None:
        raise OptionError("--sampler blue-noise: needs --min-distance D (voxels between centres)")
    if min_distance is not None and chosen != "blue-noise":
        raise OptionError("--min-distance: only with --sampler blue-noise")
    if min_distance is not None and not min_distance > 0:
        raise OptionError(f"--min-distance {min_distance}: must be > 0")
    if count is not None and chosen == "grid":
        raise OptionError("--count: only with --sampler random or blue-noise (grid takes all)")
    if stride_given and chosen != "grid":
        raise OptionError(f"--stride: only with --sampler grid (not {chosen})")
    if not 0.0 <= min_fraction <= 1.0:
        raise OptionError(f"--min-fraction {min_fraction}: must be between 0 and 1")
    if min_fraction > 0 and not (has_mask or has_labels):
        raise OptionError(
            f"--min-fraction {min_fraction:g}: needs --mask (or --labels, whose non-zero voxels "
            "count then)"
        )
    if per_class and not has_labels:
        raise OptionError("--per-class: needs --labels (a label volume on the source's grid)")
    if max_per_class is not None and not per_class:
        raise OptionError("--max-per-class: only with --per-class")
    if class_rule not in CLASS_RULES:
        raise OptionError(
            f"--class-rule {class_rule}: unknown rule (choose {', '.join(CLASS_RULES)})"
        )
    if class_rule != "centre" and not per_class:
        raise OptionError(f"--class-rule {class_rule}: only with --per-class")
    if per_class and class_rule != "centre" and chosen != "grid":
        raise OptionError(
            f"--class-rule {class_rule}: only with --sampler grid ({chosen} picks centres "
            "among each class's voxels, so a patch's class is its centre's)"
        )
    return Selection(
        chosen,
        count,
        min_distance,
        max_patches,
        max_per_class,
        float(min_fraction),
        per_class,
        class_rule,
    )


@dataclass(frozen=True)
class Region:
    """Where patches may lie: ``bounds`` (the ROI, voxels), patch ``size`` and grid ``stride``
    per axis, and the ``edge`` mode at the ROI border."""

    bounds: Box
    size: tuple[int, ...]
    stride: tuple[int, ...]
    edge: str


def choose_origins(
    region: Region,
    sel: Selection,
    *,
    labels: Volume | None = None,
    mask: Volume | None = None,
    seed: int | None = None,
    memory_limit: int = 2**28,
) -> dict[int | None, Array]:
    """Patch origins per output group (``None`` for one dataset, else the class value).

    Grid positions come from :func:`~datatools.patches.sampling.axis_positions`; random centres
    lie in :func:`~datatools.patches.sampling.centre_box`. A mask (values > 0) keeps patches
    whose mask fraction is at least ``sel.min_fraction`` and not zero (random samplers: centred
    on a mask voxel); without one, ``min_fraction`` applies to ``labels > 0``. Mask and labels
    (spatial axes only, the region ``bounds`` on their grid) are read tile by tile with the
    patch halo, mirrored as ``region.edge`` says, and only when needed. Peak memory: one tile,
    at most ``memory_limit / 2`` bytes (at least 1 MiB), plus the origins kept (or candidates:
    ``64 x target`` for blue noise).

    Raises:
        OptionError: ``shift`` with a patch larger than ``bounds``.
    """
    return _Chooser(region, sel, (labels, mask), seed, memory_limit).run()


class _Chooser:
    """The state of :func:`choose_origins`: one collector of origins per output group."""

    def __init__(
        self,
        region: Region,
        sel: Selection,
        inputs: tuple[Volume | None, Volume | None],
        seed: int | None,
        memory_limit: int,
    ) -> None:
        bounds, size, stride = region.bounds, region.size, region.stride
        labels, mask = inputs
        self.bounds, self.edge, self.sel = bounds, region.edge, sel
        self.shape = tuple(int(p) for p in size)
        self.size = np.asarray(size, dtype=np.int64)
        self.stride = tuple(stride)
        self.half = self.size // 2
        self.labels, self.mask, self.seed = labels, mask, seed
        self.memory_limit = memory_limit
        self.frame = Box(
            tuple(a - s for a, s in zip(bounds.start, size, strict=True)),
            tuple(b + s for b, s in zip(bounds.stop, size, strict=True)),
        )
        self.fraction = mask is not None or (labels is not None and sel.min_fraction > 0)
        self.threshold = max(
            math.ceil(sel.min_fraction * int(self.size.prod()) - 1e-9), int(mask is not None)
        )
        self.groups: dict[int | None, SmallestKeys] = {}

    def run(self) -> dict[int | None, Array]:
        found = self._grid() if self.sel.sampler == "grid" else self._random()
        return dict(sorted(found.items(), key=lambda kv: (kv[0] is not None, kv[0] or 0)))

    def _collect(
        self, cls: int | None, origins: Array, k: int | None, keys: Array | None = None
    ) -> None:
        """Offer origins to a group: keyed by their voxel ids when ``k`` caps it (seeded
        subset), else kept in C order unless ``keys`` give another order."""
        group = self.groups.setdefault(cls, SmallestKeys(k, self.bounds.ndim))
        if keys is None and k is not None and self.seed is not None:
            keys = mix_keys(point_ids(origins, self.frame), self.seed)
        group.add(np.zeros(len(origins), np.uint64) if keys is None else keys, origins)

    def _tiles(self, space: Box) -> Iterator[Box]:
        """Tiles of origin space whose patches' region fits the planning budget."""
        volumes = [v for v in (self.mask, self.labels) if v is not None]
        per_voxel = PLAN_BYTES_PER_VOXEL + sum(v.dtype.itemsize for v in volumes)
        budget = max(self.memory_limit // 2, MIN_PLAN_BYTES)
        extent = slab_extent(space.shape, self.shape, volumes[0].chunks, per_voxel, budget)
        yield from aligned_tiles(space, extent, self.bounds.start)

    def _read(self, tile: Box) -> tuple[Array | None, Array | None]:
        """Mask and labels of the region the patches starting in ``tile`` cover (halo
        mirrored as the edge mode says)."""
        stop = tuple(int(b + s - 1) for b, s in zip(tile.stop, self.shape, strict=True))
        region = Box(tile.start, stop)
        edge = self.edge if self.edge in ("symmetric", "reflect", "constant") else "symmetric"
        mask = None if self.mask is None else read_box(self.mask, region, edge, bounds=self.bounds)
        labels = None
        if self.labels is not None:
            labels = read_box(self.labels, region, edge, bounds=self.bounds)
        return mask, labels

    def _binary(self, mask: Array | None, labels: Array | None) -> Array:
        data = mask if mask is not None else labels
        assert data is not None
        return np.asarray(data > 0)

    def _grid(self) -> dict[int | None, Array]:
        b = self.bounds
        letters = "zyx"[3 - b.ndim :] if b.ndim <= 3 else None
        per_axis = [
            axis_positions(lo, hi, p, s, self.edge, letters[k] if letters else None)
            for k, (lo, hi, p, s) in enumerate(
                zip(b.start, b.stop, self.size, self.stride, strict=True)
            )
        ]
        if any(p.size == 0 for p in per_axis):
            return {}
        if not (self.fraction or self.sel.per_class):
            self._collect(None, mesh(per_axis), self.sel.cap)
        else:
            space = Box(tuple(int(p[0]) for p in per_axis), tuple(int(p[-1]) + 1 for p in per_axis))
            for tile in self._tiles(space):
                inside = [
                    p[(p >= lo) & (p < hi)]
                    for p, lo, hi in zip(per_axis, tile.start, tile.stop, strict=True)
                ]
                if any(p.size == 0 for p in inside):
                    continue
                mask, labels = self._read(tile)
                origins = mesh(inside)
                rel = origins - np.asarray(tile.start)
                if self.fraction:
                    counts = window_counts(self._binary(mask, labels), self.shape)
                    keep = counts[tuple(rel.T)] >= self.threshold
                    origins, rel = origins[keep], rel[keep]
                if not self.sel.per_class:
                    self._collect(None, origins, self.sel.cap)
                    continue
                assert labels is not None
                for cls, rows in label_classes(labels, rel, self.shape, self.sel.class_rule):
                    self._collect(cls, origins[rows], self.sel.cap)
        return {cls: group.result() for cls, group in self.groups.items()}

    def _random(self) -> dict[int | None, Array]:
        centres = centre_box(self.bounds, self.shape, self.edge)
        if centres is None:
            return {}
        assert self.seed is not None
        blue = self.sel.sampler == "blue-noise"
        target = self.sel.target
        wanted = blue_noise_candidates(target, centres.size) if blue else target
        if not (self.fraction or self.sel.per_class):
            assert wanted is not None
            points = random_points(centres, wanted, np.random.default_rng(self.seed))
            self._collect(None, points - self.half, None, np.arange(len(points), dtype=np.uint64))
        else:
            for tile in self._tiles(centres.shift(tuple(-self.half))):
                mask, labels = self._read(tile)
                ok = np.ones(tile.shape, dtype=bool)
                centre = tuple(slice(h, h + n) for h, n in zip(self.half, tile.shape, strict=True))
                if mask is not None:
                    ok &= mask[centre] > 0
                if self.fraction:
                    ok &= window_counts(self._binary(mask, labels), self.shape) >= self.threshold
                origins = np.stack(np.nonzero(ok), axis=1).astype(np.int64) + tile.start
                if not self.sel.per_class:
                    self._collect(None, origins, wanted)
                    continue
                assert labels is not None
                values = labels[centre][ok]
                for cls in np.unique(values):
                    self._collect(int(cls), origins[values == cls], wanted)
        found: dict[int | None, Array] = {}
        for cls, group in self.groups.items():
            origins = group.result()
            if blue:
                assert self.sel.min_distance is not None
                origins = origins[poisson_disk(origins, self.sel.min_distance, target)]
            found[cls] = origins
            self._warn_short(cls, len(origins), group.seen)
        return found

    def _warn_short(self, cls: int | None, obtained: int, seen: int) -> None:
        target = self.sel.target
        if target is None or obtained >= target:
            return
        where = "" if cls is None else f" of class {cls}"
        if self.sel.sampler == "blue-noise":
            why = f"only {obtained} patches{where} fit at --min-distance {self.sel.min_distance:g}"
        else:
            why = f"only {seen} candidate positions{where}"
        warnings.warn(
            f"--sampler {self.sel.sampler}: {why}, fewer than the {target} asked; wrote {obtained}",
            SamplingWarning,
            stacklevel=5,
        )
