"""``python -m beryl`` runs the CLI."""

from beryl.cli import main

main()
