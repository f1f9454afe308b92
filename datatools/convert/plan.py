"""What a conversion will do, decided before anything is written: options checked, output dtype,
physical placement, pyramid levels, and the work units.

Units are boxes of an output level aligned to its chunk grid (shard grid when sharded), so no two
units write the same chunk or shard. Base units cover level 0 and, when there is a pyramid, the
level-1 chunks made from them (a base unit spans whole level-1 chunks); each further level ``k``
is built from level ``k - 1`` in its own units. Ledger indices: base units first, then each
level's units in order.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datatools import ledger
from datatools.convert.options import ConvertOptions
from datatools.downsample import centred, pyramid_shapes
from datatools.errors import OptionError
from datatools.executor import default_workers
from datatools.geometry import Box, normalize_chunks, resolve_roi, spatial_axes
from datatools.ngff import Placement
from datatools.sinks.codecs import Codec, parse_codec
from datatools.sources import Volume, source_choices, spec_text
from datatools.units import normalize_unit

log = logging.getLogger(__name__)

SMALL_CHUNK_BYTES = 4096
SMALL_CHUNK_COUNT = 10_000
"""Chunks smaller than ``SMALL_CHUNK_BYTES`` get a warning when there are more than this many."""

DEFAULT_UNIT_BYTES = 64 * 2**20
UNITS_IN_FLIGHT = 3
"""Units whose data can be in memory at once: one read ahead, one encoding, one finishing."""

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


@dataclass
class ConvertJob:
    """A checked conversion: the source, the output's form, the plan and the run record.

    Build it with :meth:`prepare`; :meth:`read_unit` gives a base unit's data.
    """

    volume: Volume
    plan: ConvertPlan
    codec: Codec
    out_dtype: np.dtype[Any]
    allow_lossy_cast: bool
    zarr_format: int
    placement: Placement
    method: str
    name: str
    workers: int
    record: ledger.RunRecord
    image_label: bool = False
    lossy_changed: int = 0
    """Voxels ``--allow-lossy-cast`` changed (rounded, clipped, NaN set to 0) in this call."""
    _lossy_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def prepare(
        cls,
        volume: Volume,
        options: ConvertOptions,
        *,
        is_hdf5: bool,
        existing_unit_shapes: Sequence[Sequence[int]] | None,
        translation: Sequence[float] | None = None,
        warn: bool = True,
    ) -> ConvertJob:
        """Check every option against the source and plan the units.

        ``options.name`` names the image (the caller fills in the target's stem).
        ``existing_unit_shapes``: the unit shapes of the run that created the output, kept on
        resume. ``translation`` (per spatial axis) replaces the computed placement's
        translation, for label images that must sit exactly on their image. ``warn``: log the
        warnings about the options (no voxel size, tiny chunks); off for the second and later
        of several like jobs. The level and series the source was opened at are recorded with
        the options, so that a resume from another part of the input is refused; so is the
        HDF5 dataset path.

        Raises:
            OptionError, RoiError: an option does not fit the source or the output format.
        """
        out_opts, run = options.output, options.run
        as_labels, zarr_format = options.as_labels, out_opts.zarr_format
        levels = 1 if options.levels is None else options.levels
        downsample = options.downsample or "mean"
        default_codec = "gzip" if is_hdf5 else "zstd"
        codec = parse_codec(out_opts.codec or default_codec, out_opts.codec_level, hdf5=is_hdf5)
        roi, shards = options.roi, out_opts.shards
        box = resolve_roi(roi, volume.shape, volume.axes)
        chunk_shape = _chunk_shape(options.chunks, box.shape, volume.axes)
        shard_shape = None
        if shards is not None:
            if is_hdf5:
                raise OptionError("--shards: sharding needs a Zarr v3 target, not HDF5")
            if zarr_format == 2:
                raise OptionError("--shards: sharding needs a Zarr v3 target (--zarr-format 3)")
            shard_shape = _shard_shape(shards, chunk_shape, box.shape, volume.axes)
        if is_hdf5 and levels != 1:
            raise OptionError("--levels: pyramids need an OME-Zarr target (.zarr)")
        out_dtype = volume.dtype if options.dtype is None else _out_dtype(options.dtype)
        if warn:
            _warn_small_chunks(chunk_shape, box.shape, out_dtype.itemsize, volume.spec)
        base = _placement(volume, options.voxel_size, options.unit, warn=warn)
        placement = base.shifted(
            [s for s, a in zip(box.start, volume.axes, strict=True) if a in "zyx"]
        )
        if translation is not None:
            placement = Placement(placement.voxel_size, tuple(translation), placement.unit)
        if as_labels is not None and out_dtype.kind not in "biu":
            raise OptionError(
                f"--as-labels {as_labels}: {volume.spec} holds {out_dtype} data; label images "
                "need integers (give --dtype with an integer type if the values are whole)"
            )
        centred(downsample)
        spatial = [a in "zyx" for a in volume.axes]
        level_shapes = pyramid_shapes(
            box.shape,
            chunk_shape,
            placement.voxel_size,
            levels=levels,
            factors=options.factors,
            spatial=spatial,
        )
        itemsize = max(volume.dtype.itemsize, out_dtype.itemsize)
        unit_bytes = _unit_bytes(run.memory_limit, shard_shape or chunk_shape, itemsize)
        plan = _plan(
            box,
            chunk_shape,
            shard_shape,
            tuple(level_shapes),
            itemsize=itemsize,
            unit_bytes=unit_bytes,
            source_chunks=volume.chunks,
            existing=existing_unit_shapes,
        )
        params: dict[str, Any] = {
            "source": spec_text(volume.spec),
            "roi": box.to_text(),
            "chunks": list(chunk_shape),
            "shards": None if shard_shape is None else list(shard_shape),
            "codec": codec.to_dict(),
            "format": "hdf5" if is_hdf5 else f"zarr{zarr_format}",
            "dtype": str(out_dtype),
            "voxel_size": list(placement.voxel_size),
            "translation": list(placement.translation),
            "unit": placement.unit,
            "name": options.name,
            "levels": [list(shape) for shape, _ in level_shapes],
            "downsample": downsample if len(level_shapes) > 1 else None,
            "as_labels": as_labels,
            "unit_shapes": plan.unit_shapes(),
            "units_total": plan.n_units,
            **source_choices(options.open_options),
            **({"dataset": options.dataset} if is_hdf5 else {}),
            "options": options.recorded(),
        }
        return cls(
            volume=volume,
            plan=plan,
            codec=codec,
            out_dtype=out_dtype,
            allow_lossy_cast=options.allow_lossy_cast,
            zarr_format=zarr_format,
            placement=placement,
            method=downsample,
            name=options.name or volume.spec,
            workers=run.workers or default_workers(),
            record=ledger.RunRecord("convert", params),
            image_label=as_labels is not None,
        )

    @property
    def axes(self) -> str:
        return self.volume.axes

    def read_unit(self, index: int, buffer: Array | None = None) -> tuple[int, Box, Array]:
        """Read base unit ``index`` (its level-0 box) from the source, cast to the output dtype.

        ``buffer``: a flat array of the source dtype with room for a whole unit, reused for the
        read (the result is a view of it unless a cast copies), so no fresh pages per unit.

        Raises:
            OptionError: a value does not fit the output dtype (without ``allow_lossy_cast``).
        """
        box = self.plan.unit(index)
        out = None if buffer is None else buffer[: box.size].reshape(box.shape)
        data = self.volume.read(box.shift(self.plan.roi.start), out=out)
        converted = cast(data, self.out_dtype, self.allow_lossy_cast, self.volume.spec, box)
        if self.allow_lossy_cast and converted is not data:
            changed = int(np.count_nonzero(converted != data))
            with self._lossy_lock:
                self.lossy_changed += changed
        return index, box, converted

    def level_placements(self) -> list[Placement]:
        """Placement of each level (scale and translation from the cumulative factors)."""
        out = [self.placement]
        cumulative = [1] * len(self.placement.voxel_size)
        for _, factors in self.plan.levels[1:]:
            spatial = [f for f, a in zip(factors, self.axes, strict=True) if a in "zyx"]
            cumulative = [c * f for c, f in zip(cumulative, spatial, strict=True)]
            out.append(self.placement.downsampled(cumulative, centred=centred(self.method)))
        return out


def _unit_bytes(memory_limit: int | None, block: Sequence[int], itemsize: int) -> int:
    if memory_limit is None:
        return DEFAULT_UNIT_BYTES
    needed = 2 * UNITS_IN_FLIGHT * math.prod(block) * itemsize
    if memory_limit < needed:
        raise OptionError(
            f"--memory-limit {memory_limit}: too small for the chunks in flight (needs >= "
            f"{needed} bytes; use smaller --chunks)"
        )
    return memory_limit // (2 * UNITS_IN_FLIGHT)


def _plan(
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
            plan_units(roi.shape, block(0), itemsize=itemsize, unit_bytes=unit_bytes,
                       granule=granule)
        ]  # fmt: skip
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


def _warn_small_chunks(
    chunks: tuple[int, ...], shape: tuple[int, ...], itemsize: int, spec: str
) -> None:
    """Warn when chunks under :data:`SMALL_CHUNK_BYTES` split the array into many files."""
    count = math.prod(-(-n // c) for n, c in zip(shape, chunks, strict=True))
    nbytes = math.prod(chunks) * itemsize
    if nbytes < SMALL_CHUNK_BYTES and count > SMALL_CHUNK_COUNT:
        log.warning(
            "%s: chunks %s hold %d bytes each, %d chunk files in all (give larger --chunks: "
            "loaders read chunks of 64 KiB to a few MiB best)",
            spec,
            " x ".join(map(str, chunks)),
            nbytes,
            count,
        )


def _chunk_shape(chunks: int | Sequence[int], shape: Sequence[int], axes: str) -> tuple[int, ...]:
    if isinstance(chunks, int):
        if chunks <= 0:
            raise OptionError(f"--chunks {chunks}: every value must be > 0")
        per_axis = tuple(chunks if a in "zyx" else 1 for a in axes)
        return normalize_chunks(per_axis, shape)
    if len(chunks) == 1:
        return _chunk_shape(int(chunks[0]), shape, axes)
    spatial = spatial_axes(axes)
    if len(chunks) not in (len(axes), len(spatial)):
        counts = sorted({1, len(spatial), len(axes)})
        raise OptionError(
            f"--chunks {','.join(map(str, chunks))}: {len(chunks)} values for a volume with "
            f"axes {','.join(axes)} (give {' or '.join(map(str, counts))})"
        )
    return normalize_chunks(chunks, shape)


def _shard_shape(
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


def _out_dtype(dtype: str) -> np.dtype[Any]:
    try:
        out = np.dtype(dtype)
    except TypeError as exc:
        raise OptionError(
            f"--dtype {dtype}: not a numpy dtype (e.g. uint8, uint16, float32)"
        ) from exc
    if out.kind not in "biuf":
        raise OptionError(f"--dtype {dtype}: datatools writes bool, integer or float data")
    return out


def cast(data: Array, dtype: np.dtype[Any], lossy: bool, spec: str, box: Box) -> Array:
    """``data`` in ``dtype``: exact casts always; others only when every value fits exactly,
    or with ``lossy`` (values rounded and clipped to the dtype's range; NaN becomes 0).

    Raises:
        OptionError: a value does not fit; names the first one and its output voxel.
    """
    if data.dtype == dtype:
        return data
    if np.can_cast(data.dtype, dtype, "safe"):
        return data.astype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if lossy:
            values = np.nan_to_num(np.rint(data), nan=0.0) if data.dtype.kind == "f" else data
            clipped: Array = np.clip(values, info.min, info.max)
            return clipped.astype(dtype)
        bad = (data < info.min) | (data > info.max)
        if data.dtype.kind == "f":
            bad |= np.isnan(data) | (data != np.rint(data))
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            voxel = tuple(a + w for a, w in zip(box.start, where, strict=True))
            raise OptionError(
                f"--dtype {dtype}: {spec} holds {data[where].item()!r} at output voxel {voxel}, "
                f"which {dtype} cannot hold exactly (add --allow-lossy-cast to round and clip)"
            )
        return data.astype(dtype)
    converted = data.astype(dtype)
    back = converted.astype(data.dtype)
    if not lossy and not np.array_equal(back, data, equal_nan=data.dtype.kind in "fc"):
        raise OptionError(
            f"--dtype {dtype}: casting {data.dtype} data from {spec} to {dtype} loses precision "
            "(add --allow-lossy-cast)"
        )
    return converted


def _placement(
    volume: Volume, voxel_size: Sequence[float] | None, unit: str | None, *, warn: bool
) -> Placement:
    n = len(spatial_axes(volume.axes))
    if voxel_size is not None:
        values = tuple(float(v) for v in voxel_size)
        if len(values) == 1:
            values = values * n
        if len(values) != n or any(v <= 0 for v in values):
            raise OptionError(
                f"--voxel-size {','.join(map(str, voxel_size))}: give 1 or {n} positive values "
                f"({','.join(spatial_axes(volume.axes))})"
            )
    elif volume.voxel_size is not None:
        values = volume.voxel_size
    else:
        if warn:
            log.warning(
                "%s: no voxel size in the source; writing scale 1 (give --voxel-size and --unit)",
                volume.spec,
            )
        values = (1.0,) * n
    unit_name = normalize_unit(unit) if unit is not None else normalize_unit(volume.unit)
    translation = volume.translation if volume.translation is not None else (0.0,) * n
    if voxel_size is not None and volume.voxel_size is not None:
        translation = tuple(
            t / old * new
            for t, old, new in zip(translation, volume.voxel_size, values, strict=True)
        )
    return Placement(values, tuple(translation), unit_name)
