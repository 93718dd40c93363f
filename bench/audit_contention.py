"""Benchmark of the audit trail under contention: many threads appending through ONE ``TableAuditLog``.

The Functions worker runs synchronous functions on a thread pool and builds one ``TableAuditLog`` per
process (``shared.bootstrap.Container.audit_log``), so concurrent requests append through the same object.
Every HTTP refusal is an ``ACCESS_DENIED`` record on one service chain (``<vault>:_service``): one hot
chain head row that all of them update under its ETag.

Starts its own Azurite (in memory) and Key Vault emulator on free ports, then for each writer count in
``--writers`` runs two scenarios, each into a fresh table, through the production adapter
``TableAuditLog`` (default ``max_attempts``) and the production MAC key ring ``KeyVaultMacKeyRing``:

* **hot** — N threads each make single-record ``append([event])`` calls of ``ACCESS_DENIED`` events
  without a secret name, i.e. all on the ONE service chain, as the HTTP refusals do.
* **spread** — the same, but writer *i*'s events name secret ``bench-writer-<i>``: N independent chains.
  This is the baseline: the same work with no shared head row.

``--records`` events per scenario are shared out over the writers; all writers start together (a barrier).
Afterwards every row of the table is read back and matched by event id against what was attempted, then
every chain is verified (``verify_chain``: each record's MAC and link to the one before, no gaps, the head
row agreeing with the newest record, no stray rows). No digest is written: digests are anchored in ONE Key
Vault secret per vault, which the several tables of one run would share.

A record is LOST unless its ``append`` returned normally *and* its row is stored exactly once; a failed
append counts as lost even if its row landed, and is printed with its error. The program exits 1 when any
record is lost, stored twice, or verify reports a break; 130 when interrupted. Whether hot reaches the
goal of 50 % of spread's rate is printed, not turned into an exit code.

    .venv/bin/python -m bench.audit_contention                  # 64 and 256 writers, 2,000 records each
    .venv/bin/python -m bench.audit_contention --writers 64     # one writer count
    .venv/bin/python -m bench.audit_contention --quick          # 400 records per scenario
    .venv/bin/python -m bench.audit_contention --writers 64 --processes 4   # 4 instances x 16 threads

With ``--processes P`` the writers are split over P processes (spawned; each its own clients and its own
``TableAuditLog``, as P Functions instances): group commit then batches within each process only, and the
processes race for the hot head with ETag retries.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import re
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core.pipeline import PipelineResponse

from bench.common import azurite_version, run_benchmark, start_peers, tool_version
from shared.adapters.key_vault import KeyVaultMacKeyRing
from shared.adapters.tables import HEAD_ROW, TableAuditLog
from shared.domain.audit import (
    DIGEST_CHAIN,
    Action,
    Actor,
    ActorType,
    AuditEvent,
    Break,
    BreakKind,
    Result,
    verify_chain,
)

GOAL_RATIO = 0.5
VAULT = "bench-vault"
SCENARIOS = ("hot", "spread")
MAX_FAILURES_SHOWN = 10
_INNER_STATUS = re.compile(r"^HTTP/1\.1 (\d{3})", re.MULTILINE)


class RequestCounter:
    """An azure-core ``raw_response_hook`` counting every HTTP response (each retry is one) by status.

    An entity-group transaction is one ``POST $batch`` answered 202 whatever happened inside: its outcome
    is the status of the changeset's inner response(s), counted as ``tx 2xx`` or e.g. ``tx 412`` (the head's
    ETag had changed: a lost race). Called from every writer thread at once, hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_status: Counter[str] = Counter()

    def __call__(self, response: PipelineResponse[Any, Any]) -> None:
        http_response = response.http_response
        label = str(http_response.status_code)
        if http_response.status_code == 202 and response.http_request.url.endswith("$batch"):
            http_response.read()  # the SDK reads it next anyway; read() keeps the bytes for it
            inner = _INNER_STATUS.findall(http_response.text())
            failed = [s for s in inner if not s.startswith("2")]
            label = f"tx {failed[0]}" if failed else "tx 2xx"
        with self._lock:
            self._by_status[label] += 1

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self._by_status)


class PoolDiscards(logging.Handler):
    """Counts urllib3's "Connection pool is full, discarding connection" warnings instead of printing
    hundreds of them: azure-core's default pool keeps 10 connections per host, fewer than the writers."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "pool is full" in record.getMessage():
            self.count += 1
        else:
            sys.stderr.write(self.format(record) + "\n")


@dataclass
class Failure:
    writer: int
    index: int
    error: str


@dataclass
class Tally:
    """What the writers did, filled in from every writer thread (list.append is atomic in CPython)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    done: int = 0
    failed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    returned_ids: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def add(self, ms: float, returned: Sequence[str], failure: Failure | None) -> None:
        self.latencies_ms.append(ms)
        self.returned_ids.extend(returned)
        with self.lock:
            self.done += 1
            if failure is not None:
                self.failed += 1
                self.failures.append(failure)


@dataclass
class Stored:
    """The table read back after the run, rows matched to the attempted events by event id."""

    rows_by_chain: Counter[str]
    heads: dict[str, int]
    ids: Counter[str]


@dataclass
class Verified:
    chains: int
    records: int
    breaks: list[Break]
    seconds: float


@dataclass
class ScenarioResult:
    writers: int
    scenario: str
    table: str
    chains: int
    attempted: int
    seconds: float
    tally: Tally
    statuses: Counter[str]
    pool_discards: int
    stored: Stored | None = None
    verified: Verified | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return self.attempted - self.tally.failed

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else math.inf

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def transactions(self) -> int:
        return sum(n for label, n in self.statuses.items() if label.startswith("tx "))

    @property
    def lost_races(self) -> int:
        return self.statuses.get("tx 409", 0) + self.statuses.get("tx 412", 0)

    def losses(self, attempted_ids: Sequence[str]) -> dict[str, int]:
        """LOST = attempted events not (returned by append and stored exactly once), with its parts."""
        assert self.stored is not None
        returned = set(self.tally.returned_ids)
        attempted = set(attempted_ids)
        ids = self.stored.ids
        kept = sum(1 for i in attempted_ids if i in returned and ids[i] == 1)
        return {
            "lost": len(attempted_ids) - kept,
            "failed": self.tally.failed,
            "missing": sum(1 for i in attempted_ids if ids[i] == 0),
            "silently_missing": sum(1 for i in attempted_ids if i in returned and ids[i] == 0),
            "stored_though_failed": sum(1 for i in attempted_ids if i not in returned and ids[i] > 0),
            "duplicated": sum(1 for i in attempted_ids if ids[i] > 1),
            "foreign": sum(n for i, n in ids.items() if i not in attempted),
        }


# -- workload ---------------------------------------------------------------------------------------


def shares(records: int, writers: int) -> list[int]:
    """``records`` shared out over ``writers`` as evenly as possible."""
    return [records // writers + (1 if i < records % writers else 0) for i in range(writers)]


def writer_events(scenario: str, writer: int, count: int) -> list[AuditEvent]:
    """What an HTTP refusal records (``shared.entrypoints.auth``): hot on the service chain, spread on the
    writer's own secret chain."""
    actor = Actor(id="anonymous", type=ActorType.USER, ip="127.0.0.1", user_agent=f"bench-writer-{writer}")
    secret = f"bench-writer-{writer:03d}" if scenario == "spread" else None
    return [
        AuditEvent(
            action=Action.ACCESS_DENIED,
            vault=VAULT,
            time=datetime.now(UTC),
            result=Result.DENIED,
            actor=actor,
            secret_name=secret,
            correlation_id=uuid.uuid4().hex,
            details={
                "status": 401,
                "reason": "authentication required",
                "required_role": "Secrets.Audit.Read",
                "method": "GET",
                "route": "audit",
                "secret_name": None,
                "writer": writer,
                "index": index,
            },
        )
        for index in range(count)
    ]


def write(
    writer: int, log: TableAuditLog, events: Sequence[AuditEvent], start: threading.Barrier, tally: Tally
) -> None:
    start.wait()
    for index, event in enumerate(events):
        t0 = time.perf_counter()
        try:
            records = log.append([event])
        except Exception as err:  # any failure is a lost record, reported with its error
            ms = (time.perf_counter() - t0) * 1000
            tally.add(ms, (), Failure(writer, index, f"{type(err).__name__}: {err}"))
        else:
            tally.add((time.perf_counter() - t0) * 1000, [r.event.id for r in records], None)


def run_scenario(
    scenario: str,
    writers: int,
    records: int,
    log: TableAuditLog,
    counter: RequestCounter,
    discards: PoolDiscards,
    progress_every: float,
) -> tuple[ScenarioResult, list[str]]:
    events = [writer_events(scenario, i, n) for i, n in enumerate(shares(records, writers))]
    attempted_ids = [e.id for chunk in events for e in chunk]
    tally = Tally()
    start = threading.Barrier(writers + 1)
    threads = [
        threading.Thread(
            target=write, args=(i, log, events[i], start, tally), name=f"writer-{i}", daemon=True
        )
        for i in range(writers)
    ]
    for thread in threads:
        thread.start()
    before, discarded_before = counter.snapshot(), discards.count
    start.wait()
    started = time.perf_counter()
    next_report = started + progress_every
    for thread in threads:
        while thread.is_alive():
            thread.join(timeout=0.2)
            if time.perf_counter() >= next_report:
                next_report += progress_every
                elapsed = time.perf_counter() - started
                print(
                    f"  {writers:>3} writers {scenario:<6} {tally.done:>6,}/{records:,} appends "
                    f"({tally.failed:,} failed)  {elapsed:7.1f} s  {tally.done / elapsed:8.1f} appends/s",
                    file=sys.stderr,
                    flush=True,
                )
    seconds = time.perf_counter() - started
    result = ScenarioResult(
        writers=writers,
        scenario=scenario,
        table=log.table.table_name,
        chains=len({e.chain for chunk in events for e in chunk}),
        attempted=records,
        seconds=seconds,
        tally=tally,
        statuses=counter.snapshot() - before,
        pool_discards=discards.count - discarded_before,
    )
    return result, attempted_ids


@dataclass(frozen=True)
class Peer:
    """How a writer process reaches the peers (what it needs to build its own clients)."""

    connection_string: str
    vault_url: str
    client_kwargs: dict[str, Any]
    table: str


def process_writers(
    peer: Peer, writers: Sequence[int], events: Sequence[Sequence[AuditEvent]], start: Any
) -> tuple[list[float], list[str], list[Failure], Counter[str]]:
    """One writer process, as one Functions instance: its own clients and its own ``TableAuditLog`` (so
    its own group commit and head cache), its writers as threads, started with every other process's."""
    from azure.data.tables import TableServiceClient
    from azure.keyvault.secrets import SecretClient

    from shared.adapters.key_vault import LocalTokenCredential

    counter = RequestCounter()
    tables = TableServiceClient.from_connection_string(peer.connection_string, raw_response_hook=counter)
    keys = KeyVaultMacKeyRing(SecretClient(peer.vault_url, LocalTokenCredential(), **peer.client_kwargs))
    keys.current()
    log = TableAuditLog(tables, keys, table=peer.table)
    tally = Tally()
    local = threading.Barrier(len(writers) + 1)
    threads = [
        threading.Thread(target=write, args=(w, log, chunk, local, tally), daemon=True)
        for w, chunk in zip(writers, events, strict=True)
    ]
    for thread in threads:
        thread.start()
    start.wait()  # every process's threads are ready
    local.wait()
    for thread in threads:
        thread.join()
    log.records_index.flush()
    return tally.latencies_ms, tally.returned_ids, tally.failures, counter.snapshot()


def run_scenario_processes(
    scenario: str, writers: int, records: int, log: TableAuditLog, peer: Peer, processes: int
) -> tuple[ScenarioResult, list[str]]:
    """The scenario with its writers split over ``processes`` processes appending to one table."""
    import multiprocessing

    events = [writer_events(scenario, i, n) for i, n in enumerate(shares(records, writers))]
    attempted_ids = [e.id for chunk in events for e in chunk]
    context = multiprocessing.get_context("spawn")
    start = context.Manager().Barrier(processes + 1)
    groups = [list(range(writers))[p::processes] for p in range(processes)]
    tally, statuses = Tally(), Counter[str]()
    with context.Pool(processes) as pool:
        pending = [
            pool.apply_async(process_writers, (peer, group, [events[w] for w in group], start))
            for group in groups
        ]
        start.wait()
        started = time.perf_counter()
        for job in pending:
            latencies, returned, failures, counted = job.get(timeout=3600)
            tally.latencies_ms += latencies
            tally.returned_ids += returned
            tally.failures += failures
            tally.done += len(latencies)
            tally.failed += len(failures)
            statuses += counted
        seconds = time.perf_counter() - started
    result = ScenarioResult(
        writers=writers, scenario=scenario, table=log.table.table_name,
        chains=len({e.chain for chunk in events for e in chunk}), attempted=records, seconds=seconds,
        tally=tally, statuses=statuses, pool_discards=0,
    )  # fmt: skip
    return result, attempted_ids


def read_back(log: TableAuditLog) -> Stored:
    rows: Counter[str] = Counter()
    heads: dict[str, int] = {}
    ids: Counter[str] = Counter()
    entities = log.table.query_entities(
        "PartitionKey ne @digest",
        parameters={"digest": DIGEST_CHAIN},
        select=["PartitionKey", "RowKey", "id", "seq"],
    )
    for entity in entities:
        chain = str(entity["PartitionKey"])
        if entity["RowKey"] == HEAD_ROW:
            heads[chain] = int(entity["seq"])
        else:
            rows[chain] += 1
            ids[str(entity.get("id"))] += 1
    return Stored(rows, heads, ids)


def verify(log: TableAuditLog, keys: KeyVaultMacKeyRing) -> Verified:
    """The chain verification of ``verify_audit`` (without its digest checks): every chain walked."""
    started = time.perf_counter()
    contents = log.read_chains()
    breaks: list[Break] = []
    records = 0
    for name, chain in sorted(contents.items()):
        verdict = verify_chain(name, chain.records, keys.get, chain.head)
        records += verdict.records
        breaks += verdict.breaks
        for row in chain.stray_rows:
            breaks.append(Break(name, BreakKind.UNEXPECTED, None, f"row {row[:64]!r} is not a record"))
    return Verified(len(contents), records, breaks, time.perf_counter() - started)


def check(
    result: ScenarioResult, log: TableAuditLog, keys: KeyVaultMacKeyRing, attempted_ids: Sequence[str]
) -> None:
    result.stored = read_back(log)
    for chain, rows in sorted(result.stored.rows_by_chain.items()):
        head = result.stored.heads.get(chain)
        if head != rows:
            result.problems.append(f"chain {chain}: {rows} rows but the head says {head}")
    result.verified = verify(log, keys)
    breaks = result.verified.breaks
    for b in breaks[:MAX_FAILURES_SHOWN]:
        result.problems.append(f"verify break: {b.to_dict()}")
    if len(breaks) > MAX_FAILURES_SHOWN:
        result.problems.append(f"... and {len(breaks) - MAX_FAILURES_SHOWN} more breaks")
    stored_rows = sum(result.stored.rows_by_chain.values())
    if result.verified.records != stored_rows:
        result.problems.append(f"verify saw {result.verified.records} records, the table holds {stored_rows}")
    losses = result.losses(attempted_ids)
    for name in ("silently_missing", "stored_though_failed", "duplicated", "foreign"):
        if losses[name]:
            result.problems.append(f"{name.replace('_', ' ')}: {losses[name]:,} record(s)")


# -- output -----------------------------------------------------------------------------------------


def pct(values: Sequence[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else math.nan
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def statuses_text(statuses: Counter[str]) -> str:
    return ", ".join(f"{label}\N{MULTIPLICATION SIGN}{n:,}" for label, n in sorted(statuses.items()))


def print_results(results: Sequence[tuple[ScenarioResult, list[str]]]) -> None:
    header = (
        f"{'writers':>7} {'scenario':<8}{'chains':>7}{'attempted':>10}{'ok':>7}{'failed':>7}{'stored':>7}"
        f"{'LOST':>6}{'wall s':>8}{'appends/s':>10}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'max ms':>10}"
        f"{'requests':>9}{'tx':>7}{'tx lost':>8}"
    )
    print(header)
    print("-" * len(header))
    for r, ids in results:
        assert r.stored is not None
        lat = r.tally.latencies_ms
        print(
            f"{r.writers:>7} {r.scenario:<8}{r.chains:>7}{r.attempted:>10,}{r.ok:>7,}{r.tally.failed:>7,}"
            f"{sum(r.stored.rows_by_chain.values()):>7,}{r.losses(ids)['lost']:>6,}{r.seconds:>8.2f}"
            f"{r.rate:>10.1f}{pct(lat, 50):>10.1f}{pct(lat, 95):>10.1f}{pct(lat, 99):>10.1f}{max(lat):>10.1f}"
            f"{r.requests:>9,}{r.transactions:>7,}{r.lost_races:>8,}"
        )
    print()
    for r, _ in results:
        print(
            f"{r.writers:>3} writers {r.scenario:<6} responses: {statuses_text(r.statuses)}; "
            f"connections discarded (pool full): {r.pool_discards:,}"
        )


def print_failures(results: Sequence[tuple[ScenarioResult, list[str]]]) -> None:
    for r, _ in results:
        if not r.tally.failures:
            continue
        kinds = Counter(f.error for f in r.tally.failures)
        print(f"{r.writers} writers {r.scenario}: {r.tally.failed:,} failed append(s), by error:")
        for error, n in kinds.most_common(MAX_FAILURES_SHOWN):
            print(f"  {n:>5,} x {error}")
        for f in r.tally.failures[:3]:
            print(f"  e.g. writer {f.writer} append #{f.index}: {f.error}")


# -- main -------------------------------------------------------------------------------------------


def parse_writers(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values or any(v < 1 or v > 1000 for v in values):
        raise argparse.ArgumentTypeError("writer counts must be from 1 to 1000")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.audit_contention",
        description=(
            "Audit append under contention against Azurite (in memory) and the Key Vault emulator: N threads "
            "sharing one TableAuditLog append single records to ONE hot chain and, as the baseline, each "
            "to its own chain; every table is read back and verified."
        ),
    )
    parser.add_argument(
        "--writers",
        type=parse_writers,
        default=[64, 256],
        help="writer counts, comma-separated (default 64,256)",
    )
    parser.add_argument(
        "--records", type=int, default=None, help="records per scenario, shared by the writers (default 2000)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 400 records unless --records is given"
    )
    parser.add_argument(
        "--progress-every", type=float, default=10.0, help="print progress every N seconds (default 10)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="writer processes, as Functions instances: the writers are split over them (default 1)",
    )
    args = parser.parse_args(argv)
    if args.processes < 1 or any(w < args.processes for w in args.writers):
        parser.error("--processes must be at least 1 and at most the smallest writer count")
    if args.records is None:
        args.records = 400 if args.quick else 2000
    if args.records < max(args.writers):
        parser.error("--records must be at least the largest writer count (one record per writer)")
    if args.progress_every <= 0:
        parser.error("--progress-every must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(run, parse_args(argv))


def run(args: argparse.Namespace) -> int:
    print(f"audit contention benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"Node {tool_version(['node', '--version'])}, Azurite {azurite_version()} (in memory)"
    )
    where = (
        "sharing ONE TableAuditLog"
        if args.processes == 1
        else f"split over {args.processes} processes (as Functions instances), one TableAuditLog each"
    )
    print(
        f"workload: {args.records:,} single-record append() calls per scenario, shared by N writer "
        f"threads (N = {', '.join(map(str, args.writers))}) {where}; hot = all on the "
        f"service chain {VAULT}:_service, spread = one chain per writer"
    )
    print(f"goal: hot >= {GOAL_RATIO:.0%} of spread's appends/s, and 0 records lost")
    print()
    results = measure(args)
    return report(args.writers, results)


def measure(args: argparse.Namespace) -> list[tuple[ScenarioResult, list[str]]]:
    """Start the peers, run every scenario into its own table, read each back and verify it."""
    discards = PoolDiscards()
    discards.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    pool_log = logging.getLogger("urllib3.connectionpool")
    pool_log.addHandler(discards)
    pool_log.propagate = False
    results: list[tuple[ScenarioResult, list[str]]] = []
    with ExitStack() as stack:
        counter = RequestCounter()
        peers = start_peers(stack, "bench-contention-", counter)
        tables, keys = peers.tables, peers.keys

        run_id = uuid.uuid4().hex[:8]
        for writers in args.writers:
            for scenario in SCENARIOS:
                log = TableAuditLog(tables, keys, table=f"bench{scenario}{writers}w{run_id}")
                _ = log.table  # creates the table before the clock starts
                print(
                    f"{writers} writers, {scenario}: {args.records:,} appends into "
                    f"{log.table.table_name} ...",
                    file=sys.stderr,
                    flush=True,
                )
                if args.processes > 1:
                    peer = Peer(
                        peers.azurite.connection_string, peers.emulator.url, peers.emulator.client_kwargs(),
                        log.table.table_name,
                    )  # fmt: skip
                    result, ids = run_scenario_processes(
                        scenario, writers, args.records, log, peer, args.processes
                    )
                else:
                    result, ids = run_scenario(
                        scenario, writers, args.records, log, counter, discards, args.progress_every
                    )
                print(
                    f"  done in {result.seconds:.1f} s ({result.tally.failed:,} failed); reading back and "
                    "verifying ...",
                    file=sys.stderr,
                    flush=True,
                )
                check(result, log, keys, ids)
                results.append((result, ids))
    return results


def report(writer_counts: Sequence[int], results: Sequence[tuple[ScenarioResult, list[str]]]) -> int:
    """Print the figures, the goal and every problem; 1 when a record was lost or verify broke."""
    print_results(results)
    print()
    by_key = {(r.writers, r.scenario): r for r, _ in results}
    ratios_met = True
    for writers in writer_counts:
        hot, spread = by_key[(writers, "hot")], by_key[(writers, "spread")]
        ratio = hot.rate / spread.rate if spread.rate else math.nan
        met = ratio >= GOAL_RATIO
        ratios_met = ratios_met and met
        print(
            f"{writers:>3} writers: hot/spread = {hot.rate:.1f}/{spread.rate:.1f} appends/s = "
            f"{ratio:.0%} (goal >= {GOAL_RATIO:.0%}): {'met' if met else 'NOT met'}"
        )
    print()
    print(f"{'verify':<15}{'table':<28}{'records':>9}{'chains':>8}{'breaks':>8}{'seconds':>9}  result")
    for r, _ in results:
        v = r.verified
        assert v is not None
        print(
            f"{f'{r.writers} {r.scenario}':<15}{r.table:<28}{v.records:>9,}{v.chains:>8}{len(v.breaks):>8}"
            f"{v.seconds:>9.2f}  {'ok' if not v.breaks else 'BROKEN'}"
        )
        for problem in r.problems:
            print(f"  {r.writers} {r.scenario}: {problem}")
    print()
    for r, ids in results:
        parts = r.losses(ids)
        print(
            f"{r.writers:>3} writers {r.scenario:<6} LOST {parts['lost']:,}: {parts['failed']:,} failed "
            f"append(s), {parts['missing']:,} attempted record(s) not in the table, "
            f"{parts['stored_though_failed']:,} stored though append failed, "
            f"{parts['silently_missing']:,} returned but not stored, {parts['duplicated']:,} stored twice"
        )
    print()
    print_failures(results)

    lost = sum(r.losses(ids)["lost"] for r, ids in results)
    broken = any(r.problems for r, _ in results)
    print(f"LOST: {lost:,} of {sum(r.attempted for r, _ in results):,} records")
    goal = ratios_met and lost == 0 and not broken
    print(f"goal (hot >= {GOAL_RATIO:.0%} of spread, 0 lost, verify ok): {'met' if goal else 'NOT met'}")
    return 1 if lost or broken else 0


if __name__ == "__main__":
    sys.exit(main())
