"""Data types datatools reads and writes: bool, integer and float (no complex, structured,
string or object data), and the cast of a block to an output dtype.

A cast that cannot hold every value exactly rounds half to even and clips to the output's range
(``--allow-lossy-cast``), as the per-voxel rule says, for every width:

- to an integer (bool is the range 0..1): the rounded value, or the nearest bound when it lies
  outside; +-inf go to the bounds, NaN becomes 0;
- to a float: the nearest value, or the largest finite value (with its sign) for finite values
  beyond it; +-inf and NaN stay.

Bounds are compared before the cast, in the source dtype, against the innermost source value
that the output can hold (``float32(2**31 - 1)`` is ``2**31``, which int32 cannot hold), so no
value wraps around and numpy never warns.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datatools.errors import OptionError
from datatools.geometry import Box

SUPPORTED_KINDS = "biuf"
"""numpy dtype kinds datatools handles: bool, signed and unsigned integer, float."""


def is_supported(dtype: np.dtype[Any]) -> bool:
    """Whether ``dtype`` is a plain bool, integer or float type (not structured)."""
    return dtype.kind in SUPPORTED_KINDS and dtype.fields is None


Array = np.ndarray[Any, Any]


def cast(data: Array, dtype: np.dtype[Any], lossy: bool, spec: str, box: Box) -> Array:
    """``data`` in ``dtype``: exact casts always; others only when every value fits exactly,
    or with ``lossy`` (values rounded and clipped to the dtype's range, see the module
    docstring; NaN becomes 0 for integers).

    Raises:
        OptionError: a value does not fit; names the first one and its output voxel.
    """
    converted, changed = _convert(data, dtype)
    if lossy or changed is None or not changed.any():
        return converted
    if dtype.kind in "iu":
        where = tuple(int(i) for i in np.argwhere(changed)[0])
        voxel = tuple(a + w for a, w in zip(box.start, where, strict=True))
        raise OptionError(
            f"--dtype {dtype}: {spec} holds {data[where].item()!r} at output voxel {voxel}, "
            f"which {dtype} cannot hold exactly (add --allow-lossy-cast to round and clip)"
        )
    raise OptionError(
        f"--dtype {dtype}: casting {data.dtype} data from {spec} to {dtype} loses precision "
        "(add --allow-lossy-cast)"
    )


def lossy_cast(data: Array, dtype: np.dtype[Any]) -> tuple[Array, int]:
    """``data`` rounded and clipped into ``dtype`` (see the module docstring), and how many of
    its voxels this changed (NaN into a float is not a change; NaN into an integer is)."""
    converted, changed = _convert(data, dtype)
    return converted, 0 if changed is None else int(np.count_nonzero(changed))


def _convert(data: Array, dtype: np.dtype[Any]) -> tuple[Array, Array | None]:
    """``data`` rounded and clipped into ``dtype``, and where that changed a value (``None``:
    the cast is exact for every value of ``data``'s dtype)."""
    if data.dtype == dtype:
        return data, None
    if _exact(data.dtype, dtype):
        return data.astype(dtype), None
    if dtype.kind in "biu":
        if data.dtype.kind == "f":
            return _float_to_int(data, dtype)
        return _int_to_int(data, dtype)
    if data.dtype.kind == "f":
        return _float_to_float(data, dtype)
    return _int_to_float(data, dtype)


def _exact(source: np.dtype[Any], dtype: np.dtype[Any]) -> bool:
    """Whether every value of ``source`` has an exact value in ``dtype`` (numpy calls int64 to
    float64 safe, but float64 holds integers exactly only up to 2**53)."""
    if not np.can_cast(source, dtype, "safe"):
        return False
    if source.kind in "iu" and dtype.kind == "f":
        return np.iinfo(source).bits - (source.kind == "i") <= np.finfo(dtype).nmant + 1
    return True


def _int_range(dtype: np.dtype[Any]) -> tuple[int, int]:
    """The smallest and largest value of a bool or integer dtype (bool: 0 and 1)."""
    if dtype.kind == "b":
        return 0, 1
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _float_within(dtype: np.dtype[Any], low: int, high: int) -> tuple[Any, Any]:
    """The smallest and the largest value of float ``dtype`` inside ``[low, high]``."""
    finite = int(np.finfo(dtype).max)
    first = dtype.type(max(low, -finite))
    if int(first) < low:  # rounded to the float below ``low``
        first = np.nextafter(first, dtype.type(np.inf))
    last = dtype.type(min(high, finite))
    if int(last) > high:
        last = np.nextafter(last, dtype.type(-np.inf))
    return first, last


def _float_to_int(data: Array, dtype: np.dtype[Any]) -> tuple[Array, Array]:
    low, high = _int_range(dtype)
    first, last = _float_within(data.dtype, low, high)
    values = np.rint(data)
    changed = values != data  # fractions and NaN
    above = values > last
    below = values < first
    changed |= above
    changed |= below
    values[np.isnan(values)] = 0
    np.clip(values, first, last, out=values)
    out = values.astype(dtype)
    out[above] = high
    out[below] = low
    return out, changed


def _int_to_int(data: Array, dtype: np.dtype[Any]) -> tuple[Array, Array]:
    low, high = _int_range(dtype)
    have_low, have_high = _int_range(data.dtype)
    first = data.dtype.type(max(low, have_low))
    last = data.dtype.type(min(high, have_high))
    changed = (data < first) | (data > last)
    return np.clip(data, first, last).astype(dtype), changed


def _float_to_float(data: Array, dtype: np.dtype[Any]) -> tuple[Array, Array]:
    finite = data.dtype.type(np.finfo(dtype).max)  # exact: ``dtype`` is the narrower float
    out = np.clip(data, -finite, finite).astype(dtype)
    infinite = np.isinf(data)
    out[infinite] = data[infinite]
    changed = out.astype(data.dtype) != data
    changed &= ~np.isnan(data)
    return out, changed


def _int_to_float(data: Array, dtype: np.dtype[Any]) -> tuple[Array, Array]:
    have_low, have_high = _int_range(data.dtype)
    finite = int(np.finfo(dtype).max)
    values = data
    if have_high > finite or have_low < -finite:  # float16: 65504
        first = data.dtype.type(max(have_low, -finite))
        values = np.clip(data, first, data.dtype.type(min(have_high, finite)))
    out = values.astype(dtype)
    first_back, last_back = _float_within(dtype, have_low, have_high)
    changed = (out < first_back) | (out > last_back)  # rounded past the source's range
    changed |= np.clip(out, first_back, last_back).astype(data.dtype) != data
    return out, changed
