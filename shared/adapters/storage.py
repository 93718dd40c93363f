"""Azure Storage (tables and queues) client settings and the health probes."""

from __future__ import annotations

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from shared.adapters.azure_errors import translate
from shared.domain.errors import DependencyUnavailable

DEPENDENCY = "storage"
AUDIT_STORE = "audit_store"

#: The queue service API version the service speaks. azure-storage-queue 12.18 defaults to a version newer
#: than Azurite 3.35 (the last Azurite on Node 20) accepts; Azure serves every older version, so pinning
#: one that both understand costs nothing in production.
QUEUE_API_VERSION = "2025-11-05"


class StorageProbe:
    """Health probe: list one table and one queue, proving both services answer with our identity."""

    def __init__(self, tables: TableServiceClient, queues: QueueServiceClient) -> None:
        self._tables = tables
        self._queues = queues

    def check(self) -> None:
        try:
            for _ in next(self._tables.list_tables(results_per_page=1).by_page(), ()):
                break
            for _ in next(self._queues.list_queues(results_per_page=1).by_page(), ()):
                break
        except AzureError as err:
            raise translate(DEPENDENCY, err) from err


class AuditStoreProbe:
    """Health probe: query one row of the audit table, proving the table exists and answers.

    The storage probe alone says the account answers; the audit trail also needs its table, which the
    deployment creates (infra/) and which someone may delete. The probe never creates it: a missing audit
    table must show, not be silently replaced by an empty one.
    """

    def __init__(self, tables: TableServiceClient, table: str) -> None:
        self._tables = tables
        self._table = table

    def check(self) -> None:
        try:
            rows = self._tables.get_table_client(self._table).list_entities(
                results_per_page=1, select=["PartitionKey"]
            )
            for _ in next(rows.by_page(), ()):
                break
        except ResourceNotFoundError as err:
            # 404 TableNotFound: the account answered, the table is not there.
            raise DependencyUnavailable(AUDIT_STORE, f"audit table {self._table} does not exist") from err
        except AzureError as err:
            error = translate(AUDIT_STORE, err)
            if isinstance(error, DependencyUnavailable):
                raise error from err
            # Forbidden and the like are failures of this check too, with the same short, safe text.
            raise DependencyUnavailable(AUDIT_STORE, str(error).removeprefix(f"{AUDIT_STORE}: ")) from err
