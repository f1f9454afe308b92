"""Zarr v2/v3 storage of a writer: a folder owned through :class:`datatools.ledger.ZarrLedger`.

Chunks are encoded and written as files by :class:`datatools.sinks.chunk_files.ChunkFiles` (each via
a temporary name and a rename; an all-zero chunk is not stored and reads as the fill value 0).
Array shapes and group attributes are edited in the metadata files directly, also atomically.
What killed runs left in or beside the group is cleaned when it is finished
(:mod:`datatools.ledger.leftovers`; in an output of fixed length, which several processes may
fill, only what is older than :data:`~datatools.ledger.STRAY_GRACE_SECONDS`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr

from datatools.errors import WriteError
from datatools.geometry import Box
from datatools.ledger import STRAY_GRACE_SECONDS, ZarrLedger, clean_stray_files
from datatools.sinks.chunk_files import ChunkFiles, write_file_atomic
from datatools.writers._layout import Array, Backend, Layout, Setup


def open_zarr(setup: Setup, zarr_format: Literal[2, 3], *, overwrite: bool) -> ZarrBackend:
    """Create the group (built in a temporary folder, renamed into place) or join it.

    Raises:
        TargetError, ResumeMismatchError: as :func:`datatools.writers.open_writer`.
        WriteError: the group cannot be created.
    """
    output = ZarrLedger(setup.path)
    setup.check_existing(output, overwrite=overwrite)

    def populate(folder: Path) -> None:
        _create(folder, setup, zarr_format)

    outcome = output.claim(setup.record, overwrite=overwrite, populate=populate)
    if outcome == "resumed" and not setup.append:  # another process created it meanwhile
        raise setup.exists_error(output)
    return ZarrBackend(setup, zarr_format, output, resumed=outcome == "resumed")


def _create(folder: Path, setup: Setup, zarr_format: Literal[2, 3]) -> None:
    """The group, its attributes, subgroups and empty arrays (``total_rows`` rows, or 0)."""
    rows = setup.total_rows or 0
    attributes = {
        **setup.attributes[""],
        "datatools": {"rows": rows, "chunk_rows": setup.chunk_rows, "complete": False},
    }
    root = zarr.create_group(str(folder), zarr_format=zarr_format, attributes=attributes)
    for name in setup.groups:
        group = (
            root if not name else root.create_group(name, attributes=dict(setup.attributes[name]))
        )
        for lay in setup.layouts:
            options: dict[str, Any] = {}
            if zarr_format == 3:
                options["compressors"] = setup.codec.zarr_compressors(lay.dtype)
                options["dimension_names"] = lay.dims
            else:
                options["compressors"] = setup.codec.encoder(lay.dtype)
                options["chunk_key_encoding"] = {"name": "v2", "separator": "."}
                if lay.dims is not None:
                    options["attributes"] = {"_ARRAY_DIMENSIONS": list(lay.dims)}
            group.create_array(
                lay.name,
                shape=(rows, *lay.item_shape),
                chunks=lay.chunks,
                dtype=lay.dtype,
                fill_value=0,
                filters=None,
                **options,
            )


@dataclass(frozen=True)
class _ZarrArray:
    """One Zarr array as the writer writes it."""

    layout: Layout
    group: str
    meta_file: Path
    meta: dict[str, Any]
    files: ChunkFiles
    blocks: list[tuple[tuple[int, ...], tuple[int, ...]]]


class ZarrBackend(Backend):
    """A Zarr v2/v3 group; progress in its ``.datatools`` marker (state, ledger, complete)."""

    def __init__(
        self, setup: Setup, zarr_format: Literal[2, 3], output: ZarrLedger, *, resumed: bool
    ) -> None:
        self.path = setup.path
        self.setup = setup
        self.ledger = output
        self.growing = setup.total_rows is None
        meta_name = "zarr.json" if zarr_format == 3 else ".zarray"
        self._group_file = self.path / ("zarr.json" if zarr_format == 3 else ".zattrs")
        self._group_doc = _load(self._group_file)
        self._attrs = self._group_doc["attributes"] if zarr_format == 3 else self._group_doc
        self.rows = setup.recorded_rows(output.read_state() if self.growing else {})
        self._arrays: dict[str, _ZarrArray] = {}
        for group, key, lay in setup.keys:
            folder = self.path / key
            meta = _load(folder / meta_name)
            if resumed and self.growing:
                meta["shape"][0] = self.rows[group]
                _save(folder / meta_name, meta)
            self._arrays[key] = _ZarrArray(
                lay,
                group,
                folder / meta_name,
                meta,
                ChunkFiles(folder, setup.codec.encoder(lay.dtype)),
                _blocks(lay),
            )
        if resumed:
            output.clear_complete()
            total = setup.total_rows or sum(self.rows.values())
            self._attrs["datatools"].update(rows=total, complete=False)
            _save(self._group_file, self._group_doc)
        elif self.growing:
            self._record_state()

    def read_rows(self, key: str, start: int, stop: int) -> Array:
        return np.asarray(zarr.open_array(str(self.path / key), mode="r")[start:stop])

    def write(self, key: str, start: int, rows: Array) -> None:
        arr = self._arrays[key]
        c = arr.layout.chunk_rows
        try:
            for first in range(0, len(rows), c):
                block_rows = rows[first : first + c]
                n = len(block_rows)
                for starts, stops in arr.blocks:
                    box = Box((start + first, *starts), (start + first + n, *stops))
                    where = tuple(slice(a, b) for a, b in zip(starts, stops, strict=True))
                    arr.files.write(box, block_rows[(slice(None), *where)])
        except OSError as exc:
            raise WriteError(
                f"{self.path / key}: cannot write rows ({exc.strerror or exc})"
            ) from exc

    def record_rows(self, rows: Mapping[str, int]) -> None:
        self.rows.update(rows)
        for arr in self._arrays.values():
            if arr.group in rows:
                arr.meta["shape"][0] = rows[arr.group]
                _save(arr.meta_file, arr.meta)
        self._record_state()

    def record_done(self, units: Iterable[int]) -> None:
        try:
            self.ledger.mark_done(units)
        except OSError as exc:
            raise WriteError(f"{self.path}: cannot record rows ({exc.strerror or exc})") from exc

    def done(self) -> frozenset[int]:
        return self.ledger.done()

    def finish(self, rows: Mapping[str, int]) -> None:
        self._attrs["datatools"].update(rows=sum(rows.values()), complete=True)
        _save(self._group_file, self._group_doc)
        try:
            # a growing writer is its output's only writer; several processes may fill one
            # of fixed length, and the others may still be finishing
            clean_stray_files(self.path, older_than=0.0 if self.growing else STRAY_GRACE_SECONDS)
            self.ledger.mark_complete()
        except OSError as exc:
            raise WriteError(f"{self.path}: cannot mark complete ({exc.strerror or exc})") from exc

    def release(self) -> None:
        """Nothing to do: every flush already left the group consistent."""

    def _record_state(self) -> None:
        """Record the rows durably in the marker (what ``append`` and ``info`` read)."""
        try:
            self.ledger.write_state(self.setup.state(self.rows))
        except OSError as exc:
            raise WriteError(f"{self.path}: cannot record rows ({exc.strerror or exc})") from exc


def _load(file: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(file.read_text())
    return doc


def _save(file: Path, doc: Mapping[str, Any]) -> None:
    try:
        write_file_atomic(file, json.dumps(doc).encode())
    except OSError as exc:
        raise WriteError(f"{file}: cannot write ({exc.strerror or exc})") from exc


def _blocks(lay: Layout) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Item starts and stops of the chunks of one chunk row (one entry for whole items)."""
    ranges = [range(0, n, c) for n, c in zip(lay.item_shape, lay.item_chunks, strict=True)]
    return [
        (
            tuple(starts),
            tuple(
                min(s + c, n)
                for s, c, n in zip(starts, lay.item_chunks, lay.item_shape, strict=True)
            ),
        )
        for starts in product(*ranges)
    ]
