"""The rotation-requests queue adapter against Azurite, through the queue client the app builds
(shared.bootstrap): messages are base64 text the Functions queue trigger decodes, and parse back into the
requests that were sent."""

from __future__ import annotations

import base64
import socket
import uuid
from datetime import UTC, datetime

import pytest
from azure.storage.queue import QueueClient, QueueServiceClient, TextBase64DecodePolicy

from devtools.azurite import AzuriteProcess, connection_string
from shared.adapters.storage import QUEUE_API_VERSION, ROTATION_QUEUE, StorageQueueRotationRequests
from shared.bootstrap import Container
from shared.config import Settings
from shared.domain.errors import DependencyUnavailable
from shared.domain.rotation import RequestsNotSent, RotationReason, RotationRequest


def _service(azurite: AzuriteProcess) -> QueueServiceClient:
    return Container(Settings({"SECRETS_STORAGE": azurite.connection_string})).queue_service


def _queue_name() -> str:
    return "rotation-requests-" + uuid.uuid4().hex[:12]


def _requests(correlation_id: str, *names: str) -> list[RotationRequest]:
    now = datetime.now(UTC)
    reasons = list(RotationReason)
    return [
        RotationRequest(
            secret_name=name,
            reason=reasons[i % len(reasons)],
            requested_at=now,
            correlation_id=correlation_id,
        )
        for i, name in enumerate(names)
    ]


def _reader(azurite: AzuriteProcess, queue: str, *, decode: bool = True) -> QueueClient:
    options = {"message_decode_policy": TextBase64DecodePolicy()} if decode else {}
    return QueueClient.from_connection_string(
        azurite.connection_string, queue, api_version=QUEUE_API_VERSION, **options
    )


def test_requests_arrive_as_base64_json_messages(azurite: AzuriteProcess) -> None:
    queue = _queue_name()
    adapter = StorageQueueRotationRequests(_service(azurite), queue)
    sent = _requests("sweep-1", "dispatch-api-key", "fleet-db-password", "jwt-signing", "tile-key")

    adapter.send(sent)  # the queue does not exist yet: created on first use

    # What the Functions queue trigger sees: base64 text that decodes strictly to the JSON.
    raw = [str(m.content) for m in _reader(azurite, queue, decode=False).peek_messages(max_messages=32)]
    assert [base64.b64decode(text, validate=True).decode() for text in raw] == [r.to_json() for r in sent]

    reader = _reader(azurite, queue)
    messages = list(reader.receive_messages(max_messages=32))
    assert [RotationRequest.from_json(str(m.content)) for m in messages] == sent


def test_an_existing_queue_is_reused_and_an_empty_send_touches_nothing(azurite: AzuriteProcess) -> None:
    service = _service(azurite)
    queue = _queue_name()
    StorageQueueRotationRequests(service, queue).send([])
    assert queue not in {q.name for q in service.list_queues(name_starts_with="rotation-requests-")}

    StorageQueueRotationRequests(service, queue).send(_requests("run-1", "a-key"))
    StorageQueueRotationRequests(service, queue).send(_requests("run-2", "b-key"))  # exists already

    messages = _reader(azurite, queue).peek_messages(max_messages=32)
    assert [RotationRequest.from_json(str(m.content)).secret_name for m in messages] == ["a-key", "b-key"]


def test_the_default_queue_is_rotation_requests(azurite: AzuriteProcess) -> None:
    request = _requests(uuid.uuid4().hex, "dispatch-api-key")
    StorageQueueRotationRequests(_service(azurite)).send(request)

    assert ROTATION_QUEUE == "rotation-requests"
    peeked = _reader(azurite, "rotation-requests").peek_messages(max_messages=32)
    assert request[0].to_json() in [str(m.content) for m in peeked]


def test_a_queue_deleted_behind_its_back_fails_the_send_then_is_recreated(azurite: AzuriteProcess) -> None:
    service = _service(azurite)
    queue = _queue_name()
    adapter = StorageQueueRotationRequests(service, queue)
    adapter.send(_requests("run-1", "a-key"))
    service.delete_queue(queue)

    retry = _requests("run-2", "b-key", "c-key")
    with pytest.raises(RequestsNotSent) as err:
        adapter.send(retry)
    assert err.value.not_sent == tuple(retry)
    assert err.value.detail == f"queue {queue} not found"

    adapter.send(retry)
    messages = _reader(azurite, queue).peek_messages(max_messages=32)
    assert [RotationRequest.from_json(str(m.content)) for m in messages] == retry


def test_an_unreachable_account_reports_every_request_as_not_sent() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    service = QueueServiceClient.from_connection_string(
        connection_string("127.0.0.1", port, port, port), api_version=QUEUE_API_VERSION, retry_total=0
    )
    requests = _requests("run-1", "a-key", "b-key")

    with pytest.raises(RequestsNotSent) as err:
        StorageQueueRotationRequests(service, _queue_name()).send(requests)

    assert isinstance(err.value, DependencyUnavailable)
    assert err.value.not_sent == tuple(requests)
    assert err.value.detail == "unreachable (connection failed)"


def test_a_refused_identity_is_reported_as_not_sent(azurite: AzuriteProcess) -> None:
    wrong_key = ";".join(
        part if not part.startswith("AccountKey=") else "AccountKey=" + base64.b64encode(b"k" * 64).decode()
        for part in azurite.connection_string.split(";")
    )
    service = QueueServiceClient.from_connection_string(
        wrong_key, api_version=QUEUE_API_VERSION, retry_total=0
    )

    with pytest.raises(RequestsNotSent) as err:
        StorageQueueRotationRequests(service, _queue_name()).send(_requests("run-1", "a-key"))

    assert err.value.detail.startswith("forbidden (HTTP 403")
