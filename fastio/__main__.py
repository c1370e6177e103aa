"""python -m fastio: run the lab's comparison (see fastio/lab/cli.py, --help)."""
import sys

from .lab.cli import main

if __name__ == "__main__":
    sys.exit(main())
