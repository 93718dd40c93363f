"""Benchmark of the rotation sweep and of draining its queue, against a vault held to Key Vault's limits.

Starts its own Azurite (in memory), the Key Vault emulator (``--latency-ms``, ``--create-limit``,
``--tx-limit``, started with throttling off) and an Event Grid topic sink, then seeds ``--secrets``
secrets through the real ``SecretClient``: ``--due-percent`` of them managed and due (made with the
emulator's clock shifted back past their 30-day interval), the rest managed-not-due or unmanaged, all with
the ``key-vault`` rotator. Then it switches Key Vault's limits on (300 set_secret and 4,000 other calls per
10 s, 429 with ``Retry-After``) and measures, side by side in one run:

1. **Finding what is due.** The production sweep (``shared.services.sweep.sweep`` over the production
   ``KeyVaultSecretStore``, sending to the ``rotation-requests`` queue on Azurite) against a NAIVE
   baseline, the common per-secret design: list, then ``get_secret`` every secret (16 threads). Requests
   come from the emulator's ``GET /_emulator/stats``, including whose values were read.
2. **Draining the queue.** ``--workers`` threads (16, the Functions queue trigger's default batch size)
   receive the messages and call what ``rotate_secret`` calls, ``rotate_requested``, with the production
   adapters: ``KeyVaultSecretStore``, ``TableStateStore``, the audit trail (``TableAuditLog`` with the
   MAC key in the vault) on Azurite and ``EventGridPublisher`` to the sink. Rotations per second against
   the create limit, failures, and the 429s the SDK absorbed (emulator stats ``throttled``).
3. **Memory.** The sweep's wall time and peak memory (tracemalloc) at ``--secrets`` and ``--large``
   secrets. These sweeps send to an in-memory collector (the ``RotationRequests`` port) instead of the
   queue, so that enqueueing thousands of messages neither dominates the wall time nor hides in the peak.

Exits 1 when a goal is not met (printed with the figures), 130 when interrupted.

    .venv/bin/python -m bench.sweep                    # 10,000 and 50,000 secrets
    .venv/bin/python -m bench.sweep --quick            # 300 and 1,500 secrets: a smoke run
    .venv/bin/python -m bench.sweep --vaults 4         # 4 vaults x 10,000 beside 1 x 40,000 (sweep_vaults.py)
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import platform
import queue
import random
import re
import secrets
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.core.credentials import AzureKeyCredential
from azure.data.tables import TableServiceClient
from azure.eventgrid import EventGridPublisherClient
from azure.keyvault.secrets import SecretClient
from azure.storage.queue import QueueClient, QueueMessage, QueueServiceClient, TextBase64DecodePolicy

from bench.common import azurite_version, run_benchmark, start_peers, tool_version
from devtools.keyvault_emulator.process import EmulatorProcess
from devtools.processes import StoppableProcess, terminate
from shared.adapters.clock import SystemClock
from shared.adapters.event_grid import EventGridPublisher
from shared.adapters.key_vault import (
    AUDIT_ANCHOR_SECRET,
    AUDIT_KEY_SECRET,
    KeyVaultMacKeyRing,
    KeyVaultSecretStore,
)
from shared.adapters.storage import ROTATION_QUEUE, StorageQueueRotationRequests
from shared.adapters.tables import AUDIT_TABLE, STATE_TABLE, TableAuditLog, TableStateStore
from shared.bootstrap import Container
from shared.config import KeyVaultSettings, Settings
from shared.domain.notifications import SECRET_ROTATED
from shared.domain.policy import RotationPolicy, SecretKind
from shared.domain.rotation import RotationRequest
from shared.domain.secrets import MAX_PAGE_SIZE
from shared.ports import MacKeyRing, Publisher, RotationRequests, StateStore
from shared.services.audit import AuditTrail
from shared.services.peers import Peers as ServicePeers
from shared.services.rotation import rotate_requested
from shared.services.sealed_state import SealedStateStore
from shared.services.sweep import SweepReport, sweep

#: Every managed bench secret: a 30-day API key; the due ones are made DUE_AGE_DAYS ago.
POLICY = RotationPolicy(SecretKind.API_KEY, timedelta(days=30), None, "bench")
DUE_AGE_DAYS = 40
#: Of the secrets that are not due, this share is managed (the rest carries no policy).
MANAGED_NOT_DUE_SHARE = 0.45
#: The most list requests the sweep may make, over the minimum ceil(N / 25) pages.
MAX_REQUEST_RATIO = 1.05
#: Draining must reach this share of the create limit's rate.
MIN_RATE_SHARE = 0.80
#: The sweep's peak beyond what it keeps (the due list) may grow this much from the small to the large vault.
MAX_MEMORY_GROWTH = 1.5
VAULT = "bench-vault"


# -- the vault's contents ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Population:
    """The names seeded, by what the sweep should make of them."""

    due: frozenset[str]
    not_due: frozenset[str]
    unmanaged: frozenset[str]

    @property
    def total(self) -> int:
        return len(self.due) + len(self.not_due) + len(self.unmanaged)


def plan_population(start: int, count: int, due: int, seed: int = 20_261_130) -> Population:
    """``count`` names from index ``start``: ``due`` of them due, the others split managed / unmanaged,
    in an order unrelated to their kind."""
    names = [f"sweep-bench-{i:06d}" for i in range(start, start + count)]
    random.Random(seed + start).shuffle(names)
    managed = round((count - due) * MANAGED_NOT_DUE_SHARE)
    return Population(
        due=frozenset(names[:due]),
        not_due=frozenset(names[due : due + managed]),
        unmanaged=frozenset(names[due + managed :]),
    )


def seed(
    client: SecretClient,
    emulator: EmulatorProcess,
    population: Population,
    *,
    workers: int = 8,
    progress: Callable[[int], None] | None = None,
    due_age_days: float = DUE_AGE_DAYS,
) -> None:
    """Create the population through the SDK (8 threads, within azure-core's pool of 10 connections): the
    due secrets with the emulator's clock shifted ``due_age_days`` back, so they are due by their interval;
    then the clock is put back."""
    done = 0
    lock = threading.Lock()

    def make(name: str, tags: dict[str, str]) -> None:
        nonlocal done
        client.set_secret(name, secrets.token_urlsafe(24), tags=tags, content_type="text/plain")
        with lock:
            done += 1
            if progress is not None and done % 1000 == 0:
                progress(done)

    def make_all(names: Iterable[str], tags: dict[str, str]) -> None:
        with ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(lambda name: make(name, tags), sorted(names)):
                pass

    emulator.set_clock_offset(-due_age_days * 86400)
    try:
        make_all(population.due, POLICY.to_tags())
    finally:
        emulator.set_clock_offset(0)
    make_all(population.not_due, POLICY.to_tags())
    make_all(population.unmanaged, {"owner": "bench"})


# -- the production wiring --------------------------------------------------------------------------


class SinkProcess(StoppableProcess):
    """``python -m devtools.eventgrid_sink`` on a free port, in its own process so that receiving the
    notifications does not compete with the rotations for this process's interpreter."""

    def __init__(self, proc: subprocess.Popen[str], endpoint: str, key: str) -> None:
        self._proc = proc
        self.endpoint = endpoint
        self.key = key

    @classmethod
    def start(cls, key: str = "bench-topic-key") -> SinkProcess:
        args = [sys.executable, "-m", "devtools.eventgrid_sink", "--port", "0", "--key", key]
        proc = subprocess.Popen(  # noqa: S603 - our own module
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert proc.stdout is not None
        ready = re.search(r"ready (http://\S+)", proc.stdout.readline())
        if ready is None:
            terminate(proc)
            raise RuntimeError("the Event Grid sink did not start")
        return cls(proc, ready.group(1), key)

    def events(self) -> list[dict[str, Any]]:
        url = self.endpoint.replace("/api/events", "/_sink/events")
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - loopback URL it printed
            events: list[dict[str, Any]] = json.load(response)
        return events

    def stop(self) -> None:
        terminate(self._proc)


@dataclass(frozen=True)
class World:
    """The adapters ``rotation_sweep`` and ``rotate_secret`` get from shared/bootstrap.py, on these peers
    (table and queue names can differ, so that a test shares an Azurite)."""

    store: KeyVaultSecretStore
    states: StateStore
    audit_log: TableAuditLog
    trail: AuditTrail
    publisher: Publisher
    requests: StorageQueueRotationRequests
    queue: QueueClient
    clock: SystemClock
    reserved: frozenset[str]
    keys: MacKeyRing

    def peers(self, requests: RotationRequests | None = None) -> ServicePeers:
        """The bundle the services take (``requests``: where rotation requests go, default the queue)."""
        return ServicePeers(
            store=self.store, states=self.states, trail=self.trail, publisher=self.publisher,
            clock=self.clock, requests=requests or self.requests, reader=self.audit_log, keys=self.keys,
            reserved=self.reserved,
        )  # fmt: skip


def build_world(
    secrets_client: SecretClient,
    tables: TableServiceClient,
    queues: QueueServiceClient,
    keys: MacKeyRing,
    topic_endpoint: str,
    topic_key: str,
    *,
    queue: str = ROTATION_QUEUE,
    state_table: str = STATE_TABLE,
    audit_table: str = AUDIT_TABLE,
) -> World:
    clock = SystemClock()
    publisher = EventGridPublisher(EventGridPublisherClient(topic_endpoint, AzureKeyCredential(topic_key)))
    reader = queues.get_queue_client(queue, message_decode_policy=TextBase64DecodePolicy())
    audit_log = TableAuditLog(tables, keys, table=audit_table)
    return World(
        store=KeyVaultSecretStore(secrets_client),
        # Sealed, as bootstrap's state store is: every row written with its MAC, every row read checked.
        states=SealedStateStore(TableStateStore(tables, state_table), keys, state_table),
        audit_log=audit_log,
        trail=AuditTrail(audit_log, clock, VAULT),
        publisher=publisher,
        requests=StorageQueueRotationRequests(queues, queue),
        queue=reader,
        clock=clock,
        reserved=frozenset({AUDIT_KEY_SECRET, AUDIT_ANCHOR_SECRET}),
        keys=keys,
    )


# -- 1. finding what is due -------------------------------------------------------------------------


@dataclass(frozen=True)
class Requests:
    """What the emulator counted (``GET /_emulator/stats`` after a reset)."""

    stats: dict[str, Any]

    @property
    def total(self) -> int:
        return int(self.stats["total"])

    @property
    def throttled(self) -> int:
        return int(self.stats["throttled"])

    def of(self, operation: str) -> int:
        return int(self.stats["requests"].get(operation, 0))

    def names(self, operation: str) -> dict[str, int]:
        found: dict[str, int] = self.stats.get("names", {}).get(operation, {})
        return found


@dataclass(frozen=True)
class SweepRun:
    report: SweepReport
    seconds: float
    requests: Requests

    @property
    def minimum(self) -> int:
        """The fewest requests that can list ``listed`` secrets: one page per 25."""
        return math.ceil(self.report.listed / MAX_PAGE_SIZE)


def run_sweep(world: World, emulator: EmulatorProcess, requests: Any = None) -> SweepRun:
    """One production sweep (sending to ``requests``, default the queue), timed and counted."""
    emulator.reset_stats()
    started = time.perf_counter()
    report = sweep(world.peers(requests), uuid.uuid4().hex)
    seconds = time.perf_counter() - started
    return SweepRun(report, seconds, Requests(emulator.stats()))


@dataclass(frozen=True)
class NaiveRun:
    listed: int
    seconds: float
    requests: Requests


def run_naive(client: SecretClient, emulator: EmulatorProcess, workers: int) -> NaiveRun:
    """The common per-secret design: list, then read every secret (value and properties), in parallel."""
    emulator.reset_stats()
    started = time.perf_counter()
    names = [p.name for p in client.list_properties_of_secrets(max_page_size=MAX_PAGE_SIZE) if p.name]
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(client.get_secret, names):
            pass
    seconds = time.perf_counter() - started
    return NaiveRun(len(names), seconds, Requests(emulator.stats()))


def not_due_reads(requests: Requests, due: Iterable[str]) -> int:
    """Values read (get_secret) of secrets that are not due."""
    wanted = {name.lower() for name in due}
    return sum(n for name, n in requests.names("get_secret").items() if name not in wanted)


# -- 2. draining the queue --------------------------------------------------------------------------


@dataclass
class DrainRun:
    workers: int
    processes: int = 1
    started: float = 0.0  # wall clock (time.time()): several processes report against it
    finished: float = 0.0
    rotated: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    requests: Requests | None = None
    child_cpu: float = 0.0  # CPU seconds the drain processes spent between "go" and their result

    @property
    def seconds(self) -> float:
        return max(self.finished - self.started, 0.0)

    @property
    def rate(self) -> float:
        return len(self.rotated) / self.seconds if self.seconds else 0.0

    def merge(self, other: DrainRun) -> None:
        self.finished = max(self.finished, other.finished)
        self.rotated += other.rotated
        for status, count in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + count
        self.failures += other.failures
        self.latencies_ms += other.latencies_ms
        self.child_cpu += other.child_cpu


def drain_threads(world: World, threads: int, ready: Callable[[], None]) -> DrainRun:
    """``threads`` threads rotate, as ``rotate_secret`` does, what one receiver takes off the queue in
    batches of up to 32, as the Functions host does (batchSize 16: it fetches more while half are still
    running), until the queue is empty; ``ready()`` runs once all are waiting to start. A failed rotation
    is recorded and its message left (the queue would retry it)."""
    run = DrainRun(threads)
    lock = threading.Lock()
    start = threading.Barrier(threads + 2)
    inbox: queue.Queue[QueueMessage | None] = queue.Queue(maxsize=threads)

    def receive() -> None:
        start.wait()
        try:
            while batch := list(world.queue.receive_messages(max_messages=32, visibility_timeout=600)):
                for message in batch:
                    inbox.put(message)
        finally:
            for _ in range(threads):
                inbox.put(None)

    def work() -> None:
        start.wait()
        while True:
            message = inbox.get()
            if message is None:
                return
            began = time.perf_counter()
            name = "?"
            try:
                request = RotationRequest.from_json(str(message.content))
                name = request.secret_name
                outcome = rotate_requested(world.peers(), request)
            except Exception as err:  # every failure is counted and printed
                with lock:
                    run.failures.append((name, f"{type(err).__name__}: {err}"))
                continue
            world.queue.delete_message(message)
            with lock:
                if outcome.status == "rotated":
                    run.rotated.append(outcome.secret_name)
                run.statuses[outcome.status] = run.statuses.get(outcome.status, 0) + 1
                run.latencies_ms.append((time.perf_counter() - began) * 1000)
                run.finished = time.time()

    workers = [threading.Thread(target=work, name=f"drain-{i}", daemon=True) for i in range(threads)]
    workers.append(threading.Thread(target=receive, name="drain-receiver", daemon=True))
    for worker in workers:
        worker.start()
    ready()
    run.started = run.finished = time.time()
    start.wait()
    for worker in workers:
        worker.join()
    return run


@dataclass(frozen=True)
class DrainPeers:
    """Where a drain process finds the peers and the names ``build_world`` took."""

    vault_url: str
    cert_file: str
    storage: str
    topic_endpoint: str
    topic_key: str
    queue: str = ROTATION_QUEUE
    state_table: str = STATE_TABLE
    audit_table: str = AUDIT_TABLE


def drain(
    world: World,
    emulator: EmulatorProcess,
    workers: int,
    processes: int = 1,
    peers: DrainPeers | None = None,
    kv_retry_status: int | None = None,
) -> DrainRun:
    """Drain the queue with ``workers`` threads: in this process, or shared out over ``processes`` child
    processes (each with its own clients, as several Functions worker processes or instances have; they
    need ``peers``, and build their clients as shared/bootstrap.py does). The emulator's counters are reset
    right before the workers start."""
    if processes == 1:
        run = drain_threads(world, workers, emulator.reset_stats)
        run.requests = Requests(emulator.stats())
        return run
    assert peers is not None
    shares = [workers // processes + (i < workers % processes) for i in range(processes)]
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.sweep", "--drain-child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in shares
    ]
    try:
        for child, threads in zip(children, shares, strict=True):
            assert child.stdin is not None and child.stdout is not None
            config = {**vars(peers), "threads": threads, "kv_retry_status": kv_retry_status}
            child.stdin.write(json.dumps(config) + "\n")
            child.stdin.flush()
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("a drain process did not start")
        emulator.reset_stats()
        run = DrainRun(workers, processes, started=time.time(), finished=time.time())
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            assert child.stdout is not None
            result = json.loads(child.stdout.readline() or "null")
            if result is None:
                raise RuntimeError("a drain process ended without its result")
            run.merge(
                DrainRun(
                    result["threads"],
                    finished=result["finished"],
                    rotated=result["rotated"],
                    statuses=result["statuses"],
                    failures=[(n, e) for n, e in result["failures"]],
                    latencies_ms=result["latencies_ms"],
                    child_cpu=result["cpu"],
                )
            )
        run.requests = Requests(emulator.stats())
        return run
    finally:
        for child in children:
            terminate(child)


class BenchContainer(Container):
    """shared/bootstrap.py's Container, whose Key Vault client can be given another ``retry_status`` (how
    often azure-core retries a 429 or 5xx; bootstrap's KEY_VAULT_STATUS_RETRIES) to see what it changes."""

    def __init__(self, settings: Settings, kv_retry_status: int | None = None) -> None:
        super().__init__(settings)
        self._kv_retry_status = kv_retry_status

    def _secret_client(self, kv: KeyVaultSettings | None = None, **transport: Any) -> SecretClient:
        if self._kv_retry_status is not None:
            transport["retry_status"] = self._kv_retry_status
        return super()._secret_client(kv, **transport)


def production_clients(
    peers: DrainPeers, kv_retry_status: int | None = None
) -> tuple[SecretClient, TableServiceClient, QueueServiceClient]:
    """The Key Vault, table and queue clients exactly as shared/bootstrap.py builds them for the app."""
    settings = Settings(
        {
            "KEY_VAULT_URL": peers.vault_url,
            "KEY_VAULT_CA_BUNDLE": peers.cert_file,
            "SECRETS_STORAGE": peers.storage,
        }
    )
    container = BenchContainer(settings, kv_retry_status)
    return container.secret_client, container.table_service, container.queue_service


def drain_child() -> int:
    """One drain process (``--drain-child``): peers and thread count as a JSON line on stdin, "ready" on
    stdout once its clients exist, then it waits for "go", drains and prints its result as a JSON line."""
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    config = json.loads(sys.stdin.readline())
    threads = int(config.pop("threads"))
    retry_status = config.pop("kv_retry_status")
    peers = DrainPeers(**config)
    client, tables, queues = production_clients(peers, retry_status)
    keys = KeyVaultMacKeyRing(client)
    keys.current()  # as a warm worker has it: read before the counters are reset
    world = build_world(
        client,
        tables,
        queues,
        keys,
        peers.topic_endpoint,
        peers.topic_key,
        queue=peers.queue,
        state_table=peers.state_table,
        audit_table=peers.audit_table,
    )

    cpu_at_go = 0.0

    def ready() -> None:
        nonlocal cpu_at_go
        print("ready", flush=True)
        sys.stdin.readline()  # "go"
        cpu_at_go = time.process_time()

    run = drain_threads(world, threads, ready)
    result = {
        "cpu": time.process_time() - cpu_at_go,
        "threads": threads,
        "finished": run.finished,
        "rotated": run.rotated,
        "statuses": run.statuses,
        "failures": run.failures,
        "latencies_ms": run.latencies_ms,
    }
    print(json.dumps(result), flush=True)
    return 0


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children so far, from /proc (0 where unavailable)."""
    try:
        pids = [pid, *(int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
        total = 0
        for each in pids:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def own_cpu_seconds() -> float:
    """CPU time of this process (its drain processes report their own)."""
    return time.process_time()


# -- 3. memory ----------------------------------------------------------------------------------------


class Collector:
    """RotationRequests kept in memory: what a sweep would have put on the queue."""

    def __init__(self) -> None:
        self.sent: list[RotationRequest] = []

    def send(self, requests: Sequence[RotationRequest]) -> None:
        self.sent.extend(requests)


@dataclass(frozen=True)
class MemoryRun:
    secrets: int
    due: int
    seconds: float
    requests: int
    minimum: int
    peak: int  # bytes allocated at the peak, beyond what was allocated before the sweep
    kept: int  # bytes still allocated after it: the report and the collected requests (the due list)

    @property
    def beyond_due_list(self) -> int:
        return self.peak - self.kept


def measure_memory(world: World, emulator: EmulatorProcess) -> MemoryRun:
    """An untraced sweep for the wall time, then a traced one for the peak (tracemalloc slows Python)."""
    timed = run_sweep(world, emulator, Collector())
    collector = Collector()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        report = sweep(world.peers(collector), "memory")
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(collector.sent) == len(report.due)
    return MemoryRun(
        secrets=report.listed,
        due=len(report.due),
        seconds=timed.seconds,
        requests=timed.requests.total,
        minimum=timed.minimum,
        peak=peak - before,
        kept=current - before,
    )


# -- output -----------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def percentile(values: Sequence[float], q: int) -> str:
    if len(values) < 20:
        return "-"
    return f"{statistics.quantiles(values, n=100, method='inclusive')[q - 1]:.0f}"


def kib(n: int) -> str:
    return f"{n / 1024:,.0f}"


def progress_printer(what: str, total: int) -> Callable[[int], None]:
    started = time.perf_counter()

    def report(done: int) -> None:
        elapsed = time.perf_counter() - started
        print(f"  {what}: {done:,}/{total:,} in {elapsed:.0f} s", file=sys.stderr, flush=True)

    return report


def seed_and_report(client: SecretClient, emulator: EmulatorProcess, population: Population) -> float:
    print(
        f"seeding {population.total:,} secrets ({len(population.due):,} due) with throttling off ...",
        file=sys.stderr,
        flush=True,
    )
    emulator.set_throttling(False)
    started = time.perf_counter()
    seed(client, emulator, population, progress=progress_printer("seeded", population.total))
    emulator.set_throttling(True)
    return time.perf_counter() - started


# -- main -------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sweep",
        description=(
            "Rotation sweep benchmark against the Key Vault emulator held to Key Vault's limits: the sweep's "
            "requests vs a naive per-secret read, draining the rotation queue with concurrent workers, and "
            "the sweep's wall time and peak memory at two vault sizes."
        ),
    )
    parser.add_argument("--secrets", type=int, default=None, help="vault size (default 10000; --quick 300)")
    parser.add_argument(
        "--large", type=int, default=None, help="the larger vault of the memory run (default 5 x --secrets)"
    )
    parser.add_argument("--due-percent", type=float, default=5.0, help="share of secrets due (default 5)")
    parser.add_argument("--workers", type=int, default=16, help="queue workers (default 16)")
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="processes the workers are shared out over, each with its own clients (default 2)",
    )
    parser.add_argument(
        "--kv-retry-status",
        type=int,
        default=None,
        help="experiment: the app's Key Vault client retries a 429 this many times (default: as "
        "shared/bootstrap.py builds it: KEY_VAULT_STATUS_RETRIES, 10)",
    )
    parser.add_argument("--drain-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--latency-ms", type=int, default=10, help="emulator latency per call (default 10)")
    parser.add_argument("--create-limit", type=int, default=300, help="set_secret per 10 s (default 300)")
    parser.add_argument("--tx-limit", type=int, default=4000, help="other calls per 10 s (default 4000)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 300 and 1,500 secrets")
    parser.add_argument(
        "--vaults",
        type=int,
        default=0,
        help="instead: the sweep over this many vaults of --secrets each beside one vault holding them all "
        "(bench/sweep_vaults.py; 2-16)",
    )
    args = parser.parse_args(argv)
    if args.vaults and not 2 <= args.vaults <= 16:
        parser.error("--vaults must be 2-16 (the service manages at most 16 vaults)")
    if args.secrets is None:
        args.secrets = 300 if args.quick else 10_000
    if args.large is None:
        args.large = 5 * args.secrets
    if args.secrets < 1 or args.large < args.secrets:
        parser.error("--secrets must be at least 1, and --large at least --secrets")
    if not 0 < args.due_percent <= 100:
        parser.error("--due-percent must be in (0, 100]")
    if not 1 <= args.processes <= args.workers:
        parser.error("--processes must be between 1 and --workers")
    for name in ("workers", "create_limit", "tx_limit"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.latency_ms < 0:
        parser.error("--latency-ms must be 0 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.drain_child:
        return drain_child()
    if args.vaults:
        from bench.sweep_vaults import run_vaults

        return run_benchmark(run_vaults, args)
    return run_benchmark(run, args)


def run(args: argparse.Namespace) -> int:
    window = 10.0
    n, large = args.secrets, args.large
    # 16 threads share azure-core's pool of 10 connections per host, as 16 concurrent executions of the
    # Functions worker do: the pool discards (and later reopens) the extra ones, with a warning each time.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    small = plan_population(0, n, round(n * args.due_percent / 100))
    print(f"rotation sweep benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"Node {tool_version(['node', '--version'])}, Azurite {azurite_version()} (in memory)"
    )
    print(
        f"vault: the Key Vault emulator, {args.latency_ms} ms latency per call, limits {args.create_limit:,} "
        f"set_secret and {args.tx_limit:,} other calls per {window:g} s (429 + Retry-After), switched on "
        "after seeding"
    )
    print(
        f"workload: {n:,} secrets: {len(small.due):,} managed and due (made {DUE_AGE_DAYS} days ago on the "
        f"emulator's clock, {POLICY.interval.days}-day interval), {len(small.not_due):,} managed not due, "
        f"{len(small.unmanaged):,} unmanaged; rotator key-vault; plus the service's audit MAC key"
    )
    print()
    failed = False
    with ExitStack() as stack:
        peers = start_peers(
            stack,
            "bench-sweep-",
            latency_ms=args.latency_ms,
            create_limit=args.create_limit,
            tx_limit=args.tx_limit,
            window_seconds=window,
            throttling=False,
        )
        emulator, client = peers.emulator, peers.secrets  # seeding and the naive baseline
        sink = stack.enter_context(SinkProcess.start())
        drain_peers = DrainPeers(
            emulator.url, str(emulator.cert_file), peers.azurite.connection_string, sink.endpoint, sink.key
        )
        app_client, tables, queues = production_clients(drain_peers, args.kv_retry_status)
        for each in (app_client, tables, queues):
            stack.callback(each.close)
        app_keys = KeyVaultMacKeyRing(app_client)
        app_keys.current()  # as a warm worker has it
        world = build_world(app_client, tables, queues, app_keys, sink.endpoint, sink.key)
        # The tables exist before anything is measured.
        _ = world.states.list("rotation"), world.audit_log.table
        seeded_in = seed_and_report(client, emulator, small)
        print(f"seeded {n:,} secrets in {seeded_in:.1f} s (throttling off)", file=sys.stderr, flush=True)

        # 1. finding what is due (and 3. at the first size, while the same secrets are due) --------
        print("sweep ...", file=sys.stderr, flush=True)
        swept = run_sweep(world, emulator)
        queued = world.queue.get_queue_properties().approximate_message_count or 0
        print(f"memory at {n:,} secrets ...", file=sys.stderr, flush=True)
        small_run = measure_memory(world, emulator)
        print(f"naive baseline ({args.workers} threads) ...", file=sys.stderr, flush=True)
        naive = run_naive(client, emulator, args.workers)
        failed |= print_finding(swept, naive, small, queued, args.workers)

        # 2. draining the queue -------------------------------------------------------------------
        print(
            f"draining {queued:,} requests with {args.workers} workers in {args.processes} process(es) ...",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(window)  # the naive read filled the transaction window: start from an idle vault
        peer_pids = {"Azurite": peers.azurite.pid, "Key Vault emulator": emulator.pid}
        cpu_before = {"Python (drain)": own_cpu_seconds()} | {k: cpu_seconds(p) for k, p in peer_pids.items()}
        drained = drain(world, emulator, args.workers, args.processes, drain_peers, args.kv_retry_status)
        cpu_after = {"Python (drain)": own_cpu_seconds()} | {k: cpu_seconds(p) for k, p in peer_pids.items()}
        cpu = {k: cpu_after[k] - cpu_before[k] for k in cpu_before}
        cpu["Python (drain)"] += drained.child_cpu
        failed |= print_drain(drained, small, args.create_limit / window, sink, cpu)

        # 3. memory at the larger size: the first due secrets were rotated, so as many are made due again
        runs = [small_run]
        big = plan_population(n, large - n, round(large * args.due_percent / 100))
        if large > n:
            seed_and_report(client, emulator, big)
            time.sleep(window)
            print(f"memory at {large:,} secrets ...", file=sys.stderr, flush=True)
            runs.append(measure_memory(world, emulator))
        failed |= print_memory(runs, big)
    print()
    print("all goals: " + ("NOT met" if failed else "met"))
    return 1 if failed else 0


def print_finding(
    swept: SweepRun, naive: NaiveRun, population: Population, queued: int, workers: int
) -> bool:
    report, requests = swept.report, swept.requests
    not_due_swept = not_due_reads(requests, population.due)
    not_due_naive = not_due_reads(naive.requests, population.due)
    print("1. finding what is due (Key Vault requests from the emulator's stats)")
    header = (
        f"{'':<22}{'listed':>8}{'requests':>10}{'list pages':>12}{'get_secret':>12}"
        f"{'not-due values read':>21}{'429s':>7}{'wall s':>9}"
    )
    print(header)
    print("-" * len(header))
    for label, listed, counted, seconds in (
        ("sweep", report.listed, requests, swept.seconds),
        (f"naive ({workers} threads)", naive.listed, naive.requests, naive.seconds),
    ):
        reads = not_due_swept if counted is requests else not_due_naive
        print(
            f"{label:<22}{listed:>8,}{counted.total:>10,}{counted.of('list_secrets'):>12,}"
            f"{counted.of('get_secret'):>12,}{reads:>21,}{counted.throttled:>7,}{seconds:>9.2f}"
        )
    ratio = requests.total / swept.minimum
    print()
    print(
        f"minimum: ceil({report.listed:,} / {MAX_PAGE_SIZE}) = {swept.minimum:,} list pages; sweep "
        f"requests / minimum = {ratio:.3f} (goal <= {MAX_REQUEST_RATIO}): "
        f"{verdict(ratio <= MAX_REQUEST_RATIO)}"
    )
    print(
        f"sweep read {not_due_swept} values of secrets that are not due (goal 0): "
        f"{verdict(not_due_swept == 0)}; "
        f"the naive read {not_due_naive:,}, {naive.requests.total / requests.total:.0f}x the requests"
    )
    due_ok = set(report.due) == set(population.due) and report.sent == len(population.due) == queued
    print(
        f"due: {len(report.due):,} found, {report.sent:,} enqueued, {queued:,} on the queue, "
        f"{len(population.due):,} seeded due (goal: exactly those): {verdict(due_ok)}; sweep counts "
        f"{report.counts()}"
    )
    print()
    return not (ratio <= MAX_REQUEST_RATIO and not_due_swept == 0 and due_ok)


def print_drain(
    run: DrainRun, population: Population, limit_rate: float, sink: SinkProcess, cpu: dict[str, float]
) -> bool:
    assert run.requests is not None
    requests = run.requests
    goal = MIN_RATE_SHARE * limit_rate
    rotated = run.rotated
    exact = sorted(rotated) == sorted(population.due)
    print(
        f"2. draining the rotation queue: {run.workers} workers ({run.processes} process(es), each with its "
        "own clients) calling rotate_requested, as rotate_secret does"
    )
    print(
        f"rotated {len(rotated):,} of {len(population.due):,} due in {run.seconds:.2f} s = {run.rate:.1f} "
        f"rotations/s; per rotation p50 {percentile(run.latencies_ms, 50)} ms, p95 "
        f"{percentile(run.latencies_ms, 95)} ms, max {max(run.latencies_ms, default=0):.0f} ms"
    )
    print(
        f"Key Vault: {requests.of('set_secret'):,} set_secret and {requests.of('get_secret'):,} get_secret "
        f"requests, {requests.throttled:,} answered 429 and retried by the SDK after Retry-After; "
        f"not-due values read: {not_due_reads(requests, population.due)}"
    )
    announced = sum(e.get("type") == SECRET_ROTATED for e in sink.events())
    print(f"SecretRotated events at the topic sink: {announced:,}")
    print(f"outcomes: {run.statuses}; failed rotations: {len(run.failures)}")
    if rotated and all(cpu.values()):
        per = {k: 1000 * v / len(rotated) for k, v in cpu.items()}
        total = sum(per.values())
        print(
            "CPU per rotation: "
            + ", ".join(f"{k} {v:.0f} ms" for k, v in per.items())
            + f" = {total:.0f} ms: {os.cpu_count()} CPUs, all idle, could run at most "
            f"{1000 * (os.cpu_count() or 1) / total:.0f} rotations/s"
        )
    for name, error in run.failures[:10]:
        print(f"  failed: {name}: {error[:200]}")
    rate_ok = run.rate >= goal or len(population.due) <= limit_rate * 10
    print(
        f"rate goal >= {MIN_RATE_SHARE:.0%} of the create limit ({goal:.0f}/s): "
        + (
            verdict(run.rate >= goal)
            if len(population.due) > limit_rate * 10
            else "n/a (fewer due than one window's creates)"
        )
    )
    print(f"every due secret rotated exactly once, 0 failures: {verdict(exact and not run.failures)}")
    print()
    return not (rate_ok and exact and not run.failures)


def print_memory(runs: Sequence[MemoryRun], big: Population) -> bool:
    print(
        "3. the sweep's wall time and peak memory (tracemalloc; it sends to an in-memory collector, not "
        "the queue)"
    )
    header = (
        f"{'secrets':>9}{'due':>7}{'wall s':>8}{'requests':>10}{'minimum':>9}{'peak KiB':>10}"
        f"{'kept KiB':>10}{'peak beyond the due list KiB':>30}"
    )
    print(header)
    print("-" * len(header))
    for r in runs:
        print(
            f"{r.secrets:>9,}{r.due:>7,}{r.seconds:>8.2f}{r.requests:>10,}{r.minimum:>9,}{kib(r.peak):>10}"
            f"{kib(r.kept):>10}{kib(r.beyond_due_list):>30}"
        )
    small, large = runs[0], runs[-1]
    if len(runs) == 1:
        print("\n(no larger vault: --large equals --secrets)")
        return False
    growth = large.beyond_due_list / max(small.beyond_due_list, 1)
    size = large.secrets / small.secrets
    print()
    per_secret = (large.beyond_due_list - small.beyond_due_list) / (large.secrets - small.secrets)
    print(
        f"{size:.1f}x the secrets: peak beyond the due list {growth:.2f}x (goal <= {MAX_MEMORY_GROWTH}x: "
        f"{verdict(growth <= MAX_MEMORY_GROWTH)}), {per_secret:.1f} bytes per added secret; kept per due "
        f"secret {large.kept / max(large.due, 1):,.0f} bytes"
    )
    due_ok = large.due == len(big.due)
    print(
        f"large vault: {large.due:,} due found, {len(big.due):,} seeded due (the first ones were "
        f"rotated): {verdict(due_ok)}"
    )
    requests_ok = all(r.requests <= MAX_REQUEST_RATIO * r.minimum for r in runs)
    print(f"requests <= {MAX_REQUEST_RATIO} x minimum at both sizes: {verdict(requests_ok)}")
    return not (growth <= MAX_MEMORY_GROWTH and due_ok and requests_ok)


if __name__ == "__main__":
    sys.exit(main())
