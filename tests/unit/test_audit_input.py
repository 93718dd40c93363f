"""The audit services at the input boundary: continuation tokens decoded strictly, and findings never
reviewed by an actor they are about."""

from __future__ import annotations

import base64
import json

import pytest

from shared.domain.audit import Action, Actor, ActorType, Result
from shared.domain.errors import NotPermitted
from shared.domain.findings import StoredFinding
from shared.services.audit import (
    FINDING_ACTOR_CHARS,
    AuditUnavailable,
    InvalidCursor,
    decode_cursor,
    encode_cursor,
    finding_actors,
)
from tests.fakes import InMemoryFindings
from tests.world import World

OPERATOR = Actor("op-7", ActorType.USER, "203.0.113.9", "curl/8")


def _token(position: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def test_cursor_round_trips_every_position_a_page_can_end_on() -> None:
    for position in [
        ("2026-11-29T10:00:00.000000Z", "fleet:_service", 1),
        ("9999-12-31T23:59:59.999999Z", "127-0-0-1-8443:" + "a" * 127, 10**12 - 1),
        ("1000-01-01T00:00:00.123456Z", "v:db-password", 42),
    ]:
        assert decode_cursor(encode_cursor(position)) == position


@pytest.mark.parametrize(
    "token",
    [
        _token(["2" * 30_000, "fleet:_service", 1]),  # reached the table filter: 503
        base64.urlsafe_b64encode(b"[" * 50_000).decode(),  # RecursionError: 500
        "A" * 513,  # longer than any token this service issues
        _token(["2026-11-29T10:00:00Z", "fleet:_service", 1]),  # not the stored time format
        _token(["2026-11-29 10:00:00.000000Z", "fleet:_service", 1]),
        _token(["2026-1-9T10:00:00.000000Z", "fleet:_service", 1]),  # strptime would take it
        _token(["2026-11-29T10:00:00.000000Z", "Fleet:_service", 1]),  # chains are lower case
        _token(["2026-11-29T10:00:00.000000Z", "fleet", 1]),
        _token(["2026-11-29T10:00:00.000000Z", "fleet:a:b", 1]),
        _token(["2026-11-29T10:00:00.000000Z", "fleet:" + "a" * 128, 1]),
        _token(["2026-11-29T10:00:00.000000Z", "fleet:_service", 0]),
        _token(["2026-11-29T10:00:00.000000Z", "fleet:_service", 10**12]),
        _token(["2026-11-29T10:00:00.000000Z", "fleet:_service", True]),
        _token(["2026-11-29T10:00:00.000000Z", "fleet:_service", 1.0]),
        _token(["2026-11-29T10:00:00.000000Z", "fleet:_service", 1, 2]),
        _token({"2026-11-29T10:00:00.000000Z": 1, "fleet:_service": 2, "x": 3}),  # unpacked as keys
        _token(["2026-11-29T10:00:00.000000Z", "fleet:_service", 1]) + "==",  # padding: not as issued
        "  " + encode_cursor(("2026-11-29T10:00:00.000000Z", "fleet:_service", 1)),
        encode_cursor(("2026-11-29T10:00:00.000000Z", "fleet:_service", 1)).replace("W", "W%"),
        "",
        "é",
    ],
)
def test_cursor_tokens_are_validated_strictly(token: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(token)


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
