"""Retention over Azurite's tables and blobs, with the MAC key and the anchor in the Key Vault emulator:
records older than the retention leave the table (and the query index) for the append-blob archive, verify
walks the archive and the table as one chain, and what an intruder does to either is a break."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from devtools.azurite import AzuriteProcess
from devtools.keyvault_emulator.process import EmulatorProcess
from shared.adapters.archive import BLOB_API_VERSION, BlobAuditArchive
from shared.adapters.tables import row_key
from shared.domain.audit import Action, AuditQuery, BreakKind, StoredRecord
from shared.services.audit import export_old_records, verify_audit
from shared.services.peers import AuditPeers
from tests.integration.test_audit_tables import Env

RETENTION = timedelta(days=400)
OLD = 12  # records per secret before the cutoff


@pytest.fixture
def container(azurite: AzuriteProcess) -> Iterator[ContainerClient]:
    service = BlobServiceClient.from_connection_string(
        azurite.connection_string, api_version=BLOB_API_VERSION
    )
    created = service.create_container(f"archive{uuid.uuid4().hex[:12]}")
    yield created
    created.delete_container()


@pytest.fixture
def env(azurite: AzuriteProcess, kv_emulator: EmulatorProcess) -> Env:
    return Env(azurite, kv_emulator)


def peers(env: Env, container: ContainerClient | None) -> AuditPeers:
    archive = BlobAuditArchive(container) if container is not None else None
    return dataclasses.replace(env.peers(), archive=archive)


def aged(env: Env) -> None:
    """Two secrets with OLD records each, 500 days ago, then one recent record each, sealed."""
    for secret in ("db-password", "api-key"):
        env.fill(OLD, secret)
    env.clock.advance(timedelta(days=500))
    for secret in ("db-password", "api-key"):
        env.fill(1, secret)
    env.digest()


def export(env: Env, container: ContainerClient) -> object:
    return export_old_records(peers(env, container), BlobAuditArchive(container), older_than=RETENTION)


def breaks(env: Env, container: ContainerClient | None) -> set[tuple[str, BreakKind]]:
    return {(b.chain, b.kind) for b in verify_audit(peers(env, container)).breaks}


def test_old_records_move_to_the_archive_and_verify_covers_both(env: Env, container: ContainerClient) -> None:
    aged(env)
    before = verify_audit(peers(env, container))
    report = export_old_records(peers(env, container), BlobAuditArchive(container), older_than=RETENTION)
    assert (report.exported, report.stopped, report.complete) == (2 * OLD, [], True)
    archive = BlobAuditArchive(container)
    for secret in ("db-password", "api-key"):
        chain = f"{env.vault}:{secret}"
        assert archive.archived_through(chain) == OLD
        assert env.log.read_range(chain, 1, OLD) == []  # gone from the table
        assert [r.position for r in env.log.read_range(chain, 1, OLD + 1)] == [OLD + 1]
    # Gone from the query index too: the oldest records are in the archive only.
    old = AuditQuery(vault=env.vault, until=env.clock.now() - RETENTION)
    assert [r for r in env.log.page_records(old, 50)[0] if r.chain != f"{env.vault}:_service"] == []
    assert (f"{env.vault}:api-key", BreakKind.DELETED) in breaks(env, None)  # the archive makes it whole
    after = verify_audit(peers(env, container))
    assert (after.status, after.records) == ("ok", before.records + 1)  # + the RECORDS_ARCHIVED record
    [archived] = [e for e in env.trail_events() if e.action == Action.RECORDS_ARCHIVED]
    assert (archived.details["exported"], archived.details["digests"]) == (2 * OLD, 1)
    # A copy of the digest chain beside the records, each line the table's digest.
    [digest] = env.log.read_digests()
    copied = archive.read_chain(f"{env.vault}:_digests").records
    assert [(r.position, r.fields["mac"]) for r in copied] == [(digest.seq, digest.mac)]
    # Nothing more to do the next time.
    env.digest()
    assert export_old_records(peers(env, container), archive, older_than=RETENTION).exported == 0


def test_what_an_intruder_does_to_the_archive_is_a_break(env: Env, container: ContainerClient) -> None:
    aged(env)
    export(env, container)
    chain = f"{env.vault}:db-password"
    blob = container.get_blob_client(f"{env.vault}/db-password.jsonl")
    lines = blob.download_blob().readall().decode().splitlines()
    third = json.loads(lines[2])
    third["fields"]["version"] = "f" * 32  # an edited copy, appended (the only write the policy allows)
    blob.append_block((json.dumps(third, sort_keys=True) + "\n").encode())
    assert breaks(env, container) == {(chain, BreakKind.EDITED)}
    blob.delete_blob()  # Azure's retention policy refuses this; Azurite does not emulate it
    assert (chain, BreakKind.DELETED) in breaks(env, container)


def test_a_run_that_died_between_the_archive_and_the_table_is_finished(
    env: Env, container: ContainerClient
) -> None:
    aged(env)
    chain = f"{env.vault}:db-password"
    archive = BlobAuditArchive(container)
    archive.append(chain, sorted(env.log.read_range(chain, 1, 5), key=lambda r: r.position))  # then died
    report = export(env, container)
    assert (report.removed_after_crash, report.exported) == (5, 2 * OLD - 5)  # type: ignore[attr-defined]
    assert [r.position for r in archive.read_chain(chain).records] == list(range(1, OLD + 1))
    assert verify_audit(peers(env, container)).status == "ok"


def test_an_edited_record_stops_its_chain_export_there(env: Env, container: ContainerClient) -> None:
    aged(env)
    chain = f"{env.vault}:db-password"
    row = dict(env.log.table.get_entity(chain, row_key(5)))
    row["version"] = "e" * 32
    env.log.table.update_entity(row)
    report = export(env, container)
    assert report.stopped == [chain]  # type: ignore[attr-defined]
    assert BlobAuditArchive(container).archived_through(chain) == 4
    assert (chain, BreakKind.EDITED) in breaks(env, container)


def test_a_line_appended_to_the_archive_removes_nothing_from_the_table(
    env: Env, container: ContainerClient
) -> None:
    aged(env)
    chain = f"{env.vault}:db-password"
    genuine = sorted(env.log.read_range(chain, 1, 3), key=lambda r: r.position)
    forged = dict(genuine[2].fields, version="d" * 32)  # claims record 3, with a MAC that is not its own
    archive = BlobAuditArchive(container)
    archive.append(chain, [*genuine[:2], StoredRecord(3, forged)])
    report = export(env, container)
    assert report.stopped == [chain]  # type: ignore[attr-defined]
    assert len(env.log.read_range(chain, 1, OLD)) == OLD  # the table's records stay
    # The table holds the whole chain, so verify does not need the archive; the run says where it stopped.
    [archived] = [e for e in env.trail_events() if e.action == Action.RECORDS_ARCHIVED]
    assert archived.details["stopped"] == [chain]
    # A line claiming a position far ahead stops the export too, and deletes nothing.
    other = f"{env.vault}:api-key"  # exported by the run above, but for its newest record
    env.fill(3, "api-key")
    env.digest()
    [newest] = env.log.read_range(other, OLD + 1, OLD + 1)
    archive.append(other, [StoredRecord(10**6, dict(newest.fields))])
    assert other in export(env, container).stopped  # type: ignore[attr-defined]
    assert len(env.log.read_range(other, 1, OLD + 4)) == 4


def test_the_archive_keeps_the_digest_chain_a_table_writer_deletes(
    env: Env, container: ContainerClient
) -> None:
    aged(env)
    env.digest()
    export(env, container)
    env.digest()
    assert export(env, container).digests == 1  # type: ignore[attr-defined]  # only the new one
    archive = BlobAuditArchive(container)
    copied = archive.read_chain(f"{env.vault}:_digests").records
    assert [r.position for r in copied] == [1, 2, 3]
    env.log.table.delete_entity("_digest", row_key(2))  # gone from the table, kept in the archive
    assert ("_digest", BreakKind.DELETED) in breaks(env, container)
    assert copied[1].fields["mac"]  # the archive still says what digest 2 was
    # A line appended to the archive's copy that is not the table's digest is a break of its own.
    forged = dict(copied[2].fields, mac="f" * 64)
    container.get_blob_client(f"{env.vault}/_digests.jsonl").append_block(
        (json.dumps({"fields": forged, "position": 3}, sort_keys=True) + "\n").encode()
    )
    assert ("_digest", BreakKind.UNEXPECTED) in breaks(env, container)
