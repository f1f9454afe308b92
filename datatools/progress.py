"""Progress bars for long work: tqdm on stderr when wanted, silent otherwise."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm


def progress_bar(total: float | None, desc: str, *, enabled: bool, unit: str = "unit") -> tqdm[Any]:
    """A tqdm bar on stderr, disabled (no output, near-zero cost) when ``enabled`` is false.

    Library functions take ``progress: bool`` and pass it here; the CLI decides it from
    ``--quiet`` and whether stderr is a terminal.
    """
    return tqdm(
        total=total, desc=desc, unit=unit, disable=not enabled, leave=False, dynamic_ncols=True
    )
