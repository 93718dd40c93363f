"""In-memory fakes of the ports, for unit and functions tests. They keep state the tests assert on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from shared.domain.audit import (
    DIGEST_CHAIN,
    GENESIS_MAC,
    AuditEvent,
    AuditQuery,
    AuditRecord,
    ChainContents,
    ChainHead,
    Digest,
    StoredAuditRow,
    StoredRecord,
    event_fields,
    format_time,
    seal_all,
    seal_digest,
)
from shared.domain.errors import Conflict, DependencyUnavailable, NotFound
from shared.domain.findings import StoredFinding
from shared.domain.notifications import Notification
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
    """AuditLog + AuditReader with the same sealing as the table adapter. ``available=False`` makes
    every write fail the way an unreachable store does."""

    def __init__(self, keys: MacKeyRing | None = None) -> None:
        self.keys = keys or FakeKeyRing()
        self.records: dict[str, list[AuditRecord]] = {}
        self.digests: list[Digest] = []
        self.available = True

    def append(self, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        if not self.available:
            raise DependencyUnavailable("audit_store", "unreachable (connection failed)")
        key_id, key = self.keys.current()
        out: list[AuditRecord] = []
        for event in events:
            chain = self.records.setdefault(event.chain, [])
            head_seq, head_mac = (chain[-1].seq, chain[-1].mac) if chain else (0, GENESIS_MAC)
            record = seal_all([event], head_seq, head_mac, key_id, key)[0]
            chain.append(record)
            out.append(record)
        return out

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
        return {
            name: ChainContents(
                records=[self._stored(r) for r in records],
                head=ChainHead(records[-1].seq, records[-1].mac) if records else None,
            )
            for name, records in self.records.items()
            if chain is None or name == chain
        }

    def read_heads(self) -> dict[str, ChainHead]:
        return {name: ChainHead(r[-1].seq, r[-1].mac) for name, r in self.records.items() if r}

    def read_digests(self) -> list[Digest]:
        return list(self.digests)

    def append_digest(self, heads: Mapping[str, ChainHead], time: datetime, keys: MacKeyRing) -> Digest:
        if not self.available:
            raise DependencyUnavailable("audit_store", "unreachable (connection failed)")
        key_id, key = keys.current()
        prev = self.digests[-1] if self.digests else None
        digest = seal_digest(
            (prev.seq if prev else 0) + 1, time, heads, prev.mac if prev else GENESIS_MAC, key_id, key
        )
        self.digests.append(digest)
        assert DIGEST_CHAIN not in heads
        return digest


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
        if self.rows[finding_id].status == "reviewed":
            raise Conflict(finding_id)
        self.rows[finding_id] = replace(self.rows[finding_id], status="reviewed", reviewer=reviewer)


class RecordingPublisher:
    def __init__(self) -> None:
        self.sent: list[Notification] = []
        self.available = True

    def publish(self, notifications: Sequence[Notification]) -> None:
        if not self.available:
            raise DependencyUnavailable("event_grid", "HTTP 503")
        self.sent.extend(notifications)
