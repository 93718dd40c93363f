"""The operator command line, ``secret-lifecycle``: the service's HTTP API from a terminal.

Every command is one or more calls of the API (so each is authorised and audited like any other call);
nothing here reads storage or Key Vault, and no command prints a secret value (the API never answers one).
The storage-level ``python -m shared.entrypoints.cli`` (verify, digest, repair) stays the break-glass path
for when the API is not there.
"""
