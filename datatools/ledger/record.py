"""What produced an output (:class:`RunRecord`), how two runs are compared on resume
(:func:`diff_params`, :func:`check_same_run`, with the inputs' fingerprint of
:mod:`datatools.ledger.fingerprint`), and the progress an output reports
(:class:`TargetStatus`)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datatools import __version__
from datatools.errors import ResumeMismatchError
from datatools.ledger.fingerprint import SOURCE_FILES, check_same_sources


@dataclass(frozen=True)
class RunRecord:
    """What produced an output: the command and every option that shapes its bytes."""

    command: str
    params: dict[str, Any]
    version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "params": self.params, "version": self.version}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        return cls(str(data["command"]), dict(data["params"]), str(data.get("version", "")))


@dataclass(frozen=True)
class TargetStatus:
    """Progress of a datatools output, for ``datatools info`` and resume.

    Attributes:
        path: the output (its final name).
        record: the run that made it; ``None`` when its ledger cannot be read (an HDF5 file
            torn by a killed writer; ``state`` says so under ``"unreadable"``).
        complete: every unit is done and the metadata is final.
        units_done: units recorded as done.
        units_total: units of the whole run, when it was planned in units (``None`` for
            outputs that grow row by row).
        state: progress the command recorded (e.g. ``{"rows": n}``), and ``"partial"``, the
            name an unfinished HDF5 file has.
    """

    path: Path
    record: RunRecord | None
    complete: bool
    units_done: int
    units_total: int | None
    state: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "complete": self.complete,
            "command": None if self.record is None else self.record.command,
            "units_done": self.units_done,
            "units_total": self.units_total,
            "state": self.state,
        }


LATER_PARAMS = frozenset({"source_level", "series", "dataset"})
"""Options recorded since the 2026-12 release: a record written before lacks them and is
compared without them (so its outputs still resume)."""
DERIVED_PARAMS = frozenset({"unit_shapes", "units_total", "chunk_rows", "slab_extent"})
"""Recorded values that follow from the options; named only when no option differs."""
PROVENANCE_PARAMS = frozenset({"options"})
"""Recorded for the reader, never compared: ``options`` holds the run's options object
(``recorded()``), which a resume may spell differently (a flat override, a default given)."""


def diff_params(old: RunRecord, new: RunRecord) -> str:
    """A short text naming options that differ between two runs, empty when they agree
    (values derived from the options are named only when no option differs; the inputs'
    fingerprint is compared by :func:`~datatools.ledger.fingerprint.check_same_sources`)."""
    if old.command != new.command:
        return f"command was {old.command}, now {new.command}"
    parts: dict[bool, list[str]] = {True: [], False: []}
    for key in sorted(set(old.params) | set(new.params)):
        if key in PROVENANCE_PARAMS or key == SOURCE_FILES:
            continue
        if key in LATER_PARAMS and key not in old.params:
            continue
        a, b = old.params.get(key), new.params.get(key)
        if not _same(a, b):
            parts[key in DERIVED_PARAMS].append(f"{key} was {json.dumps(a)}, now {json.dumps(b)}")
    return "; ".join(parts[False] or parts[True])


def _same(a: Any, b: Any) -> bool:
    """Equal values, floats within a relative 1e-9 (a voxel size converted to nanometres by an
    earlier version may differ in its last digits)."""
    if isinstance(a, float) or isinstance(b, float):
        numbers = (int, float)
        if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
            return math.isclose(a, b, rel_tol=1e-9)
        return False
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def check_same_run(where: Path, existing: RunRecord, record: RunRecord) -> None:
    """Refuse to join an output made by a run with other options, or from input files that
    changed since.

    Raises:
        ResumeMismatchError: naming the options that differ, or the changed input file.
    """
    differences = diff_params(existing, record)
    if differences:
        raise ResumeMismatchError(
            f"{where}: exists from a run with other options ({differences}); rerun with the "
            "same options to resume, or add --overwrite to replace it"
        )
    check_same_sources(where, existing.params, record.params)
