"""Placeholder: being implemented."""

from __future__ import annotations

from datatools.sources.base import Volume


class Hdf5Volume(Volume):
    kind = "hdf5"
