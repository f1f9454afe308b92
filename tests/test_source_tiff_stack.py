"""TIFF slice sources (``tiff-stack``: a folder, glob or list of 2D TIFF slices): every layout
read over random boxes, natural order, metadata, bad inputs."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pytest
import tifffile

from datatools.errors import InputError, InputNotFoundError, RoiError
from datatools.geometry import Box
from datatools.sources import OpenOptions, open_volume
from datatools.sources.tiff_stack import TiffStack, natural_key
from tests.helpers import arange_volume, message, random_boxes, write_stack
from tests.source_conformance import SourceConformance


class TestTiffStackConformance(SourceConformance):
    kind = "tiff-stack"

    def write(self, folder: Path, data: np.ndarray) -> str:
        return str(write_stack(folder, data, compression="zlib", rowsperstrip=4))

    def input_files(self, spec: str) -> tuple[Path, ...]:
        return tuple(sorted(Path(spec).glob("slice_*.tif")))


SHAPE = (3, 37, 45)  # 37 rows: the last 7-row strip and the 16-row tiles are partial
OPEN = OpenOptions()


def fill_order_2(path: Path) -> None:
    """Turn a placeholder private tag (65000 = 2) into FillOrder = 2 (tifffile cannot write it)."""
    raw = path.read_bytes()
    entry = (65000).to_bytes(2, "little") + b"\x03\x00\x01\x00\x00\x00\x02\x00"
    assert raw.count(entry) == 1
    path.write_bytes(raw.replace(entry, (266).to_bytes(2, "little") + entry[2:]))


# ---------------------------------------------------------------- tiff-stack: layouts

GRAY_LAYOUTS: dict[str, tuple[str, dict[str, Any]]] = {
    "raw-uint8": ("uint8", {}),
    "raw-uint16-bigendian": ("uint16", {"byteorder": ">"}),
    "raw-float32": ("float32", {}),
    "raw-uint16-rps7": ("uint16", {"rowsperstrip": 7}),
    "zlib-uint16-rps7": ("uint16", {"compression": "zlib", "rowsperstrip": 7}),
    "zlib-uint16-rps7-predictor": (
        "uint16",
        {"compression": "zlib", "rowsperstrip": 7, "predictor": True},
    ),
    "zlib-uint16-rps7-predictor-bigendian": (
        "uint16",
        {"compression": "zlib", "rowsperstrip": 7, "predictor": True, "byteorder": ">"},
    ),
    "lzw-uint8-rps7": ("uint8", {"compression": "lzw", "rowsperstrip": 7}),
    "lzw-uint16-rps7-predictor": (
        "uint16",
        {"compression": "lzw", "rowsperstrip": 7, "predictor": True},
    ),
    "zlib-float32-rps7-float-predictor": (
        "float32",
        {"compression": "zlib", "rowsperstrip": 7, "predictor": True},
    ),
    "raw-uint16-tile16": ("uint16", {"tile": (16, 16)}),
    "zlib-float32-tile16": ("float32", {"compression": "zlib", "tile": (16, 16)}),
    "zstd-uint16-tile16-predictor": (
        "uint16",
        {"compression": "zstd", "tile": (16, 16), "predictor": True},
    ),
}


@pytest.mark.parametrize("layout", GRAY_LAYOUTS)
def test_stack_reads_random_boxes_exactly(
    tmp_path: Path, rng: np.random.Generator, layout: str
) -> None:
    dtype, kw = GRAY_LAYOUTS[layout]
    data = arange_volume(SHAPE, dtype)
    folder = write_stack(tmp_path / "stack", data, photometric="minisblack", **kw)
    with TiffStack.open(str(folder), OPEN) as volume:
        assert (volume.shape, volume.dtype, volume.axes) == (SHAPE, np.dtype(dtype), "zyx")
        for box in random_boxes(SHAPE, rng):
            got = volume.read(box)
            assert got.dtype == np.dtype(dtype)
            assert got.flags.c_contiguous
            np.testing.assert_array_equal(got, data[box.slices()], err_msg=str(box))


RGB_LAYOUTS: dict[str, dict[str, Any]] = {
    "contig-raw": {"planarconfig": "contig"},
    "contig-zlib-rps7": {"planarconfig": "contig", "compression": "zlib", "rowsperstrip": 7},
    "contig-lzw-tile16-predictor": {
        "planarconfig": "contig",
        "compression": "lzw",
        "tile": (16, 16),
        "predictor": True,
    },
    "separate-raw": {"planarconfig": "separate"},
    "separate-zlib-rps7": {"planarconfig": "separate", "compression": "zlib", "rowsperstrip": 7},
    "separate-raw-tile16": {"planarconfig": "separate", "tile": (16, 16)},
}


@pytest.mark.parametrize("layout", RGB_LAYOUTS)
def test_stack_rgb_slices_are_channel_first(
    tmp_path: Path, rng: np.random.Generator, layout: str
) -> None:
    kw = RGB_LAYOUTS[layout]
    data = arange_volume((*SHAPE, 3), "uint16")  # (z, y, x, s) as written
    planes = data if kw["planarconfig"] == "contig" else np.moveaxis(data, -1, 1)
    folder = write_stack(tmp_path / "rgb", planes, photometric="rgb", **kw)
    expected = np.moveaxis(data, -1, 0)  # (c, z, y, x)
    with TiffStack.open(str(folder), OPEN) as volume:
        assert isinstance(volume, TiffStack)
        assert (volume.shape, volume.axes) == (expected.shape, "czyx")
        assert volume.chunks == (3, 1, *volume.layout.chunk_shape)
        for box in random_boxes(expected.shape, rng):
            np.testing.assert_array_equal(volume.read(box), expected[box.slices()], str(box))


def test_stack_fill_order_2_is_reversed_like_tifffile(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    data = arange_volume(SHAPE, "uint8")
    folder = write_stack(tmp_path / "fill", data, extratags=[(65000, "H", 1, 2, True)])
    for path in folder.iterdir():
        fill_order_2(path)
    expected = imagecodecs.bitorder_decode(data.copy())  # what the bits mean under FillOrder 2
    assert not np.array_equal(expected, data)
    np.testing.assert_array_equal(tifffile.imread(folder / "slice_0001.tif"), expected[1])
    with TiffStack.open(str(folder), OPEN) as volume:
        for box in random_boxes(SHAPE, rng):
            np.testing.assert_array_equal(volume.read(box), expected[box.slices()], str(box))


def test_stack_bilevel_and_jpeg_match_tifffile(tmp_path: Path, rng: np.random.Generator) -> None:
    bits = arange_volume(SHAPE, "uint16") % 3 == 0
    folder = write_stack(tmp_path / "bits", bits)
    with TiffStack.open(str(folder), OPEN) as volume:
        assert volume.dtype == np.dtype(bool)
        for box in random_boxes(SHAPE, rng):
            np.testing.assert_array_equal(volume.read(box), bits[box.slices()], str(box))
    rgb = arange_volume((*SHAPE, 3), "uint8")
    folder = write_stack(
        tmp_path / "jpeg", rgb, photometric="rgb", compression="jpeg", tile=(16, 16)
    )
    reference = np.moveaxis(np.stack([tifffile.imread(p) for p in sorted(folder.iterdir())]), -1, 0)
    with TiffStack.open(str(folder), OPEN) as volume:
        for box in random_boxes(reference.shape, rng, n=6):
            np.testing.assert_array_equal(volume.read(box), reference[box.slices()], str(box))


@pytest.mark.parametrize(
    ("kw", "corrupt_index", "readable", "unreadable"),
    [
        # strips of 7 rows: corrupt strip 1 (rows 7-13)
        (
            {"compression": "zlib", "rowsperstrip": 7},
            1,
            Box((0, 14, 0), (3, 37, 45)),
            Box((1, 10, 0), (2, 12, 5)),
        ),
        # 16x16 tiles, 3 across: corrupt tile 4 (rows 16-31, columns 16-31)
        (
            {"compression": "zlib", "tile": (16, 16)},
            4,
            Box((0, 0, 0), (3, 37, 16)),
            Box((1, 20, 20), (2, 21, 21)),
        ),
    ],
    ids=["strips", "tiles"],
)
def test_stack_decodes_only_segments_that_meet_the_box(
    tmp_path: Path, kw: dict[str, Any], corrupt_index: int, readable: Box, unreadable: Box
) -> None:
    data = arange_volume(SHAPE, "uint16")
    folder = write_stack(tmp_path / "stack", data, photometric="minisblack", **kw)
    bad = folder / "slice_0001.tif"
    with tifffile.TiffFile(bad) as tif:
        page = tif.pages.first
        offset, count = page.dataoffsets[corrupt_index], page.databytecounts[corrupt_index]
    raw = bytearray(bad.read_bytes())
    raw[offset : offset + count] = b"\xff" * count
    bad.write_bytes(bytes(raw))
    with TiffStack.open(str(folder), OPEN) as volume:
        np.testing.assert_array_equal(volume.read(readable), data[readable.slices()])
        with pytest.raises(InputError, match=f"^{re.escape(str(bad))}: not a readable TIFF \\("):
            volume.read(unreadable)


@pytest.mark.parametrize("columns", [(0, 45), (10, 20)], ids=["full-width", "partial-width"])
def test_stack_uncompressed_reads_only_the_box_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, columns: tuple[int, int]
) -> None:
    data = arange_volume(SHAPE, "uint16")
    folder = write_stack(tmp_path / "stack", data)
    calls: list[tuple[tuple[int, int], tuple[int, int]]] = []
    original = TiffStack._read_rows

    def spy(self: TiffStack, path: Path, direct: Any, rows: Any, cols: Any, out: Any) -> bool:
        calls.append((rows, cols))
        return original(self, path, direct, rows, cols, out)

    monkeypatch.setattr(TiffStack, "_read_rows", spy)
    box = Box((1, 12, columns[0]), (3, 20, columns[1]))
    with TiffStack.open(str(folder), OPEN) as volume:
        np.testing.assert_array_equal(volume.read(box), data[box.slices()])
    # two slices, rows 12-19 read straight from the files (offsets found at open)
    assert calls == [((12, 20), columns)] * 2


def test_stack_single_file_folder_describe_and_bad_box(tmp_path: Path) -> None:
    data = arange_volume((1, 20, 30), "uint16")
    folder = write_stack(tmp_path / "one", data, compression="zlib", rowsperstrip=8)
    with TiffStack.open(str(folder), OPEN) as volume:
        assert (volume.shape, volume.axes, volume.chunks) == ((1, 20, 30), "zyx", (1, 8, 30))
        info = volume.describe()
        assert info["kind"] == "tiff-stack"
        assert info["files"] == 1
        assert info["first_file"] == info["last_file"] == str(folder / "slice_0000.tif")
        assert info["compression"] == "adobe_deflate"
        assert info["rows_per_strip"] == 8
        assert info["voxel_size"] is None
        with pytest.raises(RoiError, match="outside the volume"):
            volume.read(Box((0, 0, 0), (1, 21, 30)))
    folder = write_stack(tmp_path / "tiled", data, tile=(16, 16))
    with TiffStack.open(str(folder), OPEN) as volume:
        assert volume.describe()["tile_shape"] == [16, 16]


def test_stack_voxel_size_from_imagej_spacing(tmp_path: Path) -> None:
    data = arange_volume((2, 20, 30), "uint16")
    meta = {"spacing": 3.0, "unit": "micron"}
    folder = write_stack(tmp_path / "ij", data, imagej=True, resolution=(2.0, 4.0), metadata=meta)
    with TiffStack.open(str(folder), OPEN) as volume:
        assert volume.voxel_size == (3.0, 0.25, 0.5)
        assert volume.unit == "micrometer"


# ---------------------------------------------------------------- tiff-stack: order and specs


def test_natural_key_orders_numbers_by_value() -> None:
    names = ["s10.tif", "s2.tif", "S3.tif", "s1.tif", "s001.tif", "s2a.tif", "a.tif"]
    assert sorted(names, key=natural_key) == [
        "a.tif",
        "s001.tif",
        "s1.tif",
        "s2.tif",
        "s2a.tif",
        "S3.tif",
        "s10.tif",
    ]


@pytest.mark.parametrize(
    "names",
    [
        ["s8.tif", "s9.tif", "s10.tif", "s11.tif"],
        ["img_08.tif", "img_9.tif", "img_010.tif", "img_11.TIFF"],
    ],
    ids=["unpadded", "mixed-padding"],
)
def test_stack_slices_in_natural_order(tmp_path: Path, names: list[str]) -> None:
    folder = tmp_path / "stack"
    folder.mkdir()
    for name in reversed(names):
        number = int(re.findall(r"\d+", name)[-1])
        tifffile.imwrite(folder / name, np.full((4, 5), number, np.uint8))
    with TiffStack.open(str(folder), OPEN) as volume:
        assert volume.read_all()[:, 0, 0].tolist() == [8, 9, 10, 11]


def test_stack_ignores_hidden_and_other_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = arange_volume((2, 6, 7), "uint8")
    folder = write_stack(tmp_path / "stack", data)
    (folder / "notes.txt").write_text("x")
    (folder / ".slice_0002.tif").write_bytes(b"junk")
    (folder / "sub").mkdir()
    with caplog.at_level(logging.INFO, logger="datatools.sources.tiff_stack"):
        volume = TiffStack.open(str(folder), OPEN)
    assert volume.shape == (2, 6, 7)
    assert volume.details()["ignored_files"] == 2
    assert f"{folder}: ignored 2 hidden or non-.tif/.tiff files" in caplog.messages


# ---------------------------------------------------------------- tiff-stack: bad inputs


def test_stack_numbering_gap_refused_unless_allowed(tmp_path: Path) -> None:
    data = arange_volume((10, 4, 5), "uint8")
    folder = write_stack(tmp_path / "stack", data)
    (folder / "slice_0007.tif").unlink()
    spec = f"{folder}/"
    with pytest.raises(
        InputError,
        match=message(
            f"{spec}: slice numbering has a gap: 7 missing between slice_0006.tif and "
            "slice_0008.tif (use --allow-gaps to accept)"
        ),
    ):
        TiffStack.open(spec, OPEN)
    for z in (2, 3, 4):
        (folder / f"slice_{z:04d}.tif").unlink()
    with pytest.raises(
        InputError,
        match=message(
            f"{spec}: slice numbering has a gap: 2-4 missing between slice_0001.tif and "
            "slice_0005.tif; 1 more gaps (use --allow-gaps to accept)"
        ),
    ):
        TiffStack.open(spec, OPEN)
    with TiffStack.open(spec, OpenOptions(allow_gaps=True)) as volume:
        np.testing.assert_array_equal(volume.read_all(), data[[0, 1, 5, 6, 8, 9]])


def test_stack_missing_empty_and_non_tiff_inputs(tmp_path: Path) -> None:
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, np.zeros((4, 5), np.uint8))
    missing = tmp_path / "nope.tif"
    with pytest.raises(InputNotFoundError, match=message(f"{missing}: no such file or directory")):
        TiffStack.open([good, missing], OPEN)
    with pytest.raises(
        InputError, match=message(f"{tmp_path}: not a file (list 2D TIFF slice files)")
    ):
        TiffStack.open([good, tmp_path], OPEN)
    with pytest.raises(InputError, match="no slice files given"):
        TiffStack.open([], OPEN)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        InputError, match=message(f"{empty}: empty folder (expected 2D .tif/.tiff slices)")
    ):
        TiffStack.open(str(empty), OPEN)
    others = tmp_path / "others"
    others.mkdir()
    (others / "a.png").write_bytes(b"x")
    (others / ".hidden.tif").write_bytes(b"x")
    with pytest.raises(
        InputError, match=message(f"{others}: no .tif/.tiff files (2 other files ignored)")
    ):
        TiffStack.open(str(others), OPEN)
    pattern = f"{tmp_path}/missing_*.tif"
    with pytest.raises(
        InputError,
        match=message(f"{pattern}: no files match this pattern (check the folder and pattern)"),
    ):
        open_volume(pattern)
    with pytest.raises(
        InputError, match=message(f"{others}/*: no .tif/.tiff files (1 other files ignored)")
    ):
        open_volume(f"{others}/*")


def test_stack_unreadable_truncated_and_empty_tiffs(tmp_path: Path) -> None:
    data = arange_volume((3, 20, 30), "uint16")

    def fresh(name: str) -> tuple[Path, Path]:
        folder = write_stack(tmp_path / name, data)
        return folder, folder / "slice_0001.tif"

    folder, bad = fresh("garbage")
    bad.write_bytes(b"this is not a TIFF file at all")
    with pytest.raises(
        InputError, match=message(f"{bad}: not a readable TIFF (not a TIFF file: header=b'this')")
    ):
        TiffStack.open(str(folder), OPEN)

    folder, bad = fresh("truncated")
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(
        InputError,
        match=message(
            f"{bad}: truncated TIFF (pixel data ends at byte {len(raw)}, the file has "
            f"{len(raw) - 100} bytes)"
        ),
    ):
        TiffStack.open(str(folder), OPEN)

    folder, bad = fresh("cut-after-open")
    with TiffStack.open(str(folder), OPEN) as volume:
        bad.write_bytes(bad.read_bytes()[:-100])
        np.testing.assert_array_equal(volume.read(Box((0, 0, 0), (1, 20, 30))), data[:1])
        with pytest.raises(InputError, match=f"^{re.escape(str(bad))}: truncated TIFF"):
            volume.read(Box((1, 0, 0), (2, 2, 2)))

    folder, bad = fresh("replaced-after-open")
    with TiffStack.open(str(folder), OPEN) as volume:
        other = data[1] + 1000
        tifffile.imwrite(bad, other, compression="zlib")  # same shape, pixels elsewhere now
        np.testing.assert_array_equal(volume.read(Box((1, 0, 0), (2, 20, 30)))[0], other)

    folder, bad = fresh("header-only")
    bad.write_bytes(b"II*\x00\x00\x00\x00\x00")
    with pytest.raises(
        InputError, match=message(f"{bad}: TIFF holds no pixel data (no image in the file)")
    ):
        TiffStack.open(str(folder), OPEN)

    folder, bad = fresh("zero-size")
    with pytest.warns(UserWarning, match="zero-size"):
        tifffile.imwrite(bad, np.zeros((0, 0), np.uint16))
    with pytest.raises(
        InputError,
        match=message(f"{bad}: TIFF holds no pixel data (header only or zero-size image)"),
    ):
        TiffStack.open(str(folder), OPEN)

    folder, bad = fresh("volumetric")
    tifffile.imwrite(bad, data, volumetric=True, tile=(3, 16, 16), photometric="minisblack")
    with pytest.raises(
        InputError,
        match=message(
            f"{bad}: volumetric TIFF page (depth 3) is not a 2D slice (open the file on its "
            "own, not as part of a slice folder)"
        ),
    ):
        TiffStack.open(str(folder), OPEN)

    folder, bad = fresh("multipage")
    tifffile.imwrite(bad, data[:2], photometric="minisblack")
    with pytest.raises(
        InputError,
        match=message(
            f"{bad}: has 2 pages, a slice must be one 2D image (open a multi-page TIFF by its "
            "file name, not in a slice folder)"
        ),
    ):
        TiffStack.open(str(folder), OPEN)


@pytest.mark.parametrize(
    ("plane", "problem"),
    [
        (
            np.zeros((20, 31), np.uint16),
            "slice shape 20 x 31 differs from 20 x 30 of {first} "
            "(all slices must have the same shape)",
        ),
        (
            np.zeros((20, 30), np.uint8),
            "dtype uint8 differs from uint16 of {first} (all slices must have the same dtype)",
        ),
        (
            np.zeros((20, 30, 3), np.uint16),
            "3 samples per pixel differs from 1 of {first} "
            "(all slices must have the same samples per pixel)",
        ),
    ],
    ids=["shape", "dtype", "samples"],
)
def test_stack_mismatched_slices_name_the_file(
    tmp_path: Path, plane: np.ndarray, problem: str
) -> None:
    folder = write_stack(tmp_path / "stack", arange_volume((3, 20, 30), "uint16"))
    bad = folder / "slice_0002.tif"
    tifffile.imwrite(bad, plane)
    first = folder / "slice_0000.tif"
    with pytest.raises(InputError, match=message(f"{bad}: " + problem.format(first=first))):
        TiffStack.open(str(folder), OPEN)


def test_stack_unsupported_dtype(tmp_path: Path) -> None:
    folder = write_stack(tmp_path / "stack", np.zeros((2, 4, 5), np.complex64))
    first = folder / "slice_0000.tif"
    with pytest.raises(
        InputError,
        match=message(
            f"{first}: unsupported dtype complex64 (datatools handles bool, integer and float data)"
        ),
    ):
        TiffStack.open(str(folder), OPEN)
