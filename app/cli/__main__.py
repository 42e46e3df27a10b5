"""`python -m app.cli`: the `ftguard` command."""

from app.cli import main

main()
