"""The audit table's layout and the handle its writer, reader and digest store share.

One partition per chain (``<vault>:<secret>``, ``<vault>:_service`` and ``_digest``), and ``_digestpages``
for the digests' pages of heads. Records have row key
``MAX_SEQ - seq`` (12 digits), so a partition reads newest first; the chain head (``head``, sorting after
every digit) holds the newest sequence number and MAC. Every write of records is one entity-group
transaction that also moves the head, guarded by the head row's ETag.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from shared.adapters.azure_errors import translate
from shared.adapters.tables.batch import TableTransactions, default_transactions
from shared.domain.audit import AuditRecord, ChainHead, StoredRecord, event_fields
from shared.domain.errors import Conflict, DependencyUnavailable

T = TypeVar("T")

DEPENDENCY = "audit_store"
AUDIT_TABLE = "auditlog"
HEAD_ROW = "head"
#: The partition of the digests' pages of heads (digests.py): no chain, like ``_digest``.
DIGEST_PAGES = "_digestpages"
MAX_SEQ = 10**12 - 1
MAX_BATCH = 100  # Azure's limit per entity-group transaction (Azurite breaks above it)
_ROW_KEY = re.compile(r"[0-9]{12}")


def unavailable(err: AzureError) -> DependencyUnavailable:
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


def strip(entity: Mapping[str, Any]) -> dict[str, Any]:
    """The entity without its None properties (the Table service stores no nulls)."""
    return {k: v for k, v in entity.items() if v is not None}


def record_entity(record: AuditRecord) -> dict[str, Any]:
    return strip(
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


def stored_record(entity: Mapping[str, Any]) -> StoredRecord:
    """A record row as stored. Raises ValueError when its row key is no record's."""
    fields = {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey", "Timestamp")}
    return StoredRecord(position=seq_of(str(entity["RowKey"])), fields=fields)


def head_of(entity: Mapping[str, Any]) -> ChainHead:
    """The head a head row holds. Raises KeyError, ValueError or TypeError when it holds nonsense."""
    return ChainHead(int(entity["seq"]), str(entity["mac"]))


def write_operation(entity: dict[str, Any], etag: str | None) -> tuple[Any, ...]:
    """A transaction's write of ``entity``: create it (``etag`` None: it must not exist), or replace it
    only if still at ``etag``."""
    if etag is None:
        return ("create", entity)
    guard = {"mode": UpdateMode.REPLACE, "etag": etag, "match_condition": MatchConditions.IfNotModified}
    return ("update", entity, guard)


def head_write(partition: str, head: ChainHead, etag: str | None) -> tuple[Any, ...]:
    """The transaction's write of a partition's head row, guarded by the ETag it was read at."""
    row = {"PartitionKey": partition, "RowKey": HEAD_ROW, "seq": head.seq, "mac": head.mac}
    return write_operation(row, etag)


class LazyTable:
    """A table created on first use (nothing happens at construction)."""

    def __init__(self, service: TableServiceClient, table: str) -> None:
        self._service = service
        self._table_name = table
        self._table: TableClient | None = None

    @property
    def table_name(self) -> str:
        return self._table_name

    @property
    def table(self) -> TableClient:
        if self._table is None:
            try:
                self._table = self._service.create_table_if_not_exists(self._table_name)
            except AzureError as err:
                raise unavailable(err) from err
        return self._table


class AuditTable(LazyTable):
    """The audit table as its writer, reader and digest store share it: one client, one way to commit a
    transaction, to read a head row, to tell whether rows landed."""

    def __init__(
        self, service: TableServiceClient, table: str, transactions: TableTransactions | None = None
    ) -> None:
        super().__init__(service, table)
        self.transactions = transactions or default_transactions()

    def transact(self, operations: list[Any]) -> list[dict[str, Any]]:
        """One entity-group transaction; each operation's answer (its ``etag``). See batch.py."""
        return self.transactions.submit(self.table, operations)

    def query(self, query_filter: str, params: dict[str, Any]) -> Iterator[Mapping[str, Any]]:
        try:
            yield from self.table.query_entities(query_filter, parameters=params, results_per_page=1000)
        except AzureError as err:
            raise unavailable(err) from err

    def head_row(self, partition: str) -> tuple[ChainHead | None, str | None]:
        """The stored head (None when missing or unreadable) and the head row's ETag (None: no row).
        Raises azure-core's errors."""
        try:
            entity = self.table.get_entity(partition, HEAD_ROW)
        except ResourceNotFoundError:
            return None, None
        try:
            head: ChainHead | None = head_of(entity)
        except (KeyError, ValueError, TypeError):
            head = None
        return head, str(entity.metadata["etag"])

    def landed(self, partition: str, row: Mapping[str, Any]) -> bool:
        """Whether ``row`` is stored as written (its MAC). Raises azure-core's errors."""
        try:
            stored = self.table.get_entity(partition, str(row["RowKey"]))
        except ResourceNotFoundError:
            return False
        return bool(stored.get("mac") == row["mac"])

    def landed_quietly(self, partition: str, row: Mapping[str, Any]) -> bool:
        """Whether a row is stored, False when that cannot be told either."""
        try:
            return self.landed(partition, row)
        except AzureError:
            return False

    def write_after(
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
            stored, etag = self.head_row(partition)
        except AzureError as err:
            raise unavailable(err) from err
        accept(stored)
        try:
            self.transact([head_write(partition, new_head, etag), *(("create", row) for row in rows)])
        except HttpResponseError as err:
            if self.landed_quietly(partition, rows[0]):
                return result
            if getattr(err, "status_code", None) in (409, 412):
                raise Conflict(
                    f"{partition} changed meanwhile (another writer); nothing was written"
                ) from err
            raise unavailable(err) from err
        except AzureError as err:
            if self.landed_quietly(partition, rows[0]):
                return result
            raise unavailable(err) from err
        return result
