"""Shared fixtures: arange-encoded volumes so a misplaced voxel shows."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pytest


def arange_volume(shape: tuple[int, ...], dtype: str = "uint16") -> np.ndarray:
    """A volume whose voxel values encode their flat index (modulo the dtype's range)."""
    n = int(np.prod(shape))
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    values = np.arange(n, dtype=np.int64)
    if info is not None and np.dtype(dtype).itemsize < 8:
        values = values % (int(info.max) + 1)
    return values.astype(dtype).reshape(shape)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def datatools_log_level() -> Iterator[None]:
    """The CLI sets the datatools logger's level (``-q``, ``-v``) for its process; tests that
    run it in-process put it back so later tests see warnings."""
    logger = logging.getLogger("datatools")
    level = logger.level
    yield
    logger.setLevel(level)
