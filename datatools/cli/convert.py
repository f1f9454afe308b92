"""``datatools convert``."""

from __future__ import annotations

from typing import Any, Literal

import click

from datatools import convert
from datatools.cli.options import (
    FLOATS,
    INTS,
    ONE_OR_MORE_INTS,
    command_options,
    executor_from_options,
    executor_options,
    output_options,
    parse_ints,
    progress_wanted,
    resolve_source,
    roi_options,
    run_options,
    source_argument,
    source_options,
    task_options,
)
from datatools.cli.verbosity import verbosity_options
from datatools.convert import ConvertOptions, class_masks
from datatools.downsample import METHODS
from datatools.errors import OptionError


@click.command("convert")
@source_argument("source")
@click.argument("target")
@roi_options
@source_options()
@click.option(
    "--chunks",
    type=ONE_OR_MORE_INTS,
    default="64",
    show_default=True,
    metavar="N|Z,Y,X",
    help="Chunk shape: one value for every spatial axis, or one per axis.",
)
@click.option(
    "--shards",
    type=ONE_OR_MORE_INTS,
    default=None,
    metavar="N|Z,Y,X",
    help="Zarr v3 shard shape, a multiple of the chunks (fewer, larger files).",
)
@output_options
@click.option("--dtype", default=None, help="Output dtype (lossless casts only by default).")
@click.option(
    "--allow-lossy-cast",
    is_flag=True,
    help="Round and clip values --dtype cannot hold (NaN becomes 0).",
)
@click.option(
    "--voxel-size",
    type=FLOATS,
    default=None,
    metavar="V|Z,Y,X",
    help="Physical voxel size (overrides the source's).",
)
@click.option("--unit", default=None, help="Unit of --voxel-size, e.g. nanometer, micrometer, nm.")
@click.option(
    "--levels",
    default=None,
    metavar="N|auto",
    help="Resolution levels: N, or auto (until a level fits one chunk) [default: 1; labels: "
    "the image's].",
)
@click.option(
    "--downsample",
    type=click.Choice(METHODS),
    default=None,
    help="How a level merges voxels [default: mean; labels: mode].",
)
@click.option(
    "--split-classes",
    is_flag=True,
    help="Write one 0/1 uint8 multiscale image per label value, TARGET/<class> "
    "(cellmap-data layout; nanometre scales).",
)
@click.option(
    "--class-names",
    default=None,
    metavar="V=NAME,...",
    help="With --split-classes: only these values, named (e.g. 1=mito,2=er).",
)
@click.option(
    "--as-labels",
    default=None,
    metavar="NAME",
    help="Write SOURCE as the label image TARGET/labels/NAME of the OME-Zarr image TARGET.",
)
@click.option(
    "--factors",
    type=INTS,
    default=None,
    metavar="Z,Y,X",
    help="Merge factors per level [default: 2, only finer axes if anisotropic].",
)
@click.option("--name", default=None, help="Image name in the OME metadata.")
@click.option(
    "--dataset", default="data", show_default=True, help="Dataset path in an HDF5 target."
)
@run_options()
@task_options
@executor_options
@verbosity_options
def convert_command(
    source: str,
    target: str,
    chunks: int | tuple[int, ...],
    shards: int | tuple[int, ...] | None,
    levels: str | None,
    split_classes: bool,
    class_names: str | None,
    **kwargs: Any,
) -> None:
    """Convert SOURCE (TIFF slices, multi-page TIFF, HDF5, Zarr, ITK image) into TARGET.

    TARGET ending in .zarr is an OME-Zarr image (level array TARGET/0); ending in .h5/.hdf5 an
    HDF5 dataset. SOURCE '-' reads slice paths from stdin, one per line.

    Memory: about 3 x 2 x unit bytes (64 MiB units by default, at least one chunk row), plus
    one chunk per worker; lower it with --memory-limit. Interrupted runs resume when rerun with
    the same options; `datatools info TARGET` shows progress.

    \b
    Examples:
      datatools convert tiffs/ out.zarr --z-start 100 --z-end 612 --chunks 64
      datatools convert 'scan/*.tif' out.zarr --roi 100:612,:,2048: --voxel-size 7.91 --unit um
      datatools convert volume.h5:/raw out.zarr --zarr-format 2 --codec blosc-lz4
      datatools convert stack/ out.zarr --levels auto --voxel-size 40,8,8 --unit nm
      datatools convert labels.tif out.zarr --as-labels cells
      ls /data/*.tif | datatools convert - out.zarr --task-index 3 --task-count 16
      datatools convert /data/scan/ out.zarr --levels auto --dask-scheduler tcp://head:8786
    """
    executor = executor_from_options(kwargs)
    options = command_options(
        ConvertOptions,
        kwargs,
        {"chunks": chunks, "shards": shards},
        levels=None if levels is None else _levels(levels),
    )
    if class_names is not None and not split_classes:
        raise OptionError("--class-names: only with --split-classes")
    source_spec = resolve_source(source)
    if split_classes:
        result_split = class_masks.split_classes(
            source_spec,
            target,
            options,
            class_names=class_masks.parse_class_names(class_names),
            progress=progress_wanted(),
        )
        click.echo(result_split.summary())
        return
    with executor as chosen:
        result = convert.convert(
            source_spec, target, options, executor=chosen, progress=progress_wanted()
        )
    click.echo(result.summary())


def _levels(text: str) -> int | Literal["auto"]:
    if text == "auto":
        return "auto"
    values = parse_ints(text, "--levels") or (1,)
    if len(values) != 1:
        raise OptionError(f"--levels {text}: give one number or auto")
    return values[0]
