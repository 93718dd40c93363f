"""GET /api/health through the registered function, with probes that are in-memory fakes."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func

from shared.bootstrap import Container
from shared.config import Settings
from shared.domain.errors import DependencyUnavailable
from shared.ports import DependencyProbe


class FakeProbe:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls = 0

    def check(self) -> None:
        self.calls += 1
        if self.error:
            raise self.error


class FakeContainer(Container):
    def __init__(self, probes: dict[str, DependencyProbe], env: dict[str, str] | None = None) -> None:
        super().__init__(Settings(env or {}))
        self.probes = probes

    def health_probes(self) -> dict[str, DependencyProbe]:
        return self.probes


def _get(functions: dict[str, Any]) -> func.HttpResponse:
    request = func.HttpRequest(
        "GET", "http://localhost/api/health", headers={}, params={}, route_params={}, body=b""
    )
    response: func.HttpResponse = functions["health"].get_user_function()(request)
    return response


def test_ok_when_both_peers_answer(functions: dict[str, Any], use_container: Any) -> None:
    kv, storage = FakeProbe(), FakeProbe()
    use_container(FakeContainer({"key_vault": kv, "storage": storage}))
    response = _get(functions)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = json.loads(response.get_body())
    assert body["status"] == "ok"
    assert body["checks"]["key_vault"]["status"] == "ok"
    assert body["checks"]["storage"]["status"] == "ok"
    assert kv.calls == storage.calls == 1


def test_503_when_one_peer_fails(functions: dict[str, Any], use_container: Any) -> None:
    use_container(
        FakeContainer(
            {"key_vault": FakeProbe(), "storage": FakeProbe(DependencyUnavailable("storage", "HTTP 500"))}
        )
    )
    response = _get(functions)
    assert response.status_code == 503
    body = json.loads(response.get_body())
    assert body["status"] == "degraded"
    assert body["checks"]["storage"] == {
        "status": "error",
        "duration_ms": body["checks"]["storage"]["duration_ms"],
        "detail": "HTTP 500",
    }


def test_missing_settings_are_a_failed_check_not_a_crash(
    functions: dict[str, Any], use_container: Any
) -> None:
    use_container(Container(Settings({})))  # the real container, with no settings at all
    response = _get(functions)
    assert response.status_code == 503
    checks = json.loads(response.get_body())["checks"]
    assert checks["key_vault"]["detail"] == "misconfigured: KEY_VAULT_URL"
    assert checks["storage"]["detail"] == "misconfigured: SECRETS_STORAGE"
    assert checks["audit_store"]["detail"] == "misconfigured: SECRETS_STORAGE"


def test_refuses_the_local_principal_switch_in_azure(functions: dict[str, Any], use_container: Any) -> None:
    probe = FakeProbe()
    use_container(
        FakeContainer(
            {"key_vault": probe}, {"ALLOW_UNVERIFIED_PRINCIPAL": "true", "WEBSITE_INSTANCE_ID": "i-1"}
        )
    )
    response = _get(functions)
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    body = json.loads(response.get_body())
    assert "ALLOW_UNVERIFIED_PRINCIPAL" in body["detail"]
    assert probe.calls == 0
