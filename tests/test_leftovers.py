"""What killed runs leave in and beside an output (:mod:`datatools.ledger.leftovers`) is gone
once a rerun completes it, and ``verify`` names what it finds in a complete output.

Each leftover is made as a killed run leaves it: a chunk written under its temporary name
(``.<name>.<pid>.<thread>.tmp``, :func:`datatools.sinks.chunk_files.write_file_atomic`) and
never renamed, a shard that zarr-python was writing (``<name>.<uuid hex>.partial``), a done
record created but not yet written (0 bytes), and the folder an output was being created in
(``.<name>.<hex>.datatools-partial``), left by an ``--overwrite`` killed after it removed the
old output.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from datatools import ledger
from datatools.cli.main import cli
from datatools.convert import convert
from datatools.executor import TaskSlice
from datatools.ledger.zarr_folder import ZarrLedger
from datatools.patches import extract_patches
from datatools.sources import ArrayVolume, open_volume
from datatools.verify import verify
from tests.helpers import arange_volume, reads_stop_after, stop_after

DATA = arange_volume((16, 16, 16), "uint16")
KINDS = ("chunk temporary", "zarr temporary", "empty done record", "unfinished sibling")
SHARDED: dict[str, Any] = {"chunks": 2, "shards": 4, "levels": 2, "memory_limit": 768}
CONVERT: dict[str, dict[str, Any]] = {
    "chunks": {"chunks": 4, "levels": 3, "memory_limit": 2 * 4 * 4 * 16 * 2, "workers": 1},
    "shards": {**SHARDED, "workers": 1},  # one shard per unit
}


def done_record(out: Path, unit: int) -> Path:
    """The file that records unit ``unit`` of the Zarr v3 output ``out`` done."""
    return out / ".datatools" / "done" / "c" / str(unit)


def plant(out: Path, kind: str) -> Path:
    """Leave one leftover of ``kind`` in or beside the output ``out``, as a killed run does."""
    chunks = out / "0" / "c" / "0" / "0"
    if kind == "chunk temporary":
        found = chunks / f".0.{os.getpid()}.139872.tmp"
        found.parent.mkdir(parents=True, exist_ok=True)
        found.write_bytes(b"half a chunk")
    elif kind == "zarr temporary":
        found = chunks / "0.0123456789abcdef0123456789abcdef.partial"
        found.parent.mkdir(parents=True, exist_ok=True)
        found.write_bytes(b"half a shard")
    elif kind == "empty done record":
        found = done_record(out, min(ZarrLedger(out).done()))
        found.write_bytes(b"")
    else:
        found = out.parent / f".{out.name}.0badc0de.datatools-partial"
        zarr.create_group(found)  # populated up to the group when the run was killed
    return found


def assert_clean(out: Path, planted: dict[str, Path]) -> None:
    """Every planted leftover is gone (an empty done record repaired) and the output whole."""
    for kind, found in planted.items():
        if kind == "empty done record":
            assert found.read_bytes() == b"\x01"
        else:
            assert not os.path.lexists(found), kind
    assert ledger.find_stray_files(out) == []
    result = verify(out)
    assert result.ok, result.summary()
    np.testing.assert_array_equal(zarr.open_array(out / "0", mode="r")[:], DATA)


@pytest.mark.parametrize("layout", list(CONVERT))
def test_a_rerun_removes_the_leftovers_of_a_killed_convert(tmp_path: Path, layout: str) -> None:
    kwargs = CONVERT[layout]
    out = tmp_path / "out.zarr"
    with pytest.raises(KeyboardInterrupt):
        convert(ArrayVolume(DATA), out, on_unit_done=stop_after(2), **kwargs)
    planted = {kind: plant(out, kind) for kind in KINDS}
    assert len(ledger.find_stray_files(out)) == len(KINDS)
    result = convert(ArrayVolume(DATA), out, **kwargs)
    assert result.complete
    assert result.units_skipped == 2  # the unit with the empty record stays done
    assert_clean(out, planted)


def test_a_rerun_after_a_killed_overwrite_removes_its_unfinished_folder(tmp_path: Path) -> None:
    kwargs = CONVERT["chunks"]
    out = tmp_path / "out.zarr"
    convert(ArrayVolume(DATA), out, **kwargs)
    shutil.rmtree(out)  # --overwrite removed it, then was killed building the new one
    sibling = plant(out, "unfinished sibling")
    assert convert(ArrayVolume(DATA), out, **kwargs).complete
    assert_clean(out, {"unfinished sibling": sibling})


def test_job_array_tasks_spare_young_leftovers_and_a_rerun_removes_them(tmp_path: Path) -> None:
    kwargs = CONVERT["chunks"]
    out = tmp_path / "out.zarr"
    convert(ArrayVolume(DATA), out, task=TaskSlice(0, 2), **kwargs)
    old = {kind: plant(out, kind) for kind in KINDS}
    past = time.time() - 2 * ledger.STRAY_GRACE_SECONDS
    for found in old.values():
        os.utime(found, (past, past))
    young = old["chunk temporary"].with_name(f".0.{os.getpid()}.2.tmp")
    young.write_bytes(b"another task's chunk, being renamed into place")
    assert convert(ArrayVolume(DATA), out, task=TaskSlice(1, 2), **kwargs).complete
    assert ledger.find_stray_files(out) == [young]  # the other task may still be writing it
    assert old["empty done record"].read_bytes() == b"\x01"
    assert convert(ArrayVolume(DATA), out, **kwargs).complete  # alone: nothing else writes
    assert_clean(out, {**old, "young": young})


def test_a_rerun_removes_the_leftovers_of_killed_patches(tmp_path: Path) -> None:
    options: dict[str, Any] = {"size": (4, 4, 4), "stride": 4, "chunk_rows": 4}
    options.update(memory_limit=10_000, workers=1)
    source = tmp_path / "raw.zarr"
    zarr.create_array(source, data=DATA, chunks=(8, 8, 8))
    out = tmp_path / "p.zarr"
    fresh = extract_patches(source, tmp_path / "fresh.zarr", **options)
    sibling = plant(out, "unfinished sibling")  # from a killed --overwrite, say
    with (
        open_volume(source) as volume,
        reads_stop_after(volume, 2),
        pytest.raises(KeyboardInterrupt),
    ):
        extract_patches(volume, out, **options)
    assert not ledger.is_complete(out)
    temporary = out / "patches" / "c" / f".0.{os.getpid()}.139872.tmp"
    temporary.write_bytes(b"half a chunk")
    again = extract_patches(source, out, **options)
    assert ledger.is_complete(out)
    assert 0 < again.written < fresh.total
    assert not os.path.lexists(temporary)
    assert not os.path.lexists(sibling)
    assert ledger.find_stray_files(out) == []
    np.testing.assert_array_equal(
        zarr.open_array(out / "patches", mode="r")[:],
        zarr.open_array(fresh.target / "patches", mode="r")[:],
    )


@pytest.mark.parametrize("kind", KINDS)
def test_verify_names_a_leftover_in_a_complete_output(tmp_path: Path, kind: str) -> None:
    kwargs = CONVERT["chunks"]
    out = tmp_path / "out.zarr"
    convert(ArrayVolume(DATA), out, **kwargs)
    found = plant(out, kind)
    name = str(found.relative_to(tmp_path))
    result = verify(out)
    assert result.problems == [
        f"leftovers of a killed run: {name} (rerun the convert command to remove them)"
    ]
    cli_result = CliRunner().invoke(cli, ["verify", str(out)])
    assert cli_result.exit_code == 1, cli_result.output
    assert name in cli_result.output
    convert(ArrayVolume(DATA), out, **kwargs)
    assert verify(out).ok


def test_verify_counts_leftovers_past_the_first_three(tmp_path: Path) -> None:
    out = tmp_path / "out.zarr"
    convert(ArrayVolume(DATA), out, **CONVERT["chunks"])
    for k in range(5):
        (out / "0" / "c" / f".0.{k}.1.tmp").write_bytes(b"")
    (problem,) = verify(out).problems
    assert problem.startswith("leftovers of a killed run: out.zarr/0/c/.0.0.1.tmp, ")
    assert " and 2 more (" in problem


def test_clean_stray_files_removes_only_leftovers_and_follows_no_link(tmp_path: Path) -> None:
    out = tmp_path / "out.zarr"
    convert(ArrayVolume(DATA), out, **CONVERT["chunks"])
    user = tmp_path / "user"
    user.mkdir()
    (user / "keep.txt").write_text("mine")
    link = tmp_path / ".out.zarr.1234abcd.datatools-partial"
    link.symlink_to(user)
    kept = [
        out / "notes.tmp",  # not hidden: not a temporary of datatools
        out / "notes.partial",  # no uuid: not zarr-python's
        tmp_path / ".other.zarr.1234abcd.datatools-partial",  # another output's
        tmp_path / "out.zarr.datatools-partial",  # an HDF5-style partial name, not hidden
    ]
    for file in kept:
        file.write_text("keep")
    (out / ".x.tmp").mkdir()  # a folder, not a temporary file
    assert ledger.clean_stray_files(out) == 1
    assert not os.path.lexists(link)
    assert (user / "keep.txt").read_text() == "mine"
    assert all(file.exists() for file in kept)
    assert (out / ".x.tmp").is_dir()
