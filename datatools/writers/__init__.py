"""Buffered array writers: arrays that grow along axis 0 (rows), written as whole chunk rows.

A writer holds one or more arrays that grow in lockstep, e.g. ``patches (n, 64, 64)`` with
``origins (n, 3)``: every call gives all of them the same number of rows. Rows are buffered
until a whole chunk row of an array is ready; only whole chunk rows are written, the tails at
:meth:`ArrayWriter.close`, so no chunk is ever read back and rewritten. Arrays may have their
own rows per chunk (:attr:`ArraySpec.chunk_rows`); arrays with the same chunk rows form a
*stream*, flushed together. With ``groups``, the arrays are stored in each of several
subgroups (one per class, say), and each subgroup grows on its own (:meth:`ArrayWriter.group`).

Targets (same interface):

- Zarr group (v3 default, v2 on request), a folder owned through
  :class:`datatools.ledger.ZarrLedger`::

      train.zarr/
          zarr.json (v3) | .zgroup + .zattrs (v2)
              the caller's ``attributes``, and {"datatools": {"rows": n, "chunk_rows": c,
              "complete": bool}} set when a writer opens and closes
          patches/, origins/, ...   arrays (n, *item_shape), chunks (chunk_rows, *item_chunks);
                                    the shapes follow the recorded rows
          class_1/, class_2/, ...   with ``groups``: subgroups (their own attributes) holding
                                    the arrays instead of the root
          .datatools/               the marker group: run record (the command of the
                                    caller's ``record``, default "write"; params = the layout
                                    plus the record's params under "options"), state
                                    {"rows": n} (and "group_rows") rewritten after every
                                    flush of a growing writer, complete flag set by a normal
                                    close; its ledger lists the chunk rows
                                    :meth:`ArrayWriter.write_rows` wrote

  The group, its attributes and its empty arrays are built in a temporary folder that is
  renamed into place, so an output of ours never lacks its attributes.

- HDF5 file (``.h5`` / ``.hdf5``): one resizable dataset per array at the root or in each
  subgroup (``maxshape=(None, ...)``, chunks ``(chunk_rows, *item_chunks)``), attributes set
  at creation (numbers, strings, numeric lists; anything else as JSON text), claimed through
  :class:`datatools.ledger.Hdf5Ledger`: written as ``<name>.datatools-partial`` and renamed
  at a normal close (an ``overwrite`` keeps the finished file until then). The root
  attribute ``datatools`` is JSON ``{"command", "params", "version", "rows", "complete"}``
  (plus ``"group_rows"``, and ``"done"`` for positional fill once a chunk row is written),
  rewritten and flushed after every flush.

Crash safety: chunk data are written first, then the array shapes, then the row count, so a
killed process (kill -9, out-of-memory kill, job time limit) leaves an output whose recorded
row count covers only rows every array holds, and ``append=True`` continues from there. Chunk
files a killed run wrote past the recorded rows are invisible to readers and are overwritten
before the arrays grow over them. With streams of different chunk rows, the recorded count
follows the stream that flushed least (a kill loses at most the largest chunk row). The
guarantee is against killed processes: chunk data are not fsynced, so after a power loss the
last rows may need rewriting.

Zarr chunks are encoded with the numcodecs codec of :mod:`datatools.sinks.codecs` (the bytes Zarr
stores) and written straight to the chunk files by :class:`datatools.sinks.chunk_files.ChunkFiles`;
this avoids zarr-python's per-chunk overhead (``scripts/bench_writers.py`` measures it).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datatools.errors import OptionError
from datatools.ledger import RunRecord, open_ledger
from datatools.options import OutputOptions
from datatools.sinks.codecs import parse_codec
from datatools.stores import HDF5_SUFFIXES, is_hdf5_target
from datatools.writers._hdf5 import open_hdf5
from datatools.writers._layout import (
    COMMAND,
    ArraySpec,
    Setup,
    SpecLike,
    check_name,
    check_rows,
    check_spec,
    json_ready,
    make_streams,
)
from datatools.writers._writer import ArrayWriter, GroupWriter
from datatools.writers._zarr import open_zarr

__all__ = [
    "COMMAND",
    "DEFAULT_CHUNK_ROWS",
    "DEFAULT_NAME",
    "HDF5_SUFFIXES",
    "ArraySpec",
    "ArrayWriter",
    "GroupWriter",
    "RunRecord",
    "StoredRun",
    "open_writer",
    "read_run",
]

DEFAULT_NAME = "data"
"""Name of the array of a single-array writer."""
DEFAULT_CHUNK_ROWS = 256
"""Rows per chunk along axis 0 when the options give none."""


def open_writer(
    target: str | Path,
    arrays: Mapping[str, SpecLike] | SpecLike,
    options: OutputOptions | None = None,
    *,
    total_rows: int | None = None,
    groups: Sequence[str] | Mapping[str, Mapping[str, Any]] | None = None,
    record: RunRecord | None = None,
    attributes: Mapping[str, Any] | None = None,
    append: bool = False,
    **overrides: Any,
) -> ArrayWriter:
    """Open a buffered writer on a Zarr group or an HDF5 file (``.h5`` / ``.hdf5``).

    Every array is stored as ``(rows, *item_shape)``: axis 0 counts rows (patches, instances,
    ...), the item axes follow in C order, e.g. ``(n, y, x)`` or ``(n, c, z, y, x)``.
    Example::

        with open_writer("train.zarr", {"patches": ((64, 64), "uint8"),
                                        "origins": ((3,), "int64")}, chunk_rows=256) as w:
            w.append(patches=p_batch, origins=o_batch)

    Peak memory: one chunk row per array and group (``chunk_rows x item bytes``, the
    buffers), plus one padded and one encoded chunk, besides the caller's batch; e.g. 256 rows
    of 64 x 64 uint8 patches buffer 1 MiB.

    Args:
        target: the Zarr group folder or the HDF5 file to write.
        arrays: name -> :class:`ArraySpec` or ``(item_shape, dtype)``; a single spec writes one
            array named ``"data"`` that :meth:`ArrayWriter.append` takes positionally.
        options: how the output is stored (:class:`~datatools.options.OutputOptions`), ``None``
            for the defaults; its fields may also be given flat (``overrides``). Used:
            ``chunk_rows`` (rows per chunk along axis 0, for every array whose spec gives
            none; ``None``: 256), ``codec`` (``zstd``, the Zarr default, ``blosc-zstd``,
            ``blosc-lz4``, ``gzip``, the HDF5 default, ``lzf`` for HDF5 only, or ``none``),
            ``codec_level`` (``None`` for the codec's default), ``zarr_format`` (3 or 2;
            ignored for HDF5) and ``overwrite`` (replace an existing output of datatools; a
            foreign one is still refused, an unreadable ``<name>.datatools-partial`` HDF5 file
            counts as ours by its name). ``chunks`` and ``shards`` must stay ``None``: item
            chunks come from each :class:`ArraySpec`, and row outputs are not sharded.
        total_rows: for positional fill with :meth:`ArrayWriter.write_rows`: the final row
            count, fixed from the start; ``None`` for a writer that grows with ``append``.
        groups: store the arrays in these subgroups instead of the root, each growing on its
            own (growing writers only); a mapping gives each subgroup's attributes.
        record: the caller's run record: its ``command`` is recorded as the output's maker
            (``datatools info`` shows it; ``None``: ``"write"``), its JSON-ready ``params``
            with the layout, and ``append`` checks them like the layout. Its ``version`` is
            not used: the output records the running datatools's.
        attributes: JSON-ready attributes of the root group, written when it is created
            (an ``append`` keeps the stored ones); the key ``datatools`` is the writer's.
        append: continue an existing output of a writer with the same command, layout and
            params (or create it); several processes filling one Zarr target by
            ``write_rows`` all pass ``True``.
        **overrides: fields of ``options`` given flat (``chunk_rows=256``, ``codec="gzip"``,
            ``zarr_format=2``, ``overwrite=True``). Deprecated for one release, with a
            :class:`DeprecationWarning`: ``level`` (now ``codec_level``), and ``command`` and
            ``params`` (now ``record=RunRecord(command, params)``).

    Raises:
        OptionError: an invalid array spec, chunk size, codec, format, group, attribute or
            option combination, or an unknown option.
        TargetError: the target exists (without ``append`` / ``overwrite``), is not ours, was
            made by another command, or its parent folder is missing.
        ResumeMismatchError: ``append`` to an output with another layout or params; names
            the difference.
        WriteError: the output cannot be created.
    """
    path = Path(target)
    record, overrides = _caller_record(record, overrides)
    zarr_format = overrides.get("zarr_format", 3)  # refused in the keyword's own name
    if zarr_format not in (2, 3):
        raise OptionError(f"zarr_format {zarr_format}: choose 2 or 3")
    output = _row_storage((options or OutputOptions()).with_overrides(**overrides))
    chunk_rows = check_rows(output.chunk_rows, "chunk_rows")
    if append and output.overwrite:
        raise OptionError(f"{path}: append=True and overwrite=True exclude each other (pick one)")
    if total_rows is not None and total_rows < 0:
        raise OptionError(f"total_rows {total_rows}: must be 0 or more")
    if not isinstance(record.command, str) or not record.command:
        raise OptionError(f"command {record.command!r}: must be a non-empty name")
    hdf5 = is_hdf5_target(path)
    chosen = parse_codec(
        output.codec or ("gzip" if hdf5 else "zstd"), output.codec_level, hdf5=hdf5
    )
    specs = arrays if isinstance(arrays, Mapping) else {DEFAULT_NAME: arrays}
    if not specs:
        raise OptionError("arrays: give at least one array")
    layouts = tuple(check_spec(name, spec, chunk_rows) for name, spec in specs.items())
    group_attributes = _check_groups(groups, total_rows)
    root_attributes = dict(json_ready(dict(attributes or {}), "attributes"))
    if "datatools" in root_attributes:
        raise OptionError("attributes: the key 'datatools' is the writer's (choose another)")
    streams = make_streams(layouts, total_rows)
    record_params: dict[str, Any] = {
        "format": "hdf5" if hdf5 else f"zarr{output.zarr_format}",
        "chunk_rows": chunk_rows,
        "codec": chosen.name,
        "level": chosen.effective_level,
        "total_rows": total_rows,
        "groups": list(group_attributes) or None,
        "arrays": {lay.name: lay.to_dict() for lay in layouts},
        "options": json_ready(dict(record.params or {}), "params"),
    }
    if total_rows is not None:
        record_params["units_total"] = sum(s.units for s in streams)
    setup = Setup(
        path,
        RunRecord(record.command, record_params),
        layouts,
        chunk_rows,
        total_rows,
        chosen,
        append,
        {"": root_attributes, **group_attributes},
    )
    backend = (
        open_hdf5(setup, overwrite=output.overwrite)
        if hdf5
        else open_zarr(setup, 2 if output.zarr_format == 2 else 3, overwrite=output.overwrite)
    )
    return ArrayWriter(setup, streams, backend)


def _caller_record(
    record: RunRecord | None, overrides: Mapping[str, Any]
) -> tuple[RunRecord, dict[str, Any]]:
    """The caller's run record (``"write"`` with no params by default) and the overrides left;
    the old keywords ``command`` and ``params`` still make it, with a warning.

    Raises:
        OptionError: ``record`` together with ``command`` or ``params``.
    """
    old = {name: overrides[name] for name in ("command", "params") if name in overrides}
    rest = {name: value for name, value in overrides.items() if name not in old}
    if not old:
        return record or RunRecord(COMMAND, {}), rest
    if record is not None:
        raise OptionError(
            f"{' and '.join(old)}: give them in record= only (record=RunRecord(command, params))"
        )
    named = " and ".join(f"{name}=" for name in old)
    warnings.warn(
        f"{named} {'is' if len(old) == 1 else 'are'} deprecated: use "
        "record=RunRecord(command, params)",
        DeprecationWarning,
        stacklevel=3,
    )
    return RunRecord(old.get("command", COMMAND), old.get("params") or {}), rest


def _row_storage(output: OutputOptions) -> OutputOptions:
    """``output`` with the default chunk rows; refuses settings of image outputs.

    Raises:
        OptionError: ``chunks`` or ``shards`` given.
    """
    if output.chunks is not None:
        raise OptionError(
            f"chunks {output.chunks}: a row writer takes chunk_rows along axis 0 and each "
            "array's item chunks from its ArraySpec(item_chunks=...)"
        )
    if output.shards is not None:
        raise OptionError(f"shards {output.shards}: row outputs are not sharded (leave it None)")
    if output.chunk_rows is None:
        return dataclasses.replace(output, chunk_rows=DEFAULT_CHUNK_ROWS)
    return output


def _check_groups(
    groups: Sequence[str] | Mapping[str, Mapping[str, Any]] | None, total_rows: int | None
) -> dict[str, dict[str, Any]]:
    """The attributes of each group (none for arrays at the root).

    Raises:
        OptionError: no group, a bad or repeated name, attributes that are not JSON, or
            groups with ``total_rows``.
    """
    if groups is None:
        return {}
    if isinstance(groups, str):
        raise OptionError(f"groups: give a list of names, not the text {groups!r}")
    names = tuple(check_name(name, "groups") for name in groups)
    if not names or len(set(names)) != len(names):
        raise OptionError(f"groups: {list(names)} must name at least one group, each once")
    if total_rows is not None:
        raise OptionError(
            "groups: positional fill (total_rows) writes arrays at the root only (open one "
            "writer without groups)"
        )
    given = groups if isinstance(groups, Mapping) else {}
    return {
        name: dict(json_ready(dict(given.get(name) or {}), f"groups: {name} attributes"))
        for name in names
    }


@dataclass(frozen=True)
class StoredRun:
    """What an existing output of datatools records about the run that made it.

    Attributes:
        command: the command that made it (``"write"`` for plain writers).
        params: the ``params`` its writer was given (empty for outputs made otherwise).
        complete: it was finished.
    """

    command: str
    params: dict[str, Any]
    complete: bool


def read_run(target: str | Path) -> StoredRun | None:
    """The record of the output at ``target`` (a Zarr group of ours, or an HDF5 file or its
    unfinished ``.datatools-partial`` file); ``None`` when there is none (nothing there, or
    something datatools did not make), so a caller can check its options before writing."""
    output = open_ledger(target)
    record = output.read_record()
    if record is None:
        return None
    options = dict(record.params.get("options") or {})
    return StoredRun(record.command, options, output.is_complete())
