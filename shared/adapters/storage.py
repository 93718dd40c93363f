"""Azure Storage (tables and queues) client settings, the health probes and the rotation-requests queue."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueClient, QueueServiceClient, TextBase64EncodePolicy

from shared.adapters.azure_errors import translate
from shared.domain.errors import DependencyUnavailable
from shared.domain.rotation import RequestsNotSent, RotationRequest

logger = logging.getLogger(__name__)

DEPENDENCY = "storage"
AUDIT_STORE = "audit_store"

#: The queue service API version the service speaks. azure-storage-queue 12.18 defaults to a version newer
#: than Azurite 3.35 (the last Azurite on Node 20) accepts; Azure serves every older version, so pinning
#: one that both understand costs nothing in production.
QUEUE_API_VERSION = "2025-11-05"
#: The queue ``rotate_secret`` is triggered by (name fixed by the product).
ROTATION_QUEUE = "rotation-requests"


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


class StorageQueueRotationRequests:
    """RotationRequests on a Storage queue: one base64-encoded JSON message per request, since the
    Functions queue trigger decodes base64 by default (host.json ``messageEncoding``). The queue is
    created on first use (nothing happens at construction)."""

    def __init__(self, service: QueueServiceClient, queue: str = ROTATION_QUEUE) -> None:
        self._service = service
        self._queue_name = queue
        self._queue: QueueClient | None = None

    def send(self, requests: Sequence[RotationRequest]) -> None:
        if not requests:
            return
        try:
            queue = self._created()
        except AzureError as err:
            raise RequestsNotSent(DEPENDENCY, _detail(err), requests) from err
        for index, request in enumerate(requests):
            try:
                queue.send_message(request.to_json())
            except AzureError as err:
                detail = _detail(err)
                if isinstance(err, ResourceNotFoundError):
                    self._queue = None  # deleted behind our back: the next send creates it again
                    detail = f"queue {self._queue_name} not found"
                logger.warning(
                    "rotation request for %s not sent to queue %s; %d of %d sent",
                    request.secret_name,
                    self._queue_name,
                    index,
                    len(requests),
                )
                raise RequestsNotSent(DEPENDENCY, detail, requests[index:]) from err
        logger.info("sent %d rotation request(s) to queue %s", len(requests), self._queue_name)

    def _created(self) -> QueueClient:
        if self._queue is None:
            queue = self._service.get_queue_client(
                self._queue_name, message_encode_policy=TextBase64EncodePolicy()
            )
            with contextlib.suppress(ResourceExistsError):
                queue.create_queue()
            self._queue = queue
        return self._queue


def _detail(err: AzureError) -> str:
    """The short, safe text of a translated error (a refused identity is unavailability to the sweep)."""
    error = translate(DEPENDENCY, err)
    if isinstance(error, DependencyUnavailable):
        return error.detail
    return str(error).removeprefix(f"{DEPENDENCY}: ")
