"""The audit table's reader: records by query, whole chains for verification, heads and ranges — as
stored, whatever somebody wrote into them (verify judges them; a query skips what is no record)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError

from shared.adapters.tables.index import AuditIndex, add_filters, chain_page
from shared.adapters.tables.rows import (
    DIGEST_PAGES,
    HEAD_ROW,
    MAX_SEQ,
    AuditTable,
    head_of,
    row_key,
    stored_record,
    unavailable,
)
from shared.domain.audit import (
    DIGEST_CHAIN,
    AuditQuery,
    ChainContents,
    ChainHead,
    RecordPosition,
    StoredAuditRow,
    StoredRecord,
)

logger = logging.getLogger(__name__)


class TableAuditReader:
    """AuditReader's reads of records and heads on the audit table (the digests: TableDigestStore)."""

    def __init__(self, table: AuditTable, index: AuditIndex) -> None:
        self._audit = table
        self._records_index = index

    def page_records(
        self, query: AuditQuery, limit: int, after: RecordPosition | None = None
    ) -> tuple[list[StoredAuditRow], RecordPosition | None]:
        if not self._records_index.flush():
            logger.warning("audit index rows still pending; the page may miss the newest records")
        if query.chain:
            return chain_page(self._audit, query, limit, after)
        return self._records_index.page(query, limit, after)

    def list_records(self, query: AuditQuery) -> Iterable[StoredAuditRow]:
        query_filter, params = _record_filter(query)
        for entity in self._audit.query(query_filter, params):
            try:
                yield StoredAuditRow(chain=str(entity["PartitionKey"]), record=stored_record(entity))
            except ValueError:
                continue  # not a record row: verify reports it, queries skip it

    def read_aggregates(
        self, vault: str, since: datetime, until: datetime
    ) -> list[tuple[datetime, Mapping[str, Any]]]:
        return self._records_index.read_aggregates(vault, since, until)

    def read_evidence(
        self, vault: str, since: datetime, until: datetime
    ) -> dict[datetime, list[Mapping[str, Any]]]:
        return self._records_index.read_evidence(vault, since, until)

    def read_coverage(self, vault: str) -> Mapping[str, Any] | None:
        return self._records_index.read_coverage(vault)

    def read_verification(self, vault: str) -> Mapping[str, Any] | None:
        return self._records_index.read_verification(vault)

    def read_chains(self, chain: str | None = None) -> dict[str, ChainContents]:
        return dict(self.iter_chains(chain))

    def iter_chains(self, chain: str | None = None) -> Iterator[tuple[str, ChainContents]]:
        if chain is None:
            entities: Iterable[Mapping[str, Any]] = self._audit.query(
                "PartitionKey ne @digest and PartitionKey ne @pages",
                {"digest": DIGEST_CHAIN, "pages": DIGEST_PAGES},
            )
        else:
            entities = self._audit.query("PartitionKey eq @chain", {"chain": chain})
        # The table answers partition by partition (by partition key, then row key): one chain is held in
        # memory at a time.
        found, current = _Partitions(), None
        for entity in entities:
            partition = str(entity["PartitionKey"])
            if current is not None and partition != current:
                yield from self._completed(found)
                found = _Partitions()
            current = partition
            found.add(entity)
        yield from self._completed(found)

    def _completed(self, found: _Partitions) -> Iterator[tuple[str, ChainContents]]:
        for name, head in found.heads.items():
            # A partition reads newest record first and its head last: records appended while the pages
            # went by are missing below a head that already counts them. They are committed (a head moves
            # only with its records), so read them now instead of calling the chain cut.
            newest = max((r.position for r in found.records[name]), default=0)
            if head.seq > newest:
                found.records[name] += self.read_range(name, newest + 1, head.seq)
        yield from found.contents().items()

    def read_head(self, chain: str) -> ChainHead | None:
        try:
            return self._audit.head_row(chain)[0]
        except AzureError as err:
            raise unavailable(err) from err

    def read_heads(self) -> dict[str, ChainHead]:
        entities = self._audit.query(
            "RowKey eq @head and PartitionKey ne @digest and PartitionKey ne @pages",
            {"head": HEAD_ROW, "digest": DIGEST_CHAIN, "pages": DIGEST_PAGES},
        )
        heads: dict[str, ChainHead] = {}
        for entity in entities:
            try:
                heads[str(entity["PartitionKey"])] = head_of(entity)
            except (KeyError, ValueError, TypeError):
                continue  # an unreadable head is no head: the digest writer holds what it sealed before
        return heads

    def read_range(self, chain: str, first: int, last: int) -> list[StoredRecord]:
        if not 0 < first <= last <= MAX_SEQ:
            return []
        query = "PartitionKey eq @chain and RowKey ge @low and RowKey le @high"
        params = {"chain": chain, "low": row_key(last), "high": row_key(first)}
        records: list[StoredRecord] = []
        for entity in self._audit.query(query, params):
            try:
                records.append(stored_record(entity))
            except ValueError:
                continue  # not a record row (verify reports it): the range then has a hole
        return records


def _record_filter(query: AuditQuery) -> tuple[str, dict[str, Any]]:
    """The server-side filter of a query's records (head rows and the digest chain excluded)."""
    clauses = ["RowKey ne @head", "PartitionKey ne @digest", "PartitionKey ne @pages"]
    params: dict[str, Any] = {"head": HEAD_ROW, "digest": DIGEST_CHAIN, "pages": DIGEST_PAGES}
    if query.chain:
        clauses.append("PartitionKey eq @chain")
        params["chain"] = query.chain
    add_filters(query, clauses, params)
    return " and ".join(clauses), params


@dataclass
class _Partitions:
    """Rows of chains as read, sorted into records, heads and rows that are neither."""

    records: dict[str, list[StoredRecord]] = field(default_factory=dict)
    heads: dict[str, ChainHead] = field(default_factory=dict)
    stray: dict[str, list[str]] = field(default_factory=dict)
    unreadable_heads: set[str] = field(default_factory=set)

    def add(self, entity: Mapping[str, Any]) -> None:
        partition = str(entity["PartitionKey"])
        try:
            if entity["RowKey"] == HEAD_ROW:
                self.heads[partition] = head_of(entity)
                self.records.setdefault(partition, [])
            else:
                self.records.setdefault(partition, []).append(stored_record(entity))
        except (KeyError, ValueError, TypeError):
            # A head or record row somebody rewrote into nonsense: verify reports it, never trips on it.
            self.records.setdefault(partition, [])
            if entity["RowKey"] == HEAD_ROW:
                self.unreadable_heads.add(partition)
            else:
                self.stray.setdefault(partition, []).append(str(entity["RowKey"]))

    def contents(self) -> dict[str, ChainContents]:
        return {
            name: ChainContents(
                records=rows,
                head=self.heads.get(name),
                stray_rows=tuple(self.stray.get(name, ())),
                head_unreadable=name in self.unreadable_heads,
            )
            for name, rows in self.records.items()
        }
