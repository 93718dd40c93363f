"""A local Azure Key Vault *secrets* emulator that the unmodified ``SecretClient`` works against.

Run it with ``python -m devtools.keyvault_emulator --help``; start it from Python with
:class:`devtools.keyvault_emulator.process.EmulatorProcess`. Modules: ``cli`` (command line), ``server``
(HTTPS, routing, auth challenge, throttling, stats), ``store`` (secrets and Key Vault's rules),
``limits`` (sliding windows, counters), ``rbac`` (``--deny``: denied operations and their 403),
``certs`` (the self-signed TLS certificate, and those behind certificate-backed secrets), ``errors``.
"""

from devtools.keyvault_emulator.process import EmulatorProcess

__all__ = ["EmulatorProcess"]
