"""Audit records, their canonical form and MAC, and verification of chains and digests.

Every record belongs to one chain (one per secret, plus a service chain for records about no secret).
A record carries its sequence number in the chain, the previous record's MAC and its own MAC:
``HMAC-SHA256(key, canonical(record))`` where the canonical form covers every field, the chain, the
sequence number and the previous MAC. Without the key nobody can edit, insert or reorder records and
produce valid MACs. Digests, written hourly, record every chain's head (sequence number and MAC); they
form a chain of their own, so cutting the newest records of a chain (a truncated tail) shows too.

Pure: no I/O, no azure.*. Storage is the adapter's business; the key comes from a ``KeyRing``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

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


class Result(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


class ActorType(StrEnum):
    USER = "user"
    APP = "app"
    SYSTEM = "system"


class AuditError(ValueError):
    """An audit event that must not be written (e.g. details that look like they carry a value)."""


@dataclass(frozen=True)
class Actor:
    id: str
    type: ActorType
    ip: str | None = None
    user_agent: str | None = None


SYSTEM_ACTOR = Actor(id="secret-lifecycle", type=ActorType.SYSTEM)


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


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def event_fields(event: AuditEvent) -> dict[str, Any]:
    """The event as flat, JSON-safe fields (also the stored entity's properties)."""
    return {
        "id": event.id,
        "time": format_time(event.time),
        "action": event.action.value,
        "vault": event.vault,
        "secret_name": event.secret_name,
        "version": event.version,
        "result": event.result.value,
        "actor_id": event.actor.id,
        "actor_type": event.actor.type.value,
        "actor_ip": event.actor.ip,
        "actor_user_agent": event.actor.user_agent,
        "correlation_id": event.correlation_id,
        "details": json.dumps(dict(event.details), sort_keys=True, separators=(",", ":"), default=str),
        "error": event.error,
        "duration_ms": event.duration_ms,
    }


def event_from_fields(fields: Mapping[str, Any]) -> AuditEvent:
    """Inverse of event_fields. Raises KeyError/ValueError on a malformed record."""
    details_text = fields.get("details") or "{}"
    return AuditEvent(
        id=str(fields["id"]),
        time=parse_time(str(fields["time"])),
        action=Action(fields["action"]),
        vault=str(fields["vault"]),
        secret_name=fields.get("secret_name") or None,
        version=fields.get("version") or None,
        result=Result(fields["result"]),
        actor=Actor(
            id=str(fields["actor_id"]),
            type=ActorType(fields["actor_type"]),
            ip=fields.get("actor_ip") or None,
            user_agent=fields.get("actor_user_agent") or None,
        ),
        correlation_id=fields.get("correlation_id") or None,
        details=json.loads(details_text),
        error=fields.get("error") or None,
        duration_ms=None if fields.get("duration_ms") is None else int(fields["duration_ms"]),
    )


def readable_event(fields: Mapping[str, Any]) -> AuditEvent | None:
    """The event in stored fields, or None when they are malformed: readers skip such rows and leave
    them to verify, which reports them."""
    try:
        return event_from_fields(fields)
    except (KeyError, ValueError, TypeError):
        return None


def canonical(chain: str, seq: int, prev_mac: str, key_id: str, fields: Mapping[str, Any]) -> bytes:
    """The bytes the MAC covers: every field plus the record's place in its chain."""
    # Absent and None are the same (storage drops None properties), so neither is part of the form.
    body = {k: v for k, v in fields.items() if v is not None}
    body.update(chain=chain, seq=seq, prev_mac=prev_mac, key_id=key_id)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def compute_mac(key: bytes, payload: bytes) -> str:
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def seal(event: AuditEvent, seq: int, prev_mac: str, key_id: str, key: bytes) -> AuditRecord:
    """Chain and MAC an event as record ``seq`` after a record whose MAC is ``prev_mac``."""
    mac = compute_mac(key, canonical(event.chain, seq, prev_mac, key_id, event_fields(event)))
    return AuditRecord(event=event, seq=seq, prev_mac=prev_mac, key_id=key_id, mac=mac)


def seal_all(
    events: Sequence[AuditEvent], head_seq: int, head_mac: str, key_id: str, key: bytes
) -> list[AuditRecord]:
    """Seal events of one chain in order after the given head."""
    records: list[AuditRecord] = []
    seq, prev = head_seq, head_mac
    for event in events:
        seq += 1
        record = seal(event, seq, prev, key_id, key)
        records.append(record)
        prev = record.mac
    return records


# -- digests --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainHead:
    seq: int
    mac: str


@dataclass(frozen=True)
class Digest:
    seq: int
    time: datetime
    heads: Mapping[str, ChainHead]
    prev_mac: str
    key_id: str
    mac: str


def digest_payload(
    seq: int, time: datetime, heads: Mapping[str, ChainHead], prev_mac: str, key_id: str
) -> bytes:
    body = {
        "chain": DIGEST_CHAIN,
        "seq": seq,
        "time": format_time(time),
        "heads": {name: [head.seq, head.mac] for name, head in sorted(heads.items())},
        "prev_mac": prev_mac,
        "key_id": key_id,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def seal_digest(
    seq: int, time: datetime, heads: Mapping[str, ChainHead], prev_mac: str, key_id: str, key: bytes
) -> Digest:
    mac = compute_mac(key, digest_payload(seq, time, heads, prev_mac, key_id))
    return Digest(seq=seq, time=time, heads=dict(heads), prev_mac=prev_mac, key_id=key_id, mac=mac)


# -- verification ---------------------------------------------------------------------------------


class BreakKind(StrEnum):
    EDITED = "edited"  # a record's content does not match its MAC
    DELETED = "deleted"  # a gap in the sequence
    REORDERED = "reordered"  # a valid record stands at another record's place
    TRUNCATED = "truncated"  # the newest records of a chain are gone
    FORGED_DIGEST = "forged_digest"  # a digest does not match its MAC or its chain
    STALE_DIGEST = "stale_digest"  # no digest as recent as the digest schedule promises
    UNKNOWN_KEY = "unknown_key"  # the MAC key a record names does not exist
    MALFORMED = "malformed"  # a stored record lacks fields or has invalid ones
    UNEXPECTED = "unexpected"  # records beyond the chain head the service knows of


@dataclass(frozen=True)
class Break:
    chain: str
    kind: BreakKind
    seq: int | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"chain": self.chain, "kind": self.kind.value, "seq": self.seq, "detail": self.detail}


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


@dataclass(frozen=True)
class AuditQuery:
    """Filters of GET /api/audit. ``before`` is the keyset cursor: (time, chain, seq) of the last record
    seen."""

    vault: str | None = None
    secret_name: str | None = None
    action: Action | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    before: tuple[str, str, int] | None = None

    @property
    def chain(self) -> str | None:
        return chain_of(self.vault, self.secret_name) if self.vault and self.secret_name else None


#: Returns the MAC key for a key id, or None when there is no such key.
KeyLookup = Callable[[str], bytes | None]


@dataclass
class ChainVerdict:
    chain: str
    records: int
    last_seq: int
    breaks: list[Break]


def verify_chain(  # noqa: PLR0912 - one branch per kind of break, kept together on purpose
    chain: str, stored: Iterable[StoredRecord], keys: KeyLookup, head: ChainHead | None = None
) -> ChainVerdict:
    """Walk one chain in position order and report every break."""
    breaks: list[Break] = []
    expected = 1
    prev_mac = GENESIS_MAC
    count = 0
    last_seq = 0
    for item in sorted(stored, key=lambda s: s.position):
        count += 1
        fields = dict(item.fields)
        try:
            seq = int(fields.pop("seq"))
            stored_prev = str(fields.pop("prev_mac"))
            key_id = str(fields.pop("key_id"))
            mac = str(fields.pop("mac"))
            event_from_fields(fields)  # every field present and valid
        except (KeyError, ValueError, TypeError) as err:
            breaks.append(Break(chain, BreakKind.MALFORMED, item.position, f"unreadable record: {err}"))
            expected, prev_mac, last_seq = item.position + 1, "", item.position
            continue
        key = keys(key_id)
        if key is None:
            breaks.append(
                Break(chain, BreakKind.UNKNOWN_KEY, item.position, f"MAC key {key_id!r} does not exist")
            )
            mac_ok = False
        else:
            mac_ok = hmac.compare_digest(
                mac, compute_mac(key, canonical(chain, seq, stored_prev, key_id, fields))
            )
        if item.position > expected:
            missing = f"{expected}" if item.position == expected + 1 else f"{expected}-{item.position - 1}"
            breaks.append(Break(chain, BreakKind.DELETED, expected, f"record(s) {missing} missing"))
        if seq != item.position:
            if mac_ok:
                breaks.append(
                    Break(
                        chain,
                        BreakKind.REORDERED,
                        item.position,
                        f"record {seq} stands at position {item.position}",
                    )
                )
            else:
                breaks.append(Break(chain, BreakKind.EDITED, item.position, "content does not match its MAC"))
        elif not mac_ok and key is not None:
            breaks.append(Break(chain, BreakKind.EDITED, seq, "content does not match its MAC"))
        elif (
            mac_ok
            and item.position == expected
            and prev_mac
            and not hmac.compare_digest(stored_prev, prev_mac)
        ):
            breaks.append(Break(chain, BreakKind.REORDERED, seq, "does not follow the record before it"))
        expected = item.position + 1
        prev_mac = mac
        last_seq = item.position
    if head is not None:
        if head.seq > last_seq:
            breaks.append(
                Break(
                    chain,
                    BreakKind.TRUNCATED,
                    last_seq + 1,
                    f"chain head is at {head.seq}, records end at {last_seq}",
                )
            )
        elif head.seq < last_seq:
            breaks.append(
                Break(
                    chain, BreakKind.UNEXPECTED, head.seq + 1, f"records beyond the chain head ({head.seq})"
                )
            )
        elif count and not hmac.compare_digest(head.mac, prev_mac):
            breaks.append(
                Break(chain, BreakKind.EDITED, last_seq, "newest record does not match the chain head")
            )
    return ChainVerdict(chain=chain, records=count, last_seq=last_seq, breaks=breaks)


def check_against_digest(
    verdicts: Mapping[str, ChainVerdict], digest: Digest, macs_at: Callable[[str, int], str | None]
) -> list[Break]:
    """Every chain the digest saw must still reach the digest's head with the same MAC there.

    ``macs_at(chain, seq)`` is the stored MAC of record ``seq`` of ``chain``, or None when absent.
    """
    breaks: list[Break] = []
    for chain, head in sorted(digest.heads.items()):
        verdict = verdicts.get(chain)
        last = verdict.last_seq if verdict else 0
        if last < head.seq:
            breaks.append(
                Break(
                    chain,
                    BreakKind.TRUNCATED,
                    last + 1,
                    f"digest {digest.seq} saw this chain at {head.seq}, records end at {last}",
                )
            )
            continue
        stored_mac = macs_at(chain, head.seq)
        if stored_mac is None or not hmac.compare_digest(stored_mac, head.mac):
            breaks.append(
                Break(chain, BreakKind.EDITED, head.seq, f"record differs from what digest {digest.seq} saw")
            )
    return breaks


def verify_digests(digests: Sequence[Digest], keys: KeyLookup) -> list[Break]:
    """Walk the digest chain (ordered by seq) and report every forged, missing or reordered digest."""
    breaks: list[Break] = []
    prev_mac = GENESIS_MAC
    expected = 1
    for digest in sorted(digests, key=lambda d: d.seq):
        key = keys(digest.key_id)
        payload = digest_payload(digest.seq, digest.time, digest.heads, digest.prev_mac, digest.key_id)
        valid = key is not None and hmac.compare_digest(digest.mac, compute_mac(key, payload))
        if not valid:
            breaks.append(
                Break(DIGEST_CHAIN, BreakKind.FORGED_DIGEST, digest.seq, "digest does not match its MAC")
            )
        elif digest.seq != expected:
            missing = f"digest(s) {expected}-{digest.seq - 1} missing"
            breaks.append(Break(DIGEST_CHAIN, BreakKind.DELETED, expected, missing))
        elif prev_mac and not hmac.compare_digest(digest.prev_mac, prev_mac):
            follows = "does not follow the digest before it"
            breaks.append(Break(DIGEST_CHAIN, BreakKind.FORGED_DIGEST, digest.seq, follows))
        # After a forged digest the next link cannot be judged: report the forgery once, not twice.
        prev_mac = digest.mac if valid else ""
        expected = digest.seq + 1
    return breaks
