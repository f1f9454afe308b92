"""What OME-NGFF metadata says about an image, as values: the placement convention, and the
axes and levels parsed from ``multiscales`` (see :mod:`datatools.ngff.versions`).

Placement convention (written into every image datatools makes): ``scale`` is the voxel size per
axis; ``translation`` is the physical position of the centre of voxel 0. A crop that starts at
source voxel ``s`` gets ``translation = source_translation + s * voxel_size``; a level made by
averaging ``f`` voxels gets ``scale * f`` and ``translation + (f - 1) / 2 * voxel_size``.
Channel axes get scale 1 and translation 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from datatools.errors import InputError
from datatools.geometry import SPATIAL_AXES
from datatools.units import METERS


@dataclass(frozen=True)
class Placement:
    """Where an image's voxels sit in physical space, per spatial axis (z, y, x order).

    Attributes:
        voxel_size: physical size of one voxel per spatial axis, in ``unit``.
        translation: physical position of voxel 0's centre per spatial axis, in ``unit``.
        unit: OME-NGFF length unit, or ``None`` when unknown.
    """

    voxel_size: tuple[float, ...]
    translation: tuple[float, ...]
    unit: str | None

    def shifted(self, start: Sequence[int]) -> Placement:
        """The placement of a crop whose voxel 0 is source voxel ``start`` (spatial axes)."""
        return Placement(
            self.voxel_size,
            tuple(
                t + s * v for t, s, v in zip(self.translation, start, self.voxel_size, strict=True)
            ),
            self.unit,
        )

    def downsampled(self, factors: Sequence[int], *, centred: bool = True) -> Placement:
        """The placement of a level that merges ``factors`` voxels per spatial axis.

        With ``centred`` (averaging methods) a merged voxel's centre lies ``(f - 1) / 2`` source
        voxels after the first source voxel it covers; otherwise it lies on that voxel.
        """
        shift = [(f - 1) / 2 if centred else 0.0 for f in factors]
        return Placement(
            tuple(v * f for v, f in zip(self.voxel_size, factors, strict=True)),
            tuple(
                t + d * v for t, d, v in zip(self.translation, shift, self.voxel_size, strict=True)
            ),
            self.unit,
        )


@dataclass(frozen=True)
class Axis:
    """One entry of ``axes``: its name, and its type and unit when the metadata gives them."""

    name: str
    type: str | None = None
    unit: str | None = None


@dataclass(frozen=True)
class Dataset:
    """One level of an image: its array's path and its transforms over all axes, the image-wide
    transforms already applied (``None`` where neither gives one)."""

    path: str
    scale: tuple[float, ...] | None = None
    translation: tuple[float, ...] | None = None


@dataclass(frozen=True)
class ImageMetadata:
    """The first ``multiscales`` entry of an image, as parsed by :meth:`Ngff.parse_image`.

    Attributes:
        version: the version the attributes declare (``None`` when they declare none).
        axes: the axes, or ``None`` when the metadata names none (before NGFF 0.3).
        datasets: the levels, finest first.
    """

    version: str | None
    axes: tuple[Axis, ...] | None
    datasets: tuple[Dataset, ...]

    @property
    def paths(self) -> tuple[str, ...]:
        """The level arrays' paths, finest first."""
        return tuple(d.path for d in self.datasets)

    @property
    def axis_names(self) -> tuple[str, ...] | None:
        """The axes' names, or ``None`` when the metadata names none."""
        return None if self.axes is None else tuple(a.name for a in self.axes)

    def placement(self, level: int, path: str, names: Sequence[str] | None = None) -> Placement:
        """Where the voxels of level ``level`` lie, on the spatial axes (z, y, x order).

        A missing scale is 1 and a missing translation 0. When the spatial axes carry different
        units, every value is converted to the smallest of them.

        Args:
            level: index into :attr:`datasets`.
            path: the image's path, for messages.
            names: the axis names (default: the metadata's; given when it names none, from the
                array's dimensions).

        Raises:
            InputError: no axis names, transforms that do not fit the axes, or spatial axes
                with different units datatools cannot convert.
        """
        if names is None:
            names = self.axis_names
        if names is None:
            raise InputError(f"{path}: OME-Zarr multiscales metadata names no axes")
        dataset = self.datasets[level]
        scale = dataset.scale or (1.0,) * len(names)
        shift = dataset.translation or (0.0,) * len(names)
        for values in (scale, shift):
            if len(values) != len(names):
                raise InputError(
                    f"{path}: malformed OME-Zarr multiscales metadata (level {dataset.path} "
                    f"transform has {len(values)} values for {len(names)} axes)"
                )
        units: list[str | None] = [None] * len(names)
        if self.axes is not None and len(self.axes) == len(names):
            units = [a.unit for a in self.axes]
        spatial = [i for i, n in enumerate(names) if n in tuple(SPATIAL_AXES)]
        return _one_unit(
            path,
            [scale[i] for i in spatial],
            [shift[i] for i in spatial],
            [units[i] for i in spatial],
        )


def _one_unit(
    path: str, scale: list[float], shift: list[float], units: list[str | None]
) -> Placement:
    """Voxel size, translation and one unit for the spatial axes, converting mixed units to
    the smallest.

    Raises:
        InputError: spatial axes carry different units datatools cannot convert.
    """
    known = {u for u in units if u is not None}
    if len(known) <= 1:
        return Placement(tuple(scale), tuple(shift), next(iter(known), None))
    if not known <= METERS.keys():
        raise InputError(
            f"{path}: spatial axes have different units ({', '.join(sorted(known))}) that "
            "datatools cannot convert"
        )
    target = min(known, key=lambda u: METERS[u])
    factors = [1.0 if u is None else METERS[u] / METERS[target] for u in units]
    return Placement(
        tuple(s * f for s, f in zip(scale, factors, strict=True)),
        tuple(t * f for t, f in zip(shift, factors, strict=True)),
        target,
    )
