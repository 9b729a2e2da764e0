"""`python -m mdeploy` runs the command line."""

from mdeploy.cli import main

main()
