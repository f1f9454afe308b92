"""Raw NRRD voxels read in place: a box costs one ``pread`` per slice, not the whole image.

ITK's NRRD reader loads the whole image for every region it is asked for (memory and time of the
whole image per read). For ``encoding: raw`` the header says exactly where each voxel lies, so
:class:`RawNrrd` reads a box straight from the file. Only plain layouts take this path: one data
file (attached, or a detached ``.nhdr`` naming one file), ``byte skip`` 0 or -1, no
``line skip``, and ``sizes`` that agree with what ITK reported. Anything else (gzip or bzip2
encodings, data split over several files) returns ``None`` from :func:`raw_nrrd` and stays
with ITK.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

HEADER_LIMIT = 1 << 20
"""Bytes of header read at most (real headers are a few hundred bytes)."""


@dataclass(frozen=True)
class RawNrrd:
    """Where the voxels of a raw NRRD file lie.

    Attributes:
        data_file: the file holding the voxels.
        offset: byte offset of the first voxel.
        dtype: voxel dtype with the file's byte order.
        shape: C-order shape of the data, NRRD ``sizes`` reversed: ``(z, y, x)`` or ``(y, x)``,
            with a trailing component axis for multi-component pixels.
        spatial: number of spatial axes (2 or 3).
    """

    data_file: Path
    offset: int
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    spatial: int

    def read(self, start: tuple[int, ...], stop: tuple[int, ...]) -> np.ndarray[Any, Any]:
        """Voxels ``[start, stop)`` over the spatial axes ``(z, y, x)`` or ``(y, x)``, all
        components, as a new native-endian array (component axis last, as stored).

        Reads one band of whole rows per slice, straight into the result when the box spans
        whole rows of a native-endian file, else cropped from a temporary band.

        Raises:
            OSError: the data file cannot be read or ends early.
        """
        tail = self.shape[self.spatial :]
        rows, cols = self.shape[self.spatial - 2 : self.spatial]
        row_bytes = cols * math.prod(tail) * self.dtype.itemsize
        (y0, x0), (y1, x1) = start[-2:], stop[-2:]
        planes = range(start[0], stop[0]) if self.spatial == 3 else range(1)
        out = np.empty((len(planes), y1 - y0, x1 - x0, *tail), self.dtype.newbyteorder("="))
        direct = x0 == 0 and x1 == cols and self.dtype.isnative
        fd = os.open(self.data_file, os.O_RDONLY)
        try:
            for k, z in enumerate(planes):
                offset = self.offset + (z * rows + y0) * row_bytes
                size = (y1 - y0) * row_bytes
                if direct:
                    got = os.preadv(fd, [out[k]], offset)
                else:
                    data = os.pread(fd, size, offset)
                    got = len(data)
                    if got == size:
                        band = np.frombuffer(data, self.dtype).reshape(y1 - y0, cols, *tail)
                        out[k] = band[:, x0:x1]
                if got != size:
                    raise OSError(f"{self.data_file}: data ends early")
        finally:
            os.close(fd)
        return out if self.spatial == 3 else out[0]


def raw_nrrd(
    path: Path, dtype: str, spatial_shape: tuple[int, ...], components: int
) -> RawNrrd | None:
    """The raw layout of the NRRD file at ``path`` (``.nrrd`` or a detached ``.nhdr``), checked
    against what ITK reported (``dtype``, ``spatial_shape`` in ``(z, y, x)`` order, pixel
    ``components``), or ``None`` when its voxels are not one plain raw block."""
    try:
        with open(path, "rb") as file:
            head = file.read(HEADER_LIMIT)
    except OSError:
        return None
    if not head.startswith(b"NRRD000"):
        return None
    end = head.find(b"\n\n")
    fields: dict[str, str] = {}
    for line in head[: len(head) if end < 0 else end].decode("latin-1").splitlines()[1:]:
        key, sep, value = line.partition(":")
        if sep and not line.startswith("#") and not value.startswith("="):
            fields[key.strip().lower()] = value.strip()
    if fields.get("encoding", "").lower() != "raw" or fields.get("line skip", "0") != "0":
        return None
    try:
        sizes = tuple(int(s) for s in fields["sizes"].split())
        skip = int(fields.get("byte skip", "0"))
    except (KeyError, ValueError):
        return None
    shape = sizes[::-1]
    while len(shape) > len(spatial_shape) + (components > 1) and shape[0] == 1:
        shape = shape[1:]  # a single time point, which ITK drops too
    if shape != spatial_shape + ((components,) if components > 1 else ()):
        return None
    data_file = _data_file(path, fields.get("data file", fields.get("datafile")), end)
    if data_file is None or skip < -1:
        return None
    order: Literal["<", ">"] = "<" if fields.get("endian", "little").lower() == "little" else ">"
    layout = np.dtype(dtype).newbyteorder(order)
    nbytes = math.prod(shape) * layout.itemsize
    try:
        file_size = data_file.stat().st_size
    except OSError:
        return None
    start = end + 2 if data_file == path else 0
    offset = file_size - nbytes if skip == -1 else start + skip
    if offset < start or offset + nbytes > file_size:
        return None
    return RawNrrd(data_file, offset, layout, shape, len(spatial_shape))


def _data_file(path: Path, name: str | None, header_end: int) -> Path | None:
    """The file holding the voxels: ``path`` itself (attached data after the header's blank
    line) or the single file a detached header names; ``None`` for lists and patterns."""
    if name is None:
        return path if header_end >= 0 else None
    if name == "LIST" or len(name.split()) > 1:
        return None
    found = Path(name)
    return found if found.is_absolute() else path.parent / found
