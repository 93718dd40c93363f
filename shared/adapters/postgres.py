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
import secrets
from collections.abc import Callable, Collection

import psycopg
from opentelemetry import trace
from psycopg import sql

from shared.adapters.postgres_sql import (
    APPLICATION_NAME,
    DEPENDENCY,
    Connection,
    PostgresError,
    T,
    alternate,
    check_identity,
    copy_settings,
    does_not_log_in,
    is_member,
    is_superuser,
    parse_document,
    raise_from,
    scram_verifier,
    where,
)
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
        current = parse_document("pending", secret.current, "the current value")
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
        current = parse_document("set", secret.current, "the current value")
        target = parse_document("set", pending, "the pending value")
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
        self._session("set", current, who, lambda conn: check_identity("set", conn, current, who))
        admin, admin_who = self._admin("set", secret, current)
        self._session(
            "set", admin, admin_who, lambda conn: self._set_as_admin(conn, admin, admin_who, target)
        )

    def test(self, secret: TargetSecret, pending: str) -> None:
        """Log in with ``pending`` and check the role and database.

        Raises DependencyUnavailable when it does not log in (yet: the retry runs ``set`` again) or the
        server did not answer; TargetRefused when it names another server, database or role, or logs in
        as something else than it claims."""
        current = parse_document("test", secret.current, "the current value")
        target = parse_document("test", pending, "the pending value")
        self._check_pending("test", current, target)
        who = "the pending credential"

        def check(conn: Connection) -> None:
            check_identity("test", conn, target, who)

        def not_yet(failure: PostgresError) -> DomainError:
            return DependencyUnavailable(
                DEPENDENCY,
                f"{where(target)} does not accept the pending credential of role {target.username} "
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
        current = parse_document("finish", secret.current, "the current value")
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
        if old.username != alternate("finish", current.username):
            raise TargetRefused(
                "finish",
                f"the retired role {old.username} is not the alternate of the current role "
                f"{current.username}",
            )
        who = "the current credential"
        self._session("finish", current, who, lambda conn: check_identity("finish", conn, current, who))
        admin, admin_who = self._admin("finish", secret, current)
        self._session("finish", admin, admin_who, lambda conn: self._scramble(conn, admin, admin_who, old))

    # --- steps ----------------------------------------------------------------------------------------

    def _check_pending(self, step: str, current: ConnectionDocument, pending: ConnectionDocument) -> None:
        """A pending value must name the current server, database and the role the rotator changes."""
        if not pending.same_server(current):
            raise TargetRefused(step, "the pending value names another server than the current one")
        if pending.dbname != current.dbname:
            raise TargetRefused(step, "the pending value names another database than the current one")
        expected = alternate(step, current.username) if self._alternating else current.username
        if pending.username != expected:
            raise TargetRefused(step, f"the pending value names role {pending.username}, not {expected}")

    def _accepts(self, step: str, doc: ConnectionDocument) -> bool:
        """Whether ``doc`` logs in already (as what it claims). False on an authentication failure."""
        who = "the pending credential"
        accepted = True

        def refused(failure: PostgresError) -> None:
            nonlocal accepted
            accepted = False

        self._session(step, doc, who, lambda conn: check_identity(step, conn, doc, who), on_auth=refused)
        return accepted

    def _set_own_password(
        self, conn: Connection, current: ConnectionDocument, target: ConnectionDocument
    ) -> None:
        check_identity("set", conn, current, "the current credential")
        conn.execute(
            sql.SQL("ALTER ROLE CURRENT_USER WITH PASSWORD {}").format(
                sql.Literal(scram_verifier(conn, target.username, target.password))
            )
        )
        logger.info(
            "postgres: role %s at %s:%s changed its own password", target.username, target.host, target.port
        )

    def _set_as_admin(
        self, conn: Connection, admin: ConnectionDocument, who: str, target: ConnectionDocument
    ) -> None:
        check_identity("set", conn, admin, who)
        role = target.username
        verifier = sql.Literal(scram_verifier(conn, role, target.password))
        if self._changeable("set", conn, admin, role):
            conn.execute(sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(sql.Identifier(role), verifier))
            logger.info("postgres: set the password of role %s at %s", role, where(target))
            return
        base = base_role(role)
        if not role.endswith(CLONE_SUFFIX) or is_superuser(conn, base) is None:
            raise TargetRefused("set", f"role {base} does not exist at {where(target)}")
        created = True
        try:
            # One transaction: a clone whose settings could not be copied is not left behind.
            with conn.transaction():
                conn.execute(
                    sql.SQL("CREATE ROLE {} WITH LOGIN PASSWORD {} IN ROLE {}").format(
                        sql.Identifier(role), verifier, sql.Identifier(base)
                    )
                )
                copy_settings(conn, base, role)
        except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            # By a concurrent run meanwhile: 42710 when it had committed before, 23505 (the catalog's
            # unique index) when this CREATE waited for its transaction.
            created = False
        if created:
            logger.info("postgres: created role %s (member of %s) at %s", role, base, where(target))
        elif self._changeable("set", conn, admin, role):
            conn.execute(sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(sql.Identifier(role), verifier))
            logger.info("postgres: set the password of role %s at %s", role, where(target))

    def _scramble(
        self, conn: Connection, admin: ConnectionDocument, who: str, retired: ConnectionDocument
    ) -> None:
        check_identity("finish", conn, admin, who)
        role = retired.username
        if not self._changeable("finish", conn, admin, role):
            logger.info("postgres: retired role %s does not exist at %s", role, where(retired))
            return
        discarded = secrets.token_urlsafe(32)
        conn.execute(
            sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(scram_verifier(conn, role, discarded))
            )
        )
        logger.info("postgres: scrambled the password of retired role %s at %s", role, where(retired))

    def _changeable(self, step: str, conn: Connection, admin: ConnectionDocument, role: str) -> bool:
        """Whether the admin may change ``role`` (False: it does not exist). Raises TargetRefused for the
        admin's own role, for a superuser, and for a pair that is not one: ``<name>_clone`` must be a
        member of ``<name>`` (names alone could pair an unrelated role the admin also manages)."""
        if role == admin.username:
            raise TargetRefused(step, f"role {role} is the admin's own role")
        superuser = is_superuser(conn, role)
        if superuser:
            raise TargetRefused(step, f"role {role} is a superuser")
        if superuser is None:
            return False
        base, clone = base_role(role), base_role(role) + CLONE_SUFFIX
        if is_superuser(conn, clone) is not None and not is_member(conn, clone, base):
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
        action: Callable[[Connection], T],
        *,
        on_auth: Callable[[PostgresError], DomainError | None] | None = None,
    ) -> T | None:
        """Log in with ``doc``, run ``action``, close, in a span of its own (psycopg 3 has no
        instrumentation of its own). Driver errors become domain errors: an authentication failure what
        ``on_auth`` makes of it (returning None: swallowed), TargetRefused by default; ``None`` is returned
        when it was swallowed."""
        attributes: dict[str, str | int] = {
            "db.system": "postgresql", "server.address": doc.host, "server.port": doc.port,
            "db.user": doc.username, "secret_lifecycle.step": step,
        }  # fmt: skip
        with trace.get_tracer(__name__).start_as_current_span(f"postgresql {step}", attributes=attributes):
            return self._connect(step, doc, who, action, on_auth)

    def _connect(
        self,
        step: str,
        doc: ConnectionDocument,
        who: str,
        action: Callable[[Connection], T],
        on_auth: Callable[[PostgresError], DomainError | None] | None,
    ) -> T | None:
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
            error = on_auth(failure) if on_auth is not None else does_not_log_in(step, doc, who, failure)
            if error is None:
                return None
            raise_from(error, failure)
        if failure.kind == "transient":
            raise_from(DependencyUnavailable(DEPENDENCY, f"{where(doc)} did not answer"), failure)
        raise_from(
            TargetRefused(step, f"{who} (role {doc.username}) at {where(doc)}: {failure.reason}"), failure
        )
