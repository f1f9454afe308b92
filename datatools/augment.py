"""Augmentation of training samples: the same geometry on image, labels and mask.

A sample is a dict (an item of :class:`~datatools.loaders.ArrayDataset` or
:class:`~datatools.loaders.VolumePatchStream`):

- ``image``: ``(c, z, y, x)`` or ``(c, y, x)``, channels first (a single-channel patch stored
  as ``(z, y, x)`` gets its channel axis from :class:`AddChannel`);
- ``label``, ``mask`` (optional): on the image's grid, ``(z, y, x)`` or with a leading channel
  axis ``(k, z, y, x)``; they move exactly as the image does and keep their values (nearest
  neighbour), so ids stay integers;
- anything else (``origin``, ``class``, ...) passes through unchanged.

Every transform is called as ``transform(sample, rng)`` and returns a new dict; ``rng`` (an
int seed, a ``numpy.random.Generator`` or ``None`` for fresh entropy) is the only source of
randomness. Geometric transforms keep dtypes; intensity transforms return float32 images
(float64 images stay float64). Arrays come back C-contiguous (``torch.from_numpy`` takes them).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import SimpleITK as sitk  # noqa: N813

from datatools.errors import InputError, OptionError
from datatools.geometry import SPATIAL_AXES

Array: TypeAlias = np.ndarray[Any, Any]
RngLike: TypeAlias = int | np.random.Generator | None
Range: TypeAlias = float | tuple[float, float]

IMAGE_KEY = "image"
NEAREST_KEYS = ("label", "mask")
"""Keys resampled by nearest neighbour (their values are ids or flags)."""


def spatial_dims(sample: Mapping[str, Any]) -> int:
    """Spatial axes of a sample (2 or 3): the image's axes after the channel axis.

    Raises:
        InputError: no image, an image that is not ``(c, [z,] y, x)``, or a label or mask off
            the image's grid.
    """
    image = sample.get(IMAGE_KEY)
    if image is None:
        raise InputError(f"sample: no {IMAGE_KEY!r} (keys: {', '.join(map(str, sample))})")
    if np.ndim(image) not in (3, 4):
        raise InputError(
            f"image: shape {np.shape(image)} is not (c, y, x) or (c, z, y, x) (add the channel "
            "axis with AddChannel())"
        )
    nd = np.ndim(image) - 1
    grid = np.shape(image)[1:]
    for key in NEAREST_KEYS:
        if key in sample and (
            np.ndim(sample[key]) not in (nd, nd + 1) or np.shape(sample[key])[-nd:] != grid
        ):
            raise InputError(
                f"{key}: shape {np.shape(sample[key])} is not on the image grid {grid} "
                f"(give {key}s of shape {grid} or (k, *{grid}))"
            )
    return nd


def _draw(value: Range, rng: np.random.Generator) -> float:
    """A fixed value, or uniform in ``[low, high]``."""
    if isinstance(value, tuple):
        return float(rng.uniform(value[0], value[1]))
    return float(value)


def _check_range(name: str, value: Range, low: float = -math.inf) -> None:
    """Raises OptionError: a range with ``high < low`` or values below ``low``."""
    values = value if isinstance(value, tuple) else (value, value)
    if len(values) != 2 or values[1] < values[0] or values[0] < low:
        raise OptionError(f"{name} {value}: give a value or a (low, high) range, each >= {low:g}")


def _check_p(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise OptionError(f"{name} p {p}: must be between 0 and 1")


def _axis(letter: str, nd: int, name: str) -> int:
    """Position (from the end) of a spatial axis letter in a sample with ``nd`` spatial axes.

    Raises:
        InputError: the sample has no such axis (a 2D sample has no ``z``).
    """
    at = SPATIAL_AXES[3 - nd :].find(letter)
    if at < 0:
        raise InputError(f"image: a {nd}D sample has no {letter} axis ({name} axes: use 'yx')")
    return at - nd


def _geometric(sample: Mapping[str, Any]) -> list[str]:
    return [k for k in (IMAGE_KEY, *NEAREST_KEYS) if k in sample]


def _float_image(sample: Mapping[str, Any]) -> Array:
    """The sample's image as float32 (float64 stays float64).

    Raises:
        InputError: the sample has no image.
    """
    spatial_dims(sample)
    image = np.asarray(sample[IMAGE_KEY])
    return image.astype(np.float64 if image.dtype == np.float64 else np.float32, copy=False)


class Transform(ABC):
    """A random change of a sample; ``transform(sample, rng)`` returns a new sample dict."""

    def __call__(self, sample: Mapping[str, Any], rng: RngLike = None) -> dict[str, Any]:
        """Apply to ``sample`` with draws from ``rng``.

        Raises:
            InputError: the sample is not a valid image / label / mask set (see the module).
        """
        return self.apply(dict(sample), np.random.default_rng(rng))

    @abstractmethod
    def apply(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """Apply to ``sample`` (a dict this call may change) with draws from ``rng``.

        Raises:
            InputError: as :meth:`__call__`.
        """


@dataclass(frozen=True)
class Compose(Transform):
    """Apply ``transforms`` in order, all drawing from the same generator."""

    transforms: Sequence[Transform]

    def apply(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        for t in self.transforms:
            sample = t.apply(sample, rng)
        return sample


@dataclass(frozen=True)
class AddChannel(Transform):
    """Insert a channel axis of length 1 in front of ``keys`` (``(z, y, x)`` -> ``(1, z, y,
    x)``), e.g. first in a :class:`Compose` for single-channel patches. Deterministic."""

    keys: tuple[str, ...] = (IMAGE_KEY,)

    def apply(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        for key in self.keys:
            if key in sample:
                sample[key] = np.asarray(sample[key])[np.newaxis]
        return sample


@dataclass(frozen=True)
class Flip(Transform):
    """Mirror each spatial axis in ``axes`` (letters of ``zyx``; default every spatial axis of
    the sample, ``zyx`` or ``yx``) with probability ``p``.

    Raises:
        OptionError: letters other than ``z``, ``y``, ``x``, or ``p`` outside [0, 1].
        InputError: (when applied) an axis the sample lacks, on every sample, not only when
            its flip is drawn.
    """

    axes: str | None = None
    p: float = 0.5

    def __post_init__(self) -> None:
        if self.axes is not None and (
            not self.axes or any(a not in SPATIAL_AXES for a in self.axes)
        ):
            raise OptionError(f"Flip axes {self.axes!r}: use letters of 'zyx'")
        _check_p("Flip", self.p)

    def apply(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        nd = spatial_dims(sample)
        positions = [_axis(a, nd, "Flip") for a in self.axes or SPATIAL_AXES[3 - nd :]]
        flips = [at for at in positions if rng.random() < self.p]
        if flips:
            for key in _geometric(sample):
                sample[key] = np.ascontiguousarray(np.flip(sample[key], axis=tuple(flips)))
        return sample


@dataclass(frozen=True)
class Rot90(Transform):
    """Rotate by ``k x 90`` degrees in the plane of ``axes`` (two letters of ``zyx``), ``k``
    uniform in 0..3; in a plane that is not square, ``k`` is 0 or 2 so the shape stays.

    Raises:
        OptionError: not two distinct letters of ``zyx``.
    """

    axes: str = "yx"

    def __post_init__(self) -> None:
        if len(self.axes) != 2 or len(set(self.axes)) != 2 or set(self.axes) - set(SPATIAL_AXES):
            raise OptionError(f"Rot90 axes {self.axes!r}: use two letters of 'zyx', e.g. 'yx'")

    def apply(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        nd = spatial_dims(sample)
        plane = (_axis(self.axes[0], nd, "Rot90"), _axis(self.axes[1], nd, "Rot90"))
        shape = np.shape(sample[IMAGE_KEY])
        square = shape[plane[0]] == shape[plane[1]]
        k = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
        if k:
            for key in _geometric(sample):
                sample[key] = np.ascontiguousarray(np.rot90(sample[key], k, axes=plane))
        return sample


@dataclass(frozen=True)
class ScaleShift(Transform):
    """Intensity ``image * a + b``, ``a`` from ``scale`` and ``b`` from ``shift`` (image units),
    each a value or a uniform ``(low, high)`` range; with probability ``p``.

    Raises:
        OptionError: an inverted range or ``p`` outside [0, 1].
    """

    scale: Range = (0.9, 1.1)
    shift: Range = (-0.1, 0.1)
    p: float = 1.0

    def __post_init__(self) -> None:
        _check_range("ScaleShift scale", self.scale)
        _check_range("ScaleShift shift", self.shift)
        _check_p("ScaleShift", self.p)

    def apply(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        if rng.random() < self.p:
            a, b = _draw(self.scale, rng), _draw(self.shift, rng)
            image = _float_image(sample)
            sample[IMAGE_KEY] = image * image.dtype.type(a) + image.dtype.type(b)
        return sample


@dataclass(frozen=True)
class Gamma(Transform):
    """Gamma curve: the image is mapped to [0, 1] by its own minimum and maximum, raised to
    ``gamma`` (a value or a uniform range, > 0) and mapped back; with probability ``p``.
    A constant image stays as it is.

    Raises:
        OptionError: ``gamma`` <= 0, an inverted range or ``p`` outside [0, 1].
    """

    gamma: Range = (0.7, 1.5)
    p: float = 1.0

    def __post_init__(self) -> None:
        _check_range("Gamma gamma", self.gamma, low=1e-6)
        _check_p("Gamma", self.p)

    def apply(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        if rng.random() < self.p:
            g = _draw(self.gamma, rng)
            image = _float_image(sample)
            lo, hi = image.min(), image.max()
            if hi > lo:
                image = ((image - lo) / (hi - lo)) ** image.dtype.type(g) * (hi - lo) + lo
            sample[IMAGE_KEY] = image
        return sample


@dataclass(frozen=True)
class GaussianNoise(Transform):
    """Add normal noise of standard deviation ``sigma`` (image units; a value or a uniform
    range) to every image voxel; with probability ``p``.

    Raises:
        OptionError: a negative ``sigma``, an inverted range or ``p`` outside [0, 1].
    """

    sigma: Range = 0.1
    p: float = 1.0

    def __post_init__(self) -> None:
        _check_range("GaussianNoise sigma", self.sigma, low=0.0)
        _check_p("GaussianNoise", self.p)

    def apply(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        if rng.random() < self.p:
            s = _draw(self.sigma, rng)
            image = _float_image(sample)
            noise = rng.standard_normal(image.shape, dtype=image.dtype)
            sample[IMAGE_KEY] = image + noise * image.dtype.type(s)
        return sample


@dataclass(frozen=True)
class BSplineGrid:
    """The control grid of a SimpleITK cubic ``BSplineTransform`` over an image of ``shape``,
    and its evaluation as a dense displacement field.

    The grid is the one ``sitk.BSplineTransformInitializer(image, mesh, 3)`` places over an
    image of ``shape`` (voxel size 1, origin 0): ``mesh + 3`` control points per axis. The
    field is the transform's displacement at every voxel, computed as a tensor product of the
    per-axis cubic B-spline weights (:attr:`bases`), which is exact and much faster than
    evaluating the transform voxel by voxel.

    Attributes:
        shape: spatial shape ``(z, y, x)`` or ``(y, x)``, voxels.
        mesh: B-spline intervals per axis, same order.
        bases: per axis, ``(shape[a], mesh[a] + 3)`` weights of the control points at each voxel.
    """

    shape: tuple[int, ...]
    mesh: tuple[int, ...]
    bases: tuple[Array, ...]

    @classmethod
    def make(cls, shape: Sequence[int], mesh: Sequence[int]) -> BSplineGrid:
        """The grid SimpleITK places over ``shape`` with ``mesh`` intervals per axis."""
        shape, mesh = tuple(int(s) for s in shape), tuple(int(m) for m in mesh)
        coefficients = _bspline_transform(shape, mesh).GetCoefficientImages()[0]
        origin, spacing = coefficients.GetOrigin(), coefficients.GetSpacing()
        size = coefficients.GetSize()
        nd = len(shape)
        bases = []
        for a in range(nd):
            d = nd - 1 - a  # SimpleITK orders axes x, y, z
            u = (np.arange(shape[a]) - origin[d]) / spacing[d]
            bases.append(_cubic_bspline(u[:, None] - np.arange(size[d])[None, :]))
        return cls(shape, mesh, tuple(bases))

    @property
    def coefficient_shape(self) -> tuple[int, ...]:
        """``(ndim, *control points per axis)``: one displacement per axis per control point."""
        return (len(self.shape), *(b.shape[1] for b in self.bases))

    def field(self, coefficients: Array) -> Array:
        """Displacement at every voxel, ``(ndim, *shape)`` float32 voxels; component ``a`` moves
        along axis ``a`` (C order). ``coefficients``: :attr:`coefficient_shape`, voxels."""
        nd = len(self.shape)
        letters = "abc"[:nd]
        spec = ",".join(f"{v}{c}" for v, c in zip("ijk", letters, strict=False))
        out = np.einsum(
            f"{spec},n{letters}->n{'ijk'[:nd]}",
            *(b.astype(np.float32) for b in self.bases),
            np.asarray(coefficients, dtype=np.float32),
            optimize=True,
        )
        return np.ascontiguousarray(out, dtype=np.float32)

    def sitk_transform(self, coefficients: Array) -> Any:
        """The same deformation as a SimpleITK ``BSplineTransform`` (for checks and export)."""
        transform = _bspline_transform(self.shape, self.mesh)
        params = np.asarray(coefficients, dtype=np.float64)[::-1].ravel()
        transform.SetParameters(params.tolist())
        return transform


def _bspline_transform(shape: tuple[int, ...], mesh: tuple[int, ...]) -> Any:
    """``sitk.BSplineTransformInitializer`` over an image of ``shape`` (voxel size 1, origin 0):
    a cubic ``BSplineTransform`` with ``mesh`` intervals per axis, all parameters 0."""
    reference = sitk.Image(list(shape[::-1]), sitk.sitkUInt8)
    return sitk.BSplineTransformInitializer(reference, list(mesh[::-1]), 3)


def _cubic_bspline(t: Array) -> Array:
    """The centred cubic B-spline at ``t`` (support ``(-2, 2)``)."""
    t = np.abs(t)
    near = (4.0 - 6.0 * t**2 + 3.0 * t**3) / 6.0
    far = (2.0 - t) ** 3 / 6.0
    return np.where(t < 1.0, near, np.where(t < 2.0, far, 0.0))


@dataclass(frozen=True)
class ElasticDeform(Transform):
    """Smooth random deformation: a cubic B-spline (SimpleITK ``BSplineTransform``) on a coarse
    grid of ``grid`` intervals per spatial axis, every control point displaced by normal noise
    of standard deviation ``sigma`` voxels per axis; with probability ``p``.

    The transform is evaluated once per sample as a dense displacement field
    (:meth:`BSplineGrid.field`, equal to SimpleITK's own evaluation); the image is resampled
    linearly (integer images rounded back to their dtype), labels and masks by nearest
    neighbour, all with SimpleITK's ``Warp`` through that one field, so they stay aligned voxel
    for voxel. Points mapped outside the sample read 0. ``sigma = 0`` is the identity. Cost:
    one resampling pass per image channel, label and mask (``scripts/bench_loaders.py`` prints
    the time for a 64^3 patch). Peak memory besides the sample and its result: the field twice
    (``2 x 4 x ndim`` bytes per voxel) and one channel in float32 (float64 for float64 images)
    in and out.

    Args:
        sigma: displacement standard deviation, voxels (a value or a uniform range, >= 0).
        grid: B-spline intervals per spatial axis (an int, or one per axis in ``(z, y, x)``
            order); 2 to 5 gives smooth, large-scale warps.
        p: probability of deforming a sample.

    Raises:
        OptionError: a negative ``sigma``, ``grid`` < 1, or ``p`` outside [0, 1].
    """

    sigma: Range = 2.0
    grid: int | tuple[int, ...] = 3
    p: float = 1.0
    _grids: dict[tuple[tuple[int, ...], tuple[int, ...]], BSplineGrid] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        _check_range("ElasticDeform sigma", self.sigma, low=0.0)
        grid = (self.grid,) if isinstance(self.grid, int) else tuple(self.grid)
        if not grid or any(g < 1 for g in grid):
            raise OptionError(f"ElasticDeform grid {self.grid}: every value must be >= 1")
        _check_p("ElasticDeform", self.p)

    def bspline_grid(self, shape: Sequence[int]) -> BSplineGrid:
        """The control grid for a sample of spatial ``shape`` (kept for later samples).

        Raises:
            InputError: ``grid`` gives another number of axes than ``shape`` has.
        """
        shape = tuple(int(s) for s in shape)
        mesh = (self.grid,) * len(shape) if isinstance(self.grid, int) else tuple(self.grid)
        if len(mesh) != len(shape):
            raise InputError(
                f"image: {len(shape)}D sample, ElasticDeform grid {self.grid} has {len(mesh)} "
                "values (give one int or one per spatial axis)"
            )
        key = (shape, mesh)
        if key not in self._grids:
            self._grids[key] = BSplineGrid.make(shape, mesh)
        return self._grids[key]

    def apply(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        if not rng.random() < self.p:
            return sample
        nd = spatial_dims(sample)
        grid = self.bspline_grid(np.shape(sample[IMAGE_KEY])[1:])
        sigma = _draw(self.sigma, rng)
        coefficients = rng.standard_normal(grid.coefficient_shape) * sigma
        displacement = displacement_image(grid.field(coefficients))
        sample[IMAGE_KEY] = warp(np.asarray(sample[IMAGE_KEY]), displacement, nd, linear=True)
        for key in NEAREST_KEYS:
            if key in sample:
                sample[key] = warp(np.asarray(sample[key]), displacement, nd, linear=False)
        return sample


def displacement_image(field: Array) -> sitk.Image:
    """A SimpleITK displacement field image from ``field`` ``(ndim, *shape)`` in voxels (C
    order components), on the grid of ``GetImageFromArray`` images (voxel size 1, origin 0)."""
    vectors = np.moveaxis(np.asarray(field, dtype=np.float32)[::-1], 0, -1)
    return sitk.GetImageFromArray(np.ascontiguousarray(vectors), isVector=True)


def warp(data: Array, displacement: sitk.Image, nd: int, *, linear: bool) -> Array:
    """Resample ``data`` ``(*grid)`` or ``(k, *grid)`` at ``voxel + displacement`` with
    SimpleITK's ``Warp``, channel by channel: linearly (integer and bool data rounded and
    clipped back to their dtype) or by nearest neighbour (values kept). Outside reads 0.

    Peak memory: one channel in float32 or float64 besides the input and output.
    """
    channels = data.reshape(-1, *data.shape[-nd:])
    out = np.empty(channels.shape, dtype=data.dtype)
    if linear:
        work_type = np.float64 if data.dtype == np.float64 else np.float32
        info = None
        if data.dtype.kind in "iub":
            info = np.iinfo(np.uint8 if data.dtype == bool else data.dtype)
    for i, channel in enumerate(channels):
        if linear:
            moving = np.ascontiguousarray(channel, dtype=work_type)
            warped = _warp(moving, displacement, sitk.sitkLinear)
            if info is not None:
                warped = np.clip(np.rint(warped), info.min, info.max)
        else:
            work = channel.astype(np.uint8) if data.dtype == bool else channel
            warped = _warp(np.ascontiguousarray(work), displacement, sitk.sitkNearestNeighbor)
        out[i] = warped
    return out.reshape(data.shape)


def _warp(moving: Array, displacement: sitk.Image, interpolator: int) -> Array:
    """``sitk.Warp`` of one scalar channel: output voxel ``v`` reads ``moving`` at
    ``v + displacement[v]`` (0 outside)."""
    image = sitk.GetImageFromArray(moving)
    warped = sitk.Warp(image, displacement, interpolator)
    return np.asarray(sitk.GetArrayFromImage(warped))
