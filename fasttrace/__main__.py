"""`python -m fasttrace` and the `fasttrace` console script."""

import sys

from fasttrace.cli import main

if __name__ == "__main__":
    sys.exit(main())
