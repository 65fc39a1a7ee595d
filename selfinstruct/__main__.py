"""`python -m selfinstruct`: the same `main` as the installed `selfinstruct` command
(pyproject.toml, [project.scripts])."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
