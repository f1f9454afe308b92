"""The options of ``convert`` (and ``convert --split-classes``), as one frozen value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from datatools.geometry import Box, RoiSpec
from datatools.options import Options, OutputOptions, RunOptions
from datatools.sources import OpenOptions

DEFAULT_CHUNK = 64
"""Default chunk edge, voxels, on every spatial axis (64^3 = 512 KiB of uint16: small enough
for random patch reads, large enough that a TB volume stays below a few million files)."""

DEFAULT_DATASET = "data"
"""Dataset path of an HDF5 target when ``dataset`` is not given."""


@dataclass(frozen=True)
class ConvertOptions(Options):
    """Every option of a conversion; see :func:`datatools.convert.convert`.

    Attributes:
        roi: region of the source, half-open voxels (z, y, x); ``None``: all of it.
        open_options: resolution level, series and gap choices for opening the source.
        dtype: output dtype; ``None`` keeps the source's.
        allow_lossy_cast: round and clip values ``dtype`` cannot hold (NaN becomes 0).
        voxel_size: physical voxel size per spatial axis (z, y, x); ``None``: the source's.
        unit: OME-NGFF length unit of ``voxel_size`` (``nm``, ``um`` accepted).
        levels: resolution levels, or ``"auto"`` (until a level fits one chunk); ``None``:
            1 (a label image: its image's).
        downsample: how a level merges voxels (mean, median, mode, nearest, max); ``None``:
            mean (labels: mode).
        factors: merge factors per spatial axis; ``None``: 2 (only the finer axes of
            anisotropic voxels).
        as_labels: write the source as the label image ``<target>/labels/<as_labels>``.
        name: image name in the metadata; ``None``: the target's stem.
        dataset: dataset path of an HDF5 target.
        output: chunks (default :data:`DEFAULT_CHUNK`), shards, codec, Zarr format, overwrite.
        run: workers, memory limit, task slice.
    """

    roi: RoiSpec | Box | None = None
    open_options: OpenOptions = field(default_factory=OpenOptions)
    dtype: str | None = None
    allow_lossy_cast: bool = False
    voxel_size: tuple[float, ...] | None = None
    unit: str | None = None
    levels: int | Literal["auto"] | None = None
    downsample: str | None = None
    factors: tuple[int, ...] | None = None
    as_labels: str | None = None
    name: str | None = None
    dataset: str = DEFAULT_DATASET
    output: OutputOptions = field(default_factory=OutputOptions)
    run: RunOptions = field(default_factory=RunOptions)

    @property
    def chunks(self) -> int | tuple[int, ...]:
        """The chunk shape asked for, :data:`DEFAULT_CHUNK` when not given."""
        return DEFAULT_CHUNK if self.output.chunks is None else self.output.chunks
