"""Placeholder: being implemented."""

from __future__ import annotations

from datatools.sources.base import Volume


class TiffStack(Volume):
    kind = "tiff-stack"
