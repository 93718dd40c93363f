"""Azure Storage (tables and queues) client settings and the health probe."""

from __future__ import annotations

from azure.core.exceptions import AzureError
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from shared.adapters.azure_errors import translate

DEPENDENCY = "storage"

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
