"""Rows of arrays along axis 0, read lazily: stored arrays, views, concatenations, a chunk cache.

A :class:`RowSource` is an array of ``n`` rows of ``item_shape`` that reads any set of rows with
:meth:`RowSource.take` and says which rows are decoded together (:meth:`RowSource.chunk_ids`):
rows with the same id lie in one stored chunk, so reading them together decodes it once.
Leaves wrap what is stored (a Zarr array, an HDF5 dataset, a numpy array); :class:`LazyView`
and :class:`ConcatSources` combine sources without copying a voxel. Every source also indexes
like a numpy array (``source[i]``, ``source[a:b]``, ``source[[3, 1]]``, ``np.asarray(source)``).

Decoded chunks are kept in a :class:`ChunkCache` that the caller owns (one per dataset and
array, so per DataLoader worker): reading rows in chunk order decodes each chunk once.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

import h5py
import numpy as np

from datatools.errors import InputError
from datatools.sinks.chunk_files import chunk_reader

Array: TypeAlias = np.ndarray[Any, Any]
Index: TypeAlias = int | np.integer[Any] | slice | Sequence[int] | Array

BLOCK_BYTES = 2**20
"""Rows read together from an unchunked stored array (contiguous HDF5, other array-likes)."""


class ChunkCache:
    """Least-recently-used decoded chunks, keyed by ``(leaf id, chunk index)``.

    Holds at most ``capacity`` chunks (0: none; every read decodes). Memory: ``capacity``
    chunks of the arrays it serves. Counts ``hits`` and ``misses`` (chunks decoded).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"capacity {capacity}: must be >= 0")
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[tuple[int, int], Array] = OrderedDict()

    def get(self, key: tuple[int, int]) -> Array | None:
        """The cached chunk, or ``None`` (counted as a miss)."""
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return item

    def put(self, key: tuple[int, int], chunk: Array) -> None:
        """Keep ``chunk``, evicting the least recently used beyond ``capacity``."""
        if self.capacity == 0:
            return
        self._items[key] = chunk
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def clear(self) -> None:
        """Drop every chunk and reset the counters."""
        self._items.clear()
        self.hits = self.misses = 0


class RowSource(ABC):
    """``n`` rows of ``item_shape`` along axis 0, read on demand.

    Attributes:
        shape: ``(n, *item_shape)``.
        dtype: element dtype.
    """

    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    @abstractmethod
    def take(self, rows: Array, cache: ChunkCache | None = None) -> Array:
        """Rows ``rows`` (1-D int64, each in ``[0, n)``, any order, repeats allowed) as a new
        ``(len(rows), *item_shape)`` array; chunks come from and go to ``cache``.

        Raises:
            InputError: a stored chunk cannot be read (the message names the array).
        """

    @abstractmethod
    def chunk_ids(self) -> Array:
        """``(n,)`` int64: rows with equal ids are stored (and decoded) together."""

    @property
    def item_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Index) -> Array:
        """Rows by an int (one row), a slice, a sequence of ints or an int or bool array."""
        rows, single = normalize_rows(index, len(self))
        out = self.take(rows)
        return out[0] if single else out

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> Array:
        """Every row, read (memory: the whole array)."""
        out = self.take(np.arange(len(self), dtype=np.int64))
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.shape} {self.dtype}>"


def normalize_rows(index: Index, n: int) -> tuple[Array, bool]:
    """Row numbers ``(m,)`` int64 in ``[0, n)`` for ``index``, and whether it was one int.

    Raises:
        IndexError: a row outside ``[-n, n)``, a bool mask of another length, or an index of
            another kind.
    """
    if isinstance(index, int | np.integer) and not isinstance(index, bool | np.bool_):
        rows = np.asarray([int(index)], dtype=np.int64)
        single = True
    elif isinstance(index, slice):
        return np.arange(*index.indices(n), dtype=np.int64), False
    else:
        arr = np.asarray(index)
        if arr.dtype == bool:
            if arr.shape != (n,):
                raise IndexError(f"bool index of shape {arr.shape} for {n} rows")
            return np.flatnonzero(arr).astype(np.int64), False
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise IndexError(f"index {index!r}: use an int, a slice or a 1-D array of row numbers")
        rows = arr.astype(np.int64)
        single = False
    bad = (rows < -n) | (rows >= n)
    if bad.any():
        raise IndexError(f"row {int(rows[bad][0])} is out of range for {n} rows")
    return np.where(rows < 0, rows + n, rows), single


class NumpyRows(RowSource):
    """An in-memory array: rows are copied out directly, each row its own chunk."""

    def __init__(self, array: Array) -> None:
        self.array = np.asarray(array)
        if self.array.ndim == 0:
            raise InputError("<array>: a 0-d array has no rows (give an array with axis 0)")
        self.shape = self.array.shape
        self.dtype = self.array.dtype

    def take(self, rows: Array, cache: ChunkCache | None = None) -> Array:
        return np.take(self.array, rows, axis=0)

    def chunk_ids(self) -> Array:
        return np.arange(len(self), dtype=np.int64)


class StoredRows(RowSource):
    """A stored array (Zarr, HDF5 or any array-like with ``shape``, ``dtype`` and slicing along
    axis 0) read a whole chunk row at a time: ``chunk_rows`` rows, all of every item.

    Args:
        array: the array; a Zarr array pickles, so a dataset holding it can go to workers.
        name: its path, for messages.
    """

    def __init__(self, array: Any, name: str = "<array>") -> None:
        self.name = name
        self._array = array
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype)
        if not self.shape:
            raise InputError(f"{name}: a 0-d array has no rows (give an array with axis 0)")
        chunks = getattr(array, "chunks", None)
        self.chunk_rows = int(chunks[0]) if chunks else self._block_rows()
        # a Zarr chunk row that is one chunk file is decoded straight from the file, without
        # zarr-python's per-chunk overhead (about 1 ms, as long as decoding a 2 MiB zstd chunk)
        whole_rows = chunks is not None and all(
            int(c) >= n for c, n in zip(chunks[1:], self.shape[1:], strict=True)
        )
        self._files = chunk_reader(array) if whole_rows else None

    def _block_rows(self) -> int:
        row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        return max(1, BLOCK_BYTES // max(1, row_bytes))

    def array(self) -> Any:
        """The wrapped array (subclasses may open it lazily)."""
        return self._array

    def read_chunk(self, k: int) -> Array:
        """Rows ``[k * chunk_rows, (k + 1) * chunk_rows)`` (fewer at the end), decoded.

        Raises:
            InputError: the stored data cannot be read.
        """
        a = k * self.chunk_rows
        b = min(a + self.chunk_rows, self.shape[0])
        try:
            if self._files is None:
                return np.asarray(self.array()[a:b])
            block = self._files.read_chunk((k,) + (0,) * (len(self.shape) - 1))
            if block is None:
                return np.full((b - a, *self.shape[1:]), self._files.fill_value, self.dtype)
            return block[(slice(0, b - a), *(slice(0, n) for n in self.shape[1:]))]
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise InputError(f"{self.name}: cannot read rows {a}:{b} ({exc})") from exc

    def take(self, rows: Array, cache: ChunkCache | None = None) -> Array:
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        if len(rows) == 0:
            return out
        chunk = rows // self.chunk_rows
        order = np.argsort(chunk, kind="stable")
        ordered = chunk[order]
        cuts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
        missing = []
        for part in np.split(order, cuts):  # cached chunks first, so they are not evicted
            k = int(chunk[part[0]])
            block = None if cache is None else cache.get((id(self), k))
            if block is None:
                missing.append((k, part))
            else:
                self._gather(out, part, block, rows[part] - k * self.chunk_rows)
        for k, part in missing:
            block = self.read_chunk(k)
            if cache is not None:
                cache.put((id(self), k), block)
            self._gather(out, part, block, rows[part] - k * self.chunk_rows)
        return out

    @staticmethod
    def _gather(out: Array, positions: Array, block: Array, local: Array) -> None:
        """``out[positions] = block[local]``, in one copy when ``positions`` is a run."""
        first, last = int(positions[0]), int(positions[-1])
        if last - first + 1 == len(positions):
            np.take(block, local, axis=0, out=out[first : last + 1], mode="clip")
        else:
            out[positions] = block[local]

    def chunk_ids(self) -> Array:
        return np.arange(self.shape[0], dtype=np.int64) // self.chunk_rows


class Hdf5Rows(StoredRows):
    """A dataset of an HDF5 file, opened on first read in each process (h5py handles neither
    pickle nor fork), so a dataset holding it can go to DataLoader workers."""

    def __init__(self, path: str | Path, dataset: str) -> None:
        self.path = Path(path)
        self.dataset = dataset
        self._file: Any = None
        self._pid = -1
        name = f"{self.path}:/{dataset.lstrip('/')}"
        try:
            with h5py.File(self.path, "r") as file:
                node = file[dataset]
                meta = _Meta(node.shape, node.dtype, node.chunks)
        except (OSError, KeyError) as exc:
            raise InputError(f"{name}: cannot open ({exc})") from exc
        super().__init__(meta, name)

    def array(self) -> Any:
        if self._file is None or self._pid != os.getpid():
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as exc:
                raise InputError(f"{self.name}: cannot open ({exc})") from exc
            self._pid = os.getpid()
        return self._file[self.dataset]

    def close(self) -> None:
        """Close the file if this process opened it."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_file=None, _pid=-1)
        return state


class _Meta:
    """Shape, dtype and chunks of an array, without the array."""

    def __init__(self, shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...] | None) -> None:
        self.shape, self.dtype, self.chunks = shape, dtype, chunks


def as_rows(array: Any, name: str = "<array>") -> RowSource:
    """``array`` as a :class:`RowSource`: sources as they are, numpy arrays in memory, anything
    else with ``shape``, ``dtype`` and slicing (Zarr arrays) read by chunk row; an h5py dataset
    becomes an :class:`Hdf5Rows` (reopened by path in each process).

    Raises:
        InputError: ``array`` has no axis 0 or is not array-like.
    """
    if isinstance(array, RowSource):
        return array
    if isinstance(array, np.ndarray):
        return NumpyRows(array)
    if isinstance(array, h5py.Dataset):
        return Hdf5Rows(array.file.filename, array.name)
    if not all(hasattr(array, a) for a in ("shape", "dtype", "__getitem__")):
        raise InputError(
            f"{name}: {type(array).__name__} is not an array (give a Zarr array, an HDF5 "
            "dataset, a numpy array or a LazyView/ConcatSources)"
        )
    return StoredRows(array, name)


class LazyView(RowSource):
    """Rows ``index`` of ``array``, in that order, without reading them: a shuffled, subset or
    repeated view along axis 0 (``view[i]`` is ``array[index[i]]``).

    Args:
        array: a :class:`RowSource` or anything :func:`as_rows` takes.
        index: row numbers of ``array`` (1-D ints, negatives count from the end), a slice, or
            a bool mask over its rows.

    Memory: 8 bytes per row of the view.

    Raises:
        InputError: ``array`` is not array-like.
        IndexError: an index outside ``array``.
    """

    def __init__(self, array: Any, index: Index) -> None:
        self.base = as_rows(array)
        self.index, _ = normalize_rows(index, len(self.base))
        self.shape = (len(self.index), *self.base.item_shape)
        self.dtype = self.base.dtype

    def take(self, rows: Array, cache: ChunkCache | None = None) -> Array:
        return self.base.take(self.index[rows], cache)

    def chunk_ids(self) -> Array:
        return np.asarray(self.base.chunk_ids()[self.index])


class ConcatSources(RowSource):
    """Several arrays as one along axis 0 (``[a, b]``: rows of ``a``, then rows of ``b``).

    Args:
        arrays: :class:`RowSource` objects or anything :func:`as_rows` takes, with equal item
            shapes and dtypes.

    Raises:
        InputError: no arrays, or item shapes or dtypes differ (the message names the first
            one that differs).
    """

    def __init__(self, arrays: Sequence[Any]) -> None:
        self.sources = [as_rows(a, f"<array {i}>") for i, a in enumerate(arrays)]
        if not self.sources:
            raise InputError("ConcatSources: no arrays given (give at least one)")
        first = self.sources[0]
        for i, src in enumerate(self.sources[1:], start=1):
            if src.item_shape != first.item_shape or src.dtype != first.dtype:
                raise InputError(
                    f"ConcatSources: array {i} has rows of {src.item_shape} {src.dtype}, "
                    f"array 0 of {first.item_shape} {first.dtype} (rows must agree)"
                )
        self.offsets = np.cumsum([0, *(len(s) for s in self.sources)], dtype=np.int64)
        self.shape = (int(self.offsets[-1]), *first.item_shape)
        self.dtype = first.dtype

    def take(self, rows: Array, cache: ChunkCache | None = None) -> Array:
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        which = np.searchsorted(self.offsets, rows, side="right") - 1
        for s in np.unique(which):
            sel = which == s
            out[sel] = self.sources[s].take(rows[sel] - self.offsets[s], cache)
        return out

    def chunk_ids(self) -> Array:
        parts, shift = [], 0
        for src in self.sources:
            ids = src.chunk_ids()
            parts.append(ids + shift)
            shift += int(ids.max()) + 1 if len(ids) else 0
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
