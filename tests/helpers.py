"""Helpers shared by test modules: arange-encoded volumes, so a misplaced voxel shows, writers
of small inputs, and random-box reads checked against them. (Fixtures live in ``conftest.py``.)"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
import tifffile
import zarr

from datatools.errors import InputError
from datatools.geometry import Box
from datatools.sources import ArrayVolume, OpenOptions, Volume, open_volume

UNSUPPORTED = "(datatools handles bool, integer and float data)"
"""The hint that ends every unsupported-dtype message."""

PadMode = Literal["symmetric", "reflect", "constant"]
"""The ``np.pad`` modes that ``--edge`` shares, as numpy's annotations spell them."""


def arange_volume(shape: tuple[int, ...], dtype: str = "uint16") -> np.ndarray:
    """A volume whose voxel values encode their flat index (modulo the dtype's range)."""
    n = int(np.prod(shape))
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    values = np.arange(n, dtype=np.int64)
    if info is not None and np.dtype(dtype).itemsize < 8:
        values = values % (int(info.max) + 1)
    return values.astype(dtype).reshape(shape)


def random_boxes(shape: tuple[int, ...], rng: np.random.Generator, n: int = 12) -> list[Box]:
    """``n`` random non-empty boxes inside ``shape``, plus the whole volume and the first and
    last voxels."""
    boxes = [
        Box.from_shape(shape),
        Box((0,) * len(shape), (1,) * len(shape)),
        Box(tuple(s - 1 for s in shape), shape),
    ]
    for _ in range(n):
        start = [int(rng.integers(0, s)) for s in shape]
        stop = [int(rng.integers(a + 1, s + 1)) for a, s in zip(start, shape, strict=True)]
        boxes.append(Box(tuple(start), tuple(stop)))
    return boxes


def check_reads(volume: Volume, expected: np.ndarray, rng: np.random.Generator) -> None:
    """``volume`` has the shape and dtype of ``expected`` and reads 25 random boxes of it."""
    assert volume.shape == expected.shape
    assert volume.dtype == expected.dtype
    for box in random_boxes(expected.shape, rng, n=25):
        got = volume.read(box)
        assert got.dtype == expected.dtype, box
        np.testing.assert_array_equal(got, expected[box.slices()], err_msg=str(box))


def error_of(spec: str, options: OpenOptions | None = None) -> str:
    """The message of the :class:`InputError` that opening ``spec`` raises."""
    with pytest.raises(InputError) as info:
        open_volume(spec, options).close()
    return str(info.value)


def message(text: str) -> str:
    """A regex matching ``text`` exactly, for ``pytest.raises(match=...)``."""
    return "^" + re.escape(text) + "$"


def write_stack(folder: Path, slices: np.ndarray, **kw: Any) -> Path:
    """Write ``slices`` (first axis z) as ``slice_0000.tif``, ...; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for z, plane in enumerate(slices):
        tifffile.imwrite(folder / f"slice_{z:04d}.tif", plane, **kw)
    return folder


def write_itk(path: Path, data: np.ndarray, *, vector: bool = False, **kwargs: Any) -> None:
    """Write ``data`` (``(z, y, x)``, or ``(z, y, x, c)`` with ``vector``) as an ITK image,
    with optional ``spacing``, ``origin``, ``direction`` (ITK's ``(x, y, z)`` order) and
    ``compress``."""
    image = sitk.GetImageFromArray(data, isVector=vector)
    if "spacing" in kwargs:
        image.SetSpacing(kwargs["spacing"])
    if "origin" in kwargs:
        image.SetOrigin(kwargs["origin"])
    if "direction" in kwargs:
        image.SetDirection(kwargs["direction"])
    sitk.WriteImage(image, str(path), useCompression=kwargs.get("compress", False))


class RecordingVolume(ArrayVolume):
    """An in-memory volume that records every box read from it."""

    def __init__(self, array: np.ndarray) -> None:
        super().__init__(array)
        self.reads: list[Box] = []

    def read(self, box: Box, out: np.ndarray | None = None) -> np.ndarray:
        self.reads.append(box)
        return super().read(box, out)


def attrs_of(node: str | Path | zarr.Group | zarr.Array[Any]) -> dict[str, Any]:
    """The attributes of a Zarr group or array (opened read-only from a path), as plain data.

    zarr types them as its ``JSON`` union, which cannot be indexed without narrowing; tests
    know the layout they wrote, so they get ``Any``."""
    if isinstance(node, str | Path):
        node = zarr.open_group(node, mode="r")
    return cast("dict[str, Any]", node.attrs.asdict())


def child_array(group: zarr.Group, name: str) -> zarr.Array[Any]:
    """The array ``name`` of ``group`` (asserting it is an array, not a group)."""
    node = group[name]
    assert isinstance(node, zarr.Array), f"{group.store_path}/{name} is not an array"
    return node


def child_group(group: zarr.Group, name: str) -> zarr.Group:
    """The subgroup ``name`` of ``group`` (asserting it is a group, not an array)."""
    node = group[name]
    assert isinstance(node, zarr.Group), f"{group.store_path}/{name} is not a group"
    return node


def values(array: zarr.Array[Any]) -> np.ndarray:
    """Every value of ``array``, as a numpy array."""
    return np.asarray(array[...])


def stored(group: zarr.Group, name: str) -> np.ndarray:
    """Every value of the array ``name`` of ``group``, as a numpy array."""
    return values(child_array(group, name))


@contextlib.contextmanager
def reads_stop_after(volume: Volume, count: int) -> Iterator[None]:
    """``volume.read`` raises :class:`KeyboardInterrupt` once it has served ``count`` reads:
    a run interrupted part-way through, at a known point."""
    plain, reads = volume.read, [0]

    def read(box: Box, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        reads[0] += 1
        if reads[0] > count:
            raise KeyboardInterrupt
        return plain(box, out)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(volume, "read", read)
        yield


def stop_after(units: int) -> Callable[[int], None]:
    """An ``on_unit_done`` that interrupts the run after ``units`` units are recorded."""
    seen: list[int] = []

    def stop(index: int) -> None:
        seen.append(index)
        if len(seen) == units:
            raise KeyboardInterrupt

    return stop
