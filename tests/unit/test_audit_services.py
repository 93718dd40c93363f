"""Audit services over in-memory fakes: fail closed, query paging, summary, review. Verify, digests and
repair: test_audit_integrity.py."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from shared.domain.audit import Action, Actor, ActorType, AuditQuery, Result
from shared.domain.errors import Conflict, InvalidTransition, NotFound
from shared.domain.findings import StoredFinding
from shared.services.audit import (
    AuditUnavailable,
    InvalidCursor,
    decode_cursor,
)
from tests.fakes import InMemoryFindings
from tests.world import VAULT, World

OPERATOR = Actor("op-7", ActorType.USER, "203.0.113.9", "curl/8")


@pytest.fixture
def world() -> World:
    return World(findings=InMemoryFindings)


def test_record_chains_per_secret(world: World) -> None:
    a1 = world.trail.record(Action.ROTATION_STARTED, secret_name="db-password")
    b1 = world.trail.record(Action.ROTATED, secret_name="api-key", version="v2")
    a2 = world.trail.record(Action.ROTATED, secret_name="db-password", version="v9")
    assert (a1.seq, a2.seq, b1.seq) == (1, 2, 1)
    assert a2.prev_mac == a1.mac
    assert set(world.log.records) == {"fleet:db-password", "fleet:api-key"}


def test_record_fails_closed(world: World) -> None:
    world.log.available = False
    with pytest.raises(AuditUnavailable):
        world.trail.record(Action.ROTATED, secret_name="db-password")
    assert world.log.records == {}


def test_query_is_newest_first_and_pages(world: World) -> None:
    for i in range(7):
        world.clock.advance(timedelta(minutes=1))
        world.trail.record(
            Action.ROTATED if i % 2 else Action.ACCESS_DENIED, secret_name="db-password", version=f"v{i}"
        )
    seen: list[str] = []
    cursor = None
    while True:
        page = world.query_audit(AuditQuery(vault=VAULT, limit=3), cursor)
        seen += [item.version for item in page.items]
        cursor = page.continuation
        if cursor is None:
            break
    assert seen == [f"v{i}" for i in reversed(range(7))]
    only = world.query_audit(AuditQuery(vault=VAULT, action=Action.ROTATED, limit=50))
    assert [i.version for i in only.items] == ["v5", "v3", "v1"]
    assert only.items[0].details == {}
    assert only.continuation is None


def test_cursor_tokens_are_validated() -> None:
    for bad in ("%%%", "bm90IGpzb24", "WzEsMl0", "WyJhIiwiYiIsIjMiXQ"):
        with pytest.raises(InvalidCursor):
            decode_cursor(bad, AuditQuery(vault=VAULT))


def test_summary_counts_and_last_rotation(world: World) -> None:
    world.trail.record(Action.ROTATED, secret_name="db-password", version="old")
    world.clock.advance(timedelta(days=40))
    world.trail.record(Action.ROTATED, secret_name="db-password", version="v1")
    world.trail.record(
        Action.ROTATION_FAILED, secret_name="db-password", result=Result.FAILURE, error="HTTP 503"
    )
    world.clock.advance(timedelta(minutes=5))
    world.trail.record(Action.ROTATED, secret_name="db-password", version="v2")
    summary = world.summarize_audit(secret_name="db-password", days=30)
    assert summary["total"] == 3
    assert summary["by_action"] == {"ROTATED": {"success": 2}, "ROTATION_FAILED": {"failure": 1}}
    assert summary["last_rotation"]["version"] == "v2"
    assert summary["failures"]["count"] == 1
    assert summary["failures"]["latest"][0]["error"] == "HTTP 503"


def test_review_audits_first_and_changes_nothing_when_audit_is_down(world: World) -> None:
    findings = world.findings
    findings.claim(StoredFinding("a" * 32, "break_glass", world.clock.now()))
    world.log.available = False
    with pytest.raises(AuditUnavailable):
        world.review_finding("a" * 32, reviewer=OPERATOR, note="ok", correlation_id="c1")
    assert findings.rows["a" * 32].status == "open"

    world.log.available = True
    result = world.review_finding("a" * 32, reviewer=OPERATOR, note="ok", correlation_id="c1")
    assert result["status"] == "reviewed"
    assert findings.rows["a" * 32].reviewer == "op-7"
    intent, done = [e for e in world.log.events if e.action == Action.REVIEWED]
    assert (intent.result, done.result) == (Result.INTENT, Result.SUCCESS)
    assert intent.details["finding_id"] == done.details["finding_id"] == "a" * 32
    assert intent.actor == done.actor == OPERATOR
    with pytest.raises(InvalidTransition):
        world.review_finding("a" * 32, reviewer=OPERATOR, note=None, correlation_id="c2")
    assert len(world.records(Action.REVIEWED)) == 2  # a refused transition: none
    with pytest.raises(NotFound):
        world.review_finding("b" * 32, reviewer=OPERATOR, note=None, correlation_id="c3")


class LosesTheRace(InMemoryFindings):
    """A concurrent review commits between this review's read and its compare-and-swap."""

    def mark_reviewed(self, finding_id: str, reviewer: str, note: str | None, time: datetime) -> None:
        super().mark_reviewed(finding_id, "someone-else", None, time)
        raise Conflict(f"finding {finding_id} changed since it was read")


def test_a_review_that_loses_a_race_is_on_record_as_failed_never_as_done() -> None:
    world = World(findings=LosesTheRace)
    findings = world.findings
    findings.claim(StoredFinding("a" * 32, "break_glass", world.clock.now()))
    with pytest.raises(Conflict):
        world.review_finding("a" * 32, reviewer=OPERATOR, note="ok", correlation_id="c1")
    assert [e.result for e in world.records(Action.REVIEWED)] == [Result.INTENT, Result.FAILURE]
