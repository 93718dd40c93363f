"""A way forward after a break: the digest writer holds it, two people acknowledge it as an incident, a
digest seals a new baseline, and verify keeps showing the old break as acknowledged (over fakes)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from shared.domain.audit import Action, Actor, ActorType, BreakKind, ChainHead, Result
from shared.domain.errors import Conflict, NotFound, NotPermitted
from shared.services.audit import (
    VerifyReport,
    acknowledge_incident,
    open_incident,
    verification,
)
from shared.services.audit.results import IncidentAcknowledged, IncidentOpened
from tests.fakes import InMemoryAuditLog
from tests.world import World

DB = "fleet:db-password"
DIGEST = "_digest"
SERVICE = "fleet:_service"
OLGA = Actor("oid-olga", ActorType.USER)
IVAN = Actor("oid-ivan", ActorType.USER)


def rotations(world: World, n: int) -> None:
    for i in range(n):
        world.clock.advance(timedelta(seconds=1))
        world.trail.record(Action.ROTATED, secret_name="db-password", version=f"v{i}")


def digest(world: World) -> None:
    world.clock.advance(timedelta(minutes=1))
    world.write_digest()


def open_(world: World, who: Actor = OLGA) -> IncidentOpened:
    return open_incident(
        world.audit_peers(), actor=who, reason="table restored from backup", reference="INC-7",
        correlation_id="c-1",
    )  # fmt: skip


def acknowledge(world: World, incident: str, who: Actor = IVAN) -> IncidentAcknowledged:
    return acknowledge_incident(world.audit_peers(), incident, actor=who, correlation_id="c-2")


def fresh(world: World) -> VerifyReport:
    return verification(world.audit_peers(), fresh=True)


def lost_digest(world: World) -> None:
    """A lost write: the newest digest is gone from the table, the anchor still names it."""
    rotations(world, 3)
    digest(world)
    digest(world)
    world.log.digests.pop()


def test_a_lost_digest_is_acknowledged_by_two_people_and_stays_visible(world: World) -> None:
    lost_digest(world)
    opened = open_(world)  # holds the break first, as the hourly digest would
    assert [(b.chain, b.kind, b.seq) for b in opened.breaks] == [(DIGEST, BreakKind.DELETED, 2)]
    assert fresh(world).status == "broken"
    done = acknowledge(world, opened.incident)
    assert (done.status, done.opened_by, done.acknowledged_by) == ("acknowledged", OLGA.id, IVAN.id)
    baseline = world.log.digests[-1]
    assert baseline.seq == done.baseline and baseline.baseline is not None
    assert world.anchor.versions[-1].seq == baseline.seq
    for _ in range(2):  # and after later digests
        report = fresh(world)
        assert (report.status, report.breaks) == ("ok", [])
        assert [(a.chain, a.kind, a.seq, a.incident, a.baseline) for a in report.acknowledged] == [
            (DIGEST, BreakKind.DELETED, 2, opened.incident, baseline.seq)
        ]
        rotations(world, 1)
        digest(world)
    results = [e.result for e in world.records(Action.INCIDENT_ACKNOWLEDGED)]
    assert results == [Result.INTENT, Result.SUCCESS]
    [record] = world.records(Action.INCIDENT_OPENED)
    assert record.actor == OLGA and record.details["reference"] == "INC-7"


def test_a_new_break_after_the_baseline_is_a_break(world: World) -> None:
    lost_digest(world)
    acknowledge(world, open_(world).incident)
    rotations(world, 2)
    digest(world)
    del world.log.records[DB][-1:]
    world.log.heads[DB] = ChainHead(world.log.records[DB][-1].seq, world.log.records[DB][-1].mac)
    report = fresh(world)
    assert report.status == "broken"
    assert {(b.chain, b.kind) for b in report.breaks} == {(DB, BreakKind.TRUNCATED)}
    assert [a.kind for a in report.acknowledged] == [BreakKind.DELETED]


def test_a_held_chain_is_released_by_the_baseline_and_its_break_kept(world: World) -> None:
    rotations(world, 6)
    digest(world)
    del world.log.records[DB][4:]  # a cut with the head rewound: held by every digest
    world.log.heads[DB] = ChainHead(4, world.log.records[DB][-1].mac)
    digest(world)
    assert world.log.digests[-1].held == (DB,)
    opened = open_(world)
    assert {(b.chain, b.kind) for b in opened.breaks} == {(DB, BreakKind.TRUNCATED)}
    acknowledge(world, opened.incident)
    assert world.log.digests[-1].held == ()  # released: sealed as it is now
    rotations(world, 1)
    digest(world)
    report = fresh(world)
    assert report.status == "ok"
    assert {(a.chain, a.kind) for a in report.acknowledged} == {
        (DB, BreakKind.TRUNCATED),  # as the incident listed it
        (DB, BreakKind.REGRESSED),  # the baseline sealed the regression: still found, acknowledged
    }


def test_the_person_who_opened_it_cannot_acknowledge_it(world: World) -> None:
    lost_digest(world)
    opened = open_(world)
    for same in (OLGA, Actor("OID-OLGA ", ActorType.USER)):
        with pytest.raises(NotPermitted, match="second person"):
            acknowledge(world, opened.incident, same)
    assert len(world.log.digests) == 2  # nothing sealed
    assert fresh(world).status == "broken"


def test_applications_neither_open_nor_acknowledge(world: World) -> None:
    lost_digest(world)
    app = Actor("oid-dispatch", ActorType.APP)
    with pytest.raises(NotPermitted, match="person"):
        open_(world, app)
    opened = open_(world)
    with pytest.raises(NotPermitted, match="person"):
        acknowledge(world, opened.incident, app)


def test_an_incident_over_other_breaks_is_refused(world: World) -> None:
    lost_digest(world)
    opened = open_(world)
    world.log.digests.pop(0)  # one more digest gone after it was opened
    with pytest.raises(Conflict, match="breaks changed"):
        acknowledge(world, opened.incident)
    assert world.log.digests[-1].baseline is None
    assert fresh(world).status == "broken"


def test_an_expired_or_unknown_incident_is_not_found(world: World) -> None:
    lost_digest(world)
    opened = open_(world)
    with pytest.raises(NotFound):
        acknowledge(world, "0" * 32)
    world.clock.advance(timedelta(hours=25))
    with pytest.raises(NotFound, match="expires"):
        acknowledge(world, opened.incident)


def test_nothing_to_acknowledge(world: World) -> None:
    rotations(world, 2)
    digest(world)
    with pytest.raises(Conflict, match="no break"):
        open_(world)
    assert world.records(Action.INCIDENT_OPENED) == []


def test_acknowledging_again_answers_the_same_and_seals_once(world: World) -> None:
    lost_digest(world)
    opened = open_(world)
    first = acknowledge(world, opened.incident)
    digest(world)
    again = acknowledge(world, opened.incident, Actor("oid-third", ActorType.USER))
    assert again.baseline == first.baseline
    assert sum(1 for d in world.log.digests if d.baseline is not None) == 1
    outcomes = [e for e in world.records(Action.INCIDENT_ACKNOWLEDGED) if e.result == Result.SUCCESS]
    assert len(outcomes) == 1


def test_a_lost_success_record_is_written_when_asked_again(world: World) -> None:
    lost_digest(world)
    opened = open_(world)
    acknowledge(world, opened.incident)
    # The process died after sealing, before the success record: the service chain ends at the intent.
    lost = world.log.records[SERVICE].pop()
    assert (lost.event.action, lost.event.result) == (Action.INCIDENT_ACKNOWLEDGED, Result.SUCCESS)
    newest = world.log.records[SERVICE][-1]
    world.log.heads[SERVICE] = ChainHead(newest.seq, newest.mac)
    again = acknowledge(world, opened.incident)
    outcomes = [e for e in world.records(Action.INCIDENT_ACKNOWLEDGED) if e.result == Result.SUCCESS]
    assert len(outcomes) == 1 and outcomes[0].details["baseline"] == again.baseline
    assert fresh(world).status == "ok"


def test_a_forged_page_of_acknowledged_breaks_acknowledges_nothing(world: World) -> None:
    lost_digest(world)
    acknowledge(world, open_(world).incident)
    baseline = world.log.digests[-1]
    assert baseline.baseline is not None
    forged = baseline.baseline.__class__(
        baseline.baseline.incident, baseline.baseline.count, baseline.baseline.hash,
        ((DB, "edited", 1, "widened by an intruder"), *(baseline.baseline.entries or ())),
    )  # fmt: skip
    world.log.digests[-1] = baseline.__class__(**{**baseline.__dict__, "baseline": forged})
    report = fresh(world)
    assert report.status == "broken" and report.acknowledged == []
    assert (DIGEST, BreakKind.FORGED_DIGEST) in {(b.chain, b.kind) for b in report.breaks}


def test_an_incident_record_a_storage_writer_edited_is_no_incident(world: World) -> None:
    """The decision rests on the authentic INCIDENT_OPENED record: a row naming another opener (so that
    one person could open and acknowledge) fails its MAC and opens nothing."""
    lost_digest(world)
    opened = open_(world)
    records = world.log.records[SERVICE]
    at = next(i for i, r in enumerate(records) if r.event.action == Action.INCIDENT_OPENED)
    forged = dataclasses.replace(records[at].event, actor=Actor("oid-someone-else", ActorType.USER))
    records[at] = dataclasses.replace(records[at], event=forged)  # same MAC, other content
    with pytest.raises(NotFound):
        acknowledge(world, opened.incident, OLGA)
    assert all(d.baseline is None for d in world.log.digests)


class AcknowledgedMeanwhile(InMemoryAuditLog):
    """A second acknowledgement of the same incident seals its baseline while this one reads the heads."""

    def __init__(self, world: World, incident: str) -> None:
        self.__dict__ = world.log.__dict__
        self.world, self.incident, self.done = world, incident, False

    def read_heads(self) -> dict[str, ChainHead]:
        if not self.done:
            self.done = True
            acknowledge(self.world, self.incident, Actor("oid-third", ActorType.USER))
        return super().read_heads()


def test_two_acknowledgements_at_once_seal_one_baseline(world: World) -> None:
    lost_digest(world)
    opened = open_(world)
    racing = world.audit_peers(AcknowledgedMeanwhile(world, opened.incident))
    with pytest.raises(Conflict, match="sealed meanwhile"):
        acknowledge_incident(racing, opened.incident, actor=IVAN, correlation_id="c-3")
    assert sum(1 for d in world.log.digests if d.baseline is not None) == 1
    results = [(e.actor.id, e.result) for e in world.records(Action.INCIDENT_ACKNOWLEDGED)]
    assert results == [
        (IVAN.id, Result.INTENT),  # the loser's intent, then the winner's whole acknowledgement
        ("oid-third", Result.INTENT),
        ("oid-third", Result.SUCCESS),
        (IVAN.id, Result.FAILURE),  # every accepted request ends in an outcome
    ]
    assert fresh(world).status == "ok"
