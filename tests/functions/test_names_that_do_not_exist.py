"""No chains at will: a request naming a secret that does not exist (and never did) leaves no chain of that
name — every chain grows every digest, so a caller who could make one per request could make thousands. What
is recorded of the attempt goes on the service chain, naming the secret, as refusals do. Every endpoint that
takes a name, with every role."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func
import pytest

from shared.domain.audit import SERVICE_CHAIN_SECRET
from shared.domain.identity import Role, encode_principal
from tests.functions.conftest import Context, FakeContainer

GHOST = "never-was-a-secret"
EVERYTHING = encode_principal("root", [r.value for r in Role], name="root")

#: (function, method, route parameters, body) of every endpoint that takes a secret's name.
CALLS = [
    ("secrets_policy", "PUT", {"name": GHOST}, {"kind": "api-key", "rotation_interval_days": 30}),
    ("secrets_rotate", "POST", {"name": GHOST}, {}),
    ("secrets_rotate", "POST", {"name": GHOST}, {"dry_run": True}),
    ("secrets_rotate", "POST", {"name": GHOST}, {"force": True}),
    ("secrets_status", "GET", {"name": GHOST}, None),
    ("secrets_rollback", "POST", {"name": GHOST}, {}),
    ("secrets_rollback", "POST", {"name": GHOST}, {"from_version": "0" * 32}),
    ("secrets_delete", "DELETE", {"name": GHOST}, {"justification": "gone"}),
    ("secrets_recover", "POST", {"name": GHOST}, {}),
    (
        "revocations_request",
        "POST",
        {},
        {"secret_name": GHOST, "reason": "KEY_COMPROMISE", "severity": "high", "justification": "leak"},
    ),
    (
        "revocations_request",
        "POST",
        {},
        {
            "secret_name": GHOST,
            "reason": "KEY_COMPROMISE",
            "severity": "critical",
            "justification": "leak",
            "break_glass": True,
        },
    ),
]
#: Onboarding creates the secret it names: its chain begins with a secret the vault then holds.
CREATES_THE_SECRET = {"secrets_onboard"}


@pytest.fixture
def fake(use_container: Any) -> FakeContainer:
    container: FakeContainer = use_container(FakeContainer())
    return container


def _call(functions: dict[str, Any], name: str, method: str, route: dict[str, str], body: Any) -> int:
    raw = b"" if body is None else json.dumps(body).encode()
    headers = {"x-ms-client-principal": EVERYTHING, "user-agent": "pytest"}
    if method != "GET":
        headers["content-type"] = "application/json"
    request = func.HttpRequest(
        method, "http://localhost/api/x", headers=headers, params={}, route_params=route, body=raw
    )
    response: func.HttpResponse = functions[name].get_user_function()(request, Context("inv-ghost"))
    return response.status_code


@pytest.mark.parametrize(("function", "method", "route", "body"), CALLS)
def test_a_name_that_does_not_exist_makes_no_chain(
    functions: dict[str, Any],
    fake: FakeContainer,
    function: str,
    method: str,
    route: dict[str, str],
    body: Any,
) -> None:
    status = _call(functions, function, method, route, body)
    assert 400 <= status < 500, status
    chains = set(fake.audit_log.records) | set(fake.audit_log.heads)
    assert not any(chain.endswith(f":{GHOST}") for chain in chains), (status, chains)
    recorded = [e for e in fake.audit_log.events if GHOST in json.dumps(e.details) or e.secret_name == GHOST]
    if recorded:  # what is recorded of the attempt is on the service chain
        assert {e.chain.split(":", 1)[1] for e in recorded} == {SERVICE_CHAIN_SECRET}
