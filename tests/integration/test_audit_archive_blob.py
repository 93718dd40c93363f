"""The audit archive (shared/adapters/archive.py) on the real azure-storage-blob client against Azurite:
append blobs, append-position conditions, ranged reads. A fresh container per test.

Azurite does not emulate immutability: container policies are ARM resources (no management plane here),
the data plane answers 501 to blob immutability policies and legal holds, and blobs stay deletable. What is
tested is the adapter's side: whole lines, guarded appends, reading what somebody else put there.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from azure.storage.blob import BlobClient, BlobServiceClient, ContainerClient

from devtools.azurite import AzuriteProcess
from shared.adapters.archive import BLOB_API_VERSION, TAIL_WINDOW, BlobAuditArchive
from shared.domain.audit import StoredRecord
from shared.domain.errors import Conflict, DependencyUnavailable

CHAIN = "kv-fleet:db-password"
BLOB = "kv-fleet/db-password.jsonl"


def _service(azurite: AzuriteProcess) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string, api_version=BLOB_API_VERSION)


@pytest.fixture
def container(azurite: AzuriteProcess) -> Iterator[ContainerClient]:
    created = _service(azurite).create_container(f"archive{uuid.uuid4().hex[:12]}")
    yield created
    created.delete_container()


def _records(first: int, last: int, **extra: Any) -> list[StoredRecord]:
    return [
        StoredRecord(
            position=n,
            fields={"seq": n, "action": "ROTATED", "mac": f"{n:064x}", "prev_mac": f"{n - 1:064x}", **extra},
        )
        for n in range(first, last + 1)
    ]


def test_append_and_read_back_round_trip(container: ContainerClient) -> None:
    archive = BlobAuditArchive(container)
    moment = datetime(2025, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)
    records = [
        StoredRecord(
            1, {"seq": 1, "mac": "a" * 64, "ok": True, "ratio": 0.5, "error": None, "note": 'é\n"x"'}
        ),
        StoredRecord(2, {"seq": 2, "mac": "b" * 64, "time": moment}),
        StoredRecord(3, {"seq": 3, "mac": "c" * 64}),
    ]
    archive.append(CHAIN, records)

    contents = archive.read_chain(CHAIN)
    assert [r.position for r in contents.records] == [1, 2, 3]
    assert contents.records[0].fields == records[0].fields
    assert contents.records[1].fields == {"seq": 2, "mac": "b" * 64, "time": "2025-03-01T12:30:05.123456Z"}
    assert contents.records[2].fields == records[2].fields
    assert contents.head is None
    assert contents.stray_rows == ()
    # One compact JSON line per record, sorted keys, newline-terminated.
    raw = container.get_blob_client(BLOB).download_blob().readall()
    assert raw.splitlines(keepends=True)[2] == (
        b'{"fields":{"mac":"' + b"c" * 64 + b'","seq":3},"position":3}\n'
    )


def test_nothing_archived(container: ContainerClient) -> None:
    archive = BlobAuditArchive(container)
    assert archive.archived_through(CHAIN) == 0
    contents = archive.read_chain(CHAIN)
    assert (contents.records, contents.head, contents.stray_rows) == ([], None, ())
    archive.append(CHAIN, [])
    assert not container.get_blob_client(BLOB).exists()  # nothing to append: not even a blob


def test_resume_after_two_appends(container: ContainerClient) -> None:
    archive = BlobAuditArchive(container)
    archive.append(CHAIN, _records(1, 3))
    assert archive.archived_through(CHAIN) == 3
    archive.append(CHAIN, _records(4, 5))
    assert archive.archived_through(CHAIN) == 5
    assert [r.position for r in archive.read_chain(CHAIN).records] == [1, 2, 3, 4, 5]
    # Another chain of the same vault is another blob; the service chain is archivable too.
    archive.append("kv-fleet:_service", _records(1, 1))
    assert archive.archived_through("kv-fleet:_service") == 1
    assert archive.archived_through(CHAIN) == 5


def test_refuses_records_at_or_before_the_archive_and_out_of_order(container: ContainerClient) -> None:
    archive = BlobAuditArchive(container)
    archive.append(CHAIN, _records(1, 5))
    size = container.get_blob_client(BLOB).get_blob_properties().size
    for stale in (_records(5, 6), _records(3, 7), _records(1, 1)):
        with pytest.raises(ValueError, match="archived through 5"):
            archive.append(CHAIN, stale)
    with pytest.raises(ValueError, match="positions must increase"):
        archive.append(CHAIN, [*_records(7, 8), *_records(6, 6)])
    with pytest.raises(ValueError, match="positions must increase"):
        archive.append(CHAIN, [*_records(6, 6), *_records(6, 6)])
    with pytest.raises(ValueError, match="not a JSON scalar"):
        archive.append(CHAIN, [StoredRecord(6, {"details": {"nested": 1}})])
    assert container.get_blob_client(BLOB).get_blob_properties().size == size
    archive.append(CHAIN, _records(6, 6))  # right after: taken
    assert archive.archived_through(CHAIN) == 6


@pytest.mark.parametrize(
    "name", ["KV:db", "kv:db:x", "kv/../x:db", "_digest", "kv:db_x", "kv:", ":db", "kv db"]
)
def test_refuses_names_that_are_no_chain(container: ContainerClient, name: str) -> None:
    archive = BlobAuditArchive(container)
    for call in (archive.archived_through, archive.read_chain, lambda n: archive.append(n, _records(1, 1))):
        with pytest.raises(ValueError, match="not an archivable chain name"):
            call(name)
    assert list(container.list_blobs()) == []


class _RacingBlob:
    """A BlobClient whose properties read is followed by ``race`` (another writer's append landing between
    the writer's read of the blob's end and its append)."""

    def __init__(self, blob: BlobClient, race: Callable[[], None]) -> None:
        self._blob = blob
        self._race = race

    def get_blob_properties(self, **kwargs: Any) -> Any:
        properties = self._blob.get_blob_properties(**kwargs)
        self._race()
        return properties

    def __getattr__(self, name: str) -> Any:
        return getattr(self._blob, name)


class _RacingContainer:
    """A ContainerClient whose first blob client races (once); later ones are the real thing."""

    def __init__(self, container: ContainerClient, race: Callable[[], None]) -> None:
        self._container = container
        self._race: Callable[[], None] | None = race

    def get_blob_client(self, blob: str) -> Any:
        real, race = self._container.get_blob_client(blob), self._race
        if race is None:
            return real
        self._race = None
        return _RacingBlob(real, race)


def test_two_writers_racing_the_loser_gets_conflict_and_nothing_interleaves(
    container: ContainerClient,
) -> None:
    BlobAuditArchive(container).append(CHAIN, _records(1, 3))
    other = BlobAuditArchive(container)

    def other_writer_lands() -> None:
        other.append(CHAIN, _records(4, 5, writer="other"))

    loser = BlobAuditArchive(cast(ContainerClient, _RacingContainer(container, other_writer_lands)))
    with pytest.raises(Conflict, match="appended to meanwhile") as lost:
        loser.append(CHAIN, _records(4, 6, writer="loser"))
    assert getattr(lost.value.__cause__, "error_code", None) == "AppendPositionConditionNotMet"

    contents = BlobAuditArchive(container).read_chain(CHAIN)
    assert [r.position for r in contents.records] == [1, 2, 3, 4, 5]
    assert [r.fields.get("writer") for r in contents.records[3:]] == ["other", "other"]
    assert contents.stray_rows == ()
    # The loser reads the archive again and carries on after what is there.
    assert loser.archived_through(CHAIN) == 5
    loser.append(CHAIN, _records(6, 6, writer="loser"))
    assert [r.position for r in BlobAuditArchive(container).read_chain(CHAIN).records] == [1, 2, 3, 4, 5, 6]


def test_garbage_lines_from_somebody_else_are_stray_rows(container: ContainerClient) -> None:
    archive = BlobAuditArchive(container)
    archive.append(CHAIN, _records(1, 2))
    blob = container.get_blob_client(BLOB)
    blob.append_block(b"not a record at all\n")
    blob.append_block(b'{"position": 9}\n')  # JSON, but no record
    blob.append_block(b"[" * 100_000 + b"\n")  # deeper than json can parse
    blob.append_block(b"x" * 100)  # unterminated
    archive.append(CHAIN, _records(3, 4))  # starts on a line of its own

    contents = archive.read_chain(CHAIN)
    assert [r.position for r in contents.records] == [1, 2, 3, 4]
    assert contents.records[2].fields == _records(3, 3)[0].fields
    assert contents.stray_rows == ("not a record at all", '{"position": 9}', "[" * 64, "x" * 64)
    assert archive.archived_through(CHAIN) == 4

    blob.append_block(b"trailing garbage\n")  # after the newest record: the record still counts
    assert archive.archived_through(CHAIN) == 4


def test_archived_through_reads_past_a_tail_window_of_no_records(container: ContainerClient) -> None:
    archive = BlobAuditArchive(container)
    # Lines of about 1 KiB: well over one tail window in all, in one call (one block under 4 MiB).
    archive.append(CHAIN, _records(1, 600, details="d" * 1000))
    blob = container.get_blob_client(BLOB)
    assert blob.get_blob_properties().size > 2 * TAIL_WINDOW
    assert archive.archived_through(CHAIN) == 600

    # The tail holds no record at all: it reads further back.
    garbage = b"g" * 1023 + b"\n"
    for _ in range(3):
        blob.append_block(garbage * 100)  # 3 x 100 KiB of stray lines
    assert archive.archived_through(CHAIN) == 600

    # A record line longer than the window itself (a table entity may be up to 1 MiB).
    big = [StoredRecord(601, {f"part{i}": "p" * 64_000 for i in range(5)})]
    archive.append(CHAIN, big)
    assert archive.archived_through(CHAIN) == 601
    contents = archive.read_chain(CHAIN)
    assert [r.position for r in contents.records] == [*range(1, 601), 601]
    assert contents.records[-1].fields == big[0].fields
    assert len(contents.stray_rows) == 300


def test_an_append_larger_than_a_block_is_split_on_whole_lines(container: ContainerClient) -> None:
    archive = BlobAuditArchive(container)
    records = _records(1, 20, details="z" * 300_000)  # about 6 MiB: two blocks at least
    archive.append(CHAIN, records)
    blob = container.get_blob_client(BLOB)
    assert blob.get_blob_properties().append_blob_committed_block_count >= 2
    contents = archive.read_chain(CHAIN)  # read in several ranges too
    assert [r.fields for r in contents.records] == [r.fields for r in records]
    assert contents.stray_rows == ()


def test_a_missing_container_is_unavailability(azurite: AzuriteProcess) -> None:
    archive = BlobAuditArchive(_service(azurite).get_container_client(f"gone{uuid.uuid4().hex[:12]}"))
    for call in (archive.archived_through, archive.read_chain, lambda n: archive.append(n, _records(1, 1))):
        with pytest.raises(DependencyUnavailable, match="archive container does not exist"):
            call(CHAIN)


def test_the_pinned_api_version_works_against_a_strict_azurite() -> None:
    """BLOB_API_VERSION is one Azurite 3.35 accepts without --skipApiVersionCheck."""
    try:
        strict = AzuriteProcess.start(skip_api_version_check=False)
    except RuntimeError as err:
        pytest.fail(f"Azurite could not start: {err}", pytrace=False)
    with strict:
        archive = BlobAuditArchive(_service(strict).create_container("archive"))
        archive.append(CHAIN, _records(1, 2))
        assert archive.archived_through(CHAIN) == 2
        assert len(archive.read_chain(CHAIN).records) == 2
