"""convert --split-classes: one 0/1 multiscale image per label value."""

from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import zarr
from ome_zarr_models.v04.image import Image as Image04
from ome_zarr_models.v05.image import Image as Image05

from datatools import ledger
from datatools.convert import class_masks, convert, convert_many
from datatools.convert.class_masks import (
    ClassMask,
    SharedReads,
    count_classes,
    parse_class_names,
    split_classes,
)
from datatools.errors import InputError, OptionError
from datatools.executor import TaskSlice
from datatools.geometry import Box
from datatools.info import format_info, inspect
from datatools.sources import ArrayVolume
from datatools.verify import verify
from tests.helpers import attrs_of, child_array, stored


@pytest.fixture
def labels(tmp_path: Path) -> tuple[str, np.ndarray]:
    data = np.zeros((8, 24, 20), np.uint16)
    data[1:5, 2:9, 3:11] = 3
    data[4:8, 10:20, 5:17] = 7
    data[0, 0, 0] = 1000
    arr = zarr.create_array(
        tmp_path / "labels.zarr", shape=data.shape, chunks=(4, 8, 8), dtype=data.dtype
    )
    arr[:] = data
    return str(tmp_path / "labels.zarr"), data


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_every_class_mask_equals_labels_eq_value(
    tmp_path: Path, labels: tuple[str, np.ndarray], zarr_format: Literal[2, 3]
) -> None:
    spec, data = labels
    out = tmp_path / "classes.zarr"
    result = split_classes(
        spec,
        out,
        chunks=4,
        levels=2,
        zarr_format=zarr_format,
        voxel_size=(0.04, 0.008, 0.008),
        unit="micrometer",
    )
    assert result.complete
    assert ledger.is_complete(out)
    assert sorted(result.classes) == ["1000", "3", "7"]
    for name, (value, count, _) in result.classes.items():
        group = zarr.open_group(out / name, mode="r")
        mask = stored(group, "0")
        np.testing.assert_array_equal(mask, (data == value).astype(np.uint8))
        assert count == int((data == value).sum())
        assert attrs_of(group)["datatools"]["voxel_count"] == count
        assert child_array(group, "0").attrs["class_counts"] == {name: count}  # for cellmap-data
        (Image05 if zarr_format == 3 else Image04).from_zarr(group)
        attrs = attrs_of(group)["ome"] if zarr_format == 3 else attrs_of(group)
        ms = attrs["multiscales"][0]
        assert ms["axes"][0]["unit"] == "nanometer"
        # exactly: 0.04 micrometre is 40 nm, not 40.00000000000001
        assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [40.0, 8.0, 8.0]


def test_class_names_select_and_name(tmp_path: Path, labels: tuple[str, np.ndarray]) -> None:
    spec, data = labels
    out = tmp_path / "named.zarr"
    result = split_classes(spec, out, class_names=parse_class_names("3=mito,7=er"), chunks=4)
    assert sorted(result.classes) == ["er", "mito"]
    np.testing.assert_array_equal(
        zarr.open_array(out / "er" / "0", mode="r")[:], (data == 7).astype(np.uint8)
    )
    again = split_classes(spec, out, class_names={3: "mito", 7: "er"}, chunks=4)
    assert all(r.units_written == 0 for _, _, r in again.classes.values())


def test_split_errors(tmp_path: Path, labels: tuple[str, np.ndarray]) -> None:
    spec, _ = labels
    with pytest.raises(OptionError, match=r"label values \[5\] do not occur"):
        split_classes(spec, tmp_path / "a.zarr", class_names={5: "x"})
    with pytest.raises(OptionError, match="--class-names 1:mito: '1:mito' is not value=name"):
        parse_class_names("1:mito")
    with pytest.raises(OptionError, match="--class-names 1=a,1=b: value 1 is named twice"):
        parse_class_names("1=a,1=b")
    with pytest.raises(OptionError, match="--class-names 1=a,2=a: name 'a' is given twice"):
        parse_class_names("1=a,2=a")
    assert not (tmp_path / "a.zarr").exists()
    with pytest.raises(OptionError, match="--overwrite: cannot be combined with --task-count"):
        split_classes(spec, tmp_path / "a.zarr", task=TaskSlice(1, 2), overwrite=True)
    assert not (tmp_path / "a.zarr").exists()
    with pytest.raises(OptionError, match="class masks take mode, nearest or max"):
        split_classes(spec, tmp_path / "b.zarr", downsample="mean")
    floats = zarr.create_array(tmp_path / "f.zarr", shape=(2, 2), dtype="float32")
    floats[:] = 1
    with pytest.raises(InputError, match="labels must be integers, not float32"):
        split_classes(str(tmp_path / "f.zarr"), tmp_path / "c.zarr")
    empty = zarr.create_array(tmp_path / "e.zarr", shape=(2, 2), dtype="uint8")
    empty[:] = 0
    with pytest.raises(InputError, match="holds no non-zero label"):
        split_classes(str(tmp_path / "e.zarr"), tmp_path / "d.zarr")


def test_cli_split_classes(tmp_path: Path, labels: tuple[str, np.ndarray]) -> None:
    from click.testing import CliRunner

    from datatools.cli.main import cli

    spec, data = labels
    out = tmp_path / "cli.zarr"
    result = CliRunner().invoke(
        cli,
        [
            "-q",
            "convert",
            spec,
            str(out),
            "--split-classes",
            "--class-names",
            "3=mito",
            "--chunks",
            "4",
            "--levels",
            "auto",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "mito: label 3" in result.output
    np.testing.assert_array_equal(
        zarr.open_array(out / "mito" / "0", mode="r")[:], (data == 3).astype(np.uint8)
    )
    info = CliRunner().invoke(cli, ["info", str(out)])
    assert info.exit_code == 0, info.output
    listed = [line.split()[1] for line in info.output.splitlines() if line.startswith("array")]
    assert listed == ["mito/0:", "mito/1:", "mito/2:", "mito/3:"]  # not the ledgers


def test_a_task_that_sees_a_class_unfinished_which_another_task_finished_completes_the_group(
    tmp_path: Path, labels: tuple[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two job-array tasks finishing together: the last one may have looked at a class before
    the other finalized it; the group is still marked complete."""
    spec, data = labels
    out = tmp_path / "classes.zarr"
    names = {3: "a", 7: "b"}
    real = convert_many

    def racing(*args: Any, **kwargs: Any) -> list[Any]:
        results = real(*args, **kwargs)
        if args[2].run.task.index == 1:
            results[0] = replace(results[0], complete=False)  # class a, seen too early
        return results

    monkeypatch.setattr(class_masks, "convert_many", racing)
    options: dict[str, Any] = {"class_names": names, "chunks": 4, "memory_limit": 4096}
    first = split_classes(spec, out, task=TaskSlice(0, 2), **options)
    assert not first.complete
    assert not ledger.is_complete(out)
    last = split_classes(spec, out, task=TaskSlice(1, 2), **options)
    assert last.complete
    assert ledger.is_complete(out)
    for value, name in names.items():
        group = zarr.open_group(out / name, mode="r")
        np.testing.assert_array_equal(stored(group, "0"), (data == value).astype(np.uint8))
        assert attrs_of(group)["datatools"]["class_value"] == value
        assert attrs_of(group)["datatools"]["voxel_count"] == int((data == value).sum())


class CountingVolume(ArrayVolume):
    """Counts the boxes read."""

    def __init__(self, array: np.ndarray) -> None:
        super().__init__(array)
        self.reads: list[Box] = []
        self.lock = threading.Lock()

    def _read(self, box: Box) -> np.ndarray:
        with self.lock:
            self.reads.append(box)
        return super()._read(box)


@pytest.mark.parametrize("levels", [1, 3])
def test_labels_are_read_once_per_unit_for_all_classes(
    tmp_path: Path, rng: np.random.Generator, levels: int
) -> None:
    data = rng.integers(0, 4, size=(24, 40, 36)).astype(np.uint16)
    source = CountingVolume(data)
    shared = SharedReads(source)
    masks = [ClassMask(shared, value) for value in (1, 2, 3)]
    targets = [tmp_path / f"c{value}.zarr" for value in (1, 2, 3)]
    results = convert_many(masks, targets, chunks=8, levels=levels, downsample="mode",
                           memory_limit=2**15, workers=2)  # fmt: skip
    units = results[0].units_total - sum(1 for _ in ())  # all units, base and pyramid
    assert all(r.complete for r in results)
    base = len(set(source.reads))
    assert len(source.reads) == base  # no box read twice
    assert (base > 1 and base < units) or levels == 1
    for value, out in zip((1, 2, 3), targets, strict=True):
        group = zarr.open_group(out, mode="r")
        np.testing.assert_array_equal(stored(group, "0"), (data == value).astype(np.uint8))
        assert ledger.is_complete(out)


def test_convert_many_refuses_volumes_that_differ(tmp_path: Path) -> None:
    small = ArrayVolume(np.zeros((4, 5, 6), np.uint8))
    other = ArrayVolume(np.zeros((4, 5, 7), np.uint8))
    with pytest.raises(OptionError) as info:
        convert_many([small, other], [tmp_path / "a.zarr", tmp_path / "b.zarr"])
    assert str(info.value) == (
        f"{tmp_path / 'b.zarr'}: its volume or plan differs from {tmp_path / 'a.zarr'}'s "
        "(convert_many needs volumes of one shape and dtype, and outputs written with the same "
        "options)"
    )
    assert not (tmp_path / "a.zarr").exists()


@pytest.mark.parametrize(
    ("dtype", "values"),
    [
        ("uint8", [0, 1, 7]),
        ("int32", [-5, 0, 3]),
        ("uint32", [0, 3, 2**21 + 1]),
        ("uint64", [0, 2, 9]),
        ("bool", [0, 1]),
    ],
)
def test_count_classes_small_and_large_values(dtype: str, values: list[int]) -> None:
    data = np.array(values * 7 + values[-1:] * 3, dtype=dtype).reshape(1, 1, -1)
    volume = ArrayVolume(data)
    expected = {v: 7 + 3 * (v == values[-1]) for v in values if v != 0}
    assert count_classes(volume, Box((0, 0, 0), data.shape)) == expected


def test_an_intensity_image_is_refused_and_warnings_come_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    grey = tmp_path / "grey.zarr"
    array = zarr.create_array(grey, shape=(4, 8, 8), chunks=(4, 8, 8), dtype="uint16")
    array[:] = np.arange(256, dtype=np.uint16).reshape(4, 8, 8) % 7
    monkeypatch.setattr(class_masks, "MAX_CLASSES", 5)
    with pytest.raises(InputError) as info:
        split_classes(str(grey), tmp_path / "many.zarr")
    assert str(info.value) == (
        f"{grey}: holds 6 distinct non-zero values, one image each (is it a label image? give "
        "--class-names to choose at most 5)"
    )
    assert not (tmp_path / "many.zarr").exists()
    with caplog.at_level(logging.WARNING):
        result = split_classes(str(grey), tmp_path / "few.zarr", class_names={1: "a", 2: "b"})
    assert result.complete
    assert [r.getMessage() for r in caplog.records] == [
        f"{grey}==1: no voxel size in the source; writing scale 1 (give --voxel-size and --unit)"
    ]


def test_verify_a_class_image_against_its_labels(
    tmp_path: Path, labels: tuple[str, np.ndarray]
) -> None:
    spec, data = labels
    out = tmp_path / "classes.zarr"
    split_classes(spec, out, class_names={3: "a", 7: "b"}, chunks=4, levels=2)
    checked = verify(out / "a", against=spec)
    assert checked.ok
    assert checked.compared_voxels == data.size
    with pytest.raises(InputError) as info:
        verify(out)
    assert str(info.value) == (
        f"{out}: a datatools split-classes output (verify checks convert outputs; verify each "
        f"class image, {out}/<class>)"
    )
    from datatools.patches import extract_patches

    patches = tmp_path / "p.h5"
    extract_patches(str(out / "a" / "0"), patches, size=4)
    with pytest.raises(InputError) as info:
        verify(patches)
    assert (
        str(info.value) == f"{patches}: a datatools patches output (verify checks convert outputs)"
    )


def test_classes_added_later_resume_with_another_memory_limit(
    tmp_path: Path, labels: tuple[str, np.ndarray]
) -> None:
    spec, data = labels
    out = tmp_path / "classes.zarr"
    split_classes(spec, out, class_names={3: "a", 7: "b"}, chunks=4, memory_limit=2**12)
    shutil.rmtree(out / "b")
    again = split_classes(spec, out, class_names={3: "a", 7: "b"}, chunks=4, memory_limit=2**16)
    assert again.complete
    np.testing.assert_array_equal(zarr.open_array(out / "b" / "0")[:], (data == 7).astype("u1"))


def test_a_split_classes_output_as_an_input_names_a_class(
    tmp_path: Path, labels: tuple[str, np.ndarray]
) -> None:
    spec, _ = labels
    out = tmp_path / "classes.zarr"
    split_classes(spec, out, chunks=4)
    with pytest.raises(InputError, match=r"name one as .*classes\.zarr/1000\)$"):
        convert(str(out), tmp_path / "again.zarr")


def test_info_counts_the_finished_classes_of_an_unfinished_split(
    tmp_path: Path, labels: tuple[str, np.ndarray]
) -> None:
    spec, _ = labels
    out = tmp_path / "classes.zarr"
    first = split_classes(spec, out, task=TaskSlice(0, 2), chunks=4, memory_limit=4096)
    assert not first.complete
    done = sum(r.complete for _, _, r in first.classes.values())
    shown = format_info(inspect(out)).splitlines()[0]
    assert shown == f"status       INCOMPLETE ({done}/3 classes complete) (split-classes)"
