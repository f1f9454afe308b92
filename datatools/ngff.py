"""OME-NGFF image metadata: 0.5 (Zarr v3, ``ome`` attribute) and 0.4 (Zarr v2, ``multiscales``).

Placement convention (written into every image datatools makes): ``scale`` is the voxel size per
axis; ``translation`` is the physical position of the centre of voxel 0. A crop that starts at
source voxel ``s`` gets ``translation = source_translation + s * voxel_size``; a level made by
averaging ``f`` voxels gets ``scale * f`` and ``translation + (f - 1) / 2 * voxel_size``.
Channel axes get scale 1 and translation 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from datatools.geometry import SPATIAL_AXES


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


def _axes(axes: str, unit: str | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in axes:
        if name in SPATIAL_AXES:
            entry: dict[str, Any] = {"name": name, "type": "space"}
            if unit is not None:
                entry["unit"] = unit
        elif name == "c":
            entry = {"name": "c", "type": "channel"}
        elif name == "t":
            entry = {"name": "t", "type": "time"}
        else:
            raise ValueError(f"axis {name!r} has no OME-NGFF type")
        out.append(entry)
    return out


def _full(axes: str, spatial: Sequence[float], other: float) -> list[float]:
    values = iter(spatial)
    return [float(next(values)) if a in SPATIAL_AXES else other for a in axes]


def multiscales(
    axes: str,
    levels: Sequence[tuple[str, Placement]],
    *,
    name: str,
    version: str,
) -> dict[str, Any]:
    """One ``multiscales`` entry for levels ``[(path, placement), ...]``, finest first."""
    unit = levels[0][1].unit
    entry: dict[str, Any] = {
        "name": name,
        "axes": _axes(axes, unit),
        "datasets": [
            {
                "path": path,
                "coordinateTransformations": [
                    {"type": "scale", "scale": _full(axes, placement.voxel_size, 1.0)},
                    {
                        "type": "translation",
                        "translation": _full(axes, placement.translation, 0.0),
                    },
                ],
            }
            for path, placement in levels
        ],
    }
    if version == "0.4":
        entry = {"version": "0.4", **entry}
    return entry


def image_attributes(
    axes: str,
    levels: Sequence[tuple[str, Placement]],
    *,
    name: str,
    zarr_format: int,
) -> dict[str, Any]:
    """Group attributes that make an OME-Zarr image: NGFF 0.5 for Zarr v3, 0.4 for v2."""
    if zarr_format == 3:
        return {
            "ome": {
                "version": "0.5",
                "multiscales": [multiscales(axes, levels, name=name, version="0.5")],
            }
        }
    return {"multiscales": [multiscales(axes, levels, name=name, version="0.4")]}


def ngff_version(attributes: dict[str, Any]) -> str | None:
    """The NGFF version an attribute dict declares, or ``None`` when it is not an image."""
    ome = attributes.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        return str(ome.get("version"))
    ms = attributes.get("multiscales")
    if isinstance(ms, list) and ms:
        return str(ms[0].get("version"))
    return None
