"""ITK images (MetaImage, NRRD, NIfTI, Analyze...) as lazy volumes, via SimpleITK.

The header gives shape, pixel type, spacing and origin without reading voxels. ITK orders
these ``(x, y, z)``; datatools reverses them to ``(z, y, x)``: spacing becomes ``voxel_size``
and origin (the physical position of voxel 0's centre) becomes ``translation``. ITK images
carry no unit, so ``unit`` is ``None``. The direction matrix is not applied; a non-identity
direction is reported by :meth:`ItkVolume.details`. Multi-component pixels (vectors, RGB) put
the component axis first: ``(c, z, y, x)`` or ``(c, y, x)``.

Reading a box asks ITK for that region only; how much ITK reads for it depends on the format.
Measured with SimpleITK 2.5, 100 x 512 x 512 uint16, 5 slices at z = 0 and z = 95: ``.mha``,
``.mhd``, ``.nii`` and ``.nii.gz`` read about the region alone (0.01-0.03 s, memory of the box);
a compressed ``.mha`` decompresses from the file's start (0.08 s at z = 0, 0.34 s at z = 95);
``.nrrd`` loads the whole image for every read (memory of the whole image, 0.10-0.16 s). So
raw and gzip NRRD files are read by datatools itself, one band of rows per slice
(:mod:`datatools.sources._nrrd_layout`); other NRRD encodings still go through ITK and cost
the whole image per read (with a warning at open when that is over 1 GiB).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import SimpleITK as sitk  # noqa: N813

from datatools.errors import InputError
from datatools.geometry import Box
from datatools.sources._nrrd_layout import nrrd_data
from datatools.sources.base import OpenOptions, SourceSpec, Volume

ITK_SUFFIXES = (
    ".mha",
    ".mhd",
    ".nrrd",
    ".nhdr",
    ".nii",
    ".nii.gz",
    ".hdr",
    ".img",
    ".img.gz",
    ".gipl",
    ".gipl.gz",
    ".vtk",
    ".mgh",
    ".mgz",
)
"""File name endings of the 3D formats SimpleITK reads that datatools recognises."""

DTYPES = MappingProxyType(
    {
        sitk.sitkUInt8: "uint8",
        sitk.sitkInt8: "int8",
        sitk.sitkUInt16: "uint16",
        sitk.sitkInt16: "int16",
        sitk.sitkUInt32: "uint32",
        sitk.sitkInt32: "int32",
        sitk.sitkUInt64: "uint64",
        sitk.sitkInt64: "int64",
        sitk.sitkFloat32: "float32",
        sitk.sitkFloat64: "float64",
        sitk.sitkComplexFloat32: "complex64",
        sitk.sitkComplexFloat64: "complex128",
        sitk.sitkVectorUInt8: "uint8",
        sitk.sitkVectorInt8: "int8",
        sitk.sitkVectorUInt16: "uint16",
        sitk.sitkVectorInt16: "int16",
        sitk.sitkVectorUInt32: "uint32",
        sitk.sitkVectorInt32: "int32",
        sitk.sitkVectorUInt64: "uint64",
        sitk.sitkVectorInt64: "int64",
        sitk.sitkVectorFloat32: "float32",
        sitk.sitkVectorFloat64: "float64",
    }
)
"""numpy dtype of each SimpleITK pixel type (vector types: of one component)."""

WHOLE_READ_WARNING_BYTES = 2**30
"""NRRD images ITK reads (not raw or gzip) larger than this get a warning at open: ITK reads
them whole for every region."""

logger = logging.getLogger(__name__)

_ITK_NOISE = re.compile(r"^(?:sitk::ERROR|ITK ERROR|itk::ERROR):\s*(?:\w+\(0x[0-9a-fA-F]+\):\s*)?")


class ItkVolume(Volume):
    """An image file read through ``SimpleITK.ImageFileReader``; no voxels are cached.

    Peak memory per read: the box's bytes, twice for multi-component images (ITK's
    component-last array, then the component-first copy); the whole image for a ``.nrrd``
    that is neither raw nor gzip, which ITK does not stream (see the module docstring).
    """

    kind = "itk"

    def __init__(self, spec: str, reader: sitk.ImageFileReader) -> None:
        """Describe the image whose header ``reader`` has read.

        Raises:
            InputError: more than 3 dimensions (other than a single time point), an unknown
                pixel type, or an unsupported dtype (complex).
        """
        size = tuple(int(s) for s in reader.GetSize())
        spacing = tuple(float(s) for s in reader.GetSpacing())
        origin = tuple(float(s) for s in reader.GetOrigin())
        if len(size) == 4 and size[3] == 1:
            size, spacing, origin = size[:3], spacing[:3], origin[:3]
        if len(size) not in (2, 3):
            dims = " x ".join(str(s) for s in size)
            raise InputError(
                f"{spec}: {len(size)}D image of size {dims} (x, y, z, ...) (datatools reads 2D "
                "and 3D images)"
            )
        dtype = DTYPES.get(reader.GetPixelID())
        if dtype is None:
            pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
            raise InputError(f"{spec}: unsupported ITK pixel type {pixel}")
        components = int(reader.GetNumberOfComponents())
        vector = components > 1
        spatial = "zyx"[-len(size) :]
        shape = (components, *size[::-1]) if vector else size[::-1]
        super().__init__(
            spec,
            shape,
            dtype,
            "c" + spatial if vector else spatial,
            voxel_size=spacing[::-1],
            translation=origin[::-1],
        )
        self._itk_dims = len(reader.GetSize())
        self._vector = vector
        self._direction = tuple(float(d) for d in reader.GetDirection())
        nrrd = spec.lower().endswith((".nrrd", ".nhdr"))
        self._nrrd = nrrd_data(Path(spec), dtype, tuple(size[::-1]), components) if nrrd else None
        if nrrd and self._nrrd is None and self.nbytes > WHOLE_READ_WARNING_BYTES:
            logger.warning(
                "%s: ITK reads this NRRD file whole (%.1f GiB) for every region; save it raw or "
                "gzip-compressed, or as .mha or .nii, for a faster conversion",
                spec,
                self.nbytes / 2**30,
            )

    @classmethod
    def can_open(cls, spec: str) -> bool:
        """An existing file whose name ends in one of :data:`ITK_SUFFIXES`."""
        path = Path(spec)
        return path.is_file() and path.name.lower().endswith(ITK_SUFFIXES)

    @classmethod
    def open(cls, spec: SourceSpec, options: OpenOptions) -> ItkVolume:
        """Read the image's header (no voxels).

        Raises:
            InputError: ITK cannot read the header, or the image is not one datatools reads.
        """
        path = str(spec)
        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise InputError(f"{path}: not a readable ITK image ({itk_message(exc)})") from exc
        return cls(path, reader)

    def _read(self, box: Box) -> np.ndarray[Any, Any]:
        """Read ``box`` (half-open, in this volume's axes) into a new array.

        Raises:
            InputError: ITK cannot read the voxels (truncated file, missing data file).
        """
        if box.is_empty:
            return np.empty(box.shape, self.dtype)
        spatial = Box(box.start[1:], box.stop[1:]) if self._vector else box
        if self._nrrd is not None:
            try:
                array = self._nrrd.read(spatial.start, spatial.stop)
            except OSError as exc:
                raise InputError(
                    f"{self.spec}: cannot read region {box.to_text()} ({exc})"
                ) from exc
        else:
            array = self._read_itk(spatial, box)
        if not self._vector:
            return array.reshape(box.shape)
        return np.ascontiguousarray(np.moveaxis(array, -1, 0)[box.start[0] : box.stop[0]])

    def _read_itk(self, spatial: Box, box: Box) -> np.ndarray[Any, Any]:
        """ITK's array for the spatial box ``spatial`` (component axis last)."""
        index = [*spatial.start[::-1]] + [0] * (self._itk_dims - spatial.ndim)
        size = [*spatial.shape[::-1]] + [0] * (self._itk_dims - spatial.ndim)
        reader = sitk.ImageFileReader()
        reader.SetFileName(self.spec)
        reader.SetExtractIndex(index)
        reader.SetExtractSize(size)
        try:
            image = reader.Execute()
        except RuntimeError as exc:
            raise InputError(
                f"{self.spec}: cannot read region {box.to_text()} ({itk_message(exc)})"
            ) from exc
        return sitk.GetArrayFromImage(image)

    def details(self) -> dict[str, Any]:
        """``direction``: ITK's direction matrix (row-major, ``(x, y, z)``) when not identity."""
        n = self._itk_dims
        identity = np.eye(n).ravel()
        if np.allclose(self._direction, identity):
            return {"direction": None}
        return {"direction": list(self._direction)}


def itk_message(exc: BaseException) -> str:
    """The first meaningful line of SimpleITK's multi-line error text, without ITK's prefixes.

    ``Exception thrown in SimpleITK ...: file.cxx:99:`` lines (source locations) are skipped.
    """
    for line in str(exc).splitlines():
        line = line.strip()
        if not line or line.startswith("Exception thrown in SimpleITK"):
            continue
        return _ITK_NOISE.sub("", line)
    return type(exc).__name__
