"""``datatools patches``."""

from __future__ import annotations

import glob
import warnings
from pathlib import Path
from typing import Any

import click

from datatools import patches
from datatools.cli.options import (
    edge_option,
    open_options_from,
    output_options,
    parse_bytes,
    parse_ints,
    progress_wanted,
    resolve_source,
    roi_from_options,
    roi_options,
    source_argument,
    source_options,
)
from datatools.patches.sampling import CLASS_RULES, SAMPLERS, SamplingWarning
from datatools.sources import SourceSpec


@click.command("patches")
@source_argument("source")
@click.argument("target", required=False)
@click.option(
    "--size",
    required=True,
    metavar="N|Y,X|Z,Y,X",
    help="Patch size in voxels: one value for every spatial axis (cubes from 3D), or values "
    "for the trailing axes (64,64 on z,y,x: 2D patches from every slice).",
)
@click.option(
    "--stride", metavar="N|Y,X", help="Grid step in voxels [default: --size, i.e. tiling]."
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
@source_options("--source-level")
@click.option("--chunk-rows", type=int, help="Patches per chunk [default: about 2 MiB].")
@output_options
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    help="Threads reading slabs ahead of the writer (0: none).",
)
@click.option(
    "--memory-limit",
    metavar="BYTES",
    help="Bound for source slabs in flight, e.g. 512M [default: 256M].",
)
def patches_command(
    source: str,
    target: str | None,
    size: str,
    stride: str | None,
    edge: str,
    fill: float,
    labels: str | None,
    mask: str | None,
    min_fraction: float,
    per_class: bool,
    class_rule: str,
    max_per_class: int | None,
    sampler: str,
    count: int | None,
    min_distance: float | None,
    max_patches: int | None,
    seed: int,
    chunk_rows: int | None,
    codec: str | None,
    codec_level: int | None,
    zarr_format: str,
    workers: int,
    memory_limit: str | None,
    overwrite: bool,
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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SamplingWarning)
        result = patches.extract_patches(
            spec,
            target or default_target(spec),
            size=_one_or_many(size, "--size"),
            stride=None if stride is None else _one_or_many(stride, "--stride"),
            edge=edge,
            fill=fill,
            labels=labels,
            mask=mask,
            min_fraction=min_fraction,
            per_class=per_class,
            class_rule=class_rule,
            max_per_class=max_per_class,
            sampler=sampler,
            count=count,
            min_distance=min_distance,
            max_patches=max_patches,
            rng=seed,
            roi=roi_from_options(kwargs),
            chunk_rows=chunk_rows,
            codec=codec,
            level=codec_level,
            zarr_format=int(zarr_format),
            open_options=open_options_from(kwargs),
            memory_limit=parse_bytes(memory_limit),
            workers=workers,
            overwrite=overwrite,
            progress=progress_wanted(),
        )
    for warning in caught:
        if issubclass(warning.category, SamplingWarning):
            click.echo(f"Warning: {warning.message}", err=True)
        else:
            warnings.warn(warning.message, warning.category, stacklevel=1)
    click.echo(result.summary())


def _one_or_many(text: str, option: str) -> int | tuple[int, ...]:
    values = parse_ints(text, option) or ()
    return values[0] if len(values) == 1 else values


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
