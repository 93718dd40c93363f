"""DELETE /api/secrets/{name} and POST /api/secrets/{name}/recover through app.get_functions(): the role,
the body, the answers (202, 400, 403, 404, 409) and the audit records."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import azure.functions as func
import pytest

from shared.domain.audit import Action, Result
from shared.domain.identity import Role, encode_principal
from shared.domain.policy import RotationPolicy, SecretKind
from tests.functions.conftest import FakeContainer

NAME = "old-partner-key"
EXECUTOR = encode_principal("oid-dave", [Role.REVOCATION_EXECUTE.value], name="dave")
OPERATOR = encode_principal("oid-olga", [Role.ROTATION_OPERATE.value], name="olga")


class Ctx:
    invocation_id = "inv-del"
    function_name = "test"


class DecommissionContainer(FakeContainer):
    def __init__(self) -> None:
        super().__init__()
        tags = RotationPolicy(SecretKind.API_KEY, timedelta(days=30)).to_tags()
        self.secret_store.set_value(NAME, "DECOMMISSIONED-VALUE", content_type=None, tags=tags)


@pytest.fixture
def fake(use_container: Any) -> DecommissionContainer:
    container: DecommissionContainer = use_container(DecommissionContainer())
    return container


def call(
    functions: dict[str, Any], name: str, method: str, secret: str, body: Any, who: str
) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = func.HttpRequest(
        method, f"http://localhost/api/secrets/{secret}", headers={"content-type": "application/json",
        "x-ms-client-principal": who}, params={}, route_params={"name": secret}, body=raw,
    )  # fmt: skip
    response = functions[name].get_user_function()(request, Ctx())
    assert b"DECOMMISSIONED-VALUE" not in (response.get_body() or b"")
    return response.status_code, json.loads(response.get_body() or b"{}")


def test_delete_then_recover(functions: dict[str, Any], fake: DecommissionContainer) -> None:
    body = {"justification": "the partner contract ended"}
    assert call(functions, "secrets_delete", "DELETE", NAME, body, OPERATOR)[0] == 403  # not its role
    status, answer = call(functions, "secrets_delete", "DELETE", NAME, body, EXECUTOR)
    assert (status, answer) == (202, {"name": NAME, "status": "deleted", "recoverable": True})
    assert NAME in fake.secret_store.deleted
    assert call(functions, "secrets_delete", "DELETE", NAME, body, EXECUTOR)[0] == 404
    assert call(functions, "secrets_recover", "POST", NAME, {}, EXECUTOR) == (
        202,
        {"name": NAME, "status": "recovered"},
    )
    assert call(functions, "secrets_recover", "POST", NAME, {}, EXECUTOR)[0] == 404
    actions = [(e.action, e.result) for e in fake.audit_log.events if e.secret_name == NAME]
    assert actions == [
        (Action.SECRET_DELETED, Result.INTENT), (Action.SECRET_DELETED, Result.SUCCESS),
        (Action.SECRET_RECOVERED, Result.INTENT), (Action.SECRET_RECOVERED, Result.SUCCESS),
    ]  # fmt: skip
    # The second delete and the second recover named a secret the vault did not hold (current, then
    # deleted): each is a SECRET_NOT_FOUND on the service chain.
    missing = [e for e in fake.audit_log.events if e.action == Action.SECRET_NOT_FOUND]
    assert [(e.details["method"], e.secret_name, e.details["secret_name"]) for e in missing] == [
        ("DELETE", None, NAME), ("POST", None, NAME),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [({}, 400, "justification"), ({"justification": ""}, 400, "justification"),
     ({"justification": "x", "purge": True}, 400, "purge"), (b"{", 400, "body")],
)  # fmt: skip
def test_bad_bodies(
    functions: dict[str, Any], fake: DecommissionContainer, body: Any, status: int, field: str
) -> None:
    answer = call(functions, "secrets_delete", "DELETE", NAME, body, EXECUTOR)
    assert answer[0] == status and answer[1].get("parameter", "").split(".")[0] == field
    assert fake.secret_store.deleted == {}


def test_unknown_reserved_and_bad_names(functions: dict[str, Any], fake: DecommissionContainer) -> None:
    body = {"justification": "x"}
    assert call(functions, "secrets_delete", "DELETE", "no-such-key", body, EXECUTOR)[0] == 404
    fake.secret_store.set_value("audit-hmac-key", "k", content_type=None, tags={})
    assert call(functions, "secrets_delete", "DELETE", "audit-hmac-key", body, EXECUTOR)[0] == 409
    assert call(functions, "secrets_delete", "DELETE", "bad_name!", body, EXECUTOR)[0] == 400
