"""The ``datatools`` command group: global options and the error boundary."""

from __future__ import annotations

import sys
from typing import Any

import click

from datatools import __version__
from datatools.cli.options import configure_logging
from datatools.errors import DatatoolsError

INTERRUPT_SETTLE_SECONDS = 5.0
"""How long Ctrl-C waits at most for zarr's cancelled reads and writes to end."""


class UserError(click.ClickException):
    """A :class:`DatatoolsError` shown as ``Error: <message>`` with exit status 2."""

    exit_code = 2


class DatatoolsGroup(click.Group):
    """Turns user errors into one-line messages and Ctrl-C into exit status 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DatatoolsError as exc:
            raise UserError(str(exc)) from exc
        except KeyboardInterrupt:
            click.echo("Interrupted; rerun the same command to resume.", err=True)
            if "zarr" in sys.modules:  # its reads in flight would be destroyed noisily at exit
                from datatools.zarr_tasks import settle

                settle(INTERRUPT_SETTLE_SECONDS, cancel=True)
            ctx.exit(130)


@click.group(cls=DatatoolsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="datatools")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars and no warnings (errors only).")
@click.option("-v", "--verbose", count=True, help="Log what happens (-vv for debug detail).")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, verbose: int) -> None:
    """Turn large 2D/3D image volumes into training-ready chunked arrays.

    Inputs: folders or globs of 2D TIFF slices, multi-page/OME TIFF, HDF5 (file.h5:/dataset),
    Zarr / OME-Zarr, ITK images (.mha, .nrrd, .nii.gz). Axis order is (z, y, x); ROIs are
    half-open [start, end) in voxels. Example:

        datatools info sample_data/stack
    """
    ctx.obj = {"quiet": quiet, "verbose": verbose}
    configure_logging(quiet, verbose)


def _register() -> None:
    from datatools.cli.convert import convert_command
    from datatools.cli.info import info_command
    from datatools.cli.instances import instances_command
    from datatools.cli.patches import patches_command
    from datatools.cli.verify import verify_command

    cli.add_command(convert_command)
    cli.add_command(info_command)
    cli.add_command(instances_command)
    cli.add_command(patches_command)
    cli.add_command(verify_command)


_register()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="datatools")
