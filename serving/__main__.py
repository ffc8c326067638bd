"""`python -m serving` is the `serve` command."""

from serving.cli import main

main()
