"""HDF5 storage of a writer: one file claimed through :class:`datatools.ledger.Hdf5Ledger`
(written under a partial name, renamed at a normal close); the ledger's record attribute also
holds the rows and the chunk rows done. Every write gets its room on disk first and runs inside
:meth:`~datatools.ledger.Hdf5Ledger.writing`, so a full disk or the file size limit raises one
:class:`~datatools.errors.WriteError` and leaves the rows recorded before for the rerun."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from typing import Any

import numpy as np

from datatools.interrupts import deferred_interrupt
from datatools.ledger import Hdf5Ledger
from datatools.writers._layout import Array, Backend, Setup


def open_hdf5(setup: Setup, *, overwrite: bool) -> Hdf5Backend:
    """Create the file under its partial name, or continue the final or partial file.

    Raises:
        TargetError, ResumeMismatchError: as :func:`datatools.writers.open_writer`.
        WriteError: the file cannot be created or opened.
    """
    output = Hdf5Ledger(setup.path)
    setup.check_existing(output, overwrite=overwrite)
    outcome = output.claim(
        setup.record, overwrite=overwrite, populate=lambda file: _create(file, setup)
    )
    try:
        with output.writing():
            if outcome == "resumed":
                output.clear_complete()
            else:
                rows = setup.total_rows or 0
                output.write_state(setup.state(dict.fromkeys(setup.groups, rows)))
            return Hdf5Backend(setup, output)
    except BaseException:
        output.close()
        raise


def _create(file: Any, setup: Setup) -> None:
    """Attributes, subgroups and empty resizable datasets (``total_rows`` rows, or 0)."""
    rows = setup.total_rows or 0
    for name, attributes in setup.attributes.items():
        group = file.create_group(name) if name else file
        for key, value in attributes.items():
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


class Hdf5Backend(Backend):
    """An HDF5 file written under its partial name; its ledger records the progress."""

    def __init__(self, setup: Setup, output: Hdf5Ledger) -> None:
        self.path = setup.path
        self.setup = setup
        self.ledger = output
        self.growing = setup.total_rows is None
        self._datasets = {key: (group, output.file[key]) for group, key, _ in setup.keys}
        self.rows = setup.recorded_rows(output.read_state() if self.growing else {})
        if self.growing:
            self._resize()
        self._interrupt = ExitStack()
        self._check_interrupt = self._interrupt.enter_context(deferred_interrupt())

    def read_rows(self, key: str, start: int, stop: int) -> Array:
        return np.asarray(self._datasets[key][1][start:stop])

    def write(self, key: str, start: int, rows: Array) -> None:
        dataset, stop = self._datasets[key][1], start + len(rows)
        with self.ledger.writing():
            self.ledger.reserve(rows.nbytes)
            if dataset.shape[0] < stop:
                dataset.resize(stop, axis=0)
            dataset[start:stop] = rows

    def record_rows(self, rows: Mapping[str, int]) -> None:
        self.rows.update(rows)
        self._record_state(self.rows)
        self._check_interrupt()  # Ctrl-C takes effect here, with the rows recorded

    def record_done(self, units: Iterable[int]) -> None:
        with self.ledger.writing():
            self.ledger.mark_done(units)
        self._check_interrupt()

    def done(self) -> frozenset[int]:
        return self.ledger.done()

    def finish(self, rows: Mapping[str, int]) -> None:
        try:
            self._record_state(rows)
            with self.ledger.writing():
                self.ledger.mark_complete()
        finally:
            self.ledger.close()
            self._interrupt.close()

    def release(self) -> None:
        try:
            if self.growing and self.ledger.is_open:
                with self.ledger.writing():
                    self._resize()
        finally:
            self.ledger.close()
            self._interrupt.close()

    def _resize(self) -> None:
        """Trim every dataset to its group's recorded rows (datasets of a growing writer are
        longer while some arrays flushed more rows than others)."""
        for group, dataset in self._datasets.values():
            if dataset.shape[0] != self.rows[group]:
                dataset.resize(self.rows[group], axis=0)

    def _record_state(self, rows: Mapping[str, int]) -> None:
        with self.ledger.writing():
            self.ledger.write_state(self.setup.state(rows))
