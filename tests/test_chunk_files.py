"""Chunk files written and read by datatools are exactly what zarr-python stores and reads."""

from __future__ import annotations

import itertools
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numcodecs
import numpy as np
import pytest
import zarr

from datatools.geometry import Box, tile_box
from datatools.loaders.rows import as_rows
from datatools.sinks.chunk_files import ChunkFiles, chunk_reader, spread_order
from datatools.sinks.codecs import parse_codec
from tests.helpers import arange_volume


@pytest.mark.parametrize("atomic", [True, False])
@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("codec", ["zstd", "none"])
def test_write_and_read_match_zarr(
    tmp_path: Path, zarr_format: Literal[2, 3], codec: str, atomic: bool
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
    assert all(a != b for a, b in itertools.pairwise(folders))


READABLE = [
    (3, {"compressors": zarr.codecs.ZstdCodec(level=1)}),
    (3, {"compressors": zarr.codecs.GzipCodec()}),
    (3, {"compressors": zarr.codecs.BloscCodec(cname="lz4")}),
    (3, {"compressors": None}),
    (2, {"compressors": numcodecs.Zstd(level=1)}),
    (2, {"compressors": numcodecs.Blosc(cname="zstd")}),
    (2, {"compressors": None}),
]


@pytest.mark.parametrize(("zarr_format", "kwargs"), READABLE)
def test_chunk_reader_decodes_what_zarr_reads(
    tmp_path: Path, zarr_format: Literal[2, 3], kwargs: dict[str, Any]
) -> None:
    data = arange_volume((21, 3, 5), "int16")
    data[8:16] = 7  # a chunk of fill value: not stored
    arr = zarr.create_array(
        tmp_path / "a.zarr",
        shape=data.shape,
        chunks=(8, 4, 5),
        dtype=data.dtype,
        fill_value=7,
        zarr_format=zarr_format,
        **kwargs,
    )
    arr[:] = data
    files = chunk_reader(arr)
    assert files is not None
    assert files.read_chunk((1, 0, 0)) is None
    rows = pickle.loads(pickle.dumps(as_rows(arr)))
    np.testing.assert_array_equal(rows.take(np.arange(21)[::-1]), data[::-1])
    with ThreadPoolExecutor(2) as pool:
        np.testing.assert_array_equal(
            files.read(Box((5, 1, 0), (21, 3, 4)), pool), data[5:, 1:, :4]
        )


def test_chunk_reader_declines_what_it_cannot_decode(tmp_path: Path) -> None:
    data = arange_volume((16, 4), "uint16")
    arrays = {
        "sharded": zarr.create_array(
            tmp_path / "s.zarr", shape=data.shape, chunks=(4, 4), shards=(8, 4), dtype="uint16"
        ),
        "filters": zarr.create_array(
            tmp_path / "f.zarr",
            shape=data.shape,
            chunks=(4, 4),
            dtype="uint16",
            zarr_format=2,
            filters=[numcodecs.Delta(dtype="uint16")],
        ),
        "big-endian": zarr.create_array(
            tmp_path / "b.zarr", shape=data.shape, chunks=(4, 4), dtype=">u2", zarr_format=2
        ),
        "big-endian field": zarr.create_array(
            tmp_path / "bf.zarr",
            shape=data.shape,
            chunks=(4, 4),
            dtype=[("a", ">u2")],
            zarr_format=2,
        ),
        "memory": zarr.create_array(
            zarr.storage.MemoryStore(), shape=data.shape, chunks=(4, 4), dtype="uint16"
        ),
    }
    for name, arr in arrays.items():
        values = data.astype(arr.dtype) if arr.dtype.names is None else data.astype("<u2")
        if arr.dtype.names is not None:
            values = np.rec.fromarrays([values], dtype=arr.dtype)
        arr[:] = values
        assert chunk_reader(arr) is None, name
        np.testing.assert_array_equal(as_rows(arr).take(np.arange(16)), values)
    assert chunk_reader(data) is None


def test_chunk_files_read_a_0d_array(tmp_path: Path) -> None:
    arr = zarr.create_array(tmp_path / "s.zarr", shape=(), dtype="int32", fill_value=0)
    arr[()] = 7
    files = chunk_reader(arr)
    assert files is not None
    with ThreadPoolExecutor(1) as pool:
        assert files.read(Box((), ()), pool).tolist() == 7
