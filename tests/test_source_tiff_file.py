"""Single TIFF file sources (``tiff-file``: multi-page, OME, ImageJ, pyramidal): random-box
reads, axes, series and levels, physical size, bad inputs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from datatools.errors import InputError
from datatools.geometry import Box
from datatools.sources import OpenOptions, open_volume
from datatools.sources.tiff_file import TiffFileVolume
from tests.helpers import arange_volume, message, random_boxes
from tests.source_conformance import SourceConformance


class TestTiffFileConformance(SourceConformance):
    kind = "tiff-file"
    dtype = "uint8"

    def write(self, folder: Path, data: np.ndarray) -> str:
        path = folder / "vol.tif"
        tifffile.imwrite(path, data, photometric="minisblack")  # memory-mapped when read
        return str(path)


OPEN = OpenOptions()


def test_tiff_file_recognised_by_magic(tmp_path: Path) -> None:
    path = tmp_path / "volume.raw"
    tifffile.imwrite(path, np.zeros((4, 5), np.uint8))
    assert TiffFileVolume.can_open(str(path))
    (tmp_path / "text.raw").write_text("hello")
    assert not TiffFileVolume.can_open(str(tmp_path / "text.raw"))
    assert not TiffFileVolume.can_open(str(tmp_path))


@pytest.mark.parametrize(
    ("kw", "series_axes", "mapped"),
    [
        ({}, "QYX", True),
        ({"byteorder": ">"}, "QYX", True),
        ({"compression": "zlib", "rowsperstrip": 7, "predictor": True}, "QYX", False),
        ({"compression": "lzw", "tile": (16, 16)}, "QYX", False),
        ({"volumetric": True, "tile": (2, 16, 16), "compression": "zlib"}, "ZYX", False),
    ],
    ids=["raw", "raw-bigendian", "zlib-strips", "lzw-tiles", "volumetric-tiles"],
)
def test_multipage_file_reads_random_boxes(
    tmp_path: Path, rng: np.random.Generator, kw: dict[str, Any], series_axes: str, mapped: bool
) -> None:
    data = arange_volume((5, 37, 45), "uint16")
    path = tmp_path / "multi.tif"
    tifffile.imwrite(path, data, photometric="minisblack", **kw)
    with open_volume(str(path)) as volume:
        assert isinstance(volume, TiffFileVolume)
        assert (volume.shape, volume.axes, volume.dtype) == (data.shape, "zyx", data.dtype)
        info = volume.describe()
        assert (info["series_axes"], info["memory_mapped"], info["levels"]) == (
            series_axes,
            mapped,
            1,
        )
        for box in random_boxes(data.shape, rng):
            got = volume.read(box)
            assert got.dtype.isnative
            assert got.flags.writeable  # a copy, never a view of the memory map
            np.testing.assert_array_equal(got, data[box.slices()], str(box))


def test_ome_tiff_channels_first_and_physical_size(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    data = arange_volume((4, 2, 20, 30), "uint16")  # (z, c, y, x) as written
    path = tmp_path / "cells.ome.tif"
    meta = {
        "axes": "ZCYX",
        "PhysicalSizeZ": 500.0,
        "PhysicalSizeZUnit": "nm",
        "PhysicalSizeY": 0.25,
        "PhysicalSizeX": 0.5,
    }
    tifffile.imwrite(path, data, ome=True, metadata=meta, compression="zlib")
    expected = np.moveaxis(data, 1, 0)
    with open_volume(str(path)) as volume:
        assert (volume.shape, volume.axes) == (expected.shape, "czyx")
        assert volume.voxel_size == pytest.approx((0.5, 0.25, 0.5))
        assert volume.unit == "micrometer"
        assert volume.describe()["is_ome"] is True
        for box in random_boxes(expected.shape, rng):
            np.testing.assert_array_equal(volume.read(box), expected[box.slices()], str(box))


def test_imagej_hyperstack_spacing_and_resolution(tmp_path: Path, rng: np.random.Generator) -> None:
    data = arange_volume((3, 2, 20, 30), "float32")
    path = tmp_path / "hyper.tif"
    meta = {"axes": "ZCYX", "spacing": 2.5, "unit": "micron"}
    tifffile.imwrite(path, data, imagej=True, resolution=(2.0, 4.0), metadata=meta)
    expected = np.moveaxis(data, 1, 0)
    with open_volume(str(path)) as volume:
        assert (volume.shape, volume.axes) == (expected.shape, "czyx")
        assert volume.voxel_size == (2.5, 0.25, 0.5)
        assert volume.unit == "micrometer"
        assert volume.describe()["is_imagej"] is True
        for box in random_boxes(expected.shape, rng):
            np.testing.assert_array_equal(volume.read(box), expected[box.slices()], str(box))


def test_time_series_becomes_z_only_without_z(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = arange_volume((3, 10, 12), "uint8")
    path = tmp_path / "time.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TYX"})
    with caplog.at_level(logging.INFO, logger="datatools.sources.tiff_file"):
        volume = TiffFileVolume.open(str(path), OPEN)
    with volume:
        assert (volume.shape, volume.axes, volume.voxel_size) == ((3, 10, 12), "zyx", None)
        np.testing.assert_array_equal(volume.read_all(), data)
    assert f"{path}: series 0 has no Z axis; reading T as z" in caplog.messages
    tifffile.imwrite(
        path, data.reshape(3, 1, 10, 12).repeat(2, 1), imagej=True, metadata={"axes": "TZYX"}
    )
    with pytest.raises(
        InputError,
        match=message(
            f"{path}: series 0 has axes TZYX: T=3 cannot be read as part of one [c]zyx volume "
            "(save each time point or position as its own file)"
        ),
    ):
        TiffFileVolume.open(str(path), OPEN)


def test_two_channel_axes_refused(tmp_path: Path) -> None:
    path = tmp_path / "cs.ome.tif"
    tifffile.imwrite(
        path,
        np.zeros((2, 8, 16, 3), np.uint8),
        ome=True,
        photometric="rgb",
        metadata={"axes": "CYXS"},
    )
    with pytest.raises(
        InputError,
        match=message(
            f"{path}: series 0 has axes CYXS with both C and S > 1 (datatools reads one channel "
            "axis; split channels or samples first)"
        ),
    ):
        TiffFileVolume.open(str(path), OPEN)


def test_2d_files(tmp_path: Path) -> None:
    gray = arange_volume((20, 30), "uint16")
    tifffile.imwrite(tmp_path / "gray.tif", gray)
    with open_volume(str(tmp_path / "gray.tif")) as volume:
        assert (volume.shape, volume.axes) == ((20, 30), "yx")
        np.testing.assert_array_equal(volume.read(Box((3, 4), (9, 30))), gray[3:9, 4:30])
    rgb = arange_volume((20, 30, 3), "uint8")
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb", compression="zlib")
    with open_volume(str(tmp_path / "rgb.tif")) as volume:
        assert (volume.shape, volume.axes) == ((3, 20, 30), "cyx")
        np.testing.assert_array_equal(
            volume.read(Box((1, 3, 4), (3, 9, 30))), np.moveaxis(rgb, -1, 0)[1:, 3:9, 4:]
        )


def test_series_and_level_selection(tmp_path: Path) -> None:
    first = arange_volume((4, 32, 48), "uint16")
    second = arange_volume((10, 12), "uint8")
    path = tmp_path / "two.tif"
    with tifffile.TiffWriter(path) as writer:
        writer.write(first, photometric="minisblack")
        writer.write(second, photometric="minisblack")
    with TiffFileVolume.open(str(path), OpenOptions(series=1)) as volume:
        assert volume.describe()["series_count"] == 2
        np.testing.assert_array_equal(volume.read_all(), second)
    with pytest.raises(ValueError, match="volume is closed"):
        volume.read_all()
    with pytest.raises(TypeError, match="opens one path, not a list"):
        TiffFileVolume.open([path], OPEN)
    with pytest.raises(
        InputError, match=message(f"{path}: series 2 does not exist (the file has 2 series: 0-1)")
    ):
        TiffFileVolume.open(str(path), OpenOptions(series=2))

    pyramid = tmp_path / "pyramid.ome.tif"
    meta = {"axes": "ZYX", "PhysicalSizeZ": 2.0, "PhysicalSizeY": 0.5, "PhysicalSizeX": 0.5}
    with tifffile.TiffWriter(pyramid, ome=True) as writer:
        writer.write(first, subifds=1, metadata=meta, photometric="minisblack", compression="zlib")
        writer.write(
            first[:, ::2, ::2], subfiletype=1, photometric="minisblack", compression="zlib"
        )
    with TiffFileVolume.open(str(pyramid), OpenOptions(level=1)) as volume:
        assert volume.shape == (4, 16, 24)
        assert volume.voxel_size == (2.0, 1.0, 1.0)
        assert (volume.describe()["level"], volume.describe()["levels"]) == (1, 2)
        np.testing.assert_array_equal(volume.read_all(), first[:, ::2, ::2])
    with pytest.raises(
        InputError,
        match=message(f"{pyramid}: level 2 does not exist in series 0 (it has 2 levels: 0-1)"),
    ):
        TiffFileVolume.open(str(pyramid), OpenOptions(level=2))


def test_tiff_file_bad_inputs(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"GIF89a, not a TIFF")
    with pytest.raises(
        InputError,
        match=message(f"{garbage}: not a readable TIFF (not a TIFF file: header=b'GIF8')"),
    ):
        open_volume(str(garbage))
    header = tmp_path / "header.tif"
    header.write_bytes(b"II*\x00\x00\x00\x00\x00")
    with pytest.raises(
        InputError, match=message(f"{header}: TIFF holds no pixel data (no image in the file)")
    ):
        open_volume(str(header))
    plane = tmp_path / "plane.tif"  # one page: header, then pixel data
    tifffile.imwrite(plane, arange_volume((20, 30), "uint16"), compression="zlib")
    raw = plane.read_bytes()
    plane.write_bytes(raw[:-50])
    with pytest.raises(
        InputError,
        match=message(
            f"{plane}: truncated TIFF (pixel data ends at byte {len(raw)}, the file has "
            f"{len(raw) - 50} bytes)"
        ),
    ):
        open_volume(str(plane))
    pages = tmp_path / "pages.tif"  # later pages: pixel data, then their header
    tifffile.imwrite(pages, arange_volume((3, 20, 30), "uint16"), photometric="minisblack")
    raw = pages.read_bytes()
    pages.write_bytes(raw[:-50])
    with pytest.raises(
        InputError,
        match=message(
            f"{pages}: truncated TIFF (the chain of pages breaks off after page 3; the file "
            f"has {len(raw) - 50} bytes)"
        ),
    ):
        open_volume(str(pages))
    complex_file = tmp_path / "complex.tif"
    tifffile.imwrite(complex_file, np.zeros((2, 4, 5), np.complex64), photometric="minisblack")
    with pytest.raises(
        InputError,
        match=message(
            f"{complex_file}: unsupported dtype complex64 "
            "(datatools handles bool, integer and float data)"
        ),
    ):
        open_volume(str(complex_file))


@pytest.mark.parametrize(
    ("write_kw", "memory_mapped"),
    [({}, True), ({"compression": "zlib", "tile": (16, 16)}, False)],
    ids=["raw-contiguous", "zlib-tiled"],
)
def test_pyramidal_ome_tiff_every_level_reads_like_tifffile(
    tmp_path: Path, write_kw: dict[str, Any], memory_mapped: bool
) -> None:
    base = arange_volume((4, 40, 48), "uint16")  # 40 rows: partial 16-row tiles at every level
    path = tmp_path / "pyr.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as writer:
        writer.write(base, subifds=2, metadata={"axes": "ZYX"}, **write_kw)
        writer.write(base[:, ::2, ::2], subfiletype=1, **write_kw)
        writer.write(base[:, ::4, ::4], subfiletype=1, **write_kw)
    with tifffile.TiffFile(path) as tif:
        expected = [level.asarray() for level in tif.series[0].levels]
    assert [e.shape for e in expected] == [(4, 40, 48), (4, 20, 24), (4, 10, 12)]
    np.testing.assert_array_equal(expected[1], base[:, ::2, ::2])  # tifffile's levels differ
    for level, want in enumerate(expected):
        with open_volume(str(path), OpenOptions(level=level)) as volume:
            assert (volume.shape, volume.axes) == (want.shape, "zyx")
            assert volume.describe()["level"] == level
            assert volume.describe()["memory_mapped"] is memory_mapped
            np.testing.assert_array_equal(volume.read_all(), want)
            np.testing.assert_array_equal(
                volume.read(Box((1, 3, 5), (3, want.shape[1], 9))), want[1:3, 3:, 5:9]
            )
    with open_volume(str(path)) as volume:  # no level named: full resolution
        np.testing.assert_array_equal(volume.read_all(), base)
