"""Azure Table Storage adapters: the audit log (chains, heads, digests) and compare-and-swap states.

Layout of the audit table: one partition per chain (``<vault>:<secret>``, ``<vault>:_service`` and
``_digest``). Records have row key ``MAX_SEQ - seq`` (12 digits), so a partition reads newest first; the
chain head (``head``, sorting after every digit) holds the newest sequence number and MAC. An append is one
entity-group transaction: the head, updated only if its ETag is unchanged, plus up to 99 new records — so
two writers can never fork a chain: the loser gets 412 (or 409 on the very first record), rereads the
head and retries.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from shared.adapters.azure_errors import translate
from shared.adapters.table_batch import submit_transaction
from shared.domain.audit import (
    DIGEST_CHAIN,
    GENESIS_MAC,
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
    parse_time,
    seal_all,
    seal_digest,
)
from shared.domain.errors import Conflict, DependencyUnavailable, NotFound
from shared.domain.state import StateWrite, Versioned
from shared.ports import MacKeyRing

logger = logging.getLogger(__name__)
T = TypeVar("T")

DEPENDENCY = "audit_store"
AUDIT_TABLE = "auditlog"
FINDINGS_TABLE = "auditfindings"
#: Rotation progress and leases (StateStore).
STATE_TABLE = "secretstate"
HEAD_ROW = "head"
MAX_SEQ = 10**12 - 1
MAX_BATCH = 100  # Azure's limit per entity-group transaction (Azurite breaks above it)
_CHUNK = 32_000  # characters per string property (Azure allows 32K UTF-16 characters)
_MAX_DIGEST_BYTES = 900 * 1024  # of the 1 MiB an entity may hold, the rest left for its other properties
_ROW_KEY = re.compile(r"[0-9]{12}")
_EPOCH = parse_time("1970-01-01T00:00:00.000000Z")


def _unavailable(err: AzureError) -> DependencyUnavailable:
    """Any failure to write the audit is "the audit store is unavailable" to callers (fail closed),
    whatever the status: a deleted table or a revoked role must not look like a caller error."""
    translated = translate(DEPENDENCY, err)
    if isinstance(translated, DependencyUnavailable):
        return translated
    return DependencyUnavailable(DEPENDENCY, str(translated))


def row_key(seq: int) -> str:
    return f"{MAX_SEQ - seq:012d}"


def seq_of(row: str) -> int:
    """The sequence number a record row key stands for. Raises ValueError for anything but 12 ASCII
    digits, so a copied record under a look-alike key ("+99…", " 99…") cannot pose as another position."""
    if not _ROW_KEY.fullmatch(row):
        raise ValueError(f"not a record row key: {row[:64]!r}")
    return MAX_SEQ - int(row)


def _strip(entity: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entity.items() if v is not None}


def _record_entity(record: AuditRecord) -> dict[str, Any]:
    return _strip(
        {
            "PartitionKey": record.chain,
            "RowKey": row_key(record.seq),
            **event_fields(record.event),
            "seq": record.seq,
            "prev_mac": record.prev_mac,
            "key_id": record.key_id,
            "mac": record.mac,
        }
    )


def _stored(entity: Mapping[str, Any]) -> StoredRecord:
    fields = {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey", "Timestamp")}
    return StoredRecord(position=seq_of(str(entity["RowKey"])), fields=fields)


class _Table:
    """A table created on first use (nothing happens at construction)."""

    def __init__(self, service: TableServiceClient, table: str) -> None:
        self._service = service
        self._table_name = table
        self._table: TableClient | None = None

    @property
    def table(self) -> TableClient:
        if self._table is None:
            try:
                self._table = self._service.create_table_if_not_exists(self._table_name)
            except AzureError as err:
                raise _unavailable(err) from err
        return self._table


class _Pending:
    """One caller's events waiting in a chain's group-commit queue, and what became of them."""

    def __init__(self, events: Sequence[AuditEvent]) -> None:
        self.events = events
        self.done = False
        self.records: list[AuditRecord] = []
        self.error: BaseException | None = None

    def finished(self) -> bool:
        """Set by whichever caller led the commit (read again each time: another thread writes it)."""
        return self.done


class _ChainQueue:
    """Callers appending to one chain in this process. One of them at a time is the leader: it commits
    what has queued up as one transaction, hands each caller its records, and repeats until its own
    events are written; then the next waiting caller leads. Concurrent appends to a hot chain thus cost
    one ETag round per batch, not one per record, and never race each other for the head."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.pending: deque[_Pending] = deque()
        self.leading = False


class _ContentRejected(DependencyUnavailable):
    """The store refused the rows themselves (HTTP 400): retrying the same rows cannot help, but the
    other callers batched with them deserve a try on their own."""


#: How many chains' last written heads a log remembers (a chain each secret: a few KiB).
MAX_KNOWN_HEADS = 4096


class TableAuditLog(_Table):
    """AuditLog and AuditReader on one table. Creates the table on first use."""

    def __init__(
        self, service: TableServiceClient, keys: MacKeyRing, table: str = AUDIT_TABLE, max_attempts: int = 50
    ) -> None:
        super().__init__(service, table)
        self._keys = keys
        self._max_attempts = max_attempts
        self._queues: dict[str, _ChainQueue] = {}
        self._queues_lock = threading.Lock()
        #: The head (and its row's ETag) this log last wrote per chain: the next append to the chain starts
        #: from it instead of reading the head row. Only a hint: the write stays guarded by the ETag, and
        #: a head that moved meanwhile (another writer, a repair, tampering) is a 412 that reads it again.
        self._heads: OrderedDict[str, tuple[ChainHead, str]] = OrderedDict()

    # -- writing ----------------------------------------------------------------------------------

    def append(self, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        by_chain: OrderedDict[str, list[AuditEvent]] = OrderedDict()
        for event in events:
            by_chain.setdefault(event.chain, []).append(event)
        stored: list[AuditRecord] = []
        for chain, chain_events in by_chain.items():
            for start in range(0, len(chain_events), MAX_BATCH - 1):
                stored += self._group_commit(chain, chain_events[start : start + MAX_BATCH - 1])
        return stored

    def _queue(self, chain: str) -> _ChainQueue:
        with self._queues_lock:
            return self._queues.setdefault(chain, _ChainQueue())

    def _group_commit(self, chain: str, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        queue = self._queue(chain)
        mine = _Pending(events)
        with queue.cond:
            queue.pending.append(mine)
            while queue.leading and not mine.done:
                queue.cond.wait()
            if mine.done:  # a leader wrote (or failed) it while this caller waited
                return self._outcome(mine)
            queue.leading = True
        try:
            while not mine.finished():
                with queue.cond:
                    batch = [queue.pending.popleft()]
                    size = len(batch[0].events)
                    while queue.pending and size + len(queue.pending[0].events) <= MAX_BATCH - 1:
                        size += len(queue.pending[0].events)
                        batch.append(queue.pending.popleft())
                self._commit(chain, batch)
                with queue.cond:
                    queue.cond.notify_all()
        finally:
            with queue.cond:
                queue.leading = False
                queue.cond.notify_all()
        return self._outcome(mine)

    @staticmethod
    def _outcome(pending: _Pending) -> list[AuditRecord]:
        if pending.error is not None:
            raise pending.error
        return pending.records

    def _commit(self, chain: str, batch: list[_Pending]) -> None:
        """Write a batch of callers' events as one transaction; mark every caller done, with its records
        or with the error (fail closed: none of them is written then). Never raises."""
        try:
            records = self._append_chain(chain, [e for p in batch for e in p.events])
        except _ContentRejected as err:
            if len(batch) == 1:
                batch[0].error, batch[0].done = err, True
                return
            for alone in batch:  # one caller's bad row must not fail the others
                self._commit(chain, [alone])
            return
        except BaseException as err:
            for pending in batch:
                pending.error, pending.done = err, True
            return
        offset = 0
        for pending in batch:
            pending.records = records[offset : offset + len(pending.events)]
            offset += len(pending.events)
            pending.done = True

    def _append_chain(self, chain: str, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        key_id, key = self._keys.current()

        def build(head: ChainHead) -> tuple[ChainHead, list[dict[str, Any]], list[AuditRecord]]:
            records = seal_all(events, head.seq, head.mac, key_id, key)
            last = records[-1]
            return ChainHead(last.seq, last.mac), [_record_entity(r) for r in records], records

        return self._after_head(chain, build)

    def repair(self, chain: str, after: ChainHead, event: AuditEvent, seen: ChainHead | None) -> AuditRecord:
        if event.chain != chain:
            raise ValueError(f"a repair record of {event.chain} cannot repair {chain}")
        key_id, key = self._keys.current()
        [record] = seal_all([event], after.seq, after.mac, key_id, key)

        def unchanged(stored: ChainHead | None) -> None:
            if stored != seen:
                raise Conflict(f"audit chain {chain} changed while being repaired; verify it again")

        return self._write_after(
            chain, unchanged, ChainHead(record.seq, record.mac), [_record_entity(record)], record
        )

    def _write_after(
        self,
        partition: str,
        accept: Callable[[ChainHead | None], None],
        new_head: ChainHead,
        rows: list[dict[str, Any]],
        result: T,
    ) -> T:
        """Write ``rows`` and make ``new_head`` the head, in one transaction guarded by the head row's
        ETag, after ``accept`` has judged the stored head (None: missing or unreadable) and not raised.
        For writers that seal after a head they established themselves (repair, digests) rather than
        after whatever the head row says. Losing a race is Conflict, never a retry with stale inputs."""
        try:
            stored, etag = self._head_row(partition)
        except AzureError as err:
            raise _unavailable(err) from err
        accept(stored)
        head_row = {"PartitionKey": partition, "RowKey": HEAD_ROW, "seq": new_head.seq, "mac": new_head.mac}
        operations = [_write_operation(head_row, etag), *(("create", row) for row in rows)]
        try:
            self._transact(operations)
        except HttpResponseError as err:
            if self._landed_quietly(partition, rows[0]):
                return result
            if getattr(err, "status_code", None) in (409, 412):
                raise Conflict(
                    f"{partition} changed meanwhile (another writer); nothing was written"
                ) from err
            raise _unavailable(err) from err
        except AzureError as err:
            if self._landed_quietly(partition, rows[0]):
                return result
            raise _unavailable(err) from err
        return result

    def _transact(self, operations: list[Any]) -> list[dict[str, Any]]:
        """One entity-group transaction on the audit table: the SDK's request, without the CPU of its
        multipart machinery (shared/adapters/table_batch.py)."""
        return submit_transaction(self.table, operations)

    def _head_row(self, partition: str) -> tuple[ChainHead | None, str | None]:
        """The stored head (None when missing or unreadable) and the head row's ETag (None: no row)."""
        try:
            entity = self.table.get_entity(partition, HEAD_ROW)
        except ResourceNotFoundError:
            return None, None
        try:
            head: ChainHead | None = ChainHead(int(entity["seq"]), str(entity["mac"]))
        except (KeyError, ValueError, TypeError):
            head = None
        return head, str(entity.metadata["etag"])

    def _after_head(
        self,
        partition: str,
        build: Callable[[ChainHead], tuple[ChainHead, list[dict[str, Any]], T]],
    ) -> T:
        """Append entities after a partition's head in one transaction guarded by the head's ETag.

        ``build`` seals the new rows after the head it is given and returns the new head, the rows (the
        first of which stands at the new head's first sequence number) and the result. A writer that lost
        the race (409 on a partition's first append, 412 after) reads the head again and seals again.

        A conflict after which the head is unchanged was not another writer: rows stand beyond the head
        (or without one), so the partition was tampered with — ChainTampered at once, no retry storm.
        """
        attempt_rows: list[dict[str, Any]] = []
        result: T | None = None
        conflicted_at: tuple[str | None] | None = None  # the head's ETag when the last conflict came
        etag: str | None = None
        from_cache = False
        for attempt in range(self._max_attempts):
            try:
                if attempt_rows and result is not None and self._landed(partition, attempt_rows[0]):
                    # The previous attempt committed but its answer was lost (azure-core retried the
                    # batch, which then met its own head): the rows are stored, do not write them twice.
                    return result
                known = self._heads.pop(partition, None) if attempt == 0 else None
                from_cache = known is not None
                if known is not None:
                    head, etag = known
                else:
                    head, etag = self._read_head(partition)
                    if conflicted_at == (etag,):
                        where = "has records but no head" if etag is None else "has records beyond its head"
                        raise ChainTampered(partition, where)
                new_head, attempt_rows, result = build(head)
                head_row = {
                    "PartitionKey": partition,
                    "RowKey": HEAD_ROW,
                    "seq": new_head.seq,
                    "mac": new_head.mac,
                }
                operations = [_write_operation(head_row, etag), *(("create", row) for row in attempt_rows)]
                answers = self._transact(operations)
                self._remember(partition, new_head, answers[0].get("etag") if answers else None)
                return result
            except HttpResponseError as err:  # TableTransactionError, ResourceExistsError among them
                status = getattr(err, "status_code", None)
                # A head remembered from this log's last write that is gone now (404) moved like any
                # other: read it again (an attempt that read it judges what the conflict means).
                if status in (409, 412) or (status == 404 and from_cache):
                    conflicted_at = (etag,)
                    time.sleep(min(0.5, 0.005 * (2 ** min(attempt, 6))) * random.random())  # noqa: S311 - jitter
                    continue
                if status == 400:
                    raise _ContentRejected(DEPENDENCY, f"rows refused: {translate(DEPENDENCY, err)}") from err
                raise _unavailable(err) from err
            except AzureError as err:
                # A read error after the request went out (azure-core does not retry a POST then): the
                # batch may have committed. Say "written" only when it is there.
                if attempt_rows and result is not None and self._landed_quietly(partition, attempt_rows[0]):
                    return result
                raise _unavailable(err) from err
        raise DependencyUnavailable(
            DEPENDENCY, f"{partition} stayed contended after {self._max_attempts} attempts"
        )

    def _remember(self, partition: str, head: ChainHead, etag: Any) -> None:
        if isinstance(etag, str) and etag:
            self._heads[partition] = (head, etag)
            self._heads.move_to_end(partition)
            while len(self._heads) > MAX_KNOWN_HEADS:
                self._heads.popitem(last=False)

    def _landed_quietly(self, partition: str, row: Mapping[str, Any]) -> bool:
        """Whether a row is stored, False when that cannot be told either."""
        try:
            return self._landed(partition, row)
        except AzureError:
            return False

    def _landed(self, partition: str, row: Mapping[str, Any]) -> bool:
        try:
            stored = self.table.get_entity(partition, str(row["RowKey"]))
        except ResourceNotFoundError:
            return False
        return bool(stored.get("mac") == row["mac"])

    def _read_head(self, chain: str) -> tuple[ChainHead, str | None]:
        """The head and its ETag; (genesis, None) when there is no head row. An unreadable head row is
        ChainTampered."""
        head, etag = self._head_row(chain)
        if head is None and etag is not None:
            raise ChainTampered(chain, "has an unreadable head")
        return head or ChainHead(0, GENESIS_MAC), etag

    # -- reading ----------------------------------------------------------------------------------

    def list_records(self, query: AuditQuery) -> Iterable[StoredAuditRow]:
        clauses = ["RowKey ne @head", "PartitionKey ne @digest"]
        params: dict[str, Any] = {"head": HEAD_ROW, "digest": DIGEST_CHAIN}
        if query.chain:
            clauses.append("PartitionKey eq @chain")
            params["chain"] = query.chain
        if query.vault:
            clauses.append("vault eq @vault")
            params["vault"] = query.vault
        if query.action:
            clauses.append("action eq @action")
            params["action"] = query.action.value
        if query.actor:
            clauses.append("actor_id eq @actor")
            params["actor"] = query.actor
        if query.since:
            clauses.append("time ge @since")
            params["since"] = format_time(query.since)
        if query.until:
            clauses.append("time lt @until")
            params["until"] = format_time(query.until)
        if query.before:
            clauses.append("time le @before")
            params["before"] = query.before[0]
        for entity in self._query(" and ".join(clauses), params):
            try:
                yield StoredAuditRow(chain=str(entity["PartitionKey"]), record=_stored(entity))
            except ValueError:
                continue  # not a record row: verify reports it, queries skip it

    def _query(self, query_filter: str, params: dict[str, Any]) -> Iterator[Mapping[str, Any]]:
        try:
            yield from self.table.query_entities(query_filter, parameters=params, results_per_page=1000)
        except AzureError as err:
            raise _unavailable(err) from err

    def read_chains(self, chain: str | None = None) -> dict[str, ChainContents]:
        if chain is None:
            entities: Iterable[Mapping[str, Any]] = self._query(
                "PartitionKey ne @digest", {"digest": DIGEST_CHAIN}
            )
        else:
            entities = self._query("PartitionKey eq @chain", {"chain": chain})
        records: dict[str, list[StoredRecord]] = {}
        heads: dict[str, ChainHead] = {}
        stray: dict[str, list[str]] = {}
        unreadable_heads: set[str] = set()
        for entity in entities:
            partition = str(entity["PartitionKey"])
            try:
                if entity["RowKey"] == HEAD_ROW:
                    heads[partition] = ChainHead(int(entity["seq"]), str(entity["mac"]))
                    records.setdefault(partition, [])
                else:
                    records.setdefault(partition, []).append(_stored(entity))
            except (KeyError, ValueError, TypeError):
                # A head or record row somebody rewrote into nonsense: verify reports it, never trips on it.
                records.setdefault(partition, [])
                if entity["RowKey"] == HEAD_ROW:
                    unreadable_heads.add(partition)
                else:
                    stray.setdefault(partition, []).append(str(entity["RowKey"]))
        for name, head in heads.items():
            # A partition reads newest record first and its head last: records appended while the pages
            # went by are missing below a head that already counts them. They are committed (a head moves
            # only with its records), so read them now instead of calling the chain cut.
            newest = max((r.position for r in records[name]), default=0)
            if head.seq > newest:
                records[name] += self.read_range(name, newest + 1, head.seq)
        return {
            name: ChainContents(
                records=rows,
                head=heads.get(name),
                stray_rows=tuple(stray.get(name, ())),
                head_unreadable=name in unreadable_heads,
            )
            for name, rows in records.items()
        }

    def read_head(self, chain: str) -> ChainHead | None:
        try:
            return self._head_row(chain)[0]
        except AzureError as err:
            raise _unavailable(err) from err

    def read_heads(self) -> dict[str, ChainHead]:
        entities = self._query(
            "RowKey eq @head and PartitionKey ne @digest", {"head": HEAD_ROW, "digest": DIGEST_CHAIN}
        )
        heads: dict[str, ChainHead] = {}
        for entity in entities:
            try:
                heads[str(entity["PartitionKey"])] = ChainHead(int(entity["seq"]), str(entity["mac"]))
            except (KeyError, ValueError, TypeError):
                continue  # an unreadable head is no head: the digest writer holds what it sealed before
        return heads

    def read_range(self, chain: str, first: int, last: int) -> list[StoredRecord]:
        if not 0 < first <= last <= MAX_SEQ:
            return []
        query = "PartitionKey eq @chain and RowKey ge @low and RowKey le @high"
        params = {"chain": chain, "low": row_key(last), "high": row_key(first)}
        records: list[StoredRecord] = []
        for entity in self._query(query, params):
            try:
                records.append(_stored(entity))
            except ValueError:
                continue  # not a record row (verify reports it): the range then has a hole
        return records

    def read_digests(self, since: int = 1) -> list[Digest]:
        digests: list[Digest] = []
        query = "PartitionKey eq @digest and RowKey ne @head"
        params = {"digest": DIGEST_CHAIN, "head": HEAD_ROW}
        if since > 1:
            # Row keys count down (MAX_SEQ - seq): digests from ``since`` on sort at or before its key.
            # Without ``since`` every row is read, rows that are no digest at all included (verify).
            query += " and RowKey le @upto"
            params["upto"] = row_key(since)
        for entity in self._query(query, params):
            try:
                raw = "".join(
                    str(entity.get(f"heads_{i}", "")) for i in range(int(entity.get("heads_parts", 0)))
                )
                heads = {name: ChainHead(int(v[0]), str(v[1])) for name, v in json.loads(raw or "{}").items()}
                held = json.loads(str(entity.get("held") or "[]"))
                digests.append(
                    Digest(
                        seq=int(entity["seq"]),
                        time=parse_time(str(entity["time"])),
                        heads=heads,
                        prev_mac=str(entity["prev_mac"]),
                        key_id=str(entity["key_id"]),
                        mac=str(entity["mac"]),
                        held=tuple(str(name) for name in held),
                    )
                )
            except (KeyError, ValueError, TypeError, IndexError):
                # An unreadable digest must still show up in verify: keep it with a MAC that cannot match.
                try:
                    seq = seq_of(str(entity["RowKey"]))
                except ValueError:
                    seq = 0  # not even a digest row key: reported as digest 0
                digests.append(
                    Digest(
                        seq=seq,
                        time=_EPOCH,
                        heads={},
                        prev_mac="",
                        key_id="",
                        mac="",
                    )
                )
        return digests

    def append_digest(
        self,
        previous: Digest | None,
        heads: Mapping[str, ChainHead],
        time_: datetime,
        keys: MacKeyRing,
        held: Sequence[str] = (),
    ) -> Digest:
        key_id, key = keys.current()
        text = json.dumps({n: [h.seq, h.mac] for n, h in sorted(heads.items())}, separators=(",", ":"))
        if 2 * len(text) > _MAX_DIGEST_BYTES:
            # Azure stores strings as UTF-16 and caps an entity at 1 MiB. Say so, rather than let Azure
            # answer a bare 400 every hour (verify would then report a stale digest).
            raise DependencyUnavailable(
                DEPENDENCY,
                f"a digest of {len(heads)} chains does not fit one table entity (about 4,000 at most)",
            )
        parts = [text[i : i + _CHUNK] for i in range(0, len(text), _CHUNK)] or [""]

        after = ChainHead(previous.seq, previous.mac) if previous else ChainHead(0, GENESIS_MAC)
        digest = seal_digest(after.seq + 1, time_, heads, after.mac, key_id, key, held)

        def newest(stored: ChainHead | None) -> None:
            # The head row only guards concurrent writers; the digest follows ``previous``, which the
            # caller checked against the anchor. A row naming a later digest that exists is another
            # writer's; anything else (missing, rewound, junk) is a stale or tampered copy: replaced.
            if stored is not None and stored.seq > after.seq and self._digest_exists(stored.seq):
                raise Conflict(f"digest {stored.seq} was sealed meanwhile by another writer")
            if stored != (after if previous else None):
                logger.warning("the digest head row did not name digest %d; it is rewritten", after.seq)

        row: dict[str, Any] = {
            "PartitionKey": DIGEST_CHAIN,
            "RowKey": row_key(digest.seq),
            "seq": digest.seq,
            "time": format_time(digest.time),
            "prev_mac": digest.prev_mac,
            "key_id": digest.key_id,
            "mac": digest.mac,
            "chains": len(heads),
            "held": json.dumps(list(digest.held)) if digest.held else None,
            "heads_parts": len(parts),
            **{f"heads_{i}": part for i, part in enumerate(parts)},
        }
        return self._write_after(
            DIGEST_CHAIN, newest, ChainHead(digest.seq, digest.mac), [_strip(row)], digest
        )

    def _digest_exists(self, seq: int) -> bool:
        try:
            self.table.get_entity(DIGEST_CHAIN, row_key(seq), select=["seq"])
        except ResourceNotFoundError:
            return False
        except AzureError as err:
            raise _unavailable(err) from err
        return True


class TableStateStore(_Table):
    """StateStore on one table: each state one entity, each write conditional on its ETag."""

    def get(self, partition: str, key: str) -> Versioned | None:
        try:
            entity = self.table.get_entity(partition, key)
        except ResourceNotFoundError:
            return None
        except AzureError as err:
            raise _unavailable(err) from err
        return _versioned(entity)

    def create(self, partition: str, key: str, state: Mapping[str, Any]) -> Versioned:
        try:
            metadata = self.table.create_entity(_strip({**state, "PartitionKey": partition, "RowKey": key}))
        except ResourceExistsError:
            raise Conflict(f"{partition}/{key} exists already") from None
        except AzureError as err:
            raise _unavailable(err) from err
        return Versioned(state=_strip(state), etag=str(metadata["etag"]))

    def replace(self, partition: str, key: str, state: Mapping[str, Any], etag: str) -> Versioned:
        try:
            metadata = self.table.update_entity(
                _strip({**state, "PartitionKey": partition, "RowKey": key}),
                mode=UpdateMode.REPLACE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except ResourceModifiedError:
            raise Conflict(f"{partition}/{key} changed since it was read") from None
        except ResourceNotFoundError:
            raise NotFound(f"{partition}/{key} does not exist") from None
        except AzureError as err:
            raise _unavailable(err) from err
        return Versioned(state=_strip(state), etag=str(metadata["etag"]))

    def delete(self, partition: str, key: str, etag: str) -> None:
        if self.get(partition, key) is None:
            raise NotFound(f"{partition}/{key} does not exist")
        try:
            self.table.delete_entity(partition, key, etag=etag, match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError:
            raise Conflict(f"{partition}/{key} changed since it was read") from None
        except AzureError as err:
            raise _unavailable(err) from err

    def commit(self, partition: str, writes: Sequence[StateWrite]) -> list[Versioned]:
        operations = [
            _write_operation(_strip({**w.state, "PartitionKey": partition, "RowKey": w.key}), w.etag)
            for w in writes
        ]
        try:
            answers = submit_transaction(self.table, operations)
        except HttpResponseError as err:
            status = getattr(err, "status_code", None)
            if status in (409, 412):
                raise Conflict(
                    f"{partition}: a state of the transaction exists or changed; nothing written"
                ) from None
            if status == 404:
                raise NotFound(
                    f"{partition}: a state of the transaction does not exist; nothing written"
                ) from None
            raise _unavailable(err) from err
        except AzureError as err:
            raise _unavailable(err) from err
        return [
            Versioned(state=_strip(write.state), etag=str(answer.get("etag", "")))
            for write, answer in zip(writes, answers, strict=True)
        ]

    def list(self, partition: str, *, start: str = "", stop: str | None = None) -> dict[str, Versioned]:
        query = "PartitionKey eq @partition and RowKey ge @start"
        parameters = {"partition": partition, "start": start}
        if stop is not None:
            query += " and RowKey lt @stop"
            parameters["stop"] = stop
        try:
            entities = list(self.table.query_entities(query, parameters=parameters))
        except ResourceNotFoundError:
            return {}
        except AzureError as err:
            raise _unavailable(err) from err
        return {str(e["RowKey"]): _versioned(e) for e in entities}


def _write_operation(entity: dict[str, Any], etag: str | None) -> tuple[Any, ...]:
    """A transaction's write of ``entity``: create it (``etag`` None: it must not exist), or replace it
    only if still at ``etag``."""
    if etag is None:
        return ("create", entity)
    guard = {"mode": UpdateMode.REPLACE, "etag": etag, "match_condition": MatchConditions.IfNotModified}
    return ("update", entity, guard)


def _versioned(entity: Mapping[str, Any]) -> Versioned:
    state = {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey", "Timestamp")}
    return Versioned(state=state, etag=str(entity.metadata["etag"]))  # type: ignore[attr-defined]
