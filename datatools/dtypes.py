"""Data types datatools reads and writes: bool, integer and float (no complex, structured,
string or object data), and the cast of a block to an output dtype."""

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
    or with ``lossy`` (values rounded and clipped to the dtype's range; NaN becomes 0).

    Raises:
        OptionError: a value does not fit; names the first one and its output voxel.
    """
    if data.dtype == dtype:
        return data
    if np.can_cast(data.dtype, dtype, "safe"):
        return data.astype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if lossy:
            values = np.nan_to_num(np.rint(data), nan=0.0) if data.dtype.kind == "f" else data
            clipped: Array = np.clip(values, info.min, info.max)
            return clipped.astype(dtype)
        bad = (data < info.min) | (data > info.max)
        if data.dtype.kind == "f":
            bad |= np.isnan(data) | (data != np.rint(data))
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            voxel = tuple(a + w for a, w in zip(box.start, where, strict=True))
            raise OptionError(
                f"--dtype {dtype}: {spec} holds {data[where].item()!r} at output voxel {voxel}, "
                f"which {dtype} cannot hold exactly (add --allow-lossy-cast to round and clip)"
            )
        return data.astype(dtype)
    converted = data.astype(dtype)
    back = converted.astype(data.dtype)
    if not lossy and not np.array_equal(back, data, equal_nan=data.dtype.kind in "fc"):
        raise OptionError(
            f"--dtype {dtype}: casting {data.dtype} data from {spec} to {dtype} loses precision "
            "(add --allow-lossy-cast)"
        )
    return converted
