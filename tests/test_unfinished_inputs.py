"""An unfinished datatools output is never read as an input (its missing units would read as
zeros or the fill value): reached through a symbolic link, or as the partial file of an HDF5
output. A link to a finished output reads, verifies and shows as that output."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import tifffile
from click.testing import CliRunner

from datatools.cli.main import cli
from datatools.convert import convert
from datatools.errors import InputError
from datatools.info import inspect
from datatools.patches import extract_patches
from datatools.sources import ArrayVolume
from datatools.verify import verify
from tests.helpers import arange_volume


def interrupted_output(path: Path) -> None:
    def stop(index: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(ArrayVolume(arange_volume((8, 16, 16))), path, chunks=4, on_unit_done=stop)


def test_the_partial_file_of_an_hdf5_output_is_refused_as_an_input(tmp_path: Path) -> None:
    interrupted_output(tmp_path / "u.h5")
    partial = tmp_path / "u.h5.datatools-partial"
    assert partial.is_file()
    for spec in (partial, f"{partial}:/data"):
        with pytest.raises(InputError, match=r"the partial file of a datatools output that is "):
            convert(spec, tmp_path / "x.zarr")
    assert not (tmp_path / "x.zarr").exists()


def test_a_link_to_an_unfinished_output_is_refused_as_an_input(tmp_path: Path) -> None:
    interrupted_output(tmp_path / "u.zarr")
    os.symlink(tmp_path / "u.zarr", tmp_path / "link.zarr")
    with pytest.raises(InputError, match=r"a datatools output that is not finished \(1/"):
        extract_patches(tmp_path / "link.zarr", tmp_path / "p.zarr", size=4)
    assert not (tmp_path / "p.zarr").exists()
    state = inspect(tmp_path / "link.zarr")["status"]
    assert state["complete"] is False


def test_a_link_to_a_finished_output_verifies(tmp_path: Path) -> None:
    data = arange_volume((8, 16, 16))
    tifffile.imwrite(tmp_path / "v.tif", data, photometric="minisblack")
    convert(tmp_path / "v.tif", tmp_path / "o.zarr", chunks=4)
    os.symlink(tmp_path / "o.zarr", tmp_path / "link.zarr")
    assert verify(tmp_path / "link.zarr", against=str(tmp_path / "v.tif")).ok
    result = CliRunner().invoke(cli, ["verify", str(tmp_path / "link.zarr")])
    assert result.exit_code == 0, result.output
    assert inspect(tmp_path / "link.zarr")["shape"] == [8, 16, 16]
