"""The HDF5 target of ``convert``: one chunked, compressed dataset written by a single process.

The file is claimed through :class:`datatools.ledger.Hdf5Ledger` with the plan's unit count:
it is written under a partial name and takes its final name when every unit is in, so a file
with the final name is always complete; a rerun with the same options continues it, a rerun
with other options is refused. Each unit gets its room on disk before it is written
(:meth:`~datatools.ledger.Hdf5Ledger.reserve`), so a full disk or the file size limit stops the
run with one line and the rerun resumes. Memory: the units in flight (see
:mod:`datatools.convert`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datatools.convert.job import ConvertJob
from datatools.errors import OptionError
from datatools.executor import run_units
from datatools.interrupts import deferred_interrupt
from datatools.ledger import Hdf5Ledger
from datatools.progress import progress_bar


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
        WriteError: the file cannot be written (disk full, file too large); the units
            recorded before stay for the rerun.
    """
    plan = job.plan

    def populate(fh: Any) -> None:
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

    output = Hdf5Ledger(path)
    how = output.claim(job.record, overwrite=overwrite, populate=populate, units_total=plan.n_units)
    if output.is_complete():
        return [], plan.n_units, True
    unit_bytes = math.prod(plan.unit_shape) * job.out_dtype.itemsize
    written: list[int] = []
    try:
        with output.writing(), deferred_interrupt() as check_interrupt:
            ds = output.file[dataset]
            done = output.done()
            todo = [i for i in range(plan.n_units) if i not in done]
            with progress_bar(
                len(todo) * unit_bytes // 10**6, f"convert {path.name}", enabled=progress, unit="MB"
            ) as bar:
                readers = min(2, job.workers)
                for index, box, data in run_units(job.read_unit, todo, workers=readers):
                    output.reserve(data.nbytes)
                    ds[box.slices()] = data
                    output.mark_done([index])
                    written.append(index)
                    bar.update(unit_bytes / 1e6)
                    if on_unit_done is not None:
                        on_unit_done(index)
                    check_interrupt()
            output.mark_complete()
    except OptionError:
        if how == "created":  # it would only block the corrected command (see zarr_target.run)
            output.discard()
        raise
    finally:
        output.close()
    return written, plan.n_units - len(todo), True
