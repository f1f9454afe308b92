"""HDF5 storage of a writer: one file, written as ``<name>.datatools-partial`` and renamed at a
normal close; its root attribute ``datatools`` (JSON) records the run and the progress."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from datatools import ledger as owned
from datatools.errors import TargetError, WriteError
from datatools.interrupts import deferred_interrupt
from datatools.writers._layout import Array, Backend, Setup

META = "datatools"
"""Root attribute holding ``{"command", "params", "version", "rows", "complete", ...}``."""


def partial_path(path: Path) -> Path:
    """The name an unfinished HDF5 output has."""
    return Path(f"{path}{owned.PARTIAL_SUFFIX}")


def open_hdf5(setup: Setup, *, overwrite: bool) -> Hdf5Backend:
    """Create the file under its partial name, or continue the final or partial file.

    Raises:
        TargetError, ResumeMismatchError: as :func:`datatools.writers.open_writer`.
        WriteError: the file cannot be created or opened.
    """
    final = setup.path
    partial = partial_path(final)
    owned.check_target_location(final)
    if partial.is_symlink():
        raise TargetError(f"{partial}: is a symbolic link (remove it or choose another target)")
    present = [p for p in (final, partial) if p.exists()]
    metas: dict[Path, dict[str, Any]] = {}
    for p in present:
        meta = read_meta(p)
        if meta is not None:
            metas[p] = meta
        elif p == partial and not overwrite:
            raise TargetError(
                f"{p}: unfinished file that HDF5 cannot read, left by a run killed while "
                "flushing (--overwrite replaces it)"
            )
        elif p != partial:
            raise TargetError(
                f"{p}: exists and is not a datatools output (choose another target; "
                "--overwrite only replaces outputs of datatools)"
            )
    if present and overwrite:
        for p in present:
            _remove(p)
    elif present:
        if not setup.append:
            raise setup.exists_error(
                "exists" if final in present else f"exists as the unfinished {partial.name}"
            )
        if len(present) == 2:
            raise TargetError(
                f"{final}: both it and {partial.name} exist (remove the one you do not want)"
            )
        setup.check_same(owned.RunRecord.from_dict(metas[present[0]]))
        if present[0] == final:
            os.replace(final, partial)
        return Hdf5Backend(setup, partial, _file(partial, "r+"), metas[present[0]])
    file = _file(partial, "w-")
    try:
        _create(file, setup)
        rows = setup.total_rows or 0
        meta = {
            **setup.record.to_dict(),
            **setup.state(dict.fromkeys(setup.groups, rows)),
            "complete": False,
        }
        if setup.total_rows is not None:
            meta["done"] = []
        return Hdf5Backend(setup, partial, file, meta)
    except BaseException:
        file.close()
        partial.unlink(missing_ok=True)
        raise


def _create(file: Any, setup: Setup) -> None:
    """Attributes, subgroups and empty resizable datasets (``total_rows`` rows, or 0)."""
    rows = setup.total_rows or 0
    for key, value in setup.attributes.items():
        file.attrs[key] = hdf5_value(value)
    for name in setup.groups:
        if name:
            group = file.create_group(name)
            for key, value in setup.group_attributes.get(name, {}).items():
                group.attrs[key] = hdf5_value(value)
    for _, key, lay in setup.keys:
        file.create_dataset(
            key,
            shape=(rows, *lay.item_shape),
            maxshape=(None, *lay.item_shape),
            chunks=lay.chunks,
            dtype=lay.dtype,
            **setup.codec.hdf5_kwargs(),
        )


def hdf5_value(value: Any) -> Any:
    """HDF5 attributes hold numbers, strings and numeric arrays; anything else as JSON text."""
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
        return np.asarray(value)
    return json.dumps(value)


def read_meta(path: Path) -> dict[str, Any] | None:
    """The ``datatools`` root attribute of an HDF5 file of ours, ``None`` for anything else."""
    import h5py

    try:
        with h5py.File(path, "r") as file:
            raw = file.attrs.get(META)
    except OSError:
        return None
    try:
        meta = json.loads(raw) if isinstance(raw, str | bytes) else None
    except ValueError:
        return None
    return meta if isinstance(meta, dict) and {"command", "params"} <= set(meta) else None


def read_hdf5_record(path: Path) -> tuple[owned.RunRecord, bool] | None:
    """The run record of an HDF5 output of datatools (the finished file, else the partial one)
    and whether it is complete; ``None`` when there is none."""
    for candidate in (path, partial_path(path)):
        meta = read_meta(candidate) if candidate.is_file() else None
        if meta is not None:
            complete = candidate == path and meta.get("complete", True) is True
            return owned.RunRecord.from_dict(meta), complete
    return None


def _file(path: Path, mode: str) -> Any:
    import h5py

    try:
        return h5py.File(path, mode)
    except OSError as exc:
        raise WriteError(f"{path}: cannot open for writing ({exc})") from exc


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError as exc:
        raise WriteError(f"{path}: cannot remove ({exc.strerror or exc})") from exc


class Hdf5Backend(Backend):
    """An HDF5 file written under its partial name; the root attribute records progress."""

    def __init__(self, setup: Setup, partial: Path, file: Any, meta: dict[str, Any]) -> None:
        self.path = setup.path
        self.partial = partial
        self.setup = setup
        self.growing = setup.total_rows is None
        self._file = file
        self._meta = meta
        self._datasets = {key: (group, file[key]) for group, key, _ in setup.keys}
        self.rows = setup.recorded_rows(meta)
        meta["complete"] = False
        if self.growing:
            self._resize()
        self._save()
        self._interrupt = ExitStack()
        self._check_interrupt = self._interrupt.enter_context(deferred_interrupt())

    def read_rows(self, key: str, start: int, stop: int) -> Array:
        return np.asarray(self._datasets[key][1][start:stop])

    def write(self, key: str, start: int, rows: Array) -> None:
        dataset, stop = self._datasets[key][1], start + len(rows)
        try:
            if dataset.shape[0] < stop:
                dataset.resize(stop, axis=0)
            dataset[start:stop] = rows
        except OSError as exc:
            raise WriteError(f"{self.partial}: cannot write rows ({exc})") from exc

    def record_rows(self, rows: Mapping[str, int]) -> None:
        self.rows.update(rows)
        self._meta.update(self.setup.state(self.rows))
        self._save()
        self._check_interrupt()  # Ctrl-C takes effect here, with the rows recorded

    def record_done(self, units: Iterable[int]) -> None:
        self._meta["done"] = sorted(set(self._meta["done"]).union(units))
        self._save()
        self._check_interrupt()

    def done(self) -> frozenset[int]:
        return frozenset(self._meta.get("done", ()))

    def finish(self, rows: Mapping[str, int]) -> None:
        self._meta.update(**self.setup.state(rows), complete=True)
        try:
            self._save()
        finally:
            self._file.close()
            self._interrupt.close()
        try:
            os.replace(self.partial, self.path)
        except OSError as exc:
            raise WriteError(f"{self.path}: cannot rename the finished file ({exc})") from exc

    def release(self) -> None:
        try:
            if self.growing:
                self._resize()
        finally:
            self._file.close()
            self._interrupt.close()

    def _resize(self) -> None:
        """Trim every dataset to its group's recorded rows (datasets of a growing writer are
        longer while some arrays flushed more rows than others)."""
        for group, dataset in self._datasets.values():
            if dataset.shape[0] != self.rows[group]:
                dataset.resize(self.rows[group], axis=0)

    def _save(self) -> None:
        try:
            self._file.attrs[META] = json.dumps(self._meta)
            self._file.flush()
        except OSError as exc:
            raise WriteError(f"{self.partial}: cannot record progress ({exc})") from exc
