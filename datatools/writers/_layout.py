"""What a writer writes: checked array specs, groups, streams, the run record, and the storage
interface both backends implement."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
from numpy.typing import DTypeLike

from datatools.dtypes import is_supported
from datatools.errors import OptionError, ResumeMismatchError, TargetError
from datatools.ledger import OutputLedger, RunRecord, diff_params
from datatools.sinks.codecs import Codec
from datatools.stores import NODE_NAME

Array: TypeAlias = np.ndarray[Any, Any]

COMMAND = "write"
"""Run-record command of outputs written without a ``command`` of their own."""
LAYOUT_KEYS = ("format", "chunk_rows", "codec", "level", "total_rows", "groups")
"""Record keys of the writer's own layout (besides ``arrays``), compared on append."""


@dataclass(frozen=True)
class ArraySpec:
    """One array of a writer, stored as ``(rows, *item_shape)``.

    Attributes:
        item_shape: shape of one row's item in C order, e.g. ``(y, x)`` or ``(c, z, y, x)``;
            ``()`` for one value per row.
        dtype: bool, integer or float dtype.
        item_chunks: chunk shape along the item axes; ``None`` keeps every item whole.
        dims: names of all axes including the row axis, e.g. ``("i", "y", "x")``; stored as
            Zarr v3 ``dimension_names`` or the Zarr v2 ``_ARRAY_DIMENSIONS`` attribute (HDF5
            does not store them).
        chunk_rows: rows per chunk of this array; ``None`` for the writer's ``chunk_rows``.
            Small per-row tables (ids, coordinates) can take many more rows per chunk than
            the images they describe.
    """

    item_shape: Sequence[int]
    dtype: DTypeLike
    item_chunks: Sequence[int] | None = None
    dims: Sequence[str] | None = None
    chunk_rows: int | None = None


SpecLike: TypeAlias = ArraySpec | tuple[Sequence[int], DTypeLike]


@dataclass(frozen=True)
class Layout:
    """A checked :class:`ArraySpec` with everything a backend needs."""

    name: str
    item_shape: tuple[int, ...]
    dtype: np.dtype[Any]
    item_chunks: tuple[int, ...]
    dims: tuple[str, ...] | None
    chunk_rows: int

    @property
    def chunks(self) -> tuple[int, ...]:
        """Chunk shape of the stored array, rows first."""
        return (self.chunk_rows, *self.item_chunks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_shape": list(self.item_shape),
            "dtype": self.dtype.name,
            "item_chunks": list(self.item_chunks),
            "dims": None if self.dims is None else list(self.dims),
            "chunk_rows": self.chunk_rows,
        }


def check_name(name: object, what: str) -> str:
    """Refuse a name that is not a plain file name (one level, no leading dot or dash).

    Raises:
        OptionError: naming ``what``.
    """
    if not isinstance(name, str) or not NODE_NAME.match(name):
        raise OptionError(
            f"{what}: name {name!r} is not usable (letters, digits, '_', '-' and '.', not "
            "starting with '.' or '-')"
        )
    return name


def check_rows(value: object, what: str) -> int:
    """A positive number of rows.

    Raises:
        OptionError: ``value`` is not a positive int.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"{what} {value}: must be a positive number of rows")
    return value


def check_spec(name: str, spec: SpecLike, chunk_rows: int) -> Layout:
    """Normalise one array spec; ``chunk_rows`` is the writer's default.

    Raises:
        OptionError: a bad name, shape, chunk shape, dtype, dims or chunk rows.
    """
    check_name(name, "arrays")
    if not isinstance(spec, ArraySpec):
        if not isinstance(spec, tuple) or len(spec) != 2:
            raise OptionError(f"arrays: {name} must be (item_shape, dtype) or an ArraySpec")
        spec = ArraySpec(spec[0], spec[1])
    shape = _positive_ints(spec.item_shape, f"{name} item_shape")
    try:
        dtype = np.dtype(spec.dtype)
    except TypeError as exc:
        raise OptionError(f"arrays: {name} dtype {spec.dtype!r} is not a dtype") from exc
    if not is_supported(dtype):
        raise OptionError(f"arrays: {name} dtype {dtype} is not supported (bool, int or float)")
    chunks = shape
    if spec.item_chunks is not None:
        chunks = _positive_ints(spec.item_chunks, f"{name} item_chunks")
        if len(chunks) != len(shape):
            raise OptionError(
                f"arrays: {name} item_chunks {chunks} must have one size per item axis {shape}"
            )
        chunks = tuple(min(c, s) for c, s in zip(chunks, shape, strict=True))
    dims = None
    if spec.dims is not None:
        dims = tuple(str(d) for d in spec.dims)
        if len(dims) != 1 + len(shape):
            raise OptionError(
                f"arrays: {name} dims {dims} must name the row axis and each item axis "
                f"({1 + len(shape)} names)"
            )
    rows = (
        chunk_rows if spec.chunk_rows is None else check_rows(spec.chunk_rows, f"{name} chunk_rows")
    )
    return Layout(name, shape, dtype.newbyteorder("="), chunks, dims, rows)


def _positive_ints(values: Sequence[int], what: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"arrays: {what} {values!r} must be a sequence of sizes") from exc
    if any(v < 1 for v in out):
        raise OptionError(f"arrays: {what} {out} must have positive sizes")
    return out


def json_ready(value: Any, what: str) -> Any:
    """``value`` as JSON gives it back (tuples become lists), so stored and new values compare.

    Raises:
        OptionError: ``value`` holds something JSON cannot store.
    """
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise OptionError(f"{what}: not storable as JSON ({exc})") from exc


@dataclass(frozen=True)
class Stream:
    """Arrays of one chunk-row size: flushed together, one ledger unit per chunk row.

    Attributes:
        chunk_rows: rows per chunk of every array in it.
        names: its arrays, in the writer's order.
        first_unit: ledger unit of its chunk row 0 (positional fill; streams follow each other).
        units: its chunk rows (positional fill: ``ceil(total_rows / chunk_rows)``; else 0).
    """

    chunk_rows: int
    names: tuple[str, ...]
    first_unit: int
    units: int

    def chunk_range(self, start: int, stop: int) -> range:
        """Chunk rows holding rows ``[start, stop)``."""
        return range(start // self.chunk_rows, -(-stop // self.chunk_rows))


def make_streams(layouts: Sequence[Layout], total_rows: int | None) -> tuple[Stream, ...]:
    """Group arrays by chunk rows, in order of first appearance."""
    sizes: dict[int, list[str]] = {}
    for lay in layouts:
        sizes.setdefault(lay.chunk_rows, []).append(lay.name)
    streams, first = [], 0
    for c, names in sizes.items():
        units = 0 if total_rows is None else -(-total_rows // c)
        streams.append(Stream(c, tuple(names), first, units))
        first += units
    return tuple(streams)


@dataclass(frozen=True)
class Setup:
    """What a backend opener needs: the target, its record, and the writer's layout.

    Attributes:
        chunk_rows: the writer's rows per chunk along axis 0 (arrays may have their own).
        total_rows: the final row count of a positional fill; ``None`` for a growing writer.
        attributes: by group name, written at creation: ``""`` the root group, then each
            subgroup holding the arrays (none when the arrays are at the root).
    """

    path: Path
    record: RunRecord
    layouts: tuple[Layout, ...]
    chunk_rows: int
    total_rows: int | None
    codec: Codec
    append: bool
    attributes: Mapping[str, Mapping[str, Any]]

    @property
    def groups(self) -> tuple[str, ...]:
        """``("",)`` for arrays at the root, else the subgroups holding them."""
        return tuple(name for name in self.attributes if name) or ("",)

    @property
    def keys(self) -> list[tuple[str, str, Layout]]:
        """``(group, key, layout)`` of every stored array; the key is its path in the output."""
        return [(g, array_key(g, lay.name), lay) for g in self.groups for lay in self.layouts]

    def state(self, rows: Mapping[str, int]) -> dict[str, Any]:
        """The progress record: ``rows`` in total, plus ``group_rows`` for subgroups."""
        state: dict[str, Any] = {"rows": sum(rows.values())}
        if self.groups != ("",):
            state["group_rows"] = dict(rows)
        return state

    def recorded_rows(self, state: Mapping[str, Any]) -> dict[str, int]:
        """Rows per group from a progress record made by :meth:`state` (0 when absent)."""
        rows = state.get("group_rows") or {"": state.get("rows", 0)}
        return {g: int(rows.get(g, 0)) for g in self.groups}

    def check_same(self, existing: RunRecord) -> None:
        """Refuse to append to an output of another command, layout or options.

        Raises:
            TargetError: another command made it.
            ResumeMismatchError: the layout or the options differ; names each difference.
        """
        if existing.command != self.record.command:
            who = (
                "a writer" if self.record.command == COMMAND else f"datatools {self.record.command}"
            )
            raise TargetError(
                f"{self.path}: was made by datatools {existing.command}, not by {who} (choose "
                "another target)"
            )
        differences = _layout_diff(existing.params, self.record.params)
        if differences:
            raise ResumeMismatchError(
                f"{self.path}: cannot append, {differences} (append with the same arrays, "
                "chunk_rows and codec, or --overwrite to replace it)"
            )
        old = RunRecord(existing.command, dict(existing.params.get("options") or {}))
        new = RunRecord(existing.command, dict(self.record.params["options"]))
        differences = diff_params(old, new)
        if differences:
            raise ResumeMismatchError(
                f"{self.path}: cannot append, {differences} (append with the same options, or "
                "--overwrite to replace it)"
            )

    def check_existing(self, output: OutputLedger[Any], *, overwrite: bool) -> None:
        """Refuse an existing output of ours unless this writer appends to it with the same
        command, layout and options (or overwrites it). Foreign and unreadable targets are
        the ledger's to refuse (:meth:`~datatools.ledger.OutputLedger.claim`).

        Raises:
            TargetError: the output exists (without ``append``), or another command made it.
            ResumeMismatchError: as :meth:`check_same`.
        """
        existing = None if overwrite else output.read_record()
        if existing is None:
            return
        if not self.append:
            raise self.exists_error(output)
        self.check_same(existing)

    def exists_error(self, output: OutputLedger[Any]) -> TargetError:
        """The output is there and this writer does not append; names its unfinished file."""
        where = output.location()
        what = "exists" if where == self.path else f"exists as the unfinished {where.name}"
        return TargetError(
            f"{self.path}: {what} (append to continue it, or --overwrite to replace it)"
        )


def array_key(group: str, name: str) -> str:
    """Path of array ``name`` of ``group`` inside the output."""
    return f"{group}/{name}" if group else name


def _layout_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """Layout settings that differ between an existing output and a new writer, as text."""
    parts = [
        f"{key} was {json.dumps(old.get(key))}, now {json.dumps(new.get(key))}"
        for key in LAYOUT_KEYS
        if old.get(key) != new.get(key)
    ]
    old_arrays, new_arrays = old.get("arrays", {}), new["arrays"]
    if sorted(old_arrays) != sorted(new_arrays):
        parts.append(
            f"arrays were {json.dumps(sorted(old_arrays))}, now {json.dumps(sorted(new_arrays))}"
        )
    else:
        for name, spec in new_arrays.items():
            parts.extend(
                f"{name} {key} was {json.dumps(old_arrays[name].get(key))}, now {json.dumps(value)}"
                for key, value in spec.items()
                if old_arrays[name].get(key) != value
            )
    return "; ".join(parts)


class Backend(ABC):
    """Storage of a writer: writes whole chunks and records progress durably.

    Arrays are addressed by key (:func:`array_key`); row counts by group.
    """

    rows: dict[str, int]
    """Rows recorded per group by :meth:`record_rows` (growing writers; 0 for positional fill)."""

    @abstractmethod
    def read_rows(self, key: str, start: int, stop: int) -> Array:
        """Rows ``[start, stop)`` of array ``key`` (the tail chunk row when appending)."""

    @abstractmethod
    def write(self, key: str, start: int, rows: Array) -> None:
        """Write ``rows`` from row ``start`` on (a chunk boundary of the array): whole chunks,
        or a final tail."""

    @abstractmethod
    def record_rows(self, rows: Mapping[str, int]) -> None:
        """Set the arrays' length per group and record ``rows`` durably (after :meth:`write`)."""

    @abstractmethod
    def record_done(self, units: Iterable[int]) -> None:
        """Record ledger units written by positional fill (after :meth:`write`)."""

    @abstractmethod
    def done(self) -> frozenset[int]:
        """Ledger units recorded by :meth:`record_done`."""

    @abstractmethod
    def finish(self, rows: Mapping[str, int]) -> None:
        """Mark the output complete with ``rows`` rows per group and release it."""

    @abstractmethod
    def release(self) -> None:
        """Release the output without marking it complete (it keeps what was recorded)."""
