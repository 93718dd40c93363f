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
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import azurite_version, run_benchmark, start_peers, tool_version
from shared.adapters.tables import MAX_BATCH, TableAuditLog
from shared.domain.audit import Action, Actor, ActorType, AuditEvent, AuditQuery, format_time, readable_event
from shared.services.audit import query_audit

VAULT = "bench-vault"
SECRETS = 500
ACTORS = 20
DAYS = 60
ACTIONS = (Action.ROTATED, Action.ROTATED, Action.ACCESS_DENIED, Action.EXPIRY_WARNING, Action.REVOKED)
TARGET_RATIO = 1.5
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
    return Measured(
        name, size, statistics.mean(requests), statistics.mean(entities),
        statistics.median(first), _p95(first), statistics.median(base),
    )  # fmt: skip


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
    print()
    print(
        f"{'query':<12}{'records':>10}{'requests/page':>15}{'entities/page':>15}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'baseline p50 ms':>17}"
    )
    for m in results:
        print(
            f"{m.query:<12}{m.size:>10,}{m.requests:>15.2f}{m.entities:>15.1f}"
            f"{m.p50_ms:>9.1f}{m.p95_ms:>9.1f}{m.base_p50_ms:>17.1f}"
        )
    print()
    ok = True
    smallest, largest = min(args.sizes), max(args.sizes)
    for name in ("unfiltered", "by actor", "one secret"):
        small = next(m for m in results if m.query == name and m.size == smallest)
        large = next(m for m in results if m.query == name and m.size == largest)
        same = small.requests == large.requests and small.entities == large.entities
        ratio = large.p50_ms / small.p50_ms
        ok = ok and same
        met = "met" if ratio <= TARGET_RATIO else "not met"
        print(
            f"{name}: requests and entities per page {'the same' if same else 'DIFFER'} at {smallest:,} and "
            f"{largest:,}; p50 {ratio:.2f}x (goal <= {TARGET_RATIO}x: {met})"
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
    try:
        args.sizes = [int(s) for s in text.split(",")]
    except ValueError:
        parser.error("--sizes takes whole numbers separated by commas")
    if len(args.sizes) < 2 or min(args.sizes) < 1000:
        parser.error("--sizes needs two sizes or more, each at least 1,000 (full pages for every query)")
    for name in ("limit", "pages", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
