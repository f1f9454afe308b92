"""HDF5 sources (``file.h5:/dataset``): random-box reads, dataset discovery, placement
attributes, bad inputs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from datatools.cli.main import cli
from datatools.geometry import Box
from datatools.info import format_info, inspect
from datatools.sources import (
    OpenOptions,
    open_volume,
)
from datatools.sources.hdf5 import Hdf5Volume, split_spec
from tests.helpers import UNSUPPORTED, arange_volume, attrs_of, check_reads, error_of
from tests.source_conformance import SourceConformance


class TestHdf5Conformance(SourceConformance):
    kind = "hdf5"
    dtype = "float32"

    def write(self, folder: Path, data: np.ndarray) -> str:
        with h5py.File(folder / "vol.h5", "w") as f:
            f.create_dataset("grp/raw", data=data, chunks=(2, 4, 4), compression="gzip")
        return f"{folder / 'vol.h5'}:/grp/raw"

    def input_files(self, spec: str) -> tuple[Path, ...]:
        return (Path(spec.partition(":/")[0]),)


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
    from datatools.sources import ArrayVolume
    from datatools.units import normalize_unit

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
    ms = attrs_of(out)["ome"]["multiscales"][0]
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


def write_virtual(folder: Path) -> tuple[Path, np.ndarray]:
    """``v.h5:/vol``, a virtual dataset whose two halves are ``src0.h5`` and ``src1.h5``."""
    data = arange_volume((8, 6, 5))
    layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
    for i in range(2):
        with h5py.File(folder / f"src{i}.h5", "w") as f:
            f["data"] = data[i * 4 : (i + 1) * 4]
        layout[i * 4 : (i + 1) * 4] = h5py.VirtualSource(f"src{i}.h5", "data", shape=(4, 6, 5))
    with h5py.File(folder / "v.h5", "w") as f:
        f.create_virtual_dataset("vol", layout, fillvalue=0)
    return folder / "v.h5", data


def test_virtual_dataset_reads_its_sources_and_info_shows_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, data = write_virtual(tmp_path)
    monkeypatch.chdir(tmp_path.parent)  # sources are found next to the virtual file
    with open_volume(str(path)) as volume:
        np.testing.assert_array_equal(volume.read_all(), data)
        assert volume.files() == (path, tmp_path / "src0.h5", tmp_path / "src1.h5")
    assert inspect(str(path))["storage"] == "virtual (src0.h5, src1.h5)"
    assert "storage      virtual (src0.h5, src1.h5)" in format_info(inspect(str(path)))


def test_virtual_dataset_with_a_missing_source_is_refused_naming_it(tmp_path: Path) -> None:
    from datatools.convert import convert

    path, _ = write_virtual(tmp_path)
    converted = tmp_path / "c.zarr"
    assert convert(str(path), converted).complete
    (tmp_path / "src1.h5").unlink()  # HDF5 would read its half as the fill value
    expected = (
        f"{path}:/vol: virtual dataset whose files are missing: src1.h5 (HDF5 would read their "
        "parts as the fill value; restore them next to v.h5, or name their folder in "
        "HDF5_VDS_PREFIX)"
    )
    assert error_of(str(path)) == expected
    result = CliRunner().invoke(cli, ["convert", str(path), str(tmp_path / "o.zarr")])
    assert (result.exit_code, result.stderr) == (2, f"Error: {expected}\n"), result.output
    assert not (tmp_path / "o.zarr").exists()
    result = CliRunner().invoke(cli, ["verify", str(converted), "--against", str(path)])
    assert (result.exit_code, result.stderr) == (2, f"Error: {expected}\n"), result.output


def test_external_storage_is_shown_and_a_missing_file_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = arange_volume((4, 6, 5))
    monkeypatch.chdir(tmp_path)  # HDF5 reads relative external names from the working folder
    data.tofile("raw.bin")
    with h5py.File("e.h5", "w") as f:
        f.create_dataset(
            "vol", shape=data.shape, dtype=data.dtype, external=[("raw.bin", 0, data.nbytes)]
        )
    with open_volume("e.h5") as volume:
        np.testing.assert_array_equal(volume.read_all(), data)
        assert volume.files() == (Path("e.h5"), Path("raw.bin"))
    assert inspect("e.h5")["storage"] == "external (raw.bin)"
    Path("raw.bin").unlink()
    assert error_of("e.h5") == (
        "e.h5:/vol: external dataset whose files are missing: raw.bin (restore them; HDF5 reads "
        "relative names from the working folder or HDF5_EXTFILE_PREFIX)"
    )


def test_info_names_the_storage_of_plain_datasets(tmp_path: Path) -> None:
    path = tmp_path / "vol.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("chunked", data=arange_volume((4, 6, 5)), chunks=(2, 3, 5))
        f.create_dataset("contiguous", data=arange_volume((4, 6, 5)))
    assert inspect(f"{path}:/chunked")["storage"] == "chunked"
    assert inspect(f"{path}:/contiguous")["storage"] == "contiguous"
