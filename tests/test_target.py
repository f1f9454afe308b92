from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import zarr

from datatools import ledger
from datatools.convert import convert
from datatools.convert.class_masks import split_classes
from datatools.errors import ResumeMismatchError, TargetError
from datatools.patches import extract_patches
from datatools.sources import ArrayVolume
from tests.helpers import child_array


def populate(folder: Path) -> None:
    zarr.create_group(folder, zarr_format=3).create_array(
        "a", shape=(4,), chunks=(2,), dtype="uint8"
    )


def test_claim_creates_a_clean_zarr_hierarchy(tmp_path: Path) -> None:
    out = tmp_path / "o.zarr"
    record = ledger.RunRecord("test", {"x": 1})
    assert ledger.claim(out, record, overwrite=False, populate=populate) == "created"
    assert ledger.is_ours(out)
    assert ledger.read_record(out) == record
    ledger.ZarrLedger(out).mark_done([0, 5, 7])
    assert ledger.ZarrLedger(out).done() == {0, 5, 7}
    ledger.ZarrLedger(out).write_state({"rows": 12})
    assert ledger.ZarrLedger(out).read_state() == {"rows": 12}
    assert not ledger.is_complete(out)
    ledger.mark_complete(out)
    assert ledger.is_complete(out)
    status = ledger.status(out)
    assert status is not None
    assert (status.units_done, status.complete) == (3, True)
    group = zarr.open_group(out, mode="r")  # filterwarnings=error: no foreign objects listed
    names = sorted(name for name, _ in group.members(max_depth=None))
    assert names == [".datatools", ".datatools/done", "a"]
    np.testing.assert_array_equal(
        np.asarray(child_array(group, ".datatools/done")[:8]), [1, 0, 0, 0, 0, 1, 0, 1]
    )


def test_claim_v2_marker(tmp_path: Path) -> None:
    out = tmp_path / "v2.zarr"
    ledger.claim(
        out,
        ledger.RunRecord("test", {}),
        overwrite=False,
        populate=lambda f: zarr.create_group(f, zarr_format=2).attrs.update({"k": 1}),
    )
    ledger.ZarrLedger(out).mark_done([3])
    assert ledger.ZarrLedger(out).done() == {3}
    group = zarr.open_group(out, mode="r")
    assert sorted(name for name, _ in group.members(max_depth=None)) == [
        ".datatools",
        ".datatools/done",
    ]
    assert child_array(group, ".datatools/done")[3] == 1


def test_resume_and_mismatch(tmp_path: Path) -> None:
    out = tmp_path / "o.zarr"
    ledger.claim(out, ledger.RunRecord("test", {"x": 1}), overwrite=False, populate=populate)
    again = ledger.claim(
        out, ledger.RunRecord("test", {"x": 1}), overwrite=False, populate=populate
    )
    assert again == "resumed"
    with pytest.raises(ResumeMismatchError, match="x was 1, now 2"):
        ledger.claim(out, ledger.RunRecord("test", {"x": 2}), overwrite=False, populate=populate)
    assert (
        ledger.claim(out, ledger.RunRecord("test", {"x": 2}), overwrite=True, populate=populate)
        == "created"
    )


def test_concurrent_claims_agree(tmp_path: Path) -> None:
    out = tmp_path / "race.zarr"
    record = ledger.RunRecord("test", {"x": 1})
    results: list[str] = []

    def claim() -> None:
        results.append(ledger.claim(out, record, overwrite=False, populate=populate))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["created"] + ["resumed"] * 5
    assert not [p for p in tmp_path.iterdir() if p.name != "race.zarr"]


def test_remove_ours_refuses_foreign(tmp_path: Path) -> None:
    foreign = tmp_path / "f"
    foreign.mkdir()
    with pytest.raises(TargetError, match="folder datatools did not create"):
        ledger.ZarrLedger(foreign).remove()
    link = tmp_path / "link"
    link.symlink_to(foreign)
    with pytest.raises(TargetError, match="symbolic link"):
        ledger.ZarrLedger(link).remove()
    assert foreign.is_dir()


def test_clean_stray_files_spares_young_ones(tmp_path: Path) -> None:
    old, young = tmp_path / "a" / ".x.1.2.tmp", tmp_path / ".y.3.4.tmp"
    old.parent.mkdir()
    for p in (old, young, tmp_path / "keep.tmp"):
        p.write_bytes(b"x")
    os.utime(old, (time.time() - 120, time.time() - 120))
    assert ledger.clean_stray_files(tmp_path, older_than=60) == 1
    assert not old.exists()
    assert young.exists()
    assert (tmp_path / "keep.tmp").exists()  # not a hidden temporary: not ours
    assert ledger.clean_stray_files(tmp_path) == 1
    assert not young.exists()


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_update_attributes_merges_atomically(tmp_path: Path, zarr_format: Literal[2, 3]) -> None:
    group = zarr.create_group(tmp_path / "g.zarr", zarr_format=zarr_format)
    group.attrs.update({"a": 1, "b": {"c": 2}})
    ledger.update_attributes(tmp_path / "g.zarr", {"b": {"d": 3}, "e": [4]})
    reread = zarr.open_group(tmp_path / "g.zarr", mode="r")
    assert dict(reread.attrs) == {"a": 1, "b": {"d": 3}, "e": [4]}
    assert not list((tmp_path / "g.zarr").glob("*.tmp"))


def test_diff_names_options_before_what_follows_from_them() -> None:
    old = ledger.RunRecord("convert", {"chunks": [64], "unit_shapes": [[64, 64]], "roi": "a"})
    new = ledger.RunRecord("convert", {"chunks": [32], "unit_shapes": [[32, 64]], "roi": "a"})
    assert ledger.diff_params(old, new) == "chunks was [64], now [32]"
    planned = ledger.RunRecord("convert", {"chunks": [64], "unit_shapes": [[32, 64]]})
    assert ledger.diff_params(old, planned) == 'roi was "a", now null'  # options first
    same = ledger.RunRecord("convert", {"chunks": [64], "unit_shapes": [[32, 64]], "roi": "a"})
    assert ledger.diff_params(old, same) == "unit_shapes was [[64, 64]], now [[32, 64]]"


@pytest.mark.parametrize("name", ["out.tif", "classes.h5", "x.nii.gz", "stack.TIFF"])
def test_zarr_outputs_named_like_files_are_refused(tmp_path: Path, name: str) -> None:
    data = ArrayVolume(np.arange(64, dtype=np.uint16).reshape(4, 4, 4))
    out = tmp_path / name
    suffix = Path(name).suffix.lower()
    if suffix == ".h5":  # convert writes HDF5 there; split-classes and patches write Zarr
        labels = tmp_path / "labels.zarr"
        zarr.create_array(labels, shape=(4, 4, 4), dtype="uint8")[:] = 1
        with pytest.raises(TargetError, match=rf"{name}: a Zarr output folder named like a \."):
            split_classes(str(labels), out)
    else:
        with pytest.raises(TargetError, match=f"named like a \\{suffix} file"):
            convert(data, out)
        with pytest.raises(TargetError, match=f"named like a \\{suffix} file"):
            extract_patches(data, out, size=2)
    assert not out.exists()
