"""One class per OME-NGFF version: where its metadata lives in group attributes, and how to
write, parse and validate it (no files are read or written here).

=========  ===========  ===================================================================
class      Zarr format  where the metadata lives
=========  ===========  ===================================================================
Ngff04     v2           top level of ``.zattrs``; ``multiscales`` and ``image-label`` carry
                        ``version``
Ngff05     v3           inside the ``ome`` attribute of ``zarr.json``, with ``version``
=========  ===========  ===================================================================

A new version is one more subclass of :class:`Ngff` listed in :data:`VERSIONS`.
:func:`for_zarr_format` picks the version datatools writes, :func:`for_version` the class of a
version string, :func:`detect` the class whose layout holds the image metadata of given
attributes. The parser also reads what other tools write: versions before 0.4 (axes as plain
names, or none), image-wide transforms, identity transforms, missing transforms.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, TypeGuard

from datatools.errors import InputError, first_line
from datatools.geometry import SPATIAL_AXES
from datatools.ngff.placement import Axis, Dataset, ImageMetadata, Placement
from datatools.units import SPACE_UNITS

LABEL_SOURCE = "../../"
"""``image-label.source.image`` of a label image at ``<image>/labels/<name>``: its image."""
_AXIS_TYPE_ORDER = MappingProxyType({"time": 0, "channel": 1, "space": 2})


@dataclass(frozen=True)
class Ngff(ABC):
    """One OME-NGFF version: where its metadata lives in group attributes, and how to write,
    parse and validate it. Subclasses say where the metadata block is (:meth:`block`,
    :meth:`wrap`) and where the version is written (:meth:`versioned`,
    :meth:`declared_version`); everything else is shared."""

    version: ClassVar[str]
    zarr_format: ClassVar[int]

    @abstractmethod
    def block(self, attrs: Mapping[str, Any]) -> Mapping[str, Any]:
        """The part of group attributes ``attrs`` holding this version's metadata (empty when
        they hold none)."""

    @abstractmethod
    def wrap(self, block: dict[str, Any]) -> dict[str, Any]:
        """Group attributes holding the metadata ``block``."""

    @abstractmethod
    def versioned(self, entry: dict[str, Any]) -> dict[str, Any]:
        """``entry`` (a ``multiscales`` entry, an ``image-label`` object) as this version
        writes it."""

    @abstractmethod
    def declared_version(self, attrs: Mapping[str, Any]) -> str | None:
        """The version image attributes ``attrs`` declare in this version's layout."""

    # --- write ---------------------------------------------------------------------------

    def image_attributes(
        self, axes: str, levels: Sequence[tuple[str, Placement]], *, name: str
    ) -> dict[str, Any]:
        """Group attributes of an image with levels ``[(path, placement), ...]``, finest first.

        Args:
            axes: the arrays' axes, letters of ``tczyx`` in that order.
            levels: each level's array path and placement; the first level's unit is the unit
                of every space axis.
            name: the image's name.

        Raises:
            ValueError: an axis outside ``tczyx`` (a caller's bug).
        """
        return self.wrap(self._image(axes, levels, name=name))

    def label_image_attributes(
        self, axes: str, levels: Sequence[tuple[str, Placement]], *, name: str
    ) -> dict[str, Any]:
        """Group attributes of a label image at ``<image>/labels/<name>``: an image (see
        :meth:`image_attributes`) with ``image-label`` pointing at its image."""
        block = self._image(axes, levels, name=name)
        block["image-label"] = self.versioned({"source": {"image": LABEL_SOURCE}})
        return self.wrap(block)

    def labels_attributes(self, names: Sequence[str]) -> dict[str, Any]:
        """Group attributes of an image's ``labels`` group listing label images ``names``."""
        return self.wrap({"labels": list(names)})

    def label_names(self, attrs: Mapping[str, Any]) -> list[str]:
        """The label images a ``labels`` group's attributes list (none when they list none)."""
        return [str(n) for n in self.block(attrs).get("labels", [])]

    def _image(
        self, axes: str, levels: Sequence[tuple[str, Placement]], *, name: str
    ) -> dict[str, Any]:
        entry = {
            "name": name,
            "axes": _write_axes(axes, levels[0][1].unit),
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
        return {"multiscales": [self.versioned(entry)]}

    # --- parse ---------------------------------------------------------------------------

    def parse_image(self, attrs: Mapping[str, Any], path: str) -> ImageMetadata | None:
        """The first ``multiscales`` entry of ``attrs``, transforms composed per level, or
        ``None`` when this version's layout holds no image metadata.

        Args:
            attrs: the group's attributes.
            path: the group's path, for messages.

        Raises:
            InputError: the metadata is present but malformed.
        """
        block = self.block(attrs)
        if "multiscales" not in block:
            return None
        version = self.declared_version(attrs)
        try:
            entries = block["multiscales"]
            if not _is_dict_list(entries):
                raise ValueError("multiscales is not a non-empty list of objects")
            entry = entries[0]
            axes = _read_axes(entry.get("axes"))
            datasets = entry.get("datasets")
            if not _is_dict_list(datasets):
                raise ValueError("datasets is not a non-empty list of objects")
            outer = _transforms(entry.get("coordinateTransformations"))
            parsed = [_dataset(d, outer, None if axes is None else len(axes)) for d in datasets]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"{path}: malformed OME-Zarr multiscales metadata ({first_line(exc)})"
            ) from exc
        return ImageMetadata(version, axes, tuple(parsed))

    # --- validate ------------------------------------------------------------------------

    def validate_image(
        self, attrs: Mapping[str, Any], ndim_of: Callable[[str], int | None]
    ) -> list[str]:
        """Structural checks of image attributes against this version; one line per problem.

        Args:
            attrs: the image group's attributes.
            ndim_of: the number of dimensions of the array at a dataset path, ``None`` when
                there is no array there.
        """
        declared = self.declared_version(attrs)
        entries = self.block(attrs).get("multiscales")
        if declared != self.version:
            return [_not_an_image(declared)]
        if not _is_dict_list(entries):
            return ["multiscales is not a non-empty list of objects"]
        ms = entries[0]
        axes = ms.get("axes", [])
        if not isinstance(axes, list) or not all(isinstance(a, dict) for a in axes):
            return [f"axes {axes!r} are not a list of objects"]
        problems = _check_axes(axes)
        datasets = ms.get("datasets", [])
        if not _is_dict_list(datasets):
            return [*problems, f"datasets {datasets!r} are not a non-empty list of objects"]
        for ds in datasets:
            problems.extend(_check_dataset(ds, len(axes), ndim_of))
        return problems


@dataclass(frozen=True)
class Ngff04(Ngff):
    """OME-NGFF 0.4 (Zarr v2): metadata at the top level of the attributes; each
    ``multiscales`` entry and the ``image-label`` object carry the version."""

    version = "0.4"
    zarr_format = 2

    def block(self, attrs: Mapping[str, Any]) -> Mapping[str, Any]:
        """The attributes themselves."""
        return attrs

    def wrap(self, block: dict[str, Any]) -> dict[str, Any]:
        """``block`` itself."""
        return block

    def versioned(self, entry: dict[str, Any]) -> dict[str, Any]:
        """``entry`` with ``version`` first."""
        return {"version": self.version, **entry}

    def declared_version(self, attrs: Mapping[str, Any]) -> str | None:
        """The first ``multiscales`` entry's ``version``."""
        entries = self.block(attrs).get("multiscales")
        version = entries[0].get("version") if _is_dict_list(entries) else None
        return None if version is None else str(version)


@dataclass(frozen=True)
class Ngff05(Ngff):
    """OME-NGFF 0.5 (Zarr v3): metadata inside the ``ome`` attribute, which carries the
    version."""

    version = "0.5"
    zarr_format = 3

    def block(self, attrs: Mapping[str, Any]) -> Mapping[str, Any]:
        """The ``ome`` attribute."""
        ome = attrs.get("ome")
        return ome if isinstance(ome, Mapping) else {}

    def wrap(self, block: dict[str, Any]) -> dict[str, Any]:
        """``{"ome": {"version": ..., **block}}``."""
        return {"ome": {"version": self.version, **block}}

    def versioned(self, entry: dict[str, Any]) -> dict[str, Any]:
        """``entry`` itself (the ``ome`` attribute carries the version)."""
        return entry

    def declared_version(self, attrs: Mapping[str, Any]) -> str | None:
        """The ``ome`` attribute's ``version``."""
        version = self.block(attrs).get("version")
        return None if version is None else str(version)


VERSIONS: Mapping[str, type[Ngff]] = MappingProxyType({"0.4": Ngff04, "0.5": Ngff05})
"""The versions datatools writes and validates, oldest first."""


def for_version(version: str) -> Ngff:
    """The class of OME-NGFF ``version``.

    Raises:
        InputError: not a version datatools knows.
    """
    if version not in VERSIONS:
        raise InputError(
            f"OME-NGFF {version}: not a version datatools knows ({', '.join(VERSIONS)})"
        )
    return VERSIONS[version]()


def for_zarr_format(zarr_format: int) -> Ngff:
    """The version datatools writes in Zarr format ``zarr_format``: 0.5 in v3, 0.4 in v2."""
    return Ngff05() if zarr_format == 3 else Ngff04()


def detect(attrs: Mapping[str, Any]) -> Ngff | None:
    """The version whose layout holds image metadata (``multiscales``) in group attributes
    ``attrs``, newest first, or ``None`` when they hold none. Attributes of versions before
    0.4 are in the 0.4 layout; :meth:`Ngff.declared_version` tells the version they declare."""
    for cls in reversed(tuple(VERSIONS.values())):
        ngff = cls()
        if "multiscales" in ngff.block(attrs):
            return ngff
    return None


def parse_image(attrs: Mapping[str, Any], path: str) -> ImageMetadata | None:
    """The image metadata of group attributes ``attrs`` in any version's layout (see
    :meth:`Ngff.parse_image`), or ``None`` when they hold none.

    Raises:
        InputError: the metadata is present but malformed.
    """
    ngff = detect(attrs)
    return None if ngff is None else ngff.parse_image(attrs, path)


def validate_image(attrs: Mapping[str, Any], ndim_of: Callable[[str], int | None]) -> list[str]:
    """Structural checks of an image group's attributes (see :meth:`Ngff.validate_image`); one
    line per problem, a single one when they are not image metadata of a version in
    :data:`VERSIONS`."""
    ngff = detect(attrs)
    return [_not_an_image(None)] if ngff is None else ngff.validate_image(attrs, ndim_of)


def _not_an_image(declared: str | None) -> str:
    return f"no OME-NGFF {'/'.join(VERSIONS)} multiscales metadata (found version {declared})"


def _write_axes(axes: str, unit: str | None) -> list[dict[str, Any]]:
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


def _is_dict_list(value: object) -> TypeGuard[list[dict[str, Any]]]:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _read_axes(raw: object) -> tuple[Axis, ...] | None:
    """Axes from NGFF ``axes``: objects, or (before 0.4) plain names."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ValueError("axes is not a list")
    axes: list[Axis] = []
    for axis in raw:
        if isinstance(axis, str):
            axes.append(Axis(axis))
        elif isinstance(axis, dict):
            kind, unit = axis.get("type"), axis.get("unit")
            axes.append(
                Axis(
                    str(axis["name"]),
                    None if kind is None else str(kind),
                    None if unit is None else str(unit),
                )
            )
        else:
            raise ValueError(f"axis {axis!r} is neither a name nor an object")
    return tuple(axes)


_Transforms = tuple[tuple[float, ...] | None, tuple[float, ...] | None]


def _dataset(raw: dict[str, Any], outer: _Transforms, n_axes: int | None) -> Dataset:
    """A ``datasets`` entry, its transforms followed by the image-wide ones ``outer``."""
    scale, shift = _compose(_transforms(raw.get("coordinateTransformations")), outer)
    for values in (scale, shift):
        if values is not None and n_axes is not None and len(values) != n_axes:
            raise ValueError(
                f"level {raw['path']} transform has {len(values)} values for {n_axes} axes"
            )
    return Dataset(str(raw["path"]), scale, shift)


def _transforms(raw: object) -> _Transforms:
    """``(scale, translation)`` from an NGFF ``coordinateTransformations`` list."""
    scale: tuple[float, ...] | None = None
    shift: tuple[float, ...] | None = None
    if raw is None:
        return scale, shift
    if not isinstance(raw, list):
        raise ValueError("coordinateTransformations is not a list")
    for transform in raw:
        kind = transform["type"]
        if kind == "identity":
            continue
        if kind not in ("scale", "translation"):
            raise ValueError(f"unsupported transform type {kind!r}")
        if kind not in transform:
            raise ValueError(f"{kind} transform without inline values")
        values = tuple(float(v) for v in transform[kind])
        if kind == "scale":
            scale = values
        else:
            shift = values
    return scale, shift


def _compose(inner: _Transforms, outer: _Transforms) -> _Transforms:
    """A level's transforms followed by the image-wide ones: ``o_s * (s * i + t) + o_t``."""
    scale, shift = inner
    outer_scale, outer_shift = outer
    if outer_scale is not None:
        scale = outer_scale if scale is None else _combine(scale, outer_scale, float.__mul__)
        shift = None if shift is None else _combine(shift, outer_scale, float.__mul__)
    if outer_shift is not None:
        shift = outer_shift if shift is None else _combine(shift, outer_shift, float.__add__)
    return scale, shift


def _combine(
    a: Sequence[float], b: Sequence[float], op: Callable[[float, float], float]
) -> tuple[float, ...]:
    if len(a) != len(b):
        raise ValueError(f"transforms of {len(a)} and {len(b)} values do not compose")
    return tuple(op(x, y) for x, y in zip(a, b, strict=True))


def _check_axes(axes: list[dict[str, Any]]) -> list[str]:
    """Problems of an ``axes`` list: type order, number of space axes, units."""
    problems: list[str] = []
    types: list[Any] = [a.get("type") for a in axes]
    order = _AXIS_TYPE_ORDER
    if types != sorted(types, key=lambda t: order.get(t, 9)) or any(t not in order for t in types):
        problems.append(f"axes types {types} are not in time, channel, space order")
    if types.count("space") not in (2, 3):
        problems.append(f"{types.count('space')} space axes (OME-NGFF needs 2 or 3)")
    for a in axes:
        if a.get("type") == "space" and a.get("unit") not in (None, *SPACE_UNITS):
            problems.append(f"axis {a.get('name')}: unit {a.get('unit')!r} is not a length unit")
    return problems


def _check_dataset(
    ds: dict[str, Any], n_axes: int, ndim_of: Callable[[str], int | None]
) -> list[str]:
    """Problems of one ``datasets`` entry: its array and its transforms against the axes."""
    path = ds.get("path")
    if not isinstance(path, str):
        return [f"dataset path {path!r} is not a string"]
    ndim = ndim_of(path)
    if ndim is None:
        return [f"dataset {path!r} listed in multiscales does not exist"]
    problems: list[str] = []
    if ndim != n_axes:
        problems.append(f"dataset {path}: {ndim} dims but {n_axes} axes")
    transforms = ds.get("coordinateTransformations", [])
    if not isinstance(transforms, list) or not all(isinstance(t, dict) for t in transforms):
        return [*problems, f"dataset {path}: transformations {transforms!r} are not objects"]
    kinds = [t.get("type") for t in transforms]
    if not kinds or kinds[0] != "scale" or kinds[1:] not in ([], ["translation"]):
        return [*problems, f"dataset {path}: transformations {kinds} (need scale[, translation])"]
    for t in transforms:
        kind, values = t["type"], t.get(t["type"], [])
        if not isinstance(values, list) or not all(_is_number(v) for v in values):
            problems.append(f"dataset {path}: {kind} {values!r} is not a list of numbers")
            continue
        if len(values) != n_axes:
            problems.append(f"dataset {path}: {kind} has {len(values)} values")
        if kind == "scale" and any(v <= 0 for v in values):
            problems.append(f"dataset {path}: scale {values} has a value <= 0")
    return problems


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
