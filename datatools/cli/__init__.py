"""Command-line interface: one module per command, shared options in :mod:`.options`."""
