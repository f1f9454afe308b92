"""What long work tells the terminal: tqdm progress bars on stderr when wanted, silent
otherwise, and counts in summaries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm


def progress_bar(total: float | None, desc: str, *, enabled: bool, unit: str = "unit") -> tqdm[Any]:
    """A tqdm bar on stderr, disabled (no output, near-zero cost) when ``enabled`` is false.

    Library functions take ``progress: bool`` and pass it here; the CLI decides it from
    ``--quiet`` and whether stderr is a terminal.
    """
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, unit=unit, disable=not enabled, leave=False, dynamic_ncols=True
    )


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``"1 unit"``, ``"3 units"``: ``n`` and ``noun``, in the plural (default ``noun + "s"``)
    unless ``n`` is 1."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"
