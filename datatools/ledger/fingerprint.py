"""The fingerprint of a run's input files, kept in its run record so that a rerun against a
changed input is refused: resuming would give a "complete" output mixing old and new data.

What is fingerprinted: each file the inputs read (``Volume.files()``, in their order): its
name, size and modification time (nanoseconds). A folder (a Zarr array or image) stands for
the Zarr metadata files in it and in its direct subfolders (an image's levels), not its chunk
files (there may be millions): a Zarr input re-created (new metadata) is noticed, one
rewritten chunk by chunk in place is not. Contents are never read, so a file rewritten with
the same size and the same modification time (within the file system's resolution, or set
back by ``touch -d`` / ``cp -p``) is not noticed either.

The record keeps, under :data:`SOURCE_FILES`, a bounded form whatever the number of files (a
slice folder may hold 100,000)::

    {"files": n, "newest": [path, mtime_ns],
     "groups": [[first path, last path, digest], ...]}

The files are cut into at most :data:`GROUPS` runs of consecutive files; each keeps its first
and last path and a digest of its files' (name, size, mtime_ns). With at most ``GROUPS``
files each is a group of its own, so a changed file is named exactly. With more, a file
modified after every recorded one (the usual case: a slice replaced, copied over or touched)
is the new ``newest`` and is named exactly; otherwise the message names the changed group's
range of files. A record written before this key existed has none; its output resumes
unchecked, as before.

Who checks: joining an output compares the fingerprints (:func:`check_same_sources`, called by
:func:`~datatools.ledger.record.check_same_run` and by ``instances``), and any change refuses.
Before that, ``convert`` into a Zarr folder looks closer
(:meth:`datatools.convert.job.ConvertJob.check_changed_inputs`): a changed file that no
finished unit read (:func:`changed_files`, ``Volume.files_in``) cannot mix data, as when a
slice found corrupt mid-run is replaced, so the run goes on and the record's fingerprint is
renewed (:func:`datatools.ledger.renew_fingerprint`) for the reruns after it.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from datatools.errors import InputError, ResumeMismatchError

SOURCE_FILES = "source_files"
"""The run-record key of the fingerprint (compared by :func:`check_same_sources`)."""
GROUPS = 32
"""Groups of consecutive files the fingerprint keeps a digest of (one file each, at most)."""
METADATA_NAMES = ("zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata")
"""The files that stand for a folder input (Zarr metadata)."""

Stat = tuple[str, os.stat_result]
"""A file standing for an input, by its path, and its ``stat``."""


def fingerprint_files(paths: Iterable[Path]) -> dict[str, Any]:
    """The fingerprint of the input files ``paths`` (see the module docstring), JSON-ready.

    Raises:
        InputError: a file cannot be examined (``stat``).
    """
    files = _stats(paths)
    newest = max(files, key=lambda f: f[1].st_mtime_ns, default=None)
    return {
        "files": len(files),
        "newest": None if newest is None else [newest[0], newest[1].st_mtime_ns],
        "groups": [[part[0][0], part[-1][0], _digest(part)] for part in _groups(files)],
    }


def changed_files(recorded: Mapping[str, Any], paths: Iterable[Path]) -> frozenset[str]:
    """Of the files that stand for the inputs ``paths`` now, those that may differ from the
    fingerprint ``recorded``: every file of each group whose digest differs, or every file
    when their number differs.

    Raises:
        InputError: a file cannot be examined (``stat``).
    """
    files = _stats(paths)
    if recorded.get("files") != len(files):
        return frozenset(name for name, _ in files)
    old = [group[2] for group in recorded.get("groups") or []]
    return frozenset(
        name
        for part, digest in zip(_groups(files), old, strict=True)
        if _digest(part) != digest
        for name, _ in part
    )


def standing_files(paths: Iterable[Path]) -> frozenset[str]:
    """The files that stand for ``paths`` in a fingerprint (a folder's Zarr metadata files)."""
    return frozenset(str(file) for path in paths for file in _expand(Path(path)))


def check_same_sources(where: Path, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Refuse to continue the output ``where``, recorded with the params ``old``, from inputs
    whose files changed since (``new``: this run's params). A record without a fingerprint
    (written before it existed) is not checked.

    Raises:
        ResumeMismatchError: naming the changed file, or the range of files one of which
            changed.
    """
    before, now = old.get(SOURCE_FILES), new.get(SOURCE_FILES)
    if not isinstance(before, dict) or not isinstance(now, dict) or before == now:
        return
    raise ResumeMismatchError(
        f"{_changed(before, now, where)} (resuming would mix old and new data; restore the "
        "inputs, or add --overwrite to start again)"
    )


def _changed(before: dict[str, Any], now: dict[str, Any], where: Path) -> str:
    """``<path>: <what changed>`` between two different fingerprints of the inputs of the
    output ``where``."""
    since = f"since {where} was started from it"
    groups: list[list[str]] = now.get("groups") or []
    every = f"{groups[0][0]} ... {groups[-1][1]}" if groups else "the inputs"
    if before.get("files") != now.get("files"):
        return (
            f"{every}: {now.get('files')} files now, {before.get('files')} when {where} was started"
        )
    changed = [
        group
        for group, old in zip(groups, before.get("groups") or [], strict=False)
        if group[2] != old[2]
    ]
    first = changed[0] if changed else None
    if first is not None and first[0] == first[1]:
        return f"{first[0]}: changed {since}"
    newest, was = now.get("newest"), before.get("newest")
    if newest and was and newest[1] > was[1]:
        return f"{newest[0]}: changed {since}"
    if first is not None:
        return (
            f"{first[0]} ... {first[1]}: one of these files changed (size or modification "
            f"time) {since}"
        )
    return f"{every}: changed {since}"


def _expand(path: Path) -> list[Path]:
    """The files that stand for ``path``: itself, or for a folder its Zarr metadata files and
    those of its direct subfolders (hidden ones left out: a datatools output's ledger)."""
    return _folder_metadata(path) if path.is_dir() else [path]


def _folder_metadata(folder: Path) -> list[Path]:
    """The Zarr metadata files of ``folder`` and of its direct, not hidden, subfolders."""
    folders = [
        folder,
        *sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
    ]
    return [f for where in folders for f in (where / n for n in METADATA_NAMES) if f.is_file()]


def _stats(paths: Iterable[Path]) -> list[Stat]:
    """Each file standing for ``paths``, with its ``stat`` (one ``stat`` per plain file: a
    slice folder may hold 100,000).

    Raises:
        InputError: a file cannot be examined.
    """
    files: list[Stat] = []
    for path in paths:
        try:
            found = os.stat(path)
            if not stat.S_ISDIR(found.st_mode):
                files.append((os.fspath(path), found))
                continue
            files.extend((str(f), f.stat()) for f in _folder_metadata(Path(path)))
        except OSError as exc:
            raise InputError(f"{path}: cannot examine ({exc.strerror or exc})") from exc
    return files


def _groups(files: list[Stat]) -> list[list[Stat]]:
    """``files`` cut into at most :data:`GROUPS` runs of consecutive files of equal length
    (the last may be shorter)."""
    size = max(1, math.ceil(len(files) / GROUPS))
    return [files[k : k + size] for k in range(0, len(files), size)]


def _digest(files: list[Stat]) -> str:
    """A digest of each file's name, size and modification time."""
    text = "\n".join(f"{os.path.basename(p)}\t{s.st_size}\t{s.st_mtime_ns}" for p, s in files)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
