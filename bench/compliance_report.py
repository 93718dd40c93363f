"""The compliance report of 90 days at fleet scale, beside the audit summary of the same 90 days.

A fresh audit table (and its index) is filled through the production adapter with ``--records`` records over
90 days, of which ``--share`` are of the actions the report reads (rotations, revocations, denials; the
rest are the service's other records: expiry warnings, retirements, requests, policy violations), and
``--secrets`` managed secrets are created in the Key Vault emulator. The digest timer's aggregation runs once
(every hour's aggregate and evidence sealed). Then the report of the 90 days is built ``--repeat`` times
(p50, and the table requests and entities it read, counted from the HTTP responses), beside the
**baseline**, the 90-day summary from the hourly aggregates, in the same run. Azurite answers every query by
scanning the whole table (real Table Storage reads the partitions asked for); its scan time per request is
printed, and the report's time without it. Goal: the report under 2 s.

    .venv/bin/python -m bench.compliance_report                       # 200,000 records, 15% read
    .venv/bin/python -m bench.compliance_report --records 20000 --quick
    .venv/bin/python -m bench.compliance_report --share 0.5           # a trail heavy with denials
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

from azure.storage.queue import QueueServiceClient

from bench.audit_query import Requests, fill
from bench.common import azurite_version, run_benchmark, start_peers, tool_version
from shared.adapters.clock import SystemClock
from shared.adapters.event_grid import LoggingPublisher
from shared.adapters.key_vault import KeyVaultDigestAnchor, KeyVaultSecretStore
from shared.adapters.storage import QUEUE_API_VERSION, StorageQueueRotationRequests
from shared.adapters.tables import TableAuditLog, TableStateStore
from shared.domain.audit import Action, Actor, ActorType, AuditEvent, Result
from shared.domain.policy import RotationPolicy, SecretKind
from shared.services.audit import AuditTrail, aggregate_hours, summarize_audit
from shared.services.compliance import compliance_report
from shared.services.findings import StateFindingStore
from shared.services.peers import AuditPeers, Peers

VAULT = "bench-vault"
DAYS = 90
ACTORS = 10
GOAL_S = 2.0
#: Records written within one second: the index files each second's in one partition per index.
BURST = 200
#: The report's records, in the proportions a trail has them: rotations most, then denials, revocations.
READ = (
    [(Action.ROTATED, Result.INTENT), (Action.ROTATED, Result.SUCCESS)] * 5
    + [(Action.ROTATION_FAILED, Result.FAILURE), (Action.ROTATION_STALLED, Result.FAILURE)]
    + [(Action.ACCESS_DENIED, Result.DENIED)] * 4
    + [
        (Action.REVOCATION_REQUESTED, Result.SUCCESS),
        (Action.REVOCATION_APPROVED, Result.SUCCESS),
        (Action.REVOKED, Result.SUCCESS),
    ]
)
#: The service's other records (not read by the report).
OTHER = [
    (Action.EXPIRY_WARNING, Result.SUCCESS),
    (Action.VERSION_RETIRED, Result.SUCCESS),
    (Action.ROTATION_REQUESTED, Result.SUCCESS),
    (Action.POLICY_VIOLATION, Result.FAILURE),
    (Action.SECRET_NOT_FOUND, Result.FAILURE),
]


def make_events(count: int, share: float, secrets: int, now: datetime) -> list[AuditEvent]:
    """``count`` records over DAYS days, oldest first, in bursts of BURST within one second (as a sweep, a
    drain or a scan writes them); ``share`` of them of the report's actions."""
    bursts = max(1, count // BURST)
    step = timedelta(days=DAYS) / bursts
    start = now - timedelta(days=DAYS)
    every = max(1, round(1 / share)) if share < 1 else 1
    events = []
    for i in range(count):
        action, result = READ[i % len(READ)] if i % every == 0 else OTHER[i % len(OTHER)]
        details = {"revocation_id": f"{i // 30:032x}", "requested_by": "user-1"} if "REVO" in action else {}
        events.append(
            AuditEvent(
                action=action,
                vault=VAULT,
                time=start + step * (i // BURST) + timedelta(microseconds=i % BURST),
                result=result,
                actor=Actor(f"user-{i % ACTORS}", ActorType.USER),
                secret_name=f"managed-{i % secrets:04d}",
                version=uuid.UUID(int=i).hex,
                details=details,
            )
        )
    return events


def run(args: argparse.Namespace) -> int:
    print(f"compliance report benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"Node {tool_version(['node', '--version'])}, Azurite {azurite_version()} (in memory)"
    )
    print(
        f"workload: {args.records:,} records over {DAYS} days, {args.share:.0%} of the report's actions; "
        f"{args.secrets} managed secrets; report built {args.repeat}x"
    )
    with ExitStack() as stack:
        counter = Requests()
        peers = start_peers(stack, "bench-compliance-", counter)
        clock, now = SystemClock(), datetime.now(UTC)
        store = KeyVaultSecretStore(peers.secrets)
        policy = RotationPolicy(SecretKind.API_KEY, timedelta(days=30), owner="fleet-ops").to_tags()
        print(f"creating {args.secrets} managed secrets ...", file=sys.stderr, flush=True)
        for n in range(args.secrets):
            store.set_value(f"managed-{n:04d}", uuid.uuid4().hex, content_type="text/plain", tags=policy)
        log = TableAuditLog(peers.tables, peers.keys, table=f"benchc{uuid.uuid4().hex[:10]}")
        events = make_events(args.records, args.share, args.secrets, now)
        read = sum(e.action in {a for a, _ in READ} for e in events)
        print(f"filling {args.records:,} records ...", file=sys.stderr, flush=True)
        seconds = fill(log, events)
        print(f"  filled in {seconds:.1f} s; {read:,} of them of the report's actions", flush=True)
        trail = AuditTrail(log, clock, VAULT)
        audit = AuditPeers(
            log=log, reader=log, keys=peers.keys, anchor=KeyVaultDigestAnchor(peers.secrets, name="anchor-c"),
            trail=trail, clock=clock, publisher=LoggingPublisher(),
            findings=StateFindingStore(TableStateStore(peers.tables, f"findings{uuid.uuid4().hex[:8]}")),
        )  # fmt: skip
        queues = QueueServiceClient.from_connection_string(
            peers.azurite.connection_string, api_version=QUEUE_API_VERSION
        )
        vault = Peers(
            store=store, states=TableStateStore(peers.tables, f"state{uuid.uuid4().hex[:8]}"), trail=trail,
            publisher=LoggingPublisher(), clock=clock, requests=StorageQueueRotationRequests(queues, "bench"),
            reader=log, keys=peers.keys, reserved=frozenset({"audit-hmac-key", "anchor-c"}),
        )  # fmt: skip
        start, end = now - timedelta(days=DAYS), now + timedelta(minutes=1)
        print("  aggregation (the digest timer's first run) ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        aggregate_hours(audit)
        took = time.perf_counter() - t0
        print(f"  first aggregation run: {took:.1f} s (every hour's aggregate and evidence)", flush=True)
        print("  report ...", file=sys.stderr, flush=True)
        times, requests, entities, sizes = [], [], [], []
        for _ in range(args.repeat):
            r0, e0 = counter.requests, counter.entities
            t0 = time.perf_counter()
            report = compliance_report(audit, [vault], start=start, end=end, stall_after=timedelta(hours=2))
            times.append(time.perf_counter() - t0)
            requests.append(counter.requests - r0)
            entities.append(counter.entities - e0)
            sizes.append(len(report.to_json()["rotations"]))
            sealed = report.integrity.sealed_hours
        scan = _median(lambda: list(log.records_index.table.query_entities("PartitionKey eq 'none'")), 3)
        print("  summary ...", file=sys.stderr, flush=True)
        summary = _median(lambda: summarize_audit([audit], secret_name=None, days=DAYS), args.repeat)
    p50, reqs = statistics.median(times), statistics.median(requests)
    print()
    net = max(0.0, p50 - scan * reqs)
    columns = [
        ("records", f"{args.records:,}"), ("requests", f"{reqs:.0f}"),
        ("entities", f"{statistics.median(entities):,.0f}"), ("p50 s", f"{p50:.2f}"),
        ("Azurite scans s", f"{scan * reqs:.2f}"), ("p50 net s", f"{net:.2f}"),
        ("rotations", f"{sizes[0]:,}"), ("sealed hours", f"{sealed:,}"), ("summary p50 s", f"{summary:.2f}"),
    ]  # fmt: skip
    print("report, 90 days" + "".join(f"{name:>16}" for name, _ in columns))
    print(" " * 15 + "".join(f"{value:>16}" for _, value in columns))
    met = "met" if p50 < GOAL_S else "not met"
    print(f"\nthe report of 90 days: p50 {p50:.2f} s (goal < {GOAL_S:.0f} s: {met}); summary {summary:.2f} s")
    return 0


def _median(call: object, repeat: int) -> float:
    assert callable(call)
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compliance_report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--records", type=int, default=200_000, help="records in 90 days (default 200,000)")
    parser.add_argument(
        "--share", type=float, default=0.15, help="share of the report's actions (default 0.15)"
    )
    parser.add_argument("--secrets", type=int, default=200, help="managed secrets (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="reports built (default 3)")
    parser.add_argument("--quick", action="store_true", help="50 secrets, 2 reports")
    args = parser.parse_args(argv)
    if args.quick:
        args.secrets, args.repeat = 50, 2
    if args.records < 1000 or not 0 < args.share <= 1 or args.secrets < 1 or args.repeat < 1:
        parser.error("--records >= 1000, 0 < --share <= 1, --secrets and --repeat >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
