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

import json
from pathlib import Path
from typing import Any

import numpy as np

from datatools import ledger
from datatools.convert import hdf5_target
from datatools.errors import TargetError
from datatools.inputs import open_input
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
    if isinstance(spec, str | Path):
        path = Path(spec)
        status = ledger.status(path)
        if status is not None and (not status.complete or status.record.command != "convert"):
            described = status.to_dict()
            if status.record.command == "split-classes":
                names = dict(status.record.params.get("classes") or {}).values()
                done = sum(ledger.is_ours(path / n) and ledger.is_complete(path / n) for n in names)
                described["state"] = {**described["state"], "classes": [done, len(names)]}
            return _describe_output(path, described, _zarr_arrays(path))
        hdf5 = (
            _hdf5_output(path)
            or _hdf5_unfinished(path)
            or (None if path.exists() else _hdf5_output(path, hdf5_target.partial_path(path)))
        )
        if hdf5 is not None:
            return hdf5
    else:
        status = None
    with open_input(spec, options) as volume:
        out = volume.describe()
        files = volume.files()
    out["status"] = None if status is None else status.to_dict()
    if status is None and out["kind"] == "hdf5":  # a finished HDF5 convert output
        record = hdf5_target.read_record(files[0])
        if record is not None and record.command == "convert":
            out["status"] = {"complete": True, "command": "convert", "units_done": None,
                             "units_total": None, "state": {}}  # fmt: skip
    return out


def _hdf5_unfinished(path: Path) -> dict[str, Any] | None:
    """An HDF5 convert output still under its partial name (interrupted, or running)."""
    partial = hdf5_target.partial_path(path)
    if path.exists() or not partial.is_file():
        return None
    record = hdf5_target.read_record(partial)
    if record is None:
        try:
            unreadable = hdf5_target.is_torn(partial)
        except TargetError:  # being written right now: not torn, just not readable yet
            unreadable = False
        if not unreadable:
            return None
        torn: dict[str, Any] = {
            "complete": False, "command": None, "units_done": None, "units_total": None,
            "state": {"partial": str(partial), "unreadable": "killed while HDF5 wrote it; "
                      "rerun with --overwrite to start again"},
        }  # fmt: skip
        return _describe_output(path, torn, {})
    import h5py

    try:
        with h5py.File(partial, "r") as fh:
            marks = np.asarray(fh[hdf5_target.LEDGER][:])
            arrays = {
                name: {"shape": list(node.shape), "dtype": str(node.dtype),
                       "chunks": None if node.chunks is None else list(node.chunks)}
                for name, node in fh.items()
                if isinstance(node, h5py.Dataset) and name != hdf5_target.LEDGER
            }  # fmt: skip
    except (OSError, KeyError):
        return None
    status = {
        "complete": False,
        "command": record.command,
        "units_done": int(np.count_nonzero(marks)),
        "units_total": len(marks),
        "state": {"partial": str(partial)},
    }
    return _describe_output(path, status, arrays)


def _describe_output(
    path: Path, status: dict[str, Any], arrays: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(VOLUME_KEYS)
    out.update(kind="datatools-output", spec=str(path), status=status, arrays=arrays)
    return out


def _zarr_arrays(path: Path) -> dict[str, dict[str, Any]]:
    import zarr

    group = zarr.open_group(path, mode="r")
    return {
        name: {"shape": list(node.shape), "dtype": str(node.dtype), "chunks": list(node.chunks)}
        for name, node in sorted(group.members(max_depth=None))
        if isinstance(node, zarr.Array) and ledger.MARKER not in name.split("/")
    }


def _hdf5_output(path: Path, file: Path | None = None) -> dict[str, Any] | None:
    """An HDF5 file written by datatools with several datasets (writers, patches, instances),
    read from ``file`` when it is still under its partial name."""
    file = path if file is None else file
    if path.suffix.lower() not in (".h5", ".hdf5") or not file.is_file():
        return None
    import h5py

    try:
        with h5py.File(file, "r") as fh:
            raw = fh.attrs.get("datatools")
            if raw is None:
                return None
            record = json.loads(raw)
            if record.get("command") == "convert":
                return None
            arrays: dict[str, dict[str, Any]] = {}

            def visit(name: str, node: Any) -> None:
                if isinstance(node, h5py.Dataset):
                    arrays[name] = {
                        "shape": list(node.shape),
                        "dtype": str(node.dtype),
                        "chunks": None if node.chunks is None else list(node.chunks),
                    }

            fh.visititems(visit)
    except OSError:
        return None
    status = {
        "complete": bool(record.get("complete", True)),
        "command": record.get("command"),
        "units_done": None,
        "units_total": None,
        "state": {"rows": record.get("rows")},
    }
    return _describe_output(path, status, arrays)


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
