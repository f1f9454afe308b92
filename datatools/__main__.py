"""``python -m datatools`` runs the command-line interface."""

from datatools.cli import run

run()
