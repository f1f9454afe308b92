"""The lazy volume protocol every source kind implements.

A :class:`Volume` opens an input without reading its voxels: it knows its shape, dtype, axes,
and (when the input says so) voxel size and translation, and reads any box on demand.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, ClassVar

import numpy as np

from datatools.dtypes import is_supported
from datatools.errors import InputError
from datatools.geometry import Box, spatial_axes

SourceSpec = str | Path | Sequence[str | Path]
"""What a user names as input: a path (``stack/``, ``vol.h5:/raw``, ``img.zarr``), a glob
(``'scan/*.tif'``), or an explicit list of slice files."""

"""numpy dtype kinds datatools handles: bool, signed and unsigned integers, floats."""


AXES_BY_NDIM = MappingProxyType({2: "yx", 3: "zyx", 4: "czyx"})
"""Axes of an array by its number of dimensions, when nothing says otherwise."""
LISTED_MAX = 10
"""At most this many array or dataset names appear in one error message."""


@dataclass(frozen=True)
class OpenOptions:
    """Choices that select what to read from a multi-part input.

    Attributes:
        level: resolution level of an OME-Zarr image or pyramidal TIFF (0 = full resolution).
        series: series of a multi-series TIFF.
        allow_gaps: accept a slice folder whose numbering has gaps.
    """

    level: int | None = None
    series: int | None = None
    allow_gaps: bool = False


class Volume(ABC):
    """A lazily opened N-D volume; subclasses implement :meth:`read`.

    Attributes:
        spec: the input as the user named it.
        shape: extent per axis, in ``axes`` order.
        dtype: voxel dtype.
        axes: axis letters in C order, e.g. ``"zyx"``, ``"yx"``, ``"czyx"``.
        voxel_size: physical size of a voxel per spatial axis (``spatial_axes(axes)`` order),
            in ``unit``; ``None`` when the input does not say.
        unit: OME-NGFF unit name of ``voxel_size`` and ``translation`` (e.g. ``"micrometer"``).
        translation: physical position of voxel 0's centre per spatial axis, or ``None``.
        chunks: the input's own chunk (or strip/tile) shape, when it has one.
    """

    kind: ClassVar[str] = "volume"

    @classmethod
    def can_open(cls, spec: str) -> bool:
        """Whether this kind recognises ``spec`` (cheap: extension, folder contents, magic)."""
        return False

    @classmethod
    def open(cls, spec: SourceSpec, options: OpenOptions) -> Volume:
        """Open ``spec`` as this kind.

        Raises:
            InputError: the input is recognised but unusable; the message names the file.
        """
        raise NotImplementedError(f"{cls.__name__} cannot be opened from a spec")

    def __init__(
        self,
        spec: str,
        shape: Sequence[int],
        dtype: np.dtype[Any] | str,
        axes: str,
        *,
        voxel_size: Sequence[float] | None = None,
        unit: str | None = None,
        translation: Sequence[float] | None = None,
        chunks: Sequence[int] | None = None,
    ) -> None:
        self.spec = spec
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.axes = axes
        if len(axes) != len(self.shape):
            raise ValueError(f"axes {axes!r} do not match shape {self.shape}")
        n_spatial = len(spatial_axes(axes))
        self.voxel_size = None if voxel_size is None else tuple(float(v) for v in voxel_size)
        self.translation = None if translation is None else tuple(float(v) for v in translation)
        for name, value in (("voxel_size", self.voxel_size), ("translation", self.translation)):
            if value is not None and len(value) != n_spatial:
                raise ValueError(f"{name} {value} does not match spatial axes of {axes!r}")
        self.unit = unit
        self.chunks = None if chunks is None else tuple(int(c) for c in chunks)
        check_dtype(self.dtype, spec)

    def read(self, box: Box, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        """Read the voxels of ``box`` (half-open, in this volume's axes).

        Args:
            box: the region, in this volume's axes.
            out: an array of ``box.shape`` and this dtype to fill instead of a new array, so a
                streaming caller can reuse one buffer (no fresh pages per read).

        Raises:
            InputError: the input is corrupt or truncated where the box lies.
        """
        data = self._read(box)
        if out is None:
            return data
        np.copyto(out, data)
        return out

    @abstractmethod
    def _read(self, box: Box) -> np.ndarray[Any, Any]:
        """Read ``box`` into a new array (what each source kind implements)."""

    def read_all(self) -> np.ndarray[Any, Any]:
        """Read the whole volume (memory: the volume's size; for small inputs only)."""
        return self.read(Box.from_shape(self.shape))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        """Size of the whole volume in bytes, uncompressed."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def details(self) -> dict[str, Any]:
        """Kind-specific facts for :meth:`describe` (file count, codecs, levels...)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: kind, spec, shape, dtype, axes, voxel size, bytes, details."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "spec": self.spec,
            "shape": list(self.shape),
            "dtype": str(self.dtype),
            "axes": self.axes,
            "voxel_size": None if self.voxel_size is None else list(self.voxel_size),
            "unit": self.unit,
            "translation": None if self.translation is None else list(self.translation),
            "nbytes": self.nbytes,
            "chunks": None if self.chunks is None else list(self.chunks),
        }
        out.update(self.details())
        return out

    def files(self) -> tuple[Path, ...]:
        """The files and folders this volume reads (no output may be one of them or hold
        one): by default its spec, when that names an existing path."""
        path = Path(self.spec)
        return (path,) if path.exists() else ()

    def files_in(self, box: Box) -> tuple[Path, ...]:
        """The files of :meth:`files` that a read of ``box`` (this volume's voxels) opens:
        by default all of them."""
        return self.files()

    def close(self) -> None:
        """Release open files; reading after close is an error."""

    def __enter__(self) -> Volume:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec!r} {self.shape} {self.dtype} {self.axes}>"


class ArrayVolume(Volume):
    """A volume over an in-memory numpy array (for tests and for callers that hold data).

    Reads are copies, or views of the array with ``views=True`` (no copy until the caller cuts
    what it needs; the caller must not write into them)."""

    kind = "array"

    def __init__(
        self,
        array: np.ndarray[Any, Any],
        axes: str | None = None,
        *,
        spec: str = "<array>",
        voxel_size: Sequence[float] | None = None,
        unit: str | None = None,
        translation: Sequence[float] | None = None,
        views: bool = False,
    ) -> None:
        if axes is None:
            axes = AXES_BY_NDIM.get(array.ndim, "")
        super().__init__(
            spec,
            array.shape,
            array.dtype,
            axes,
            voxel_size=voxel_size,
            unit=unit,
            translation=translation,
        )
        self._array = array
        self._views = views

    def _read(self, box: Box) -> np.ndarray[Any, Any]:
        view = self._array[box.slices()]
        return view if self._views else np.array(view)


def check_dtype(dtype: np.dtype[Any], path: str) -> None:
    """Refuse dtypes datatools cannot handle (complex, structured, strings, objects).

    Raises:
        InputError: naming ``path`` and the dtype.
    """
    if not is_supported(dtype):
        raise InputError(
            f"{path}: unsupported dtype {dtype} (datatools handles bool, integer and float data)"
        )


def spec_text(spec: SourceSpec) -> str:
    """A one-line name for ``spec`` in messages and provenance."""
    if isinstance(spec, str | Path):
        return str(spec)
    paths = [str(p) for p in spec]
    if len(paths) <= 2:
        return ",".join(paths)
    return f"{paths[0]} ... {paths[-1]} ({len(paths)} files)"
