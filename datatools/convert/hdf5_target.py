"""The HDF5 target of ``convert``: one chunked, compressed dataset written by a single process.

The file is written as ``<name>.h5.datatools-partial`` and renamed when every unit is in, so a
file with the final name is always complete. The partial file carries the run record (root
attribute ``datatools``, JSON) and a ledger dataset (one byte per unit, flushed after each
unit); a rerun with the same options continues it, a rerun with other options is refused.
Memory: the units in flight (see :mod:`datatools.convert`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from datatools import ledger
from datatools.convert.plan import ConvertJob
from datatools.errors import (
    OptionError,
    ResumeMismatchError,
    TargetError,
    WriteError,
)
from datatools.executor import run_units
from datatools.interrupts import deferred_interrupt
from datatools.progress import progress_bar

RECORD_ATTR = "datatools"
LEDGER = "_datatools_ledger"


def partial_path(path: Path) -> Path:
    """Where an unfinished HDF5 output lives until it is complete."""
    return path.with_name(path.name + ledger.PARTIAL_SUFFIX)


def read_record(path: Path) -> ledger.RunRecord | None:
    """The run record of an HDF5 file datatools wrote, or ``None`` for any other file."""
    import h5py

    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as fh:
            raw = fh.attrs.get(RECORD_ATTR)
    except OSError:
        return None
    if raw is None:
        return None
    data = json.loads(raw)
    return ledger.RunRecord.from_dict(data) if "params" in data else None


def is_torn(path: Path) -> bool:
    """Whether HDF5 cannot open ``path`` at all (torn by a killed writer).

    Raises:
        TargetError: another process holds the file open for writing.
    """
    import h5py

    try:
        with h5py.File(path, "r"):
            return False
    except OSError as exc:
        if "unable to lock file" in str(exc):
            raise TargetError(
                f"{path}: another process is writing it (wait for it, or choose another target)"
            ) from exc
        return True


def existing_record(path: Path) -> ledger.RunRecord | None:
    """The record of an unfinished (preferred) or finished HDF5 output at ``path``."""
    return read_record(partial_path(path)) or read_record(path)


def run(
    job: ConvertJob,
    path: Path,
    dataset: str,
    *,
    overwrite: bool,
    progress: bool,
    on_unit_done: Callable[[int], None] | None,
) -> tuple[list[int], int, bool]:
    """Write ``job`` into the HDF5 file ``path``; returns (units written, units skipped, done).

    Raises:
        TargetError: ``path`` (or its partial file) exists and is not ours.
        ResumeMismatchError: it holds a run with other options (without ``overwrite``).
        WriteError: the file cannot be written.
    """
    import h5py

    partial = partial_path(path)
    ledger.check_target_location(path)
    for candidate in (path, partial):
        if not candidate.exists():
            continue
        record = read_record(candidate)
        if record is None and candidate == partial and is_torn(partial):
            if not overwrite:
                raise TargetError(
                    f"{partial}: unfinished file that HDF5 cannot read, left by a run killed "
                    "while writing (--overwrite replaces it)"
                )
            partial.unlink()
            continue
        if record is None or record.command != "convert":
            raise TargetError(
                f"{candidate}: exists and is not an output of datatools (choose another target)"
            )
        if overwrite:
            if candidate == partial:
                candidate.unlink()
            continue  # a finished file stays until the new one replaces it whole
        differences = ledger.diff_params(record, job.record)
        if differences:
            raise ResumeMismatchError(
                f"{candidate}: exists from a run with other options ({differences}); rerun with "
                "the same options to resume, or add --overwrite to replace it"
            )
        if candidate == path:
            return [], job.plan.n_units, True
    created = not partial.exists()
    try:
        fh = h5py.File(partial, "a")
    except OSError as exc:
        raise WriteError(f"{partial}: cannot open for writing ({exc})") from exc
    plan = job.plan
    unit_bytes = math.prod(plan.unit_shape) * job.out_dtype.itemsize
    written: list[int] = []
    with fh:
        if RECORD_ATTR not in fh.attrs:
            fh.attrs[RECORD_ATTR] = json.dumps(job.record.to_dict())
            ds = fh.create_dataset(
                dataset,
                shape=plan.shape,
                dtype=job.out_dtype,
                chunks=plan.chunks,
                **job.codec.hdf5_kwargs(),
            )
            ds.attrs["axes"] = job.axes
            ds.attrs["voxel_size"] = list(job.placement.voxel_size)
            ds.attrs["translation"] = list(job.placement.translation)
            ds.attrs["unit"] = job.placement.unit or ""
            fh.create_dataset(LEDGER, shape=(plan.n_units,), dtype="uint8")
        ds = fh[dataset]
        marks = fh[LEDGER]
        done = np.asarray(marks[:]).astype(bool)
        todo = [i for i in range(plan.n_units) if not done[i]]
        with progress_bar(
            len(todo) * unit_bytes // 10**6, f"convert {path.name}", enabled=progress, unit="MB"
        ) as bar:
            try:
                readers = min(2, job.workers)
                with deferred_interrupt() as check_interrupt:
                    for index, box, data in run_units(job.read_unit, todo, workers=readers):
                        ds[box.slices()] = data
                        marks[index] = 1
                        fh.flush()
                        written.append(index)
                        bar.update(unit_bytes / 1e6)
                        if on_unit_done is not None:
                            on_unit_done(index)
                        check_interrupt()
            except OSError as exc:
                raise WriteError(f"{partial}: write failed ({exc}); rerun to resume") from exc
            except OptionError:
                if created:  # it would only block the corrected command (see zarr_target.run)
                    fh.close()
                    partial.unlink()
                raise
        del fh[LEDGER]
    os.replace(partial, path)
    return written, plan.n_units - len(todo), True
