"""The writer objects: :class:`ArrayWriter` (made by :func:`datatools.writers.open_writer`)
and the :class:`GroupWriter` of each of its groups."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
from numpy.typing import ArrayLike

from datatools.errors import InputError, OptionError, WriteError
from datatools.writers._layout import Array, Backend, Layout, Setup, Stream, array_key


class GroupWriter:
    """The arrays of one group of a growing :class:`ArrayWriter`, growing in lockstep.

    Each array buffers one of its chunk rows; a full one is written at once.
    """

    def __init__(
        self, path: Path, name: str, layouts: Mapping[str, Layout], backend: Backend
    ) -> None:
        self.path = path
        self.name = name
        self._layouts = layouts
        self._backend = backend
        self._closed = False
        self._recorded = backend.rows[name]
        self._rows = self._recorded
        self._buffers: dict[str, Array] = {}
        self._base: dict[str, int] = {}
        self._fill: dict[str, int] = {}
        for lay in layouts.values():
            c = lay.chunk_rows
            self._buffers[lay.name] = np.empty((c, *lay.item_shape), lay.dtype)
            self._base[lay.name] = self._recorded - self._recorded % c
            self._fill[lay.name] = self._recorded % c
            if self._fill[lay.name]:
                self._buffers[lay.name][: self._fill[lay.name]] = backend.read_rows(
                    self._key(lay.name), self._base[lay.name], self._recorded
                )

    @property
    def rows(self) -> int:
        """Rows given so far (what the group holds once closed)."""
        return self._rows

    @property
    def flushed_rows(self) -> int:
        """Rows recorded as written (what a killed run keeps)."""
        return self._recorded

    def append(self, batch: ArrayLike | None = None, /, **batches: ArrayLike) -> None:
        """Add rows at the end: ``append(batch)`` for one array, else ``append(name=rows, ...)``.

        Each batch is ``(n, *item_shape)``; every array gets the same ``n`` (any ``n >= 0``).
        Whole chunk rows are written as soon as they are complete.

        Raises:
            InputError: arrays missing or unknown, row counts differ, wrong item shape, or a
                dtype that does not cast safely.
            WriteError: the writer is closed, or writing failed.
        """
        _check_open(self.path, self._closed)
        named = _named(self.path, self._layouts, "append", batch, batches)
        data, n = _check_batches(self.path, self._layouts, "append", named, tuple(self._layouts))
        for name, rows in data.items():
            self._feed(name, rows)
        self._rows += n
        self._record()

    def _key(self, name: str) -> str:
        return array_key(self.name, name)

    def _feed(self, name: str, rows: Array) -> None:
        """Buffer ``rows`` of one array, writing each chunk row it completes."""
        buffer, fill, n = self._buffers[name], self._fill[name], len(rows)
        c, pos = len(buffer), 0
        if fill:
            pos = min(c - fill, n)
            buffer[fill : fill + pos] = rows[:pos]
            fill += pos
            if fill == c:
                self._backend.write(self._key(name), self._base[name], buffer)
                self._base[name] += c
                fill = 0
        whole = (n - pos) // c * c
        if whole:
            self._backend.write(self._key(name), self._base[name], rows[pos : pos + whole])
            self._base[name] += whole
            pos += whole
        if pos < n:
            buffer[: n - pos] = rows[pos:]
            fill = n - pos
        self._fill[name] = fill

    def _record(self) -> None:
        """Record the rows every array now holds on disk, when they grew."""
        durable = min(max(self._recorded, base) for base in self._base.values())
        if durable > self._recorded:
            self._backend.record_rows({self.name: durable})
            self._recorded = durable

    def _close(self) -> None:
        """Write the partial last chunk row of each array and record every row."""
        self._closed = True
        if self._rows > self._recorded:
            for name, fill in self._fill.items():
                if fill:
                    self._backend.write(
                        self._key(name), self._base[name], self._buffers[name][:fill]
                    )
            self._backend.record_rows({self.name: self._rows})
            self._recorded = self._rows
        self._buffers = {}

    def _drop(self) -> None:
        """Forget what was not recorded (the writer left by an exception)."""
        self._closed = True
        self._rows = self._recorded
        self._buffers = {}


class ArrayWriter:
    """Appends row batches to arrays that grow in lockstep; made by :func:`open_writer`.

    Peak memory: one chunk row per array and group (``chunk_rows x item bytes``, the buffers)
    plus one padded and one encoded chunk, besides the caller's batch. ``write_rows`` writes
    straight from the caller's batch.
    """

    def __init__(self, setup: Setup, streams: Sequence[Stream], backend: Backend) -> None:
        self.path = setup.path
        self.chunk_rows = setup.chunk_rows
        self.total_rows = setup.total_rows
        self._layouts: dict[str, Layout] = {lay.name: lay for lay in setup.layouts}
        self._streams = tuple(streams)
        self._backend = backend
        self._closed = False
        self._groups: dict[str, GroupWriter] = {}
        if self.total_rows is None:
            self._groups = {
                name: GroupWriter(self.path, name, self._layouts, backend) for name in setup.groups
            }

    @property
    def names(self) -> tuple[str, ...]:
        """Array names, in the order given."""
        return tuple(self._layouts)

    @property
    def groups(self) -> tuple[str, ...]:
        """Group names; ``("",)`` when the arrays are at the root."""
        return tuple(self._groups) or ("",)

    @property
    def rows(self) -> int:
        """Rows the arrays hold once closed (all groups): rows given so far, or ``total_rows``."""
        if self.total_rows is not None:
            return self.total_rows
        return sum(g.rows for g in self._groups.values())

    @property
    def flushed_rows(self) -> int:
        """Rows recorded as written (what a killed run keeps), all groups."""
        if self.total_rows is None:
            return sum(g.flushed_rows for g in self._groups.values())
        c = self.chunk_rows
        return sum(min(c, self.total_rows - k * c) for k in self.done)

    @property
    def done(self) -> frozenset[int]:
        """Chunk rows (of :attr:`chunk_rows` rows) that :meth:`write_rows` recorded for every
        array (by every process filling this target)."""
        if self.total_rows is None:
            return frozenset()
        units = self._backend.done()
        total, c = self.total_rows, self.chunk_rows
        return frozenset(
            k
            for k in range(-(-total // c))
            if all(
                s.first_unit + j in units
                for s in self._streams
                for j in s.chunk_range(k * c, min(total, (k + 1) * c))
            )
        )

    def group(self, name: str) -> GroupWriter:
        """The arrays of group ``name`` (``""`` for arrays at the root) of a growing writer.

        Raises:
            OptionError: no such group, or a positional-fill writer.
        """
        if name not in self._groups:
            held = ", ".join(repr(g) for g in self._groups) or "no groups: it fills positions"
            raise OptionError(f"{self.path}: no group {name!r} (the writer holds {held})")
        return self._groups[name]

    def append(self, batch: ArrayLike | None = None, /, **batches: ArrayLike) -> None:
        """Add rows at the end of the arrays at the root; see :meth:`GroupWriter.append`.

        Raises:
            OptionError: the writer was opened with ``total_rows`` (use :meth:`write_rows`),
                or holds groups (use :meth:`group`).
            InputError, WriteError: as :meth:`GroupWriter.append`.
        """
        _check_open(self.path, self._closed)
        if self.total_rows is not None:
            raise OptionError(
                f"{self.path}: append needs a growing writer (this one was opened with "
                "total_rows; use write_rows)"
            )
        if "" not in self._groups:
            raise OptionError(
                f"{self.path}: the arrays are in groups {', '.join(self._groups)} (append to "
                "one with writer.group(name).append(...))"
            )
        self._groups[""].append(batch, **batches)

    def write_rows(
        self, start: int, batch: ArrayLike | None = None, /, **batches: ArrayLike
    ) -> None:
        """Write rows ``[start, start + n)`` of a writer opened with ``total_rows``.

        For producers that know their row ranges and may run in parallel (one process per
        range): ``start`` and ``start + n`` must fall on chunk rows of the arrays given
        (multiples of their chunk rows, or ``total_rows`` for the end), so no two callers
        share a chunk. Arrays with the same chunk rows are written together; arrays with
        other chunk rows (e.g. small tables with larger chunks) may come in their own calls.
        The chunk rows are recorded once written; the output is complete when a writer closes
        after every chunk row of every array is done. Writes straight from the batch.

        Raises:
            OptionError: the writer grows with ``append`` (no ``total_rows``).
            InputError: the range is not made of whole chunk rows or passes ``total_rows``,
                or the batches are inconsistent (as :meth:`GroupWriter.append`).
            WriteError: the writer is closed, or writing failed.
        """
        _check_open(self.path, self._closed)
        total = self.total_rows
        if total is None:
            raise OptionError(
                f"{self.path}: write_rows needs total_rows (open the writer with total_rows=N)"
            )
        named = _named(self.path, self._layouts, "write_rows", batch, batches)
        streams = [s for s in self._streams if any(name in named for name in s.names)]
        required = tuple(name for s in streams for name in s.names) or self.names
        data, n = _check_batches(self.path, self._layouts, "write_rows", named, required)
        stop = start + n
        for s in streams:
            c = s.chunk_rows
            if start < 0 or start % c or stop > total or (stop % c and stop != total):
                raise InputError(
                    f"{self.path}: write_rows of rows [{start}, {stop}) does not cover whole "
                    f"chunk rows (start and end must be multiples of {c}, the end may be "
                    f"total_rows {total})"
                )
        if not n:
            return
        for name, rows in data.items():
            self._backend.write(name, start, rows)
        self._backend.record_done(
            s.first_unit + j for s in streams for j in s.chunk_range(start, stop)
        )

    def close(self) -> None:
        """Write the buffered tails, trim the arrays to :attr:`rows` and mark the output complete.

        A writer opened with ``total_rows`` marks it complete only when every chunk row of
        every array is done (the last of several parallel writers to close does). Closing
        twice does nothing.

        Raises:
            WriteError: writing a tail or the final metadata failed (the output stays
                incomplete with its flushed rows).
        """
        if self._closed:
            return
        self._closed = True
        try:
            for group in self._groups.values():
                group._close()
            units = sum(s.units for s in self._streams)
            complete = self._backend.done() >= frozenset(range(units))
        except BaseException:
            self._drop()
            raise
        if complete:
            rows = {name: g.rows for name, g in self._groups.items()} or {"": self.rows}
            self._backend.finish(rows)
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
            self._drop()

    def _drop(self) -> None:
        """Release the output with what was recorded (left by an exception)."""
        for group in self._groups.values():
            group._drop()
        self._backend.release()


def _check_open(path: Path, closed: bool) -> None:
    if closed:
        raise WriteError(
            f"{path}: the writer is closed (open it again with append=True to add rows)"
        )


def _named(
    path: Path,
    layouts: Mapping[str, Layout],
    op: str,
    batch: ArrayLike | None,
    batches: Mapping[str, ArrayLike],
) -> Mapping[str, ArrayLike]:
    """The batches by array name; an unnamed ``batch`` is the single array's.

    Raises:
        InputError: an unnamed batch for a writer of several arrays.
    """
    if batch is None:
        return batches
    if batches or len(layouts) != 1:
        raise InputError(
            f"{path}: {op} got an unnamed batch but the writer holds arrays "
            f"{', '.join(layouts)} (pass them by name, e.g. {op}(name=rows))"
        )
    return {next(iter(layouts)): batch}


def _check_batches(
    path: Path,
    layouts: Mapping[str, Layout],
    op: str,
    batches: Mapping[str, ArrayLike],
    required: Sequence[str],
) -> tuple[dict[str, Array], int]:
    """The batches as arrays and their common row count; ``required`` arrays must be given.

    Raises:
        InputError: arrays missing or unknown, row counts differ, wrong item shape, or a
            dtype that does not cast safely.
    """
    missing = [name for name in required if name not in batches]
    unknown = [name for name in batches if name not in layouts]
    if unknown:
        raise InputError(
            f"{path}: {op} got unknown array {', '.join(unknown)} (the writer holds "
            f"{', '.join(layouts)})"
        )
    if missing:
        why = (
            "arrays grow in lockstep"
            if len(required) == len(layouts)
            else "arrays with the same chunk rows are written together"
        )
        raise InputError(
            f"{path}: {op} got no rows for {', '.join(missing)} ({why}; give rows to "
            f"{', '.join(required)})"
        )
    data: dict[str, Array] = {}
    for name, given in batches.items():
        lay = layouts[name]
        rows = np.asarray(given)
        if rows.ndim != 1 + len(lay.item_shape) or rows.shape[1:] != lay.item_shape:
            raise InputError(
                f"{path}: {op} got {name} rows of shape {rows.shape}, expected "
                f"(n, {', '.join(map(str, lay.item_shape))}) (a single row is rows[None])"
            )
        if rows.dtype != lay.dtype and not np.can_cast(rows.dtype, lay.dtype, "safe"):
            raise InputError(
                f"{path}: {op} got {name} rows of dtype {rows.dtype}, the array holds "
                f"{lay.dtype} (cast with .astype('{lay.dtype}') if the values fit)"
            )
        data[name] = rows
    counts = {name: len(rows) for name, rows in data.items()}
    if len(set(counts.values())) > 1:
        shown = ", ".join(f"{count} rows for {name}" for name, count in counts.items())
        raise InputError(
            f"{path}: {op} got {shown} (arrays grow in lockstep; give every array the "
            "same number of rows)"
        )
    return data, next(iter(counts.values()))
