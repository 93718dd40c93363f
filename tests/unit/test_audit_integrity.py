"""Tamper evidence over in-memory fakes: verify, digests that never forgive, the anchor, head repair.

Each test does what an intruder with write access to the audit table (and none to the vault) would do to
cover their tracks, and checks that verify says ``broken`` both before and after the next digest.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.audit import (
    Action,
    Actor,
    ActorType,
    AuditEvent,
    AuditRecord,
    BreakKind,
    ChainContents,
    ChainHead,
    ChainTampered,
    Digest,
    Result,
    canonical,
    event_fields,
    seal,
    seal_digest,
)
from shared.domain.errors import Conflict
from shared.services.audit import (
    AuditTrail,
    AuditUnavailable,
    DigestOutcome,
    DigestRefused,
    VerifyReport,
    repair_chain,
    verify_audit,
    write_digest,
)
from tests.fakes import FixedClock, InMemoryAnchor, InMemoryAuditLog, RecordingPublisher

VAULT = "fleet"
DB = "fleet:db-password"
SERVICE = "fleet:_service"
OPERATOR = Actor("op-7", ActorType.USER)


class World:
    """The audit trail and everything around it, as the app wires it."""

    def __init__(self) -> None:
        self.clock = FixedClock()
        self.log = InMemoryAuditLog()
        self.anchor = InMemoryAnchor()
        self.publisher = RecordingPublisher()
        self.trail = AuditTrail(self.log, self.clock, VAULT)

    def record(self, n: int, secret: str | None = "db-password") -> None:
        for i in range(n):
            self.clock.advance(timedelta(seconds=1))
            self.trail.record(Action.ROTATED, secret_name=secret, version=f"v{i}")

    def digest(self) -> DigestOutcome:
        self.clock.advance(timedelta(minutes=1))
        return write_digest(self.log, self.log.keys, self.clock, self.anchor, self.trail, self.publisher)

    def verify(self, secret_name: str | None = None) -> VerifyReport:
        return verify_audit(
            self.log, self.log.keys, self.clock, self.anchor, vault=VAULT, secret_name=secret_name
        )

    def kinds(self, secret_name: str | None = None) -> set[tuple[str, BreakKind]]:
        return {(b.chain, b.kind) for b in self.verify(secret_name).breaks}

    def repair(self, reason: str, secret_name: str = "db-password") -> AuditRecord:
        return repair_chain(
            self.log,
            self.log,
            self.log.keys,
            self.clock,
            self.anchor,
            vault=VAULT,
            secret_name=secret_name,
            operator=OPERATOR,
            reason=reason,
        )

    def tampering_records(self) -> list[AuditEvent]:
        return [e for e in self.log.events if e.action == Action.TAMPERING_DETECTED]


@pytest.fixture
def world() -> World:
    return World()


# -- the golden vectors: the canonical form and the MAC are a stored format --------------------------

GOLDEN_KEY = b"golden-key-0123456789abcdef-0123"
GOLDEN_EVENT = AuditEvent(
    action=Action.ROTATED,
    vault="fleet",
    time=datetime(2026, 11, 29, 8, 0, 1, 234567, tzinfo=UTC),
    actor=Actor("op-1", ActorType.USER, "203.0.113.9", "curl/8"),
    secret_name="db-password",
    version="0" * 32,
    correlation_id="c-1",
    details={"step": "promote", "n": 2},
    duration_ms=1500,
    id="f" * 32,
)


def test_golden_record_vector() -> None:
    """A change here breaks every stored chain: the canonical form must only ever be extended
    compatibly (new optional fields absent when unset)."""
    record = seal(GOLDEN_EVENT, 7, "a" * 64, "k1", GOLDEN_KEY)
    assert record.mac == "0609dd1fd91701b404156b9937b548923834072859d29e06964f67afc8d34ce8"
    assert canonical(GOLDEN_EVENT.chain, 7, "a" * 64, "k1", event_fields(GOLDEN_EVENT)) == (
        b'{"action":"ROTATED","actor_id":"op-1","actor_ip":"203.0.113.9","actor_type":"user",'
        b'"actor_user_agent":"curl/8","chain":"fleet:db-password","correlation_id":"c-1",'
        b'"details":"{\\"n\\":2,\\"step\\":\\"promote\\"}","duration_ms":1500,'
        b'"id":"ffffffffffffffffffffffffffffffff","key_id":"k1","prev_mac":"' + b"a" * 64 + b'",'
        b'"result":"success","secret_name":"db-password","seq":7,"time":"2026-11-29T08:00:01.234567Z",'
        b'"vault":"fleet","version":"00000000000000000000000000000000"}'
    )


def test_golden_digest_vectors() -> None:
    heads = {DB: ChainHead(7, "0609dd1fd91701b404156b9937b548923834072859d29e06964f67afc8d34ce8")}
    moment = datetime(2026, 11, 29, 9, tzinfo=UTC)
    plain = seal_digest(3, moment, heads, "b" * 64, "k1", GOLDEN_KEY)
    assert plain.mac == "37794111f13a1c61af5ce63287aafc6370db597835b0e1871db9fd2b7528d8b0"
    held = seal_digest(3, moment, heads, "b" * 64, "k1", GOLDEN_KEY, held=[DB])
    assert held.mac == "38e84838f01d343726068be6f0082245912dd6abeec64d2d930d5443529607c8"


# -- verify and digest basics ----------------------------------------------------------------------


def test_clean_trail_verifies_and_every_digest_is_anchored(world: World) -> None:
    world.record(4)
    first = world.digest()
    second = world.digest()
    assert (first.digest.seq, second.digest.seq) == (1, 2)
    assert second.digest.prev_mac == first.digest.mac
    assert [v.seq for v in world.anchor.versions] == [1, 2]
    report = world.verify()
    assert report.ok, report.breaks
    assert (report.chains, report.records, report.digests) == (1, 4, 2)
    assert world.tampering_records() == [] and world.publisher.sent == []


def test_digest_covers_every_chain_even_when_nothing_happened(world: World) -> None:
    assert world.digest().digest.heads == {}
    assert world.verify().ok


def test_stale_digest(world: World) -> None:
    world.record(1)
    world.clock.advance(timedelta(hours=3))
    assert world.kinds() == {("_digest", BreakKind.STALE_DIGEST)}
    world.digest()
    assert world.verify().ok


def test_scoped_verify_ignores_other_chains(world: World) -> None:
    world.record(1)
    world.record(1, "api-key")
    world.digest()
    world.log.records["fleet:api-key"].clear()
    assert world.verify("db-password").ok
    assert not world.verify("api-key").ok


# -- finding 1: a cut is never forgiven by the next digest ---------------------------------------------


def test_cut_tail_and_rewound_head_stay_broken_after_the_next_digest(world: World) -> None:
    world.record(10)
    world.digest()
    del world.log.records[DB][7:]  # records 8-10 gone
    world.log.heads[DB] = ChainHead(7, world.log.records[DB][-1].mac)  # head rewound to match
    assert (DB, BreakKind.TRUNCATED) in world.kinds()

    outcome = world.digest()
    assert [b.chain for b in outcome.new_regressions] == [DB]
    assert outcome.digest.heads[DB].seq == 10  # held: the digest kept what it had sealed
    assert outcome.digest.held == (DB,)
    assert (DB, BreakKind.TRUNCATED) in world.kinds()
    [alarm] = world.tampering_records()
    assert alarm.result == Result.FAILURE
    assert alarm.details["breaks"][0]["chain"] == DB
    assert [n.type for n in world.publisher.sent] == ["SecretLifecycle.AuditTampering"]

    world.digest()  # still held, but reported once, not every hour
    assert (DB, BreakKind.TRUNCATED) in world.kinds()
    assert len(world.tampering_records()) == 1 and len(world.publisher.sent) == 1


def test_cut_then_new_appends_do_not_launder_the_chain(world: World) -> None:
    """After a rewind the service itself appends valid records at the cut positions: the chain links
    again, but no longer passes through what the digest sealed."""
    world.record(10)
    world.digest()
    del world.log.records[DB][7:]
    world.log.heads[DB] = ChainHead(7, world.log.records[DB][-1].mac)
    world.record(5)  # seq 8-12, validly MACed by the service
    assert (DB, BreakKind.EDITED) in world.kinds()
    outcome = world.digest()
    assert [b.kind for b in outcome.regressions] == [BreakKind.REGRESSED]
    assert outcome.digest.heads[DB].seq == 10
    assert (DB, BreakKind.EDITED) in world.kinds()
    world.digest()
    assert (DB, BreakKind.EDITED) in world.kinds()


def test_a_whole_chain_deleted_with_its_head_stays_broken(world: World) -> None:
    world.record(3)
    world.record(2, "api-key")
    world.digest()
    del world.log.records[DB], world.log.heads[DB]
    assert (DB, BreakKind.TRUNCATED) in world.kinds()
    world.digest()
    world.digest()
    assert (DB, BreakKind.TRUNCATED) in world.kinds()
    assert world.verify("api-key").ok


def test_a_regression_sealed_by_a_forgiving_writer_is_found_between_digests(world: World) -> None:
    """Every consecutive pair of digests is compared, not only the newest with the records."""
    world.record(5)
    world.digest()
    del world.log.records[DB][3:]
    world.log.heads[DB] = ChainHead(3, world.log.records[DB][-1].mac)
    # A writer without the regression check (an older version, or a bug) seals the cut state.
    previous = world.log.digests[-1]
    forgiving = world.log.append_digest(
        previous, dict(world.log.heads), world.clock.now() + timedelta(minutes=1), world.log.keys
    )
    world.anchor.write(forgiving)
    assert forgiving.prev_mac == previous.mac
    breaks = world.verify().breaks
    assert [(b.chain, b.kind, b.seq) for b in breaks] == [(DB, BreakKind.REGRESSED, 5)]


# -- finding 2: a deleted head is a break, and appends fail closed at once --------------------------------


def test_a_deleted_head_is_reported_and_stops_appends_without_retries(world: World) -> None:
    world.record(4)
    world.digest()
    del world.log.heads[DB]
    assert world.kinds() == {(DB, BreakKind.MISSING_HEAD)}
    with pytest.raises(AuditUnavailable, match="tampering suspected"):
        world.trail.record(Action.ROTATED, secret_name="db-password")
    assert len(world.log.records[DB]) == 4  # nothing written, nothing forked
    outcome = world.digest()  # the digest holds the head it sealed and raises the alarm
    assert outcome.digest.heads[DB].seq == 4
    assert world.kinds() == {(DB, BreakKind.MISSING_HEAD)}


def test_records_beyond_a_rewound_head_stop_appends(world: World) -> None:
    world.record(4)
    world.log.heads[DB] = ChainHead(2, world.log.records[DB][1].mac)
    with pytest.raises(ChainTampered):
        world.log.append([world.trail.event(Action.ROTATED, secret_name="db-password")])
    assert (DB, BreakKind.UNEXPECTED) in world.kinds()


def test_repair_re_derives_the_head_on_record_and_appends_resume(world: World) -> None:
    world.record(4)
    world.digest()
    del world.log.heads[DB]
    world.digest()
    record = world.repair("INC-42 head row deleted")
    assert (record.seq, record.event.action, record.event.actor) == (5, Action.CHAIN_REPAIRED, OPERATOR)
    assert record.event.details["previous_head"] is None
    assert record.prev_mac == world.log.records[DB][3].mac
    world.record(1)
    assert world.log.heads[DB].seq == 6
    assert world.verify().ok
    outcome = world.digest()
    assert outcome.regressions == [] and outcome.digest.held == ()
    assert world.verify().ok


def test_repair_refuses_a_chain_whose_tail_was_cut(world: World) -> None:
    world.record(6)
    world.digest()
    del world.log.records[DB][4:], world.log.heads[DB]
    with pytest.raises(Conflict, match="does not verify"):
        world.repair("try to launder")
    assert DB not in world.log.heads


def test_repair_refuses_an_intact_chain(world: World) -> None:
    world.record(2)
    with pytest.raises(Conflict, match="nothing to repair"):
        world.repair("x")


# -- finding 3: the end of the digest chain is anchored ------------------------------------------------


def test_deleting_the_newest_digest_is_caught_by_the_anchor(world: World) -> None:
    world.record(2)
    world.digest()
    world.digest()
    world.log.digests.pop()
    assert world.kinds() == {("_digest", BreakKind.ANCHOR_MISMATCH)}
    with pytest.raises(DigestRefused):
        world.digest()
    assert [v.seq for v in world.anchor.versions] == [1, 2]  # nothing sealed or anchored over it
    assert world.tampering_records() and world.publisher.sent
    assert ("_digest", BreakKind.ANCHOR_MISMATCH) in world.kinds()


@pytest.mark.parametrize("what", ["all digests", "the whole table"])
def test_wiping_digests_or_the_table_is_broken_under_an_existing_anchor(world: World, what: str) -> None:
    world.record(3)
    world.record(1, None)
    world.digest()
    world.log.digests.clear()
    if what == "the whole table":
        world.log.records.clear()
        world.log.heads.clear()
    assert ("_digest", BreakKind.ANCHOR_MISMATCH) in world.kinds()
    with pytest.raises(DigestRefused):
        world.digest()
    assert ("_digest", BreakKind.ANCHOR_MISMATCH) in world.kinds()


def test_a_replaced_digest_with_the_anchored_number_is_caught(world: World) -> None:
    world.record(2)
    world.digest()
    [only] = world.log.digests
    world.log.digests[0] = Digest(only.seq, only.time, {}, only.prev_mac, only.key_id, "f" * 64)
    assert ("_digest", BreakKind.ANCHOR_MISMATCH) in world.kinds()


def test_digests_without_any_anchor_are_reported(world: World) -> None:
    world.record(1)
    world.digest()
    world.anchor.versions.clear()
    assert world.kinds() == {("_digest", BreakKind.UNANCHORED)}
    world.digest()  # the writer anchors again from here on
    assert world.verify().ok


# -- the verifier and a concurrent writer -------------------------------------------------------------


class AppendsWhileRead(InMemoryAuditLog):
    """A reader that sees a chain's records before a concurrent append and its head after it, once."""

    def __init__(self, inner: InMemoryAuditLog, trail: AuditTrail) -> None:
        super().__init__(inner.keys)
        self.inner, self.trail, self.raced = inner, trail, False

    def read_chains(self, chain: str | None = None) -> dict[str, ChainContents]:
        before = self.inner.read_chains(chain)
        if self.raced:
            return before
        self.raced = True
        self.trail.record(Action.ROTATED, secret_name="db-password", version="late")
        after = self.inner.read_chains(chain)
        return {name: ChainContents(before[name].records, after[name].head) for name in before}

    def read_digests(self, since: int = 1) -> list[Digest]:
        return self.inner.read_digests(since)


def test_verify_does_not_mistake_an_append_in_flight_for_a_cut(world: World) -> None:
    world.record(1)
    racing = AppendsWhileRead(world.log, world.trail)
    report = verify_audit(racing, world.log.keys, world.clock, world.anchor, vault=VAULT)
    assert racing.raced
    assert report.ok, report.breaks


def test_the_writer_extends_what_the_anchor_vouches_for_and_verify_reads_everything(world: World) -> None:
    world.record(1)
    world.digest()
    world.digest()
    first = world.log.digests[0]
    world.log.digests[0] = Digest(first.seq, first.time, first.heads, first.prev_mac, first.key_id, "f" * 64)
    assert ("_digest", BreakKind.FORGED_DIGEST) in world.kinds()
    world.digest()  # digest 2 is anchored and intact: the hourly writer need not re-read digest 1
    assert [v.seq for v in world.anchor.versions] == [1, 2, 3]
    assert ("_digest", BreakKind.FORGED_DIGEST) in world.kinds()


# -- found in review: each of these passed (wrongly) before the fix -------------------------------------


def test_an_old_record_put_back_at_the_sealed_position_does_not_launder_a_cut(world: World) -> None:
    world.record(12)
    world.digest()
    records = world.log.records[DB]
    old_twelve = records[11]
    del records[10:]
    world.log.heads[DB] = ChainHead(10, records[-1].mac)
    world.record(3)  # the service appends 11', 12', 13'
    new_twelve, records[11] = records[11], old_twelve  # the original 12 put back where the digest saw it
    outcome = world.digest()
    assert [b.kind for b in outcome.regressions] == [BreakKind.REGRESSED]
    assert outcome.digest.heads[DB].seq == 12  # held
    records[11] = new_twelve
    world.digest()
    assert len(world.tampering_records()) == 1 and len(world.publisher.sent) == 1
    assert (DB, BreakKind.EDITED) in world.kinds()


def test_one_secret_verify_reports_forged_digests_that_hide_its_cut(world: World) -> None:
    world.record(10)
    world.digest()
    world.digest()
    del world.log.records[DB][7:]
    world.log.heads[DB] = ChainHead(7, world.log.records[DB][-1].mac)
    # Every digest gets a changed time (covered by its MAC) but keeps its mac field.
    world.log.digests[:] = [
        Digest(d.seq, d.time + timedelta(seconds=1), d.heads, d.prev_mac, d.key_id, d.mac, d.held)
        for d in world.log.digests
    ]
    report = world.verify("db-password")
    assert not report.ok
    assert ("_digest", BreakKind.FORGED_DIGEST) in {(b.chain, b.kind) for b in report.breaks}


class FailingAnchor(InMemoryAnchor):
    def __init__(self, inner: InMemoryAnchor) -> None:
        super().__init__()
        self.versions = inner.versions

    def write(self, digest: Digest) -> None:
        raise RuntimeError("vault throttled, instance recycled")


def test_an_alarm_is_on_record_before_the_digest_that_holds_the_chain(world: World) -> None:
    world.record(10)
    world.digest()
    del world.log.records[DB][7:]
    world.log.heads[DB] = ChainHead(7, world.log.records[DB][-1].mac)
    real, world.anchor = world.anchor, FailingAnchor(world.anchor)
    with pytest.raises(RuntimeError):
        world.digest()  # sealed (holding the chain), then died before anchoring
    world.anchor = real
    assert len(world.tampering_records()) == 1 and len(world.publisher.sent) == 1


def test_the_alarm_must_be_recorded_before_sealing(world: World) -> None:
    world.record(10)
    world.digest()
    del world.log.records[DB][7:]
    world.log.heads[DB] = ChainHead(7, world.log.records[DB][-1].mac)
    world.log.keys.available = False  # type: ignore[attr-defined]  # the record cannot be sealed now
    with pytest.raises(AuditUnavailable):
        write_digest(world.log, world.log.keys, world.clock, world.anchor, world.trail, world.publisher)
    assert len(world.log.digests) == 1  # nothing sealed: the next run reports again
    world.log.keys.available = True  # type: ignore[attr-defined]
    assert [b.chain for b in world.digest().new_regressions] == [DB]
    assert len(world.tampering_records()) == 1


class SealsBetweenReads(InMemoryAuditLog):
    """Another digest writer seals a whole digest while this one is between reading heads and sealing."""

    def __init__(self, world: World) -> None:
        self.__dict__ = world.log.__dict__
        self.world = world

    def read_heads(self) -> dict[str, ChainHead]:
        heads = dict(self.heads)
        self.world.record(2)
        self.world.digest()
        return heads


def test_two_digest_writers_at_once_seal_once_and_leave_no_false_regression(world: World) -> None:
    world.record(3)
    world.digest()
    with pytest.raises(Conflict, match="sealed meanwhile"):
        write_digest(
            SealsBetweenReads(world), world.log.keys, world.clock, world.anchor, world.trail, world.publisher
        )
    assert [d.heads[DB].seq for d in world.log.digests] == [3, 5]
    world.digest()
    assert world.verify().ok


def test_repair_refuses_a_head_ahead_of_its_records(world: World) -> None:
    world.record(10)
    world.digest()
    world.record(2)  # 11, 12: not sealed yet
    del world.log.records[DB][10:]  # cut; the head still says 12
    with pytest.raises(Conflict, match="never repaired"):
        world.repair("launder")
    assert (DB, BreakKind.TRUNCATED) in world.kinds()
