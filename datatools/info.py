"""``datatools info``: what a volume or a datatools output holds, as a JSON-ready dict.

Keys of :func:`inspect` (all always present):
    kind, spec, shape, dtype, axes, voxel_size, unit, translation, nbytes, chunks,
    status (``None`` for inputs; for datatools outputs ``{"complete", "command", "units_done",
    "units_total", "state"}``),
plus kind-specific keys (``files``, ``shards``, ``codecs``, ``ngff_version``, ``levels``...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datatools import target
from datatools.sources import OpenOptions, SourceSpec, open_volume, spec_text


def inspect(spec: SourceSpec, options: OpenOptions | None = None) -> dict[str, Any]:
    """Describe ``spec`` without reading its voxels (headers and metadata only).

    Raises:
        InputNotFoundError, InputError: as :func:`datatools.sources.open_volume`.
    """
    status = _output_status(spec)
    if status is not None and not status.complete:
        out: dict[str, Any] = {
            "kind": "datatools-output",
            "spec": spec_text(spec),
            "shape": None,
            "dtype": None,
            "axes": None,
            "voxel_size": None,
            "unit": None,
            "translation": None,
            "nbytes": None,
            "chunks": None,
            "status": status.to_dict(),
        }
        return out
    with open_volume(spec, options) as volume:
        out = volume.describe()
    out["status"] = None if status is None else status.to_dict()
    return out


def _output_status(spec: SourceSpec) -> target.TargetStatus | None:
    if not isinstance(spec, str | Path):
        return None
    return target.status(Path(spec))


def format_info(info: dict[str, Any]) -> str:
    """Human-readable lines for :func:`inspect`'s result."""
    lines = []
    status = info.get("status")
    if status is not None:
        done, total = status["units_done"], status["units_total"]
        progress = f"{done}/{total} units" if total is not None else f"{done} units"
        state = "complete" if status["complete"] else f"INCOMPLETE ({progress} done)"
        lines.append(f"status       {state} ({status['command']})")
        rows = status.get("state", {}).get("rows")
        if rows is not None:
            lines.append(f"rows         {rows}")
    for key in ("kind", "spec", "shape", "dtype", "axes", "voxel_size", "unit", "translation"):
        value = info.get(key)
        if value is None:
            continue
        if key == "shape":
            value = " x ".join(str(v) for v in value)
        lines.append(f"{key:<12} {value}")
    if info.get("nbytes") is not None:
        lines.append(f"{'size':<12} {_human_bytes(int(info['nbytes']))} ({info['nbytes']} bytes)")
    skip = {
        "kind",
        "spec",
        "shape",
        "dtype",
        "axes",
        "voxel_size",
        "unit",
        "translation",
        "nbytes",
        "status",
    }
    for key, value in info.items():
        if key not in skip and value is not None:
            lines.append(f"{key:<12} {value}")
    return "\n".join(lines)


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{n} B"
        size /= 1024
    return f"{n} B"
