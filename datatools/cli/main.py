"""The ``datatools`` command group: global options, the error boundary, and the commands,
each imported only when it runs or shows its help (``datatools --help`` imports none)."""

from __future__ import annotations

import importlib
import sys
from types import MappingProxyType
from typing import Any

import click

from datatools import __version__
from datatools.cli.verbosity import configure_logging
from datatools.errors import DatatoolsError

INTERRUPT_SETTLE_SECONDS = 5.0
"""How long Ctrl-C waits at most for zarr's cancelled reads and writes to end."""

COMMANDS = MappingProxyType(
    {
        "convert": (
            "datatools.cli.convert:convert_command",
            "Convert SOURCE (TIFF slices, multi-page TIFF, HDF5, Zarr, ITK image) into TARGET.",
        ),
        "info": (
            "datatools.cli.info:info_command",
            "Describe SPEC: kind, shape, dtype, axes, voxel size, chunks, and progress of outputs.",
        ),
        "instances": (
            "datatools.cli.instances:instances_command",
            "Crop a fixed window around every instance of LABELS from IMAGE into TARGET.",
        ),
        "patches": (
            "datatools.cli.patches:patches_command",
            "Cut SOURCE into a dataset of patches: TARGET (.zarr, or .h5) holds patches (n, [c,] "
            "*size), labels, and origins (n, ndim: voxel start in SOURCE, z,y,x).",
        ),
        "verify": (
            "datatools.cli.verify:verify_command",
            "Check TARGET: complete, valid OME-NGFF metadata, every chunk readable, every "
            "pyramid level equal to the level above merged, and with --against every voxel "
            "equal to the source (opened at the level and series TARGET was converted from).",
        ),
    }
)
"""Each command's ``module:attribute`` and the first sentence of its help, which ``datatools
--help`` lists without importing the command module (and so its libraries)."""


class UserError(click.ClickException):
    """A :class:`DatatoolsError` shown as ``Error: <message>`` with exit status 2."""

    exit_code = 2


class DatatoolsGroup(click.Group):
    """Loads the commands of :data:`COMMANDS` when they are used; turns user errors into
    one-line messages and Ctrl-C into exit status 130."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            module, _, attribute = COMMANDS[cmd_name][0].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.NoSuchCommand as exc:  # click suggests from the loaded commands only
            raise click.NoSuchCommand(
                exc.command_name, possibilities=self.list_commands(ctx), ctx=ctx
            ) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands as :class:`click.Group` does, from :data:`COMMANDS`' sentences
        for those not loaded."""
        commands = [
            (name, self.commands[name])
            if name in self.commands
            else (name, click.Command(name, help=COMMANDS[name][1]))
            for name in self.list_commands(ctx)
        ]
        commands = [(name, command) for name, command in commands if not command.hidden]
        if commands:
            limit = formatter.width - 6 - max(len(name) for name, _ in commands)
            with formatter.section("Commands"):
                formatter.write_dl([(n, c.get_short_help_str(limit)) for n, c in commands])

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


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="datatools")
