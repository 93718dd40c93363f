"""Azure Table Storage adapters: the audit log (chains, heads, digests) and compare-and-swap states.

The audit log is three parts on one table (the layout: shared/adapters/tables/rows.py): the writer
(``TableAuditWriter``: group commit, appends with retries, repair), the reader (``TableAuditReader``) and
the digest store (``TableDigestStore``), plus the index of the records on a second table (index.py), which
the writer feeds and the reader pages through. ``TableAuditLog`` composes them into the AuditLog and
AuditReader ports, so callers hold one object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from shared.adapters.tables.audit_reader import TableAuditReader
from shared.adapters.tables.audit_writer import MAX_KNOWN_HEADS, TableAuditWriter
from shared.adapters.tables.batch import TableTransactions, default_transactions
from shared.adapters.tables.digests import TableDigestStore
from shared.adapters.tables.index import AuditIndex, index_table
from shared.adapters.tables.rows import (
    AUDIT_TABLE,
    HEAD_ROW,
    MAX_BATCH,
    AuditTable,
    LazyTable,
    row_key,
    strip,
    unavailable,
    write_operation,
)
from shared.domain.errors import Conflict, NotFound
from shared.domain.state import StateWrite, Versioned
from shared.ports import MacKeyRing

__all__ = [
    "AUDIT_INDEX_TABLE",
    "AUDIT_TABLE",
    "FINDINGS_TABLE",
    "HEAD_ROW",
    "MAX_BATCH",
    "STATE_TABLE",
    "TableAuditLog",
    "TableStateStore",
    "row_key",
]

#: The audit records' index (index.py), beside the audit table of the same name.
AUDIT_INDEX_TABLE = index_table(AUDIT_TABLE)
FINDINGS_TABLE = "auditfindings"
#: Rotation progress and leases (StateStore).
STATE_TABLE = "secretstate"


class TableAuditLog(TableAuditWriter, TableAuditReader, TableDigestStore):
    """AuditLog and AuditReader on one table: the writer, the reader and the digest store over one
    ``AuditTable`` (their methods do not overlap). Creates the table on first use."""

    def __init__(
        self,
        service: TableServiceClient,
        keys: MacKeyRing,
        table: str = AUDIT_TABLE,
        max_attempts: int = 50,
        max_known_heads: int = MAX_KNOWN_HEADS,
        transactions: TableTransactions | None = None,
    ) -> None:
        self.audit_table = AuditTable(service, table, transactions)
        self.records_index = AuditIndex(service, index_table(table), transactions)
        TableAuditWriter.__init__(
            self, self.audit_table, keys, max_attempts, max_known_heads, self.records_index
        )
        TableAuditReader.__init__(self, self.audit_table, self.records_index)
        TableDigestStore.__init__(self, self.audit_table)

    @property
    def table_name(self) -> str:
        return self.audit_table.table_name

    @property
    def table(self) -> TableClient:
        return self.audit_table.table


class TableStateStore(LazyTable):
    """StateStore on one table: each state one entity, each write conditional on its ETag."""

    def __init__(
        self, service: TableServiceClient, table: str, transactions: TableTransactions | None = None
    ) -> None:
        super().__init__(service, table)
        self._transactions = transactions or default_transactions()

    def get(self, partition: str, key: str) -> Versioned | None:
        try:
            entity = self.table.get_entity(partition, key)
        except ResourceNotFoundError:
            return None
        except AzureError as err:
            raise unavailable(err) from err
        return _versioned(entity)

    def create(self, partition: str, key: str, state: Mapping[str, Any]) -> Versioned:
        try:
            metadata = self.table.create_entity(strip({**state, "PartitionKey": partition, "RowKey": key}))
        except ResourceExistsError:
            raise Conflict(f"{partition}/{key} exists already") from None
        except AzureError as err:
            raise unavailable(err) from err
        return Versioned(state=strip(state), etag=str(metadata["etag"]))

    def replace(self, partition: str, key: str, state: Mapping[str, Any], etag: str) -> Versioned:
        try:
            metadata = self.table.update_entity(
                strip({**state, "PartitionKey": partition, "RowKey": key}),
                mode=UpdateMode.REPLACE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except ResourceModifiedError:
            raise Conflict(f"{partition}/{key} changed since it was read") from None
        except ResourceNotFoundError:
            raise NotFound(f"{partition}/{key} does not exist") from None
        except AzureError as err:
            raise unavailable(err) from err
        return Versioned(state=strip(state), etag=str(metadata["etag"]))

    def delete(self, partition: str, key: str, etag: str) -> None:
        if self.get(partition, key) is None:
            raise NotFound(f"{partition}/{key} does not exist")
        try:
            self.table.delete_entity(partition, key, etag=etag, match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError:
            raise Conflict(f"{partition}/{key} changed since it was read") from None
        except AzureError as err:
            raise unavailable(err) from err

    def commit(self, partition: str, writes: Sequence[StateWrite]) -> list[Versioned]:
        operations = [
            write_operation(strip({**w.state, "PartitionKey": partition, "RowKey": w.key}), w.etag)
            for w in writes
        ]
        try:
            answers = self._transactions.submit(self.table, operations)
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
            raise unavailable(err) from err
        except AzureError as err:
            raise unavailable(err) from err
        return [
            Versioned(state=strip(write.state), etag=str(answer.get("etag", "")))
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
            raise unavailable(err) from err
        return {str(e["RowKey"]): _versioned(e) for e in entities}


def _versioned(entity: Mapping[str, Any]) -> Versioned:
    state = {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey", "Timestamp")}
    return Versioned(state=state, etag=str(entity.metadata["etag"]))  # type: ignore[attr-defined]
