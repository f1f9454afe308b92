"""Boxes, regions of interest and chunk-aligned tiling.

A :class:`Box` is half-open, ``[start, stop)`` on every axis, in voxels, in C order
(``(z, y, x)``, ``(c, z, y, x)``; 2D ``(y, x)``). A :class:`RoiSpec` is what a user typed
(``--roi 100:612,:,2048:`` or ``--z-start 100 --z-end 612``) before the volume is known;
:func:`resolve_roi` checks it against a volume and turns it into a :class:`Box`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from datatools.errors import OptionError, RoiError

SPATIAL_AXES = "zyx"


@dataclass(frozen=True)
class Box:
    """A half-open box ``[start, stop)`` in voxels, one entry per axis (C order).

    Examples:
        >>> import numpy as np
        >>> box = Box((0, 1, 1), (1, 3, 3))
        >>> box.shape, box.size
        ((1, 2, 2), 4)
        >>> np.arange(24).reshape(2, 3, 4)[box.slices()]
        array([[[ 5,  6],
                [ 9, 10]]])
        >>> Box((0, 2), (3, 5)).intersect(Box((1, 0), (9, 4)))
        Box(start=(1, 2), stop=(3, 4))
    """

    start: tuple[int, ...]
    stop: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.start) != len(self.stop):
            raise ValueError(f"box start {self.start} and stop {self.stop} differ in length")
        object.__setattr__(self, "start", tuple(int(v) for v in self.start))
        object.__setattr__(self, "stop", tuple(int(v) for v in self.stop))

    @classmethod
    def from_shape(cls, shape: Sequence[int]) -> Box:
        """The box ``[0, shape)`` covering a whole array."""
        return cls(tuple(0 for _ in shape), tuple(shape))

    @property
    def ndim(self) -> int:
        return len(self.start)

    @property
    def shape(self) -> tuple[int, ...]:
        """Extent per axis; negative extents count as 0."""
        return tuple(max(0, b - a) for a, b in zip(self.start, self.stop, strict=True))

    @property
    def size(self) -> int:
        """Number of voxels in the box."""
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def is_empty(self) -> bool:
        return any(b <= a for a, b in zip(self.start, self.stop, strict=True))

    def slices(self) -> tuple[slice, ...]:
        """Slices that cut this box out of an array whose origin is voxel 0."""
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))

    def intersect(self, other: Box) -> Box | None:
        """The overlap of two boxes, or ``None`` when they do not overlap."""
        start = tuple(max(a, b) for a, b in zip(self.start, other.start, strict=True))
        stop = tuple(min(a, b) for a, b in zip(self.stop, other.stop, strict=True))
        box = Box(start, stop)
        return None if box.is_empty else box

    def clip(self, shape: Sequence[int]) -> Box:
        """This box clipped to ``[0, shape)``."""
        start = tuple(min(max(a, 0), s) for a, s in zip(self.start, shape, strict=True))
        stop = tuple(min(max(b, 0), s) for b, s in zip(self.stop, shape, strict=True))
        return Box(start, stop)

    def shift(self, offset: Sequence[int]) -> Box:
        """This box moved by ``offset`` voxels on every axis."""
        return Box(
            tuple(a + o for a, o in zip(self.start, offset, strict=True)),
            tuple(b + o for b, o in zip(self.stop, offset, strict=True)),
        )

    def relative_to(self, origin: Sequence[int]) -> Box:
        """This box in the coordinates of a frame whose voxel 0 is ``origin``."""
        return self.shift(tuple(-o for o in origin))

    def contains(self, other: Box) -> bool:
        """Whether ``other`` lies entirely inside this box."""
        return all(
            a <= c and d <= b
            for a, b, c, d in zip(self.start, self.stop, other.start, other.stop, strict=True)
        )

    def to_text(self) -> str:
        """``z0:z1,y0:y1,x0:x1``: the ``--roi`` spelling of this box."""
        return ",".join(f"{a}:{b}" for a, b in zip(self.start, self.stop, strict=True))


Bound = tuple[int | None, int | None]


@dataclass(frozen=True)
class RoiSpec:
    """A region of interest as the user gave it, before the volume's shape is known.

    Attributes:
        bounds: ``(start, stop)`` per spatial axis, ``None`` for an open end.
        axes: axis letters that ``bounds`` refer to (``"zyx"`` or ``"yx"``), or ``None`` when
            the bounds are positional (``--roi``) and must match the volume's spatial axes.
    """

    bounds: tuple[Bound, ...]
    axes: str | None = None

    @classmethod
    def parse(cls, text: str) -> RoiSpec:
        """Parse ``z0:z1,y0:y1,x0:x1``; ``:`` or an empty part is a whole axis, ends may be open.

        Raises:
            RoiError: a part is not ``start:stop`` with integer ends.
        """
        bounds: list[Bound] = []
        for part in text.split(","):
            part = part.strip()
            if part in ("", ":"):
                bounds.append((None, None))
                continue
            pieces = part.split(":")
            if len(pieces) != 2:
                raise RoiError(
                    f"--roi {text}: '{part}' is not start:stop (e.g. 100:612, :100, 16:)"
                )
            try:
                lo = int(pieces[0]) if pieces[0].strip() else None
                hi = int(pieces[1]) if pieces[1].strip() else None
            except ValueError as exc:
                raise RoiError(f"--roi {text}: '{part}' has a non-integer bound") from exc
            bounds.append((lo, hi))
        return cls(tuple(bounds), None)

    @classmethod
    def from_axis_bounds(cls, bounds: dict[str, Bound]) -> RoiSpec | None:
        """Build from per-axis options (``{"z": (100, 612)}``); ``None`` when nothing is set."""
        given = {ax: b for ax, b in bounds.items() if b != (None, None)}
        if not given:
            return None
        axes = "".join(ax for ax in SPATIAL_AXES if ax in given)
        return cls(tuple(given[ax] for ax in axes), axes)

    def to_text(self) -> str:
        """The spec as typed, e.g. ``100:612,:,2048:`` or ``z=100:612``."""
        parts = [f"{'' if a is None else a}:{'' if b is None else b}" for a, b in self.bounds]
        if self.axes is None:
            return ",".join(parts)
        return ",".join(f"{ax}={p}" for ax, p in zip(self.axes, parts, strict=True))


def spatial_axes(axes: str) -> str:
    """The spatial axis letters of ``axes`` in order, e.g. ``"czyx"`` -> ``"zyx"``."""
    return "".join(a for a in axes if a in SPATIAL_AXES)


def resolve_roi(roi: RoiSpec | Box | None, shape: Sequence[int], axes: str) -> Box:
    """Turn a user's ROI into a box over the whole array (non-spatial axes kept whole).

    Args:
        roi: what the user gave, a ready box over all axes, or ``None`` for the whole volume.
        shape: the volume's shape, in ``axes`` order.
        axes: the volume's axis letters, e.g. ``"zyx"`` or ``"czyx"``.

    Raises:
        RoiError: wrong number of axes, start >= stop, or a bound outside the volume; the
            message gives the volume's shape.

    Examples:
        >>> resolve_roi(RoiSpec.parse("2:4,:,5:"), (2, 10, 20, 30), "czyx")
        Box(start=(0, 2, 0, 5), stop=(2, 4, 20, 30))
    """
    shape = tuple(int(s) for s in shape)
    described = _describe_shape(shape, axes)
    if roi is None:
        return Box.from_shape(shape)
    if isinstance(roi, Box):
        if roi.ndim != len(shape):
            raise RoiError(f"ROI {roi.to_text()}: has {roi.ndim} axes, volume {described}")
        _check_inside(roi, shape, described, roi.to_text())
        return roi
    spatial = spatial_axes(axes)
    if roi.axes is None:
        if len(roi.bounds) != len(spatial):
            raise RoiError(
                f"--roi {roi.to_text()}: gives {len(roi.bounds)} axes, volume {described} "
                f"has {len(spatial)} spatial axes ({','.join(spatial)})"
            )
        by_axis = dict(zip(spatial, roi.bounds, strict=True))
    else:
        missing = [ax for ax in roi.axes if ax not in spatial]
        if missing:
            raise RoiError(
                f"--{missing[0]}-start/--{missing[0]}-end: volume {described} has no "
                f"{missing[0]} axis"
            )
        by_axis = dict(zip(roi.axes, roi.bounds, strict=True))
    start: list[int] = []
    stop: list[int] = []
    for ax, n in zip(axes, shape, strict=True):
        lo, hi = by_axis.get(ax, (None, None))
        start.append(0 if lo is None else lo)
        stop.append(n if hi is None else hi)
    box = Box(tuple(start), tuple(stop))
    _check_inside(box, shape, described, roi.to_text())
    return box


def _describe_shape(shape: tuple[int, ...], axes: str) -> str:
    dims = " x ".join(str(s) for s in shape)
    return f"shape {dims} ({','.join(axes)})"


def _check_inside(box: Box, shape: tuple[int, ...], described: str, text: str) -> None:
    for a, b, n in zip(box.start, box.stop, shape, strict=True):
        if a >= b:
            raise RoiError(f"ROI {text}: start {a} >= end {b} (empty region); volume {described}")
        if a < 0 or b > n:
            raise RoiError(f"ROI {text}: [{a}, {b}) lies outside the volume, {described}")


def normalize_chunks(
    chunks: int | Sequence[int], shape: Sequence[int], *, name: str = "chunks"
) -> tuple[int, ...]:
    """Per-axis chunk shape for an array of ``shape``, clipped to the array.

    One int applies to every axis; fewer values than axes apply to the trailing axes, the
    leading ones getting chunk 1 (e.g. ``(256, 256)`` on ``(z, y, x)`` is one slice per chunk).

    Raises:
        OptionError: a value <= 0, or more values than the array has axes.

    Examples:
        >>> normalize_chunks(64, (10, 300, 100))
        (10, 64, 64)
        >>> normalize_chunks((256, 256), (10, 300, 100))
        (1, 256, 100)
    """
    shape = tuple(int(s) for s in shape)
    values = (chunks,) * len(shape) if isinstance(chunks, int) else tuple(int(c) for c in chunks)
    if len(values) > len(shape):
        raise OptionError(
            f"--{name} {','.join(map(str, values))}: {len(values)} values for an array with "
            f"{len(shape)} axes (shape {shape})"
        )
    if any(v <= 0 for v in values):
        raise OptionError(f"--{name} {','.join(map(str, values))}: every value must be > 0")
    full = (1,) * (len(shape) - len(values)) + values
    return tuple(max(1, min(c, s)) for c, s in zip(full, shape, strict=True))


def tile_box(box: Box, tile: Sequence[int]) -> Iterator[Box]:
    """Tile ``box`` into boxes on a grid of ``tile`` anchored at ``box.start``, C order.

    Every voxel of ``box`` lies in exactly one tile; tiles at the far edges are clipped. Tiles
    are aligned to the output's chunk grid when the output's voxel 0 is ``box.start``.

    Examples:
        >>> [tile.to_text() for tile in tile_box(Box((0, 0), (5, 7)), (2, 4))]
        ['0:2,0:4', '0:2,4:7', '2:4,0:4', '2:4,4:7', '4:5,0:4', '4:5,4:7']
        >>> import numpy as np
        >>> covered = np.zeros((5, 7), int)
        >>> for tile in tile_box(Box((0, 0), (5, 7)), (2, 4)):
        ...     covered[tile.slices()] += 1
        >>> bool((covered == 1).all())
        True
    """
    ranges = [range(a, b, t) for a, b, t in zip(box.start, box.stop, tile, strict=True)]
    for corner in itertools.product(*ranges):
        stop = tuple(min(c + t, b) for c, t, b in zip(corner, tile, box.stop, strict=True))
        yield Box(tuple(corner), stop)


def count_tiles(box: Box, tile: Sequence[int]) -> int:
    """Number of tiles :func:`tile_box` yields.

    Examples:
        >>> count_tiles(Box((0, 0), (5, 7)), (2, 4))
        6
    """
    n = 1
    for s, t in zip(box.shape, tile, strict=True):
        n *= -(-s // t)
    return n
