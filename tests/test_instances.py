"""``datatools instances`` and the label statistics pass: known objects, exact crops under every
edge mode, masks and zeroing, filters, out-of-core equals in-memory, formats, resume, errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import EllipsisType
from typing import Any, cast

import h5py
import numpy as np
import pytest
import tifffile
import zarr
from click.testing import CliRunner
from zarr.core.metadata import ArrayV3Metadata

from datatools.cli.main import cli
from datatools.errors import InputError, OptionError, ResumeMismatchError, TargetError
from datatools.geometry import Box
from datatools.instances import crops as instance_crops
from datatools.instances import extract_instances
from datatools.instances.label_stats import LabelStats, label_stats, slab_shape
from datatools.patches import extract_patches
from datatools.sources import ArrayVolume
from datatools.writers import read_run
from tests.helpers import PadMode, RecordingVolume, arange_volume, attrs_of

SHAPE = (10, 12, 14)
SIZE = (4, 5, 6)
IDS = [3, 7, 42, 1000]
COUNTS = [18, 60, 1, 3]
CENTROIDS = [(0.5, 10, 12), (3, 4.5, 6), (9, 11, 0), (22 / 3, 1, 4 / 3)]
BBOXES = [
    [(0, 9, 11), (2, 12, 14)],
    [(2, 3, 4), (5, 7, 9)],
    [(9, 11, 0), (10, 12, 1)],
    [(7, 1, 1), (9, 2, 3)],
]
# floor(centroid + 0.5) - size // 2; 4.5 rounds up to 5
ORIGINS = [(-1, 8, 9), (1, 3, 3), (7, 9, -3), (5, -1, -2)]
SHIFTED = [(0, 7, 8), (1, 3, 3), (6, 7, 0), (5, 0, 0)]
TABLES = ("instance_ids", "centroid", "bbox", "voxel_count", "origins")


def scene_labels(dtype: str = "uint32") -> np.ndarray:
    """Four objects with non-contiguous ids, three of them at borders."""
    labels = np.zeros(SHAPE, dtype)
    labels[2:5, 3:7, 4:9] = 7
    labels[0:2, 9:12, 11:14] = 3
    labels[9, 11, 0] = 42
    for voxel in [(7, 1, 1), (7, 1, 2), (8, 1, 1)]:
        labels[voxel] = 1000
    return labels


def padded_crop(
    data: np.ndarray, origin: tuple[int, ...], size: tuple[int, ...], mode: str
) -> np.ndarray:
    """The reference: np.pad the spatial axes of ``data`` (channel axis first if any), cut."""
    lead = data.ndim - len(size)
    pads = [(0, 0)] * lead + [
        (max(0, -o), max(0, o + s - n))
        for o, s, n in zip(origin, size, data.shape[lead:], strict=True)
    ]
    padded: np.ndarray = np.pad(data, pads, mode=cast("PadMode", mode))
    starts = [o + p[0] for o, p in zip(origin, pads[lead:], strict=True)]
    cut: tuple[EllipsisType | slice, ...] = (
        ...,
        *(slice(a, a + s) for a, s in zip(starts, size, strict=True)),
    )
    return padded[cut]


def read_output(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".h5":
        with h5py.File(path, "r") as file:
            return {name: file[name][...] for name in file}
    group = zarr.open_group(str(path), mode="r")
    return {name: np.asarray(array[...]) for name, array in group.arrays()}


def output_attrs(path: Path) -> dict[str, Any]:
    if path.suffix in (".h5", ".datatools-partial"):
        with h5py.File(path, "r") as file:
            return dict(json.loads(file.attrs["instances"]))
    return dict(attrs_of(path)["instances"])


@pytest.fixture
def image() -> np.ndarray:
    return arange_volume(SHAPE, "uint16")


# --- statistics -------------------------------------------------------------------------------


def test_statistics_known_answers(tmp_path: Path, image: np.ndarray) -> None:
    out = tmp_path / "cells.zarr"
    result = extract_instances(ArrayVolume(image), ArrayVolume(scene_labels()), out, size=SIZE)
    data = read_output(out)
    assert result.count == 4
    assert result.complete
    assert data["instance_ids"].tolist() == IDS
    assert data["instance_ids"].dtype == np.int64
    assert data["voxel_count"].tolist() == COUNTS
    np.testing.assert_array_equal(data["centroid"], np.array(CENTROIDS))
    assert data["bbox"].tolist() == [[list(a), list(b)] for a, b in BBOXES]
    assert data["origins"].tolist() == [list(o) for o in ORIGINS]
    assert data["images"].shape == (4, 1, *SIZE)
    assert data["images"].dtype == np.uint16
    assert "masks" not in data


def test_label_stats_match_naive_loop(rng: np.random.Generator) -> None:
    labels = rng.integers(0, 6, size=(7, 9, 11)).astype(np.int16) * 1000 - 2000
    labels[labels == 1000] = 0
    stats = LabelStats.from_array(labels)
    ids = [v for v in np.unique(labels) if v != 0]
    assert stats.ids.tolist() == ids
    for k, value in enumerate(ids):
        where = np.argwhere(labels == value)
        assert stats.voxel_count[k] == len(where)
        assert stats.coord_sum[k].tolist() == where.sum(axis=0).tolist()
        assert stats.bbox_start[k].tolist() == where.min(axis=0).tolist()
        assert stats.bbox_stop[k].tolist() == (where.max(axis=0) + 1).tolist()


@pytest.mark.parametrize("slab_bytes", [1, 50, 400, 10**6])
def test_label_stats_do_not_depend_on_slabs(rng: np.random.Generator, slab_bytes: int) -> None:
    labels = rng.integers(0, 4, size=(6, 8, 10)).astype(np.uint8)
    whole = LabelStats.from_array(labels)
    streamed = label_stats(ArrayVolume(labels), slab_bytes=slab_bytes, workers=2)
    for name in ("ids", "voxel_count", "coord_sum", "bbox_start", "bbox_stop"):
        np.testing.assert_array_equal(getattr(streamed, name), getattr(whole, name))


def test_label_stats_inside_a_region_keep_volume_coordinates() -> None:
    labels = scene_labels()
    stats = label_stats(ArrayVolume(labels), Box((2, 0, 0), (5, 12, 14)))
    assert stats.ids.tolist() == [7]
    assert stats.bbox_start.tolist() == [[2, 3, 4]]


def test_label_stats_uint64_id_beyond_int64() -> None:
    labels = np.zeros((2, 3), np.uint64)
    labels[1, 2] = 2**63 + 5
    with pytest.raises(InputError, match=r"<array>: label id 9223372036854775813 does not fit"):
        LabelStats.from_array(labels)


def test_slab_shape_known_answers() -> None:
    assert slab_shape((64, 1024, 1024), 6, 64 * 2**20, (64, 64, 64)) == (64, 128, 1024)
    assert slab_shape((10, 20, 30), 1, 10**9) == (10, 20, 30)
    assert slab_shape((10, 20, 30), 1, 1200) == (2, 20, 30)


# --- crops, edges, masks ----------------------------------------------------------------------


@pytest.mark.parametrize("edge", ["constant", "symmetric", "reflect", "shift", "drop"])
def test_crops_equal_padded_image_under_every_edge_mode(
    tmp_path: Path, image: np.ndarray, edge: str
) -> None:
    out = tmp_path / f"{edge}.zarr"
    result = extract_instances(
        ArrayVolume(image), ArrayVolume(scene_labels()), out, size=SIZE, edge=edge
    )
    data = read_output(out)
    expected_origins = {"shift": SHIFTED, "drop": [ORIGINS[1]]}.get(edge, ORIGINS)
    assert data["origins"].tolist() == [list(o) for o in expected_origins]
    assert data["instance_ids"].tolist() == ([7] if edge == "drop" else IDS)
    if edge == "drop":
        assert result.removed == {"edge_drop": 3}
    mode = edge if edge in ("symmetric", "reflect") else "constant"
    for crop, origin in zip(data["images"], data["origins"], strict=True):
        np.testing.assert_array_equal(crop[0], padded_crop(image, tuple(origin), SIZE, mode))


@pytest.mark.parametrize("edge", ["constant", "symmetric", "reflect"])
def test_masks_and_zeroing_exact(tmp_path: Path, image: np.ndarray, edge: str) -> None:
    labels = scene_labels()
    labels[3, 4:7, 6] = 42  # another instance inside the window of 7
    runs = {}
    variants: dict[str, dict[str, Any]] = {
        "plain": {"masks": True},
        "others": {"zero_others": True},
        "background": {"zero_background": True},
    }
    for name, options in variants.items():
        out = tmp_path / f"{name}.zarr"
        extract_instances(
            ArrayVolume(image), ArrayVolume(labels), out, size=SIZE, edge=edge, **options
        )
        runs[name] = read_output(out)
    data = runs["plain"]
    assert data["masks"].dtype == np.uint8
    assert data["masks"].shape == (4, 1, *SIZE)
    for k, (value, origin) in enumerate(zip(data["instance_ids"], data["origins"], strict=True)):
        crop = padded_crop(image, tuple(origin), SIZE, edge)
        lab = padded_crop(labels, tuple(origin), SIZE, edge)
        own = lab == value
        np.testing.assert_array_equal(data["masks"][k, 0], own.astype(np.uint8))
        np.testing.assert_array_equal(data["images"][k, 0], crop)
        np.testing.assert_array_equal(
            runs["others"]["images"][k, 0], np.where((lab != 0) & ~own, 0, crop)
        )
        np.testing.assert_array_equal(runs["background"]["images"][k, 0], np.where(own, crop, 0))
    assert np.any(runs["others"]["images"][1] != data["images"][1])  # 42 inside 7's window


def test_2d_multichannel_with_channel_choice(tmp_path: Path) -> None:
    image = arange_volume((3, 12, 14), "uint8")
    labels = scene_labels()[1]  # plane z = 1: ids 3 and 1000 absent there -> 3 only
    labels[5:8, 2:4] = 9
    out = tmp_path / "cells.zarr"
    result = extract_instances(
        ArrayVolume(image, "cyx"),
        ArrayVolume(labels, "yx"),
        out,
        size=(5, 4),
        channels=(2, 0),
        edge="symmetric",
    )
    data = read_output(out)
    assert result.channels == 2
    assert data["instance_ids"].tolist() == [3, 9]
    assert data["images"].shape == (2, 2, 5, 4)
    assert data["centroid"].tolist() == [[10.0, 12.0], [6.0, 2.5]]
    assert data["origins"].tolist() == [[8, 10], [4, 1]]
    for crop, origin in zip(data["images"], data["origins"], strict=True):
        np.testing.assert_array_equal(
            crop, padded_crop(image[[2, 0]], tuple(origin), (5, 4), "symmetric")
        )
    metadata = zarr.open_array(str(out / "images"), mode="r").metadata
    assert isinstance(metadata, ArrayV3Metadata)
    assert metadata.dimension_names == (
        "i",
        "c",
        "y",
        "x",
    )


def test_3d_multichannel_image(tmp_path: Path) -> None:
    image = arange_volume((2, *SHAPE), "float32")
    out = tmp_path / "cells.zarr"
    labels = ArrayVolume(scene_labels("int64")[None], "czyx")  # a length-1 axis is accepted
    extract_instances(ArrayVolume(image), labels, out, size=SIZE)
    data = read_output(out)
    assert data["images"].shape == (4, 2, *SIZE)
    assert data["images"].dtype == np.float32
    for crop, origin in zip(data["images"], data["origins"], strict=True):
        np.testing.assert_array_equal(crop, padded_crop(image, tuple(origin), SIZE, "constant"))


def test_uint64_labels_with_large_ids(tmp_path: Path, image: np.ndarray) -> None:
    labels = scene_labels("uint64")
    labels[labels == 42] = 2**40
    out = tmp_path / "cells.zarr"
    extract_instances(ArrayVolume(image), ArrayVolume(labels), out, size=SIZE, masks=True)
    data = read_output(out)
    assert data["instance_ids"].tolist() == [3, 7, 1000, 2**40]
    assert data["masks"][3, 0].sum() == 1


# --- filters ----------------------------------------------------------------------------------


def test_filters(tmp_path: Path, image: np.ndarray) -> None:
    def run(name: str, **options: Any) -> tuple[list[int], dict[str, int]]:
        result = extract_instances(
            ArrayVolume(image), ArrayVolume(scene_labels()), tmp_path / name, size=3, **options
        )
        return read_output(tmp_path / name)["instance_ids"].tolist(), result.removed

    assert run("a.zarr", ids=[1000, 3]) == ([3, 1000], {"ids": 2})
    assert run("b.zarr", min_voxels=3) == ([3, 7, 1000], {"min_voxels": 1})
    assert run("c.zarr", max_voxels=18) == ([3, 42, 1000], {"max_voxels": 1})
    assert run("d.zarr", exclude_border=True) == ([7, 1000], {"exclude_border": 2})
    combined = run("e.zarr", ids=[3, 7, 1000], min_voxels=2, max_voxels=20, exclude_border=True)
    assert combined == ([1000], {"ids": 1, "min_voxels": 0, "max_voxels": 1, "exclude_border": 1})


def test_roi_bounds_measurement_and_edges(tmp_path: Path, image: np.ndarray) -> None:
    out = tmp_path / "roi.zarr"
    roi = Box((2, 0, 0), (6, 12, 14))
    extract_instances(
        ArrayVolume(image), ArrayVolume(scene_labels()), out, size=SIZE, roi=roi, edge="reflect"
    )
    data = read_output(out)
    assert data["instance_ids"].tolist() == [7]
    assert data["origins"].tolist() == [[1, 3, 3]]
    expected = padded_crop(image[2:6], (1 - 2, 3, 3), SIZE, "reflect")
    np.testing.assert_array_equal(data["images"][0, 0], expected)
    assert output_attrs(out)["roi"] == "2:6,0:12,0:14"


# --- out of core, formats, resume -------------------------------------------------------------


def test_sparse_windows_are_read_one_by_one(tmp_path: Path, image: np.ndarray) -> None:
    recorder = RecordingVolume(image)
    extract_instances(recorder, ArrayVolume(scene_labels()), tmp_path / "o.zarr", size=SIZE)
    clipped = [  # each window clipped to the volume: 4 x 120 voxels < the 1680 of the volume
        Box((0, 8, 9), (3, 12, 14)),
        Box((1, 3, 3), (5, 8, 9)),
        Box((7, 9, 0), (10, 12, 3)),
        Box((5, 0, 0), (9, 4, 4)),
    ]
    assert sorted(recorder.reads, key=str) == sorted(clipped, key=str)


def test_dense_windows_share_one_region_read(tmp_path: Path) -> None:
    image = arange_volume((12, 14), "uint16")
    labels = (np.arange(6)[:, None] * 7 + np.arange(7)[None, :] + 1).repeat(2, 0).repeat(2, 1)
    recorder = RecordingVolume(image)
    out = tmp_path / "o.zarr"
    extract_instances(recorder, ArrayVolume(labels.astype(np.uint16)), out, size=(5, 6))
    assert recorder.reads == [Box((0, 0), (12, 14))]  # 42 windows: one read of everything
    data = read_output(out)
    assert data["instance_ids"].tolist() == list(range(1, 43))
    for crop, origin in zip(data["images"], data["origins"], strict=True):
        np.testing.assert_array_equal(
            crop[0], padded_crop(image, tuple(origin), (5, 6), "constant")
        )


def test_out_of_core_equals_in_memory(tmp_path: Path, image: np.ndarray) -> None:
    labels = scene_labels()
    options: dict[str, Any] = {"size": SIZE, "masks": True, "zero_others": True, "edge": "reflect"}
    extract_instances(ArrayVolume(image), ArrayVolume(labels), tmp_path / "mem.zarr", **options)
    extract_instances(
        ArrayVolume(image),
        ArrayVolume(labels),
        tmp_path / "ooc.zarr",
        chunk_rows=1,
        memory_limit=1600,  # 1-row batches, regions of a few voxels, slabs of 4 rows
        workers=2,
        **options,
    )
    mem, ooc = read_output(tmp_path / "mem.zarr"), read_output(tmp_path / "ooc.zarr")
    assert sorted(mem) == sorted(ooc)
    for name in mem:
        np.testing.assert_array_equal(ooc[name], mem[name], err_msg=name)


@pytest.mark.parametrize("target", ["cells.zarr", "cells_v2.zarr", "cells.h5"])
def test_formats_and_attributes(tmp_path: Path, image: np.ndarray, target: str) -> None:
    out = tmp_path / target
    volume = ArrayVolume(image, voxel_size=(4.0, 2.0, 2.0), unit="nanometer", translation=(8, 0, 2))
    result = extract_instances(
        volume,
        ArrayVolume(scene_labels()),
        out,
        size=SIZE,
        masks=True,
        chunk_rows=3,
        zarr_format=2 if "v2" in target else 3,
    )
    data = read_output(out)
    assert result.format == {"cells.zarr": "zarr3", "cells_v2.zarr": "zarr2"}.get(target, "hdf5")
    assert data["instance_ids"].tolist() == IDS
    for crop, origin in zip(data["images"], data["origins"], strict=True):
        np.testing.assert_array_equal(crop[0], padded_crop(image, tuple(origin), SIZE, "constant"))
    attrs = output_attrs(out)
    assert attrs["size"] == list(SIZE)
    assert attrs["edge"] == "constant"
    assert attrs["count"] == 4
    assert attrs["voxel_size"] == [4.0, 2.0, 2.0]
    assert attrs["translation"] == [8.0, 0.0, 2.0]
    assert attrs["unit"] == "nanometer"
    assert attrs["axes"] == "iczyx"
    if target.endswith(".zarr"):
        images = zarr.open_array(str(out / "images"), mode="r")
        assert images.chunks == (3, 1, *SIZE)
        tables = [zarr.open_array(str(out / name), mode="r").chunks[0] for name in TABLES]
        if "v2" in target:
            assert images.attrs["_ARRAY_DIMENSIONS"] == ["i", "c", "z", "y", "x"]
    else:
        assert not Path(f"{out}.datatools-partial").exists()
        with h5py.File(out, "r") as file:
            tables = [file[name].chunks[0] for name in TABLES]
    assert tables == [6] * len(TABLES)  # 2 chunk rows of crops: the tables' own stream
    stored = read_run(out)  # the run record: what datatools info shows and a rerun checks
    assert stored is not None
    assert (stored.command, stored.complete, stored.params["count"]) == ("instances", True, 4)
    assert stored.params["plan_digest"] == attrs["plan_digest"]


@pytest.mark.parametrize("target", ["cells.zarr", "cells.h5"])
def test_resume_after_interruption(
    tmp_path: Path, image: np.ndarray, target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / target
    original = instance_crops.Cropper._write
    calls = []

    def fail_after_first(self: Any, batch: Any, j: int) -> int:
        calls.append(j)
        if len(calls) > 1:
            raise KeyboardInterrupt  # every chunk row after the first fails: exactly one is done
        return int(original(self, batch, j))

    options: dict[str, Any] = {"size": SIZE, "chunk_rows": 1}
    monkeypatch.setattr(instance_crops.Cropper, "_write", fail_after_first)
    with pytest.raises(KeyboardInterrupt):
        extract_instances(ArrayVolume(image), ArrayVolume(scene_labels()), out, **options)
    monkeypatch.undo()
    stored = read_run(out)
    assert stored is not None
    assert (stored.command, stored.complete, stored.params["count"]) == ("instances", False, 4)
    partial = Path(f"{out}.datatools-partial") if target.endswith(".h5") else out
    assert output_attrs(partial)["count"] == 4  # attributes are there from the start
    with pytest.raises(ResumeMismatchError, match=r"edge was \"constant\", now \"reflect\""):
        extract_instances(
            ArrayVolume(image), ArrayVolume(scene_labels()), out, edge="reflect", **options
        )
    changed = scene_labels()
    changed[5, 5, 5] = 8
    with pytest.raises(ResumeMismatchError, match=r"count was 4, now 5"):
        extract_instances(ArrayVolume(image), ArrayVolume(changed), out, **options)
    result = extract_instances(ArrayVolume(image), ArrayVolume(scene_labels()), out, **options)
    assert (result.rows_written, result.rows_skipped, result.complete) == (3, 1, True)
    (tmp_path / "ref").mkdir()
    extract_instances(
        ArrayVolume(image), ArrayVolume(scene_labels()), tmp_path / "ref" / target, **options
    )
    reference = read_output(tmp_path / "ref" / target)
    resumed = read_output(out)
    for name in reference:
        np.testing.assert_array_equal(resumed[name], reference[name], err_msg=name)
    again = extract_instances(ArrayVolume(image), ArrayVolume(scene_labels()), out, **options)
    assert (again.rows_written, again.rows_skipped) == (0, 4)


# --- bad input --------------------------------------------------------------------------------


def test_bad_inputs(tmp_path: Path, image: np.ndarray) -> None:
    labels = ArrayVolume(scene_labels(), spec="labels.zarr")
    img = ArrayVolume(image, spec="image.zarr")
    out = tmp_path / "out.zarr"
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"size": 0}, OptionError, "--size 0: every value must be > 0"),
        (
            {"size": (4, 4, 4, 4)},
            OptionError,
            "--size 4,4,4,4: 4 values for an image with 3 spatial axes (z,y,x) (give 1 or 3 "
            "values)",
        ),
        (
            {"size": 3, "ids": [7, 5, 99]},
            OptionError,
            "labels.zarr: --ids names ids that do not occur: 5, 99",
        ),
        (
            {"size": 3, "min_voxels": 100},
            OptionError,
            "labels.zarr: no instances left after filters (4 labelled; removed by min_voxels 4) "
            "(relax the filters)",
        ),
        (
            {"size": 3, "channels": [1]},
            OptionError,
            "--channels 1: image.zarr has 1 channel (indices 0..0)",
        ),
        (
            {"size": 3, "edge": "wrap"},
            OptionError,
            "--edge wrap: unknown edge mode (choose symmetric, reflect, constant, shift, drop)",
        ),
    ]
    for options, error, message in cases:
        with pytest.raises(error) as info:
            extract_instances(img, labels, out, **options)
        assert str(info.value) == message
    assert not out.exists()


def test_bad_labels(tmp_path: Path, image: np.ndarray) -> None:
    img = ArrayVolume(image, spec="image.zarr")
    out = tmp_path / "out.zarr"
    with pytest.raises(InputError) as info:
        extract_instances(
            img, ArrayVolume(np.zeros((10, 12, 13), np.uint8), spec="l.tif"), out, size=3
        )
    assert str(info.value) == (
        "l.tif: labels shape 10 x 12 x 13 (z,y,x) does not match the spatial shape 10 x 12 x 14 "
        "(z,y,x) of the image image.zarr (give labels of the same volume)"
    )
    with pytest.raises(InputError) as info:
        extract_instances(img, ArrayVolume(np.zeros(SHAPE, np.float32), spec="l.tif"), out, size=3)
    assert str(info.value) == (
        "l.tif: labels have dtype float32 (instance labels must be integers, 0 = background)"
    )
    with pytest.raises(InputError) as info:
        extract_instances(img, ArrayVolume(np.zeros(SHAPE, np.uint8), spec="l.tif"), out, size=3)
    assert str(info.value) == "l.tif: holds no instances (every voxel is 0)"
    assert not out.exists()


def test_existing_targets(tmp_path: Path, image: np.ndarray) -> None:
    foreign = tmp_path / "mine.zarr"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for target in (foreign, tmp_path / "mine.h5"):
        if target.suffix == ".h5":
            target.write_bytes(b"not hdf5")
        with pytest.raises(TargetError, match="exists and is"):
            extract_instances(ArrayVolume(image), ArrayVolume(scene_labels()), target, size=3)
    assert (foreign / "notes.txt").read_text() == "keep me"
    other = tmp_path / "patches.zarr"
    extract_patches(ArrayVolume(image), other, size=4)
    with pytest.raises(TargetError) as info:
        extract_instances(ArrayVolume(image), ArrayVolume(scene_labels()), other, size=3)
    assert str(info.value) == (
        f"{other}: exists and was not made by datatools instances (choose another target, or "
        "--overwrite to replace an output of datatools)"
    )
    out = tmp_path / "cells.zarr"
    extract_instances(ArrayVolume(image), ArrayVolume(scene_labels()), out, size=3)
    replaced = extract_instances(
        ArrayVolume(image), ArrayVolume(scene_labels()), out, size=4, overwrite=True
    )
    assert replaced.size == (4, 4, 4)
    assert read_output(out)["images"].shape == (4, 1, 4, 4, 4)


# --- CLI --------------------------------------------------------------------------------------


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_cli_examples(tmp_path: Path, image: np.ndarray) -> None:
    zarr.create_array(str(tmp_path / "image.zarr"), data=image)
    zarr.create_array(str(tmp_path / "labels.zarr"), data=scene_labels())
    plane = image[3].astype(np.uint16)
    tifffile.imwrite(tmp_path / "image.ome.tif", plane, ome=True)
    tifffile.imwrite(tmp_path / "nuclei.tif", scene_labels()[3])
    code, out = run_cli(
        "instances", str(tmp_path / "image.zarr"), str(tmp_path / "labels.zarr"),
        str(tmp_path / "cells.zarr"), "--size", "4,5,6",
    )  # fmt: skip
    assert code == 0, out
    assert "cells.zarr: 4 instances of 1 x 4 x 5 x 6, zarr3, complete" in out
    assert read_output(tmp_path / "cells.zarr")["origins"].tolist() == [list(o) for o in ORIGINS]
    code, out = run_cli(
        "instances", str(tmp_path / "image.ome.tif"), str(tmp_path / "nuclei.tif"),
        str(tmp_path / "cells.h5"), "--size", "6,6", "--masks", "--zero-others",
        "--edge", "constant",
    )  # fmt: skip
    assert code == 0, out
    data = read_output(tmp_path / "cells.h5")
    assert data["instance_ids"].tolist() == [7]
    assert data["images"].shape == (1, 1, 6, 6)
    expected_mask = np.zeros((6, 6), np.uint8)
    expected_mask[1:5, 1:6] = 1  # object 7 at y 3:7, x 4:9; window origin (2, 3)
    np.testing.assert_array_equal(data["masks"][0, 0], expected_mask)
    code, out = run_cli(
        "instances", str(tmp_path / "image.zarr"), str(tmp_path / "labels.zarr"),
        str(tmp_path / "some.zarr"), "--size", "3", "--ids", "3,7,42", "--min-voxels", "2",
        "--zarr-format", "2",
    )  # fmt: skip
    assert code == 0, out
    assert read_output(tmp_path / "some.zarr")["instance_ids"].tolist() == [3, 7]
    assert "removed by filters: ids 1, min_voxels 1" in out


def test_cli_help_and_user_error(tmp_path: Path, image: np.ndarray) -> None:
    code, out = run_cli("instances", "--help")
    assert code == 0
    assert "datatools instances image.zarr labels.zarr cells.zarr --size 32,64,64" in out
    assert "Memory: about --memory-limit" in out
    zarr.create_array(str(tmp_path / "image.zarr"), data=image)
    zarr.create_array(str(tmp_path / "labels.zarr"), data=scene_labels())
    code, out = run_cli(
        "instances", str(tmp_path / "image.zarr"), str(tmp_path / "labels.zarr"),
        str(tmp_path / "cells.zarr"), "--size", "4", "--ids", "7,8",
    )  # fmt: skip
    assert code == 2
    assert out == f"Error: {tmp_path / 'labels.zarr'}: --ids names ids that do not occur: 8\n"
    assert not (tmp_path / "cells.zarr").exists()
