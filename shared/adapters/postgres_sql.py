"""What the PostgreSQL rotators say to a server, and how they read its answers: failed connections and
statements classified (``PostgresError``: auth, refused, transient, never chaining psycopg's own error,
which can hold the attempted password), identity and membership checks, SCRAM verifiers, and copying a
role's settings to its clone. See shared/adapters/postgres.py."""

from __future__ import annotations

import re
from typing import Literal, NoReturn, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from shared.domain.errors import DomainError
from shared.domain.targets import (
    ConnectionDocument,
    TargetRefused,
    alternate_role,
)

DEPENDENCY = "postgres"
APPLICATION_NAME = "secret-lifecycle"

T = TypeVar("T")
Connection = psycopg.Connection[TupleRow]
Kind = Literal["auth", "refused", "transient"]

# What a failed connection attempt means. psycopg 3.3 sets no SQLSTATE on a connection error (libpq
# reports the server's FATAL message as text only), so the libpq message is matched (servers answer in
# English unless lc_messages says otherwise). Anything not listed is transient.
CONNECT_FAILURES: tuple[tuple[re.Pattern[str], str, Kind, str], ...] = (
    (re.compile(r"password authentication failed"), "28P01", "auth", "wrong password or unknown role"),
    (re.compile(r"no password supplied"), "28P01", "auth", "no password"),
    (re.compile(r"authentication failed"), "28P01", "auth", "authentication failed"),
    (re.compile(r"no pg_hba\.conf entry"), "28000", "auth", "no pg_hba.conf entry allows it"),
    (re.compile(r"is not permitted to log in"), "28000", "auth", "the role may not log in"),
    (re.compile(r'role ".*" does not exist'), "28000", "auth", "the role does not exist"),
    (re.compile(r'database ".*" does not exist'), "3D000", "refused", "the database does not exist"),
    (re.compile(r"permission denied"), "42501", "refused", "permission denied"),
    (re.compile(r"SSL was required|SSL is not enabled|does not support SSL"), "08P01", "refused",
     "TLS as sslmode requires is not available"),
)  # fmt: skip
# SQLSTATE classes that are worth a retry: connection exception, insufficient resources, operator
# intervention (shutdown, starting up), system error.
TRANSIENT_CLASSES = frozenset({"08", "53", "57", "58"})
AUTH_STATES = frozenset({"28000", "28P01"})
# Settings whose stored form is a list of quoted identifiers ("$user", public): each element is passed
# as its own literal, or the list would become one element.
LIST_SETTINGS = frozenset(
    {"search_path", "temp_tablespaces", "local_preload_libraries", "session_preload_libraries"}
)


class PostgresError(Exception):
    """A psycopg error reduced to what is safe to keep and show: its class, SQLSTATE, and a reason from
    a fixed list (never the server's text). The cause chained to the domain errors raised here."""

    def __init__(self, kind: Kind, driver_class: str, sqlstate: str | None, reason: str) -> None:
        state = f" (SQLSTATE {sqlstate})" if sqlstate else ""
        super().__init__(f"{driver_class}{state}: {reason}")
        self.kind: Kind = kind
        self.sqlstate = sqlstate
        self.reason = reason

    @classmethod
    def of(cls, err: psycopg.Error) -> PostgresError:
        name = type(err).__name__
        if isinstance(err, psycopg.errors.ConnectionTimeout):
            return cls("transient", name, None, "no answer within the connect timeout")
        state = err.sqlstate
        if state is None and isinstance(err, psycopg.OperationalError):
            # Connection errors carry libpq's text only; the server's FATAL message is in it.
            message = str(err)
            for pattern, code, kind, reason in CONNECT_FAILURES:
                if pattern.search(message):
                    return cls(kind, name, code, reason)
        if state in AUTH_STATES:
            return cls("auth", name, state, "authentication failed")
        if state == "42501":
            return cls("refused", name, state, "permission denied")
        if state is None:
            if isinstance(err, psycopg.OperationalError | psycopg.InterfaceError):
                return cls("transient", name, None, "connection failed")
            return cls("refused", name, None, "driver error")
        if state[:2] in TRANSIENT_CLASSES:
            return cls("transient", name, state, "the server did not complete the request")
        return cls("refused", name, state, f"the server refused the statement (SQLSTATE {state})")


def raise_from(error: DomainError, cause: PostgresError) -> NoReturn:
    raise error from cause


def where(doc: ConnectionDocument) -> str:
    return f"{doc.host}:{doc.port}"


def parse_document(step: str, value: str, what: str) -> ConnectionDocument:
    try:
        return ConnectionDocument.parse(value)
    except ValueError as err:
        reason = str(err)
    # Not chained, not even as context: the parse error's own context (json's JSONDecodeError) keeps
    # the whole text in ``doc``, and the text is a secret value.
    raise TargetRefused(step, f"{what}: {reason}")


def alternate(step: str, username: str) -> str:
    try:
        return alternate_role(username)
    except ValueError as err:
        raise TargetRefused(step, str(err)) from err


def does_not_log_in(step: str, doc: ConnectionDocument, who: str, failure: PostgresError) -> TargetRefused:
    return TargetRefused(
        step, f"{who} does not log in as role {doc.username} at {where(doc)} ({failure.reason})"
    )


def check_identity(step: str, conn: Connection, doc: ConnectionDocument, who: str) -> None:
    """The confused-deputy check: the session is the role and database the document names (a role whose
    settings switch it to another role at login is not)."""
    row = conn.execute("SELECT current_user::text, session_user::text, current_database()::text").fetchone()
    assert row is not None
    current_user, session_user, database = (str(column) for column in row)
    if session_user != doc.username or current_user != doc.username:
        raise TargetRefused(
            step, f"{who} logs in as role {current_user}, not {doc.username}, at {where(doc)}"
        )
    if database != doc.dbname:
        raise TargetRefused(
            step, f"{who} is connected to database {database}, not {doc.dbname}, at {where(doc)}"
        )


def is_superuser(conn: Connection, role: str) -> bool | None:
    """Whether ``role`` is a superuser; None when it does not exist."""
    row = conn.execute("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = %s", (role,)).fetchone()
    return None if row is None else bool(row[0])


def is_member(conn: Connection, member: str, group: str) -> bool:
    """Whether ``member`` is a direct member of ``group``."""
    row = conn.execute(
        "SELECT 1 FROM pg_catalog.pg_auth_members m"
        " JOIN pg_catalog.pg_roles g ON g.oid = m.roleid JOIN pg_catalog.pg_roles u ON u.oid = m.member"
        " WHERE g.rolname = %s AND u.rolname = %s",
        (group, member),
    ).fetchone()
    return row is not None


def scram_verifier(conn: Connection, role: str, password: str) -> str:
    """The SCRAM-SHA-256 verifier of ``password``, computed here: the server never sees the password."""
    return conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode("ascii")


def copy_settings(conn: Connection, base: str, clone: str) -> None:
    """Give ``clone`` the per-role (and per-role-and-database) settings of ``base``."""
    rows = conn.execute(
        "SELECT d.datname::text, s.setconfig FROM pg_catalog.pg_db_role_setting s"
        " JOIN pg_catalog.pg_roles r ON r.oid = s.setrole"
        " LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase"
        " WHERE r.rolname = %s",
        (base,),
    ).fetchall()
    for database, config in rows:
        scope: sql.Composable = sql.SQL("")
        if database is not None:
            scope = sql.SQL(" IN DATABASE {}").format(sql.Identifier(str(database)))
        for entry in config or ():
            name, _, value = str(entry).partition("=")
            values = split_list(value) if name.lower() in LIST_SETTINGS else [value]
            conn.execute(
                sql.SQL("ALTER ROLE {}{} SET {} TO {}").format(
                    sql.Identifier(clone),
                    scope,
                    sql.SQL(".").join(sql.Identifier(part) for part in name.split(".")),
                    sql.SQL(", ").join(sql.Literal(item) for item in values),
                )
            )


def split_list(value: str) -> list[str]:
    """The elements of a stored list setting: ``"$user", public`` is ``["$user", "public"]``."""
    items: list[str] = []
    i, end = 0, len(value)
    while i < end:
        while i < end and value[i] == " ":
            i += 1
        if i < end and value[i] == '"':
            i += 1
            chars: list[str] = []
            while i < end:
                if value[i] == '"':
                    if value[i + 1 : i + 2] == '"':
                        chars.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                chars.append(value[i])
                i += 1
            items.append("".join(chars))
        else:
            comma = value.find(",", i)
            comma = end if comma < 0 else comma
            items.append(value[i:comma].strip())
            i = comma
        while i < end and value[i] == " ":
            i += 1
        if i < end and value[i] == ",":
            i += 1
    return items
