"""Command-line interface: one module per command, shared options in :mod:`.options`."""

from __future__ import annotations

import sys


def run() -> None:
    """Console-script entry point: Ctrl-C while the commands load (about half a second of
    imports) exits quietly with status 130, as it does later."""
    try:
        from datatools.cli.main import main
    except KeyboardInterrupt:
        sys.exit(130)
    main()
