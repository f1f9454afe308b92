"""Volume.read(box, out=...) fills a caller's buffer with exactly what read(box) returns."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import zarr

from datatools.geometry import Box
from datatools.sources import ArrayVolume, open_volume
from tests.helpers import arange_volume


def specs(tmp_path: Path, data: np.ndarray) -> list[str]:
    folder = tmp_path / "slices"
    folder.mkdir()
    for z, plane in enumerate(data):
        tifffile.imwrite(folder / f"s{z}.tif", plane, compression="zlib", rowsperstrip=4)
    tifffile.imwrite(tmp_path / "vol.tif", data, photometric="minisblack")
    with h5py.File(tmp_path / "vol.h5", "w") as fh:
        fh["raw"] = data
    arr = zarr.create_array(
        tmp_path / "vol.zarr", shape=data.shape, chunks=(2, 5, 5), dtype=data.dtype
    )
    arr[:] = data
    return [
        str(folder),
        str(tmp_path / "vol.tif"),
        f"{tmp_path / 'vol.h5'}:/raw",
        str(tmp_path / "vol.zarr"),
    ]


def test_read_into_a_reused_buffer(tmp_path: Path) -> None:
    data = arange_volume((6, 11, 13), "uint16")
    box = Box((1, 2, 3), (5, 9, 12))
    for spec in specs(tmp_path, data):
        with open_volume(spec) as volume:
            buffer = np.full(box.shape, 7, dtype=volume.dtype)
            result = volume.read(box, out=buffer)
            assert result is buffer, spec
            np.testing.assert_array_equal(buffer, data[box.slices()])
    volume = ArrayVolume(data)
    buffer = np.zeros(box.shape, data.dtype)
    assert volume.read(box, out=buffer) is buffer
    np.testing.assert_array_equal(buffer, data[box.slices()])


def test_read_into_a_wrong_buffer_is_refused(tmp_path: Path) -> None:
    data = arange_volume((4, 8, 8), "uint16")
    spec = specs(tmp_path, data)[0]
    with open_volume(spec) as volume, pytest.raises(ValueError, match="does not fit"):
        volume.read(Box((0, 0, 0), (2, 2, 2)), out=np.zeros((2, 2, 3), "uint16"))


def test_uncompressed_slices_are_reread_without_their_header(tmp_path: Path) -> None:
    from datatools.errors import InputError

    data = arange_volume((3, 16, 12), "uint16")
    folder = tmp_path / "raw"
    folder.mkdir()
    for z, plane in enumerate(data):
        tifffile.imwrite(folder / f"s{z}.tif", plane)
    with open_volume(str(folder)) as volume:
        for box in (
            Box((0, 0, 0), (3, 16, 12)),
            Box((1, 3, 2), (3, 9, 7)),
            Box((0, 5, 0), (2, 6, 12)),
        ):
            for _ in range(2):  # the second read of a slice skips its header
                np.testing.assert_array_equal(volume.read(box), data[box.slices()])
        path = folder / "s2.tif"
        path.write_bytes(path.read_bytes()[:200])
        with pytest.raises(InputError, match=r"s2\.tif: truncated TIFF"):
            volume.read(Box((2, 8, 0), (3, 16, 12)))
