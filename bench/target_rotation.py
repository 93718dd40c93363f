"""Benchmark of rotation through the PostgreSQL target rotators, next to ``key-vault`` rotation, in one run.

Starts its own Azurite (in memory), the Key Vault emulator (default latency and limits: throttling is off
while seeding and on, at Key Vault's 300 set_secret / 4,000 other calls per 10 s, while measuring) and a
throwaway PostgreSQL cluster (``devtools.postgres``: SCRAM logins over TCP on loopback). It creates, all
due (made 40 days ago on the emulator's clock, 30-day interval):

* ``--secrets`` ``key-vault`` secrets (``api-key``): the baseline;
* ``--secrets`` PostgreSQL secrets (``database-password``, connection documents): half
  ``postgres-single-user``, each with its own role, and half ``postgres-alternating``, each with its own
  role, sharing one admin credential secret (a ``CREATEROLE`` role), so both rotators are measured and the
  PostgreSQL figure is their even mix.

Then it rotates them one at a time through ``shared.services.rotation.rotate`` (what ``rotate_secret``
calls) with a ``shared.bootstrap.Container`` built from settings: its secret store, state store, audit
trail, clock, reserved names and target rotators; a recording publisher stands in for Event Grid. The
key-vault and PostgreSQL rotations are interleaved, so that load from elsewhere on the machine falls on
both alike. Before measuring, one secret of each kind is rotated (not counted): the worker is warm (token,
audit MAC key, tables, psycopg imported), as a Functions worker is after its first rotation.

Round 1 rotates the due secrets; an alternating secret's first rotation creates its ``<role>_clone``.
Round 2 (``--rounds 2``, the default) rotates the same secrets again, forced (as a manual rotation does,
since none is due any more): the steady state, where the alternating roles take turns.

For each kind it prints wall time (total, mean, p50, p95, max per rotation) and where it went: Key Vault
and table requests (counted and timed by the SDK pipelines' hooks, every attempt included), time in the
target rotator (PostgreSQL, its Key Vault reads excluded), PostgreSQL logins (successful and refused, from
the server's statement log), Key Vault requests per rotation by secret (the emulator's per-name counts:
the secret, its pending companion, the admin credential) and CPU per rotation per process.

Checks, which fail the run (exit 1) when not met: every rotation returned ``rotated``; the secret's
current version is the one it made; every PostgreSQL secret's new document logs in; a single-user
secret's previous document no longer does, an alternating one's still does (until its grace ends);
no pending companion keeps an enabled version; one SecretRotated notification per rotation.
Exit 130 when interrupted.

    .venv/bin/python -m bench.target_rotation                         # 50 + 50 secrets, 2 rounds
    .venv/bin/python -m bench.target_rotation --secrets 10 --rounds 1 # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import secrets
import statistics
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.data.tables import TableServiceClient
from azure.keyvault.secrets import SecretClient
from psycopg import sql

from bench.common import Peers, azurite_version, run_benchmark, start_peers, tool_version
from devtools.postgres import PostgresProcess, server_binaries
from shared.bootstrap import Container
from shared.config import KeyVaultSettings, Settings
from shared.domain.errors import DomainError
from shared.domain.notifications import SECRET_ROTATED, Notification
from shared.domain.policy import RotationPolicy, Rotator, SecretKind
from shared.domain.targets import (
    CONNECTION_CONTENT_TYPE,
    ConnectionDocument,
    TargetSecret,
    pending_secret_name,
)
from shared.ports import TargetRotator
from shared.services.rotation import RotationOutcome, rotate

_T = TypeVar("_T")

DUE_AGE_DAYS = 40
INTERVAL = timedelta(days=30)
KEY_VAULT = Rotator.KEY_VAULT.value
SINGLE = Rotator.POSTGRES_SINGLE_USER.value
ALTERNATING = Rotator.POSTGRES_ALTERNATING.value
KINDS = (KEY_VAULT, SINGLE, ALTERNATING)
POSTGRES = "postgres, all"
ADMIN_SECRET = "tr-pg-admin"
ADMIN_ROLE = "tr_admin"
DBNAME = "postgres"
# Lines of the server's statement log (log_statement = all) that mark a login: every rotator session
# starts with the identity check; a refused SCRAM login logs a FATAL.
_LOGIN_LINE = "statement: SELECT current_user::text, session_user::text, current_database()::text"
_REFUSED_LINE = "FATAL:  password authentication failed"


def policy_of(kind: str) -> RotationPolicy:
    if kind == KEY_VAULT:
        return RotationPolicy(SecretKind.API_KEY, INTERVAL, None, "bench")
    target = ADMIN_SECRET if kind == ALTERNATING else None
    return RotationPolicy(SecretKind.DATABASE_PASSWORD, INTERVAL, None, "bench", Rotator(kind), target)


# -- what the pipelines and the rotators spent --------------------------------------------------------


@dataclass
class Meter:
    """Requests and their wall time per service, as the SDK pipelines' hooks see them (every attempt:
    challenges and retries included), and the time spent in target rotators (their Key Vault time
    excluded). The rotations run one at a time, so one start time per service is enough."""

    calls: Counter[str] = field(default_factory=Counter)
    ms: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    target_ms: float = 0.0
    _started: dict[str, float] = field(default_factory=dict)

    def hooks(self, service: str) -> dict[str, Any]:
        def on_request(request: PipelineRequest[Any]) -> None:
            self._started[service] = time.perf_counter()

        def on_response(response: PipelineResponse[Any, Any]) -> None:
            started = self._started.pop(service, None)
            self.calls[service] += 1
            if started is not None:
                self.ms[service] += (time.perf_counter() - started) * 1000

        return {"raw_request_hook": on_request, "raw_response_hook": on_response}

    def reading(self) -> tuple[int, float, int, float, float]:
        return (
            self.calls["key_vault"],
            self.ms["key_vault"],
            self.calls["tables"],
            self.ms["tables"],
            self.target_ms,
        )


class MeteredContainer(Container):
    """shared/bootstrap.py's Container whose Key Vault and table clients carry the meter's hooks; every
    adapter, the audit trail and the target rotators are its own."""

    def __init__(self, settings: Settings, meter: Meter) -> None:
        super().__init__(settings)
        self.meter = meter

    def _secret_client(self, kv: KeyVaultSettings | None = None, **transport: Any) -> SecretClient:
        return super()._secret_client(kv, **transport, **self.meter.hooks("key_vault"))

    def _table_service(self, **transport: Any) -> TableServiceClient:
        return super()._table_service(**transport, **self.meter.hooks("tables"))


class TimedRotator:
    """A target rotator (the container's) timed: what it spends, less its own Key Vault requests (the
    alternating rotator reads the admin credential), is the target's time."""

    def __init__(self, inner: TargetRotator, meter: Meter) -> None:
        self._inner = inner
        self._meter = meter

    def _timed(self, call: Callable[[], _T]) -> _T:
        kv_before = self._meter.ms["key_vault"]
        started = time.perf_counter()
        try:
            return call()
        finally:
            spent = (time.perf_counter() - started) * 1000
            self._meter.target_ms += spent - (self._meter.ms["key_vault"] - kv_before)

    def pending(self, secret: TargetSecret, generated: str) -> str:
        return self._timed(lambda: self._inner.pending(secret, generated))

    def tags(self, secret: TargetSecret) -> dict[str, str]:
        return self._timed(lambda: self._inner.tags(secret))

    def bind(self, secret: TargetSecret) -> dict[str, str]:
        return self._timed(lambda: self._inner.bind(secret))

    def set(self, secret: TargetSecret, pending: str) -> None:
        self._timed(lambda: self._inner.set(secret, pending))

    def test(self, secret: TargetSecret, pending: str) -> None:
        self._timed(lambda: self._inner.test(secret, pending))

    def finish(self, secret: TargetSecret, retired: str) -> None:
        self._timed(lambda: self._inner.finish(secret, retired))


class RecordingPublisher:
    """The Publisher port in memory: the notifications a rotation sent."""

    def __init__(self) -> None:
        self.sent: list[Notification] = []

    def publish(self, notifications: Sequence[Notification]) -> None:
        self.sent.extend(notifications)


class ServerLog:
    """The PostgreSQL statement log, read from where the last reading stopped."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self.read()

    def read(self) -> tuple[int, int]:
        """(logins, refused logins) logged since the last reading."""
        with self._path.open("rb") as log:
            log.seek(self._offset)
            text = log.read().decode("utf-8", errors="replace")
            self._offset = log.tell()
        refused = text.count(_REFUSED_LINE)
        return text.count(_LOGIN_LINE) + refused, refused


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process, of its children that it reaped (a postmaster's ended
    backends) and of its live children, from /proc; 0 where unavailable."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        total = 0
        for each, reaped in [(pid, True), *((int(c), False) for c in children)]:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11 : 15 if reaped else 13])
        return total / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


# -- the population -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The names of the measured secrets, in the order they are rotated, with their kinds and roles."""

    order: tuple[str, ...]
    kind: Mapping[str, str]
    role: Mapping[str, str]
    warm: tuple[str, ...]

    def names(self, kind: str) -> list[str]:
        return [n for n in self.order if self.kind[n] == kind]


def plan(count: int) -> Plan:
    """``count`` key-vault and ``count`` PostgreSQL secrets (half single user, half alternating),
    interleaved: key-vault, single, key-vault, alternating, ..."""
    singles = [f"tr-pg-single-{i:03d}" for i in range(count // 2)]
    alternates = [f"tr-pg-alt-{i:03d}" for i in range(count - count // 2)]
    postgres = [n for pair in zip(alternates, singles, strict=False) for n in pair[::-1]]
    postgres += alternates[len(singles) :]
    kv = [f"tr-kv-{i:03d}" for i in range(count)]
    order = tuple(n for pair in zip(kv, postgres, strict=True) for n in pair)
    warm = ("tr-warm-kv", "tr-warm-single", "tr-warm-alt")
    kind = {n: KEY_VAULT for n in [*kv, warm[0]]}
    kind |= {n: SINGLE for n in [*singles, warm[1]]}
    kind |= {n: ALTERNATING for n in [*alternates, warm[2]]}
    role = {n: n.replace("-", "_") for n, k in kind.items() if k != KEY_VAULT}
    return Plan(order, kind, role, warm)


def create_role(conn: Any, name: str, password: str, *attributes: str) -> None:
    """A login role whose password reaches the server as a SCRAM verifier, as the rotator sends them."""
    verifier = conn.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256").decode()
    words = sql.SQL(" ").join(sql.SQL(word) for word in ("LOGIN", *attributes))
    conn.execute(
        sql.SQL("CREATE ROLE {} WITH {} PASSWORD {}").format(
            sql.Identifier(name), words, sql.Literal(verifier)
        )
    )


def document(pg: PostgresProcess, role: str, password: str) -> str:
    """A connection document. No TLS: the throwaway cluster has none (a server in Azure requires it)."""
    doc = {
        "host": pg.host,
        "port": pg.port,
        "dbname": DBNAME,
        "username": role,
        "password": password,
        "sslmode": "disable",
    }
    return json.dumps(doc)


def seed(peers: Peers, pg: PostgresProcess, population: Plan) -> None:
    """The roles, the admin credential (not managed) and every secret, the managed ones made
    DUE_AGE_DAYS ago on the emulator's clock."""
    client, emulator = peers.secrets, peers.emulator
    passwords = {name: secrets.token_urlsafe(24) for name in population.role}
    admin_password = secrets.token_urlsafe(24)
    with pg.connect() as conn:
        create_role(conn, ADMIN_ROLE, admin_password, "CREATEROLE")
        for name, role in population.role.items():
            create_role(conn, role, passwords[name])
    client.set_secret(
        ADMIN_SECRET,
        document(pg, ADMIN_ROLE, admin_password),
        content_type=CONNECTION_CONTENT_TYPE,
        tags={"owner": "bench"},
    )
    emulator.set_clock_offset(-DUE_AGE_DAYS * 86400)
    try:
        for name, kind in population.kind.items():
            tags = policy_of(kind).to_tags()
            if kind == KEY_VAULT:
                client.set_secret(name, secrets.token_urlsafe(32), content_type="text/plain", tags=tags)
            else:
                value = document(pg, population.role[name], passwords[name])
                client.set_secret(name, value, content_type=CONNECTION_CONTENT_TYPE, tags=tags)
    finally:
        emulator.set_clock_offset(0)


# -- a round ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One rotation: its wall time and where it went (ms), its logins and the CPU each process spent."""

    name: str
    kind: str
    ms: float
    kv_calls: int
    kv_ms: float
    table_calls: int
    table_ms: float
    target_ms: float
    logins: int
    refused: int
    cpu_ms: Mapping[str, float]

    @property
    def rest_ms(self) -> float:
        """The service's own work in this process: values, MACs, JSON, the SDKs' request building."""
        return self.ms - self.kv_ms - self.table_ms - self.target_ms


@dataclass
class Round:
    number: int
    forced: bool
    samples: list[Sample] = field(default_factory=list)
    outcomes: dict[str, RotationOutcome] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    kv_stats: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def of(self, kind: str) -> list[Sample]:
        if kind == POSTGRES:
            return [s for s in self.samples if s.kind != KEY_VAULT]
        return [s for s in self.samples if s.kind == kind]


@dataclass
class Rig:
    """What a round uses: the container's adapters, the timed rotators, the meters and the peers."""

    container: MeteredContainer
    rotators: Mapping[Rotator, TargetRotator]
    publisher: RecordingPublisher
    log: ServerLog
    pids: Mapping[str, int]
    peers: Peers
    pg: PostgresProcess

    def cpu(self) -> dict[str, float]:
        readings = {name: process_cpu(pid) for name, pid in self.pids.items()}
        return {"Python": time.process_time(), **readings}


def rotate_one(rig: Rig, name: str, kind: str, *, forced: bool) -> tuple[RotationOutcome | str, Sample]:
    """Rotate ``name`` as ``rotate_secret`` does; its outcome (or the error it raised) and its sample."""
    c, meter = rig.container, rig.container.meter
    before, cpu_before = meter.reading(), rig.cpu()
    rig.log.read()
    started = time.perf_counter()
    result: RotationOutcome | str
    try:
        peers = dataclasses.replace(c.peers, publisher=rig.publisher, rotators=rig.rotators)
        result = rotate(
            peers, name, force=forced, reason="manual" if forced else "due", correlation_id=uuid.uuid4().hex
        )
    except DomainError as err:
        result = f"{type(err).__name__}: {err}"
    ms = (time.perf_counter() - started) * 1000
    after, cpu_after = meter.reading(), rig.cpu()
    logins, refused = rig.log.read()
    delta = [a - b for a, b in zip(after, before, strict=True)]
    cpu = {k: (cpu_after[k] - cpu_before[k]) * 1000 for k in cpu_before}
    sample = Sample(
        name, kind, ms, int(delta[0]), delta[1], int(delta[2]), delta[3], delta[4], logins, refused, cpu
    )
    return result, sample


def run_round(rig: Rig, population: Plan, number: int, *, forced: bool) -> Round:
    result = Round(number, forced)
    rig.peers.emulator.reset_stats()
    started = time.perf_counter()
    for i, name in enumerate(population.order, 1):
        outcome, sample = rotate_one(rig, name, population.kind[name], forced=forced)
        result.samples.append(sample)
        if isinstance(outcome, str):
            result.failures.append(f"{name}: raised {outcome}")
        else:
            result.outcomes[name] = outcome
            if outcome.status != "rotated":
                result.failures.append(f"{name}: {outcome.status} ({outcome.reason})")
        if i % 10 == 0 or i == len(population.order):
            elapsed = time.perf_counter() - started
            print(
                f"  round {number}: {i}/{len(population.order)} rotated in {elapsed:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    result.seconds = time.perf_counter() - started
    result.kv_stats = rig.peers.emulator.stats()
    return result


# -- checks -------------------------------------------------------------------------------------------


@dataclass
class Checks:
    lines: list[str] = field(default_factory=list)
    failed: bool = False

    def check(self, ok: bool, what: str, problems: Sequence[str] = ()) -> None:
        self.lines.append(f"  {'ok' if ok else 'FAILED'}: {what}")
        self.lines += [f"    {p}" for p in problems[:10]]
        self.failed |= not ok


def verify(rig: Rig, population: Plan, result: Round, previous: dict[str, str], notifications: int) -> Checks:
    """The round's checks (outside the timed windows; with the bench's own client). ``previous``: each
    PostgreSQL secret's document before the round, replaced by its current one."""
    checks, client, pg = Checks(), rig.peers.secrets, rig.pg
    n = len(population.order)
    checks.check(
        not result.failures, f"{n - len(result.failures)}/{n} rotations returned 'rotated'", result.failures
    )
    stale, refused, lingering, still_old = [], [], [], []
    for name in population.order:
        current = client.get_secret(name)
        outcome = result.outcomes.get(name)
        if outcome is None or current.properties.version != outcome.new_version:
            stale.append(f"{name}: current version is not the one the rotation made")
        kind = population.kind[name]
        if kind == KEY_VAULT:
            continue
        new = ConnectionDocument.parse(current.value or "")
        if not pg.can_login(new.username, new.password, dbname=new.dbname):
            refused.append(f"{name}: the new document (role {new.username}) does not log in")
        old = ConnectionDocument.parse(previous[name])
        old_works = pg.can_login(old.username, old.password, dbname=old.dbname)
        if old_works != (kind == ALTERNATING):
            still_old.append(f"{name} ({kind}): previous document (role {old.username}) logs in: {old_works}")
        previous[name] = current.value or ""
        companion = pending_secret_name(name)
        if any(v.enabled for v in client.list_properties_of_secret_versions(companion)):
            lingering.append(f"{name}: its pending companion {companion} has an enabled version")
    rig.log.read()  # these logins are not a rotation's
    pg_count = len(population.order) // 2
    checks.check(not stale, f"{n - len(stale)}/{n} secrets' current version is the rotation's", stale)
    checks.check(
        not refused, f"{pg_count - len(refused)}/{pg_count} new PostgreSQL documents log in", refused
    )
    checks.check(
        not still_old,
        "previous documents: single-user ones refused, alternating ones still log in (grace)",
        still_old,
    )
    checks.check(not lingering, "no pending companion keeps an enabled version", lingering)
    checks.check(notifications == n, f"{notifications} SecretRotated notifications for {n} rotations")
    return checks


# -- output -------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def mean(values: Iterator[float] | Sequence[float]) -> float:
    listed = list(values)
    return statistics.fmean(listed) if listed else 0.0


def print_times(result: Round) -> None:
    header = (
        f"{'':22} {'n':>3} {'total s':>8} {'mean ms':>8} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} |"
        f" {'KV req':>6} {'KV ms':>6} {'table req':>9} {'table ms':>8} {'postgres ms':>11}"
        f" {'logins (refused)':>16} {'rest ms':>7}"
    )
    print(header)
    print("-" * len(header))
    for kind in (KEY_VAULT, POSTGRES, SINGLE, ALTERNATING):
        samples = result.of(kind)
        if not samples:
            continue
        ms = [s.ms for s in samples]
        label = kind if kind in (KEY_VAULT, POSTGRES) else f"  {kind}"
        logins = f"{mean(s.logins for s in samples):.1f} ({mean(s.refused for s in samples):.1f})"
        print(
            f"{label:22} {len(samples):>3} {sum(ms) / 1000:>8.2f} {mean(ms):>8.1f} {percentile(ms, 50):>7.1f}"
            f" {percentile(ms, 95):>7.1f} {max(ms):>7.1f} |"
            f" {mean(s.kv_calls for s in samples):>6.1f} {mean(s.kv_ms for s in samples):>6.1f}"
            f" {mean(s.table_calls for s in samples):>9.1f} {mean(s.table_ms for s in samples):>8.1f}"
            f" {mean(s.target_ms for s in samples):>11.1f} {logins:>16}"
            f" {mean(s.rest_ms for s in samples):>7.1f}"
        )
    kv, pg = result.of(KEY_VAULT), result.of(POSTGRES)
    if kv and pg:
        kv_ms, pg_ms = [s.ms for s in kv], [s.ms for s in pg]
        print(
            f"PostgreSQL / key-vault: mean {mean(pg_ms) / mean(kv_ms):.2f}x, "
            f"p50 {percentile(pg_ms, 50) / percentile(kv_ms, 50):.2f}x, "
            f"p95 {percentile(pg_ms, 95) / percentile(kv_ms, 95):.2f}x"
        )


def print_kv_requests(result: Round, population: Plan) -> None:
    """Key Vault requests per rotation by the secret they were about (the emulator's per-name counts)."""
    names: dict[str, dict[str, int]] = result.kv_stats.get("names", {})
    attributed = 0
    print("Key Vault requests per rotation, by secret (the emulator's counts; 'get' includes properties):")
    for kind in KINDS:
        members = population.names(kind)
        if not members:
            continue
        groups = {"secret": {n.lower() for n in members}}
        groups["pending companion"] = {pending_secret_name(n) for n in members}
        if kind == ALTERNATING:
            groups["admin credential"] = {ADMIN_SECRET.lower()}
        parts, total = [], 0
        for group, wanted in groups.items():
            ops = {
                op.removesuffix("_secret"): sum(c for name, c in by_name.items() if name in wanted)
                for op, by_name in sorted(names.items())
            }
            ops = {op: count for op, count in ops.items() if count}
            total += sum(ops.values())
            if ops:
                parts.append(f"{group}: " + ", ".join(f"{op} {c / len(members):g}" for op, c in ops.items()))
        attributed += total
        print(f"  {kind:22} {total / len(members):>5.1f}  " + "; ".join(parts))
    other = int(result.kv_stats.get("total", 0)) - attributed
    print(
        f"  other requests in the round (challenges, the audit MAC key): {other}; "
        f"answered 429: {result.kv_stats.get('throttled', 0)}"
    )


def print_cpu(result: Round) -> None:
    processes = list(result.samples[0].cpu_ms) if result.samples else []
    print("CPU per rotation, ms (/proc; PostgreSQL: postmaster and its backends):")
    print(f"  {'':22} " + " ".join(f"{p:>12}" for p in processes) + f" {'all':>8}")
    for kind in (KEY_VAULT, SINGLE, ALTERNATING):
        samples = result.of(kind)
        if not samples:
            continue
        per = [mean(s.cpu_ms[p] for s in samples) for p in processes]
        print(f"  {kind:22} " + " ".join(f"{v:>12.1f}" for v in per) + f" {sum(per):>8.1f}")


def print_round(result: Round, population: Plan, checks: Checks) -> None:
    what = (
        "the same secrets again, forced (a manual rotation): alternating roles take turns"
        if result.forced
        else "every secret due; an alternating secret's first rotation creates its <role>_clone"
    )
    print(
        f"round {result.number}: {what}; {len(result.samples)} rotations one at a time in "
        f"{result.seconds:.1f} s"
    )
    print()
    print_times(result)
    print()
    print_kv_requests(result, population)
    print()
    print_cpu(result)
    print()
    print("checks:")
    print("\n".join(checks.lines))
    print()


# -- main ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.target_rotation",
        description=(
            "Rotation through the PostgreSQL target rotators next to key-vault rotation, one at a time "
            "through the production adapters: wall time, requests, logins and CPU per rotation."
        ),
    )
    parser.add_argument(
        "--secrets", type=int, default=50, help="key-vault secrets, and as many PostgreSQL ones (default 50)"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, choices=(1, 2), help="2 (default): also the steady state, forced"
    )
    args = parser.parse_args(argv)
    if args.secrets < 2:
        parser.error("--secrets must be at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(run, parse_args(argv))


def print_header(args: argparse.Namespace, pg: PostgresProcess) -> None:
    pg_version = tool_version([str(server_binaries() / "postgres"), "--version"])
    n = args.secrets
    print(f"target rotation benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, Python "
        f"{platform.python_version()}, Azurite {azurite_version()} (in memory), {pg_version} "
        f"(loopback TCP, SCRAM, no TLS, fsync off), the Key Vault emulator (no added latency; limits on)"
    )
    print(
        f"workload: {n} key-vault secrets (api-key) and {n} PostgreSQL secrets "
        f"({n // 2} postgres-single-user, {n - n // 2} postgres-alternating with one admin credential), "
        "each with its own role, all due; "
        "rotated one at a time through shared.services.rotation.rotate with the Container's adapters, "
        "key-vault and PostgreSQL interleaved, after one unmeasured rotation of each kind"
    )
    print()


def build_rig(stack: ExitStack, peers: Peers, pg: PostgresProcess) -> Rig:
    settings = Settings(
        {
            "KEY_VAULT_URL": peers.emulator.url,
            "KEY_VAULT_CA_BUNDLE": str(peers.emulator.cert_file),
            "SECRETS_STORAGE": peers.azurite.connection_string,
        }
    )
    container = MeteredContainer(settings, Meter())

    def close() -> None:
        container.secret_client.close()
        container.table_service.close()

    stack.callback(close)
    rotators: dict[Rotator, TargetRotator] = {
        r: TimedRotator(container.target_rotators[r], container.meter)
        for r in (Rotator.POSTGRES_SINGLE_USER, Rotator.POSTGRES_ALTERNATING)
    }
    postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
    pids = {"KV emulator": peers.emulator.pid, "Azurite": peers.azurite.pid, "PostgreSQL": postmaster}
    return Rig(container, rotators, RecordingPublisher(), ServerLog(pg.log_file), pids, peers, pg)


def run(args: argparse.Namespace) -> int:
    population = plan(args.secrets)
    failed = False
    with ExitStack() as stack:
        print("starting PostgreSQL ...", file=sys.stderr, flush=True)
        pg = stack.enter_context(PostgresProcess.start())
        peers = start_peers(stack, "bench-target-", throttling=False)
        print_header(args, pg)
        print(f"seeding {len(population.kind)} secrets and their roles ...", file=sys.stderr, flush=True)
        seed(peers, pg, population)
        peers.emulator.set_throttling(True)
        rig = build_rig(stack, peers, pg)
        previous = {n: peers.secrets.get_secret(n).value or "" for n in population.order}
        for name in population.warm:  # a warm worker: token, MAC key, tables, psycopg, the first clone
            outcome, _ = rotate_one(rig, name, population.kind[name], forced=False)
            if not isinstance(outcome, RotationOutcome) or outcome.status != "rotated":
                raise RuntimeError(f"the warm-up rotation of {name} did not rotate: {outcome}")
        for number in range(1, args.rounds + 1):
            print(f"round {number} ...", file=sys.stderr, flush=True)
            sent_before = len(rig.publisher.sent)
            result = run_round(rig, population, number, forced=number > 1)
            rotated = [n for n in rig.publisher.sent[sent_before:] if n.type == SECRET_ROTATED]
            checks = verify(rig, population, result, previous, len(rotated))
            print_round(result, population, checks)
            failed |= checks.failed
    print("all checks: " + ("FAILED" if failed else "ok"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
