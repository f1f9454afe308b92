"""OME-NGFF label images: a label volume stored inside an OME-Zarr image, registered with it.

``convert --as-labels NAME`` writes ``image.zarr/labels/NAME`` as a multiscale image of its own
(integer dtype, ``mode`` or ``nearest`` levels) whose metadata also carries ``image-label`` with
``source.image = "../../"``, and lists ``NAME`` in ``image.zarr/labels`` once it is complete.
The label image inherits the image's voxel size, unit and translation (level 0), its Zarr
format and, by default, its number of levels, so viewers overlay the two exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from datatools import ledger
from datatools.errors import OptionError, TargetError
from datatools.geometry import SPATIAL_AXES
from datatools.ngff import for_zarr_format, parse_image
from datatools.stores import NODE_NAME

LABELS_GROUP = "labels"
LABEL_METHODS = ("mode", "nearest")


@dataclass(frozen=True)
class LabelTarget:
    """Where a label image goes and what it inherits from its image.

    Attributes:
        image: the OME-Zarr image folder.
        name: the label image's name.
        zarr_format: the image's Zarr format (2 or 3).
        voxel_size, translation: the image's level-0 placement per spatial axis (z, y, x).
        unit: the image's space unit, or ``None``.
        level_shapes: the image's level shapes (spatial axes only), finest first.
    """

    image: Path
    name: str
    zarr_format: int
    voxel_size: tuple[float, ...]
    translation: tuple[float, ...]
    unit: str | None
    level_shapes: tuple[tuple[int, ...], ...]

    @property
    def path(self) -> Path:
        """The label image's folder: ``<image>/labels/<name>``."""
        return self.image / LABELS_GROUP / self.name

    def prepare_group(self) -> None:
        """Create ``<image>/labels`` when missing (an existing one is kept as it is).

        Raises:
            TargetError: ``labels`` exists and is not a Zarr group.
        """
        import zarr

        folder = self.image / LABELS_GROUP
        if folder.exists():
            try:
                zarr.open_group(folder, mode="r")
            except Exception as exc:
                raise TargetError(f"{folder}: exists and is not a Zarr group") from exc
            return
        group = zarr.create_group(folder, zarr_format=self.zarr_format)  # type: ignore[arg-type]
        group.attrs.update(for_zarr_format(self.zarr_format).labels_attributes([]))

    def register(self) -> None:
        """List this label image in ``<image>/labels`` (idempotent; the attributes are
        replaced atomically, as tasks of a job array may finish together)."""
        import zarr

        folder = self.image / LABELS_GROUP
        ngff = for_zarr_format(self.zarr_format)
        names = ngff.label_names(zarr.open_group(folder, mode="r").attrs.asdict())
        if self.name not in names:
            names.append(self.name)
        ledger.update_attributes(folder, ngff.labels_attributes(names))


def open_image(image: Path, name: str) -> LabelTarget:
    """Check that ``image`` is an OME-Zarr image a label image can be attached to.

    Raises:
        OptionError: ``name`` is not a plain name.
        TargetError: ``image`` is not an OME-Zarr image.
        InputError: its OME-NGFF metadata is malformed.
    """
    import zarr

    if not NODE_NAME.match(name):
        raise OptionError(f"--as-labels {name}: use letters, digits, '_', '-', '.' (no '/')")
    image = Path(image)
    zarr_format = 3 if (image / "zarr.json").is_file() else 2
    attrs_file = image / ("zarr.json" if zarr_format == 3 else ".zattrs")
    try:
        doc = json.loads(attrs_file.read_text())
    except (OSError, ValueError) as exc:
        raise TargetError(
            f"{image}: no OME-Zarr image here to attach labels to (convert the image first)"
        ) from exc
    attrs = doc.get("attributes", {}) if zarr_format == 3 else doc
    metadata = parse_image(attrs, str(image))
    if metadata is None:
        raise TargetError(
            f"{image}: not a finished OME-Zarr image (no multiscales metadata); convert or "
            "finish the image first"
        )
    placement = metadata.placement(0, str(image))
    names = metadata.axis_names or ()
    spatial = [i for i, axis in enumerate(names) if axis in tuple(SPATIAL_AXES)]
    shapes = []
    for path in metadata.paths:
        shape = zarr.open_array(image / path, mode="r").shape
        shapes.append(tuple(int(shape[i]) for i in spatial))
    return LabelTarget(
        image=image,
        name=name,
        zarr_format=zarr_format,
        voxel_size=placement.voxel_size,
        translation=placement.translation,
        unit=placement.unit,
        level_shapes=tuple(shapes),
    )


def check_method(method: str) -> None:
    """Label levels may only pick existing ids.

    Raises:
        OptionError: ``method`` averages or otherwise invents values.
    """
    if method not in LABEL_METHODS:
        raise OptionError(f"--downsample {method}: label images take mode or nearest")


def spatial_shape(shape: tuple[int, ...], axes: str) -> tuple[int, ...]:
    """The spatial extents of ``shape`` (axes in ``axes`` order)."""
    return tuple(n for n, a in zip(shape, axes, strict=True) if a in SPATIAL_AXES)
