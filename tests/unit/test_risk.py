"""Actor risk: each signal drawn from crafted records, the score's decay as its window moves, a crossing
reported once per crossing (through the scan, over in-memory fakes), the actor view, and the settings."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.config import ConfigurationError, Settings
from shared.domain.audit import Action, Actor, ActorType, AuditEvent, AuditQuery, Result
from shared.domain.identity import canonical_identity
from shared.domain.risk import (
    DEFAULT_WEIGHTS,
    RiskRules,
    Signal,
    crossings,
    ended_hits,
    in_window,
    out_of_band_hits,
    own_hits,
    score,
)
from shared.domain.scan_rules import ScanRules
from shared.services import risk, suspicious
from tests.fakes import InMemoryFindings
from tests.world import World

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # a Wednesday, within working hours
RULES = RiskRules()
HOURS = ScanRules()


def ev(
    action: Action, at: timedelta, *, actor: str = "oid-a", ip: str | None = "198.51.100.1",
    agent: str | None = "az-cli", result: Result = Result.SUCCESS, **kw: object,
) -> AuditEvent:  # fmt: skip
    return AuditEvent(
        action=action, vault="fleet", time=T0 + at, result=result,
        actor=Actor(actor, ActorType.USER, ip, agent), **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def signals(events: list[AuditEvent], since: datetime | None = None) -> list[str]:
    return [hit.signal.value for hit in own_hits(events, RULES, HOURS, since=since)]


def test_denials_rule_refusals_and_break_glass_are_signals() -> None:
    events = [
        ev(Action.ACCESS_DENIED, timedelta(0), result=Result.DENIED, details={"required_role": "Secrets.X"}),
        ev(
            Action.REVOCATION_APPROVED,
            timedelta(minutes=1),
            result=Result.DENIED,
            details={"reason": "the requester cannot approve their own request"},
        ),
        ev(Action.BREAK_GLASS, timedelta(minutes=2), secret_name="db"),
        ev(Action.BREAK_GLASS, timedelta(minutes=2), result=Result.INTENT, secret_name="db"),  # not twice
        ev(Action.ROTATION_REQUESTED, timedelta(minutes=3)),  # nothing
    ]
    assert signals(events) == ["denied", "rule_refusal", "break_glass"]
    hits = own_hits(events, RULES, HOURS)
    assert [h.weight for h in hits] == [1, 3, 5] and hits[0].detail == "Secrets.X"
    assert "own request" in hits[1].detail


def test_a_decision_outside_working_hours_is_a_signal_in_the_configured_zone() -> None:
    saturday = timedelta(days=3)  # 2026-11-28 10:00 UTC
    night = timedelta(hours=12)  # 22:00 UTC on the Wednesday
    events = [ev(Action.REVOCATION_APPROVED, saturday), ev(Action.POLICY_CHANGED, night),
              ev(Action.REVOCATION_APPROVED, timedelta(hours=1)),  # inside
              ev(Action.ROTATION_REQUESTED, night)]  # fmt: skip  # not a decision
    assert signals(events) == ["off_hours_decision", "off_hours_decision"]
    tokyo = ScanRules(timezone="Asia/Tokyo")  # 10:00 UTC is 19:00 there: outside
    assert [h.signal for h in own_hits([ev(Action.REVOKED, timedelta(0))], RULES, tokyo)] == [
        Signal.OFF_HOURS_DECISION
    ]


def test_a_new_ip_or_user_agent_counts_against_the_baseline_before_it_once() -> None:
    known = [ev(Action.ROTATION_REQUESTED, timedelta(days=-d)) for d in (20, 10)]
    new_ip = ev(Action.ROTATION_REQUESTED, timedelta(0), ip="203.0.113.9")
    again = ev(Action.ROTATION_REQUESTED, timedelta(minutes=5), ip="203.0.113.9")
    new_agent = ev(Action.ROTATION_REQUESTED, timedelta(minutes=6), agent="curl/8")
    assert signals([*known, new_ip, again, new_agent], since=T0) == ["new_ip", "new_user_agent"]
    # No record within the baseline before it: nothing is new (a first-time actor has no baseline).
    assert signals([new_ip]) == []
    assert signals([ev(Action.ROTATION_REQUESTED, timedelta(days=-40)), new_ip]) == []
    # Seen only before the baseline: new again.
    old = ev(Action.ROTATION_REQUESTED, timedelta(days=-35), ip="203.0.113.9")
    assert signals([old, *known, new_ip], since=T0) == ["new_ip"]


def test_a_request_rejected_or_expired_counts_against_its_requester() -> None:
    ended = [
        ev(Action.REVOCATION_REJECTED, timedelta(0), actor="oid-b", details={"requested_by": "OID-A"}),
        ev(
            Action.REVOCATION_EXPIRED,
            timedelta(1),
            actor="secret-lifecycle",
            details={"requested_by": "oid-a"},
        ),
        ev(Action.REVOCATION_REJECTED, timedelta(2), actor="oid-b", details={"requested_by": "oid-c"}),
        ev(
            Action.REVOCATION_REJECTED,
            timedelta(3),
            actor="oid-b",
            result=Result.INTENT,
            details={"requested_by": "oid-a"},
        ),
    ]
    assert [h.signal for h in ended_hits("oid-a", ended, RULES)] == [
        Signal.REQUEST_REJECTED, Signal.REQUEST_EXPIRED
    ]  # fmt: skip


def test_a_change_outside_the_api_counts_once_per_version() -> None:
    changes = [
        ev(
            Action.OUT_OF_BAND_CHANGE,
            timedelta(0),
            actor="secret-lifecycle",
            secret_name="s",
            version="v2",
            result=Result.INTENT,
        ),
        ev(
            Action.OUT_OF_BAND_CHANGE,
            timedelta(seconds=1),
            actor="secret-lifecycle",
            secret_name="s",
            version="v2",
        ),
        ev(
            Action.OUT_OF_BAND_CHANGE,
            timedelta(minutes=1),
            actor="secret-lifecycle",
            secret_name="s",
            version="v3",
        ),
    ]
    assert [h.detail for h in out_of_band_hits(changes, RULES)] == ["s version v2", "s version v3"]


def test_the_score_decays_as_its_window_moves() -> None:
    events = [ev(Action.BREAK_GLASS, timedelta(days=d)) for d in (0, 1)]  # a Wednesday and a Thursday
    hits = own_hits(events, RULES, HOURS)
    assert score(in_window(hits, T0 + timedelta(days=1), RULES.window)) == 10
    assert score(in_window(hits, T0 + timedelta(days=7), RULES.window)) == 5  # the first left the window
    assert score(in_window(hits, T0 + timedelta(days=8), RULES.window)) == 0
    # Off hours, a break-glass is also a decision outside them.
    saturday = own_hits([ev(Action.BREAK_GLASS, timedelta(days=3))], RULES, HOURS)
    assert sorted(h.signal.value for h in saturday) == ["break_glass", "off_hours_decision"]


def test_a_crossing_is_the_signal_that_lifts_the_score_to_the_threshold_once() -> None:
    # 5 + 5 crosses 10; a third while still above is no new crossing; after both decay, 5 + 5 crosses again.
    days = (0, 1, 2, 20, 21)
    hits = own_hits([ev(Action.BREAK_GLASS, timedelta(days=d)) for d in days], RULES, HOURS)
    found = crossings(hits, RULES)
    assert [(c.hit.time, c.score) for c in found] == [
        (T0 + timedelta(days=1), 10),
        (T0 + timedelta(days=21), 10),
    ]
    assert [h.time for h in found[0].hits] == [T0, T0 + timedelta(days=1)]
    # Judged from ``since`` only; the hits before it still count towards the score.
    assert [c.hit.time for c in crossings(hits, RULES, since=T0 + timedelta(days=2))] == [
        T0 + timedelta(days=21)
    ]
    zero = RiskRules(weights={**DEFAULT_WEIGHTS, Signal.BREAK_GLASS: 0})
    assert crossings(own_hits([ev(Action.BREAK_GLASS, timedelta(0))] * 3, zero, HOURS), zero) == []


def test_the_scan_reports_an_actor_risk_finding_once_per_crossing() -> None:
    world = World(now=T0, findings=InMemoryFindings)
    alice = Actor("oid-alice", ActorType.USER, "198.51.100.7", "az-cli")

    def glass() -> None:
        world.trail.record(Action.BREAK_GLASS, secret_name="db-password", actor=alice)
        world.clock.advance(timedelta(hours=1))

    glass()
    glass()  # 10: crossing
    found = world.scan().findings
    assert len(found) == 3  # two break_glass findings and one actor_risk
    glass()  # 15, still above: no new crossing
    world.scan()
    risk_findings = [f for f in world.findings.rows.values() if f.rule == "actor_risk"]
    assert len(risk_findings) == 1
    details = risk_findings[0].details
    assert details["score"] == 10 and [s["signal"] for s in details["signals"]] == ["break_glass"] * 2
    assert details["actors"] == ["oid-alice"] and len(details["record_ids"]) == 2
    world.clock.advance(timedelta(days=10))  # every signal decayed
    glass()
    glass()  # a second crossing
    world.scan()
    assert len([f for f in world.findings.rows.values() if f.rule == "actor_risk"]) == 2


def test_a_forged_row_lifts_no_score() -> None:
    world = World(now=T0, findings=InMemoryFindings)
    for _ in range(3):
        world.trail.record(Action.BREAK_GLASS, secret_name="db", actor=Actor("oid-bob", ActorType.USER))
    eve = Actor("oid-eve", ActorType.USER)
    for chain in world.log.records.values():  # a storage writer rewrites them: their MACs no longer check
        chain[:] = [replace(r, event=replace(r.event, actor=eve)) for r in chain]
    peers = world.audit_peers()
    assert risk.actor_risk(peers, "oid-eve", RULES, HOURS).score == 0
    assert [f.rule for f in world.findings.rows.values() if f.rule == "actor_risk"] == []


def test_the_actor_view_answers_the_score_its_signals_and_recent_records() -> None:
    world = World(now=T0, findings=InMemoryFindings)
    bob = Actor("oid-bob", ActorType.USER, "198.51.100.8", "az-cli")
    for _ in range(4):
        world.trail.record(
            Action.ACCESS_DENIED, result=Result.DENIED, actor=bob, details={"required_role": "R"}
        )
    world.trail.record(
        Action.REVOCATION_REQUESTED, actor=bob, secret_name="db", details={"revocation_id": "r1"}
    )
    world.clock.advance(timedelta(minutes=1))
    world.trail.record(Action.REVOCATION_REJECTED, actor=Actor("oid-carol", ActorType.USER), secret_name="db",
                       details={"revocation_id": "r1", "requested_by": "oid-bob"})  # fmt: skip
    view = risk.actor_risk(world.audit_peers(), "oid-bob", RULES, HOURS, limit=3).to_json()
    assert (view["score"], view["above_threshold"], view["threshold"]) == (6, False, 10)
    assert view["by_signal"] == {"denied": 4, "request_rejected": 1}
    assert [s["signal"] for s in view["signals"]][-1] == "request_rejected"
    assert len(view["recent"]["items"]) == 3 and view["recent"]["continuation"]
    assert risk.actor_risk(world.audit_peers(), "OID-Bob", RULES, HOURS).score == 6  # one person
    world.clock.advance(timedelta(days=8))
    assert risk.actor_risk(world.audit_peers(), "oid-bob", RULES, HOURS).score == 0


def test_the_settings_fill_the_rules_and_refuse_what_is_not_one() -> None:
    rules = Settings({"RISK_WINDOW_HOURS": "24", "RISK_BASELINE_DAYS": "7", "RISK_THRESHOLD": "4",
                      "RISK_WEIGHTS": "denied=2, new_ip=0"}).risk_rules  # fmt: skip
    assert (rules.window, rules.baseline, rules.threshold) == (timedelta(hours=24), timedelta(days=7), 4)
    assert rules.weights[Signal.DENIED] == 2 and rules.weights[Signal.NEW_IP] == 0
    assert rules.weights[Signal.BREAK_GLASS] == 5
    assert Settings({}).risk_rules == RiskRules()
    refused = [("RISK_WEIGHTS", "denial=2"), ("RISK_WEIGHTS", "denied=-1"), ("RISK_WEIGHTS", "denied=x"),
               ("RISK_THRESHOLD", "0"), ("RISK_WINDOW_HOURS", "99999")]  # fmt: skip
    for name, value in refused:
        with pytest.raises(ConfigurationError, match=name):
            _ = Settings({name: value}).risk_rules


def test_a_finding_of_many_long_signals_still_fits_in_its_record() -> None:
    actor = "東" * 256  # an id of the most expensive characters to encode, as long as ids go
    agents = [("漢" * 300) + str(n) for n in range(40)]
    events = [ev(Action.ROTATION_REQUESTED, timedelta(days=-1), actor=actor)]
    events += [
        ev(Action.ROTATION_REQUESTED, timedelta(minutes=n), actor=actor, agent=agents[n]) for n in range(40)
    ]
    rules = RiskRules(threshold=30)
    [crossing] = crossings(own_hits(events, rules, HOURS), rules)
    finding = suspicious.risk_finding(actor, crossing, rules)
    details = finding.details()
    AuditEvent(Action.SUSPICIOUS_ACTIVITY, "fleet", T0, details=details)  # refused when too large
    kept = details["signals"]
    assert 0 < len(kept) < 30 and kept[0]["record_id"] == crossing.hit.record_id  # the newest first
    assert details["score"] == 30 and details["actors"] == [canonical_identity(actor)[:64]]


class LostActorCopies:
    """The audit reader over an index whose actor partitions lost one actor's copies (a storage writer
    deleted them to lower their score); the index of every record still has them."""

    def __init__(self, log: Any, actor: str) -> None:
        self._log, self._actor = log, actor

    def page_records(self, query: AuditQuery, limit: int, after: Any = None) -> Any:
        rows, position = self._log.page_records(query, limit, after)
        return ([] if query.actor == self._actor else rows), position

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)


def test_deleting_an_actors_index_copies_does_not_hide_their_crossing() -> None:
    world = World(now=T0, findings=InMemoryFindings)
    mallory = Actor("oid-mallory", ActorType.USER)
    for _ in range(2):
        world.trail.record(Action.BREAK_GLASS, secret_name="db", actor=mallory)
        world.clock.advance(timedelta(minutes=5))
    peers = world.audit_peers(reader=LostActorCopies(world.log, "oid-mallory"))
    report = suspicious.scan(peers, HOURS)
    assert any(f.rule == "actor_risk" for f in world.findings.rows.values()), report
