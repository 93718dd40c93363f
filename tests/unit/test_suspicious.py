"""Suspicious-activity rules and the scan's report-once behaviour, over in-memory fakes."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import pytest

from shared.config import ConfigurationError, Settings
from shared.domain.audit import MAX_DETAILS_BYTES, Action, Actor, ActorType, AuditEvent, AuditRecord, Result
from shared.domain.scan_rules import ScanRules
from shared.services.audit import FINDING_ACTOR_CHARS, FINDING_MAX_ACTORS
from shared.services.suspicious import find_suspicious
from tests.fakes import InMemoryFindings
from tests.world import World

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # a Wednesday
RULES = ScanRules()


def ev(
    action: Action, minute: float, actor: str = "oid-a", ip: str | None = "198.51.100.1", **kw: object
) -> AuditEvent:
    return AuditEvent(
        action=action,
        vault="fleet",
        time=T0 + timedelta(minutes=minute),
        actor=Actor(actor, ActorType.USER, ip),
        **kw,  # type: ignore[arg-type]
    )


def rules_of(events: list[AuditEvent], rules: ScanRules = RULES) -> list[str]:
    return sorted(f.rule for f in find_suspicious(events, rules))


def test_denied_burst_by_actor_needs_the_threshold_within_the_window() -> None:
    four = [ev(Action.ACCESS_DENIED, m, ip=None) for m in (0, 1, 2, 3)]
    assert rules_of(four) == []
    assert rules_of([*four, ev(Action.ACCESS_DENIED, 14, ip=None)]) == ["access_denied_burst_actor"]
    spread = [ev(Action.ACCESS_DENIED, m * 10, ip=None) for m in range(6)]  # 6 in 50 minutes
    assert rules_of(spread) == []


def test_anonymous_bursts_are_caught_by_ip() -> None:
    events = [ev(Action.ACCESS_DENIED, m / 2, actor="anonymous", ip="203.0.113.9") for m in range(10)]
    assert rules_of(events) == ["access_denied_burst_ip"]


def test_repeated_rotation_failures_of_one_secret() -> None:
    fails = [
        ev(Action.ROTATION_FAILED, h * 60, secret_name="db-password", result=Result.FAILURE) for h in range(3)
    ]
    [finding] = find_suspicious(fails, RULES)
    assert finding.rule == "repeated_rotation_failures"
    assert finding.secret_name == "db-password"
    other = [ev(Action.ROTATION_FAILED, h * 60, secret_name=f"s{h}", result=Result.FAILURE) for h in range(3)]
    assert rules_of(other) == []


def test_revocation_request_burst_and_break_glass() -> None:
    requests = [ev(Action.REVOCATION_REQUESTED, m * 5, secret_name=f"s{m}") for m in range(3)]
    assert rules_of(requests) == ["revocation_request_burst"]
    assert rules_of([ev(Action.BREAK_GLASS, 0)]) == ["break_glass"]


@pytest.mark.parametrize(
    ("when", "suspicious"),
    [
        (datetime(2026, 11, 25, 10, 0, tzinfo=UTC), False),  # Wednesday 10:00
        (datetime(2026, 11, 25, 6, 59, tzinfo=UTC), True),  # before 07:00
        (datetime(2026, 11, 25, 19, 0, tzinfo=UTC), True),  # end is exclusive
        (datetime(2026, 11, 28, 12, 0, tzinfo=UTC), True),  # Saturday
    ],
)
def test_approvals_outside_working_hours(when: datetime, suspicious: bool) -> None:
    event = AuditEvent(
        action=Action.REVOCATION_APPROVED, vault="fleet", time=when, actor=Actor("oid-b", ActorType.USER)
    )
    assert rules_of([event]) == (["approval_outside_working_hours"] if suspicious else [])


def test_working_hours_follow_the_configured_time_zone() -> None:
    rules = Settings({"AUDIT_TIMEZONE": "America/New_York"}).scan_rules
    nine_utc = AuditEvent(
        action=Action.REVOCATION_APPROVED, vault="fleet", time=datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    )  # 04:00 in New York
    assert rules_of([nine_utc], rules) == ["approval_outside_working_hours"]


def test_scan_settings_are_validated() -> None:
    rules = Settings(
        {
            "AUDIT_WORKING_HOURS": "08:30-17:00",
            "AUDIT_WORKING_DAYS": "Mon-Thu,Sat",
            "AUDIT_SCAN_DENIED_PER_IP": "20",
        }
    ).scan_rules
    assert (rules.working_start, rules.working_end) == (time(8, 30), time(17, 0))
    assert rules.working_days == frozenset({0, 1, 2, 3, 5})
    assert rules.denied_per_ip == 20
    for name, value in [
        ("AUDIT_WORKING_HOURS", "17:00-08:00"),
        ("AUDIT_WORKING_HOURS", "nine to five"),
        ("AUDIT_WORKING_DAYS", "Fri-Mon"),
        ("AUDIT_WORKING_DAYS", "Funday"),
        ("AUDIT_TIMEZONE", "Mars/Olympus"),
        ("AUDIT_SCAN_WINDOW_MINUTES", "0"),
        ("AUDIT_SCAN_DENIED_PER_ACTOR", "-1"),
    ]:
        with pytest.raises(ConfigurationError) as err:
            _ = Settings({name: value}).scan_rules
        assert err.value.setting == name


def test_the_scan_reports_each_finding_once_across_overlapping_runs() -> None:
    world = World(now=T0, findings=InMemoryFindings)
    for _m in range(6):
        world.trail.record(Action.ACCESS_DENIED, result=Result.DENIED, actor=Actor("oid-x", ActorType.USER))
        world.clock.advance(timedelta(minutes=1))
    first = world.scan(RULES)
    world.clock.advance(timedelta(minutes=15))
    second = world.scan(RULES)
    assert (len(first.findings), len(second.findings), second.already_reported) == (1, 0, 1)
    assert len([e for e in world.log.events if e.action == Action.SUSPICIOUS_ACTIVITY]) == 1
    assert len(world.publisher.sent) == 1
    # The event id is the finding id: consumers can dedupe.
    assert world.publisher.sent[0].id == first.findings[0]


def test_a_finding_that_cannot_be_audited_is_neither_lost_nor_announced() -> None:
    world = World(now=T0, findings=InMemoryFindings)
    world.trail.record(Action.BREAK_GLASS, secret_name="db-password")
    world.log.available = False
    report = world.scan(RULES)
    assert not report.ok
    [pending] = world.findings.rows.values()
    assert (pending.audited, pending.notified) == (False, False)
    assert world.publisher.sent == []  # nothing announced before it is on record
    world.log.available = True
    report = world.scan(RULES)
    assert report.ok
    assert (report.findings, report.already_reported, report.audited, report.notified) == ([], 1, 1, 1)
    assert len([e for e in world.log.events if e.action == Action.SUSPICIOUS_ACTIVITY]) == 1
    assert len(world.publisher.sent) == 1


def test_an_interrupted_scan_does_not_write_the_record_twice() -> None:
    world = World(now=T0, findings=InMemoryFindings)
    world.trail.record(Action.BREAK_GLASS, secret_name="db-password")
    world.scan(RULES)
    [finding] = world.findings.rows.values()
    # Crashed before marking it audited and notified:
    world.findings.rows[finding.id] = replace(finding, audited=False, notified=False)
    world.scan(RULES)
    assert len([e for e in world.log.events if e.action == Action.SUSPICIOUS_ACTIVITY]) == 1
    assert world.findings.rows[finding.id].audited
    # At least once; the event id (the finding id) lets consumers dedupe.
    assert len(world.publisher.sent) == 2
    assert world.publisher.sent[0].id == world.publisher.sent[1].id


def test_a_burst_is_not_reported_again_when_its_start_ages_out_of_the_lookback() -> None:
    world = World(now=T0 + timedelta(minutes=14), findings=InMemoryFindings)
    for _ in range(10):  # 10 denials between 10:14 and 10:18:30, across a 15-minute boundary
        world.trail.record(Action.ACCESS_DENIED, result=Result.DENIED, actor=Actor("oid-x", ActorType.USER))
        world.clock.advance(timedelta(seconds=30))
    world.clock.current = T0 + timedelta(minutes=30)
    first = world.scan(RULES)
    # The burst, and the tenth denial lifting oid-x's risk score to the threshold (10).
    assert sorted(n.data["rule"] for n in world.publisher.sent) == ["access_denied_burst_actor", "actor_risk"]
    # A day later, every 15 minutes (and at odd moments), the lookback cuts through the burst: neither
    # is reported again (the score is still 10 within its 7-day window, and no new signal crossed).
    for minutes in [*range(0, 75, 15), 12, 13, 14, 15, 16]:
        world.clock.current = T0 + timedelta(days=1, minutes=minutes, seconds=5)
        assert world.scan(RULES).findings == []
    assert len(world.publisher.sent) == len(first.findings) == 2


def test_every_rule_fires_through_the_scan_itself() -> None:
    """The scan's lookback guard must leave every rule alive, the 24-hour rotation rule included."""
    world = World(now=T0, findings=InMemoryFindings)
    for _ in range(3):
        world.clock.advance(timedelta(hours=2))
        world.trail.record(Action.ROTATION_FAILED, secret_name="db-password", result=Result.FAILURE)
    for _ in range(3):
        world.clock.advance(timedelta(minutes=5))
        world.trail.record(
            Action.REVOCATION_REQUESTED, secret_name="api-key", actor=Actor("oid-r", ActorType.USER)
        )
    world.clock.advance(timedelta(minutes=1))
    report = world.scan(RULES)
    assert sorted(f.rule for f in world.findings.rows.values()) == [
        "repeated_rotation_failures",
        "revocation_request_burst",
    ]
    assert report.ok


def test_a_lookback_shorter_than_two_windows_is_refused() -> None:
    with pytest.raises(ValueError, match="lookback"):
        ScanRules(lookback=timedelta(hours=24))


def test_findings_name_the_actors_they_are_about() -> None:
    """The actors may not review the finding, so the finding must say who they are."""
    by_ip = [ev(Action.ACCESS_DENIED, m / 2, actor=f"oid-{m % 3}", ip="203.0.113.9") for m in range(10)]
    [burst] = find_suspicious(by_ip, RULES)
    assert burst.details()["actors"] == ["oid-0", "oid-1", "oid-2"]  # distinct, in order of appearance
    [single] = find_suspicious([ev(Action.BREAK_GLASS, 0, actor="oid-bg")], RULES)
    assert single.details()["actors"] == ["oid-bg"]
    fails = [
        ev(Action.ROTATION_FAILED, h * 60, actor="secret-lifecycle", secret_name="db", result=Result.FAILURE)
        for h in range(3)
    ]
    assert find_suspicious(fails, RULES)[0].details()["actors"] == ["secret-lifecycle"]


def test_the_actors_of_a_finding_are_bounded_and_fit_an_audit_record() -> None:
    long_names = [f"{i:02d}" + "n" * 254 for i in range(40)]  # principal ids are at most 256 characters
    events = [ev(Action.ACCESS_DENIED, m / 10, actor=long_names[m], ip="203.0.113.9") for m in range(40)]
    [finding] = find_suspicious(events, replace(RULES, denied_per_ip=30))  # a burst of 30 actors
    actors = finding.details()["actors"]
    assert len(actors) == FINDING_MAX_ACTORS
    assert actors == [name[:FINDING_ACTOR_CHARS] for name in long_names[:FINDING_MAX_ACTORS]]
    encoded = json.dumps(finding.details(), sort_keys=True, separators=(",", ":"))
    assert len(encoded.encode()) <= MAX_DETAILS_BYTES
    AuditEvent(Action.SUSPICIOUS_ACTIVITY, "fleet", T0, details=finding.details())  # refused if too large


def test_records_a_storage_writer_put_in_the_table_make_no_finding() -> None:
    world = World(now=T0, findings=InMemoryFindings)
    for _m in range(6):  # a burst of denials "by" someone, written without the MAC key
        event = world.trail.event(
            Action.ACCESS_DENIED, result=Result.DENIED, actor=Actor("oid-x", ActorType.USER)
        )
        stored = world.log.records.setdefault(event.chain, [])
        stored.append(AuditRecord(event, len(stored) + 1, "0" * 64, "key1", "f" * 64))
        world.clock.advance(timedelta(minutes=1))
    report = world.scan(RULES)
    assert (report.scanned, report.findings, world.publisher.sent) == (0, [], [])


def test_a_rotation_refused_because_its_target_is_not_bound_is_a_finding() -> None:
    trail = World(now=T0).trail
    refused = trail.event(
        Action.ROTATION_FAILED,
        result=Result.FAILURE,
        secret_name="billing-api-key",
        details={"rotation_id": "r1", "step": "set", "error_class": "TargetNotBound"},
    )
    other = replace(refused, details={**refused.details, "error_class": "TargetRefused"}, id="other")
    [finding] = find_suspicious([refused, other], RULES)
    assert (finding.rule, finding.subject, finding.actors, finding.record_ids) == (
        "target_not_bound", "billing-api-key", (), (refused.id,),
    )  # fmt: skip
