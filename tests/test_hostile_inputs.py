"""Hostile inputs stay within the memory limit: a decompression-bomb TIFF strip, Zarr arrays of
pathological chunking or declared shape, and patch sizes or chunk rows beyond memory are refused
with one ``Error:`` line before any output exists; what is accepted stays bounded."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from click.testing import CliRunner

from datatools.cli.main import cli
from datatools.convert import convert
from datatools.geometry import Box
from datatools.patches import extract_patches, plan_patches
from datatools.patches.options import PatchOptions
from datatools.sources import open_volume, zarr_array
from datatools.sources.zarr_array import chunk_batches
from tests.helpers import arange_volume

BOMB = 4000
"""Side of the bomb strip: 16 MB of uint8 zeros, one zlib strip of about 16 KB on disk."""


def run(*args: str) -> tuple[int, str]:
    """Run the CLI in-process: exit code and the last line of stderr."""
    result = CliRunner().invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    lines = result.stderr.strip().splitlines()
    return result.exit_code, lines[-1] if lines else ""


def bomb(path: Path) -> Path:
    tifffile.imwrite(path, np.zeros((BOMB, BOMB), np.uint8), compression="zlib", rowsperstrip=BOMB)
    assert path.stat().st_size < 100_000
    return path


def bomb_stack(folder: Path) -> Path:
    folder.mkdir()
    for z in range(2):
        bomb(folder / f"s{z}.tif")
    return folder


# ------------------------------------------------------------ decompression bombs (TIFF)


@pytest.mark.parametrize(
    ("make", "piece"), [(bomb, "4000 x 4000"), (bomb_stack, "1 x 4000 x 4000")]
)
def test_a_strip_larger_than_the_memory_limit_is_refused_before_the_target_exists(
    tmp_path: Path, make: Callable[[Path], Path], piece: str
) -> None:
    source = make(tmp_path / "bomb")
    out = tmp_path / "o.zarr"
    code, line = run("convert", str(source), str(out), "--memory-limit", "8M", "-q")
    assert code == 2, line
    assert line == (
        f"Error: {source}: its smallest readable piece (a chunk, strip or tile of {piece}) "
        "decodes to 16000000 bytes, more than --memory-limit 8388608 (8388608 bytes) (give "
        "--memory-limit 92M or more, where units hold whole pieces, or store the input in "
        "smaller chunks, strips or tiles)"
    )
    assert not out.exists()


def test_a_strip_within_the_limit_is_decoded_once_and_memory_stays_bounded(
    tmp_path: Path,
) -> None:
    source = bomb(tmp_path / "bomb.tif")
    limit = 96 * 2**20
    tracemalloc.start()
    try:
        result = convert(str(source), tmp_path / "o.zarr", chunks=64, memory_limit=limit)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.complete
    assert result.units_total == 1  # the one unit holds the whole strip: decoded once
    assert peak < limit


def test_an_uncompressed_plane_larger_than_the_limit_reads_row_by_row(tmp_path: Path) -> None:
    data = arange_volume((1500, 1500), "uint8")
    tifffile.imwrite(tmp_path / "plane.tif", data)
    with open_volume(str(tmp_path / "plane.tif")) as volume:
        assert volume.describe()["memory_mapped"]
        assert volume.chunks == (1, 1500)  # a row: reads touch only the rows they need
    result = convert(str(tmp_path / "plane.tif"), tmp_path / "o.zarr", memory_limit=2**20)
    assert result.complete
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "o.zarr" / "0")[:], data)


def test_patches_refuse_a_strip_larger_than_the_memory_limit(tmp_path: Path) -> None:
    source = bomb(tmp_path / "bomb.tif")
    out = tmp_path / "p.zarr"
    code, line = run("patches", str(source), str(out), "--size", "64", "--memory-limit", "8M", "-q")
    assert code == 2, line
    assert line == (
        f"Error: {source}: its smallest readable piece (a chunk, strip or tile of 4000 x 4000) "
        "decodes to 16000000 bytes, more than the memory limit (8388608 bytes) (give "
        "--memory-limit 16M or more, or store the input in smaller chunks, strips or tiles)"
    )
    assert not out.exists()


def test_patch_slabs_cut_through_strips_that_would_pass_their_budget(tmp_path: Path) -> None:
    data = arange_volume((4, 512, 512), "uint16")
    folder = tmp_path / "slices"
    folder.mkdir()
    for z, plane in enumerate(data):
        tifffile.imwrite(folder / f"s{z}.tif", plane, compression="zlib", rowsperstrip=512)
    limit = 2**21  # slabs of 256 KiB with one worker; one whole strip and its reach: 2 MiB
    with open_volume(str(folder)) as volume:
        plan = plan_patches(volume, PatchOptions(size=8), memory_limit=limit, workers=1)
    assert np.prod(plan.slab_extent[1:]) < 512 * 512
    cut = extract_patches(str(folder), tmp_path / "cut.zarr", size=8, memory_limit=limit)
    whole = extract_patches(str(folder), tmp_path / "whole.zarr", size=8)
    assert cut.total == whole.total == 64 * 64
    found = []
    for name in ("cut.zarr", "whole.zarr"):
        written = zarr.open_group(tmp_path / name, mode="r")
        origins = np.asarray(written["origins"])
        order = np.lexsort(origins.T[::-1])
        found.append((origins[order], np.asarray(written["patches"])[order]))
    np.testing.assert_array_equal(found[0][0], found[1][0])
    np.testing.assert_array_equal(found[0][1], found[1][1])


# ------------------------------------------------------------------- Zarr chunking


def test_a_chunk_larger_than_the_memory_limit_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "big_chunk.zarr"
    zarr.create_array(source, shape=(64, 64, 64), chunks=(1024, 1024, 1024), dtype="uint8")
    out = tmp_path / "o.zarr"
    code, line = run("convert", str(source), str(out), "--memory-limit", "64M", "-q")
    assert code == 2, line
    assert line == (
        f"Error: {source}: its smallest readable piece (a chunk, strip or tile of 1024 x 1024 "
        "x 1024) decodes to 1073741824 bytes, more than --memory-limit 67108864 (67108864 "
        "bytes) (give --memory-limit 6144M or more, where units hold whole pieces, or store "
        "the input in smaller chunks, strips or tiles)"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (
            ["--memory-limit", "64M"],
            "takes 91064453125 units of 11010048 bytes, too many to keep track of at "
            "--memory-limit 67108864 (11656250000000 bytes, more than 67108864)",
        ),
        (
            [],
            "takes 15136718750 units of 67108864 bytes, too many to keep track of at the "
            "default memory limit (1937500000000 bytes, more than 402653184)",
        ),
    ],
)
def test_a_declared_shape_of_a_million_per_axis_is_refused_before_planning_units(
    tmp_path: Path, limit: list[str], expected: str
) -> None:
    source = tmp_path / "huge.zarr"
    zarr.create_array(source, shape=(10**6,) * 3, chunks=(64, 64, 64), dtype="uint8")
    out = tmp_path / "o.zarr"
    code, line = run("convert", str(source), str(out), *limit, "-q")
    assert code == 2, line
    assert line == (
        f"Error: {source}: converting 1000000 x 1000000 x 1000000 voxels {expected} (convert "
        "a part with --roi, or give a larger --memory-limit: units grow with it)"
    )
    assert not out.exists()


def test_many_tiny_chunks_are_read_in_batches_of_bounded_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = arange_volume((8, 16, 16), "uint8")
    zarr.create_array(tmp_path / "tiny.zarr", data=data, chunks=(1, 1, 1))
    monkeypatch.setattr(zarr_array, "READ_CHUNKS", 64)
    with open_volume(str(tmp_path / "tiny.zarr")) as volume:
        out = np.zeros(data.shape, data.dtype)
        tracemalloc.start()
        try:
            got = volume.read(Box.from_shape(data.shape), out=out)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert got is out
    np.testing.assert_array_equal(out, data)
    # zarr-python keeps about 2.3 KiB per chunk of a read: 2048 chunks at once took 4.7 MB
    assert peak < 2 * 2**20


def test_batched_reads_convert_equal_to_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = arange_volume((6, 7, 9), "uint16")
    zarr.create_array(tmp_path / "src.zarr", data=data, chunks=(2, 3, 2))
    monkeypatch.setattr(zarr_array, "READ_CHUNKS", 3)  # units of one 4^3 chunk meet 8 to 16
    result = convert(
        str(tmp_path / "src.zarr"), tmp_path / "o.zarr", chunks=4, memory_limit=6 * 4**3 * 2
    )
    assert result.complete
    assert result.units_total == 2 * 2 * 3
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "o.zarr" / "0")[:], data)


@pytest.mark.parametrize(
    ("box", "chunks", "most"),
    [
        (Box((0, 0, 0), (8, 8, 8)), (1, 1, 1), 16),
        (Box((1, 3, 2), (7, 8, 9)), (2, 3, 2), 5),
        (Box((5, 0), (6, 100)), (4, 7), 3),
        (Box((0, 0), (9, 9)), (4, 4), 1000),
    ],
)
def test_chunk_batches_cover_the_box_once_in_whole_chunks(
    box: Box, chunks: tuple[int, ...], most: int
) -> None:
    covered = np.zeros(box.stop, np.int32)
    parts = list(chunk_batches(box, chunks, most))
    for part in parts:
        covered[part.slices()] += 1
        inner = [
            (a // c, -(-b // c)) for a, b, c in zip(part.start, part.stop, chunks, strict=True)
        ]
        assert np.prod([b - a for a, b in inner]) <= most
        for a, b, c, lo, hi in zip(part.start, part.stop, chunks, box.start, box.stop, strict=True):
            assert a % c == 0 or a == lo  # parts start on the chunk grid or at the box
            assert b % c == 0 or b == hi
    assert (covered[box.slices()] == 1).all()
    assert covered.sum() == box.size
    met = [-(-b // c) - a // c for a, b, c in zip(box.start, box.stop, chunks, strict=True)]
    if np.prod(met) <= most:
        assert parts == [box]


# ----------------------------------------------------------------- patch sizes


@pytest.fixture
def small_tiff(tmp_path: Path) -> Path:
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, arange_volume((8, 16, 16), "uint16"))
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--size", "100000"],
            "--size 100000: one patch of the source takes 2000000000000000 bytes, more than "
            "half the memory limit (268435456 bytes) (give a smaller --size, or --memory-limit "
            "3814697266M or more)",
        ),
        (
            ["--size", "4", "--chunk-rows", "100000000000"],
            "--chunk-rows 100000000000: one chunk row of patches takes 15200000000000 bytes "
            "(100000000000 x 152), more than a quarter of the memory limit (268435456 bytes) "
            "(give a smaller --chunk-rows, or --memory-limit 57983399M or more)",
        ),
        (
            ["--size", "300", "--memory-limit", "32M"],
            "--size 300: one patch of the source takes 54000000 bytes, more than half the "
            "memory limit (33554432 bytes) (give a smaller --size, or --memory-limit 103M or "
            "more)",
        ),
    ],
)
def test_patch_sizes_beyond_memory_are_refused_before_the_target_exists(
    small_tiff: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "p.zarr"
    code, line = run("patches", str(small_tiff), str(out), *args, "-q")
    assert code == 2, line
    assert line == f"Error: {message}"
    assert not out.exists()
