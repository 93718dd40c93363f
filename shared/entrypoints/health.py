"""GET /api/health: anonymous; 200 when Key Vault, storage and the audit table answer, 503 otherwise."""

from __future__ import annotations

import azure.functions as func

from shared.bootstrap import get_container
from shared.config import ConfigurationError
from shared.entrypoints.http import json_response, problem
from shared.services.health import check_health


def health() -> func.HttpResponse:
    container = get_container()
    try:
        container.settings.check_http_safety()
    except ConfigurationError as err:
        return problem(503, "Unsafe configuration", f"setting {err.setting} must be removed in Azure")
    report = check_health(container.health_probes())
    return json_response(report.to_json(), status=200 if report.ok else 503)
