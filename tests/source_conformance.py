"""What every source kind must do, tested once for all of them (as zarr-python's ``StoreTests``
are for its stores).

A kind's test module subclasses :class:`SourceConformance` in a class whose name starts with
``Test`` and says only how to write an arange volume in that kind (:meth:`write`), and, where
they differ from the defaults, the volume's shape, dtype, axes, open options and input files.
The shared tests open what it wrote with :func:`open_volume` and check the volume's facts,
random-box reads, ``read(box, out=...)``, ``files()``, ``close()`` and the context manager.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from datatools.sources import OpenOptions, Volume, open_volume
from tests.helpers import arange_volume, random_boxes

PROC = Path("/proc/self")
"""Where Linux lists the files this process holds open (descriptors and memory maps)."""


class SourceConformance(ABC):
    """Shared tests for one source kind; see the module docstring."""

    kind: ClassVar[str]
    """The :attr:`Volume.kind` that :func:`open_volume` must pick for what :meth:`write` wrote."""
    shape: ClassVar[tuple[int, ...]] = (5, 14, 11)
    dtype: ClassVar[str] = "uint16"
    axes: ClassVar[str] = "zyx"
    options: ClassVar[OpenOptions] = OpenOptions()

    @abstractmethod
    def write(self, folder: Path, data: np.ndarray) -> str:
        """Write ``data`` (``shape``, ``dtype``, in ``axes`` order) as this kind inside the empty
        ``folder``; return the spec a user would name it by."""

    def input_files(self, spec: str) -> tuple[Path, ...]:
        """What :meth:`Volume.files` must list for ``spec``: by default the path it names."""
        return (Path(spec),)

    @pytest.fixture
    def expected(self) -> np.ndarray:
        return arange_volume(self.shape, self.dtype)

    @pytest.fixture
    def spec(self, tmp_path: Path, expected: np.ndarray) -> str:
        folder = tmp_path / "input"
        folder.mkdir()
        return self.write(folder, expected)

    @pytest.fixture
    def volume(self, spec: str) -> Iterator[Volume]:
        with open_volume(spec, self.options) as volume:
            yield volume

    def test_kind_shape_dtype_and_axes(self, volume: Volume) -> None:
        assert volume.kind == self.kind
        assert (volume.shape, volume.dtype, volume.axes) == (
            self.shape,
            np.dtype(self.dtype),
            self.axes,
        )
        assert volume.ndim == len(self.shape)
        assert volume.nbytes == int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize
        facts = json.loads(json.dumps(volume.describe()))
        assert (facts["kind"], facts["shape"], facts["dtype"], facts["axes"]) == (
            self.kind,
            list(self.shape),
            self.dtype,
            self.axes,
        )

    def test_random_boxes_read_the_arange_volume(
        self, volume: Volume, expected: np.ndarray, rng: np.random.Generator
    ) -> None:
        for box in random_boxes(self.shape, rng, n=25):
            got = volume.read(box)
            assert (got.shape, got.dtype) == (box.shape, expected.dtype), box
            np.testing.assert_array_equal(got, expected[box.slices()], err_msg=str(box))
        np.testing.assert_array_equal(volume.read_all(), expected)

    def test_read_into_out_equals_a_plain_read(
        self, volume: Volume, rng: np.random.Generator
    ) -> None:
        for box in random_boxes(self.shape, rng, n=6):
            out = np.full(box.shape, 7, dtype=volume.dtype)
            assert volume.read(box, out=out) is out, box
            np.testing.assert_array_equal(out, volume.read(box), err_msg=str(box))

    def test_files_lists_the_input_files(self, volume: Volume, spec: str) -> None:
        files = volume.files()
        assert files == self.input_files(spec)
        assert all(path.exists() for path in files)

    @pytest.mark.skipif(not PROC.is_dir(), reason="lists open files from /proc (Linux)")
    def test_close_releases_the_input_files(self, spec: str) -> None:
        volume = open_volume(spec, self.options)
        files = volume.files()
        volume.read_all()
        volume.close()
        assert held_files(files) == set()
        volume.close()  # closing again is harmless

    @pytest.mark.skipif(not PROC.is_dir(), reason="lists open files from /proc (Linux)")
    def test_volume_is_a_context_manager(self, spec: str, expected: np.ndarray) -> None:
        volume = open_volume(spec, self.options)
        files = volume.files()
        with volume as entered:
            assert entered is volume
            np.testing.assert_array_equal(entered.read_all(), expected)
        assert held_files(files) == set()
        with open_volume(spec, self.options) as volume:
            volume.close()  # a close inside the block, then the block's own


def held_files(inputs: tuple[Path, ...]) -> set[Path]:
    """The files among ``inputs`` (or inside those that are folders) that this process holds
    open, as a file descriptor or a memory map."""
    roots = [path.resolve() for path in inputs]
    held: set[Path] = set()
    for entry in (PROC / "fd").iterdir():
        try:
            held.add(Path(os.readlink(entry)))
        except OSError:  # the descriptor that listed the folder, closed by now
            continue
    for line in (PROC / "maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):
            held.add(Path(fields[5]))
    return {path for path in held if any(path.is_relative_to(root) for root in roots)}
