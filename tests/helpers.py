"""Helpers shared by test modules: arange-encoded volumes, so a misplaced voxel shows, and
random-box reads checked against them. (Fixtures live in ``conftest.py``.)"""

from __future__ import annotations

import numpy as np


def arange_volume(shape: tuple[int, ...], dtype: str = "uint16") -> np.ndarray:
    """A volume whose voxel values encode their flat index (modulo the dtype's range)."""
    n = int(np.prod(shape))
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    values = np.arange(n, dtype=np.int64)
    if info is not None and np.dtype(dtype).itemsize < 8:
        values = values % (int(info.max) + 1)
    return values.astype(dtype).reshape(shape)
