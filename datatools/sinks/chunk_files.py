"""Storing whole Zarr chunks as files, encoded by datatools instead of zarr-python.

zarr-python spends about a millisecond of Python per chunk beyond the codec; encoding whole
chunks with the array's own numcodecs codec (:meth:`datatools.sinks.codecs.Codec.encoder`,
byte-identical to what Zarr stores) on a thread pool and writing the files directly removes
that overhead.

By default each file is written under a temporary name and renamed, so a reader or a killed
writer never leaves a torn chunk; :func:`datatools.ledger.clean_stray_files` removes temporaries
a kill left behind. A caller whose chunks are written by one writer and read by no one before
the writer records them done (convert's base units, under the run's lease) passes
``atomic=False``: a chunk file that does not exist yet is then created in place (``O_EXCL``),
which halves the directory operations (on ext4, two threads renaming in one folder spend much
of their time waiting for its lock), while a file that exists is still replaced through a
temporary name. So a file another run may hold (one it wrote, or a torn one a killed run
left) is never truncated where a reader sees it: a run paused mid-unit while another finished
the output, then resumed and killed, leaves the finished files whole. Equal options give equal
chunks, so a chunk the other run left out as all zeros is all zeros here too and is not
created. Only for local directory stores and unsharded arrays; sharded arrays go through
zarr-python, whose local store (3.1.3 and later) writes every file under a temporary name and
renames it.
Reading works the same way: :func:`chunk_reader` lets loaders decode a chunk straight from its
file, for any local unsharded array whose codecs it recognises.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr
from numcodecs.abc import Codec as NumcodecsCodec
from zarr.codecs import BloscCodec, BytesCodec, Endian, GzipCodec, ZstdCodec
from zarr.core.metadata import ArrayV3Metadata
from zarr.storage import LocalStore

from datatools.geometry import Box, tile_box


def write_file(path: Path, payload: Any) -> None:
    """Write a bytes-like ``payload`` to ``path`` in place (created with its parent folders).

    Raises:
        OSError: writing failed (the file may be left torn).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    _write_all(fd, payload)


def write_new_file(path: Path, payload: Any) -> None:
    """Write a bytes-like ``payload`` to ``path``: in place when no such file exists (created
    exclusively, with its parent folders), else through :func:`write_file_atomic`, so an
    existing file is never truncated.

    Raises:
        OSError: writing failed (a file created here may be left torn).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        try:
            fd = os.open(path, flags, 0o666)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, flags, 0o666)
    except FileExistsError:
        write_file_atomic(path, payload)
        return
    _write_all(fd, payload)


def _write_all(fd: int, payload: Any) -> None:
    """Write all of ``payload`` to the open file ``fd`` and close it."""
    try:
        view = memoryview(payload).cast("B")
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def write_file_atomic(path: Path, payload: Any) -> None:
    """Write a bytes-like ``payload`` to ``path`` via a temporary sibling and a rename.

    Raises:
        OSError: writing failed (the temporary file is removed).
    """
    tmp = path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        write_file(tmp, payload)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def spread_order(chunks: Iterable[Box]) -> list[Box]:
    """``chunks`` ordered with the last axis slowest, so that neighbours in the list (written at
    the same moment by different threads) lie in different chunk-key folders: the key
    ``c/z/y/x`` puts every chunk of one ``(z, y)`` row in one folder."""
    return sorted(chunks, key=lambda box: (box.start[-1], box.start))


class ChunkFiles:
    """Writes and reads whole chunks of one existing, unsharded Zarr array (v2 or v3) in a local
    folder.

    Args:
        path: the array's folder.
        encoder: the numcodecs codec equal to the array's compressor, or ``None`` for raw bytes.
        atomic: write each file under a temporary name and rename it; ``False``: create a
            new file in place, replace an existing one through a temporary name (see the
            module docstring for when that is safe).
        array: the array at ``path`` if already open (its metadata is used as it is).
    """

    def __init__(
        self,
        path: Path,
        encoder: NumcodecsCodec | None,
        *,
        atomic: bool = True,
        array: zarr.Array[Any] | None = None,
    ) -> None:
        if array is None:
            array = zarr.open_array(path, mode="r")
        self.path = Path(path)
        self.chunks = tuple(int(c) for c in array.chunks)
        self.dtype = np.dtype(array.dtype).newbyteorder("<")
        self.encoder = encoder
        self.fill_value = array.fill_value
        self._encode_key = array.metadata.encode_chunk_key
        self._buffers = threading.local()
        self._store = write_file_atomic if atomic else write_new_file

    def write(self, chunk: Box, data: np.ndarray[Any, Any]) -> None:
        """Store ``data`` as the chunk whose box (array voxels) is ``chunk``.

        ``chunk`` must start on the chunk grid; an edge chunk may be smaller and is padded with
        zeros (the fill value). An all-zero chunk is not stored (and a stale file is removed),
        as zarr-python does. Each thread copies into one reused chunk buffer, so writing many
        chunks allocates no new memory per chunk.
        """
        coords = tuple(a // c for a, c in zip(chunk.start, self.chunks, strict=True))
        path = self.path / self._encode_key(coords)
        raw = self._buffer()
        if data.shape == self.chunks:
            np.copyto(raw, data, casting="unsafe")
        else:
            raw[...] = 0
            raw[tuple(slice(0, s) for s in data.shape)] = data
        if not raw.any():
            path.unlink(missing_ok=True)
            return
        self._store(path, raw if self.encoder is None else self.encoder.encode(raw))

    def read_chunk(self, coords: tuple[int, ...]) -> np.ndarray[Any, Any] | None:
        """The decoded chunk at chunk-grid ``coords`` (read-only, full chunk shape), or ``None``
        when its file does not exist (the chunk is all fill value).

        Raises:
            OSError: the file cannot be read.
            ValueError: the file does not decode to one chunk.
        """
        try:
            payload = (self.path / self._encode_key(coords)).read_bytes()
        except FileNotFoundError:
            return None
        raw = payload if self.encoder is None else self.encoder.decode(payload)
        return np.frombuffer(raw, dtype=self.dtype).reshape(self.chunks)

    def read(self, box: Box, pool: Executor) -> np.ndarray[Any, Any]:
        """Read ``box`` (array voxels) by decoding the chunk files it meets on ``pool``.

        Missing chunks read as the fill value. Memory: the result plus one decoded chunk per
        pool thread.
        """
        out = np.empty(box.shape, dtype=self.dtype)
        grid = Box(
            tuple(a // c * c for a, c in zip(box.start, self.chunks, strict=True)),
            box.stop,
        )

        def fill(chunk: Box) -> None:
            part = chunk.intersect(box)
            if part is None:
                return
            where: tuple[Any, ...] = (*part.relative_to(box.start).slices(), Ellipsis)
            target = out[where]  # a view, even of a 0-d array
            data = self.read_chunk(
                tuple(a // c for a, c in zip(chunk.start, self.chunks, strict=True))
            )
            if data is None:
                target[...] = self.fill_value
            else:
                target[...] = data[part.relative_to(chunk.start).slices()]

        for _ in pool.map(fill, tile_box(grid, self.chunks)):
            pass
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_buffers"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _buffers=threading.local())

    def _buffer(self) -> np.ndarray[Any, Any]:
        buffer: np.ndarray[Any, Any] | None = getattr(self._buffers, "chunk", None)
        if buffer is None:
            buffer = np.empty(self.chunks, dtype=self.dtype)
            self._buffers.chunk = buffer
        return buffer


def chunk_reader(array: Any) -> ChunkFiles | None:
    """:class:`ChunkFiles` reading ``array``'s chunk files directly (no zarr-python per-chunk
    overhead), or ``None`` unless ``array`` is a Zarr array in a local folder whose chunks
    datatools decodes itself: unsharded and in C order; Zarr v3 with the little-endian bytes
    codec and at most one of zstd, gzip and blosc; Zarr v2 with a little-endian or one-byte
    dtype, no filters and any numcodecs compressor. Little-endian means every field of a
    structured dtype too."""
    if not isinstance(array, zarr.Array) or not isinstance(array.store, LocalStore):
        return None
    meta = array.metadata
    dtype = np.dtype(array.dtype)
    if dtype.newbyteorder("<") != dtype or dtype.hasobject or array.fill_value is None:
        return None  # big-endian, also inside structured fields
    decoder: NumcodecsCodec | None
    if isinstance(meta, ArrayV3Metadata):
        codecs = meta.codecs
        first, rest = codecs[0], codecs[1:]
        if not isinstance(first, BytesCodec) or first.endian == Endian.big or len(rest) > 1:
            return None
        if rest and type(rest[0]) not in _DECODERS:
            return None
        decoder = _DECODERS[type(rest[0])]() if rest else None
    else:
        if meta.filters or meta.order != "C":
            return None
        decoder = meta.compressor
    return ChunkFiles(Path(array.store.root) / array.path, decoder, array=array)


_DECODERS: dict[type, Callable[[], NumcodecsCodec]] = {
    ZstdCodec: numcodecs.Zstd,
    GzipCodec: numcodecs.GZip,
    BloscCodec: numcodecs.Blosc,
}
