from __future__ import annotations

import numpy as np
import pytest

from datatools.errors import OptionError, RoiError
from datatools.geometry import Box, RoiSpec, count_tiles, normalize_chunks, resolve_roi, tile_box


def test_box_basics() -> None:
    box = Box((1, 2, 3), (4, 6, 8))
    assert box.shape == (3, 4, 5)
    assert box.size == 60
    assert box.slices() == (slice(1, 4), slice(2, 6), slice(3, 8))
    assert box.intersect(Box((0, 0, 0), (2, 3, 4))) == Box((1, 2, 3), (2, 3, 4))
    assert box.intersect(Box((5, 0, 0), (6, 9, 9))) is None
    assert Box((-2, 0), (3, 9)).clip((2, 5)) == Box((0, 0), (2, 5))
    assert box.relative_to((1, 2, 3)) == Box((0, 0, 0), (3, 4, 5))
    assert box.to_text() == "1:4,2:6,3:8"
    assert Box.from_shape((2, 3)).contains(Box((0, 1), (2, 3)))


@pytest.mark.parametrize(
    ("text", "bounds"),
    [
        ("100:612,:,2048:", ((100, 612), (None, None), (2048, None))),
        (":100,16:", ((None, 100), (16, None))),
        (" 1:2 , , 3:4", ((1, 2), (None, None), (3, 4))),
    ],
)
def test_roi_parse(text: str, bounds: tuple[tuple[int | None, int | None], ...]) -> None:
    assert RoiSpec.parse(text).bounds == bounds


def test_roi_resolve_keeps_channels_whole() -> None:
    box = resolve_roi(RoiSpec.parse("1:3,:,5:"), (2, 4, 6, 8), "czyx")
    assert box == Box((0, 1, 0, 5), (2, 3, 6, 8))


def test_roi_from_axis_options() -> None:
    spec = RoiSpec.from_axis_bounds({"z": (2, None), "y": (None, None), "x": (None, 4)})
    assert spec is not None
    assert resolve_roi(spec, (10, 20, 30), "zyx") == Box((2, 0, 0), (10, 20, 4))
    assert RoiSpec.from_axis_bounds({"z": (None, None)}) is None


@pytest.mark.parametrize(
    ("text", "shape", "axes", "message"),
    [
        ("0:5,0:5", (10, 10, 10), "zyx", "gives 2 axes, volume shape 10 x 10 x 10 (z,y,x) has 3"),
        ("5:5,:,:", (10, 10, 10), "zyx", "start 5 >= end 5 (empty region)"),
        ("6:2,:,:", (10, 10, 10), "zyx", "start 6 >= end 2"),
        ("0:11,:,:", (10, 10, 10), "zyx", "[0, 11) lies outside the volume, shape 10 x 10 x 10"),
        ("-1:3,:", (10, 10), "yx", "lies outside the volume"),
        ("a:3,:", (10, 10), "yx", "non-integer bound"),
        ("1:2:3,:", (10, 10), "yx", "is not start:stop"),
    ],
)
def test_roi_errors(text: str, shape: tuple[int, ...], axes: str, message: str) -> None:
    with pytest.raises(RoiError, match=None) as info:
        resolve_roi(RoiSpec.parse(text), shape, axes)
    assert message in str(info.value)


def test_roi_axis_missing() -> None:
    spec = RoiSpec.from_axis_bounds({"z": (0, 1)})
    with pytest.raises(RoiError, match="has no z axis"):
        resolve_roi(spec, (10, 10), "yx")


def test_normalize_chunks() -> None:
    assert normalize_chunks(64, (10, 100, 200)) == (10, 64, 64)
    assert normalize_chunks((32, 32), (5, 100, 100)) == (1, 32, 32)
    with pytest.raises(OptionError, match="every value must be > 0"):
        normalize_chunks((0, 4), (4, 4))
    with pytest.raises(OptionError, match="3 values for an array with 2 axes"):
        normalize_chunks((1, 2, 3), (4, 4))


def test_tiles_cover_every_voxel_once(rng: np.random.Generator) -> None:
    for _ in range(200):
        ndim = int(rng.integers(1, 5))
        shape = tuple(int(s) for s in rng.integers(1, 13, size=ndim))
        start = tuple(int(rng.integers(0, s)) for s in shape)
        stop = tuple(int(rng.integers(a + 1, s + 1)) for a, s in zip(start, shape, strict=True))
        box = Box(start, stop)
        tile = tuple(int(t) for t in rng.integers(1, 6, size=ndim))
        hits = np.zeros(shape, dtype=np.int32)
        tiles = list(tile_box(box, tile))
        assert len(tiles) == count_tiles(box, tile)
        for t in tiles:
            assert box.contains(t)
            assert all(s <= ts for s, ts in zip(t.shape, tile, strict=True))
            # aligned to the grid anchored at box.start
            assert all((a - b) % ts == 0 for a, b, ts in zip(t.start, box.start, tile, strict=True))
            hits[t.slices()] += 1
        expected = np.zeros(shape, dtype=np.int32)
        expected[box.slices()] = 1
        np.testing.assert_array_equal(hits, expected)
