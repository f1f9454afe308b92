"""``datatools info``."""

from __future__ import annotations

import json
from typing import Any

import click

from datatools import info
from datatools.cli.options import (
    open_options_from,
    resolve_source,
    source_argument,
    source_options,
)
from datatools.cli.verbosity import verbosity_options


@click.command("info")
@source_argument("spec")
@source_options(short_level=True)
@verbosity_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (keys: see README).")
def info_command(spec: str, as_json: bool, **kwargs: Any) -> None:
    """Describe SPEC: kind, shape, dtype, axes, voxel size, chunks, and progress of outputs.

    Reads headers and metadata only. Example:

        datatools info sample_data/stack --json
    """
    result = info.inspect(resolve_source(spec), open_options_from(kwargs))
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        click.echo(info.format_info(result))
