"""Benchmark of the audit trail's append path: one record per request vs the batched chain append.

Starts its own Azurite (in memory) and Key Vault emulator on free ports, then writes the same events
(``--appends`` of them, round-robin over ``--secrets`` secrets, i.e. one chain per secret) twice, each time
into a fresh table, through the production adapter ``TableAuditLog`` with the production MAC key ring
``KeyVaultMacKeyRing``:

* **baseline** — one ``append([event])`` per event: every record costs a head read and a one-record
  entity-group transaction (2 requests).
* **batched** — ``append(chunk)`` where a chunk is ``--rounds-per-call`` consecutive *rounds*, a round
  being one event for every secret (the events of one time slice across all secrets). ``append`` groups
  the chunk by chain and writes each chain's share as one head read plus one transaction of up to
  99 records + the head. The default of 99 rounds fills every transaction exactly.

Afterwards each table gets a digest (``write_digest``) and is verified (``verify_audit``). The program
exits 1 when verify reports a break or the record/chain counts are wrong, 130 when interrupted; whether
the speed-up target is met is printed, not turned into an exit code.

    .venv/bin/python -m bench.audit_append            # 10,000 appends over 100 secrets
    .venv/bin/python -m bench.audit_append --quick    # 1,000 appends: a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.pipeline import PipelineResponse
from azure.keyvault.secrets import SecretClient

from bench.common import azurite_version, run_benchmark, start_peers, tool_version
from shared.adapters.clock import SystemClock
from shared.adapters.event_grid import LoggingPublisher
from shared.adapters.key_vault import KeyVaultDigestAnchor, KeyVaultMacKeyRing
from shared.adapters.tables import MAX_BATCH, TableAuditLog, TableStateStore
from shared.domain.audit import Action, Actor, ActorType, AuditEvent
from shared.ports import FindingStore
from shared.services.audit import AuditTrail, VerifyReport, verify_audit, write_digest
from shared.services.findings import StateFindingStore
from shared.services.peers import AuditPeers

TARGET_SPEEDUP = 5.0
VAULT = "bench-vault"
ROTATION_STEPS = ("create_secret", "set_secret", "test_secret", "finish_secret")
TRIGGERS = ("timer", "event_grid", "manual")

Progress = Callable[[int], None]


class RequestCounter:
    """An azure-core ``raw_response_hook``: counts every HTTP response (each retry is one) by status."""

    def __init__(self) -> None:
        self.by_status: Counter[int] = Counter()

    def __call__(self, response: PipelineResponse[Any, Any]) -> None:
        self.by_status[response.http_response.status_code] += 1

    def snapshot(self) -> Counter[int]:
        return Counter(self.by_status)


@dataclass
class ModeResult:
    mode: str
    table: str
    appends: int
    calls: int
    seconds: float
    statuses: Counter[int]
    call_ms: list[float] = field(default_factory=list)
    written: int = 0

    @property
    def rate(self) -> float:
        return self.appends / self.seconds if self.seconds else math.inf

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())


@dataclass
class Verified:
    report: VerifyReport
    seconds: float
    problems: list[str]


# -- workload ---------------------------------------------------------------------------------------


def secret_names(count: int) -> list[str]:
    return [f"bench-secret-{i:03d}" for i in range(count)]


def make_events(appends: int, secrets: Sequence[str], seed: int = 20_260_101) -> list[AuditEvent]:
    """``appends`` rotation-step events in time order, round-robin over ``secrets``.

    Event ``i`` belongs to secret ``i % len(secrets)`` in round ``i // len(secrets)``; times are 1 ms apart,
    starting now. The shape is what the rotation service records: step, version ids, trigger, duration.
    """
    rng = random.Random(seed)
    start = datetime.now(UTC)
    service = Actor(id="secret-lifecycle", type=ActorType.APP)
    events: list[AuditEvent] = []
    versions = {name: uuid.UUID(int=rng.getrandbits(128)).hex for name in secrets}
    for i in range(appends):
        name = secrets[i % len(secrets)]
        step = ROTATION_STEPS[(i // len(secrets)) % len(ROTATION_STEPS)]
        previous = versions[name]
        version = uuid.UUID(int=rng.getrandbits(128)).hex
        versions[name] = version
        duration = rng.randint(20, 900)
        events.append(
            AuditEvent(
                action=Action.ROTATED,
                vault=VAULT,
                time=start + timedelta(milliseconds=i),
                actor=service,
                secret_name=name,
                version=version,
                correlation_id=uuid.UUID(int=rng.getrandbits(128)).hex,
                duration_ms=duration,
                details={
                    "step": step,
                    "version_id": version,
                    "previous_version_id": previous,
                    "trigger": TRIGGERS[i % len(TRIGGERS)],
                    "duration_ms": duration,
                    "secret_kind": "database-password",
                },
            )
        )
    return events


# -- the two modes ----------------------------------------------------------------------------------


def run_mode(
    mode: str,
    log: TableAuditLog,
    events: Sequence[AuditEvent],
    chunk: int,
    counter: RequestCounter,
    progress: Progress,
) -> ModeResult:
    """Append ``events`` with one ``append()`` per ``chunk`` events: 1 is the one-record-per-request
    baseline; secrets x rounds fills each chain's transaction."""
    before = counter.snapshot()
    call_ms: list[float] = []
    written = 0
    started = time.perf_counter()
    for start in range(0, len(events), chunk):
        t0 = time.perf_counter()
        written += len(log.append(events[start : start + chunk]))
        call_ms.append((time.perf_counter() - t0) * 1000)
        progress(min(start + chunk, len(events)))
    # The index rows follow each append in the background: the time counts until they are written too.
    if not log.records_index.flush(timeout=600):
        raise RuntimeError("the audit index rows were not written within 10 minutes")
    seconds = time.perf_counter() - started
    return ModeResult(
        mode=mode,
        table=log.table.table_name,
        appends=len(events),
        calls=len(call_ms),
        seconds=seconds,
        statuses=counter.snapshot() - before,
        call_ms=call_ms,
        written=written,
    )


def verify(
    log: TableAuditLog,
    keys: KeyVaultMacKeyRing,
    secrets_client: SecretClient,
    findings: FindingStore,
    appends: int,
    secrets: int,
) -> Verified:
    clock = SystemClock()
    peers = AuditPeers(
        log=log,
        reader=log,
        keys=keys,
        # Each table gets its own digest anchor, as each deployment does (AUDIT_ANCHOR_SECRET).
        anchor=KeyVaultDigestAnchor(secrets_client, f"anchor-{log.table.table_name}"),
        trail=AuditTrail(log, clock, VAULT),
        findings=findings,  # neither the digest nor verify reads it
        publisher=LoggingPublisher(),
        clock=clock,
    )
    started = time.perf_counter()
    write_digest(peers)
    report = verify_audit(peers)
    seconds = time.perf_counter() - started
    problems = [f"break: {json.dumps(b.to_json())}" for b in report.breaks[:10]]
    if len(report.breaks) > 10:
        problems.append(f"... and {len(report.breaks) - 10} more breaks")
    if report.records != appends:
        problems.append(f"verify saw {report.records} records, expected {appends}")
    if report.chains != min(secrets, appends):
        problems.append(f"verify saw {report.chains} chains, expected {min(secrets, appends)}")
    if report.digests != 1:
        problems.append(f"verify saw {report.digests} digests, expected 1")
    return Verified(report, seconds, problems)


# -- output -----------------------------------------------------------------------------------------


def progress_printer(mode: str, total: int, every: int) -> Progress:
    started = time.perf_counter()
    state = {"next": every}

    def report(done: int) -> None:
        if done < state["next"] and done < total:
            return
        while state["next"] <= done:
            state["next"] += every
        elapsed = time.perf_counter() - started
        rate = done / elapsed if elapsed else math.inf
        print(
            f"  {mode:<8} {done:>7,}/{total:,} appends  {elapsed:7.1f} s  {rate:8.1f} appends/s",
            file=sys.stderr,
            flush=True,
        )

    return report


MIN_CALLS_FOR_PERCENTILES = 20


def percentile_text(values: Sequence[float], q: int) -> str:
    """The q-th percentile of per-call milliseconds, or "-" when there are too few calls to mean much."""
    if len(values) < MIN_CALLS_FOR_PERCENTILES:
        return "-"
    return f"{statistics.quantiles(values, n=100, method='inclusive')[q - 1]:.1f}"


def statuses_text(statuses: Counter[int]) -> str:
    return ", ".join(f"{status}\N{MULTIPLICATION SIGN}{n:,}" for status, n in sorted(statuses.items()))


def print_results(results: Sequence[ModeResult]) -> None:
    header = (
        f"{'mode':<9}{'appends':>8}{'calls':>8}{'wall s':>9}{'appends/s':>11}{'requests':>10}"
        f"{'req/append':>12}{'ms/call mean':>14}{'p50':>8}{'p95':>8}{'max':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.mode:<9}{r.appends:>8,}{r.calls:>8,}{r.seconds:>9.2f}{r.rate:>11.1f}{r.requests:>10,}"
            f"{r.requests / r.appends:>12.3f}{statistics.fmean(r.call_ms):>14.1f}"
            f"{percentile_text(r.call_ms, 50):>8}{percentile_text(r.call_ms, 95):>8}{max(r.call_ms):>9.1f}"
        )
    print()
    for r in results:
        print(f"{r.mode} responses by status: {statuses_text(r.statuses)}")


# -- main -------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.audit_append",
        description=(
            "Audit append benchmark against Azurite (in memory) and the Key Vault emulator: the same "
            "events written one record per request (baseline) and through the batched chain append, "
            "each into a fresh table, then a digest and verify on both tables."
        ),
    )
    parser.add_argument("--appends", type=int, default=None, help="events to append per mode (default 10000)")
    parser.add_argument("--secrets", type=int, default=100, help="secrets, one chain each (default 100)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1000 appends unless --appends is given"
    )
    parser.add_argument(
        "--rounds-per-call",
        type=int,
        default=MAX_BATCH - 1,
        help=(
            "batched mode: rounds (one event per secret) per append() call; the default, "
            f"{MAX_BATCH - 1}, fills each chain's transaction"
        ),
    )
    parser.add_argument(
        "--progress-every", type=int, default=1000, help="print progress every N appends (default 1000)"
    )
    args = parser.parse_args(argv)
    if args.appends is None:
        args.appends = 1000 if args.quick else 10_000
    for name in ("appends", "secrets", "rounds_per_call", "progress_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.secrets > 999:
        parser.error("--secrets must be at most 999")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(run, parse_args(argv))


def run(args: argparse.Namespace) -> int:
    names = secret_names(args.secrets)
    print(f"audit append benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"Node {tool_version(['node', '--version'])}, Azurite {azurite_version()} (in memory)"
    )
    print(
        f"workload: {args.appends:,} appends over {args.secrets} secrets "
        f"({args.appends / args.secrets:.1f} per secret), round-robin in time order"
    )
    chunk = args.secrets * args.rounds_per_call
    print(
        f"batched: append() of {args.rounds_per_call} round(s) = up to {chunk:,} events per call "
        f"({math.ceil(args.appends / chunk)} call(s)); each chain's share goes in transactions of "
        f"up to {MAX_BATCH - 1} records + the head"
    )
    print()
    with ExitStack() as stack:
        counter = RequestCounter()
        peers = start_peers(stack, "bench-audit-", counter)
        tables, secrets_client, keys = peers.tables, peers.secrets, peers.keys

        events = make_events(args.appends, names)
        run_id = uuid.uuid4().hex[:8]
        baseline_log = TableAuditLog(tables, keys, table=f"benchbaseline{run_id}")
        batched_log = TableAuditLog(tables, keys, table=f"benchbatched{run_id}")
        findings = StateFindingStore(TableStateStore(tables, f"benchfindings{run_id}"))
        for log in (baseline_log, batched_log):
            _ = log.table  # creates the table before the clock starts

        print(f"baseline: {args.appends:,} x append([event]) ...", file=sys.stderr, flush=True)
        baseline = run_mode(
            "baseline",
            baseline_log,
            events,
            1,
            counter,
            progress_printer("baseline", args.appends, args.progress_every),
        )
        print(f"batched: {args.appends:,} appends in chunks of {chunk:,} ...", file=sys.stderr, flush=True)
        batched = run_mode(
            "batched",
            batched_log,
            events,
            chunk,
            counter,
            progress_printer("batched", args.appends, args.progress_every),
        )
        results = [baseline, batched]
        print_results(results)
        speedup = baseline.seconds / batched.seconds
        print()
        print(f"speed-up, batched vs baseline (wall time): {speedup:.1f}x")
        met = "yes" if speedup >= TARGET_SPEEDUP else "no"
        print(f"target (batched >= {TARGET_SPEEDUP:.0f}x faster) met: {met}")
        print()

        print("verifying both tables (write_digest, then verify_audit) ...", file=sys.stderr, flush=True)
        failed = False
        print(
            f"{'verify':<9}{'table':<24}{'records':>9}{'chains':>8}{'digests':>9}{'breaks':>8}"
            f"{'seconds':>9}  result"
        )
        for result, log in ((baseline, baseline_log), (batched, batched_log)):
            checked = verify(log, keys, secrets_client, findings, args.appends, args.secrets)
            if result.written != args.appends:
                checked.problems.append(f"append returned {result.written} records, expected {args.appends}")
            report = checked.report
            verdict = "ok" if not checked.problems else "FAILED"
            print(
                f"{result.mode:<9}{result.table:<24}{report.records:>9,}{report.chains:>8}{report.digests:>9}"
                f"{len(report.breaks):>8}{checked.seconds:>9.2f}  {verdict}"
            )
            for problem in checked.problems:
                print(f"  {result.mode}: {problem}")
            failed = failed or bool(checked.problems)
        print()
        print("verify: " + ("FAILED" if failed else "passed on both tables"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
