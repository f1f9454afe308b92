"""Where inputs and outputs live: the file kinds a path names, and the names datatools gives
to the groups and arrays inside an output.

Targets ending in one of :data:`HDF5_SUFFIXES` are HDF5 files; every other target is a Zarr
folder. Sources are read as HDF5 for any of :data:`HDF5_READ_SUFFIXES` (a few more spellings
that other tools write).
"""

from __future__ import annotations

import re
from pathlib import Path

HDF5_SUFFIXES = (".h5", ".hdf5")
"""Target suffixes written as one HDF5 file (lower case)."""

HDF5_READ_SUFFIXES = (*HDF5_SUFFIXES, ".hdf", ".he5")
"""Source suffixes opened as HDF5 (lower case)."""

NODE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
"""A group or array name datatools writes: letters, digits, ``_``, ``.``, ``-``; no leading
``.`` or ``-`` (hidden names are datatools' own)."""


def is_hdf5_target(path: str | Path) -> bool:
    """Whether a target ``path`` is written as an HDF5 file (by its suffix)."""
    return Path(path).suffix.lower() in HDF5_SUFFIXES
