"""The revocation functions through app.get_functions(), with real HttpRequest objects and fake ports:
the lifecycle over HTTP, the authorization matrix of every endpoint x role set, self-approval refused even
to a caller with every role, bad input named, 409 with the stored result for a second execute, a forged
principal refused when the platform does not vouch for it, and never a value in a response."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import azure.functions as func
import pytest

from shared.domain.audit import Action
from shared.domain.identity import Role, encode_principal
from shared.domain.policy import RotationPolicy, SecretKind
from tests.functions.conftest import LOCAL_ENV, Context, FakeContainer, call_http

NAME = "dispatch-api-key"
JSON = {"content-type": "application/json"}
ALL_ROLES = [r.value for r in Role]


def principal(oid: str, *roles: Role | str) -> str:
    return encode_principal(oid, [r.value if isinstance(r, Role) else r for r in roles], name=oid)


REQUESTER = principal("alice", Role.REVOCATION_REQUEST)
APPROVER = principal("bob", Role.REVOCATION_APPROVE)
APPROVER2 = principal("carol", Role.REVOCATION_APPROVE)
EXECUTOR = principal("dave", Role.REVOCATION_EXECUTE)
EVERYTHING = principal("root", *ALL_ROLES)


CONTEXT = Context("inv-789")


class RevocationContainer(FakeContainer):
    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        policy = RotationPolicy(SecretKind.API_KEY, timedelta(days=30))
        self.clock.advance(timedelta(days=-1))
        self.version = self.secret_store.set_value(NAME, "VALUE-1", content_type=None, tags=policy.to_tags())
        self.clock.advance(timedelta(days=1))


@pytest.fixture
def fake(use_container: Any) -> RevocationContainer:
    container: RevocationContainer = use_container(RevocationContainer())
    return container


class Caller:
    def __init__(self, functions: dict[str, Any]) -> None:
        self.functions = functions
        self.seen: list[bytes] = []

    def __call__(
        self, name: str, *, method: str = "POST", route: dict[str, str] | None = None,
        params: dict[str, str] | None = None, body: Any = None, who: str | None = REQUESTER,
    ) -> tuple[int, dict[str, Any], func.HttpResponse]:  # fmt: skip
        answer = call_http(
            self.functions[name], CONTEXT, method=method, url="http://localhost/api/revocations",
            principal=who, body=body, route=route, params=params, headers=JSON if method == "POST" else {},
        )  # fmt: skip
        self.seen.append(answer[2].get_body() or b"")
        return answer


@pytest.fixture
def call(functions: dict[str, Any], fake: RevocationContainer) -> Iterator[Caller]:
    caller = Caller(functions)
    yield caller
    for body in caller.seen:
        assert b"VALUE-1" not in body


REQUEST = {
    "secret_name": NAME,
    "reason": "COMPROMISE_SUSPECTED",
    "severity": "high",
    "justification": "seen in a paste",
}


@pytest.mark.parametrize(("severity", "approvals"), [("low", 2), ("medium", 2), ("high", 1), ("critical", 1)])
def test_the_lifecycle_over_http(
    call: Caller, fake: RevocationContainer, severity: str, approvals: int
) -> None:
    status, made, response = call("revocations_request", body={**REQUEST, "severity": severity})
    assert status == 201 and response.headers["Location"] == f"/api/revocations/{made['id']}"
    assert (made["status"], made["versions"], made["required_approvals"]) == (
        "pending",
        [fake.version.version],
        approvals,
    )
    rid = {"id": made["id"]}
    assert call("revocations_approve", route=rid, body={}, who=REQUESTER)[0] == 403  # lacks the role
    for approver in (APPROVER, APPROVER2)[:approvals]:
        assert call("revocations_execute", route=rid, who=EXECUTOR)[0] == 409  # not approved yet
        decided = call("revocations_approve", route=rid, body={"comment": "ok"}, who=approver)[1]
    assert decided["status"] == "approved" and len(decided["approvals"]) == approvals
    status, done, _ = call("revocations_execute", route=rid, who=EXECUTOR)
    assert status == 200 and done["result"]["disabled_versions"] == [fake.version.version]
    status, again, _ = call("revocations_execute", route=rid, who=EXECUTOR)
    assert status == 409 and again["revocation"]["result"] == done["result"]
    assert call("revocations_get", method="GET", route=rid, who=principal("x", Role.AUDIT_READ))[0] == 200
    status, listed, _ = call("revocations_list", method="GET", params={"status": "executed"}, who=EXECUTOR)
    assert status == 200 and [i["id"] for i in listed["items"]] == [made["id"]]


def test_a_request_expires_and_the_timer_marks_it(
    call: Caller, fake: RevocationContainer, functions: dict[str, Any]
) -> None:
    from azure.functions.timer import TimerRequest

    made = call("revocations_request", body=REQUEST)[1]
    fake.clock.advance(timedelta(hours=24))
    assert call("revocations_approve", route={"id": made["id"]}, body={}, who=APPROVER)[0] == 409
    functions["revocation_expiry"].get_user_function()(TimerRequest(), CONTEXT)
    status, stored, _ = call("revocations_get", method="GET", route={"id": made["id"]}, who=EXECUTOR)
    assert (status, stored["status"]) == (200, "expired")
    assert call("revocations_execute", route={"id": made["id"]}, who=EXECUTOR)[0] == 409


def test_self_approval_is_refused_even_with_every_role(call: Caller) -> None:
    made = call("revocations_request", body=REQUEST, who=EVERYTHING)[1]
    status, problem, _ = call("revocations_approve", route={"id": made["id"]}, body={}, who=EVERYTHING)
    assert status == 403 and "own request" in problem["detail"]
    assert call("revocations_approve", route={"id": made["id"]}, body={}, who=APPROVER)[0] == 200
    status, _, _ = call("revocations_approve", route={"id": made["id"]}, body={}, who=APPROVER2)
    assert status == 409  # approved already: not pending


def test_a_second_approval_by_the_same_person_is_409(call: Caller) -> None:
    made = call("revocations_request", body={**REQUEST, "severity": "low"})[1]
    assert call("revocations_approve", route={"id": made["id"]}, body={}, who=APPROVER)[0] == 200
    assert call("revocations_approve", route={"id": made["id"]}, body={}, who=APPROVER)[0] == 409


def test_break_glass_needs_its_role_and_a_critical_severity(call: Caller) -> None:
    glass = {**REQUEST, "severity": "critical", "break_glass": True}
    assert call("revocations_request", body=glass)[0] == 403  # no Secrets.BreakGlass
    breaker = principal("erin", Role.REVOCATION_REQUEST, Role.BREAK_GLASS)
    status, problem, _ = call("revocations_request", body={**glass, "severity": "high"}, who=breaker)
    assert (status, problem.get("parameter")) == (400, "break_glass")
    status, done, _ = call("revocations_request", body=glass, who=breaker)
    assert (status, done["status"], done["review_required"]) == (201, "executed", True)
    rid = {"id": done["id"]}
    reviewer = principal("erin", Role.REVOCATION_APPROVE)  # the requester, with the approve role
    assert call("revocations_review", route=rid, body={"comment": "fine"}, who=reviewer)[0] == 403
    status, reviewed, _ = call("revocations_review", route=rid, body={"comment": "justified"}, who=APPROVER)
    assert (status, reviewed["review_required"], reviewed["reviewed_by"]) == (200, False, "bob")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        ({**REQUEST, "extra": 1}, "extra"),
        ({**REQUEST, "severity": "urgent"}, "severity"),
        ({**REQUEST, "reason": "BORED"}, "reason"),
        ({**REQUEST, "justification": ""}, "justification"),
        ({**REQUEST, "justification": "x" * 2001}, "justification"),
        ({**REQUEST, "secret_name": "bad/name"}, "secret_name"),
        ({**REQUEST, "versions": ["not a version!"]}, "versions"),
        ({**REQUEST, "versions": ["0" * 32]}, "versions"),  # not a version of the secret
        ({**REQUEST, "replace": "yes"}, "replace"),
        (b"{" + b" " * 70_000 + b"}", "body"),
    ],
)
def test_bad_input_is_400_naming_the_field_and_nothing_is_written(
    call: Caller, fake: RevocationContainer, body: Any, field: str
) -> None:
    status, problem, _ = call("revocations_request", body=body)
    assert status == 400, problem
    assert problem.get("parameter", "").split(".")[0] == field
    assert fake.state_store.list("revocation") == {}


def test_unknown_ids_are_404(call: Caller) -> None:
    for rid in ("0" * 32, "not-an-id"):
        assert call("revocations_get", method="GET", route={"id": rid}, who=EXECUTOR)[0] == 404
        assert call("revocations_execute", route={"id": rid}, who=EXECUTOR)[0] == 404
    assert call("revocations_request", body={**REQUEST, "secret_name": "no-such"})[0] == 404


READERS = {
    Role.REVOCATION_REQUEST,
    Role.REVOCATION_APPROVE,
    Role.REVOCATION_EXECUTE,
    Role.BREAK_GLASS,
    Role.AUDIT_READ,
}
ENDPOINTS: list[tuple[str, str, set[Role]]] = [
    ("revocations_request", "POST", {Role.REVOCATION_REQUEST}),
    ("revocations_list", "GET", READERS),
    ("revocations_get", "GET", READERS),
    ("revocations_approve", "POST", {Role.REVOCATION_APPROVE}),
    ("revocations_reject", "POST", {Role.REVOCATION_APPROVE}),
    ("revocations_cancel", "POST", {Role.REVOCATION_REQUEST}),
    ("revocations_execute", "POST", {Role.REVOCATION_EXECUTE}),
    ("revocations_review", "POST", {Role.REVOCATION_APPROVE}),
]


@pytest.mark.parametrize(("endpoint", "method", "allowed"), ENDPOINTS)
@pytest.mark.parametrize("role", [*Role, None])
def test_the_authorization_matrix(
    call: Caller, fake: RevocationContainer, endpoint: str, method: str, allowed: set[Role], role: Role | None
) -> None:
    """Every endpoint x every single role (and none): allowed roles get past authorization (whatever the
    request's state makes of it), the others get 403 and an ACCESS_DENIED record."""
    made = call("revocations_request", body=REQUEST)[1]
    who = principal("zoe", role) if role is not None else principal("zoe")
    body: Any = REQUEST if endpoint == "revocations_request" else {"comment": "c"}
    if endpoint in ("revocations_cancel", "revocations_execute"):
        body = {}
    status, _, _ = call(
        endpoint, method=method, route={"id": made["id"]}, body=body if method == "POST" else None, who=who
    )
    denied = [e for e in fake.audit_log.events if e.action == Action.ACCESS_DENIED]
    if role in allowed:
        assert status != 403 or endpoint in ("revocations_cancel",), (endpoint, role, status)
        assert denied == []
    else:
        assert status == 403, (endpoint, role, status)
        assert len(denied) == 1


def test_a_principal_the_platform_did_not_vouch_for_is_refused(
    functions: dict[str, Any], use_container: Any
) -> None:
    """Without App Service Authentication (and without the local development switch) the header is
    anyone's to forge: 401, whatever roles it claims."""
    env = {k: v for k, v in LOCAL_ENV.items() if k != "ALLOW_UNVERIFIED_PRINCIPAL"}
    use_container(RevocationContainer(env))
    caller = Caller(functions)
    assert caller("revocations_request", body=REQUEST, who=EVERYTHING)[0] == 401
    assert caller("revocations_list", method="GET", who=EVERYTHING)[0] == 401


def test_an_execution_whose_outcome_record_failed_says_it_was_made(
    call: Caller, fake: RevocationContainer
) -> None:
    """The versions are disabled; the outcome record could not be written: 500 with ``changed: true``,
    never 503 "nothing was changed" (the operator would repeat it)."""
    made = call("revocations_request", body=REQUEST)[1]
    call("revocations_approve", route={"id": made["id"]}, body={}, who=APPROVER)
    fake.audit_log.fails = lambda e: e.action == Action.REVOKED and e.result.value == "success"  # type: ignore[attr-defined]
    status, body, _ = call("revocations_execute", route={"id": made["id"]}, who=EXECUTOR)
    assert not fake.secret_store.get_properties(NAME, fake.version.version).enabled
    assert (status, body.get("changed")) == (500, True), body
