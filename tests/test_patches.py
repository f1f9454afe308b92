"""Patch datasets: exact edges, tiling, masks, classes, samplers, formats, resume, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import h5py
import numpy as np
import pytest
import tifffile
import zarr
from click.testing import CliRunner

from datatools import ledger
from datatools.cli.main import cli
from datatools.errors import InputError, OptionError, ResumeMismatchError, TargetError
from datatools.geometry import Box
from datatools.info import format_info, inspect
from datatools.patches import extract_patches, iter_patches
from datatools.patches.sampling import SamplingWarning
from datatools.sources import ArrayVolume
from datatools.writers import read_run
from tests.helpers import PadMode, arange_volume, child_array, child_group, stored, values

PAD = 16


def collect(batches: Any) -> dict[str, dict[str, np.ndarray]]:
    """Concatenate batches per group: patches, labels, origins, and the batch starts."""
    out: dict[str, dict[str, list[np.ndarray]]] = {}
    for b in batches:
        group = out.setdefault(b.group, {"patches": [], "labels": [], "origins": [], "starts": []})
        group["patches"].append(b.patches)
        group["origins"].append(b.origins)
        group["starts"].append(np.array([b.start, len(b.origins)]))
        if b.labels is not None:
            group["labels"].append(b.labels)
    return {g: {k: np.concatenate(v) for k, v in d.items() if v} for g, d in out.items()}


def reference(data: np.ndarray, origin: np.ndarray, size: tuple[int, ...], mode: str) -> np.ndarray:
    """np.pad the array by PAD voxels (spatial axes = the last len(origin)) and cut the patch."""
    lead = data.ndim - len(origin)
    widths = [(0, 0)] * lead + [(PAD, PAD)] * len(origin)
    kwargs: dict[str, Any] = {"constant_values": 9} if mode == "constant" else {}
    pad_mode = mode if mode in ("symmetric", "reflect") else "constant"
    padded = np.pad(data, widths, mode=cast("PadMode", pad_mode), **kwargs)
    cut = tuple(slice(o + PAD, o + PAD + s) for o, s in zip(origin, size, strict=True))
    return padded[(slice(None),) * lead + cut]


CASES = [
    ((13, 17), (5, 6), (4, 5), "yx"),
    ((5, 9, 11), (4, 4, 4), (3, 3, 3), "zyx"),
    ((4, 9, 11), (4, 6), (3, 4), "zyx"),
    ((2, 3, 7, 9), (4, 5), (3, 3), "czyx"),
]


@pytest.mark.parametrize("mode", ["symmetric", "reflect", "constant", "shift", "drop"])
@pytest.mark.parametrize(("shape", "size", "stride", "axes"), CASES)
def test_every_patch_equals_np_pad_at_its_origin(
    mode: str, shape: tuple[int, ...], size: tuple[int, ...], stride: tuple[int, ...], axes: str
) -> None:
    data = arange_volume(shape)
    fill = 9 if mode == "constant" else 0
    got = collect(iter_patches(data, size=size, stride=stride, edge=mode, fill=fill, axes=axes))[""]
    n_spatial = len(axes.replace("c", ""))
    full = (1,) * (n_spatial - len(size)) + size
    channels = shape[:1] if "c" in axes else ()
    assert got["patches"].shape[1:] == channels + size
    assert got["patches"].dtype == data.dtype
    for patch, origin in zip(got["patches"], got["origins"], strict=True):
        if mode in ("shift", "drop"):
            assert (origin >= 0).all()
            assert (origin + full <= shape[len(channels) :]).all()
        np.testing.assert_array_equal(
            patch.reshape(channels + full), reference(data, origin, full, mode), str(origin)
        )
    if mode in ("symmetric", "reflect", "constant"):
        spatial = shape[len(channels) :]
        steps = (1,) * (n_spatial - len(stride)) + stride
        per_axis = [np.arange(0, n, s) for n, s in zip(spatial, steps, strict=True)]
        expected = np.stack(np.meshgrid(*per_axis, indexing="ij"), -1).reshape(-1, n_spatial)
        np.testing.assert_array_equal(got["origins"], expected)


def test_patches_wider_than_the_volume_mirror_repeatedly() -> None:
    data = arange_volume((3, 4), "uint8")
    got = collect(iter_patches(data, size=(11, 9), edge="reflect"))[""]
    assert got["origins"].tolist() == [[0, 0]]
    np.testing.assert_array_equal(
        got["patches"][0], reference(data, np.array([0, 0]), (11, 9), "reflect")
    )


def test_roi_tiling_covers_each_voxel_once_with_roi_voxels_only() -> None:
    data = arange_volume((6, 30, 40))
    roi = Box((1, 3, 5), (5, 25, 37))
    got = collect(iter_patches(data, size=(2, 8, 8), edge="symmetric", roi=roi))[""]
    cover = np.zeros(data.shape, dtype=int)
    inner = data[roi.slices()]
    for patch, origin in zip(got["patches"], got["origins"], strict=True):
        rel = origin - np.array(roi.start)
        np.testing.assert_array_equal(patch, reference(inner, rel, (2, 8, 8), "symmetric"))
        box = Box(tuple(origin), tuple(origin + np.array([2, 8, 8]))).intersect(roi)
        assert box is not None
        cover[box.slices()] += 1
    np.testing.assert_array_equal(cover[roi.slices()], 1)
    assert cover.sum() == roi.size


def test_mask_fraction_counts() -> None:
    data = arange_volume((2, 16, 16), "uint8")
    mask = np.zeros(data.shape, dtype=np.uint8)
    mask[0, 0:8, 0:8] = 1
    mask[1, 8:12, 0:16] = 255
    counts = {
        fraction: len(
            collect(iter_patches(data, size=(8, 8), mask=mask, min_fraction=fraction))[""][
                "origins"
            ]
        )
        for fraction in (0.0, 0.5, 1.0)
    }
    assert counts == {0.0: 3, 0.5: 3, 1.0: 1}
    labels = (mask > 0).astype(np.uint16) * 3
    got = collect(iter_patches(data, size=(8, 8), labels=labels, min_fraction=0.6))[""]
    assert got["origins"].tolist() == [[0, 0, 0]]
    np.testing.assert_array_equal(got["labels"][0], labels[0, :8, :8])


def test_mask_selecting_nothing_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    data = arange_volume((2, 8, 8))
    mask = ArrayVolume(np.zeros((2, 8, 8), dtype=bool), spec="tissue.tif")
    with pytest.raises(InputError, match=r"^tissue.tif: the mask selects no patch \(no patch has"):
        extract_patches(ArrayVolume(data), tmp_path / "out.zarr", size=4, mask=mask)
    assert not (tmp_path / "out.zarr").exists()


LABELS = np.array(
    [
        [1, 1, 1, 1, 0, 0, 2, 2],
        [1, 1, 1, 1, 0, 0, 2, 2],
        [1, 1, 3, 1, 0, 2, 2, 2],
        [1, 1, 1, 1, 0, 2, 2, 2],
    ],
    dtype=np.uint8,
)


ALL_FOUR = [[0, 0], [0, 2], [2, 0], [2, 2]]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("centre", {"class_0": [[0, 4]], "class_1": ALL_FOUR, "class_2": [[0, 6], [2, 4], [2, 6]]}),
        (
            "majority",
            {"class_0": [[0, 4], [2, 4]], "class_1": ALL_FOUR, "class_2": [[0, 6], [2, 6]]},
        ),
        (
            "any",
            {
                "class_0": [[0, 4], [2, 4]],
                "class_1": ALL_FOUR,
                "class_2": [[0, 6], [2, 4], [2, 6]],
                "class_3": [[2, 2]],
            },
        ),
    ],
)
def test_per_class_membership(
    tmp_path: Path, rule: str, expected: dict[str, list[list[int]]]
) -> None:
    data = arange_volume(LABELS.shape, "uint8")
    result = extract_patches(
        ArrayVolume(data),
        tmp_path / "c.zarr",
        size=2,
        labels=ArrayVolume(LABELS),
        per_class=True,
        class_rule=rule,
    )
    root = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")
    groups = {
        name: sorted(stored(child_group(root, name), "origins").tolist()) for name in result.counts
    }
    assert groups == expected
    assert root.attrs["counts"] == {k: len(v) for k, v in expected.items()}
    for name, origins in groups.items():
        sub = child_group(root, name)
        assert sub.attrs["count"] == len(origins)
        assert sub.attrs["class_value"] == int(name.removeprefix("class_"))
        rows = (stored(sub, "origins"), stored(sub, "patches"), stored(sub, "labels"))
        for o, p, lab in zip(*rows, strict=True):
            np.testing.assert_array_equal(p, data[o[0] : o[0] + 2, o[1] : o[1] + 2])
            np.testing.assert_array_equal(lab, LABELS[o[0] : o[0] + 2, o[1] : o[1] + 2])


def test_max_per_class_balances_with_a_seeded_subset() -> None:
    labels = np.zeros((32, 32), dtype=np.uint8)
    labels[:, 24:] = 1

    def run(seed: int) -> dict[str, np.ndarray]:
        got = collect(
            iter_patches(labels, size=4, labels=labels, per_class=True, max_per_class=5, rng=seed)
        )
        return {g: d["origins"] for g, d in got.items()}

    a, b, c = run(3), run(3), run(4)
    assert {g: len(o) for g, o in a.items()} == {"class_0": 5, "class_1": 5}
    assert all(np.array_equal(a[g], b[g]) for g in a)
    assert not np.array_equal(a["class_0"], c["class_0"])
    assert (a["class_1"][:, 1] >= 24).all()


@pytest.mark.parametrize("sampler", ["random", "blue-noise"])
def test_same_seed_same_output_different_seed_different(sampler: str) -> None:
    data = arange_volume((4, 40, 50))
    options: dict[str, Any] = {"size": (8, 8), "sampler": sampler, "count": 30}
    if sampler == "blue-noise":
        options["min_distance"] = 6.0
    a = collect(iter_patches(data, rng=5, **options))[""]
    b = collect(iter_patches(data, rng=5, **options))[""]
    c = collect(iter_patches(data, rng=6, **options))[""]
    np.testing.assert_array_equal(a["patches"], b["patches"])
    np.testing.assert_array_equal(a["origins"], b["origins"])
    assert len(a["origins"]) == 30
    assert not np.array_equal(np.unique(a["origins"], axis=0), np.unique(c["origins"], axis=0))
    for patch, origin in zip(a["patches"], a["origins"], strict=True):
        np.testing.assert_array_equal(patch[None], reference(data, origin, (1, 8, 8), "symmetric"))


def test_blue_noise_minimum_distance_holds_and_shortfall_warns() -> None:
    data = arange_volume((1, 60, 60), "uint8")
    got = collect(iter_patches(data, size=(6, 6), sampler="blue-noise", min_distance=9.0, rng=1))[
        ""
    ]
    centres = got["origins"] + np.array([0, 3, 3])
    dist = np.sqrt(((centres[:, None] - centres[None]) ** 2).sum(-1).astype(float))
    np.fill_diagonal(dist, np.inf)
    assert dist.min() >= 9.0
    assert len(centres) > 25
    with pytest.warns(
        SamplingWarning,
        match=r"^--sampler blue-noise: only \d+ patches fit at --min-distance 30, fewer than "
        r"the 500 asked; wrote \d+$",
    ):
        small = collect(
            iter_patches(
                data, size=(6, 6), sampler="blue-noise", min_distance=30, max_patches=500, rng=1
            )
        )
    assert 1 < len(small[""]["origins"]) < 10


def test_iter_patches_batches_end_on_multiples_of_batch_rows() -> None:
    got = collect(iter_patches(arange_volume((3, 20, 20)), size=(4, 4), batch_rows=7))[""]
    starts, sizes = got["starts"].reshape(-1, 2).T
    assert ((starts + sizes) % 7 == 0)[:-1].all()
    assert sizes.max() <= 7
    assert starts[-1] + sizes[-1] == 75


def sorted_rows(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    order = np.lexsort(arrays["origins"].T[::-1])
    return {k: v[order] for k, v in arrays.items()}


@pytest.mark.parametrize("name", ["v3.zarr", "v2.zarr", "out.h5"])
def test_out_of_core_equals_in_memory_in_every_format(tmp_path: Path, name: str) -> None:
    data = arange_volume((6, 30, 34))
    labels = (data % 5).astype(np.uint8)
    zarr.create_array(str(tmp_path / "raw.zarr"), data=data, chunks=(2, 8, 8))
    zarr.create_array(str(tmp_path / "lab.zarr"), data=labels, chunks=(3, 16, 16))
    target = tmp_path / name
    result = extract_patches(
        str(tmp_path / "raw.zarr"),
        target,
        size=(3, 10, 12),
        stride=(1, 7, 9),
        edge="reflect",
        labels=str(tmp_path / "lab.zarr"),
        memory_limit=40_000,
        chunk_rows=5,
        zarr_format=2 if name == "v2.zarr" else 3,
    )
    if name.endswith(".h5"):
        with h5py.File(target, "r") as f:
            written = {k: f[k][:] for k in ("patches", "labels", "origins")}
            assert f["patches"].chunks == (5, 3, 10, 12)
            assert f.attrs["edge"] == "reflect"
    else:
        root = zarr.open_group(str(target), mode="r")
        assert root.metadata.zarr_format == (2 if name == "v2.zarr" else 3)
        written = {k: stored(root, k) for k in ("patches", "labels", "origins")}
        assert child_array(root, "patches").chunks == (5, 3, 10, 12)
        assert root.attrs["edge"] == "reflect"
    memory = collect(
        iter_patches(data, size=(3, 10, 12), stride=(1, 7, 9), edge="reflect", labels=labels)
    )[""]
    del memory["starts"]
    assert result.total == len(memory["origins"]) == len(written["origins"])
    got, expected = sorted_rows(written), sorted_rows(memory)
    for key in ("patches", "labels", "origins"):
        np.testing.assert_array_equal(got[key], expected[key])
    assert not np.array_equal(written["origins"], memory["origins"])  # slab order differs


def test_workers_do_not_change_the_output(tmp_path: Path) -> None:
    data = arange_volume((6, 24, 24))
    arrays = []
    for workers in (1, 2, 3):
        target = tmp_path / f"w{workers}.zarr"
        extract_patches(
            ArrayVolume(data),
            target,
            size=(4, 8),
            stride=(3, 5),
            memory_limit=8000,
            workers=workers,
        )
        root = zarr.open_group(str(target), mode="r")
        arrays.append((stored(root, "patches"), stored(root, "origins")))
    for patches, origins in arrays[1:]:
        np.testing.assert_array_equal(patches, arrays[0][0])
        np.testing.assert_array_equal(origins, arrays[0][1])


def test_two_d_patches_from_three_d_layout_and_attributes(tmp_path: Path) -> None:
    data = arange_volume((3, 16, 24), "uint8")
    volume = ArrayVolume(
        data,
        voxel_size=(40.0, 4.0, 4.0),
        unit="nanometer",
        translation=(80.0, 0.0, 8.0),
        spec="vol",
    )
    result = extract_patches(volume, tmp_path / "p.zarr", size=(8, 8))
    root = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    assert child_array(root, "patches").shape == (18, 8, 8)
    assert child_array(root, "origins").shape == (18, 3)
    assert child_array(root, "patches").chunks == (32768, 8, 8)
    origins = stored(root, "origins")
    assert sorted(set(origins[:, 0].tolist())) == [0, 1, 2]
    for p, o in zip(stored(root, "patches"), origins, strict=True):
        np.testing.assert_array_equal(p, data[o[0], o[1] : o[1] + 8, o[2] : o[2] + 8])
    attrs = root.attrs.asdict()
    assert attrs["patch_axes"] == "nyx"
    assert attrs["origin_axes"] == "zyx"
    assert attrs["size"] == [1, 8, 8]
    assert attrs["stride"] == [1, 8, 8]
    assert attrs["edge"] == "symmetric"
    assert attrs["sampler"] == "grid"
    assert attrs["seed"] is None
    assert attrs["source"] == "vol"
    assert attrs["voxel_size"] == [40.0, 4.0, 4.0]
    assert attrs["translation"] == [80.0, 0.0, 8.0]
    assert attrs["unit"] == "nanometer"
    assert attrs["count"] == 18
    assert result.patch_axes == "nyx"


class FailingVolume(ArrayVolume):
    """Raises after ``reads`` reads, like a run killed half-way."""

    def __init__(self, array: np.ndarray, reads: int) -> None:
        super().__init__(array, spec="raw")
        self.left = reads

    def read(self, box: Box, out: np.ndarray | None = None) -> np.ndarray:
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        return super().read(box, out)


def test_rerun_resumes_an_interrupted_run(tmp_path: Path) -> None:
    data = arange_volume((8, 40, 40))
    options: dict[str, Any] = {
        "size": (8, 8),
        "stride": 6,
        "memory_limit": 10_000,
        "chunk_rows": 10,
    }
    complete = extract_patches(ArrayVolume(data, spec="raw"), tmp_path / "full.zarr", **options)
    with pytest.raises(KeyboardInterrupt):
        extract_patches(FailingVolume(data, 3), tmp_path / "out.zarr", **options)
    partial = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    assert 0 < child_array(partial, "origins").shape[0] < complete.total
    shown = format_info(inspect(tmp_path / "out.zarr")).splitlines()[0]
    assert shown == (
        f"status       INCOMPLETE ({child_array(partial, 'origins').shape[0]} rows written) "
        "(patches)"
    )
    resumed = extract_patches(ArrayVolume(data, spec="raw"), tmp_path / "out.zarr", **options)
    assert 0 < resumed.written < complete.total
    a = zarr.open_group(str(tmp_path / "full.zarr"), mode="r")
    b = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    for key in ("patches", "origins"):
        np.testing.assert_array_equal(stored(a, key), stored(b, key))
    again = extract_patches(ArrayVolume(data, spec="raw"), tmp_path / "out.zarr", **options)
    assert again.written == 0
    with pytest.raises(
        ResumeMismatchError,
        match=r"out.zarr: exists from a run with other options \(stride was 6, now 5\); rerun",
    ):
        extract_patches(
            ArrayVolume(data, spec="raw"), tmp_path / "out.zarr", **{**options, "stride": 5}
        )


def read_groups(path: Path, groups: Any) -> dict[str, dict[str, np.ndarray]]:
    """Every array of every group, as plain zarr / h5py loaders read them."""
    keys = ("patches", "labels", "origins")
    if path.suffix == ".h5":
        with h5py.File(path, "r") as f:
            return {g: {k: f[g or "/"][k][:] for k in keys if k in f[g or "/"]} for g in groups}
    root = zarr.open_group(str(path), mode="r")
    return {
        g: {k: values(v) for k, v in (child_group(root, g) if g else root).arrays() if k in keys}
        for g in groups
    }


@pytest.mark.parametrize(("name", "per_class"), [("c.zarr", True), ("c.h5", True), ("p.h5", False)])
def test_rerun_completes_interrupted_per_class_and_hdf5_outputs(
    tmp_path: Path, name: str, per_class: bool
) -> None:
    data = arange_volume((8, 40, 40))
    labels = ArrayVolume((data // 7 % 3).astype(np.uint8), spec="labels")
    options: dict[str, Any] = {
        "size": (8, 8),
        "stride": 6,
        "memory_limit": 10_000,
        "chunk_rows": 10,
        "workers": 1,  # one slab read ahead: the third read fails after rows were written
    }
    if per_class:
        options.update(labels=labels, per_class=True)
    full = extract_patches(ArrayVolume(data, spec="raw"), tmp_path / f"full_{name}", **options)
    with pytest.raises(KeyboardInterrupt):
        extract_patches(FailingVolume(data, 3), tmp_path / name, **options)
    stored = read_run(tmp_path / name)
    assert stored is not None
    assert (stored.command, stored.complete) == ("patches", False)
    if name.endswith(".h5"):
        assert not (tmp_path / name).exists()
        with h5py.File(tmp_path / f"{name}.datatools-partial", "r") as f:
            assert f.attrs["edge"] == "symmetric"  # attributes are there from the start
    again = extract_patches(ArrayVolume(data, spec="raw"), tmp_path / name, **options)
    assert again.counts == full.counts
    assert 0 < again.written < full.total
    got = read_groups(tmp_path / name, full.counts)
    expected = read_groups(tmp_path / f"full_{name}", full.counts)
    for group in full.counts:
        assert sorted(got[group]) == (
            ["labels", "origins", "patches"] if per_class else ["origins", "patches"]
        )
        for key in got[group]:
            np.testing.assert_array_equal(got[group][key], expected[group][key])
    if name == "c.h5":
        with h5py.File(tmp_path / name, "r") as f:
            assert json.loads(f.attrs["counts"]) == full.counts
            for group, n in full.counts.items():
                assert (f[group].attrs["class_value"], f[group].attrs["count"]) == (
                    int(group.removeprefix("class_")),
                    n,
                )
    elif name == "c.zarr":
        root = zarr.open_group(str(tmp_path / name), mode="r")
        assert root.attrs["counts"] == full.counts
        status = ledger.status(tmp_path / name)
        assert status is not None
        assert status.record is not None
        assert (status.record.command, status.complete) == ("patches", True)
        markers = [k for k, _ in root.members(max_depth=None) if k.endswith(".datatools")]
        assert markers == [".datatools"]  # one run record for every class


BAD_INPUT = [
    ({"size": (0, 4)}, OptionError, "--size 0,4: every value must be > 0"),
    ({"size": (2, 2, 2, 2)}, OptionError, "--size 2,2,2,2: 4 values for a volume with 3 spatial"),
    ({"size": 4, "stride": (0, 2)}, OptionError, "--stride 0,2: every value must be > 0"),
    ({"size": (4, 4), "stride": (1, 2, 2)}, OptionError, "--stride 1,2,2: 3 values for 2D"),
    (
        {"size": 4, "labels": "labels"},
        InputError,
        "labels: labels shape 4 x 12 x 11 (z,y,x) differs from the spatial shape 4 x 12 x 12 "
        "(z,y,x) of raw (labels must be on the source's voxel grid)",
    ),
    ({"size": 4, "mask": "mask"}, InputError, "mask: mask shape 12 x 12 (y,x) differs"),
    ({"size": 4, "per_class": True}, OptionError, "--per-class: needs --labels (a label volume"),
    ({"size": 4, "sampler": "random"}, OptionError, "--sampler random: needs --count N (how"),
    (
        {"size": 20, "edge": "drop"},
        OptionError,
        "--size 20: no patch fits the ROI 0:4,0:12,0:12 of raw with --edge drop",
    ),
    ({"size": 4, "edge": "constant", "fill": 7e4}, OptionError, "--fill 70000.0: not a value of"),
    ({"size": 4, "workers": -1}, OptionError, "--workers -1: must be >= 1"),
    ({"size": 4, "fill": 3}, OptionError, "--fill 3: used only with --edge constant (the edge"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_INPUT)
def test_bad_input_messages(
    tmp_path: Path, kwargs: dict[str, Any], error: type, message: str
) -> None:
    companions = {
        "labels": ArrayVolume(np.zeros((4, 12, 11), np.uint8), spec="labels"),
        "mask": ArrayVolume(np.zeros((12, 12), np.uint8), spec="mask"),
    }
    for key in ("labels", "mask"):
        if kwargs.get(key) == key:
            kwargs = {**kwargs, key: companions[key]}
    with pytest.raises(error) as info:
        extract_patches(
            ArrayVolume(arange_volume((4, 12, 12)), spec="raw"), tmp_path / "o.zarr", **kwargs
        )
    assert str(info.value).startswith(message)
    assert not (tmp_path / "o.zarr").exists()


def test_target_refusals(tmp_path: Path) -> None:
    volume = ArrayVolume(arange_volume((2, 8, 8)), spec="raw")
    (tmp_path / "mine.zarr").mkdir()
    (tmp_path / "mine.zarr" / "notes.txt").write_text("keep")
    with pytest.raises(
        TargetError,
        match=r"mine.zarr: exists and was not written by datatools patches \(choose another target",
    ):
        extract_patches(volume, tmp_path / "mine.zarr", size=4)
    with pytest.raises(TargetError, match="datatools will not remove it"):
        extract_patches(volume, tmp_path / "mine.zarr", size=4, overwrite=True)
    assert (tmp_path / "mine.zarr" / "notes.txt").read_text() == "keep"
    (tmp_path / "mine.h5").write_bytes(b"not hdf5")
    with pytest.raises(
        TargetError,
        match=r"mine.h5: exists and was not written by datatools patches \(choose another target",
    ):
        extract_patches(volume, tmp_path / "mine.h5", size=4)
    assert (tmp_path / "mine.h5").read_bytes() == b"not hdf5"
    extract_patches(volume, tmp_path / "p.zarr", size=4)
    result = extract_patches(volume, tmp_path / "p.zarr", size=2, overwrite=True)
    assert result.total == 16


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_cli_help_states_memory() -> None:
    code, out, _ = invoke("patches", "--help")
    assert code == 0, out
    assert "datatools patches volume.zarr --size 64" in out
    assert "Memory:" in out


def test_cli_examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = arange_volume((4, 64, 64), "uint8")
    zarr.create_array("volume.zarr", data=data, chunks=(4, 32, 32))
    labels = np.zeros(data.shape, dtype=np.uint8)
    labels[:, 32:, :] = 1
    labels[:, :, 48:] = 2
    zarr.create_array("labels.zarr", data=labels, chunks=(4, 32, 32))
    tissue = np.zeros(data.shape, dtype=np.uint8)
    tissue[:, 8:56, 8:56] = 1
    tifffile.imwrite("tissue.tif", tissue, photometric="minisblack")

    code, out, err = invoke("patches", "volume.zarr", "--size", "64")
    assert code == 0, out + err
    assert out.startswith("volume_patches.zarr: 1 patch of 64 x 64 x 64 uint8 (nzyx)")
    cube = child_array(zarr.open_group("volume_patches.zarr", mode="r"), "patches")[0]
    np.testing.assert_array_equal(cube, np.pad(data, [(0, 60), (0, 0), (0, 0)], mode="symmetric"))

    code, out, err = invoke(
        "patches",
        "volume.zarr",
        "train.zarr",
        "--size",
        "64,64",
        "--stride",
        "32",
        "--edge",
        "symmetric",
    )
    assert code == 0, out + err
    assert child_array(zarr.open_group("train.zarr", mode="r"), "patches").shape == (16, 64, 64)

    code, out, err = invoke(
        "patches",
        "volume.zarr",
        "classes.zarr",
        "--size",
        "2,32,32",
        "--labels",
        "labels.zarr",
        "--per-class",
        "--min-fraction",
        "0.05",
    )
    assert code == 0, out + err
    assert "class_1: 2, class_2: 4" in out  # background-only patches fail --min-fraction

    code, out, err = invoke(
        "patches",
        "volume.zarr",
        "train.h5",
        "--size",
        "16",
        "--mask",
        "tissue.tif",
        "--min-fraction",
        "0.5",
        "--sampler",
        "random",
        "--count",
        "40",
        "--seed",
        "7",
    )
    assert code == 0, out + err
    with h5py.File("train.h5", "r") as f:
        origins = f["origins"][:]
        assert f["patches"].shape == (40, 16, 16, 16)
        assert f.attrs["seed"] == 7
    assert tissue[tuple((origins + 8).T)].all()

    code, out, err = invoke(
        "patches",
        "volume.zarr",
        "blue.zarr",
        "--size",
        "16",
        "--sampler",
        "blue-noise",
        "--min-distance",
        "24",
        "--max-patches",
        "5000",
        "--zarr-format",
        "2",
    )
    assert code == 0, out + err
    assert err.startswith("Warning: --sampler blue-noise: only ")
    assert "fewer than the 5000 asked; wrote" in err
    assert (tmp_path / "blue.zarr" / ".zgroup").is_file()


def test_cli_user_error_exit_2(tmp_path: Path) -> None:
    zarr.create_array(str(tmp_path / "v.zarr"), data=arange_volume((2, 8, 8)))
    code, _, err = invoke(
        "patches", str(tmp_path / "v.zarr"), str(tmp_path / "o.zarr"), "--size", "0"
    )
    assert code == 2
    assert err == "Error: --size 0: every value must be > 0\n"


def test_labels_without_levels_serve_a_source_level(tmp_path: Path) -> None:
    from datatools.convert import convert
    from datatools.sources import OpenOptions

    image = tmp_path / "img.zarr"
    convert(ArrayVolume(arange_volume((8, 16, 16), "uint16")), image, chunks=4, levels=2)
    labels = tmp_path / "lab.h5"
    with h5py.File(labels, "w") as fh:
        fh["seg"] = (arange_volume((4, 8, 8), "uint16") % 3).astype(np.uint8)
    result = extract_patches(
        str(image), tmp_path / "p.zarr", size=(4, 4, 4), labels=f"{labels}:/seg",
        open_options=OpenOptions(level=1),
    )  # fmt: skip
    assert result.total == 4  # level 1 is 4 x 8 x 8


def test_patches_larger_than_the_roi_get_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = ArrayVolume(arange_volume((5, 12, 12)))
    with caplog.at_level("WARNING"):
        extract_patches(data, tmp_path / "fits.zarr", size=(4, 6, 6))
        assert not caplog.records
        extract_patches(data, tmp_path / "big.zarr", size=(8, 6, 6))
    assert caplog.messages == [
        "<array>: patches of 8 voxels along z are larger than the ROI's 5: most of each patch is "
        "mirrored (give a smaller --size)"
    ]


def test_shift_names_the_axis_a_patch_does_not_fit(tmp_path: Path) -> None:
    data = ArrayVolume(arange_volume((8, 12, 20)))
    with pytest.raises(OptionError, match="does not fit in the 20 voxels of axis x"):
        extract_patches(data, tmp_path / "p.zarr", size=(4, 6, 30), edge="shift")


def test_info_shows_an_interrupted_hdf5_patches_run(tmp_path: Path) -> None:
    data = arange_volume((8, 40, 40))
    options: dict[str, Any] = {"size": (8, 8), "stride": 6, "memory_limit": 10_000}
    out = tmp_path / "out.h5"
    with pytest.raises(KeyboardInterrupt):
        extract_patches(FailingVolume(data, 3), out, chunk_rows=10, **options)
    assert not out.exists()
    shown = format_info(inspect(out)).splitlines()[0]
    assert shown.startswith("status       INCOMPLETE (")
    assert shown.endswith("rows written) (patches)")
