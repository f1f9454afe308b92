"""HDF5, Zarr / OME-Zarr and ITK sources: random-box reads, placement metadata, bad inputs."""

from __future__ import annotations

import gzip
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
import zarr
from ome_zarr_models.v04 import Image as ImageV04
from ome_zarr_models.v05 import Image as ImageV05

from datatools.errors import InputError, OptionError
from datatools.geometry import Box
from datatools.sources import (
    OpenOptions,
    Volume,
    _nrrd_layout,
    check_source_options,
    itk_image,
    open_volume,
)
from datatools.sources.hdf5 import Hdf5Volume, split_spec
from datatools.sources.itk_image import ItkVolume, itk_message
from datatools.sources.zarr_array import ZarrVolume
from tests.helpers import arange_volume

UNSUPPORTED = "(datatools handles bool, integer and float data)"


def random_boxes(shape: tuple[int, ...], rng: np.random.Generator, n: int = 25) -> list[Box]:
    """``n`` non-empty random boxes inside ``shape``, plus the whole volume and one voxel."""
    boxes = [Box.from_shape(shape), Box((0,) * len(shape), (1,) * len(shape))]
    for _ in range(n):
        start = [int(rng.integers(0, s)) for s in shape]
        stop = [int(rng.integers(a + 1, s + 1)) for a, s in zip(start, shape, strict=True)]
        boxes.append(Box(tuple(start), tuple(stop)))
    return boxes


def check_reads(volume: Volume, expected: np.ndarray, rng: np.random.Generator) -> None:
    assert volume.shape == expected.shape
    assert volume.dtype == expected.dtype
    for box in random_boxes(expected.shape, rng):
        got = volume.read(box)
        assert got.dtype == expected.dtype, box
        np.testing.assert_array_equal(got, expected[box.slices()], err_msg=str(box))


def error_of(spec: str, options: OpenOptions | None = None) -> str:
    with pytest.raises(InputError) as info:
        open_volume(spec, options).close()
    return str(info.value)


# --- HDF5 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "dtype", "chunks", "compression", "axes"),
    [
        ((6, 20, 30), "uint16", (4, 8, 16), "gzip", "zyx"),
        ((6, 20, 30), "int32", None, None, "zyx"),
        ((20, 30), "float32", (7, 7), "lzf", "yx"),
        ((2, 5, 12, 10), "uint8", (1, 2, 5, 5), "gzip", "czyx"),
    ],
)
def test_hdf5_reads_random_boxes(
    tmp_path: Path,
    rng: np.random.Generator,
    shape: tuple[int, ...],
    dtype: str,
    chunks: tuple[int, ...] | None,
    compression: str | None,
    axes: str,
) -> None:
    data = arange_volume(shape, dtype)
    path = tmp_path / "vol.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("grp/raw", data=data, chunks=chunks, compression=compression)
        f["grp/other"] = np.zeros((3, 3), "uint8")
    with open_volume(f"{path}:/grp/raw") as volume:
        assert isinstance(volume, Hdf5Volume)
        assert volume.kind == "hdf5"
        assert volume.spec == f"{path}:/grp/raw"
        assert volume.axes == axes
        assert volume.chunks == chunks
        assert volume.voxel_size is None
        assert volume.translation is None
        check_reads(volume, data, rng)


def test_hdf5_single_image_dataset_needs_no_name(tmp_path: Path) -> None:
    data = arange_volume((3, 4, 5))
    path = tmp_path / "vol.h5"
    with h5py.File(path, "w") as f:
        f["deep/inside/raw"] = data
        f["labels_list"] = np.arange(7)
    with open_volume(str(path)) as volume:
        assert volume.spec == f"{path}:/deep/inside/raw"
        np.testing.assert_array_equal(volume.read_all(), data)


def test_hdf5_recognised_by_signature_without_extension(tmp_path: Path) -> None:
    path = tmp_path / "volume.data"
    with h5py.File(path, "w") as f:
        f["raw"] = arange_volume((2, 3, 4))
    assert Hdf5Volume.can_open(str(path))
    with open_volume(f"{path}:/raw") as volume:
        assert volume.kind == "hdf5"
        assert volume.shape == (2, 3, 4)


def test_hdf5_split_spec(tmp_path: Path) -> None:
    path = tmp_path / "vol.h5"
    path.write_bytes(b"")
    assert split_spec(f"{path}:/a/b") == (path, "/a/b")
    assert split_spec(str(path)) == (path, None)
    assert split_spec(str(tmp_path / "missing.h5:/a")) == (tmp_path / "missing.h5:/a", None)


@pytest.mark.parametrize(
    ("attrs", "voxel_size", "unit"),
    [
        ({"element_size_um": [2.0, 0.5, 0.25]}, (2.0, 0.5, 0.25), "micrometer"),
        ({"resolution": [40, 4, 4], "unit": "nm"}, (40.0, 4.0, 4.0), "nanometer"),
        ({"voxel_size": [3, 2, 1], "unit": b"um"}, (3.0, 2.0, 1.0), "micrometer"),
        ({"resolution": [40, 4, 4]}, (40.0, 4.0, 4.0), None),
        ({}, None, None),
    ],
)
def test_hdf5_voxel_size_from_attributes(
    tmp_path: Path, attrs: dict[str, Any], voxel_size: tuple[float, ...] | None, unit: str | None
) -> None:
    path = tmp_path / "vol.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = arange_volume((3, 4, 5))
        f["raw"].attrs.update(attrs)
    with open_volume(f"{path}:/raw") as volume:
        assert volume.voxel_size == voxel_size
        assert volume.unit == unit


@pytest.mark.parametrize(
    ("attrs", "logged"),
    [
        ({"element_size_um": [1.0, 1.0]}, "ignoring attribute element_size_um"),
        ({"resolution": [1.0, 0.0, 1.0]}, "ignoring attribute resolution"),
        ({"resolution": "fine"}, "ignoring attribute resolution"),
        ({"voxel_size": [1, 1, 1], "unit": "furlong"}, "ignoring unknown unit attribute"),
        ({"translation": [1.0, 2.0]}, "ignoring attribute translation"),
        ({"translation": [1.0, np.nan, 2.0]}, "ignoring attribute translation"),
        ({"translation": "left"}, "ignoring attribute translation"),
        ({"axes": "xyz"}, "ignoring attribute axes='xyz'"),
        ({"axes": "czyx"}, "ignoring attribute axes='czyx'"),
    ],
)
def test_hdf5_unusable_placement_attributes_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, attrs: dict[str, Any], logged: str
) -> None:
    path = tmp_path / "vol.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = arange_volume((3, 4, 5))
        f["raw"].attrs.update(attrs)
    with caplog.at_level(logging.WARNING, "datatools"), open_volume(f"{path}:/raw") as volume:
        assert volume.unit is None
        assert volume.translation is None
        assert volume.axes == "zyx"
    assert logged in caplog.text


def test_hdf5_details(tmp_path: Path) -> None:
    path = tmp_path / "vol.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "raw", data=arange_volume((4, 8, 8)), chunks=(2, 4, 4), compression="gzip", shuffle=True
        )
    with open_volume(str(path)) as volume:
        info = volume.describe()
    assert info["dataset"] == "/raw"
    assert info["codecs"] == ["shuffle", "gzip"]
    assert info["chunks"] == [2, 4, 4]
    assert info["file_bytes"] == path.stat().st_size


def test_hdf5_close_releases_the_file(tmp_path: Path) -> None:
    path = tmp_path / "vol.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = arange_volume((3, 4, 5))
    volume = open_volume(f"{path}:/raw")
    volume.close()
    with h5py.File(path, "a") as f:  # HDF5 refuses read-write while a read-only handle is open
        f["more"] = np.zeros((2, 2))


@pytest.fixture
def bad_h5(tmp_path: Path) -> Path:
    path = tmp_path / "vol.h5"
    with h5py.File(path, "w") as f:
        f["a"] = np.zeros((2, 2), "uint8")
        f["b"] = np.zeros((2, 3), "uint8")
        f["raw"] = arange_volume((2, 3, 4))
        f.create_group("grp")
        f["line"] = np.arange(7)
        f["five"] = np.zeros((1, 1, 2, 2, 2), "uint8")
        f["cplx"] = np.zeros((2, 2), "complex64")
        f["rec"] = np.zeros((2, 2), dtype=[("a", "u1"), ("b", "f4")])
        f.create_dataset("empty", shape=(0, 4), dtype="uint16")
    return path


def test_hdf5_errors(bad_h5: Path) -> None:
    p = str(bad_h5)
    everything = "/a, /b, /cplx, /empty, /five, /line, /raw, /rec"
    assert error_of(p) == (
        f"{p}: holds 6 datasets (/a, /b, /cplx, /empty, /raw, /rec); name one as {p}:/raw"
    )
    assert error_of(f"{p}:/nope") == f"{p}: no dataset /nope (datasets: {everything})"
    assert error_of(f"{p}:/grp") == f"{p}: /grp is a group, not a dataset (datasets: {everything})"
    assert error_of(f"{p}:/line") == (
        f"{p}:/line: 1D dataset of shape 7 (datatools reads 2D (y, x), 3D (z, y, x) and 4D "
        "(c, z, y, x) datasets)"
    )
    assert error_of(f"{p}:/five").startswith(f"{p}:/five: 5D dataset of shape 1 x 1 x 2 x 2 x 2 (")
    assert error_of(f"{p}:/cplx") == f"{p}:/cplx: unsupported dtype complex64 {UNSUPPORTED}"
    assert error_of(f"{p}:/rec").startswith(f"{p}:/rec: unsupported dtype [(")
    assert error_of(f"{p}:/empty") == f"{p}:/empty: dataset is empty (shape 0 x 4)"
    with h5py.File(bad_h5, "a"):  # every failed open closed its file
        pass


def test_hdf5_without_image_datasets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.h5"
    h5py.File(empty, "w").close()
    assert error_of(str(empty)) == f"{empty}: holds no 2D, 3D or 4D dataset"
    lines = tmp_path / "lines.h5"
    with h5py.File(lines, "w") as f:
        f["t"] = np.arange(3)
    assert error_of(str(lines)) == f"{lines}: holds no 2D, 3D or 4D dataset (datasets: /t)"


def test_hdf5_many_datasets_are_abbreviated(tmp_path: Path) -> None:
    path = tmp_path / "many.h5"
    with h5py.File(path, "w") as f:
        for i in range(12):
            f[f"d{i:02d}"] = np.zeros((2, 2), "uint8")
    names = ", ".join(f"/d{i:02d}" for i in range(10))
    assert error_of(str(path)) == (
        f"{path}: holds 12 datasets ({names}, ... (2 more)); name one as {path}:/d00"
    )


def test_hdf5_not_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "bad.h5"
    path.write_bytes(b"not an hdf5 file" * 64)
    message = error_of(str(path))
    assert message.startswith(f"{path}: not a readable HDF5 file (")
    assert "signature" in message
    assert "\n" not in message


# --- Zarr arrays ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "shape", "dtype", "chunks", "shards", "names", "axes"),
    [
        (3, (6, 20, 30), "uint16", (4, 8, 8), None, ("z", "y", "x"), "zyx"),
        (3, (6, 20, 30), "float32", (2, 5, 5), (4, 10, 10), None, "zyx"),
        (3, (2, 5, 12, 10), "uint8", (1, 2, 5, 5), None, ("c", "z", "y", "x"), "czyx"),
        (3, (3, 12, 10), "int16", (1, 5, 5), None, ("c", "y", "x"), "cyx"),
        (3, (6, 20, 30), "uint16", (4, 8, 8), None, ("depth", "row", "col"), "zyx"),
        (2, (6, 20, 30), "uint16", (4, 8, 8), None, None, "zyx"),
        (2, (20, 30), "int32", (7, 7), None, None, "yx"),
        (2, (2, 5, 12, 10), "uint8", (1, 2, 5, 5), None, None, "czyx"),
    ],
)
def test_zarr_array_reads_random_boxes(
    tmp_path: Path,
    rng: np.random.Generator,
    fmt: int,
    shape: tuple[int, ...],
    dtype: str,
    chunks: tuple[int, ...],
    shards: tuple[int, ...] | None,
    names: tuple[str, ...] | None,
    axes: str,
) -> None:
    data = arange_volume(shape, dtype)
    path = tmp_path / "vol.zarr"
    extra: dict[str, Any] = {} if fmt == 2 else {"dimension_names": names, "shards": shards}
    array = zarr.create_array(
        path, shape=shape, dtype=dtype, chunks=chunks, zarr_format=fmt, **extra
    )
    array[:] = data
    with open_volume(str(path)) as volume:
        assert isinstance(volume, ZarrVolume)
        assert volume.axes == axes
        assert volume.chunks == chunks
        assert volume.voxel_size is None
        assert volume.translation is None
        info = volume.describe()
        assert info["zarr_format"] == fmt
        assert info["shards"] == (None if shards is None else list(shards))
        assert info["codecs"] == (["zstd"] if fmt == 2 else ["bytes", "zstd"])
        assert info["ngff_version"] is None
        assert info["levels"] is None
        check_reads(volume, data, rng)


def test_zarr_single_time_point_is_dropped(tmp_path: Path, rng: np.random.Generator) -> None:
    data = arange_volume((1, 4, 9, 11))
    path = tmp_path / "t.zarr"
    names = ("t", "z", "y", "x")
    array = zarr.create_array(
        path, shape=data.shape, dtype=data.dtype, chunks=(1, 2, 4, 4), dimension_names=names
    )
    array[:] = data
    with open_volume(str(path)) as volume:
        assert volume.axes == "zyx"
        assert volume.chunks == (2, 4, 4)
        check_reads(volume, data[0], rng)


@pytest.mark.parametrize(
    ("names", "shape", "problem"),
    [
        (
            ("x", "y", "z"),
            (2, 3, 4),
            "axes (x, y, z) are not a subset of (t, c, z, y, x) in that order (datatools reads "
            "C-order arrays; transpose or rename the axes first)",
        ),
        (
            ("z", "c", "y", "x"),
            (2, 2, 3, 4),
            "axes (z, c, y, x) are not a subset of (t, c, z, y, x) in that order (datatools "
            "reads C-order arrays; transpose or rename the axes first)",
        ),
        (
            ("t", "z", "y", "x"),
            (3, 2, 3, 4),
            "holds 3 time points (datatools reads images with a single time point)",
        ),
        (("c", "x"), (2, 3), "axes (c, x) have fewer than 2 spatial axes (z, y, x)"),
    ],
)
def test_zarr_unusable_dimension_names(
    tmp_path: Path, names: tuple[str, ...], shape: tuple[int, ...], problem: str
) -> None:
    path = tmp_path / "bad.zarr"
    zarr.create_array(path, shape=shape, dtype="uint8", dimension_names=names)
    assert error_of(str(path)) == f"{path}: {problem}"


def test_zarr_array_errors(tmp_path: Path) -> None:
    one_d = tmp_path / "line.zarr"
    zarr.create_array(one_d, shape=(7,), dtype="uint8")
    assert error_of(str(one_d)) == (
        f"{one_d}: 1D array of shape 7 (datatools reads 2D (y, x), 3D (z, y, x) and 4D "
        "(c, z, y, x) arrays)"
    )
    cplx = tmp_path / "cplx.zarr"
    zarr.create_array(cplx, shape=(3, 3), dtype="complex64")
    assert error_of(str(cplx)) == f"{cplx}: unsupported dtype complex64 {UNSUPPORTED}"
    empty = tmp_path / "empty.zarr"
    zarr.create_array(empty, shape=(0, 3), dtype="uint8")
    assert error_of(str(empty)) == f"{empty}: array is empty (shape 0 x 3)"
    plain = tmp_path / "plain.zarr"
    zarr.create_array(plain, shape=(3, 3), dtype="uint8")
    assert error_of(str(plain), OpenOptions(level=1)) == (
        f"{plain}: no level 1 (not an OME-Zarr image; a plain Zarr array has only level 0)"
    )
    assert open_volume(str(plain), OpenOptions(level=0)).shape == (3, 3)


def test_zarr_not_zarr(tmp_path: Path) -> None:
    path = tmp_path / "nothing.zarr"
    path.mkdir()
    assert ZarrVolume.can_open(str(path))
    message = error_of(str(path))
    assert message.startswith(f"{path}: not a readable Zarr array or group (")
    assert message.endswith("; expected zarr.json, .zarray, .zgroup)")


def test_zarr_can_open(tmp_path: Path) -> None:
    array = tmp_path / "array"
    zarr.create_array(array, shape=(3, 3), dtype="uint8", zarr_format=2)
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    assert ZarrVolume.can_open(str(array))
    assert not ZarrVolume.can_open(str(plain_dir))
    assert not ZarrVolume.can_open(str(tmp_path / "missing.zarr"))


def test_zarr_corrupt_chunk(tmp_path: Path) -> None:
    path = tmp_path / "vol.zarr"
    array = zarr.create_array(path, shape=(4, 4), chunks=(2, 2), dtype="uint16")
    array[:] = arange_volume((4, 4))
    (path / "c" / "0" / "0").write_bytes(b"garbage")
    with open_volume(str(path)) as volume:
        np.testing.assert_array_equal(volume.read(Box((2, 2), (4, 4))), [[10, 11], [14, 15]])
        with pytest.raises(InputError) as info:
            volume.read(Box((0, 0), (3, 3)))
    assert str(info.value).startswith(f"{path}: cannot read region 0:3,0:3 (")


# --- Zarr groups ------------------------------------------------------------------------------


def test_zarr_plain_group(tmp_path: Path, rng: np.random.Generator) -> None:
    data = arange_volume((3, 5, 7))
    one = tmp_path / "one.zarr"
    group = zarr.open_group(one, mode="w")
    group.create_array("raw", shape=data.shape, dtype=data.dtype, chunks=(2, 2, 2))[:] = data
    group.create_group("meta")
    with open_volume(str(one)) as volume:
        assert volume.describe()["array"] == "raw"
        check_reads(volume, data, rng)
    assert error_of(str(one), OpenOptions(level=2)).startswith(f"{one}: no level 2 (")

    two = tmp_path / "two.zarr"
    group = zarr.open_group(two, mode="w", zarr_format=2)
    group.create_array("b", shape=(2, 2), dtype="uint8")
    group.create_array("a", shape=(2, 2), dtype="uint8")
    assert error_of(str(two)) == (
        f"{two}: Zarr group is not an OME-Zarr image and holds 2 arrays (a, b); name one as {two}/a"
    )
    with open_volume(str(two / "b")) as volume:
        assert volume.shape == (2, 2)

    empty = tmp_path / "empty.zarr"
    zarr.open_group(empty, mode="w")
    assert error_of(str(empty)) == f"{empty}: Zarr group holds no arrays"
    assert error_of(f"{empty}/") == f"{empty}: Zarr group holds no arrays"
    nested = tmp_path / "nested.zarr"
    zarr.open_group(nested, mode="w").create_group("0")
    assert error_of(str(nested)) == (
        f"{nested}: Zarr group holds no arrays (it holds groups 0; name one as {nested}/0)"
    )


def _axis(name: str, unit: str | None) -> dict[str, Any]:
    kind = {"t": "time", "c": "channel"}.get(name, "space")
    axis: dict[str, Any] = {"name": name, "type": kind}
    if unit is not None:
        axis["unit"] = unit
    return axis


def write_ome_zarr(
    path: Path,
    version: str,
    levels: list[np.ndarray],
    axes: str,
    scales: list[list[float]],
    translations: list[list[float] | None],
    units: dict[str, str],
) -> None:
    """An OME-Zarr image group written by hand as NGFF 0.4 (Zarr v2) or 0.5 (Zarr v3) define."""
    datasets = []
    for i, (scale, shift) in enumerate(zip(scales, translations, strict=True)):
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
        if shift is not None:
            transforms.append({"type": "translation", "translation": shift})
        datasets.append({"path": str(i), "coordinateTransformations": transforms})
    multiscale: dict[str, Any] = {
        "name": "image",
        "axes": [_axis(a, units.get(a)) for a in axes],
        "datasets": datasets,
    }
    if version == "0.4":
        multiscale["version"] = "0.4"
        group = zarr.open_group(path, mode="w", zarr_format=2)
        group.attrs["multiscales"] = [multiscale]
    else:
        group = zarr.open_group(path, mode="w", zarr_format=3)
        group.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}
    for i, data in enumerate(levels):
        extra = {} if version == "0.4" else {"dimension_names": tuple(axes)}
        chunks = tuple(max(1, s // 2) for s in data.shape)
        array = group.create_array(
            str(i), shape=data.shape, dtype=data.dtype, chunks=chunks, **extra
        )
        array[:] = data


@pytest.fixture
def ngff04(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    """NGFF 0.4: (c, z, y, x), 2 levels (y, x halved), micrometer, level 1 shifted by half a
    level-0 voxel."""
    level0 = arange_volume((2, 6, 16, 20))
    level1 = arange_volume((2, 6, 8, 10)) + 7
    path = tmp_path / "img04.zarr"
    write_ome_zarr(
        path,
        "0.4",
        [level0, level1],
        "czyx",
        [[1.0, 2.0, 0.5, 0.25], [1.0, 2.0, 1.0, 0.5]],
        [None, [0.0, 0.0, 0.25, 0.125]],
        {"z": "micrometer", "y": "micrometer", "x": "micrometer"},
    )
    ImageV04.from_zarr(zarr.open_group(path, mode="r"))  # the fixture is valid NGFF 0.4
    return path, [level0, level1]


@pytest.fixture
def ngff05(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    """NGFF 0.5: (t=1, z, y, x), 2 levels, nanometer, translated."""
    level0 = arange_volume((1, 8, 12, 14))
    level1 = arange_volume((1, 4, 6, 7)) + 3
    path = tmp_path / "img05.zarr"
    write_ome_zarr(
        path,
        "0.5",
        [level0, level1],
        "tzyx",
        [[1.0, 30.0, 4.0, 4.0], [1.0, 60.0, 8.0, 8.0]],
        [[0.0, 100.0, 200.0, 300.0], [0.0, 115.0, 202.0, 302.0]],
        {"t": "second", "z": "nanometer", "y": "nanometer", "x": "nanometer"},
    )
    ImageV05.from_zarr(zarr.open_group(path, mode="r"))  # the fixture is valid NGFF 0.5
    return path, [level0, level1]


def test_ngff04_levels(ngff04: tuple[Path, list[np.ndarray]], rng: np.random.Generator) -> None:
    path, levels = ngff04
    with open_volume(str(path)) as volume:
        assert volume.axes == "czyx"
        assert volume.voxel_size == (2.0, 0.5, 0.25)
        assert volume.translation == (0.0, 0.0, 0.0)
        assert volume.unit == "micrometer"
        info = volume.describe()
        assert info["ngff_version"] == "0.4"
        assert info["zarr_format"] == 2
        assert info["level"] == 0
        assert info["levels"] == [[2, 6, 16, 20], [2, 6, 8, 10]]
        assert info["array"] == "0"
        check_reads(volume, levels[0], rng)
    with open_volume(str(path), OpenOptions(level=1)) as volume:
        assert volume.voxel_size == (2.0, 1.0, 0.5)
        assert volume.translation == (0.0, 0.25, 0.125)
        check_reads(volume, levels[1], rng)


def test_ngff05_levels(ngff05: tuple[Path, list[np.ndarray]], rng: np.random.Generator) -> None:
    path, levels = ngff05
    with open_volume(str(path)) as volume:
        assert volume.axes == "zyx"
        assert volume.shape == (8, 12, 14)
        assert volume.chunks == (4, 6, 7)
        assert volume.voxel_size == (30.0, 4.0, 4.0)
        assert volume.translation == (100.0, 200.0, 300.0)
        assert volume.unit == "nanometer"
        info = volume.describe()
        assert info["ngff_version"] == "0.5"
        assert info["zarr_format"] == 3
        assert info["levels"] == [[8, 12, 14], [4, 6, 7]]
        check_reads(volume, levels[0][0], rng)
    with open_volume(str(path), OpenOptions(level=1)) as volume:
        assert volume.voxel_size == (60.0, 8.0, 8.0)
        assert volume.translation == (115.0, 202.0, 302.0)
        check_reads(volume, levels[1][0], rng)


def test_ngff_level_named_directly(ngff05: tuple[Path, list[np.ndarray]]) -> None:
    path, levels = ngff05
    with open_volume(str(path / "1")) as volume:
        assert volume.axes == "zyx"
        assert volume.voxel_size == (60.0, 8.0, 8.0)
        assert volume.translation == (115.0, 202.0, 302.0)
        assert volume.describe()["level"] == 1
        np.testing.assert_array_equal(volume.read_all(), levels[1][0])
    assert error_of(str(path / "1"), OpenOptions(level=1)) == (
        f"{path / '1'}: is level 1 of {path}; choose a level with --level on the image group "
        f"{path}, not on its array"
    )


def test_ngff_missing_level(ngff04: tuple[Path, list[np.ndarray]]) -> None:
    path, _ = ngff04
    assert error_of(str(path), OpenOptions(level=2)) == (
        f"{path}: OME-Zarr image has no level 2 (levels: 0, 1; choose one with --source-level "
        "in convert, --level elsewhere)"
    )


def test_ngff_time_series_refused(tmp_path: Path) -> None:
    path = tmp_path / "movie.zarr"
    write_ome_zarr(
        path, "0.5", [arange_volume((3, 2, 4, 4))], "tzyx", [[1.0, 1.0, 1.0, 1.0]], [None], {}
    )
    assert error_of(str(path)) == (
        f"{path}: holds 3 time points (datatools reads images with a single time point)"
    )


def test_ngff_global_transforms_and_mixed_units(tmp_path: Path) -> None:
    path = tmp_path / "mixed.zarr"
    write_ome_zarr(
        path,
        "0.4",
        [arange_volume((2, 4, 4))],
        "zyx",
        [[1.0, 2.0, 2.0]],
        [[1.0, 0.5, 0.5]],
        {"z": "micrometer", "y": "nanometer", "x": "nanometer"},
    )
    group = zarr.open_group(path, mode="r+")
    multiscales = group.attrs["multiscales"]
    multiscales[0]["coordinateTransformations"] = [
        {"type": "scale", "scale": [0.5, 3.0, 3.0]},
        {"type": "translation", "translation": [10.0, 20.0, 30.0]},
    ]
    group.attrs["multiscales"] = multiscales
    with open_volume(str(path)) as volume:
        # level: s * i + t, then image-wide: 0.5/3 * (...) + (10, 20, 30); z converted to nm
        assert volume.unit == "nanometer"
        assert volume.voxel_size == pytest.approx((500.0, 6.0, 6.0))
        assert volume.translation == pytest.approx((10_500.0, 21.5, 31.5))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"datasets": []}, "malformed OME-Zarr multiscales metadata (datasets is not a non-empty"),
        ({"axes": "zyx"}, "malformed OME-Zarr multiscales metadata (axes is not a list)"),
        (
            {"datasets": [{"path": "0", "coordinateTransformations": [{"type": "affine"}]}]},
            "malformed OME-Zarr multiscales metadata (unsupported transform type 'affine')",
        ),
        (
            {"datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale"}]}]},
            "malformed OME-Zarr multiscales metadata (scale transform without inline values)",
        ),
        (
            {
                "datasets": [
                    {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1]}]}
                ]
            },
            "malformed OME-Zarr multiscales metadata (level 0 transform has 1 values for 3 axes)",
        ),
        (
            {"datasets": [{"path": "9"}]},
            "level 0 array '9' named in multiscales is missing",
        ),
        (
            {
                "axes": [{"name": "y"}, {"name": "x"}],
                "datasets": [
                    {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1]}]}
                ],
            },
            "multiscales axes (y, x) do not match level 0 array '0' with 3 dimensions",
        ),
    ],
)
def test_ngff_bad_metadata(tmp_path: Path, change: dict[str, Any], problem: str) -> None:
    path = tmp_path / "bad.zarr"
    write_ome_zarr(path, "0.4", [arange_volume((2, 3, 4))], "zyx", [[1.0, 1.0, 1.0]], [None], {})
    group = zarr.open_group(path, mode="r+")
    multiscales = group.attrs["multiscales"]
    multiscales[0].update(change)
    group.attrs["multiscales"] = multiscales
    assert error_of(str(path)).startswith(f"{path}: {problem}")


def test_ngff_without_axes_uses_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "old.zarr"
    data = arange_volume((1, 2, 3, 4, 5))
    write_ome_zarr(path, "0.4", [data], "tczyx", [[1.0] * 5], [None], {})
    group = zarr.open_group(path, mode="r+")
    multiscales = group.attrs["multiscales"]
    del multiscales[0]["axes"]
    group.attrs["multiscales"] = multiscales
    with open_volume(str(path)) as volume:
        assert volume.axes == "czyx"
        np.testing.assert_array_equal(volume.read_all(), data[0])


# --- ITK --------------------------------------------------------------------------------------


def write_itk(path: Path, data: np.ndarray, *, vector: bool = False, **kwargs: Any) -> None:
    image = sitk.GetImageFromArray(data, isVector=vector)
    if "spacing" in kwargs:
        image.SetSpacing(kwargs["spacing"])
    if "origin" in kwargs:
        image.SetOrigin(kwargs["origin"])
    if "direction" in kwargs:
        image.SetDirection(kwargs["direction"])
    sitk.WriteImage(image, str(path), useCompression=kwargs.get("compress", False))


@pytest.mark.parametrize(
    ("name", "dtype", "compress"),
    [
        ("vol.mha", "uint16", False),
        ("vol.mha", "float32", True),
        ("vol.mhd", "int16", False),
        ("vol.nrrd", "uint8", False),
        ("vol.nrrd", "int16", True),
        ("vol.nii", "int32", False),
        ("vol.nii.gz", "uint16", True),
    ],
)
def test_itk_reads_random_boxes(
    tmp_path: Path, rng: np.random.Generator, name: str, dtype: str, compress: bool
) -> None:
    data = arange_volume((5, 9, 13), dtype)
    path = tmp_path / name
    write_itk(path, data, spacing=(0.5, 0.25, 3.0), origin=(10.0, 20.0, 30.0), compress=compress)
    with open_volume(str(path)) as volume:
        assert isinstance(volume, ItkVolume)
        assert volume.axes == "zyx"
        assert volume.voxel_size == (3.0, 0.25, 0.5)  # ITK (x, y, z) -> (z, y, x)
        assert volume.translation == (30.0, 20.0, 10.0)
        assert volume.unit is None
        assert volume.describe()["direction"] is None
        check_reads(volume, data, rng)


def test_itk_2d(tmp_path: Path, rng: np.random.Generator) -> None:
    data = arange_volume((11, 13), "uint16")
    path = tmp_path / "plane.mha"
    write_itk(path, data, spacing=(0.5, 2.0), origin=(1.0, 2.0))
    with open_volume(str(path)) as volume:
        assert volume.axes == "yx"
        assert volume.voxel_size == (2.0, 0.5)
        assert volume.translation == (2.0, 1.0)
        check_reads(volume, data, rng)


@pytest.mark.parametrize("name", ["rgb.mha", "rgb.nrrd"])
def test_itk_vector_pixels_put_channels_first(
    tmp_path: Path, rng: np.random.Generator, name: str
) -> None:
    data = arange_volume((4, 6, 7, 3), "float32")  # ITK/numpy order: (z, y, x, component)
    path = tmp_path / name
    write_itk(path, data, vector=True)
    expected = np.moveaxis(data, -1, 0)
    with open_volume(str(path)) as volume:
        assert volume.axes == "czyx"
        assert volume.voxel_size == (1.0, 1.0, 1.0)
        check_reads(volume, expected, rng)
        assert volume.read(Box((1, 0, 0, 0), (3, 1, 2, 2))).flags.c_contiguous


def test_itk_4d_with_one_time_point(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = arange_volume((3, 4, 5), "uint8")
    path = tmp_path / "single.nrrd"
    sitk.WriteImage(sitk.JoinSeries([sitk.GetImageFromArray(data)]), str(path))
    assert sitk.ReadImage(str(path)).GetSize() == (5, 4, 3, 1)
    with open_volume(str(path)) as volume:
        assert volume.axes == "zyx"
        refuse_itk_voxels(monkeypatch)  # raw: read in place
        check_reads(volume, data, rng)


def test_itk_direction_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "flipped.mha"
    direction = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    write_itk(path, arange_volume((2, 3, 4)), direction=direction)
    with open_volume(str(path)) as volume:
        assert volume.describe()["direction"] == list(direction)


def test_itk_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "bad.mha"
    garbage.write_text("garbage")
    assert error_of(str(garbage)) == (
        f'{garbage}: not a readable ITK image (Unable to determine ImageIO reader for "{garbage}")'
    )
    movie = tmp_path / "movie.nii"
    frame = sitk.GetImageFromArray(np.zeros((3, 4, 5), "uint8"))
    sitk.WriteImage(sitk.JoinSeries([frame, frame]), str(movie))
    assert error_of(str(movie)) == (
        f"{movie}: 4D image of size 5 x 4 x 3 x 2 (x, y, z, ...) (datatools reads 2D and 3D images)"
    )
    cplx = tmp_path / "cplx.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4), "complex64")), str(cplx))
    assert error_of(str(cplx)) == f"{cplx}: unsupported dtype complex64 {UNSUPPORTED}"


def test_itk_truncated_data(tmp_path: Path) -> None:
    path = tmp_path / "cut.mhd"
    write_itk(path, arange_volume((4, 5, 6)))
    raw = tmp_path / "cut.raw"
    raw.write_bytes(raw.read_bytes()[:100])
    with open_volume(str(path)) as volume:
        assert volume.shape == (4, 5, 6)  # the header alone is fine
        with pytest.raises(InputError) as info:
            volume.read_all()
    assert str(info.value) == (
        f"{path}: cannot read region 0:4,0:5,0:6 (File cannot be read: {path} for reading.)"
    )


NRRD_TYPES = {"uint8": "uchar", "uint16": "ushort", "int32": "int", "float32": "float"}


def write_nrrd(
    path: Path,
    data: np.ndarray,
    *,
    endian: str = "little",
    data_file: str | None = None,
    skip: int = 0,
    junk: bytes = b"",
) -> None:
    """A raw NRRD by hand: attached (``junk`` between header and voxels, found with ``skip``
    -1) or detached (``data_file``)."""  # fmt: skip
    header = [
        "NRRD0004", "# written by the test", f"type: {NRRD_TYPES[data.dtype.name]}",
        f"dimension: {data.ndim}", "sizes: " + " ".join(map(str, data.shape[::-1])),
        "spacings: 0.5 0.5 2", f"endian: {endian}", "encoding: raw", f"byte skip: {skip}",
    ]  # fmt: skip
    order = "<" if endian == "little" else ">"
    voxels = data.astype(data.dtype.newbyteorder(order)).tobytes()
    if data_file is None:
        path.write_bytes("\n".join(header).encode() + b"\n\n" + junk + voxels)
    else:
        path.write_text("\n".join([*header, f"data file: {data_file}"]) + "\n")
        (path.parent / data_file).write_bytes(junk + voxels)


def refuse_itk_voxels(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: sitk.ImageFileReader) -> None:
        raise AssertionError("ITK was asked for voxels")

    monkeypatch.setattr(sitk.ImageFileReader, "Execute", refuse)


@pytest.mark.parametrize(
    ("dtype", "endian", "detached", "skip"),
    [
        ("uint16", "little", False, 0),
        ("int32", "big", False, -1),
        ("float32", "big", True, 0),
        ("uint8", "little", True, -1),
    ],
)
def test_raw_nrrd_is_read_in_place_not_through_itk(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch,
    dtype: str, endian: str, detached: bool, skip: int,
) -> None:  # fmt: skip
    data = arange_volume((5, 9, 13), dtype)
    path = tmp_path / ("vol.nhdr" if detached else "vol.nrrd")
    junk = b"skipped" if skip == -1 else b""
    write_nrrd(path, data, endian=endian, data_file="vol.raw" if detached else None,
               skip=skip, junk=junk)  # fmt: skip
    with open_volume(str(path)) as volume:
        assert isinstance(volume, ItkVolume)
        assert volume.voxel_size == (2.0, 0.5, 0.5)
        refuse_itk_voxels(monkeypatch)
        check_reads(volume, data, rng)
        assert volume.read_all().dtype.isnative


def test_raw_nrrd_written_by_itk_in_place(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, rgb, plane = tmp_path / "a.nrrd", tmp_path / "rgb.nrrd", tmp_path / "plane.nrrd"
    data = arange_volume((4, 6, 7), "uint16")
    write_itk(plain, data)
    color = arange_volume((4, 6, 7, 3), "uint8")
    write_itk(rgb, color, vector=True)
    flat = arange_volume((6, 7), "float32")
    write_itk(plane, flat)
    refuse_itk_voxels(monkeypatch)
    with open_volume(str(plain)) as volume:
        check_reads(volume, data, rng)
    with open_volume(str(rgb)) as volume:
        assert volume.axes == "czyx"
        check_reads(volume, np.moveaxis(color, -1, 0), rng)
    with open_volume(str(plane)) as volume:
        check_reads(volume, flat, rng)


def test_gzip_nrrd_read_from_saved_states_not_through_itk(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = rng.integers(0, 300, size=(12, 30, 40)).astype(np.uint16)
    path = tmp_path / "z.nrrd"
    write_itk(path, data, compress=True)
    monkeypatch.setattr(_nrrd_layout, "CHECKPOINT_BYTES", 4000)  # a state every 2000 voxels
    layout = _nrrd_layout.nrrd_data(path, "uint16", (12, 30, 40), 1)
    assert isinstance(layout, _nrrd_layout.GzipNrrd)
    last = Box((11, 0, 0), (12, 30, 40))
    np.testing.assert_array_equal(layout.read(last.start, last.stop), data[11:])
    start, _, _ = layout.state_before(11 * 30 * 40 * 2)
    assert start == 26400 - 26400 % 4000  # states saved on the way are used next time
    with open_volume(str(path)) as volume:
        refuse_itk_voxels(monkeypatch)
        check_reads(volume, data, rng)


def test_gzip_nrrd_bands_of_rows_in_order_decompress_the_volume_about_twice(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = rng.integers(0, 300, size=(6, 64, 40)).astype(np.uint16)
    path = tmp_path / "z.nrrd"
    write_itk(path, data, compress=True)
    layout = _nrrd_layout.nrrd_data(path, "uint16", (6, 64, 40), 1)
    assert isinstance(layout, _nrrd_layout.GzipNrrd)
    decompressed = []
    step = _nrrd_layout._Inflater._step

    def counted(self: Any, limit: int) -> bytes:
        out = step(self, limit)
        decompressed.append(len(out))
        return bytes(out)

    monkeypatch.setattr(_nrrd_layout._Inflater, "_step", counted)
    for y in range(0, 64, 16):  # what convert's units of part of each plane do
        np.testing.assert_array_equal(layout.read((0, y, 0), (6, y + 16, 40)), data[:, y : y + 16])
    # each band starts every plane where the band before it ended, so only the first band
    # passes through whole planes: the volume about twice, not once per band (4x here)
    assert sum(decompressed) <= 2 * data.nbytes


def test_gzip_nrrd_errors(tmp_path: Path) -> None:
    cut, bad = tmp_path / "cut.nrrd", tmp_path / "bad.nhdr"
    write_itk(cut, np.random.default_rng(0).integers(0, 9, (6, 20, 30)).astype("uint16"),
              compress=True)  # fmt: skip
    write_nrrd(bad, arange_volume((4, 5, 6), "uint16"), data_file="bad.raw")
    text = bad.read_text().replace("encoding: raw", "encoding: gzip")
    bad.write_text(text)
    with open_volume(str(cut)) as volume, open_volume(str(bad)) as garbage:
        cut.write_bytes(cut.read_bytes()[:-2000])
        with pytest.raises(InputError) as short:
            volume.read_all()
        with pytest.raises(InputError) as wrong:
            garbage.read_all()
    assert str(short.value) == f"{cut}: cannot read region 0:6,0:20,0:30 ({cut}: data ends early)"
    assert str(wrong.value).startswith(
        f"{bad}: cannot read region 0:4,0:5,0:6 ({tmp_path / 'bad.raw'}: not a gzip stream ("
    )


def test_nrrd_header_variants(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = arange_volume((3, 4, 5), "uint16")
    # "byteskip" without its space, as teem and ITK accept it
    alias = tmp_path / "alias.nhdr"
    write_nrrd(alias, data, data_file="alias.raw", junk=b"0123456789")
    alias.write_text(alias.read_text().replace("byte skip: 0", "byteskip: 10"))
    # two gzip members one after the other (bgzip, or gzip files joined with cat)
    joined = tmp_path / "joined.nhdr"
    write_nrrd(joined, data, data_file="joined.raw.gz")
    joined.write_text(joined.read_text().replace("encoding: raw", "encoding: gzip"))
    raw = data.astype("<u2").tobytes()
    (tmp_path / "joined.raw.gz").write_bytes(gzip.compress(raw[:50]) + gzip.compress(raw[50:]))
    for path in (alias, joined):
        with open_volume(str(path)) as volume:
            refuse_itk_voxels(monkeypatch)
            check_reads(volume, data, rng)
            monkeypatch.undo()
    # components stored last with every size equal: the sizes cannot tell, the kinds can
    assert _nrrd_layout.nrrd_data(alias, "uint16", (3, 4, 5), 1) is not None
    cube = tmp_path / "cube.nrrd"
    cube.write_bytes(
        b"NRRD0004\ntype: uint8\ndimension: 4\nsizes: 3 3 3 3\n"
        b"kinds: domain domain domain vector\nencoding: raw\n\n" + bytes(81)
    )
    assert _nrrd_layout.nrrd_data(cube, "uint8", (3, 3, 3), 3) is None


def test_nrrd_reads_survive_short_reads_and_pickling(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = arange_volume((4, 6, 7), "uint16")
    raw, packed = tmp_path / "r.nrrd", tmp_path / "z.nrrd"
    write_itk(raw, data)
    write_itk(packed, data, compress=True)
    preadv = os.preadv

    def short(fd: int, buffers: list[Any], offset: int) -> int:  # as a network file system may
        return preadv(fd, [memoryview(buffers[0])[:5]], offset)

    monkeypatch.setattr(os, "preadv", short)
    with open_volume(str(raw)) as volume:
        check_reads(volume, data, rng)
    with open_volume(str(packed)) as volume:
        volume.read_all()  # saves decompressor states, which do not pickle
        copy = pickle.loads(pickle.dumps(volume))
        check_reads(copy, data, rng)


def test_other_nrrd_encodings_go_through_itk_with_a_warning_when_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    data = arange_volume((3, 4, 5), "uint16")
    text, raw = tmp_path / "text.nrrd", tmp_path / "r.nrrd"
    header = "NRRD0004\ntype: ushort\ndimension: 3\nsizes: 5 4 3\nencoding: ascii\n\n"
    text.write_text(header + " ".join(map(str, data.ravel())) + "\n")
    write_itk(raw, data)
    monkeypatch.setattr(itk_image, "WHOLE_READ_WARNING_BYTES", 100)
    with caplog.at_level(logging.WARNING), open_volume(str(raw)):
        assert not caplog.records
    with caplog.at_level(logging.WARNING), open_volume(str(text)) as volume:
        assert [r.getMessage() for r in caplog.records] == [
            f"{text}: ITK reads this NRRD file whole (0.0 GiB) for every region; save it raw "
            "or gzip-compressed, or as .mha or .nii, for a faster conversion"
        ]
        np.testing.assert_array_equal(volume.read_all(), data)
        refuse_itk_voxels(monkeypatch)
        with pytest.raises(AssertionError, match="ITK was asked"):
            volume.read(Box((0, 0, 0), (1, 2, 2)))


def test_raw_nrrd_cut_short_after_open(tmp_path: Path) -> None:
    path = tmp_path / "cut.nhdr"
    write_nrrd(path, arange_volume((4, 5, 6), "uint16"), data_file="cut.raw")
    with open_volume(str(path)) as volume:
        raw = tmp_path / "cut.raw"
        raw.write_bytes(raw.read_bytes()[:100])
        assert volume.read(Box((0, 0, 0), (1, 5, 6))).shape == (1, 5, 6)  # first 60 bytes
        with pytest.raises(InputError) as info:
            volume.read_all()
    assert str(info.value) == (f"{path}: cannot read region 0:4,0:5,0:6 ({raw}: data ends early)")


def test_itk_message_keeps_the_first_meaningful_line() -> None:
    text = (
        "Exception thrown in SimpleITK ImageFileReader_Execute: /src/itkMetaImageIO.cxx:490:\n"
        "ITK ERROR: MetaImageIO(0x55d6ead16690): File cannot be read: a.mhd for reading.\n"
        "Reason: No such file or directory"
    )
    assert itk_message(RuntimeError(text)) == "File cannot be read: a.mhd for reading."
    assert itk_message(RuntimeError("")) == "RuntimeError"


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


@pytest.mark.parametrize(
    ("axes", "voxel_size", "unit", "translation", "roi_start"),
    [
        ("zyx", (3.0, 2.0, 0.5), "um", (10.0, -4.0, 2.5), (1, 2, 3)),
        ("zyx", (1.0, 1.0, 1.0), None, (0.0, 0.0, 0.0), (0, 0, 0)),
        ("cyx", (2.0, 0.25), "cm", (-1.5, 7.0), (0, 1, 2)),
        ("czyx", (4.0, 1.0, 1.0), "nanometer", (0.0, 5.0, 6.0), (0, 2, 0, 1)),
    ],
    ids=["zyx-roi", "zyx-no-unit", "cyx-centimeter", "czyx"],
)
def test_hdf5_written_by_datatools_keeps_its_placement(
    tmp_path: Path,
    axes: str,
    voxel_size: tuple[float, ...],
    unit: str | None,
    translation: tuple[float, ...],
    roi_start: tuple[int, ...],
) -> None:
    from datatools.convert import convert
    from datatools.ngff import normalize_unit
    from datatools.sources import ArrayVolume

    shape = {"zyx": (5, 7, 9), "cyx": (3, 7, 9), "czyx": (2, 5, 7, 9)}[axes]
    data = arange_volume(shape, "uint16")
    source = ArrayVolume(data, axes, voxel_size=voxel_size, unit=unit, translation=translation)
    roi = Box(roi_start, shape)
    spatial_start = [s for s, a in zip(roi_start, axes, strict=True) if a != "c"]
    placed = tuple(
        t + s * v for t, s, v in zip(translation, spatial_start, voxel_size, strict=True)
    )
    h5 = tmp_path / "img.h5"
    assert convert(source, h5, roi=roi, chunks=4).complete
    with open_volume(str(h5), OpenOptions()) as volume:
        assert volume.axes == axes
        assert volume.voxel_size == voxel_size
        assert volume.unit == normalize_unit(unit)
        assert volume.translation == placed
        assert volume.describe()["translation"] == list(placed)
        np.testing.assert_array_equal(volume.read_all(), data[roi.slices()])

    out = tmp_path / "img.zarr"
    assert convert(str(h5), out, chunks=4).complete
    ms = zarr.open_group(out, mode="r").attrs["ome"]["multiscales"][0]
    scale, shift = ms["datasets"][0]["coordinateTransformations"]
    channel = [1.0] if axes[0] == "c" else []
    assert scale["scale"] == channel + list(voxel_size)
    assert shift["translation"] == [0.0] * len(channel) + list(placed)
    assert [a.get("unit") for a in ms["axes"] if a["type"] == "space"] == [
        normalize_unit(unit)
    ] * len(voxel_size)


def test_hdf5_axes_attribute_as_bytes_and_any_ngff_unit(tmp_path: Path) -> None:
    path = tmp_path / "vol.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = arange_volume((3, 4, 5))
        f["raw"].attrs.update(
            {"axes": b"cyx", "resolution": [0.5, 0.25], "unit": "Kilometer", "translation": [-1, 3]}
        )
    with open_volume(f"{path}:/raw") as volume:
        assert (volume.axes, volume.voxel_size, volume.translation) == (
            "cyx",
            (0.5, 0.25),
            (-1.0, 3.0),
        )
        assert volume.unit == "kilometer"
