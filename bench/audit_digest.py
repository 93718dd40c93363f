"""The hourly audit digest at fleet scale: sealing every chain's head when there are 100,000 chains, and
checking one secret's sealed head.

For each size (``--chains``; the first is the **baseline**, 4,000 by default: about the most one table
entity held before digests were paged), a fresh audit table gets one record on each of that many chains
(through the production adapter, in parallel), then ``write_digest`` runs as the timer runs it: the anchor
and previous digests read, every head read, the index checked for records it misses, the pages of heads
written, the digest sealed and anchored. Then 1 % of the chains get one more record and a second digest is
sealed (only the pages that changed are written), and one secret is verified (``verify_audit`` with
``secret_name``), its table requests and Key Vault reads counted. Goal: the digest of 100,000 chains well
inside the timer's budget (``FUNCTION_TIMEOUT``, 10 minutes), one secret checked with fewer than 10 reads.

    .venv/bin/python -m bench.audit_digest                    # 4,000 and 100,000 chains
    .venv/bin/python -m bench.audit_digest --quick            # 1,000 and 10,000 chains
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import azurite_version, counts, run_benchmark, start_peers, tool_version
from shared.adapters.clock import SystemClock
from shared.adapters.event_grid import LoggingPublisher
from shared.adapters.key_vault import KeyVaultDigestAnchor
from shared.adapters.tables import TableAuditLog, TableStateStore
from shared.adapters.tables.rows import DIGEST_PAGES, head_write, record_entity, stored_record
from shared.domain.audit import (
    GENESIS_MAC,
    Action,
    AnchoredDigest,
    AuditEvent,
    ChainHead,
    Digest,
    StoredRecord,
    seal_all,
)
from shared.domain.state import FUNCTION_TIMEOUT
from shared.services.audit import AuditTrail, verify_audit, write_digest
from shared.services.findings import StateFindingStore
from shared.services.peers import AuditPeers

VAULT = "bench-vault"


class Requests:
    """An azure-core ``raw_response_hook`` on the table client: requests by method."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, response: Any) -> None:
        with self._lock:
            self.counts[response.http_request.method] += 1

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)


class CountedAnchor:
    """The Key Vault anchor, its reads counted (one secret read each)."""

    def __init__(self, inner: KeyVaultDigestAnchor) -> None:
        self.inner = inner
        self.reads = 0

    def read(self) -> AnchoredDigest | None:
        self.reads += 1
        return self.inner.read()

    def write(self, digest: Digest) -> None:
        self.inner.write(digest)


@dataclass
class Measured:
    chains: int
    fill_s: float
    first_s: float
    first_requests: int
    pages: int
    second_s: float
    second_pages_written: int
    verify_table_reads: int
    verify_vault_reads: int
    verify_ok: bool


def fill(log: TableAuditLog, keys: Any, chains: int, workers: int) -> float:
    """One record on each of ``chains`` chains, written as the audit writer writes a chain's first record
    (the record and the head in one transaction; ``workers`` at once), then their index rows."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    key_id, key = keys.current()
    done = 0
    lock = threading.Lock()
    stored: list[tuple[str, StoredRecord]] = []

    def one(i: int) -> None:
        nonlocal done
        # A millisecond apart, as a busy fleet writes them (the index keeps a partition per second).
        moment = now - timedelta(milliseconds=chains - i)
        event = AuditEvent(action=Action.ROTATED, vault=VAULT, time=moment, secret_name=f"secret-{i:06d}")
        [record] = seal_all([event], 0, GENESIS_MAC, key_id, key)
        row = record_entity(record)
        log.audit_table.transact([head_write(record.chain, ChainHead(1, record.mac), None), ("create", row)])
        with lock:
            stored.append((record.chain, stored_record(row)))
            done += 1
            if done % 10_000 == 0:
                print(f"  {done:,} / {chains:,} chains", file=sys.stderr, flush=True)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(chains)))
    log.records_index.write(stored)
    return time.perf_counter() - started


def measure(peers_: Any, counter: Requests, chains: int, workers: int) -> Measured:
    table = f"benchd{uuid.uuid4().hex[:10]}"
    log = TableAuditLog(peers_.tables, peers_.keys, table=table)
    clock = SystemClock()
    trail = AuditTrail(log, clock, VAULT)
    anchor = CountedAnchor(KeyVaultDigestAnchor(peers_.secrets, name=f"anchor-{table}"))
    findings = StateFindingStore(TableStateStore(peers_.tables, f"findings{table}"))
    peers = AuditPeers(
        log=log, reader=log, keys=peers_.keys, anchor=anchor, trail=trail, findings=findings,
        publisher=LoggingPublisher(), clock=clock,
    )  # fmt: skip
    print(f"filling {chains:,} chains ...", file=sys.stderr, flush=True)
    fill_s = fill(log, peers_.keys, chains, workers)

    print("  first digest ...", file=sys.stderr, flush=True)
    before = counter.snapshot()
    t0 = time.perf_counter()
    first = write_digest(peers).digest
    first_s = time.perf_counter() - t0
    first_requests = sum((counter.snapshot() - before).values())

    moved = max(1, chains // 100)
    for i in range(moved):
        trail.record(Action.ROTATED, secret_name=f"secret-{i * 97 % chains:06d}")
    log.records_index.flush()
    pages_before = _page_rows(log)
    print(f"  second digest ({moved:,} chains moved) ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    write_digest(peers)
    second_s = time.perf_counter() - t0
    written = _page_rows(log) - pages_before

    print("  verify one secret ...", file=sys.stderr, flush=True)
    before, anchor.reads = counter.snapshot(), 0
    report = verify_audit(peers, secret_name=f"secret-{chains // 2:06d}")
    reads = counter.snapshot() - before
    return Measured(
        chains=chains, fill_s=fill_s, first_s=first_s, first_requests=first_requests, pages=len(first.pages),
        second_s=second_s, second_pages_written=written,
        verify_table_reads=reads["GET"], verify_vault_reads=anchor.reads,
        verify_ok=report.status == "ok",
    )  # fmt: skip


def _page_rows(log: TableAuditLog) -> int:
    rows = log.table.query_entities("PartitionKey eq @p", parameters={"p": DIGEST_PAGES}, select=["RowKey"])
    return sum(1 for _ in rows)


def run(args: argparse.Namespace) -> int:
    print(f"audit digest benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"Node {tool_version(['node', '--version'])}, Azurite {azurite_version()} (in memory)"
    )
    print(f"workload: one record per chain, {args.workers} appends at once; 1 % of the chains move")
    results: list[Measured] = []
    with ExitStack() as stack:
        counter = Requests()
        peers_ = start_peers(stack, "bench-audit-digest-", counter)
        for chains in args.chains:
            results.append(measure(peers_, counter, chains, args.workers))
    budget = FUNCTION_TIMEOUT.total_seconds()
    print()
    print(
        f"{'chains':>9}{'fill s':>9}{'digest s':>10}{'requests':>10}{'pages':>7}{'2nd digest s':>14}"
        f"{'pages written':>15}{'verify one: table':>19}{'vault':>7}  verify"
    )
    for m in results:
        print(
            f"{m.chains:>9,}{m.fill_s:>9.1f}{m.first_s:>10.1f}{m.first_requests:>10,}{m.pages:>7}{m.second_s:>14.1f}"
            f"{m.second_pages_written:>15}{m.verify_table_reads:>19}{m.verify_vault_reads:>7}  "
            f"{'ok' if m.verify_ok else 'BROKEN'}"
        )
    largest = results[-1]
    inside = largest.first_s < budget and largest.second_s < budget
    reads = largest.verify_table_reads + largest.verify_vault_reads
    print()
    print(
        f"digest of {largest.chains:,} chains: {largest.first_s:.1f} s, then {largest.second_s:.1f} s "
        f"(budget {budget:.0f} s: {'met' if inside else 'NOT met'}); one secret checked with {reads} reads "
        f"(goal < 10: {'met' if reads < 10 else 'NOT met'})"
    )
    return 0 if inside and reads < 10 and all(m.verify_ok for m in results) else 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.audit_digest", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--chains", default=None, help="chain counts, comma-separated (default 4000,100000)")
    parser.add_argument("--workers", type=int, default=8, help="appends at once while filling (default 8)")
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 chains")
    args = parser.parse_args(argv)
    args.chains = counts(parser, "--chains", args.chains or ("1000,10000" if args.quick else "4000,100000"))
    if args.workers < 1:
        parser.error("--workers takes a number of at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
