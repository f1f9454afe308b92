"""Zarr arrays (v2, v3) and OME-Zarr image groups (NGFF 0.4, 0.5) as lazy volumes.

An OME-Zarr image gives its level arrays, axes, voxel size (the level's ``scale``), translation
and unit; NGFF 0.4 keeps ``multiscales`` in the group's attributes (Zarr v2 ``.zattrs``), 0.5
inside the ``ome`` attribute (Zarr v3 ``zarr.json``). A level array named directly
(``image.zarr/0``) is placed by its parent image's metadata. A plain array takes its axes from
Zarr v3 ``dimension_names`` when they are letters of ``tczyx``, else from its number of
dimensions: ``(y, x)``, ``(z, y, x)``, ``(c, z, y, x)``. A time axis is read only when it holds
a single time point, and is then dropped.

zarr-python holds a few kilobytes of Python objects for every chunk a read touches until the read
ends (about 2.3 KiB measured: 753 MB for a 64^3 array of 1 x 1 x 1 chunks), so a box of many
small chunks is read in batches of whole chunks, at most :data:`READ_CHUNKS` at a time, each
straight into its place in the result.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from datatools.errors import InputError, first_line
from datatools.geometry import SPATIAL_AXES, Box, tile_box
from datatools.ngff import ImageMetadata, parse_image
from datatools.sources.base import AXES_BY_NDIM, LISTED_MAX, OpenOptions, SourceSpec, Volume

if TYPE_CHECKING:
    import zarr

ZARR_METADATA = ("zarr.json", ".zarray", ".zgroup")
AXIS_ORDER = "tczyx"
READ_CHUNKS = 4096
"""Chunks one zarr read touches at most (about 10 MB of zarr-python's objects)."""


@dataclass(frozen=True)
class _Level:
    """One array of an image and where it lies: what :class:`ZarrVolume` wraps."""

    array: zarr.Array[Any]
    path: str | None
    axes: str
    dropped: int
    voxel_size: tuple[float, ...] | None = None
    translation: tuple[float, ...] | None = None
    unit: str | None = None
    ngff_version: str | None = None
    level: int | None = None
    levels: tuple[tuple[int, ...] | None, ...] | None = None


class ZarrVolume(Volume):
    """A Zarr array, or one level of an OME-Zarr image, read with zarr-python (read-only).

    ``read(box)`` lets zarr fetch only the chunks that meet the box (missing chunks read as the
    fill value), :data:`READ_CHUNKS` at most at a time. Peak memory per read: the box's bytes
    plus the chunks decoded for it.
    """

    kind = "zarr"

    def __init__(self, spec: str, level: _Level) -> None:
        shape = level.array.shape[level.dropped :]
        if 0 in shape:
            dims = " x ".join(str(s) for s in shape)
            raise InputError(f"{spec}: array is empty (shape {dims})")
        for grid in (level.array.chunks, level.array.shards or ()):
            if any(n < 1 for n in grid):
                raise InputError(
                    f"{spec}: chunk shape {' x '.join(map(str, grid))} in its metadata is "
                    "empty (corrupt metadata: a chunk spans at least 1 voxel on every axis)"
                )
        super().__init__(
            spec,
            shape,
            level.array.dtype,
            level.axes,
            voxel_size=level.voxel_size,
            unit=level.unit,
            translation=level.translation,
            chunks=level.array.chunks[level.dropped :],
        )
        self._level = level

    @classmethod
    def can_open(cls, spec: str) -> bool:
        """A folder holding ``zarr.json``, ``.zarray`` or ``.zgroup``, or any ``*.zarr`` folder."""
        path = Path(spec)
        if not path.is_dir():
            return False
        return path.suffix.lower() == ".zarr" or any((path / f).is_file() for f in ZARR_METADATA)

    @classmethod
    def open(cls, spec: SourceSpec, options: OpenOptions) -> ZarrVolume:
        """Open a Zarr array, an OME-Zarr image (level ``options.level``, default 0), or a
        plain group holding a single array.

        Raises:
            InputError: not Zarr, no such level, axes datatools cannot read (t > 1, not in
                ``t, c, z, y, x`` order), malformed NGFF metadata, a group with no or several
                arrays, an empty array, a chunk shape with a 0 or an unsupported dtype.
        """
        import zarr

        name = str(spec).rstrip("/") or str(spec)
        node = _open_node(name)
        if isinstance(node, zarr.Array):
            parent = _parent_image(name)
            if parent is not None:
                group, multiscale, index = parent
                if options.level not in (None, 0):
                    raise InputError(
                        f"{name}: is level {index} of {Path(name).parent}; choose a level "
                        f"with --level on the image group {Path(name).parent}, not on its array"
                    )
                return cls(name, _ngff_level(name, group, multiscale, index))
            _refuse_level(name, options)
            return cls(name, _plain_level(name, node, None))
        image = parse_image(node.attrs.asdict(), name)
        if image is not None:
            level = 0 if options.level is None else options.level
            return cls(name, _ngff_level(name, node, image, level))
        _refuse_level(name, options)
        return cls(name, _only_array(name, node))

    def read(self, box: Box, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        """Read ``box`` (half-open, in this volume's axes) into ``out`` or a new array, in
        batches of at most :data:`READ_CHUNKS` whole chunks.

        Raises:
            InputError: a chunk of the box cannot be decoded (corrupt or truncated).
        """
        assert self.chunks is not None
        parts = chunk_batches(box, self.chunks, READ_CHUNKS)
        first = next(parts)
        if first == box:
            return super().read(box, out)
        result = np.empty(box.shape, self.dtype) if out is None else out
        for part in (first, *parts):
            result[part.relative_to(box.start).slices()] = self._read(part)
        return result

    def _read(self, box: Box) -> np.ndarray[Any, Any]:
        """Read ``box`` (half-open, in this volume's axes) into a new array.

        Raises:
            InputError: a chunk of the box cannot be decoded (corrupt or truncated).
        """
        index = (0,) * self._level.dropped + box.slices()
        try:
            return np.asarray(self._level.array[index])
        except (OSError, ValueError, RuntimeError, zlib.error) as exc:
            raise InputError(
                f"{self.spec}: cannot read region {box.to_text()} ({first_line(exc)})"
            ) from exc

    def details(self) -> dict[str, Any]:
        """``zarr_format``, ``array`` (path inside the named node), ``shards``, ``codecs``,
        ``ngff_version``, ``level`` and ``levels`` (shape per level, in this volume's axes)."""
        level = self._level
        shards = level.array.shards
        return {
            "zarr_format": level.array.metadata.zarr_format,
            "array": level.path,
            "shards": None if shards is None else list(shards[level.dropped :]),
            "codecs": _codec_names(level.array),
            "ngff_version": level.ngff_version,
            "level": level.level,
            "levels": None
            if level.levels is None
            else [None if s is None else list(s) for s in level.levels],
        }


def chunk_batches(box: Box, chunks: Sequence[int], most: int) -> Iterator[Box]:
    """``box`` cut on the grid of ``chunks`` into parts of at most ``most`` whole chunks each
    (the chunks it meets), in C order: whole along the last axes first.

    Examples:
        >>> [b.to_text() for b in chunk_batches(Box((1, 0), (5, 4)), (2, 2), 2)]
        ['1:2,0:4', '2:4,0:4', '4:5,0:4']
    """
    low = [a // c * c for a, c in zip(box.start, chunks, strict=True)]
    counts = [-(-(b - a) // c) for a, b, c in zip(low, box.stop, chunks, strict=True)]
    batch = list(counts)
    for ax in range(len(batch)):
        if math.prod(batch) <= most:
            break
        batch[ax] = max(1, most // math.prod(batch[ax + 1 :]))
    tile = [n * c for n, c in zip(batch, chunks, strict=True)]
    for part in tile_box(Box(tuple(low), box.stop), tile):
        inside = part.intersect(box)
        assert inside is not None
        yield inside


def _open_node(name: str) -> zarr.Array[Any] | zarr.Group:
    import zarr

    try:
        return zarr.open(name, mode="r")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{name}: not a readable Zarr array or group ({first_line(exc)}; "
            f"expected {', '.join(ZARR_METADATA)})"
        ) from exc


def _refuse_level(name: str, options: OpenOptions) -> None:
    if options.level not in (None, 0):
        raise InputError(
            f"{name}: no level {options.level} (not an OME-Zarr image; a plain Zarr array has "
            "only level 0)"
        )


def _parent_image(name: str) -> tuple[zarr.Group, ImageMetadata, int] | None:
    """The OME-Zarr image whose ``multiscales`` list ``name`` as a level, if any."""
    import zarr

    path = Path(name)
    parent = path.parent
    if not any((parent / f).is_file() for f in (*ZARR_METADATA, ".zattrs")):
        return None
    try:
        group = zarr.open_group(parent, mode="r")
        multiscale = parse_image(group.attrs.asdict(), str(parent))
    except (OSError, ValueError, KeyError, TypeError, InputError):
        return None
    if multiscale is None or path.name not in multiscale.paths:
        return None
    return group, multiscale, multiscale.paths.index(path.name)


def _ngff_level(name: str, group: zarr.Group, multiscale: ImageMetadata, level: int) -> _Level:
    """The array of ``level`` of an OME-Zarr image, placed by its transforms.

    Raises:
        InputError: no such level, the level's array is missing, or its axes do not fit.
    """
    n = len(multiscale.paths)
    if not 0 <= level < n:
        available = ", ".join(str(i) for i in range(n))
        raise InputError(
            f"{name}: OME-Zarr image has no level {level} (levels: {available}; "
            "choose one with --source-level in convert, --level elsewhere)"
        )
    path = multiscale.paths[level]
    array = _level_array(group, path)
    if array is None:
        raise InputError(f"{name}: level {level} array '{path}' named in multiscales is missing")
    names = multiscale.axis_names
    if names is None:
        names = tuple("tczyx" if array.ndim == 5 else AXES_BY_NDIM.get(array.ndim, ""))
    if len(names) != array.ndim:
        raise InputError(
            f"{name}: multiscales axes ({', '.join(names)}) do not match level {level} array "
            f"'{path}' with {array.ndim} dimensions"
        )
    axes, dropped = _check_axes(name, names, array.shape)
    placement = multiscale.placement(level, name, names)
    shapes: list[tuple[int, ...] | None] = []
    for other in multiscale.paths:
        found = array if other == path else _level_array(group, other)
        shapes.append(None if found is None else tuple(found.shape[dropped:]))
    return _Level(
        array,
        path,
        axes,
        dropped,
        voxel_size=placement.voxel_size,
        translation=placement.translation,
        unit=placement.unit,
        ngff_version=multiscale.version,
        level=level,
        levels=tuple(shapes),
    )


def _level_array(group: zarr.Group, path: str) -> zarr.Array[Any] | None:
    import zarr

    try:
        node = group[path]
    except (KeyError, OSError, ValueError):
        return None
    return node if isinstance(node, zarr.Array) else None


def _plain_level(name: str, array: zarr.Array[Any], path: str | None) -> _Level:
    """A plain array: axes from v3 ``dimension_names`` when they are ``tczyx`` letters.

    Raises:
        InputError: unusable dimension names or number of dimensions.
    """
    names = getattr(array.metadata, "dimension_names", None)
    if names is not None and all(isinstance(n, str) and n in AXIS_ORDER for n in names):
        axes, dropped = _check_axes(name, tuple(names), array.shape)
        return _Level(array, path, axes, dropped)
    axes_by_ndim = AXES_BY_NDIM.get(array.ndim)
    if axes_by_ndim is None:
        dims = " x ".join(str(s) for s in array.shape)
        raise InputError(
            f"{name}: {array.ndim}D array of shape {dims} (datatools reads 2D (y, x), "
            "3D (z, y, x) and 4D (c, z, y, x) arrays)"
        )
    return _Level(array, path, axes_by_ndim, 0)


def _check_axes(name: str, names: tuple[str, ...], shape: tuple[int, ...]) -> tuple[str, int]:
    """Axis letters without a single-point time axis, and how many leading axes were dropped.

    Raises:
        InputError: names outside ``t, c, z, y, x``, out of that order, repeated, more than one
            time point, or not 2 or 3 spatial axes.
    """
    text = ", ".join(names)
    joined = "".join(names)
    order = [AXIS_ORDER.find(n) if len(n) == 1 else -1 for n in names]
    if -1 in order or order != sorted(set(order)):
        raise InputError(
            f"{name}: axes ({text}) are not a subset of (t, c, z, y, x) in that order "
            "(datatools reads C-order arrays; transpose or rename the axes first)"
        )
    if len([n for n in names if n in SPATIAL_AXES]) < 2:
        raise InputError(f"{name}: axes ({text}) have fewer than 2 spatial axes (z, y, x)")
    if joined.startswith("t"):
        if shape[0] != 1:
            raise InputError(
                f"{name}: holds {shape[0]} time points (datatools reads images with a single "
                "time point)"
            )
        return joined[1:], 1
    return joined, 0


def _only_array(name: str, group: zarr.Group) -> _Level:
    """The single array of a plain (non-OME) group.

    Raises:
        InputError: the group holds no array, or several.
    """
    import zarr

    arrays = sorted(group.array_keys())
    if len(arrays) == 1:
        node = group[arrays[0]]
        assert isinstance(node, zarr.Array)
        return _plain_level(name, node, arrays[0])
    if not arrays:
        groups = sorted(k for k in group.group_keys() if not k.startswith("."))  # .datatools
        hint = ""
        if groups:
            hint = f" (it holds groups {_listing(groups)}; name one as {name}/{groups[0]})"
        raise InputError(f"{name}: Zarr group holds no arrays{hint}")
    raise InputError(
        f"{name}: Zarr group is not an OME-Zarr image and holds {len(arrays)} arrays "
        f"({_listing(arrays)}); name one as {name}/{arrays[0]}"
    )


def _listing(names: list[str]) -> str:
    if len(names) <= LISTED_MAX:
        return ", ".join(names)
    return ", ".join(names[:LISTED_MAX]) + f", ... ({len(names) - LISTED_MAX} more)"


def _codec_names(array: zarr.Array[Any]) -> list[str]:
    """Short names of the array's filters, serializer and compressors, in order."""
    codecs: list[Any] = [*array.filters]
    if array.serializer is not None:
        codecs.append(array.serializer)
    codecs.extend(array.compressors)
    names = []
    for codec in codecs:
        codec_id = getattr(codec, "codec_id", None)
        names.append(str(codec_id) if codec_id is not None else str(codec.to_dict()["name"]))
    return names
