"""Where patches go: grid, uniform random and blue-noise (Poisson-disk) positions, the building
blocks of :func:`datatools.patches.choose.choose_origins`.

Positions are voxel coordinates in C order (``(z, y, x)``; 2D ``(y, x)``); a patch of ``size``
starts at its *origin* and has its *centre* at ``origin + size // 2``.

Random choices use keyed hashes: every candidate gets the key ``mix_keys(id, seed)`` of its own
voxel id, and the candidates with the smallest keys win (:class:`SmallestKeys`). That is a
uniform sample without replacement, reproducible from the seed, and independent of how the
volume was cut into tiles. Walking candidates in key order is a random order, which blue-noise
sampling (greedy Poisson-disk, :func:`poisson_disk`) uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from datatools.edges import place_origins
from datatools.errors import OptionError
from datatools.geometry import Box

if TYPE_CHECKING:
    from scipy.spatial import cKDTree

Array = np.ndarray[Any, Any]
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


class SamplingWarning(UserWarning):
    """A sampler found fewer positions than asked (the message gives the number obtained)."""


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
