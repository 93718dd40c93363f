"""An intruder with write access to the storage account (and none to the vault) covers their tracks on
real Table Storage (Azurite), with the MAC key and the digest anchor in the Key Vault emulator. Every
attempt is reported ``broken`` before the next digest and after it; a deleted head stops appends at once
and is repaired on record, through the CLI, after which refusals are recorded again; a lost digest is held,
then acknowledged by two people, and stays visible as acknowledged."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ServiceResponseError
from azure.data.tables import UpdateMode

from devtools.azurite import AzuriteProcess
from devtools.keyvault_emulator.process import EmulatorProcess
from shared.adapters.tables import AUDIT_TABLE, HEAD_ROW, row_key
from shared.adapters.tables.rows import DIGEST_PAGES
from shared.domain.audit import Action, Actor, ActorType, BreakKind, ChainHead, ChainTampered
from shared.domain.errors import Conflict, NotPermitted
from shared.services.audit import (
    AuditUnavailable,
    acknowledge_incident,
    open_incident,
    repair_chain,
    verification,
    verify_audit,
)
from tests.integration.app_stack import Stack, audit_rows
from tests.integration.test_audit_tables import SECRET, Env

REPO = Path(__file__).resolve().parents[2]
DIGEST = "_digest"


@pytest.fixture
def env(azurite: AzuriteProcess, kv_emulator: EmulatorProcess) -> Iterator[Env]:
    yield Env(azurite, kv_emulator)


def kinds(env: Env) -> set[tuple[str, BreakKind]]:
    return {(chain, kind) for chain, kind, _ in env.breaks()}


def broken_before_and_after_the_next_digest(
    env: Env, expected: tuple[str, BreakKind], after: tuple[str, BreakKind] | None = None
) -> None:
    """``after``: what verify says once the next digest sealed past a break in the digest chain (it
    holds the break: the anchored digest is then the new one, and the lost ones are missing)."""
    assert expected in kinds(env)
    for _ in range(2):
        env.digest()
        assert (after or expected) in kinds(env)


HELD = (DIGEST, BreakKind.DELETED)


def test_cut_tail_with_rewound_head(env: Env) -> None:
    env.fill(6)
    env.digest()
    for seq in (5, 6):
        env.log.table.delete_entity(env.chain, row_key(seq))
    four = env.row(4)
    env.log.table.upsert_entity(
        {"PartitionKey": env.chain, "RowKey": HEAD_ROW, "seq": 4, "mac": four["mac"]}, mode=UpdateMode.REPLACE
    )
    broken_before_and_after_the_next_digest(env, (env.chain, BreakKind.TRUNCATED))
    held = [d for d in env.log.read_digests() if d.held]
    assert held and all(d.heads[env.chain].seq == 6 for d in held)
    [alarm] = [e for e in env.trail_events() if e.action == Action.TAMPERING_DETECTED]
    assert alarm.details["breaks"][0]["chain"] == env.chain
    assert [n.type for n in env.publisher.sent] == ["SecretLifecycle.AuditTampering"]


def test_whole_chain_deleted_with_its_head(env: Env) -> None:
    env.fill(3)
    env.fill(1, secret="api-key")
    env.digest()
    for entity in list(env.log.table.query_entities("PartitionKey eq @p", parameters={"p": env.chain})):
        env.log.table.delete_entity(env.chain, entity["RowKey"])
    broken_before_and_after_the_next_digest(env, (env.chain, BreakKind.TRUNCATED))
    assert env.breaks("api-key") == []


def test_deleted_head_stops_appends_at_once_and_is_repaired_on_record(env: Env) -> None:
    env.fill(4)
    env.digest()
    env.log.table.delete_entity(env.chain, HEAD_ROW)
    broken_before_and_after_the_next_digest(env, (env.chain, BreakKind.MISSING_HEAD))

    started = time.monotonic()
    with pytest.raises(AuditUnavailable, match="tampering suspected") as caught:
        env.trail.record(Action.ROTATED, secret_name=SECRET)
    assert isinstance(caught.value.__cause__, ChainTampered)
    assert time.monotonic() - started < 2  # was 50 retries and 7.5 s, then the record was dropped
    assert len(env.log.read_chains(env.chain)[env.chain].records) == 4

    record = env.repair(SECRET)
    assert (record.seq, record.event.action) == (5, Action.CHAIN_REPAIRED)
    env.fill(1)
    assert env.breaks() == []
    env.digest()
    assert env.breaks() == []


def test_repair_refuses_a_cut_chain(env: Env) -> None:
    env.fill(5)
    env.digest()
    env.log.table.delete_entity(env.chain, row_key(5))
    env.log.table.delete_entity(env.chain, HEAD_ROW)
    with pytest.raises(Conflict, match="does not verify"):
        env.repair(SECRET)
    assert (env.chain, BreakKind.TRUNCATED) in kinds(env)


@pytest.mark.parametrize("with_head", [False, True])
def test_newest_digest_deleted(env: Env, with_head: bool) -> None:
    env.fill(2)
    env.digest()
    env.digest()
    env.log.table.delete_entity(DIGEST, row_key(2))
    if with_head:
        one = dict(env.log.table.get_entity(DIGEST, row_key(1)))
        env.log.table.upsert_entity(
            {"PartitionKey": DIGEST, "RowKey": HEAD_ROW, "seq": 1, "mac": one["mac"]}, mode=UpdateMode.REPLACE
        )
    broken_before_and_after_the_next_digest(env, (DIGEST, BreakKind.ANCHOR_MISMATCH), HELD)
    sealed = sorted(env.log.read_digests(), key=lambda d: d.seq)
    assert [d.seq for d in sealed] == [1, 3, 4]  # sealing went on, holding the lost digest
    assert [d.held_digests for d in sealed] == [(), ((2, 2),), ()]


def test_all_digests_deleted(env: Env) -> None:
    env.fill(2)
    env.digest()
    env.digest()
    for entity in list(env.log.table.query_entities("PartitionKey eq @p", parameters={"p": DIGEST})):
        env.log.table.delete_entity(DIGEST, entity["RowKey"])
    broken_before_and_after_the_next_digest(env, (DIGEST, BreakKind.ANCHOR_MISMATCH), HELD)


def test_every_row_deleted(env: Env) -> None:
    env.fill(3)
    env.digest()
    for entity in list(env.log.table.list_entities()):
        env.log.table.delete_entity(entity["PartitionKey"], entity["RowKey"])
    report_before = kinds(env)
    assert (DIGEST, BreakKind.ANCHOR_MISMATCH) in report_before
    broken_before_and_after_the_next_digest(env, (DIGEST, BreakKind.ANCHOR_MISMATCH), HELD)


def test_table_dropped_and_recreated(env: Env) -> None:
    env.fill(3)
    env.digest()
    service = env.container.table_service
    service.delete_table(env.log_name)
    service.create_table(env.log_name)
    env.fill(1)  # the service goes on writing into the new, empty table
    broken_before_and_after_the_next_digest(env, (DIGEST, BreakKind.ANCHOR_MISMATCH), HELD)


# -- through the app: the service chain's head deleted, refusals, the operator's repair -------------------


def denied_records(stack: Stack) -> int:
    return sum(1 for r in audit_rows(stack) if r["action"] == "ACCESS_DENIED")


def test_refusals_are_recorded_again_after_the_cli_repairs_a_deleted_head(stack: Stack) -> None:
    for _ in range(3):
        assert stack.client.get("/api/audit", principal=None)[0] == 401
    assert stack.client.post("/admin/functions/audit_digest", {"input": ""})[0] == 202
    assert stack.host.wait_for_output("audit digest 1 sealed", timeout=30), stack.host.output()
    table = stack.tables().get_table_client(AUDIT_TABLE)
    [service_chain] = {r["PartitionKey"] for r in audit_rows(stack)}
    table.delete_entity(service_chain, HEAD_ROW)

    status, body = stack.client.get("/api/audit/verify?fresh=true")
    assert (status, body["status"]) == (200, "broken")
    assert {(b["chain"], b["kind"]) for b in body["breaks"]} == {(service_chain, "missing_head")}
    started = time.monotonic()
    assert stack.client.get("/api/audit", principal=None)[0] == 401  # the refusal stands...
    assert time.monotonic() - started < 5  # ...at once, no retry storm
    assert denied_records(stack) == 3  # ...but its record could not be chained: fail closed, logged
    assert stack.host.wait_for_output("tampering suspected", timeout=10), stack.host.output()

    cli = [sys.executable, "-m", "shared.entrypoints.cli", "repair", "--service"]
    cli += ["--settings", str(stack.settings_file), "--operator", "oncall@example.com", "--reason", "INC-7"]
    env = {"PATH": "/usr/bin:/bin", **stack.env}
    result = subprocess.run(cli, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CHAIN_REPAIRED is record 4" in result.stdout
    again = subprocess.run(cli, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert again.returncode == 1 and "nothing to repair" in again.stderr

    assert stack.client.get("/api/audit", principal=None)[0] == 401
    assert denied_records(stack) == 4
    [repair] = [r for r in audit_rows(stack) if r["action"] == "CHAIN_REPAIRED"]
    assert repair["actor_id"] == "oncall@example.com"
    status, body = stack.client.get("/api/audit/verify?fresh=true")
    assert body["status"] == "ok", body


# -- found in review: each of these passed (wrongly) before the fix -------------------------------------


def test_a_rewound_digest_head_does_not_halt_digests(env: Env) -> None:
    env.fill(3)
    env.digest()
    env.digest()
    one = env.log.table.get_entity(DIGEST, row_key(1))
    env.log.table.upsert_entity(
        {"PartitionKey": DIGEST, "RowKey": HEAD_ROW, "seq": 1, "mac": one["mac"]}, mode=UpdateMode.REPLACE
    )
    assert env.digest().digest.seq == 3  # the head row is only a guard: the writer follows the anchor
    assert env.breaks() == []


def test_a_digest_head_moved_ahead_is_not_sealed_after(env: Env) -> None:
    env.fill(3)
    env.digest()
    env.log.table.upsert_entity(
        {"PartitionKey": DIGEST, "RowKey": HEAD_ROW, "seq": 5, "mac": "f" * 64}, mode=UpdateMode.REPLACE
    )
    outcome = env.digest()
    first = min(env.log.read_digests(), key=lambda d: d.seq)
    assert (outcome.digest.seq, outcome.digest.prev_mac) == (2, first.mac)
    env.digest()
    assert env.breaks() == []


class CommitsThenLosesAnswer:
    """The batch commits, then the answer is lost to a read timeout (azure-core does not retry a POST)."""

    def __init__(self, transact: Callable[[Any], Any]) -> None:
        self._transact, self.lost = transact, 0

    def __call__(self, operations: Any) -> Any:
        result = self._transact(operations)
        if not self.lost:
            self.lost += 1
            raise ServiceResponseError("read timed out")
        return result


def test_an_ambiguous_answer_is_not_reported_as_not_written(env: Env) -> None:
    env.fill(1)
    losing = CommitsThenLosesAnswer(env.log.audit_table.transact)
    env.log.audit_table.transact = losing  # type: ignore[method-assign]
    event = env.trail.event(Action.REVOKED, secret_name=SECRET, version="v9")
    [record] = env.trail.record_all([event])
    assert record.seq == 2
    assert [e.id for e in env.trail_events() if e.action == Action.REVOKED] == [event.id]


class LosesAnswerBeforeCommit:
    """The connection drops before the batch commits (a busy store closing it): no answer, nothing written."""

    def __init__(self, transact: Callable[[Any], Any]) -> None:
        self._transact, self.lost = transact, 0

    def __call__(self, operations: Any) -> Any:
        if not self.lost:
            self.lost += 1
            raise ServiceResponseError("connection aborted: remote end closed connection without response")
        return self._transact(operations)


def test_an_answer_lost_before_the_commit_is_sent_again(env: Env) -> None:
    """Found under load (bench.http_load, 32 clients): an approval stored, then its record's append lost
    its answer without committing, and the caller got a 500 "change made, not recorded"."""
    env.fill(1)
    losing = LosesAnswerBeforeCommit(env.log.audit_table.transact)
    env.log.audit_table.transact = losing  # type: ignore[method-assign]
    event = env.trail.event(Action.REVOKED, secret_name=SECRET, version="v9")
    [record] = env.trail.record_all([event])
    assert (record.seq, losing.lost) == (2, 1)
    assert [e.id for e in env.trail_events() if e.action == Action.REVOKED] == [event.id]
    assert env.breaks() == []


class AppendsAfterRepairReads:
    def __init__(self, env: Env) -> None:
        self.env, self.log = env, env.log

    def __getattr__(self, name: str) -> Any:
        return getattr(self.log, name)

    def read_chains(self, chain: str | None = None) -> Any:
        contents = self.log.read_chains(chain)
        self.env.trail.record(Action.ROTATED, secret_name=SECRET, version="v-late")  # legitimate
        return contents


def test_repair_writes_only_over_the_head_it_verified(env: Env) -> None:
    env.fill(4)
    env.log.table.delete_entity(env.chain, HEAD_ROW)
    env.log.table.upsert_entity(  # rewound, so appends still land (and would land beyond a repair)
        {"PartitionKey": env.chain, "RowKey": HEAD_ROW, "seq": 2, "mac": env.row(2)["mac"]},
        mode=UpdateMode.REPLACE,
    )
    with pytest.raises((Conflict, AuditUnavailable)):
        repair_chain(
            env.peers(AppendsAfterRepairReads(env)),
            secret_name=SECRET,
            operator=Actor("op", ActorType.USER),
            reason="x",
        )
    assert env.log.read_chains(env.chain)[env.chain].head == ChainHead(2, env.row(2)["mac"])


class AppendsBetweenPages:
    """Reads the table two rows a page and appends to the chain after the first page: a long chain read
    while it grows (its head comes last, after records the pages already went past)."""

    def __init__(self, env: Env) -> None:
        self.env, self._table, self.appended = env, env.log.table, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)

    def query_entities(self, query_filter: str, **kwargs: Any) -> Iterator[Any]:
        kwargs["results_per_page"] = 2
        appended_now = False
        for page in self._table.query_entities(query_filter, **kwargs).by_page():
            yield from page
            if "RowKey ge" not in query_filter and not appended_now and self.appended < 5:
                # Every read of the chain races an append, the reread of a chain that looks cut included.
                appended_now = True
                self.appended += 1
                self.env.log.audit_table._table = self._table  # the append itself goes to the real client
                self.env.fill(3)
                self.env.log.audit_table._table = self  # type: ignore[assignment]


def test_verify_does_not_call_a_growing_chain_cut(env: Env) -> None:
    env.fill(6)
    env.digest()
    paging = AppendsBetweenPages(env)
    env.log.audit_table._table = paging  # type: ignore[assignment]
    report = verify_audit(env.peers())
    assert paging.appended
    assert report.ok, report.breaks


# -- a way forward: the break held, then acknowledged by two people (issue 17, point 6) -----------------


def test_a_lost_digest_is_held_then_acknowledged_by_two_people(env: Env) -> None:
    olga, ivan = Actor("oid-olga", ActorType.USER), Actor("oid-ivan", ActorType.USER)
    env.fill(3)
    env.digest()
    env.digest()
    env.log.table.delete_entity(DIGEST, row_key(2))  # what Azurite did when it was killed mid-burst
    opened = open_incident(
        env.peers(),
        actor=olga,
        reason="Azurite lost an acknowledged write",
        reference=None,
        correlation_id=None,
    )
    assert [(b.kind, b.seq) for b in opened.breaks] == [(BreakKind.DELETED, 2)]
    with pytest.raises(NotPermitted):
        acknowledge_incident(env.peers(), opened.incident, actor=olga, correlation_id=None)
    done = acknowledge_incident(env.peers(), opened.incident, actor=ivan, correlation_id=None)
    env.fill(1)
    env.digest()
    report = verification(env.peers(), fresh=True)
    assert (report.status, report.breaks) == ("ok", [])
    assert [(a.kind, a.seq, a.incident, a.baseline) for a in report.acknowledged] == [
        (BreakKind.DELETED, 2, opened.incident, done.baseline)
    ]
    # The page of acknowledged breaks is a row like any other: edited, it acknowledges nothing.
    [baseline] = [d.baseline for d in env.log.read_digests() if d.baseline is not None]
    env.log.table.upsert_entity(
        {"PartitionKey": DIGEST_PAGES, "RowKey": baseline.hash, "heads_parts": 1, "heads_0": "[]"},
        mode=UpdateMode.REPLACE,
    )
    report = verification(env.peers(), fresh=True)
    assert report.acknowledged == []
    assert {(b.kind, b.seq) for b in report.breaks} == {
        (BreakKind.DELETED, 2),
        (BreakKind.FORGED_DIGEST, done.baseline),
    }
