"""In-memory fakes of the ports, for unit and functions tests. They keep state the tests assert on."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.domain.audit import (
    DIGEST_CHAIN,
    GENESIS_MAC,
    AnchoredDigest,
    AuditEvent,
    AuditQuery,
    AuditRecord,
    ChainContents,
    ChainHead,
    ChainTampered,
    Digest,
    StoredAuditRow,
    StoredRecord,
    event_fields,
    format_time,
    seal_all,
    seal_digest,
)
from shared.domain.errors import Conflict, DependencyUnavailable, NotFound
from shared.domain.findings import StoredFinding, review
from shared.domain.notifications import Notification
from shared.domain.state import Versioned
from shared.ports import MacKeyRing


class FixedClock:
    def __init__(self, now: datetime | None = None) -> None:
        self.current = now or datetime(2026, 11, 29, 10, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> None:
        self.current += delta


class FakeKeyRing:
    def __init__(self) -> None:
        self.keys = {"key1": b"\x01" * 32}
        self.current_id = "key1"
        self.available = True

    def current(self) -> tuple[str, bytes]:
        if not self.available:
            raise DependencyUnavailable("key_vault", "unreachable")
        return self.current_id, self.keys[self.current_id]

    def get(self, key_id: str) -> bytes | None:
        return self.keys.get(key_id)


class InMemoryAuditLog:
    """AuditLog + AuditReader with the same sealing and the same tamper checks as the table adapter.
    Records and heads are kept apart, as in the table, so tests can cut one without the other.
    ``available=False`` makes every write fail the way an unreachable store does."""

    def __init__(self, keys: MacKeyRing | None = None) -> None:
        self.keys = keys or FakeKeyRing()
        self.records: dict[str, list[AuditRecord]] = {}
        self.heads: dict[str, ChainHead] = {}
        self.digests: list[Digest] = []
        self.available = True

    def _after(self, chain: str, head: ChainHead, records: list[AuditRecord]) -> None:
        stored = self.records.setdefault(chain, [])
        taken = {r.seq for r in stored}
        if any(r.seq in taken for r in records):
            raise ChainTampered(chain, "has records beyond its head")
        stored += records
        self.heads[chain] = ChainHead(records[-1].seq, records[-1].mac)

    def append(self, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        if not self.available:
            raise DependencyUnavailable("audit_store", "unreachable (connection failed)")
        key_id, key = self.keys.current()
        out: list[AuditRecord] = []
        for event in events:
            head = self.heads.get(event.chain, ChainHead(0, GENESIS_MAC))
            records = seal_all([event], head.seq, head.mac, key_id, key)
            self._after(event.chain, head, records)
            out += records
        return out

    def repair(self, chain: str, after: ChainHead, event: AuditEvent, seen: ChainHead | None) -> AuditRecord:
        if self.heads.get(chain) != seen:
            raise Conflict(f"audit chain {chain} changed while being repaired")
        key_id, key = self.keys.current()
        records = seal_all([event], after.seq, after.mac, key_id, key)
        self._after(chain, after, records)
        return records[0]

    @property
    def events(self) -> list[AuditEvent]:
        return [r.event for chain in self.records.values() for r in chain]

    def _stored(self, record: AuditRecord) -> StoredRecord:
        fields = {k: v for k, v in event_fields(record.event).items() if v is not None}
        fields.update(seq=record.seq, prev_mac=record.prev_mac, key_id=record.key_id, mac=record.mac)
        return StoredRecord(position=record.seq, fields=fields)

    def list_records(self, query: AuditQuery) -> Iterable[StoredAuditRow]:
        for chain, records in self.records.items():
            if query.chain and chain != query.chain:
                continue
            for record in records:
                e = record.event
                if query.vault and e.vault != query.vault:
                    continue
                if query.action and e.action != query.action:
                    continue
                if query.actor and e.actor.id != query.actor:
                    continue
                if query.since and e.time < query.since:
                    continue
                if query.until and e.time >= query.until:
                    continue
                if query.before and format_time(e.time) > query.before[0]:
                    continue
                yield StoredAuditRow(chain=chain, record=self._stored(record))

    def read_chains(self, chain: str | None = None) -> dict[str, ChainContents]:
        names = set(self.records) | set(self.heads)
        return {
            name: ChainContents(
                records=[self._stored(r) for r in self.records.get(name, [])], head=self.heads.get(name)
            )
            for name in sorted(names)
            if chain is None or name == chain
        }

    def read_heads(self) -> dict[str, ChainHead]:
        return dict(self.heads)

    def read_range(self, chain: str, first: int, last: int) -> list[StoredRecord]:
        return [self._stored(r) for r in self.records.get(chain, []) if first <= r.seq <= last]

    def read_digests(self, since: int = 1) -> list[Digest]:
        return [d for d in self.digests if d.seq >= since]

    def append_digest(
        self,
        previous: Digest | None,
        heads: Mapping[str, ChainHead],
        time: datetime,
        keys: MacKeyRing,
        held: Sequence[str] = (),
    ) -> Digest:
        if not self.available:
            raise DependencyUnavailable("audit_store", "unreachable (connection failed)")
        key_id, key = keys.current()
        prev = previous
        if any(d.seq > (prev.seq if prev else 0) for d in self.digests):
            raise Conflict("another digest was sealed meanwhile")
        digest = seal_digest(
            (prev.seq if prev else 0) + 1, time, heads, prev.mac if prev else GENESIS_MAC, key_id, key, held
        )
        self.digests.append(digest)
        assert DIGEST_CHAIN not in heads
        return digest


class InMemoryAnchor:
    """DigestAnchor: the versions written, newest last (Key Vault keeps them all)."""

    def __init__(self) -> None:
        self.versions: list[AnchoredDigest] = []

    def read(self) -> AnchoredDigest | None:
        return self.versions[-1] if self.versions else None

    def write(self, digest: Digest) -> None:
        self.versions.append(AnchoredDigest(digest.seq, digest.mac, digest.time))


class InMemoryStateStore:
    """StateStore: compare-and-swap on versions, like Table entities and their ETags."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Versioned] = {}
        self._versions = 0
        self._lock = threading.RLock()  # each call atomic, as one Table request is

    def _next(self, state: Mapping[str, Any]) -> Versioned:
        self._versions += 1
        return Versioned(state={k: v for k, v in state.items() if v is not None}, etag=f"v{self._versions}")

    def get(self, partition: str, key: str) -> Versioned | None:
        return self.rows.get((partition, key))

    def create(self, partition: str, key: str, state: Mapping[str, Any]) -> Versioned:
        with self._lock:
            if (partition, key) in self.rows:
                raise Conflict(f"{partition}/{key} exists already")
            self.rows[(partition, key)] = stored = self._next(state)
            return stored

    def replace(self, partition: str, key: str, state: Mapping[str, Any], etag: str) -> Versioned:
        with self._lock:
            current = self.rows.get((partition, key))
            if current is None:
                raise NotFound(f"{partition}/{key} does not exist")
            if current.etag != etag:
                raise Conflict(f"{partition}/{key} changed since it was read")
            self.rows[(partition, key)] = stored = self._next(state)
            return stored

    def delete(self, partition: str, key: str, etag: str) -> None:
        with self._lock:
            current = self.rows.get((partition, key))
            if current is None:
                raise NotFound(f"{partition}/{key} does not exist")
            if current.etag != etag:
                raise Conflict(f"{partition}/{key} changed since it was read")
            del self.rows[(partition, key)]


class InMemoryFindings:
    def __init__(self) -> None:
        self.rows: dict[str, StoredFinding] = {}
        self.available = True

    def _check(self) -> None:
        if not self.available:
            raise DependencyUnavailable("audit_store", "unreachable")

    def claim(self, finding: StoredFinding) -> bool:
        self._check()
        if finding.id in self.rows:
            return False
        self.rows[finding.id] = replace(finding, audited=False, notified=False, status="open")
        return True

    def get(self, finding_id: str) -> StoredFinding | None:
        self._check()
        return self.rows.get(finding_id)

    def pending(self) -> list[StoredFinding]:
        self._check()
        return [f for f in self.rows.values() if not (f.audited and f.notified)]

    def mark_audited(self, finding_id: str) -> None:
        self._check()
        self.rows[finding_id] = replace(self.rows[finding_id], audited=True)

    def mark_notified(self, finding_id: str) -> None:
        self._check()
        self.rows[finding_id] = replace(self.rows[finding_id], notified=True)

    def mark_reviewed(self, finding_id: str, reviewer: str, note: str | None, time: datetime) -> None:
        self._check()
        if finding_id not in self.rows:
            raise NotFound(finding_id)
        review(self.rows[finding_id], reviewer, note, time)  # InvalidTransition when not open
        self.rows[finding_id] = replace(self.rows[finding_id], status="reviewed", reviewer=reviewer)


class RecordingPublisher:
    def __init__(self) -> None:
        self.sent: list[Notification] = []
        self.available = True

    def publish(self, notifications: Sequence[Notification]) -> None:
        if not self.available:
            raise DependencyUnavailable("event_grid", "HTTP 503")
        self.sent.extend(notifications)
