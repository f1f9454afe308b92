"""Command-line interface: one module per command, shared options in :mod:`.options`."""

from __future__ import annotations

import sys


def run() -> None:
    """Console-script entry point: Ctrl-C while the command group loads exits quietly with
    status 130, as it does later (a command's module loads when the command runs)."""
    try:
        from datatools.cli.main import main
    except KeyboardInterrupt:
        sys.exit(130)
    main()
