"""Shared fixtures. (Helper functions that tests import live in ``tests/helpers.py``.)"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pytest


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
