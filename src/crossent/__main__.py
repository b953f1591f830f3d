"""``python -m crossent``: the ``crossent`` command."""

import sys

from crossent.cli import main

if __name__ == "__main__":
    sys.exit(main())
