"""One TIFF file (multi-page, OME-TIFF, ImageJ hyperstack, or a single 2D image) as a volume.

tifffile's series and pyramid levels select what to read (``OpenOptions.series``, ``.level``).
Series axes map to datatools axes in C order, channel first: ``Z`` -> z, ``Y`` -> y, ``X`` ->
x, ``C`` or ``S`` (samples) -> c; a generic page axis (``Q``, ``I``) or time (``T``) becomes z
when the series has no ``Z``. Length-1 axes are dropped, so a 2D file is ``"yx"``.

Contiguous uncompressed series are memory-mapped (a read touches only the rows it needs, so
their ``chunks`` are rows); others are read through tifffile's Zarr store, which decodes only
the pages and strips or tiles that meet a box (their ``chunks``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tifffile

from datatools.errors import DatatoolsError, InputError
from datatools.geometry import Box, resolve_roi
from datatools.sources._tiff_layout import (
    TIFF_ERRORS,
    check_extent,
    check_page_chain,
    compression_name,
    imagej_voxel_size,
    ome_voxel_size,
)
from datatools.sources.base import OpenOptions, SourceSpec, Volume, check_dtype

if TYPE_CHECKING:
    import zarr

logger = logging.getLogger(__name__)

TIFF_FILE_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
CHANNEL_AXES = "CS"
SPATIAL_SERIES_AXES = "ZYX"


class TiffFileVolume(Volume):
    """A series (and pyramid level) of one TIFF file, axes ``[c][z]yx``.

    The file stays open until :meth:`close`.
    """

    kind = "tiff-file"

    @classmethod
    def can_open(cls, spec: str) -> bool:
        """A file named ``*.tif``/``*.tiff``/``*.btf``/``*.ome.tif`` or starting with TIFF magic."""
        path = Path(spec)
        if not path.is_file():
            return False
        if path.suffix.lower() in TIFF_FILE_SUFFIXES:
            return True
        try:
            with path.open("rb") as f:
                head = f.read(4)
        except OSError:
            return False
        return head in TIFF_MAGIC

    @classmethod
    def open(cls, spec: SourceSpec, options: OpenOptions) -> TiffFileVolume:
        """Open series ``options.series`` (default 0), level ``options.level`` (default 0).

        Memory: the file's headers (tifffile reads every page's header of the series).

        Raises:
            InputError: not a readable TIFF, truncated, no pixel data, series or level out of
                range (the message lists what exists), axes that do not map to ``[c][z]yx``,
                or an unsupported dtype.
            TypeError: ``spec`` is a list (lists of slices are a :class:`TiffStack`).
        """
        if not isinstance(spec, str | Path):
            raise TypeError(f"TiffFileVolume opens one path, not a {type(spec).__name__}")
        name = str(spec)
        try:
            tif = tifffile.TiffFile(name)
        except TIFF_ERRORS as exc:
            raise InputError(f"{name}: not a readable TIFF ({exc})") from exc
        try:
            return cls._from_file(name, tif, options)
        except BaseException:
            tif.close()
            raise

    @classmethod
    def _from_file(cls, name: str, tif: tifffile.TiffFile, options: OpenOptions) -> TiffFileVolume:
        try:
            all_series = tif.series
            if not all_series or len(tif.pages) == 0:
                raise InputError(f"{name}: TIFF holds no pixel data (no image in the file)")
            check_page_chain(tif, name)
            index = options.series or 0
            if not 0 <= index < len(all_series):
                raise InputError(
                    f"{name}: series {index} does not exist (the file has "
                    f"{_count(len(all_series), 'series', 'series')}: {_range(len(all_series))})"
                )
            series = all_series[index]
            level = options.level or 0
            n_levels = len(series.levels)
            if not 0 <= level < n_levels:
                raise InputError(
                    f"{name}: level {level} does not exist in series {index} (it has "
                    f"{_count(n_levels, 'level', 'levels')}: {_range(n_levels)})"
                )
            data = series.levels[level]
            if data.size == 0 or data.dtype is None:
                raise InputError(f"{name}: TIFF holds no pixel data (zero-size image)")
            dtype = np.dtype(data.dtype).newbyteorder("=")
            check_dtype(dtype, name)
            _check_series_extent(tif, data, name)
            keep, axes = _map_axes(name, index, data.axes, data.shape)
            voxel = _voxel_size(tif, index, series, data, keep, axes)
            offset = data.dataoffset
            if data.is_multifile or data.transform is not None:
                offset = None
            array: np.ndarray[Any, Any] | zarr.Array[Any]
            if offset is not None:
                raw = np.dtype(tif.byteorder + dtype.char)
                array = np.memmap(name, dtype=raw, mode="r", offset=offset, shape=data.shape)
                # a read touches only the rows it needs: the smallest readable piece is a row
                stored = tuple(
                    n if a in "XS" else 1 for a, n in zip(data.axes, data.shape, strict=True)
                )
            else:
                import zarr

                # A multi-level series' own store is a group of all levels; a level's
                # TiffPageSeries has only itself as a level, so ask the base series.
                store = series.aszarr(level=level)
                array = zarr.open_array(store, mode="r")
                stored = array.chunks
            compression = compression_name(data.keyframe.compression)
        except DatatoolsError:
            raise
        except TIFF_ERRORS as exc:
            raise InputError(f"{name}: not a readable TIFF ({exc})") from exc
        return cls(
            name,
            tif,
            array,
            keep=keep,
            axes=axes,
            stored_chunks=stored,
            voxel=voxel,
            facts={
                "series": index,
                "series_count": len(all_series),
                "series_axes": data.axes,
                "level": level,
                "levels": n_levels,
                "compression": compression,
                "is_ome": bool(tif.is_ome),
                "is_imagej": bool(tif.is_imagej),
                "memory_mapped": offset is not None,
            },
        )

    def __init__(
        self,
        spec: str,
        tif: tifffile.TiffFile,
        array: np.ndarray[Any, Any] | zarr.Array[Any],
        *,
        keep: tuple[int, ...],
        axes: str,
        stored_chunks: tuple[int, ...],
        voxel: tuple[tuple[float, ...], str | None] | None,
        facts: dict[str, Any],
    ) -> None:
        series_shape = tuple(int(s) for s in array.shape)
        self._order = tuple(sorted(range(len(keep)), key=lambda i: "czyx".index(axes[i])))
        super().__init__(
            spec,
            tuple(series_shape[keep[i]] for i in self._order),
            np.dtype(array.dtype).newbyteorder("="),
            "".join(axes[i] for i in self._order),
            voxel_size=None if voxel is None else voxel[0],
            unit=None if voxel is None else voxel[1],
            chunks=tuple(stored_chunks[keep[i]] for i in self._order),
        )
        self._tif = tif
        self._array: np.ndarray[Any, Any] | zarr.Array[Any] | None = array
        self._keep = keep
        self._series_shape = series_shape
        self._facts = facts

    def _read(self, box: Box) -> np.ndarray[Any, Any]:
        """Read ``box`` (in this volume's axes, half-open) into a new array.

        Memory: the result, plus the decoded strips or tiles (pages, for uncompressed data)
        that meet the box.

        Raises:
            RoiError: the box does not fit the volume.
            InputError: the file is corrupt or truncated where the box lies.
        """
        if self._array is None:
            raise ValueError(f"{self.spec}: volume is closed")
        box = resolve_roi(box, self.shape, self.axes)
        selection: list[int | slice] = [0] * len(self._series_shape)
        for position, i in enumerate(self._order):
            selection[self._keep[i]] = slice(box.start[position], box.stop[position])
        try:
            data = np.asarray(self._array[tuple(selection)])
        except TIFF_ERRORS as exc:
            raise InputError(f"{self.spec}: not a readable TIFF ({exc})") from exc
        return np.array(data.transpose(self._order), dtype=self.dtype, order="C", copy=True)

    def details(self) -> dict[str, Any]:
        """Series and level (index and count), series axes, compression, OME/ImageJ flags."""
        return dict(self._facts)

    def close(self) -> None:
        """Close the file and drop the memory map or Zarr store."""
        self._array = None
        self._tif.close()


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _range(n: int) -> str:
    return "0" if n == 1 else f"0-{n - 1}"


def _check_series_extent(tif: tifffile.TiffFile, data: tifffile.TiffPageSeries, name: str) -> None:
    """Refuse a series whose pixel data runs past the end of its file(s) (headers only).

    Raises:
        InputError: ``<file>: truncated TIFF (...)``, naming the file the page lives in.
    """
    if data.dataoffset is not None and not data.is_multifile:
        check_extent([data.dataoffset], [data.nbytes], tif.filehandle.size, name)
        return
    for page in data.pages:
        if page is not None:
            fh = page.parent.filehandle
            label = name if page.parent is tif else str(fh.path)
            check_extent(page.dataoffsets, page.databytecounts, fh.size, label)


def _map_axes(
    name: str, series: int, series_axes: str, shape: tuple[int, ...]
) -> tuple[tuple[int, ...], str]:
    """Which series axes to keep (length > 1, or Y/X) and their datatools letters.

    Raises:
        InputError: two channel axes, or a non-spatial axis besides Z (time points, several
            page axes) that cannot become z.
    """
    keep = tuple(
        i for i, (a, n) in enumerate(zip(series_axes, shape, strict=True)) if n > 1 or a in "YX"
    )
    letters = [series_axes[i] for i in keep]
    channels = [a for a in letters if a in CHANNEL_AXES]
    if len(channels) > 1:
        raise InputError(
            f"{name}: series {series} has axes {series_axes} with both C and S > 1 "
            "(datatools reads one channel axis; split channels or samples first)"
        )
    extra = [a for a in letters if a not in CHANNEL_AXES + SPATIAL_SERIES_AXES]
    sizes = {a: shape[i] for i, a in zip(keep, letters, strict=True)}
    if extra and ("Z" in letters or len(extra) > 1):
        described = ", ".join(f"{a}={sizes[a]}" for a in extra)
        raise InputError(
            f"{name}: series {series} has axes {series_axes}: {described} cannot be read "
            "as part of one [c]zyx volume (save each time point or position as its own file)"
        )
    if extra:
        if extra[0] == "T":
            logger.info("%s: series %d has no Z axis; reading T as z", name, series)
        letters = ["Z" if a == extra[0] else a for a in letters]
    axes = "".join("c" if a in CHANNEL_AXES else a.lower() for a in letters)
    return keep, axes


def _voxel_size(
    tif: tifffile.TiffFile,
    index: int,
    series: tifffile.TiffPageSeries,
    data: tifffile.TiffPageSeries,
    keep: tuple[int, ...],
    axes: str,
) -> tuple[tuple[float, ...], str | None] | None:
    """Voxel size per spatial axis (z, y, x order) and unit, from OME or ImageJ metadata.

    ``None`` when the metadata lacks an axis, when z stands for another axis (time, pages),
    or when a pyramid level's axes differ from the base level's. A level's size is the base
    size times the level's downsampling on each axis.
    """
    spatial = "".join(a for a in "zyx" if a in axes)
    letters = "".join(data.axes[i] for i in keep)
    if "z" in axes and "Z" not in letters:
        return None
    found = None
    if tif.is_ome and tif.ome_metadata is not None:
        found = ome_voxel_size(tif.ome_metadata, index, spatial)
    elif tif.is_imagej:
        found = imagej_voxel_size(tif, spatial)
    if found is None or series.axes != data.axes:
        return None
    sizes, unit = found
    position = {a: keep[i] for i, a in enumerate(axes)}
    scaled = tuple(
        size * series.shape[position[a]] / data.shape[position[a]]
        for size, a in zip(sizes, spatial, strict=True)
    )
    return scaled, unit
