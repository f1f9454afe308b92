"""NRRD voxels read by datatools: a box costs one band of rows per slice, not the whole image.

ITK's NRRD reader loads the whole image for every region it is asked for (memory and time of the
whole image per read). The header says where the voxels lie, so for the two common encodings
datatools reads a box itself:

- ``raw``: :class:`RawNrrd` reads each slice's rows with one ``pread``;
- ``gzip``: :class:`GzipNrrd` decompresses the stream from the nearest checkpoint before the box
  (a copy of the decompressor's state saved every :data:`CHECKPOINT_BYTES` of voxels as the
  stream is first read, at most :data:`MAX_CHECKPOINTS` of them, about 40 KiB each). A read
  also keeps the state where its band of rows ends in each plane (the last
  :data:`MAX_BAND_STATES` of them), which is where the next band starts: reading in order by
  bands of rows (what ``convert`` does when a unit holds part of each plane) starts every plane
  of a band where the previous band stopped, so only the first band of a slab passes through
  whole planes: the volume is decompressed about twice, not once per band (units of whole
  planes, as for 512 x 512 CT slices, decompress it once).

Only plain layouts take these paths: one data file (attached, or a detached ``.nhdr`` naming one
file), no ``line skip``, no ``byte skip`` for gzip (any for raw), and ``sizes`` that agree with
what ITK reported. Anything else (bzip2, data split over several files) returns ``None`` from
:func:`nrrd_data` and stays with ITK.
"""

from __future__ import annotations

import bisect
import math
import os
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

HEADER_LIMIT = 1 << 20
"""Bytes of header read at most (real headers are a few hundred bytes)."""
CHECKPOINT_BYTES = 16 * 2**20
"""Decompressed bytes between two saved decompressor states of a gzip NRRD (at least)."""
MAX_CHECKPOINTS = 1024
"""Saved states per file at most (the spacing grows with the volume beyond 16 GiB)."""
MAX_BAND_STATES = 256
"""Decompressor states kept where a read's band of rows ended in a plane (the latest ones,
about 40 KiB each; a band of units needs those its predecessor left, one per plane)."""
_GZIP_WBITS = 47
"""zlib window bits: 32 (detect a gzip or zlib header) + 15 (the largest window)."""
_STEP = 2**20
_INPUT_BLOCK = 2**18


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
        box = _Box(self, start, stop)
        direct = box.x0 == 0 and box.x1 == box.cols and self.dtype.isnative
        band = memoryview(bytearray(0 if direct else box.band_bytes))
        fd = os.open(self.data_file, os.O_RDONLY)
        try:
            for k, z in enumerate(box.planes):
                offset = self.offset + z * box.plane_bytes + box.y0 * box.row_bytes
                view = memoryview(box.out[k]).cast("B") if direct else band
                if not _read_exactly(fd, view, offset):
                    raise OSError(f"{self.data_file}: data ends early")
                if not direct:
                    box.put(k, band)
        finally:
            os.close(fd)
        return box.result()


def _read_exactly(fd: int, view: memoryview, offset: int) -> bool:
    """Fill ``view`` from ``offset`` (a read returns at most about 2 GiB, fewer bytes on some
    file systems); ``False`` when the file ends first."""
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            return False
        done += got
    return True


@dataclass(frozen=True)
class GzipNrrd:
    """Where the voxels of a gzip NRRD file lie, and the decompressor states saved so far.

    Attributes: as :class:`RawNrrd`; ``offset`` is where the gzip stream starts.
    """

    data_file: Path
    offset: int
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    spatial: int
    _marks: list[int] = field(default_factory=list, compare=False, repr=False)
    _states: dict[int, tuple[int, Any]] = field(default_factory=dict, compare=False, repr=False)
    _bands: OrderedDict[int, tuple[int, Any]] = field(
        default_factory=OrderedDict, compare=False, repr=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its saved states (decompressors do not pickle); the copy saves its
        own."""
        return {k: getattr(self, k) for k in ("data_file", "offset", "dtype", "shape", "spatial")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "_marks", [])
        object.__setattr__(self, "_states", {})
        object.__setattr__(self, "_bands", OrderedDict())
        object.__setattr__(self, "_lock", threading.Lock())

    @property
    def spacing(self) -> int:
        """Decompressed bytes between two saved states."""
        total = math.prod(self.shape) * self.dtype.itemsize
        return max(CHECKPOINT_BYTES, -(-total // MAX_CHECKPOINTS))

    def read(self, start: tuple[int, ...], stop: tuple[int, ...]) -> np.ndarray[Any, Any]:
        """Voxels ``[start, stop)`` as :meth:`RawNrrd.read`, decompressing from the nearest
        saved state before the box (memory: the box, one band of rows, one 1 MiB step).

        Raises:
            OSError: the data file cannot be read, is not gzip, or ends early.
        """
        box = _Box(self, start, stop)
        first = box.planes[0] * box.plane_bytes + box.y0 * box.row_bytes
        try:
            with _Inflater(self, first) as stream:
                for k in range(len(box.planes)):
                    if k:
                        stream.move_to(first + k * box.plane_bytes)
                    box.put(k, stream.take(box.band_bytes))
                    stream.keep_band_end()
        except zlib.error as exc:
            raise OSError(f"{self.data_file}: not a gzip stream ({exc})") from exc
        return box.result()

    def state_before(self, position: int) -> tuple[int, int, Any]:
        """``(decompressed position, compressed offset, decompressor copy)`` of the latest
        saved state at or before ``position`` (a band end exactly there, else a checkpoint)."""
        with self._lock:
            band = self._bands.get(position)
            if band is not None:
                self._bands.move_to_end(position)
                return position, band[0], band[1].copy()
            if not self._marks:
                self._marks.append(0)
                self._states[0] = (self.offset, zlib.decompressobj(wbits=_GZIP_WBITS))
            mark = self._marks[bisect.bisect_right(self._marks, position) - 1]
            offset, state = self._states[mark]
            return mark, offset, state.copy()

    def save_band_end(self, position: int, offset: int, state: Any) -> None:
        """Keep a copy of the decompressor ``state`` where a band of rows ended (the latest
        :data:`MAX_BAND_STATES`)."""
        with self._lock:
            if position in self._states or position in self._bands:
                return
            self._bands[position] = (offset, state.copy())
            while len(self._bands) > MAX_BAND_STATES:
                self._bands.popitem(last=False)

    def save_state(self, position: int, offset: int, state: Any) -> None:
        """Keep a copy of the decompressor ``state`` at decompressed ``position`` (compressed
        input resumes at ``offset``)."""
        with self._lock:
            if position not in self._states:
                bisect.insort(self._marks, position)
                self._states[position] = (offset, state.copy())


class _Inflater:
    """A read position in a gzip NRRD's decompressed voxels, saving states as it passes them."""

    def __init__(self, data: GzipNrrd, position: int) -> None:
        self.data = data
        self.position, offset, self.state = data.state_before(position)
        self.file = open(data.data_file, "rb")  # noqa: SIM115 (closed by __exit__)
        self.file.seek(offset)
        self.tail = b""
        self.skip(position - self.position)

    def __enter__(self) -> _Inflater:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def _step(self, limit: int) -> bytes:
        """Up to ``limit`` (> 0) decompressed bytes, stopping at the next state boundary."""
        spacing = self.data.spacing
        limit = min(limit, _STEP, spacing - self.position % spacing)
        while True:
            if self.state.eof:  # a gzip member ended: the next one starts
                if not self.tail:
                    self.tail = self.file.read(_INPUT_BLOCK)
                if not self.tail:
                    raise OSError(f"{self.data.data_file}: data ends early")
                self.state = zlib.decompressobj(wbits=_GZIP_WBITS)
            fresh = not self.tail
            if fresh:
                self.tail = self.file.read(_INPUT_BLOCK)
            out: bytes = self.state.decompress(self.tail, limit)
            self.tail = self.state.unused_data if self.state.eof else self.state.unconsumed_tail
            if out:
                break
            if fresh and not self.tail and not self.state.eof:
                raise OSError(f"{self.data.data_file}: data ends early")
        self.position += len(out)
        if self.position % spacing == 0:
            self.data.save_state(self.position, self.file.tell() - len(self.tail), self.state)
        return out

    def move_to(self, position: int) -> None:
        """Go forward to ``position``, from a saved state past the current one if there is."""
        mark, offset, state = self.data.state_before(position)
        if mark > self.position:
            self.position, self.state, self.tail = mark, state, b""
            self.file.seek(offset)
        self.skip(position - self.position)

    def keep_band_end(self) -> None:
        """Save the state here: the next band of rows starts where this one ended."""
        self.data.save_band_end(self.position, self.file.tell() - len(self.tail), self.state)

    def skip(self, n: int) -> None:
        """Pass over ``n`` decompressed bytes."""
        while n > 0:
            n -= len(self._step(n))

    def take(self, n: int) -> bytearray:
        """The next ``n`` decompressed bytes."""
        out = bytearray()
        while len(out) < n:
            out += self._step(n - len(out))
        return out


class _Box:
    """A box of an NRRD's voxels: its planes, rows and columns, and the array it fills."""

    def __init__(
        self, data: RawNrrd | GzipNrrd, start: tuple[int, ...], stop: tuple[int, ...]
    ) -> None:
        self.dtype = data.dtype
        self.spatial = data.spatial
        self.tail = data.shape[data.spatial :]
        rows, self.cols = data.shape[data.spatial - 2 : data.spatial]
        self.row_bytes = self.cols * math.prod(self.tail) * data.dtype.itemsize
        self.plane_bytes = rows * self.row_bytes
        (self.y0, self.x0), (self.y1, self.x1) = start[-2:], stop[-2:]
        self.band_bytes = (self.y1 - self.y0) * self.row_bytes
        self.planes = range(start[0], stop[0]) if data.spatial == 3 else range(1)
        self.out = np.empty(
            (len(self.planes), self.y1 - self.y0, self.x1 - self.x0, *self.tail),
            data.dtype.newbyteorder("="),
        )

    def put(self, k: int, band: bytes | bytearray | memoryview) -> None:
        """Fill plane ``k`` of the box from the band of its whole rows."""
        rows = np.frombuffer(band, self.dtype).reshape(self.y1 - self.y0, self.cols, *self.tail)
        self.out[k] = rows[:, self.x0 : self.x1]

    def result(self) -> np.ndarray[Any, Any]:
        return self.out if self.spatial == 3 else self.out[0]


def nrrd_data(
    path: Path, dtype: str, spatial_shape: tuple[int, ...], components: int
) -> RawNrrd | GzipNrrd | None:
    """The voxel layout of the NRRD file at ``path`` (``.nrrd`` or a detached ``.nhdr``),
    checked against what ITK reported (``dtype``, ``spatial_shape`` in ``(z, y, x)`` order,
    pixel ``components``), or ``None`` when datatools does not read it itself."""
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
            fields[key.replace(" ", "").lower()] = value.strip()  # "byte skip" or "byteskip"
    encoding = fields.get("encoding", "").lower()
    if encoding not in ("raw", "gzip", "gz") or fields.get("lineskip", "0") != "0":
        return None
    try:
        sizes = tuple(int(s) for s in fields["sizes"].split())
        skip = int(fields.get("byteskip", "0"))
    except (KeyError, ValueError):
        return None
    shape = sizes[::-1]
    while len(shape) > len(spatial_shape) + (components > 1) and shape[0] == 1:
        shape = shape[1:]  # a single time point, which ITK drops too
    if shape != spatial_shape + ((components,) if components > 1 else ()):
        return None
    kinds = fields.get("kinds", "").lower().split()
    if components > 1 and kinds and kinds[0] in ("domain", "space", "time"):
        return None  # the components are not the fastest axis (sizes alone cannot tell)
    data_file = _data_file(path, fields.get("datafile"), end)
    if data_file is None or skip < -1 or (encoding != "raw" and skip != 0):
        return None
    order: Literal["<", ">"] = "<" if fields.get("endian", "little").lower() == "little" else ">"
    layout = np.dtype(dtype).newbyteorder(order)
    nbytes = math.prod(shape) * layout.itemsize
    try:
        file_size = data_file.stat().st_size
    except OSError:
        return None
    start = end + 2 if data_file == path else 0
    if encoding != "raw":
        return GzipNrrd(data_file, start, layout, shape, len(spatial_shape))
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
