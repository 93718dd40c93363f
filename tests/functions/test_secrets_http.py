"""The secret management functions through app.get_functions(), with real HttpRequest objects and fake
ports: every bad input answered with the right problem+json, roles, and never a value in a response."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import azure.functions as func
import pytest

from shared.domain.audit import Action, Result
from shared.domain.identity import encode_principal
from shared.domain.policy import RotationPolicy, SecretKind
from shared.domain.rotation import RotationReason, RotationRequest
from tests.functions.conftest import Context, FakeContainer, call_http

OPERATOR = encode_principal("oid-operator", ["Secrets.Rotation.Operate"], name="olga")
READER = encode_principal("oid-auditor", ["Secrets.Audit.Read"], name="ana")
NO_ROLE = encode_principal("oid-nobody", [], name="bob")
JSON = {"content-type": "application/json"}
POLICY = RotationPolicy(SecretKind.API_KEY, timedelta(days=30), None, "dispatch-api")


CONTEXT = Context("inv-456")


@pytest.fixture
def fake(use_container: Any) -> FakeContainer:
    container: FakeContainer = use_container(FakeContainer())
    return container


@pytest.fixture
def responses() -> Iterator[list[bytes]]:
    seen: list[bytes] = []
    yield seen


class Caller:
    def __init__(self, functions: dict[str, Any], fake: FakeContainer, seen: list[bytes]) -> None:
        self.functions, self.fake, self.seen = functions, fake, seen

    def __call__(
        self,
        name: str,
        *,
        method: str = "GET",
        route: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        body: Any = None,
        principal: str | None = OPERATOR,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any], func.HttpResponse]:
        answer = call_http(
            self.functions[name], CONTEXT, method=method, url="http://localhost/api/secrets",
            principal=principal, body=body, route=route, params=params,
            headers={**(JSON if body is not None else {}), **(headers or {})},
        )  # fmt: skip
        self.seen.append(answer[2].get_body() or b"")
        return answer


@pytest.fixture
def call(functions: dict[str, Any], fake: FakeContainer, responses: list[bytes]) -> Iterator[Caller]:
    caller = Caller(functions, fake, responses)
    yield caller
    # Whatever a test did: no response ever carried a value the store holds.
    values = [v.value for s in fake.secret_store.secrets.values() for v in s.versions]
    for body in responses:
        for value in values:
            assert value.encode() not in body


def seed(fake: FakeContainer, name: str, tags: dict[str, str] | None = None, age_days: int = 1) -> str:
    fake.clock.advance(timedelta(days=-age_days))
    made = fake.secret_store.set_value(
        name, f"value-of-{name}", content_type="text/plain", tags=POLICY.to_tags() if tags is None else tags
    )
    fake.clock.advance(timedelta(days=age_days))
    return made.version


ONBOARD = {"name": "new-key", "kind": "api-key", "rotation_interval_days": 30, "owner": "dispatch"}


# -- roles --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "method", "route", "body"),
    [
        ("secrets_onboard", "POST", None, ONBOARD),
        ("secrets_policy", "PUT", {"name": "alpha"}, {"rotation_interval_days": 30}),
        ("secrets_rotate", "POST", {"name": "alpha"}, {}),
        ("secrets_rollback", "POST", {"name": "alpha"}, {}),
    ],
)
def test_writes_need_the_operate_role(
    call: Caller, fake: FakeContainer, function: str, method: str, route: Any, body: Any
) -> None:
    seed(fake, "alpha")
    for principal, status in ((NO_ROLE, 403), (READER, 403), (None, 401)):
        code, _, response = call(function, method=method, route=route, body=body, principal=principal)
        assert (code, response.mimetype) == (status, "application/problem+json")
    denied = [e for e in fake.audit_log.events if e.action == Action.ACCESS_DENIED]
    assert len(denied) == 3 and denied[0].details["required_role"] == "Secrets.Rotation.Operate"
    assert len(fake.secret_store.versions_of("alpha")) == 1 and "new-key" not in fake.secret_store.secrets


@pytest.mark.parametrize(
    ("function", "route"),
    [("secrets_list", None), ("secrets_status", {"name": "alpha"}), ("rotation_plan", None)],
)
def test_reads_accept_either_role(call: Caller, fake: FakeContainer, function: str, route: Any) -> None:
    seed(fake, "alpha")
    assert call(function, route=route, principal=READER)[0] == 200
    assert call(function, route=route, principal=OPERATOR)[0] == 200
    assert call(function, route=route, principal=NO_ROLE)[0] == 403


# -- list ---------------------------------------------------------------------------------------------------


def test_list_pages_with_a_continuation(call: Caller, fake: FakeContainer) -> None:
    for name in ("alpha", "bravo", "charlie"):
        seed(fake, name)
    seed(fake, "audit-hmac-key")
    status, page, _ = call("secrets_list", params={"limit": "2"})
    assert status == 200 and [i["name"] for i in page["items"]] == ["alpha", "bravo"]
    assert page["continuation"] == "bravo"
    status, page, _ = call("secrets_list", params={"continuation": "bravo"})
    assert [i["name"] for i in page["items"]] == ["charlie"] and page["continuation"] is None


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"continuation": "bad_name"}, "continuation"),
        ({"continuation": "x" * 128}, "continuation"),
        ({"secret": "x"}, "secret"),
    ],
)
def test_list_refuses_bad_parameters(call: Caller, params: dict[str, str], parameter: str) -> None:
    status, problem, _ = call("secrets_list", params=params)
    assert (status, problem["parameter"]) == (400, parameter)


# -- onboard ------------------------------------------------------------------------------------------------


def test_onboarding_answers_201_with_the_properties_only(call: Caller, fake: FakeContainer) -> None:
    status, body, _ = call("secrets_onboard", method="POST", body=ONBOARD)
    assert status == 201
    [version] = fake.secret_store.versions_of("new-key")
    assert (body["name"], body["version"], body["tags"]["secret-kind"]) == ("new-key", version, "api-key")
    assert "value" not in body
    assert call("secrets_onboard", method="POST", body=ONBOARD)[0] == 409
    onboarded = [e for e in fake.audit_log.events if e.action == Action.SECRET_ONBOARDED]
    assert [(e.result, e.actor.id) for e in onboarded] == [
        (Result.INTENT, "oid-operator"),
        (Result.SUCCESS, "oid-operator"),
    ]


def test_an_onboarding_whose_success_record_fails_is_500_saying_the_secret_was_created(
    call: Caller, fake: FakeContainer
) -> None:
    fake.fail_success_of(Action.SECRET_ONBOARDED)
    status, problem, _ = call("secrets_onboard", method="POST", body=ONBOARD)
    [version] = fake.secret_store.versions_of("new-key")
    assert (status, problem["changed"], problem["version"]) == (500, True, version)
    assert "new-key was created" in problem["detail"] and "the change was made" in problem["detail"]
    assert "nothing was changed" not in problem["detail"]


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ({**ONBOARD, "name": "bad_name"}, "name"),
        ({**ONBOARD, "value": "s3cr3t"}, "value"),  # unknown field: a value is never accepted
        ({**ONBOARD, "rotation_interval_days": 0}, "rotation_interval_days"),
        ({**ONBOARD, "rotation_interval_days": "30"}, "rotation_interval_days"),
        ({**ONBOARD, "kind": "ssh-key"}, "kind"),
        ({**ONBOARD, "validity_days": 31}, "validity_days"),
        ({**ONBOARD, "rotator": "webhook"}, "rotation_target"),
        ({k: v for k, v in ONBOARD.items() if k != "kind"}, "kind"),
    ],
)
def test_onboarding_refuses_bad_bodies_naming_the_field(
    call: Caller, fake: FakeContainer, body: dict[str, Any], parameter: str
) -> None:
    status, problem, _ = call("secrets_onboard", method="POST", body=body)
    assert (status, problem["parameter"]) == (400, parameter)
    assert "s3cr3t" not in json.dumps(problem)
    assert fake.secret_store.secrets == {}


def test_onboarding_a_reserved_name_is_409(call: Caller, fake: FakeContainer) -> None:
    status, problem, _ = call("secrets_onboard", method="POST", body={**ONBOARD, "name": "audit-hmac-key"})
    assert status == 409 and "own secret" in problem["detail"]


def test_a_body_that_is_not_json_is_415(call: Caller) -> None:
    status, problem, _ = call(
        "secrets_onboard", method="POST", body=b"name=x", headers={"content-type": "text/plain"}
    )
    assert status == 415 and problem["status"] == 415


# -- policy -------------------------------------------------------------------------------------------------


def test_a_policy_is_applied_and_returned(call: Caller, fake: FakeContainer) -> None:
    seed(fake, "legacy", tags={"team": "ops"})
    status, problem, _ = call(
        "secrets_policy", method="PUT", route={"name": "legacy"}, body={"rotation_interval_days": 7}
    )
    assert (status, problem["parameter"]) == (400, "kind")
    status, body, _ = call(
        "secrets_policy",
        method="PUT",
        route={"name": "legacy"},
        body={"kind": "database-password", "rotation_interval_days": 7},
    )
    assert status == 200 and body["policy"]["kind"] == "database-password"
    assert body["policy"]["rotation_interval_days"] == 7
    assert fake.secret_store.get_properties("legacy").tags["team"] == "ops"
    assert call("secrets_policy", method="PUT", route={"name": "nothing"}, body={"kind": "api-key",
                "rotation_interval_days": 7})[0] == 404  # fmt: skip


# -- rotate -------------------------------------------------------------------------------------------------


def test_a_forced_rotation_is_queued_with_a_location(call: Caller, fake: FakeContainer) -> None:
    seed(fake, "alpha")
    status, body, response = call(
        "secrets_rotate", method="POST", route={"name": "alpha"}, body={"force": True}
    )
    assert (status, body["status"]) == (202, "queued")
    assert response.headers["Location"] == "/api/secrets/alpha/status?vault=fleet"
    [request] = fake.rotation_queue.sent
    assert (request.reason, request.force, request.rotation_id) == (
        RotationReason.MANUAL,
        True,
        body["rotation_id"],
    )
    outcome = fake.rotate_requested(request)
    assert outcome.rotation_id == body["rotation_id"]
    status, state, _ = call("secrets_status", route={"name": "alpha"})
    assert state["last_rotation"]["recorded"]["rotation_id"] == body["rotation_id"]


def test_a_forced_rotation_queued_but_not_recorded_is_still_202_with_its_id(
    call: Caller, fake: FakeContainer
) -> None:
    seed(fake, "alpha")
    fake.fail_success_of(Action.ROTATION_REQUESTED)
    status, body, _ = call("secrets_rotate", method="POST", route={"name": "alpha"}, body={"force": True})
    [request] = fake.rotation_queue.sent
    assert (status, body) == (202, {"rotation_id": request.rotation_id, "status": "queued", "joined": None})


def test_a_dry_run_is_200_with_the_plan(call: Caller, fake: FakeContainer) -> None:
    seed(fake, "alpha")
    status, plan, _ = call("secrets_rotate", method="POST", route={"name": "alpha"}, body={"dry_run": True})
    assert status == 200 and plan["would_rotate"] is False and plan["reason"].startswith("not due until")
    assert fake.rotation_queue.sent == []


@pytest.mark.parametrize(
    ("route", "body", "status", "says"),
    [
        ({"name": "nothing"}, {"force": True}, 404, "not found"),
        ({"name": "bad_name"}, {"force": True}, 400, "secret names"),
        ({"name": "legacy"}, {"force": True}, 409, "managed-by"),
        ({"name": "broken"}, {"force": True}, 409, "secret-kind"),
        ({"name": "alpha"}, {}, 409, "force=true"),
        ({"name": "alpha"}, {"force": "yes"}, 400, "force"),
        ({"name": "alpha"}, {"now": True}, 400, "unknown field"),
        ({"name": "audit-hmac-key"}, {"force": True}, 409, "own secret"),
    ],
)
def test_rotate_refusals(
    call: Caller, fake: FakeContainer, route: dict[str, str], body: Any, status: int, says: str
) -> None:
    seed(fake, "alpha")
    seed(fake, "legacy", tags={"team": "ops"})
    seed(fake, "broken", tags={**POLICY.to_tags(), "secret-kind": "ssh"})
    seed(fake, "audit-hmac-key")
    code, problem, response = call("secrets_rotate", method="POST", route=route, body=body)
    assert (code, response.mimetype) == (status, "application/problem+json")
    assert says in json.dumps(problem)
    assert fake.rotation_queue.sent == []


def test_rotate_needs_a_json_content_type_and_no_query(call: Caller, fake: FakeContainer) -> None:
    seed(fake, "alpha")
    assert call("secrets_rotate", method="POST", route={"name": "alpha"}, body=b"{}",
                headers={"content-type": "application/x-www-form-urlencoded"})[0] == 415  # fmt: skip
    assert call("secrets_rollback", method="POST", route={"name": "alpha"})[0] == 415  # no content type
    status, problem, _ = call(
        "secrets_rotate", method="POST", route={"name": "alpha"}, body={}, params={"force": "true"}
    )
    assert (status, problem["parameter"]) == (400, "force")


# -- status -------------------------------------------------------------------------------------------------


def test_status(call: Caller, fake: FakeContainer) -> None:
    version = seed(fake, "alpha")
    status, body, _ = call("secrets_status", route={"name": "alpha"})
    assert status == 200 and body["version"] == version and body["policy"]["kind"] == "api-key"
    assert call("secrets_status", route={"name": "nothing"})[0] == 404
    assert call("secrets_status", route={"name": "bad_name"})[0] == 400
    status, problem, _ = call("secrets_status", route={"name": "alpha"}, params={"verbose": "1"})
    assert (status, problem["parameter"]) == (400, "verbose")


# -- rollback -----------------------------------------------------------------------------------------------


def test_rollback_restores_the_previous_value_once(call: Caller, fake: FakeContainer) -> None:
    old = seed(fake, "alpha", age_days=40)
    call("secrets_rotate", method="POST", route={"name": "alpha"}, body={})
    [request] = fake.rotation_queue.sent
    fake.rotate_requested(request)
    bad = fake.secret_store.get_properties("alpha").version
    status, problem, _ = call(
        "secrets_rollback", method="POST", route={"name": "alpha"}, body={"from_version": old}
    )
    assert status == 409 and "not " + old in problem["detail"]
    status, body, _ = call(
        "secrets_rollback", method="POST", route={"name": "alpha"}, body={"from_version": bad}
    )
    assert status == 200 and (body["restored_version"], body["rolled_back_from"]) == (old, bad)
    assert fake.secret_store.get_value("alpha").value == "value-of-alpha"
    status, problem, _ = call("secrets_rollback", method="POST", route={"name": "alpha"}, body={})
    assert status == 409 and "roll forward" in problem["detail"]
    assert len(fake.secret_store.versions_of("alpha")) == 3
    assert [n.type for n in fake.publisher.sent][-1] == "SecretLifecycle.SecretRolledBack"


def test_a_rollback_written_but_not_recorded_is_500_naming_it_and_the_retry_records_it(
    call: Caller, fake: FakeContainer
) -> None:
    old = seed(fake, "alpha", age_days=40)
    call("secrets_rotate", method="POST", route={"name": "alpha"}, body={})
    [request] = fake.rotation_queue.sent
    fake.rotate_requested(request)
    fake.fail_success_of(Action.ROLLED_BACK)
    status, problem, _ = call("secrets_rollback", method="POST", route={"name": "alpha"}, body={})
    made = fake.secret_store.versions_of("alpha")[-1]
    assert (status, problem["changed"], problem["version"]) == (500, True, made)
    assert problem["rollback_id"] in problem["detail"] and made in problem["detail"]
    assert "nothing was changed" not in problem["detail"]
    fake.fail_success_of(None)
    status, body, _ = call("secrets_rollback", method="POST", route={"name": "alpha"}, body={})
    assert status == 200 and (body["version"], body["restored_version"]) == (made, old)
    assert body["rollback_id"] == problem["rollback_id"] and len(fake.secret_store.versions_of("alpha")) == 3


def test_rollback_refusals(call: Caller, fake: FakeContainer) -> None:
    seed(fake, "alpha")
    seed(fake, "legacy", tags={})
    assert call("secrets_rollback", method="POST", route={"name": "nothing"}, body={})[0] == 404
    assert call("secrets_rollback", method="POST", route={"name": "bad_name"}, body={})[0] == 400
    status, problem, _ = call("secrets_rollback", method="POST", route={"name": "legacy"}, body={})
    assert status == 409 and "managed-by" in problem["detail"]
    status, problem, _ = call("secrets_rollback", method="POST", route={"name": "alpha"}, body={})
    assert status == 409 and "no previous version" in problem["detail"]
    status, problem, _ = call("secrets_rollback", method="POST", route={"name": "alpha"}, body={"to": "x"})
    assert (status, problem["parameter"]) == (400, "to")


# -- plan ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "parameter"),
    [({"within_days": "0"}, "within_days"), ({"within_days": "366"}, "within_days"), ({"days": "7"}, "days")],
)
def test_plan_refuses_bad_parameters(call: Caller, params: dict[str, str], parameter: str) -> None:
    status, problem, _ = call("rotation_plan", params=params)
    assert (status, problem["parameter"]) == (400, parameter)


def test_plan_lists_what_is_coming(call: Caller, fake: FakeContainer) -> None:
    seed(fake, "soon", age_days=27)
    seed(fake, "later")
    status, plan, _ = call("rotation_plan", params={"within_days": "7"})
    assert status == 200 and [(i["name"], i["event"]) for i in plan["items"]] == [("soon", "rotation")]
    assert plan["within_days"] == 7


def _deliver(functions: dict[str, Any], body: str) -> None:
    """One queue delivery to the registered rotate_secret function."""
    message = func.QueueMessage(id="m-1", body=body.encode())
    functions["rotate_secret"].get_user_function()(message, CONTEXT)


def test_only_requests_the_service_sealed_are_acted_on(
    functions: dict[str, Any], fake: FakeContainer
) -> None:
    """The queue is storage: a request a queue writer put there — unsealed, a sealed one edited (a
    forced rotation, another rotation id), or no request at all — is refused and reported once, never
    acted on."""
    seed(fake, "alpha")
    asked = RotationRequest(
        secret_name="alpha", reason=RotationReason.MANUAL, requested_at=fake.clock.now(), correlation_id="c",
        force=True, rotation_id="a" * 32,
    )  # fmt: skip
    fake.rotation_requests.send([asked])
    [sealed] = fake.rotation_queue.sent
    forged = dataclasses.replace(sealed, seal=None, seal_key=None)
    edited = dataclasses.replace(sealed, rotation_id="b" * 32)
    for bad in (forged, edited, forged):  # the same forged message twice: reported once
        _deliver(functions, bad.to_json())
    # A message that is not a request at all is reported and dropped, not retried into the poison queue.
    _deliver(functions, '{"secret_name": "alpha", "force": "yes"')
    assert len(fake.secret_store.versions_of("alpha")) == 1  # nothing rotated
    tampered = [e for e in fake.audit_log.events if e.action == Action.STATE_TAMPERED]
    assert sorted(e.details["check"] for e in tampered) == ["mac mismatch", "malformed", "no seal"]
    assert {e.details["partition"] for e in tampered} == {"rotation-requests"}
    _deliver(functions, sealed.to_json())
    assert len(fake.secret_store.versions_of("alpha")) == 2
