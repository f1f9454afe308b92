"""Data types datatools reads and writes: bool, integer and float (no complex, structured,
string or object data)."""

from __future__ import annotations

from typing import Any

import numpy as np

SUPPORTED_KINDS = "biuf"
"""numpy dtype kinds datatools handles: bool, signed and unsigned integer, float."""


def is_supported(dtype: np.dtype[Any]) -> bool:
    """Whether ``dtype`` is a plain bool, integer or float type (not structured)."""
    return dtype.kind in SUPPORTED_KINDS and dtype.fields is None
