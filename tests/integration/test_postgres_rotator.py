"""The PostgreSQL target rotators against a real cluster (devtools.postgres), with real SCRAM logins.

The admin credential is read from the in-memory secret store; the full rotation through the Key Vault
emulator is tested elsewhere. Every role is new per test (unique names), so tests share one cluster.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from psycopg import sql

from devtools.postgres import PostgresProcess
from shared.adapters.postgres import PostgresError, PostgresRotator
from shared.domain.errors import DependencyUnavailable
from shared.domain.targets import ConnectionDocument, TargetRefused, TargetSecret
from tests.fakes import InMemorySecretStore
from tests.waiting import eventually

ADMIN_SECRET = "pg-admin"


@dataclass
class Role:
    name: str
    password: str


@pytest.fixture
def store() -> InMemorySecretStore:
    return InMemorySecretStore()


@pytest.fixture
def prefix() -> str:
    return f"r{uuid.uuid4().hex[:8]}"


def create_role(pg: PostgresProcess, name: str, *attributes: str) -> Role:
    """A role with a random password and the given attributes (LOGIN by default). The password is sent
    as a SCRAM verifier, as the rotator does, so the server log never sees it."""
    password = secrets.token_urlsafe(18)
    keywords = sql.SQL(" ").join(sql.SQL(word) for word in attributes or ("LOGIN",))  # type: ignore[arg-type]
    with pg.connect() as conn:
        verifier = conn.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256")
        conn.execute(
            sql.SQL("CREATE ROLE {} WITH {} PASSWORD {}").format(
                sql.Identifier(name), keywords, sql.Literal(verifier.decode())
            )
        )
    return Role(name, password)


def document(pg: PostgresProcess, role: Role, *, port: int | None = None, **extra: object) -> str:
    return json.dumps(
        {
            "host": pg.host,
            "port": port or pg.port,
            "dbname": "postgres",
            "username": role.name,
            "password": role.password,
            "sslmode": "disable",
            **extra,
        }
    )


def secret(current: str, target: str | None = None, *, resumed: bool = False) -> TargetSecret:
    return TargetSecret(
        name="orders-db", rotation_id="rot-1", target=target, current=current, resumed=resumed
    )


def rolpassword(pg: PostgresProcess, role: str) -> str | None:
    rows = pg.admin_execute(sql.SQL("SELECT rolpassword FROM pg_authid WHERE rolname = %s"), [role])
    return rows[0][0] if rows else None


def logs_in(pg: PostgresProcess, value: str) -> bool:
    doc = ConnectionDocument.parse(value)
    return pg.can_login(doc.username, doc.password, dbname=doc.dbname)


def assert_safe(err: BaseException, *passwords: str) -> None:
    """Neither the error nor anything chained to it carries a password, and no psycopg error (whose
    ``pgconn`` keeps the attempted password) is reachable from it."""
    seen: BaseException | None = err
    while seen is not None:
        assert not type(seen).__module__.startswith("psycopg")
        for text in (str(seen), repr(seen), repr(vars(seen))):
            for password in passwords:
                assert password not in text
        seen = seen.__cause__ or seen.__context__


@pytest.fixture
def admin(postgres: PostgresProcess, store: InMemorySecretStore, prefix: str) -> Role:
    role = create_role(postgres, f"{prefix}_admin", "LOGIN", "CREATEROLE")
    store.set_value(ADMIN_SECRET, document(postgres, role), content_type="application/json", tags={})
    return role


@pytest.fixture
def shared_table(postgres: PostgresProcess, prefix: str) -> Iterator[str]:
    table = f"{prefix}_orders"
    postgres.admin_execute(sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(table)))
    postgres.admin_execute(sql.SQL("INSERT INTO {} VALUES (42)").format(sql.Identifier(table)))
    yield table
    postgres.admin_execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))


# --- single user --------------------------------------------------------------------------------------


def test_single_user_rotation_changes_the_password_as_scram(
    postgres: PostgresProcess, store: InMemorySecretStore, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_role(postgres, f"{prefix}_app")
    current = document(postgres, app, application="orders")
    rotator = PostgresRotator(store, alternating=False)
    generated = secrets.token_urlsafe(24)

    pending = rotator.pending(secret(current), generated)
    doc = ConnectionDocument.parse(pending)
    assert (doc.username, doc.password, doc.extra) == (app.name, generated, {"application": "orders"})
    assert rotator.tags(secret(current)) == {}
    rotator.set(secret(current), pending)
    rotator.test(secret(current), pending)

    assert logs_in(postgres, pending)
    assert not logs_in(postgres, current)
    assert (rolpassword(postgres, app.name) or "").startswith("SCRAM-SHA-256$")
    rotator.finish(secret(pending), current)  # single user: nothing left to do
    assert logs_in(postgres, pending)
    # Only verifiers reached the server: its statement log never saw a password, nor did our logs.
    server_log = postgres.log_file.read_text(encoding="utf-8", errors="replace")
    assert "ALTER ROLE CURRENT_USER WITH PASSWORD 'SCRAM-SHA-256$" in server_log
    for password in (generated, app.password):
        assert password not in server_log
        assert password not in caplog.text


def test_single_user_set_twice_changes_nothing_the_second_time(
    postgres: PostgresProcess, store: InMemorySecretStore, prefix: str
) -> None:
    app = create_role(postgres, f"{prefix}_app")
    current = document(postgres, app)
    rotator = PostgresRotator(store, alternating=False)
    pending = rotator.pending(secret(current), secrets.token_urlsafe(24))
    rotator.set(secret(current), pending)
    verifier = rolpassword(postgres, app.name)

    # A crash after set: the retry (the pending value stored earlier) finds the password working.
    rotator.set(secret(current, resumed=True), pending)

    assert rolpassword(postgres, app.name) == verifier
    rotator.test(secret(current), pending)


def test_a_value_made_just_now_is_not_tried_before_it_is_set(
    postgres: PostgresProcess, store: InMemorySecretStore, prefix: str
) -> None:
    """No login bound to fail (and to trip alerting on failed logins) for a value the server cannot have."""
    app = create_role(postgres, f"{prefix}_app")
    current = document(postgres, app)
    rotator = PostgresRotator(store, alternating=False)
    pending = rotator.pending(secret(current), secrets.token_urlsafe(24))
    failures = postgres.log_file.read_text(errors="replace").count("password authentication failed")
    rotator.set(secret(current), pending)
    assert postgres.log_file.read_text(errors="replace").count("password authentication failed") == failures


def test_a_role_that_logs_in_as_another_is_refused(
    postgres: PostgresProcess, store: InMemorySecretStore, prefix: str
) -> None:
    # The document names role A, but A's login switches to role B: changing CURRENT_USER's password
    # would change B's. The confused-deputy check refuses before anything is changed.
    victim = create_role(postgres, f"{prefix}_victim")
    deputy = create_role(postgres, f"{prefix}_deputy")
    postgres.admin_execute(
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(victim.name), sql.Identifier(deputy.name))
    )
    postgres.admin_execute(
        sql.SQL("ALTER ROLE {} SET role = {}").format(sql.Identifier(deputy.name), sql.Literal(victim.name))
    )
    current = document(postgres, deputy)
    rotator = PostgresRotator(store, alternating=False)
    pending = rotator.pending(secret(current), secrets.token_urlsafe(24))
    before = {role: rolpassword(postgres, role) for role in (victim.name, deputy.name)}

    with pytest.raises(TargetRefused) as err:
        rotator.set(secret(current), pending)

    assert err.value.step == "set"
    assert f"logs in as role {victim.name}, not {deputy.name}" in str(err.value)
    assert {role: rolpassword(postgres, role) for role in before} == before
    assert_safe(err.value, deputy.password, ConnectionDocument.parse(pending).password)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"port": 1}, "another server"),
        ({"host": "db.example.com"}, "another server"),
        ({"dbname": "template1"}, "another database"),
        ({"username": "postgres"}, "names role postgres"),
    ],
)
def test_a_forged_pending_value_is_refused_and_changes_nothing(
    postgres: PostgresProcess, store: InMemorySecretStore, prefix: str, change: dict[str, object], reason: str
) -> None:
    app = create_role(postgres, f"{prefix}_app")
    current = document(postgres, app)
    rotator = PostgresRotator(store, alternating=False)
    forged = json.loads(rotator.pending(secret(current), secrets.token_urlsafe(24))) | change
    before = rolpassword(postgres, app.name)

    for step in (rotator.set, rotator.test):
        with pytest.raises(TargetRefused) as err:
            step(secret(current), json.dumps(forged))
        assert reason in err.value.reason

    assert rolpassword(postgres, app.name) == before
    assert logs_in(postgres, current)


def test_a_current_password_that_does_not_log_in_is_refused(
    postgres: PostgresProcess, store: InMemorySecretStore, prefix: str
) -> None:
    app = create_role(postgres, f"{prefix}_app")
    wrong = Role(app.name, secrets.token_urlsafe(18))
    current = document(postgres, wrong)
    rotator = PostgresRotator(store, alternating=False)
    pending = rotator.pending(secret(current), secrets.token_urlsafe(24))
    before = rolpassword(postgres, app.name)

    with pytest.raises(TargetRefused) as err:
        rotator.set(secret(current), pending)

    assert err.value.step == "set"
    assert err.value.reason.startswith(f"the current credential does not log in as role {app.name}")
    assert rolpassword(postgres, app.name) == before
    assert_safe(err.value, wrong.password, app.password, ConnectionDocument.parse(pending).password)


def test_a_pending_value_not_yet_accepted_fails_the_test_step_transiently(
    postgres: PostgresProcess, store: InMemorySecretStore, prefix: str
) -> None:
    app = create_role(postgres, f"{prefix}_app")
    current = document(postgres, app)
    rotator = PostgresRotator(store, alternating=False)
    pending = rotator.pending(secret(current), secrets.token_urlsafe(24))

    with pytest.raises(DependencyUnavailable) as err:
        rotator.test(secret(current), pending)  # set never ran

    assert err.value.dependency == "postgres"
    assert f"does not accept the pending credential of role {app.name}" in err.value.detail
    assert_safe(err.value, app.password, ConnectionDocument.parse(pending).password)


def test_a_value_that_is_not_a_document_is_refused(store: InMemorySecretStore) -> None:
    rotator = PostgresRotator(store, alternating=True)
    with pytest.raises(TargetRefused) as err:
        rotator.pending(secret('{"host": "db", "password": "hunter2-secret'), "new")
    assert err.value.step == "pending"
    assert_safe(err.value, "hunter2-secret")
    too_long = json.dumps({"host": "db", "dbname": "d", "username": "u" * 60, "password": "p"})
    with pytest.raises(TargetRefused, match="for a clone"):
        rotator.pending(secret(too_long), "new")


# --- alternating --------------------------------------------------------------------------------------


def test_alternating_rotations_take_turns_between_the_role_and_its_clone(
    postgres: PostgresProcess, store: InMemorySecretStore, prefix: str, admin: Role, shared_table: str
) -> None:
    app = create_role(postgres, f"{prefix}_app")
    clone = f"{app.name}_clone"
    postgres.admin_execute(
        sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(shared_table), sql.Identifier(app.name))
    )
    postgres.admin_execute(sql.SQL("ALTER ROLE {} SET search_path = '$user', public, 'Odd Schema'")
                           .format(sql.Identifier(app.name)))  # fmt: skip
    postgres.admin_execute(
        sql.SQL("ALTER ROLE {} IN DATABASE postgres SET statement_timeout = '5s'").format(
            sql.Identifier(app.name)
        )
    )
    rotator = PostgresRotator(store, alternating=True)
    first = document(postgres, app)

    # Rotation 1: the clone is created, a member of the role, with its settings.
    second = rotator.pending(secret(first, ADMIN_SECRET), secrets.token_urlsafe(24))
    assert ConnectionDocument.parse(second).username == clone
    rotator.set(secret(first, ADMIN_SECRET), second)
    rotator.test(secret(first, ADMIN_SECRET), second)
    assert logs_in(postgres, first) and logs_in(postgres, second)
    assert (rolpassword(postgres, clone) or "").startswith("SCRAM-SHA-256$")
    member = postgres.admin_execute(
        sql.SQL("SELECT pg_has_role(%s, %s, 'MEMBER'), has_table_privilege(%s, %s, 'SELECT')"),
        [clone, app.name, clone, shared_table],
    )
    assert member == [(True, True)]
    doc = ConnectionDocument.parse(second)
    with postgres.connect(user=clone, password=doc.password) as conn:
        row = conn.execute(sql.SQL("SELECT id FROM {}").format(sql.Identifier(shared_table))).fetchone()
        assert row == (42,)
        settings = conn.execute("SELECT current_setting('search_path'), current_setting('statement_timeout')")
        assert settings.fetchone() == ('"$user", public, "Odd Schema"', "5s")
    verifier = rolpassword(postgres, clone)
    rotator.set(secret(first, ADMIN_SECRET, resumed=True), second)  # re-run: nothing changes
    assert rolpassword(postgres, clone) == verifier

    # The grace of the first value ends: the role is scrambled, its clone (now current) still logs in.
    rotator.finish(secret(second, ADMIN_SECRET), first)
    assert not logs_in(postgres, first)
    assert logs_in(postgres, second)

    # Rotation 2, from the clone's document: the original role gets a new password.
    third = rotator.pending(secret(second, ADMIN_SECRET), secrets.token_urlsafe(24))
    assert ConnectionDocument.parse(third).username == app.name
    rotator.set(secret(second, ADMIN_SECRET), third)
    rotator.test(secret(second, ADMIN_SECRET), third)
    assert logs_in(postgres, third) and logs_in(postgres, second)
    rotator.finish(secret(third, ADMIN_SECRET), second)
    assert not logs_in(postgres, second)
    assert logs_in(postgres, third)
    assert rolpassword(postgres, clone) is not None  # scrambled, not dropped


def test_finish_leaves_the_current_role_and_a_missing_role_alone(
    postgres: PostgresProcess, store: InMemorySecretStore, prefix: str, admin: Role
) -> None:
    app = create_role(postgres, f"{prefix}_app")
    current = document(postgres, app)
    rotator = PostgresRotator(store, alternating=True)
    before = rolpassword(postgres, app.name)
    older = json.dumps(json.loads(current) | {"password": "an-older-password"})

    rotator.finish(secret(current, ADMIN_SECRET), older)  # same role: the current value still needs it
    never_created = json.dumps(json.loads(current) | {"username": f"{app.name}_clone"})
    rotator.finish(secret(current, ADMIN_SECRET), never_created)

    assert rolpassword(postgres, app.name) == before
    assert logs_in(postgres, current)
    unrelated = json.dumps(json.loads(current) | {"username": admin.name})
    with pytest.raises(TargetRefused, match="is not the alternate"):
        rotator.finish(secret(current, ADMIN_SECRET), unrelated)


def test_an_admin_credential_naming_another_server_is_refused(
    postgres: PostgresProcess, store: InMemorySecretStore, prefix: str, admin: Role
) -> None:
    store.set_value(ADMIN_SECRET, document(postgres, admin, port=1), content_type="application/json", tags={})
    app = create_role(postgres, f"{prefix}_app")
    current = document(postgres, app)
    rotator = PostgresRotator(store, alternating=True)
    pending = rotator.pending(secret(current, ADMIN_SECRET), secrets.token_urlsafe(24))

    with pytest.raises(TargetRefused, match="another server"):
        rotator.set(secret(current, ADMIN_SECRET), pending)

    assert rolpassword(postgres, f"{app.name}_clone") is None


def test_a_missing_or_unusable_admin_credential_is_refused(
    postgres: PostgresProcess, store: InMemorySecretStore, prefix: str
) -> None:
    app = create_role(postgres, f"{prefix}_app")
    current = document(postgres, app)
    rotator = PostgresRotator(store, alternating=True)
    pending = rotator.pending(secret(current, ADMIN_SECRET), secrets.token_urlsafe(24))

    with pytest.raises(TargetRefused, match=f"secret {ADMIN_SECRET} does not exist"):
        rotator.set(secret(current, ADMIN_SECRET), pending)
    with pytest.raises(TargetRefused, match="names the admin"):
        rotator.set(secret(current, None), pending)
    store.set_value(ADMIN_SECRET, "not json", content_type="application/json", tags={})
    with pytest.raises(TargetRefused, match=f"secret {ADMIN_SECRET} is no connection document$"):
        rotator.set(secret(current, ADMIN_SECRET), pending)  # another secret's value: its shape untold
    outsider = create_role(postgres, f"{prefix}_outsider")
    outsider_doc = document(postgres, Role(outsider.name, "wrong-password"))
    store.set_value(ADMIN_SECRET, outsider_doc, content_type="application/json", tags={})
    with pytest.raises(TargetRefused, match=r"admin credential .*does not log in") as err:
        rotator.set(secret(current, ADMIN_SECRET), pending)
    assert_safe(err.value, "wrong-password", app.password)
    assert rolpassword(postgres, f"{app.name}_clone") is None


def test_the_admin_role_is_never_the_role_changed(
    postgres: PostgresProcess, store: InMemorySecretStore, prefix: str
) -> None:
    # The admin happens to be the app role's alternate: a pending for it would take the admin over.
    app = create_role(postgres, f"{prefix}_ops")
    admin = create_role(postgres, f"{prefix}_ops_clone", "LOGIN", "CREATEROLE")
    store.set_value(ADMIN_SECRET, document(postgres, admin), content_type="application/json", tags={})
    current = document(postgres, app)
    rotator = PostgresRotator(store, alternating=True)
    pending = rotator.pending(secret(current, ADMIN_SECRET), secrets.token_urlsafe(24))
    before = rolpassword(postgres, admin.name)

    with pytest.raises(TargetRefused, match="is the admin's own role"):
        rotator.set(secret(current, ADMIN_SECRET), pending)
    with pytest.raises(TargetRefused, match="is the admin's own role"):
        rotator.finish(secret(current, ADMIN_SECRET), pending)

    assert rolpassword(postgres, admin.name) == before


def test_a_superuser_is_never_the_role_changed(
    postgres: PostgresProcess, store: InMemorySecretStore, prefix: str, admin: Role
) -> None:
    boss = create_role(postgres, f"{prefix}_boss", "LOGIN", "SUPERUSER")
    clone = create_role(postgres, f"{prefix}_boss_clone")
    current = document(postgres, clone)
    rotator = PostgresRotator(store, alternating=True)
    pending = rotator.pending(secret(current, ADMIN_SECRET), secrets.token_urlsafe(24))
    assert ConnectionDocument.parse(pending).username == boss.name

    with pytest.raises(TargetRefused, match="is a superuser"):
        rotator.set(secret(current, ADMIN_SECRET), pending)
    with pytest.raises(TargetRefused, match="is a superuser"):
        rotator.finish(secret(current, ADMIN_SECRET), document(postgres, boss))

    assert logs_in(postgres, document(postgres, boss))


def test_a_clone_whose_original_role_is_gone_is_refused(
    postgres: PostgresProcess, store: InMemorySecretStore, prefix: str, admin: Role
) -> None:
    orphan = create_role(postgres, f"{prefix}_gone_clone")
    current = document(postgres, orphan)
    rotator = PostgresRotator(store, alternating=True)
    pending = rotator.pending(secret(current, ADMIN_SECRET), secrets.token_urlsafe(24))

    with pytest.raises(TargetRefused, match=f"role {prefix}_gone does not exist"):
        rotator.set(secret(current, ADMIN_SECRET), pending)


def test_an_admin_without_the_privilege_is_refused(
    postgres: PostgresProcess, store: InMemorySecretStore, prefix: str
) -> None:
    weak = create_role(postgres, f"{prefix}_weak")  # no CREATEROLE
    store.set_value(ADMIN_SECRET, document(postgres, weak), content_type="application/json", tags={})
    app = create_role(postgres, f"{prefix}_app")
    current = document(postgres, app)
    rotator = PostgresRotator(store, alternating=True)
    pending = rotator.pending(secret(current, ADMIN_SECRET), secrets.token_urlsafe(24))

    with pytest.raises(TargetRefused, match="permission denied") as err:
        rotator.set(secret(current, ADMIN_SECRET), pending)

    assert isinstance(err.value.__cause__, PostgresError)
    assert err.value.__cause__.sqlstate == "42501"
    assert_safe(err.value, weak.password, app.password, ConnectionDocument.parse(pending).password)
    assert rolpassword(postgres, f"{app.name}_clone") is None


# --- transient ----------------------------------------------------------------------------------------


def test_a_server_that_does_not_answer_is_transient(
    postgres: PostgresProcess, store: InMemorySecretStore, prefix: str
) -> None:
    with socket.socket() as probe:  # a port nothing listens on any more
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    app = Role(f"{prefix}_app", secrets.token_urlsafe(18))
    current = document(postgres, app, port=closed)
    rotator = PostgresRotator(store, alternating=False)
    pending = rotator.pending(secret(current), secrets.token_urlsafe(24))

    for step in (rotator.set, rotator.test):
        with pytest.raises(DependencyUnavailable) as err:
            step(secret(current), pending)
        assert err.value.detail == f"127.0.0.1:{closed} did not answer"
        assert_safe(err.value, app.password, ConnectionDocument.parse(pending).password)

    with socket.socket() as silent:  # accepts connections, never answers: the connect timeout
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        current = document(postgres, app, port=silent.getsockname()[1])
        pending = rotator.pending(secret(current), secrets.token_urlsafe(24))
        with pytest.raises(DependencyUnavailable, match="did not answer"):
            PostgresRotator(store, alternating=False, connect_timeout=1).set(secret(current), pending)


def test_a_clone_created_concurrently_gets_the_pending_password(
    postgres: PostgresProcess, store: InMemorySecretStore, prefix: str, admin: Role
) -> None:
    # Another run's CREATE ROLE of the same clone is in flight (not committed): this run's CREATE ROLE
    # waits for it, then finds the role taken, and sets the password instead.
    app = create_role(postgres, f"{prefix}_app")
    clone = f"{app.name}_clone"
    current = document(postgres, app)
    rotator = PostgresRotator(store, alternating=True)
    pending = rotator.pending(secret(current, ADMIN_SECRET), secrets.token_urlsafe(24))
    errors: list[BaseException] = []

    def run_set() -> None:
        try:
            rotator.set(secret(current, ADMIN_SECRET), pending)
        except BaseException as err:
            errors.append(err)

    with postgres.connect() as other:
        other.execute("BEGIN")
        other.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                sql.Identifier(clone),
                sql.Literal("SCRAM-SHA-256$4096:c2FsdA==$eA==:eA=="),
                sql.Identifier(app.name),
            )
        )
        worker = threading.Thread(target=run_set)
        worker.start()
        locked = sql.SQL(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'secret-lifecycle'"
            " AND wait_event_type = 'Lock'"
        )
        waiting, _ = eventually(
            lambda: (postgres.admin_execute(locked), worker.is_alive()),
            "the rotator to wait on the concurrent CREATE ROLE's lock (waiting, rotator alive)",
            timeout=10,
            interval=0.02,
            until=lambda seen: seen[0] or not seen[1],
        )
        assert waiting, "the rotator never waited for the concurrent CREATE ROLE"
        other.execute("COMMIT")
        worker.join(timeout=10)

    assert errors == []
    assert logs_in(postgres, pending)


def test_a_clone_that_is_not_a_member_of_its_original_is_not_its_pair(
    postgres: PostgresProcess, store: InMemorySecretStore, prefix: str, admin: Role
) -> None:
    """Names alone do not make a pair: an unrelated role the admin also manages, named like a clone, is
    never changed."""
    app = create_role(postgres, f"{prefix}_app")
    impostor = create_role(postgres, f"{app.name}_clone")  # not IN ROLE app
    before = rolpassword(postgres, impostor.name)
    rotator = PostgresRotator(store, alternating=True)
    current = document(postgres, app)
    pending = rotator.pending(secret(current, ADMIN_SECRET), secrets.token_urlsafe(24))
    with pytest.raises(TargetRefused, match="not a member"):
        rotator.set(secret(current, ADMIN_SECRET), pending)
    assert rolpassword(postgres, impostor.name) == before and logs_in(postgres, document(postgres, impostor))


def test_finish_of_a_value_that_is_no_document_does_nothing(
    postgres: PostgresProcess, store: InMemorySecretStore, prefix: str, admin: Role
) -> None:
    """A version from before the secret had this rotator (a key-vault value): no role to scramble, and the
    retirement goes on."""
    app = create_role(postgres, f"{prefix}_app")
    current = document(postgres, app)
    before = rolpassword(postgres, app.name)
    PostgresRotator(store, alternating=True).finish(secret(current, ADMIN_SECRET), "sk_an-old-api-key")
    assert rolpassword(postgres, app.name) == before


class CountingStore(InMemorySecretStore):
    def __init__(self) -> None:
        super().__init__()
        self.read: list[str] = []

    def get_value(self, name: str, version: str | None = None) -> Any:
        self.read.append(name.lower())
        return super().get_value(name, version)


@pytest.mark.parametrize("target", ["audit-hmac-key", "fleet-anchor", "slc-webhook-" + "b" * 40, "ORDERS-DB"])
def test_the_service_s_own_secrets_and_the_secret_itself_are_never_read_as_an_admin_credential(
    postgres: PostgresProcess, prefix: str, target: str
) -> None:
    store = CountingStore()
    store.set_value(target, '{"host": "x"}', content_type="application/json", tags={})
    app = create_role(postgres, f"{prefix}_app")
    current = document(postgres, app)
    rotator = PostgresRotator(store, alternating=True, reserved=("fleet-anchor",))
    pending = rotator.pending(secret(current, target), secrets.token_urlsafe(24))
    with pytest.raises(TargetRefused, match="service's own secret or this one") as err:
        rotator.set(secret(current, target), pending)
    assert store.read == [] and "host" not in str(err.value)
    retired = document(postgres, create_role(postgres, f"{prefix}_app_clone"))
    with pytest.raises(TargetRefused, match="service's own secret or this one"):
        rotator.finish(secret(current, target), retired)
    assert store.read == []
