"""Audit records: actions, actors, events, chained records and where they are stored.

Every record belongs to one chain (one per secret, plus a service chain for records about no secret).
Pure: no I/O, no azure.*.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from shared.domain.errors import DependencyUnavailable

GENESIS_MAC = "0" * 64
SERVICE_CHAIN_SECRET = "_service"  # Key Vault names cannot contain "_": no secret can collide with it
DIGEST_CHAIN = "_digest"
MAX_DETAILS_BYTES = 4096
#: Keys that would only ever hold a secret value; details with them are refused outright.
FORBIDDEN_DETAIL_KEYS = frozenset(
    {"value", "secret", "secret_value", "password", "token", "client_secret", "key_material"}
)


class Action(StrEnum):
    ROTATION_STARTED = "ROTATION_STARTED"
    ROTATED = "ROTATED"
    ROTATION_FAILED = "ROTATION_FAILED"
    ROTATION_SKIPPED = "ROTATION_SKIPPED"
    ROLLED_BACK = "ROLLED_BACK"
    #: A manual rotation put on the rotation-requests queue (POST /api/secrets/{name}/rotate).
    ROTATION_REQUESTED = "ROTATION_REQUESTED"
    #: A new secret created with a rotation policy and its first value (POST /api/secrets).
    SECRET_ONBOARDED = "SECRET_ONBOARDED"
    #: A secret's rotation policy tags set or replaced (PUT /api/secrets/{name}/policy).
    POLICY_CHANGED = "POLICY_CHANGED"
    #: A managed secret soft-deleted (DELETE /api/secrets/{name}); recoverable within the retention.
    SECRET_DELETED = "SECRET_DELETED"
    #: A soft-deleted secret recovered (POST /api/secrets/{name}/recover).
    SECRET_RECOVERED = "SECRET_RECOVERED"
    #: A write request named a secret the vault does not hold (404): recorded on the service chain, never
    #: on a chain of that name, so a caller cannot make chains by naming secrets.
    SECRET_NOT_FOUND = "SECRET_NOT_FOUND"
    #: A previous version disabled once its grace period after a rotation ended.
    VERSION_RETIRED = "VERSION_RETIRED"
    EXPIRY_WARNING = "EXPIRY_WARNING"
    SECRET_EXPIRED = "SECRET_EXPIRED"
    POLICY_VIOLATION = "POLICY_VIOLATION"
    REVOCATION_REQUESTED = "REVOCATION_REQUESTED"
    REVOCATION_APPROVED = "REVOCATION_APPROVED"
    REVOCATION_REJECTED = "REVOCATION_REJECTED"
    REVOCATION_CANCELLED = "REVOCATION_CANCELLED"
    REVOCATION_EXPIRED = "REVOCATION_EXPIRED"
    REVOKED = "REVOKED"
    BREAK_GLASS = "BREAK_GLASS"
    REVIEWED = "REVIEWED"
    ACCESS_DENIED = "ACCESS_DENIED"
    SUSPICIOUS_ACTIVITY = "SUSPICIOUS_ACTIVITY"
    OUT_OF_BAND_CHANGE = "OUT_OF_BAND_CHANGE"
    #: The digest writer found a chain that went backwards or vanished since the last digest.
    TAMPERING_DETECTED = "TAMPERING_DETECTED"
    #: An operator opened an incident over the breaks verify reports (POST /api/audit/incidents).
    INCIDENT_OPENED = "INCIDENT_OPENED"
    #: A second person acknowledged an open incident: a digest sealed a new baseline over its breaks.
    INCIDENT_ACKNOWLEDGED = "INCIDENT_ACKNOWLEDGED"
    #: The retention export moved records older than AUDIT_RETENTION_DAYS to the audit archive.
    RECORDS_ARCHIVED = "RECORDS_ARCHIVED"
    #: An operator re-derived a chain's head from its records after they verified (CLI ``repair``).
    CHAIN_REPAIRED = "CHAIN_REPAIRED"
    #: A stored state row (rotation progress, a lease, a revocation request, a finding, ...) whose seal is
    #: missing or wrong, or a row the trail says exists that is gone: refused, never acted on.
    STATE_TAMPERED = "STATE_TAMPERED"
    #: A due secret whose rotation did not happen (held by a lease too long, or still due sweeps later).
    ROTATION_STALLED = "ROTATION_STALLED"


class Result(StrEnum):
    """What a record says happened. A state change is recorded twice: ``intent`` before it is applied
    (fail closed: no intent on record, no change), then ``success`` once it took effect or ``failure`` when
    it did not (a lost race, a refused transition, a dependency). So no record claims a success that did
    not happen. Decisions that change nothing (a refusal, a finding, a check) are one record."""

    INTENT = "intent"
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


class ActorType(StrEnum):
    USER = "user"
    APP = "app"
    SYSTEM = "system"
    #: Whoever changed something outside the service's API (a tag edited in the vault): not known to it.
    UNKNOWN = "unknown"


class AuditError(ValueError):
    """An audit event that must not be written (e.g. details that look like they carry a value)."""


class ChainTampered(DependencyUnavailable):
    """A chain's stored state was changed behind the service's back (records without a head, records
    beyond the head, an unreadable head). Appending to it is refused at once, without retries: the
    operator verifies and repairs it (``python -m shared.entrypoints.cli repair``)."""

    def __init__(self, chain: str, problem: str) -> None:
        super().__init__(
            "audit_store",
            f"audit chain {chain} {problem}: tampering suspected; run verify, then the CLI's repair",
        )
        self.chain = chain


@dataclass(frozen=True)
class Actor:
    id: str
    type: ActorType
    ip: str | None = None
    user_agent: str | None = None


SYSTEM_ACTOR = Actor(id="secret-lifecycle", type=ActorType.SYSTEM)
#: The actor of a change the service found but did not make (a policy set or dropped by tag alone).
UNKNOWN_ACTOR = Actor(id="unknown", type=ActorType.UNKNOWN)


def chain_of(vault: str, secret_name: str | None) -> str:
    """The chain (table partition) of a record. Vault and secret names use only [0-9A-Za-z-] and Key Vault
    treats them case-insensitively, so one secret has one chain whatever the spelling."""
    return f"{vault.lower()}:{(secret_name or SERVICE_CHAIN_SECRET).lower()}"


@dataclass(frozen=True)
class AuditEvent:
    """What a caller asks to record. ``time`` comes from the caller's clock."""

    action: Action
    vault: str
    time: datetime
    result: Result = Result.SUCCESS
    actor: Actor = SYSTEM_ACTOR
    secret_name: str | None = None
    version: str | None = None
    correlation_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    duration_ms: int | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        if self.time.tzinfo is None:
            raise AuditError("audit time must be timezone-aware")
        _check_details(self.details)
        if self.error is not None and len(self.error) > 1024:
            object.__setattr__(self, "error", self.error[:1021] + "...")

    @property
    def chain(self) -> str:
        return chain_of(self.vault, self.secret_name)

    @classmethod
    def rebuilt(cls, **fields: Any) -> AuditEvent:
        """An event rebuilt from what the service sealed (its MAC checked by the caller): its details were
        checked when it was recorded, so they are not checked again (a report rebuilds tens of thousands).
        Fields left out take their defaults; ``time`` must be timezone-aware."""
        known = _event_fields()
        unknown = fields.keys() - known.keys()
        if unknown:
            raise TypeError(f"rebuilt() got unknown fields {sorted(unknown)}")
        event = object.__new__(cls)
        for name, default in known.items():
            if name in fields:
                value = fields[name]
            elif default[1] is dataclasses.MISSING:
                raise TypeError(f"rebuilt() needs {name}")
            else:
                value = default[1]() if default[0] else default[1]
            object.__setattr__(event, name, value)
        if event.time.tzinfo is None:
            raise AuditError("audit time must be timezone-aware")
        return event


@functools.cache
def _event_fields() -> dict[str, tuple[bool, Any]]:
    """AuditEvent's fields, each with its default: (True, a factory) or (False, a value; MISSING: none)."""
    return {
        item.name: (True, item.default_factory)
        if item.default_factory is not dataclasses.MISSING
        else (False, item.default)
        for item in dataclasses.fields(AuditEvent)
    }


@dataclass(frozen=True)
class AuditRecord:
    """A chained, MACed record as stored."""

    event: AuditEvent
    seq: int
    prev_mac: str
    key_id: str
    mac: str

    @property
    def chain(self) -> str:
        return self.event.chain


def clip(text: str, budget: int) -> str:
    """The longest start of ``text`` whose JSON form (ASCII-escaped, as details are measured) takes at most
    ``budget`` characters: a text that fits a record whatever its script (an emoji escapes to 12)."""
    used = 0
    for index, char in enumerate(text):
        used += len(json.dumps(char)) - 2
        if used > budget:
            return text[:index]
    return text


def _check_details(details: Mapping[str, Any]) -> None:
    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                if not isinstance(key, str):
                    raise AuditError("detail keys must be strings")
                if key.lower() in FORBIDDEN_DETAIL_KEYS:
                    raise AuditError(f"detail key {key!r} is refused: the audit never holds secret values")
                walk(inner)
        elif isinstance(value, list | tuple):
            for inner in value:
                walk(inner)

    walk(details)
    encoded = json.dumps(details, sort_keys=True, separators=(",", ":"), default=str)
    if len(encoded.encode()) > MAX_DETAILS_BYTES:
        raise AuditError(f"details exceed {MAX_DETAILS_BYTES} bytes")


@dataclass(frozen=True)
class ChainHead:
    """The newest record of a chain: its sequence number and MAC."""

    seq: int
    mac: str


@dataclass(frozen=True)
class StoredRecord:
    """A record as read back: its position (from the row key) and its raw stored fields."""

    position: int
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class StoredAuditRow:
    chain: str
    record: StoredRecord


@dataclass(frozen=True)
class ChainContents:
    records: list[StoredRecord]
    head: ChainHead | None
    #: Row keys in the chain's partition that are neither a record nor the head: somebody put them there.
    stray_rows: tuple[str, ...] = ()
    #: A head row exists but cannot be read (``head`` is None then too).
    head_unreadable: bool = False


@dataclass(frozen=True)
class AuditQuery:
    """Filters of GET /api/audit."""

    vault: str | None = None
    secret_name: str | None = None
    action: Action | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50

    @property
    def chain(self) -> str | None:
        return chain_of(self.vault, self.secret_name) if self.vault and self.secret_name else None


#: Where a listing of records goes on: the store's own continuation (Table Storage's next partition and
#: row key), which the query service wraps in its opaque cursor.
RecordPosition = tuple[str, str]
