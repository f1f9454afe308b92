"""Loaders: row sources and lazy views, ArrayDataset, ChunkShuffleSampler, VolumePatches."""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, cast

import h5py
import numpy as np
import pytest
import tifffile
import zarr
from torch.utils.data import DataLoader, Dataset

from datatools.augment import AddChannel, Compose, Flip
from datatools.errors import InputError, InputNotFoundError, OptionError
from datatools.geometry import Box
from datatools.loaders import (
    ArrayDataset,
    ChunkCache,
    ChunkShuffleSampler,
    ConcatSources,
    LazyView,
    VolumePatches,
    VolumePatchStream,
    as_rows,
)
from datatools.loaders.splits import SharedEpoch, resolve_ranks, share
from datatools.patches import extract_patches
from datatools.sources import ArrayVolume, open_volume
from datatools.writers import open_writer
from tests.helpers import arange_volume, child_array, stored


def write_rows(path: Path, n: int, *, chunk_rows: int = 8, codec: str | None = None) -> None:
    """A patches-like output: ``patches`` (n, 3, 4) int32 encoding the row in every value,
    ``origins`` (n, 2) = (row, -row)."""
    patches = np.arange(n * 12, dtype=np.int32).reshape(n, 3, 4)
    origins = np.stack([np.arange(n), -np.arange(n)], axis=1).astype(np.int64)
    arrays = {"patches": ((3, 4), "int32"), "origins": ((2,), "int64")}
    with open_writer(path, arrays, chunk_rows=chunk_rows, codec=codec) as writer:
        writer.append(patches=patches, origins=origins)


def torch_loader(dataset: ArrayDataset, **options: Any) -> DataLoader[Any]:
    """A torch ``DataLoader`` over ``dataset``: a map-style dataset by protocol (``__len__``,
    ``__getitem__``), not a subclass of the ``Dataset`` that DataLoader's annotation names."""
    return DataLoader(cast("Dataset[Any]", dataset), **options)


def row_of(image: np.ndarray) -> np.ndarray:
    """The row numbers encoded in images of ``write_rows`` (one per leading index)."""
    flat = np.asarray(image).reshape(-1, 12)
    assert np.array_equal(flat, flat[:, :1] + np.arange(12)), "rows mixed up"
    return flat[:, 0] // 12


# ---------------------------------------------------------------- row sources and views


def test_lazy_view_equals_indexed_array() -> None:
    base = arange_volume((20, 3, 2), "int32")
    index = np.random.default_rng(0).permutation(20)[:13]
    view = LazyView(base, index)
    assert view.shape == (13, 3, 2)
    assert np.array_equal(np.asarray(view), base[index])
    assert np.array_equal(view[4], base[index[4]])
    assert np.array_equal(view[2:9:3], base[index[2:9:3]])
    assert np.array_equal(view[[-1, 0, 0]], base[index[[-1, 0, 0]]])
    nested = LazyView(view, slice(None, None, -1))
    assert np.array_equal(np.asarray(nested), base[index][::-1])


def test_concat_sources_equal_concatenation_over_zarr_and_hdf5(tmp_path: Path) -> None:
    a = arange_volume((10, 4), "uint16")
    b = arange_volume((7, 4), "uint16") + 1000
    c = arange_volume((5, 4), "uint16") + 2000
    za = zarr.create_array(tmp_path / "a.zarr", shape=a.shape, chunks=(3, 4), dtype=a.dtype)
    za[:] = a
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f.create_dataset("b", data=b, chunks=(2, 4))
    with h5py.File(tmp_path / "b.h5", "r") as f:
        joined = ConcatSources([za, f["b"], c])
        expected = np.concatenate([a, b, c])
        assert len(joined) == 22
        assert np.array_equal(np.asarray(joined), expected)
        rows = np.asarray([21, 0, 12, 9, 10, 16, 17, 3])
        assert np.array_equal(joined[rows], expected[rows])
        shuffled = LazyView(joined, np.random.default_rng(1).permutation(22))
        assert np.array_equal(np.asarray(shuffled), expected[shuffled.index])
        restored = pickle.loads(pickle.dumps(shuffled))  # HDF5 reopens by path
        assert np.array_equal(np.asarray(restored), expected[shuffled.index])
        ids = joined.chunk_ids()
        assert ids.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] + [4, 4, 5, 5, 6, 6, 7] + list(
            range(8, 13)
        )


def test_chunk_cache_decodes_each_chunk_once_in_chunk_order(tmp_path: Path) -> None:
    data = arange_volume((40, 5), "int64")
    arr = zarr.create_array(tmp_path / "x.zarr", shape=data.shape, chunks=(8, 5), dtype="int64")
    arr[:] = data
    rows = as_rows(arr)
    cache = ChunkCache(2)
    for start in range(0, 40, 3):
        got = rows.take(np.arange(start, min(start + 3, 40)), cache)
        assert np.array_equal(got, data[start : start + 3])
    assert cache.misses == 5
    cold = ChunkCache(2)
    rows.take(np.asarray([0, 39, 1, 38, 2, 37]), cold)
    assert cold.misses == 2  # one gather per chunk within a call


def test_view_and_index_errors() -> None:
    base = np.zeros((4, 2))
    with pytest.raises(IndexError, match=r"^row 4 is out of range for 4 rows$"):
        LazyView(base, [0, 4])
    with pytest.raises(IndexError, match=r"^row -5 is out of range for 4 rows$"):
        as_rows(base)[-5]
    with pytest.raises(IndexError, match=r"bool index of shape \(3,\) for 4 rows"):
        as_rows(base)[np.ones(3, dtype=bool)]
    with pytest.raises(InputError, match=r"array 1 has rows of \(3,\) float64, array 0 of \(2,\)"):
        ConcatSources([base, np.zeros((2, 3))])
    with pytest.raises(InputError, match=r"^ConcatSources: no arrays given"):
        ConcatSources([])
    with pytest.raises(InputError, match=r"<array>: list is not an array"):
        as_rows([1, 2])


# ---------------------------------------------------------------- ArrayDataset


def test_array_dataset_reads_patches_output_rows(tmp_path: Path) -> None:
    write_rows(tmp_path / "p.zarr", 30)
    ds = ArrayDataset(tmp_path / "p.zarr")
    assert len(ds) == 30
    assert ds.keys == ("origin", "image") or ds.keys == ("image", "origin")
    item = ds[7]
    assert row_of(item["image"]).tolist() == [7]
    assert item["origin"].tolist() == [7, -7]
    batch = ds[np.asarray([29, 3, 3, 15])]
    assert row_of(batch["image"]).tolist() == [29, 3, 3, 15]
    assert batch["origin"][:, 0].tolist() == [29, 3, 3, 15]
    assert ds.chunk_ids().tolist() == (np.arange(30) // 8).tolist()


def test_array_dataset_reads_per_class_output_with_class(tmp_path: Path) -> None:
    volume = arange_volume((1, 8, 8), "uint16")
    labels = np.zeros((1, 8, 8), np.uint8)
    labels[:, 4:, :] = 2
    extract_patches(
        ArrayVolume(volume), tmp_path / "pc.zarr", size=(2, 2), labels=ArrayVolume(labels),
        per_class=True,
    )  # fmt: skip
    ds = ArrayDataset(tmp_path / "pc.zarr")
    assert set(ds.keys) == {"image", "label", "origin", "class"}
    every = ds[np.arange(len(ds))]
    assert len(ds) == 16
    assert Counter(every["class"].tolist()) == {0: 8, 2: 8}
    for img, lab, origin, cls in zip(
        every["image"], every["label"], every["origin"], every["class"], strict=True
    ):
        z, y, x = origin
        assert np.array_equal(img, volume[z, y : y + 2, x : x + 2])
        assert np.all(lab == cls)


def test_array_dataset_over_hdf5_and_mapping(tmp_path: Path) -> None:
    write_rows(tmp_path / "p.h5", 20, chunk_rows=4)
    ds = ArrayDataset(tmp_path / "p.h5")
    assert row_of(ds[np.arange(20)]["image"]).tolist() == list(range(20))
    images = np.arange(6 * 12, dtype=np.int32).reshape(6, 3, 4)
    ids = np.asarray([9, 8, 7])
    mapping = ArrayDataset({"images": LazyView(images, [5, 4, 3]), "instance_ids": ids})
    assert mapping.keys == ("image", "instance_id")
    assert row_of(mapping[0]["image"]).tolist() == [5]
    assert mapping[np.asarray([2, 0])]["instance_id"].tolist() == [7, 9]


def test_array_dataset_transform_draws_depend_on_seed_epoch_row(tmp_path: Path) -> None:
    write_rows(tmp_path / "p.zarr", 16)

    def dataset() -> ArrayDataset:
        return ArrayDataset(
            tmp_path / "p.zarr", transform=Compose([AddChannel(), Flip("yx")]), seed=3
        )

    def flips(ds: ArrayDataset) -> list[bool]:
        images = ds[np.arange(16)]["image"]
        plain = np.arange(16 * 12, dtype=np.int32).reshape(16, 1, 3, 4)
        return [not np.array_equal(a, b) for a, b in zip(images, plain, strict=True)]

    a, b = dataset(), dataset()
    assert flips(a) == flips(b)
    assert any(flips(a))
    assert not all(flips(a))
    single = [not np.array_equal(a[i]["image"], a[np.asarray([i])]["image"][0]) for i in range(16)]
    assert not any(single)  # a row gets the same draw alone or in a batch
    first = flips(a)
    a.set_epoch(1)
    assert flips(a) != first


def test_array_dataset_getitems_gives_rows_of_a_batch(tmp_path: Path) -> None:
    write_rows(tmp_path / "p.zarr", 20)
    ds = ArrayDataset(tmp_path / "p.zarr")
    items = ds.__getitems__([17, 2, 9])
    assert [row_of(i["image"]).tolist() for i in items] == [[17], [2], [9]]
    assert [item["origin"].tolist() for item in items] == [[17, -17], [2, -2], [9, -9]]


def test_array_dataset_corrupt_chunk_names_array(tmp_path: Path) -> None:
    write_rows(tmp_path / "p.zarr", 16, chunk_rows=8)
    (tmp_path / "p.zarr" / "patches" / "c" / "1" / "0" / "0").write_bytes(b"garbage")
    ds = ArrayDataset(tmp_path / "p.zarr")
    assert row_of(ds[3]["image"]).tolist() == [3]
    with pytest.raises(InputError, match=r"p.zarr/patches: cannot read rows 8:16 \(Zstd"):
        ds[9]


def test_array_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match=r"missing.zarr: no such file or directory$"):
        ArrayDataset(tmp_path / "missing.zarr")
    write_rows(tmp_path / "p.zarr", 10)
    with pytest.raises(OptionError, match=r"^arrays: .*p.zarr has no array 'labels' \(it holds"):
        ArrayDataset(tmp_path / "p.zarr", arrays=["labels"])
    with pytest.raises(InputError, match=r"^<arrays>: arrays do not share axis 0 \(a: 3 rows, b"):
        ArrayDataset({"a": np.zeros((3, 1)), "b": np.zeros((2, 1))})
    with pytest.raises(InputError, match=r"'patches' and 'images' both make item key 'image'"):
        ArrayDataset({"patches": np.zeros((2, 1)), "images": np.zeros((2, 1))})
    with pytest.raises(OptionError, match=r"^cache_chunks -1: must be >= 0$"):
        ArrayDataset(tmp_path / "p.zarr", cache_chunks=-1)
    arrays = {"patches": ((3, 4), "int32")}
    writer = open_writer(tmp_path / "open.zarr", arrays, chunk_rows=4)
    writer.append(patches=np.zeros((8, 3, 4), np.int32))
    with pytest.raises(InputError, match=r"open.zarr: unfinished datatools output \(rerun"):
        ArrayDataset(tmp_path / "open.zarr")
    writer.close()
    assert len(ArrayDataset(tmp_path / "open.zarr")) == 8
    zarr.create_group(tmp_path / "empty.zarr")
    with pytest.raises(InputError, match=r"empty.zarr: holds no arrays"):
        ArrayDataset(tmp_path / "empty.zarr")


# ---------------------------------------------------------------- ChunkShuffleSampler


def test_sampler_epoch_reads_each_chunk_once(tmp_path: Path) -> None:
    write_rows(tmp_path / "p.zarr", 100, chunk_rows=8)
    ds = ArrayDataset(tmp_path / "p.zarr", cache_chunks=3)  # a batch spans <= 3 chunks
    ds[0]
    assert pickle.loads(pickle.dumps(ds)).cache_info()["image"] == (0, 0)
    ds.caches["image"].clear()
    sampler = ChunkShuffleSampler(ds, batch_size=16, batched=True, seed=5)
    seen = [row_of(ds[rows]["image"]) for rows in sampler]
    assert sorted(np.concatenate(seen).tolist()) == list(range(100))
    assert ds.cache_info()["image"][1] == 13  # ceil(100 / 8) chunks decoded
    naive = ArrayDataset(tmp_path / "p.zarr", cache_chunks=2)
    for rows in np.random.default_rng(0).permutation(100).reshape(-1, 4):
        naive[rows]
    assert naive.cache_info()["image"][1] > 50


def test_sampler_set_epoch_is_deterministic() -> None:
    rows = np.zeros((64, 1))
    a = ChunkShuffleSampler(LazyView(rows, np.arange(64)), seed=7)
    b = ChunkShuffleSampler(LazyView(rows, np.arange(64)), seed=7)
    first = list(a)
    assert first == list(b)
    assert sorted(first) == list(range(64))
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b) != first
    a.set_epoch(0)
    assert list(a) == first
    assert list(ChunkShuffleSampler(rows, seed=8)) != first
    assert list(ChunkShuffleSampler(rows, shuffle=False)) == list(range(64))


def test_sampler_keeps_chunk_rows_together(tmp_path: Path) -> None:
    write_rows(tmp_path / "p.zarr", 96, chunk_rows=8)
    sampler = ChunkShuffleSampler(ArrayDataset(tmp_path / "p.zarr"), seed=1)
    chunks = np.asarray(list(sampler)) // 8
    runs = 1 + np.count_nonzero(chunks[1:] != chunks[:-1])
    assert runs == 12
    assert sorted(chunks[::8].tolist()) != chunks[::8].tolist()  # chunk order shuffled


@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_splits_ranks_and_workers(drop_last: bool) -> None:
    chunk_ids = np.arange(203) // 10
    source = type("S", (), {"chunk_ids": lambda self: chunk_ids})()
    batches: dict[tuple[int, int], list[np.ndarray]] = {}
    for rank in range(2):
        s = ChunkShuffleSampler(
            source, batch_size=8, batched=True, num_workers=2, rank=rank, world_size=2,
            seed=4, drop_last=drop_last,
        )  # fmt: skip
        got = list(s)
        assert len(got) == len(s)
        for k, batch in enumerate(got):  # what a DataLoader hands to worker k % 2
            batches.setdefault((rank, k % 2), []).append(batch)
    every = np.concatenate([np.concatenate(b) for b in batches.values()])
    if drop_last:
        assert len(every) == len(set(every.tolist())) == 2 * (101 // 8) * 8
    else:
        assert sorted(every.tolist()) == list(range(203))
    owners: dict[int, set[tuple[int, int]]] = {}
    for who, parts in batches.items():
        for c in set((np.concatenate(parts) // 10).tolist()):
            owners.setdefault(c, set()).add(who)
    shared = [c for c, who in owners.items() if len(who) > 1]
    assert len(shared) <= 3  # only chunks where the four parts meet


def test_ranks_from_torch_distributed(monkeypatch: pytest.MonkeyPatch) -> None:
    class Group:
        def is_available(self) -> bool:
            return True

        def is_initialized(self) -> bool:
            return True

        def get_rank(self) -> int:
            return 3

        def get_world_size(self) -> int:
            return 4

    monkeypatch.setitem(sys.modules, "torch.distributed", Group())
    assert resolve_ranks(None, None) == (3, 4)
    sampler = ChunkShuffleSampler(np.zeros((40, 1)))
    assert (sampler.rank, sampler.world_size, len(sampler)) == (3, 4, 10)
    assert resolve_ranks(0, 1) == (0, 1)


def test_numpy_parts_import_without_torch() -> None:
    code = (
        "import sys, datatools.loaders, datatools.augment\n"
        "from datatools.loaders import ArrayDataset, ChunkShuffleSampler, VolumePatchStream\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sampler_options_errors() -> None:
    rows = np.zeros((4, 1))
    with pytest.raises(OptionError, match=r"^num_workers 2: needs batch_size"):
        ChunkShuffleSampler(rows, num_workers=2)
    with pytest.raises(OptionError, match=r"^batched=True: needs batch_size"):
        ChunkShuffleSampler(rows, batched=True)
    with pytest.raises(OptionError, match=r"^rank 2: must be in \[0, 2\) for world_size 2$"):
        ChunkShuffleSampler(rows, rank=2, world_size=2)
    with pytest.raises(OptionError, match=r"^rank 0, world_size None: give both"):
        resolve_ranks(0, None)
    with pytest.raises(OptionError, match=r"^seed -1: must be >= 0$"):
        ChunkShuffleSampler(rows, seed=-1)
    assert [len(share(10, i, 3)) for i in range(3)] == [4, 3, 3]


def test_dataloader_two_workers_two_ranks_every_row_once(tmp_path: Path) -> None:
    write_rows(tmp_path / "p.zarr", 90, chunk_rows=6)
    ds = ArrayDataset(tmp_path / "p.zarr")
    seen: list[int] = []
    for rank in range(2):
        sampler = ChunkShuffleSampler(
            ds, batch_size=8, batched=True, num_workers=2, rank=rank, world_size=2, seed=2
        )
        loader = torch_loader(ds, sampler=sampler, batch_size=None, num_workers=2)
        for batch in loader:
            seen += row_of(batch["image"].numpy()).tolist()
            assert np.array_equal(batch["origin"][:, 0].numpy(), row_of(batch["image"].numpy()))
    assert sorted(seen) == list(range(90))
    rows_mode = ChunkShuffleSampler(ds, batch_size=8, num_workers=2, seed=2)
    loader = torch_loader(ds, sampler=rows_mode, batch_size=8, num_workers=2)
    assert sorted(np.concatenate([row_of(b["image"].numpy()) for b in loader]).tolist()) == list(
        range(90)
    )


def test_dataloader_same_seed_same_batches(tmp_path: Path) -> None:
    write_rows(tmp_path / "p.zarr", 40, chunk_rows=5)
    ds = ArrayDataset(tmp_path / "p.zarr")

    def epoch(seed: int, e: int) -> list[list[int]]:
        sampler = ChunkShuffleSampler(ds, batch_size=8, batched=True, num_workers=2, seed=seed)
        sampler.set_epoch(e)
        loader = torch_loader(ds, sampler=sampler, batch_size=None, num_workers=2)
        return [row_of(b["image"].numpy()).tolist() for b in loader]

    assert epoch(1, 0) == epoch(1, 0)
    assert epoch(1, 1) != epoch(1, 0)
    assert epoch(2, 0) != epoch(1, 0)


# ---------------------------------------------------------------- VolumePatches


@pytest.mark.parametrize("workers", [1, 2])
def test_volume_patches_grid_equals_datatools_patches(tmp_path: Path, workers: int) -> None:
    volume = arange_volume((5, 20, 30), "uint16")
    labels = (arange_volume((5, 20, 30), "uint16") % 7).astype(np.uint8)
    mask = np.zeros((5, 20, 30), np.uint8)
    mask[:, 3:17, 5:] = 1
    options: dict[str, Any] = {"size": (3, 6, 8), "edge": "reflect", "min_fraction": 0.5}
    extract_patches(
        ArrayVolume(volume), tmp_path / "p.zarr", labels=ArrayVolume(labels),
        mask=ArrayVolume(mask), memory_limit=8000 * (workers + 1), workers=workers, **options,
    )  # fmt: skip
    written = zarr.open_group(tmp_path / "p.zarr", mode="r")
    stream = VolumePatchStream(
        ArrayVolume(volume), labels=ArrayVolume(labels), mask=ArrayVolume(mask),
        shuffle=False, memory_limit=8000, **options,
    )  # fmt: skip
    assert stream.plan(0).slabs.max() > 0  # several slabs
    items = list(stream)
    assert len(items) == len(stream) == child_array(written, "patches").shape[0] > 10
    origins = np.stack([i["origin"] for i in items])
    order = np.lexsort(origins.T[::-1])
    expected = np.lexsort(stored(written, "origins").T[::-1])
    assert np.array_equal(origins[order], stored(written, "origins")[expected])
    patches = np.stack([i["image"] for i in items])
    assert np.array_equal(patches[order], stored(written, "patches")[expected])
    labels_cut = np.stack([i["label"] for i in items])
    assert np.array_equal(labels_cut[order], stored(written, "labels")[expected])
    # the command's slabs are memory_limit / (2 x (workers + 1)), the loader's memory_limit / 2:
    # the same slabs here, so the same row order
    assert np.array_equal(origins, stored(written, "origins"))


def test_volume_patches_zarr_source_by_path_with_dataloader(tmp_path: Path) -> None:
    volume = arange_volume((24, 26), "int32")
    zarr.create_array(tmp_path / "v.zarr", data=volume, chunks=(8, 8))
    extract_patches(tmp_path / "v.zarr", tmp_path / "p.zarr", size=6, edge="constant")
    written = zarr.open_group(tmp_path / "p.zarr", mode="r")
    pairs = zip(stored(written, "origins"), stored(written, "patches"), strict=True)
    expected = {tuple(o): p for o, p in pairs}
    dataset = VolumePatches(str(tmp_path / "v.zarr"), 6, edge="constant", seed=1)
    got: dict[tuple[int, ...], np.ndarray] = {}
    for batch in DataLoader(dataset, batch_size=4, num_workers=2):
        for o, p in zip(batch["origin"].numpy(), batch["image"].numpy(), strict=True):
            assert tuple(o) not in got
            got[tuple(o)] = p
    assert got.keys() == expected.keys()
    assert all(np.array_equal(got[o], expected[o]) for o in got)


@pytest.mark.parametrize("sampler", ["grid", "random", "balanced"])
def test_volume_patches_two_workers_two_ranks_each_position_once(sampler: str) -> None:
    volume = ArrayVolume(arange_volume((30, 40), "int32"))
    labels = ArrayVolume((arange_volume((30, 40), "int32") // 400).astype(np.uint8))
    extra: dict[str, Any] = {"count": 50} if sampler != "grid" else {}
    if sampler == "balanced":
        extra["labels"] = labels

    def stream(rank: int) -> VolumePatchStream:
        return VolumePatchStream(
            volume, 4, sampler=sampler, seed=9, rank=rank, world_size=2, memory_limit=4096,
            **extra,
        )  # fmt: skip

    for epoch in range(2):
        plan_rows = stream(0).plan(epoch)
        seen = []
        for rank in range(2):
            s = stream(rank)
            s.set_epoch(epoch)
            for worker in range(2):
                seen += [tuple(i["origin"]) for i in s.iter_part(worker, 2)]
        planned = [tuple(o) for o in plan_rows.origins]
        assert sorted(seen) == sorted(planned)
        if sampler != "balanced":
            assert len(set(seen)) == len(seen)


def test_volume_patches_grid_stride() -> None:
    volume = ArrayVolume(arange_volume((30, 30), "uint8"))
    origins = {tuple(i["origin"]) for i in VolumePatchStream(volume, 5, stride=3)}
    assert origins == {(y, x) for y in range(0, 30, 3) for x in range(0, 30, 3)}
    two = VolumePatchStream(volume, (5, 5), stride=(10, 3), shuffle=False)
    assert [tuple(i["origin"]) for i in two][:3] == [(0, 0), (0, 3), (0, 6)]
    assert len(two) == 30


def test_volume_patches_drop_last_gives_equal_ranks() -> None:
    volume = ArrayVolume(arange_volume((25, 15), "uint8"))
    sizes = []
    for rank in range(2):
        s = VolumePatchStream(volume, 5, rank=rank, world_size=2, drop_last=True, seed=1)
        sizes.append(len(list(s)))
        assert len(s) == sizes[-1]
    assert sizes == [7, 7]  # 15 patches, one left out


def test_volume_patches_set_epoch_and_seed() -> None:
    volume = ArrayVolume(arange_volume((30, 30), "uint16"))

    def origins(sampler: str, seed: int, epoch: int) -> list[tuple[int, ...]]:
        s = VolumePatchStream(volume, 5, sampler=sampler, count=None if sampler == "grid" else 12,
                              seed=seed)  # fmt: skip
        s.set_epoch(epoch)
        return [tuple(i["origin"]) for i in s]

    for sampler in ("grid", "random"):
        assert origins(sampler, 1, 0) == origins(sampler, 1, 0)
        assert origins(sampler, 1, 1) != origins(sampler, 1, 0)
        assert origins(sampler, 2, 0) != origins(sampler, 1, 0)
    assert sorted(origins("grid", 1, 1)) == sorted(origins("grid", 1, 0))
    assert set(origins("random", 1, 1)) != set(origins("random", 1, 0))


def test_volume_patches_balanced_draws_classes_uniformly() -> None:
    labels = np.zeros((60, 60), np.uint8)
    labels[:3, :3] = 1  # a rare class: 9 voxels
    labels[30:, :] = 2
    s = VolumePatchStream(
        ArrayVolume(arange_volume((60, 60), "uint16")), 4, labels=ArrayVolume(labels),
        sampler="balanced", count=600, seed=0,
    )  # fmt: skip
    assert s.class_counts() == {0: 1791, 1: 9, 2: 1800}
    items = list(s)
    counts = Counter(int(i["class"]) for i in items)
    assert set(counts) == {0, 1, 2}
    assert all(150 < n < 250 for n in counts.values())
    for item in items:
        centre = item["label"][2, 2]
        assert centre == item["class"]
    only = VolumePatchStream(
        ArrayVolume(arange_volume((60, 60), "uint16")), 4, labels=ArrayVolume(labels),
        sampler="balanced", count=20, classes=[1, 2],
    )  # fmt: skip
    assert {int(i["class"]) for i in only} == {1, 2}


def test_volume_patches_errors() -> None:
    volume = ArrayVolume(arange_volume((10, 10), "uint8"))
    with pytest.raises(OptionError, match=r"^sampler poisson: unknown sampler \(choose grid, "):
        VolumePatchStream(volume, 4, sampler="poisson")
    with pytest.raises(OptionError, match=r"^sampler balanced: needs labels"):
        VolumePatchStream(volume, 4, sampler="balanced", count=3)
    with pytest.raises(OptionError, match=r"^sampler balanced: needs count"):
        VolumePatchStream(volume, 4, sampler="balanced", labels=volume)
    with pytest.raises(OptionError, match=r"^classes: only with sampler balanced$"):
        VolumePatchStream(volume, 4, classes=[1])
    with pytest.raises(OptionError, match=r"^--sampler random: needs --count N"):
        VolumePatchStream(volume, 4, sampler="random")
    with pytest.raises(OptionError, match=r"^--size 0: every value must be > 0$"):
        VolumePatchStream(volume, 0)
    with pytest.raises(InputError, match=r"none of the classes \[200\] occurs in the labels"):
        VolumePatchStream(volume, 4, labels=volume, sampler="balanced", count=2, classes=[200])
    with pytest.raises(InputNotFoundError, match=r"nowhere.zarr: no such file or directory"):
        VolumePatchStream("nowhere.zarr", 4)


def _shift_by_draw(item: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """A transform whose draw shows in the output (module level: workers pickle it)."""
    return {**item, "image": item["image"] + int(rng.integers(1, 1000))}


def test_set_epoch_reaches_persistent_workers(tmp_path: Path) -> None:
    write_rows(tmp_path / "p.zarr", 16, chunk_rows=4)
    ds = ArrayDataset(tmp_path / "p.zarr", transform=_shift_by_draw)
    sampler = ChunkShuffleSampler(ds, batch_size=4, batched=True, num_workers=2, shuffle=False)
    loader = torch_loader(
        ds, sampler=sampler, batch_size=None, num_workers=2, persistent_workers=True
    )
    patches = VolumePatches(ArrayVolume(arange_volume((30, 30), "uint16")), 5,
                            sampler="random", count=8, seed=0)  # fmt: skip
    stream = DataLoader(patches, batch_size=None, num_workers=2, persistent_workers=True)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        patches.set_epoch(epoch)
        got = np.concatenate([b["image"].numpy() for b in loader])
        np.testing.assert_array_equal(got, ds[sampler.order()]["image"])  # this epoch's draws
        origins = sorted(tuple(item["origin"].tolist()) for item in stream)
        assert origins == sorted(map(tuple, patches.plan(epoch).origins.tolist()))
    assert ds.epoch == patches.epoch == 2
    copy = pickle.loads(pickle.dumps(ds))  # outside a process start: a plain number
    copy.set_epoch(7)
    assert (copy.epoch, ds.epoch) == (7, 2)


def test_volume_patches_tiff_slices_in_forked_workers(tmp_path: Path) -> None:
    data = arange_volume((6, 20, 20), "uint16")
    (tmp_path / "s").mkdir()
    for z, plane in enumerate(data):
        tifffile.imwrite(tmp_path / "s" / f"slice_{z}.tif", plane)
    dataset = VolumePatches(str(tmp_path / "s"), (3, 10, 10))
    with open_volume(str(tmp_path / "s")) as volume:  # the parent's slice-reading threads exist
        np.testing.assert_array_equal(volume.read(Box((0, 0, 0), (6, 20, 20))), data)
    got = {}
    for batch in DataLoader(dataset, batch_size=2, num_workers=2):  # forked: threads of their own
        for o, p in zip(batch["origin"].numpy(), batch["image"].numpy(), strict=True):
            got[tuple(o)] = p
    assert len(got) == len(dataset.plan(0)) == 8
    assert all(np.array_equal(p, data[o[0] : o[0] + 3, o[1] : o[1] + 10, o[2] : o[2] + 10])
               for o, p in got.items())  # fmt: skip


def _set_epoch_in_child(epoch: SharedEpoch, queue: Any) -> None:
    queue.put(epoch.value)
    epoch.value = 5
    queue.put(epoch.value)


def test_shared_epoch_is_not_shared_with_other_processes() -> None:
    import multiprocessing

    epoch = SharedEpoch(2)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_set_epoch_in_child, args=(epoch, queue))  # a DDP rank, say
    child.start()
    child.join(timeout=30)
    assert (queue.get(timeout=5), queue.get(timeout=5)) == (2, 5)
    assert epoch.value == 2  # the child took its own copy
    assert pickle.loads(pickle.dumps(epoch)).value == 2


def test_array_dataset_over_one_lazy_view_or_concatenation() -> None:
    a = np.arange(5 * 3, dtype=np.int32).reshape(5, 3)
    b = a + 100
    joined = ArrayDataset(ConcatSources([a, b]))
    assert len(joined) == 10
    np.testing.assert_array_equal(joined[7]["image"], b[2])
    view = ArrayDataset(LazyView(a, np.array([4, 0])))
    np.testing.assert_array_equal(view[0]["image"], a[4])
