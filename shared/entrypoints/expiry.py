"""Expiry triggers: the daily ``expiry_check`` timer and the ``key_vault_events`` Event Grid trigger."""

from __future__ import annotations

import azure.functions as func

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ unannotated
