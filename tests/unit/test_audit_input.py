"""The audit services at the input boundary: continuation tokens decoded strictly, and findings never
reviewed by an actor they are about."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from shared.domain.audit import Action, Actor, ActorType, AuditQuery, Result
from shared.domain.errors import NotPermitted
from shared.domain.findings import StoredFinding
from shared.services.audit import (
    FINDING_ACTOR_CHARS,
    AuditUnavailable,
    InvalidCursor,
    decode_cursor,
    encode_cursor,
    finding_actors,
    query_fingerprint,
)
from tests.fakes import InMemoryFindings
from tests.world import World

OPERATOR = Actor("op-7", ActorType.USER, "203.0.113.9", "curl/8")


QUERY = AuditQuery(vault="fleet", actor="op-7")
PRINT = query_fingerprint(QUERY)


def _token(body: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def test_cursor_round_trips_every_position_a_page_can_end_on() -> None:
    for position in [
        ("1!12!dDo5OTc5ODc4Mw--", "1!80!MDAwMDAwMDAwMDAwMDAwMDAwOmZsZWV0Ol9zZXJ2aWNlOjk5OTk5OTk5OTk5OQ--"),
        ("t:79739868", "999999999999:127-0-0-1-8443:" + "a" * 127 + ":999999999998"),
        ("a:" + "f" * 32 + ":79739868", "~" * 1024),
    ]:
        assert decode_cursor(encode_cursor(QUERY, position), QUERY) == position


def test_a_cursor_belongs_to_the_query_that_issued_it() -> None:
    token = encode_cursor(QUERY, ("t:79739868", "0001"))
    for other in (
        AuditQuery(vault="fleet"),
        AuditQuery(vault="fleet", actor="op-8"),
        AuditQuery(vault="fleet", actor="op-7", action=Action.ROTATED),
        AuditQuery(vault="other", actor="op-7"),
        AuditQuery(vault="fleet", actor="op-7", secret_name="db-password"),
        AuditQuery(vault="fleet", actor="op-7", since=datetime(2026, 12, 1, tzinfo=UTC)),
    ):
        with pytest.raises(InvalidCursor, match="another query"):
            decode_cursor(token, other)
    # The page size is not a filter: a caller may change it between pages.
    assert decode_cursor(token, AuditQuery(vault="fleet", actor="op-7", limit=7)) == ("t:79739868", "0001")


@pytest.mark.parametrize(
    "token",
    [
        _token([2, PRINT, "t:1", "x" * 30_000]),  # longer than a key
        base64.urlsafe_b64encode(b"[" * 50_000).decode(),  # RecursionError: 500
        "A" * 4097,  # longer than any token this service issues
        _token(["2026-11-29T10:00:00.000000Z", "fleet:_service", 1]),  # the form before the index
        _token([1, PRINT, "t:1", "r"]),  # another form
        _token([2.0, PRINT, "t:1", "r"]),
        _token([True, PRINT, "t:1", "r"]),
        _token([2, PRINT, "t:1"]),
        _token([2, PRINT, "t:1", "r", "x"]),
        _token([2, PRINT, "t:1", 7]),
        _token([2, PRINT, "", "r"]),
        _token([2, PRINT, "t/1", "r"]),  # characters no table key holds
        _token([2, PRINT, "t:1", "r#"]),
        _token([2, PRINT, "t:1", "r?"]),
        _token([2, PRINT, "t:1", "r\\x"]),
        _token([2, PRINT, "t:1", "r x"]),
        _token([2, PRINT, "t:1", "r\u00e9"]),
        _token({"2": 1, "t:1": 2, "r": 3, "x": 4}),  # unpacked as keys
        _token([2, PRINT, "t:1", "r"]) + "==",  # padding: not as issued
        "  " + encode_cursor(QUERY, ("t:1", "r")),
        encode_cursor(QUERY, ("t:1", "r")).replace("W", "W%"),
        "",
        "é",
    ],
)
def test_cursor_tokens_are_validated_strictly(token: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(token, QUERY)


@pytest.fixture
def world() -> World:
    return World(findings=InMemoryFindings)


def test_a_finding_is_not_reviewed_by_an_actor_it_is_about(world: World) -> None:
    findings = world.findings
    details = {"subject": "203.0.113.9", "actors": ["oid-x", OPERATOR.id]}
    findings.claim(StoredFinding("a" * 32, "access_denied_burst_ip", world.clock.now(), details=details))
    with pytest.raises(NotPermitted):
        world.review_finding("a" * 32, reviewer=OPERATOR, note="me? never", correlation_id="c1")
    assert findings.rows["a" * 32].status == "open"
    [refusal] = world.log.events
    assert (refusal.action, refusal.result, refusal.actor) == (Action.REVIEWED, Result.DENIED, OPERATOR)
    assert refusal.details["finding_id"] == "a" * 32
    assert "note" not in refusal.details

    world.log.available = False  # the refusal is on record or it is not answered (fail closed)
    with pytest.raises(AuditUnavailable):
        world.review_finding("a" * 32, reviewer=OPERATOR, note=None, correlation_id="c2")
    world.log.available = True

    colleague = Actor("oid-y", ActorType.USER)
    assert world.review_finding("a" * 32, reviewer=colleague, note=None, correlation_id="c3")
    assert findings.rows["a" * 32].reviewer == "oid-y"
    with pytest.raises(NotPermitted):  # still refused, not told it was reviewed already
        world.review_finding("a" * 32, reviewer=OPERATOR, note=None, correlation_id="c4")


def test_actors_are_compared_by_the_prefix_a_finding_keeps(world: World) -> None:
    findings = world.findings
    long_id = "u" * 200
    kept = {"actors": [long_id[:FINDING_ACTOR_CHARS]]}
    findings.claim(StoredFinding("a" * 32, "break_glass", world.clock.now(), details=kept))
    with pytest.raises(NotPermitted):
        world.review_finding(
            "a" * 32, reviewer=Actor(long_id, ActorType.USER), note=None, correlation_id=None
        )


def test_a_finding_stored_before_actors_were_listed_counts_its_subject(world: World) -> None:
    findings = world.findings
    legacy = {"subject": OPERATOR.id, "summary": "6 denied requests by op-7"}
    findings.claim(StoredFinding("a" * 32, "access_denied_burst_actor", world.clock.now(), details=legacy))
    with pytest.raises(NotPermitted):
        world.review_finding("a" * 32, reviewer=OPERATOR, note=None, correlation_id=None)
    assert finding_actors({}) == frozenset()
