"""What to do where a box (a patch, an instance crop) crosses the border of a volume.

Five modes, named as ``--edge`` spells them:

- ``symmetric``: mirror including the edge voxel (``... 2 1 0 | 0 1 2 ...``), as
  ``np.pad(mode="symmetric")``; the classic "mirrored edges".
- ``reflect``: mirror excluding the edge voxel (``... 2 1 | 0 1 2 ...``), as
  ``np.pad(mode="reflect")``.
- ``constant``: a fill value outside, as ``np.pad(mode="constant")``.
- ``shift``: move the box inside the volume (no padding); a plan-level mode.
- ``drop``: skip a box that crosses the border; a plan-level mode.

The padding modes are exact for boxes of any size, including boxes wider than the volume
(mirroring repeats, as ``np.pad`` does). :func:`read_box` reads only the in-bounds voxels the box
needs from the source; :func:`place_box` and :func:`place_origins` apply ``shift`` and ``drop``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from datatools.errors import OptionError
from datatools.geometry import Box
from datatools.sources.base import Volume

EdgeMode = Literal["symmetric", "reflect", "constant", "shift", "drop"]
EDGE_MODES: tuple[EdgeMode, ...] = ("symmetric", "reflect", "constant", "shift", "drop")
PAD_MODES = ("symmetric", "reflect", "constant")
"""Modes that pad a box crossing the border; ``shift`` and ``drop`` never read outside."""


def check_edge(edge: str) -> EdgeMode:
    """Return ``edge`` as an :data:`EdgeMode`.

    Raises:
        OptionError: ``edge`` is not one of :data:`EDGE_MODES`.
    """
    for mode in EDGE_MODES:
        if edge == mode:
            return mode
    raise OptionError(f"--edge {edge}: unknown edge mode (choose {', '.join(EDGE_MODES)})")


def check_fill(fill: float, dtype: np.dtype[Any]) -> None:
    """Refuse a ``constant`` fill value that ``dtype`` cannot hold exactly.

    Raises:
        OptionError: e.g. ``--fill 300`` for uint8 data, or ``--fill 0.5`` for integers.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return
    if dtype.kind == "b":
        ok = fill in (0, 1)
    else:
        info = np.iinfo(dtype)
        ok = float(fill).is_integer() and info.min <= fill <= info.max
    if not ok:
        raise OptionError(f"--fill {fill}: not a value of the data type {dtype}")


def mirror_index(index: np.ndarray[Any, Any], extent: int, edge: str) -> np.ndarray[Any, Any]:
    """Map coordinates along one axis onto ``[0, extent)`` as ``np.pad`` mirrors them.

    Args:
        index: integer coordinates, any value (negative or ``>= extent`` lie outside).
        extent: length of the axis, voxels (> 0).
        edge: ``symmetric`` (period ``2 * extent``) or ``reflect`` (period
            ``2 * extent - 2``; an axis of length 1 repeats its voxel, as numpy does).

    Returns:
        In-bounds coordinates (int64), same shape as ``index``.

    Examples:
        >>> mirror_index(np.arange(-3, 7), 4, "symmetric")
        array([2, 1, 0, 0, 1, 2, 3, 3, 2, 1])
        >>> mirror_index(np.arange(-3, 7), 4, "reflect")
        array([3, 2, 1, 0, 1, 2, 3, 2, 1, 0])
    """
    index = np.asarray(index, dtype=np.int64)
    if edge == "symmetric":
        r = index % (2 * extent)
        return np.where(r < extent, r, 2 * extent - 1 - r)
    if edge == "reflect":
        if extent == 1:
            return np.zeros_like(index)
        r = index % (2 * extent - 2)
        return np.where(r < extent, r, 2 * extent - 2 - r)
    raise ValueError(f"mirror_index: {edge!r} is not a mirroring mode")


def read_box(
    source: Volume | np.ndarray[Any, Any],
    box: Box,
    edge: str = "symmetric",
    *,
    fill: float = 0,
    bounds: Box | None = None,
    out: np.ndarray[Any, Any] | None = None,
) -> np.ndarray[Any, Any]:
    """Read ``box`` of ``source``, padding where it crosses ``bounds`` as ``np.pad`` would.

    The result equals ``np.pad(data, widths, mode=edge)[...]`` cut at ``box``, where ``data`` is
    the ``bounds`` region of the source: voxels outside ``bounds`` come from mirrored positions
    inside it (or are ``fill``), never from the source outside ``bounds``. Only the in-bounds
    voxels the box needs are read, once.

    Args:
        source: a lazy volume, or an in-memory array (the result may then be a view of it).
        box: half-open box over all axes of ``source``, voxels; may extend beyond ``bounds``
            on any side and be wider than it.
        edge: ``symmetric``, ``reflect`` or ``constant``.
        fill: value outside ``bounds`` for ``constant``.
        bounds: the region treated as the volume (e.g. a ROI); the whole source by default.
        out: an array of ``box.shape`` (and a dtype the source's casts to) to fill instead of
            a new one, e.g. a row of a batch buffer: saves a copy.

    Returns:
        An array of ``box.shape`` in the source dtype (``out`` when given). Peak memory: the
        result plus the in-bounds part read (at most the result's size), plus one more copy
        while mirroring.

    Raises:
        ValueError: ``box`` or ``bounds`` has the wrong number of axes, ``bounds`` leaves the
            source, ``out`` has another shape, or ``edge`` is ``shift``/``drop`` for a box
            crossing the border (internal misuse: those modes are applied to the plan with
            :func:`place_box`).

    Examples:
        >>> read_box(np.arange(5), Box((-2,), (7,)), "symmetric")
        array([1, 0, 0, 1, 2, 3, 4, 4, 3])
        >>> np.pad(np.arange(5), 2, mode="symmetric")
        array([1, 0, 0, 1, 2, 3, 4, 4, 3])
        >>> read_box(np.arange(5), Box((-2,), (3,)), "constant", fill=9)
        array([9, 9, 0, 1, 2])
    """
    shape = tuple(source.shape)
    region = Box.from_shape(shape) if bounds is None else bounds
    if box.ndim != len(shape) or region.ndim != len(shape):
        raise ValueError(f"read_box: box {box} or bounds {region} does not fit shape {shape}")
    if not Box.from_shape(shape).contains(region) or region.is_empty:
        raise ValueError(f"read_box: bounds {region} is empty or outside shape {shape}")
    if out is not None and out.shape != box.shape:
        raise ValueError(f"read_box: out of shape {out.shape} for a box of shape {box.shape}")
    if region.contains(box):
        return _fill_out(_read(source, box), out)
    if edge == "constant":
        result = np.empty(box.shape, dtype=source.dtype) if out is None else out
        result[...] = fill
        inner = box.intersect(region)
        if inner is not None:
            result[inner.relative_to(box.start).slices()] = _read(source, inner)
        return result
    if edge not in ("symmetric", "reflect"):
        raise ValueError(f"read_box: edge {edge!r} cannot read outside the volume")
    maps = [
        mirror_index(np.arange(a - lo, b - lo), hi - lo, edge) + lo
        for a, b, lo, hi in zip(box.start, box.stop, region.start, region.stop, strict=True)
    ]
    need = Box(tuple(int(m.min()) for m in maps), tuple(int(m.max()) + 1 for m in maps))
    data = _read(source, need)
    takes = [
        (axis, m - lo)
        for axis, (m, lo) in enumerate(zip(maps, need.start, strict=True))
        if m.size != data.shape[axis] or np.any(m != np.arange(lo, lo + m.size))
    ]
    for i, (axis, index) in enumerate(takes):
        if i == len(takes) - 1 and out is not None:
            return np.take(data, index, axis=axis, out=out, mode="clip")
        data = np.take(data, index, axis=axis)
    return _fill_out(data, out)


def _fill_out(data: np.ndarray[Any, Any], out: np.ndarray[Any, Any] | None) -> np.ndarray[Any, Any]:
    """``data`` itself, or copied into ``out``."""
    if out is None:
        return data
    out[...] = data
    return out


def _read(source: Volume | np.ndarray[Any, Any], box: Box) -> np.ndarray[Any, Any]:
    if isinstance(source, np.ndarray):
        return source[box.slices()]
    return source.read(box)


def place_origins(
    origins: np.ndarray[Any, Any],
    size: Sequence[int],
    bounds: Box,
    edge: str,
    names: str | None = None,
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Apply ``edge`` to many boxes ``[origin, origin + size)`` at once (vectorised).

    Args:
        origins: ``(n, ndim)`` box starts, voxels, in the axes of ``bounds``.
        size: box extent per axis, voxels.
        bounds: the region boxes must stay in for ``shift`` and ``drop``.
        edge: any :data:`EDGE_MODES` value; padding modes keep every box where it is.
        names: axis letters of ``bounds`` for messages (default: axis numbers).

    Returns:
        ``(origins, keep)``: the (shifted) starts and a boolean ``(n,)`` array, false for boxes
        ``drop`` skips.

    Raises:
        OptionError: ``shift`` with a box larger than ``bounds`` on some axis.
    """
    origins = np.asarray(origins, dtype=np.int64).reshape(-1, bounds.ndim)
    size_arr = np.asarray(size, dtype=np.int64)
    start = np.asarray(bounds.start, dtype=np.int64)
    stop = np.asarray(bounds.stop, dtype=np.int64)
    keep = np.ones(len(origins), dtype=bool)
    if edge == "shift":
        too_big = np.flatnonzero(size_arr > stop - start)
        if too_big.size:
            ax = int(too_big[0])
            raise OptionError(
                f"--edge shift: a box of {int(size_arr[ax])} voxels does not fit in the "
                f"{int(stop[ax] - start[ax])} voxels of axis {names[ax] if names else ax} "
                "(use --edge symmetric)"
            )
        origins = np.clip(origins, start, stop - size_arr)
    elif edge == "drop":
        keep = np.all((origins >= start) & (origins + size_arr <= stop), axis=1)
    return origins, keep


def place_box(box: Box, bounds: Box, edge: str) -> Box | None:
    """Apply ``edge`` to one box: moved inside ``bounds`` (``shift``), ``None`` when ``drop``
    skips it, unchanged for the padding modes.

    Raises:
        OptionError: ``shift`` with a box larger than ``bounds`` on some axis.

    Examples:
        >>> bounds = Box((0, 0), (10, 5))
        >>> place_box(Box((-2, 3), (2, 7)), bounds, "shift")
        Box(start=(0, 1), stop=(4, 5))
        >>> place_box(Box((-2, 3), (2, 7)), bounds, "drop") is None
        True
    """
    origins, keep = place_origins(np.asarray([box.start]), box.shape, bounds, edge)
    if not keep[0]:
        return None
    start = tuple(int(v) for v in origins[0])
    return Box(start, tuple(a + s for a, s in zip(start, box.shape, strict=True)))
