"""Entry point: ``python -m devtools.host --help``."""

import sys

from devtools.host.cli import main

if __name__ == "__main__":
    sys.exit(main())
