"""Hostile option values and inputs that once ended in a traceback: each is now one ``Error:``
line, exit 2, and leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import h5py
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from datatools.cli.main import cli
from tests.helpers import arange_volume


def run_error(*args: str) -> str:
    """stderr of a command that must fail as a user error: one line, exit 2."""
    result = CliRunner().invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def zarr_volume(path: Path, data: np.ndarray, zarr_format: Literal[2, 3] = 3) -> Path:
    zarr.create_array(
        path, shape=data.shape, chunks=data.shape, dtype=data.dtype, zarr_format=zarr_format
    )[:] = data
    return path


def leftovers(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(name))


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        (
            "",
            "--dataset '': not a dataset path in an HDF5 file (give names joined by /, e.g. "
            "data or raw/em)",
        ),
        (
            "raw/",
            "--dataset raw/: not a dataset path in an HDF5 file (give names joined by /, e.g. "
            "data or raw/em)",
        ),
        (
            "_datatools_ledger",
            "--dataset _datatools_ledger: datatools keeps its record of done units under "
            "_datatools_ledger (give another name, e.g. data)",
        ),
        (
            "/_datatools_ledger/raw",
            "--dataset /_datatools_ledger/raw: datatools keeps its record of done units under "
            "_datatools_ledger (give another name, e.g. data)",
        ),
    ],
)
def test_an_hdf5_dataset_path_that_is_no_name_or_the_ledgers_is_refused(
    tmp_path: Path, dataset: str, message: str
) -> None:
    source = zarr_volume(tmp_path / "v.zarr", arange_volume((4, 8, 8)))
    out = tmp_path / "o.h5"
    for _ in range(2):  # a rerun says the same
        err = run_error("convert", str(source), str(out), "--dataset", dataset)
        assert err == f"Error: {message}\n"
        assert leftovers(tmp_path, "o.h5") == []


def test_a_nested_hdf5_dataset_path_is_written(tmp_path: Path) -> None:
    data = arange_volume((4, 8, 8))
    source = zarr_volume(tmp_path / "v.zarr", data)
    out = tmp_path / "o.h5"
    result = CliRunner().invoke(cli, ["convert", str(source), str(out), "--dataset", "/raw/em"])
    assert result.exit_code == 0, result.output
    with h5py.File(out, "r") as fh:
        np.testing.assert_array_equal(fh["raw/em"][:], data)


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("command", ["info", "convert"])
def test_a_zarr_source_with_empty_chunks_in_its_metadata_is_refused(
    tmp_path: Path, zarr_format: Literal[2, 3], command: str
) -> None:
    source = zarr_volume(tmp_path / "z.zarr", arange_volume((4, 8, 8)), zarr_format)
    if zarr_format == 2:
        meta_path = source / ".zarray"
        meta = json.loads(meta_path.read_text())
        meta["chunks"] = [0, 0, 0]
    else:
        meta_path = source / "zarr.json"
        meta = json.loads(meta_path.read_text())
        meta["chunk_grid"]["configuration"]["chunk_shape"] = [0, 0, 0]
    meta_path.write_text(json.dumps(meta))
    out = tmp_path / "o.zarr"
    args = [command, str(source)] + ([str(out)] if command == "convert" else [])
    assert run_error(*args) == (
        f"Error: {source}: chunk shape 0 x 0 x 0 in its metadata is empty (corrupt metadata: "
        "a chunk spans at least 1 voxel on every axis)\n"
    )
    assert leftovers(tmp_path, "o.zarr") == []


@pytest.mark.parametrize(
    ("ids", "named"),
    [
        ("99999999999999999999", "99999999999999999999"),
        ("3,-9223372036854775809,9223372036854775808", "-9223372036854775809,9223372036854775808"),
    ],
)
def test_instance_ids_beyond_int64_are_refused(tmp_path: Path, ids: str, named: str) -> None:
    image = zarr_volume(tmp_path / "img.zarr", arange_volume((4, 8, 8)))
    labels = np.zeros((4, 8, 8), np.uint64)
    labels[1:3, 2:5, 2:5] = 3
    label_path = zarr_volume(tmp_path / "lab.zarr", labels)
    out = tmp_path / "i.zarr"
    err = run_error("instances", str(image), str(label_path), str(out), "--size", "2", "--ids", ids)
    assert err == (
        f"Error: --ids {named}: instance ids are int64, from -9223372036854775808 to "
        "9223372036854775807 (give ids that occur in the labels)\n"
    )
    assert leftovers(tmp_path, "i.zarr") == []
