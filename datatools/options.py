"""Options as typed values: one frozen dataclass per command, built once and carried unchanged
from the CLI (or a Python call) to the plan, a Dask worker and a job-array task.

Each command's options class (:class:`datatools.convert.ConvertOptions`,
:class:`datatools.patches.PatchOptions`, :class:`datatools.instances.InstanceOptions`) holds
its own settings plus the shared :class:`OutputOptions` (how the output is stored) and
:class:`RunOptions` (how the work runs). :class:`Options` gives them:

- ``to_dict()`` / ``from_dict()``: JSON-ready values (tuples as lists, nested options as
  dicts), round-tripping exactly; the run record stored in an output keeps ``recorded()``
  (``to_dict()`` without how the work ran) under ``options``, for the reader: resumes compare
  the resolved values the command records beside it (chunk shapes, ROI box, codec level).
- ``with_overrides(**overrides)``: a copy with fields replaced by name, where a field of a
  nested group (``chunks``, ``codec``, ``workers``, ...; at any depth) may be given flat, as
  public calls take them: ``convert("stack", "out.zarr", chunks=32)``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any, Self

from datatools.errors import OptionError
from datatools.executor import TaskSlice

DEPRECATED_NAMES = {"level": "codec_level"}
"""Old keyword names still accepted (with a :class:`DeprecationWarning`) for one release."""


@dataclass(frozen=True)
class Options:
    """Base of the options classes: dict round trip and keyword overrides."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values: nested options and values as dicts, tuples as lists."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def recorded(self) -> dict[str, Any]:
        """What a run record keeps: :meth:`to_dict` without how the work ran (``run``:
        workers, memory limit, task) and without ``overwrite``, which leave the output the
        same."""
        out = self.to_dict()
        out.pop("run", None)
        if isinstance(out.get("output"), dict):
            out["output"].pop("overwrite", None)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Rebuild options from :meth:`to_dict`'s output; keys it does not know are refused.

        Raises:
            OptionError: an unknown key.
        """
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise OptionError(f"{cls.__name__}: unknown option {unknown[0]!r}")
        return cls(**{k: _typed(v, hints[k]) for k, v in data.items()})

    def with_overrides(self, **overrides: Any) -> Self:
        """A copy with fields replaced; a field of a nested options group (``output``, ``run``,
        or a group inside a group, at any depth) may be named flat (``chunks=32``). A field of
        this class is taken before a nested one of the same name.

        Raises:
            OptionError: a name that is no option of this command.
        """
        if not overrides:
            return self
        names = [f.name for f in dataclasses.fields(self)]
        groups = [name for name in names if isinstance(getattr(self, name), Options)]
        mine: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        for name, value in overrides.items():
            if name in DEPRECATED_NAMES:
                warnings.warn(
                    f"{name}= is deprecated: use {DEPRECATED_NAMES[name]}=",
                    DeprecationWarning,
                    stacklevel=3,
                )
                name = DEPRECATED_NAMES[name]
            if name in names:
                mine[name] = value
                continue
            group = next((g for g in groups if getattr(self, g)._knows(name)), None)
            if group is None:
                raise OptionError(f"{type(self).__name__}: unknown option {name!r}")
            nested.setdefault(group, {})[name] = value
        for group, values in nested.items():
            mine[group] = mine.get(group, getattr(self, group)).with_overrides(**values)
        return dataclasses.replace(
            self, **{k: v if k in groups else _tuple(v) for k, v in mine.items()}
        )

    def _knows(self, name: str) -> bool:
        """Whether :meth:`with_overrides` takes ``name``: a field of this class or, at any
        depth, of a nested options group."""
        return any(
            f.name == name
            or (isinstance(getattr(self, f.name), Options) and getattr(self, f.name)._knows(name))
            for f in dataclasses.fields(self)
        )


@dataclass(frozen=True)
class OutputOptions(Options):
    """How an output is stored, shared by every command that writes one.

    Attributes:
        chunks: chunk shape of the main array: one int for every spatial axis, or one per
            axis; ``None`` for the command's default.
        shards: Zarr v3 shard shape (a multiple of ``chunks``); ``None`` for no sharding.
        chunk_rows: rows (patches, instances) per chunk of a row output; ``None``: automatic.
        codec: compression name (``zstd``, ``blosc-zstd``, ``blosc-lz4``, ``gzip``, ``lzf``,
            ``none``); ``None`` for the format's default (zstd; HDF5: gzip).
        codec_level: compression level; ``None`` for the codec's default.
        zarr_format: 3 (OME-NGFF 0.5) or 2 (OME-NGFF 0.4).
        overwrite: replace an existing output of datatools (never a foreign file or folder).
    """

    chunks: int | tuple[int, ...] | None = None
    shards: int | tuple[int, ...] | None = None
    chunk_rows: int | None = None
    codec: str | None = None
    codec_level: int | None = None
    zarr_format: int = 3
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.zarr_format not in (2, 3):
            raise OptionError(f"--zarr-format {self.zarr_format}: must be 2 or 3")


@dataclass(frozen=True)
class RunOptions(Options):
    """How the work runs, shared by every command.

    Attributes:
        workers: threads working on units at once (reading, decoding, encoding); ``None``: one
            per core.
        memory_limit: bytes for data in flight; sizes the units; ``None``: the command's
            default.
        task: run only this slice of the plan (job arrays); ``None``: the whole plan.
    """

    workers: int | None = None
    memory_limit: int | None = None
    task: TaskSlice | None = field(default=None)

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise OptionError(f"--workers {self.workers}: must be >= 1")
        if self.memory_limit is not None and self.memory_limit <= 0:
            raise OptionError(f"--memory-limit {self.memory_limit}: must be > 0")


def _plain(value: Any) -> Any:
    if isinstance(value, Options):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _tuple(value: Any) -> Any:
    """Sequences as (nested) tuples, so options hash and compare by value."""
    if isinstance(value, list | tuple):
        return tuple(_tuple(v) for v in value)
    return value


def _typed(value: Any, hint: Any) -> Any:
    """``value`` from JSON rebuilt as ``hint`` asks: dataclasses from dicts (a union of several
    takes the one whose field names the dict has), tuples from lists."""
    if isinstance(value, dict):
        members = typing.get_args(hint) if _is_union(hint) else (hint,)
        for member in members:
            if not dataclasses.is_dataclass(member):
                continue
            names = {f.name for f in dataclasses.fields(member)}
            if set(value) <= names:
                if isinstance(member, type) and issubclass(member, Options):
                    return member.from_dict(value)
                hints = typing.get_type_hints(member)
                return typing.cast(Any, member)(
                    **{k: _typed(v, hints[k]) for k, v in value.items()}
                )
        raise OptionError(f"options: {value!r} fits none of {hint}")
    return _tuple(value)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)
