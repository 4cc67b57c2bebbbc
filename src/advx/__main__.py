"""`python -m advx` is the `advx` command."""

from advx.cli import main

main()
