"""The ledger of a Zarr folder output (:class:`ZarrLedger`), safe across processes.

Every folder output carries a hidden child group ``.datatools``, itself valid Zarr (in the
output's Zarr format), so ``zarr.open_group(...).members()`` and validators see a clean
hierarchy::

    target.zarr/
        zarr.json | .zgroup      the Zarr group
        .datatools/
            zarr.json | .zgroup+.zattrs   attributes {"run": {command, params, version},
                                          "state": {...}, "complete": bool}
            done/                 the done units: a uint8 array, one single-byte chunk per
                                  finished unit (concurrent tasks write different chunk files)
            leases/               an empty uint8 array whose folder holds one JSON lease
                                  per live run or job-array task, and a job array's task
                                  count (:mod:`datatools.ledger.lease`)

The marker makes ``--overwrite`` safe (only our outputs are removed) and lets a rerun with the
same options resume. A folder is created under a temporary name and renamed into place, so
concurrent tasks starting at once agree on one run record. ``complete`` is set last, when every
unit is done and the metadata is final.

One live run per output: a run that writes units takes a lease first (:meth:`ZarrLedger.lease`),
renews it while it runs, and a second run whose units overlap a live lease is refused, naming
the holder's pid, host and start time; the tasks of one job array hold one lease each and work
side by side, and a task with another ``--task-count`` than the output's first task is refused.
A dead holder (its pid gone on this host) or a stale one (not renewed for
:data:`~datatools.ledger.lease.LEASE_STALE_SECONDS`) loses its lease to the next run. The design
is in :mod:`datatools.ledger.lease`. Whoever holds a lease still checks :meth:`ZarrLedger.is_done`
before writing each unit, so no run rewrites a unit recorded done.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from datatools import __version__
from datatools.errors import TargetError, WriteError
from datatools.executor import TaskSlice
from datatools.ledger.atomic_files import fresh_name, write_json_atomic
from datatools.ledger.interface import PARTIAL_SUFFIX, Claimed, OutputLedger
from datatools.ledger.lease import Lease, acquire, check_free
from datatools.ledger.record import RunRecord, check_same_run
from datatools.ledger.target_checks import check_folder_name, check_target_location, is_absent

MARKER = ".datatools"
DONE_DIR = "done"
LEASES_DIR = "leases"
LEDGER_LENGTH = 2**40
"""Nominal length of the done-units array (units are indices into it; chunks are sparse)."""


class ZarrLedger(OutputLedger[Path]):
    """The ``.datatools`` marker group of a Zarr folder output.

    Unit ``k`` is done when chunk ``k`` of ``.datatools/done`` exists: a one-byte file written
    after the unit's data. A missing record means "not done", whatever chunks exist. Every
    method works from any process, with or without a claim.
    """

    @property
    def marker(self) -> Path:
        return self.path / MARKER

    def location(self) -> Path:
        return self.path

    def is_ours(self) -> bool:
        if not self.path.is_dir() or self.path.is_symlink():
            return False
        try:
            return "run" in self._read_attrs()
        except (OSError, ValueError):
            return False

    def read_record(self) -> RunRecord | None:
        if not self.is_ours():
            return None
        return RunRecord.from_dict(self._read_attrs()["run"])

    def claim(
        self,
        record: RunRecord,
        *,
        overwrite: bool,
        populate: Callable[[Path], None],
        units_total: int | None = None,
    ) -> Claimed:
        """Create the output folder or join an unfinished run with the same options. An empty
        folder at :attr:`path` counts as no output (:func:`is_absent`).

        A new output is built in a temporary sibling by ``populate(tmp_dir)`` (which writes
        the Zarr group and empty arrays), the marker is added, and the folder is renamed into
        place. When several processes race, one rename wins and the others join its run.
        ``units_total`` is not needed: the done units are a sparse array of any length.

        Raises:
            TargetError: the target is a file, a foreign folder, named like a file of
                another format (:func:`check_folder_name`), or its parent is missing; or
                ``overwrite`` while a live run holds a lease on it.
            ResumeMismatchError: an unfinished or finished output of ours has other options.
            WriteError: the folder cannot be created.
        """
        path = self.path
        check_target_location(path)
        check_folder_name(path)
        if not is_absent(path):  # the rename below replaces an empty folder
            if overwrite:
                if self.is_ours() and (self.marker / LEASES_DIR).is_dir():
                    check_free(self.marker / LEASES_DIR, path)
                self.remove()
            else:
                return self._join(record)
        try:
            tmp = fresh_name(path, PARTIAL_SUFFIX, os.mkdir)
        except OSError as exc:
            raise WriteError(f"{path}: cannot create output ({exc.strerror or exc})") from exc
        try:
            populate(tmp)
            ZarrLedger(tmp)._create_marker(record)
            try:
                os.rename(tmp, path)
            except OSError:
                if not path.exists():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
                return self._join(record)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise WriteError(f"{path}: cannot create output ({exc.strerror or exc})") from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return "created"

    def _join(self, record: RunRecord) -> Claimed:
        existing = self.read_record()
        if existing is None:
            what = "a file" if self.path.is_file() else "a folder datatools did not create"
            raise TargetError(
                f"{self.path}: exists and is {what} (choose another target; --overwrite only "
                "replaces outputs of datatools)"
            )
        check_same_run(self.path, existing, record)
        return "resumed"

    def lease(self, task: TaskSlice | None = None) -> Lease:
        """Take this run's lease on the claimed output before writing units (``task``: the
        job-array slice it writes, ``None`` for the whole plan); give it back with
        :meth:`Lease.release` or a ``with`` block. See :mod:`datatools.ledger.lease`.

        Raises:
            TargetError: a live run holds an overlapping lease (the message names its pid,
                host and start time), or ``task`` has another count than the output's tasks.
            WriteError: the lease cannot be written.
        """
        folder = self.marker / LEASES_DIR
        try:
            if not self._array_metadata(folder).is_file():
                self._create_array(folder, shape=0, dimension="lease")
        except OSError as exc:
            raise WriteError(
                f"{self.path}: cannot write its lease ({exc.strerror or exc})"
            ) from exc
        return acquire(folder, self.path, task)

    def mark_done(self, units: Iterable[int]) -> None:
        folder = self._done_dir()
        folder.mkdir(exist_ok=True)
        for unit in units:
            (folder / str(unit)).write_bytes(b"\x01")

    def done(self) -> frozenset[int]:
        folder = self._done_dir()
        if not folder.is_dir():
            return frozenset()
        return frozenset(int(name) for name in os.listdir(folder) if name.isdigit())

    def is_done(self, unit: int) -> bool:
        """Whether ``unit`` is recorded done (one file lookup)."""
        return (self._done_dir() / str(unit)).is_file()

    def write_state(self, state: dict[str, Any]) -> None:
        self._update_attrs(state=state)

    def read_state(self) -> dict[str, Any]:
        return dict(self._read_attrs().get("state") or {})

    def mark_complete(self) -> None:
        """Set the completion flag (idempotent)."""
        self._update_attrs(complete=True, completed_by=__version__)

    def clear_complete(self) -> None:
        if self._attrs_file().is_file():
            self._update_attrs(complete=False)

    def is_complete(self) -> bool:
        return bool(self._read_attrs().get("complete", False))

    def remove(self) -> None:
        """Delete the output folder; symlinks inside are removed as links, never followed.

        Nothing is deleted until the whole folder is known to be removable: the working
        directory (or a folder holding it) is refused, every folder inside must be writable,
        and the output is first renamed to a hidden sibling in one step, so the marker never
        leaves its data: an interrupted removal leaves that sibling, which the next completed
        run cleans up (:mod:`datatools.ledger.leftovers`), and the target name free.

        Raises:
            TargetError: :attr:`path` is a symlink, a file, a folder without our marker, the
                working directory or a folder holding it, or holds a folder that cannot be
                emptied (named).
        """
        path = self.path
        if path.is_symlink():
            raise TargetError(f"{path}: is a symbolic link; datatools will not remove it")
        if not path.exists():
            return
        if not self.is_ours():
            what = "a file" if path.is_file() else "a folder datatools did not create"
            raise TargetError(f"{path}: exists and is {what}; datatools will not remove it")
        here, real = Path.cwd().resolve(), path.resolve()
        if here == real or real in here.parents:
            raise TargetError(
                f"{path}: is the working directory or holds it; datatools will not remove it "
                "(run the command from outside the output)"
            )
        for folder, subfolders, _ in os.walk(path):
            for name in (folder, *(os.path.join(folder, s) for s in subfolders)):
                if not os.path.islink(name) and not os.access(name, os.W_OK | os.X_OK):
                    raise TargetError(
                        f"{path}: cannot remove it whole: {name} is not writable (nothing "
                        "was removed; fix its permissions or remove the output by hand)"
                    )
        try:
            aside = fresh_name(path, PARTIAL_SUFFIX, lambda name: os.rename(path, name))
        except OSError as exc:
            raise TargetError(
                f"{path}: cannot remove it ({exc.strerror or exc}; nothing was removed)"
            ) from exc
        try:
            shutil.rmtree(aside)
        except OSError as exc:
            raise TargetError(
                f"{path}: moved aside to {aside.name} but not removed whole ({exc.strerror or exc}"
                f"); remove {aside} by hand, then rerun"
            ) from exc

    def is_own_node(self, name: str) -> bool:
        return MARKER in name.strip("/").split("/")

    def _done_dir(self) -> Path:
        done = self.marker / DONE_DIR
        return done if self._zarr_format() == 2 else done / "c"

    def _zarr_format(self) -> int:
        """2 when the output (or its marker) is Zarr v2, else 3."""
        v2 = (self.path / ".zgroup").is_file() or (self.marker / ".zgroup").is_file()
        return 2 if v2 else 3

    def _attrs_file(self) -> Path:
        return self.marker / (".zattrs" if self._zarr_format() == 2 else "zarr.json")

    def _read_attrs(self) -> dict[str, Any]:
        file = self._attrs_file()
        if not file.is_file():
            return {}
        data = json.loads(file.read_text())
        return dict(data if file.name == ".zattrs" else data.get("attributes", {}))

    def _write_attrs(self, attrs: dict[str, Any]) -> None:
        file = self._attrs_file()
        if file.name == ".zattrs":
            write_json_atomic(file, attrs)
        else:
            write_json_atomic(file, {"zarr_format": 3, "node_type": "group", "attributes": attrs})

    def _update_attrs(self, **changes: Any) -> None:
        attrs = self._read_attrs()
        attrs.update(changes)
        self._write_attrs(attrs)

    def _create_marker(self, record: RunRecord) -> None:
        """The marker group and its empty done-units array, in the output's Zarr format."""
        (self.marker / DONE_DIR).mkdir(parents=True)
        if (self.path / ".zgroup").is_file():
            write_json_atomic(self.marker / ".zgroup", {"zarr_format": 2})
        self._create_array(self.marker / DONE_DIR, shape=LEDGER_LENGTH, dimension="unit")
        self._write_attrs({"run": record.to_dict(), "state": {}, "complete": False})

    def _array_metadata(self, folder: Path) -> Path:
        return folder / (".zarray" if self._zarr_format() == 2 else "zarr.json")

    def _create_array(self, folder: Path, *, shape: int, dimension: str) -> None:
        """The metadata of a one-dimensional uint8 array of single-byte chunks at ``folder``
        (created with its parents), in the output's Zarr format."""
        if self._zarr_format() == 2:
            metadata: dict[str, Any] = {
                "zarr_format": 2, "shape": [shape], "chunks": [1], "dtype": "|u1",
                "compressor": None, "fill_value": 0, "filters": None, "order": "C",
                "dimension_separator": "/",
            }  # fmt: skip
        else:
            metadata = {
                "zarr_format": 3, "node_type": "array", "shape": [shape], "data_type": "uint8",
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1]}},
                "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
                "fill_value": 0, "codecs": [{"name": "bytes"}], "attributes": {},
                "dimension_names": [dimension],
            }  # fmt: skip
        write_json_atomic(self._array_metadata(folder), metadata)
