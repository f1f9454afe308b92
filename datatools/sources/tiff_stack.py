"""A folder, glob or list of 2D TIFF slices as one lazy ``(z, y, x)`` or ``(c, z, y, x)`` volume.

Slices are ordered naturally (``s2`` before ``s10``, with or without zero padding). Opening
reads every file's header (shape, dtype, samples per pixel, where its pixel data lies) and no
pixels; a numbering gap, a mismatching or truncated slice is refused before anything is
written. :meth:`TiffStack.read` opens only the slices a box needs and, inside each, reads only
the rows (uncompressed data) or the strips and tiles (compressed data) that meet the box.
"""

from __future__ import annotations

import functools
import glob
import itertools
import logging
import os
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import tifffile

from datatools.errors import DatatoolsError, InputError, InputNotFoundError
from datatools.geometry import Box, resolve_roi
from datatools.sources._tiff_layout import (
    TIFF_ERRORS,
    PageLayout,
    check_page,
    check_page_chain,
    imagej_voxel_size,
    read_page_region,
)
from datatools.sources.base import OpenOptions, SourceSpec, Volume, check_dtype, spec_text

logger = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")
READ_THREADS = min(4, os.cpu_count() or 1)
"""Threads reading the slices of one box: at most one per core, at most 4 (a disk or page cache
gives little more)."""


class TiffStack(Volume):
    """2D TIFF slices stacked along z, in natural order of their paths.

    Axes are ``"zyx"``, or ``"czyx"`` when slices hold several samples per pixel (RGB): the
    channel axis comes first, whatever the interleaving in the files.
    """

    kind = "tiff-stack"

    @classmethod
    def can_open(cls, spec: str) -> bool:
        """A folder that is not a Zarr store, or a glob pattern that is not an existing file."""
        path = Path(spec)
        if path.is_dir():
            return not any((path / marker).exists() for marker in ZARR_MARKERS)
        return glob.has_magic(spec) and not path.is_file()

    @classmethod
    def open(cls, spec: SourceSpec, options: OpenOptions) -> TiffStack:
        """Open a folder, glob or list of slices, checking every file's header.

        Memory: a few hundred bytes per file (paths); no pixels are read.

        Raises:
            InputNotFoundError: a listed file does not exist.
            InputError: no TIFF files, a numbering gap (unless ``options.allow_gaps``), an
                unreadable, truncated or empty TIFF, slices that differ in shape, dtype or
                samples per pixel, or an unsupported dtype; the message names the file.
        """
        label, paths, ignored = _collect(spec)
        paths = sorted(paths, key=lambda p: natural_key(str(p)))
        if not options.allow_gaps:
            _check_gaps(label, paths)
        layout, voxel, pixels = _check_headers(paths)
        return cls(label, paths, layout, voxel, ignored, pixels)

    def __init__(
        self,
        spec: str,
        paths: Sequence[Path],
        layout: PageLayout,
        voxel: tuple[tuple[float, ...], str | None] | None,
        ignored: int = 0,
        pixels: Mapping[Path, DirectPixels] | None = None,
    ) -> None:
        rows, columns = layout.shape
        multi = layout.samples > 1
        chunk = (1, *layout.chunk_shape)
        super().__init__(
            spec,
            ((layout.samples,) if multi else ()) + (len(paths), rows, columns),
            layout.dtype,
            "czyx" if multi else "zyx",
            voxel_size=None if voxel is None else voxel[0],
            unit=None if voxel is None else voxel[1],
            chunks=((layout.samples,) if multi else ()) + chunk,
        )
        self.paths = tuple(paths)
        self.layout = layout
        self.ignored = ignored
        self._pixels: dict[Path, DirectPixels] = dict(pixels or {})
        """Offset of the pixels of slices whose rows can be read directly (uncompressed, one
        sample, native byte order), found at open or by an earlier read: reads skip parsing
        the header."""

    def read(self, box: Box, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        """Read ``box`` (``(z, y, x)`` or ``(c, z, y, x)``, half-open) into ``out`` (C-contiguous,
        ``box.shape``, this dtype) or a new array.

        Slices are read in parallel by up to :data:`READ_THREADS` threads (file reads and TIFF
        decoding release the GIL). Memory: the result plus, per slice being read, the encoded
        and decoded strips or tiles that meet the box (uncompressed full-width rows go straight
        into the result).

        Raises:
            RoiError: the box does not fit the volume.
            InputError: a slice is unreadable, truncated, corrupt, or no longer matches the
                header checked at open; the message names the file.
        """
        box = resolve_roi(box, self.shape, self.axes)
        if out is None:
            out = np.empty(box.shape, self.dtype)
        elif out.shape != box.shape or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"out {out.shape} {out.dtype} does not fit {box} of {self}")
        multi = self.layout.samples > 1
        start, stop = (box.start[1:], box.stop[1:]) if multi else (box.start, box.stop)
        channels = (box.start[0], box.stop[0]) if multi else (0, 1)

        def read_slice(i: int) -> None:
            target = out[:, i] if multi else out[i][np.newaxis]
            path = self.paths[start[0] + i]
            self._read_slice(path, (start[1], stop[1]), (start[2], stop[2]), channels, target)

        depth = stop[0] - start[0]
        if depth == 1:
            read_slice(0)
        else:
            for _ in _read_pool(os.getpid()).map(read_slice, range(depth)):
                pass
        return out

    def _read(self, box: Box) -> np.ndarray[Any, Any]:
        return self.read(box)

    def _read_slice(
        self,
        path: Path,
        rows: tuple[int, int],
        columns: tuple[int, int],
        channels: tuple[int, int],
        out: np.ndarray[Any, Any],
    ) -> None:
        name = str(path)
        direct = self._pixels.get(path)
        if direct is not None and self._read_rows(path, direct, rows, columns, out[0]):
            return
        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages.first
                layout = check_page(page, name)
                _check_same(name, layout, self.layout, str(self.paths[0]))
                read_page_region(page, name, rows, columns, channels, out)
                direct = _direct_pixels(tif, layout)
                if direct is not None:
                    self._pixels[path] = direct
        except DatatoolsError:
            raise
        except TIFF_ERRORS as exc:
            raise InputError(f"{name}: not a readable TIFF ({exc})") from exc

    def _read_rows(
        self,
        path: Path,
        direct: DirectPixels,
        rows: tuple[int, int],
        columns: tuple[int, int],
        out: np.ndarray[Any, Any],
    ) -> bool:
        """Rows ``[rows)`` x ``[columns)`` of an uncompressed slice straight from the file, at
        the pixel offset found at open or by an earlier read. Returns False, reading nothing,
        when the file's size or modification time changed since (its header is parsed again).
        """
        width = self.shape[-1]
        row_bytes = width * self.dtype.itemsize
        n_rows = rows[1] - rows[0]
        whole = columns == (0, width) and out.flags.c_contiguous
        try:
            with open(path, "rb", buffering=0) as fh:
                stat = os.fstat(fh.fileno())
                if (stat.st_size, stat.st_mtime_ns) != (direct.size, direct.mtime_ns):
                    return False
                block = out if whole else np.empty((n_rows, width), self.dtype)
                view = block.data.cast("B")
                fh.seek(direct.offset + rows[0] * row_bytes)
                done = 0
                while done < len(view):
                    got = fh.readinto(view[done:])
                    if not got:
                        raise InputError(f"{path}: truncated TIFF (pixel data ends early)")
                    done += got
        except OSError as exc:
            raise InputError(f"{path}: not a readable TIFF ({exc})") from exc
        if not whole:
            out[...] = block[:, columns[0] : columns[1]]
        return True

    def files(self) -> tuple[Path, ...]:
        """The slice files."""
        return self.paths

    def files_in(self, box: Box) -> tuple[Path, ...]:
        """The slice files of ``box``'s z range."""
        z = self.axes.index("z")
        return self.paths[box.start[z] : box.stop[z]]

    def details(self) -> dict[str, Any]:
        """Files, first and last file, compression and strip or tile shape of the first slice."""
        out: dict[str, Any] = {
            "files": len(self.paths),
            "first_file": str(self.paths[0]),
            "last_file": str(self.paths[-1]),
            "ignored_files": self.ignored,
            "compression": self.layout.compression,
        }
        if self.layout.tile_shape is not None:
            out["tile_shape"] = list(self.layout.tile_shape)
        else:
            out["rows_per_strip"] = self.layout.rows_per_strip
        return out


class DirectPixels(NamedTuple):
    """Where an uncompressed slice's pixels start (bytes), and the file's size and
    modification time when that was found: a file changed since is parsed again."""

    offset: int
    size: int
    mtime_ns: int


@functools.lru_cache(maxsize=1)
def _read_pool(pid: int) -> ThreadPoolExecutor:
    """The slice-reading threads of process ``pid`` (a forked child makes its own: the parent's
    threads do not exist there)."""
    return ThreadPoolExecutor(READ_THREADS, thread_name_prefix="datatools-tiff")


def _collect(spec: SourceSpec) -> tuple[str, list[Path], int]:
    """The spec's label, its candidate slice files (unsorted), and how many files were ignored."""
    if not isinstance(spec, str | Path):
        paths = [Path(p) for p in spec]
        if not paths:
            raise InputError("<list>: no slice files given (name at least one .tif file)")
        for path in paths:
            if not path.exists():
                raise InputNotFoundError(f"{path}: no such file or directory")
            if not path.is_file():
                raise InputError(f"{path}: not a file (list 2D TIFF slice files)")
        return spec_text(paths), paths, 0
    label = str(spec)
    path = Path(spec)
    if path.is_file():
        return label, [path], 0
    if path.is_dir():
        names = sorted(entry.name for entry in os.scandir(path) if entry.is_file())
        if not names:
            raise InputError(f"{label}: empty folder (expected 2D .tif/.tiff slices)")
        candidates = [path / name for name in names]
    elif glob.has_magic(label):
        candidates = [Path(p) for p in glob.glob(label) if Path(p).is_file()]
        if not candidates:
            raise InputError(f"{label}: no files match this pattern (check the folder and pattern)")
    else:
        raise InputNotFoundError(f"{label}: no such file or directory")
    slices = [p for p in candidates if _is_slice(p)]
    ignored = len(candidates) - len(slices)
    if not slices:
        raise InputError(f"{label}: no .tif/.tiff files ({ignored} other files ignored)")
    if ignored:
        logger.info("%s: ignored %d hidden or non-.tif/.tiff files", label, ignored)
    return label, slices, ignored


def natural_key(text: str) -> tuple[tuple[tuple[int, str, int], ...], str]:
    """Sort key that orders digit runs by value: ``s2`` < ``s10``, ``s02`` next to ``s2``.

    Each run becomes ``(kind, text, number)`` (text case-folded); ties such as ``s2`` and
    ``s02`` are broken by the exact text, so the order is total and deterministic.
    """
    parts = tuple(
        (1, "", int(run)) if run.isdigit() else (0, run.lower(), 0)
        for run in re.split(r"(\d+)", text)
        if run
    )
    return parts, text


def _last_number(name: str) -> int | None:
    """The last run of digits in ``name`` (``slice_0007`` -> 7), or ``None``."""
    runs = re.findall(r"\d+", name)
    return int(runs[-1]) if runs else None


def _is_slice(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix.lower() in TIFF_SUFFIXES


def _check_gaps(label: str, paths: Sequence[Path]) -> None:
    """Refuse a hole in the slice numbering (the last digit run of each file name).

    Only numbering that strictly increases in natural order is checked; names without digits
    or with repeated numbers (several prefixes) carry no numbering to check.

    Raises:
        InputError: naming the first gap, the files around it, and how many more gaps follow.
    """
    numbers = [_last_number(_stem(p)) for p in paths]
    if len(paths) < 2 or any(n is None for n in numbers):
        return
    values = [n for n in numbers if n is not None]
    if any(b <= a for a, b in itertools.pairwise(values)):
        return
    gaps = [i for i in range(1, len(values)) if values[i] - values[i - 1] > 1]
    if not gaps:
        return
    i = gaps[0]
    low, high = values[i - 1] + 1, values[i] - 1
    missing = str(low) if low == high else f"{low}-{high}"
    more = f"; {len(gaps) - 1} more gaps" if len(gaps) > 1 else ""
    raise InputError(
        f"{label}: slice numbering has a gap: {missing} missing between {paths[i - 1].name} "
        f"and {paths[i].name}{more} (use --allow-gaps to accept)"
    )


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(path.suffix)] if path.suffix.lower() in TIFF_SUFFIXES else name


def _check_headers(
    paths: Sequence[Path],
) -> tuple[PageLayout, tuple[tuple[float, ...], str | None] | None, dict[Path, DirectPixels]]:
    """Read every slice's header; return the first slice's layout, its voxel size, if any, and
    the pixel offset of each slice whose rows can be read straight from the file.

    Raises:
        InputError: a file is unreadable, truncated, empty, multi-page, of an unsupported
            dtype, or differs from the first slice; the message names the file.
    """
    first: PageLayout | None = None
    voxel = None
    pixels: dict[Path, DirectPixels] = {}
    for path in paths:
        name = str(path)
        try:
            with tifffile.TiffFile(path) as tif:
                if len(tif.pages) == 0:
                    raise InputError(f"{name}: TIFF holds no pixel data (no image in the file)")
                if len(tif.pages) > 1:
                    raise InputError(
                        f"{name}: has {len(tif.pages)} pages, a slice must be one 2D image "
                        "(open a multi-page TIFF by its file name, not in a slice folder)"
                    )
                check_page_chain(tif, name)
                layout = check_page(tif.pages.first, name)
                if first is None:
                    check_dtype(layout.dtype, name)
                    first = layout
                    voxel = imagej_voxel_size(tif, "zyx")
                else:
                    _check_same(name, layout, first, str(paths[0]))
                direct = _direct_pixels(tif, layout)
                if direct is not None:
                    pixels[path] = direct
        except DatatoolsError:
            raise
        except TIFF_ERRORS as exc:
            raise InputError(f"{name}: not a readable TIFF ({exc})") from exc
    assert first is not None  # _collect never returns an empty list
    return first, voxel, pixels


def _direct_pixels(tif: tifffile.TiffFile, layout: PageLayout) -> DirectPixels | None:
    """Where the first page's pixels start, with the file's size and modification time, when
    its rows can be read straight from the file (uncompressed and contiguous, one sample,
    ``layout.dtype`` in the file's byte order)."""
    page = tif.pages.first
    raw = np.dtype(page.dtype).newbyteorder(tif.byteorder)
    if page.is_final and layout.samples == 1 and raw == layout.dtype:
        stat = os.fstat(tif.filehandle.fileno())
        return DirectPixels(int(page.dataoffsets[0]), stat.st_size, stat.st_mtime_ns)
    return None


def _check_same(name: str, layout: PageLayout, first: PageLayout, first_name: str) -> None:
    """Refuse a slice whose shape, dtype or samples per pixel differ from the first slice.

    Raises:
        InputError: naming the file, its value and the first slice's value.
    """
    if layout.shape != first.shape:
        got = " x ".join(map(str, layout.shape))
        want = " x ".join(map(str, first.shape))
        raise InputError(
            f"{name}: slice shape {got} differs from {want} of {first_name} "
            "(all slices must have the same shape)"
        )
    if layout.dtype != first.dtype:
        raise InputError(
            f"{name}: dtype {layout.dtype} differs from {first.dtype} of {first_name} "
            "(all slices must have the same dtype)"
        )
    if layout.samples != first.samples:
        raise InputError(
            f"{name}: {layout.samples} samples per pixel differs from {first.samples} of "
            f"{first_name} (all slices must have the same samples per pixel)"
        )
