"""The options of ``instances``, as one frozen value."""

from __future__ import annotations

from dataclasses import dataclass, field

from datatools.geometry import Box, RoiSpec
from datatools.options import Options, OutputOptions, RunOptions
from datatools.sources import OpenOptions

DEFAULT_MEMORY = 512 * 2**20
"""Default bound for data in flight, bytes."""


@dataclass(frozen=True)
class InstanceOptions(Options):
    """Every option of an instance run; see :func:`datatools.instances.extract_instances`.

    Attributes:
        size: window extent in voxels; one int for every spatial axis, or one per axis.
        masks: add ``masks`` ``(i, 1, *size)`` uint8, 1 where the instance is.
        zero_others: set voxels of other instances in the window to 0.
        zero_background: set every voxel that is not the instance to 0.
        edge: ``constant`` (zeros), ``symmetric``, ``reflect``, ``shift`` or ``drop``.
        ids: crop only these ids (each must occur in the labels).
        min_voxels, max_voxels: crop instances with ``min_voxels <= voxels <= max_voxels``.
        exclude_border: skip instances whose bounding box touches the volume's (ROI's) border.
        channels: channel indices of a multichannel image to keep, in this order.
        roi: region of the volume, half-open voxels (z, y, x).
        open_options: level / series / gap choices for opening the image and the labels.
        output: chunk rows, codec, Zarr format, overwrite.
        run: workers, memory limit (default :data:`DEFAULT_MEMORY`).
    """

    size: int | tuple[int, ...] | None = None
    masks: bool = False
    zero_others: bool = False
    zero_background: bool = False
    edge: str = "constant"
    ids: tuple[int, ...] | None = None
    min_voxels: int = 0
    max_voxels: int | None = None
    exclude_border: bool = False
    channels: tuple[int, ...] | None = None
    roi: RoiSpec | Box | None = None
    open_options: OpenOptions = field(default_factory=OpenOptions)
    output: OutputOptions = field(default_factory=OutputOptions)
    run: RunOptions = field(default_factory=RunOptions)
