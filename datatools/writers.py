"""Buffered array writers: arrays that grow along axis 0 (rows), written as whole chunk rows.

A writer holds one or more arrays that grow in lockstep, e.g. ``patches (n, 64, 64)`` with
``origins (n, 3)``: every call gives all of them the same number of rows. Rows are buffered
until a whole chunk row (``chunk_rows`` rows of every array) is ready; only whole chunk rows are
written, the tail at :meth:`ArrayWriter.close`, so no chunk is ever read back and rewritten.

Targets (same interface):

- Zarr group (v3 default, v2 on request), a folder owned through :mod:`datatools.target`::

      train.zarr/
          zarr.json (v3) | .zgroup + .zattrs (v2)
              attributes {"datatools": {"rows": n, "chunk_rows": c, "complete": bool}}, set
              when a writer opens and closes
          patches/, origins/, ...   arrays (n, *item_shape), chunks (chunk_rows, *item_chunks);
                                    the shapes follow the flushed rows
          .datatools/               the marker group: run record (command "write", layout),
                                    state {"rows": n} rewritten after every flush (growing
                                    writers), complete flag set by a normal close; its ledger
                                    lists the chunk rows :meth:`ArrayWriter.write_rows` wrote

- HDF5 file (``.h5`` / ``.hdf5``): one resizable dataset per array at the root
  (``maxshape=(None, ...)``, chunks ``(chunk_rows, *item_chunks)``), written as
  ``<name>.datatools-partial`` and renamed at a normal close. The root attribute ``datatools``
  is JSON ``{"command", "params", "version", "rows", "complete"}`` (plus ``"done"`` for
  positional fill), rewritten and flushed after every chunk row.

Crash safety: chunk data are written first, then the array shapes, then the row count, so a
killed process (kill -9, out-of-memory kill, job time limit) leaves an output whose recorded
row count covers only fully written rows, and ``append=True`` continues from there. Chunk files
a killed run wrote past the recorded rows are invisible to readers and are overwritten before
the arrays grow over them. The guarantee is against killed processes: chunk data are not
fsynced, so after a power loss the last rows may need rewriting.

Zarr chunks are encoded with the numcodecs codec of :mod:`datatools.codecs` (the bytes Zarr
stores) and written straight to the chunk files, each via a temporary name and a rename; this
avoids zarr-python's per-chunk overhead (``scripts/bench_writers.py`` measures it).
"""

from __future__ import annotations

import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeAlias

import h5py
import numpy as np
import zarr
from numcodecs.abc import Codec as NumcodecsCodec
from numpy.typing import ArrayLike, DTypeLike

from datatools import target as owned
from datatools.codecs import Codec, parse_codec
from datatools.errors import InputError, OptionError, ResumeMismatchError, TargetError, WriteError
from datatools.sources.base import SUPPORTED_KINDS

Array: TypeAlias = np.ndarray[Any, Any]

COMMAND = "write"
DEFAULT_NAME = "data"
HDF5_SUFFIXES = (".h5", ".hdf5")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


@dataclass(frozen=True)
class ArraySpec:
    """One array of a writer, stored as ``(rows, *item_shape)``.

    Attributes:
        item_shape: shape of one row's item in C order, e.g. ``(y, x)`` or ``(c, z, y, x)``;
            ``()`` for one value per row.
        dtype: bool, integer or float dtype.
        item_chunks: chunk shape along the item axes; ``None`` keeps every item whole.
        dims: names of all axes including the row axis, e.g. ``("i", "y", "x")``; stored as
            Zarr v3 ``dimension_names`` or the Zarr v2 ``_ARRAY_DIMENSIONS`` attribute (HDF5
            does not store them).
    """

    item_shape: Sequence[int]
    dtype: DTypeLike
    item_chunks: Sequence[int] | None = None
    dims: Sequence[str] | None = None


SpecLike: TypeAlias = ArraySpec | tuple[Sequence[int], DTypeLike]


@dataclass(frozen=True)
class _Layout:
    """A checked :class:`ArraySpec` with everything a backend needs."""

    name: str
    item_shape: tuple[int, ...]
    dtype: np.dtype[Any]
    item_chunks: tuple[int, ...]
    dims: tuple[str, ...] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_shape": list(self.item_shape),
            "dtype": self.dtype.name,
            "item_chunks": list(self.item_chunks),
            "dims": None if self.dims is None else list(self.dims),
        }


def open_writer(
    target: str | Path,
    arrays: Mapping[str, SpecLike] | SpecLike,
    *,
    chunk_rows: int = 256,
    codec: str | None = None,
    level: int | None = None,
    zarr_format: Literal[2, 3] = 3,
    total_rows: int | None = None,
    append: bool = False,
    overwrite: bool = False,
) -> ArrayWriter:
    """Open a buffered writer on a Zarr group or an HDF5 file (``.h5`` / ``.hdf5``).

    Example::

        with open_writer("train.zarr", {"patches": ((64, 64), "uint8"),
                                        "origins": ((3,), "int64")}, chunk_rows=256) as w:
            w.append(patches=p_batch, origins=o_batch)

    Args:
        target: the Zarr group folder or the HDF5 file to write.
        arrays: name -> :class:`ArraySpec` or ``(item_shape, dtype)``; a single spec writes one
            array named ``"data"`` that :meth:`ArrayWriter.append` takes positionally.
        chunk_rows: rows per chunk along axis 0 (a loader reads that many rows as one chunk).
        codec: ``zstd`` (Zarr default), ``blosc-zstd``, ``blosc-lz4``, ``gzip`` (HDF5 default),
            ``lzf`` (HDF5 only) or ``none``.
        level: compression level, ``None`` for the codec's default.
        zarr_format: 3 (default) or 2; ignored for HDF5.
        total_rows: for positional fill with :meth:`ArrayWriter.write_rows`: the final row
            count, fixed from the start; ``None`` for a writer that grows with ``append``.
        append: continue an existing output of a writer with the same layout (or create it);
            several processes filling one Zarr target by ``write_rows`` all pass ``True``.
        overwrite: replace an existing output of datatools (a foreign one is still refused;
            an unreadable ``<name>.datatools-partial`` HDF5 file counts as ours by its name).

    Raises:
        OptionError: an invalid array spec, chunk size, codec, format or option combination.
        TargetError: the target exists (without ``append`` / ``overwrite``), is not ours, or
            its parent folder is missing.
        ResumeMismatchError: ``append`` to an output with another layout; names the difference.
        WriteError: the output cannot be created.
    """
    path = Path(target)
    if append and overwrite:
        raise OptionError(f"{path}: append=True and overwrite=True exclude each other (pick one)")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise OptionError(f"chunk_rows {chunk_rows}: must be a positive number of rows")
    if total_rows is not None and total_rows < 0:
        raise OptionError(f"total_rows {total_rows}: must be 0 or more")
    if zarr_format not in (2, 3):
        raise OptionError(f"zarr_format {zarr_format}: choose 2 or 3")
    hdf5 = path.suffix.lower() in HDF5_SUFFIXES
    chosen = parse_codec(codec or ("gzip" if hdf5 else "zstd"), level, hdf5=hdf5)
    specs = arrays if isinstance(arrays, Mapping) else {DEFAULT_NAME: arrays}
    if not specs:
        raise OptionError("arrays: give at least one array")
    layouts = {name: _check_spec(name, spec) for name, spec in specs.items()}
    params: dict[str, Any] = {
        "format": "hdf5" if hdf5 else f"zarr{zarr_format}",
        "chunk_rows": chunk_rows,
        "codec": chosen.name,
        "level": chosen.effective_level,
        "total_rows": total_rows,
        "arrays": {name: lay.to_dict() for name, lay in layouts.items()},
    }
    if total_rows is not None:
        params["units_total"] = -(-total_rows // chunk_rows)
    record = owned.RunRecord(COMMAND, params)
    how = _Open(path, record, list(layouts.values()), chunk_rows, total_rows, chosen, append)
    backend = (
        _open_hdf5(how, overwrite=overwrite)
        if hdf5
        else _open_zarr(how, zarr_format, overwrite=overwrite)
    )
    return ArrayWriter(path, layouts, chunk_rows, total_rows, backend)


class ArrayWriter:
    """Appends row batches to arrays that grow in lockstep; made by :func:`open_writer`.

    Peak memory: one chunk row per array (``chunk_rows x item bytes``, the buffer) plus one
    padded and one encoded chunk, besides the caller's batch. ``write_rows`` writes straight
    from the caller's batch.
    """

    def __init__(
        self,
        path: Path,
        layouts: Mapping[str, _Layout],
        chunk_rows: int,
        total_rows: int | None,
        backend: _Backend,
    ) -> None:
        self.path = path
        self.chunk_rows = chunk_rows
        self.total_rows = total_rows
        self._layouts = dict(layouts)
        self._backend = backend
        self._closed = False
        self._buffers: dict[str, Array] = {}
        self._flushed = backend.rows
        self._base = backend.rows - backend.rows % chunk_rows
        self._fill = backend.rows - self._base
        if total_rows is None:
            for name, lay in self._layouts.items():
                self._buffers[name] = np.empty((chunk_rows, *lay.item_shape), lay.dtype)
                if self._fill:
                    self._buffers[name][: self._fill] = backend.read_rows(
                        name, self._base, backend.rows
                    )

    @property
    def names(self) -> tuple[str, ...]:
        """Array names, in the order given."""
        return tuple(self._layouts)

    @property
    def rows(self) -> int:
        """Rows the arrays hold once closed: rows given so far, or ``total_rows``."""
        return self._base + self._fill if self.total_rows is None else self.total_rows

    @property
    def flushed_rows(self) -> int:
        """Rows recorded as written (what a killed run keeps)."""
        if self.total_rows is None:
            return self._flushed
        return sum(min(self.chunk_rows, self.total_rows - k * self.chunk_rows) for k in self.done)

    @property
    def done(self) -> frozenset[int]:
        """Chunk rows recorded by :meth:`write_rows` (by every process filling this target)."""
        return self._backend.done()

    def append(self, batch: ArrayLike | None = None, /, **batches: ArrayLike) -> None:
        """Add rows at the end: ``append(batch)`` for one array, else ``append(name=rows, ...)``.

        Each batch is ``(n, *item_shape)``; every array gets the same ``n`` (any ``n >= 0``).
        Whole chunk rows are written as soon as they are complete.

        Raises:
            OptionError: the writer was opened with ``total_rows`` (use :meth:`write_rows`).
            InputError: arrays missing or unknown, row counts differ, wrong item shape, or a
                dtype that does not cast safely.
            WriteError: the writer is closed, or writing failed.
        """
        self._check_open()
        if self.total_rows is not None:
            raise OptionError(
                f"{self.path}: append needs a growing writer (this one was opened with "
                "total_rows; use write_rows)"
            )
        data, n = self._check_batches("append", batch, batches)
        c, pos = self.chunk_rows, 0
        if self._fill:
            pos = min(c - self._fill, n)
            for name, rows in data.items():
                self._buffers[name][self._fill : self._fill + pos] = rows[:pos]
            self._fill += pos
            if self._fill == c:
                self._write_growing(self._buffers, c)
        whole = (n - pos) // c * c
        if whole:
            self._write_growing(
                {name: rows[pos : pos + whole] for name, rows in data.items()}, whole
            )
            pos += whole
        if pos < n:
            for name, rows in data.items():
                self._buffers[name][: n - pos] = rows[pos:]
            self._fill = n - pos

    def write_rows(
        self, start: int, batch: ArrayLike | None = None, /, **batches: ArrayLike
    ) -> None:
        """Write rows ``[start, start + n)`` of a writer opened with ``total_rows``.

        For producers that know their row ranges and may run in parallel (one process per
        range): ``start`` and ``start + n`` must fall on chunk rows (multiples of
        ``chunk_rows``, or ``total_rows`` for the end), so no two callers share a chunk. The
        chunk rows are recorded in :attr:`done` once written; the output is complete when a
        writer closes after every chunk row is done. Writes straight from the batch.

        Raises:
            OptionError: the writer grows with ``append`` (no ``total_rows``).
            InputError: the range is not made of whole chunk rows or passes ``total_rows``,
                or the batches are inconsistent (as :meth:`append`).
            WriteError: the writer is closed, or writing failed.
        """
        self._check_open()
        if self.total_rows is None:
            raise OptionError(
                f"{self.path}: write_rows needs total_rows (open the writer with total_rows=N)"
            )
        data, n = self._check_batches("write_rows", batch, batches)
        c, stop = self.chunk_rows, start + n
        if (
            start < 0
            or start % c
            or stop > self.total_rows
            or (stop % c and stop != self.total_rows)
        ):
            raise InputError(
                f"{self.path}: write_rows of rows [{start}, {stop}) does not cover whole chunk "
                f"rows (start and end must be multiples of {c}, the end may be total_rows "
                f"{self.total_rows})"
            )
        if n:
            self._backend.write(start // c, data)
            self._backend.record_done(range(start // c, -(-stop // c)))

    def close(self) -> None:
        """Write the buffered tail, trim the arrays to :attr:`rows` and mark the output complete.

        A writer opened with ``total_rows`` marks it complete only when every chunk row is done
        (the last of several parallel writers to close does). Closing twice does nothing.

        Raises:
            WriteError: writing the tail or the final metadata failed (the output stays
                incomplete with its flushed rows).
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self.total_rows is None:
                if self._base + self._fill > self._flushed:
                    tail = {name: buf[: self._fill] for name, buf in self._buffers.items()}
                    self._write_growing(tail, self._fill)
                complete = True
            else:
                complete = self._backend.done() >= frozenset(
                    range(-(-self.total_rows // self.chunk_rows))
                )
        except BaseException:
            self._backend.release()
            raise
        finally:
            self._buffers = {}
        if complete:
            self._backend.finish(self.rows)
        else:
            self._backend.release()

    def __enter__(self) -> ArrayWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        elif not self._closed:
            self._closed = True
            self._buffers = {}
            self._base, self._fill = self._flushed, 0
            self._backend.release()

    def _check_open(self) -> None:
        if self._closed:
            raise WriteError(
                f"{self.path}: the writer is closed (open it again with append=True to add rows)"
            )

    def _write_growing(self, data: Mapping[str, Array], n: int) -> None:
        """Write ``n`` rows from the chunk boundary ``_base`` and record them."""
        self._backend.write(self._base // self.chunk_rows, data)
        self._backend.record_rows(self._base + n)
        self._flushed = self._base + n
        if n % self.chunk_rows == 0:
            self._base, self._fill = self._base + n, 0

    def _check_batches(
        self, op: str, batch: ArrayLike | None, batches: Mapping[str, ArrayLike]
    ) -> tuple[dict[str, Array], int]:
        if batch is not None:
            if batches or len(self._layouts) != 1:
                raise InputError(
                    f"{self.path}: {op} got an unnamed batch but the writer holds arrays "
                    f"{', '.join(self._layouts)} (pass them by name, e.g. {op}(name=rows))"
                )
            batches = {next(iter(self._layouts)): batch}
        missing = [name for name in self._layouts if name not in batches]
        unknown = [name for name in batches if name not in self._layouts]
        if unknown:
            raise InputError(
                f"{self.path}: {op} got unknown array {', '.join(unknown)} (the writer holds "
                f"{', '.join(self._layouts)})"
            )
        if missing:
            raise InputError(
                f"{self.path}: {op} got no rows for {', '.join(missing)} (arrays grow in "
                f"lockstep; give rows to {', '.join(self._layouts)})"
            )
        data: dict[str, Array] = {}
        for name, lay in self._layouts.items():
            rows = np.asarray(batches[name])
            if rows.ndim != 1 + len(lay.item_shape) or rows.shape[1:] != lay.item_shape:
                raise InputError(
                    f"{self.path}: {op} got {name} rows of shape {rows.shape}, expected "
                    f"(n, {', '.join(map(str, lay.item_shape))}) (a single row is rows[None])"
                )
            if rows.dtype != lay.dtype and not np.can_cast(rows.dtype, lay.dtype, "safe"):
                raise InputError(
                    f"{self.path}: {op} got {name} rows of dtype {rows.dtype}, the array holds "
                    f"{lay.dtype} (cast with .astype('{lay.dtype}') if the values fit)"
                )
            data[name] = rows
        counts = {name: len(rows) for name, rows in data.items()}
        if len(set(counts.values())) > 1:
            shown = ", ".join(f"{count} rows for {name}" for name, count in counts.items())
            raise InputError(
                f"{self.path}: {op} got {shown} (arrays grow in lockstep; give every array the "
                "same number of rows)"
            )
        return data, next(iter(counts.values()))


def _check_spec(name: str, spec: SpecLike) -> _Layout:
    """Normalise one array spec.

    Raises:
        OptionError: a bad name, shape, chunk shape, dtype or dims.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise OptionError(
            f"arrays: name {name!r} is not usable (letters, digits, '_', '-' and '.', not "
            "starting with '.' or '-')"
        )
    if not isinstance(spec, ArraySpec):
        if not isinstance(spec, tuple) or len(spec) != 2:
            raise OptionError(f"arrays: {name} must be (item_shape, dtype) or an ArraySpec")
        spec = ArraySpec(spec[0], spec[1])
    shape = _positive_ints(spec.item_shape, f"{name} item_shape")
    try:
        dtype = np.dtype(spec.dtype)
    except TypeError as exc:
        raise OptionError(f"arrays: {name} dtype {spec.dtype!r} is not a dtype") from exc
    if dtype.kind not in SUPPORTED_KINDS or dtype.fields is not None:
        raise OptionError(f"arrays: {name} dtype {dtype} is not supported (bool, int or float)")
    chunks = shape
    if spec.item_chunks is not None:
        chunks = _positive_ints(spec.item_chunks, f"{name} item_chunks")
        if len(chunks) != len(shape):
            raise OptionError(
                f"arrays: {name} item_chunks {chunks} must have one size per item axis {shape}"
            )
        chunks = tuple(min(c, s) for c, s in zip(chunks, shape, strict=True))
    dims = None
    if spec.dims is not None:
        dims = tuple(str(d) for d in spec.dims)
        if len(dims) != 1 + len(shape):
            raise OptionError(
                f"arrays: {name} dims {dims} must name the row axis and each item axis "
                f"({1 + len(shape)} names)"
            )
    return _Layout(name, shape, dtype.newbyteorder("="), chunks, dims)


def _positive_ints(values: Sequence[int], what: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"arrays: {what} {values!r} must be a sequence of sizes") from exc
    if any(v < 1 for v in out):
        raise OptionError(f"arrays: {what} {out} must have positive sizes")
    return out


def _layout_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """Layout settings that differ between an existing output and a new writer, as text."""
    new = json.loads(json.dumps(new))
    parts = [
        f"{key} was {json.dumps(old.get(key))}, now {json.dumps(new.get(key))}"
        for key in ("format", "chunk_rows", "codec", "level", "total_rows")
        if old.get(key) != new.get(key)
    ]
    old_arrays, new_arrays = old.get("arrays", {}), new["arrays"]
    if sorted(old_arrays) != sorted(new_arrays):
        parts.append(
            f"arrays were {json.dumps(sorted(old_arrays))}, now {json.dumps(sorted(new_arrays))}"
        )
    else:
        for name, spec in new_arrays.items():
            parts.extend(
                f"{name} {key} was {json.dumps(old_arrays[name].get(key))}, now {json.dumps(value)}"
                for key, value in spec.items()
                if old_arrays[name].get(key) != value
            )
    return "; ".join(parts)


@dataclass(frozen=True)
class _Open:
    """What a backend opener needs: the target, its record, and the writer's layout."""

    path: Path
    record: owned.RunRecord
    layouts: list[_Layout]
    chunk_rows: int
    total_rows: int | None
    codec: Codec
    append: bool

    def check_same(self, existing: owned.RunRecord) -> None:
        """Refuse to append to an output of another command or another layout.

        Raises:
            TargetError: another datatools command made it.
            ResumeMismatchError: the layout differs; the message names each difference.
        """
        if existing.command != COMMAND:
            raise TargetError(
                f"{self.path}: was made by datatools {existing.command}, not by a writer "
                "(choose another target)"
            )
        differences = _layout_diff(existing.params, self.record.params)
        if differences:
            raise ResumeMismatchError(
                f"{self.path}: cannot append, {differences} (append with the same arrays, "
                "chunk_rows and codec, or overwrite=True to replace it)"
            )

    def exists_error(self, what: str = "exists") -> TargetError:
        return TargetError(
            f"{self.path}: {what} (use append=True to continue it or overwrite=True to replace it)"
        )


class _Backend(ABC):
    """Storage of a writer: writes whole chunk rows and records progress durably."""

    rows: int
    """Rows recorded so far by :meth:`record_rows` (growing writers; 0 for positional fill)."""

    @abstractmethod
    def read_rows(self, name: str, start: int, stop: int) -> Array:
        """Rows ``[start, stop)`` of array ``name`` (the tail chunk row when appending)."""

    @abstractmethod
    def write(self, chunk_row: int, data: Mapping[str, Array]) -> None:
        """Write rows from ``chunk_row * chunk_rows`` on: whole chunk rows, or a final tail."""

    @abstractmethod
    def record_rows(self, rows: int) -> None:
        """Set the arrays' length and record ``rows`` durably (after :meth:`write`)."""

    @abstractmethod
    def record_done(self, chunk_rows: range) -> None:
        """Record chunk rows written by positional fill (after :meth:`write`)."""

    @abstractmethod
    def done(self) -> frozenset[int]:
        """Chunk rows recorded by :meth:`record_done`."""

    @abstractmethod
    def finish(self, rows: int) -> None:
        """Mark the output complete with ``rows`` rows and release it."""

    @abstractmethod
    def release(self) -> None:
        """Release the output without marking it complete (it keeps what was recorded)."""


def _padded(block: Array, shape: tuple[int, ...]) -> Array:
    """``block`` grown to ``shape`` with zeros (the fill value) at the high ends."""
    if block.shape == shape:
        return block
    out = np.zeros(shape, block.dtype)
    out[tuple(slice(0, n) for n in block.shape)] = block
    return out


def _replace_file(path: Path, payload: Any) -> None:
    """Write bytes (or a buffer) to ``path`` via a temporary sibling and a rename.

    Raises:
        OSError: writing failed; the temporary file is removed.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class _ZarrArray:
    """One Zarr array as the writer writes it."""

    layout: _Layout
    folder: Path
    meta_file: Path
    meta: dict[str, Any]
    chunk_key: Callable[[tuple[int, ...]], str]
    blocks: list[tuple[tuple[int, ...], tuple[slice, ...]]]
    encoder: NumcodecsCodec | None


def _open_zarr(how: _Open, zarr_format: Literal[2, 3], *, overwrite: bool) -> _ZarrBackend:
    path = how.path
    if not overwrite and not path.is_symlink() and owned.is_ours(path):
        if not how.append:
            raise how.exists_error()
        how.check_same(owned.read_record(path))

    def populate(folder: Path) -> None:
        _create_zarr(folder, how, zarr_format)

    outcome = owned.claim(path, how.record, overwrite=overwrite, populate=populate)
    if outcome == "resumed" and not how.append:
        raise how.exists_error()
    return _ZarrBackend(how, zarr_format, resumed=outcome == "resumed")


def _create_zarr(folder: Path, how: _Open, zarr_format: Literal[2, 3]) -> None:
    """The Zarr group and its empty arrays (``total_rows`` rows, or 0 for growing writers)."""
    rows = how.total_rows or 0
    attributes = {"datatools": {"rows": rows, "chunk_rows": how.chunk_rows, "complete": False}}
    group = zarr.create_group(str(folder), zarr_format=zarr_format, attributes=attributes)
    for lay in how.layouts:
        options: dict[str, Any] = {}
        if zarr_format == 3:
            options["compressors"] = how.codec.zarr_compressors(lay.dtype)
            options["dimension_names"] = lay.dims
        else:
            options["compressors"] = how.codec.encoder(lay.dtype)
            options["chunk_key_encoding"] = {"name": "v2", "separator": "."}
            if lay.dims is not None:
                options["attributes"] = {"_ARRAY_DIMENSIONS": list(lay.dims)}
        group.create_array(
            lay.name,
            shape=(rows, *lay.item_shape),
            chunks=(how.chunk_rows, *lay.item_chunks),
            dtype=lay.dtype,
            fill_value=0,
            filters=None,
            **options,
        )


class _ZarrBackend(_Backend):
    """Zarr v2/v3 group; chunks encoded here and written as files (see the module docstring)."""

    def __init__(self, how: _Open, zarr_format: Literal[2, 3], *, resumed: bool) -> None:
        self.path = how.path
        self.chunk_rows = how.chunk_rows
        self.growing = how.total_rows is None
        self._folders: set[Path] = set()
        group_name = "zarr.json" if zarr_format == 3 else ".zattrs"
        meta_name = "zarr.json" if zarr_format == 3 else ".zarray"
        self._group_file = self.path / group_name
        self._group_doc = self._load(self._group_file)
        self._attrs = self._group_doc["attributes"] if zarr_format == 3 else self._group_doc
        self.rows = int(owned.read_state(self.path).get("rows", 0)) if self.growing else 0
        metas = {lay.name: self._load(self.path / lay.name / meta_name) for lay in how.layouts}
        if self.growing and not resumed:
            self.record_state(0)
        if resumed:
            owned.clear_complete(self.path)
            self._attrs["datatools"].update(rows=how.total_rows or self.rows, complete=False)
            self._save(self._group_file, self._group_doc)
            if self.growing:
                for lay in how.layouts:
                    metas[lay.name]["shape"][0] = self.rows
                    self._save(self.path / lay.name / meta_name, metas[lay.name])
        self._zarr = {
            lay.name: zarr.open_array(str(self.path / lay.name), mode="r", zarr_format=zarr_format)
            for lay in how.layouts
        }
        self._arrays = {
            lay.name: _ZarrArray(
                layout=lay,
                folder=self.path / lay.name,
                meta_file=self.path / lay.name / meta_name,
                meta=metas[lay.name],
                chunk_key=self._zarr[lay.name].metadata.encode_chunk_key,
                blocks=_blocks(lay),
                encoder=how.codec.encoder(lay.dtype),
            )
            for lay in how.layouts
        }

    def read_rows(self, name: str, start: int, stop: int) -> Array:
        return np.asarray(self._zarr[name][start:stop])

    def write(self, chunk_row: int, data: Mapping[str, Array]) -> None:
        c = self.chunk_rows
        # Chunks that may hold recorded rows (or that parallel writers' readers may see) are
        # replaced atomically; fresh chunks past the recorded rows are written in place.
        atomic = not self.growing or chunk_row * c < self.rows
        for name, rows in data.items():
            arr = self._arrays[name]
            lay = arr.layout
            chunk_shape = (c, *lay.item_chunks)
            for first in range(0, len(rows), c):
                k = chunk_row + first // c
                for coords, where in arr.blocks:
                    block = np.ascontiguousarray(
                        rows[(slice(first, first + c), *where)], dtype=lay.dtype.newbyteorder("<")
                    )
                    block = _padded(block, chunk_shape)
                    payload = block if arr.encoder is None else arr.encoder.encode(block)
                    self._put(arr.folder / arr.chunk_key((k, *coords)), payload, atomic=atomic)

    def record_rows(self, rows: int) -> None:
        self.rows = rows
        for arr in self._arrays.values():
            arr.meta["shape"][0] = rows
            self._save(arr.meta_file, arr.meta)
        self.record_state(rows)

    def record_state(self, rows: int) -> None:
        """Record ``rows`` durably in the marker (what ``append`` and ``info`` read)."""
        try:
            owned.write_state(self.path, {"rows": rows})
        except OSError as exc:
            raise WriteError(f"{self.path}: cannot record rows ({exc.strerror or exc})") from exc

    def record_done(self, chunk_rows: range) -> None:
        try:
            owned.Ledger(self.path).mark_many(chunk_rows)
        except OSError as exc:
            raise WriteError(f"{self.path}: cannot record rows ({exc.strerror or exc})") from exc

    def done(self) -> frozenset[int]:
        return frozenset(owned.Ledger(self.path).done())

    def finish(self, rows: int) -> None:
        self._attrs["datatools"].update(rows=rows, complete=True)
        self._save(self._group_file, self._group_doc)
        try:
            owned.mark_complete(self.path)
        except OSError as exc:
            raise WriteError(f"{self.path}: cannot mark complete ({exc.strerror or exc})") from exc

    def release(self) -> None:
        """Nothing to do: every flush already left the group consistent."""

    def _load(self, file: Path) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(file.read_text())
        return doc

    def _save(self, file: Path, doc: Mapping[str, Any]) -> None:
        self._put(file, json.dumps(doc).encode())

    def _put(self, file: Path, payload: Any, *, atomic: bool = True) -> None:
        try:
            self._make_folder(file.parent)
            if atomic:
                _replace_file(file, payload)
            else:
                with open(file, "wb") as fh:
                    fh.write(payload)
        except OSError as exc:
            raise WriteError(f"{file}: cannot write ({exc.strerror or exc})") from exc

    def _make_folder(self, folder: Path) -> None:
        """Create ``folder`` and its missing parents inside the group, once per writer."""
        if folder in self._folders:
            return
        if folder != self.path:
            self._make_folder(folder.parent)
            folder.mkdir(exist_ok=True)
        self._folders.add(folder)


def _blocks(lay: _Layout) -> list[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """Chunk grid coordinates and item slices of one chunk row (one entry for whole items)."""
    ranges = [range(0, n, c) for n, c in zip(lay.item_shape, lay.item_chunks, strict=True)]
    return [
        (
            tuple(s // c for s, c in zip(starts, lay.item_chunks, strict=True)),
            tuple(slice(s, s + c) for s, c in zip(starts, lay.item_chunks, strict=True)),
        )
        for starts in product(*ranges)
    ]


def _open_hdf5(how: _Open, *, overwrite: bool) -> _Hdf5Backend:
    final = how.path
    partial = Path(f"{final}{owned.PARTIAL_SUFFIX}")
    owned.check_target_location(final)
    if partial.is_symlink():
        raise TargetError(f"{partial}: is a symbolic link (remove it or choose another target)")
    present = [p for p in (final, partial) if p.exists()]
    metas: dict[Path, dict[str, Any]] = {}
    for p in present:
        meta = _hdf5_meta(p)
        if meta is not None:
            metas[p] = meta
        elif p == partial and not overwrite:
            raise TargetError(
                f"{p}: unfinished file that HDF5 cannot read, left by a run killed while "
                "flushing (overwrite=True replaces it)"
            )
        elif p != partial:
            raise TargetError(
                f"{p}: exists and is not a datatools output (choose another target; "
                "overwrite=True only replaces outputs of datatools)"
            )
    if present and overwrite:
        for p in present:
            _remove(p)
    elif present:
        if not how.append:
            raise how.exists_error(
                "exists" if final in present else f"exists as the unfinished {partial.name}"
            )
        if len(present) == 2:
            raise TargetError(
                f"{final}: both it and {partial.name} exist (remove the one you do not want)"
            )
        how.check_same(owned.RunRecord.from_dict(metas[present[0]]))
        if present[0] == final:
            os.replace(final, partial)
        return _Hdf5Backend(how, partial, _hdf5_file(partial, "r+"), metas[present[0]])
    file = _hdf5_file(partial, "w-")
    try:
        rows = how.total_rows or 0
        for lay in how.layouts:
            file.create_dataset(
                lay.name,
                shape=(rows, *lay.item_shape),
                maxshape=(None, *lay.item_shape),
                chunks=(how.chunk_rows, *lay.item_chunks),
                dtype=lay.dtype,
                **how.codec.hdf5_kwargs(),
            )
        meta = {**how.record.to_dict(), "rows": rows, "complete": False}
        if how.total_rows is not None:
            meta["done"] = []
        return _Hdf5Backend(how, partial, file, meta)
    except BaseException:
        file.close()
        partial.unlink(missing_ok=True)
        raise


def _hdf5_meta(path: Path) -> dict[str, Any] | None:
    """The ``datatools`` root attribute of an HDF5 file of ours, ``None`` for anything else."""
    try:
        with h5py.File(path, "r") as file:
            raw = file.attrs.get("datatools")
    except OSError:
        return None
    try:
        meta = json.loads(raw) if isinstance(raw, str | bytes) else None
    except ValueError:
        return None
    return meta if isinstance(meta, dict) and {"command", "params"} <= set(meta) else None


def _hdf5_file(path: Path, mode: str) -> Any:
    try:
        return h5py.File(path, mode)
    except OSError as exc:
        raise WriteError(f"{path}: cannot open for writing ({exc})") from exc


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError as exc:
        raise WriteError(f"{path}: cannot remove ({exc.strerror or exc})") from exc


class _Hdf5Backend(_Backend):
    """HDF5 file written under its partial name; the root attribute records progress."""

    def __init__(self, how: _Open, partial: Path, file: Any, meta: dict[str, Any]) -> None:
        self.path = how.path
        self.partial = partial
        self.chunk_rows = how.chunk_rows
        self.growing = how.total_rows is None
        self._file = file
        self._meta = meta
        self._datasets = {lay.name: file[lay.name] for lay in how.layouts}
        self.rows = 0
        meta["complete"] = False
        self.record_rows(int(meta["rows"]))

    def read_rows(self, name: str, start: int, stop: int) -> Array:
        return np.asarray(self._datasets[name][start:stop])

    def write(self, chunk_row: int, data: Mapping[str, Array]) -> None:
        start = chunk_row * self.chunk_rows
        try:
            for name, rows in data.items():
                dataset, stop = self._datasets[name], start + len(rows)
                if dataset.shape[0] < stop:
                    dataset.resize(stop, axis=0)
                dataset[start:stop] = rows
        except OSError as exc:
            raise WriteError(f"{self.partial}: cannot write rows ({exc})") from exc

    def record_rows(self, rows: int) -> None:
        if self.growing:
            self.rows = rows
            for dataset in self._datasets.values():
                if dataset.shape[0] != rows:
                    dataset.resize(rows, axis=0)
        self._meta["rows"] = rows
        self._save()

    def record_done(self, chunk_rows: range) -> None:
        self._meta["done"] = sorted(set(self._meta["done"]).union(chunk_rows))
        self._save()

    def done(self) -> frozenset[int]:
        return frozenset(self._meta.get("done", ()))

    def finish(self, rows: int) -> None:
        self._meta.update(rows=rows, complete=True)
        try:
            self._save()
        finally:
            self._file.close()
        try:
            os.replace(self.partial, self.path)
        except OSError as exc:
            raise WriteError(f"{self.path}: cannot rename the finished file ({exc})") from exc

    def release(self) -> None:
        try:
            if self.growing:
                for dataset in self._datasets.values():
                    dataset.resize(int(self._meta["rows"]), axis=0)
        finally:
            self._file.close()

    def _save(self) -> None:
        try:
            self._file.attrs["datatools"] = json.dumps(self._meta)
            self._file.flush()
        except OSError as exc:
            raise WriteError(f"{self.partial}: cannot record progress ({exc})") from exc
