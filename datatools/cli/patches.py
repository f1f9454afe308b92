"""``datatools patches``."""

from __future__ import annotations

import glob
import warnings
from pathlib import Path
from typing import Any

import click

from datatools import patches
from datatools.cli.options import (
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
from datatools.patches.choose import CLASS_RULES, SAMPLERS
from datatools.patches.options import PatchOptions
from datatools.patches.sampling import SamplingWarning
from datatools.sources import SourceSpec


@click.command("patches")
@source_argument("source")
@click.argument("target", required=False)
@click.option(
    "--size",
    type=ONE_OR_MORE_INTS,
    required=True,
    metavar="N|Y,X|Z,Y,X",
    help="Patch size in voxels: one value for every spatial axis (cubes from 3D), or values "
    "for the trailing axes (64,64 on z,y,x: 2D patches from every slice).",
)
@click.option(
    "--stride",
    type=ONE_OR_MORE_INTS,
    metavar="N|Y,X",
    help="Grid step in voxels [default: --size, i.e. tiling].",
)
@edge_option("symmetric", "Patches")
@click.option("--fill", type=float, default=0, help="Value outside the ROI for --edge constant.")
@click.option("--labels", help="Label volume on the source's grid; label patches are stored too.")
@click.option("--mask", help="Keep patches holding mask voxels (> 0), see --min-fraction.")
@click.option(
    "--min-fraction",
    type=float,
    default=0.0,
    show_default=True,
    help="Least fraction of mask voxels in a patch (without --mask: of labels > 0).",
)
@click.option("--per-class", is_flag=True, help="One subgroup class_<value> per label value.")
@click.option(
    "--class-rule",
    type=click.Choice(CLASS_RULES),
    default="centre",
    show_default=True,
    help="A patch's class: its centre voxel's label, the most frequent label, or any present.",
)
@click.option("--max-per-class", type=int, help="At most N patches per class (seeded subset).")
@click.option(
    "--sampler",
    type=click.Choice(SAMPLERS),
    default="grid",
    show_default=True,
    help="grid; random (--count centres); blue-noise (centres >= --min-distance apart).",
)
@click.option("--count", type=int, help="Patches to draw (random, blue-noise; per class).")
@click.option("--min-distance", type=float, help="Blue-noise spacing of centres, voxels.")
@click.option("--max-patches", type=int, help="At most N patches (per class with --per-class).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random choice.")
@roi_options
@source_options()
@click.option("--chunk-rows", type=int, help="Patches per chunk [default: about 2 MiB].")
@output_options
@run_options("256M")
@verbosity_options
def patches_command(
    source: str,
    target: str | None,
    labels: str | None,
    mask: str | None,
    seed: int,
    chunk_rows: int | None,
    **kwargs: Any,
) -> None:
    """Cut SOURCE into a dataset of patches: TARGET (.zarr, or .h5) holds patches
    (n, [c,] *size), labels, and origins (n, ndim: voxel start in SOURCE, z,y,x).

    Without TARGET, writes <source name>_patches.zarr here. Rows come slab by slab; origins
    place each patch (physical position = translation + origin x voxel size, attributes).
    Same --seed, same output. A rerun with the same options completes an interrupted run.

    Memory: workers + 1 slabs of source + labels + halo, each at most memory-limit / (2 x
    (workers + 1)); plus 16 MiB of patches being written and ~2 MiB per array and class of
    chunk buffers; plus 8 x ndim bytes per patch for the plan. Never the whole volume. Lower
    --memory-limit (default 256M) or --workers to shrink it.

    \b
    Examples:
      datatools patches volume.zarr --size 64
      datatools patches volume.zarr train.zarr --size 64,64 --stride 32 --edge symmetric
      datatools patches raw.zarr train.zarr --size 32,64,64 --labels labels.zarr --per-class
      datatools patches raw.zarr train.h5 --size 64 --mask tissue.tif --min-fraction 0.5 \\
          --sampler random --count 10000 --seed 7
    """
    spec = resolve_source(source)
    options = command_options(PatchOptions, kwargs, {"chunk_rows": chunk_rows})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SamplingWarning)
        result = patches.extract_patches(
            spec,
            target or default_target(spec),
            options,
            labels=labels,
            mask=mask,
            rng=seed,
            progress=progress_wanted(),
        )
    for warning in caught:
        if issubclass(warning.category, SamplingWarning):
            click.echo(f"Warning: {warning.message}", err=True)
        else:
            warnings.warn(warning.message, warning.category, stacklevel=1)
    click.echo(result.summary())


def default_target(spec: SourceSpec) -> Path:
    """``<source name>_patches.zarr`` in the current folder (``vol.h5:/raw`` -> ``vol``,
    ``scan/*.tif`` and slice lists -> the folder's name)."""
    if isinstance(spec, str | Path):
        text = str(spec)
        head, sep, _ = text.partition(":/")
        path = Path(head if sep and not Path(text).exists() else text)
        if glob.has_magic(path.name):
            path = path.parent
    else:
        path = Path(next(iter(spec))).parent
    name = path.resolve().name if str(path) in ("", ".") else path.name
    for suffix in (".ome.zarr", ".ome.tiff", ".ome.tif", ".nii.gz"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    else:
        name = name.split(".")[0] if not name.startswith(".") else name
    return Path(f"{name or 'volume'}_patches.zarr")
