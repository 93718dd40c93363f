"""The real azure-data-tables and azure-storage-queue clients against Azurite, built the way the app builds
them (shared.bootstrap), including the pinned queue API version against a strict Azurite."""

from __future__ import annotations

import uuid

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError
from azure.data.tables import UpdateMode

from devtools.azurite import AzuriteProcess
from shared.bootstrap import Container
from shared.config import Settings


def _container(azurite: AzuriteProcess) -> Container:
    return Container(Settings({"SECRETS_STORAGE": azurite.connection_string}))


def _name(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:12]


def test_table_entities_round_trip_with_etags(azurite: AzuriteProcess) -> None:
    service = _container(azurite).table_service
    table = service.create_table_if_not_exists(_name("audit"))
    table.create_entity({"PartitionKey": "db-password", "RowKey": "0001", "action": "ROTATED", "seq": 1})
    entity = table.get_entity("db-password", "0001")
    assert entity["action"] == "ROTATED"
    assert entity["seq"] == 1

    stale_etag = entity.metadata["etag"]
    table.update_entity(
        {**entity, "seq": 2},
        mode=UpdateMode.REPLACE,
        etag=stale_etag,
        match_condition=MatchConditions.IfNotModified,
    )
    with pytest.raises(ResourceModifiedError):  # Azurite answers 412 on a stale ETag, like Azure
        table.update_entity(
            {**entity, "seq": 3},
            mode=UpdateMode.REPLACE,
            etag=stale_etag,
            match_condition=MatchConditions.IfNotModified,
        )
    assert table.get_entity("db-password", "0001")["seq"] == 2


def test_table_batch_of_100_and_paged_query(azurite: AzuriteProcess) -> None:
    service = _container(azurite).table_service
    table = service.create_table_if_not_exists(_name("batch"))
    # Azure's limit is 100 operations per batch (Azurite breaks above it): stay at the limit.
    table.submit_transaction(
        [("create", {"PartitionKey": "p", "RowKey": f"{i:04d}", "n": i}) for i in range(100)]
    )
    pages = list(
        table.query_entities("PartitionKey eq @pk", parameters={"pk": "p"}, results_per_page=30).by_page()
    )
    rows = [e for page in pages for e in page]
    assert len(rows) == 100
    assert [e["n"] for e in rows] == list(range(100))


def test_queue_send_receive_delete(azurite: AzuriteProcess) -> None:
    service = _container(azurite).queue_service
    queue = service.create_queue(_name("rotate"))
    queue.send_message("rotate db-password")
    messages = list(queue.receive_messages(visibility_timeout=5))
    assert [m.content for m in messages] == ["rotate db-password"]
    queue.delete_message(messages[0])
    assert list(queue.receive_messages()) == []


def test_app_queue_client_works_against_a_strict_azurite() -> None:
    """The queue API version the service pins is one Azurite 3.35 accepts without --skipApiVersionCheck."""
    try:
        strict = AzuriteProcess.start(skip_api_version_check=False)
    except RuntimeError as err:
        pytest.fail(f"Azurite could not start: {err}", pytrace=False)
    with strict:
        queue = _container(strict).queue_service.create_queue(_name("strict"))
        queue.send_message("hello")
        assert [m.content for m in queue.receive_messages()] == ["hello"]
        _container(strict).table_service.create_table(_name("strict"))


def test_storage_health_probe_against_azurite(azurite: AzuriteProcess) -> None:
    _container(azurite).health_probes()["storage"].check()
