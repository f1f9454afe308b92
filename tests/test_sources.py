"""The dispatcher (``open_volume``) and kind-independent source checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from datatools.errors import OptionError
from datatools.sources import (
    OpenOptions,
    check_source_options,
    open_volume,
)
from datatools.sources.tiff_file import TiffFileVolume
from datatools.sources.tiff_stack import TiffStack
from tests.helpers import arange_volume, write_itk, write_stack


def test_dispatcher_opens_folder_glob_list_and_file(tmp_path: Path) -> None:
    data = arange_volume((3, 6, 7), "uint16")
    folder = write_stack(tmp_path / "stack", data)
    (folder / "other.png").write_bytes(b"png")
    paths = [folder / f"slice_{z:04d}.tif" for z in (2, 0, 1)]
    for spec in (str(folder), f"{folder}/slice_*", paths):
        with open_volume(spec) as volume:
            assert isinstance(volume, TiffStack)
            np.testing.assert_array_equal(volume.read_all(), data)
    with open_volume([paths[2], paths[1]]) as volume:
        assert volume.spec == f"{paths[2]},{paths[1]}"
        np.testing.assert_array_equal(volume.read_all(), data[:2])
    with open_volume(str(paths[0])) as volume:
        assert isinstance(volume, TiffFileVolume)
        np.testing.assert_array_equal(volume.read_all(), data[2])
    (tmp_path / "store.zarr").mkdir()
    (tmp_path / "store.zarr" / "zarr.json").write_text("{}")
    assert not TiffStack.can_open(str(tmp_path / "store.zarr"))
    bracket = tmp_path / "scan[1].tif"
    tifffile.imwrite(bracket, data[0])
    assert not TiffStack.can_open(str(bracket))
    assert TiffFileVolume.can_open(str(bracket))


def test_level_and_series_only_where_they_exist(tmp_path: Path) -> None:
    path = tmp_path / "v.mha"
    write_itk(path, arange_volume((2, 3, 4)))
    for options, message in (
        (OpenOptions(level=2), "--source-level 2: {} (itk) has one level (levels are for "
                               "OME-Zarr images and pyramidal TIFF files)"),
        (OpenOptions(series=1), "--series 1: {} (itk) has one series (series are for "
                                "multi-series TIFF files)"),
    ):  # fmt: skip
        volume = open_volume(str(path), options)  # labels and masks open as they are
        with pytest.raises(OptionError) as info:
            check_source_options(volume, options)  # a main source is refused
        assert str(info.value) == message.format(path)
    with open_volume(str(path)) as volume:
        check_source_options(volume, OpenOptions(level=0, series=0))
