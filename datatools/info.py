"""``datatools info``: what a volume or a datatools output holds, as a JSON-ready dict.

Keys of :func:`inspect` (all always present):
    kind, spec, shape, dtype, axes, voxel_size, unit, translation, nbytes, chunks,
    status (``None`` for inputs; for datatools outputs ``{"complete", "command", "units_done",
    "units_total", "state"}``),
plus kind-specific keys (``files``, ``shards``, ``codecs``, ``ngff_version``, ``levels``...).
Outputs of datatools that hold several arrays (patches, instances, writers), and unfinished
outputs, have ``kind`` ``"datatools-output"``, ``None`` volume keys, and ``arrays``
(``{name: {"shape", "dtype", "chunks"}}``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from datatools.inputs import open_input
from datatools.ledger import OutputLedger, TargetStatus, open_ledger
from datatools.sources import OpenOptions, SourceSpec

VOLUME_KEYS = (
    "kind", "spec", "shape", "dtype", "axes", "voxel_size", "unit", "translation", "nbytes",
    "chunks",
)  # fmt: skip


def inspect(spec: SourceSpec, options: OpenOptions | None = None) -> dict[str, Any]:
    """Describe ``spec`` without reading its voxels (headers and metadata only).

    Unfinished outputs of datatools, and multi-array outputs (patches, instances, writers),
    are described array by array under ``arrays`` with their ``status``.

    Raises:
        InputNotFoundError, InputError: as :func:`datatools.sources.open_volume`.
    """
    status: TargetStatus | None = None
    if isinstance(spec, str | Path):
        path = Path(spec)
        output = open_ledger(Path(os.path.realpath(path)) if path.is_symlink() else path)
        status = output.status()
        if status is not None and not _finished_image(status):
            described = status.to_dict()
            if status.record is not None and status.record.command == "split-classes":
                names = dict(status.record.params.get("classes") or {}).values()
                done = sum(open_ledger(path / n).is_complete() for n in names)
                described["state"] = {**described["state"], "classes": [done, len(names)]}
            return _describe_output(path, described, _arrays(output))
    with open_input(spec, options, describe_only=True) as volume:
        out = volume.describe()
        files = volume.files()
    if status is None and out["kind"] == "hdf5":  # a dataset of an HDF5 convert output
        output = open_ledger(files[0])
        found = output.status()
        unfinished = found is not None and not found.complete and output.location() == files[0]
        if _finished_image(found) or unfinished:  # the partial file: its real progress
            status = found
    out["status"] = None if status is None else status.to_dict()
    return out


def _finished_image(status: TargetStatus | None) -> bool:
    """A complete ``convert`` output: described as the volume it is."""
    record = None if status is None else status.record
    return (
        status is not None
        and status.complete
        and record is not None
        and (record.command == "convert")
    )


def _describe_output(
    path: Path, status: dict[str, Any], arrays: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(VOLUME_KEYS)
    out.update(kind="datatools-output", spec=str(path), status=status, arrays=arrays)
    return out


def _arrays(output: OutputLedger[Any]) -> dict[str, dict[str, Any]]:
    """Shape, dtype and chunks of each array of the output (not the ledger's own), read where
    its data is now; empty when it cannot be read."""
    where = output.location()
    if where.is_dir():
        import zarr

        return _described(output, dict(zarr.open_group(where, mode="r").members(max_depth=None)))
    import h5py

    found: dict[str, Any] = {}

    def collect(name: str, node: Any) -> None:
        found[name] = node

    try:
        with h5py.File(where, "r") as fh:
            fh.visititems(collect)
            return _described(output, found)
    except OSError:
        return {}


def _described(output: OutputLedger[Any], nodes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The arrays (Zarr arrays, HDF5 datasets: the nodes with a dtype) among ``nodes``."""
    return {
        name: {
            "shape": list(node.shape),
            "dtype": str(node.dtype),
            "chunks": None if node.chunks is None else list(node.chunks),
        }
        for name, node in sorted(nodes.items())
        if getattr(node, "dtype", None) is not None and not output.is_own_node(name)
    }


def format_info(info: dict[str, Any]) -> str:
    """Human-readable lines for :func:`inspect`'s result."""
    lines = []
    status = info.get("status")
    if status is not None:
        done, total = status["units_done"], status["units_total"]
        rows = status.get("state", {}).get("rows")
        unreadable = status.get("state", {}).get("unreadable")
        classes = status.get("state", {}).get("classes")
        if unreadable is not None:
            progress = f"unreadable: {unreadable}"
        elif classes is not None:
            progress = f"{classes[0]}/{classes[1]} classes complete"
        elif total is not None:
            progress = f"{done}/{total} units done"
        else:  # row writers (patches, instances) count rows, not units
            progress = f"{rows if rows is not None else 0} rows written"
        state = "complete" if status["complete"] else f"INCOMPLETE ({progress})"
        command = f" ({status['command']})" if status["command"] else ""
        lines.append(f"status       {state}{command}")
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
    for name, arr in (info.get("arrays") or {}).items():
        dims = " x ".join(str(v) for v in arr["shape"])
        lines.append(f"array        {name}: {dims} {arr['dtype']} (chunks {arr['chunks']})")
    skip = {
        "arrays",
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
