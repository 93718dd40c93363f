"""Secret management endpoints: list, onboard, policy, rotate, status, rollback and the rotation plan."""

from __future__ import annotations

import azure.functions as func

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ unannotated
