"""convert --levels: pyramid values, metadata, resume and job arrays."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import zarr
from ome_zarr_models.v04.image import Image as Image04
from ome_zarr_models.v05.image import Image as Image05

from datatools import ledger
from datatools.convert import convert
from datatools.downsample import downsample
from datatools.executor import TaskSlice
from datatools.sources import ArrayVolume
from tests.helpers import arange_volume, attrs_of, stored

SMALL = 6 * 2 * 8 * 8 * 8 * 2  # memory limit that forces many units with 8^3 chunks


def levels_of(path: Path) -> list[np.ndarray]:
    group = zarr.open_group(path, mode="r")
    attrs = attrs_of(group)
    ms = attrs["ome"]["multiscales"][0] if "ome" in attrs else (attrs["multiscales"][0])
    return [stored(group, d["path"]) for d in ms["datasets"]]


def expected_levels(
    data: np.ndarray, factors: Sequence[tuple[int, ...]], method: str
) -> list[np.ndarray]:
    out = [data]
    for f in factors:
        out.append(downsample(out[-1], f, method))
    return out


@pytest.mark.parametrize("method", ["mean", "median", "mode", "nearest", "max"])
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_levels_equal_repeated_downsampling(
    tmp_path: Path, method: str, zarr_format: Literal[2, 3]
) -> None:
    data = arange_volume((19, 37, 45), "uint16")
    out = tmp_path / "p.zarr"
    result = convert(
        ArrayVolume(data, voxel_size=(1, 1, 1), unit="um"),
        out,
        chunks=8,
        levels=3,
        downsample=method,
        zarr_format=zarr_format,
        memory_limit=SMALL,
        workers=2,
    )
    assert result.complete
    assert result.levels == 3
    assert result.units_total > 3
    got = levels_of(out)
    want = expected_levels(data, [(2, 2, 2), (2, 2, 2)], method)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    model = Image05 if zarr_format == 3 else Image04
    model.from_zarr(zarr.open_group(out, mode="r"))


def test_auto_levels_and_anisotropic_metadata(tmp_path: Path) -> None:
    data = arange_volume((10, 64, 64), "uint8")
    out = tmp_path / "a.zarr"
    convert(
        ArrayVolume(data, voxel_size=(40, 8, 8), unit="nm", translation=(100, 0, 0)),
        out,
        chunks=(8, 16, 16),
        levels="auto",
        memory_limit=SMALL,
    )
    ms = attrs_of(out)["ome"]["multiscales"][0]
    shapes = [zarr.open_array(out / d["path"], mode="r").shape for d in ms["datasets"]]
    assert shapes == [(10, 64, 64), (10, 32, 32), (10, 16, 16), (5, 8, 8)]
    scales = [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]]
    translations = [d["coordinateTransformations"][1]["translation"] for d in ms["datasets"]]
    assert scales == [[40, 8, 8], [40, 16, 16], [40, 32, 32], [80, 64, 64]]
    # centre of each merged group: translation + (F - 1) / 2 * voxel size of level 0
    assert translations == [[100, 0, 0], [100, 4, 4], [100, 12, 12], [120, 28, 28]]
    got = levels_of(out)
    want = expected_levels(data, [(1, 2, 2), (1, 2, 2), (2, 2, 2)], "mean")
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_nearest_keeps_translation(tmp_path: Path) -> None:
    out = tmp_path / "n.zarr"
    convert(
        ArrayVolume(arange_volume((8, 8, 8)), voxel_size=(1, 1, 1), unit="um"),
        out,
        chunks=4,
        levels=2,
        downsample="nearest",
    )
    ms = attrs_of(out)["ome"]["multiscales"][0]
    assert ms["datasets"][1]["coordinateTransformations"][1]["translation"] == [0, 0, 0]
    assert ms["datasets"][1]["coordinateTransformations"][0]["scale"] == [2, 2, 2]


def test_channels_are_not_merged(tmp_path: Path) -> None:
    data = arange_volume((2, 8, 12, 12), "uint16")
    out = tmp_path / "c.zarr"
    convert(ArrayVolume(data, voxel_size=(1, 1, 1)), out, chunks=4, levels=2)
    got = levels_of(out)
    assert got[1].shape == (2, 4, 6, 6)
    np.testing.assert_array_equal(got[1], downsample(data, (1, 2, 2, 2), "mean"))


def test_pyramid_resumes_after_interruption(tmp_path: Path) -> None:
    data = arange_volume((24, 32, 32), "uint16")
    out = tmp_path / "r.zarr"
    kwargs: dict[str, Any] = {"chunks": 8, "levels": 4, "memory_limit": SMALL, "workers": 1}
    result = convert(ArrayVolume(data), tmp_path / "fresh.zarr", **kwargs)
    total = result.units_total
    seen: list[int] = []

    def stop(index: int) -> None:
        seen.append(index)
        if len(seen) == total - 2:  # inside the level phase
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(ArrayVolume(data), out, on_unit_done=stop, **kwargs)
    assert not ledger.is_complete(out)
    resumed = convert(ArrayVolume(data), out, **kwargs)
    assert resumed.units_written == 2
    assert resumed.complete
    for g, w in zip(levels_of(out), levels_of(tmp_path / "fresh.zarr"), strict=True):
        np.testing.assert_array_equal(g, w)


def test_pyramid_with_tasks(tmp_path: Path) -> None:
    data = arange_volume((24, 32, 32), "uint16")
    kwargs: dict[str, Any] = {"chunks": 8, "levels": "auto", "memory_limit": SMALL}
    single = tmp_path / "single.zarr"
    convert(ArrayVolume(data), single, **kwargs)
    shared = tmp_path / "shared.zarr"
    results = [convert(ArrayVolume(data), shared, task=TaskSlice(i, 3), **kwargs) for i in range(3)]
    assert [r.complete for r in results] == [False, False, True]
    for g, w in zip(levels_of(shared), levels_of(single), strict=True):
        np.testing.assert_array_equal(g, w)


def test_ome_zarr_py_reads_registered_levels(tmp_path: Path) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    out = tmp_path / "o.zarr"
    convert(
        ArrayVolume(arange_volume((16, 16, 16)), voxel_size=(2, 1, 1), unit="um"),
        out,
        chunks=4,
        levels=3,
    )
    logging.getLogger("ome_zarr").setLevel(logging.ERROR)
    node = next(iter(Reader(parse_url(str(out)))()))
    assert [tuple(d.shape) for d in node.data] == [(16, 16, 16), (16, 8, 8), (8, 4, 4)]
    transforms = node.metadata["coordinateTransformations"]
    assert [t[0]["scale"] for t in transforms] == [[2, 1, 1], [2, 2, 2], [4, 4, 4]]
    assert [t[1]["translation"] for t in transforms] == [[0, 0, 0], [0, 0.5, 0.5], [1, 1.5, 1.5]]


def test_verify_reads_every_level(tmp_path: Path) -> None:
    from datatools.verify import verify

    out = tmp_path / "v.zarr"
    data = arange_volume((16, 16, 16))
    convert(ArrayVolume(data), out, chunks=4, levels=3)
    assert verify(out, against=None).ok
    chunk = next(p for p in (out / "2").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(b"garbage")
    result = verify(out)
    assert not result.ok
    assert result.problems[0].startswith("level 2 block")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_label_image_is_registered_with_its_image(
    tmp_path: Path, zarr_format: Literal[2, 3]
) -> None:
    from ome_zarr_models.v04.image_label import ImageLabel as ImageLabel04
    from ome_zarr_models.v05.image_label import ImageLabel as ImageLabel05

    image = arange_volume((12, 40, 40), "uint16")
    labels = (arange_volume((12, 40, 40), "uint32") // 97 + 100_000).astype("uint32")
    out = tmp_path / "img.zarr"
    convert(
        ArrayVolume(image, voxel_size=(40, 8, 8), unit="nm", translation=(5, 6, 7)),
        out,
        roi=None,
        chunks=8,
        levels="auto",
        zarr_format=zarr_format,
    )
    result = convert(ArrayVolume(labels), out, as_labels="cells", chunks=8, memory_limit=SMALL)
    assert result.complete
    label_path = out / "labels" / "cells"
    group = zarr.open_group(label_path, mode="r")
    attrs = attrs_of(group)
    ome = attrs["ome"] if zarr_format == 3 else attrs
    assert ome["image-label"]["source"]["image"] == "../../"
    image_ms = attrs_of(out)
    image_ms = (image_ms["ome"] if zarr_format == 3 else image_ms)["multiscales"][0]
    label_ms = ome["multiscales"][0]
    assert [d["coordinateTransformations"] for d in label_ms["datasets"]] == [
        d["coordinateTransformations"] for d in image_ms["datasets"]
    ]
    parent = attrs_of(out / "labels")
    assert (parent["ome"]["labels"] if zarr_format == 3 else parent["labels"]) == ["cells"]
    got = levels_of(label_path)
    assert got[0].dtype == np.uint32
    want = expected_levels(labels, [(1, 2, 2), (1, 2, 2), (2, 2, 2)][: len(got) - 1], "mode")
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    (ImageLabel05 if zarr_format == 3 else ImageLabel04).from_zarr(group)


def test_label_image_errors(tmp_path: Path) -> None:
    from datatools.errors import OptionError, TargetError

    labels = ArrayVolume(np.ones((4, 8, 8), "uint8"))
    with pytest.raises(TargetError, match="no OME-Zarr image here to attach labels to"):
        convert(labels, tmp_path / "missing.zarr", as_labels="cells")
    out = tmp_path / "img.zarr"
    convert(ArrayVolume(arange_volume((4, 8, 8))), out, chunks=4)
    with pytest.raises(OptionError, match="--downsample mean: label images take mode or nearest"):
        convert(labels, out, as_labels="cells", downsample="mean")
    with pytest.raises(OptionError, match="holds float32 data; label images need integers"):
        convert(ArrayVolume(np.ones((4, 8, 8), "float32")), out, as_labels="cells")
    with pytest.raises(OptionError, match=r"level shapes \[\(4, 8, 6\)\] differ"):
        convert(ArrayVolume(np.ones((4, 8, 6), "uint8")), out, as_labels="cells")
    with pytest.raises(OptionError, match="--as-labels a/b: use letters"):
        convert(labels, out, as_labels="a/b")
