"""The ledger of an HDF5 file output (:class:`Hdf5Ledger`): one writing process at a time.

The file is written as ``<name>.datatools-partial`` (:func:`partial_path`) and renamed to its
name when complete, so a file with the final name is always whole. Inside it::

    <name>.h5[.datatools-partial]
        attribute "datatools"   JSON {"command", "params", "version"}; for an output claimed
                                without a unit count also "complete" (bool), the command's
                                state (e.g. "rows", "group_rows") and "done" (the done units);
                                rewritten and flushed at each change
        _datatools_ledger       for an output claimed with a unit count: uint8, one byte per
                                unit, 1 once done, flushed per unit; deleted when complete

While a partial file is there it is the output's current state, even beside a finished file
of an earlier run (an ``--overwrite`` under way, which replaces that file when complete). A
partial file that HDF5 cannot read (torn by a killed writer) is ours by its name:
``--overwrite`` replaces it.

Each record flushes twice: once for the data written since the last record, then once for the
record itself, so a unit is never recorded in the file before its data is. The writes between
two records get their room on disk first (:meth:`Hdf5Ledger.reserve`; why and how in
:mod:`~datatools.ledger.hdf5_space`): a full disk or the file size limit stops the run between
two records, leaving a file that the rerun resumes. Commands write inside
:meth:`Hdf5Ledger.writing`, which turns a failed write into one :class:`WriteError` line
and closes the file without letting HDF5 write more.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from datatools.errors import DatatoolsError, OptionError, TargetError, WriteError
from datatools.interrupts import ignored_file_size_signal
from datatools.ledger.hdf5_space import allocate, hdf5_errno, room_for, seal, trim, write_error
from datatools.ledger.interface import PARTIAL_SUFFIX, Claimed, OutputLedger
from datatools.ledger.record import RunRecord, TargetStatus, check_same_run
from datatools.ledger.target_checks import check_target_location

RECORD_ATTR = "datatools"
"""Root attribute holding the run record (JSON)."""
UNITS_DATASET = "_datatools_ledger"
"""Dataset of the done units of an output claimed with a unit count."""
LEDGER_KEYS = frozenset({"command", "params", "version", "complete", "done"})
"""Keys of the record attribute that are not the command's state."""
TORN = "killed while HDF5 wrote it; rerun with --overwrite to start again"
"""The ``unreadable`` state of a torn partial file."""


def partial_path(path: Path) -> Path:
    """The name an unfinished HDF5 output has until it is complete."""
    return path.with_name(path.name + PARTIAL_SUFFIX)


def check_dataset_name(dataset: str) -> None:
    """Check that ``dataset`` is a path a command may write its data under in an HDF5 file:
    names joined by ``/`` (a leading ``/`` allowed), none empty, ``.`` or ``..``, and not
    under :data:`UNITS_DATASET`, which the ledger keeps for itself.

    Raises:
        OptionError: naming the dataset path and what is wrong with it.
    """
    names = (dataset[1:] if dataset.startswith("/") else dataset).split("/")
    if any(name in ("", ".", "..") for name in names):
        raise OptionError(
            f"--dataset {dataset or repr(dataset)}: not a dataset path in an HDF5 file "
            "(give names joined by /, e.g. data or raw/em)"
        )
    if names[0] == UNITS_DATASET:
        raise OptionError(
            f"--dataset {dataset}: datatools keeps its record of done units under "
            f"{UNITS_DATASET} (give another name, e.g. data)"
        )


@dataclass(frozen=True)
class _Found:
    """What one of an output's two names holds: nothing, an output of ours (with its record
    attribute), a torn partial file, a file another process holds, or a foreign file."""

    kind: Literal["missing", "ours", "torn", "locked", "foreign"]
    meta: dict[str, Any]


def _probe(file: Path, *, partial: bool) -> _Found:
    """What ``file`` holds; anything under the partial name that is not a readable output of
    ours counts as torn (ours by its name)."""
    import h5py

    if not os.path.lexists(file):
        return _Found("missing", {})
    try:
        with h5py.File(file, "r") as fh:
            meta = _parse(fh.attrs.get(RECORD_ATTR))
    except OSError as exc:
        if "unable to lock file" in str(exc):
            return _Found("locked", {})
        meta = None
    if meta is not None:
        return _Found("ours", meta)
    return _Found("torn" if partial else "foreign", {})


def _parse(raw: object) -> dict[str, Any] | None:
    """The record attribute as a dict, ``None`` when it is not one of ours."""
    if not isinstance(raw, str | bytes):
        return None
    try:
        meta = json.loads(raw)
    except ValueError:
        return None
    return meta if isinstance(meta, dict) and {"command", "params"} <= set(meta) else None


class Hdf5Ledger(OutputLedger[Any]):
    """The record and done units inside an HDF5 output, and its partial-file naming.

    A claim holds the partial file open for writing (:attr:`file`) until :meth:`mark_complete`
    or :meth:`close`; the command writes its datasets through it.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self.partial = partial_path(self.path)
        self._file: Any = None
        self._meta: dict[str, Any] = {}
        self._recorded = 0
        self._pending = 0
        self._allocates = True

    @property
    def file(self) -> Any:
        """The open partial file (an ``h5py.File``) of a claimed output."""

        assert self._file is not None, "claim the output first"
        return self._file

    def location(self) -> Path:
        return self.partial if os.path.lexists(self.partial) else self.path

    def is_ours(self) -> bool:
        return self.location() == self.partial or self._current().kind == "ours"

    def read_record(self) -> RunRecord | None:
        found = self._current()
        return RunRecord.from_dict(found.meta) if found.kind == "ours" else None

    def claim(
        self,
        record: RunRecord,
        *,
        overwrite: bool,
        populate: Callable[[Any], None],
        units_total: int | None = None,
    ) -> Claimed:
        """Create the partial file, continue it, or join the finished file of the same run.

        A new file gets the record first, then (with ``units_total``) its done-units
        dataset, then ``populate(file)`` writes the datasets; the file stays open
        (:attr:`file`). With ``overwrite``, a finished file stays until the new one replaces
        it whole. Joining a finished file opens nothing (:meth:`is_complete` is true;
        :meth:`clear_complete` reopens it).

        Raises:
            TargetError: a foreign file, a symlink, a file another process is writing, a
                torn partial file (without ``overwrite``), or a missing parent folder.
            ResumeMismatchError: an output of ours with another record is there.
            WriteError: the file cannot be created, opened or removed.
        """
        check_target_location(self.path)
        if self.partial.is_symlink():
            raise TargetError(
                f"{self.partial}: is a symbolic link (remove it or choose another target)"
            )
        final = _probe(self.path, partial=False)
        partial = _probe(self.partial, partial=True)
        for file, found in ((self.path, final), (self.partial, partial)):
            if found.kind == "locked":
                raise TargetError(
                    f"{file}: another process is writing it (wait for it, or choose another target)"
                )
            if found.kind == "foreign":
                raise TargetError(
                    f"{file}: exists and is not an output of datatools (choose another target; "
                    "--overwrite never replaces a file datatools did not create)"
                )
        if partial.kind == "torn" and not overwrite:
            raise TargetError(
                f"{self.partial}: unfinished file that HDF5 cannot read, left by a run killed "
                "while flushing (--overwrite replaces it)"
            )
        if partial.kind == "ours" and not overwrite:
            check_same_run(self.partial, RunRecord.from_dict(partial.meta), record)
            self._open("r+")
            return "resumed"
        if partial.kind != "missing":
            _unlink(self.partial)
        if final.kind == "ours" and not overwrite:
            check_same_run(self.path, RunRecord.from_dict(final.meta), record)
            return "resumed"
        self._create(record, populate, units_total)
        return "created"

    def _create(
        self, record: RunRecord, populate: Callable[[Any], None], units_total: int | None
    ) -> None:
        import h5py

        meta = record.to_dict()
        if units_total is None:
            meta["complete"] = False
        try:
            file = h5py.File(self.partial, "w-")
        except OSError as exc:
            raise WriteError(f"{self.partial}: cannot open for writing ({exc})") from exc
        self._file, self._meta = file, meta
        self._recorded, self._pending = 0, 0
        try:
            with self.writing():
                self.reserve(units_total or 0)
                file.attrs[RECORD_ATTR] = json.dumps(meta)
                if units_total is not None:  # written now, so marking a unit never grows it
                    file.create_dataset(UNITS_DATASET, data=np.zeros(units_total, np.uint8))
                populate(file)
                self._flush()
        except BaseException:
            self.close()
            self.partial.unlink(missing_ok=True)
            raise

    def _open(self, mode: str) -> None:
        import h5py

        try:
            self._file = h5py.File(self.partial, mode)
        except OSError as exc:
            raise WriteError(f"{self.partial}: cannot open for writing ({exc})") from exc
        self._meta = _parse(self._file.attrs.get(RECORD_ATTR)) or {}
        self._recorded, self._pending = self._file.id.get_filesize(), 0

    @property
    def is_open(self) -> bool:
        """Whether a claim holds the partial file open (a failed write closes it)."""
        return self._file is not None

    def reserve(self, nbytes: int) -> None:
        """Make room in the file for ``nbytes`` of (uncompressed) data about to be written,
        before HDF5 writes them; the room holds every write since the last record.

        Raises:
            WriteError: the disk is full, or the file would pass the file size limit or a
                quota; the file still holds every recorded unit.
        """
        self._pending += room_for(nbytes)
        if self._allocates:
            self._allocates = allocate(self.file, self.partial, self._recorded, self._pending)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Write to the claimed file inside this block: a write past the file size limit
        fails instead of killing the process (SIGXFSZ is ignored), and a failed write closes
        the file at once, HDF5 writing nothing more to it, and is raised as one line.

        Raises:
            WriteError: a write failed (disk full, file too large, quota, I/O error).
        """
        with ignored_file_size_signal():
            try:
                yield
            except (OSError, RuntimeError) as exc:
                if self._file is not None:
                    file, self._file = self._file, None
                    seal(file)
                    trim(self.partial, self._recorded)
                if isinstance(exc, DatatoolsError):
                    raise
                if isinstance(exc, RuntimeError) and hdf5_errno(exc) is None:
                    raise  # not a failed write: an internal error keeps its traceback
                raise write_error(self.partial, exc, by_hdf5=True) from exc

    def mark_done(self, units: Iterable[int]) -> None:
        """Record ``units`` done: their data is flushed first, then the record."""
        file = self.file
        if UNITS_DATASET in file:
            file.flush()
            marks = file[UNITS_DATASET]
            for unit in units:
                marks[unit] = 1
            self._flush()
        else:
            self._meta["done"] = sorted(set(self._meta.get("done", ())).union(units))
            self._save()

    def done(self) -> frozenset[int]:
        import h5py

        if self._file is not None:
            return _units(self._file, self._meta, finished=False)
        where = self.location()
        try:
            with h5py.File(where, "r") as fh:
                meta = _parse(fh.attrs.get(RECORD_ATTR))
                return frozenset() if meta is None else _units(fh, meta, where == self.path)
        except OSError:
            return frozenset()

    def write_state(self, state: dict[str, Any]) -> None:
        assert not LEDGER_KEYS & set(state), "state keys are the command's own"
        self._meta = {k: v for k, v in self._meta.items() if k in LEDGER_KEYS} | state
        self._save()

    def read_state(self) -> dict[str, Any]:
        found = self._current()
        return {k: v for k, v in found.meta.items() if k not in LEDGER_KEYS}

    def mark_complete(self) -> None:
        """Record completion, drop the done-units dataset, close the file and give it its
        final name (replacing a finished file of an earlier run).

        Raises:
            WriteError: the final flush or the rename failed.
        """
        file = self.file
        try:
            self.reserve(0)
            if "complete" in self._meta:
                self._meta["complete"] = True
                file.attrs[RECORD_ATTR] = json.dumps(self._meta)
            if UNITS_DATASET in file:
                del file[UNITS_DATASET]
            self._flush()
        finally:
            self.close()
        try:
            os.replace(self.partial, self.path)
        except OSError as exc:
            raise WriteError(f"{self.path}: cannot rename the finished file ({exc})") from exc

    def clear_complete(self) -> None:
        """Give a finished file its partial name again and open it for writing."""
        if self._file is None:
            if not os.path.lexists(self.partial):
                os.replace(self.path, self.partial)
            self._open("r+")
        if "complete" in self._meta:
            self._meta["complete"] = False
            self._save()

    def is_complete(self) -> bool:
        if os.path.lexists(self.partial):
            return False
        found = _probe(self.path, partial=False)
        return found.kind == "ours" and found.meta.get("complete", True) is True

    def remove(self) -> None:
        """Delete the finished file and the partial file.

        Raises:
            TargetError: either is a symlink, or the finished name holds a file datatools
                did not make or another process is writing.
        """
        for file in (self.path, self.partial):
            if file.is_symlink():
                raise TargetError(f"{file}: is a symbolic link; datatools will not remove it")
        if _probe(self.path, partial=False).kind in ("foreign", "locked"):
            raise TargetError(
                f"{self.path}: exists and is not an output of datatools (or another process "
                "is writing it); datatools will not remove it"
            )
        self.discard()
        if self.path.exists():
            _unlink(self.path)

    def discard(self) -> None:
        """Close and delete the partial file (a finished file of an earlier run stays).

        Raises:
            WriteError: the file cannot be removed.
        """
        self.close()
        if self.partial.exists():
            _unlink(self.partial)

    def is_own_node(self, name: str) -> bool:
        return name.strip("/") == UNITS_DATASET

    def close(self) -> None:
        """Close the partial file a claim opened (it keeps every recorded unit), without the
        room allocated ahead past its end.

        Raises:
            WriteError: the closing flush failed (as :meth:`writing`).
        """
        if self._file is None:
            return
        with self.writing():
            self._file.flush()
            size = self._file.id.get_filesize()
            file, self._file = self._file, None
            file.close()
        trim(self.partial, size)

    def status(self) -> TargetStatus | None:
        """Progress of the output; an unfinished one names its partial file in ``state``
        (and a torn one says so under ``unreadable``). ``None`` when no output of ours is
        there, or when another process holds the partial file open."""
        if self.location() == self.path:
            return super().status()
        found = self._current()
        where = {"partial": str(self.partial)}
        if found.kind == "torn":
            return TargetStatus(self.path, None, False, 0, None, {**where, "unreadable": TORN})
        status = super().status()
        return None if status is None else replace(status, state={**status.state, **where})

    def _current(self) -> _Found:
        """What the output's current file holds (the partial one while it is there)."""
        if self._file is not None:
            return _Found("ours", self._meta)
        where = self.location()
        return _probe(where, partial=where == self.partial)

    def _save(self) -> None:
        """Write the record attribute after the data written since the last record."""
        text = json.dumps(self._meta)
        self.file.flush()
        self.reserve(len(text))
        self.file.attrs[RECORD_ATTR] = text
        self._flush()

    def _flush(self) -> None:
        """Flush the file; the room for the next writes starts at its new end."""
        self.file.flush()
        self._recorded, self._pending = self.file.id.get_filesize(), 0


def _units(file: Any, meta: dict[str, Any], finished: bool) -> frozenset[int]:
    """Done units of an open file with record attribute ``meta``: the dataset's marks, the
    listed units, or every unit of a ``finished`` (final-named) file whose store was dropped."""
    if UNITS_DATASET in file:
        return frozenset(int(i) for i in np.flatnonzero(file[UNITS_DATASET][:]))
    if "done" in meta:
        return frozenset(int(u) for u in meta["done"])
    total = meta["params"].get("units_total")
    if finished and meta.get("complete", True) is True and isinstance(total, int):
        return frozenset(range(total))
    return frozenset()


def _unlink(file: Path) -> None:
    try:
        file.unlink()
    except OSError as exc:
        raise WriteError(f"{file}: cannot remove ({exc.strerror or exc})") from exc
