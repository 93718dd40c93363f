"""Strict parsing at the boundary (issue 21's findings): an integer, a boolean and a moment in a query are
written as one, a body's types are its schema's (no coercion), a key named twice in a body is a 400 naming
the key, and every 400 names its parameter or field, a route's secret name included."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from shared.domain.identity import Role, encode_principal
from shared.domain.policy import RotationPolicy, SecretKind
from tests.functions.conftest import Context, FakeContainer, call_http

OPERATOR = encode_principal("oid-operator", [Role.ROTATION_OPERATE, Role.AUDIT_READ], name="olga")
CONTEXT = Context("inv-strict")
POLICY = RotationPolicy(SecretKind.API_KEY, timedelta(days=30))


@pytest.fixture
def fake(use_container: Any) -> FakeContainer:
    container: FakeContainer = use_container(FakeContainer())
    container.secret_store.set_value("alpha", "v", content_type="text/plain", tags=POLICY.to_tags())
    return container


def call(
    functions: dict[str, Any], name: str, *, method: str = "GET", route: dict[str, str] | None = None,
    params: dict[str, str] | None = None, body: Any = None,
) -> tuple[int, dict[str, Any]]:  # fmt: skip
    headers = {"content-type": "application/json"} if body is not None else {}
    status, answer, _ = call_http(
        functions[name], CONTEXT, method=method, url="http://localhost/api/x", principal=OPERATOR,
        body=body, route=route, params=params, headers=headers,
    )  # fmt: skip
    return status, answer


@pytest.mark.parametrize("text", ["7_0", "+7", " 7", "7 ", "7.0", "07", "0x7", "\uff17", "7e0", ""])
def test_an_integer_in_a_query_is_written_as_one(
    functions: dict[str, Any], fake: FakeContainer, text: str
) -> None:
    status, problem = call(functions, "rotation_plan", params={"within_days": text})
    assert (status, problem["parameter"]) == (400, "within_days"), problem
    assert call(functions, "rotation_plan", params={"within_days": "70"})[0] == 200


@pytest.mark.parametrize("text", ["1.0", "1e1", "-0", "10 "])
def test_a_page_size_is_an_integer(functions: dict[str, Any], fake: FakeContainer, text: str) -> None:
    status, problem = call(functions, "audit_query", params={"limit": text})
    assert (status, problem["parameter"]) == (400, "limit"), problem


@pytest.mark.parametrize(
    "text",
    [
        "-1",
        "1700000000",
        "1700000000.5",
        "2026-07-01 00:00:00Z",
        "2026-07-01T00:00:00",
        "2026-07-01T02:00+02:00",
        "yesterday",
    ],
)
def test_a_moment_is_iso_8601_with_a_zone_or_a_date(
    functions: dict[str, Any], fake: FakeContainer, text: str
) -> None:
    status, problem = call(functions, "audit_query", params={"since": text})
    assert (status, problem["parameter"]) == (400, "since"), problem
    status, problem = call(functions, "compliance_report", params={"from": text})
    assert (status, problem["parameter"]) == (400, "from"), problem


@pytest.mark.parametrize(
    "text",
    [
        "2026-07-01",
        "2026-07-01T00:00:00Z",
        "2026-07-01T02:00:00+02:00",
        "2026-07-01T00:00:00.1234567z",
        "1000-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
    ],  # the ends: held there, no overflow
)
def test_the_moments_the_readme_promises_are_taken(
    functions: dict[str, Any], fake: FakeContainer, text: str
) -> None:
    assert call(functions, "audit_query", params={"since": text})[0] == 200


@pytest.mark.parametrize("text", ["1", "yes", "True", "on", "t"])
def test_a_boolean_in_a_query_is_true_or_false(
    functions: dict[str, Any], fake: FakeContainer, text: str
) -> None:
    status, problem = call(functions, "audit_verify", params={"fresh": text})
    assert (status, problem["parameter"]) == (400, "fresh"), problem


def test_a_key_named_twice_is_refused_before_anything_happens(
    functions: dict[str, Any], fake: FakeContainer
) -> None:
    raw = b'{"dry_run":true,"dry_run":false}'
    status, problem = call(functions, "secrets_rotate", method="POST", route={"name": "alpha"}, body=raw)
    assert (status, problem["parameter"], problem["detail"]) == (400, "dry_run", "dry_run: duplicate key")
    assert fake.rotation_queue.sent == []
    nested = b'{"name":"n","kind":"api-key","rotation_interval_days":30,"target":{"a":1,"a":2}}'
    status, problem = call(functions, "secrets_onboard", method="POST", body=nested)
    assert (status, problem["parameter"]) == (400, "a")


@pytest.mark.parametrize(
    ("body", "field"),
    [({"force": "true"}, "force"), ({"force": 1}, "force"), ({"dry_run": "yes"}, "dry_run")],
)
def test_a_body_is_not_coerced(functions: dict[str, Any], fake: FakeContainer, body: Any, field: str) -> None:
    status, problem = call(functions, "secrets_rotate", method="POST", route={"name": "alpha"}, body=body)
    assert (status, problem["parameter"]) == (400, field), problem
    assert fake.rotation_queue.sent == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("rotation_interval_days", "30"), ("rotation_interval_days", 30.5), ("rotation_interval_days", True)],
)
def test_an_onboarding_body_is_not_coerced(
    functions: dict[str, Any], fake: FakeContainer, field: str, value: Any
) -> None:
    body = {"name": "new-key", "kind": "api-key", "rotation_interval_days": 30, field: value}
    status, problem = call(functions, "secrets_onboard", method="POST", body=body)
    assert (status, problem["parameter"]) == (400, field), problem


@pytest.mark.parametrize("spelling", [b"30.0", b"3e1", b"300e-1"])
def test_a_number_without_a_fraction_is_an_integer_whatever_its_spelling(
    functions: dict[str, Any], fake: FakeContainer, spelling: bytes
) -> None:
    """JSON Schema's data model, which the document states: 30.0 is the integer 30."""
    raw = b'{"name":"new-key","kind":"api-key","rotation_interval_days":' + spelling + b"}"
    status, answer = call(functions, "secrets_onboard", method="POST", body=raw)
    assert status == 201 and answer["tags"]["rotation-interval-days"] == "30", answer


@pytest.mark.parametrize("raw", [b'{"force": NaN}', b'{"force": Infinity}', b'{"dry_run": -Infinity}'])
def test_nan_and_infinity_are_no_json(functions: dict[str, Any], fake: FakeContainer, raw: bytes) -> None:
    status, problem = call(functions, "secrets_rotate", method="POST", route={"name": "alpha"}, body=raw)
    assert (status, problem["parameter"]) == (400, "body"), problem


@pytest.mark.parametrize(("function", "method"), [("secrets_status", "GET"), ("secrets_rotate", "POST")])
def test_a_bad_secret_name_in_a_route_names_the_parameter(
    functions: dict[str, Any], fake: FakeContainer, function: str, method: str
) -> None:
    body = {} if method == "POST" else None
    status, problem = call(functions, function, method=method, route={"name": "bad_name"}, body=body)
    assert (status, problem["parameter"]) == (400, "name"), problem


def test_a_secret_without_room_for_a_policy_names_the_secret(
    functions: dict[str, Any], fake: FakeContainer
) -> None:
    """Key Vault's tag limit reached by a policy is the secret's own tags' doing: a 400 naming ``name``."""
    own = {f"team-{n}": "dispatch" for n in range(14)}
    fake.secret_store.set_value("crowded", "v", content_type="text/plain", tags=own)
    body = {"kind": "api-key", "rotation_interval_days": 30}
    status, problem = call(functions, "secrets_policy", method="PUT", route={"name": "crowded"}, body=body)
    assert (status, problem["parameter"]) == (400, "name"), problem
    assert "14 tags of its own" in problem["detail"]
    assert fake.secret_store.get_properties("crowded").tags == own  # nothing applied
