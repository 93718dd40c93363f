"""The audit index on real Table Storage (Azurite): a query reads one page, whatever the trail's size; it
shows only records the service wrote; a record the append did not index (a crash, a failed write) is
indexed by the next digest; a cursor is refused for another query."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.data.tables import TableClient, TableServiceClient

from devtools.azurite import REPO_ROOT, AzuriteProcess
from devtools.keyvault_emulator.process import EmulatorProcess
from shared.adapters.key_vault import KeyVaultDigestAnchor
from shared.adapters.tables import TableAuditLog
from shared.adapters.tables.batch import TableTransactions
from shared.adapters.tables.index import index_table
from shared.bootstrap import Container
from shared.config import Settings
from shared.domain.audit import Action, Actor, ActorType, AuditQuery, Result
from shared.domain.audit.aggregates import authentic_aggregate, authentic_coverage
from shared.services.audit import (
    AuditTrail,
    InvalidCursor,
    aggregate_hours,
    query_audit,
    summarize_audit,
    write_digest,
)
from shared.services.findings import StateFindingStore
from shared.services.peers import AuditPeers
from tests.fakes import FixedClock, InMemoryStateStore, RecordingPublisher
from tests.integration.conftest import app_settings

ALICE = Actor("alice@example.com", ActorType.USER, "203.0.113.7", "curl/8")
BOB = Actor("bob/ops#1?", ActorType.USER)  # characters no table key may hold


class Requests:
    """An azure-core ``raw_response_hook``: the table requests made, by method."""

    def __init__(self) -> None:
        self.by_method: Counter[str] = Counter()

    def __call__(self, response: Any) -> None:
        self.by_method[response.http_request.method] += 1

    def gets(self) -> int:
        return self.by_method["GET"]


class Env:
    def __init__(self, azurite: AzuriteProcess, emulator: EmulatorProcess) -> None:
        container = Container(Settings(app_settings(azurite, emulator)))
        self.vault = container.settings.key_vault.name
        self.keys = container.key_ring
        self.requests = Requests()
        self.tables = TableServiceClient.from_connection_string(
            azurite.connection_string, raw_response_hook=self.requests
        )
        self.log = TableAuditLog(self.tables, self.keys, table="audit" + uuid.uuid4().hex[:10])
        self.clock = FixedClock()
        self.trail = AuditTrail(self.log, self.clock, self.vault)
        self.anchor = KeyVaultDigestAnchor(container.secret_client, name=f"anchor-{self.log.table_name}")

    def peers(self) -> AuditPeers:
        return AuditPeers(
            log=self.log, reader=self.log, keys=self.keys, anchor=self.anchor, trail=self.trail,
            findings=StateFindingStore(InMemoryStateStore()), publisher=RecordingPublisher(),
            clock=self.clock,
        )  # fmt: skip

    def record(
        self, n: int, *, secrets: int = 5, actor: Actor = ALICE, action: Action = Action.ROTATED
    ) -> None:
        for i in range(n):
            self.clock.advance(timedelta(seconds=7))
            self.trail.record(action, secret_name=f"secret-{i % secrets}", version=f"{i:032x}", actor=actor)

    def query(self, continuation: str | None = None, **filters: Any) -> Any:
        return query_audit(self.log, self.keys, AuditQuery(vault=self.vault, **filters), continuation)

    def index_rows(self) -> list[dict[str, Any]]:
        self.log.records_index.flush()
        return list(self.tables.get_table_client(self.log.records_index.table_name).list_entities())


@pytest.fixture
def env(azurite: AzuriteProcess, kv_emulator: EmulatorProcess) -> Iterator[Env]:
    yield Env(azurite, kv_emulator)


def _pages(env: Env, limit: int, **filters: Any) -> tuple[list[Any], list[int]]:
    """Every page of a query: the records and the GET requests each page cost."""
    items: list[Any] = []
    costs: list[int] = []
    token = None
    while True:
        before = env.requests.gets()
        page = env.query(token, limit=limit, **filters)
        costs.append(env.requests.gets() - before)
        items += page.items
        token = page.continuation
        if token is None:
            return items, costs


def test_each_record_is_indexed_by_time_actor_and_action(env: Env) -> None:
    env.record(3)
    rows = env.index_rows()
    assert len(rows) == 9
    assert Counter(r["PartitionKey"].split(":")[0] for r in rows) == {"t": 3, "a": 3, "c": 3}
    assert {r["chain"] for r in rows} == {f"{env.vault}:secret-{i}" for i in range(3)}
    assert all(r["mac"] and r["seq"] == 1 for r in rows)


def test_pages_read_newest_first_across_secrets_one_request_each(env: Env) -> None:
    env.record(23)
    env.record(4, actor=BOB, action=Action.REVOKED)
    everything, costs = _pages(env, limit=5)
    assert [i.actor_id for i in everything[:4]] == [BOB.id] * 4
    times = [i.time for i in everything]
    assert times == sorted(times, reverse=True) and len(everything) == 27
    assert len({(i.chain, i.seq) for i in everything}) == 27
    assert max(costs) == 1, costs

    bobs, costs = _pages(env, limit=3, actor=BOB.id)
    assert [i.actor_id for i in bobs] == [BOB.id] * 4 and max(costs) == 1
    revoked, _ = _pages(env, limit=2, action=Action.REVOKED)
    assert len(revoked) == 4
    one, costs = _pages(env, limit=2, secret_name="secret-1")
    assert [i.seq for i in one] == [6, 5, 4, 3, 2, 1] and max(costs) == 1
    both, _ = _pages(env, limit=50, actor=ALICE.id, action=Action.REVOKED)
    assert both == []


def test_a_time_window_reads_only_its_days(env: Env) -> None:
    start = env.clock.now()
    for day in range(4):
        if day:
            env.clock.advance(timedelta(days=1))
        env.trail.record(Action.ROTATED, secret_name="db-password", details={"day": day})
    window = env.query(since=start + timedelta(days=1), until=start + timedelta(days=3), limit=10)
    assert [i.details["day"] for i in window.items] == [2, 1]
    assert window.continuation is None


def test_an_index_row_the_service_did_not_write_is_not_shown(env: Env) -> None:
    env.record(2)
    rows = env.index_rows()
    table = env.tables.get_table_client(env.log.records_index.table_name)
    newest = min((r for r in rows if r["PartitionKey"].startswith("t:")), key=lambda r: r["RowKey"])
    forged = {**newest, "RowKey": "0" + newest["RowKey"][1:], "actor_id": "mallory", "seq": 99}
    table.create_entity(forged)
    edited = {**newest, "details": '{"step":"forged"}'}
    table.upsert_entity(edited)
    page = env.query(limit=10)
    assert [i.actor_id for i in page.items] == [ALICE.id]  # the forgery and the edited copy: left out
    assert page.continuation is None


def test_a_record_the_append_did_not_index_is_indexed_by_the_next_digest(env: Env) -> None:
    env.record(3)
    write_digest(env.peers())
    table = env.tables.get_table_client(env.log.records_index.table_name)
    env.record(2, secrets=1)
    for row in env.index_rows():  # a crash lost the newest record's index rows
        if row["chain"] == f"{env.vault}:secret-0" and row["seq"] == 3:
            table.delete_entity(row["PartitionKey"], row["RowKey"])
    assert len(env.query(limit=50).items) == 4
    env.clock.advance(timedelta(hours=1))
    write_digest(env.peers())
    assert len(env.query(limit=50).items) == 5
    assert len(env.index_rows()) == 15


def test_a_cursor_is_refused_for_another_query_or_an_older_form(env: Env) -> None:
    env.record(4)
    token = env.query(limit=2).continuation
    assert token is not None
    with pytest.raises(InvalidCursor):
        env.query(token, limit=2, actor=ALICE.id)
    assert len(env.query(token, limit=2).items) == 2


class RefusingActorCopies(TableTransactions):
    """Transactions as the table takes them, but those writing actor-index rows are refused (503)."""

    def submit(self, table: TableClient, operations: Iterable[Any]) -> list[dict[str, Any]]:
        operations = list(operations)
        if any(op[1]["PartitionKey"].startswith("a:") for op in operations):
            raise ServiceRequestError("the table service did not answer")
        return super().submit(table, operations)


def test_a_record_whose_copies_were_not_all_written_is_indexed_by_the_next_digest(env: Env) -> None:
    broken = TableAuditLog(env.tables, env.keys, table=env.log.table_name, transactions=RefusingActorCopies())
    AuditTrail(broken, env.clock, env.vault).record(Action.ROTATED, secret_name="db-password", actor=ALICE)
    broken.records_index.flush()
    kinds = Counter(row["PartitionKey"][0] for row in env.index_rows())
    assert kinds == {"c": 1}  # no actor copy, so no t: copy either: the digest sees it missing
    assert env.query(limit=5).items == [] and env.query(limit=5, actor=ALICE.id).items == []
    write_digest(env.peers())
    assert Counter(row["PartitionKey"][0] for row in env.index_rows()) == {"a": 1, "c": 1, "t": 1}
    assert [i.actor_id for i in env.query(limit=5, actor=ALICE.id).items] == [ALICE.id]


def test_the_summary_reads_sealed_hourly_aggregates(env: Env) -> None:
    for day in range(3):
        for hour in range(0, 24, 3):
            env.clock.advance(timedelta(hours=3))
            action = Action.ROTATION_FAILED if hour == 9 else Action.ROTATED
            result = Result.FAILURE if hour == 9 else Result.SUCCESS
            env.trail.record(action, result=result, secret_name=f"secret-{day}", actor=ALICE)
    peers = env.peers()
    before_aggregates = summarize_audit([peers], secret_name=None, days=2).to_json()
    assert aggregate_hours(peers) > 0
    # Read back as the service sealed them (a summary that ignored them would still add up).
    assert authentic_coverage(env.log.read_coverage(env.vault), env.keys.get) is not None
    stored = env.log.read_aggregates(env.vault, env.clock.now() - timedelta(days=3), env.clock.now())
    assert len(stored) == 23 and all(
        authentic_aggregate(fields, env.keys.get) for _, fields in stored
    )  # the newest hour is not complete
    requests = env.requests.gets()
    summary = summarize_audit([peers], secret_name=None, days=2).to_json()
    assert summary == before_aggregates
    assert summary["failures"]["count"] == 2 and summary["total"] == 17  # 48 h of one every 3 h, both ends
    # The coverage mark, the aggregates (one query), and the index for the hours they do not cover.
    assert env.requests.gets() - requests <= 4


def test_a_process_that_ends_writes_its_pending_index_rows_first(azurite: AzuriteProcess) -> None:
    """The CLI appends (a repair) and exits at once: the background writer's rows are not lost with it."""
    table = "audit" + uuid.uuid4().hex[:10]
    code = textwrap.dedent(
        f"""
        from datetime import UTC, datetime
        from azure.data.tables import TableServiceClient
        from shared.adapters.tables import TableAuditLog
        from shared.domain.audit import Action
        from shared.services.audit import AuditTrail

        class Keys:
            def current(self): return "k1", b"\\x01" * 32
            def get(self, key_id): return b"\\x01" * 32

        class Clock:
            def now(self): return datetime.now(UTC)

        tables = TableServiceClient.from_connection_string({azurite.connection_string!r})
        log = TableAuditLog(tables, Keys(), table={table!r})
        AuditTrail(log, Clock(), "fleet").record(Action.ROTATED, secret_name="db-password")
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, timeout=60)
    index = TableServiceClient.from_connection_string(azurite.connection_string).get_table_client(
        index_table(table)
    )
    assert sorted(row["PartitionKey"][0] for row in index.list_entities()) == ["a", "c", "t"]
