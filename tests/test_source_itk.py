"""ITK sources (``.mha``, ``.nrrd``, ``.nii[.gz]`` via SimpleITK): random-box reads, vector
pixels, placement, raw and gzip NRRD read in place, bad inputs."""

from __future__ import annotations

import gzip
import logging
import os
import pickle
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813

from datatools.errors import InputError
from datatools.geometry import Box
from datatools.sources import (
    _nrrd_layout,
    itk_image,
    open_volume,
)
from datatools.sources.itk_image import ItkVolume, itk_message
from tests.helpers import UNSUPPORTED, arange_volume, check_reads, error_of, write_itk
from tests.source_conformance import SourceConformance


class ItkConformance(SourceConformance):
    """An ITK image file named ``vol`` + :attr:`suffix`."""

    kind = "itk"
    suffix: ClassVar[str]
    compress: ClassVar[bool] = False

    def write(self, folder: Path, data: np.ndarray) -> str:
        path = folder / f"vol{self.suffix}"
        write_itk(path, data, compress=self.compress)
        return str(path)


class TestMhaConformance(ItkConformance):
    suffix = ".mha"
    dtype = "float32"


class TestNrrdConformance(ItkConformance):
    """A raw NRRD, read in place (not through ITK)."""

    suffix = ".nrrd"
    dtype = "uint8"


class TestNiftiGzConformance(ItkConformance):
    suffix = ".nii.gz"
    dtype = "int16"
    compress = True


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
    order: Literal["<", ">"] = "<" if endian == "little" else ">"
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
