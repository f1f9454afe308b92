"""``-q``/``-v``: one log level for the whole run, given before or after the command name.

Kept apart from :mod:`datatools.cli.options` so that the command group imports nothing of the
library (``datatools --help`` stays fast).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def configure_logging(quiet: bool, verbose: int) -> None:
    """Log level for ``-q`` (errors only) and ``-v``/``-vv`` (info, debug); warnings otherwise."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    if quiet and not verbose:
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("datatools").setLevel(level)


def _verbosity(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """``-q``/``-v`` given after the command: add them to the ones given before it."""
    if not value:
        return
    root = ctx.find_root()
    root.obj = root.obj or {}
    if param.name == "quiet":
        root.obj["quiet"] = True
    else:
        root.obj["verbose"] = root.obj.get("verbose", 0) + int(value)
    configure_logging(root.obj.get("quiet", False), root.obj.get("verbose", 0))


_OPTIONS = (
    click.option(
        "-q",
        "--quiet",
        is_flag=True,
        expose_value=False,
        callback=_verbosity,
        help="No progress bars and no warnings (errors only).",
    ),
    click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        callback=_verbosity,
        help="Log what happens (-vv for debug detail).",
    ),
)


def verbosity_options(func: F) -> F:
    """``-q``/``-v`` accepted after the command name too (``datatools convert a b -q``)."""
    for option in reversed(_OPTIONS):
        func = option(func)
    return func
