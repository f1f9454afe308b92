"""Zarr arrays, plain Zarr groups and OME-Zarr images (NGFF 0.4, 0.5): random-box reads,
levels, placement metadata, bad inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import zarr
from ome_zarr_models.v04 import Image as ImageV04
from ome_zarr_models.v05 import Image as ImageV05

from datatools.errors import InputError
from datatools.geometry import Box
from datatools.sources import (
    OpenOptions,
    open_volume,
)
from datatools.sources.zarr_array import ZarrVolume
from tests.helpers import UNSUPPORTED, arange_volume, attrs_of, check_reads, error_of
from tests.source_conformance import SourceConformance


class TestZarrV2Conformance(SourceConformance):
    kind = "zarr"
    dtype = "int16"

    def write(self, folder: Path, data: np.ndarray) -> str:
        path = folder / "vol.zarr"
        array = zarr.create_array(
            path, shape=data.shape, dtype=data.dtype, chunks=(2, 4, 4), zarr_format=2
        )
        array[:] = data
        return str(path)


class TestZarrV3Conformance(SourceConformance):
    kind = "zarr"
    shape = (2, 5, 14, 11)
    axes = "czyx"

    def write(self, folder: Path, data: np.ndarray) -> str:
        path = folder / "vol.zarr"
        array = zarr.create_array(
            path,
            shape=data.shape,
            dtype=data.dtype,
            chunks=(1, 2, 4, 4),
            shards=(1, 4, 8, 8),
            dimension_names=("c", "z", "y", "x"),
        )
        array[:] = data
        return str(path)


class TestOmeZarrLevelConformance(SourceConformance):
    """Level 1 of an OME-Zarr image (NGFF 0.5) whose level 0 holds other values."""

    kind = "zarr"
    options = OpenOptions(level=1)

    def write(self, folder: Path, data: np.ndarray) -> str:
        path = folder / "img.zarr"
        level0 = arange_volume((5, 28, 22)) + 1
        write_ome_zarr(
            path,
            "0.5",
            [level0, data],
            "zyx",
            [[1.0, 1.0, 1.0], [1.0, 2.0, 2.0]],
            [None, [0.0, 0.5, 0.5]],
            {},
        )
        return str(path)


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
    fmt: Literal[2, 3],
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
        extra: dict[str, Any] = {} if version == "0.4" else {"dimension_names": tuple(axes)}
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
    multiscales = attrs_of(group)["multiscales"]
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
    multiscales = attrs_of(group)["multiscales"]
    multiscales[0].update(change)
    group.attrs["multiscales"] = multiscales
    assert error_of(str(path)).startswith(f"{path}: {problem}")


def test_ngff_without_axes_uses_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "old.zarr"
    data = arange_volume((1, 2, 3, 4, 5))
    write_ome_zarr(path, "0.4", [data], "tczyx", [[1.0] * 5], [None], {})
    group = zarr.open_group(path, mode="r+")
    multiscales = attrs_of(group)["multiscales"]
    del multiscales[0]["axes"]
    group.attrs["multiscales"] = multiscales
    with open_volume(str(path)) as volume:
        assert volume.axes == "czyx"
        np.testing.assert_array_equal(volume.read_all(), data[0])
