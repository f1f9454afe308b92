"""Where patches go: grid, uniform random and blue-noise (Poisson-disk) positions.

Positions are voxel coordinates in C order (``(z, y, x)``; 2D ``(y, x)``); a patch of ``size``
starts at its *origin* and has its *centre* at ``origin + size // 2``. :func:`choose_origins`
picks the origins of one run, per output group, from a region, an edge mode and optional
label and mask volumes, which it streams tile by tile (never the whole volume).

Random choices use keyed hashes: every candidate gets the key ``mix_keys(id, seed)`` of its own
voxel id, and the candidates with the smallest keys win (:class:`SmallestKeys`). That is a
uniform sample without replacement, reproducible from the seed, and independent of how the
volume was cut into tiles. Walking candidates in key order is a random order, which blue-noise
sampling (greedy Poisson-disk, :func:`poisson_disk`) uses.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from datatools.edges import place_origins, read_box
from datatools.errors import OptionError
from datatools.geometry import Box
from datatools.sources.base import Volume

if TYPE_CHECKING:
    from scipy.spatial import cKDTree

Sampler = Literal["grid", "random", "blue-noise"]
SAMPLERS: tuple[Sampler, ...] = ("grid", "random", "blue-noise")
CLASS_RULES = ("centre", "majority", "any")
PLAN_BYTES_PER_VOXEL = 64
"""Working memory per voxel of a planning tile besides mask and labels (window sums, keys)."""
MIN_PLAN_BYTES = 2**20
"""Planning tiles may use this much even under a smaller memory limit (fewer, larger reads)."""

Array = np.ndarray[Any, Any]
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


class SamplingWarning(UserWarning):
    """A sampler found fewer positions than asked (the message gives the number obtained)."""


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
    sampler: str = "grid",
    *,
    stride_given: bool = False,
    count: int | None = None,
    min_distance: float | None = None,
    max_patches: int | None = None,
    max_per_class: int | None = None,
    min_fraction: float = 0.0,
    per_class: bool = False,
    class_rule: str = "centre",
    has_labels: bool = False,
    has_mask: bool = False,
) -> Selection:
    """Check the sampling options together.

    Raises:
        OptionError: an unknown sampler or rule, a value out of range, or options that do not
            go together (random without ``count``, ``per_class`` without labels, ...).
    """
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


def resolve_seed(rng: int | np.random.Generator | None) -> int:
    """An integer seed: ``rng`` itself, one drawn from a generator, or fresh OS entropy.

    Raises:
        OptionError: a negative seed.
    """
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(2**63))
    if rng is None:
        return int(np.random.default_rng().integers(2**63))
    if rng < 0:
        raise OptionError(f"--seed {rng}: must be >= 0")
    return int(rng)


def axis_positions(
    start: int, stop: int, size: int, stride: int, edge: str, name: str | None = None
) -> Array:
    """Grid starts along one axis: ``start, start + stride, ...`` below ``stop``, so patches
    ``[p, p + size)`` cover ``[start, stop)`` when ``stride <= size``; then ``shift`` moves the
    last ones inside (duplicates removed) and ``drop`` removes those crossing ``stop``.

    Raises:
        OptionError: ``shift`` with ``size > stop - start``.
    """
    pos = np.arange(start, stop, stride, dtype=np.int64)
    placed, keep = place_origins(pos[:, None], (size,), Box((start,), (stop,)), edge, name)
    return np.unique(placed[keep, 0])


def mesh(per_axis: Sequence[Array]) -> Array:
    """All combinations of per-axis coordinates, ``(n, ndim)`` int64, C order."""
    grids = np.meshgrid(*per_axis, indexing="ij")
    return np.stack([m.ravel() for m in grids], axis=1).astype(np.int64)


def centre_box(bounds: Box, size: Sequence[int], edge: str) -> Box | None:
    """Voxels where random samplers may centre a patch of ``size``: all of ``bounds`` for the
    padding modes; for ``shift`` and ``drop`` only centres whose patch fits (``None``: none)."""
    if edge not in ("shift", "drop"):
        return bounds
    start = tuple(a + p // 2 for a, p in zip(bounds.start, size, strict=True))
    stop = tuple(b - p + p // 2 + 1 for b, p in zip(bounds.stop, size, strict=True))
    box = Box(start, stop)
    return None if box.is_empty else box


def point_ids(points: Array, frame: Box) -> Array:
    """Stable ids of points inside ``frame`` (their C-order flat index), for :func:`mix_keys`."""
    rel = np.asarray(points, dtype=np.int64).reshape(-1, frame.ndim) - np.asarray(frame.start)
    if len(rel) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(np.ravel_multi_index(tuple(rel.T), frame.shape), dtype=np.int64)


def mix_keys(ids: Array, seed: int) -> Array:
    """Pseudo-random 64-bit keys of integer ids under ``seed`` (SplitMix64 finaliser)."""
    salt = _splitmix(np.asarray([seed % 2**64], dtype=np.uint64))[0]
    return _splitmix(np.asarray(ids, dtype=np.int64).astype(np.uint64) ^ salt)


def _splitmix(z: Array) -> Array:
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return np.asarray(z ^ (z >> np.uint64(31)))


class SmallestKeys:
    """The ``k`` entries with the smallest keys out of a stream (every entry when ``k`` is
    ``None``). Memory: at most ``2 k`` entries of ``8 (1 + width)`` bytes. Ties (equal keys)
    go to the smaller values, so the result never depends on the order of batches."""

    def __init__(self, k: int | None, width: int) -> None:
        self.k = k
        self.seen = 0
        self._keys = np.zeros(0, dtype=np.uint64)
        self._values = np.zeros((0, width), dtype=np.int64)

    def add(self, keys: Array, values: Array) -> None:
        """Offer entries: ``keys`` ``(m,)`` uint64, ``values`` ``(m, width)`` int64."""
        self.seen += len(keys)
        self._keys = np.concatenate([self._keys, keys])
        self._values = np.concatenate([self._values, values])
        if self.k is not None and len(self._keys) > 2 * self.k:
            self._trim()

    def _trim(self) -> None:
        order = np.lexsort((*self._values.T[::-1], self._keys))[: self.k]
        self._keys, self._values = self._keys[order], self._values[order]

    def result(self) -> Array:
        """The kept values ``(m, width)``, smallest key first."""
        self._trim()
        return self._values


def random_points(box: Box, count: int, rng: np.random.Generator) -> Array:
    """``min(count, box.size)`` distinct voxels of ``box``, uniformly, ``(m, ndim)`` int64."""
    flat = rng.choice(box.size, size=min(count, box.size), replace=False)
    coords = np.unravel_index(flat, box.shape)
    return np.stack(coords, axis=1).astype(np.int64) + np.asarray(box.start, dtype=np.int64)


def blue_noise_candidates(target: int | None, available: int) -> int:
    """Random candidates blue-noise sampling examines: ``64 x target`` (at least 65,536;
    2**20 without a target), at most ``available``."""
    return min(2**20 if target is None else max(64 * target, 2**16), available)


def poisson_disk(points: Array, min_distance: float, limit: int | None = None) -> Array:
    """Greedy Poisson-disk selection: walk ``points`` in order and keep a point when it is at
    least ``min_distance`` (Euclidean, voxels) from every point kept before; stop at ``limit``.

    With points in random order this is random sequential adsorption, the dart-throwing
    construction of blue noise. Vectorised by batches with k-d trees; a Python loop runs only
    over the points of a batch that are far from the earlier batches. Exact for integer points.

    Returns:
        Indices into ``points`` of the kept points, in walking order.
    """
    from scipy.spatial import cKDTree  # here: importing scipy costs a third of a second

    pts = np.asarray(points, dtype=np.float64)
    d2 = float(min_distance) ** 2
    kept: list[int] = []
    tree: cKDTree | None = None
    pos, batch = 0, 1024
    while pos < len(pts) and (limit is None or len(kept) < limit):
        idx = np.arange(pos, min(pos + batch, len(pts)))
        pos = int(idx[-1]) + 1
        if tree is not None:
            _, nearest = tree.query(pts[idx], k=1)
            gap = pts[idx] - pts[np.asarray(kept)[nearest]]
            idx = idx[(gap**2).sum(axis=1) >= d2]
        new = _greedy(pts, idx, min_distance, d2)
        if limit is not None:
            new = new[: limit - len(kept)]
        if new:
            kept.extend(new)
            tree = cKDTree(pts[kept])
        batch = max(1024, len(kept))
    return np.asarray(kept, dtype=np.int64)


def _greedy(pts: Array, idx: Array, min_distance: float, d2: float) -> list[int]:
    """Sequential greedy pass over candidates ``idx`` (already far from earlier batches)."""
    from scipy.spatial import cKDTree

    if idx.size == 0:
        return []
    sub = pts[idx]
    pairs = cKDTree(sub).query_pairs(r=float(min_distance), output_type="ndarray")
    pairs = pairs[((sub[pairs[:, 0]] - sub[pairs[:, 1]]) ** 2).sum(axis=1) < d2]
    if len(pairs) == 0:
        return [int(i) for i in idx]
    both = np.concatenate([pairs, pairs[:, ::-1]])
    both = both[np.argsort(both[:, 0], kind="stable")]
    starts = np.searchsorted(both[:, 0], np.arange(len(idx) + 1))
    rejected = np.zeros(len(idx), dtype=bool)
    kept: list[int] = []
    for i in range(len(idx)):
        if not rejected[i]:
            kept.append(int(idx[i]))
            rejected[both[starts[i] : starts[i + 1], 1]] = True
    return kept


def window_counts(binary: Array, size: Sequence[int]) -> Array:
    """True voxels in every window of ``size``, shape ``binary.shape - size + 1`` (int32).

    Moving sums from cumulative sums along each axis; peak about three int32 copies.
    """
    out = binary.astype(np.int32)
    for ax, p in enumerate(size):
        if p > 1:
            c = np.cumsum(out, axis=ax, dtype=np.int32)
            c = np.concatenate([np.zeros_like(np.take(c, [0], axis=ax)), c], axis=ax)
            n = c.shape[ax]
            out = np.take(c, range(p, n), axis=ax) - np.take(c, range(n - p), axis=ax)
    return out


def label_classes(
    labels: Array, starts: Array, size: Sequence[int], rule: str
) -> Iterator[tuple[int, Array]]:
    """For each class value, the rows of ``starts`` (patch starts in ``labels``) in that class:
    the centre voxel's label (``centre``), the most frequent label (``majority``, ties to the
    smaller value) or every label present (``any``). Works in batches of about 4M voxels."""
    half = np.asarray(size, dtype=np.int64) // 2
    if rule == "centre":
        values = labels[tuple((starts + half).T)]
        for cls in np.unique(values):
            yield int(cls), np.flatnonzero(values == cls)
        return
    classes, codes = np.unique(labels, return_inverse=True)
    windows = sliding_window_view(codes.reshape(labels.shape).astype(np.int32), tuple(size))
    n_cls = len(classes)
    per = max(1, 2**22 // (math.prod(size) + n_cls))
    hits = []
    for first in range(0, len(starts), per):
        part = starts[first : first + per]
        flat = windows[tuple(part.T)].reshape(len(part), -1)
        flat = flat + np.arange(len(part), dtype=np.int64)[:, None] * n_cls
        counts = np.bincount(flat.ravel(), minlength=len(part) * n_cls).reshape(-1, n_cls)
        if rule == "majority":
            hit = np.zeros(counts.shape, dtype=bool)
            hit[np.arange(len(part)), np.argmax(counts, axis=1)] = True
        else:
            hit = counts > 0
        hits.append(hit)
    table = np.concatenate(hits) if hits else np.zeros((0, n_cls), dtype=bool)
    for k, cls in enumerate(classes):
        rows = np.flatnonzero(table[:, k])
        if rows.size:
            yield int(cls), rows


def slab_extent(
    span: Sequence[int],
    size: Sequence[int],
    chunks: Sequence[int] | None,
    bytes_per_voxel: int,
    budget: int,
) -> tuple[int, ...]:
    """Tile size per axis for streaming a region of ``span`` voxels: whole ``chunks`` of the
    input, grown along the last axes first while a tile plus its halo (``size - 1``) stays
    within ``budget`` bytes (at least one chunk per axis)."""
    granule = [max(1, int(c)) for c in chunks] if chunks is not None else [1] * len(span)
    extent = list(granule)
    for ax in reversed(range(len(span))):
        others = math.prod(
            min(extent[b], span[b]) + size[b] - 1 for b in range(len(span)) if b != ax
        )
        fit = budget // (bytes_per_voxel * others) - (size[ax] - 1)
        if fit >= span[ax]:
            extent[ax] = -(-span[ax] // granule[ax]) * granule[ax]
            continue
        extent[ax] = max(granule[ax], fit // granule[ax] * granule[ax])
        break
    return tuple(extent)


def aligned_tiles(
    space: Box, extent: Sequence[int], low: Sequence[int] | None = None
) -> Iterator[Box]:
    """The parts of ``space`` in the tiles ``[k * extent, (k + 1) * extent)``, C order; the part
    of ``space`` below ``low`` (e.g. origins of patches reaching past the ROI start) joins the
    first tile above it."""
    floor = space.start if low is None else low
    spans = []
    for a, b, e, f in zip(space.start, space.stop, extent, floor, strict=True):
        cuts = list(range((max(a, f) // e + 1) * e, b, e))
        spans.append(list(zip([a, *cuts], [*cuts, b], strict=True)))
    for parts in np.ndindex(*(len(s) for s in spans)):
        picked = [spans[ax][k] for ax, k in enumerate(parts)]
        yield Box(tuple(p[0] for p in picked), tuple(p[1] for p in picked))


def choose_origins(
    bounds: Box,
    size: Sequence[int],
    stride: Sequence[int],
    edge: str,
    sel: Selection,
    *,
    labels: Volume | None = None,
    mask: Volume | None = None,
    seed: int | None = None,
    memory_limit: int = 2**28,
) -> dict[int | None, Array]:
    """Patch origins per output group (``None`` for one dataset, else the class value).

    Grid positions come from :func:`axis_positions`; random centres lie in
    :func:`centre_box`. A mask (values > 0) keeps patches whose mask fraction is at least
    ``sel.min_fraction`` and not zero (random samplers: centred on a mask voxel); without one,
    ``min_fraction`` applies to ``labels > 0``. Mask and labels (spatial axes only, the
    region ``bounds`` on their grid) are read tile by tile with the patch halo, mirrored as
    ``edge`` says, and only when needed. Peak memory: one tile, at most ``memory_limit / 2``
    bytes (at least 1 MiB), plus the origins kept (or candidates: ``64 x target`` for blue noise).

    Raises:
        OptionError: ``shift`` with a patch larger than ``bounds``.
    """
    return _Chooser(bounds, size, stride, edge, sel, labels, mask, seed, memory_limit).run()


class _Chooser:
    """The state of :func:`choose_origins`: one collector of origins per output group."""

    def __init__(
        self,
        bounds: Box,
        size: Sequence[int],
        stride: Sequence[int],
        edge: str,
        sel: Selection,
        labels: Volume | None,
        mask: Volume | None,
        seed: int | None,
        memory_limit: int,
    ) -> None:
        self.bounds, self.edge, self.sel = bounds, edge, sel
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
