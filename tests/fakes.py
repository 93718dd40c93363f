"""In-memory fakes of the ports, for unit and functions tests. They keep state the tests assert on."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
    DigestNotes,
    RecordPosition,
    StoredAuditRow,
    StoredRecord,
    event_fields,
    paged,
    parse_time,
    seal_all,
    seal_digest,
)
from shared.domain.errors import (
    Conflict,
    DependencyUnavailable,
    Forbidden,
    NoSuchSecret,
    NotFound,
    SecretDisabled,
)
from shared.domain.findings import StoredFinding, review
from shared.domain.notifications import Notification
from shared.domain.rotation import RequestsNotSent, RotationRequest
from shared.domain.secrets import (
    SecretItem,
    SecretValue,
    SecretVersion,
    is_version_id,
    validate_name,
    validate_tags,
    validate_value,
)
from shared.domain.state import StateWrite, Versioned
from shared.domain.targets import TargetSecret
from shared.ports import Clock, MacKeyRing


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
    ``available=False`` makes every write fail the way an unreachable store does; ``fails(event)`` picks
    the appends that fail so (a store that stops answering for those)."""

    def __init__(self, keys: MacKeyRing | None = None) -> None:
        self.keys = keys or FakeKeyRing()
        self.records: dict[str, list[AuditRecord]] = {}
        self.heads: dict[str, ChainHead] = {}
        self.digests: list[Digest] = []
        #: Sealed hourly aggregates by (vault, hour), and the coverage marks by vault, as stored.
        self.aggregates: dict[tuple[str, datetime], dict[str, Any]] = {}
        self.evidence: dict[tuple[str, datetime, int], dict[str, Any]] = {}
        self.coverage: dict[str, dict[str, Any]] = {}
        #: The sealed last full verification by vault, as stored.
        self.verifications: dict[str, dict[str, Any]] = {}
        self.available = True
        self.fails: Callable[[AuditEvent], bool] = lambda event: False

    def _after(self, chain: str, head: ChainHead, records: list[AuditRecord]) -> None:
        stored = self.records.setdefault(chain, [])
        taken = {r.seq for r in stored}
        if any(r.seq in taken for r in records):
            raise ChainTampered(chain, "has records beyond its head")
        stored += records
        self.heads[chain] = ChainHead(records[-1].seq, records[-1].mac)

    def append(self, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        if not self.available or any(self.fails(e) for e in events):
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

    def write_aggregates(
        self,
        vault: str,
        hours: Sequence[Mapping[str, Any]],
        coverage: Mapping[str, Any],
        evidence: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        if not self.available:
            raise DependencyUnavailable("audit_store", "unreachable (connection failed)")
        for fields in evidence:
            self.evidence[(vault, parse_time(str(fields["hour"])), int(fields["part"]))] = dict(fields)
        for fields in hours:
            self.aggregates[(vault, parse_time(str(fields["hour"])))] = dict(fields)
        self.coverage[vault] = dict(coverage)

    def read_aggregates(
        self, vault: str, since: datetime, until: datetime
    ) -> list[tuple[datetime, Mapping[str, Any]]]:
        return [
            (hour, f)
            for (v, hour), f in sorted(self.aggregates.items())
            if v == vault and since <= hour < until
        ]

    def read_evidence(
        self, vault: str, since: datetime, until: datetime
    ) -> dict[datetime, list[Mapping[str, Any]]]:
        found: dict[datetime, list[Mapping[str, Any]]] = {}
        for (v, hour, _), fields in sorted(self.evidence.items()):
            if v == vault and since <= hour < until:
                found.setdefault(hour, []).append(fields)
        return found

    def read_coverage(self, vault: str) -> Mapping[str, Any] | None:
        return self.coverage.get(vault)

    def write_verification(self, vault: str, fields: Mapping[str, Any]) -> None:
        if not self.available:
            raise DependencyUnavailable("audit_store", "unreachable (connection failed)")
        self.verifications[vault] = dict(fields)

    def read_verification(self, vault: str) -> Mapping[str, Any] | None:
        return self.verifications.get(vault)

    def remove(self, chain: str, records: Sequence[StoredRecord]) -> int:
        """Drop these records of ``chain`` (the retention export archived them)."""
        gone = {r.position for r in records}
        kept = [r for r in self.records.get(chain, []) if r.seq not in gone]
        removed = len(self.records.get(chain, [])) - len(kept)
        self.records[chain] = kept
        return removed

    def index(self, chain: str, records: Sequence[StoredRecord]) -> int:
        """Nothing to index: ``page_records`` reads the records themselves. Counted, for tests."""
        self.indexed = getattr(self, "indexed", 0) + len(records)
        return len(records)

    def page_records(
        self, query: AuditQuery, limit: int, after: RecordPosition | None = None
    ) -> tuple[list[StoredAuditRow], RecordPosition | None]:
        """The same order as the table's index (time newest first, then chain, then sequence newest
        first; one chain's by sequence), a position naming the next row's key."""

        def key(row: StoredAuditRow) -> str:
            moment = parse_time(str(row.record.fields["time"]))
            delta = moment - datetime(1, 1, 1, tzinfo=UTC)  # in whole microseconds, as the index keys it
            micros = (delta.days * 86400 + delta.seconds) * 10**6 + delta.microseconds
            inverted_seq = f"{10**12 - 1 - row.record.position:012d}"
            if query.chain:
                return inverted_seq
            return f"{10**18 - 1 - micros:018d}:{row.chain}:{inverted_seq}"

        rows = sorted(self.list_records(query), key=key)
        if after is not None:
            rows = [row for row in rows if key(row) >= after[1]]
        following = ("fake", key(rows[limit])) if len(rows) > limit else None
        return rows[:limit], following

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
                yield StoredAuditRow(chain=chain, record=self._stored(record))

    def iter_chains(self, chain: str | None = None) -> Iterator[tuple[str, ChainContents]]:
        yield from self.read_chains(chain).items()

    def read_chains(self, chain: str | None = None) -> dict[str, ChainContents]:
        names = set(self.records) | set(self.heads)
        return {
            name: ChainContents(
                records=[self._stored(r) for r in self.records.get(name, [])], head=self.heads.get(name)
            )
            for name in sorted(names)
            if chain is None or name == chain
        }

    def read_head(self, chain: str) -> ChainHead | None:
        return self.heads.get(chain)

    def read_heads(self) -> dict[str, ChainHead]:
        return dict(self.heads)

    def read_range(self, chain: str, first: int, last: int) -> list[StoredRecord]:
        return [self._stored(r) for r in self.records.get(chain, []) if first <= r.seq <= last]

    def read_digests(self, since: int = 1, chain: str | None = None) -> list[Digest]:
        found = [d for d in self.digests if d.seq >= since]
        if chain is None:
            return found
        return [_one_page(d, chain) for d in found]

    def append_digest(
        self,
        previous: Digest | None,
        heads: Mapping[str, ChainHead],
        time: datetime,
        keys: MacKeyRing,
        held: Sequence[str] = (),
        notes: DigestNotes | None = None,
    ) -> Digest:
        if not self.available:
            raise DependencyUnavailable("audit_store", "unreachable (connection failed)")
        key_id, key = keys.current()
        after = ChainHead(previous.seq, previous.mac) if previous else ChainHead(0, GENESIS_MAC)
        if notes is not None and notes.after is not None:
            after = notes.after
        if any(d.seq > after.seq for d in self.digests):
            raise Conflict("another digest was sealed meanwhile")
        digest = seal_digest(after.seq + 1, time, heads, after.mac, key_id, key, held, notes)
        self.digests.append(digest)
        assert DIGEST_CHAIN not in heads
        return digest


def _one_page(digest: Digest, chain: str) -> Digest:
    """The digest as read for one chain: the heads of that chain's page only."""
    page = digest.bucket(chain)
    if page is None:
        return replace(digest, heads={}, buckets_read=())
    heads = paged(digest.heads, digest.fanout).get(page.bucket, {})
    return replace(digest, heads=heads, buckets_read=(page.bucket,))


class InMemoryArchive:
    """AuditArchive: each chain's archived records in order, and lines that are no record (as somebody
    appending to the blob would leave)."""

    def __init__(self) -> None:
        self.chains: dict[str, list[StoredRecord]] = {}
        self.strays: dict[str, list[str]] = {}

    def archived_through(self, chain: str) -> int:
        return self.chains[chain][-1].position if self.chains.get(chain) else 0

    def append(self, chain: str, records: Sequence[StoredRecord]) -> None:
        if records and records[0].position <= self.archived_through(chain):
            raise ValueError(f"{chain} is archived through {self.archived_through(chain)}")
        self.chains.setdefault(chain, []).extend(StoredRecord(r.position, dict(r.fields)) for r in records)

    def read_chain(self, chain: str) -> ChainContents:
        return ChainContents(list(self.chains.get(chain, [])), None, tuple(self.strays.get(chain, [])))


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

    def _check(self, partition: str, key: str, etag: str) -> None:
        current = self.rows.get((partition, key))
        if current is None:
            raise NotFound(f"{partition}/{key} does not exist")
        if current.etag != etag:
            raise Conflict(f"{partition}/{key} changed since it was read")

    def replace(self, partition: str, key: str, state: Mapping[str, Any], etag: str) -> Versioned:
        with self._lock:
            self._check(partition, key, etag)
            self.rows[(partition, key)] = stored = self._next(state)
            return stored

    def delete(self, partition: str, key: str, etag: str) -> None:
        with self._lock:
            self._check(partition, key, etag)
            del self.rows[(partition, key)]

    def commit(self, partition: str, writes: Sequence[StateWrite]) -> list[Versioned]:
        with self._lock:
            if len({w.key for w in writes}) != len(writes) or len(writes) > 100:
                raise ValueError("a transaction writes each key once, at most 100")
            for write in writes:  # all checked before anything is written
                current = self.rows.get((partition, write.key))
                if write.etag is None and current is not None:
                    raise Conflict(f"{partition}/{write.key} exists already")
                if write.etag is not None and current is None:
                    raise NotFound(f"{partition}/{write.key} does not exist")
                if write.etag is not None and current is not None and current.etag != write.etag:
                    raise Conflict(f"{partition}/{write.key} changed since it was read")
            stored = []
            for write in writes:
                self.rows[(partition, write.key)] = version = self._next(write.state)
                stored.append(version)
            return stored

    def list(self, partition: str, *, start: str = "", stop: str | None = None) -> dict[str, Versioned]:
        with self._lock:
            return {  # in key order, as the Table service answers
                k: v
                for (p, k), v in sorted(self.rows.items())
                if p == partition and k >= start and (stop is None or k < stop)
            }


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


@dataclass
class _StoredVersion:
    version: str
    value: str
    enabled: bool
    created: datetime
    updated: datetime
    not_before: datetime | None
    expires: datetime | None
    content_type: str | None
    tags: dict[str, str]


@dataclass
class _StoredSecret:
    name: str
    versions: list[_StoredVersion] = field(default_factory=list)  # creation order; the newest is current
    key_id: str | None = None  # a certificate-backed secret's key (its versions' kid add the version)


class InMemorySecretStore:
    """SecretStore with the vault's behaviour where rotation relies on it: per-version tags (a new version
    carries only the tags given), versions and secrets listed in a seeded-random order, ``created`` in
    whole seconds of ``clock`` (versions set without advancing the clock tie), disabled versions unreadable
    (SecretDisabled), case-insensitive names, certificate-backed secrets (``add_certificate``; writing them
    is Conflict) and the vault's limits (InvalidSecret).

    ``available=False`` fails every call as an unreachable vault does; method names in ``denied`` are
    refused as the vault refuses a missing role (Forbidden). ``secrets`` is the state tests assert on."""

    VAULT_URL = "https://fake-vault.vault.azure.net"

    def __init__(self, clock: Clock | None = None, seed: int = 0) -> None:
        self.clock: Clock = clock or FixedClock()
        self.secrets: dict[str, _StoredSecret] = {}  # by lower-case name: Key Vault's are case-insensitive
        self.deleted: dict[str, _StoredSecret] = {}  # soft-deleted, recoverable
        self.available = True
        self.denied: set[str] = set()
        self._random = random.Random(seed)

    def list_properties(self) -> Iterator[SecretItem]:
        self._call("list_properties")
        secrets = list(self.secrets.values())
        self._random.shuffle(secrets)
        for secret in secrets:
            current = vars(self._version(secret, secret.versions[-1]))
            yield SecretItem(**{k: v for k, v in current.items() if k not in {"version", "key_id"}})

    def list_versions(self, name: str) -> list[SecretVersion]:
        self._call("list_versions", name)
        secret = self._secret(name)
        versions = [self._version(secret, v, listed=True) for v in secret.versions]
        self._random.shuffle(versions)
        return versions

    def get_properties(self, name: str, version: str | None = None) -> SecretVersion:
        self._call("get_properties", name)
        secret, found = self._find(name, version)
        if version is None and not found.enabled:
            raise SecretDisabled("key_vault: the secret version is disabled")
        return self._version(secret, found)

    def get_value(self, name: str, version: str | None = None) -> SecretValue:
        self._call("get_value", name)
        secret, found = self._find(name, version)
        if not found.enabled:
            raise SecretDisabled("key_vault: the secret version is disabled")
        return SecretValue(self._version(secret, found), found.value)

    def set_value(
        self,
        name: str,
        value: str,
        *,
        content_type: str | None,
        tags: Mapping[str, str],
        not_before: datetime | None = None,
        expires: datetime | None = None,
        enabled: bool = True,
    ) -> SecretVersion:
        self._call("set_value", name)
        validate_value(value)
        validate_tags(tags)
        if name.lower() in self.deleted:
            raise Conflict("key_vault: HTTP 409 (ObjectIsDeletedButRecoverable)")
        secret = self.secrets.get(name.lower())
        if secret is not None and secret.key_id is not None:
            raise Conflict("key_vault: HTTP 409 (the secret backs a certificate)")
        if secret is None:
            secret = self.secrets[name.lower()] = _StoredSecret(name)
        return self._append(secret, value, enabled, not_before, expires, content_type, tags)

    def update_properties(
        self,
        name: str,
        version: str,
        *,
        enabled: bool | None = None,
        tags: Mapping[str, str] | None = None,
        expires: datetime | None = None,
        not_before: datetime | None = None,
    ) -> SecretVersion:
        self._call("update_properties", name)
        if tags is not None:
            validate_tags(tags)
        secret, found = self._find(name, version)
        if secret.key_id is not None:
            raise Conflict("key_vault: HTTP 409 (the secret backs a certificate)")
        if enabled is not None:
            found.enabled = enabled
        if tags is not None:
            found.tags = dict(tags)
        if expires is not None:
            found.expires = _whole_seconds(expires)
        if not_before is not None:
            found.not_before = _whole_seconds(not_before)
        found.updated = self._now()
        return self._version(secret, found)

    def delete(self, name: str) -> None:
        self._call("delete", name)
        self.deleted[name.lower()] = self._secret(name)
        del self.secrets[name.lower()]

    def get_deleted(self, name: str) -> SecretItem:
        self._call("get_deleted", name)
        secret = self.deleted.get(name.lower())
        if secret is None:
            raise NoSuchSecret(name)
        current = vars(self._version(secret, secret.versions[-1]))
        return SecretItem(**{k: v for k, v in current.items() if k not in {"version", "key_id"}})

    def recover(self, name: str) -> None:
        self._call("recover", name)
        secret = self.deleted.pop(name.lower(), None)
        if secret is None:
            raise NoSuchSecret(name)
        self.secrets[name.lower()] = secret

    def add_certificate(self, name: str, value: str = "MIIcertificate-pfx", **tags: str) -> SecretVersion:
        """What creating (or renewing) a Key Vault certificate does to the secret of the same name: a new
        certificate-backed version (``managed``, with its key's ``kid``), content type PKCS#12."""
        validate_name(name)
        secret = self.secrets.get(name.lower())
        if secret is not None and secret.key_id is None:
            raise Conflict("key_vault: a secret of that name exists and backs no certificate")
        if secret is None:
            secret = self.secrets[name.lower()] = _StoredSecret(name, key_id=f"{self.VAULT_URL}/keys/{name}")
        now = self._now()
        return self._append(secret, value, True, now, now + timedelta(days=365), "application/x-pkcs12", tags)

    def versions_of(self, name: str) -> list[str]:
        """The version ids of ``name`` in creation order, which the store itself never reveals."""
        return [v.version for v in self.secrets[name.lower()].versions]

    def _append(
        self,
        secret: _StoredSecret,
        value: str,
        enabled: bool,
        not_before: datetime | None,
        expires: datetime | None,
        content_type: str | None,
        tags: Mapping[str, str],
    ) -> SecretVersion:
        now = self._now()
        stored = _StoredVersion(
            version=self._random.getrandbits(128).to_bytes(16, "big").hex(),
            value=value,
            enabled=enabled,
            created=now,
            updated=now,
            not_before=_whole_seconds(not_before),
            expires=_whole_seconds(expires),
            content_type=content_type,
            tags=dict(tags),
        )
        secret.versions.append(stored)
        return self._version(secret, stored)

    def _call(self, operation: str, name: str | None = None) -> None:
        if not self.available:
            raise DependencyUnavailable("key_vault", "unreachable (connection failed)")
        if name is not None:
            validate_name(name)
        if operation in self.denied:
            raise Forbidden("key_vault: forbidden (HTTP 403, Forbidden)")

    def _now(self) -> datetime:
        now = _whole_seconds(self.clock.now())
        assert now is not None
        return now

    def _secret(self, name: str) -> _StoredSecret:
        secret = self.secrets.get(name.lower())
        if secret is None:
            raise NoSuchSecret(name)
        return secret

    def _find(self, name: str, version: str | None) -> tuple[_StoredSecret, _StoredVersion]:
        if version is not None and not is_version_id(version):
            raise NotFound("key_vault: not found")
        if version is not None and name.lower() not in self.secrets:
            raise NotFound("key_vault: not found")  # as the vault answers: a version, or its secret?
        secret = self._secret(name)
        if version is None:
            return secret, secret.versions[-1]
        for stored in secret.versions:
            if stored.version == version.lower():
                return secret, stored
        raise NotFound("key_vault: not found")

    def _version(self, secret: _StoredSecret, stored: _StoredVersion, listed: bool = False) -> SecretVersion:
        return SecretVersion(
            name=secret.name,
            version=stored.version,
            enabled=stored.enabled,
            created=stored.created,
            updated=stored.updated,
            not_before=stored.not_before,
            expires=stored.expires,
            content_type=stored.content_type,
            tags=dict(stored.tags),
            managed=secret.key_id is not None,
            # Key Vault's list items carry no kid: only a read of the version answers it.
            key_id=f"{secret.key_id}/{stored.version}" if secret.key_id and not listed else None,
        )


def _whole_seconds(time: datetime | None) -> datetime | None:
    """Key Vault keeps times as whole Unix seconds and answers them in UTC."""
    if time is None:
        return None
    aware = time if time.tzinfo is not None else time.replace(tzinfo=UTC)
    return aware.astimezone(UTC).replace(microsecond=0)


class RecordingRotationRequests:
    """RotationRequests: ``sent`` holds what was enqueued, ``batches`` each call's requests.
    ``available=False`` fails every send before anything is sent; ``fail_after=n`` sends ``n`` requests
    of the next call and fails with the rest (a queue that stops answering part-way)."""

    def __init__(self) -> None:
        self.sent: list[RotationRequest] = []
        self.batches: list[list[RotationRequest]] = []
        self.available = True
        self.fail_after: int | None = None

    def send(self, requests: Sequence[RotationRequest]) -> None:
        self.batches.append(list(requests))
        if not self.available:
            raise DependencyUnavailable("storage", "unreachable (connection failed)")
        if self.fail_after is not None and self.fail_after < len(requests):
            self.sent.extend(requests[: self.fail_after])
            raise RequestsNotSent("storage", "HTTP 503", requests[self.fail_after :])
        self.sent.extend(requests)


class TargetCrash(BaseException):
    """The process dies at this step (a crash, the function timeout): no handler of the product runs."""


class FakeTarget:
    """TargetRotator over a target that checks its own credentials: ``accepted`` is the set of values it
    takes now. ``single``: it holds one value (a database role's password: set replaces it); otherwise
    it takes old and new until finish (a webhook consumer). ``fail`` maps a step to what it raises there
    (an exception instance, raised once). ``calls``: (step, value or None) in order."""

    def __init__(self, initial: str, *, single: bool = False) -> None:
        self.accepted: set[str] = {initial}
        self.single = single
        self.fail: dict[str, BaseException] = {}
        self.calls: list[tuple[str, str | None]] = []
        self.crash_after: str | None = None

    def _step(self, step: str, value: str | None) -> None:
        self.calls.append((step, value))
        error = self.fail.pop(step, None)
        if error is not None:
            raise error

    def pending(self, secret: TargetSecret, generated: str) -> str:
        self._step("pending", None)
        return f"pending:{generated}"

    def tags(self, secret: TargetSecret) -> dict[str, str]:
        return {"target-tag": "fake"}

    def bind(self, secret: TargetSecret) -> dict[str, str]:
        self._step("bind", None)
        return self.tags(secret)

    def set(self, secret: TargetSecret, pending: str) -> None:
        self._step("set", pending)
        if pending not in self.accepted:
            self.accepted = {pending} if self.single else self.accepted | {pending}
        if self.crash_after == "set":
            self.crash_after = None
            raise TargetCrash("set")

    def test(self, secret: TargetSecret, pending: str) -> None:
        self._step("test", pending)
        if pending not in self.accepted:
            raise DependencyUnavailable("fake-target", "the pending value is not accepted")

    def finish(self, secret: TargetSecret, retired: str) -> None:
        self._step("finish", retired)
        if retired != secret.current:
            self.accepted.discard(retired)
