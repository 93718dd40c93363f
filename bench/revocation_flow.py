"""Benchmark of emergency revocation end to end: request → two approvals → execute through the HTTP
functions, served by the dev host, on Azurite and the Key Vault emulator.

Starts its own Azurite (in memory), the Key Vault emulator (no added latency; Key Vault's limits on) and the
dev host (``devtools.host``, the app as ``make run`` serves it; no Event Grid topic, so the SecretRevoked
notification goes to the logging publisher). Each flow has its own secret with two versions, seeded through
the bench's own ``SecretClient`` before anything is measured, and runs four HTTP calls, each checked:

1. ``POST /api/revocations`` (severity ``medium``: two approvals; all versions) → 201 ``pending``;
2. ``POST /api/revocations/{id}/approve`` by a first approver → 200 ``pending``;
3. the same by a second approver → 200 ``approved``;
4. ``POST /api/revocations/{id}/execute`` → 200 ``executed``, both versions disabled.

Two passes after a warm-up (two flows, not counted: imports, tables, token, MAC key):

* **sequential** — ``--flows`` flows one at a time. After each flow, one ``GET /api/health`` and one
  ``GET /api/revocations/<not an id>`` are timed: the baselines. Requests and CPU are read between every
  two calls, so each step has its own counts. flows/s = flows / the sum of the flows' step times (the
  readings in between are not counted).
* **concurrent** — ``--concurrent-flows`` flows on ``--concurrency`` threads, each with its own keep-alive
  connection, each flow's steps in order; flows/s = flows / wall time. Then as many health and host-floor
  requests at the same concurrency. Requests and CPU are totals over the pass (per flow: / flows).

Baselines. ``GET /api/health`` is the issue's baseline, but it is not a bare round trip: it probes Key
Vault (1 list), the table service (1 list of tables), the audit table (1 query) and the queue service (1
list; not counted: only the table endpoint goes through the counter), on three threads. So the bench also
times the **host floor**, ``GET /api/revocations/<not an id>`` with a reader's principal: the function runs
(principal parsed, role checked, id refused) and answers 404 before any I/O. Floor = the host's HTTP and
dispatch cost; health = that plus parallel peer calls; the steps = that plus their sequential peer calls.

Counting. Key Vault requests come from the emulator's own counters (``GET /_emulator/stats``, per
operation and per secret name; read over one keep-alive connection, not counted). Azurite counts nothing,
so the app's ``SECRETS_STORAGE`` table endpoint points at a counting proxy in this process (``TableCounter``)
that forwards bytes unchanged and reads each request's line (and the first bytes of a body, to name the
table and partition of an insert or a transaction). A proxy rather than an azure-core policy in the app,
because the app runs in the dev host's process and the benchmark must not change the app it measures; the
price is one more loopback hop per table request, measured at the start (``calibrate_proxy``) and printed.
The dev host's own storage (``AzureWebJobsStorage``) goes straight to Azurite.

The client ACKs each response's headers at once (``TCP_QUICKACK``, Linux): the dev host sends headers and
body in two writes without ``TCP_NODELAY``, so on a keep-alive connection the body would wait ~40 ms for
a delayed ACK on every call — an artifact of the dev host, not of the service, measured once and printed.

Where the time goes: per step, the function's own duration (the host's ``Executed ... Duration=`` log line)
beside the client's round trip, and the CPU each process spent (``/proc``: dev host, Azurite, emulator, and
this process: client threads + proxy). The host's timers (revocation expiry every 5 minutes, the audit scan
every 15, the digest hourly) would add requests to a pass: a pass that would cross a 5-minute boundary
waits for it first, and any other invocation seen during a pass is printed next to the counts.

Exits 1 when a flow does not end ``executed`` (or a baseline call fails, a version is still enabled, a
peer does not start or the warm-up fails), printing what failed; 130 when interrupted (peers stopped).

    .venv/bin/python -m bench.revocation_flow            # 40 sequential flows, 64 flows 16 at a time
    .venv/bin/python -m bench.revocation_flow --quick    # 10 sequential, 16 flows 8 at a time
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import os
import platform
import queue
import re
import secrets
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from azure.data.tables import TableServiceClient
from azure.keyvault.secrets import SecretClient

from bench.common import Peers, azurite_version, run_benchmark, start_peers
from devtools.azurite import connection_string
from devtools.host import HostProcess
from shared.adapters.tables import AUDIT_TABLE, FINDINGS_TABLE, STATE_TABLE
from shared.domain.identity import encode_principal
from shared.domain.policy import RotationPolicy, SecretKind
from shared.domain.secrets import MAX_PAGE_SIZE

SEVERITY = "medium"  # DEFAULT_APPROVALS: 2
APPROVALS = 2
VERSIONS = 2  # per secret: every one of them is revoked
STEPS = ("request", "approve 1", "approve 2", "execute")
HEALTH = "GET /api/health"
FLOOR = "host floor (404)"
BASELINES = (HEALTH, FLOOR)
#: The function behind each timed call, as the host's log names it.
FUNCTION = {
    "request": "revocations_request",
    "approve 1": "revocations_approve",
    "approve 2": "revocations_approve",
    "execute": "revocations_execute",
    HEALTH: "health",
    FLOOR: "revocations_get",
}
FLOOR_PATH = "/api/revocations/not-a-request-id"
PRINCIPAL_HEADER = "x-ms-client-principal"
REQUESTER = encode_principal("oid-bench-requester", ["Secrets.Revocation.Request"], name="requester")
APPROVERS = tuple(
    encode_principal(f"oid-bench-approver-{i}", ["Secrets.Revocation.Approve"], name=f"approver-{i}")
    for i in range(1, APPROVALS + 1)
)
EXECUTOR = encode_principal("oid-bench-executor", ["Secrets.Revocation.Execute"], name="executor")
READER = encode_principal("oid-bench-reader", ["Secrets.Audit.Read"], name="reader")
POLICY = RotationPolicy(SecretKind.API_KEY, timedelta(days=30), None, "bench")
#: Timers the app has that this bench cannot switch off (the other two get a yearly schedule): every one
#: fires on a 5-minute boundary.
TIMER_PERIOD_S = 300
YEARLY = "0 0 0 1 1 *"
PROCESSES = ("dev host", "Azurite", "KV emulator", "bench")


def minimum_requests(versions: int = VERSIONS) -> dict[str, tuple[int, int]]:
    """(table, Key Vault) requests each step needs at the least, by the design of
    shared/services/revocation/, for a secret of ``versions`` versions (every one revoked).

    Every state change is: read the request (with its ETag), an ``intent`` audit record, the conditional
    write, a ``success`` record. An audit record is ONE entity-group transaction (the record + the chain's
    head, guarded by the head's ETag); the first append to a chain this process has not written reads the
    head first (the chain may exist: a secret revoked or rotated before), which the request step pays.

    * request: KV 1 (list the versions: the secret exists, which versions to revoke; up to 25 a page);
      table 4 = head read + intent + insert of the request + success (a new request needs no read).
    * approve: table 4 = read + intent + conditional replace + success; KV 0.
    * execute: table 10 = begin (read + intent + replace ``executing``: 3), the trail's word for the
      request (the chain's head, then one query of the secret's chain from the request on, checked whole
      up to that head: its REQUESTED record with the terms, APPROVED, CANCELLED/REJECTED/EXPIRED and
      REVOKED records, MACs and links checked: 2), the secret's write lease
      (read the progress row, take the lease, release it: 3), finish (the ``REVOKED`` outcome record +
      replace ``executed`` with the ETag the begin write returned: 2). KV: the versions'
      tags (to drop the ``retired-by`` mark) from one listing page per 25 versions — or one get per
      version when that is fewer — and one update per version (disable).
    """
    reads = min(versions, math.ceil(versions / MAX_PAGE_SIZE))
    return {
        "request": (4, math.ceil(versions / MAX_PAGE_SIZE)),
        "approve 1": (4, 0),
        "approve 2": (4, 0),
        "execute": (10, reads + versions),
    }


# -- counting the table requests ----------------------------------------------------------------------

_PATH = re.compile(r"^/[^/]+/(?P<table>[A-Za-z0-9$]+)(?:\((?P<keys>.*)\))?$")
_PARTITION = re.compile(r"PartitionKey='((?:[^']|'')*)'")
_ROW = re.compile(r"RowKey='((?:[^']|'')*)'")
_BODY_PARTITION = re.compile(rb'"PartitionKey"\s*:\s*"([^"]*)"')
_BATCH_TABLE = re.compile(rb"(?:POST|PUT|MERGE|PATCH|DELETE) \S*/([A-Za-z0-9]+)[( ]")
_BODY_PEEK = 4096
_ENTITY_OPS = {"GET": "read", "PUT": "replace", "MERGE": "merge", "PATCH": "merge", "DELETE": "delete"}


def classify(method: str, target: str, body: bytes) -> str:
    """A label for one table request: what it did to which kind of row. The service's rows are named:
    ``request`` (secretstate, partition revocation), ``lease`` (secretstate, partition rotation: the
    secret's rotation progress and write lease), ``audit`` (auditlog; ``head`` is a chain's head row)."""
    match = _PATH.match(unquote(urlsplit(target).path))
    if match is None:
        return f"{method} other"
    table, keys = match.group("table"), match.group("keys")
    if table == "$batch":
        found = _BATCH_TABLE.search(body)
        name = found.group(1).decode() if found else "?"
        return "audit transaction" if name == "auditlog" else f"{name} transaction"
    if table == "Tables":
        return "create table" if method == "POST" else "list tables"
    if keys is None or keys == "":
        if method == "GET":
            return f"{_kind(table, None)} query"
        found = _BODY_PARTITION.search(body)
        return f"{_kind(table, found.group(1).decode() if found else None)} insert"
    partition = _PARTITION.search(keys)
    row = _ROW.search(keys)
    kind = _kind(table, partition.group(1) if partition else None)
    if kind == "audit" and row is not None:
        kind = "audit head" if row.group(1) == "head" else "audit row"
    return f"{kind} {_ENTITY_OPS.get(method, method)}"


def _kind(table: str, partition: str | None) -> str:
    if table == "auditlog":
        return "audit"
    if table == "secretstate" and partition == "revocation":
        return "request"
    if table == "secretstate" and partition == "rotation":
        return "lease"
    return f"{table}[{partition}]" if partition else table


class _RequestParser:
    """Finds the HTTP/1.1 requests in one connection's client-to-server bytes: request line, headers,
    Content-Length body (of which the first bytes are kept for ``classify``)."""

    def __init__(self, count: Callable[[str], None]) -> None:
        self._count = count
        self._head = bytearray()
        self._body_left = 0
        self._peek = bytearray()
        self._pending: tuple[str, str] | None = None
        self._lost = False

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._lost:
            if self._pending is not None:
                take = min(self._body_left, len(view))
                if len(self._peek) < _BODY_PEEK:
                    self._peek += view[: min(take, _BODY_PEEK - len(self._peek))]
                self._body_left -= take
                view = view[take:]
                if self._body_left == 0:
                    self._finish()
                continue
            self._head += view
            view = memoryview(b"")
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > 65536:
                    self._give_up()
                return
            head, rest = bytes(self._head[:end]), bytes(self._head[end + 4 :])
            self._head.clear()
            lines = head.decode("latin-1").split("\r\n")
            words = lines[0].split(" ")
            headers = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
            headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
            if len(words) < 2 or "chunked" in headers.get("transfer-encoding", "").lower():
                self._give_up()
                return
            self._pending = (words[0], words[1])
            self._body_left = int(headers.get("content-length", "0") or 0)
            if self._body_left == 0:
                self._finish()
            view = memoryview(rest)

    def _finish(self) -> None:
        assert self._pending is not None
        method, target = self._pending
        self._count(classify(method, target, bytes(self._peek)))
        self._pending = None
        self._peek.clear()

    def _give_up(self) -> None:
        """A stream this parser cannot follow (chunked body, no request line): counted, then ignored."""
        self._lost = True
        self._count("unparsed connection")


class TableCounter:
    """A TCP proxy on a free loopback port in front of Azurite's table endpoint, on its own asyncio thread:
    bytes pass unchanged both ways; every request is counted by ``classify``'s label, and every
    connection opened (connection churn shows a client pool too small for its threads)."""

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self._target = (host, target_port)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._connections = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="table-counter", daemon=True)

    @classmethod
    def start(cls, target_port: int) -> TableCounter:
        counter = cls(target_port)
        counter._thread.start()
        if not counter._ready.wait(10) or not counter.port:
            raise RuntimeError("the table request counter did not start")
        return counter

    def snapshot(self) -> tuple[Counter[str], int]:
        with self._lock:
            return Counter(self._counts), self._connections

    def _count(self, label: str) -> None:
        with self._lock:
            self._counts[label] += 1

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        with self._lock:
            self._connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self._target)
        except OSError:
            client_w.close()
            return
        parser = _RequestParser(self._count)
        await asyncio.gather(
            self._pump(client_r, server_w, parser.feed), self._pump(server_r, client_w, None)
        )

    @staticmethod
    async def _pump(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, seen: Callable[[bytes], None] | None
    ) -> None:
        try:
            while data := await source.read(65536):
                if seen is not None:
                    seen(data)
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sink.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop.stop()

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            self._thread.join(10)


def calibrate_proxy(direct: str, proxied: str, rounds: int = 200) -> tuple[float, float]:
    """p50 ms of one table read straight to Azurite and through the counter, interleaved."""
    services = [TableServiceClient.from_connection_string(c) for c in (direct, proxied)]
    try:
        services[0].create_table_if_not_exists("benchproxycheck").upsert_entity(
            {"PartitionKey": "p", "RowKey": "r", "value": "x"}
        )
        tables = [s.get_table_client("benchproxycheck") for s in services]
        times: tuple[list[float], list[float]] = ([], [])
        for i in range(rounds + 20):
            for which in (0, 1) if i % 2 else (1, 0):
                started = time.perf_counter()
                tables[which].get_entity("p", "r")
                if i >= 20:  # the first ones open connections
                    times[which].append((time.perf_counter() - started) * 1000)
        return statistics.median(times[0]), statistics.median(times[1])
    finally:
        for service in services:
            service.close()


# -- the other meters -----------------------------------------------------------------------------------


class EmulatorStats:
    """``GET /_emulator/stats`` over one keep-alive HTTPS connection (a handshake per reading would cost
    the emulator more CPU than the requests it counts)."""

    def __init__(self, url: str, cert_file: Path) -> None:
        parts = urlsplit(url)
        self._address = (parts.hostname or "127.0.0.1", parts.port or 443)
        self._context = ssl.create_default_context(cafile=str(cert_file))
        self._conn: http.client.HTTPSConnection | None = None

    def _call(self, method: str, path: str) -> bytes:
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPSConnection(*self._address, context=self._context, timeout=30)
            try:
                self._conn.request(method, path, body=b"" if method == "POST" else None)
                response = self._conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
                continue
            if response.status not in (200, 204):
                raise RuntimeError(f"{method} {path}: HTTP {response.status}")
            return data
        raise AssertionError("unreachable")

    def read(self) -> dict[str, Any]:
        stats: dict[str, Any] = json.loads(self._call("GET", "/_emulator/stats"))
        return stats

    def reset(self) -> None:
        self._call("POST", "/_emulator/reset")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a running process, from /proc; 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


_EXECUTING = re.compile(r"Executing 'Functions\.(\w+)' \(Reason='.*', Id=([0-9a-f-]{36})\)")
_EXECUTED = re.compile(r"Executed 'Functions\.(\w+)' \((\w+), Id=([0-9a-f-]{36}), Duration=(\d+)ms\)")


class HostLog:
    """The dev host's invocation log lines, gathered by invocation id (its output keeps only the last
    5,000 lines: ``collect`` is called often enough to see every one)."""

    def __init__(self, host: HostProcess) -> None:
        self._host = host
        self.started: dict[str, str] = {}  # id -> function
        self.finished: dict[str, tuple[str, str, float]] = {}  # id -> (function, outcome, ms)

    def collect(self) -> None:
        for line in self._host.output().splitlines():
            if (done := _EXECUTED.search(line)) is not None:
                self.finished.setdefault(done.group(3), (done.group(1), done.group(2), float(done.group(4))))
            elif (began := _EXECUTING.search(line)) is not None:
                self.started.setdefault(began.group(2), began.group(1))

    def running(self) -> list[str]:
        return [name for i, name in self.started.items() if i not in self.finished]


@dataclass
class Reading:
    tables: Counter[str]
    connections: int
    kv: dict[str, Any]
    cpu: dict[str, float]


@dataclass
class Usage:
    """What happened between two readings: table requests by label, Key Vault requests by operation
    (``op`` on a measured secret, ``op [name]`` on another secret, e.g. the audit MAC key), connections
    opened to the table endpoint, 429s, CPU seconds by process."""

    tables: Counter[str] = field(default_factory=Counter)
    kv: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    throttled: int = 0
    cpu: Counter[str] = field(default_factory=Counter)

    def add(self, other: Usage) -> None:
        self.tables.update(other.tables)
        self.kv.update(other.kv)
        self.connections += other.connections
        self.throttled += other.throttled
        self.cpu.update(other.cpu)


@dataclass
class Rig:
    """The running stack and its meters."""

    peers: Peers
    host: HostProcess
    counter: TableCounter
    stats: EmulatorStats
    log: HostLog
    measured: set[str] = field(default_factory=set)  # lower-case names of the flows' secrets

    def read(self) -> Reading:
        tables, connections = self.counter.snapshot()
        pids = {"dev host": self.host.pid, "Azurite": self.peers.azurite.pid}
        pids["KV emulator"] = self.peers.emulator.pid
        cpu = {name: process_cpu(pid) for name, pid in pids.items()}
        cpu["bench"] = time.process_time()
        return Reading(tables, connections, self.stats.read(), cpu)

    def usage(self, before: Reading, after: Reading) -> Usage:
        used = Usage(
            tables=after.tables - before.tables,
            connections=after.connections - before.connections,
            throttled=int(after.kv["throttled"]) - int(before.kv["throttled"]),
            cpu=Counter({k: after.cpu[k] - before.cpu[k] for k in after.cpu}),
        )
        for op, total in after.kv["requests"].items():
            count = int(total) - int(before.kv["requests"].get(op, 0))
            named = 0
            then = before.kv.get("names", {}).get(op, {})
            for name, n in after.kv.get("names", {}).get(op, {}).items():
                delta = int(n) - int(then.get(name, 0))
                if delta:
                    used.kv[op if name in self.measured else f"{op} [{name}]"] += delta
                    named += delta
            if count - named:
                used.kv[op] += count - named
        return used


# -- the flows ----------------------------------------------------------------------------------------


#: Linux only. The dev host writes a response's headers and body in two sends without TCP_NODELAY: on a
#: keep-alive connection the body waits (Nagle) for the ACK of the headers, which the client delays by
#: ~40 ms. A quick ACK from the client removes that stall, which neither Kestrel nor App Service have.
QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class HostClient:
    """HTTP/1.1 to the dev host over one keep-alive connection (one per thread), timing each call; with
    ``quickack`` (the default, where the platform has it) the client ACKs the headers at once."""

    def __init__(self, base_url: str, *, quickack: bool = True) -> None:
        parts = urlsplit(base_url)
        self._address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._conn: http.client.HTTPConnection | None = None
        self._quickack = quickack and QUICKACK is not None

    def call(
        self, method: str, path: str, *, principal: str | None = None, body: Any = None
    ) -> tuple[int, dict[str, Any], float]:
        """(status, JSON body, ms). Raises OSError or HTTPException (not retried: a POST may have run)."""
        if self._conn is None:
            self._conn = http.client.HTTPConnection(*self._address, timeout=120)
        headers = {"user-agent": "bench-revocation-flow"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        if principal is not None:
            headers[PRINCIPAL_HEADER] = principal
        started = time.perf_counter()
        try:
            self._conn.request(method, path, body=data, headers=headers)
            if self._quickack and self._conn.sock is not None:
                # Set after sending: an ACK already scheduled for the headers goes out at once.
                self._conn.sock.setsockopt(socket.IPPROTO_TCP, QUICKACK or 0, 1)
            response = self._conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        ms = (time.perf_counter() - started) * 1000
        if response.will_close:
            self.close()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"detail": raw[:200].decode(errors="replace")}
        return response.status, parsed if isinstance(parsed, dict) else {"value": parsed}, ms

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass
class Flow:
    secret: str
    versions: tuple[str, ...]
    ms: dict[str, float] = field(default_factory=dict)
    wall_ms: float = 0.0  # request sent → execute answered (concurrent pass: under load)
    failure: str | None = None

    @property
    def steps_ms(self) -> float:
        return sum(self.ms[s] for s in STEPS if s in self.ms)


def _refusal(status: int, doc: Mapping[str, Any]) -> str:
    return f"HTTP {status}: {doc.get('title', '')} {str(doc.get('detail', ''))[:160]}".strip()


def _check(step: str, status: int, doc: Mapping[str, Any], flow: Flow) -> str | None:
    """What is wrong with a step's answer, or None."""
    want_status = 201 if step == "request" else 200
    if status != want_status:
        return _refusal(status, doc)
    state = doc.get("status")
    if step == "request":
        if state != "pending" or doc.get("required_approvals") != APPROVALS:
            return f"status {state}, required approvals {doc.get('required_approvals')}"
        if sorted(doc.get("versions") or ()) != sorted(flow.versions):
            return f"versions {doc.get('versions')} are not the secret's {list(flow.versions)}"
        return None
    if step.startswith("approve"):
        want = "approved" if step == f"approve {APPROVALS}" else "pending"
        return None if state == want else f"status {state}, expected {want}"
    result = doc.get("result") or {}
    if state != "executed":
        return f"status {state}, result {result}"
    if sorted(result.get("disabled_versions") or ()) != sorted(flow.versions):
        return f"disabled {result.get('disabled_versions')}, expected {list(flow.versions)}"
    return None


def run_flow(client: HostClient, flow: Flow, after_step: Callable[[str], None] | None = None) -> None:
    """Request → approvals → execute; stops at the first step that fails (``flow.failure``)."""
    revocation_id = ""
    started = time.perf_counter()
    for step in STEPS:
        if step == "request":
            path, principal = "/api/revocations", REQUESTER
            body: dict[str, Any] = {
                "secret_name": flow.secret,
                "reason": "SECURITY_INCIDENT",
                "severity": SEVERITY,
                "justification": "revocation flow benchmark",
            }
        elif step.startswith("approve"):
            approver = APPROVERS[int(step[-1]) - 1]
            path, principal, body = f"/api/revocations/{revocation_id}/approve", approver, {}
        else:
            path, principal, body = f"/api/revocations/{revocation_id}/execute", EXECUTOR, {}
        try:
            status, doc, ms = client.call("POST", path, principal=principal, body=body)
        except (OSError, http.client.HTTPException) as err:
            flow.failure = f"{step}: {type(err).__name__}: {err}"
            return
        flow.ms[step] = ms
        if after_step is not None:
            after_step(step)
        problem = _check(step, status, doc, flow)
        if problem is not None:
            flow.failure = f"{step}: {problem}"
            return
        revocation_id = str(doc.get("id", ""))
    flow.wall_ms = (time.perf_counter() - started) * 1000


def run_baseline(client: HostClient, kind: str) -> tuple[float, str | None]:
    """One baseline call: (ms, what went wrong or None)."""
    try:
        if kind == HEALTH:
            status, doc, ms = client.call("GET", "/api/health")
            ok = status == 200 and doc.get("status") == "ok"
        else:
            status, doc, ms = client.call("GET", FLOOR_PATH, principal=READER)
            ok = status == 404
    except (OSError, http.client.HTTPException) as err:
        return 0.0, f"{kind}: {type(err).__name__}: {err}"
    return ms, None if ok else f"{kind}: {_refusal(status, doc)}"


# -- passes -------------------------------------------------------------------------------------------


@dataclass
class Step:
    ms: list[float] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)


@dataclass
class Pass:
    name: str
    concurrency: int
    flows: list[Flow]
    steps: dict[str, Step] = field(default_factory=lambda: {k: Step() for k in (*STEPS, *BASELINES)})
    usage: Usage = field(default_factory=Usage)  # the flows' (baselines excluded)
    wall_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    function_ms: dict[str, list[float]] = field(default_factory=dict)
    others: Counter[str] = field(default_factory=Counter)  # invocations nobody asked for (timers)

    @property
    def executed(self) -> int:
        return sum(1 for f in self.flows if f.failure is None)

    @property
    def rate(self) -> float:
        return len(self.flows) / self.wall_s if self.wall_s else 0.0


def _invocations(rig: Rig, known: set[str], result: Pass) -> None:
    """The host's invocations since ``known``: durations per function, and any unexpected ones."""
    rig.log.collect()
    expected = set(FUNCTION.values())
    for invocation, (function, _outcome, ms) in rig.log.finished.items():
        if invocation in known:
            continue
        if function in expected:
            result.function_ms.setdefault(function, []).append(ms)
        else:
            result.others[function] += 1
    for invocation, function in rig.log.started.items():
        if invocation not in known and invocation not in rig.log.finished and function not in expected:
            result.others[f"{function} (still running)"] += 1


def _seen(rig: Rig) -> set[str]:
    rig.log.collect()
    return set(rig.log.started) | set(rig.log.finished)


def clear_of_timers(rig: Rig, estimate_s: float) -> None:
    """Wait until the pass can run between two of the host's timer boundaries, and the timers are done."""
    now = time.time()
    boundary = (now // TIMER_PERIOD_S + 1) * TIMER_PERIOD_S
    if estimate_s < TIMER_PERIOD_S - 20 and boundary - now < estimate_s + 5:
        at = datetime.fromtimestamp(boundary, UTC)
        print(f"  waiting {boundary - now + 3:.0f} s for the host's timers at {at:%H:%M}", file=sys.stderr)
        time.sleep(boundary - now + 3)
    deadline = time.monotonic() + 120
    rig.log.collect()
    while (running := rig.log.running()) and time.monotonic() < deadline:
        time.sleep(0.5)
        rig.log.collect()
    if running:
        print(f"  still running after 120 s: {', '.join(running)}", file=sys.stderr)


def sequential(rig: Rig, flows: list[Flow]) -> Pass:
    """One flow at a time, a reading after every call; the baselines after each flow."""
    result = Pass("sequential", 1, flows)
    client = HostClient(rig.host.url)
    known = _seen(rig)
    last = rig.read()

    def after(kind: str) -> None:
        nonlocal last
        now = rig.read()
        used = rig.usage(last, now)
        result.steps[kind].usage.add(used)
        if kind in STEPS:
            result.usage.add(used)
        last = now

    try:
        for i, flow in enumerate(flows, 1):
            run_flow(client, flow, after)
            for step in STEPS:
                if step in flow.ms:
                    result.steps[step].ms.append(flow.ms[step])
            for kind in BASELINES:
                ms, failure = run_baseline(client, kind)
                after(kind)
                result.steps[kind].ms.append(ms)
                if failure is not None:
                    result.failures.append(failure)
            if i % 10 == 0 or i == len(flows):
                rig.log.collect()
                print(f"  sequential: {i}/{len(flows)} flows", file=sys.stderr, flush=True)
    finally:
        client.close()
    result.wall_s = sum(f.steps_ms for f in flows) / 1000
    _invocations(rig, known, result)
    return result


def _threads(rig: Rig, count: int, work: Callable[[HostClient], None], label: str) -> float:
    """Run ``work`` on ``count`` threads released together; wall seconds from release to the last one.
    Meanwhile the host's log is gathered every 2 s (it keeps only its last lines)."""
    start = threading.Barrier(count + 1)

    def worker() -> None:
        client = HostClient(rig.host.url)
        start.wait()
        try:
            work(client)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, name=f"bench-{i}", daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    start.wait()
    started = time.perf_counter()
    for thread in threads:
        while thread.is_alive():
            thread.join(2)
            if thread.is_alive():
                rig.log.collect()
                print(f"  {label}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return time.perf_counter() - started


def concurrent(rig: Rig, flows: list[Flow], concurrency: int) -> Pass:
    """``concurrency`` threads take flows from one queue; then the baselines at the same concurrency."""
    result = Pass("concurrent", concurrency, flows)
    todo: queue.SimpleQueue[Flow] = queue.SimpleQueue()
    for flow in flows:
        todo.put(flow)

    def run_flows(client: HostClient) -> None:
        while True:
            try:
                flow = todo.get_nowait()
            except queue.Empty:
                return
            run_flow(client, flow)

    known = _seen(rig)
    before = rig.read()
    result.wall_s = _threads(rig, concurrency, run_flows, f"{len(flows)} flows")
    result.usage = rig.usage(before, rig.read())
    for flow in flows:
        for step, ms in flow.ms.items():
            result.steps[step].ms.append(ms)
    lock = threading.Lock()
    for kind in BASELINES:
        calls: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in range(len(flows)):
            calls.put(i)

        def run_calls(client: HostClient, kind: str = kind, calls: queue.SimpleQueue[int] = calls) -> None:
            while True:
                try:
                    calls.get_nowait()
                except queue.Empty:
                    return
                ms, failure = run_baseline(client, kind)
                with lock:
                    result.steps[kind].ms.append(ms)
                    if failure is not None:
                        result.failures.append(failure)

        before = rig.read()
        _threads(rig, concurrency, run_calls, kind)
        result.steps[kind].usage = rig.usage(before, rig.read())
    _invocations(rig, known, result)
    return result


# -- seeding and checks -------------------------------------------------------------------------------


def seed(client: SecretClient, names: Sequence[str]) -> list[Flow]:
    """Each secret with VERSIONS versions (managed: api-key, 30 days), 8 threads."""
    done = [0]
    lock = threading.Lock()

    def make(name: str) -> Flow:
        versions = tuple(
            client.set_secret(name, secrets.token_urlsafe(24), tags=POLICY.to_tags()).properties.version or ""
            for _ in range(VERSIONS)
        )
        with lock:
            done[0] += 1
            if done[0] % 50 == 0:
                print(f"  seeded {done[0]}/{len(names)}", file=sys.stderr, flush=True)
        return Flow(name, versions)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(make, names))


def still_enabled(client: SecretClient, flows: Iterable[Flow]) -> list[str]:
    """The measured versions the vault still has enabled (outside every timed window)."""
    found = []
    for flow in flows:
        for props in client.list_properties_of_secret_versions(flow.secret):
            if props.version in flow.versions and props.enabled:
                found.append(f"{flow.secret}/{props.version}")
    return found


# -- output -------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _ms(values: Sequence[float]) -> str:
    if not values:
        return f"{'-':>7} {'-':>7} {'-':>7} {'-':>7}"
    return (
        f"{percentile(values, 50):>7.1f} {percentile(values, 95):>7.1f} "
        f"{statistics.fmean(values):>7.1f} {max(values):>7.1f}"
    )


def _per(counter: Counter[str], n: int) -> float:
    return sum(counter.values()) / n if n else 0.0


def _breakdown(counter: Counter[str], n: int) -> str:
    return ", ".join(f"{label} {count / n:g}" for label, count in sorted(counter.items())) or "none"


def print_pass(result: Pass, minimum: Mapping[str, tuple[int, int]]) -> None:
    n = len(result.flows)
    by_step = result.concurrency == 1
    flow_ms = [f.steps_ms if by_step else f.wall_ms for f in result.flows if f.failure is None]
    if by_step:
        how = f"one at a time: {result.rate:.2f} flows/s (1 / the mean of a flow's four calls)"
    else:
        how = f"{result.concurrency} at a time: {result.rate:.2f} flows/s over {result.wall_s:.1f} s wall"
    print(f"{result.name}: {n} flows, {how}; {result.executed}/{n} executed")
    cpu_head = " ".join(f"{p:>11}" for p in PROCESSES)
    header = (
        f"{'':18} {'n':>4} {'p50 ms':>7} {'p95 ms':>7} {'mean ms':>7} {'max ms':>7} | {'fn p50':>6} |"
        f" {'table req':>9} {'min':>3} | {'KV req':>6} {'min':>3} | CPU ms: {cpu_head}"
    )
    print(header)
    print("-" * len(header))
    total_min = [sum(t for t, _ in minimum.values()), sum(k for _, k in minimum.values())]
    rows: list[tuple[str, Step | None, str]] = [(s, result.steps[s], s) for s in STEPS]
    rows += [("flow", None, "flow"), *((b, result.steps[b], b) for b in BASELINES)]
    for label, step, key in rows:
        if step is None:
            values, usage, count = flow_ms, result.usage, n
            fn = sum(percentile(result.function_ms.get(FUNCTION[s], []), 50) for s in STEPS)
            mins = f"{total_min[0]:>3}", f"{total_min[1]:>3}"
        else:
            values, usage = step.ms, step.usage
            count = len(values)
            fn = percentile(result.function_ms.get(FUNCTION[key], []), 50)
            mins = (f"{minimum[key][0]:>3}", f"{minimum[key][1]:>3}") if key in minimum else ("  -", "  -")
        counted = by_step or step is None or key in BASELINES
        tables = f"{_per(usage.tables, count):>9.2f}" if counted else f"{'-':>9}"
        kv = f"{_per(usage.kv, count):>6.2f}" if counted else f"{'-':>6}"
        cpu = " ".join(
            f"{usage.cpu.get(p, 0.0) * 1000 / count:>11.1f}" if counted and count else f"{'-':>11}"
            for p in PROCESSES
        )
        print(f"{label:18} {count:>4} {_ms(values)} | {fn:>6.1f} | {tables} {mins[0]} | {kv} {mins[1]} |"
              f"         {cpu}")  # fmt: skip
    if not by_step:
        busy = sum(result.usage.cpu.values())
        print(
            f"CPU over the flows: {busy:.1f} s in {result.wall_s:.1f} s wall = {busy / result.wall_s:.2f} of "
            f"{os.cpu_count()} CPUs (dev host alone {result.usage.cpu['dev host'] / result.wall_s:.2f}); "
            f"Little's law: {result.concurrency} / mean flow {statistics.fmean(flow_ms or [0.0]):.0f} ms = "
            f"{result.concurrency / (statistics.fmean(flow_ms or [1.0]) / 1000):.2f} flows/s"
        )
    print(
        f"table connections opened: {result.usage.connections / n:.2f} per flow; Key Vault 429s: "
        f"{result.usage.throttled}; other invocations during the pass: "
        + (", ".join(f"{k} x{v}" for k, v in sorted(result.others.items())) or "none")
    )
    if by_step:
        print("requests per flow by step (table: row and operation; KV: operation on the flow's secret):")
        for name in STEPS:
            usage = result.steps[name].usage
            print(f"  {name:10} table {_breakdown(usage.tables, n)}")
            print(f"  {'':10} KV    {_breakdown(usage.kv, n)}")
        for kind in BASELINES:
            usage = result.steps[kind].usage
            print(f"  {kind}: table {_breakdown(usage.tables, n)}; KV {_breakdown(usage.kv, n)}")
    else:
        print(f"requests per flow: table {_breakdown(result.usage.tables, n)}")
        print(f"                   KV    {_breakdown(result.usage.kv, n)}")
    print()


def print_minimum(minimum: Mapping[str, tuple[int, int]]) -> None:
    print(f"minimum requests per step, by the design (shared/services/revocation/; {VERSIONS} versions):")
    print("  request   table 4 = chain head read + intent + insert the request + success;  KV 1 = list")
    print("  approve   table 4 = read the request + intent + conditional replace + success;  KV 0")
    print(
        "  execute   table 10 = begin (read, intent, replace) + the trail (head read, 1 query)"
        " + lease (read, take, release) + finish (REVOKED, replace with the begin write's ETag);"
        f"  KV {minimum['execute'][1]} = the versions' tags in one listing page + {VERSIONS} updates"
    )
    print("  (an audit record = one entity-group transaction: the record and the chain's head)")
    print()


def print_failures(failures: Sequence[str]) -> None:
    print(f"FAILED: {len(failures)} problem(s)")
    for failure in failures[:20]:
        print(f"  {failure}")
    if len(failures) > 20:
        print(f"  ... and {len(failures) - 20} more")


# -- main ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.revocation_flow",
        description=(
            "Revocation request → 2 approvals → execute through the dev host over HTTP, on Azurite and the "
            "Key Vault emulator, sequential and concurrent, beside GET /api/health and the host's floor: "
            "flows/s, p50/p95 per step, table and Key Vault requests per flow against the design's minimum."
        ),
    )
    parser.add_argument("--flows", type=int, help="flows in the sequential pass (default 40; --quick 10)")
    parser.add_argument("--concurrency", type=int, help="threads of the concurrent pass (16; --quick 8)")
    parser.add_argument(
        "--concurrent-flows", type=int, help="flows of the concurrent pass (4 x concurrency; --quick 2 x)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run (about a minute with start-up)")
    args = parser.parse_args(argv)
    args.flows = args.flows if args.flows is not None else (10 if args.quick else 40)
    args.concurrency = args.concurrency if args.concurrency is not None else (8 if args.quick else 16)
    if args.concurrent_flows is None:
        args.concurrent_flows = args.concurrency * (2 if args.quick else 4)
    if args.flows < 2 or args.concurrency < 1 or args.concurrent_flows < args.concurrency:
        parser.error("--flows must be at least 2, --concurrent-flows at least --concurrency (>= 1)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(run_checked, parse_args(argv))


def run_checked(args: argparse.Namespace) -> int:
    """``run``, with a peer that does not start or a warm-up that fails reported as a failure (exit 1)."""
    try:
        return run(args)
    except RuntimeError as err:
        print(f"FAILED: {err}")
        return 1


def start_host(stack: ExitStack, peers: Peers, counter: TableCounter, tmp: Path) -> HostProcess:
    azurite, emulator = peers.azurite, peers.emulator
    counted = connection_string(azurite.host, azurite.blob_port, azurite.queue_port, counter.port)
    settings_file = tmp / "local.settings.json"
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": {}}))
    env = {
        "KEY_VAULT_URL": emulator.url,
        "KEY_VAULT_CA_BUNDLE": str(emulator.cert_file),
        "SECRETS_STORAGE": counted,  # the app's tables through the counter; its queues straight
        "AzureWebJobsStorage": azurite.connection_string,
        "ALLOW_UNVERIFIED_PRINCIPAL": "true",
        "AZURE_FUNCTIONS_ENVIRONMENT": "Development",
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "ROTATION_SWEEP_SCHEDULE": YEARLY,
        "EXPIRY_CHECK_SCHEDULE": YEARLY,
        "AUDIT_ANCHOR_SECRET": "bench-audit-anchor",
        "REVOCATION_APPROVALS": f"{SEVERITY}={APPROVALS}",  # whatever this shell's environment says
    }
    print("starting the dev host ...", file=sys.stderr, flush=True)
    host = HostProcess.start(env=env, settings=settings_file, timeout=60)
    stack.callback(host.stop)
    return host


def warm_up(rig: Rig, flows: list[Flow]) -> None:
    """Imports, tables, token, MAC key, connections: what a warm Functions worker has."""
    client = HostClient(rig.host.url)
    try:
        for flow in flows:
            run_flow(client, flow)
            if flow.failure is not None:
                raise RuntimeError(f"the warm-up flow of {flow.secret} failed: {flow.failure}")
            for kind in (*BASELINES, *BASELINES):
                _, failure = run_baseline(client, kind)
                if failure is not None:
                    raise RuntimeError(f"the warm-up call failed: {failure}")
    finally:
        client.close()


def floor_stall(rig: Rig, calls: int = 25) -> tuple[float, float]:
    """p50 ms of the host floor over keep-alive without and with the client's quick ACKs (QUICKACK)."""
    found = []
    for quick in (False, True):
        client = HostClient(rig.host.url, quickack=quick)
        try:
            times = [run_baseline(client, FLOOR)[0] for _ in range(calls)]
        finally:
            client.close()
        found.append(statistics.median(times[3:]))
    return found[0], found[1]


def run(args: argparse.Namespace) -> int:
    minimum = minimum_requests()
    failures: list[str] = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-revocation-")))
        peers = start_peers(stack, "bench-revocation-")
        for table in (AUDIT_TABLE, FINDINGS_TABLE, STATE_TABLE):  # as the deployment does (devtools.stack)
            peers.tables.create_table_if_not_exists(table)
        counter = TableCounter.start(peers.azurite.table_port)
        stack.callback(counter.stop)
        counted = connection_string(
            peers.azurite.host, peers.azurite.blob_port, peers.azurite.queue_port, counter.port
        )
        print("measuring the counter's hop ...", file=sys.stderr, flush=True)
        direct_ms, proxied_ms = calibrate_proxy(peers.azurite.connection_string, counted)
        host = start_host(stack, peers, counter, tmp)
        stats = EmulatorStats(peers.emulator.url, peers.emulator.cert_file)
        stack.callback(stats.close)
        rig = Rig(peers, host, counter, stats, HostLog(host))

        names = [f"revbench-warm-{i}" for i in range(2)]
        names += [f"revbench-seq-{i:04d}" for i in range(args.flows)]
        names += [f"revbench-par-{i:04d}" for i in range(args.concurrent_flows)]
        print(f"seeding {len(names)} secrets of {VERSIONS} versions ...", file=sys.stderr, flush=True)
        seeded = seed(peers.secrets, names)
        warm, serial, parallel = seeded[:2], seeded[2 : 2 + args.flows], seeded[2 + args.flows :]
        rig.measured = {f.secret.lower() for f in seeded}
        print("warming up ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        warm_up(rig, warm)
        flow_s = (time.perf_counter() - started) / len(warm)
        stall = floor_stall(rig)
        stats.reset()

        print_header(args, direct_ms, proxied_ms, stall)
        print_minimum(minimum)
        results: list[Pass] = []
        print(f"sequential pass: {args.flows} flows ...", file=sys.stderr, flush=True)
        clear_of_timers(rig, args.flows * flow_s * 2 + 10)
        results.append(sequential(rig, serial))
        print_pass(results[-1], minimum)
        print(
            f"concurrent pass: {args.concurrent_flows} flows, {args.concurrency} at a time ...",
            file=sys.stderr,
            flush=True,
        )
        clear_of_timers(rig, args.concurrent_flows * flow_s * 1.5 + 20)
        results.append(concurrent(rig, parallel, args.concurrency))
        print_pass(results[-1], minimum)

        for result in results:
            failures += [f"{result.name} {f.secret}: {f.failure}" for f in result.flows if f.failure]
            failures += [f"{result.name}: {failure}" for failure in result.failures]
        enabled = still_enabled(peers.secrets, [f for r in results for f in r.flows if f.failure is None])
        failures += [f"still enabled after an executed revocation: {v}" for v in enabled]
        flows = sum(len(r.flows) for r in results)
        executed = sum(r.executed for r in results)
        versions = executed * VERSIONS
        print(
            f"checks: {executed}/{flows} flows executed; "
            f"{versions - len(enabled)}/{versions} of their versions disabled in the vault"
        )
    if failures:
        print_failures(failures)
        return 1
    print("all checks: ok")
    return 0


def print_header(
    args: argparse.Namespace, direct_ms: float, proxied_ms: float, stall: tuple[float, float]
) -> None:
    print(f"revocation flow benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, Python "
        f"{platform.python_version()}, Azurite {azurite_version()} (in memory), the Key Vault emulator "
        "(no added latency; limits on), the dev host (one process, a thread per connection)"
    )
    print(
        f"workload: request (severity {SEVERITY}) -> {APPROVALS} approvals -> execute, each flow on its "
        f"own secret of {VERSIONS} versions (all revoked); {args.flows} flows one at a time, then "
        f"{args.concurrent_flows} flows {args.concurrency} at a time; 2 warm-up flows before"
    )
    print(
        f"baselines: {HEALTH} (Key Vault + 2 table + 1 queue probes on 3 threads) and the host floor "
        f"(GET {FLOOR_PATH} as a reader: 404 before any I/O)"
    )
    print(
        f"table requests counted by a proxy in front of Azurite: a table read takes {direct_ms:.2f} ms "
        f"direct, {proxied_ms:.2f} ms through it (p50): +{proxied_ms - direct_ms:.2f} ms per table "
        "request in every figure below; Key Vault requests from the emulator's counters; 'fn p50': the "
        "function's own duration in the host's log (approve: both approvals)"
    )
    quick = "with quick ACKs (TCP_QUICKACK), as below" if QUICKACK is not None else "(no TCP_QUICKACK here)"
    print(
        f"dev host artifact: the host floor over keep-alive takes {stall[0]:.1f} ms p50 with the client's "
        f"delayed ACKs, {stall[1]:.1f} ms {quick}: the host sends headers and body apart without "
        "TCP_NODELAY (devtools/host/server.py _send), so the body waits for the ACK of the headers"
    )
    print()


if __name__ == "__main__":
    sys.exit(main())
