"""``python -m datatools`` runs the command-line interface."""

from datatools.cli.main import main

main()
