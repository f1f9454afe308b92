"""The work units of a conversion: chunk and shard shapes, unit sizes, and the plan of units per
pyramid level (:class:`datatools.convert.job.ConvertJob` checks the options and builds it).

Units are boxes of an output level aligned to its chunk grid (shard grid when sharded), so no two
units write the same chunk or shard. Base units cover level 0 and, when there is a pyramid, the
level-1 chunks made from them (a base unit spans whole level-1 chunks); each further level ``k``
is built from level ``k - 1`` in its own units. Ledger indices: base units first, then each
level's units in order.

Hostile inputs are refused before the target is created, with what would fit:

- A source whose smallest readable piece (``Volume.chunks``: one strip, tile or chunk; a
  chunk is decoded whole even where it reaches past the array) decodes to more than the memory
  limit (:func:`check_source_pieces`): every read decodes the pieces it meets whole, so one
  such piece takes more than the limit on every read, once per unit (a 30000 x 30000 zlib
  strip, 875 KB on disk, is 900 MB decoded: 94 times at ``--memory-limit 64M``). A piece that
  fits is decoded once where a step of whole pieces (and output chunks) fits in a unit; a
  larger one is decoded by each unit that meets it, and the units being read (two at a time)
  each hold one such piece beside their data.
- A plan of more units than the memory limit can keep track of (:func:`check_unit_count`):
  a run keeps the indices of its units to do and done, about :data:`UNIT_RECORD_BYTES` each,
  so a declared shape of 10^6 per axis is refused instead of filling the memory while planning.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from datatools.errors import InputError, OptionError
from datatools.geometry import Box, normalize_chunks, spatial_axes

log = logging.getLogger(__name__)

DEFAULT_UNIT_BYTES = 64 * 2**20
UNITS_IN_FLIGHT = 3
"""Units whose data can be in memory at once: one read ahead, one encoding, one finishing."""
DEFAULT_MEMORY = 2 * UNITS_IN_FLIGHT * DEFAULT_UNIT_BYTES
"""The memory limit that gives the default units."""
UNIT_RECORD_BYTES = 128
"""Memory a run spends per unit of its plan on bookkeeping (the indices of the units to do and
done, in sets and lists; measured about 75-110 bytes)."""

Array = np.ndarray[Any, Any]


def nth_tile(shape: Sequence[int], tile: Sequence[int], index: int) -> Box:
    """Tile ``index`` (C order) of ``shape`` cut into ``tile``-shaped boxes (edges clipped)."""
    counts = [-(-s // t) for s, t in zip(shape, tile, strict=True)]
    coords = np.unravel_index(index, counts)
    start = tuple(int(c) * t for c, t in zip(coords, tile, strict=True))
    stop = tuple(min(a + t, s) for a, t, s in zip(start, tile, shape, strict=True))
    return Box(start, stop)


def n_tiles(shape: Sequence[int], tile: Sequence[int]) -> int:
    return math.prod(-(-s // t) for s, t in zip(shape, tile, strict=True))


@dataclass(frozen=True)
class LevelPlan:
    """Units that build pyramid level ``level`` (>= 2) from level ``level - 1``.

    Attributes:
        level: the level built.
        shape: its array shape.
        factors: per axis, how many voxels of level ``level - 1`` merge into one.
        unit_shape: shape of one unit, in this level's voxels (whole blocks).
        offset: ledger index of its first unit.
    """

    level: int
    shape: tuple[int, ...]
    factors: tuple[int, ...]
    unit_shape: tuple[int, ...]
    offset: int

    @property
    def n_units(self) -> int:
        return n_tiles(self.shape, self.unit_shape)

    def unit(self, index: int) -> Box:
        """Unit ``index`` (counted within this level) as a box of this level."""
        return nth_tile(self.shape, self.unit_shape, index)


@dataclass(frozen=True)
class ConvertPlan:
    """The units of a conversion.

    Attributes:
        roi: the source box being converted (all axes, source voxels).
        chunks: chunk shape of level 0 (lower levels: the same, clipped to their shape).
        shards: shard shape (a multiple of ``chunks``) or ``None``.
        unit_shape: shape of one base unit, whole blocks of level 0 (and of level 1).
        levels: per level, its shape and its factors relative to the level above (level 0:
            the ROI shape, factors 1).
        pyramid: the plans of levels 2 and below.
    """

    roi: Box
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    unit_shape: tuple[int, ...]
    levels: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = ()
    pyramid: tuple[LevelPlan, ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        """Level 0 shape."""
        return self.roi.shape

    @property
    def n_base_units(self) -> int:
        return n_tiles(self.shape, self.unit_shape)

    @property
    def n_units(self) -> int:
        """Units of every level: the ledger's length."""
        return self.n_base_units + sum(level.n_units for level in self.pyramid)

    def unit(self, index: int) -> Box:
        """Base unit ``index`` as a box of level 0."""
        return nth_tile(self.shape, self.unit_shape, index)

    def level_chunks(self, level: int) -> tuple[int, ...]:
        """Chunk shape of ``level``: the level-0 chunks clipped to the level's shape."""
        shape = self.levels[level][0] if self.levels else self.shape
        return tuple(min(c, s) for c, s in zip(self.chunks, shape, strict=True))

    def level_shards(self, level: int) -> tuple[int, ...] | None:
        if self.shards is None:
            return None
        shape = self.levels[level][0] if self.levels else self.shape
        chunks = self.level_chunks(level)
        return tuple(
            min(s, -(-n // c) * c) for s, c, n in zip(self.shards, chunks, shape, strict=True)
        )

    def unit_shapes(self) -> list[list[int]]:
        """Unit shape of the base units and of each further level (recorded for resume)."""
        return [list(self.unit_shape)] + [list(level.unit_shape) for level in self.pyramid]


def plan_units(
    shape: Sequence[int],
    block: Sequence[int],
    *,
    itemsize: int,
    unit_bytes: int,
    granule: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """Choose a unit shape for an array of ``shape`` written in ``block``-shaped pieces.

    The unit grows from one block along the last axis, then the earlier ones, while it stays
    within ``unit_bytes``. ``granule`` (a multiple of ``block`` per axis) is the smallest step a
    unit may take along an axis where it is not whole: e.g. whole source strips, so each source
    byte is decoded once, or whole chunks of the next pyramid level.
    """
    full = [-(-n // b) * b for n, b in zip(shape, block, strict=True)]
    step = [min(g, f) for g, f in zip(granule or block, full, strict=True)]
    unit = list(step)
    for ax in reversed(range(len(shape))):
        per = itemsize * math.prod(unit[:ax] + unit[ax + 1 :])
        fit = unit_bytes // per
        if fit >= full[ax]:
            unit[ax] = full[ax]
            continue
        unit[ax] = min(full[ax], max(step[ax], (fit // step[ax]) * step[ax]))
        break
    return tuple(unit)


def _granule(
    block: Sequence[int], shape: Sequence[int], *multiples: Sequence[int] | None
) -> tuple[int, ...]:
    """Per axis, the least common multiple of ``block`` and each of ``multiples``, capped at
    the axis rounded up to whole blocks."""
    out = []
    for ax, (b, n) in enumerate(zip(block, shape, strict=True)):
        value = b
        for m in multiples:
            if m is not None:
                value = math.lcm(value, int(m[ax]))
        out.append(min(value, -(-n // b) * b))
    return tuple(out)


def unit_bytes(memory_limit: int | None, block: Sequence[int], itemsize: int) -> int:
    """Bytes of source data one unit may hold: ``memory_limit / (2 * UNITS_IN_FLIGHT)``, or
    :data:`DEFAULT_UNIT_BYTES` without a limit.

    Raises:
        OptionError: the limit cannot hold the units in flight of one block each.
    """
    if memory_limit is None:
        return DEFAULT_UNIT_BYTES
    needed = 2 * UNITS_IN_FLIGHT * math.prod(block) * itemsize
    if memory_limit < needed:
        raise OptionError(
            f"--memory-limit {memory_limit}: too small for the chunks in flight (needs >= "
            f"{needed} bytes; use smaller --chunks)"
        )
    return memory_limit // (2 * UNITS_IN_FLIGHT)


def check_source_pieces(
    spec: str, piece: Sequence[int] | None, itemsize: int, memory_limit: int | None
) -> None:
    """Refuse a source whose smallest readable piece decodes to more than the memory limit.

    Args:
        spec: the source, for the message.
        piece: the source's chunk, strip or tile shape (``Volume.chunks``), ``None`` when any
            box reads on its own.
        itemsize: bytes per source voxel.
        memory_limit: bytes in flight, ``None`` for the default (:data:`DEFAULT_MEMORY`).

    Raises:
        InputError: naming the piece, its decoded size, and the ``--memory-limit`` at which
            units hold whole pieces.
    """
    if piece is None:
        return
    nbytes = math.prod(piece) * itemsize
    limit = DEFAULT_MEMORY if memory_limit is None else memory_limit
    if nbytes <= limit:
        return
    named = "the default memory limit" if memory_limit is None else f"--memory-limit {memory_limit}"
    whole = -(-2 * UNITS_IN_FLIGHT * nbytes // 2**20)
    raise InputError(
        f"{spec}: its smallest readable piece (a chunk, strip or tile of "
        f"{' x '.join(map(str, piece))}) decodes to {nbytes} bytes, more than {named} "
        f"({limit} bytes) (give --memory-limit {whole}M or more, where units hold whole "
        "pieces, or store the input in smaller chunks, strips or tiles)"
    )


def check_unit_count(spec: str, plan: ConvertPlan, itemsize: int, memory_limit: int | None) -> None:
    """Refuse a plan whose units are too many to keep track of within the memory limit.

    A run holds about :data:`UNIT_RECORD_BYTES` per unit besides its units in flight; that may
    take up to the memory limit, and at least :data:`DEFAULT_UNIT_BYTES` (half a million units),
    however small the limit.

    Raises:
        InputError: naming the volume's shape, the unit count and the bytes they need.
    """
    limit = DEFAULT_MEMORY if memory_limit is None else memory_limit
    allowed = max(limit, DEFAULT_UNIT_BYTES)
    needed = plan.n_units * UNIT_RECORD_BYTES
    if needed <= allowed:
        return
    named = "the default memory limit" if memory_limit is None else f"--memory-limit {memory_limit}"
    unit = math.prod(plan.unit_shape) * itemsize
    raise InputError(
        f"{spec}: converting {' x '.join(map(str, plan.shape))} voxels takes {plan.n_units} "
        f"units of {unit} bytes, too many to keep track of at {named} ({needed} bytes, more "
        f"than {allowed}) (convert a part with --roi, or give a larger --memory-limit: units "
        "grow with it)"
    )


def make_plan(
    roi: Box,
    chunks: tuple[int, ...],
    shards: tuple[int, ...] | None,
    levels: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...],
    *,
    itemsize: int,
    unit_bytes: int,
    source_chunks: Sequence[int] | None,
    existing: Sequence[Sequence[int]] | None,
) -> ConvertPlan:
    draft = ConvertPlan(roi, chunks, shards, chunks, levels)

    def block(level: int) -> tuple[int, ...]:
        return draft.level_shards(level) or draft.level_chunks(level)

    below = None
    if len(levels) > 1:
        below = tuple(b * f for b, f in zip(block(1), levels[1][1], strict=True))
    granule = _granule(block(0), roi.shape, source_chunks, below)
    if math.prod(granule) * itemsize > unit_bytes:
        # source chunks that do not nest with the output's (100 against 64: a step of 1600)
        # would make a unit grow with the volume: cut through them instead (the source chunks
        # on a unit border are then decoded by both units)
        granule = _granule(block(0), roi.shape, below)
    shapes = [tuple(s) for s in existing] if existing else []
    if len(shapes) != max(1, len(levels) - 1) or any(len(s) != len(chunks) for s in shapes):
        shapes = [
            plan_units(
                roi.shape, block(0), itemsize=itemsize, unit_bytes=unit_bytes, granule=granule
            )
        ]
        for k in range(2, len(levels)):
            # a level unit reads prod(factors) times its own size from the level above
            read_factor = math.prod(levels[k][1])
            shapes.append(
                plan_units(
                    levels[k][0], block(k), itemsize=itemsize, unit_bytes=unit_bytes // read_factor
                )
            )
    base = ConvertPlan(roi, chunks, shards, shapes[0], levels)
    pyramid: list[LevelPlan] = []
    offset = base.n_base_units
    for k in range(2, len(levels)):
        level = LevelPlan(k, levels[k][0], levels[k][1], shapes[k - 1], offset)
        pyramid.append(level)
        offset += level.n_units
    return ConvertPlan(roi, chunks, shards, shapes[0], levels, tuple(pyramid))


def chunk_shape(chunks: int | Sequence[int], shape: Sequence[int], axes: str) -> tuple[int, ...]:
    if isinstance(chunks, int):
        if chunks <= 0:
            raise OptionError(f"--chunks {chunks}: every value must be > 0")
        per_axis = tuple(chunks if a in "zyx" else 1 for a in axes)
        return normalize_chunks(per_axis, shape)
    if len(chunks) == 1:
        return chunk_shape(int(chunks[0]), shape, axes)
    spatial = spatial_axes(axes)
    if len(chunks) not in (len(axes), len(spatial)):
        counts = sorted({1, len(spatial), len(axes)})
        raise OptionError(
            f"--chunks {','.join(map(str, chunks))}: {len(chunks)} values for a volume with "
            f"axes {','.join(axes)} (give {' or '.join(map(str, counts))})"
        )
    return normalize_chunks(chunks, shape)


def shard_shape(
    shards: int | Sequence[int], chunks: tuple[int, ...], shape: Sequence[int], axes: str
) -> tuple[int, ...]:
    if isinstance(shards, int):
        values = tuple(shards if a in "zyx" else c for a, c in zip(axes, chunks, strict=True))
    else:
        values = tuple(shards)
        if len(values) != len(chunks):
            raise OptionError(
                f"--shards {','.join(map(str, values))}: give one value or {len(chunks)} values"
            )
    text = ",".join(map(str, values))
    if any(v <= 0 for v in values):
        raise OptionError(f"--shards {text}: every value must be > 0")
    # a shard that spans its axis becomes the axis in whole chunks (chunks are clipped to thin
    # volumes the same way), whatever multiple of the given chunks it was
    spanned = [-(-n // c) * c for c, n in zip(chunks, shape, strict=True)]
    if any(s % c and s < n for s, c, n in zip(values, chunks, shape, strict=True)):
        raise OptionError(
            f"--shards {text}: not a multiple of the chunks {','.join(map(str, chunks))}"
        )
    return tuple(f if s >= n else s for s, f, n in zip(values, spanned, shape, strict=True))
