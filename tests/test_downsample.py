"""Downsampling kernels and pyramid planning, against brute-force references made with loops."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from datatools import downsample as ds
from datatools.downsample import (
    METHODS,
    centred,
    downsample,
    level_factors,
    level_placement,
    pyramid_shapes,
)
from datatools.errors import OptionError
from tests.helpers import arange_volume

U64_MAX = 2**64 - 1
I64_MIN = -(2**63)


def _reduce(values: list[Any], method: str, dtype: np.dtype[Any]) -> Any:
    """One group's answer, by definition (Python numbers, exact fractions)."""
    if method == "nearest":
        return values[0]
    if method == "max":
        return max(values)
    if method == "mode":
        counts = Counter(values)
        top = max(counts.values())
        return min(v for v, c in counts.items() if c == top)
    if method == "median":
        ordered = sorted(values)
        half = len(ordered) // 2
        if len(ordered) % 2:
            return ordered[half]
        values = ordered[half - 1 : half + 1]
    mean = sum((Fraction(v) for v in values), Fraction(0)) / len(values)
    if dtype.kind == "f":
        return float(mean)
    return round(mean)  # Fraction rounds half to even, like np.rint


def reference(block: np.ndarray, factors: Sequence[int], method: str) -> np.ndarray:
    """Brute force: one explicit loop over output voxels, groups cut short at the edges."""
    out_shape = tuple(math.ceil(n / f) for n, f in zip(block.shape, factors, strict=True))
    out = np.zeros(out_shape, dtype=block.dtype)
    for index in itertools.product(*(range(n) for n in out_shape)):
        group = block[tuple(slice(i * f, (i + 1) * f) for i, f in zip(index, factors, strict=True))]
        values = [v.item() for v in group.reshape(-1)]
        if block.dtype == np.bool_:
            values = [int(v) for v in values]
        out[index] = _reduce(values, method, block.dtype)
    return out


def _block(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Arange-encoded; signed dtypes straddle zero so rounding of negatives is exercised.

    uint64 starts at 2**40 (label-like ids); the helpers' arange_volume overflows on uint64.
    """
    if dtype == "uint64":
        return np.arange(math.prod(shape), dtype=np.uint64).reshape(shape) + np.uint64(2**40)
    block = arange_volume(shape, dtype)
    if np.dtype(dtype).kind == "i":
        block = block - np.array(len(block.reshape(-1)) // 2, dtype=dtype)
    return block


CASES = [
    ((5, 6, 7), (2, 2, 2)),
    ((4, 4, 4), (2, 2, 2)),
    ((5, 6, 7), (1, 2, 2)),
    ((5, 6, 7), (2, 1, 3)),
    ((1, 9, 9), (2, 2, 2)),
    ((1, 9, 9), (1, 3, 2)),
    ((3, 5), (2, 2)),
    ((3, 5), (2, 3)),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int32", "float32", "uint64"])
@pytest.mark.parametrize(("shape", "factors"), CASES)
def test_matches_brute_force(
    shape: tuple[int, ...], factors: tuple[int, ...], dtype: str, method: str
) -> None:
    block = _block(shape, dtype)
    result = downsample(block, factors, method)
    expected = reference(block, factors, method)
    assert result.dtype == block.dtype
    assert result.shape == tuple(math.ceil(n / f) for n, f in zip(shape, factors, strict=True))
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("method", METHODS)
def test_small_tiles_give_the_same_answer(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    block = _block((5, 6, 7), "int32") // 3
    monkeypatch.setattr(ds, "_TILE_VOXELS", 5)
    np.testing.assert_array_equal(
        downsample(block, (2, 2, 2), method), reference(block, (2, 2, 2), method)
    )


def test_mean_known_answer_2d() -> None:
    block = np.arange(16, dtype=np.uint16).reshape(4, 4)
    # group means 2.5, 4.5, 10.5, 12.5 round half to even
    np.testing.assert_array_equal(downsample(block, (2, 2), "mean"), [[2, 4], [10, 12]])


def test_mean_of_each_2x2x2_block_exactly_on_many_tiles() -> None:
    block = arange_volume((4, 520, 604), "uint16")
    expected = np.rint(block.reshape(2, 2, 260, 2, 302, 2).mean(axis=(1, 3, 5)))
    result = downsample(block, (2, 2, 2), "mean")
    assert result.size > 2 * ds._TILE_VOXELS
    np.testing.assert_array_equal(result, expected.astype(np.uint16))


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("mean", [1, 4, 6]),  # [6, 7] -> 6.5 -> 6; edge padding would give 7, zeros 4
        ("median", [1, 4, 6]),
        ("max", [2, 5, 7]),
        ("mode", [0, 3, 6]),
        ("nearest", [0, 3, 6]),
    ],
)
def test_edge_group_is_not_padded(method: str, expected: list[int]) -> None:
    block = np.arange(8, dtype=np.uint8).reshape(1, 8)
    np.testing.assert_array_equal(downsample(block, (1, 3), method), [expected])


def test_edge_group_of_negatives_is_not_zero_padded() -> None:
    block = np.array([[-9, -8, -7, -5, -4]], dtype=np.int32)
    np.testing.assert_array_equal(downsample(block, (1, 3), "max"), [[-7, -4]])
    np.testing.assert_array_equal(downsample(block, (1, 3), "mean"), [[-8, -4]])  # -4.5 -> -4


def test_mean_rounds_negative_halves_to_even() -> None:
    block = np.array([[-3, -2, -2, -1, -1, 0, 0, 1]], dtype=np.int32)
    np.testing.assert_array_equal(downsample(block, (1, 2), "mean"), [[-2, -2, 0, 0]])


@pytest.mark.parametrize(
    ("values", "dtype", "expected"),
    [
        ([U64_MAX, U64_MAX - 1], "uint64", U64_MAX - 1),  # .5 -> even
        ([U64_MAX, U64_MAX], "uint64", U64_MAX),
        ([U64_MAX - 1, U64_MAX - 2], "uint64", U64_MAX - 1),
        ([I64_MIN, I64_MIN + 1], "int64", I64_MIN),
        ([I64_MIN, I64_MIN], "int64", I64_MIN),
        ([2**63 - 1, 2**63 - 1], "int64", 2**63 - 1),
    ],
)
def test_mean_of_64_bit_extremes_is_exact(values: list[int], dtype: str, expected: int) -> None:
    block = np.array([values], dtype=dtype)
    result = downsample(block, (1, 2), "mean")
    assert result.dtype == np.dtype(dtype)
    assert result.item() == expected


def test_mean_of_uint64_with_three_voxels() -> None:
    block = np.array([[U64_MAX, U64_MAX, U64_MAX - 1, U64_MAX - 1, U64_MAX - 1, U64_MAX]], "uint64")
    # max - 1/3 -> max; max - 2/3 -> max - 1
    assert downsample(block, (1, 3), "mean").tolist() == [[U64_MAX, U64_MAX - 1]]
    lowest = np.array([[I64_MIN, I64_MIN, I64_MIN, I64_MIN + 1, I64_MIN + 1, I64_MIN]], "int64")
    assert downsample(lowest, (1, 3), "mean").tolist() == [[I64_MIN, I64_MIN + 1]]


def test_median_of_uint64_even_count_is_exact() -> None:
    block = np.array([[U64_MAX, U64_MAX - 3, U64_MAX - 1, U64_MAX - 2]], "uint64")
    # middles max-2, max-1 -> max-1.5 -> max-1 (even)
    assert downsample(block, (1, 4), "median").item() == U64_MAX - 1


def test_mean_of_large_uint8_groups_does_not_overflow() -> None:
    block = np.full((2, 16, 17), 255, dtype=np.uint8)
    block[1] = 254
    np.testing.assert_array_equal(downsample(block, (1, 16, 17), "mean"), [[[255]], [[254]]])
    np.testing.assert_array_equal(downsample(block, (2, 16, 17), "mean"), [[[254]]])  # 254.5


def test_mean_of_float_is_averaged_in_float64() -> None:
    block = np.array([[2.0**24, 1.0, 1.0, 0.0]], dtype=np.float32)
    result = downsample(block, (1, 4), "mean")
    assert result.dtype == np.float32
    assert result.item() == 2.0**22 + 0.5  # a float32 sum would lose both 1.0s


@pytest.mark.parametrize(("method", "second"), [("median", 2.5), ("mean", 2.5), ("max", 3.0)])
def test_float_group_with_nan_is_nan(method: str, second: float) -> None:
    block = np.array([[1.0, np.nan, 2.0, 3.0]], dtype=np.float32)
    result = downsample(block, (1, 2), method)
    assert np.isnan(result[0, 0])
    assert result[0, 1] == second


def test_bool_mean_and_median_need_a_strict_majority() -> None:
    block = np.array([[1, 0, 1, 1, 0, 0, 0, 0, 1, 1]], dtype=bool)
    expected = [[False, True, False, False, True]]
    for method in ("mean", "median", "mode"):
        result = downsample(block, (1, 2), method)
        assert result.dtype == np.bool_
        np.testing.assert_array_equal(result, expected)
    np.testing.assert_array_equal(downsample(block, (1, 3), "mean"), [[True, False, False, True]])
    np.testing.assert_array_equal(
        downsample(block, (1, 2), "max"), [[True, True, False, False, True]]
    )


def test_mode_of_large_ids(rng: np.random.Generator) -> None:
    ids = np.array([2**40 + 7, 2**41 + 3, 2**63 + 5, 2**64 - 1], dtype=np.uint64)
    block = ids[rng.integers(0, len(ids), size=(5, 6, 7))]
    np.testing.assert_array_equal(
        downsample(block, (2, 2, 2), "mode"), reference(block, (2, 2, 2), "mode")
    )
    assert downsample(block, (2, 2, 2), "mode").dtype == np.uint64


def test_mode_ties_go_to_the_smallest_value() -> None:
    big = 2**40
    block = np.array(
        [[big + 9, big + 2, big + 9, big + 2, big + 5, big + 5, big + 1, big + 1]], dtype=np.uint64
    ).reshape(1, 2, 4)
    # group 0: {9, 2, 5, 5} -> 5 (most frequent); group 1: {9, 2, 1, 1} -> 1
    np.testing.assert_array_equal(downsample(block, (1, 2, 2), "mode"), [[[big + 5, big + 1]]])
    tie = np.array([[7, 3, 3, 7, 5, 1]], dtype=np.uint32)
    np.testing.assert_array_equal(downsample(tie, (1, 6), "mode"), [[3]])


def test_nearest_is_strided_copy() -> None:
    block = arange_volume((5, 6, 7), "uint16")
    result = downsample(block, (2, 1, 3), "nearest")
    np.testing.assert_array_equal(result, block[::2, ::1, ::3])
    assert not np.shares_memory(result, block)


@pytest.mark.parametrize("method", METHODS)
def test_channel_axis_is_kept(method: str) -> None:
    block = _block((3, 5, 6, 7), "uint16")
    result = downsample(block, (1, 2, 2, 2), method)
    assert result.shape == (3, 3, 3, 4)
    for c in range(3):
        np.testing.assert_array_equal(result[c], reference(block[c], (2, 2, 2), method))


def test_factors_of_one_copy_the_block() -> None:
    block = arange_volume((3, 4, 5), "uint16")
    for method in METHODS:
        np.testing.assert_array_equal(downsample(block, (1, 1, 1), method), block)


def test_empty_block_gives_empty_output() -> None:
    assert downsample(np.zeros((0, 4, 4), np.uint8), (2, 2, 2), "mean").shape == (0, 2, 2)


def test_unknown_method() -> None:
    block = np.zeros((2, 2), np.uint8)
    message = "--downsample average: unknown (choose mean, median, mode, nearest, max)"
    with pytest.raises(OptionError) as info:
        downsample(block, (2, 2), "average")
    assert str(info.value) == message
    with pytest.raises(OptionError) as info:
        centred("average")
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("factors", "message"),
    [
        ((2, 2), "--factors 2,2: 2 values for 3 axes"),
        ((2, 0, 2), "--factors 2,0,2: every value must be >= 1"),
        ((2, 2, -1), "--factors 2,2,-1: every value must be >= 1"),
    ],
)
def test_bad_factors(factors: tuple[int, ...], message: str) -> None:
    with pytest.raises(OptionError) as info:
        downsample(np.zeros((2, 2, 2), np.uint8), factors, "mean")
    assert str(info.value) == message
    with pytest.raises(OptionError) as info:
        level_factors((1.0, 1.0, 1.0), factors=factors)
    assert str(info.value) == message


def test_centred_and_placement() -> None:
    assert [centred(m) for m in METHODS] == [True, True, True, False, True]
    scale, translation = level_placement((40.0, 8.0, 8.0), (100.0, 0.0, -4.0), (1, 4, 4), "mean")
    assert scale == (40.0, 32.0, 32.0)
    assert translation == (100.0, 12.0, 8.0)  # shifted by (4 - 1) / 2 voxels of 8
    scale, translation = level_placement((40.0, 8.0, 8.0), (100.0, 0.0, -4.0), (2, 4, 4), "nearest")
    assert scale == (80.0, 32.0, 32.0)
    assert translation == (100.0, 0.0, -4.0)


@pytest.mark.parametrize(
    ("voxel_size", "expected"),
    [
        ((40, 8, 8), (1, 2, 2)),
        ((40, 16, 16), (1, 2, 2)),
        ((40, 32, 32), (2, 2, 2)),
        ((1, 1, 1), (2, 2, 2)),
        ((3, 2, 2), (2, 2, 2)),  # 2 is not < 3 / 1.5
        ((3, 1.99, 2), (1, 2, 1)),
        ((8, 8, 40), (2, 2, 1)),
        ((5, 10), (2, 1)),
        ((0.5,), (2,)),
    ],
)
def test_level_factors_auto(voxel_size: tuple[float, ...], expected: tuple[int, ...]) -> None:
    assert level_factors(voxel_size) == expected


def test_level_factors_explicit() -> None:
    assert level_factors((40, 8, 8), factors=(1, 3, 3)) == (1, 3, 3)


def test_level_factors_bad_voxel_size() -> None:
    with pytest.raises(OptionError) as info:
        level_factors((40, 0, 8))
    assert str(info.value) == "--voxel-size 40,0,8: every value must be > 0"


def test_pyramid_auto_isotropic() -> None:
    levels = pyramid_shapes(
        (64, 1000, 1000), (32, 256, 256), (1, 1, 1), levels="auto", spatial=(True, True, True)
    )
    assert levels == [
        ((64, 1000, 1000), (1, 1, 1)),
        ((32, 500, 500), (2, 2, 2)),
        ((16, 250, 250), (2, 2, 2)),
    ]


def test_pyramid_auto_anisotropic_halves_finer_axes_first() -> None:
    levels = pyramid_shapes(
        (100, 1000, 1000), (64, 128, 128), (40, 8, 8), levels="auto", spatial=(True, True, True)
    )
    assert levels == [
        ((100, 1000, 1000), (1, 1, 1)),
        ((100, 500, 500), (1, 2, 2)),  # voxels 40, 16, 16 after
        ((100, 250, 250), (1, 2, 2)),  # 40, 32, 32: near-isotropic
        ((50, 125, 125), (2, 2, 2)),
    ]


def test_pyramid_auto_with_channel_axis() -> None:
    levels = pyramid_shapes(
        (3, 64, 512, 512),
        (1, 64, 128, 128),
        (40, 10, 10),
        levels="auto",
        spatial=(False, True, True, True),
    )
    assert levels == [
        ((3, 64, 512, 512), (1, 1, 1, 1)),
        ((3, 64, 256, 256), (1, 1, 2, 2)),
        ((3, 64, 128, 128), (1, 1, 2, 2)),
    ]


def test_pyramid_fixed_levels_2d_and_explicit_factors() -> None:
    assert pyramid_shapes((9, 20), (4, 4), (1, 1), levels=4, spatial=(True, True)) == [
        ((9, 20), (1, 1)),
        ((5, 10), (2, 2)),
        ((3, 5), (2, 2)),
        ((2, 3), (2, 2)),
    ]
    assert pyramid_shapes(
        (2, 9, 20), (1, 4, 4), (1, 1), levels=3, factors=(1, 3), spatial=(False, True, True)
    ) == [((2, 9, 20), (1, 1, 1)), ((2, 9, 7), (1, 1, 3)), ((2, 9, 3), (1, 1, 3))]
    assert pyramid_shapes((5, 5), (8, 8), (1, 1), levels=1, spatial=(True, True)) == [
        ((5, 5), (1, 1))
    ]
    assert pyramid_shapes((5, 5), (8, 8), (1, 1), levels="auto", spatial=(True, True)) == [
        ((5, 5), (1, 1))
    ]


@pytest.mark.parametrize("levels", [0, -2])
def test_pyramid_bad_levels(levels: int) -> None:
    with pytest.raises(OptionError) as info:
        pyramid_shapes((8, 8), (4, 4), (1, 1), levels=levels, spatial=(True, True))
    assert str(info.value) == f"--levels {levels}: must be >= 1 or auto"


def test_pyramid_auto_that_never_fits() -> None:
    with pytest.raises(OptionError) as info:
        pyramid_shapes(
            (20, 8, 8), (4, 4, 4), (1, 1, 1), levels="auto", factors=(1, 2, 2), spatial=[True] * 3
        )
    assert str(info.value) == (
        "--factors 1,2,2: --levels auto never fits shape (20, 1, 1) into one chunk (4, 4, 4) "
        "(give --levels N or more factors > 1)"
    )


def test_pyramid_bad_chunks_and_factors() -> None:
    with pytest.raises(OptionError) as info:
        pyramid_shapes((8, 8), (4, 0), (1, 1), levels="auto", spatial=(True, True))
    assert str(info.value) == "--chunks 4,0: every value must be > 0"
    with pytest.raises(OptionError) as info:
        pyramid_shapes((8, 8), (4, 4), (1, 1), levels=2, factors=(2, 2, 2), spatial=(True, True))
    assert str(info.value) == "--factors 2,2,2: 3 values for 2 axes"


def test_levels_that_would_not_shrink_are_refused() -> None:
    spatial = (True, True)
    assert len(pyramid_shapes((4, 4), (1, 1), (1, 1), levels=3, spatial=spatial)) == 3
    with pytest.raises(OptionError) as info:
        pyramid_shapes((4, 4), (1, 1), (1, 1), levels=5, spatial=spatial)
    assert str(info.value) == (
        "--levels 5: level 3 would repeat level 2 (shape 1 x 1); give --levels 3 or less, or "
        "--levels auto, and factors > 1"
    )
    with pytest.raises(OptionError, match="--levels 2: level 1 would repeat level 0"):
        pyramid_shapes((4, 4), (1, 1), (1, 1), levels=2, factors=(1, 1), spatial=spatial)


def test_auto_factors_may_repeat_a_level_on_the_way_to_one_chunk() -> None:
    """Thin anisotropic volumes: y and x reach one voxel before z is coarse enough to halve."""
    levels = pyramid_shapes(
        (200, 4, 4), (16, 16, 16), (10.0, 1.0, 1.0), levels="auto", spatial=(True,) * 3
    )
    assert levels[-1][0][0] <= 16
    assert any(a[0] == b[0] for a, b in itertools.pairwise(levels))  # a repeated level, allowed


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "uint32", "int32"])
def test_mean_at_the_limits_of_the_dtype(dtype: str) -> None:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(7)
    block = rng.choice(
        np.array([info.min, info.min + 1, -1 if info.min else 1, 0, info.max - 1, info.max]),
        size=(6, 10, 12),
    ).astype(dtype)
    block[:2] = info.max
    block[2:4] = info.min
    for factors in [(2, 2, 2), (1, 2, 2), (2, 1, 1)]:
        np.testing.assert_array_equal(
            downsample(block, factors, "mean"), reference(block, factors, "mean")
        )
