"""The audit functions through app.get_functions(), with real HttpRequest/TimerRequest and fake ports."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from shared.domain.audit import Action, Actor, ActorType, AuditQuery, Result
from shared.domain.findings import StoredFinding
from shared.domain.identity import Role, encode_principal
from shared.services.audit import encode_cursor
from tests.functions.conftest import LOCAL_ENV, FakeContainer

READER = encode_principal("oid-auditor", ["Secrets.Audit.Read"], name="ana")
REVIEWER = encode_principal("oid-reviewer", ["Secrets.Audit.Review"], name="rita")
NO_ROLE = encode_principal("oid-nobody", [], name="bob")
JSON = {"content-type": "application/json"}


class Ctx:
    invocation_id = "inv-123"
    function_name = "test"


def call(
    functions: dict[str, Any],
    name: str,
    *,
    method: str = "GET",
    params: dict[str, str] | None = None,
    principal: str | None = READER,
    route_params: dict[str, str] | None = None,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], func.HttpResponse]:
    all_headers = {"user-agent": "pytest", "x-forwarded-for": "198.51.100.7:5123", **(headers or {})}
    if principal is not None:
        all_headers["x-ms-client-principal"] = principal
    request = func.HttpRequest(
        method, "http://localhost/api/audit", headers=all_headers, params=params or {},
        route_params=route_params or {}, body=body,
    )  # fmt: skip
    response: func.HttpResponse = functions[name].get_user_function()(request, Ctx())
    return response.status_code, json.loads(response.get_body() or b"{}"), response


@pytest.fixture
def fake(use_container: Any) -> FakeContainer:
    container: FakeContainer = use_container(FakeContainer())
    return container


def denied(fake: FakeContainer) -> list[Any]:
    return [e for e in fake.audit_log.events if e.action == Action.ACCESS_DENIED]


def test_query_needs_a_principal_and_audits_the_refusal(
    functions: dict[str, Any], fake: FakeContainer
) -> None:
    status, _body, response = call(
        functions, "audit_query", principal=None, params={"secret_name": "db-password"}
    )
    assert status == 401
    assert response.mimetype == "application/problem+json"
    assert response.headers.get("WWW-Authenticate") == "Bearer"
    [event] = denied(fake)
    assert event.result == Result.DENIED
    assert event.actor.id == "anonymous"
    assert event.actor.ip == "198.51.100.7"
    assert event.secret_name is None  # refusals go to the service chain: callers cannot create chains
    assert event.details["secret_name"] == "db-password"
    assert event.correlation_id == "inv-123"


def test_forged_header_is_refused_without_platform_auth(
    functions: dict[str, Any], use_container: Any
) -> None:
    fake = use_container(
        FakeContainer({k: v for k, v in LOCAL_ENV.items() if k != "ALLOW_UNVERIFIED_PRINCIPAL"})
    )
    status, body, _ = call(functions, "audit_query")
    assert status == 401
    assert "not verified" in body["detail"]
    assert len(denied(fake)) == 1


def test_platform_vouched_header_is_trusted_in_azure(functions: dict[str, Any], use_container: Any) -> None:
    env = {**LOCAL_ENV, "WEBSITE_AUTH_ENABLED": "True", "WEBSITE_INSTANCE_ID": "i-1"}
    del env["ALLOW_UNVERIFIED_PRINCIPAL"]
    use_container(FakeContainer(env))
    assert call(functions, "audit_query")[0] == 200


@pytest.mark.parametrize(
    "env",
    [
        {**LOCAL_ENV, "WEBSITE_INSTANCE_ID": "i-1"},  # in Azure
        {k: v for k, v in LOCAL_ENV.items() if k != "AZURE_FUNCTIONS_ENVIRONMENT"},  # a container, a server
        {**LOCAL_ENV, "AZURE_FUNCTIONS_ENVIRONMENT": "Production"},
    ],
)
def test_local_switch_is_refused_off_a_development_host(
    functions: dict[str, Any], use_container: Any, env: dict[str, str]
) -> None:
    fake = use_container(FakeContainer(env))
    status, body, _ = call(functions, "audit_query")
    assert status == 503
    assert "ALLOW_UNVERIFIED_PRINCIPAL" in body["detail"]
    assert fake.audit_log.events == []


def test_missing_role_is_403_and_audited(functions: dict[str, Any], fake: FakeContainer) -> None:
    status, body, _ = call(functions, "audit_verify", principal=NO_ROLE)
    assert status == 403
    assert "Secrets.Audit.Read" in body["detail"]
    [event] = denied(fake)
    assert event.actor.id == "oid-nobody"
    assert event.details["required_role"] == "Secrets.Audit.Read"


#: A token of the form before the index: (time, chain, seq).
OLD_FORM = base64.urlsafe_b64encode(b'["2026-11-29T10:00:00.000000Z","fleet:_service",1]').decode()


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-11-29T08:00:00"}, "since"),  # no time zone
        ({"until": "2026-13-01"}, "until"),
        ({"since": "2026-11-29", "until": "2026-11-28"}, "until"),
        ({"action": "ROTATE_EVERYTHING"}, "action"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"secret_name": "bad name!"}, "secret_name"),
        ({"continuation": "%%%"}, "continuation"),
        ({"sort": "asc"}, "sort"),
        # Before year 1000 (the document's pattern): "0001-01-01T00:00:00+14:00" overflowed into a 500, and
        # year 999 is stored as "999-...", which sorts after "2026-...".
        ({"since": "0001-01-01T00:00:00+14:00"}, "since"),
        ({"since": "0999-12-31"}, "since"),
        # A deeply nested token (RecursionError, 500), a 30,000-character key (too long for the store, 503
        # "nothing was changed"), a token of another query and one of the form before the index.
        ({"continuation": base64.urlsafe_b64encode(b"[" * 50_000).decode()}, "continuation"),
        ({"continuation": encode_cursor(AuditQuery(vault="fleet"), ("t:1", "2" * 30_000))}, "continuation"),
        ({"continuation": encode_cursor(AuditQuery(vault="other"), ("t:1", "r"))}, "continuation"),
        (
            {
                "continuation": base64.urlsafe_b64encode(
                    json.dumps(["2026-11-29T10:00:00.000000Z", "fleet:_service", 1]).encode()
                )
                .decode()
                .rstrip("=")
            },
            "continuation",
        ),
    ],
)
def test_bad_filters_are_400_naming_the_parameter(
    functions: dict[str, Any], fake: FakeContainer, params: dict[str, str], parameter: str
) -> None:
    status, body, response = call(functions, "audit_query", params=params)
    assert status == 400, body
    assert body["parameter"] == parameter
    assert response.mimetype == "application/problem+json"


def test_query_summary_verify(functions: dict[str, Any], fake: FakeContainer) -> None:
    trail = fake.audit_trail
    trail.record(Action.ROTATED, secret_name="db-password", version="v1", details={"step": "promote"})
    fake.clock.advance(timedelta(minutes=1))
    trail.record(Action.ROTATION_FAILED, secret_name="api-key", result=Result.FAILURE, error="HTTP 503")

    status, body, _ = call(functions, "audit_query", params={"limit": "1"})
    assert status == 200
    assert [i["action"] for i in body["items"]] == ["ROTATION_FAILED"]
    status, body, _ = call(
        functions, "audit_query", params={"limit": "1", "continuation": body["continuation"]}
    )
    assert [i["action"] for i in body["items"]] == ["ROTATED"]
    assert body["items"][0]["details"] == {"step": "promote"}
    assert body["continuation"] is None

    status, body, _ = call(functions, "audit_summary", params={"secret_name": "api-key", "days": "7"})
    assert status == 200
    assert body["by_action"] == {"ROTATION_FAILED": {"failure": 1}}
    assert call(functions, "audit_summary", params={"days": "0"})[1]["parameter"] == "days"

    status, body, _ = call(functions, "audit_verify")
    assert status == 200
    assert body["status"] == "ok"
    assert body["records"] == 2
    fake.audit_log.records["fleet:api-key"].clear()
    functions["audit_digest"].get_user_function()(TimerRequest())  # a digest does not forgive the cut
    fake.audit_log.records["fleet:db-password"].clear()
    # The answer is the last full verification (the daily timer's, or the last fresh one) ...
    status, body, _ = call(functions, "audit_verify")
    assert (body["status"], body["records"]) == ("ok", 2) and body["verified_at"]
    # ... unless a fresh one is asked for; that one is then the answer.
    for params in ({"fresh": "true"}, {}):
        status, body, _ = call(functions, "audit_verify", params=params)
        assert body["status"] == "broken"
        assert [(b["chain"], b["kind"]) for b in body["breaks"]] == [
            ("fleet:api-key", "truncated"),
            ("fleet:db-password", "truncated"),
        ]
    assert call(functions, "audit_verify", params={"fresh": "maybe"})[1]["parameter"] == "fresh"


def review(
    functions: dict[str, Any],
    finding: str,
    *,
    principal: str | None = REVIEWER,
    body: bytes = b'{"note":"ok"}',
    headers: dict[str, str] | None = JSON,
    params: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], func.HttpResponse]:
    return call(
        functions,
        "audit_review_finding",
        method="POST",
        route_params={"finding_id": finding},
        principal=principal,
        body=body,
        headers=headers,
        params=params,
    )


def test_review_fails_closed_when_the_audit_store_is_down(
    functions: dict[str, Any], fake: FakeContainer
) -> None:
    finding = "f" * 32
    fake.findings.claim(StoredFinding(finding, "break_glass", fake.clock.now()))

    fake.audit_log.available = False
    status, body, _ = review(functions, finding)
    assert status == 503
    assert "nothing was changed" in body["detail"]
    assert fake.findings.get(finding).status == "open"

    fake.audit_log.available = True
    status, body, _ = review(functions, finding)
    assert status == 200
    assert body["status"] == "reviewed"
    assert fake.findings.get(finding).reviewer == "oid-reviewer"
    assert review(functions, finding, body=b"{}")[0] == 409  # reviewed already
    status, problem, _ = review(functions, finding, body=b"")  # no body: {} at least
    assert (status, problem["parameter"]) == (400, "body")
    assert review(functions, "e" * 32)[0] == 404
    bad = review(functions, "nope")
    assert (bad[0], bad[1]["parameter"]) == (400, "finding_id")
    extra = review(functions, "e" * 32, body=b'{"x":1}')
    assert (extra[0], extra[1]["parameter"]) == (400, "x")


def test_suspicious_scan_reports_once_and_notifies(functions: dict[str, Any], fake: FakeContainer) -> None:
    intruder = Actor("oid-intruder", ActorType.USER, "203.0.113.50", "python-requests")
    for _ in range(6):
        fake.clock.advance(timedelta(seconds=20))
        fake.audit_trail.record(Action.ACCESS_DENIED, result=Result.DENIED, actor=intruder)
    fake.clock.advance(timedelta(seconds=20))
    fake.audit_trail.record(Action.BREAK_GLASS, secret_name="db-password", actor=intruder)
    scan = functions["suspicious_activity_scan"].get_user_function()
    scan(TimerRequest(), Ctx())
    found = [e for e in fake.audit_log.events if e.action == Action.SUSPICIOUS_ACTIVITY]
    # Six denials and a break-glass also lift the intruder's risk score (6 x 1 + 5) past 10.
    rules = sorted(e.details["rule"] for e in found)
    assert rules == ["access_denied_burst_actor", "actor_risk", "break_glass"]
    risk = next(e.details for e in found if e.details["rule"] == "actor_risk")
    assert (risk["score"], risk["subject"], risk["actors"]) == (11, "oid-intruder", ["oid-intruder"])
    assert len(fake.publisher.sent) == 3
    scan(TimerRequest(), Ctx())
    assert len([e for e in fake.audit_log.events if e.action == Action.SUSPICIOUS_ACTIVITY]) == 3
    assert len(fake.publisher.sent) == 3


def test_scan_fails_the_invocation_and_retries_notifications(
    functions: dict[str, Any], fake: FakeContainer
) -> None:
    fake.audit_trail.record(Action.BREAK_GLASS, secret_name="db-password")
    fake.publisher.available = False
    scan = functions["suspicious_activity_scan"].get_user_function()
    with pytest.raises(RuntimeError, match="incomplete"):
        scan(TimerRequest(), Ctx())
    assert fake.publisher.sent == []
    fake.publisher.available = True
    scan(TimerRequest(), Ctx())
    assert [n.data["rule"] for n in fake.publisher.sent] == ["break_glass"]


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "text/plain"},  # a CORS "simple" request: any page could send it cross-site
        {"content-type": "application/x-www-form-urlencoded"},
        {"content-type": "multipart/form-data; boundary=x"},
        {"content-type": "application/jsonp"},
        {"content-type": ""},
        {},  # no Content-Type at all
    ],
)
def test_review_needs_a_json_content_type(
    functions: dict[str, Any], fake: FakeContainer, headers: dict[str, str]
) -> None:
    finding = "f" * 32
    fake.findings.claim(StoredFinding(finding, "break_glass", fake.clock.now()))
    status, body, response = review(functions, finding, headers=headers)
    assert status == 415, body
    assert response.mimetype == "application/problem+json"
    assert "application/json" in body["detail"]
    assert fake.findings.get(finding).status == "open"
    assert [e for e in fake.audit_log.events if e.action == Action.REVIEWED] == []


@pytest.mark.parametrize(
    "content_type", ["application/json", "Application/JSON; charset=UTF-8", " application/json ;x=y"]
)
def test_review_accepts_json_with_parameters(
    functions: dict[str, Any], fake: FakeContainer, content_type: str
) -> None:
    finding = "f" * 32
    fake.findings.claim(StoredFinding(finding, "break_glass", fake.clock.now()))
    assert review(functions, finding, headers={"Content-Type": content_type})[0] == 200


def test_review_refuses_query_parameters(functions: dict[str, Any], fake: FakeContainer) -> None:
    finding = "f" * 32
    fake.findings.claim(StoredFinding(finding, "break_glass", fake.clock.now()))
    status, body, _ = review(functions, finding, params={"note": "via the url"})
    assert (status, body["parameter"]) == (400, "note")
    assert fake.findings.get(finding).status == "open"


def test_review_needs_the_review_role_not_the_read_role(
    functions: dict[str, Any], fake: FakeContainer
) -> None:
    finding = "f" * 32
    fake.findings.claim(StoredFinding(finding, "break_glass", fake.clock.now()))
    status, body, _ = review(functions, finding, principal=READER)
    assert status == 403
    assert "Secrets.Audit.Review" in body["detail"]
    [event] = denied(fake)
    assert event.details["required_role"] == "Secrets.Audit.Review"
    assert fake.findings.get(finding).status == "open"
    assert call(functions, "audit_query", principal=REVIEWER)[0] == 403  # and review does not imply read


def test_nobody_reviews_a_finding_about_themselves(functions: dict[str, Any], fake: FakeContainer) -> None:
    # The finding comes from the scan itself: break-glass by the very caller who then tries to review it.
    actor = Actor("oid-reviewer", ActorType.USER, "203.0.113.50", "python-requests")
    fake.audit_trail.record(Action.BREAK_GLASS, secret_name="db-password", actor=actor)
    functions["suspicious_activity_scan"].get_user_function()(TimerRequest(), Ctx())
    [key] = fake.finding_rows.list("finding")
    finding = fake.findings.get(key)
    assert finding is not None
    assert finding.details["actors"] == ["oid-reviewer"]

    status, body, response = review(functions, finding.id)
    assert status == 403, body
    assert response.mimetype == "application/problem+json"
    assert "someone else" in body["detail"]
    assert fake.findings.get(finding.id).status == "open"
    [refusal] = [e for e in fake.audit_log.events if e.action == Action.REVIEWED]
    assert refusal.result == Result.DENIED
    assert refusal.actor.id == "oid-reviewer"
    assert refusal.details["finding_id"] == finding.id

    other = encode_principal("oid-colleague", ["Secrets.Audit.Review"], name="carl")
    assert review(functions, finding.id, principal=other)[0] == 200
    assert fake.findings.get(finding.id).reviewer == "oid-colleague"


def test_an_unverified_identity_is_kept_in_the_refusal_but_not_trusted(
    functions: dict[str, Any], use_container: Any
) -> None:
    fake = use_container(
        FakeContainer({k: v for k, v in LOCAL_ENV.items() if k != "ALLOW_UNVERIFIED_PRINCIPAL"})
    )
    assert call(functions, "audit_query")[0] == 401
    [event] = denied(fake)
    assert event.actor.id == "anonymous"  # a forged header never names the actor
    assert event.details["claimed"] == {"id": "oid-auditor", "name": "ana", "verified": False}

    long_claim = encode_principal("o" * 5000, [], name="n" * 5000)
    assert call(functions, "audit_query", principal=long_claim)[0] == 401
    claimed = denied(fake)[-1].details["claimed"]
    assert (len(claimed["id"]), len(claimed["name"]), claimed["verified"]) == (128, 128, False)


@pytest.mark.parametrize(
    "header",
    [
        "not base64!",
        base64.b64encode(b"[" * 10_000).decode(),  # nested past the recursion limit: was a 500
        base64.b64encode(json.dumps({"name_typ": ["x"], "claims": []}).encode()).decode(),  # was a 500
    ],
)
def test_a_malformed_identity_is_401_with_an_unreadable_claim(
    functions: dict[str, Any], fake: FakeContainer, header: str
) -> None:
    status, _body, _ = call(functions, "audit_query", principal=header)
    assert status == 401
    [event] = denied(fake)
    assert event.actor.id == "anonymous"
    assert event.details["claimed"] == {"id": None, "name": None, "verified": False}


def test_a_refusal_without_a_header_claims_nothing(functions: dict[str, Any], fake: FakeContainer) -> None:
    assert call(functions, "audit_query", principal=None)[0] == 401
    assert "claimed" not in denied(fake)[0].details


def test_an_actors_risk_is_for_audit_readers_only(functions: dict[str, Any], fake: FakeContainer) -> None:
    intruder = Actor("oid-intruder", ActorType.USER, "203.0.113.50", "python-requests")
    for _ in range(3):
        fake.clock.advance(timedelta(seconds=20))
        fake.audit_trail.record(Action.ACCESS_DENIED, result=Result.DENIED, actor=intruder)
    route = {"actor_id": "oid-intruder"}
    status, body, _ = call(functions, "audit_actor", route_params=route, params={"limit": "2"})
    assert status == 200, body
    assert (body["actor"], body["score"], body["by_signal"]) == ("oid-intruder", 3, {"denied": 3})
    assert len(body["recent"]["items"]) == 2 and all(s["weight"] == 1 for s in body["signals"])
    # Every other role is refused (403, on record); no principal is 401.
    others = [role.value for role in Role if role != Role.AUDIT_READ]
    for role in others:
        who = encode_principal(f"oid-{role}", [role])
        assert call(functions, "audit_actor", route_params=route, principal=who)[0] == 403, role
    assert call(functions, "audit_actor", route_params=route, principal=None)[0] == 401
    assert len(denied(fake)) == 3 + len(others) + 1  # the intruder's three, then each refusal
    status, body, _ = call(functions, "audit_actor", route_params={"actor_id": "x" * 257})
    assert (status, body["parameter"]) == (400, "actor_id")
    for nobody in ("oid\u200bx", " "):  # refused wherever an identity is recorded: nobody's id (404)
        assert call(functions, "audit_actor", route_params={"actor_id": nobody})[0] == 404, nobody
    assert (
        call(functions, "audit_actor", route_params=route, params={"limit": "101"})[1]["parameter"] == "limit"
    )


def test_the_compliance_report_is_for_audit_readers_as_json_or_html(
    functions: dict[str, Any], fake: FakeContainer
) -> None:
    fake.audit_trail.record(
        Action.ACCESS_DENIED, result=Result.DENIED, actor=Actor("<b>eve</b>", ActorType.USER, "203.0.113.9")
    )
    fake.clock.advance(timedelta(seconds=1))  # the period ends now, exclusive
    params = {"from": "2000-01-01", "to": "2099-01-01"}  # refused: longer than a year
    assert call(functions, "compliance_report", params=params)[1]["parameter"] == "from"
    status, body, response = call(functions, "compliance_report")
    assert status == 200 and response.mimetype == "application/json", body
    assert body["summary"]["denials"] == 1 and body["denials"][0]["actor"] == "<b>eve</b>"
    assert body["period"]["vaults"] and set(body) >= {"secrets", "rotations", "revocations", "integrity"}
    browser = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    request = func.HttpRequest(
        "GET", "http://localhost/api/compliance/report", params={},
        headers={"x-ms-client-principal": READER, "user-agent": "pytest", **browser}, body=b"",
    )  # fmt: skip
    page: func.HttpResponse = functions["compliance_report"].get_user_function()(request, Ctx())
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    text = page.get_body().decode()
    assert "&lt;b&gt;eve&lt;/b&gt;" in text and "<b>eve</b>" not in text
    refused = [({"from": "2026-12-01", "to": "2026-11-01"}, "to"), ({"when": "x"}, "when"),
               ({"from": "2099-01-01", "to": "2099-02-01"}, "from"), ({"to": "yesterday"}, "to")]  # fmt: skip
    for bad, parameter in refused:
        assert call(functions, "compliance_report", params=bad)[1]["parameter"] == parameter, bad
    for role in (r.value for r in Role if r != Role.AUDIT_READ):
        who = encode_principal(f"oid-{role}", [role])
        assert call(functions, "compliance_report", principal=who)[0] == 403, role
    assert call(functions, "compliance_report", principal=None)[0] == 401
