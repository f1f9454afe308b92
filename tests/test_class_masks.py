"""convert --split-classes: one 0/1 multiscale image per label value."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from ome_zarr_models.v04.image import Image as Image04
from ome_zarr_models.v05.image import Image as Image05

from datatools import class_masks, target
from datatools.class_masks import parse_class_names, split_classes
from datatools.errors import InputError, OptionError
from datatools.executor import TaskSlice


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
    tmp_path: Path, labels: tuple[str, np.ndarray], zarr_format: int
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
    assert target.is_complete(out)
    assert sorted(result.classes) == ["1000", "3", "7"]
    for name, (value, count, _) in result.classes.items():
        group = zarr.open_group(out / name, mode="r")
        mask = np.asarray(group["0"][:])
        np.testing.assert_array_equal(mask, (data == value).astype(np.uint8))
        assert count == int((data == value).sum())
        assert group.attrs["datatools"]["voxel_count"] == count
        (Image05 if zarr_format == 3 else Image04).from_zarr(group)
        attrs = group.attrs["ome"] if zarr_format == 3 else group.attrs
        ms = attrs["multiscales"][0]
        assert ms["axes"][0]["unit"] == "nanometer"
        assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == pytest.approx(
            [40, 8, 8]
        )


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


def test_two_tasks_that_each_finish_a_different_class_complete_the_group(
    tmp_path: Path, labels: tuple[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Task 0 finishes class 3 and task 1 finishes class 7: neither sees every class finish
    in its own convert calls, yet the last one done marks the group complete."""
    spec, data = labels
    out = tmp_path / "classes.zarr"
    names = {3: "a", 7: "b"}
    turns = [(1, "a"), (0, "a"), (0, "b"), (1, "b")]
    step = [0]
    turn = threading.Condition()
    real_convert = class_masks.convert

    def convert_in_turn(source: Any, path: Path, **kwargs: Any) -> Any:
        me = (kwargs["task"].index, Path(path).name)
        with turn:
            assert turn.wait_for(lambda: turns[step[0]] == me, timeout=60)
        try:
            return real_convert(source, path, **kwargs)
        finally:
            with turn:
                step[0] += 1
                turn.notify_all()

    monkeypatch.setattr(class_masks, "convert", convert_in_turn)
    results: dict[int, Any] = {}

    def run(index: int) -> None:
        results[index] = split_classes(
            spec,
            out,
            class_names=names,
            chunks=4,
            task=TaskSlice(index, 2),
            workers=1,
            memory_limit=4096,  # several units, so each task has a share
        )

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert step[0] == len(turns)
    assert not results[0].complete
    assert results[1].complete
    assert target.is_complete(out)
    for value, name in names.items():
        group = zarr.open_group(out / name, mode="r")
        np.testing.assert_array_equal(group["0"][:], (data == value).astype(np.uint8))
        assert group.attrs["datatools"]["class_value"] == value
        assert group.attrs["datatools"]["voxel_count"] == int((data == value).sum())
