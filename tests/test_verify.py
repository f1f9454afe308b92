"""``verify``: the source opened as convert opened it, unreadable chunks reported cleanly, and
missing chunk files (all fill value) accepted."""

from __future__ import annotations

import asyncio
import gc
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from click.testing import CliRunner
from zarr.core.sync import cleanup_resources, sync

from datatools.cli.main import cli
from datatools.convert import convert
from datatools.errors import InputError
from datatools.sources import ArrayVolume, OpenOptions
from datatools.verify import verify
from tests.helpers import arange_volume

ZSTD_ERROR = "Zstd decompression error: invalid input data"


@pytest.fixture
def level_1_copy(tmp_path: Path) -> tuple[Path, Path]:
    """An OME-Zarr image of two levels, and a convert output of its level 1."""
    image = tmp_path / "lv.zarr"
    convert(ArrayVolume(arange_volume((16, 16, 16))), image, chunks=4, levels=2)
    out = tmp_path / "r1.zarr"
    convert(str(image), out, chunks=4, open_options=OpenOptions(level=1))
    return image, out


@pytest.mark.parametrize("options", [None, OpenOptions(), OpenOptions(series=None)])
def test_verify_against_opens_the_recorded_source_level(
    level_1_copy: tuple[Path, Path], options: OpenOptions | None
) -> None:
    image, out = level_1_copy
    result = verify(out, against=str(image), open_options=options)
    assert result.problems == []
    assert result.compared_voxels == 8 * 8 * 8


def test_verify_against_an_explicit_level_wins(level_1_copy: tuple[Path, Path]) -> None:
    image, out = level_1_copy
    result = verify(out, against=str(image), open_options=OpenOptions(level=0))
    assert result.first_mismatch is not None
    assert result.problems == [
        f"differs from {image} in block 0:8,0:8,0:8 (first at voxel (0, 0, 0): 136 != 0); "
        "--level 0, but the output was converted from level 1"
    ]


def test_cli_verify_against_a_source_level_output(level_1_copy: tuple[Path, Path]) -> None:
    image, out = level_1_copy
    result = CliRunner().invoke(cli, ["verify", str(out), "--against", str(image)])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"{out}: OK (complete, metadata valid, all chunks readable, 512 voxels equal the source)\n"
    )


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_verify_against_opens_the_recorded_series(tmp_path: Path, suffix: str) -> None:
    source = tmp_path / "two.tif"
    data = arange_volume((8, 16, 16), "uint8")
    with tifffile.TiffWriter(source) as writer:
        writer.write(data, photometric="minisblack")
        writer.write(data + 1, photometric="minisblack")
    out = tmp_path / f"s1{suffix}"
    convert(str(source), out, chunks=4, open_options=OpenOptions(series=1))
    assert verify(out, against=str(source)).problems == []
    explicit = verify(out, against=str(source), open_options=OpenOptions(series=0))
    assert explicit.problems == [
        f"differs from {source} in block 0:8,0:16,0:16 (first at voxel (0, 0, 0): 1 != 0); "
        "--series 0, but the output was converted from series 1"
    ]


def _truncated(out: Path, *keys: str) -> None:
    """Cut the chunk files ``keys`` of level 0 to half, as a killed writer leaves them."""
    for key in keys:
        chunk = out / "0" / "c" / key
        chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])


@pytest.fixture
def small_chunks(tmp_path: Path) -> Path:
    """A (8, 16, 16) uint8 output of 256 chunks of (2, 2, 2), none all zero."""
    out = tmp_path / "o.zarr"
    convert(ArrayVolume(arange_volume((8, 16, 16), "uint8") | 1), out, chunks=2)
    assert len(list((out / "0" / "c").rglob("*"))) == 4 + 4 * 8 + 256  # folders and chunks
    return out


async def _other_tasks() -> int:
    return len(asyncio.all_tasks()) - 1


def test_verify_of_a_torn_output_leaves_no_reads_for_exit_to_destroy(
    small_chunks: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    _truncated(small_chunks, "0/0/0")
    assert verify(small_chunks).problems == [
        f"level 0 block 0:8,0:16,0:16 is unreadable ({ZSTD_ERROR})"
    ]
    # zarr-python raised at the first bad chunk; had the reads of the other 255 been left
    # running, closing its event loop (as it does at exit) would destroy them noisily
    assert sync(_other_tasks()) == 0
    cleanup_resources()  # the next zarr call starts a new loop
    gc.collect()
    logged = caplog.text + capfd.readouterr().err
    assert "Task was destroyed" not in logged
    assert "Event loop is closed" not in logged


def test_verify_counts_the_unreadable_blocks_of_a_level(small_chunks: Path) -> None:
    _truncated(small_chunks, "0/0/0", "1/3/3", "3/7/7")
    result = verify(small_chunks, block_bytes=2 * 16 * 16)  # 4 blocks of 64 chunks
    assert result.problems == [
        f"level 0 block 0:2,0:16,0:16 is unreadable ({ZSTD_ERROR}); so are 2 more of its 4 blocks"
    ]
    assert sync(_other_tasks()) == 0


def test_cli_verify_of_a_torn_output(small_chunks: Path) -> None:
    _truncated(small_chunks, "2/5/5")
    result = CliRunner().invoke(cli, ["verify", str(small_chunks)])
    assert result.exit_code == 1, result.output
    assert result.stdout == (
        f"{small_chunks}: level 0 block 0:8,0:16,0:16 is unreadable ({ZSTD_ERROR})\n"
    )


@pytest.mark.parametrize("shards", [None, 4])
def test_convert_stores_no_zero_chunk_so_verify_accepts_missing_files(
    tmp_path: Path, shards: int | None
) -> None:
    data = arange_volume((8, 8, 8), "uint8") | 1
    data[:4] = 0  # the fill value
    out = tmp_path / "z.zarr"
    convert(ArrayVolume(data), out, chunks=2, shards=shards)
    files = sorted(p.relative_to(out / "0" / "c") for p in (out / "0" / "c").rglob("*"))
    stored = [f for f in files if (out / "0" / "c" / f).is_file()]
    grid = 4 if shards is None else 2
    assert len(stored) == grid**3 // 2  # only the chunks (or shards) of the upper half
    assert all(int(f.parts[0]) >= grid // 2 for f in stored)
    assert verify(out, against=None).ok


def test_verify_of_an_unfinished_hdf5_output_says_so(tmp_path: Path) -> None:
    out = tmp_path / "k.h5"
    (tmp_path / "k.h5.datatools-partial").write_bytes(b"")
    with pytest.raises(InputError, match=r"k\.h5: unfinished \(still k\.h5\.datatools-partial\)"):
        verify(out)


@pytest.mark.parametrize("method", ["mean", "mode"])
def test_verify_checks_each_level_against_the_level_above(tmp_path: Path, method: str) -> None:
    data = arange_volume((16, 24, 20), "uint16") % 7
    out = tmp_path / "p.zarr"
    convert(ArrayVolume(data), out, chunks=4, levels=3, downsample=method)
    assert verify(out).ok
    level2 = zarr.open_array(out / "2", mode="r+")
    right = int(np.asarray(level2[1, 2, 3]))
    level2[1, 2, 3] = 99
    assert verify(out).problems == [
        f"level 2 block 0:4,0:6,0:5 differs from the level above merged by {method} (first at "
        f"voxel (1, 2, 3): 99 != {right})"
    ]


def test_two_verifications_of_torn_outputs_at_once_both_finish(
    small_chunks: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.zarr"
    shutil.copytree(small_chunks, other)
    for out in (small_chunks, other):
        _truncated(out, "0/0/0", "3/7/7")
    with ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(verify, out, block_bytes=2 * 16 * 16) for out in (small_chunks, other)
        ]
        # each waits for zarr's reads after its failure, never for the other's wait
        results = [f.result(timeout=120) for f in futures]
    assert all(len(r.problems) == 1 for r in results)


def test_verify_against_another_path_than_the_recorded_source(tmp_path: Path) -> None:
    data = arange_volume((8, 16, 16), "uint16")
    image = tmp_path / "image.zarr"
    convert(ArrayVolume(data), image, chunks=4, levels=2)
    out = tmp_path / "level1.zarr"
    convert(str(image), out, chunks=4, open_options=OpenOptions(level=1))
    assert verify(out, against=str(image)).ok  # the recorded source: its recorded level
    assert verify(out, against=str(image / "1")).ok  # the level's own array, taken as it is
