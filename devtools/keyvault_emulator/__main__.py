"""``python -m devtools.keyvault_emulator``: see ``--help``."""

from devtools.keyvault_emulator.cli import main

raise SystemExit(main())
