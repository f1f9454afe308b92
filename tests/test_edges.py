"""Edge modes: exactly numpy's np.pad, reading only in-bounds voxels; shift and drop."""

from __future__ import annotations

import itertools
from typing import Any, Literal

import numpy as np
import pytest

from datatools.edges import (
    check_edge,
    check_fill,
    mirror_index,
    place_box,
    place_origins,
    read_box,
)
from datatools.errors import OptionError
from datatools.geometry import Box
from datatools.sources import ArrayVolume
from tests.helpers import PadMode, RecordingVolume, arange_volume


def padded_window(data: np.ndarray, box: Box, mode: PadMode, fill: int = 0) -> np.ndarray:
    """The reference: np.pad the whole array enough, then cut ``box``."""
    before = [max(0, -a) for a in box.start]
    after = [max(0, b - n) for b, n in zip(box.stop, data.shape, strict=True)]
    kwargs: dict[str, Any] = {"constant_values": fill} if mode == "constant" else {}
    padded: np.ndarray = np.pad(data, list(zip(before, after, strict=True)), mode=mode, **kwargs)
    return padded[box.shift(before).slices()]


@pytest.mark.parametrize("mode", ["symmetric", "reflect"])
def test_mirror_index_matches_np_pad(mode: Literal["symmetric", "reflect"]) -> None:
    for extent, before, after in itertools.product(range(1, 7), range(0, 16), (0, 3, 15)):
        expected = np.pad(np.arange(extent), (before, after), mode=mode)
        got = mirror_index(np.arange(-before, extent + after), extent, mode)
        np.testing.assert_array_equal(got, expected, err_msg=f"{extent=} {before=} {after=}")


@pytest.mark.parametrize("mode", ["symmetric", "reflect", "constant"])
def test_read_box_equals_np_pad(mode: PadMode, rng: np.random.Generator) -> None:
    data = arange_volume((5, 6, 7))
    vol = RecordingVolume(data)
    boxes = [
        Box((-3, -13, 4), (2, 9, 20)),
        Box((-11, -1, -8), (9, 7, 16)),
        Box((1, 1, 1), (4, 5, 6)),
    ]
    for _ in range(40):
        start = rng.integers(-12, 8, size=3)
        boxes.append(Box(tuple(start), tuple(start + rng.integers(1, 20, size=3))))
    for box in boxes:
        vol.reads.clear()
        got = read_box(vol, box, mode, fill=7)
        np.testing.assert_array_equal(got, padded_window(data, box, mode, 7), err_msg=str(box))
        assert got.dtype == data.dtype
        assert len(vol.reads) <= 1
        for read in vol.reads:
            assert Box.from_shape(data.shape).contains(read)
            assert read.size <= box.size


def test_read_box_wider_than_volume_and_ndarray_source() -> None:
    data = arange_volume((2, 3), "uint8")
    box = Box((-5, -7), (9, 10))
    for mode in ("symmetric", "reflect", "constant"):
        np.testing.assert_array_equal(read_box(data, box, mode), padded_window(data, box, mode))


def test_read_box_bounds_mirror_at_roi_border_not_volume() -> None:
    data = arange_volume((6, 10))
    roi = Box((1, 2), (5, 7))
    box = Box((-2, 0), (4, 12))
    got = read_box(ArrayVolume(data), box, "symmetric", bounds=roi)
    expected = padded_window(data[roi.slices()], box.relative_to(roi.start), "symmetric")
    np.testing.assert_array_equal(got, expected)


def test_read_box_inside_is_plain_read() -> None:
    data = arange_volume((4, 5))
    np.testing.assert_array_equal(read_box(data, Box((1, 1), (3, 4)), "reflect"), data[1:3, 1:4])


def test_read_box_channel_axis_kept_whole() -> None:
    data = arange_volume((2, 4, 5))
    got = read_box(ArrayVolume(data, "cyx"), Box((0, -2, 3), (2, 3, 8)), "reflect")
    expected = np.pad(data, [(0, 0), (2, 0), (0, 3)], mode="reflect")[:, 0:5, 3:8]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("mode", ["symmetric", "reflect", "constant"])
@pytest.mark.parametrize(
    "box",
    [Box((1, 1, 1), (4, 5, 6)), Box((-3, 2, 4), (2, 5, 9)), Box((-2, -9, -1), (7, 8, 9))],
    ids=["inside", "two-axes", "every-axis"],
)
def test_read_box_fills_out_in_place(mode: PadMode, box: Box) -> None:
    data = arange_volume((5, 6, 7))
    buffer = np.full((3, *box.shape), 9999, dtype=data.dtype)
    row = buffer[1]
    assert read_box(ArrayVolume(data), box, mode, fill=7, out=row) is row
    np.testing.assert_array_equal(row, padded_window(data, box, mode, 7))
    np.testing.assert_array_equal(buffer[[0, 2]], 9999)  # nothing else touched
    with pytest.raises(ValueError, match=r"read_box: out of shape \(2, 2\) for a box of shape"):
        read_box(data, box, mode, out=np.empty((2, 2), data.dtype))


def test_read_box_refuses_plan_modes_outside() -> None:
    with pytest.raises(ValueError, match="cannot read outside"):
        read_box(arange_volume((4, 4)), Box((-1, 0), (2, 2)), "shift")


def test_place_box_shift_and_drop() -> None:
    bounds = Box((0, 0), (10, 8))
    assert place_box(Box((-2, 6), (2, 10)), bounds, "shift") == Box((0, 4), (4, 8))
    assert place_box(Box((-2, 6), (2, 10)), bounds, "drop") is None
    assert place_box(Box((2, 2), (4, 4)), bounds, "drop") == Box((2, 2), (4, 4))
    assert place_box(Box((-2, 6), (2, 10)), bounds, "symmetric") == Box((-2, 6), (2, 10))
    with pytest.raises(
        OptionError, match=r"^--edge shift: a box of 9 voxels does not fit in the 8"
    ):
        place_box(Box((0, 0), (3, 9)), bounds, "shift")


def test_place_origins_vectorised() -> None:
    origins = np.array([[-1, 0], [3, 3], [8, 7]])
    placed, keep = place_origins(origins, (3, 2), Box((0, 0), (10, 8)), "shift")
    np.testing.assert_array_equal(placed, [[0, 0], [3, 3], [7, 6]])
    assert keep.all()
    _, keep = place_origins(origins, (3, 2), Box((0, 0), (10, 8)), "drop")
    np.testing.assert_array_equal(keep, [False, True, False])


def test_check_edge_and_fill() -> None:
    assert check_edge("reflect") == "reflect"
    with pytest.raises(
        OptionError,
        match=r"^--edge mirror: unknown edge mode \(choose symmetric, reflect, constant, shift, "
        r"drop\)$",
    ):
        check_edge("mirror")
    check_fill(255, np.dtype("uint8"))
    check_fill(0.5, np.dtype("float32"))
    with pytest.raises(OptionError, match=r"^--fill 300: not a value of the data type uint8$"):
        check_fill(300, np.dtype("uint8"))
    with pytest.raises(OptionError, match=r"^--fill 1.5: not a value of the data type int16$"):
        check_fill(1.5, np.dtype("int16"))
