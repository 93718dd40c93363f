"""The audit table's writer: appends records to chains (group commit, retries on contention) and writes
the repair record that re-derives a chain's head.

An append is one entity-group transaction: the head, updated only if its ETag is unchanged, plus up to 99
new records — so two writers can never fork a chain: the loser gets 412 (or 409 on the very first
record), rereads the head and retries.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError

from shared.adapters.azure_errors import translate
from shared.adapters.tables.group_commit import ContentRejected, GroupCommit
from shared.adapters.tables.index import AuditIndex
from shared.adapters.tables.rows import (
    DEPENDENCY,
    MAX_BATCH,
    AuditTable,
    head_write,
    record_entity,
    row_key,
    unavailable,
)
from shared.domain.audit import (
    AuditEvent,
    AuditRecord,
    ChainHead,
    RefusedAppend,
    StoredRecord,
    head_to_append_after,
    seal_all,
)
from shared.domain.errors import Conflict, DependencyUnavailable
from shared.ports import MacKeyRing

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How many chains' last written heads a writer remembers (a chain each secret: a few KiB).
MAX_KNOWN_HEADS = 4096


class HeadCache:
    """The head (and its row's ETag) a writer last wrote per chain, for the newest ``bound`` chains: the
    next append to a chain starts from it instead of reading the head row. Only a hint: the write stays
    guarded by the ETag, and a head that moved meanwhile (another writer, a repair, tampering) is a 412
    that reads it again.

    Chains commit concurrently, each from its own leader's thread (group_commit.py), and one's eviction
    may drop another's entry between its write and its reorder: every change is made under one lock."""

    def __init__(
        self, bound: int = MAX_KNOWN_HEADS, entries: OrderedDict[str, tuple[ChainHead, str]] | None = None
    ) -> None:
        self._bound = bound
        #: ``entries``: an empty mapping to keep them in (tests pass one that pauses mid-change).
        self._heads = OrderedDict() if entries is None else entries
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._heads)

    def take(self, chain: str) -> tuple[ChainHead, str] | None:
        """The head remembered for ``chain`` and its ETag, forgotten now (the append that takes it
        writes a new one or reads the row), or None."""
        with self._lock:
            return self._heads.pop(chain, None)

    def remember(self, chain: str, head: ChainHead, etag: object) -> None:
        """Remember ``head`` as ``chain``'s, at ``etag`` (nothing when the store answered none), as the
        newest entry; the oldest beyond the bound are forgotten."""
        if not isinstance(etag, str) or not etag:
            return
        with self._lock:
            self._heads[chain] = (head, etag)
            self._heads.move_to_end(chain)
            while len(self._heads) > self._bound:
                self._heads.popitem(last=False)


class TableAuditWriter:
    """AuditLog's writes on the audit table."""

    def __init__(
        self,
        table: AuditTable,
        keys: MacKeyRing,
        max_attempts: int = 50,
        max_known_heads: int = MAX_KNOWN_HEADS,
        index: AuditIndex | None = None,
    ) -> None:
        self._audit = table
        self._index = index
        self._keys = keys
        self._max_attempts = max_attempts
        self._group = GroupCommit(self._append_chain, MAX_BATCH - 1)
        self.heads = HeadCache(max_known_heads)

    def append(self, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        by_chain: OrderedDict[str, list[AuditEvent]] = OrderedDict()
        for event in events:
            by_chain.setdefault(event.chain, []).append(event)
        stored: list[AuditRecord] = []
        for chain, chain_events in by_chain.items():
            for start in range(0, len(chain_events), MAX_BATCH - 1):
                stored += self._group.append(chain, chain_events[start : start + MAX_BATCH - 1])
        return stored

    def repair(self, chain: str, after: ChainHead, event: AuditEvent, seen: ChainHead | None) -> AuditRecord:
        if event.chain != chain:
            raise ValueError(f"a repair record of {event.chain} cannot repair {chain}")
        key_id, key = self._keys.current()
        [record] = seal_all([event], after.seq, after.mac, key_id, key)

        def unchanged(stored: ChainHead | None) -> None:
            if stored != seen:
                raise Conflict(f"audit chain {chain} changed while being repaired; verify it again")

        written = self._audit.write_after(
            chain, unchanged, ChainHead(record.seq, record.mac), [record_entity(record)], record
        )
        if self._index is not None:
            self._index.add([written])
        return written

    def write_aggregates(
        self,
        vault: str,
        hours: Sequence[Mapping[str, Any]],
        coverage: Mapping[str, Any],
        evidence: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        if self._index is None:
            raise DependencyUnavailable(DEPENDENCY, "this audit log keeps no index")
        # The evidence first: an aggregate is the manifest its hour's evidence is checked against.
        self._index.write_evidence(vault, evidence)
        self._index.write_aggregates(vault, hours, coverage)

    def write_verification(self, vault: str, fields: Mapping[str, Any]) -> None:
        if self._index is None:
            raise DependencyUnavailable(DEPENDENCY, "this audit log keeps no index")
        self._index.write_verification(vault, fields)

    def index(self, chain: str, records: Sequence[StoredRecord]) -> int:
        if self._index is None:
            return 0
        return self._index.write((chain, record) for record in records)

    def remove(self, chain: str, records: Sequence[StoredRecord]) -> int:
        """Delete the records' rows (a transaction per 100) and their index copies."""
        keys = [row_key(r.position) for r in records]
        for start in range(0, len(keys), MAX_BATCH):
            try:
                self._audit.transact(
                    [
                        ("delete", {"PartitionKey": chain, "RowKey": key})
                        for key in keys[start : start + MAX_BATCH]
                    ]
                )
            except AzureError as err:
                if not self._remove_one_by_one(chain, keys[start : start + MAX_BATCH]):
                    raise unavailable(err) from err
        if self._index is not None:
            self._index.remove(chain, records)
        return len(keys)

    def _remove_one_by_one(self, chain: str, keys: Sequence[str]) -> bool:
        """A transaction fails whole when one row is gone already (a run that died halfway): delete each
        row alone, a gone one skipped. False when the store fails."""
        for key in keys:
            try:
                self._audit.table.delete_entity(chain, key)
            except ResourceNotFoundError:
                continue
            except AzureError:
                return False
        return True

    def _append_chain(self, chain: str, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        key_id, key = self._keys.current()

        def build(head: ChainHead) -> tuple[ChainHead, list[dict[str, Any]], list[AuditRecord]]:
            records = seal_all(events, head.seq, head.mac, key_id, key)
            last = records[-1]
            return ChainHead(last.seq, last.mac), [record_entity(r) for r in records], records

        records = self._after_head(chain, build)
        if self._index is not None:
            self._index.add(records)  # committed: the index follows in the background
        return records

    def _after_head(
        self,
        partition: str,
        build: Callable[[ChainHead], tuple[ChainHead, list[dict[str, Any]], T]],
    ) -> T:
        """Append entities after a partition's head in one transaction guarded by the head's ETag.

        ``build`` seals the new rows after the head it is given and returns the new head, the rows (the
        first of which stands at the new head's first sequence number) and the result. A writer that lost
        the race (409 on a partition's first append, 412 after) reads the head again and seals again,
        unless what it reads says the partition was tampered with (shared.domain.audit.tamper):
        ChainTampered at once, no retry storm.
        """
        tries: _Tries[T] = _Tries()
        for attempt in range(self._max_attempts):
            try:
                if tries.result is not None and self._audit.landed(partition, tries.rows[0]):
                    # The previous attempt committed but its answer was lost (azure-core retried the
                    # batch, which then met its own head): the rows are stored, do not write them twice.
                    return tries.result
                return self._attempt(partition, build, tries, remembered=attempt == 0)
            except HttpResponseError as err:  # TableTransactionError, ResourceExistsError among them
                if not tries.conflicted(err):
                    raise _refused(err) from err
                tries.refused = RefusedAppend(tries.etag)
                time.sleep(min(0.5, 0.005 * (2 ** min(attempt, 6))) * random.random())  # noqa: S311 - jitter
            except AzureError as err:
                # A read error after the request went out (azure-core does not retry a POST then): the
                # batch may have committed. Say "written" only when it is there; when it is certainly not
                # (a connection dropped before the commit, as a busy store does), send it again: the head's
                # ETag lets only one of the two commit, and a late first one is found above. Unavailable
                # when which it is cannot be told.
                landed = self._landed(partition, tries)
                if landed is None:
                    raise unavailable(err) from err
                if landed and tries.result is not None:
                    return tries.result
                logger.warning(
                    "audit append to %s: no answer, and nothing committed: sending it again", partition
                )
        raise DependencyUnavailable(
            DEPENDENCY, f"{partition} not written in {self._max_attempts} attempts (contended, or unanswered)"
        )

    def _landed(self, partition: str, tries: _Tries[T]) -> bool | None:
        """Whether the latest attempt's rows are stored; None when that cannot be told."""
        if tries.result is None:
            return None
        try:
            return self._audit.landed(partition, tries.rows[0])
        except AzureError:
            return None

    def _attempt(
        self,
        partition: str,
        build: Callable[[ChainHead], tuple[ChainHead, list[dict[str, Any]], T]],
        tries: _Tries[T],
        remembered: bool,
    ) -> T:
        """One try: the head (the one this writer remembers writing when ``remembered``, else the head
        row, read and judged), the rows sealed after it, one transaction. Raises azure-core's errors."""
        known = self.heads.take(partition) if remembered else None
        tries.from_cache = known is not None
        if known is not None:
            head, tries.etag = known
        else:
            stored, tries.etag = self._audit.head_row(partition)
            head = head_to_append_after(partition, stored, tries.etag, tries.refused)
        new_head, tries.rows, result = build(head)
        tries.result = result
        operations = [head_write(partition, new_head, tries.etag), *(("create", row) for row in tries.rows)]
        answers = self._audit.transact(operations)
        self.heads.remember(partition, new_head, answers[0].get("etag") if answers else None)
        return result


@dataclass
class _Tries(Generic[T]):
    """One append's attempts so far: what the latest sent, and how the store refused the one before."""

    #: The rows the latest attempt sent (never empty once ``result`` is set: ``build`` seals at least
    #: one), and what the append returns when they are stored.
    rows: list[dict[str, Any]] = field(default_factory=list)
    result: T | None = None
    #: The head row's ETag the latest attempt was guarded by (None: it expected no head row).
    etag: str | None = None
    #: Whether the latest attempt took its head from the writer's memory rather than the head row.
    from_cache: bool = False
    refused: RefusedAppend | None = None

    def conflicted(self, err: HttpResponseError) -> bool:
        """Whether the store refused the latest attempt as another writer's conflict: 409 (a row to
        create exists: a partition's first append) or 412 (the head moved). A head remembered from this
        writer's last write that is gone now (404) moved like any other: read it again (an attempt that
        read it judges what the conflict means)."""
        status = getattr(err, "status_code", None)
        return status in (409, 412) or (status == 404 and self.from_cache)


def _refused(err: HttpResponseError) -> DependencyUnavailable:
    """The error of an append the store refused outright: its rows (400, which retrying cannot help) or
    anything else (unavailable)."""
    if getattr(err, "status_code", None) == 400:
        return ContentRejected(DEPENDENCY, f"rows refused: {translate(DEPENDENCY, err)}")
    return unavailable(err)
