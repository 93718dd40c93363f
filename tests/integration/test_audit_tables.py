"""The audit trail on real Table Storage (Azurite) with its MAC key in the Key Vault emulator:
concurrent appends keep one chain, and every kind of tampering done on the table is reported."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.data.tables import UpdateMode
from azure.keyvault.secrets import SecretClient

from devtools.azurite import AzuriteProcess
from devtools.keyvault_emulator.process import EmulatorProcess
from shared.adapters.key_vault import (
    AUDIT_KEY_SECRET,
    KeyVaultDigestAnchor,
    KeyVaultMacKeyRing,
    LocalTokenCredential,
)
from shared.adapters.tables import HEAD_ROW, TableAuditLog, row_key
from shared.adapters.tables.batch import TableTransactions
from shared.bootstrap import Container
from shared.config import Settings
from shared.domain.audit import (
    Action,
    Actor,
    ActorType,
    AuditEvent,
    AuditQuery,
    AuditRecord,
    BreakKind,
    ChainTampered,
    readable_event,
    seal_all,
)
from shared.ports import AuditReader
from shared.services.audit import (
    AuditTrail,
    DigestOutcome,
    query_audit,
    repair_chain,
    verify_audit,
    write_digest,
)
from shared.services.findings import StateFindingStore
from shared.services.peers import AuditPeers
from tests.fakes import FixedClock, InMemoryStateStore, RecordingPublisher
from tests.integration.conftest import app_settings

SECRET = "db-password"


class Env:
    def __init__(self, azurite: AzuriteProcess, emulator: EmulatorProcess) -> None:
        self.container = Container(Settings(app_settings(azurite, emulator)))
        self.vault = self.container.settings.key_vault.name
        self.keys = self.container.key_ring
        self.log = TableAuditLog(
            self.container.table_service, self.keys, table="audit" + uuid.uuid4().hex[:10]
        )
        self.clock = FixedClock()
        self.trail = AuditTrail(self.log, self.clock, self.vault)
        # A digest anchor of this test's own (a secret per table), in the real emulator.
        self.anchor = KeyVaultDigestAnchor(self.container.secret_client, name=f"anchor-{self.log_name}")
        self.publisher = RecordingPublisher()

    @property
    def log_name(self) -> str:
        return self.log.table_name

    def peers(self, reader: AuditReader | None = None) -> AuditPeers:
        """What the audit services take, over this table (``reader``: the table as read, when another)."""
        return AuditPeers(
            log=self.log, reader=reader or self.log, keys=self.keys, anchor=self.anchor, trail=self.trail,
            findings=StateFindingStore(InMemoryStateStore()), publisher=self.publisher, clock=self.clock,
        )  # fmt: skip

    def digest(self) -> DigestOutcome:
        self.clock.advance(timedelta(minutes=1))
        return write_digest(self.peers())

    def repair(self, secret: str | None) -> AuditRecord:
        return repair_chain(
            self.peers(), secret_name=secret, operator=Actor("op-7", ActorType.USER), reason="test"
        )

    def trail_events(self) -> list[AuditEvent]:
        rows = self.log.list_records(AuditQuery(vault=self.vault))
        return [e for row in rows if (e := readable_event(row.record.fields)) is not None]

    @property
    def chain(self) -> str:
        return f"{self.vault}:{SECRET}"

    def fill(self, n: int, secret: str = SECRET) -> None:
        for i in range(n):
            self.trail.record(Action.ROTATED, secret_name=secret, version=f"{i:032x}", details={"step": i})

    def breaks(self, secret_name: str | None = None) -> list[tuple[str, BreakKind, int | None]]:
        report = verify_audit(self.peers(), secret_name=secret_name)
        return [(b.chain, b.kind, b.seq) for b in report.breaks]

    def row(self, seq: int) -> dict[str, Any]:
        return dict(self.log.table.get_entity(self.chain, row_key(seq)))


@pytest.fixture
def env(azurite: AzuriteProcess, kv_emulator: EmulatorProcess) -> Iterator[Env]:
    yield Env(azurite, kv_emulator)


def test_mac_key_is_created_in_key_vault_once(env: Env, kv_emulator: EmulatorProcess) -> None:
    key_id, key = env.keys.current()
    client = SecretClient(kv_emulator.url, LocalTokenCredential(), **kv_emulator.client_kwargs())
    stored = client.get_secret(AUDIT_KEY_SECRET)
    assert stored.properties.version == key_id
    assert stored.properties.tags == {"purpose": "audit-hmac-key", "created-by": "secret-lifecycle"}
    other = KeyVaultMacKeyRing(client)  # a second instance reuses the same key
    assert other.current() == (key_id, key)
    assert other.get("0" * 32) is None


class _CountingClient:
    """The real SecretClient, its reads counted."""

    def __init__(self, inner: SecretClient) -> None:
        self.inner = inner
        self.reads: list[str | None] = []

    def get_secret(self, name: str, version: str | None = None, **kw: Any) -> Any:
        self.reads.append(version)
        return self.inner.get_secret(name, version, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_key_ids_from_rows_are_looked_up_only_when_they_are_version_ids(
    env: Env, kv_emulator: EmulatorProcess
) -> None:
    """A key id comes from a row a storage writer may have written: nothing but a Key Vault version id
    reaches the vault, and an id found missing is asked for once."""
    key_id, key = env.keys.current()
    client = _CountingClient(
        SecretClient(kv_emulator.url, LocalTokenCredential(), **kv_emulator.client_kwargs())
    )
    ring = KeyVaultMacKeyRing(client)  # type: ignore[arg-type]
    for forged in ("", "../audit-hmac-key", "x" * 32, "0" * 31, "0" * 33, key_id + "/", "a" * 5000):
        assert ring.get(forged) is None
    assert client.reads == []
    assert ring.get(key_id) == key
    assert ring.get(key_id) == key
    missing = "f" * 32
    assert ring.get(missing) is None
    assert ring.get(missing) is None
    assert client.reads == [key_id, missing]


def test_twenty_concurrent_writers_leave_one_unbroken_chain(env: Env) -> None:
    def writer(n: int) -> None:
        for j in range(4):
            env.trail.record(Action.ROTATION_STARTED, secret_name=SECRET, details={"writer": n, "j": j})

    assert _concurrently(20, writer) == []
    contents = env.log.read_chains(env.chain)[env.chain]
    assert sorted(r.position for r in contents.records) == list(range(1, 81))
    assert contents.head is not None and contents.head.seq == 80
    assert env.breaks() == []


def test_many_chains_appended_at_once_through_a_small_head_cache_stay_whole(env: Env) -> None:
    """Six chains, two writers each, through one log that remembers two heads: every chain's leader
    evicts others' heads while they update theirs (shared/adapters/tables/audit_writer.py, HeadCache)."""
    log = TableAuditLog(env.container.table_service, env.keys, table=env.log_name, max_known_heads=2)
    trail = AuditTrail(log, env.clock, env.vault)
    start = threading.Barrier(12)

    def writer(n: int) -> None:
        start.wait()
        for j in range(5):
            trail.record(Action.ROTATION_STARTED, secret_name=f"s{n % 6}", details={"writer": n, "j": j})

    assert _concurrently(12, writer) == []
    chains = log.read_chains()
    assert {name: sorted(r.position for r in c.records) for name, c in chains.items()} == {
        f"{env.vault}:s{n}": list(range(1, 11)) for n in range(6)
    }
    assert len(log.heads) <= 2
    assert env.breaks() == []


def test_the_trail_holds_on_the_sdk_s_public_transactions(env: Env) -> None:
    """On the table batch's fallback (an SDK version it was not written for): concurrent writers still group
    commit into one chain, each append's answer still gives the head's ETag to remember, and a head
    deleted behind the service's back still stops appends at once."""
    log = TableAuditLog(
        env.container.table_service,
        env.keys,
        table=env.log_name,
        transactions=TableTransactions(installed_version="12.99.0"),
    )
    assert not log.audit_table.transactions.lean
    trail = AuditTrail(log, env.clock, env.vault)

    def writer(n: int) -> None:
        for j in range(3):
            trail.record(Action.ROTATION_STARTED, secret_name=SECRET, details={"writer": n, "j": j})

    assert _concurrently(8, writer) == []
    assert sorted(r.position for r in log.read_chains(env.chain)[env.chain].records) == list(range(1, 25))
    assert len(log.heads) == 1
    assert env.breaks() == []
    log.table.delete_entity(env.chain, HEAD_ROW)
    with pytest.raises(ChainTampered, match="has records but no head"):
        log.append([trail.event(Action.ROTATED, secret_name=SECRET)])


def test_a_log_appends_after_the_head_it_wrote_without_reading_it_again(env: Env) -> None:
    reads: list[str] = []
    get_entity = env.log.table.get_entity

    def counting(partition: str, row: str, **kwargs: Any) -> Any:
        reads.append(row)
        return get_entity(partition, row, **kwargs)

    env.log.table.get_entity = counting  # type: ignore[method-assign]
    env.fill(1)
    assert reads.count(HEAD_ROW) == 1  # a chain this log has not written yet: its head is read
    env.fill(3)
    assert reads.count(HEAD_ROW) == 1  # then each append starts from the head it wrote itself
    assert env.breaks() == []


def test_a_head_another_writer_moved_is_read_again_and_the_chain_stays_one(env: Env) -> None:
    env.fill(2)  # this log now remembers the head it wrote
    other = TableAuditLog(env.container.table_service, env.keys, table=env.log_name)
    AuditTrail(other, env.clock, env.vault).record(
        Action.ROTATED, secret_name=SECRET, details={"by": "other"}
    )
    env.fill(2)  # the remembered head is stale: 412, read again, sealed after the other's record
    contents = env.log.read_chains(env.chain)[env.chain]
    assert sorted(r.position for r in contents.records) == [1, 2, 3, 4, 5]
    assert env.breaks() == []


def test_edited_field(env: Env) -> None:
    env.fill(5)
    row = env.row(3)
    env.log.table.update_entity({**row, "result": "failure"}, mode=UpdateMode.REPLACE)
    assert env.breaks() == [(env.chain, BreakKind.EDITED, 3)]


def test_deleted_middle_record(env: Env) -> None:
    env.fill(5)
    env.log.table.delete_entity(env.chain, row_key(3))
    assert env.breaks() == [(env.chain, BreakKind.DELETED, 3)]


def test_swapped_records(env: Env) -> None:
    env.fill(5)
    two, three = env.row(2), env.row(3)

    def moved(content: dict[str, Any], to: dict[str, Any]) -> dict[str, Any]:
        body = {k: v for k, v in content.items() if k not in ("PartitionKey", "RowKey")}
        return {**body, "PartitionKey": to["PartitionKey"], "RowKey": to["RowKey"]}

    env.log.table.update_entity(moved(three, two), mode=UpdateMode.REPLACE)
    env.log.table.update_entity(moved(two, three), mode=UpdateMode.REPLACE)
    found = env.breaks()
    assert (env.chain, BreakKind.REORDERED, 2) in found
    assert (env.chain, BreakKind.REORDERED, 3) in found


def test_deleted_newest_records(env: Env) -> None:
    env.fill(5)
    env.digest()
    for seq in (4, 5):
        env.log.table.delete_entity(env.chain, row_key(seq))
    # The head still says 5: the cut shows at once.
    assert (env.chain, BreakKind.TRUNCATED, 4) in env.breaks()
    # A careful attacker moves the head back too: the digest still remembers 5.
    three = env.row(3)
    env.log.table.upsert_entity(
        {"PartitionKey": env.chain, "RowKey": HEAD_ROW, "seq": 3, "mac": three["mac"]},
        mode=UpdateMode.REPLACE,
    )
    assert env.breaks() == [(env.chain, BreakKind.TRUNCATED, 4)]


def test_whole_chain_rewritten_without_the_key(env: Env) -> None:
    env.fill(4)
    env.digest()
    key_id, _ = env.keys.current()
    forged_events = [
        AuditEvent(action=Action.ROTATION_SKIPPED, vault=env.vault, secret_name=SECRET, time=env.clock.now())
        for _ in range(4)
    ]
    forged = seal_all(forged_events, 0, "0" * 64, key_id, b"attacker-guess".ljust(32, b"!"))
    table = env.log.table
    for record in forged:
        row = env.row(record.seq)
        row.update({"action": record.event.action.value, "mac": record.mac, "prev_mac": record.prev_mac,
                    "id": record.event.id, "version": "", "details": "{}"})  # fmt: skip
        table.update_entity(row, mode=UpdateMode.REPLACE)
    table.upsert_entity(
        {"PartitionKey": env.chain, "RowKey": HEAD_ROW, "seq": 4, "mac": forged[-1].mac},
        mode=UpdateMode.REPLACE,
    )
    found = env.breaks()
    assert [seq for chain, kind, seq in found if kind == BreakKind.EDITED and chain == env.chain][:4] == [
        1,
        2,
        3,
        4,
    ]
    # Four records; the digest's view of record 4 is the same break, reported once.
    assert sum(1 for _, kind, _ in found if kind == BreakKind.EDITED) == 4


def test_forged_and_deleted_digests(env: Env) -> None:
    env.fill(2)
    for _ in range(3):
        env.digest()
    assert env.breaks() == []
    table = env.log.table
    digest_two = dict(table.get_entity("_digest", row_key(2)))
    table.update_entity({**digest_two, "pages": "[]"}, mode=UpdateMode.REPLACE)  # no heads, it says
    assert ("_digest", BreakKind.FORGED_DIGEST, 2) in env.breaks()
    table.delete_entity("_digest", row_key(2))
    assert ("_digest", BreakKind.DELETED, 2) in env.breaks()


def test_one_secret_verifies_alone(env: Env) -> None:
    env.fill(3)
    env.fill(2, secret="api-key")
    env.log.table.delete_entity(f"{env.vault}:api-key", row_key(1))
    assert env.breaks(SECRET) == []
    assert env.breaks("api-key") == [(f"{env.vault}:api-key", BreakKind.DELETED, 1)]


def test_batched_append_splits_at_the_transaction_limit(env: Env) -> None:
    events = [
        env.trail.event(Action.EXPIRY_WARNING, secret_name=SECRET, details={"i": i}) for i in range(250)
    ]
    records = env.log.append(events)
    assert [r.seq for r in records] == list(range(1, 251))
    assert env.breaks() == []


class LosesFirstAnswer:
    """The log's transactions, the first of which commits but whose answer is lost, the way a dropped
    connection makes azure-core retry a batch that already went through (the retry then meets its own
    head: 412)."""

    def __init__(self, transact: Callable[[Any], Any]) -> None:
        self._transact = transact
        self.lost = 0

    def __call__(self, operations: Any) -> Any:
        result = self._transact(operations)
        if self.lost == 0:
            self.lost += 1
            err = HttpResponseError(message="precondition failed on the retried batch")
            err.status_code = 412
            raise err
        return result


def test_a_lost_answer_does_not_write_the_records_twice(env: Env) -> None:
    env.fill(2)
    flaky = LosesFirstAnswer(env.log.audit_table.transact)
    env.log.audit_table.transact = flaky  # type: ignore[method-assign]
    records = env.log.append([env.trail.event(Action.ROTATED, secret_name=SECRET, version="v-new")])
    assert flaky.lost == 1
    assert [r.seq for r in records] == [3]
    contents = env.log.read_chains(env.chain)[env.chain]
    assert sorted(r.position for r in contents.records) == [1, 2, 3]
    assert env.breaks() == []


def test_rows_that_are_not_records_are_reported_and_skipped_by_queries(env: Env) -> None:
    env.fill(2)
    copy = env.row(1)
    copy["RowKey"] = "0" + copy["RowKey"]  # int() would read it as the same position
    env.log.table.create_entity(copy)
    env.log.table.create_entity({"PartitionKey": env.chain, "RowKey": "x", "vault": env.vault, "time": "z"})
    found = env.breaks()
    assert sorted(kind for _, kind, _ in found) == [BreakKind.UNEXPECTED, BreakKind.UNEXPECTED]
    page = query_audit(env.log, env.keys, AuditQuery(vault=env.vault, secret_name=SECRET))
    assert [item.seq for item in page.items] == [2, 1]


def test_nonsense_in_a_head_or_digest_row_is_reported_not_fatal(env: Env) -> None:
    env.fill(2)
    env.digest()
    env.log.table.upsert_entity(
        {"PartitionKey": env.chain, "RowKey": HEAD_ROW, "seq": "two", "mac": "x"}, mode=UpdateMode.REPLACE
    )
    env.log.table.create_entity({"PartitionKey": "_digest", "RowKey": "zz", "seq": "?"})
    found = env.breaks()
    assert (env.chain, BreakKind.UNEXPECTED, None) in found  # the rewritten head row
    assert ("_digest", BreakKind.FORGED_DIGEST, 0) in found  # the row that is not a digest


class CountsBatches:
    """The log's real transactions, counted; the first one is slow, so callers queue up behind it, and a
    batch holding a row marked ``poison`` is refused with 400 the way Azure refuses a bad row."""

    def __init__(self, transact: Callable[[Any], Any]) -> None:
        self._transact = transact
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, operations: Any) -> Any:
        with self.lock:
            self.batches.append(len(operations) - 1)
            first = len(self.batches) == 1
        if first:
            time.sleep(0.5)
        if any("poison" in str(op[1].get("details", "")) for op in operations):
            err = HttpResponseError(message="InvalidInput: one of the request inputs is not valid")
            err.status_code = 400
            raise err
        return self._transact(operations)


@pytest.mark.parametrize("poisoned", [False, True])
def test_concurrent_appends_to_one_chain_are_group_committed(env: Env, poisoned: bool) -> None:
    env.fill(1)
    counting = CountsBatches(env.log.audit_table.transact)
    env.log.audit_table.transact = counting  # type: ignore[method-assign]
    failures: list[BaseException] = []

    def writer(i: int) -> None:
        note = "poison" if poisoned and i == 7 else "ok"
        try:
            env.trail.record(Action.ACCESS_DENIED, details={"i": i, "note": note})
        except BaseException as err:  # collected and asserted on below
            failures.append(err)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
        time.sleep(0.002)
    for thread in threads:
        thread.join(60)
    service_chain = f"{env.vault}:_service"
    stored = env.log.read_chains(service_chain)[service_chain].records
    # The first caller's slow transaction lets the other 39 queue up: they go as one batch.
    assert counting.batches[:2] == [1, 39], counting.batches
    if poisoned:
        # Only the poisoned caller fails; the callers batched with it are retried on their own.
        assert [type(f).__name__ for f in failures] == ["AuditUnavailable"]
        assert len(stored) == 39 and len(counting.batches) == 2 + 39
    else:
        assert failures == []
        assert len(stored) == 40 and len(counting.batches) == 2
    assert env.breaks() == []


def _concurrently(writers: int, work: Callable[[int], None]) -> list[BaseException]:
    """Run ``work(n)`` for each of ``writers`` threads at once; what any of them raised."""
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            work(n)
        except BaseException as err:  # collected and returned
            errors.append(err)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return errors
