"""The interface every ledger implements (:class:`OutputLedger`): one output's ownership
marker, run record, done units, progress state and completion, wherever they are stored.

A command claims its output with a run record, writes its data unit by unit, records each
unit done after the unit's data is written, and marks the output complete last. A rerun with
the same record resumes from the done units; one with another record is refused unless it
overwrites. ``info``, ``verify`` and the loaders ask the same object for the status.
How the units are stored is each implementation's business: callers only mark and list them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Generic, Literal, TypeAlias, TypeVar

from datatools.ledger.record import RunRecord, TargetStatus

Handle = TypeVar("Handle")
"""What a new output is populated through: a folder (Zarr) or an open file (HDF5)."""

Claimed: TypeAlias = Literal["created", "resumed"]

PARTIAL_SUFFIX = ".datatools-partial"
"""Ending of the name an output has while it is built: the temporary folder a Zarr output is
created in, or the HDF5 file until it is complete."""


class OutputLedger(ABC, Generic[Handle]):
    """The ledger of the output at :attr:`path` (made by :func:`datatools.ledger.open_ledger`).

    Writing methods (:meth:`mark_done`, :meth:`write_state`, :meth:`mark_complete`) may raise
    ``OSError``; callers turn it into their own :class:`~datatools.errors.WriteError`.
    """

    path: Path
    """The output, by its final name."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @abstractmethod
    def location(self) -> Path:
        """Where the output's data is now: :attr:`path`, or the name an unfinished output
        has until it is complete."""

    @abstractmethod
    def is_ours(self) -> bool:
        """Whether an output datatools made is there (it carries our marker or record)."""

    @abstractmethod
    def read_record(self) -> RunRecord | None:
        """The run record of the output, ``None`` when there is none of ours."""

    @abstractmethod
    def claim(
        self,
        record: RunRecord,
        *,
        overwrite: bool,
        populate: Callable[[Handle], None],
        units_total: int | None = None,
    ) -> Claimed:
        """Create the output, or join an output made with the same record.

        Args:
            record: the command and options of this run.
            overwrite: replace an existing output of ours (a foreign one is still refused).
            populate: writes the initial contents (groups, empty arrays) of a new output
                into what it is given, before the output takes its name.
            units_total: the number of units, when the run is planned in units; the ledger
                may size its store of done units by it.

        Returns:
            ``"created"`` for a new output, ``"resumed"`` when joining an existing one
            (which may be complete already: ask :meth:`is_complete`).

        Raises:
            TargetError: the target is foreign, a symlink, or its parent is missing.
            ResumeMismatchError: an output of ours with another record is there.
            WriteError: the output cannot be created.
        """

    @abstractmethod
    def mark_done(self, units: Iterable[int]) -> None:
        """Record ``units`` as done (after their data is written), durably."""

    @abstractmethod
    def done(self) -> frozenset[int]:
        """The units recorded as done."""

    def is_done(self, unit: int) -> bool:
        """Whether ``unit`` is recorded done now (implementations may look it up alone)."""
        return unit in self.done()

    @abstractmethod
    def write_state(self, state: dict[str, Any]) -> None:
        """Record the command's progress state (e.g. rows flushed), replacing the last one."""

    @abstractmethod
    def read_state(self) -> dict[str, Any]:
        """The state last recorded by :meth:`write_state`; empty when none."""

    @abstractmethod
    def mark_complete(self) -> None:
        """Mark the output complete: the last step of a run, after its final metadata."""

    @abstractmethod
    def clear_complete(self) -> None:
        """Make a complete output unfinished again before it changes (an append)."""

    @abstractmethod
    def is_complete(self) -> bool:
        """Whether the output is there, ours and complete."""

    @abstractmethod
    def remove(self) -> None:
        """Delete the output, every file of it datatools made; nothing when none is there.

        Raises:
            TargetError: something not made by datatools is there (it stays).
        """

    @abstractmethod
    def is_own_node(self, name: str) -> bool:
        """Whether the group or array ``name`` (a path inside the output) is the ledger's
        own, not the command's data."""

    def close(self) -> None:
        """Release what a claim holds open (nothing, unless the implementation says so)."""

    def is_unfinished(self) -> bool:
        """Whether an output of ours is there that is not complete."""
        return self.is_ours() and not self.is_complete()

    def status(self) -> TargetStatus | None:
        """Progress of the output, ``None`` when no output of ours is there."""
        record = self.read_record()
        if record is None:
            return None
        total = record.params.get("units_total")
        return TargetStatus(
            path=self.path,
            record=record,
            complete=self.is_complete(),
            units_done=len(self.done()),
            units_total=total if isinstance(total, int) else None,
            state=self.read_state(),
        )
