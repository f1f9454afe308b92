"""OME-NGFF metadata as data: known answers, round trips per version, acceptance by
ome-zarr-models, parsing of other tools' variants, validation and version detection."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import zarr
from ome_zarr_models.v04.image import Image as Image04
from ome_zarr_models.v04.image import ImageAttrs as ImageAttrs04
from ome_zarr_models.v04.image_label import ImageLabel as ImageLabel04
from ome_zarr_models.v04.image_label import ImageLabelAttrs as ImageLabelAttrs04
from ome_zarr_models.v04.labels import LabelsAttrs as LabelsAttrs04
from ome_zarr_models.v05.image import Image as Image05
from ome_zarr_models.v05.image import ImageAttrs as ImageAttrs05
from ome_zarr_models.v05.image_label import ImageLabel as ImageLabel05
from ome_zarr_models.v05.image_label import ImageLabelAttrs as ImageLabelAttrs05
from ome_zarr_models.v05.labels import LabelsAttrs as LabelsAttrs05

from datatools.errors import InputError
from datatools.ngff import (
    Axis,
    Dataset,
    ImageMetadata,
    Ngff,
    Ngff04,
    Ngff05,
    Placement,
    detect,
    for_version,
    for_zarr_format,
    parse_image,
    validate_image,
)

VERSIONS = [Ngff04(), Ngff05()]
TINY = [("0", Placement((2.0, 0.5), (0.0, 0.25), "micrometer"))]


def two_levels(axes: str, unit: str | None) -> list[tuple[str, Placement]]:
    n = sum(a in "zyx" for a in axes)
    base = Placement(
        tuple(0.5 * (i + 1) for i in range(n)), tuple(float(i) for i in range(n)), unit
    )
    return [("0", base), ("1", base.downsampled((2,) * n))]


# --- known answers -----------------------------------------------------------------------------


def test_ngff04_image_known_answer() -> None:
    assert Ngff04().image_attributes("yx", TINY, name="tiny") == {
        "multiscales": [
            {
                "version": "0.4",
                "name": "tiny",
                "axes": [
                    {"name": "y", "type": "space", "unit": "micrometer"},
                    {"name": "x", "type": "space", "unit": "micrometer"},
                ],
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [2.0, 0.5]},
                            {"type": "translation", "translation": [0.0, 0.25]},
                        ],
                    }
                ],
            }
        ]
    }


def test_ngff05_image_known_answer() -> None:
    level = Placement((4.0, 1.0, 1.0), (1.5, 0.5, 0.5), None)
    assert Ngff05().image_attributes("czyx", [("s0", level)], name="img") == {
        "ome": {
            "version": "0.5",
            "multiscales": [
                {
                    "name": "img",
                    "axes": [
                        {"name": "c", "type": "channel"},
                        {"name": "z", "type": "space"},
                        {"name": "y", "type": "space"},
                        {"name": "x", "type": "space"},
                    ],
                    "datasets": [
                        {
                            "path": "s0",
                            "coordinateTransformations": [
                                {"type": "scale", "scale": [1.0, 4.0, 1.0, 1.0]},
                                {"type": "translation", "translation": [0.0, 1.5, 0.5, 0.5]},
                            ],
                        }
                    ],
                }
            ],
        }
    }


def test_label_image_and_labels_known_answers() -> None:
    v04 = Ngff04().label_image_attributes("yx", TINY, name="cells")
    assert list(v04) == ["multiscales", "image-label"]
    assert v04["image-label"] == {"version": "0.4", "source": {"image": "../../"}}
    assert v04["multiscales"] == Ngff04().image_attributes("yx", TINY, name="cells")["multiscales"]
    v05 = Ngff05().label_image_attributes("yx", TINY, name="cells")
    assert list(v05) == ["ome"]
    assert list(v05["ome"]) == ["version", "multiscales", "image-label"]
    assert v05["ome"]["image-label"] == {"source": {"image": "../../"}}
    assert Ngff04().labels_attributes(["a", "b"]) == {"labels": ["a", "b"]}
    assert Ngff05().labels_attributes(["a"]) == {"ome": {"version": "0.5", "labels": ["a"]}}


@pytest.mark.parametrize("ngff", VERSIONS, ids=lambda n: n.version)
def test_label_names_round_trip(ngff: Ngff) -> None:
    assert ngff.label_names(ngff.labels_attributes(["cells", "nuclei"])) == ["cells", "nuclei"]
    assert ngff.label_names(ngff.labels_attributes([])) == []
    assert ngff.label_names({}) == []


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("ngff", VERSIONS, ids=lambda n: n.version)
@pytest.mark.parametrize("axes", ["yx", "zyx", "czyx", "tczyx", "cyx"])
@pytest.mark.parametrize("unit", ["nanometer", None])
def test_write_then_parse_gives_the_placements(ngff: Ngff, axes: str, unit: str | None) -> None:
    levels = two_levels(axes, unit)
    for write in (ngff.image_attributes, ngff.label_image_attributes):
        attrs = write(axes, levels, name="img")
        assert detect(attrs) == ngff
        image = parse_image(attrs, "img.zarr")
        assert image is not None
        assert image == ngff.parse_image(attrs, "img.zarr")
        assert image.version == ngff.version
        assert image.paths == ("0", "1")
        assert image.axis_names == tuple(axes)
        types = {"t": "time", "c": "channel"}
        assert [(a.type, a.unit) for a in image.axes or ()] == [
            (types.get(a, "space"), None if a in "tc" else unit) for a in axes
        ]
        got = [(d.path, image.placement(i, "img.zarr")) for i, d in enumerate(image.datasets)]
        assert got == levels
        assert validate_image(attrs, {"0": len(axes), "1": len(axes)}.get) == []


def test_parsed_transforms_cover_every_axis() -> None:
    levels = [("0", Placement((3.0, 2.0), (6.0, 4.0), "meter"))]
    image = parse_image(Ngff05().image_attributes("tcyx", levels, name="i"), "i.zarr")
    assert image == ImageMetadata(
        "0.5",
        (
            Axis("t", "time"),
            Axis("c", "channel"),
            Axis("y", "space", "meter"),
            Axis("x", "space", "meter"),
        ),
        (Dataset("0", (1.0, 1.0, 3.0, 2.0), (0.0, 0.0, 6.0, 4.0)),),
    )


# --- accepted by ome-zarr-models ---------------------------------------------------------------


@pytest.mark.parametrize("axes", ["yx", "zyx", "czyx"])
def test_written_attributes_are_valid_ngff(axes: str) -> None:
    levels = two_levels(axes, "micrometer")
    ImageAttrs04.model_validate(Ngff04().image_attributes(axes, levels, name="i"))
    ImageAttrs05.model_validate(Ngff05().image_attributes(axes, levels, name="i")["ome"])
    ImageLabelAttrs04.model_validate(Ngff04().label_image_attributes(axes, levels, name="i"))
    ImageLabelAttrs05.model_validate(Ngff05().label_image_attributes(axes, levels, name="i")["ome"])
    LabelsAttrs04.model_validate(Ngff04().labels_attributes(["i"]))
    LabelsAttrs05.model_validate(Ngff05().labels_attributes(["i"])["ome"])


@pytest.mark.parametrize(
    ("ngff", "models"),
    [(Ngff04(), (Image04, ImageLabel04)), (Ngff05(), (Image05, ImageLabel05))],
    ids=["0.4", "0.5"],
)
def test_written_groups_open_with_ome_zarr_models(
    tmp_path: Path, ngff: Ngff, models: tuple[Any, Any]
) -> None:
    levels = two_levels("cyx", "nanometer")
    image, label = tmp_path / "img.zarr", tmp_path / "img.zarr" / "labels" / "cells"
    for folder, attrs, model in (
        (image, ngff.image_attributes("cyx", levels, name="img"), models[0]),
        (label, ngff.label_image_attributes("cyx", levels, name="cells"), models[1]),
    ):
        group = zarr.create_group(folder, zarr_format=2 if ngff.zarr_format == 2 else 3)
        group.attrs.update(attrs)
        names = list("cyx") if ngff.zarr_format == 3 else None
        for path, shape in (("0", (3, 8, 8)), ("1", (3, 4, 4))):
            group.create_array(path, shape=shape, dtype="uint8", dimension_names=names)
        model.from_zarr(zarr.open_group(folder, mode="r"))


# --- parsing what other tools write ------------------------------------------------------------


def ngff04_attrs(**change: Any) -> dict[str, Any]:
    attrs = Ngff04().image_attributes("zyx", two_levels("zyx", "micrometer"), name="i")
    attrs = copy.deepcopy(attrs)
    attrs["multiscales"][0].update(change)
    return attrs


def test_parse_composes_image_wide_transforms_and_skips_identity() -> None:
    attrs = ngff04_attrs(
        coordinateTransformations=[
            {"type": "identity"},
            {"type": "scale", "scale": [2.0, 2.0, 2.0]},
            {"type": "translation", "translation": [1.0, 1.0, 1.0]},
        ]
    )
    image = parse_image(attrs, "i.zarr")
    assert image is not None
    # level 0: scale (0.5, 1, 1.5), translation (0, 1, 2); then x2, +1
    assert image.datasets[0] == Dataset("0", (1.0, 2.0, 3.0), (1.0, 3.0, 5.0))


def test_parse_without_transforms_or_axes() -> None:
    attrs = {"multiscales": [{"datasets": [{"path": "a"}]}]}
    image = parse_image(attrs, "old.zarr")
    assert image == ImageMetadata(None, None, (Dataset("a"),))
    assert image.placement(0, "old.zarr", "cyx") == Placement((1.0, 1.0), (0.0, 0.0), None)
    with pytest.raises(InputError, match=r"^old\.zarr: OME-Zarr multiscales metadata names no"):
        image.placement(0, "old.zarr")


def test_parse_axes_as_plain_names() -> None:
    attrs = ngff04_attrs(version="0.3", axes=["z", "y", "x"])
    image = parse_image(attrs, "i.zarr")
    assert image is not None
    assert image.version == "0.3"
    assert image.axes == (Axis("z"), Axis("y"), Axis("x"))
    assert image.placement(1, "i.zarr") == Placement((1.0, 2.0, 3.0), (0.25, 1.5, 2.75), None)


def test_parse_converts_mixed_units_to_the_smallest() -> None:
    axes = [
        {"name": "z", "type": "space", "unit": "micrometer"},
        {"name": "y", "type": "space", "unit": "nanometer"},
        {"name": "x", "type": "space"},
    ]
    image = parse_image(ngff04_attrs(axes=axes), "i.zarr")
    assert image is not None
    placement = image.placement(0, "i.zarr")
    assert placement.unit == "nanometer"
    assert placement.voxel_size == pytest.approx((500.0, 1.0, 1.5))
    assert placement.translation == pytest.approx((0.0, 1.0, 2.0))
    axes[1]["unit"] = "parsec"
    image = parse_image(ngff04_attrs(axes=axes), "i.zarr")
    assert image is not None
    with pytest.raises(InputError) as caught:
        image.placement(0, "i.zarr")
    assert str(caught.value) == (
        "i.zarr: spatial axes have different units (micrometer, parsec) that datatools cannot "
        "convert"
    )


@pytest.mark.parametrize(
    ("attrs", "problem"),
    [
        ({"multiscales": {}}, "multiscales is not a non-empty list of objects"),
        ({"ome": {"version": "0.5", "multiscales": []}}, "multiscales is not a non-empty list"),
        (ngff04_attrs(axes="zyx"), "axes is not a list"),
        (ngff04_attrs(axes=[1, 2, 3]), "axis 1 is neither a name nor an object"),
        (ngff04_attrs(datasets=[{"path": "0"}, "1"]), "datasets is not a non-empty list"),
        (ngff04_attrs(datasets=[{}]), "'path'"),
        (
            ngff04_attrs(datasets=[{"path": "0", "coordinateTransformations": [{"type": "x"}]}]),
            "unsupported transform type 'x'",
        ),
        (
            ngff04_attrs(datasets=[{"path": "0", "coordinateTransformations": {}}]),
            "coordinateTransformations is not a list",
        ),
        (
            ngff04_attrs(
                datasets=[{"path": "0", "coordinateTransformations": [{"type": "scale"}]}]
            ),
            "scale transform without inline values",
        ),
        (
            ngff04_attrs(
                datasets=[
                    {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1]}]}
                ]
            ),
            "level 0 transform has 1 values for 3 axes",
        ),
        (
            ngff04_attrs(coordinateTransformations=[{"type": "scale", "scale": [1.0, 1.0]}]),
            "transforms of 3 and 2 values do not compose",
        ),
    ],
)
def test_parse_refuses_malformed_metadata(attrs: dict[str, Any], problem: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_image(attrs, "bad.zarr")
    message = str(caught.value)
    assert message.startswith(f"bad.zarr: malformed OME-Zarr multiscales metadata ({problem}")


def test_parse_of_attributes_without_an_image() -> None:
    assert parse_image({}, "x") is None
    assert parse_image({"ome": {"version": "0.5", "labels": ["a"]}}, "x") is None
    assert parse_image({"labels": ["a"]}, "x") is None


# --- validation --------------------------------------------------------------------------------


def broken(ngff: Ngff, change: Any) -> dict[str, Any]:
    attrs = copy.deepcopy(ngff.image_attributes("czyx", two_levels("czyx", "nanometer"), name="i"))
    change((attrs["ome"] if ngff.version == "0.5" else attrs)["multiscales"][0])
    return attrs


def set_item(key: str, value: Any) -> Any:
    return lambda ms: ms.update({key: value})


def set_transforms(value: Any) -> Any:
    return lambda ms: ms["datasets"][1].update(coordinateTransformations=value)


@pytest.mark.parametrize("ngff", VERSIONS, ids=lambda n: n.version)
@pytest.mark.parametrize(
    ("change", "problems"),
    [
        (
            set_transforms([{"type": "translation", "translation": [0, 0, 0, 0]}]),
            ["dataset 1: transformations ['translation'] (need scale[, translation])"],
        ),
        (
            set_transforms(
                [{"type": "translation", "translation": [0] * 4}, {"type": "scale", "scale": [1]}]
            ),
            ["dataset 1: transformations ['translation', 'scale'] (need scale[, translation])"],
        ),
        (
            set_transforms(
                [{"type": "scale", "scale": [1, 0, 2]}, {"type": "translation", "translation": []}]
            ),
            [
                "dataset 1: scale has 3 values",
                "dataset 1: scale [1, 0, 2] has a value <= 0",
                "dataset 1: translation has 0 values",
            ],
        ),
        (
            set_transforms([{"type": "scale", "scale": [1, "2", 1, 1]}]),
            ["dataset 1: scale [1, '2', 1, 1] is not a list of numbers"],
        ),
        (set_transforms("scale"), ["dataset 1: transformations 'scale' are not objects"]),
        (
            lambda ms: ms["axes"].pop(0),
            [
                f"dataset {level}: {problem}"
                for level in (0, 1)
                for problem in (
                    "4 dims but 3 axes",
                    "scale has 4 values",
                    "translation has 4 values",
                )
            ],
        ),
        (
            lambda ms: ms["axes"].reverse(),
            [
                "axes types ['space', 'space', 'space', 'channel'] are not in time, channel, space "
                "order"
            ],
        ),
        (
            lambda ms: [a.update(type="space") for a in ms["axes"]],
            ["4 space axes (OME-NGFF needs 2 or 3)"],
        ),
        (
            lambda ms: ms["axes"][3].update(unit="pixel"),
            ["axis x: unit 'pixel' is not a length unit"],
        ),
        (
            lambda ms: ms["datasets"].append({"path": "2", "coordinateTransformations": []}),
            ["dataset '2' listed in multiscales does not exist"],
        ),
        (set_item("axes", "czyx"), ["axes 'czyx' are not a list of objects"]),
        (set_item("datasets", []), ["datasets [] are not a non-empty list of objects"]),
    ],
)
def test_validation_finds_each_problem(ngff: Ngff, change: Any, problems: list[str]) -> None:
    attrs = broken(ngff, change)
    assert validate_image(attrs, {"0": 4, "1": 4}.get) == problems
    assert ngff.validate_image(attrs, {"0": 4, "1": 4}.get) == problems


@pytest.mark.parametrize("ngff", VERSIONS, ids=lambda n: n.version)
def test_validation_finds_an_array_with_another_number_of_axes(ngff: Ngff) -> None:
    attrs = ngff.image_attributes("czyx", two_levels("czyx", "nanometer"), name="i")
    assert validate_image(attrs, {"0": 4, "1": 3}.get) == ["dataset 1: 3 dims but 4 axes"]


@pytest.mark.parametrize(
    ("attrs", "found"),
    [
        ({}, None),
        ({"multiscales": [{"version": "0.3", "axes": ["y", "x"], "datasets": []}]}, "0.3"),
        ({"ome": {"version": "0.6", "multiscales": []}}, "0.6"),
        ({"ome": {"multiscales": []}}, None),
    ],
)
def test_validation_of_other_versions(attrs: dict[str, Any], found: str | None) -> None:
    no_arrays: dict[str, int] = {}
    assert validate_image(attrs, no_arrays.get) == [
        f"no OME-NGFF 0.4/0.5 multiscales metadata (found version {found})"
    ]


# --- version detection -------------------------------------------------------------------------


def test_version_detection() -> None:
    assert (for_zarr_format(2), for_zarr_format(3)) == (Ngff04(), Ngff05())
    assert (for_version("0.4"), for_version("0.5")) == (Ngff04(), Ngff05())
    assert (Ngff04.zarr_format, Ngff05.zarr_format) == (2, 3)
    with pytest.raises(InputError, match=r"^OME-NGFF 0\.6: not a version datatools knows"):
        for_version("0.6")
    image04 = Ngff04().image_attributes("yx", TINY, name="i")
    image05 = Ngff05().image_attributes("yx", TINY, name="i")
    assert detect(image04) == Ngff04()
    assert detect(image05) == Ngff05()
    assert detect({**image04, **image05}) == Ngff05()  # the newest layout wins
    assert detect({"multiscales": [{"datasets": []}]}) == Ngff04()  # no version: 0.4 layout
    assert detect({"ome": {"version": "0.5", "labels": []}}) is None  # not an image
    assert detect({"ome": "0.5"}) is None
    assert Ngff04().declared_version(image04) == "0.4"
    assert Ngff05().declared_version(image05) == "0.5"
    assert Ngff04().declared_version({"multiscales": [{}]}) is None
