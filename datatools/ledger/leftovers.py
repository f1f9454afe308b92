"""What a killed run leaves in and beside a Zarr folder output, listed and cleaned.

A run killed while writing can leave, besides units that are simply not done:

- hidden temporaries ``.<name>.<...>.tmp``: a chunk file
  (:func:`datatools.sinks.chunk_files.write_file_atomic`) or a JSON or attribute file
  (:func:`~datatools.ledger.atomic_files.write_json_atomic`) written under a temporary name
  and not yet renamed into place;
- zarr-python's temporaries ``<name>.<32 hex digits>.partial``: a shard or metadata file that
  zarr-python was writing (sharded arrays are written through zarr-python);
- empty done records: a unit's one-byte record in ``.datatools/done`` created but not yet
  written. The unit's data was written before its record was created, so the record stands:
  it is repaired (given its byte), not removed;
- hidden sibling folders ``.<name>.<hex>.datatools-partial``: an output being created
  (:meth:`~datatools.ledger.zarr_folder.ZarrLedger.claim` builds it there and renames it
  into place), for example by an ``--overwrite`` killed after it removed the old output.

None of them is data of the output. :func:`clean_stray_files` removes them (and repairs the
records); :func:`find_stray_files` lists them, for ``verify``. When: a run that is the only
writer of its output cleans every leftover, whatever its age, when it resumes an output and
when it finalizes one. A job-array task, which may share the output with tasks still running,
cleans only at finalization, and only leftovers older than a grace period: the last tasks of
an array may finish together, and another one may still be renaming a pyramid chunk or an
attribute file into place, or creating the output. Once an output is complete nothing writes
in it any more, so a leftover younger than the grace period is removed by the next rerun.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from datatools.ledger.interface import PARTIAL_SUFFIX
from datatools.ledger.zarr_folder import DONE_DIR, MARKER

TEMPORARY = re.compile(r"^\..+\.tmp$")
"""A hidden temporary file of datatools: a file being written, renamed into place when whole."""
ZARR_TEMPORARY = re.compile(r"\.[0-9a-f]{32}\.partial$")
"""A temporary file of zarr-python's local store (``<name>.<uuid4 hex>.partial``)."""
STRAY_GRACE_SECONDS = 60.0
"""Where other processes may still write an output (job-array tasks, writers filled by several
processes), leftovers younger than this survive the clean-up at finalization."""
DONE_RECORD = b"\x01"
"""The content of a unit's done record."""


def find_stray_files(path: Path) -> list[Path]:
    """The leftovers of killed runs in and beside the Zarr folder output ``path`` (see the
    module docstring), sorted; empty done records among them."""
    return sorted(p for p, _ in _strays(path))


def clean_stray_files(path: Path, *, older_than: float = 0.0) -> int:
    """Remove the leftovers of killed runs in and beside the Zarr folder output ``path`` and
    repair its empty done records; returns how many were found.

    ``older_than`` (seconds): keep temporaries and unfinished sibling folders younger than
    this, which may belong to another process writing right now (a job-array task finishing
    at the same moment). Symbolic links are removed as links, never followed.
    """
    found = 0
    limit = time.time() - older_than
    for stray, record in _strays(path):
        try:
            if record:
                stray.write_bytes(DONE_RECORD)
            elif stray.lstat().st_mtime > limit:
                continue
            elif stray.is_dir() and not stray.is_symlink():
                shutil.rmtree(stray)
            else:
                stray.unlink()
        except FileNotFoundError:  # renamed into place or removed meanwhile
            continue
        found += 1
    return found


def _strays(path: Path) -> Iterator[tuple[Path, bool]]:
    """Each leftover, and whether it is an empty done record."""
    path = Path(path)
    records = path / MARKER / DONE_DIR
    for root, _, files in os.walk(path):
        folder = Path(root)
        in_records = folder == records or records in folder.parents
        for name in files:
            file = folder / name
            if TEMPORARY.match(name) or ZARR_TEMPORARY.search(name):
                yield file, False
            elif in_records and name.isdigit() and _is_empty(file):
                yield file, True
    prefix = f".{path.name}."
    try:
        siblings = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in siblings:
        if entry.name.startswith(prefix) and entry.name.endswith(PARTIAL_SUFFIX):
            yield Path(entry.path), False


def _is_empty(file: Path) -> bool:
    try:
        return file.lstat().st_size == 0
    except FileNotFoundError:
        return False
