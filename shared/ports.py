"""Ports: one typing.Protocol per role the services need. Adapters (shared/adapters) implement them with
a technology; tests implement them with in-memory fakes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from shared.domain.audit import (
    AnchoredDigest,
    AuditEvent,
    AuditQuery,
    AuditRecord,
    ChainContents,
    ChainHead,
    Digest,
    DigestNotes,
    RecordPosition,
    StoredAuditRow,
    StoredRecord,
)
from shared.domain.findings import StoredFinding
from shared.domain.notifications import Notification
from shared.domain.rotation import RotationRequest
from shared.domain.secrets import SecretItem, SecretValue, SecretVersion
from shared.domain.state import StateWrite, Versioned
from shared.domain.targets import TargetSecret


class Clock(Protocol):
    """Where services get the time from, so tests can set it."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class DependencyProbe(Protocol):
    """A cheap, read-only call that proves a peer answers with the service's own identity."""

    def check(self) -> None:
        """Return when the peer answered.

        Raises DependencyUnavailable (or ConfigurationError when its settings are wrong).
        """
        ...


class SecretStore(Protocol):
    """The vault's secrets, as versions with properties. Only ``get_value`` returns a value.

    NoSuchSecret (a NotFound) says the vault holds no secret of the name at all, where a call is about the
    secret rather than one version (listing versions, the current version, delete, recover).

    Every call raises InvalidSecret (shared.domain.secrets) for a name outside Key Vault's rules, Forbidden
    when the vault refuses the service's own identity, DependencyUnavailable when it does not answer.
    Versions are addressed by id: the vault lists them in no order and stamps ``created`` in whole seconds.
    """

    def list_properties(self) -> Iterable[SecretItem]:
        """Every secret's current-version properties (disabled and certificate-backed ones included),
        fetched page by page while iterating, in no guaranteed order; never a value nor a version id.

        Errors (Forbidden, DependencyUnavailable) are raised while iterating.
        """
        ...

    def list_versions(self, name: str) -> list[SecretVersion]:
        """The properties of every version of ``name``, in no guaranteed order. Raises NotFound."""
        ...

    def get_properties(self, name: str, version: str | None = None) -> SecretVersion:
        """The properties of a version (None: the current one), a disabled one included when named by id.

        Raises NotFound (unknown name or version), SecretDisabled when ``version`` is None and the
        current version is disabled (its id cannot be read then).
        """
        ...

    def get_value(self, name: str, version: str | None = None) -> SecretValue:
        """A version's value and properties (None: the current version). Raises NotFound, SecretDisabled."""
        ...

    def set_value(  # noqa: PLR0913 - SecretClient.set_secret's properties, by keyword
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
        """Store a new version, which becomes the current one; return its properties. The new version
        carries exactly ``tags`` (none of the previous version's); times are kept in whole seconds.

        Raises InvalidSecret (value over 25 KiB, more than 15 tags, a tag over 256 characters), Conflict
        (the name is deleted but recoverable, or backs a certificate).
        """
        ...

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
        """Change one version's properties; None leaves a property as it is, ``tags`` replaces them all.
        Returns the updated properties.

        Raises NotFound, InvalidSecret (tags), Conflict (the secret backs a certificate).
        """
        ...

    def delete(self, name: str) -> None:
        """Soft-delete the secret, every version of it: recoverable (``recover``) for the vault's
        retention, never purged by this service. Returns once the vault accepted it (the deletion
        completes moments later). Raises NotFound, Conflict (being deleted or recovered already)."""
        ...

    def get_deleted(self, name: str) -> SecretItem:
        """The properties of the soft-deleted secret ``name``. Raises NoSuchSecret (not deleted, or
        purged)."""
        ...

    def recover(self, name: str) -> None:
        """Recover a soft-deleted secret with all its versions. Raises NoSuchSecret (not deleted, or
        purged), Conflict (being deleted or recovered, or the vault forbids it)."""
        ...


class MacKeyRing(Protocol):
    """The audit MAC keys. The key material lives in Key Vault, never in the audit store."""

    def current(self) -> tuple[str, bytes]:
        """(key id, key) to seal new records with; created on first use.

        Raises DependencyUnavailable when the key cannot be read or created.
        """
        ...

    def get(self, key_id: str) -> bytes | None:
        """The key with this id, or None when no such key exists. Raises DependencyUnavailable."""
        ...


class AuditLog(Protocol):
    """Append-only, chained audit records (see shared.domain.audit)."""

    def append(self, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        """Seal and store events atomically per chain, in order; return the stored records.

        Fail closed: raises DependencyUnavailable when any record could not be stored, and then the
        caller must not report its operation as done; ChainTampered (a DependencyUnavailable) at once,
        without retrying, when a chain's stored state was changed behind the service's back.
        """
        ...

    def repair(self, chain: str, after: ChainHead, event: AuditEvent, seen: ChainHead | None) -> AuditRecord:
        """Re-derive ``chain``'s head: seal ``event`` after the record ``after`` names and make it the
        head, in one atomic write, provided the head row still holds ``seen`` (None: missing or
        unreadable), what the repair verified against.

        Only for the repair service, after the chain's records verified. Raises Conflict when the chain
        changed meanwhile, DependencyUnavailable when the store cannot be written.
        """
        ...

    def write_aggregates(
        self,
        vault: str,
        hours: Sequence[Mapping[str, Any]],
        coverage: Mapping[str, Any],
        evidence: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Store the sealed evidence parts of ``vault``'s hours (``evidence_parts``: each replaces the one
        of its hour and number), then the sealed hourly aggregates (``aggregate_fields`` sealed: each
        replaces the one of its hour), then its sealed coverage mark. Raises DependencyUnavailable."""
        ...

    def write_verification(self, vault: str, fields: Mapping[str, Any]) -> None:
        """Replace ``vault``'s last full verification (sealed fields). Raises DependencyUnavailable."""
        ...

    def index(self, chain: str, records: Sequence[StoredRecord]) -> int:
        """Write again what ``page_records`` reads of these stored records of ``chain`` (idempotent): for
        the digest writer, so a record the append's own indexing missed (a crash, a failed write) is found
        by queries from the next digest on. Returns how many records were indexed. Raises
        DependencyUnavailable."""
        ...

    def remove(self, chain: str, records: Sequence[StoredRecord]) -> int:
        """Delete these records of ``chain`` from the table and their copies from the query index (the
        retention export archived them first); those already gone are skipped. Returns how many rows of
        the table were deleted. Raises DependencyUnavailable."""
        ...


class AuditArchive(Protocol):
    """Where records older than the retention are kept once they leave the table: one append-only file
    per chain, in a container no writer can change or delete (a time-based retention policy)."""

    def archived_through(self, chain: str) -> int:
        """The newest position of ``chain`` in the archive (0: none archived). Raises
        DependencyUnavailable."""
        ...

    def append(self, chain: str, records: Sequence[StoredRecord]) -> None:
        """Append ``records`` (in position order, each after what the archive holds of the chain) to the
        chain's file. Raises Conflict when another writer appended meanwhile, DependencyUnavailable."""
        ...

    def read_chain(self, chain: str) -> ChainContents:
        """The archived records of ``chain`` (head None; a line that is not a record is a stray row).
        Empty when nothing is archived. Raises DependencyUnavailable."""
        ...


class AuditReader(Protocol):
    """Read access to the stored chains and digests, as stored (for queries and verification)."""

    def list_records(self, query: AuditQuery) -> Iterable[StoredAuditRow]:
        """Every stored record matching the query's server-side filters, in no particular order."""
        ...

    def page_records(
        self, query: AuditQuery, limit: int, after: RecordPosition | None = None
    ) -> tuple[list[StoredAuditRow], RecordPosition | None]:
        """Up to ``limit`` records matching the query, newest first (one chain's: by sequence number),
        from ``after`` (a position this returned for the same query), and where the rest begins (None: no
        more). One request to the store whatever its size. The rows are as stored (a copy in an index,
        maybe): the caller authenticates them. A record committed in this process is in the pages;
        another process's may take a moment. Raises DependencyUnavailable."""
        ...

    def read_aggregates(
        self, vault: str, since: datetime, until: datetime
    ) -> list[tuple[datetime, Mapping[str, Any]]]:
        """``vault``'s stored hourly aggregates of the hours from ``since`` to before ``until``, each with the
        hour its place names, as stored (the caller checks their seals). Raises DependencyUnavailable."""
        ...

    def read_evidence(
        self, vault: str, since: datetime, until: datetime
    ) -> dict[datetime, list[Mapping[str, Any]]]:
        """``vault``'s stored evidence parts of the hours from ``since`` to before ``until``, by the hour
        their place names, as stored (the caller checks their seals). Raises DependencyUnavailable."""
        ...

    def read_coverage(self, vault: str) -> Mapping[str, Any] | None:
        """``vault``'s stored coverage mark of the aggregates, as stored. Raises DependencyUnavailable."""
        ...

    def read_verification(self, vault: str) -> Mapping[str, Any] | None:
        """``vault``'s last full verification, as stored (the caller checks its seal). Raises
        DependencyUnavailable."""
        ...

    def read_chains(self, chain: str | None = None) -> dict[str, ChainContents]:
        """Raw contents of one chain, or of all chains (the digest chain excluded)."""
        ...

    def iter_chains(self, chain: str | None = None) -> Iterator[tuple[str, ChainContents]]:
        """``read_chains`` one chain at a time (each once, in no given order), so a reader of every chain
        holds one in memory. Raises DependencyUnavailable while iterating."""
        ...

    def read_head(self, chain: str) -> ChainHead | None:
        """One chain's head (None: no head row, or one that cannot be read). Raises
        DependencyUnavailable."""
        ...

    def read_heads(self) -> dict[str, ChainHead]:
        """The head (newest sequence number and MAC) of every chain, the digest chain excluded. A head
        row that cannot be read is left out (to the digest writer, that chain has no head)."""
        ...

    def read_range(self, chain: str, first: int, last: int) -> list[StoredRecord]:
        """The stored records ``first`` to ``last`` of ``chain`` (those that exist), in no given order."""
        ...

    def read_digests(self, since: int = 1, chain: str | None = None) -> list[Digest]:
        """Every stored digest numbered ``since`` or later, with the heads of its pages (``chain``: only
        the page that chain is on, its ``buckets_read``; a page that is gone adds no heads). Raises
        DependencyUnavailable."""
        ...

    def append_digest(
        self,
        previous: Digest | None,
        heads: Mapping[str, ChainHead],
        time: datetime,
        keys: MacKeyRing,
        held: Sequence[str] = (),
        notes: DigestNotes | None = None,
    ) -> Digest:
        """Seal the given chain heads into the digest after ``previous`` (None: the first) and store it
        (``held``: the chains whose head was kept from the previous digest because it regressed;
        ``notes``: the digest it follows instead when the digest chain is broken, what it holds as
        broken, an incident's baseline). The pages ``previous`` names are not written again.

        Raises Conflict when another writer sealed a digest after ``previous`` meanwhile (nothing is
        written then), DependencyUnavailable."""
        ...


class DigestAnchor(Protocol):
    """The newest digest recorded where a storage writer cannot rewrite it (a Key Vault secret whose
    versions cannot be deleted one by one): verify compares the table with it."""

    def read(self) -> AnchoredDigest | None:
        """The newest anchored digest, or None when none was ever anchored. Raises
        DependencyUnavailable."""
        ...

    def write(self, digest: Digest) -> None:
        """Anchor this digest (it becomes the newest). Raises DependencyUnavailable."""
        ...


class StateStore(Protocol):
    """Small stored states (rotation progress, leases, revocations, findings) as compare-and-swap
    entities, addressed by partition and key. See shared.domain.state."""

    def get(self, partition: str, key: str) -> Versioned | None:
        """The state and its version, or None. Raises DependencyUnavailable."""
        ...

    def create(self, partition: str, key: str, state: Mapping[str, Any]) -> Versioned:
        """Store a new state. Raises Conflict when one exists already, DependencyUnavailable."""
        ...

    def replace(self, partition: str, key: str, state: Mapping[str, Any], etag: str) -> Versioned:
        """Replace the state only if it is still at version ``etag``. Raises Conflict when it changed
        since (the loser of a race), NotFound when it is gone, DependencyUnavailable."""
        ...

    def delete(self, partition: str, key: str, etag: str) -> None:
        """Delete the state only if it is still at version ``etag``. Raises Conflict, NotFound,
        DependencyUnavailable."""
        ...

    def commit(self, partition: str, writes: Sequence[StateWrite]) -> list[Versioned]:
        """All of ``writes`` (up to 100, keys of one partition) or none: one transaction. Returns what each
        stored. Raises Conflict when a state to create exists or one to replace changed, NotFound when one
        to replace is gone (nothing written then), DependencyUnavailable."""
        ...

    def list(self, partition: str, *, start: str = "", stop: str | None = None) -> dict[str, Versioned]:
        """Every state of a partition by key, keys in [``start``, ``stop``) (``stop`` None: no upper
        bound). Raises DependencyUnavailable."""
        ...


class FindingStore(Protocol):
    """Suspicious-activity findings: claimed once, then audited, then notified."""

    def claim(self, finding: StoredFinding) -> bool:
        """Store a new finding; False when it was stored before (by this or a concurrent scan)."""
        ...

    def get(self, finding_id: str) -> StoredFinding | None:
        """The finding, or None."""
        ...

    def pending(self) -> list[StoredFinding]:
        """Findings not yet audited or not yet notified (a previous scan was interrupted or failed)."""
        ...

    def mark_audited(self, finding_id: str) -> None:
        """Its SUSPICIOUS_ACTIVITY record is written."""
        ...

    def mark_notified(self, finding_id: str) -> None:
        """Its consumer notification was sent."""
        ...

    def mark_reviewed(self, finding_id: str, reviewer: str, note: str | None, time: datetime) -> None:
        """Set a finding's review state. Raises NotFound, Conflict (already reviewed)."""
        ...


class Publisher(Protocol):
    """Consumer notifications (CloudEvents on an Event Grid topic). Never carries a secret value."""

    def publish(self, notifications: Sequence[Notification]) -> None:
        """Send the notifications. Raises DependencyUnavailable."""
        ...


class RotationRequests(Protocol):
    """The ``rotation-requests`` queue: one message per request, for ``rotate_secret`` to act on."""

    def send(self, requests: Sequence[RotationRequest]) -> None:
        """Enqueue every request, in order (nothing for an empty sequence).

        Raises DependencyUnavailable when the queue cannot be written; RequestsNotSent (one) when sending
        stopped part-way, naming the requests that were not (confirmed) sent.
        """
        ...


class TargetRotator(Protocol):
    """Where a rotated value must also be set before Key Vault promotes it: a PostgreSQL role, a consumer
    that checks its own keys (shared.domain.targets). The rotation calls ``pending``, stores the result in
    Key Vault, then ``set``, ``test``, promotes, and calls ``finish`` when the previous version's grace has
    ended. Every method is re-runnable: a step already done is not done again, or doing it again is
    harmless.

    Every method raises TargetRefused when retrying cannot help (nothing is promoted, the rotation is
    recorded as failed and not retried) and DependencyUnavailable when the target did not answer (the
    queue retries). No error message carries a value.
    """

    def pending(self, secret: TargetSecret, generated: str) -> str:
        """The value to promote, made from the current one and a freshly generated secret (for
        PostgreSQL: the current document with ``generated`` as the password, of the other role when
        alternating). Raises TargetRefused when the current value cannot be used (not a document)."""
        ...

    def tags(self, secret: TargetSecret) -> dict[str, str]:
        """Tags the promoted version carries besides the policy's and the service's (e.g. the name of the
        webhook signing key's secret). Reads and writes nothing."""
        ...

    def bind(self, secret: TargetSecret) -> dict[str, str]:
        """Make the secret's target its consumer, for the API's onboarding and policy change only (never a
        rotation): e.g. the webhook signing key, made for this secret and bound to its URL. Returns
        ``tags``. Raises TargetRefused, DependencyUnavailable."""
        ...

    def set(self, secret: TargetSecret, pending: str) -> None:
        """Make the target accept ``pending`` (beside the current value where the target can hold two).
        Checks first that the credentials it acts with are what they claim (no confused deputy)."""
        ...

    def test(self, secret: TargetSecret, pending: str) -> None:
        """Prove that the target accepts ``pending``."""
        ...

    def finish(self, secret: TargetSecret, retired: str) -> None:
        """The grace of ``retired`` (a replaced value) has ended: make it unusable at the target, unless
        the current value (``secret.current``) still needs it."""
        ...
