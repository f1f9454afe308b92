"""Read a rectangle of one TIFF page, touching only the bytes, strips or tiles that meet it.

Shared by the slice-folder and the multi-page TIFF sources. A page is addressed in the
normalised layout tifffile uses (``TiffPage.shaped``): ``(separate samples, depth, rows,
columns, contiguous samples)``. Callers ask for a region as ``(channels, rows, columns)``,
channel first, and get exactly what ``tifffile.imread`` returns for that region.

Two paths, chosen per page (volumetric pages, depth > 1, are refused by :func:`check_page`):

- *final* data (uncompressed, contiguous, no predictor, normal fill order): the needed rows are
  read by byte offset, straight into the caller's array when the layout allows;
- everything else: only the strips or tiles that meet the region are read and decoded with
  tifffile's own per-segment decode function, which applies decompression, predictor, fill
  order, bit unpacking and JPEG tables exactly as ``tifffile.imread`` does. Every layout
  tifffile can decode therefore has a partial path; none needs the whole page.
"""

from __future__ import annotations

import math
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import tifffile

from datatools import units
from datatools.errors import DatatoolsError, InputError

TIFF_ERRORS: tuple[type[BaseException], ...] = (
    tifffile.TiffFileError,
    ValueError,
    OSError,
    EOFError,
    IndexError,
    KeyError,
    struct.error,
    RuntimeError,
    NotImplementedError,
)
"""What tifffile and imagecodecs raise on corrupt, truncated or unsupported files."""

JPEG_COMPRESSIONS = frozenset({6, 7, 33007, 34892})


@dataclass(frozen=True)
class PageLayout:
    """What one page's header says about its pixels.

    Attributes:
        shape: ``(rows, columns)`` of the image.
        samples: samples per pixel (1 for grayscale, 3 for RGB).
        dtype: voxel dtype in native byte order.
        compression: tifffile's compression name in lower case (``"none"``, ``"adobe_deflate"``).
        rows_per_strip: rows per strip for stripped pages, else ``None``.
        tile_shape: ``(rows, columns)`` of a tile for tiled pages, else ``None``.
        final: the pixels are stored as they are read (uncompressed, no predictor), so any
            row can be read on its own.
    """

    shape: tuple[int, int]
    samples: int
    dtype: np.dtype[Any]
    compression: str
    rows_per_strip: int | None
    tile_shape: tuple[int, int] | None
    final: bool = False

    @property
    def chunk_shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the smallest piece that reads without decoding more: a tile,
        a strip, or a single row of uncompressed data."""
        if self.tile_shape is not None:
            return self.tile_shape
        if self.final:
            return (1, self.shape[1])
        return (self.rows_per_strip or self.shape[0], self.shape[1])


def check_page(page: tifffile.TiffPage, path: str) -> PageLayout:
    """Validate a page's header (no pixel decoding) and describe its layout.

    Raises:
        InputError: unsupported sample format, volumetric page, no pixel data, or pixel data
            running past the end of the file (truncated); the message names ``path``.
    """
    if page.dtype is None:
        raise InputError(
            f"{path}: not a readable TIFF (unsupported sample format "
            f"{page.sampleformat}, {page.bitspersample}-bit)"
        )
    separate, depth, rows, columns, contig = page.shaped
    if rows * columns * separate * contig == 0 or len(page.dataoffsets) == 0:
        raise InputError(f"{path}: TIFF holds no pixel data (header only or zero-size image)")
    if depth != 1:
        raise InputError(
            f"{path}: volumetric TIFF page (depth {depth}) is not a 2D slice "
            "(open the file on its own, not as part of a slice folder)"
        )
    check_extent(page.dataoffsets, page.databytecounts, page.parent.filehandle.size, path)
    tile_shape = (int(page.tilelength), int(page.tilewidth)) if page.is_tiled else None
    return PageLayout(
        shape=(int(rows), int(columns)),
        samples=int(page.samplesperpixel),
        dtype=np.dtype(page.dtype).newbyteorder("="),
        compression=compression_name(page.compression),
        rows_per_strip=None if page.is_tiled else int(page.rowsperstrip),
        tile_shape=tile_shape,
        final=bool(page.is_final),
    )


def compression_name(code: int) -> str:
    """tifffile's name of a TIFF compression code in lower case (``8`` -> ``"adobe_deflate"``)."""
    try:
        return str(tifffile.COMPRESSION(code).name).lower()
    except ValueError:
        return str(code)


def check_extent(
    offsets: Sequence[int], bytecounts: Sequence[int], file_size: int, path: str
) -> None:
    """Refuse pixel data that runs past the end of the file.

    Raises:
        InputError: ``<path>: truncated TIFF (...)``.
    """
    end = max((o + b for o, b in zip(offsets, bytecounts, strict=False) if b), default=0)
    if end > file_size:
        raise InputError(
            f"{path}: truncated TIFF (pixel data ends at byte {end}, the file has "
            f"{file_size} bytes)"
        )


def check_page_chain(tif: tifffile.TiffFile, path: str) -> None:
    """Refuse a file whose chain of pages breaks off (a multi-page TIFF cut short).

    tifffile stops at a page whose successor lies past the end of the file or cannot be
    parsed, and reports the pages before it; the last page's next-page offset is then not 0.

    Raises:
        InputError: ``<path>: truncated TIFF (...)``.
    """
    fh = tif.filehandle
    position = tif.pages.next_page_offset
    if position is None:
        return
    size = tif.tiff.offsetsize
    fh.seek(position)
    data = fh.read(size)
    following = struct.unpack(tif.tiff.offsetformat, data)[0] if len(data) == size else -1
    if following != 0:
        raise InputError(
            f"{path}: truncated TIFF (the chain of pages breaks off after page "
            f"{len(tif.pages)}; the file has {fh.size} bytes)"
        )


def read_page_region(
    page: tifffile.TiffPage,
    path: str,
    rows: tuple[int, int],
    columns: tuple[int, int],
    channels: tuple[int, int],
    out: np.ndarray[Any, Any],
) -> None:
    """Decode ``[rows) x [columns)`` of samples ``[channels)`` of ``page`` into ``out``.

    Peak memory: ``out`` plus the encoded and decoded bytes of the strips or tiles that meet
    the region (for uncompressed pages: the needed rows, read straight into ``out`` when its
    rows are contiguous).

    Args:
        page: an open page (its file stays open during the call).
        path: the file, for messages.
        rows: half-open row range.
        columns: half-open column range.
        channels: half-open sample range (``(0, 1)`` for grayscale).
        out: writable array of shape ``(channels, rows, columns)`` in native byte order.

    Raises:
        InputError: the pixel data is truncated, corrupt or in an unsupported encoding.
    """
    try:
        if page.is_final:
            _read_final(page, path, rows, columns, channels, out)
        else:
            _read_segments(page, path, rows, columns, channels, out)
    except DatatoolsError:
        raise
    except TIFF_ERRORS as exc:
        raise InputError(f"{path}: not a readable TIFF ({exc})") from exc


def _read_final(
    page: tifffile.TiffPage,
    path: str,
    rows: tuple[int, int],
    columns: tuple[int, int],
    channels: tuple[int, int],
    out: np.ndarray[Any, Any],
) -> None:
    separate, _, length, width, contig = page.shaped
    raw = np.dtype(page.dtype).newbyteorder(page.parent.byteorder)
    row_items = width * contig
    n_rows = rows[1] - rows[0]
    planes = range(channels[0], channels[1]) if separate > 1 else range(1)
    fh = page.parent.filehandle
    direct = contig == 1 and columns == (0, width)
    check_extent(page.dataoffsets[:1], [page.nbytes], fh.size, path)
    for plane in planes:
        offset = page.dataoffsets[0] + (plane * length + rows[0]) * row_items * raw.itemsize
        target = out[plane - channels[0]] if separate > 1 else out[0]
        with fh.lock:
            fh.seek(offset)
            if direct and target.flags.c_contiguous:
                fh.read_array(raw, n_rows * row_items, out=target.reshape(-1))
                continue
            block = fh.read_array(raw, n_rows * row_items).reshape(n_rows, width, contig)
        block = block[:, columns[0] : columns[1]]
        if separate > 1:
            target[...] = block[..., 0]
        else:
            out[...] = np.moveaxis(block[..., channels[0] : channels[1]], -1, 0)


def _segment_indices(
    page: tifffile.TiffPage,
    rows: tuple[int, int],
    columns: tuple[int, int],
    channels: tuple[int, int],
) -> list[int]:
    separate, _, length, width, _ = page.shaped
    planes = range(channels[0], channels[1]) if separate > 1 else range(1)
    if page.is_tiled:
        tile_rows, tile_cols = page.tilelength, page.tilewidth
        across = math.ceil(width / tile_cols)
        per_plane = across * math.ceil(length / tile_rows)
        return [
            plane * per_plane + ty * across + tx
            for plane in planes
            for ty in range(rows[0] // tile_rows, (rows[1] - 1) // tile_rows + 1)
            for tx in range(columns[0] // tile_cols, (columns[1] - 1) // tile_cols + 1)
        ]
    per_strip = page.rowsperstrip
    per_plane = math.ceil(length / per_strip)
    return [
        plane * per_plane + strip
        for plane in planes
        for strip in range(rows[0] // per_strip, (rows[1] - 1) // per_strip + 1)
    ]


def _read_segments(
    page: tifffile.TiffPage,
    path: str,
    rows: tuple[int, int],
    columns: tuple[int, int],
    channels: tuple[int, int],
    out: np.ndarray[Any, Any],
) -> None:
    indices = _segment_indices(page, rows, columns, channels)
    offsets = [page.dataoffsets[i] for i in indices]
    bytecounts = [page.databytecounts[i] for i in indices]
    check_extent(offsets, bytecounts, page.parent.filehandle.size, path)
    decode = page.keyframe.decode
    kwargs: dict[str, Any] = {}
    if page.compression in JPEG_COMPRESSIONS:
        kwargs = {"jpegtables": page.jpegtables, "jpegheader": page.keyframe.jpegheader}
    separate, _, length, width, _ = page.shaped
    nodata = page.keyframe.nodata

    def place(segment: tuple[bytes | None, int]) -> None:
        data, index = segment
        decoded, (plane, _, top, left, _), shape = decode(data, index, **kwargs)
        y0, y1 = max(top, rows[0]), min(top + shape[1], rows[1], length)
        x0, x1 = max(left, columns[0]), min(left + shape[2], columns[1], width)
        if y0 >= y1 or x0 >= x1:
            return
        dst = (slice(y0 - rows[0], y1 - rows[0]), slice(x0 - columns[0], x1 - columns[0]))
        if decoded is None:
            target = out[plane - channels[0]] if separate > 1 else out
            target[(Ellipsis, *dst)] = nodata
            return
        block = decoded[0, y0 - top : y1 - top, x0 - left : x1 - left]
        if separate > 1:
            out[(plane - channels[0], *dst)] = block[..., 0]
        else:
            out[(slice(None), *dst)] = np.moveaxis(block[..., channels[0] : channels[1]], -1, 0)

    segments = cast(
        Iterable[tuple[bytes | None, int]],
        page.parent.filehandle.read_segments(offsets, bytecounts, indices, sort=True, flat=True),
    )
    workers = page.keyframe.maxworkers
    if workers > 1 and len(indices) > 1:
        with ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(place, segments):
                pass
    else:
        for segment in segments:
            place(segment)


def unit_name(text: str | None) -> str | None:
    """OME-NGFF unit name for a unit spelling in OME-XML or ImageJ metadata (``"µm"``,
    ``"micron"``, ImageJ's escaped ``"\\u00b5m"``), or ``None`` for anything that is not a
    length datatools converts (ImageJ's ``"pixel"``, TIFF's ``"inch"`` resolution unit)."""
    if text is None:
        return None
    name = units.unit_name(text.replace("\\u00b5", "µ"))
    return name if name in units.METERS else None


def pixel_size(page: tifffile.TiffPage) -> tuple[float, float] | None:
    """``(y, x)`` pixel size from YResolution/XResolution (pixels per unit), or ``None``."""
    sizes = []
    for tag in ("YResolution", "XResolution"):
        value = page.tags.valueof(tag)
        if not isinstance(value, tuple) or len(value) != 2 or not value[0] or not value[1]:
            return None
        sizes.append(float(value[1]) / float(value[0]))
    return sizes[0], sizes[1]


def imagej_voxel_size(
    tif: tifffile.TiffFile, spatial: str
) -> tuple[tuple[float, ...], str | None] | None:
    """Voxel size per ``spatial`` axis (``"zyx"`` or ``"yx"``) and unit from ImageJ metadata.

    The in-plane size comes from the first page's resolution, z from ImageJ ``spacing``.
    ``None`` unless every axis is known.
    """
    meta = tif.imagej_metadata
    if meta is None:
        return None
    plane = pixel_size(tif.pages.first)
    if plane is None:
        return None
    unit = unit_name(str(meta["unit"])) if "unit" in meta else None
    if spatial == "yx":
        return plane, unit
    spacing = meta.get("spacing")
    if not isinstance(spacing, int | float) or spacing <= 0:
        return None
    return (float(spacing), *plane), unit


def ome_voxel_size(
    ome_xml: str, image: int, spatial: str
) -> tuple[tuple[float, ...], str | None] | None:
    """Voxel size per ``spatial`` axis and unit from the ``image``-th OME ``Pixels`` element.

    Units default to micrometer (the OME default) and are converted to the x axis's unit when
    they differ. ``None`` unless every axis has a PhysicalSize.
    """
    try:
        root = ET.fromstring(ome_xml)
    except ET.ParseError:
        return None
    images = [el for el in root.iter() if _local(el.tag) == "Image"]
    if image >= len(images):
        return None
    pixels = next((el for el in images[image] if _local(el.tag) == "Pixels"), None)
    if pixels is None:
        return None
    sizes: list[float] = []
    names: list[str] = []
    for axis in spatial:
        value = pixels.get(f"PhysicalSize{axis.upper()}")
        unit = unit_name(pixels.get(f"PhysicalSize{axis.upper()}Unit", "µm"))
        if value is None or unit is None:
            return None
        sizes.append(float(value))
        names.append(unit)
    target = names[-1]
    return tuple(
        s * units.METERS[u] / units.METERS[target] for s, u in zip(sizes, names, strict=True)
    ), target


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
