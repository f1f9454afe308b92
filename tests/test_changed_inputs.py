"""A rerun against an input file changed since the output was started is refused, naming the
file (:mod:`datatools.ledger.fingerprint`), unless no finished unit of a Zarr convert output
read it; an unchanged rerun, and an output whose record predates the fingerprint, resume as
before.

Each run is interrupted the way the other resume tests do it (``on_unit_done``, a failing
read, a failing chunk-row write), then one slice is replaced by another of the same shape, as
a user re-exporting a slice would.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr
from click.testing import CliRunner

from datatools import ledger
from datatools.cli.main import cli
from datatools.convert import convert
from datatools.errors import ResumeMismatchError
from datatools.instances import extract_instances
from datatools.instances.crops import Cropper
from datatools.ledger.fingerprint import GROUPS
from datatools.patches import extract_patches
from datatools.sources import open_volume
from tests.helpers import arange_volume, message, reads_stop_after, stop_after, write_stack

DATA = arange_volume((8, 16, 16), "uint16")
CONVERT: dict[str, Any] = {"chunks": 4, "memory_limit": 2 * 4 * 4 * 16 * 2, "workers": 1}
HINT = (
    "(resuming would mix old and new data; restore the inputs, or add --overwrite to start again)"
)


def replace_slice(file: Path, plane: np.ndarray, *, newer: bool = True) -> None:
    """Write ``plane`` over the slice ``file`` (same shape and dtype, so the same size); its
    modification time becomes a second later than before (``newer``), or a second earlier, as
    ``cp -p`` of an older copy leaves it."""
    before = file.stat()
    tifffile.imwrite(file, plane)
    shift = 10**9 if newer else -(10**9)
    os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns + shift))


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    return write_stack(tmp_path / "stack", DATA)


def interrupted_convert(source: Path, out: Path, **kwargs: Any) -> None:
    with pytest.raises(KeyboardInterrupt):
        convert(source, out, on_unit_done=stop_after(2), **CONVERT, **kwargs)
    assert not ledger.is_complete(out)


@pytest.mark.parametrize("name", ["out.zarr", "out.h5"])
def test_a_resume_after_a_slice_was_replaced_is_refused_naming_it(
    tmp_path: Path, stack: Path, name: str
) -> None:
    out = tmp_path / name
    interrupted_convert(stack, out)
    changed = stack / "slice_0001.tif"  # read by the finished units (z 0 to 3)
    replace_slice(changed, DATA[1][::-1])
    where = ledger.open_ledger(out).location()
    with pytest.raises(ResumeMismatchError) as info:
        convert(stack, out, **CONVERT)
    assert str(info.value) == f"{changed}: changed since {where} was started from it {HINT}"
    result = CliRunner().invoke(cli, ["convert", str(stack), str(out), "--chunks", "4"])
    assert result.exit_code == 2, result.output
    assert result.output == f"Error: {changed}: changed since {where} was started from it {HINT}\n"
    assert not ledger.is_complete(out)


def test_a_slice_no_finished_unit_read_may_be_replaced(tmp_path: Path, stack: Path) -> None:
    """As a slice found corrupt mid-run and fixed: the run goes on with the new slice, and
    reruns after it compare with the files as they are now."""
    out = tmp_path / "out.zarr"
    interrupted_convert(stack, out)  # units of 4 x 4 x 4, z 0 to 3 first
    replace_slice(stack / "slice_0006.tif", DATA[6] + 5)
    expected = DATA.copy()
    expected[6] += 5
    with pytest.raises(KeyboardInterrupt):  # interrupted again, after reading the new slice
        convert(stack, out, on_unit_done=stop_after(20), **CONVERT)
    record = ledger.read_record(out)
    assert record is not None
    assert record.params[ledger.SOURCE_FILES] == ledger.fingerprint_files(sorted(stack.iterdir()))
    resumed = convert(stack, out, **CONVERT)
    assert (resumed.units_skipped, resumed.complete) == (22, True)
    np.testing.assert_array_equal(zarr.open_array(out / "0", mode="r")[:], expected)
    assert convert(stack, out, **CONVERT).units_written == 0
    replace_slice(stack / "slice_0006.tif", DATA[6])  # now read by finished units
    with pytest.raises(ResumeMismatchError, match=r"slice_0006\.tif: changed since"):
        convert(stack, out, **CONVERT)


def test_a_touched_slice_is_refused_too(tmp_path: Path, stack: Path) -> None:
    """The contents are not read: a slice whose time changed may have changed."""
    out = tmp_path / "out.zarr"
    interrupted_convert(stack, out)
    touched = stack / "slice_0000.tif"
    os.utime(touched, ns=(0, touched.stat().st_mtime_ns - 10**9))
    with pytest.raises(ResumeMismatchError, match=message(f"{touched}: changed since")[:-1]):
        convert(stack, out, **CONVERT)


def test_an_unchanged_rerun_resumes_and_overwrite_starts_again(tmp_path: Path, stack: Path) -> None:
    out = tmp_path / "out.zarr"
    interrupted_convert(stack, out)
    resumed = convert(stack, out, **CONVERT)
    assert (resumed.units_skipped, resumed.complete) == (2, True)
    np.testing.assert_array_equal(zarr.open_array(out / "0", mode="r")[:], DATA)
    again = convert(stack, out, **CONVERT)  # a finished output of the same inputs: nothing to do
    assert (again.units_written, again.complete) == (0, True)
    replace_slice(stack / "slice_0003.tif", DATA[3] + 1)
    with pytest.raises(ResumeMismatchError, match=r"slice_0003\.tif: changed since"):
        convert(stack, out, **CONVERT)
    convert(stack, out, overwrite=True, **CONVERT)
    expected = DATA.copy()
    expected[3] += 1
    np.testing.assert_array_equal(zarr.open_array(out / "0", mode="r")[:], expected)


def test_an_output_recorded_without_a_fingerprint_resumes(tmp_path: Path, stack: Path) -> None:
    out = tmp_path / "out.zarr"
    interrupted_convert(stack, out)
    record_file = out / ".datatools" / "zarr.json"
    doc = json.loads(record_file.read_text())
    del doc["attributes"]["run"]["params"][ledger.SOURCE_FILES]  # as the previous release wrote
    record_file.write_text(json.dumps(doc))
    resumed = convert(stack, out, **CONVERT)
    assert (resumed.units_skipped, resumed.complete) == (2, True)
    record = ledger.read_record(out)
    assert record is not None
    assert ledger.SOURCE_FILES not in record.params  # the record it resumed stays as it was


def test_a_zarr_input_created_again_is_refused_naming_its_metadata(tmp_path: Path) -> None:
    source = tmp_path / "raw.zarr"
    zarr.create_array(source, data=DATA, chunks=(4, 8, 8))
    out = tmp_path / "out.zarr"
    interrupted_convert(source, out)
    metadata = source / "zarr.json"
    before = metadata.stat().st_mtime_ns
    zarr.create_array(source, data=DATA[::-1], chunks=(4, 8, 8), overwrite=True)
    os.utime(metadata, ns=(before, before + 10**9))
    with pytest.raises(ResumeMismatchError, match=message(f"{metadata}: changed since")[:-1]):
        convert(source, out, **CONVERT)


def test_patches_refuse_a_changed_source(tmp_path: Path, stack: Path) -> None:
    options: dict[str, Any] = {"size": (2, 4, 4), "stride": 4, "chunk_rows": 4}
    options.update(memory_limit=10_000, workers=1)
    out = tmp_path / "p.zarr"
    with (
        open_volume(stack) as volume,
        reads_stop_after(volume, 1),
        pytest.raises(KeyboardInterrupt),
    ):
        extract_patches(volume, out, **options)
    assert not ledger.is_complete(out)
    changed = stack / "slice_0006.tif"
    replace_slice(changed, DATA[6] // 2)
    with pytest.raises(ResumeMismatchError) as info:
        extract_patches(stack, out, **options)
    assert str(info.value) == f"{changed}: changed since {out} was started from it {HINT}"
    extract_patches(stack, out, overwrite=True, **options)
    assert ledger.is_complete(out)


@pytest.mark.parametrize("name", ["crops.zarr", "crops.h5"])
def test_instances_refuse_a_changed_image(
    tmp_path: Path, stack: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    labels = np.zeros(DATA.shape, np.uint16)
    labels[1:3, 2:5, 2:5] = 1
    labels[5:7, 9:12, 9:12] = 2
    cells = write_stack(tmp_path / "cells", labels)
    out = tmp_path / name
    options: dict[str, Any] = {"size": (2, 4, 4), "chunk_rows": 1, "workers": 1}
    calls = 0
    write = Cropper._write

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise KeyboardInterrupt
        return write(*args, **kwargs)

    monkeypatch.setattr(Cropper, "_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract_instances(stack, cells, out, **options)
    monkeypatch.undo()
    changed = stack / "slice_0002.tif"
    replace_slice(changed, DATA[2] + 7)  # the labels, so the plan, stay: only crops would differ
    with pytest.raises(ResumeMismatchError) as info:
        extract_instances(stack, cells, out, **options)
    assert str(info.value) == f"{changed}: changed since {out} was started from it {HINT}"
    assert extract_instances(stack, cells, out, overwrite=True, **options).complete


def make_files(folder: Path, n: int) -> list[Path]:
    """``n`` small files with increasing modification times (one second apart)."""
    folder.mkdir()
    files = [folder / f"f{k:03d}.tif" for k in range(n)]
    for k, file in enumerate(files):
        file.write_bytes(b"x" * 10)
        os.utime(file, ns=(0, (1_700_000_000 + k) * 10**9))
    return files


def refusal(where: Path, old: dict[str, Any], files: list[Path]) -> str:
    """The message of the refusal to resume ``where`` from ``files`` recorded as ``old``."""
    with pytest.raises(ResumeMismatchError) as info:
        ledger.check_same_sources(
            where,
            {ledger.SOURCE_FILES: old},
            {ledger.SOURCE_FILES: ledger.fingerprint_files(files)},
        )
    return str(info.value).removesuffix(f" {HINT}")


def test_a_big_folder_is_recorded_in_bounded_size(tmp_path: Path) -> None:
    files = make_files(tmp_path / "many", 1000)
    record = ledger.fingerprint_files(files)
    assert record["files"] == 1000
    assert len(record["groups"]) == GROUPS  # of 32 files (the last of 8)
    assert len(json.dumps(record)) < 200 * GROUPS
    assert record["newest"] == [str(files[-1]), (1_700_000_000 + 999) * 10**9]
    ledger.check_same_sources(tmp_path, {ledger.SOURCE_FILES: record}, {})  # nothing to compare


def test_a_big_folder_names_a_file_newer_than_the_others(tmp_path: Path) -> None:
    files = make_files(tmp_path / "many", 100)
    old = ledger.fingerprint_files(files)
    os.utime(files[40], ns=(0, 1_800_000_000 * 10**9))
    assert (
        refusal(tmp_path, old, files)
        == f"{files[40]}: changed since {tmp_path} was started from it"
    )


def test_a_big_folder_names_the_range_of_a_file_set_back_in_time(tmp_path: Path) -> None:
    files = make_files(tmp_path / "many", 100)  # groups of 4 files
    old = ledger.fingerprint_files(files)
    os.utime(files[41], ns=(0, 1_600_000_000 * 10**9))
    assert refusal(tmp_path, old, files) == (
        f"{files[40]} ... {files[43]}: one of these files changed (size or modification time) "
        f"since {tmp_path} was started from it"
    )


def test_a_small_folder_names_the_file_whatever_its_time(tmp_path: Path) -> None:
    files = make_files(tmp_path / "few", 20)
    old = ledger.fingerprint_files(files)
    files[7].write_bytes(b"y" * 11)
    os.utime(files[7], ns=(0, 1_600_000_000 * 10**9))
    assert refusal(tmp_path, old, files) == (
        f"{files[7]}: changed since {tmp_path} was started from it"
    )


def test_a_folder_with_another_number_of_files_is_refused(tmp_path: Path) -> None:
    files = make_files(tmp_path / "few", 20)
    old = ledger.fingerprint_files(files)
    assert refusal(tmp_path, old, files[:-1]) == (
        f"{files[0]} ... {files[-2]}: 19 files now, 20 when {tmp_path} was started"
    )
