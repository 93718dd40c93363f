"""Audit services over in-memory fakes: fail closed, query paging, summary, review. Verify, digests and
repair: test_audit_integrity.py."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from shared.domain.audit import Action, Actor, ActorType, AuditQuery, Result
from shared.domain.errors import Conflict, InvalidTransition, NotFound
from shared.domain.findings import StoredFinding
from shared.services.audit import (
    AuditTrail,
    AuditUnavailable,
    InvalidCursor,
    decode_cursor,
    query_audit,
    review_finding,
    summarize_audit,
)
from tests.fakes import FixedClock, InMemoryAuditLog, InMemoryFindings
from tests.unit.world import VAULT

OPERATOR = Actor("op-7", ActorType.USER, "203.0.113.9", "curl/8")


def test_record_chains_per_secret(trail: AuditTrail, log: InMemoryAuditLog) -> None:
    a1 = trail.record(Action.ROTATION_STARTED, secret_name="db-password")
    b1 = trail.record(Action.ROTATED, secret_name="api-key", version="v2")
    a2 = trail.record(Action.ROTATED, secret_name="db-password", version="v9")
    assert (a1.seq, a2.seq, b1.seq) == (1, 2, 1)
    assert a2.prev_mac == a1.mac
    assert set(log.records) == {"fleet:db-password", "fleet:api-key"}


def test_record_fails_closed(trail: AuditTrail, log: InMemoryAuditLog) -> None:
    log.available = False
    with pytest.raises(AuditUnavailable):
        trail.record(Action.ROTATED, secret_name="db-password")
    assert log.records == {}


def test_query_is_newest_first_and_pages(trail: AuditTrail, log: InMemoryAuditLog, clock: FixedClock) -> None:
    for i in range(7):
        clock.advance(timedelta(minutes=1))
        trail.record(
            Action.ROTATED if i % 2 else Action.ACCESS_DENIED, secret_name="db-password", version=f"v{i}"
        )
    seen: list[str] = []
    cursor = None
    while True:
        page = query_audit(
            log, AuditQuery(vault=VAULT, limit=3, before=decode_cursor(cursor) if cursor else None)
        )
        seen += [item["version"] for item in page.items]
        cursor = page.continuation
        if cursor is None:
            break
    assert seen == [f"v{i}" for i in reversed(range(7))]
    only = query_audit(log, AuditQuery(vault=VAULT, action=Action.ROTATED, limit=50))
    assert [i["version"] for i in only.items] == ["v5", "v3", "v1"]
    assert only.items[0]["details"] == {}
    assert only.continuation is None


def test_cursor_tokens_are_validated() -> None:
    for bad in ("%%%", "bm90IGpzb24", "WzEsMl0", "WyJhIiwiYiIsIjMiXQ"):
        with pytest.raises(InvalidCursor):
            decode_cursor(bad)


def test_summary_counts_and_last_rotation(
    trail: AuditTrail, log: InMemoryAuditLog, clock: FixedClock
) -> None:
    trail.record(Action.ROTATED, secret_name="db-password", version="old")
    clock.advance(timedelta(days=40))
    trail.record(Action.ROTATED, secret_name="db-password", version="v1")
    trail.record(Action.ROTATION_FAILED, secret_name="db-password", result=Result.FAILURE, error="HTTP 503")
    clock.advance(timedelta(minutes=5))
    trail.record(Action.ROTATED, secret_name="db-password", version="v2")
    summary = summarize_audit(log, clock, vault=VAULT, secret_name="db-password", days=30)
    assert summary["total"] == 3
    assert summary["by_action"] == {"ROTATED": {"success": 2}, "ROTATION_FAILED": {"failure": 1}}
    assert summary["last_rotation"]["version"] == "v2"
    assert summary["failures"]["count"] == 1
    assert summary["failures"]["latest"][0]["error"] == "HTTP 503"


def test_review_audits_first_and_changes_nothing_when_audit_is_down(
    trail: AuditTrail, log: InMemoryAuditLog, clock: FixedClock
) -> None:
    findings = InMemoryFindings()
    findings.claim(StoredFinding("a" * 32, "break_glass", clock.now()))
    log.available = False
    with pytest.raises(AuditUnavailable):
        review_finding(findings, trail, "a" * 32, reviewer=OPERATOR, note="ok", correlation_id="c1")
    assert findings.rows["a" * 32].status == "open"

    log.available = True
    result = review_finding(findings, trail, "a" * 32, reviewer=OPERATOR, note="ok", correlation_id="c1")
    assert result["status"] == "reviewed"
    assert findings.rows["a" * 32].reviewer == "op-7"
    intent, done = [e for e in log.events if e.action == Action.REVIEWED]
    assert (intent.result, done.result) == (Result.INTENT, Result.SUCCESS)
    assert intent.details["finding_id"] == done.details["finding_id"] == "a" * 32
    assert intent.actor == done.actor == OPERATOR
    with pytest.raises(InvalidTransition):
        review_finding(findings, trail, "a" * 32, reviewer=OPERATOR, note=None, correlation_id="c2")
    assert len([e for e in log.events if e.action == Action.REVIEWED]) == 2  # a refused transition: none
    with pytest.raises(NotFound):
        review_finding(findings, trail, "b" * 32, reviewer=OPERATOR, note=None, correlation_id="c3")


class LosesTheRace(InMemoryFindings):
    """A concurrent review commits between this review's read and its compare-and-swap."""

    def mark_reviewed(self, finding_id: str, reviewer: str, note: str | None, time: datetime) -> None:
        super().mark_reviewed(finding_id, "someone-else", None, time)
        raise Conflict(f"finding {finding_id} changed since it was read")


def test_a_review_that_loses_a_race_is_on_record_as_failed_never_as_done(
    trail: AuditTrail, log: InMemoryAuditLog, clock: FixedClock
) -> None:
    findings = LosesTheRace()
    findings.claim(StoredFinding("a" * 32, "break_glass", clock.now()))
    with pytest.raises(Conflict):
        review_finding(findings, trail, "a" * 32, reviewer=OPERATOR, note="ok", correlation_id="c1")
    assert [e.result for e in log.events if e.action == Action.REVIEWED] == [Result.INTENT, Result.FAILURE]
