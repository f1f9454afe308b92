"""Augmentation: exact flips and rotations, intensity known answers, SimpleITK elastic warps."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813

from datatools.augment import (
    AddChannel,
    BSplineGrid,
    Compose,
    ElasticDeform,
    Flip,
    Gamma,
    GaussianNoise,
    Rot90,
    ScaleShift,
    displacement_image,
    warp,
)
from datatools.errors import InputError, OptionError
from tests.helpers import arange_volume


def sample3d(shape: tuple[int, int, int] = (4, 5, 6)) -> dict[str, Any]:
    image = arange_volume((2, *shape), "uint16")
    return {
        "image": image,
        "label": arange_volume(shape, "int64"),
        "mask": (image[:1] % 3 == 0).astype(np.uint8),
        "origin": np.asarray([7, 8, 9]),
    }


def test_flip_is_exact_on_every_key() -> None:
    s = sample3d()
    out = Flip("zyx", p=1.0)(s, 0)
    assert np.array_equal(out["image"], s["image"][:, ::-1, ::-1, ::-1])
    assert np.array_equal(out["label"], s["label"][::-1, ::-1, ::-1])
    assert np.array_equal(out["mask"], s["mask"][:, ::-1, ::-1, ::-1])
    assert out["origin"] is s["origin"]
    assert all(out[k].flags.c_contiguous for k in ("image", "label", "mask"))
    assert np.array_equal(Flip("zyx", p=0.0)(s, 0)["image"], s["image"])
    flat = {"image": arange_volume((1, 3, 4), "uint8")}
    assert np.array_equal(Flip("x", p=1.0)(flat)["image"], flat["image"][..., ::-1])


def test_flip_draws_each_axis_from_rng() -> None:
    s = sample3d()
    combos = [c for n in range(4) for c in itertools.combinations(range(3), n)]
    seen = set()
    for seed in range(30):
        out = Flip("zyx")(s, seed)
        found = [c for c in combos if np.array_equal(out["label"], np.flip(s["label"], c))]
        assert len(found) == 1
        axes = found[0]
        assert np.array_equal(out["image"], np.flip(s["image"], tuple(a + 1 for a in axes)))
        assert np.array_equal(Flip("zyx")(s, seed)["image"], out["image"])
        seen.add(axes)
    assert len(seen) >= 6


def test_rot90_same_rotation_for_image_and_labels() -> None:
    s = sample3d((3, 5, 5))
    ks = set()
    for seed in range(20):
        out = Rot90("yx")(s, seed)
        k = next(
            k for k in range(4) if np.array_equal(out["label"], np.rot90(s["label"], k, (1, 2)))
        )
        assert np.array_equal(out["image"], np.rot90(s["image"], k, axes=(2, 3)))
        assert np.array_equal(out["mask"], np.rot90(s["mask"], k, axes=(2, 3)))
        ks.add(k)
    assert ks == {0, 1, 2, 3}
    oblong = sample3d((3, 4, 6))
    for seed in range(10):
        out = Rot90("yx")(oblong, seed)
        assert out["image"].shape == oblong["image"].shape


def test_intensity_known_answers() -> None:
    image = np.asarray([[[0, 1, 2]]], dtype=np.uint8)
    out = ScaleShift(scale=2.0, shift=1.0)({"image": image, "label": image[0]})
    assert out["image"].dtype == np.float32
    assert out["image"].tolist() == [[[1.0, 3.0, 5.0]]]
    assert np.array_equal(out["label"], image[0])
    assert Gamma(gamma=2.0)({"image": image})["image"].tolist() == [[[0.0, 0.5, 2.0]]]
    assert Gamma(gamma=1.0)({"image": image})["image"].tolist() == [[[0.0, 1.0, 2.0]]]
    constant = np.full((1, 2, 2), 3.0)
    assert np.array_equal(Gamma(gamma=(0.5, 2.0))({"image": constant}, 0)["image"], constant)
    assert np.array_equal(GaussianNoise(sigma=0.0)({"image": image})["image"], image)
    big = np.zeros((1, 200, 200), np.float32)
    noisy = GaussianNoise(sigma=2.0)({"image": big}, 5)["image"]
    assert abs(float(noisy.std()) - 2.0) < 0.05
    assert np.array_equal(GaussianNoise(sigma=2.0)({"image": big}, 5)["image"], noisy)


def test_compose_and_add_channel() -> None:
    patch = {"image": arange_volume((3, 4, 5), "uint8"), "label": arange_volume((3, 4, 5))}
    pipeline = Compose([AddChannel(), Flip("x", p=1.0), ScaleShift(scale=1.0, shift=0.5)])
    out = pipeline(patch, 1)
    assert out["image"].shape == (1, 3, 4, 5)
    assert np.array_equal(out["image"][0], patch["image"][..., ::-1] + np.float32(0.5))
    assert np.array_equal(out["label"], patch["label"][..., ::-1])
    rng = np.random.default_rng(3)
    a = Compose([Flip(), GaussianNoise(0.1)])(sample3d(), rng)
    b = Compose([Flip(), GaussianNoise(0.1)])(sample3d(), np.random.default_rng(3))
    assert np.array_equal(a["image"], b["image"])


def test_bspline_field_equals_simpleitk_transform() -> None:
    for shape, mesh in (((7, 9, 12), (2, 3, 4)), ((10, 13), (3, 2))):
        grid = BSplineGrid.make(shape, mesh)
        assert grid.coefficient_shape == (len(shape), *(m + 3 for m in mesh))
        coefficients = np.random.default_rng(0).normal(0, 2, grid.coefficient_shape)
        reference = sitk.Image(list(shape[::-1]), sitk.sitkFloat32)
        dense = sitk.TransformToDisplacementField(
            grid.sitk_transform(coefficients), sitk.sitkVectorFloat64, reference.GetSize(),
            reference.GetOrigin(), reference.GetSpacing(), reference.GetDirection(),
        )  # fmt: skip
        expected = np.moveaxis(sitk.GetArrayFromImage(dense)[..., ::-1], -1, 0)
        assert np.abs(grid.field(coefficients) - expected).max() < 1e-5
        image = np.random.default_rng(1).random(shape).astype(np.float32)
        warped = warp(image[None], displacement_image(grid.field(coefficients)), len(shape),
                      linear=True)[0]  # fmt: skip
        direct = sitk.Resample(
            sitk.GetImageFromArray(image), grid.sitk_transform(coefficients), sitk.sitkLinear, 0.0
        )
        assert np.abs(warped - sitk.GetArrayFromImage(direct)).max() < 1e-4


@pytest.mark.parametrize("shape", [(10, 12, 14), (24, 20)])
def test_elastic_same_displacement_for_image_and_labels(shape: tuple[int, ...]) -> None:
    coords = np.indices(shape).astype(np.float64) + 1  # 0 reads as "outside"
    labels = np.arange(1, np.prod(shape) + 1, dtype=np.int64).reshape(shape)
    out = ElasticDeform(sigma=2.0, grid=2)({"image": coords, "label": labels}, 4)
    inside = out["label"] > 0
    assert inside.mean() > 0.5
    nearest = np.stack(np.unravel_index(out["label"][inside] - 1, shape)) + 1
    linear = out["image"][:, inside]
    assert np.abs(nearest - linear).max() <= 0.5 + 1e-6
    moved = np.abs(linear - (np.indices(shape)[:, inside] + 1)).max()
    assert moved > 1.0  # the warp did move voxels
    assert np.all(out["image"][:, ~inside] == 0)


def test_elastic_nearest_keeps_label_values_and_dtypes() -> None:
    rng = np.random.default_rng(0)
    labels = rng.choice(np.asarray([0, 3, 70000, 2**40], dtype=np.int64), size=(12, 12, 12))
    mask = rng.random((1, 12, 12, 12)) > 0.5
    image = rng.integers(0, 255, size=(3, 12, 12, 12)).astype(np.uint8)
    out = ElasticDeform(sigma=3.0)({"image": image, "label": labels, "mask": mask}, 1)
    assert set(np.unique(out["label"])) <= {0, 3, 70000, 2**40}
    assert not np.array_equal(out["label"], labels)
    assert out["label"].dtype == np.int64
    assert out["mask"].dtype == bool
    assert out["mask"].shape == mask.shape
    assert out["image"].dtype == np.uint8


def test_elastic_zero_sigma_is_identity() -> None:
    s = sample3d((6, 7, 8))
    out = ElasticDeform(sigma=0.0, grid=(2, 3, 2))(s, 0)
    for key in ("image", "label", "mask"):
        assert np.array_equal(out[key], s[key])
        assert out[key].dtype == s[key].dtype
    flat = {"image": arange_volume((1, 9, 11), "float32")}
    assert np.array_equal(ElasticDeform(sigma=0.0)(flat)["image"], flat["image"])


def test_augment_errors() -> None:
    with pytest.raises(InputError, match=r"^sample: no 'image' \(keys: label\)$"):
        Flip()({"label": np.zeros((2, 2))})
    with pytest.raises(InputError, match=r"^image: shape \(4, 5\) is not \(c, y, x\) or"):
        Flip()({"image": np.zeros((4, 5))})
    with pytest.raises(InputError, match=r"^label: shape \(4, 4\) is not on the image grid"):
        Flip("yx")({"image": np.zeros((1, 4, 5)), "label": np.zeros((4, 4))})
    with pytest.raises(InputError, match=r"^image: a 2D sample has no z axis \(Flip axes: use"):
        Flip("zyx", p=1.0)({"image": np.zeros((1, 4, 5))})
    with pytest.raises(InputError, match=r"^image: 2D sample, ElasticDeform grid \(2, 2, 2\) has"):
        ElasticDeform(grid=(2, 2, 2))({"image": np.zeros((1, 8, 8))})
    with pytest.raises(OptionError, match=r"^Flip axes 'zq': use letters of 'zyx'$"):
        Flip("zq")
    with pytest.raises(OptionError, match=r"^Flip p 1.5: must be between 0 and 1$"):
        Flip(p=1.5)
    with pytest.raises(OptionError, match=r"^Rot90 axes 'yy': use two letters of 'zyx'"):
        Rot90("yy")
    with pytest.raises(OptionError, match=r"^ScaleShift scale \(2.0, 1.0\): give a value or a"):
        ScaleShift(scale=(2.0, 1.0))
    with pytest.raises(OptionError, match=r"^GaussianNoise sigma -1.0: give a value or a \(low"):
        GaussianNoise(sigma=-1.0)
    with pytest.raises(OptionError, match=r"^Gamma gamma 0.0: give a value"):
        Gamma(gamma=0.0)
    with pytest.raises(OptionError, match=r"^ElasticDeform grid 0: every value must be >= 1$"):
        ElasticDeform(grid=0)


def test_flip_defaults_to_the_sample_axes_and_checks_them_on_every_sample() -> None:
    flat = {"image": np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 4, 6)}
    for seed in range(20):  # 2D samples: y and x only, never a missing z
        out = Flip()(dict(flat), seed)["image"]
        assert any(
            np.array_equal(out, flat["image"][:, ::a, ::b]) for a in (1, -1) for b in (1, -1)
        )
    with pytest.raises(InputError, match="a 2D sample has no z axis"):
        Flip("zyx", p=0.0)(dict(flat), 0)  # refused even when no flip is drawn
