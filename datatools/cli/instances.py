"""``datatools instances``."""

from __future__ import annotations

from typing import Any

import click

from datatools import instances
from datatools.cli.options import (
    INTS,
    ONE_OR_MORE_INTS,
    command_options,
    edge_option,
    output_options,
    progress_wanted,
    resolve_source,
    roi_options,
    run_options,
    source_argument,
    source_options,
)
from datatools.cli.verbosity import verbosity_options
from datatools.instances import InstanceOptions


@click.command("instances")
@source_argument("image")
@source_argument("labels")
@click.argument("target")
@click.option(
    "--size",
    type=ONE_OR_MORE_INTS,
    required=True,
    metavar="N|Z,Y,X",
    help="Window in voxels: one value for every spatial axis, or one per axis.",
)
@click.option("--masks", is_flag=True, help="Add masks (i, 1, z, y, x) uint8: 1 on the instance.")
@click.option("--zero-others", is_flag=True, help="Set voxels of other instances to 0.")
@click.option("--zero-background", is_flag=True, help="Set every voxel not of the instance to 0.")
@edge_option("constant", "Windows")
@click.option(
    "--ids", type=INTS, default=None, metavar="ID,ID,...", help="Crop only these instance ids."
)
@click.option("--min-voxels", type=int, default=0, help="Skip instances with fewer voxels.")
@click.option("--max-voxels", type=int, default=None, help="Skip instances with more voxels.")
@click.option(
    "--exclude-border", is_flag=True, help="Skip instances touching the border of the volume/ROI."
)
@click.option(
    "--channels",
    type=INTS,
    default=None,
    metavar="C,C,...",
    help="Channels of a multichannel image to keep.",
)
@roi_options
@source_options()
@click.option(
    "--chunk-rows",
    type=int,
    default=None,
    help="Instances per chunk along i [default: about 8 MiB of crops, at most 256].",
)
@output_options
@run_options("512M")
@verbosity_options
def instances_command(
    image: str,
    labels: str,
    target: str,
    chunk_rows: int | None,
    **kwargs: Any,
) -> None:
    """Crop a fixed window around every instance of LABELS from IMAGE into TARGET.

    IMAGE is (z,y,x), (c,z,y,x), (y,x) or (c,y,x); LABELS are integers with the image's spatial
    shape, 0 = background, every other value (negative ones too) an instance. TARGET (.zarr
    group or .h5 file) gets images (i, c, z, y, x) in the image dtype (2D: (i, c, y, x)),
    instance_ids (ascending), centroid, bbox, voxel_count and origins (window starts in source
    voxels), chunked along i. A window of --size s is centred on the instance's centroid: its
    voxel s // 2 lies on the centroid rounded half up.

    Memory: about --memory-limit (half buffers crops, half holds image slabs) plus about 120
    bytes per labelled instance; lower it with --memory-limit. Two passes: labels, then image.
    An interrupted run resumes when rerun with the same options (only missing chunk rows are
    written); a rerun on a complete output does nothing.

    \b
    Examples:
      datatools instances image.zarr labels.zarr cells.zarr --size 32,64,64
      datatools instances image.ome.tif nuclei.tif cells.h5 --size 96,96 --masks \\
          --zero-others --edge constant
      datatools instances image.zarr labels.zarr cells.zarr --size 48 --ids 3,17,42 \\
          --min-voxels 50 --zarr-format 2
    """
    options = command_options(InstanceOptions, kwargs, {"chunk_rows": chunk_rows})
    result = instances.extract_instances(
        resolve_source(image),
        resolve_source(labels),
        target,
        options,
        progress=progress_wanted(),
    )
    click.echo(result.summary())
