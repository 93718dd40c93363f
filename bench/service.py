"""The whole service over HTTP, for the benchmarks that drive it as callers do: several dev-host instances
(``HostFleet``) on one in-memory Azurite, one Key Vault emulator and an Event Grid sink, a caller that
spreads its requests over the instances and times them by endpoint, and the checks that the stored truth
holds afterwards (one enabled current value per secret, an outcome for every accepted request, a trail
that verifies)."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import secrets
import shutil
import statistics
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.common import Peers, start_peers
from devtools.azurite import REPO_ROOT
from devtools.eventgrid_sink import EventGridSink
from devtools.host import HostFleet
from devtools.postgres import PostgresProcess
from devtools.stack import app_environment, create_tables
from shared.adapters.tables import AUDIT_TABLE
from shared.adapters.tables.rows import DIGEST_PAGES
from shared.domain.identity import Role, encode_principal
from shared.domain.policy import RotationPolicy, Rotator, SecretKind
from shared.domain.targets import ConnectionDocument, pending_secret_name

OPERATOR = encode_principal("oid-load-operator", [Role.ROTATION_OPERATE.value], name="load-operator")
REQUESTER = encode_principal("oid-load-requester", [Role.REVOCATION_REQUEST.value], name="load-requester")
EXECUTOR = encode_principal("oid-load-executor", [Role.REVOCATION_EXECUTE.value], name="load-executor")
AUDITOR = encode_principal("oid-load-auditor", [Role.AUDIT_READ.value], name="load-auditor")


def approver(i: int) -> str:
    return encode_principal(f"oid-load-approver-{i}", [Role.REVOCATION_APPROVE.value], name=f"approver-{i}")


#: What a caller got when the instance it called went away mid-request (killed): neither a status nor an
#: answer, so whether the request took effect is for the stored state to say.
INTERRUPTED = 0


class Broken(AssertionError):
    """An invariant that does not hold after the run: the benchmark's verdict, with what was seen."""


@dataclass
class Caller:
    """HTTP requests spread round-robin over ``fleet``'s instances, each timed under its endpoint's name.
    Thread-safe; one connection per request (the dev host, like many load balancers, closes it)."""

    fleet: HostFleet
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    bodies: list[bytes] = field(default_factory=list)
    _turn: Iterator[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def call(
        self, endpoint: str, method: str, path: str, body: Any = None, *, principal: str | None = None,
        instance: int | None = None,
    ) -> tuple[int, Any]:  # fmt: skip
        """``(status, answer)``. An instance that refuses the connection (down) is passed over for the
        next, as a load balancer does; ``(INTERRUPTED, None)`` when the connection broke mid-request (its
        instance was killed) or every instance refused."""
        with self._lock:
            first = next(self._turn) if instance is None else instance
        headers = {"content-type": "application/json", "user-agent": "bench-load"}
        if principal is not None:
            headers["x-ms-client-principal"] = principal
        data = None if body is None else json.dumps(body).encode()
        started = time.perf_counter()
        tries = 1 if instance is not None else len(self.fleet.hosts)
        for index in range(first, first + tries):
            try:
                status, raw = self._send(index, method, path, data, headers)
            except ConnectionRefusedError:  # down: the next instance
                continue
            except (OSError, http.client.HTTPException):  # cut off mid-request
                break
            elapsed = time.perf_counter() - started
            with self._lock:
                self.latencies[endpoint].append(elapsed)
                self.statuses[(endpoint, status)] += 1
                self.bodies.append(raw)
            return status, (json.loads(raw) if raw else None)
        with self._lock:
            self.statuses[(endpoint, INTERRUPTED)] += 1
        return INTERRUPTED, None

    def _send(
        self, index: int, method: str, path: str, data: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """One request to instance ``index`` (modulo their number). Raises ConnectionRefusedError when it
        is down, another OSError or HTTPException when the connection breaks."""
        url = urlsplit(self.fleet.hosts[index % len(self.fleet.hosts)].url)
        connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=120)
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def server_errors(self) -> dict[str, int]:
        return {f"{e} {s}": n for (e, s), n in sorted(self.statuses.items()) if s >= 500}


@dataclass
class Service:
    peers: Peers
    fleet: HostFleet
    sink: EventGridSink
    caller: Caller

    def audit_rows(self) -> list[dict[str, Any]]:
        """Every audit record (no heads, no digests), as stored."""
        table = self.peers.tables.get_table_client(AUDIT_TABLE)
        rows = [dict(e) for e in table.list_entities()]
        skip = ("_digest", DIGEST_PAGES)
        return [r for r in rows if r["RowKey"] != "head" and r["PartitionKey"] not in skip]


def start_service(stack: ExitStack, prefix: str, instances: int) -> Service:
    """Peers, the service's tables (as the deployment makes them), an Event Grid sink and ``instances``
    dev hosts; all stopped when ``stack`` closes."""
    peers = start_peers(stack, prefix)
    create_tables(peers.azurite.connection_string)
    sink = stack.enter_context(EventGridSink())
    tmp = Path(peers.emulator.cert_file).parent
    settings = tmp / "local.settings.json"
    shutil.copyfile(REPO_ROOT / "local.settings.sample.json", settings)  # the embedded defaults
    env = app_environment(peers.azurite, peers.emulator, sink)
    print(f"starting {instances} dev host instance(s) ...", file=sys.stderr, flush=True)
    fleet = stack.enter_context(HostFleet.start(instances, env=env, settings=settings))
    return Service(peers, fleet, sink, Caller(fleet))


def onboard(service: Service, name: str) -> None:
    body = {"name": name, "kind": "api-key", "rotation_interval_days": 30}
    status, answer = service.caller.call("onboard", "POST", "/api/secrets", body, principal=OPERATOR)
    if status != 201:
        raise Broken(f"onboarding {name}: {status} {answer}")


def wait_for(probe: Any, what: str, timeout: float = 120.0) -> Any:
    """Poll ``probe`` until it returns something truthy; Broken after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (seen := probe()):
        if time.monotonic() > deadline:
            raise Broken(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)
    return seen


# -- what must hold afterwards ---------------------------------------------------------------------------

ROTATION_OUTCOMES = ("ROTATED", "ROTATION_SKIPPED", "ROTATION_FAILED")


#: The reason of a skip recording the delivery of a request answered already: its message came again (the
#: queue delivers at least once: a message whose instance died or whose invocation failed comes again), or
#: another rotation took the queued request over before its message arrived. A record of a delivery, not a
#: second outcome.
ANSWERED_ALREADY = "already done (rotation "


def rotation_outcomes(rows: Iterable[dict[str, Any]]) -> tuple[Counter[str], Counter[str]]:
    """How many outcome records answer each rotation request, and how many deliveries of it were skipped
    as answered already. A record answers its ``rotation_id`` and the requests that joined it, except the
    skip of requests that joined after the success was recorded (reason ``joined rotation <id>``), which
    answers only those (its ``rotation_id`` is the one joined)."""
    answered: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    for row in rows:
        if row["action"] in ROTATION_OUTCOMES and row["result"] != "intent":
            details = json.loads(row.get("details") or "{}")
            reason = str(details.get("reason", ""))
            if reason.startswith(ANSWERED_ALREADY):
                skipped[str(details.get("rotation_id"))] += 1
                continue
            late = reason.startswith("joined rotation ")
            ids = set(details.get("joined") or []) | (set() if late else {str(details.get("rotation_id"))})
            answered.update(i for i in ids if i != "None")
    return answered, skipped


def check_rotations(
    service: Service, ids: Sequence[str], *, crashed: bool = False, timeout: float = 180.0
) -> tuple[int, list[str]]:
    """Every accepted rotation request ends in exactly one outcome record: none lost, none doubled. A
    delivery's skip as answered already (``ANSWERED_ALREADY``) is a record of the delivery, not a second
    outcome. After instances were killed (``crashed``), a
    request may wait on a rotation whose holder was killed: its secret's lease runs on (``LEASE``), and the
    sweep resumes the rotation once it is over (``resume_stale``); such a request is open, not lost, when
    its secret's status shows that live lease. Returns the skipped deliveries and the open requests."""

    rows: list[dict[str, Any]] = []

    def settled() -> bool:
        rows[:] = service.audit_rows()
        answered = rotation_outcomes(rows)[0]
        return all(answered[i] for i in ids)

    with contextlib.suppress(Broken):  # timed out: the last read says which are missing
        wait_for(settled, f"an outcome for each of {len(ids)} rotation requests", timeout)
    answered, skipped = rotation_outcomes(rows)
    missing = [i for i in ids if not answered[i]]
    open_ = _held_by_a_lease(service, rows, missing) if crashed and missing else []
    if len(open_) < len(missing):
        lost = [i for i in missing if i not in open_]
        raise Broken(f"{len(lost)} of {len(ids)} accepted rotation requests have no outcome record "
                     f"(and no live lease holds them): {lost[:5]}")  # fmt: skip
    twice = [i for i in ids if answered[i] > 1]
    if twice:
        records = [
            (r["action"], r["result"], r.get("correlation_id"), json.loads(r.get("details") or "{}"))
            for r in rows
            if r["action"] in ROTATION_OUTCOMES
            and r["result"] != "intent"
            and twice[0] in r.get("details", "")
        ]
        raise Broken(f"{len(twice)} rotation requests answered twice; {twice[0]}'s records: {records}")
    return sum(skipped[i] for i in ids), open_


def _held_by_a_lease(service: Service, rows: Iterable[dict[str, Any]], missing: Sequence[str]) -> list[str]:
    """The requests of ``missing`` whose secret's write is still held by a live lease (its holder killed),
    their secrets named by their requests' records among ``rows``."""
    secrets = {
        str(json.loads(r.get("details") or "{}").get("rotation_id")): str(r["secret_name"])
        for r in rows
        if r["action"] == "ROTATION_REQUESTED" and r["result"] == "success"
    }
    return [
        r for r in missing if (name := secrets.get(r)) is not None and _held_by_a_live_lease(service, name)
    ]


def check_current_values(service: Service, names: Iterable[str]) -> None:
    """Each secret's current version is an enabled, readable value."""
    vault = service.peers.secrets
    for name in names:
        current = vault.get_secret(name)
        if not current.properties.enabled or not current.value:
            raise Broken(f"secret {name}: the current version is not an enabled value")


def check_trail(service: Service) -> dict[str, Any]:
    """The audit trail verifies (GET /api/audit/verify): nothing lost, nothing doubled, nothing altered."""
    status, report = service.caller.call("verify", "GET", "/api/audit/verify", principal=AUDITOR)
    if status != 200 or report.get("status") != "ok":
        raise Broken(f"audit verify: {status} {json.dumps(report)[:1500]}")
    return dict(report)


def check_no_values(service: Service, names: Iterable[str]) -> None:
    """No value of an enabled version of ``names`` (nor a connection document's password) in a response,
    the hosts' output or an event."""
    values = {
        service.peers.secrets.get_secret(p.name or "", p.version).value or ""
        for name in names
        for p in service.peers.secrets.list_properties_of_secret_versions(name)
        if p.enabled
    }
    values |= {password for value in values if (password := _password(value))}
    values = {v for v in values if len(v) >= 16}
    seen = [b.decode(errors="replace") for b in service.caller.bodies]
    seen += [service.fleet.output(), json.dumps(service.sink.events)]
    leaked = [v[:4] + "..." for v in values if any(v in text for text in seen)]
    if leaked:
        raise Broken(f"{len(leaked)} secret values appear in responses, logs or events")


def revocation_outcomes(rows: Iterable[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """How many success records each revocation has per action: ``(revocation id, action)``."""
    counted: Counter[tuple[str, str]] = Counter()
    for row in rows:
        if row["result"] == "success" and row["action"].startswith(("REVOCATION_", "REVOKED", "BREAK_GLASS")):
            details = json.loads(row.get("details") or "{}")
            counted[(str(details.get("revocation_id")), row["action"])] += 1
    return counted


def rotation_requests_left(service: Service) -> int:
    """Rotation requests on the queue, those being worked on included (0 when the queue was never made)."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.queue import QueueClient

    from shared.adapters.storage import QUEUE_API_VERSION, ROTATION_QUEUE

    queue = QueueClient.from_connection_string(
        service.peers.azurite.connection_string, ROTATION_QUEUE, api_version=QUEUE_API_VERSION
    )
    try:
        return int(queue.get_queue_properties().approximate_message_count or 0)
    except ResourceNotFoundError:
        return 0


def _password(value: str) -> str | None:
    try:
        return ConnectionDocument.parse(value).password
    except ValueError:  # not a connection document
        return None


def seed_database_secrets(service: Service, pg: PostgresProcess, count: int) -> list[str]:
    """``count`` PostgreSQL login roles, each a managed secret the single-user rotator rotates (the role
    changes its own password), as a fleet's database credentials are. Returns the secrets' names."""
    from bench.target_rotation import create_role, document

    policy = RotationPolicy(
        SecretKind.DATABASE_PASSWORD, timedelta(days=30), rotator=Rotator.POSTGRES_SINGLE_USER
    )
    names = []
    with pg.connect() as conn:
        for n in range(count):
            role = f"load_app_{n}_{uuid.uuid4().hex[:6]}"
            password = secrets.token_urlsafe(24)
            create_role(conn, role, password)
            name = role.replace("_", "-")
            service.peers.secrets.set_secret(
                name, document(pg, role, password), content_type="application/json", tags=policy.to_tags()
            )
            names.append(name)
    return names


def check_database(
    service: Service, pg: PostgresProcess, names: Iterable[str], *, crashed: bool = False
) -> tuple[int, list[str]]:
    """Of each database secret's enabled versions exactly one logs in, and it is the current one: the
    database accepts only what Key Vault says. After kills (``crashed``), a rotation whose holder died
    between setting the pending value at the database and promoting it in Key Vault leaves the database
    accepting only the pending value (kept in the pending companion secret) until the rotation is resumed
    after its lease: such a secret is held, not broken, when its status shows the live lease and the
    database accepts its pending value and no version. Returns the versions in all and the held secrets."""
    vault = service.peers.secrets
    versions, held = 0, []
    for name in names:
        versions += len(list(vault.list_properties_of_secret_versions(name)))
        current = vault.get_secret(name).properties.version
        accepted = [
            version
            for version in (p.version for p in vault.list_properties_of_secret_versions(name) if p.enabled)
            if _logs_in(pg, vault.get_secret(name, version).value)
        ]
        if accepted == [current]:
            continue
        pending = _pending_logs_in(service, pg, name) if crashed and not accepted else None
        if pending and _held_by_a_live_lease(service, name):
            held.append(name)
            continue
        raise Broken(
            f"database secret {name}: the database accepts versions {accepted}, current {current}"
            + ("" if pending is None else f"; its pending value logs in: {pending}")
        )
    return versions, held


def _logs_in(pg: PostgresProcess, value: str | None) -> bool:
    doc = ConnectionDocument.parse(value or "")
    return pg.can_login(doc.username, doc.password, dbname=doc.dbname)


def _pending_logs_in(service: Service, pg: PostgresProcess, name: str) -> bool:
    from azure.core.exceptions import HttpResponseError

    try:
        value = service.peers.secrets.get_secret(pending_secret_name(name)).value
    except HttpResponseError:  # none (404), or disabled (403)
        return False
    return _logs_in(pg, value)


def _held_by_a_live_lease(service: Service, name: str) -> bool:
    """Whether ``name``'s status shows a write in flight whose lease still runs."""
    status, answer = service.caller.call("status", "GET", f"/api/secrets/{name}/status", principal=AUDITOR)
    state = (answer or {}).get("state") or {}
    return status == 200 and state.get("status") != "idle" and bool(state.get("lease_live"))


# -- figures ---------------------------------------------------------------------------------------------


def percentiles(samples: Sequence[float]) -> tuple[float, float, float]:
    """p50, p95, p99 in milliseconds (nearest rank)."""
    ordered = sorted(samples)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p * len(ordered)) - 1))] * 1000

    return rank(0.50), rank(0.95), rank(0.99)


def latency_table(caller: Caller, seconds: float) -> list[str]:
    """One line per endpoint: requests, throughput, p50/p95/p99, statuses."""
    lines = [f"{'endpoint':<18}{'requests':>9}{'per s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}  statuses"]
    for endpoint in sorted(caller.latencies, key=lambda e: (e != "health", e)):
        samples = caller.latencies[endpoint]
        p50, p95, p99 = percentiles(samples)
        statuses = ", ".join(
            f"{'cut' if s == INTERRUPTED else s}: {n}"
            for (e, s), n in sorted(caller.statuses.items()) if e == endpoint
        )  # fmt: skip
        lines.append(
            f"{endpoint:<18}{len(samples):>9,}{len(samples) / seconds:>8.1f}{p50:>9.1f}{p95:>9.1f}{p99:>9.1f}"
            f"  {statuses}"
        )
    return lines


def median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000 if samples else float("nan")
