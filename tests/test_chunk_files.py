"""Chunk files written and read by datatools are exactly what zarr-python stores and reads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import arange_volume

from datatools.chunk_files import ChunkFiles, spread_order
from datatools.codecs import parse_codec
from datatools.geometry import Box, tile_box


@pytest.mark.parametrize("atomic", [True, False])
@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("codec", ["zstd", "none"])
def test_write_and_read_match_zarr(
    tmp_path: Path, zarr_format: int, codec: str, atomic: bool
) -> None:
    data = arange_volume((9, 10, 11), "uint16")
    data[:4, :4, :4] = 0  # an all-zero chunk is not stored
    choice = parse_codec(codec)
    kwargs = (
        {"compressors": choice.zarr_compressors(data.dtype)}
        if zarr_format == 3
        else {
            "compressors": choice.encoder(data.dtype),
            "chunk_key_encoding": {"name": "v2", "separator": "/"},
        }
    )
    zarr.create_array(
        tmp_path / "a",
        shape=data.shape,
        chunks=(4, 4, 4),
        dtype=data.dtype,
        zarr_format=zarr_format,
        **kwargs,
    )
    files = ChunkFiles(tmp_path / "a", choice.encoder(data.dtype), atomic=atomic)
    for chunk in tile_box(Box.from_shape(data.shape), files.chunks):
        files.write(chunk, data[chunk.slices()])
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "a", mode="r")[:], data)
    assert not list((tmp_path / "a").rglob("*.tmp"))
    with ThreadPoolExecutor(2) as pool:
        for box in (
            Box.from_shape(data.shape),
            Box((1, 3, 5), (9, 7, 11)),
            Box((0, 0, 0), (2, 2, 2)),
        ):
            np.testing.assert_array_equal(files.read(box, pool), data[box.slices()])


def test_spread_order_puts_neighbours_in_different_folders() -> None:
    chunks = list(tile_box(Box.from_shape((8, 12, 12)), (4, 4, 4)))
    ordered = spread_order(chunks)
    assert sorted(ordered, key=lambda b: b.start) == chunks
    folders = [box.start[:-1] for box in ordered]  # the key c/z/y/x: one folder per (z, y)
    assert all(a != b for a, b in zip(folders, folders[1:]))
