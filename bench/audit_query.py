"""The audit trail's read side at fleet scale: what one page of ``GET /api/audit`` costs as the trail grows.

For each trail size, a fresh audit table (and its index table) is filled through the production adapter
with records spread over many secrets, actors, actions and days, then three queries are paged: no filter,
one actor, one secret. Per query it prints the table requests and the entities returned per page (counted
from the HTTP responses, not timed), and the latency of the first page (p50 and p95 of ``--repeat`` reads),
beside the **baseline**, the read path before the index (every matching record read, then sorted and
sliced), measured on the same table in the same run. The goal: requests and entities per page the same at
every size, and the first page's p50 at the largest size at most 1.5x the one at the smallest.

    .venv/bin/python -m bench.audit_query                        # 1,000 and 20,000 records
    .venv/bin/python -m bench.audit_query --sizes 2000,200000    # the counted figures at fleet scale
    .venv/bin/python -m bench.audit_query --quick                # 1,000 and 4,000 records
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import azurite_version, counts, run_benchmark, start_peers, tool_version
from shared.adapters.clock import SystemClock
from shared.adapters.event_grid import LoggingPublisher
from shared.adapters.key_vault import KeyVaultDigestAnchor
from shared.adapters.tables import MAX_BATCH, TableAuditLog, TableStateStore
from shared.domain.audit import Action, Actor, ActorType, AuditEvent, AuditQuery, format_time, readable_event
from shared.services.audit import AuditTrail, aggregate_hours, query_audit, summarize_audit, verify_audit
from shared.services.findings import StateFindingStore
from shared.services.peers import AuditPeers

VAULT = "bench-vault"
SECRETS = 500
ACTORS = 20
DAYS = 60
ACTIONS = (Action.ROTATED, Action.ROTATED, Action.ACCESS_DENIED, Action.EXPIRY_WARNING, Action.REVOKED)
TARGET_RATIO = 1.5
SUMMARY_GOAL_MS = 500
ONE_SECRET = "secret-0007"


class Requests:
    """An azure-core ``raw_response_hook``: table requests and the entities the queries returned."""

    def __init__(self) -> None:
        self.requests = 0
        self.entities = 0

    def __call__(self, response: Any) -> None:
        self.requests += 1
        if response.http_request.method == "GET":
            with suppress(ValueError, AttributeError):
                self.entities += len(response.http_response.json().get("value", []))


def make_events(count: int, now: datetime) -> list[AuditEvent]:
    """``count`` records over ``SECRETS`` secrets, ``ACTORS`` actors and ``DAYS`` days, oldest first; the
    queried actor and secret have at least ``--pages`` full pages at 1,000 records (50 and 100 records)."""
    step = timedelta(days=DAYS) / count
    start = now - timedelta(days=DAYS)
    return [
        AuditEvent(
            action=ACTIONS[i % len(ACTIONS)],
            vault=VAULT,
            time=start + step * i,
            actor=Actor(f"user-{i % ACTORS}@example.com", ActorType.USER),
            # One secret in ten records is the one queried (a busy secret, as the service chain is).
            secret_name=ONE_SECRET if i % 10 == 0 else f"secret-{(i * 7) % SECRETS:04d}",
            version=uuid.UUID(int=i).hex,
            details={"step": "promote"},
        )
        for i in range(count)
    ]


def fill(log: TableAuditLog, events: Sequence[AuditEvent]) -> float:
    """Append in chunks that fill each chain's transaction; the index rows written too. Seconds."""
    started = time.perf_counter()
    chunk = SECRETS * (MAX_BATCH - 1)
    for start in range(0, len(events), chunk):
        log.append(events[start : start + chunk])
        print(f"  {min(start + chunk, len(events)):,} / {len(events):,} records", file=sys.stderr, flush=True)
    if not log.records_index.flush(timeout=1800):
        raise RuntimeError("index rows not written within 30 minutes")
    return time.perf_counter() - started


def baseline_page(log: TableAuditLog, query: AuditQuery) -> int:
    """The read path before the index: every matching record read, sorted, sliced."""
    rows = list(log.list_records(query))
    events = [
        (format_time(e.time), row.chain, row.record.position)
        for row in rows
        if (e := readable_event(row.record.fields))
    ]
    events.sort(reverse=True)
    return len(events[: query.limit])


@dataclass
class Measured:
    query: str
    size: int
    requests: float
    entities: float
    p50_ms: float
    p95_ms: float
    base_p50_ms: float
    scan_ms: float

    @property
    def net_ms(self) -> float:
        """The p50 without Azurite's scan of the table."""
        return max(0.0, self.p50_ms - self.scan_ms)


def measure(
    log: TableAuditLog, counter: Requests, name: str, query: AuditQuery, pages: int, repeat: int, size: int
) -> Measured:
    keys = log._keys
    requests, entities, token = [], [], None
    for _ in range(pages):
        r0, e0 = counter.requests, counter.entities
        page = query_audit(log, keys, query, token)
        requests.append(counter.requests - r0)
        entities.append(counter.entities - e0)
        token = page.continuation
        if token is None:
            break
    first = _times(lambda: query_audit(log, keys, query), repeat)
    base = _times(lambda: baseline_page(log, query), 3)
    # What Azurite adds: it answers every query by scanning every entity of the table (real Table Storage
    # reads by partition and row key). A query of a partition that does not exist is that scan alone.
    table = log.table if query.secret_name else log.records_index.table
    scan = _times(lambda: list(table.query_entities("PartitionKey eq 'none'")), max(3, repeat // 2))
    return Measured(
        name, size, statistics.mean(requests), statistics.mean(entities),
        statistics.median(first), _p95(first), statistics.median(base), statistics.median(scan),
    )  # fmt: skip


@dataclass
class SummaryMeasured:
    size: int
    base_ms: float
    aggregate_s: float
    requests: int
    p50_ms: float
    verify_s: float
    verify_mib: float
    #: Every chain read into memory at once, as verify read them before it streamed them.
    whole_mib: float


def measure_summary(log: TableAuditLog, peers: Any, counter: Requests, size: int) -> SummaryMeasured:
    """The 30-day summary before the aggregates (every record of the window read from the index: the
    baseline), the first aggregation run, and the summary from the aggregates."""
    clock = SystemClock()
    audit = AuditPeers(
        log=log, reader=log, keys=peers.keys, anchor=KeyVaultDigestAnchor(peers.secrets, name="anchor-q"),
        trail=AuditTrail(log, clock, VAULT), clock=clock, publisher=LoggingPublisher(),
        findings=StateFindingStore(TableStateStore(peers.tables, f"findings{uuid.uuid4().hex[:8]}")),
    )  # fmt: skip
    base = _times(lambda: summarize_audit([audit], secret_name=None, days=30), 1)
    print("  verify ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    aggregate_hours(audit)
    aggregated = time.perf_counter() - started
    before = counter.requests
    summarize_audit([audit], secret_name=None, days=30)
    requests = counter.requests - before
    timed = _times(lambda: summarize_audit([audit], secret_name=None, days=30), 5)
    verify_s, verify_mib = _traced(lambda: verify_audit(audit))
    _, whole_mib = _traced(log.read_chains)
    return SummaryMeasured(
        size, statistics.median(base), aggregated, requests, statistics.median(timed),
        verify_s, verify_mib, whole_mib,
    )  # fmt: skip


def _traced(call: Callable[[], object]) -> tuple[float, float]:
    """Seconds and peak Python memory (MiB, tracemalloc) of one call."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        call()
        return time.perf_counter() - started, tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def _times(call: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def run(args: argparse.Namespace) -> int:
    print(f"audit query benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"Node {tool_version(['node', '--version'])}, Azurite {azurite_version()} (in memory)"
    )
    print(
        f"workload: {SECRETS} secrets, {ACTORS} actors, {len(set(ACTIONS))} actions over {DAYS} days; "
        f"pages of {args.limit}, {args.pages} pages per query counted, first page timed {args.repeat}x"
    )
    results: list[Measured] = []
    summaries: list[SummaryMeasured] = []
    with ExitStack() as stack:
        counter = Requests()
        peers = start_peers(stack, "bench-audit-query-", counter)
        now = datetime.now(UTC)
        for size in args.sizes:
            log = TableAuditLog(peers.tables, peers.keys, table=f"benchq{uuid.uuid4().hex[:10]}")
            print(f"filling {size:,} records ...", file=sys.stderr, flush=True)
            seconds = fill(log, make_events(size, now))
            print(f"  filled in {seconds:.1f} s ({size / seconds:,.0f} records/s with the index)", flush=True)
            queries = {
                "unfiltered": AuditQuery(vault=VAULT, limit=args.limit),
                "by actor": AuditQuery(vault=VAULT, actor="user-3@example.com", limit=args.limit),
                "one secret": AuditQuery(vault=VAULT, secret_name=ONE_SECRET, limit=args.limit),
            }
            for name, query in queries.items():
                print(f"  {name} ...", file=sys.stderr, flush=True)
                results.append(measure(log, counter, name, query, args.pages, args.repeat, size))
            print("  summary ...", file=sys.stderr, flush=True)
            summaries.append(measure_summary(log, peers, counter, size))
    print()
    print(
        f"{'query':<12}{'records':>10}{'requests/page':>15}{'entities/page':>15}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'Azurite scan ms':>17}{'p50 net ms':>12}{'baseline p50 ms':>17}"
    )
    for m in results:
        print(
            f"{m.query:<12}{m.size:>10,}{m.requests:>15.2f}{m.entities:>15.1f}"
            f"{m.p50_ms:>9.1f}{m.p95_ms:>9.1f}{m.scan_ms:>17.1f}{m.net_ms:>12.1f}{m.base_p50_ms:>17.1f}"
        )
    print()
    print(
        f"{'summary, 30 days':<18}{'records':>10}{'aggregate s':>13}{'requests':>10}{'p50 ms':>9}"
        f"{'baseline ms':>13}"
    )
    for sm in summaries:
        print(
            f"{'':<18}{sm.size:>10,}{sm.aggregate_s:>13.1f}{sm.requests:>10}{sm.p50_ms:>9.1f}{sm.base_ms:>13.1f}"
        )
    print()
    print(f"{'full verify':<18}{'records':>10}{'seconds':>10}{'peak MiB':>10}{'all chains at once MiB':>24}")
    for sm in summaries:
        print(f"{'':<18}{sm.size:>10,}{sm.verify_s:>10.1f}{sm.verify_mib:>10.1f}{sm.whole_mib:>24.1f}")
    print()
    ok = True
    smallest, largest = min(args.sizes), max(args.sizes)
    for name in ("unfiltered", "by actor", "one secret"):
        small = next(m for m in results if m.query == name and m.size == smallest)
        large = next(m for m in results if m.query == name and m.size == largest)
        same = small.requests == large.requests and small.entities == large.entities
        ratio = large.p50_ms / small.p50_ms
        net = large.net_ms / small.net_ms if small.net_ms else float("inf")
        ok = ok and same
        met = "met" if ratio <= TARGET_RATIO else "not met"
        print(
            f"{name}: requests and entities per page {'the same' if same else 'DIFFER'} at {smallest:,} and "
            f"{largest:,}; p50 {ratio:.2f}x (goal <= {TARGET_RATIO}x: {met}); "
            f"without Azurite's scan {net:.2f}x"
        )
    largest_summary = max(summaries, key=lambda sm: sm.size)
    print(
        f"summary of 30 days at {largest_summary.size:,} records: p50 {largest_summary.p50_ms:.0f} ms in "
        f"{largest_summary.requests} requests (goal < {SUMMARY_GOAL_MS} ms: "
        f"{'met' if largest_summary.p50_ms < SUMMARY_GOAL_MS else 'not met'})"
    )
    return 0 if ok else 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_query", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=None, help="trail sizes, comma-separated (default 1000,20000)")
    parser.add_argument("--limit", type=int, default=20, help="records per page (default 20)")
    parser.add_argument("--pages", type=int, default=2, help="pages counted per query (default 2)")
    parser.add_argument("--repeat", type=int, default=20, help="first-page reads timed (default 20)")
    parser.add_argument("--quick", action="store_true", help="1,000 and 4,000 records")
    args = parser.parse_args(argv)
    text = args.sizes or ("1000,4000" if args.quick else "1000,20000")
    args.sizes = counts(parser, "--sizes", text, least=1000)  # full pages for every query
    if len(args.sizes) < 2:
        parser.error("--sizes needs two sizes or more")
    for name in ("limit", "pages", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
