"""HTTP helpers shared by every HTTP trigger: JSON and RFC 9457 problem+json responses."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func

PROBLEM_JSON = "application/problem+json"
_NO_STORE = {"Cache-Control": "no-store"}


def json_response(body: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        mimetype="application/json",
        charset="utf-8",
        headers=_NO_STORE,
    )


def problem(status: int, title: str, detail: str | None = None, **extra: Any) -> func.HttpResponse:
    """An RFC 9457 problem+json response. ``detail`` must never carry a secret value."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return func.HttpResponse(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        mimetype=PROBLEM_JSON,
        charset="utf-8",
        headers=_NO_STORE,
    )
