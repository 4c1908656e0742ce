"""Allow `python -m livepolicy`."""

from livepolicy.cli import main

main()
