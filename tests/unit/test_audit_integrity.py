"""Tamper evidence over in-memory fakes: verify, digests that never forgive, the anchor, head repair.

Each test does what an intruder with write access to the audit table (and none to the vault) would do to
cover their tracks, and checks that verify says ``broken`` both before and after the next digest.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.audit import (
    PAGE_CHAINS,
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
    DigestPage,
    Result,
    canonical,
    digest_payload,
    event_fields,
    missing_pages,
    page_hash,
    page_text,
    paged,
    seal,
    seal_digest,
)
from shared.domain.errors import Conflict
from shared.services.audit import (
    AuditTrail,
    AuditUnavailable,
    DigestOutcome,
    VerifyReport,
)
from tests.fakes import InMemoryAnchor, InMemoryAuditLog
from tests.world import World

DB = "fleet:db-password"
SERVICE = "fleet:_service"
OPERATOR = Actor("op-7", ActorType.USER)


def record_rotations(world: World, n: int, secret: str | None = "db-password") -> None:
    for i in range(n):
        world.clock.advance(timedelta(seconds=1))
        world.trail.record(Action.ROTATED, secret_name=secret, version=f"v{i}")


def digest(world: World) -> DigestOutcome:
    world.clock.advance(timedelta(minutes=1))
    return world.write_digest()


def verify(world: World, secret_name: str | None = None) -> VerifyReport:
    return world.verify_audit(secret_name=secret_name)


def kinds(world: World, secret_name: str | None = None) -> set[tuple[str, BreakKind]]:
    return {(b.chain, b.kind) for b in verify(world, secret_name).breaks}


def repair(world: World, reason: str, secret_name: str = "db-password") -> AuditRecord:
    return world.repair_chain(secret_name=secret_name, operator=OPERATOR, reason=reason)


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
    # The page of heads, stored as this text and known by its SHA-256, which the MAC covers.
    assert page_text(heads) == (
        '{"fleet:db-password":[7,"0609dd1fd91701b404156b9937b548923834072859d29e06964f67afc8d34ce8"]}'
    )
    assert plain.pages == (
        DigestPage(0, 1, "eaf91c7c9a56e1c9fb0015352bf89c819203308ebf4589319249b477a0fcc991"),
    )
    assert digest_payload(plain) == (
        b'{"chain":"_digest","fanout":1,"key_id":"k1","pages":[[0,1,'
        b'"eaf91c7c9a56e1c9fb0015352bf89c819203308ebf4589319249b477a0fcc991"]],"prev_mac":"'
        + b"b"
        * 64
        + b'",'
        b'"seq":3,"time":"2026-11-29T09:00:00.000000Z"}'
    )
    assert plain.mac == "7b96f4bdcf739981a44c9f0aafb85b09459ab66c96be2f9f4ccc4141bdd75f69"
    held = seal_digest(3, moment, heads, "b" * 64, "k1", GOLDEN_KEY, held=[DB])
    assert held.mac == "f09443b4335449b3862f493be28455a6eb20c91a433f08cbb24057be7fc497f6"


def test_a_digest_cuts_any_number_of_heads_into_pages_known_by_their_hash() -> None:
    heads = {f"fleet:secret-{i:06d}": ChainHead(i + 1, f"{i:064x}") for i in range(5 * PAGE_CHAINS)}
    digest = seal_digest(1, datetime(2026, 12, 7, tzinfo=UTC), heads, "0" * 64, "k1", GOLDEN_KEY)
    assert digest.fanout == 8 and len(digest.pages) == 8
    assert sum(p.chains for p in digest.pages) == len(heads)
    assert max(p.chains for p in digest.pages) < 1.3 * len(heads) / 8  # the hash spreads them
    # One chain's page proves its sealed head: the page's hash is the one the MAC covers.
    page = digest.bucket("fleet:secret-000042")
    assert page is not None
    mine = paged(heads, digest.fanout)[page.bucket]
    assert page_hash(mine) == page.hash and mine["fleet:secret-000042"] == ChainHead(43, f"{42:064x}")
    # A page that does not read back as sealed is reported; the others are not.
    edited = dict(heads, **{"fleet:secret-000042": ChainHead(43, "e" * 64)})
    lost = missing_pages(replace(digest, heads=edited))
    assert [p.bucket for p in lost] == [page.bucket]
    assert missing_pages(replace(digest, heads=mine, buckets_read=(page.bucket,)), (page.bucket,)) == []


# -- verify and digest basics ----------------------------------------------------------------------


def test_clean_trail_verifies_and_every_digest_is_anchored(world: World) -> None:
    record_rotations(world, 4)
    first = digest(world)
    second = digest(world)
    assert (first.digest.seq, second.digest.seq) == (1, 2)
    assert second.digest.prev_mac == first.digest.mac
    assert [v.seq for v in world.anchor.versions] == [1, 2]
    report = verify(world)
    assert report.ok, report.breaks
    assert (report.chains, report.records, report.digests) == (1, 4, 2)
    assert world.records(Action.TAMPERING_DETECTED) == [] and world.publisher.sent == []


def test_digest_covers_every_chain_even_when_nothing_happened(world: World) -> None:
    assert digest(world).digest.heads == {}
    assert verify(world).ok


def test_stale_digest(world: World) -> None:
    record_rotations(world, 1)
    world.clock.advance(timedelta(hours=3))
    assert kinds(world) == {("_digest", BreakKind.STALE_DIGEST)}
    digest(world)
    assert verify(world).ok


def test_scoped_verify_ignores_other_chains(world: World) -> None:
    record_rotations(world, 1)
    record_rotations(world, 1, "api-key")
    digest(world)
    world.log.records["fleet:api-key"].clear()
    assert verify(world, "db-password").ok
    assert not verify(world, "api-key").ok


# -- finding 1: a cut is never forgiven by the next digest ---------------------------------------------


def test_cut_tail_and_rewound_head_stay_broken_after_the_next_digest(world: World) -> None:
    record_rotations(world, 10)
    digest(world)
    del world.log.records[DB][7:]  # records 8-10 gone
    world.log.heads[DB] = ChainHead(7, world.log.records[DB][-1].mac)  # head rewound to match
    assert (DB, BreakKind.TRUNCATED) in kinds(world)

    outcome = digest(world)
    assert [b.chain for b in outcome.new_regressions] == [DB]
    assert outcome.digest.heads[DB].seq == 10  # held: the digest kept what it had sealed
    assert outcome.digest.held == (DB,)
    assert (DB, BreakKind.TRUNCATED) in kinds(world)
    [alarm] = world.records(Action.TAMPERING_DETECTED)
    assert alarm.result == Result.FAILURE
    assert alarm.details["breaks"][0]["chain"] == DB
    assert [n.type for n in world.publisher.sent] == ["SecretLifecycle.AuditTampering"]

    digest(world)  # still held, but reported once, not every hour
    assert (DB, BreakKind.TRUNCATED) in kinds(world)
    assert len(world.records(Action.TAMPERING_DETECTED)) == 1 and len(world.publisher.sent) == 1


def test_cut_then_new_appends_do_not_launder_the_chain(world: World) -> None:
    """After a rewind the service itself appends valid records at the cut positions: the chain links
    again, but no longer passes through what the digest sealed."""
    record_rotations(world, 10)
    digest(world)
    del world.log.records[DB][7:]
    world.log.heads[DB] = ChainHead(7, world.log.records[DB][-1].mac)
    record_rotations(world, 5)  # seq 8-12, validly MACed by the service
    assert (DB, BreakKind.EDITED) in kinds(world)
    outcome = digest(world)
    assert [b.kind for b in outcome.regressions] == [BreakKind.REGRESSED]
    assert outcome.digest.heads[DB].seq == 10
    assert (DB, BreakKind.EDITED) in kinds(world)
    digest(world)
    assert (DB, BreakKind.EDITED) in kinds(world)


def test_a_whole_chain_deleted_with_its_head_stays_broken(world: World) -> None:
    record_rotations(world, 3)
    record_rotations(world, 2, "api-key")
    digest(world)
    del world.log.records[DB], world.log.heads[DB]
    assert (DB, BreakKind.TRUNCATED) in kinds(world)
    digest(world)
    digest(world)
    assert (DB, BreakKind.TRUNCATED) in kinds(world)
    assert verify(world, "api-key").ok


def test_a_regression_sealed_by_a_forgiving_writer_is_found_between_digests(world: World) -> None:
    """Every consecutive pair of digests is compared, not only the newest with the records."""
    record_rotations(world, 5)
    digest(world)
    del world.log.records[DB][3:]
    world.log.heads[DB] = ChainHead(3, world.log.records[DB][-1].mac)
    # A writer without the regression check (an older version, or a bug) seals the cut state.
    previous = world.log.digests[-1]
    forgiving = world.log.append_digest(
        previous, dict(world.log.heads), world.clock.now() + timedelta(minutes=1), world.log.keys
    )
    world.anchor.write(forgiving)
    assert forgiving.prev_mac == previous.mac
    breaks = verify(world).breaks
    assert [(b.chain, b.kind, b.seq) for b in breaks] == [(DB, BreakKind.REGRESSED, 5)]


# -- finding 2: a deleted head is a break, and appends fail closed at once --------------------------------


def test_a_deleted_head_is_reported_and_stops_appends_without_retries(world: World) -> None:
    record_rotations(world, 4)
    digest(world)
    del world.log.heads[DB]
    assert kinds(world) == {(DB, BreakKind.MISSING_HEAD)}
    with pytest.raises(AuditUnavailable, match="tampering suspected"):
        world.trail.record(Action.ROTATED, secret_name="db-password")
    assert len(world.log.records[DB]) == 4  # nothing written, nothing forked
    outcome = digest(world)  # the digest holds the head it sealed and raises the alarm
    assert outcome.digest.heads[DB].seq == 4
    assert kinds(world) == {(DB, BreakKind.MISSING_HEAD)}


def test_records_beyond_a_rewound_head_stop_appends(world: World) -> None:
    record_rotations(world, 4)
    world.log.heads[DB] = ChainHead(2, world.log.records[DB][1].mac)
    with pytest.raises(ChainTampered):
        world.log.append([world.trail.event(Action.ROTATED, secret_name="db-password")])
    assert (DB, BreakKind.UNEXPECTED) in kinds(world)


def test_repair_re_derives_the_head_on_record_and_appends_resume(world: World) -> None:
    record_rotations(world, 4)
    digest(world)
    del world.log.heads[DB]
    digest(world)
    record = repair(world, "INC-42 head row deleted")
    assert (record.seq, record.event.action, record.event.actor) == (5, Action.CHAIN_REPAIRED, OPERATOR)
    assert record.event.details["previous_head"] is None
    assert record.prev_mac == world.log.records[DB][3].mac
    record_rotations(world, 1)
    assert world.log.heads[DB].seq == 6
    assert verify(world).ok
    outcome = digest(world)
    assert outcome.regressions == [] and outcome.digest.held == ()
    assert verify(world).ok


def test_repair_refuses_a_chain_whose_tail_was_cut(world: World) -> None:
    record_rotations(world, 6)
    digest(world)
    del world.log.records[DB][4:], world.log.heads[DB]
    with pytest.raises(Conflict, match="does not verify"):
        repair(world, "try to launder")
    assert DB not in world.log.heads


def test_repair_refuses_an_intact_chain(world: World) -> None:
    record_rotations(world, 2)
    with pytest.raises(Conflict, match="nothing to repair"):
        repair(world, "x")


# -- finding 3: the end of the digest chain is anchored ------------------------------------------------


def test_deleting_the_newest_digest_is_caught_by_the_anchor_and_held(world: World) -> None:
    record_rotations(world, 2)
    digest(world)
    digest(world)
    world.log.digests.pop()  # a lost write, or a restore: the anchor still names digest 2
    assert kinds(world) == {("_digest", BreakKind.ANCHOR_MISMATCH)}
    outcome = digest(world)
    # Sealing goes on after the digest the anchor vouches for, and holds the lost one as broken.
    assert (outcome.digest.seq, outcome.digest.held_digests) == (3, ((2, 2),))
    assert outcome.digest.prev_mac == world.anchor.versions[1].mac
    assert [v.seq for v in world.anchor.versions] == [1, 2, 3]
    assert [b.kind for b in outcome.digest_breaks] == [BreakKind.ANCHOR_MISMATCH]
    assert len(world.records(Action.TAMPERING_DETECTED)) == 1 and len(world.publisher.sent) == 1
    for _ in range(2):  # the break stays reported, the alarm is raised once
        assert kinds(world) == {("_digest", BreakKind.DELETED)}
        assert digest(world).digest_breaks == []
    assert len(world.records(Action.TAMPERING_DETECTED)) == 1


def test_the_anchor_lagging_a_sealed_digest_does_not_hold_it_again(world: World) -> None:
    record_rotations(world, 2)
    digest(world)
    digest(world)
    world.log.digests.pop()
    real, world.anchor = world.anchor, FailingAnchor(world.anchor)
    with pytest.raises(RuntimeError):
        digest(world)  # sealed 3 (holding 2), then died before anchoring it
    world.anchor = real
    outcome = digest(world)
    assert (outcome.digest.seq, outcome.digest.held_digests, outcome.digest_breaks) == (4, ((2, 2),), [])
    assert len(world.records(Action.TAMPERING_DETECTED)) == 1
    assert kinds(world) == {("_digest", BreakKind.DELETED)}


@pytest.mark.parametrize("what", ["all digests", "the whole table"])
def test_wiping_digests_or_the_table_is_held_under_an_existing_anchor(world: World, what: str) -> None:
    record_rotations(world, 3)
    record_rotations(world, 1, None)
    digest(world)
    world.log.digests.clear()
    if what == "the whole table":
        world.log.records.clear()
        world.log.heads.clear()
    assert ("_digest", BreakKind.ANCHOR_MISMATCH) in kinds(world)
    outcome = digest(world)
    assert (outcome.digest.seq, outcome.digest.held_digests) == (2, ((1, 1),))
    assert ("_digest", BreakKind.DELETED) in kinds(world)
    record_rotations(world, 2)
    digest(world)
    assert ("_digest", BreakKind.DELETED) in kinds(world)


def test_a_forged_digest_is_held_and_sealing_goes_on(world: World) -> None:
    record_rotations(world, 2)
    for _ in range(3):
        digest(world)
    world.log.digests[1] = replace(world.log.digests[1], mac="f" * 64)  # not the anchored one
    world.log.digests[2] = replace(world.log.digests[2], mac="e" * 64)  # the anchored one
    outcome = digest(world)
    assert (outcome.digest.seq, outcome.digest.held_digests) == (4, ((2, 3),))
    assert outcome.digest.prev_mac == world.anchor.versions[2].mac
    assert {(b.kind, b.seq) for b in verify(world).breaks} == {
        (BreakKind.FORGED_DIGEST, 2),
        (BreakKind.FORGED_DIGEST, 3),
    }


def test_a_replaced_digest_with_the_anchored_number_is_caught(world: World) -> None:
    record_rotations(world, 2)
    digest(world)
    [only] = world.log.digests
    world.log.digests[0] = Digest(only.seq, only.time, {}, only.prev_mac, only.key_id, "f" * 64)
    assert ("_digest", BreakKind.ANCHOR_MISMATCH) in kinds(world)


def test_digests_without_any_anchor_are_reported(world: World) -> None:
    record_rotations(world, 1)
    digest(world)
    world.anchor.versions.clear()
    assert kinds(world) == {("_digest", BreakKind.UNANCHORED)}
    digest(world)  # the writer anchors again from here on
    assert verify(world).ok


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

    def read_digests(self, since: int = 1, chain: str | None = None) -> list[Digest]:
        return self.inner.read_digests(since, chain)


def test_verify_does_not_mistake_an_append_in_flight_for_a_cut(world: World) -> None:
    record_rotations(world, 1)
    racing = AppendsWhileRead(world.log, world.trail)
    report = world.verify_audit(reader=racing)
    assert racing.raced
    assert report.ok, report.breaks


def test_the_writer_extends_what_the_anchor_vouches_for_and_verify_reads_everything(world: World) -> None:
    record_rotations(world, 1)
    digest(world)
    digest(world)
    first = world.log.digests[0]
    world.log.digests[0] = Digest(first.seq, first.time, first.heads, first.prev_mac, first.key_id, "f" * 64)
    assert ("_digest", BreakKind.FORGED_DIGEST) in kinds(world)
    digest(world)  # digest 2 is anchored and intact: the hourly writer need not re-read digest 1
    assert [v.seq for v in world.anchor.versions] == [1, 2, 3]
    assert ("_digest", BreakKind.FORGED_DIGEST) in kinds(world)


# -- found in review: each of these passed (wrongly) before the fix -------------------------------------


def test_an_old_record_put_back_at_the_sealed_position_does_not_launder_a_cut(world: World) -> None:
    record_rotations(world, 12)
    digest(world)
    records = world.log.records[DB]
    old_twelve = records[11]
    del records[10:]
    world.log.heads[DB] = ChainHead(10, records[-1].mac)
    record_rotations(world, 3)  # the service appends 11', 12', 13'
    new_twelve, records[11] = records[11], old_twelve  # the original 12 put back where the digest saw it
    outcome = digest(world)
    assert [b.kind for b in outcome.regressions] == [BreakKind.REGRESSED]
    assert outcome.digest.heads[DB].seq == 12  # held
    records[11] = new_twelve
    digest(world)
    assert len(world.records(Action.TAMPERING_DETECTED)) == 1 and len(world.publisher.sent) == 1
    assert (DB, BreakKind.EDITED) in kinds(world)


def test_one_secret_verify_reports_forged_digests_that_hide_its_cut(world: World) -> None:
    record_rotations(world, 10)
    digest(world)
    digest(world)
    del world.log.records[DB][7:]
    world.log.heads[DB] = ChainHead(7, world.log.records[DB][-1].mac)
    # Every digest gets a changed time (covered by its MAC) but keeps its mac field.
    world.log.digests[:] = [
        Digest(d.seq, d.time + timedelta(seconds=1), d.heads, d.prev_mac, d.key_id, d.mac, d.held)
        for d in world.log.digests
    ]
    report = verify(world, "db-password")
    assert not report.ok
    assert ("_digest", BreakKind.FORGED_DIGEST) in {(b.chain, b.kind) for b in report.breaks}


class FailingAnchor(InMemoryAnchor):
    def __init__(self, inner: InMemoryAnchor) -> None:
        super().__init__()
        self.versions = inner.versions

    def write(self, digest: Digest) -> None:
        raise RuntimeError("vault throttled, instance recycled")


def test_an_alarm_is_on_record_before_the_digest_that_holds_the_chain(world: World) -> None:
    record_rotations(world, 10)
    digest(world)
    del world.log.records[DB][7:]
    world.log.heads[DB] = ChainHead(7, world.log.records[DB][-1].mac)
    real, world.anchor = world.anchor, FailingAnchor(world.anchor)
    with pytest.raises(RuntimeError):
        digest(world)  # sealed (holding the chain), then died before anchoring
    world.anchor = real
    assert len(world.records(Action.TAMPERING_DETECTED)) == 1 and len(world.publisher.sent) == 1


def test_the_alarm_must_be_recorded_before_sealing(world: World) -> None:
    record_rotations(world, 10)
    digest(world)
    del world.log.records[DB][7:]
    world.log.heads[DB] = ChainHead(7, world.log.records[DB][-1].mac)
    world.log.keys.available = False  # type: ignore[attr-defined]  # the record cannot be sealed now
    with pytest.raises(AuditUnavailable):
        world.write_digest()
    assert len(world.log.digests) == 1  # nothing sealed: the next run reports again
    world.log.keys.available = True  # type: ignore[attr-defined]
    assert [b.chain for b in digest(world).new_regressions] == [DB]
    assert len(world.records(Action.TAMPERING_DETECTED)) == 1


class SealsBetweenReads(InMemoryAuditLog):
    """Another digest writer seals a whole digest while this one is between reading heads and sealing."""

    def __init__(self, world: World) -> None:
        self.__dict__ = world.log.__dict__
        self.world = world

    def read_heads(self) -> dict[str, ChainHead]:
        heads = dict(self.heads)
        record_rotations(self.world, 2)
        digest(self.world)
        return heads


def test_two_digest_writers_at_once_seal_once_and_leave_no_false_regression(world: World) -> None:
    record_rotations(world, 3)
    digest(world)
    with pytest.raises(Conflict, match="sealed meanwhile"):
        world.write_digest(reader=SealsBetweenReads(world))
    assert [d.heads[DB].seq for d in world.log.digests] == [3, 5]
    digest(world)
    assert verify(world).ok


def test_repair_refuses_a_head_ahead_of_its_records(world: World) -> None:
    record_rotations(world, 10)
    digest(world)
    record_rotations(world, 2)  # 11, 12: not sealed yet
    del world.log.records[DB][10:]  # cut; the head still says 12
    with pytest.raises(Conflict, match="never repaired"):
        repair(world, "launder")
    assert (DB, BreakKind.TRUNCATED) in kinds(world)
