"""OME-NGFF metadata as data: what datatools writes into an OME-Zarr image's attributes, and what
it reads back from any image's (no files are read or written here).

- :mod:`datatools.ngff.placement`: the placement convention (:class:`Placement`) and the axes
  and levels parsed from ``multiscales`` (:class:`ImageMetadata`).
- :mod:`datatools.ngff.versions`: one class per spec version (:class:`Ngff04` for Zarr v2,
  :class:`Ngff05` for Zarr v3) that writes image, label-image and ``labels`` attributes, parses
  image attributes and validates them; :func:`for_zarr_format`, :func:`for_version` and
  :func:`detect` pick the class.
"""

from __future__ import annotations

from datatools.ngff.placement import Axis, Dataset, ImageMetadata, Placement
from datatools.ngff.versions import (
    LABEL_SOURCE,
    VERSIONS,
    Ngff,
    Ngff04,
    Ngff05,
    detect,
    for_version,
    for_zarr_format,
    parse_image,
    validate_image,
)

__all__ = [
    "LABEL_SOURCE",
    "VERSIONS",
    "Axis",
    "Dataset",
    "ImageMetadata",
    "Ngff",
    "Ngff04",
    "Ngff05",
    "Placement",
    "detect",
    "for_version",
    "for_zarr_format",
    "parse_image",
    "validate_image",
]
