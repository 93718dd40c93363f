"""PostgreSQL target rotators (``postgres-single-user``, ``postgres-alternating``): psycopg 3.

Values are connection documents (shared.domain.targets.ConnectionDocument). Single user: the role changes
its own password (the old one stops working at ``set``). Alternating: two roles, ``name`` and
``name_clone`` (a member of ``name``, so it has its privileges), take turns; an admin credential, read from
the Key Vault secret the policy's ``rotation-target`` names, sets the password of the role not in use and
scrambles the retired one at ``finish``.

Passwords reach the server only as SCRAM verifiers computed here, so no plaintext appears in a statement
log. Every identifier and literal is composed with ``psycopg.sql`` (values of queries are bound
parameters); connections use keyword arguments, never a formatted DSN.

Before it changes anything a rotator logs in with the credentials it acts with and checks that they are
what they claim (role, database, server): no confused deputy.

Errors: TargetRefused when retrying cannot help (a credential that does not log in, a document naming
another server or role, a missing privilege); DependencyUnavailable("postgres", ...) when the server did
not answer (and, in ``test``, when it does not accept the pending credential yet: the retry runs ``set``
again). Messages name hosts, ports and roles, never a value. psycopg's own errors are never chained: a
failed connection attempt keeps the attempted connection (password included) in ``pgconn``. The chained
cause is a copy that keeps only what is safe (the error's class, SQLSTATE and a reason).
"""

from __future__ import annotations

import logging
import math
import re
import secrets
from collections.abc import Callable, Collection
from typing import Literal, NoReturn, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from shared.domain.errors import DependencyUnavailable, DomainError, NotFound, SecretDisabled
from shared.domain.policy import SERVICE_SECRETS
from shared.domain.secrets import InvalidSecret
from shared.domain.targets import (
    CLONE_SUFFIX,
    ConnectionDocument,
    TargetRefused,
    TargetSecret,
    alternate_role,
    base_role,
    is_reserved,
)
from shared.ports import SecretStore

logger = logging.getLogger(__name__)

DEPENDENCY = "postgres"
APPLICATION_NAME = "secret-lifecycle"

_T = TypeVar("_T")
_Connection = psycopg.Connection[TupleRow]
_Kind = Literal["auth", "refused", "transient"]

# What a failed connection attempt means. psycopg 3.3 sets no SQLSTATE on a connection error (libpq
# reports the server's FATAL message as text only), so the libpq message is matched (servers answer in
# English unless lc_messages says otherwise). Anything not listed is transient.
_CONNECT_FAILURES: tuple[tuple[re.Pattern[str], str, _Kind, str], ...] = (
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
_TRANSIENT_CLASSES = frozenset({"08", "53", "57", "58"})
_AUTH_STATES = frozenset({"28000", "28P01"})
# Settings whose stored form is a list of quoted identifiers ("$user", public): each element is passed
# as its own literal, or the list would become one element.
_LIST_SETTINGS = frozenset(
    {"search_path", "temp_tablespaces", "local_preload_libraries", "session_preload_libraries"}
)


class PostgresError(Exception):
    """A psycopg error reduced to what is safe to keep and show: its class, SQLSTATE, and a reason from
    a fixed list (never the server's text). The cause chained to the domain errors raised here."""

    def __init__(self, kind: _Kind, driver_class: str, sqlstate: str | None, reason: str) -> None:
        state = f" (SQLSTATE {sqlstate})" if sqlstate else ""
        super().__init__(f"{driver_class}{state}: {reason}")
        self.kind: _Kind = kind
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
            for pattern, code, kind, reason in _CONNECT_FAILURES:
                if pattern.search(message):
                    return cls(kind, name, code, reason)
        if state in _AUTH_STATES:
            return cls("auth", name, state, "authentication failed")
        if state == "42501":
            return cls("refused", name, state, "permission denied")
        if state is None:
            if isinstance(err, psycopg.OperationalError | psycopg.InterfaceError):
                return cls("transient", name, None, "connection failed")
            return cls("refused", name, None, "driver error")
        if state[:2] in _TRANSIENT_CLASSES:
            return cls("transient", name, state, "the server did not complete the request")
        return cls("refused", name, state, f"the server refused the statement (SQLSTATE {state})")


class PostgresRotator:
    """``shared.ports.TargetRotator`` for PostgreSQL roles.

    ``alternating``: two roles take turns (``postgres-alternating``); otherwise the role changes its own
    password (``postgres-single-user``). ``store`` is where an alternating rotator reads the admin
    credential (the secret named by ``TargetSecret.target``). ``connect_timeout`` in seconds (libpq takes
    whole seconds, at least 2).
    """

    def __init__(
        self,
        store: SecretStore,
        *,
        alternating: bool,
        connect_timeout: float = 10.0,
        reserved: Collection[str] = (),
    ) -> None:
        self._store = store
        self._alternating = alternating
        self._reserved = (*SERVICE_SECRETS, *reserved)
        self._connect_timeout = max(2, math.ceil(connect_timeout))

    # --- the protocol ---------------------------------------------------------------------------------

    def pending(self, secret: TargetSecret, generated: str) -> str:
        """The current document with ``generated`` as its password, of the other role when alternating.

        Raises TargetRefused when the current value is not a connection document (or its role name is
        too long for a clone)."""
        current = _parse("pending", secret.current, "the current value")
        try:
            username = alternate_role(current.username) if self._alternating else current.username
        except ValueError as err:
            raise TargetRefused("pending", str(err)) from err
        return current.with_login(username, generated).to_json()

    def tags(self, secret: TargetSecret) -> dict[str, str]:
        """No tags: a connection document needs no companion secret."""
        return {}

    def bind(self, secret: TargetSecret) -> dict[str, str]:
        """Nothing to make: the admin credential is the operator's (``rotation-target`` names it)."""
        return {}

    def set(self, secret: TargetSecret, pending: str) -> None:
        """Make the server accept ``pending``: single user, the current role changes its own password;
        alternating, the admin sets the other role's password (creating ``<name>_clone`` as a member of
        ``<name>`` on the first rotation). Nothing is changed when a resumed ``pending`` logs in already.

        Raises TargetRefused: a document that is not one, a pending value naming another server, database
        or role, a credential that does not log in or is not what it claims, an admin credential that is
        missing or unusable, a role that is the admin's or a superuser, a missing privilege.
        DependencyUnavailable when the server (or the vault holding the admin credential) did not answer;
        the store's Forbidden passes through.
        """
        current = _parse("set", secret.current, "the current value")
        target = _parse("set", pending, "the pending value")
        self._check_pending("set", current, target)
        # A value made just now cannot work yet: no login bound to fail (and to alert on) for it.
        if secret.resumed and self._accepts("set", target):
            logger.info(
                "postgres: role %s at %s:%s accepts the pending credential already",
                target.username, target.host, target.port,
            )  # fmt: skip
            return
        who = "the current credential"
        if not self._alternating:
            self._session("set", current, who, lambda conn: self._set_own_password(conn, current, target))
            return
        self._session("set", current, who, lambda conn: _check_identity("set", conn, current, who))
        admin, admin_who = self._admin("set", secret, current)
        self._session(
            "set", admin, admin_who, lambda conn: self._set_as_admin(conn, admin, admin_who, target)
        )

    def test(self, secret: TargetSecret, pending: str) -> None:
        """Log in with ``pending`` and check the role and database.

        Raises DependencyUnavailable when it does not log in (yet: the retry runs ``set`` again) or the
        server did not answer; TargetRefused when it names another server, database or role, or logs in
        as something else than it claims."""
        current = _parse("test", secret.current, "the current value")
        target = _parse("test", pending, "the pending value")
        self._check_pending("test", current, target)
        who = "the pending credential"

        def check(conn: _Connection) -> None:
            _check_identity("test", conn, target, who)

        def not_yet(failure: PostgresError) -> DomainError:
            return DependencyUnavailable(
                DEPENDENCY,
                f"{_where(target)} does not accept the pending credential of role {target.username} "
                f"({failure.reason})",
            )

        self._session("test", target, who, check, on_auth=not_yet)

    def finish(self, secret: TargetSecret, retired: str) -> None:
        """Make ``retired`` unusable. Single user: nothing to do (its password stopped working at
        ``set``). Alternating: the admin scrambles the retired role's password (a random one, discarded),
        unless the current value uses that role; a role that does not exist is left alone.

        Raises TargetRefused: a document that is not one, a retired role that is not the current one's
        alternate (or is the admin's, or a superuser), credentials that do not log in or are not what
        they claim, a missing privilege. DependencyUnavailable when the server did not answer."""
        if not self._alternating:
            return
        current = _parse("finish", secret.current, "the current value")
        try:
            old = ConnectionDocument.parse(retired)
        except ValueError:
            # Not a document (a version from before the secret had this rotator): no role to scramble.
            logger.info(
                "postgres: the retired value of %s is no connection document: nothing to do", secret.name
            )
            return
        if old.username == current.username:
            return
        if not old.same_server(current):
            raise TargetRefused("finish", "the retired value names another server than the current one")
        if old.username != _alternate("finish", current.username):
            raise TargetRefused(
                "finish",
                f"the retired role {old.username} is not the alternate of the current role "
                f"{current.username}",
            )
        who = "the current credential"
        self._session("finish", current, who, lambda conn: _check_identity("finish", conn, current, who))
        admin, admin_who = self._admin("finish", secret, current)
        self._session("finish", admin, admin_who, lambda conn: self._scramble(conn, admin, admin_who, old))

    # --- steps ----------------------------------------------------------------------------------------

    def _check_pending(self, step: str, current: ConnectionDocument, pending: ConnectionDocument) -> None:
        """A pending value must name the current server, database and the role the rotator changes."""
        if not pending.same_server(current):
            raise TargetRefused(step, "the pending value names another server than the current one")
        if pending.dbname != current.dbname:
            raise TargetRefused(step, "the pending value names another database than the current one")
        expected = _alternate(step, current.username) if self._alternating else current.username
        if pending.username != expected:
            raise TargetRefused(step, f"the pending value names role {pending.username}, not {expected}")

    def _accepts(self, step: str, doc: ConnectionDocument) -> bool:
        """Whether ``doc`` logs in already (as what it claims). False on an authentication failure."""
        who = "the pending credential"
        accepted = True

        def refused(failure: PostgresError) -> None:
            nonlocal accepted
            accepted = False

        self._session(step, doc, who, lambda conn: _check_identity(step, conn, doc, who), on_auth=refused)
        return accepted

    def _set_own_password(
        self, conn: _Connection, current: ConnectionDocument, target: ConnectionDocument
    ) -> None:
        _check_identity("set", conn, current, "the current credential")
        conn.execute(
            sql.SQL("ALTER ROLE CURRENT_USER WITH PASSWORD {}").format(
                sql.Literal(_verifier(conn, target.username, target.password))
            )
        )
        logger.info(
            "postgres: role %s at %s:%s changed its own password", target.username, target.host, target.port
        )

    def _set_as_admin(
        self, conn: _Connection, admin: ConnectionDocument, who: str, target: ConnectionDocument
    ) -> None:
        _check_identity("set", conn, admin, who)
        role = target.username
        verifier = sql.Literal(_verifier(conn, role, target.password))
        if self._changeable("set", conn, admin, role):
            conn.execute(sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(sql.Identifier(role), verifier))
            logger.info("postgres: set the password of role %s at %s", role, _where(target))
            return
        base = base_role(role)
        if not role.endswith(CLONE_SUFFIX) or _superuser(conn, base) is None:
            raise TargetRefused("set", f"role {base} does not exist at {_where(target)}")
        created = True
        try:
            # One transaction: a clone whose settings could not be copied is not left behind.
            with conn.transaction():
                conn.execute(
                    sql.SQL("CREATE ROLE {} WITH LOGIN PASSWORD {} IN ROLE {}").format(
                        sql.Identifier(role), verifier, sql.Identifier(base)
                    )
                )
                _copy_settings(conn, base, role)
        except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            # By a concurrent run meanwhile: 42710 when it had committed before, 23505 (the catalog's
            # unique index) when this CREATE waited for its transaction.
            created = False
        if created:
            logger.info("postgres: created role %s (member of %s) at %s", role, base, _where(target))
        elif self._changeable("set", conn, admin, role):
            conn.execute(sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(sql.Identifier(role), verifier))
            logger.info("postgres: set the password of role %s at %s", role, _where(target))

    def _scramble(
        self, conn: _Connection, admin: ConnectionDocument, who: str, retired: ConnectionDocument
    ) -> None:
        _check_identity("finish", conn, admin, who)
        role = retired.username
        if not self._changeable("finish", conn, admin, role):
            logger.info("postgres: retired role %s does not exist at %s", role, _where(retired))
            return
        discarded = secrets.token_urlsafe(32)
        conn.execute(
            sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(_verifier(conn, role, discarded))
            )
        )
        logger.info("postgres: scrambled the password of retired role %s at %s", role, _where(retired))

    def _changeable(self, step: str, conn: _Connection, admin: ConnectionDocument, role: str) -> bool:
        """Whether the admin may change ``role`` (False: it does not exist). Raises TargetRefused for the
        admin's own role, for a superuser, and for a pair that is not one: ``<name>_clone`` must be a
        member of ``<name>`` (names alone could pair an unrelated role the admin also manages)."""
        if role == admin.username:
            raise TargetRefused(step, f"role {role} is the admin's own role")
        superuser = _superuser(conn, role)
        if superuser:
            raise TargetRefused(step, f"role {role} is a superuser")
        if superuser is None:
            return False
        base, clone = base_role(role), base_role(role) + CLONE_SUFFIX
        if _superuser(conn, clone) is not None and not _member(conn, clone, base):
            raise TargetRefused(step, f"role {clone} is not a member of {base}: they are not a pair")
        return True

    def _admin(
        self, step: str, secret: TargetSecret, current: ConnectionDocument
    ) -> tuple[ConnectionDocument, str]:
        """The admin credential (from the secret ``secret.target`` names) and how messages call it."""
        name = secret.target
        if not name:
            raise TargetRefused(step, "no rotation target names the admin credential's secret")
        # The policy refuses such a target when it is parsed; never read one whatever a caller passes.
        if is_reserved(name, self._reserved) or name.lower() == secret.name.lower():
            raise TargetRefused(step, "the rotation target names the service's own secret or this one")
        try:
            value = self._store.get_value(name).value
        except NotFound as err:
            raise TargetRefused(step, f"the admin credential's secret {name} does not exist") from err
        except SecretDisabled as err:
            raise TargetRefused(step, f"the admin credential's secret {name} is disabled") from err
        except InvalidSecret as err:
            raise TargetRefused(step, f"the admin credential's secret name {name} is not valid") from err
        try:
            admin = ConnectionDocument.parse(value)
        except ValueError:
            # Another secret's value: nothing about its shape is told (a field name would describe it).
            raise TargetRefused(
                step, f"the admin credential's secret {name} is no connection document"
            ) from None
        if not admin.same_server(current):
            raise TargetRefused(
                step, f"the admin credential (secret {name}) names another server than the current value"
            )
        return admin, f"the admin credential (secret {name})"

    def _session(
        self,
        step: str,
        doc: ConnectionDocument,
        who: str,
        action: Callable[[_Connection], _T],
        *,
        on_auth: Callable[[PostgresError], DomainError | None] | None = None,
    ) -> _T | None:
        """Log in with ``doc``, run ``action``, close. Driver errors become domain errors: an
        authentication failure what ``on_auth`` makes of it (returning None: swallowed), TargetRefused by
        default; ``None`` is returned when it was swallowed."""
        try:
            with psycopg.connect(
                host=doc.host,
                port=doc.port,
                dbname=doc.dbname,
                user=doc.username,
                password=doc.password,
                sslmode=doc.sslmode,
                connect_timeout=self._connect_timeout,
                # Only SCRAM: a server (or a man in the middle) asking for a plaintext or md5 password gets
                # none; sslmode=verify-full in the document also proves the server's name.
                require_auth="scram-sha-256",
                application_name=APPLICATION_NAME,
                autocommit=True,
            ) as conn:
                return action(conn)
        except psycopg.Error as err:
            failure = PostgresError.of(err)
        # Raised outside the except block, so the psycopg error is not even the implicit context.
        if failure.kind == "auth":
            error = on_auth(failure) if on_auth is not None else _does_not_log_in(step, doc, who, failure)
            if error is None:
                return None
            _raise(error, failure)
        if failure.kind == "transient":
            _raise(DependencyUnavailable(DEPENDENCY, f"{_where(doc)} did not answer"), failure)
        _raise(
            TargetRefused(step, f"{who} (role {doc.username}) at {_where(doc)}: {failure.reason}"), failure
        )


# --- helpers ----------------------------------------------------------------------------------------------


def _raise(error: DomainError, cause: PostgresError) -> NoReturn:
    raise error from cause


def _where(doc: ConnectionDocument) -> str:
    return f"{doc.host}:{doc.port}"


def _parse(step: str, value: str, what: str) -> ConnectionDocument:
    try:
        return ConnectionDocument.parse(value)
    except ValueError as err:
        reason = str(err)
    # Not chained, not even as context: the parse error's own context (json's JSONDecodeError) keeps
    # the whole text in ``doc``, and the text is a secret value.
    raise TargetRefused(step, f"{what}: {reason}")


def _alternate(step: str, username: str) -> str:
    try:
        return alternate_role(username)
    except ValueError as err:
        raise TargetRefused(step, str(err)) from err


def _does_not_log_in(step: str, doc: ConnectionDocument, who: str, failure: PostgresError) -> TargetRefused:
    return TargetRefused(
        step, f"{who} does not log in as role {doc.username} at {_where(doc)} ({failure.reason})"
    )


def _check_identity(step: str, conn: _Connection, doc: ConnectionDocument, who: str) -> None:
    """The confused-deputy check: the session is the role and database the document names (a role whose
    settings switch it to another role at login is not)."""
    row = conn.execute("SELECT current_user::text, session_user::text, current_database()::text").fetchone()
    assert row is not None
    current_user, session_user, database = (str(column) for column in row)
    if session_user != doc.username or current_user != doc.username:
        raise TargetRefused(
            step, f"{who} logs in as role {current_user}, not {doc.username}, at {_where(doc)}"
        )
    if database != doc.dbname:
        raise TargetRefused(
            step, f"{who} is connected to database {database}, not {doc.dbname}, at {_where(doc)}"
        )


def _superuser(conn: _Connection, role: str) -> bool | None:
    """Whether ``role`` is a superuser; None when it does not exist."""
    row = conn.execute("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = %s", (role,)).fetchone()
    return None if row is None else bool(row[0])


def _member(conn: _Connection, member: str, group: str) -> bool:
    """Whether ``member`` is a direct member of ``group``."""
    row = conn.execute(
        "SELECT 1 FROM pg_catalog.pg_auth_members m"
        " JOIN pg_catalog.pg_roles g ON g.oid = m.roleid JOIN pg_catalog.pg_roles u ON u.oid = m.member"
        " WHERE g.rolname = %s AND u.rolname = %s",
        (group, member),
    ).fetchone()
    return row is not None


def _verifier(conn: _Connection, role: str, password: str) -> str:
    """The SCRAM-SHA-256 verifier of ``password``, computed here: the server never sees the password."""
    return conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode("ascii")


def _copy_settings(conn: _Connection, base: str, clone: str) -> None:
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
            values = _split_list(value) if name.lower() in _LIST_SETTINGS else [value]
            conn.execute(
                sql.SQL("ALTER ROLE {}{} SET {} TO {}").format(
                    sql.Identifier(clone),
                    scope,
                    sql.SQL(".").join(sql.Identifier(part) for part in name.split(".")),
                    sql.SQL(", ").join(sql.Literal(item) for item in values),
                )
            )


def _split_list(value: str) -> list[str]:
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
