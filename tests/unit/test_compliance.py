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
    """The audit reader over a table whose index lost the copies of one action's records (a storage writer
    deleted them): no query finds them; every other read, the aggregates' and the evidence's included, is
    the log's. ``pages`` counts the index reads."""

    def __init__(self, log: Any, action: Action | None = None) -> None:
        self._log, self._action, self.pages = log, action, 0

    def page_records(self, query: AuditQuery, limit: int, after: Any = None) -> Any:
        self.pages += 1
        rows, position = self._log.page_records(query, limit, after)
        return [r for r in rows if r.record.fields["action"] != self._action], position

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)


def report_of(world: World, reader: Any = None) -> Any:
    peers = world.audit_peers(reader=reader)
    return compliance_report(peers, [world.peers], start=START, end=END, stall_after=STALL)


def evidence_of(world: World, action: Action) -> list[tuple[str, datetime, int]]:
    """The places of the evidence parts that hold a record of ``action``."""
    return [key for key, part in world.log.evidence.items() if f'"a":"{action.value}"' in part["rows"]]


def test_whole_hours_are_read_from_their_sealed_evidence_not_the_index(world: World) -> None:
    before = report_of(world)
    aggregate_hours(world.audit_peers())  # as the digest timer does: every complete hour sealed
    counting = LostCopies(world.log)
    after = report_of(world, counting)
    assert after.model_dump(exclude={"integrity"}) == before.model_dump(exclude={"integrity"})
    assert after.integrity.sealed_hours > 10 and after.summary.integrity == "ok"
    assert counting.pages == 1  # since the coverage mark only (the period starts on the hour)


def test_deleted_evidence_is_read_from_the_index_and_lost_copies_there_are_found(world: World) -> None:
    aggregate_hours(world.audit_peers())
    for place in evidence_of(world, Action.ACCESS_DENIED):
        del world.log.evidence[place]
    whole = report_of(world)
    assert whole.summary.denials == 3 and whole.summary.integrity == "ok"  # from the index instead
    report = report_of(world, LostCopies(world.log, Action.ACCESS_DENIED))
    [gap] = report.integrity.index_gaps
    assert (gap.action, gap.result, gap.counted, gap.read) == ("ACCESS_DENIED", "denied", 3, 0)
    assert report.summary.integrity == "incomplete" and report.summary.denials == 0
    assert "The index misses records" in render(report)


def test_evidence_the_service_did_not_write_or_wrote_for_another_hour_counts_for_nothing(
    world: World,
) -> None:
    aggregate_hours(world.audit_peers())
    [place] = evidence_of(world, Action.REVOCATION_REJECTED)
    part = world.log.evidence[place]
    forged = part["rows"].replace("oid-bob", "oid-mallory")
    world.log.evidence[place] = {**part, "rows": forged}  # its MAC no longer checks
    [moved] = [key for key in evidence_of(world, Action.REVIEWED)]
    world.log.evidence[moved] = {**world.log.evidence[moved], "hour": part["hour"]}  # sealed for its hour
    for reader in (None, LostCopies(world.log, Action.REVOCATION_REJECTED)):
        report = report_of(world, reader)
        r2 = next(r for r in report.revocations if r.id == "r2")
        assert r2.decided is None or r2.decided.by == "oid-bob"
    r2 = next(r for r in report_of(world).revocations if r.id == "r2")
    assert r2.decided is not None and r2.decided.by == "oid-bob"


def test_an_hour_deleted_with_its_aggregate_and_evidence_is_found(world: World) -> None:
    aggregate_hours(world.audit_peers())
    [(vault, hour, _)] = evidence_of(world, Action.REVOCATION_REJECTED)
    del world.log.aggregates[(vault, hour)]
    world.log.evidence = {k: v for k, v in world.log.evidence.items() if k[1] != hour}
    report = report_of(world)  # read from the index instead, and said
    assert next(r for r in report.revocations if r.id == "r2").outcome == "rejected"
    [deleted] = report.integrity.deleted_hours
    assert deleted.after < hour < deleted.before and deleted.records == 1
    hidden = report_of(world, LostCopies(world.log, Action.REVOCATION_REJECTED))
    assert next(r for r in hidden.revocations if r.id == "r2").outcome == "pending"
    assert hidden.summary.integrity == "incomplete"
    world.log.coverage.clear()  # the mark too: the last hours are judged against the next aggregate only
    assert report_of(world).integrity.deleted_hours == [deleted]


def test_hours_aggregated_before_evidence_was_kept_are_read_from_the_index(world: World) -> None:
    aggregate_hours(world.audit_peers())
    world.log.evidence.clear()
    counting = LostCopies(world.log)
    report = report_of(world, counting)
    assert report.summary.rotations == 5 and report.summary.denials == 3
    assert report.summary.integrity == "ok" and report.integrity.sealed_hours == 0
    days = {hour.date() for _, hour in world.log.aggregates}
    assert counting.pages <= len(days) < len(world.log.aggregates)  # an hour's neighbours read with it


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
