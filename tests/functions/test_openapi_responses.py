"""The endpoints answer what /api/openapi.json says they answer.

Every call below goes through the registered function with a real HttpRequest and fake ports, and its
answer is checked against the document: the status must be listed for the operation, the media type for
that status, the documented headers must be there, and the body must validate against the documented
schema (through the pydantic model the schema was generated from: strict and closed, so a field that
drifts in type, name or presence fails). jsonschema is not a dependency; the models are the schemas.

Between the generic refusals (every protected operation x 400, 401, 403, 415, 500, 503) and the scenarios,
every (operation, status, media type) the document lists is answered at least once:
test_every_documented_answer_is_exercised fails otherwise. The scenarios declare what they answer and
fail when they answer anything else, so that test needs no run order.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import azure.functions as func
import pytest
from pydantic import BaseModel, ValidationError

from shared.adapters.key_vault import AUDIT_KEY_SECRET
from shared.bootstrap import Container
from shared.domain.audit import Action, Result
from shared.domain.errors import DependencyUnavailable
from shared.domain.findings import StoredFinding
from shared.domain.identity import Role, encode_principal
from shared.domain.policy import RotationPolicy, SecretKind
from shared.entrypoints import openapi
from shared.entrypoints.openapi import ENDPOINTS, REF_TEMPLATE
from shared.ports import DependencyProbe
from shared.services.audit import write_digest
from tests.functions.conftest import LOCAL_ENV, FakeContainer

JSON = "application/json"
PROBLEM = "application/problem+json"
NAME = "dispatch-api-key"
OTHER = "partner-api-key"
MISSING = "no-such-key"
FINDING = "f" * 32
NO_ID = "0" * 32
UNSAFE_ENV = {**LOCAL_ENV, "WEBSITE_INSTANCE_ID": "i-1"}  # the local principal switch, in Azure
POLICY = RotationPolicy(SecretKind.API_KEY, timedelta(days=30))

DOC = openapi.document()
OPERATIONS: dict[str, dict[str, Any]] = {
    op["operationId"]: op for item in DOC["paths"].values() for op in item.values() if "operationId" in op
}
MODELS: dict[str, type[BaseModel]] = {name: model for model, name in openapi.model_schemas()[0].items()}


def principal(oid: str, *roles: Role) -> str:
    return encode_principal(oid, [role.value for role in roles], name=oid)


EVERYTHING = principal("root", *Role)
NOBODY = principal("nobody")
REQUESTER = principal("alice", Role.REVOCATION_REQUEST)
APPROVER = principal("bob", Role.REVOCATION_APPROVE)
APPROVER2 = principal("carol", Role.REVOCATION_APPROVE)
EXECUTOR = principal("dave", Role.REVOCATION_EXECUTE)
BREAKER = principal("erin", Role.REVOCATION_REQUEST, Role.BREAK_GLASS)
REVIEWER = principal("rita", Role.AUDIT_REVIEW)
READER = principal("ana", Role.AUDIT_READ)

ONBOARD = {"name": "new-key", "kind": "api-key", "rotation_interval_days": 30, "owner": "dispatch"}
POLICY_BODY = {"kind": "api-key", "rotation_interval_days": 30}
REQUEST = {"secret_name": NAME, "reason": "COMPROMISE_SUSPECTED", "severity": "high", "justification": "leak"}


class Ctx:
    invocation_id = "inv-openapi"
    function_name = "test"


class Probe:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def check(self) -> None:
        if self.error is not None:
            raise self.error


class World(FakeContainer):
    """Every port a fake; NAME (40 days old: due), OTHER and the service's own MAC key in the vault."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self.probes: dict[str, DependencyProbe] = {"key_vault": Probe(), "storage": Probe()}
        self.clock.advance(timedelta(days=-40))
        for name in (NAME, OTHER, AUDIT_KEY_SECRET):
            self.secret_store.set_value(name, f"VALUE-OF-{name}", content_type=None, tags=POLICY.to_tags())
        self.clock.advance(timedelta(days=40))
        expires = self.clock.now() + timedelta(days=3)
        self.secret_store.set_value(
            "expiring", "VALUE-OF-expiring", content_type=None, tags={}, expires=expires
        )

    def health_probes(self) -> dict[str, DependencyProbe]:
        return dict(self.probes)


class Exploding:
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"unexpected failure ({name})")


class Broken(World):
    """Every port fails with an unexpected error: whatever reaches one answers 500."""

    def __init__(self) -> None:
        super().__init__()
        for port in (
            "secret_store", "state_store", "rotation_requests", "audit_log", "audit_trail", "findings",
            "publisher", "key_ring", "digest_anchor",
        ):  # fmt: skip
            setattr(self, port, Exploding())


def conform(op: str, response: func.HttpResponse) -> Any:
    """The response's body, after checking status, media type, headers and body against the document."""
    status, media, raw = response.status_code, response.mimetype, response.get_body() or b""
    responses = OPERATIONS[op]["responses"]
    documented = responses.get(str(status))
    assert documented is not None, f"{op} answered {status}; the document lists {sorted(responses)}: {raw!r}"
    content = documented["content"].get(media)
    assert content is not None, (
        f"{op} {status} answered {media}; the document says {list(documented['content'])}"
    )
    name = content["schema"]["$ref"].removeprefix(REF_TEMPLATE.format(model=""))
    try:
        MODELS[name].model_validate_json(raw)
    except ValidationError as err:
        pytest.fail(f"{op} {status}: the body does not match the documented {name}: {err}\n{raw!r}")
    for header in documented.get("headers", {}):
        assert header in response.headers, f"{op} {status}: documented header {header} missing"
    body = json.loads(raw)
    if media == PROBLEM:
        assert body["status"] == status, op
    for value in (b"VALUE-OF-", b"DECOMMISSIONED"):
        assert value not in raw, f"{op} answered a secret value"
    return body


class Client:
    """Calls an operation by its operationId and checks the answer against the document; ``expect``: the
    status it must answer (None: any the document lists)."""

    def __init__(self, functions: dict[str, Any], install: Callable[[Container], Container]) -> None:
        self.functions, self.install = functions, install
        self.answered: set[tuple[str, int, str]] = set()

    def __call__(
        self,
        op: str,
        *,
        expect: int | None,
        route: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        body: Any = None,
        who: str | None = EVERYTHING,
        media: str = JSON,
    ) -> Any:
        endpoint = ENDPOINTS[op]
        headers = {"user-agent": "pytest"}
        if who is not None:
            headers["x-ms-client-principal"] = who
        if endpoint.body is not None:
            headers["content-type"] = media
        path = endpoint.route
        for key, value in (route or {}).items():
            path = path.replace("{" + key + "}", value)
        if body is None and endpoint.body is not None:
            body = {}  # a write sends {} at least
        raw = b"" if body is None else json.dumps(body).encode()
        request = func.HttpRequest(
            endpoint.method, f"http://localhost/api/{path}", headers=headers, params=params or {},
            route_params=route or {}, body=raw,
        )  # fmt: skip
        function = self.functions[op].get_user_function()
        wants_context = len(inspect.signature(function).parameters) == 2
        response: func.HttpResponse = function(request, Ctx()) if wants_context else function(request)
        answer = conform(op, response)
        self.answered.add((op, response.status_code, response.mimetype))
        assert expect is None or response.status_code == expect, (op, answer)
        return answer


@pytest.fixture
def client(functions: dict[str, Any], use_container: Any) -> Client:
    return Client(functions, use_container)


# -- generic refusals: every protected operation --------------------------------------------------------

#: A request each protected operation accepts (authorized and valid), so each refusal below is the one the
#: case provokes. A new protected endpoint needs its sample here.
SAMPLES: dict[str, dict[str, Any]] = {
    "audit_query": {},
    "audit_summary": {},
    "audit_actor": {"route": {"actor_id": "oid-someone"}},
    "compliance_report": {},
    "audit_verify": {},
    "audit_review_finding": {"route": {"finding_id": FINDING}, "body": {}},
    "audit_incident_open": {"body": {"reason": "restored from a backup"}},
    "audit_incident_acknowledge": {"route": {"incident_id": NO_ID}, "body": {}},
    "secrets_list": {},
    "secrets_onboard": {"body": ONBOARD},
    "secrets_policy": {"route": {"name": NAME}, "body": POLICY_BODY},
    "secrets_rotate": {"route": {"name": NAME}, "body": {}},
    "secrets_status": {"route": {"name": NAME}},
    "secrets_rollback": {"route": {"name": NAME}, "body": {}},
    "secrets_delete": {"route": {"name": NAME}, "body": {"justification": "the contract ended"}},
    "secrets_recover": {"route": {"name": NAME}, "body": {}},
    "rotation_plan": {},
    "revocations_request": {"body": REQUEST},
    "revocations_list": {},
    "revocations_get": {"route": {"id": NO_ID}},
    "revocations_approve": {"route": {"id": NO_ID}, "body": {}},
    "revocations_reject": {"route": {"id": NO_ID}, "body": {"comment": "no"}},
    "revocations_cancel": {"route": {"id": NO_ID}, "body": {}},
    "revocations_execute": {"route": {"id": NO_ID}, "body": {}},
    "revocations_review": {"route": {"id": NO_ID}, "body": {"comment": "seen"}},
}
PROTECTED = [name for name, endpoint in ENDPOINTS.items() if not endpoint.anonymous]
#: case -> (status, what to change in the sample request, the container to use)
CASES: dict[str, tuple[int, dict[str, Any], Callable[[], Container]]] = {
    "no principal": (401, {"who": None}, World),
    "no role": (403, {"who": NOBODY}, World),
    "unknown query parameter": (400, {"params": {"verbose": "1"}}, World),
    "not json": (415, {"media": "text/plain"}, World),
    "misconfigured": (503, {}, lambda: World(UNSAFE_ENV)),
    "a port fails unexpectedly": (500, {}, Broken),
}
MATRIX = [(op, case) for op in PROTECTED for case in CASES if case != "not json" or ENDPOINTS[op].body]


def test_every_protected_operation_has_a_sample() -> None:
    assert sorted(SAMPLES) == sorted(PROTECTED), "add (or drop) a request in SAMPLES"


@pytest.mark.parametrize(("op", "case"), MATRIX)
def test_generic_refusals(client: Client, op: str, case: str) -> None:
    status, change, make = CASES[case]
    client.install(make())
    client(op, expect=status, **{**SAMPLES.get(op, {}), **change})


@pytest.mark.parametrize("op", PROTECTED)
def test_the_function_key_in_the_query_changes_nothing(
    functions: dict[str, Any], op: str, use_container: Any
) -> None:
    """The Functions host passes ``?code=<function key>`` on to the function (the portal's "Get function
    URL" gives it so): every protected operation answers its sample the same with it as without it."""
    answered = []
    for params in ({}, {"code": "a-function-key"}):
        client = Client(functions, use_container)
        client.install(World())
        client(op, expect=None, **{**SAMPLES.get(op, {}), "params": params})
        [(_, status, _)] = client.answered
        answered.append(status)
    assert answered[1] == answered[0] and answered[0] != 400, answered


@pytest.mark.parametrize("op", PROTECTED)
def test_x_roles_are_the_roles_the_operation_admits(client: Client, op: str) -> None:
    """Each single role: admitted (no ACCESS_DENIED) exactly when the document's x-roles lists it."""
    roles = OPERATIONS[op]["x-roles"]
    for role in Role:
        world = World()
        client.install(world)
        admitted = role.value in roles  # then whatever the sample meets (404 for an unknown id...)
        client(op, expect=None if admitted else 403, who=principal("zoe", role), **SAMPLES.get(op, {}))
        denied = [e for e in world.audit_log.events if e.action == Action.ACCESS_DENIED]
        assert bool(denied) == (role.value not in roles), (op, role)
        if denied:
            assert denied[0].details["required_role"] == " or ".join(roles), op


# -- scenarios: successes and the refusals that need a state ---------------------------------------------

Scenario = Callable[[Client, World], None]
SCENARIOS: dict[str, tuple[Scenario, frozenset[tuple[str, int, str]]]] = {}


def answers(*expected: tuple[str, int, str]) -> Callable[[Scenario], Scenario]:
    """Register a scenario with the (operation, status, media type) answers it must give, no more."""

    def register(scenario: Scenario) -> Scenario:
        SCENARIOS[scenario.__name__] = (scenario, frozenset(expected))
        return scenario

    return register


@answers(
    ("audit_incident_open", 201, JSON),
    ("audit_incident_open", 409, PROBLEM),
    ("audit_incident_acknowledge", 200, JSON),
    ("audit_incident_acknowledge", 404, PROBLEM),
    ("audit_incident_acknowledge", 409, PROBLEM),
)
def incidents(client: Client, world: World) -> None:
    opener, second = principal("olga", Role.AUDIT_INCIDENT), principal("ivan", Role.AUDIT_INCIDENT)
    world.audit_trail.record(Action.ROTATED, secret_name=NAME, version="v2")
    write_digest(world.audit_peers)
    client("audit_incident_open", body={"reason": "nothing is broken"}, who=opener, expect=409)
    write_digest(world.audit_peers)
    world.audit_log.digests.pop()  # lost: the anchor names it
    opened = client("audit_incident_open", body={"reason": "restored from a backup"}, who=opener, expect=201)
    world.audit_log.digests.pop(0)  # another digest goes: the breaks changed
    ack: dict[str, Any] = {"route": {"incident_id": opened["incident"]}, "body": {}}
    client("audit_incident_acknowledge", who=second, expect=409, **ack)
    opened = client("audit_incident_open", body={"reason": "restored from a backup"}, who=opener, expect=201)
    ack["route"]["incident_id"] = opened["incident"]
    assert client("audit_incident_acknowledge", who=second, expect=200, **ack)["status"] == "acknowledged"
    client("audit_incident_acknowledge", route={"incident_id": NO_ID}, body={}, who=second, expect=404)


@answers(("health", 200, JSON), ("health", 503, JSON), ("health", 503, PROBLEM), ("openapi", 200, JSON))
def meta(client: Client, world: World) -> None:
    assert client("health", expect=200)["status"] == "ok"
    world.probes["storage"] = Probe(DependencyUnavailable("storage", "HTTP 500"))
    assert client("health", expect=503)["checks"]["storage"]["detail"] == "HTTP 500"
    client.install(World(UNSAFE_ENV))
    client("health", expect=503)
    assert set(client("openapi", expect=200)["paths"]) == set(DOC["paths"])


@answers(
    ("audit_query", 200, JSON),
    ("audit_summary", 200, JSON),
    ("audit_actor", 200, JSON),
    ("audit_actor", 404, PROBLEM),
    ("compliance_report", 200, JSON),
    ("audit_verify", 200, JSON),
    ("audit_review_finding", 200, JSON),
    ("audit_review_finding", 404, PROBLEM),
    ("audit_review_finding", 409, PROBLEM),
)
def audit(client: Client, world: World) -> None:
    world.audit_trail.record(Action.ROTATED, secret_name=NAME, version="v2", details={"rotation_id": "r1"})
    world.audit_trail.record(Action.ROTATION_FAILED, result=Result.FAILURE, secret_name=NAME, error="boom")
    assert len(client("audit_query", params={"limit": "1"}, who=READER, expect=200)["items"]) == 1
    summary = client("audit_summary", who=READER, expect=200)
    assert summary["last_rotation"]["version"] == "v2" and summary["failures"]["count"] == 1
    client("audit_verify", params={"secret_name": NAME}, who=READER, expect=200)
    actor = client("audit_actor", route={"actor_id": "secret-lifecycle"}, who=READER, expect=200)
    assert actor["score"] == 0 and actor["recent"]["items"]
    client("audit_actor", route={"actor_id": "oid\u200bx"}, who=READER, expect=404)  # nobody's id
    world.clock.advance(timedelta(seconds=1))  # the report's period ends now, exclusive
    report = client("compliance_report", who=READER, expect=200)
    assert [r["version"] for r in report["rotations"] if r["outcome"] == "rotated"] == ["v2"]
    world.findings.claim(StoredFinding(FINDING, "break_glass", world.clock.now()))
    review: dict[str, Any] = {"route": {"finding_id": FINDING}, "body": {"note": "expected"}, "who": REVIEWER}
    assert client("audit_review_finding", expect=200, **review)["status"] == "reviewed"
    client("audit_review_finding", expect=409, **review)  # reviewed already
    client("audit_review_finding", route={"finding_id": NO_ID}, body={}, who=REVIEWER, expect=404)


@answers(
    ("secrets_onboard", 201, JSON),
    ("secrets_onboard", 409, PROBLEM),
    ("secrets_onboard", 500, PROBLEM),
    ("secrets_list", 200, JSON),
    ("secrets_policy", 200, JSON),
    ("secrets_policy", 404, PROBLEM),
    ("secrets_policy", 409, PROBLEM),
    ("secrets_rotate", 200, JSON),
    ("secrets_rotate", 202, JSON),
    ("secrets_rotate", 404, PROBLEM),
    ("secrets_rotate", 409, PROBLEM),
    ("secrets_status", 200, JSON),
    ("secrets_status", 404, PROBLEM),
    ("secrets_rollback", 200, JSON),
    ("secrets_rollback", 404, PROBLEM),
    ("secrets_rollback", 409, PROBLEM),
    ("rotation_plan", 200, JSON),
)
def secrets(client: Client, world: World) -> None:
    client("secrets_onboard", body=ONBOARD, expect=201)
    client("secrets_onboard", body=ONBOARD, expect=409)
    world.fail_success_of(Action.SECRET_ONBOARDED)
    problem = client("secrets_onboard", body={**ONBOARD, "name": "newer-key"}, expect=500)
    assert problem["changed"] is True and problem["version"]
    world.fail_success_of(None)
    assert client("secrets_list", params={"limit": "1"}, expect=200)["continuation"]
    client("secrets_policy", route={"name": NAME}, body=POLICY_BODY, expect=200)
    client("secrets_policy", route={"name": MISSING}, body=POLICY_BODY, expect=404)
    client("secrets_policy", route={"name": AUDIT_KEY_SECRET}, body=POLICY_BODY, expect=409)
    assert client("secrets_rotate", route={"name": NAME}, body={"dry_run": True}, expect=200)["would_rotate"]
    client("secrets_rotate", route={"name": MISSING}, body={"force": True}, expect=404)
    client("secrets_rotate", route={"name": AUDIT_KEY_SECRET}, body={"force": True}, expect=409)
    client("secrets_rotate", route={"name": NAME}, body={}, expect=202)
    [request] = world.rotation_queue.sent
    world.rotate_requested(request)
    status = client("secrets_status", route={"name": NAME}, expect=200)
    assert status["last_rotation"]["recorded"]["rotation_id"] == request.rotation_id
    client("secrets_status", route={"name": MISSING}, expect=404)
    client("secrets_rollback", route={"name": NAME}, body={}, expect=200)
    client("secrets_rollback", route={"name": NAME}, body={}, expect=409)  # the current one is a rollback
    client("secrets_rollback", route={"name": MISSING}, body={}, expect=404)
    plan = client("rotation_plan", params={"within_days": "60"}, expect=200)
    assert {item["event"] for item in plan["items"]} == {"expiry", "rotation"}


@answers(
    ("secrets_delete", 202, JSON),
    ("secrets_delete", 404, PROBLEM),
    ("secrets_delete", 409, PROBLEM),
    ("secrets_recover", 202, JSON),
    ("secrets_recover", 404, PROBLEM),
    ("secrets_recover", 409, PROBLEM),
)
def decommission(client: Client, world: World) -> None:
    body = {"justification": "the contract ended"}
    client("secrets_delete", route={"name": NAME}, body=body, who=EXECUTOR, expect=202)
    client("secrets_delete", route={"name": NAME}, body=body, who=EXECUTOR, expect=404)
    client("secrets_delete", route={"name": AUDIT_KEY_SECRET}, body=body, who=EXECUTOR, expect=409)
    client("secrets_recover", route={"name": NAME}, body={}, who=EXECUTOR, expect=202)
    client("secrets_recover", route={"name": NAME}, body={}, who=EXECUTOR, expect=404)
    client("secrets_recover", route={"name": AUDIT_KEY_SECRET}, body={}, who=EXECUTOR, expect=409)


@answers(
    ("revocations_request", 201, JSON),
    ("revocations_request", 404, PROBLEM),
    ("revocations_request", 409, PROBLEM),
    ("revocations_list", 200, JSON),
    ("revocations_get", 200, JSON),
    ("revocations_get", 404, PROBLEM),
    ("revocations_get", 409, PROBLEM),
    ("revocations_approve", 200, JSON),
    ("revocations_approve", 404, PROBLEM),
    ("revocations_approve", 409, PROBLEM),
    ("revocations_execute", 200, JSON),
    ("revocations_execute", 404, PROBLEM),
    ("revocations_execute", 409, PROBLEM),
    ("revocations_reject", 200, JSON),
    ("revocations_reject", 404, PROBLEM),
    ("revocations_reject", 409, PROBLEM),
    ("revocations_cancel", 200, JSON),
    ("revocations_cancel", 404, PROBLEM),
    ("revocations_cancel", 409, PROBLEM),
    ("revocations_review", 200, JSON),
    ("revocations_review", 404, PROBLEM),
    ("revocations_review", 409, PROBLEM),
)
def revocations(client: Client, world: World) -> None:
    def request(**changes: Any) -> dict[str, str]:
        made = client("revocations_request", body={**REQUEST, **changes}, who=REQUESTER, expect=201)
        return {"id": made["id"]}

    missing = {"id": NO_ID}
    first = request()
    client("revocations_request", body={**REQUEST, "secret_name": MISSING}, who=REQUESTER, expect=404)
    client(
        "revocations_request", body={**REQUEST, "secret_name": AUDIT_KEY_SECRET}, who=REQUESTER, expect=409
    )
    assert client("revocations_get", route=first, who=READER, expect=200)["status"] == "pending"
    client("revocations_get", route=missing, who=READER, expect=404)
    client("revocations_approve", route=first, body={"comment": "go"}, who=APPROVER, expect=200)
    client("revocations_approve", route=first, body={}, who=APPROVER2, expect=409)  # approved already
    client("revocations_approve", route=missing, body={}, who=APPROVER, expect=404)
    done = client("revocations_execute", route=first, who=EXECUTOR, expect=200)
    conflict = client("revocations_execute", route=first, who=EXECUTOR, expect=409)
    assert conflict["revocation"]["result"] == done["result"]
    client("revocations_execute", route=missing, who=EXECUTOR, expect=404)

    second = request(secret_name=OTHER)
    client("revocations_reject", route=second, body={"comment": "no"}, who=APPROVER, expect=200)
    client("revocations_reject", route=second, body={"comment": "no"}, who=APPROVER, expect=409)
    client("revocations_reject", route=missing, body={"comment": "no"}, who=APPROVER, expect=404)
    third = request(secret_name=OTHER)
    client("revocations_cancel", route=third, body={}, who=REQUESTER, expect=200)
    client("revocations_cancel", route=third, body={}, who=REQUESTER, expect=409)
    client("revocations_cancel", route=missing, body={}, who=REQUESTER, expect=404)
    glass = {**REQUEST, "secret_name": OTHER, "severity": "critical", "break_glass": True}
    made = client("revocations_request", body=glass, who=BREAKER, expect=201)
    route = {"id": made["id"]}
    reviewed: dict[str, Any] = {"route": route, "body": {"comment": "justified"}, "who": APPROVER}
    assert client("revocations_review", expect=200, **reviewed)["reviewed_by"] == "bob"
    client("revocations_review", expect=409, **reviewed)  # no review due any more
    client("revocations_review", route=missing, body={"comment": "x"}, who=APPROVER, expect=404)
    listed = client("revocations_list", params={"limit": "2"}, who=READER, expect=200)
    assert len(listed["items"]) == 2 and listed["continuation"]
    # A row a storage writer rewrote fails its seal: 409 with its own problem type.
    stored = world.state_rows.get("revocation", third["id"])
    assert stored is not None
    world.state_rows.replace("revocation", third["id"], {**stored.state, "status": "approved"}, stored.etag)
    tampered = client("revocations_get", route=third, who=READER, expect=409)
    assert (
        tampered["type"] == "urn:secret-lifecycle:problem:state-tampered"
        and tampered["check"] == "mac mismatch"
    )


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(client: Client, use_container: Any, name: str) -> None:
    scenario, expected = SCENARIOS[name]
    world = World()
    use_container(world)
    scenario(client, world)
    assert client.answered == expected, "declare exactly what the scenario answers"


# -- coverage --------------------------------------------------------------------------------------------


def test_every_documented_answer_is_exercised() -> None:
    documented = {
        (op, int(status), media)
        for op, operation in OPERATIONS.items()
        for status, response in operation["responses"].items()
        for media in response.get("content", {})  # the host's limits have none: test_dev_host.py's business
    }
    exercised = {(op, CASES[case][0], PROBLEM) for op, case in MATRIX}
    for _, answered in SCENARIOS.values():
        exercised |= answered
    assert sorted(documented - exercised) == [], "documented but never answered in these tests"
    assert sorted(exercised - documented) == [], "answered but not documented"


def test_a_drifting_body_fails_the_check() -> None:
    """The check is not vacuous: an extra member, a missing one or a wrong type each fail."""
    good = {"rotation_id": "r1", "status": "queued"}
    for body in ({**good, "value": "s3cr3t"}, {"rotation_id": "r1"}, {**good, "status": 1}):
        response = func.HttpResponse(json.dumps(body), status_code=202, mimetype=JSON)
        with pytest.raises(pytest.fail.Exception):
            conform("secrets_rotate", response)
    with pytest.raises(AssertionError, match="the document lists"):
        conform("secrets_status", func.HttpResponse("{}", status_code=202, mimetype=JSON))
