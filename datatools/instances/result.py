"""What a run of :func:`datatools.instances.extract_instances` did, for scripts and the terminal."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datatools.progress import counted


@dataclass(frozen=True)
class InstanceResult:
    """What :func:`extract_instances` did.

    Attributes:
        target: the output path.
        count: instances in the output (rows along ``i``).
        labelled: instances in the labels (inside the ROI) before filtering.
        removed: instances each filter removed, in the order applied.
        size: window extent per spatial axis; ``channels`` the output's c.
        chunk_rows: rows per chunk along ``i``.
        rows_written: rows written by this call; ``rows_skipped`` by earlier runs.
        seconds: wall time of this call.
        complete: the output is finished.
        format: ``zarr3``, ``zarr2`` or ``hdf5``.
    """

    target: Path
    count: int
    labelled: int
    removed: dict[str, int]
    size: tuple[int, ...]
    channels: int
    chunk_rows: int
    rows_written: int
    rows_skipped: int
    seconds: float
    complete: bool
    format: str
    params: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """A few lines for the terminal."""
        window = " x ".join(map(str, self.size))
        state = "complete" if self.complete else "INCOMPLETE"
        rate = self.rows_written / self.seconds if self.seconds > 0 else 0.0
        filters = ", ".join(f"{k} {v}" for k, v in self.removed.items() if v) or "none"
        lines = [
            f"{self.target}: {counted(self.count, 'instance')} of {self.channels} x {window}, "
            f"{self.format}, {state}",
            f"  {self.labelled} labelled; removed by filters: {filters}",
            f"  {self.rows_written} written now, {self.rows_skipped} already done; "
            f"{self.seconds:.1f} s ({rate:.0f} instances/s)",
        ]
        return "\n".join(lines)
