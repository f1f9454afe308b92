"""The one record of an output: ownership marker, run record, done units, state, completion.

Every command, the row writers, ``info``, ``verify`` and the loaders reach an output's ledger
through :func:`open_ledger`, which picks the implementation by the target's kind:

- :mod:`~datatools.ledger.interface`: :class:`OutputLedger`, what every ledger does;
- :mod:`~datatools.ledger.record`: :class:`RunRecord`, :class:`TargetStatus` and
  :func:`diff_params`, the comparison of two runs on resume;
- :mod:`~datatools.ledger.fingerprint`: the inputs' files as a run record keeps them, so that
  a resume against a changed input is refused;
- :mod:`~datatools.ledger.zarr_folder`: :class:`ZarrLedger`, the ``.datatools`` marker group
  inside a Zarr folder;
- :mod:`~datatools.ledger.lease`: one live run per Zarr output (its lease), the task count of
  a job array;
- :mod:`~datatools.ledger.hdf5_file`: :class:`Hdf5Ledger`, the record attribute and done
  units inside an HDF5 file, written under a partial name until complete;
- :mod:`~datatools.ledger.target_checks`: where an output may be written;
- :mod:`~datatools.ledger.atomic_files`: JSON and attribute files replaced atomically;
- :mod:`~datatools.ledger.leftovers`: what killed runs leave in and beside an output, listed
  and cleaned.

The path functions below (:func:`is_ours`, :func:`is_complete`, ...) are shortcuts for
``open_ledger(path).<method>()``; :func:`claim` claims a Zarr folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from datatools.ledger.atomic_files import update_attributes, write_json_atomic
from datatools.ledger.fingerprint import (
    SOURCE_FILES,
    changed_files,
    check_same_sources,
    fingerprint_files,
    standing_files,
)
from datatools.ledger.hdf5_file import Hdf5Ledger, partial_path
from datatools.ledger.interface import PARTIAL_SUFFIX, Claimed, OutputLedger
from datatools.ledger.leftovers import STRAY_GRACE_SECONDS, clean_stray_files, find_stray_files
from datatools.ledger.record import RunRecord, TargetStatus, check_same_run, diff_params
from datatools.ledger.target_checks import (
    check_folder_name,
    check_not_input,
    check_target_location,
    is_absent,
)
from datatools.ledger.zarr_folder import MARKER, ZarrLedger
from datatools.stores import is_hdf5_target

__all__ = [
    "MARKER",
    "PARTIAL_SUFFIX",
    "SOURCE_FILES",
    "STRAY_GRACE_SECONDS",
    "Claimed",
    "Hdf5Ledger",
    "OutputLedger",
    "RunRecord",
    "TargetStatus",
    "ZarrLedger",
    "changed_files",
    "check_folder_name",
    "check_not_input",
    "check_same_run",
    "check_same_sources",
    "check_target_location",
    "claim",
    "clean_stray_files",
    "diff_params",
    "find_stray_files",
    "fingerprint_files",
    "is_absent",
    "is_complete",
    "is_ours",
    "mark_complete",
    "open_ledger",
    "partial_path",
    "read_record",
    "renew_fingerprint",
    "standing_files",
    "status",
    "update_attributes",
    "write_json_atomic",
]


def open_ledger(path: str | Path) -> OutputLedger[Any]:
    """The ledger of the output at ``path``: an HDF5 file for a target named like one
    (:func:`datatools.stores.is_hdf5_target`, or its partial name), else a Zarr folder.
    Nothing is read or written until a method asks."""
    path = Path(path)
    name = path.name.removesuffix(PARTIAL_SUFFIX)
    if is_hdf5_target(name):
        return Hdf5Ledger(path.with_name(name))
    return ZarrLedger(path)


def is_ours(path: Path) -> bool:
    """Whether an output datatools made is at ``path``."""
    return open_ledger(path).is_ours()


def read_record(path: Path) -> RunRecord | None:
    """The run record of the output at ``path``, ``None`` when it is not one of ours."""
    return open_ledger(path).read_record()


def is_complete(path: Path) -> bool:
    """Whether the output at ``path`` is ours and complete."""
    return open_ledger(path).is_complete()


def status(path: Path) -> TargetStatus | None:
    """Progress of the output at ``path``, ``None`` when it is not one of ours."""
    return open_ledger(path).status()


def mark_complete(path: Path) -> None:
    """Mark the Zarr folder output at ``path`` complete (HDF5 files complete through the
    ledger that claimed them)."""
    ZarrLedger(path).mark_complete()


def renew_fingerprint(path: Path, record: RunRecord) -> None:
    """Give the run record of the Zarr folder output at ``path`` the inputs' fingerprint of
    ``record`` (this run's), keeping the rest: a resume that goes on from inputs changed
    where no finished unit read them makes later reruns compare with the files as they are
    now (:meth:`datatools.convert.job.ConvertJob.check_changed_inputs`)."""
    existing = ZarrLedger(path).read_record()
    if existing is None:
        return
    params = {**existing.params, SOURCE_FILES: record.params[SOURCE_FILES]}
    renewed = RunRecord(existing.command, params, existing.version)
    update_attributes(path / MARKER, {"run": renewed.to_dict()})


def claim(
    path: Path, record: RunRecord, *, overwrite: bool, populate: Callable[[Path], None]
) -> Claimed:
    """Create the Zarr folder output ``path`` or join a run with the same record; see
    :meth:`ZarrLedger.claim`.

    Raises:
        TargetError, ResumeMismatchError, WriteError: as :meth:`ZarrLedger.claim`.
    """
    return ZarrLedger(path).claim(record, overwrite=overwrite, populate=populate)
