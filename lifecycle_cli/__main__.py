"""``python -m lifecycle_cli``: the same as the ``secret-lifecycle`` console script."""

import sys

from lifecycle_cli.main import main

sys.exit(main())
