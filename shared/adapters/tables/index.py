"""The audit index: every record again, filed by time across chains, so a query reads one page.

The chains (rows.py) hold each secret's records in order, which is what tamper evidence needs; a query of
the newest records across secrets, or of one actor's, would scan every chain. So each record is also
written to a second table (``<audit table>index``) three times, each a full copy with its chain, sequence
number and MAC, under a partition per index and second:

- ``t:<second>``: every record;
- ``a:<actor hash>:<second>``: one actor's (a hash, as actor ids may hold characters keys may not);
- ``c:<action>:<second>``: one action's.

``<second>`` is the inverted second (``99999999999999 - yyyymmddhhmmss``: a partition holds what one second
wrote, so none grows with the trail) and the row key the inverted time (microseconds),
then the chain and the inverted sequence number: a range of partitions reads newest first, across days,
and Table Storage's own continuation (next partition and row key) pages through it. A copy proves
itself: its MAC covers its chain, position and fields, so a reader shows only what the service wrote
(services/audit/queries.py), never a row a storage writer added.

Index rows are derived, written after their record is committed: by a background writer that gathers the
rows of all appends for ``delay`` and upserts each partition's as one transaction, so an append pays no
extra round trip; a record's copy under ``t:`` is written last, and only once its other copies are, so a
record found there is in every index. A process that dies with rows pending, or a row that could not be
written, leaves a record out of the index until the hourly digest, which reads the ``t:`` index since the
previous digest and indexes again what is missing there (``write``, idempotent); a query in this process
first waits for what it has pending (``flush``).
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient

from shared.adapters.tables.batch import TableTransactions, default_transactions
from shared.adapters.tables.rows import (
    HEAD_ROW,
    MAX_BATCH,
    LazyTable,
    record_entity,
    stored_record,
    unavailable,
)
from shared.domain.audit import (
    AuditQuery,
    AuditRecord,
    RecordPosition,
    StoredAuditRow,
    StoredRecord,
    format_time,
    parse_time,
)

logger = logging.getLogger(__name__)

_MAX_MICROS = 10**18 - 1
_MAX_DAY = 99999999
#: How long the background writer gathers rows before it writes them, unless a partition has a
#: transaction's worth or a query in this process waits for them: the longer, the fewer transactions.
DELAY = 0.25
#: How long a query waits for this process's pending rows before it reads without them.
FLUSH_TIMEOUT = 10.0
#: How long a process that ends waits for its pending rows.
EXIT_FLUSH_TIMEOUT = 5.0


#: The partition prefix of the hourly aggregates (``s:<vault>:<day>``, row key the inverted hour), and the
#: partition of their coverage marks (one a vault).
_AGGREGATES = "s:"


def _aggregate_partition(vault: str, moment: datetime) -> str:
    return f"{_AGGREGATES}{vault}:{_day(moment)}"


#: The partition prefix of the hourly evidence (``e:<vault>:<day>``, row key the inverted hour and the
#: part's number).
_EVIDENCE = "e:"
#: Evidence parts in one transaction: each holds up to 30,000 characters (60 KB as UTF-16), and a
#: transaction's body must stay under 4 MiB.
_EVIDENCE_BATCH = 40


def _evidence_partition(vault: str, moment: datetime) -> str:
    return f"{_EVIDENCE}{vault}:{_day(moment)}"


def _hour_key(moment: datetime) -> str:
    return f"{23 - moment.astimezone(UTC).hour:02d}"


def _hour_of_keys(partition: str, row: str) -> datetime:
    """The hour an aggregate's keys name. Raises ValueError for keys that name none."""
    day = partition.rsplit(":", 1)[-1]
    keys = day + row
    if not (len(day) == 8 and len(row) == 2 and keys.isascii() and keys.isdigit() and int(row) < 24):
        raise ValueError("not an aggregate's keys")
    text = f"{_MAX_DAY - int(day):08d}"  # datetime() refuses a day that is none, as strptime did (faster)
    return datetime(int(text[:4]), int(text[4:6]), int(text[6:]), 23 - int(row), tzinfo=UTC)


def _fields(entity: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row's own fields (without its keys and the service's timestamp)."""
    return {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey", "Timestamp")}


def index_table(audit_table: str) -> str:
    return f"{audit_table}index"


def _day(moment: datetime) -> str:
    return f"{_MAX_DAY - int(moment.astimezone(UTC).strftime('%Y%m%d')):08d}"


_MAX_SECOND = 99999999999999


def _second(moment: datetime) -> str:
    return f"{_MAX_SECOND - int(moment.astimezone(UTC).strftime('%Y%m%d%H%M%S')):014d}"


def _micros(moment: datetime) -> int:
    delta = moment.astimezone(UTC) - datetime(1, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 10**6 + delta.microseconds


def actor_key(actor_id: str) -> str:
    return hashlib.sha256(actor_id.encode()).hexdigest()[:32]


def _prefixes(query: AuditQuery) -> str:
    """The index a query reads (the narrowest its filters allow), as its partition key prefix."""
    if query.actor:
        return f"a:{actor_key(query.actor)}:"
    if query.action:
        return f"c:{query.action.value}:"
    return "t:"


def index_entities(chain: str, fields: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The three index rows of a record of ``chain`` with its stored ``fields`` (those of the record's
    row: its event's, sequence number, previous MAC, key id and MAC). Raises KeyError, ValueError or
    TypeError for fields that are no record's."""
    seq = fields["seq"]
    if type(seq) is not int:
        raise TypeError("a record's sequence number is an integer")
    moment = parse_time(str(fields["time"]))
    row = f"{_MAX_MICROS - _micros(moment):018d}:{chain}:{10**12 - 1 - seq:012d}"
    slot = _second(moment)
    copy = {k: v for k, v in fields.items() if k not in ("PartitionKey", "RowKey", "Timestamp")}
    partitions = (
        f"t:{slot}",
        f"a:{actor_key(str(fields['actor_id']))}:{slot}",
        f"c:{fields['action']}:{slot}",
    )
    return [{**copy, "PartitionKey": p, "RowKey": row, "chain": chain} for p in partitions]


def _record_entities(record: AuditRecord) -> list[dict[str, Any]]:
    return index_entities(record.chain, record_entity(record))


def indexed_row(entity: Mapping[str, Any]) -> StoredAuditRow:
    """A record as an index row holds it. Raises ValueError (KeyError) for a row that is no copy."""
    fields = {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey", "Timestamp", "chain")}
    seq = fields.get("seq")
    if type(seq) is not int:
        raise ValueError("an index row without its sequence number")
    chain = str(entity["chain"])
    return StoredAuditRow(chain=chain, record=stored_record({"RowKey": f"{10**12 - 1 - seq:012d}", **fields}))


_LIVE: weakref.WeakSet[AuditIndex] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()
_AT_EXIT: list[bool] = []  # registered once, on the first index made (nothing at import)


def _flushed_at_exit(index: AuditIndex) -> None:
    """A process that ends normally (the CLI after a repair, a host shutting down) writes what its indexes
    have pending first; one that is killed leaves it to the next digest."""
    with _LIVE_LOCK:
        if not _AT_EXIT:
            atexit.register(_flush_all)
            _AT_EXIT.append(True)
        _LIVE.add(index)


def _flush_all() -> None:
    for index in list(_LIVE):
        index.flush(EXIT_FLUSH_TIMEOUT)


class AuditIndex:
    """The index table: ``add`` (in the background), ``write`` (now), ``flush``, ``page``."""

    def __init__(
        self,
        service: TableServiceClient,
        table: str,
        transactions: TableTransactions | None = None,
        delay: float = DELAY,
    ) -> None:
        self._table = LazyTable(service, table)
        self._transactions = transactions or default_transactions()
        self._delay = delay
        self._cond = threading.Condition()
        self._pending: dict[str, dict[str, dict[str, Any]]] = {}
        self._hurry = False  # a reader waits: write what is pending now
        self._added = 0  # rows handed to add() so far
        self._done = 0  # of those, rows written or given up on
        self._writer: threading.Thread | None = None
        _flushed_at_exit(self)

    @property
    def table_name(self) -> str:
        return self._table.table_name

    @property
    def table(self) -> TableClient:
        return self._table.table

    # -- writes --------------------------------------------------------------------------------------

    def add(self, records: Sequence[AuditRecord]) -> None:
        """Index committed records in the background (never raises: the index is derived)."""
        entities = [e for r in records for e in _record_entities(r)]
        with self._cond:
            for entity in entities:
                rows = self._pending.setdefault(entity["PartitionKey"], {})
                self._added += entity["RowKey"] not in rows  # one row written once, however often added
                rows[entity["RowKey"]] = entity
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._write_pending, name="audit-index", daemon=True)
                self._writer.start()
            if any(len(rows) >= MAX_BATCH for rows in self._pending.values()):
                self._cond.notify_all()  # a transaction's worth: no reason to wait

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Wait until the rows added so far are written (or given up on); False when ``timeout`` ran
        out first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._added
            if self._done < target:
                self._hurry = True
                self._cond.notify_all()  # the writer writes now rather than at the end of its wait
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def write(self, records: Iterable[tuple[str, StoredRecord]]) -> int:
        """Index stored records (each with its chain) now, each partition's rows in as few transactions
        as they fit (upserts: a row already there is written again); a row that is no record is passed
        over. Returns the records indexed. Raises DependencyUnavailable."""
        by_partition: dict[str, dict[str, dict[str, Any]]] = {}
        count = 0
        for chain, record in records:
            try:
                entities = index_entities(chain, record.fields)
            except (KeyError, ValueError, TypeError):
                continue
            count += 1
            for entity in entities:
                by_partition.setdefault(entity["PartitionKey"], {})[entity["RowKey"]] = entity
        for rows in by_partition.values():
            self._upsert(list(rows.values()))
        return count

    def remove(self, chain: str, records: Sequence[StoredRecord]) -> None:
        """Delete the index copies of these records of ``chain`` (a copy already gone is skipped)."""
        self.flush()  # none of them may be written again after this
        for record in records:
            try:
                copies = index_entities(chain, record.fields)
            except (KeyError, ValueError, TypeError):
                continue  # no record's fields: never indexed
            for copy in copies:
                try:
                    self.table.delete_entity(copy["PartitionKey"], copy["RowKey"])
                except ResourceNotFoundError:
                    continue
                except AzureError as err:
                    raise unavailable(err) from err

    def _upsert(self, rows: list[dict[str, Any]]) -> None:
        for start in range(0, len(rows), MAX_BATCH):
            chunk = rows[start : start + MAX_BATCH]
            try:
                self._transactions.submit(self._table.table, [("upsert", row) for row in chunk])
            except AzureError as err:
                raise unavailable(err) from err

    def _write_pending(self) -> None:
        """The background writer: gathers rows for ``delay`` (less when a partition has a transaction's
        worth, or a reader is waiting), writes each partition's, until none wait."""
        while True:
            with self._cond:
                deadline = time.monotonic() + self._delay
                while not self._hurry and not any(len(r) >= MAX_BATCH for r in self._pending.values()):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                self._hurry = False
                pending, self._pending = self._pending, {}
                if not pending:
                    self._writer = None
                    self._cond.notify_all()
                    return
            count = sum(len(rows) for rows in pending.values())
            # The copies under t: last, and only of records whose other copies were written: a record in
            # t: is in every index, which is what the digest's check for missing records reads.
            failed: set[str] = set()
            for partition, rows in sorted(pending.items(), key=lambda item: item[0].startswith("t:")):
                keys = [key for key in rows if not (partition.startswith("t:") and key in failed)]
                try:
                    self._upsert([rows[key] for key in keys])
                except Exception:  # the index is derived: the next digest writes what is missing
                    failed.update(keys)
                    logger.warning(
                        "audit index rows of %s not written; the next digest re-indexes them", partition
                    )
            with self._cond:
                self._done += count
                self._cond.notify_all()

    # -- hourly aggregates (shared/domain/audit/aggregates.py) ---------------------------------------

    def write_aggregates(
        self, vault: str, hours: Sequence[Mapping[str, Any]], coverage: Mapping[str, Any]
    ) -> None:
        """Upsert sealed hourly aggregates, then the coverage mark. Raises DependencyUnavailable."""
        by_partition: dict[str, list[dict[str, Any]]] = {}
        for fields in hours:
            moment = parse_time(str(fields["hour"]))
            row = {**fields, "PartitionKey": _aggregate_partition(vault, moment), "RowKey": _hour_key(moment)}
            by_partition.setdefault(row["PartitionKey"], []).append(row)
        for rows in by_partition.values():
            self._upsert(rows)
        self._upsert([{**coverage, "PartitionKey": _AGGREGATES, "RowKey": f"coverage:{vault}"}])

    def write_evidence(self, vault: str, parts: Sequence[Mapping[str, Any]]) -> None:
        """Upsert sealed evidence parts (each in its hour's place, by its number). Raises
        DependencyUnavailable."""
        by_partition: dict[str, list[dict[str, Any]]] = {}
        for fields in parts:
            moment = parse_time(str(fields["hour"]))
            key = f"{_hour_key(moment)}{int(fields['part']):04d}"
            row = {**fields, "PartitionKey": _evidence_partition(vault, moment), "RowKey": key}
            by_partition.setdefault(row["PartitionKey"], []).append(row)
        for rows in by_partition.values():
            for start in range(0, len(rows), _EVIDENCE_BATCH):
                self._upsert(rows[start : start + _EVIDENCE_BATCH])

    def read_evidence(
        self, vault: str, since: datetime, until: datetime
    ) -> dict[datetime, list[Mapping[str, Any]]]:
        """The stored evidence parts of the hours from ``since`` to before ``until``, by the hour their
        keys name, as stored."""
        found: dict[datetime, list[Mapping[str, Any]]] = {}
        for hour, fields in self._hourly(_evidence_partition, vault, since, until, parts=True):
            found.setdefault(hour, []).append(fields)
        return found

    def read_aggregates(
        self, vault: str, since: datetime, until: datetime
    ) -> list[tuple[datetime, Mapping[str, Any]]]:
        """The stored aggregates of the hours from ``since`` to before ``until`` (each with the hour its
        keys name), as stored."""
        return self._hourly(_aggregate_partition, vault, since, until, parts=False)

    def _hourly(
        self,
        partition: Callable[[str, datetime], str],
        vault: str,
        since: datetime,
        until: datetime,
        *,
        parts: bool,
    ) -> list[tuple[datetime, Mapping[str, Any]]]:
        """The rows of the hours from ``since`` to before ``until`` in ``vault``'s day partitions, each
        with its hour: an aggregate's row key is its hour's, an evidence part's (``parts``) begins with it.
        A row keyed otherwise is no such row: left out."""
        query = "PartitionKey ge @low and PartitionKey le @high"
        params = {"low": partition(vault, until), "high": partition(vault, since)}
        try:
            entities = list(self._table.table.query_entities(query, parameters=params))
        except AzureError as err:
            raise unavailable(err) from err
        found: list[tuple[datetime, Mapping[str, Any]]] = []
        for entity in entities:
            try:
                row = str(entity["RowKey"])
                if parts and not (len(row) >= 6 and row[2:].isascii() and row[2:].isdigit()):
                    continue
                hour = _hour_of_keys(str(entity["PartitionKey"]), row[:2] if parts else row)
            except ValueError:
                continue
            if since <= hour < until:
                found.append((hour, _fields(entity)))
        return found

    def write_verification(self, vault: str, fields: Mapping[str, Any]) -> None:
        """Replace the sealed last full verification of ``vault``. Raises DependencyUnavailable."""
        self._upsert([{**fields, "PartitionKey": _AGGREGATES, "RowKey": f"verification:{vault}"}])

    def read_verification(self, vault: str) -> Mapping[str, Any] | None:
        return self._read_mark(f"verification:{vault}")

    def read_coverage(self, vault: str) -> Mapping[str, Any] | None:
        return self._read_mark(f"coverage:{vault}")

    def _read_mark(self, key: str) -> Mapping[str, Any] | None:
        """One of the sealed marks (a coverage, a verification), as stored; None when there is none."""
        try:
            return _fields(self._table.table.get_entity(_AGGREGATES, key))
        except ResourceNotFoundError:
            return None
        except AzureError as err:
            raise unavailable(err) from err

    # -- reads ---------------------------------------------------------------------------------------

    def page(
        self, query: AuditQuery, limit: int, after: RecordPosition | None
    ) -> tuple[list[StoredAuditRow], RecordPosition | None]:
        """Up to ``limit`` rows of the query's records, newest first, from ``after`` (a position this
        returned), and the position of the rest (None: no more). Rows that are no copy are left out."""
        prefix = _prefixes(query)
        low = prefix + (_second(query.until) if query.until else "0" * 14)
        high = prefix + (_second(query.since) if query.since else f"{_MAX_SECOND:014d}")
        clauses = ["PartitionKey ge @low", "PartitionKey le @high"]
        params: dict[str, Any] = {"low": low, "high": high}
        add_filters(query, clauses, params, by_index=prefix)
        return _read_page(self._table, " and ".join(clauses), params, limit, after, indexed_row)


def chain_page(
    table: LazyTable, query: AuditQuery, limit: int, after: RecordPosition | None
) -> tuple[list[StoredAuditRow], RecordPosition | None]:
    """The same page of one chain's records, read from its own partition (newest first by sequence)."""
    assert query.chain is not None
    clauses = ["PartitionKey eq @chain", "RowKey ne @head"]
    params: dict[str, Any] = {"chain": query.chain, "head": HEAD_ROW}
    add_filters(query, clauses, params)
    chain = query.chain

    def row(entity: Mapping[str, Any]) -> StoredAuditRow:
        return StoredAuditRow(chain=chain, record=stored_record(entity))

    return _read_page(table, " and ".join(clauses), params, limit, after, row)


def add_filters(query: AuditQuery, clauses: list[str], params: dict[str, Any], *, by_index: str = "") -> None:
    """The query's filters (vault, action, actor, time) the partitions read do not already apply
    (``by_index``: the index's partition prefix), as server-side clauses."""
    if query.vault:
        clauses.append("vault eq @vault")
        params["vault"] = query.vault
    if query.action and not by_index.startswith("c:"):
        clauses.append("action eq @action")
        params["action"] = query.action.value
    if query.actor:  # also on the actor's index: a hash collision must not show another's records
        clauses.append("actor_id eq @actor")
        params["actor"] = query.actor
    if query.since:
        clauses.append("time ge @since")
        params["since"] = format_time(query.since)
    if query.until:
        clauses.append("time lt @until")
        params["until"] = format_time(query.until)


def _read_page(
    table: LazyTable,
    query_filter: str,
    params: dict[str, Any],
    limit: int,
    after: RecordPosition | None,
    row: Callable[[Mapping[str, Any]], StoredAuditRow],
) -> tuple[list[StoredAuditRow], RecordPosition | None]:
    token = {"PartitionKey": after[0], "RowKey": after[1]} if after else None
    try:
        pages = table.table.query_entities(query_filter, parameters=params, results_per_page=limit).by_page(
            continuation_token=token  # type: ignore[arg-type]  # the SDK's tokens are dicts, typed as str
        )
        entities = list(next(pages, []))
        following = pages.continuation_token  # type: ignore[attr-defined]
    except AzureError as err:
        raise unavailable(err) from err
    rows: list[StoredAuditRow] = []
    for entity in entities:
        try:
            rows.append(row(entity))
        except (KeyError, ValueError, TypeError):
            continue  # not a record (verify reports the chain's); a query skips it
    position = (str(following["PartitionKey"]), str(following["RowKey"])) if following else None
    return rows, position
