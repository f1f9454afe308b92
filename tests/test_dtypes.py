"""Casts to an output dtype against a brute-force reference: each value taken exactly (Python
ints and fractions), rounded half to even and clipped as ``--allow-lossy-cast`` promises, for
every source and target dtype, at and just past every bound."""

from __future__ import annotations

import logging
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from datatools.cli.main import cli
from datatools.dtypes import cast, lossy_cast
from datatools.errors import OptionError
from datatools.geometry import Box

INTEGERS = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
FLOATS = ["float16", "float32", "float64"]


def _range(dtype: np.dtype[Any]) -> tuple[int, int]:
    if dtype.kind == "b":
        return 0, 1
    return int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)


def _float_candidates(dtype: np.dtype[Any]) -> list[Any]:
    """Special values, halves, the issue's values, and every integer bound and float maximum
    as ``dtype`` rounds it, with its two neighbours on each side."""
    plain = [0.0, -0.0, 0.5, -0.5, 1.5, 2.5, -2.5, 0.49999997, 100.4, -100.6, 200.0]
    plain += [3e9, 1e10, -3e9, 1e-8, 1e-40, 5e-324, math.nan, math.inf, -math.inf]
    bounds: list[float] = []
    for name in INTEGERS:
        low, high = _range(np.dtype(name))
        bounds += [low, high, low - 0.5, high + 0.5, low - 1, high + 1]
    for name in FLOATS:
        top = float(np.finfo(name).max)
        bounds += [top, -top]
    values: list[Any] = []
    with np.errstate(over="ignore"):
        for value in plain + bounds:
            values.append(dtype.type(value))
        for value in bounds:
            rounded = dtype.type(value)
            for direction in (math.inf, -math.inf):
                step = rounded
                for _ in range(2):
                    step = np.nextafter(step, dtype.type(direction))
                    values.append(step)
    values += [np.finfo(dtype).max, -np.finfo(dtype).max, np.finfo(dtype).smallest_subnormal]
    return values


def _int_candidates(dtype: np.dtype[Any]) -> list[Any]:
    """Every integer bound and its neighbours, the largest finite float16 and past it, and
    integers that float16, float32 and float64 cannot hold; those ``dtype`` holds."""
    if dtype.kind == "b":
        return [np.False_, np.True_]
    wanted = {0, 1, -1, 2**11 + 1, 2**24 + 1, 2**53, 2**53 + 1, 2**62 + 1, -(2**53) - 1}
    for name in INTEGERS:
        low, high = _range(np.dtype(name))
        wanted |= {low - 1, low, low + 1, high - 1, high, high + 1}
    wanted |= {s * v for s in (1, -1) for v in (65504, 65505, 65519, 65520, 65536)}
    low, high = _range(dtype)
    return [dtype.type(v) for v in sorted(wanted) if low <= v <= high]


def _exactly(value: Any) -> Fraction:
    return Fraction(int(value)) if value.dtype.kind in "biu" else Fraction(float(value))


def _nearest_float(value: Fraction, dtype: np.dtype[Any]) -> Any:
    """The ``dtype`` float nearest ``value`` (|value| within its finite range), ties to even."""
    guess = np.float64(value).astype(dtype)
    with np.errstate(over="ignore"):  # past the largest finite value: inf, left out below
        nearby = [guess] + [np.nextafter(guess, dtype.type(d)) for d in (-np.inf, np.inf)]
    uint = np.dtype(f"uint{dtype.itemsize * 8}")

    def distance(c: Any) -> tuple[Fraction, int]:
        return abs(Fraction(float(c)) - value), int(np.array(c).view(uint)) & 1

    return min((c for c in nearby if np.isfinite(c)), key=distance)


def _reference(value: Any, dtype: np.dtype[Any]) -> tuple[Any, bool]:
    """What a lossy cast of ``value`` to ``dtype`` gives, and whether that changed it."""
    special = value.dtype.kind == "f" and not np.isfinite(value)
    if dtype.kind in "biu":
        low, high = _range(dtype)
        if special:
            result = 0 if np.isnan(value) else (high if value > 0 else low)
            return result, True
        exact = _exactly(value)
        result = min(max(round(exact), low), high)
        return result, result != exact
    if special:
        return float(value), False
    exact = _exactly(value)
    top = Fraction(float(np.finfo(dtype).max))
    result = _nearest_float(max(min(exact, top), -top), dtype)
    return float(result), Fraction(float(result)) != exact


def _same(got: Any, expected: Any) -> bool:
    if isinstance(expected, float) and math.isnan(expected):
        return bool(np.isnan(got))
    return bool(got == expected) if isinstance(expected, float) else int(got) == expected


@pytest.mark.parametrize("target", INTEGERS + FLOATS)
@pytest.mark.parametrize("source", INTEGERS + FLOATS)
def test_every_cast_matches_the_reference(source: str, target: str) -> None:
    dtype, target_dtype = np.dtype(source), np.dtype(target)
    values = _float_candidates(dtype) if dtype.kind == "f" else _int_candidates(dtype)
    data = np.array(values, dtype=dtype)
    expected = [_reference(v, target_dtype) for v in data]
    box = Box((0,), (data.size,))

    converted = cast(data, target_dtype, True, "<array>", box)
    assert converted.dtype == target_dtype
    wrong = [
        (v.item(), c.item(), e)
        for v, c, (e, _) in zip(data, converted, expected, strict=True)
        if not _same(c, e)
    ]
    assert wrong == [], f"{source} -> {target}: (value, cast, reference) {wrong[:6]}"

    counted, changed = lossy_cast(data, target_dtype)
    np.testing.assert_array_equal(counted, converted)
    assert changed == sum(e[1] for e in expected)

    # without --allow-lossy-cast: the values it keeps exactly pass, any other is refused
    exact = np.array([not e[1] for e in expected])
    np.testing.assert_array_equal(
        cast(data[exact], target_dtype, False, "<array>", box), converted[exact]
    )
    for index in np.flatnonzero(~exact)[:20]:
        with pytest.raises(OptionError, match=f"--dtype {target}: "):
            cast(data[index : index + 1], target_dtype, False, "<array>", Box((0,), (1,)))


def test_an_int_holds_the_first_value_it_cannot_hold_by_name() -> None:
    data = np.array([5.0, 2.0**31], dtype=np.float32)  # float32(2**31 - 1) is 2**31
    with pytest.raises(OptionError) as caught:
        cast(data, np.dtype("int32"), False, "<array>", Box((0,), (2,)))
    assert str(caught.value) == (
        "--dtype int32: <array> holds 2147483648.0 at output voxel (1,), which int32 cannot "
        "hold exactly (add --allow-lossy-cast to round and clip)"
    )


ISSUE_VALUES = [3e9, 1e10, np.inf, -3e9, 100.4, 200.0]
ISSUE_CASES = {  # what each voxel becomes, and how many voxels that changes
    "int32": ([2**31 - 1, 2**31 - 1, 2**31 - 1, -(2**31), 100, 200], 5),
    "uint32": ([3_000_000_000, 2**32 - 1, 2**32 - 1, 0, 100, 200], 4),
    "int64": ([3_000_000_000, 10_000_000_000, 2**63 - 1, -3_000_000_000, 100, 200], 2),
    "uint64": ([3_000_000_000, 10_000_000_000, 2**64 - 1, 0, 100, 200], 3),
}


@pytest.mark.parametrize("target", sorted(ISSUE_CASES))
def test_convert_clips_large_floats_to_wide_integers_and_verify_agrees(
    tmp_path: Path, target: str, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "f.zarr"
    data = np.array(ISSUE_VALUES, dtype=np.float32).reshape(1, 1, 6)
    zarr.create_array(source, shape=data.shape, chunks=data.shape, dtype=data.dtype)[:] = data
    out = tmp_path / "o.zarr"
    runner = CliRunner()
    with caplog.at_level(logging.WARNING):
        result = runner.invoke(
            cli, ["convert", str(source), str(out), "--dtype", target, "--allow-lossy-cast"]
        )
    assert result.exit_code == 0, result.output
    written = np.asarray(zarr.open_array(out / "0", mode="r")[:])
    assert written.dtype == np.dtype(target)
    values, changed = ISSUE_CASES[target]
    assert [int(v) for v in written.ravel()] == values
    assert caplog.messages[-1] == (
        f"{source}: --allow-lossy-cast changed {changed} voxels (rounded, clipped to the "
        f"{target} range, or NaN set to 0)"
    )
    checked = runner.invoke(cli, ["verify", str(out), "--against", str(source)])
    assert checked.exit_code == 0, checked.output
