"""``datatools verify``."""

from __future__ import annotations

from typing import Any

import click

from datatools import verify
from datatools.cli.options import (
    open_options_from,
    progress_wanted,
    resolve_source,
    source_options,
)
from datatools.cli.verbosity import verbosity_options


@click.command("verify")
@click.argument("target")
@click.option(
    "--against",
    default=None,
    metavar="SOURCE",
    help="Compare every voxel with SOURCE's ROI recorded in TARGET.",
)
@source_options(short_level=True)
@verbosity_options
def verify_command(target: str, against: str | None, **kwargs: Any) -> None:
    """Check TARGET: complete, valid OME-NGFF metadata, every chunk readable, every pyramid
    level equal to the level above merged, and with --against every voxel equal to the source
    (opened at the level and series TARGET was converted from). Exit 0 when all agree, 1
    otherwise.

    Memory: one 64 MiB block from each side at a time.

    \b
    Example:
      datatools verify out.zarr --against tiffs/
    """
    result = verify.verify(
        target,
        against=None if against is None else resolve_source(against),
        open_options=open_options_from(kwargs),
        progress=progress_wanted(),
    )
    click.echo(result.summary())
    if not result.ok:
        raise SystemExit(1)
