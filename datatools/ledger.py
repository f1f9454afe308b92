"""Output directories that datatools owns: marker, run record, ledger, completion.

Every directory output (a Zarr group) carries a hidden child group ``.datatools``, itself valid
Zarr (in the output's Zarr format), so ``zarr.open_group(...).members()`` and validators see a
clean hierarchy::

    target.zarr/
        zarr.json | .zgroup      the Zarr group
        .datatools/
            zarr.json | .zgroup+.zattrs   attributes {"run": {command, params, version},
                                          "state": {...}, "complete": bool}
            done/                 the ledger: a uint8 array, one single-byte chunk per finished
                                  work unit (concurrent tasks write different chunk files)

The marker makes ``--overwrite`` safe (only our outputs are removed) and lets a rerun with the
same options resume. A directory is created under a temporary name and renamed into place, so
concurrent tasks starting at once agree on one run record. ``complete`` is set last, when every
unit is done and the metadata is final.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from datatools import __version__
from datatools.errors import ResumeMismatchError, TargetError, WriteError

MARKER = ".datatools"
DONE_DIR = "done"
PARTIAL_SUFFIX = ".datatools-partial"
LEDGER_LENGTH = 2**40
"""Nominal length of the ledger array (units are indices into it; chunks are sparse)."""


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
    """Progress of a datatools output, for ``datatools info`` and resume."""

    path: Path
    record: RunRecord
    complete: bool
    units_done: int
    units_total: int | None
    state: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "complete": self.complete,
            "command": self.record.command,
            "units_done": self.units_done,
            "units_total": self.units_total,
            "state": self.state,
        }


RESOLVE_EACH = 64
"""Inputs per folder whose links :func:`check_not_input` resolves one by one."""


def marker_dir(path: Path) -> Path:
    return Path(path) / MARKER


def _zarr_format(path: Path) -> int:
    """2 when the output (or its marker) is Zarr v2, else 3."""
    return (
        2 if (Path(path) / ".zgroup").is_file() or (marker_dir(path) / ".zgroup").is_file() else 3
    )


def _attrs_file(path: Path) -> Path:
    marker = marker_dir(path)
    return marker / (".zattrs" if _zarr_format(path) == 2 else "zarr.json")


def _read_attrs(path: Path) -> dict[str, Any]:
    file = _attrs_file(path)
    if not file.is_file():
        return {}
    data = json.loads(file.read_text())
    return dict(data if file.name == ".zattrs" else data.get("attributes", {}))


def _write_attrs(path: Path, attrs: dict[str, Any]) -> None:
    file = _attrs_file(path)
    if file.name == ".zattrs":
        write_json_atomic(file, attrs)
    else:
        write_json_atomic(file, {"zarr_format": 3, "node_type": "group", "attributes": attrs})


def _update_attrs(path: Path, **changes: Any) -> None:
    attrs = _read_attrs(path)
    attrs.update(changes)
    _write_attrs(path, attrs)


def _create_marker(path: Path, record: RunRecord, zarr_format: int) -> None:
    marker = marker_dir(path)
    done = marker / DONE_DIR
    done.mkdir(parents=True)
    if zarr_format == 2:
        write_json_atomic(marker / ".zgroup", {"zarr_format": 2})
        write_json_atomic(
            done / ".zarray",
            {
                "zarr_format": 2, "shape": [LEDGER_LENGTH], "chunks": [1], "dtype": "|u1",
                "compressor": None, "fill_value": 0, "filters": None, "order": "C",
                "dimension_separator": "/",
            },
        )  # fmt: skip
    else:
        write_json_atomic(
            done / "zarr.json",
            {
                "zarr_format": 3, "node_type": "array", "shape": [LEDGER_LENGTH],
                "data_type": "uint8",
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1]}},
                "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
                "fill_value": 0, "codecs": [{"name": "bytes"}], "attributes": {},
                "dimension_names": ["unit"],
            },
        )  # fmt: skip
    _write_attrs(path, {"run": record.to_dict(), "state": {}, "complete": False})


def is_ours(path: Path) -> bool:
    """Whether ``path`` is a directory datatools created (it carries the marker)."""
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return False
    try:
        return "run" in _read_attrs(path)
    except (OSError, ValueError):
        return False


def read_record(path: Path) -> RunRecord:
    """The run record of an output datatools created."""
    return RunRecord.from_dict(_read_attrs(path)["run"])


def is_absent(path: Path) -> bool:
    """No output at ``path``: nothing there, or an empty folder (made by ``mkdir`` in a job
    script), which a new output may replace."""
    if path.is_symlink():
        return False
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def check_target_location(path: Path) -> None:
    """Refuse a target whose parent folder is missing or that is a symlink.

    Raises:
        TargetError: with the path and the problem.
    """
    path = Path(path)
    if path.is_symlink():
        raise TargetError(f"{path}: target is a symbolic link (give a real path)")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise TargetError(f"{path}: parent folder {parent} does not exist")


FILE_SUFFIXES = frozenset(
    {".h5", ".hdf5", ".hdf", ".tif", ".tiff", ".png", ".jpg", ".jpeg", ".nrrd", ".nhdr", ".mha",
     ".mhd", ".nii", ".gz", ".npy", ".npz", ".txt", ".csv", ".json", ".n5"}
)  # fmt: skip
"""Name endings of files, refused for the Zarr folder an output is (``out.tif`` would become a
folder the user takes for a TIFF file)."""


def check_folder_name(path: Path) -> None:
    """Refuse a Zarr output folder named like a file of another format.

    Raises:
        TargetError: naming the ending and the choices.
    """
    suffix = Path(path).suffix.lower()
    if suffix in FILE_SUFFIXES:
        raise TargetError(
            f"{path}: a Zarr output folder named like a {suffix} file (name it e.g. "
            f"{Path(path).stem}.zarr)"
        )


def check_not_input(path: Path, inputs: Iterable[Path]) -> None:
    """Refuse an output path that is one of the inputs or a folder holding one: writing it, or
    replacing it with ``--overwrite``, would destroy them. Links are followed (for long lists
    of slices, only their folders' links).

    Raises:
        TargetError: naming the target and the input.
    """
    out = Path(path).resolve()
    by_folder: dict[Path, list[Path]] = {}
    for item in inputs:
        by_folder.setdefault(Path(item).parent, []).append(Path(item))
    for folder, items in by_folder.items():
        many = len(items) > RESOLVE_EACH
        real = [folder.resolve() / i.name if many else i.resolve() for i in items]
        for item, resolved in zip(items, real, strict=True):
            if resolved == out:
                raise TargetError(f"{path}: is also an input (write the output elsewhere)")
            if out in resolved.parents:
                raise TargetError(f"{path}: holds the input {item} (write the output elsewhere)")


def remove_ours(path: Path) -> None:
    """Delete an output datatools created; refuse anything else.

    Symlinks inside are removed as links, never followed.

    Raises:
        TargetError: ``path`` is a symlink, a file, or a directory without our marker.
    """
    path = Path(path)
    if path.is_symlink():
        raise TargetError(f"{path}: is a symbolic link; datatools will not remove it")
    if not is_ours(path):
        what = "a file" if path.is_file() else "a folder datatools did not create"
        raise TargetError(f"{path}: exists and is {what}; datatools will not remove it")
    shutil.rmtree(path)


def claim(
    path: Path,
    record: RunRecord,
    *,
    overwrite: bool,
    populate: Callable[[Path], None],
) -> Literal["created", "resumed"]:
    """Create the output directory ``path`` or join an unfinished run with the same options.
    An empty folder at ``path`` counts as no output (:func:`is_absent`).

    A new output is built in a temporary sibling by ``populate(tmp_dir)`` (which writes the
    Zarr group and empty arrays), the marker is added, and the folder is renamed into place.
    When several processes race, one rename wins and the others join its run.

    Args:
        path: the target directory.
        record: the command and options of this run.
        overwrite: remove an existing output of ours first (a foreign one is still refused).
        populate: writes the initial contents into the folder it is given.

    Returns:
        ``"created"`` for a new output, ``"resumed"`` when joining an existing run.

    Raises:
        TargetError: the target is a file, a foreign folder, named like a file of another
            format (:func:`check_folder_name`), or its parent is missing.
        ResumeMismatchError: an unfinished or finished output of ours has other options.
    """
    path = Path(path)
    check_target_location(path)
    check_folder_name(path)
    if not is_absent(path):  # the rename below replaces an empty folder
        if overwrite:
            remove_ours(path)
        else:
            return _join(path, record)
    try:
        tmp = _fresh_name(path, PARTIAL_SUFFIX, os.mkdir)
    except OSError as exc:
        raise WriteError(f"{path}: cannot create output ({exc.strerror or exc})") from exc
    try:
        populate(tmp)
        _create_marker(tmp, record, 2 if (tmp / ".zgroup").is_file() else 3)
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return _join(path, record)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise WriteError(f"{path}: cannot create output ({exc.strerror or exc})") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return "created"


def _join(path: Path, record: RunRecord) -> Literal["resumed"]:
    if not is_ours(path):
        what = "a file" if path.is_file() else "a folder datatools did not create"
        raise TargetError(
            f"{path}: exists and is {what} (choose another target; --overwrite only replaces "
            "outputs of datatools)"
        )
    existing = read_record(path)
    differences = diff_params(existing, record)
    if differences:
        raise ResumeMismatchError(
            f"{path}: exists from a run with other options ({differences}); rerun with the "
            "same options to resume, or add --overwrite to replace it"
        )
    return "resumed"


LATER_PARAMS = frozenset({"source_level", "series", "dataset"})
"""Options recorded since the 2026-12 release: a record written before lacks them and is
compared without them (so its outputs still resume)."""
DERIVED_PARAMS = frozenset({"unit_shapes", "units_total", "chunk_rows", "slab_extent"})
"""Recorded values that follow from the options; named only when no option differs."""
PROVENANCE_PARAMS = frozenset({"options"})
"""Recorded for the reader, never compared: ``options`` holds the run's whole options object
(``to_dict()``), workers and memory limit included, which a resume may change."""


def diff_params(old: RunRecord, new: RunRecord) -> str:
    """A short text naming options that differ between two runs, empty when they agree
    (values derived from the options are named only when no option differs)."""
    if old.command != new.command:
        return f"command was {old.command}, now {new.command}"
    parts: dict[bool, list[str]] = {True: [], False: []}
    for key in sorted(set(old.params) | set(new.params)):
        if key in PROVENANCE_PARAMS or (key in LATER_PARAMS and key not in old.params):
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


def _fresh_name(path: Path, suffix: str, create: Callable[[Path], None]) -> Path:
    """A new hidden sibling of ``path``, made by ``create`` (which fails if it exists).

    Unlike ``tempfile``, which makes owner-only files (0600) and folders (0700), this leaves
    the mode to ``create`` and the umask, so outputs are shared as the user's files are.
    """
    while True:
        name = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            create(name)
        except FileExistsError:
            continue
        return name


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` via a temporary file and rename (readers never see half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = -1

    def create(name: Path) -> None:
        nonlocal fd
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)

    tmp = _fresh_name(path, ".tmp", create)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Ledger:
    """Which work units of an output are done, safe across processes.

    Unit ``k`` is one chunk of the ``.datatools/done`` array: a one-byte file written after the
    unit's data. A missing record means "not done", whatever chunks exist.
    """

    def __init__(self, path: Path) -> None:
        done = marker_dir(Path(path)) / DONE_DIR
        self.dir = done if _zarr_format(path) == 2 else done / "c"

    def done(self) -> set[int]:
        """Indices of the finished units."""
        if not self.dir.is_dir():
            return set()
        return {int(name) for name in os.listdir(self.dir) if name.isdigit()}

    def mark(self, unit: int) -> None:
        """Record unit ``unit`` as finished."""
        self.dir.mkdir(exist_ok=True)
        (self.dir / str(unit)).write_bytes(b"\x01")

    def mark_many(self, units: Iterable[int]) -> None:
        for unit in units:
            self.mark(unit)


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Record progress state (e.g. rows flushed) durably in the marker's attributes."""
    _update_attrs(path, state=state)


def read_state(path: Path) -> dict[str, Any]:
    """The progress state recorded by :func:`write_state`, empty when none."""
    return dict(_read_attrs(path).get("state") or {})


def mark_complete(path: Path) -> None:
    """Set the completion flag (last step of a run; idempotent)."""
    _update_attrs(path, complete=True, completed_by=__version__)


def is_complete(path: Path) -> bool:
    return bool(_read_attrs(path).get("complete", False))


def clear_complete(path: Path) -> None:
    """Clear the completion flag before an output is changed again (append)."""
    if _attrs_file(path).is_file():
        _update_attrs(path, complete=False)


def status(path: Path) -> TargetStatus | None:
    """Progress of a datatools output, or ``None`` when ``path`` is not one of ours."""
    path = Path(path)
    if not is_ours(path):
        return None
    record = read_record(path)
    total = record.params.get("units_total")
    return TargetStatus(
        path=path,
        record=record,
        complete=is_complete(path),
        units_done=len(Ledger(path).done()),
        units_total=int(total) if isinstance(total, int) else None,
        state=read_state(path),
    )


def clean_stray_files(path: Path, *, older_than: float = 0.0) -> int:
    """Remove temporary files a killed run left inside ``path``; returns how many.

    ``older_than`` (seconds): keep younger ones, which may belong to another process writing
    right now (a job-array task finishing at the same moment).
    """
    removed = 0
    limit = time.time() - older_than
    for p in Path(path).rglob("*.tmp"):
        try:
            stale = p.name.startswith(".") and p.is_file() and p.stat().st_mtime <= limit
        except FileNotFoundError:  # renamed into place meanwhile
            continue
        if stale:
            p.unlink(missing_ok=True)
            removed += 1
    return removed


def update_attributes(folder: Path, changes: Mapping[str, Any]) -> None:
    """Set top-level attributes of the Zarr group or array (v3 or v2) at ``folder``, replacing
    its attribute file atomically: several processes finishing at once never see a torn file.
    """
    folder = Path(folder)
    v3 = folder / "zarr.json"
    if v3.is_file():
        doc = json.loads(v3.read_text())
        doc["attributes"] = {**doc.get("attributes", {}), **changes}
        write_json_atomic(v3, doc)
        return
    v2 = folder / ".zattrs"
    current = json.loads(v2.read_text()) if v2.is_file() else {}
    write_json_atomic(v2, {**current, **changes})
