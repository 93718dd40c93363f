"""Retention over fakes: old records leave the log for the archive, verify walks both as one chain, and
what the archive claims removes nothing it does not hold (the Azurite tests: tests/integration)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from shared.domain.audit import Action, BreakKind, StoredRecord
from shared.services.audit import export_old_records, verify_audit
from shared.services.peers import AuditPeers
from tests.fakes import InMemoryArchive
from tests.world import World

DB = "fleet:db-password"
RETENTION = timedelta(days=400)


def aged(world: World) -> None:
    for i in range(6):
        world.clock.advance(timedelta(seconds=1))
        world.trail.record(Action.ROTATED, secret_name="db-password", version=f"v{i}")
    world.clock.advance(timedelta(days=500))
    world.trail.record(Action.ROTATED, secret_name="db-password", version="new")
    world.write_digest()


def peers(world: World, archive: InMemoryArchive | None) -> AuditPeers:
    return dataclasses.replace(world.audit_peers(), archive=archive)


def test_old_records_leave_the_log_and_verify_walks_the_archive(world: World) -> None:
    aged(world)
    archive = InMemoryArchive()
    report = export_old_records(peers(world, archive), archive, older_than=RETENTION)
    assert (report.exported, report.digests, report.stopped) == (6, 1, [])
    assert [r.seq for r in world.log.records[DB]] == [7]
    assert [r.position for r in archive.chains[DB]] == [1, 2, 3, 4, 5, 6]
    assert verify_audit(peers(world, archive)).ok
    assert (DB, BreakKind.DELETED) in {(b.chain, b.kind) for b in verify_audit(peers(world, None)).breaks}
    edited = archive.chains[DB][2]
    archive.chains[DB][2] = StoredRecord(3, {**edited.fields, "version": "forged"})
    assert (DB, BreakKind.EDITED) in {(b.chain, b.kind) for b in verify_audit(peers(world, archive)).breaks}


def test_a_forged_claim_in_the_archive_removes_nothing(world: World) -> None:
    aged(world)
    archive = InMemoryArchive()
    first = world.log.records[DB][0]
    forged = {**dict(world.log.read_range(DB, 1, 1)[0].fields), "version": "forged"}
    archive.append(DB, [StoredRecord(1, forged)])  # somebody appended a copy with another field
    report = export_old_records(peers(world, archive), archive, older_than=RETENTION)
    assert report.stopped == [DB] and report.exported == 0
    assert world.log.records[DB][0] == first  # still in the log
    archive.chains[DB] = [StoredRecord(10**6, forged)]  # a claim far ahead
    assert export_old_records(peers(world, archive), archive, older_than=RETENTION).stopped == [DB]
    assert len(world.log.records[DB]) == 7
