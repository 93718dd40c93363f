"""Rotation requests: what the sweep, Key Vault events and the manual endpoint put on the
``rotation-requests`` queue for ``rotate_secret`` to act on. Pure: no azure.*, no I/O.

A queue message is untrusted input (anyone with write access to the queue can put one there), so
``RotationRequest.from_json`` accepts exactly the shape ``to_json`` writes and raises ValueError for
anything else. A request names a secret and why; it never carries a value. Deciding whether the secret
is still due is the rotation's job: a request is a trigger, not a verdict — unless it is ``force``d (a
manual rotation asked to rotate now). A manual request also carries the ``rotation_id`` the caller was
given, which the rotation starts with, so a redelivered request finds its rotation done.

The two optional fields are written only when set, so a message without them (older senders, the sweep,
the Event Grid handler) is the same message it always was.

Sealed: the service seals every request it sends (``sealed``: an HMAC with the audit key over the
request's fields, its key id beside it), and ``rotate_secret`` acts only on a request whose seal checks
(``seal_problem``), so one a queue writer put there (a forced rotation nobody asked for, a rotation id
borrowed from a revocation) is refused and reported, never acted on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from shared.domain.errors import DependencyUnavailable
from shared.domain.secrets import VAULT_PATTERN, validate_name

#: host.json's ``extensions.queues.maxDequeueCount``: the delivery after which the host moves a message to
#: the poison queue (a test pins it).
MAX_DEQUEUE_COUNT = 5
#: A message larger than this is refused before it is parsed (a real one is ~200 bytes).
MAX_MESSAGE_CHARS = 4096
#: Visible ASCII only: correlation ids end up in logs and audit records.
_CORRELATION_ID = re.compile(r"[\x21-\x7e]{1,128}")
#: A rotation id: what ``uuid.uuid4().hex`` writes.
ROTATION_ID = re.compile(r"[0-9a-f]{32}")
_FIELDS = frozenset({"secret_name", "reason", "requested_at", "correlation_id"})
_OPTIONAL = frozenset({"force", "rotation_id", "vault", "seal", "seal_key"})
_SEAL = re.compile(r"[0-9a-f]{64}")
#: Tells a request's MAC input from a record's or a state's, although the same keys make all three.
_DOMAIN = b"secret-lifecycle/rotation-request/v1\n"


class RotationReason(StrEnum):
    DUE = "due"  # the policy's interval has elapsed
    NEAR_EXPIRY = "near_expiry"  # due only because the version expires within the near-expiry window
    EVENT = "event"  # a Key Vault SecretNearExpiry / SecretExpired event
    MANUAL = "manual"  # POST /api/secrets/{name}/rotate
    RESUME = "resume"  # the sweep: a rotation whose holder died mid-way (its lease ran out)


@dataclass(frozen=True, kw_only=True)
class RotationRequest:
    """Rotate ``secret_name`` (if still due). Raises ValueError when constructed with invalid fields."""

    secret_name: str
    reason: RotationReason
    requested_at: datetime
    correlation_id: str
    #: Rotate even when not due (a manual rotation with ``force``).
    force: bool = False
    #: The id the rotation starts with (32 lowercase hex); None: the rotation picks one.
    rotation_id: str | None = None
    #: The vault of the secret (None: a request sent before several vaults, about the designated vault).
    vault: str | None = None
    #: The request's MAC (``sealed``) and the id of the audit key that made it.
    seal: str | None = None
    seal_key: str | None = None

    def __post_init__(self) -> None:
        validate_name(self.secret_name)  # InvalidSecret, a ValueError
        if not isinstance(self.reason, RotationReason):
            raise ValueError("reason must be a RotationReason")
        if not isinstance(self.requested_at, datetime) or self.requested_at.tzinfo is None:
            raise ValueError("requested_at must be a timezone-aware datetime")
        validate_correlation_id(self.correlation_id)
        if not isinstance(self.force, bool):
            raise ValueError("force must be a boolean")
        if self.rotation_id is not None and not (
            isinstance(self.rotation_id, str) and ROTATION_ID.fullmatch(self.rotation_id)
        ):
            raise ValueError("rotation_id must be 32 lowercase hex characters")
        if self.vault is not None and not (
            isinstance(self.vault, str) and VAULT_PATTERN.fullmatch(self.vault)
        ):
            raise ValueError("vault must be a vault's name (0-9, a-z, -)")
        if self.seal is not None and not (isinstance(self.seal, str) and _SEAL.fullmatch(self.seal)):
            raise ValueError("seal must be 64 lowercase hex characters")
        if self.seal_key is not None and not (
            isinstance(self.seal_key, str) and _CORRELATION_ID.fullmatch(self.seal_key)
        ):
            raise ValueError("seal_key must be 1-128 visible ASCII characters")

    def sealed(self, key_id: str, key: bytes) -> RotationRequest:
        """The request with its seal (``key_id``: the audit key's id)."""
        return dataclasses.replace(self, seal=self._mac(key), seal_key=key_id)

    def seal_problem(self, keys: Callable[[str], bytes | None]) -> str | None:
        """Why the request's seal does not check (``no seal``, ``unknown key``, ``mac mismatch``), or None
        when it does: the service sent it."""
        if self.seal is None or self.seal_key is None:
            return "no seal"
        key = keys(self.seal_key)
        if key is None:
            return "unknown key"
        return None if hmac.compare_digest(self._mac(key), self.seal) else "mac mismatch"

    def _mac(self, key: bytes) -> str:
        """The MAC over the fields the seal covers, in one canonical form."""
        body = json.dumps(self._fields(), sort_keys=True, separators=(",", ":"))
        return hmac.new(key, _DOMAIN + body.encode(), hashlib.sha256).hexdigest()

    def to_json(self) -> str:
        fields = self._fields()
        if self.seal is not None and self.seal_key is not None:
            fields.update(seal=self.seal, seal_key=self.seal_key)
        return json.dumps(fields, separators=(",", ":"))

    def _fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "secret_name": self.secret_name,
            "reason": self.reason.value,
            "requested_at": self.requested_at.astimezone(UTC).isoformat(),
            "correlation_id": self.correlation_id,
        }
        if self.force:
            fields["force"] = True
        if self.rotation_id is not None:
            fields["rotation_id"] = self.rotation_id
        if self.vault is not None:
            fields["vault"] = self.vault  # under the seal: a request cannot be moved to another vault
        return fields

    @classmethod
    def from_json(cls, text: str | bytes) -> RotationRequest:
        """Parse a message ``to_json`` wrote. Raises ValueError for anything else: not UTF-8 JSON, not an
        object, duplicate/missing/unknown fields, wrong types, an invalid name, reason, time or id."""
        if len(text) > MAX_MESSAGE_CHARS:
            raise ValueError(f"a rotation request is at most {MAX_MESSAGE_CHARS} characters")
        try:
            raw = json.loads(text, object_pairs_hook=_no_duplicates)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError("a rotation request must be a JSON object") from err
        if not isinstance(raw, dict):
            raise ValueError("a rotation request must be a JSON object")
        if not _FIELDS <= set(raw) <= _FIELDS | _OPTIONAL:
            missing, unknown = sorted(_FIELDS - set(raw)), sorted(set(raw) - _FIELDS - _OPTIONAL)
            raise ValueError(f"rotation request fields: missing {missing}, unknown {unknown[:5]}")
        force = raw.get("force", False)
        if type(force) is not bool:
            raise ValueError("rotation request force must be a boolean")
        rotation_id = raw.get("rotation_id")
        if rotation_id is not None and not (
            isinstance(rotation_id, str) and ROTATION_ID.fullmatch(rotation_id)
        ):
            raise ValueError("rotation request rotation_id must be 32 lowercase hex characters")
        if "rotation_id" in raw and rotation_id is None:
            raise ValueError("rotation request rotation_id must be 32 lowercase hex characters")
        values = {name: raw[name] for name in _FIELDS}
        if not all(isinstance(v, str) for v in values.values()):
            raise ValueError("rotation request fields must be strings")
        try:
            reason = RotationReason(values["reason"])
        except ValueError:
            allowed = ", ".join(r.value for r in RotationReason)
            raise ValueError(f"rotation request reason is not one of {allowed}") from None
        try:
            requested_at = datetime.fromisoformat(values["requested_at"])
        except ValueError:
            raise ValueError("rotation request requested_at is not an ISO 8601 time") from None
        seal, seal_key, vault = raw.get("seal"), raw.get("seal_key"), raw.get("vault")
        if not all(v is None or isinstance(v, str) for v in (seal, seal_key, vault)):
            raise ValueError("rotation request seal and vault fields must be strings")
        if "vault" in raw and vault is None:
            raise ValueError("rotation request vault must be a vault's name")
        return cls(
            secret_name=values["secret_name"],
            reason=reason,
            requested_at=requested_at.astimezone(UTC) if requested_at.tzinfo else requested_at,
            correlation_id=values["correlation_id"],
            force=force,
            rotation_id=rotation_id,
            vault=vault,
            seal=seal,
            seal_key=seal_key,
        )


def validate_correlation_id(correlation_id: str) -> None:
    """Raise ValueError unless the id is 1-128 visible ASCII characters (it ends up in logs)."""
    if not isinstance(correlation_id, str) or not _CORRELATION_ID.fullmatch(correlation_id):
        raise ValueError("correlation_id must be 1-128 visible ASCII characters")


class RequestsNotSent(DependencyUnavailable):
    """Sending rotation requests failed part-way: ``not_sent`` were not (confirmed) enqueued; the ones
    before them were. A request whose send timed out is counted as not sent: sending it again at worst
    duplicates a trigger, which rotation absorbs (it is idempotent)."""

    def __init__(self, dependency: str, detail: str, not_sent: Sequence[RotationRequest]) -> None:
        super().__init__(dependency, detail)
        self.not_sent = tuple(not_sent)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("a rotation request has a duplicate field")
    return dict(pairs)
