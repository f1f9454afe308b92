"""Downsampling kernels and level planning for multiscale pyramids (numpy only, no I/O).

Arrays are C order (``(z, y, x)``, ``(c, z, y, x)``; 2D ``(y, x)``). A level is made from the
previous one by merging each ``factors``-shaped group of voxels into one voxel; leading
non-spatial axes (channels) get factor 1 and are never merged.

Edges: when an axis length is not a multiple of its factor, the last group along it is cut short
and is reduced over the voxels that exist; nothing is padded. So the output has
``ceil(shape / factors)`` voxels per axis and, e.g., the mean of the last group of a 5-voxel axis
with factor 2 is the last voxel itself.

Placement (shared/DESIGN.md section 2): OME-NGFF ``scale`` is the voxel size and ``translation``
the physical position of voxel 0's centre. With ``F`` the cumulative factor of a level (product
of the factors of all levels above it) and ``v``, ``t`` the voxel size and translation of level 0:

- every method: ``scale = v * F``;
- mean, median, mode, max (:func:`centred` is True): a merged voxel stands for its whole group,
  so it sits at the group's centre: ``translation = t + (F - 1) / 2 * v``;
- nearest (:func:`centred` is False): a merged voxel *is* the first voxel of its group, so it
  keeps that voxel's position: ``translation = t``.

:func:`level_placement` computes both. A cut-short edge group follows the same grid as the full
groups (its voxel is placed as if the group were complete), as in every NGFF pyramid.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from datatools.errors import OptionError
from datatools.geometry import Box, tile_box

METHODS = ("mean", "median", "mode", "nearest", "max")

# Output voxels reduced at a time: keeps each tile's inputs and temporaries in the CPU cache.
_TILE_VOXELS = 1 << 16

Array = npt.NDArray[Any]


def centred(method: str) -> bool:
    """Whether a merged voxel sits at the centre of its group (False only for ``nearest``).

    Raises:
        OptionError: ``method`` is not one of :data:`METHODS`.
    """
    _check_method(method)
    return method != "nearest"


def level_placement(
    voxel_size: Sequence[float],
    translation: Sequence[float],
    factors: Sequence[int],
    method: str,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """OME-NGFF ``scale`` and ``translation`` of a level, per spatial axis ``(z, y, x)``.

    Args:
        voxel_size: level 0 voxel size, physical units.
        translation: level 0 position of voxel 0's centre, physical units.
        factors: cumulative factor of the level relative to level 0 (all 1 for level 0).
        method: downsampling method (see the module docstring for the convention).

    Raises:
        OptionError: unknown ``method``.

    Examples:
        A level averaging 2 x 2 voxels of 8 nm in (y, x) sits half a level-0 voxel (4 nm) in;
        ``nearest`` keeps level 0's position:

        >>> level_placement((40.0, 8.0, 8.0), (0.0, 0.0, 0.0), (1, 2, 2), "mean")
        ((40.0, 16.0, 16.0), (0.0, 4.0, 4.0))
        >>> level_placement((40.0, 8.0, 8.0), (0.0, 0.0, 0.0), (1, 2, 2), "nearest")
        ((40.0, 16.0, 16.0), (0.0, 0.0, 0.0))
    """
    shift = 0.5 if centred(method) else 0.0
    scale = tuple(float(v) * f for v, f in zip(voxel_size, factors, strict=True))
    moved = tuple(
        float(t) + (f - 1) * shift * float(v)
        for t, v, f in zip(translation, voxel_size, factors, strict=True)
    )
    return scale, moved


def downsample(block: Array, factors: Sequence[int], method: str) -> Array:
    """Merge each ``factors``-shaped group of voxels of ``block`` into one voxel.

    The output has ``ceil(block.shape / factors)`` voxels per axis and the input dtype. Groups
    cut short at the far edges are reduced over the voxels they have (no padding).

    - ``mean``: exact for integers (summed in a wider integer type), rounded half to even
      (``np.rint``); floats are averaged in float64 and cast back. For bool a voxel is True when
      more than half of its group is True (ties give False, as for 0/1 integers and ``mode``).
    - ``median``: ``np.median`` of the group; for an even count the mean of the two middle
      values, rounded as ``mean`` for integers and bool.
    - ``mode``: the most frequent value; ties go to the smallest value. For labels of any id range.
    - ``nearest``: the first voxel of each group, ``block[::fz, ::fy, ::fx]``.
    - ``max``: the maximum (NaN if the group holds one).

    Peak memory on top of ``block`` and the output (the output is ``block.nbytes / prod(factors)``
    bytes): the output is filled in tiles of 2**16 voxels, so temporaries take about
    ``2**16 x prod(factors) x 8`` bytes at most (4 MiB for 2 x 2 x 2), whatever the block size.

    Args:
        block: array in C order (``(z, y, x)``, ``(c, z, y, x)`` or ``(y, x)``).
        factors: group size per axis of ``block`` (1 on channel axes), each >= 1.
        method: one of :data:`METHODS`.

    Raises:
        OptionError: unknown ``method``; ``factors`` of the wrong length or with a value < 1.

    Examples:
        A 2 x 2 mean of integers rounds half to even (2.5 -> 2, 4.5 -> 4); floats keep the
        halves; a cut-short edge group is reduced over what it has (the last voxel, 4):

        >>> downsample(np.arange(16).reshape(4, 4), (2, 2), "mean")
        array([[ 2,  4],
               [10, 12]])
        >>> downsample(np.arange(16.0).reshape(4, 4), (2, 2), "mean")
        array([[ 2.5,  4.5],
               [10.5, 12.5]])
        >>> downsample(np.arange(5), (2,), "mean")
        array([0, 2, 4])
        >>> downsample(np.arange(16).reshape(4, 4), (2, 2), "nearest")
        array([[ 0,  2],
               [ 8, 10]])
        >>> downsample(np.arange(16).reshape(4, 4), (2, 2), "max")
        array([[ 5,  7],
               [13, 15]])
    """
    _check_method(method)
    group = check_factors(factors, block.ndim)
    if method == "nearest":
        return block[tuple(slice(None, None, f) for f in group)].copy()
    out_shape = tuple(-(-n // f) for n, f in zip(block.shape, group, strict=True))
    work = block.view(np.uint8) if block.dtype == np.bool_ else block
    out = np.empty(out_shape, dtype=work.dtype)
    reduce = {"mean": _mean, "max": _max, "median": _median, "mode": _mode}[method]
    offsets: dict[tuple[int, ...], list[tuple[slice, ...]]] = {}
    scratch = _Scratch()
    for src, dst, sub_group in _pieces(block.shape, group, _TILE_VOXELS):
        if sub_group not in offsets:
            offsets[sub_group] = [
                tuple(slice(o, None, g) for o, g in zip(offset, sub_group, strict=True))
                for offset in itertools.product(*(range(g) for g in sub_group))
            ]
        sub = work[src]
        if method == "mean" and _pairwise(sub.dtype, sub_group):
            _mean_pairwise(sub, sub_group, out[dst], scratch)
        else:
            reduce([sub[index] for index in offsets[sub_group]], out[dst])
    return out.view(np.bool_) if block.dtype == np.bool_ else out


def check_factors(factors: Sequence[int], ndim: int) -> tuple[int, ...]:
    """``factors`` as a tuple of ints, checked against an array with ``ndim`` axes.

    Raises:
        OptionError: a value < 1, or not one value per axis.
    """
    values = tuple(int(f) for f in factors)
    text = ",".join(map(str, values))
    if len(values) != ndim:
        raise OptionError(f"--factors {text}: {len(values)} values for {ndim} axes")
    if any(f < 1 for f in values):
        raise OptionError(f"--factors {text}: every value must be >= 1")
    return values


def level_factors(
    voxel_size: Sequence[float], *, factors: Sequence[int] | None = None
) -> tuple[int, ...]:
    """Factors per spatial axis ``(z, y, x)`` that make the next level.

    With ``factors`` given, they are checked and returned. Otherwise ('auto') an axis gets 2 when
    its voxel size is finer than ``max(voxel_size) / 1.5`` and 1 if not, so anisotropic voxels
    become near-isotropic; when no axis is that fine (near-isotropic voxels) every axis gets 2.
    E.g. ``(40, 8, 8) -> (1, 2, 2)``, ``(40, 32, 32) -> (2, 2, 2)``.

    Args:
        voxel_size: physical voxel size of the current level, one value per spatial axis.
        factors: explicit factors, one per spatial axis.

    Raises:
        OptionError: a voxel size <= 0; ``factors`` of the wrong length or with a value < 1.

    Examples:
        >>> level_factors((40, 8, 8))
        (1, 2, 2)
        >>> level_factors((40, 32, 32))
        (2, 2, 2)
    """
    sizes = tuple(float(v) for v in voxel_size)
    if factors is not None:
        return check_factors(factors, len(sizes))
    if not all(v > 0 for v in sizes):
        raise OptionError(
            f"--voxel-size {','.join(f'{v:g}' for v in sizes)}: every value must be > 0"
        )
    if not sizes:
        return ()
    limit = max(sizes) / 1.5
    fine = tuple(v < limit for v in sizes)
    if not any(fine):
        return (2,) * len(sizes)
    return tuple(2 if f else 1 for f in fine)


def pyramid_shapes(
    shape: Sequence[int],
    chunks: Sequence[int],
    voxel_size: Sequence[float],
    *,
    levels: int | Literal["auto"],
    factors: Sequence[int] | None = None,
    spatial: Sequence[bool],
) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Shape of each pyramid level and its factor relative to the level above, over all axes.

    Level 0 comes first with factors all 1. Non-spatial axes (``spatial`` False, e.g. channels)
    keep factor 1. Each next level uses :func:`level_factors` on the current level's voxel size
    (level 0's voxel size times the cumulative factor), so 'auto' factors follow the voxels as
    they become isotropic. ``levels="auto"`` adds levels until one fits in a single chunk on every
    spatial axis (``shape <= chunks``; channels never shrink, so they do not count); an int gives
    exactly that many levels.

    Args:
        shape: level 0 shape, all axes, C order.
        chunks: chunk shape, all axes.
        voxel_size: level 0 voxel size, one value per spatial axis ``(z, y, x)``.
        levels: number of levels, or "auto".
        factors: explicit factors per spatial axis, the same for every level; None for auto.
        spatial: per axis of ``shape``, whether it is spatial.

    Raises:
        OptionError: ``levels`` < 1; ``chunks`` <= 0; bad ``factors`` or voxel size; explicit
            ``factors`` with which ``levels="auto"`` never fits one chunk; a level that could
            never be smaller than the one above (every spatial axis down to one voxel, or
            explicit factors of 1 where the axes are not).
    """
    current = tuple(int(s) for s in shape)
    chunk_shape = tuple(int(c) for c in chunks)
    flags = tuple(bool(s) for s in spatial)
    if not len(current) == len(chunk_shape) == len(flags):
        raise ValueError(f"shape {current}, chunks {chunk_shape}, spatial {flags} differ in length")
    if sum(flags) != len(voxel_size):
        raise ValueError(f"voxel size {tuple(voxel_size)} does not match spatial axes {flags}")
    if levels != "auto" and levels < 1:
        raise OptionError(f"--levels {levels}: must be >= 1 or auto")
    if any(c < 1 for c in chunk_shape):
        raise OptionError(f"--chunks {','.join(map(str, chunk_shape))}: every value must be > 0")
    sizes = tuple(float(v) for v in voxel_size)
    wanted = None if levels == "auto" else levels
    result = [(current, (1,) * len(current))]
    while len(result) < wanted if wanted is not None else _exceeds(current, chunk_shape, flags):
        step = iter(level_factors(sizes, factors=factors))
        full = tuple(next(step) if s else 1 for s in flags)
        following = tuple(-(-n // f) for n, f in zip(current, full, strict=True))
        if wanted is None and factors is not None and following == current:
            raise OptionError(
                f"--factors {','.join(map(str, factors))}: --levels auto never fits shape "
                f"{current} into one chunk {chunk_shape} (give --levels N or more factors > 1)"
            )
        stuck = factors is not None or all(n == 1 for n, s in zip(current, flags, strict=True) if s)
        if following == current and stuck:
            raise OptionError(
                f"--levels {levels}: level {len(result)} would repeat level {len(result) - 1} "
                f"(shape {' x '.join(map(str, current))}); give --levels {len(result)} or less, "
                "or --levels auto, and factors > 1"
            )
        spatial_factors = tuple(f for f, s in zip(full, flags, strict=True) if s)
        sizes = tuple(v * f for v, f in zip(sizes, spatial_factors, strict=True))
        current = following
        result.append((current, full))
    return result


def _exceeds(shape: tuple[int, ...], chunks: tuple[int, ...], spatial: tuple[bool, ...]) -> bool:
    """Whether ``shape`` needs more than one chunk on some spatial axis."""
    return any(n > c for n, c, s in zip(shape, chunks, spatial, strict=True) if s)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise OptionError(f"--downsample {method}: unknown (choose {', '.join(METHODS)})")


def _pieces(
    shape: tuple[int, ...], factors: tuple[int, ...], tile_voxels: int
) -> Iterator[tuple[tuple[slice, ...], tuple[slice, ...], tuple[int, ...]]]:
    """Work pieces whose length on every axis is a multiple of their own group size.

    Per axis, the divisible interior (group ``f``) and the cut-short edge (group ``n % f``, one
    output voxel); for each of the at most ``2 ** ndim`` combinations, tiles of about
    ``tile_voxels`` output voxels (so temporaries stay in cache). Yields
    ``(source slices, output slices, group)``.
    """
    per_axis = []
    for n, f in zip(shape, factors, strict=True):
        whole, rest = divmod(n, f)
        options = []
        if whole:
            options.append((0, 0, whole, f))
        if rest:
            options.append((whole * f, whole, whole + 1, rest))
        per_axis.append(options)
    for combo in itertools.product(*per_axis):
        group = tuple(c[3] for c in combo)
        region = Box(tuple(c[1] for c in combo), tuple(c[2] for c in combo))
        for tile in tile_box(region, _tile_shape(region.shape, tile_voxels)):
            source = tuple(
                slice(c[0] + (a - c[1]) * c[3], c[0] + (b - c[1]) * c[3])
                for c, a, b in zip(combo, tile.start, tile.stop, strict=True)
            )
            yield source, tile.slices(), group


def _tile_shape(shape: tuple[int, ...], voxels: int) -> tuple[int, ...]:
    """A tile of at most ``voxels`` (>= 1) voxels of ``shape``: whole trailing axes first."""
    tile = [1] * len(shape)
    remaining = voxels
    for axis in reversed(range(len(shape))):
        take = max(1, min(shape[axis], remaining))
        tile[axis] = take
        if take < shape[axis]:
            break
        remaining //= take
    return tuple(tile)


def _sum_dtype(dtype: np.dtype[Any], count: int) -> np.dtype[Any] | None:
    """The narrowest integer type of the same signedness holding a sum of ``count`` values."""
    bits = 8 * dtype.itemsize
    signed = dtype.kind == "i"
    for wide in (16, 32, 64):
        magnitude = 1 << (bits - 1 if signed else bits)
        if wide >= bits and count * magnitude <= 1 << (wide - 1 if signed else wide):
            return np.dtype(f"{'i' if signed else 'u'}{wide // 8}")
    return None


def _round_half_even(quotient: Array, remainder: Array, count: int, out: Array) -> None:
    """``out = quotient + remainder / count`` rounded half to even; ``0 <= remainder < count``."""
    twice = remainder * 2
    up = twice > count
    up |= (twice == count) & ((quotient & 1) == 1)
    np.add(quotient, up, out=out, casting="unsafe")


def _mean(views: list[Array], out: Array) -> None:
    """``out`` = mean of same-shaped arrays (integers exact, rounded half to even)."""
    dtype = views[0].dtype
    count = len(views)
    if dtype.kind == "f":
        average = views[0].astype(np.float64)
        for view in views[1:]:
            average += view
        average /= count
        out[...] = average
        return
    wide = _sum_dtype(dtype, count)
    if wide is None:
        # 64-bit integers: sum quotients and remainders separately so nothing overflows.
        quotient = views[0] // count
        remainder = views[0] % count
        for view in views[1:]:
            quotient += view // count
            remainder += view % count
        quotient += remainder // count
        _round_half_even(quotient, remainder % count, count, out)
        return
    total = views[0].astype(wide)
    for view in views[1:]:
        total += view
    if count & (count - 1) == 0:
        quotient, remainder = total >> (count.bit_length() - 1), total & (count - 1)
    else:
        quotient, remainder = np.divmod(total, count)
    _round_half_even(quotient, remainder, count, out)


def _pairwise(dtype: np.dtype[Any], group: tuple[int, ...]) -> bool:
    """Whether :func:`_mean_pairwise` applies: integers whose group sum fits a wider integer
    type, and groups of 1 or 2 voxels per axis."""
    count = int(np.prod(group))
    return dtype.kind in "iu" and _sum_dtype(dtype, count) is not None and set(group) <= {1, 2}


def _mean_pairwise(block: Array, group: tuple[int, ...], out: Array, scratch: _Scratch) -> None:
    """``out`` = mean of each group of ``block`` as :func:`_mean`, for groups of 1 or 2 voxels
    per axis: each axis with 2 is halved by adding its even and odd planes, first axis first,
    so the additions read contiguous rows and only the last one (along x) strides, over the
    fewest voxels. Sums go to two ``scratch`` buffers in turn; rounding half to even by a
    power of two ``c`` is ``(sum + c/2 - 1 + (sum >> log2 c) & 1) >> log2 c``."""
    count = int(np.prod(group))
    wide = _sum_dtype(block.dtype, count)
    assert wide is not None
    total, free = block, 0
    for axis in range(block.ndim):
        if group[axis] == 2:
            lead = (slice(None),) * axis
            even, odd = total[(*lead, slice(0, None, 2))], total[(*lead, slice(1, None, 2))]
            summed = scratch.array(free, even.shape, wide)
            np.add(even, odd, out=summed, dtype=wide)
            total, free = summed, 1 - free
    if total is block:
        out[...] = block
        return
    shift = count.bit_length() - 1
    rounded = scratch.array(free, total.shape, wide)
    np.right_shift(total, shift, out=rounded)
    rounded &= 1
    rounded += total
    rounded += count // 2 - 1
    rounded >>= shift
    np.copyto(out, rounded, casting="unsafe")


class _Scratch:
    """Two byte buffers that the tiles of one :func:`downsample` call reuse for their sums.

    Fresh temporaries per tile cost more than the arithmetic on large blocks: glibc hands
    freed memory back to the system and every tile faulted it in again (4x slower on a
    64 x 2048 x 2048 block).
    """

    def __init__(self) -> None:
        self._buffers = [np.empty(0, np.uint8), np.empty(0, np.uint8)]

    def array(self, which: int, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Array:
        """Buffer ``which`` (0 or 1) as an array of ``shape`` and ``dtype`` (contents undefined)."""
        nbytes = math.prod(shape) * dtype.itemsize
        if self._buffers[which].size < nbytes:
            self._buffers[which] = np.empty(nbytes, np.uint8)
        return self._buffers[which][:nbytes].view(dtype).reshape(shape)


def _max(views: list[Array], out: Array) -> None:
    out[...] = views[0]
    for view in views[1:]:
        np.maximum(out, view, out=out)


def _median(views: list[Array], out: Array) -> None:
    """``out`` = median per group; an even count averages the two middle values as ``_mean``."""
    stacked = np.stack(views, axis=-1)
    if stacked.dtype.kind == "f":
        out[...] = np.median(stacked, axis=-1)
        return
    stacked.sort(axis=-1)
    middle = len(views) // 2
    if len(views) % 2:
        out[...] = stacked[..., middle]
    else:
        _mean([stacked[..., middle - 1], stacked[..., middle]], out)


def _mode(views: list[Array], out: Array) -> None:
    """``out`` = most frequent value per group, ties to the smallest: sort, scan run lengths."""
    stacked = np.stack(views, axis=-1)
    stacked.sort(axis=-1)
    out[...] = stacked[..., 0]
    counter = np.min_scalar_type(len(views))
    best_run = np.ones(out.shape, dtype=counter)
    run = np.ones(out.shape, dtype=counter)
    for k in range(1, len(views)):
        value = stacked[..., k]
        run *= value == stacked[..., k - 1]
        run += 1
        np.copyto(out, value, where=run > best_run)
        np.maximum(best_run, run, out=best_run)
