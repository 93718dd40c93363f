"""The compliance report over crafted records and secrets (in-memory fakes): each section's numbers are
what the records and the vault say, late rotations are found, every revocation shows its approvals and how
it ended, a break-glass without review is flagged, forged rows count for nothing, and the HTML page escapes
what callers wrote."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.domain.audit import Action, Actor, ActorType, AuditQuery, Result
from shared.domain.policy import RotationPolicy, SecretKind
from shared.entrypoints.compliance import prefers_html
from shared.entrypoints.compliance_html import render
from shared.services.audit import aggregate_hours, verify_and_store
from shared.services.compliance import compliance_report
from tests.world import World

END = datetime(2026, 10, 1, tzinfo=UTC)
START = END - timedelta(days=90)
STALL = timedelta(hours=2)
OWNED = RotationPolicy(SecretKind.API_KEY, timedelta(days=30), None, "dispatch-api")
UNOWNED = RotationPolicy(SecretKind.API_KEY, timedelta(days=30))
ALICE, BOB, CAROL = (Actor(f"oid-{n}", ActorType.USER) for n in ("alice", "bob", "carol"))


def at(world: World, days: float) -> None:
    world.clock.current = START + timedelta(days=days)


def rotated(world: World, name: str, days: float, version: str) -> None:
    """A rotation on record, and its new version in the vault (the report's inventory reads the vault)."""
    at(world, days)
    world.secret(name, tags=OWNED.to_tags(), expires=world.clock.now() + timedelta(days=60))
    world.trail.record(
        Action.ROTATED, result=Result.INTENT, secret_name=name, details={"rotation_id": version}
    )
    details = {"rotation_id": version, "rotator": "key-vault", "previous_version": "v0"}
    world.trail.record(Action.ROTATED, secret_name=name, version=version, details=details)


def revocation(world: World, rid: str, days: float, *, by: Actor = ALICE, glass: bool = False) -> None:
    """A request on record: REVOCATION_REQUESTED, or BREAK_GLASS for one executed at once."""
    at(world, days)
    details = {"revocation_id": rid, "reason": "COMPROMISE_SUSPECTED", "severity": "high",
               "required_approvals": 1, "requested_by": by.id, "break_glass": glass}  # fmt: skip
    opened = Action.BREAK_GLASS if glass else Action.REVOCATION_REQUESTED
    world.trail.record(opened, result=Result.INTENT, actor=by, secret_name="s", details=details)
    world.trail.record(opened, actor=by, secret_name="s", details=details)


def decide(
    world: World, action: Action, rid: str, days: float, by: Actor, result: Result = Result.SUCCESS
) -> None:
    at(world, days)
    world.trail.record(action, actor=by, result=result, secret_name="s",
                       details={"revocation_id": rid, "requested_by": ALICE.id})  # fmt: skip


@pytest.fixture
def world() -> World:
    world = World(now=START)
    # "steady": rotated every 30 days, on time; "slipped": one gap of 45 days; "forgotten": no owner, no
    # expiry, never rotated, and due since day 30.
    world.secret("steady", tags=OWNED.to_tags(), expires=END + timedelta(days=60))
    world.secret("slipped", tags=OWNED.to_tags(), expires=END + timedelta(days=60))
    world.secret("forgotten", tags=UNOWNED.to_tags())
    for day in (30, 60, 85):
        rotated(world, "steady", day, f"steady-{day}")
    for day in (30, 75):
        rotated(world, "slipped", day, f"slipped-{day}")
    at(world, 76)
    world.trail.record(Action.ROTATION_STALLED, secret_name="forgotten", details={"reason": "nothing tried"})
    world.trail.record(Action.ROTATION_FAILED, result=Result.FAILURE, secret_name="forgotten",
                       details={"gave_up_after": 5, "error_class": "TargetRefused"})  # fmt: skip
    # Revocations: executed after one approval; rejected; a break-glass nobody reviewed; one reviewed.
    revocation(world, "r1", 10)
    decide(world, Action.REVOCATION_APPROVED, "r1", 10, ALICE, Result.DENIED)  # her own: refused
    decide(world, Action.REVOCATION_APPROVED, "r1", 10.5, BOB)
    decide(world, Action.REVOKED, "r1", 11, CAROL)
    revocation(world, "r2", 20)
    decide(world, Action.REVOCATION_REJECTED, "r2", 21, BOB)
    revocation(world, "r3", 40, glass=True)
    decide(world, Action.REVOKED, "r3", 40, ALICE)
    revocation(world, "r4", 50, glass=True)
    decide(world, Action.REVOKED, "r4", 50, ALICE)
    decide(world, Action.REVIEWED, "r4", 95, BOB)  # after the period: it counts, as of now
    # Denials, one by a caller whose id is markup.
    at(world, 5)
    for _ in range(3):
        world.trail.record(
            Action.ACCESS_DENIED, result=Result.DENIED, actor=Actor("<script>x</script>", ActorType.USER)
        )
    # Outside the period: counts for nothing.
    at(world, -5)
    world.trail.record(Action.ROTATED, secret_name="steady", version="before", details={"rotation_id": "b"})
    revocation(world, "r0", 91)
    at(world, 100)
    world.write_digest()
    verify_and_store(world.audit_peers())
    return world


def test_each_section_says_what_the_records_and_the_vault_say(world: World) -> None:
    report = compliance_report(world.audit_peers(), [world.peers], start=START, end=END, stall_after=STALL)
    secrets = {s.name: s for s in report.secrets}
    assert sorted(secrets) == ["forgotten", "slipped", "steady"]
    assert (secrets["steady"].rotations, secrets["steady"].late) == (3, [])
    [late] = secrets["slipped"].late
    assert (late.due, late.rotated, late.late_hours) == (
        START + timedelta(days=60),
        START + timedelta(days=75),
        360,
    )
    forgotten = secrets["forgotten"]
    assert (forgotten.without_owner, forgotten.without_expiry, forgotten.stalls) == (True, True, 1)
    assert forgotten.overdue_hours == 70 * 24  # due at day 30, now is day 100
    assert (
        forgotten.late[0].rotated is None and forgotten.late[0].late_hours == 60 * 24
    )  # to the period's end
    assert [r.outcome for r in report.rotations].count("rotated") == 5
    assert [r.outcome for r in report.rotations if r.secret_name == "forgotten"] == ["gave_up"]

    revocations = {r.id: r for r in report.revocations}
    assert sorted(revocations) == ["r1", "r2", "r3", "r4"]  # r0 was requested after the period
    r1 = revocations["r1"]
    assert (r1.outcome, [a.by for a in r1.approvals], r1.decided.by if r1.decided else None) == (
        "executed", ["oid-bob"], "oid-carol"
    )  # fmt: skip
    assert (r1.hours_to_approval, r1.hours_to_execution, r1.review_missing) == (12, 24, False)
    r2 = revocations["r2"]
    assert (r2.outcome, r2.decided.by if r2.decided else None) == ("rejected", "oid-bob")
    assert revocations["r3"].review_missing and not revocations["r4"].review_missing
    assert revocations["r4"].review is not None and revocations["r4"].review.by == "oid-bob"

    denials = {d.actor: d for d in report.denials}
    assert denials["<script>x</script>"].denied == 3 and denials["oid-alice"].refused_by_rule == 1
    s = report.summary
    assert (s.managed, s.overdue_now, s.late_in_period, s.without_owner, s.without_expiry) == (3, 1, 2, 1, 1)
    assert (s.rotations, s.gave_up, s.revocations, s.executed, s.break_glass, s.break_glass_unreviewed) == (
        5, 1, 4, 3, 2, 1
    )  # fmt: skip
    assert (s.denials, s.integrity) == (3, "ok"), report.integrity.verification
    assert report.integrity.anchor is not None and report.integrity.anchor.seq == 1


def test_a_row_the_service_did_not_write_counts_for_nothing(world: World) -> None:
    forged = Actor("oid-mallory", ActorType.USER)
    for chain in world.log.records.values():  # rewritten in storage: their MACs no longer check
        chain[:] = [
            replace(r, event=replace(r.event, actor=forged)) if r.event.action == Action.REVOKED else r
            for r in chain
        ]
    report = compliance_report(world.audit_peers(), [world.peers], start=START, end=END, stall_after=STALL)
    r1 = next(r for r in report.revocations if r.id == "r1")
    assert r1.outcome == "pending" and r1.decided is None  # the execution's record is not the service's


def test_the_period_must_be_one(world: World) -> None:
    peers = world.audit_peers()
    for start, end in (
        (END, START),
        (START - timedelta(days=300), END),
        (END + timedelta(days=30), END + timedelta(days=31)),
    ):
        with pytest.raises(ValueError, match="period"):
            compliance_report(peers, [world.peers], start=start, end=end, stall_after=STALL)


def test_the_page_escapes_what_callers_wrote_and_loads_nothing(world: World) -> None:
    page = render(
        compliance_report(world.audit_peers(), [world.peers], start=START, end=END, stall_after=STALL)
    )
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "http://" not in page and "https://" not in page and "src=" not in page
    for heading in (
        "Managed secrets",
        "Rotations",
        "Revocations",
        "Access denials",
        "Integrity",
        "does not prove",
    ):
        assert heading in page


@pytest.mark.parametrize(
    ("accept", "html"),
    [("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True), ("*/*", False), (None, False),
     ("application/json", False), ("application/json, text/html;q=0.5", False), ("text/html;q=0", False),
     ("text/html;q=0.9, application/json;q=0.8", True)],
)  # fmt: skip
def test_html_is_for_a_caller_that_prefers_it(accept: str | None, html: bool) -> None:
    assert prefers_html(accept) is html


class LostCopies:
    """The audit reader over a table whose index lost the copies of one action's records in that action's
    partitions (a storage writer deleted them): a query by that action no longer finds them; every other
    read, the aggregates' included, is the log's."""

    def __init__(self, log: Any, action: Action) -> None:
        self._log, self._action = log, action

    def page_records(self, query: AuditQuery, limit: int, after: Any = None) -> Any:
        rows, position = self._log.page_records(query, limit, after)
        if query.action == self._action:
            rows = []
        return rows, position

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)


def test_an_index_that_lost_an_actions_copies_is_found_against_the_sealed_aggregates(world: World) -> None:
    aggregate_hours(world.audit_peers())  # as the digest timer does: every complete hour sealed
    whole = compliance_report(world.audit_peers(), [world.peers], start=START, end=END, stall_after=STALL)
    assert whole.integrity.index_gaps == [] and whole.summary.integrity == "ok"
    lossy = world.audit_peers(reader=LostCopies(world.log, Action.ACCESS_DENIED))
    report = compliance_report(lossy, [world.peers], start=START, end=END, stall_after=STALL)
    [gap] = report.integrity.index_gaps
    assert (gap.action, gap.result, gap.counted, gap.read) == ("ACCESS_DENIED", "denied", 3, 0)
    assert report.summary.integrity == "incomplete" and report.summary.denials == 0
    assert "The index misses records" in render(report)


def test_a_report_of_one_vault_holds_that_vaults_records_only(world: World) -> None:
    eu = world.other_vault("fleet-eu").peers
    at(world, 45)
    eu.trail.record(Action.ROTATED, secret_name="eu-key", version="eu-1", details={"rotation_id": "eu"})
    both = compliance_report(world.audit_peers(), [world.peers, eu], start=START, end=END, stall_after=STALL)
    assert {r.vault for r in both.rotations} == {"fleet", "fleet-eu"}
    home = compliance_report(world.audit_peers(), [world.peers], start=START, end=END, stall_after=STALL)
    assert {r.vault for r in home.rotations} == {"fleet"} and home.period.vaults == ["fleet"]
    abroad = compliance_report(world.audit_peers(), [eu], start=START, end=END, stall_after=STALL)
    assert [r.secret_name for r in abroad.rotations] == ["eu-key"] and abroad.revocations == []
