"""Target rotators: where a rotated value must also be set before Key Vault promotes it (a PostgreSQL
role, a consumer that checks its own keys). Pure: no I/O; the adapters (shared/adapters/postgres.py,
shared/adapters/webhook.py) implement ``shared.ports.TargetRotator`` with these types.

The protocol (shared/services/rotation/): the pending value is generated and stored in Key Vault first
(in the secret's pending companion, ``pending_secret_name``), so a crash after the target accepted it is
resumed, never lost; then ``set`` at the target, ``test`` it, promote it as the secret's new version, and
``finish`` once the previous version's grace has ended. Every step is re-runnable.

Errors: ``TargetRefused`` when retrying cannot help (a credential that does not log in, a document naming
another server or role, a consumer's 4xx): the rotation is recorded as failed and not retried.
``DependencyUnavailable`` when the target did not answer (the queue retries).

PostgreSQL values are connection documents (``ConnectionDocument``): JSON
``{host, port, dbname, username, password, sslmode}``, content type ``application/json``. For alternating
users the two roles are ``name`` and ``name_clone`` (``alternate_role``).

Webhook requests are signed (``sign``): ``X-Signature-256: sha256=<hex HMAC-SHA256>`` over
``<timestamp>.<body>`` with the per-target key, and the timestamp (Unix seconds) in
``X-Signature-Timestamp``, so a replayed request is detectable by its age and a changed timestamp breaks
the signature.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from shared.domain.errors import DomainError

CONNECTION_CONTENT_TYPE = "application/json"
CLONE_SUFFIX = "_clone"
#: libpq's sslmode values.
SSL_MODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})
#: PostgreSQL truncates identifiers to 63 bytes: a longer role name would silently name another role.
MAX_ROLE_BYTES = 63
_HOST = re.compile(r"[0-9A-Za-z.:\-_\[\]]{1,253}")
_DBNAME = re.compile(r"[^\x00]+")

SIGNATURE_HEADER = "X-Signature-256"
TIMESTAMP_HEADER = "X-Signature-Timestamp"
#: How far a signed request's timestamp may be from the receiver's clock before it counts as a replay.
SIGNATURE_TOLERANCE_SECONDS = 300
#: A webhook signing key's tag on the versions of the secrets it signs for (names the key's secret).
SIGNING_KEY_TAG = "webhook-signing-key"

#: The service's companion secrets in the vault: never rotated, revoked or listed as managed.
PENDING_PREFIX = "slc-pending-"
SIGNING_PREFIX = "slc-webhook-"
_COMPANION = re.compile(r"slc-(pending|webhook)-[0-9a-f]{40}")
#: On a pending companion's versions: the secret it holds a pending value for.
PENDING_FOR_TAG = "pending-for"
#: On a signing key's versions: the target URL (canonical) and the secret it signs for — both informational:
#: a tag editor can change them. What binds a key version to one secret and one URL is ``BINDING_TAG``, a
#: MAC with the audit key (id in ``BINDING_KEY_TAG``) over both and the version, which only the service
#: can make (``binding_mac``).
SIGNS_FOR_TAG = "signs-for"
SIGNS_FOR_SECRET_TAG = "signs-for-secret"
BINDING_TAG = "binding"
BINDING_KEY_TAG = "binding-key"


class TargetRefused(DomainError):
    """The target refused the rotation, and retrying cannot help (a credential that does not log in, a
    document that names another server or role, a consumer that answered 4xx). ``step``: where.
    Nothing was promoted. The message is safe to show: names, never a value."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


class TargetNotBound(TargetRefused):
    """The secret's ``rotation-target`` is not the consumer the API bound to this secret (a target changed
    by tag alone, or no bound signing key): nothing is sent; recorded as ROTATION_FAILED and a finding."""

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(step, f"target not bound to this secret ({detail})")


@dataclass(frozen=True)
class TargetSecret:
    """What a target rotator needs of the secret it rotates. ``current``: the current version's value
    (kept out of repr); ``rotation_id``: the rotation in flight, or, for ``finish``, the one that made the
    current version (None when it was not made by this service); ``target``: the policy's
    ``rotation-target``; ``resumed``: see below."""

    name: str
    rotation_id: str | None
    target: str | None
    current: str = field(repr=False)
    #: The pending value was stored by an earlier attempt: the target may have it already (``set`` checks
    #: first). False: it was made just now, so the target cannot have it (no login bound to fail).
    resumed: bool = False


def pending_secret_name(secret_name: str) -> str:
    """The companion secret that holds ``secret_name``'s pending value while a target rotation runs.
    Derived from the (case-insensitive) name, so it fits Key Vault's 127 characters whatever the name."""
    return PENDING_PREFIX + hashlib.sha256(secret_name.lower().encode()).hexdigest()[:40]


def signing_key_name(secret_name: str) -> str:
    """The secret that holds the webhook signing key of ``secret_name``'s consumer: one per secret, derived
    from its (case-insensitive) name, whatever its URL or the URL's spelling."""
    return SIGNING_PREFIX + hashlib.sha256(secret_name.lower().encode()).hexdigest()[:40]


_DEFAULT_PORTS = {"https": 443, "http": 80}


def canonical_url(url: str) -> str:
    """One spelling of a consumer's URL: scheme and host lower-case, the default port and the fragment
    dropped, an empty path ``/``. Raises ValueError for a URL without a scheme and host (or with
    credentials, or a port that is not a number)."""
    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), parts.hostname
    if not scheme or not host or parts.username is not None or parts.password is not None:
        raise ValueError("not an absolute URL without credentials")
    port = parts.port
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc += f":{port}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{parts.path or '/'}{query}"


def binding_mac(mac_key: bytes, secret_name: str, url: str, key_version: str) -> str:
    """The MAC that binds the signing key version ``key_version`` to one secret and one consumer URL: made
    only by the API's onboarding or policy change of that secret, checked before any request is sent.
    Raises ValueError for a URL ``canonical_url`` refuses."""
    message = "\0".join(("webhook-binding/v1", secret_name.lower(), canonical_url(url), key_version))
    return hmac.new(mac_key, message.encode(), hashlib.sha256).hexdigest()


def is_reserved(name: str, reserved: Collection[str]) -> bool:
    """Whether ``name`` is one of the service's own secrets: a fixed one (``reserved``: the audit MAC key,
    the digest anchor) or a companion (pending values, webhook signing keys). Case-insensitive, as Key
    Vault names are."""
    lowered = name.lower()
    return _COMPANION.fullmatch(lowered) is not None or lowered in {r.lower() for r in reserved}


@dataclass(frozen=True)
class ConnectionDocument:
    """A PostgreSQL credential as stored in Key Vault. ``extra``: fields this service does not use, kept
    as they are when it writes a new document."""

    host: str
    port: int
    dbname: str
    username: str
    password: str = field(repr=False)
    sslmode: str = "prefer"
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, text: str) -> ConnectionDocument:
        """Parse a stored document. Raises ValueError naming the field that is wrong (never its value)."""
        try:
            raw = json.loads(text)
        except ValueError:
            # Raised outside this block: a JSON error keeps the whole text (the password) in ``doc``, and
            # even ``from None`` would keep it reachable as __context__.
            raw = None
        if raw is None:
            raise ValueError("the value is not a JSON connection document")
        if not isinstance(raw, dict):
            raise ValueError("the value is not a JSON object")
        host = _string(raw, "host")
        if not _HOST.fullmatch(host):
            raise ValueError("field host: not a host name or address")
        port = raw.get("port", 5432)
        if isinstance(port, str) and port.isascii() and port.isdigit():
            port = int(port)
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ValueError("field port: not a port number")
        dbname = _string(raw, "dbname")
        if not _DBNAME.fullmatch(dbname) or len(dbname.encode()) > MAX_ROLE_BYTES:
            raise ValueError("field dbname: 1-63 characters")
        username = _string(raw, "username")
        if len(username.encode()) > MAX_ROLE_BYTES or "\x00" in username:
            raise ValueError(f"field username: at most {MAX_ROLE_BYTES} bytes")
        password = raw.get("password")
        if not isinstance(password, str) or not password or "\x00" in password:
            raise ValueError("field password: missing or not a string")
        sslmode = raw.get("sslmode", "prefer")
        if sslmode not in SSL_MODES:
            raise ValueError(f"field sslmode: one of {', '.join(sorted(SSL_MODES))}")
        known = {"host", "port", "dbname", "username", "password", "sslmode"}
        extra = {k: v for k, v in raw.items() if k not in known}
        return cls(host, port, dbname, username, password, sslmode, extra)

    def with_login(self, username: str, password: str) -> ConnectionDocument:
        """The same server and database, another role or password."""
        return ConnectionDocument(
            self.host, self.port, self.dbname, username, password, self.sslmode, dict(self.extra)
        )

    def to_json(self) -> str:
        document = {
            **self.extra,
            "host": self.host,
            "port": self.port,
            "dbname": self.dbname,
            "username": self.username,
            "password": self.password,
            "sslmode": self.sslmode,
        }
        return json.dumps(document, separators=(",", ":"))

    def same_server(self, other: ConnectionDocument) -> bool:
        """Whether both name the same server (host, case-insensitive, and port)."""
        return self.host.lower() == other.host.lower() and self.port == other.port


def _string(raw: Mapping[str, Any], name: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"field {name}: missing or not a string")
    return value


def base_role(username: str) -> str:
    """The original role of an alternating pair (``name`` for ``name`` and ``name_clone``)."""
    return username[: -len(CLONE_SUFFIX)] if username.endswith(CLONE_SUFFIX) else username


def alternate_role(username: str) -> str:
    """The other role of an alternating pair: ``name_clone`` for ``name`` and ``name`` for ``name_clone``.
    Raises ValueError when the clone's name would be longer than PostgreSQL keeps."""
    if username.endswith(CLONE_SUFFIX):
        if not base_role(username):
            raise ValueError("field username: a clone needs a base name")
        return base_role(username)
    clone = username + CLONE_SUFFIX
    if len(clone.encode()) > MAX_ROLE_BYTES:
        raise ValueError(f"field username: {MAX_ROLE_BYTES - len(CLONE_SUFFIX)} bytes at most for a clone")
    return clone


def sign(key: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Signature-256`` header value of a webhook request: the timestamp is bound into the MAC."""
    mac = hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={mac}"


def verify_signature(key: bytes, timestamp: str, body: bytes, signature: str, now: float) -> bool:
    """Whether a received request is authentic and fresh (what a consumer checks; the tests' consumer
    uses it). Constant-time comparison; a timestamp further than the tolerance from ``now`` fails."""
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    if abs(now - int(timestamp)) > SIGNATURE_TOLERANCE_SECONDS:
        return False
    return hmac.compare_digest(sign(key, int(timestamp), body).encode(), signature.encode())
