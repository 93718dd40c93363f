"""PostgreSQL rotation end to end: ``rotation.rotate`` / ``rotation.retire_due`` in-process through the real
SDK clients (Key Vault emulator, Azurite tables) and a real PostgreSQL cluster, with real SCRAM logins.

The ports and the target rotator pass one tripwire (tests/integration/test_rotation_crash.py), so a crash
is injected between the target's steps too: at every call of a clean rotation, before and after it ran, a
crash and then a retry after the dead holder's lease ran out leave exactly one new version whose document
logs in as the role it names, the progress closed, and the pending companion disabled.

A poller reads the secret from the emulator the way a consumer does (a fresh ``get_secret`` per loop) and
logs in with it throughout. Alternating users: the current credential never stops working. Single user:
between the role's ALTER and the promotion only the pending companion's value works (inherent: the role
has one password); what is asserted is that some value stored in Key Vault always logs in.

Then: what works after a rotation and after ``retire_due``; confused deputies (a document whose password is
not the role's, a role whose login switches to another, a companion planted under the companion's name)
refused with nothing changed; and another write taking a dead rotation's lease over.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.secrets import SecretClient
from psycopg import sql

from devtools.azurite import AzuriteProcess
from devtools.keyvault_emulator.process import EmulatorProcess
from devtools.postgres import PostgresProcess
from shared.adapters.key_vault import LocalTokenCredential
from shared.adapters.postgres import PostgresRotator
from shared.domain.audit import Action, Actor, ActorType, Result
from shared.domain.errors import Conflict, SecretDisabled
from shared.domain.policy import RotationPolicy, Rotator, SecretKind
from shared.domain.rotation import RotationReason, RotationRequest
from shared.domain.targets import (
    CONNECTION_CONTENT_TYPE,
    PENDING_FOR_TAG,
    ConnectionDocument,
    pending_secret_name,
)
from shared.ports import TargetRotator
from shared.services import rotation
from shared.services.catalog import PolicyInput
from tests.fakes import FixedClock, RecordingRotationRequests
from tests.integration.test_postgres_rotator import Role, create_role, rolpassword
from tests.integration.test_rotation_crash import Crash, Crashing, Tripwire, World
from tests.waiting import eventually
from tests.world import Peers

GRACE = timedelta(hours=1)
#: libpq's minimum: an answer from a local server takes milliseconds, a dead one fails fast anyway.
CONNECT_TIMEOUT = 2
ROTATORS = (Rotator.POSTGRES_SINGLE_USER, Rotator.POSTGRES_ALTERNATING)


def login(doc: ConnectionDocument) -> bool:
    """A real login with ``doc`` that lands as the role and database it names."""
    try:
        with psycopg.connect(
            host=doc.host,
            port=doc.port,
            dbname=doc.dbname,
            user=doc.username,
            password=doc.password,
            sslmode=doc.sslmode,
            connect_timeout=CONNECT_TIMEOUT,
            autocommit=True,
        ) as conn:
            row = conn.execute("SELECT session_user::text, current_user::text, current_database()::text")
            return row.fetchone() == (doc.username, doc.username, doc.dbname)
    except psycopg.OperationalError:
        return False


def logs_in(value: str) -> bool:
    return login(ConnectionDocument.parse(value))


class Stopwatch(Tripwire):
    """A tripwire that never crashes and notes when every call started and ended."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[tuple[str, bool, float]] = []

    def hit(self, where: str, *, after: bool) -> None:
        self.times.append((where, after, time.monotonic()))
        super().hit(where, after=after)


@dataclass
class Case:
    name: str
    first: str  # the version the rotation replaces
    role: Role = field(repr=False)
    value: str = field(repr=False)  # its connection document
    rotator: Rotator


class PgWorld(World):
    """test_rotation_crash's world, with a PostgreSQL cluster, its admin credential in the vault, and
    rotations through the PostgreSQL rotators (wrapped in the same tripwire as the ports)."""

    def __init__(self, azurite: AzuriteProcess, emulator: EmulatorProcess, pg: PostgresProcess) -> None:
        super().__init__(azurite, emulator)
        self.emulator, self.pg = emulator, pg
        self.prefix = f"p{uuid.uuid4().hex[:8]}"
        self.made: list[str] = []
        admin = create_role(pg, f"{self.prefix}_admin", "LOGIN", "CREATEROLE")
        self.admin_secret = f"pg-admin-{uuid.uuid4().hex[:12]}"
        self.container.secret_client.set_secret(
            self.admin_secret, self.document(admin).to_json(), content_type=CONNECTION_CONTENT_TYPE
        )

    def document(self, role: Role) -> ConnectionDocument:
        return ConnectionDocument(
            self.pg.host, self.pg.port, "postgres", role.name, role.password, sslmode="disable"
        )

    def policy(self, rotator: Rotator) -> RotationPolicy:
        admin = self.admin_secret if rotator == Rotator.POSTGRES_ALTERNATING else None
        return RotationPolicy(
            SecretKind.DATABASE_PASSWORD, timedelta(days=30), rotator=rotator, target=admin, grace=GRACE
        )

    def new_case(self, rotator: Rotator, role: Role | None = None, value: str | None = None) -> Case:
        """A fresh role (unless given) and a secret holding its document, due because it expires within
        Key Vault's near-expiry window."""
        role = role or create_role(self.pg, f"{self.prefix}_{uuid.uuid4().hex[:10]}")
        if rotator == Rotator.POSTGRES_ALTERNATING:  # what PostgreSQL 16+ needs (docs/rotation.md)
            self.pg.admin_execute(
                sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(
                    sql.Identifier(role.name), sql.Identifier(f"{self.prefix}_admin")
                )
            )
        value = value or self.document(role).to_json()
        name = f"pgrot-{uuid.uuid4().hex[:12]}"
        self.made.append(name)
        self.container.secret_client.set_secret(
            name,
            value,
            content_type=CONNECTION_CONTENT_TYPE,
            tags=self.policy(rotator).to_tags(),
            expires_on=self.clock.now() + timedelta(days=10),
        )
        return Case(name, self.store.get_properties(name).version, role, value, rotator)

    def rotators(self, wire: Tripwire | None = None) -> dict[Rotator, TargetRotator]:
        wire = wire or Tripwire()
        store = Crashing(self.store, wire, "vault")  # the admin credential is read through it too
        return {
            rotator: Crashing(
                PostgresRotator(
                    store,
                    alternating=rotator == Rotator.POSTGRES_ALTERNATING,
                    connect_timeout=CONNECT_TIMEOUT,
                ),
                wire,
                "target",
            )
            for rotator in ROTATORS
        }

    def peers(self, wire: Tripwire | None = None) -> Peers:
        peers = super().peers(wire)
        peers.rotators = self.rotators(wire)
        return peers

    def rotate(
        self, name: str, wire: Tripwire | None = None, *, force: bool = False
    ) -> rotation.RotationOutcome:
        return self.peers(wire or Tripwire()).rotate(name, force=force)

    def retire(self, name: str) -> list[str]:
        return self.peers().retire_due(name)

    def value(self, name: str, version: str | None = None) -> str:
        return self.store.get_value(name, version).value

    def assert_rotated_once(self, name: str, first: str) -> None:
        """Exactly one new version, current, whose document logs in as its role; the progress closed; every
        version of the pending companion disabled."""
        super().assert_rotated_once(name, first)
        current = self.store.get_properties(name)
        assert current.content_type == CONNECTION_CONTENT_TYPE
        assert logs_in(self.value(name)), "the current document does not log in as the role it names"
        companion = self.store.list_versions(pending_secret_name(name))
        assert companion and all(v.tags.get(PENDING_FOR_TAG) == name.lower() for v in companion)
        assert [v.version for v in companion if v.enabled] == []


@pytest.fixture(scope="module")
def pg_world(
    azurite: AzuriteProcess, kv_emulator: EmulatorProcess, postgres: PostgresProcess
) -> Iterator[PgWorld]:
    world = PgWorld(azurite, kv_emulator, postgres)
    yield world
    # The emulator is the session's: secrets left due (the refused ones) would be swept by later tests.
    for name in [*world.made, world.admin_secret]:
        world.container.secret_client.begin_delete_secret(name)


@pytest.fixture
def world(pg_world: PgWorld) -> PgWorld:
    """The module's world with its clock back at the vault's time: the crash matrix moves it far ahead,
    and grace periods are measured from the versions' creation times (the vault's)."""
    pg_world.clock = FixedClock(datetime.now(UTC))
    return pg_world


def _calls(world: PgWorld, rotator: Rotator, *, after: bool) -> list[str]:
    """The calls of one clean rotation, in the order their ``after`` (or before) hooks run (the rotator's
    store calls nest inside its steps, so the two orders differ)."""
    case = world.new_case(rotator)
    wire = Tripwire(None, after)
    assert world.rotate(case.name, wire).status == "rotated"
    world.assert_rotated_once(case.name, case.first)
    assert wire.calls is not None
    return wire.calls


# --- 1. a crash at every call, then a retry ---------------------------------------------------------------


@pytest.mark.parametrize("rotator", ROTATORS)
def test_a_crash_at_every_call_then_a_retry_leaves_one_working_version(
    world: PgWorld, rotator: Rotator
) -> None:
    started = time.monotonic()
    # A call that raises (reading the companion before it exists) has no after hook: fewer after points.
    points = {after: _calls(world, rotator, after=after) for after in (False, True)}
    for step in ("pending", "set", "test"):
        assert f"target.{step}" in points[False]
    print(f"\n{rotator.value}: {len(points[False])} calls per rotation: {', '.join(points[False])}")
    for after, calls in points.items():
        for at, call in enumerate(calls, start=1):
            where = f"{'after' if after else 'before'} call {at} ({call})"
            case = world.new_case(rotator)
            with pytest.raises(Crash):
                world.rotate(case.name, Tripwire(at, after))
            world.clock.advance(rotation.LEASE + timedelta(seconds=1))
            outcome = world.rotate(case.name)
            assert outcome.status in {"rotated", "skipped"}, (where, outcome)
            world.assert_rotated_once(case.name, case.first)
            new = ConnectionDocument.parse(world.value(case.name))
            if rotator == Rotator.POSTGRES_SINGLE_USER:
                assert new.username == case.role.name, where
                assert not logs_in(case.value), f"{where}: the old password still logs in"
            else:
                assert new.username == f"{case.role.name}_clone", where
                assert logs_in(case.value), f"{where}: the previous role stopped working within its grace"
            assert world.rotate(case.name).status == "skipped", where
    print(
        f"{rotator.value}: {len(points[False]) + len(points[True])} crash points (before and after each "
        f"call), each crash + retry verified, in {time.monotonic() - started:.1f}s"
    )


# --- 2. consumers logging in throughout ---------------------------------------------------------------------


@dataclass
class Poll:
    at: float  # seconds since the poller started, when the logins were tried
    current_version: str
    current_ok: bool
    pending_ok: bool | None  # None: not tried (the current value worked) or no enabled pending value
    stable: bool  # the vault's current version and pending companion were the same after the logins


class LoginPoller:
    """A consumer in a background thread: reads the secret's current value (and the enabled pending
    companion's) from the emulator with its own ``SecretClient`` on every loop and logs in with them."""

    def __init__(self, emulator: EmulatorProcess, name: str) -> None:
        self.name, self.companion = name, pending_secret_name(name)
        self.client = SecretClient(emulator.url, LocalTokenCredential(), **emulator.client_kwargs())
        self.polls: list[Poll] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"poller-{name}", daemon=True)

    def __enter__(self) -> LoginPoller:
        self._thread.start()
        self.wait(3)  # the state before the rotation is polled too
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.client.close()

    def wait(self, polls: int) -> None:
        """Until ``polls`` more polls have completed."""
        target = len(self.polls) + polls
        eventually(
            lambda: (len(self.polls), self._thread.is_alive()),
            f"{polls} more polls (done, poller alive)",
            interval=0.005,
            until=lambda seen: seen[0] >= target or not seen[1],
        )
        assert len(self.polls) >= target, ("the poller stalled", self.errors[-3:])

    def failures(self) -> list[Poll]:
        """The polls at which no value the vault held logged in (a change under the poll excepted)."""
        return [p for p in self.polls if not p.current_ok and not p.pending_ok and p.stable]

    def current_failures(self) -> list[Poll]:
        return [p for p in self.polls if not p.current_ok]

    def _pending(self) -> tuple[str, str] | None:
        try:
            secret = self.client.get_secret(self.companion)
        except ResourceNotFoundError:
            return None
        except HttpResponseError as err:
            if err.status_code == 403:  # its latest version is disabled
                return None
            raise
        assert secret.properties.version and secret.value
        return secret.properties.version, secret.value

    def _current(self) -> tuple[str, str]:
        secret = self.client.get_secret(self.name)
        assert secret.properties.version and secret.value
        return secret.properties.version, secret.value

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll()
            except Exception as err:
                self.errors.append(f"{time.monotonic() - self._started:.3f}s {type(err).__name__}: {err}")
                time.sleep(0.01)

    def _poll(self) -> None:
        pending = self._pending()
        version, value = self._current()
        at = time.monotonic() - self._started
        current_ok = logs_in(value)
        pending_ok = logs_in(pending[1]) if pending and not current_ok else None
        stable = True
        if not current_ok and not pending_ok:
            # The vault moved on under this poll (a promotion, the companion written or disabled): what
            # it holds now was not what was tried.
            again = self._pending()
            stable = self._current()[0] == version and (again and again[0]) == (pending and pending[0])
        self.polls.append(Poll(at, version, current_ok, pending_ok, stable))


def _target_points(world: PgWorld, rotator: Rotator) -> list[tuple[int, bool, str]]:
    """Every call to the target rotator in a clean rotation, to be crashed before and after it ran."""
    points: list[tuple[int, bool, str]] = []
    for after in (False, True):
        calls = _calls(world, rotator, after=after)
        points += [(i, after, call) for i, call in enumerate(calls, start=1) if call.startswith("target.")]
    return points


def _crash_and_retry(world: PgWorld, poller: LoginPoller, name: str, at: int, after: bool) -> None:
    with pytest.raises(Crash):
        world.rotate(name, Tripwire(at, after))
    poller.wait(3)  # consumers keep reading between the crash and the retry
    world.clock.advance(rotation.LEASE + timedelta(seconds=1))
    world.rotate(name)
    poller.wait(3)


def _crashed_and_retried(
    world: PgWorld, rotator: Rotator, points: list[tuple[int, bool, str]]
) -> Iterator[tuple[str, str, bool, LoginPoller]]:
    """For each crash point, a fresh secret's rotation crashed there and retried while a consumer polls:
    (where, the call, after it or not, the poller), once the rotation is done exactly once and the poller
    saw no error."""
    for at, after, call in points:
        case = world.new_case(rotator)
        with LoginPoller(world.emulator, case.name) as poller:
            _crash_and_retry(world, poller, case.name, at, after)
        where = f"crash {'after' if after else 'before'} {call}"
        world.assert_rotated_once(case.name, case.first)
        assert poller.errors == [], (where, poller.errors)
        yield where, call, after, poller


def test_alternating_users_the_current_credential_never_stops_working(world: PgWorld) -> None:
    rotator = Rotator.POSTGRES_ALTERNATING
    case = world.new_case(rotator)
    with LoginPoller(world.emulator, case.name) as poller:
        assert world.rotate(case.name).status == "rotated"
        poller.wait(3)
    world.assert_rotated_once(case.name, case.first)
    assert poller.errors == []
    assert poller.current_failures() == [], "a consumer could not log in during a clean rotation"
    assert len({p.current_version for p in poller.polls}) == 2  # it saw the old and the new version
    print(f"\nalternating, clean rotation: {len(poller.polls)} polls, 0 failed logins")

    points = _target_points(world, rotator)
    assert len(points) == 8, points  # tags, pending, set, test; before and after each
    for where, _, _, poller in _crashed_and_retried(world, rotator, points):
        assert poller.current_failures() == [], (where, poller.current_failures())
        assert len({p.current_version for p in poller.polls}) == 2, where  # it saw both versions


def _only_pending_windows(polls: list[Poll]) -> list[tuple[float, float]]:
    """Each run of polls at which only the pending value logged in: (at least, at most) how long it
    lasted — from its first to its last poll, and from the last poll before it at which the current
    value worked to the first one after."""
    windows: list[tuple[float, float]] = []
    run: list[int] = []
    for i, poll in enumerate([*polls, None]):
        if poll is not None and not poll.current_ok and poll.pending_ok:
            run.append(i)
            continue
        if run:
            before = polls[run[0] - 1].at if run[0] > 0 else polls[run[0]].at
            after = polls[run[-1] + 1].at if run[-1] + 1 < len(polls) else polls[run[-1]].at
            windows.append((polls[run[-1]].at - polls[run[0]].at, after - before))
            run = []
    return windows


def test_single_user_some_value_in_the_vault_always_logs_in(world: PgWorld) -> None:
    rotator = Rotator.POSTGRES_SINGLE_USER
    case = world.new_case(rotator)
    watch = Stopwatch()
    with LoginPoller(world.emulator, case.name) as poller:
        assert world.rotate(case.name, watch).status == "rotated"
        poller.wait(3)
    world.assert_rotated_once(case.name, case.first)
    assert poller.errors == []
    assert poller.failures() == [], "no value stored in Key Vault logged in"
    # From the rotator's side: the role's password changes inside target.set; the new version is current
    # once the promotion's set_value returned (the last vault.set_value).
    set_started = next(t for w, a, t in watch.times if w == "target.set" and not a)
    set_done = next(t for w, a, t in watch.times if w == "target.set" and a)
    promoted = [t for w, a, t in watch.times if w == "vault.set_value" and a][-1]
    windows = _only_pending_windows(poller.polls)
    longest = max(windows, default=(0.0, 0.0), key=lambda w: w[1])
    print(
        f"\nsingle user, clean rotation: {len(poller.polls)} polls; window in which only the pending value "
        f"logs in: instrumented {1000 * (promoted - set_done):.0f}-{1000 * (promoted - set_started):.0f} ms "
        f"(end of set / start of set to promotion); seen by the poller: "
        f"{len(windows)} window(s), longest {1000 * longest[0]:.0f}-{1000 * longest[1]:.0f} ms"
    )

    for where, call, after, poller in _crashed_and_retried(world, rotator, _target_points(world, rotator)):
        assert poller.failures() == [], (where, poller.failures())
        if call in {"target.test", "target.tags"} or (call == "target.set" and after):
            # The role's password changed before the crash: until the retry promotes it, consumers of
            # the current version cannot log in, and the poller saw the pending value as the one that can.
            assert any(p.pending_ok for p in poller.polls), (where, poller.polls)


# --- 3. after a rotation: the old credential, retirement ------------------------------------------------


def test_single_user_the_old_password_stops_working_and_the_previous_version_is_retired(
    world: PgWorld,
) -> None:
    case = world.new_case(Rotator.POSTGRES_SINGLE_USER)
    assert world.rotate(case.name).status == "rotated"
    world.assert_rotated_once(case.name, case.first)
    assert not logs_in(case.value)
    assert world.retire(case.name) == []  # within the grace: the vault keeps the version enabled

    world.clock.advance(GRACE + timedelta(seconds=1))
    assert world.retire(case.name) == [case.first]
    with pytest.raises(SecretDisabled):
        world.value(case.name, case.first)
    assert logs_in(world.value(case.name))


def test_alternating_both_roles_log_in_until_the_grace_ends_then_only_the_current_one(world: PgWorld) -> None:
    case = world.new_case(Rotator.POSTGRES_ALTERNATING)
    clone = f"{case.role.name}_clone"
    assert world.rotate(case.name).status == "rotated"
    world.assert_rotated_once(case.name, case.first)
    second = world.value(case.name)
    assert ConnectionDocument.parse(second).username == clone
    assert logs_in(case.value) and logs_in(second)
    assert world.retire(case.name) == []
    assert logs_in(case.value) and logs_in(second)

    world.clock.advance(GRACE + timedelta(seconds=1))
    assert world.retire(case.name) == [case.first]
    assert not logs_in(case.value), "the retired role still logs in with its old password"
    assert logs_in(second)
    with pytest.raises(SecretDisabled):
        world.value(case.name, case.first)

    # The next rotation takes the original role back; the clone keeps working until its grace ends.
    before = world.store.get_properties(case.name).version
    assert world.rotate(case.name, force=True).status == "rotated"
    third = world.value(case.name)
    assert ConnectionDocument.parse(third).username == case.role.name
    assert logs_in(second) and logs_in(third)
    world.clock.advance(GRACE + timedelta(seconds=1))
    assert world.retire(case.name) == [before]
    assert not logs_in(second) and logs_in(third)
    assert rolpassword(world.pg, clone) is not None  # scrambled, not dropped


# --- 4. confused deputies ---------------------------------------------------------------------------------


def _assert_refused(world: PgWorld, case: Case, outcome: rotation.RotationOutcome, step: str) -> None:
    """Failed on record at ``step``, no new version, the progress closed. (A pending value the refusal
    left enabled is offered to the target by the next rotation, and promoted only if it works there.)"""
    assert outcome.status == "failed", outcome
    assert outcome.reason.startswith(f"{step}: "), outcome.reason
    failures = [e for e in world.records(case.name, Action.ROTATION_FAILED) if e.result == Result.FAILURE]
    assert [(e.details.get("step"), e.details.get("error_class")) for e in failures] == [
        (step, "TargetRefused")
    ]
    assert [v.version for v in world.store.list_versions(case.name)] == [case.first]
    assert world.store.get_properties(case.name).version == case.first
    progress = world.states.get(rotation.PARTITION, case.name.lower())
    assert progress is not None and progress.state["step"] == "idle"
    assert [e for e in world.records(case.name, Action.ROTATED) if e.result == Result.SUCCESS] == []


@pytest.mark.parametrize("rotator", ROTATORS)
def test_a_document_whose_password_is_not_the_roles_is_refused(world: PgWorld, rotator: Rotator) -> None:
    role = create_role(world.pg, f"{world.prefix}_{uuid.uuid4().hex[:10]}")
    before = rolpassword(world.pg, role.name)
    wrong = world.document(Role(role.name, "not-" + role.password)).to_json()
    case = world.new_case(rotator, role, wrong)

    outcome = world.rotate(case.name)

    _assert_refused(world, case, outcome, "set")
    assert "does not log in as role" in outcome.reason
    assert rolpassword(world.pg, role.name) == before
    assert login(world.document(role))  # the role's real password still works
    assert rolpassword(world.pg, f"{role.name}_clone") is None


@pytest.mark.parametrize("rotator", ROTATORS)
def test_a_role_that_logs_in_as_another_is_refused_end_to_end(world: PgWorld, rotator: Rotator) -> None:
    # The document names the deputy, whose login switches to the victim: ALTER ROLE CURRENT_USER would
    # change the victim's password.
    victim = create_role(world.pg, f"{world.prefix}_{uuid.uuid4().hex[:8]}_v")
    deputy = create_role(world.pg, f"{world.prefix}_{uuid.uuid4().hex[:8]}_d")
    world.pg.admin_execute(
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(victim.name), sql.Identifier(deputy.name))
    )
    world.pg.admin_execute(
        sql.SQL("ALTER ROLE {} SET role = {}").format(sql.Identifier(deputy.name), sql.Literal(victim.name))
    )
    before = {r.name: rolpassword(world.pg, r.name) for r in (victim, deputy)}
    case = world.new_case(rotator, deputy)

    outcome = world.rotate(case.name)

    _assert_refused(world, case, outcome, "set")
    assert f"logs in as role {victim.name}, not {deputy.name}" in outcome.reason
    assert {name: rolpassword(world.pg, name) for name in before} == before
    assert world.pg.can_login(victim.name, victim.password)
    assert world.pg.can_login(deputy.name, deputy.password)
    assert rolpassword(world.pg, f"{deputy.name}_clone") is None


@pytest.mark.parametrize("rotator", ROTATORS)
def test_a_companion_seeded_by_someone_else_is_refused(world: PgWorld, rotator: Rotator) -> None:
    case = world.new_case(rotator)
    before = rolpassword(world.pg, case.role.name)
    admin_before = rolpassword(world.pg, f"{world.prefix}_admin")
    # Someone who may write to the vault plants a value under the companion's name (without the tag
    # that makes it this secret's companion), naming the admin role with a password they know.
    planted = ConnectionDocument.parse(case.value).with_login(f"{world.prefix}_admin", "planted").to_json()
    companion = pending_secret_name(case.name)
    world.container.secret_client.set_secret(companion, planted, content_type=CONNECTION_CONTENT_TYPE)

    outcome = world.rotate(case.name)

    _assert_refused(world, case, outcome, "pending")
    assert rolpassword(world.pg, case.role.name) == before
    assert rolpassword(world.pg, f"{world.prefix}_admin") == admin_before
    assert login(world.document(case.role))
    assert rolpassword(world.pg, f"{case.role.name}_clone") is None
    assert world.value(companion) == planted  # not the service's: left as it is, never used


# --- 5. another write takes a dead rotation's lease over ---------------------------------------------------
#
# A rotation that died after the target's set, once its lease ran out, must not lose its progress row to
# another write of the same secret: the sweep's retirement of an earlier version (it runs right after
# ``resume_stale`` queued the resumption), or an operator's policy change. Both wait (Busy) until the
# rotation is resumed; what follows must leave a current value that logs in.

INTERLOPERS = ("retirement", "policy change")


def _sweep_after_a_takeover(world: PgWorld, case: Case, interloper: str) -> rotation.RotationOutcome:
    """Crash a rotation after the target's set, let its lease run out, let ``interloper`` write, then
    run what the sweep does next; returns the outcome of the request it queued."""
    at = _calls(world, case.rotator, after=True).index("target.set") + 1
    peers = world.peers()  # the sweep's and the operator's: no tripwire
    peers.requests = requests = RecordingRotationRequests()
    if interloper == "retirement":
        # A manual rotation within the grace of the previous version dies; the hourly sweep requests its
        # resumption, then retires that previous version.
        assert world.rotate(case.name).status == "rotated"
        with pytest.raises(Crash):
            world.rotate(case.name, Tripwire(at, after=True), force=True)
        world.clock.advance(GRACE + timedelta(seconds=1))  # the lease (15 min) ran out too
        assert peers.resume_stale("sweep") == [case.name.lower()]
        with contextlib.suppress(Conflict):  # waiting for the dead rotation would be fine too
            assert world.retire(case.name) == [case.first]
    else:
        # A due rotation dies; before the sweep resumes it, an operator changes the secret's owner.
        with pytest.raises(Crash):
            world.rotate(case.name, Tripwire(at, after=True))
        world.clock.advance(rotation.LEASE + timedelta(seconds=1))
        policy = world.policy(case.rotator)
        fields = PolicyInput(
            kind=None,
            rotation_interval_days=30,
            owner="dispatch-team",
            rotator=policy.rotator.value,
            rotation_target=policy.target,
            rotation_grace_hours=1,
        )
        with contextlib.suppress(Conflict):  # refusing while a dead rotation is pending would be fine too
            peers.apply_policy(case.name, fields, actor=Actor("operator", ActorType.USER))
        resumed = peers.resume_stale("sweep")
        if not resumed:  # the row is gone: the sweep's due request is what comes next
            requests.send(
                [
                    RotationRequest(
                        secret_name=case.name,
                        reason=RotationReason.DUE,
                        requested_at=world.clock.now(),
                        correlation_id="sweep",
                    )
                ]
            )
    return peers.rotate_requested(requests.sent[0])


@pytest.mark.parametrize(
    ("rotator", "interloper"),
    [
        *[(Rotator.POSTGRES_SINGLE_USER, i) for i in INTERLOPERS],
        *[(Rotator.POSTGRES_ALTERNATING, i) for i in INTERLOPERS],
    ],
)
def test_a_write_that_takes_a_dead_rotations_lease_over_leaves_a_working_current_value(
    world: PgWorld, rotator: Rotator, interloper: str
) -> None:
    case = world.new_case(rotator)

    outcome = _sweep_after_a_takeover(world, case, interloper)

    print(f"\n{rotator.value}, {interloper}: the sweep's request {outcome.status} ({outcome.reason})")
    works = logs_in(world.value(case.name))
    assert works, (
        f"{interloper}: the current version does not log in; the request {outcome.status}: {outcome.reason}"
    )
