"""shared/adapters/tables/batch.py against azure-data-tables' own ``submit_transaction``, on Azurite: the
same request body, part by part (boundaries and dates aside), and the same outcomes — metadata on
success, the same error types, status codes, error codes and failing index on refusal — on its lean path
and on its fallback to the SDK's public path (taken for an SDK version it was not written for, or a
table client without the internals it uses), each with the callers that rely on the answers."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline import PipelineRequest
from azure.data.tables import EdmType, EntityProperty, TableClient, TableServiceClient, UpdateMode

from devtools.azurite import AzuriteProcess
from shared.adapters.tables import TableStateStore
from shared.adapters.tables.batch import WRITTEN_FOR, TableTransactions, submit_transaction
from shared.domain.errors import Conflict, NotFound
from shared.domain.state import StateWrite

#: An azure-data-tables release the module was not written for: its transactions take the fallback.
UPGRADED = "12.99.0"

Submit = Callable[[TableClient, list[Any]], list[dict[str, Any]]]
SUBMITS: dict[str, Submit] = {
    "sdk": lambda table, operations: table.submit_transaction(operations),
    "ours": submit_transaction,
    "fallback": TableTransactions(installed_version=UPGRADED).submit,
}
OURS = ("ours", "fallback")


@pytest.fixture
def service(azurite: AzuriteProcess) -> Iterator[tuple[TableServiceClient, list[PipelineRequest[Any]]]]:
    seen: list[PipelineRequest[Any]] = []
    connection = azurite.connection_string
    client = TableServiceClient.from_connection_string(connection, raw_request_hook=seen.append)
    try:
        yield client, seen
    finally:
        client.close()


def _table(service: TableServiceClient) -> TableClient:
    return service.create_table(f"batch{uuid.uuid4().hex[:16]}")


def _operations(table: TableClient) -> list[Any]:
    """One of each kind a transaction takes, on entities prepared for them."""
    head = table.create_entity({"PartitionKey": "p", "RowKey": "head", "seq": 1})
    table.create_entity({"PartitionKey": "p", "RowKey": "gone", "v": "x"})
    table.create_entity({"PartitionKey": "p", "RowKey": "merged", "a": "1"})
    guard = {
        "mode": UpdateMode.REPLACE,
        "etag": head["etag"],
        "match_condition": MatchConditions.IfNotModified,
    }
    return [
        ("update", {"PartitionKey": "p", "RowKey": "head", "seq": 2, "mac": "m" * 64}, guard),
        (
            "create",
            {
                "PartitionKey": "p",
                "RowKey": "it's é",
                "n": 7,
                "big": EntityProperty(2**40, EdmType.INT64),
                "flag": True,
                "t": "x",
            },
        ),
        ("upsert", {"PartitionKey": "p", "RowKey": "up", "v": "y"}),
        ("update", {"PartitionKey": "p", "RowKey": "merged", "b": "2"}, {"mode": UpdateMode.MERGE}),
        ("delete", {"PartitionKey": "p", "RowKey": "gone"}),
    ]


def _normalized(body: bytes) -> bytes:
    body = re.sub(rb"(batch|changeset)_[0-9a-f-]{36}", rb"\1_B", body)
    body = re.sub(rb"If-Match: [^\r\n]+", b"If-Match: E", body)
    return re.sub(rb"(x-ms-date|Date): [^\r\n]+", rb"\1: D", body)


def _batch_body(seen: list[PipelineRequest[Any]]) -> tuple[bytes, dict[str, str]]:
    [request] = [r.http_request for r in seen if r.http_request.url.endswith("/$batch")]
    headers = {k: v for k, v in request.headers.items() if k in ("Content-Type", "Accept", "x-ms-version")}
    headers["Content-Type"] = re.sub(r"batch_[0-9a-f-]{36}", "batch_B", headers["Content-Type"])
    return _normalized(bytes(request.content)), headers


def test_the_body_is_the_sdk_s_part_by_part(
    service: tuple[TableServiceClient, list[PipelineRequest[Any]]],
) -> None:
    client, seen = service
    bodies = {}
    for name, submit in SUBMITS.items():
        table = _table(client)
        operations = _operations(table)
        seen.clear()
        submit(table, operations)
        body, headers = _batch_body(seen)
        bodies[name] = (body.replace(table.table_name.encode(), b"T"), headers)
    for ours in OURS:
        assert bodies[ours] == bodies["sdk"], ours
    assert bodies["ours"][0].count(b"Content-Type: application/http") == 5


def test_a_committed_transaction_answers_each_operation_s_etag(
    service: tuple[TableServiceClient, list[PipelineRequest[Any]]],
) -> None:
    client, _ = service
    answers = {}
    for name, submit in SUBMITS.items():
        table = _table(client)
        answers[name] = submit(table, _operations(table))
        head = table.get_entity("p", "head")
        assert head["seq"] == 2
        assert answers[name][0]["etag"] == head.metadata["etag"]
        assert table.get_entity("p", "merged")["a"] == "1"
        assert table.get_entity("p", "it's é")["big"].value == 2**40
        with pytest.raises(HttpResponseError):
            table.get_entity("p", "gone")
    for ours in OURS:
        assert [sorted(a) for a in answers[ours]] == [sorted(a) for a in answers["sdk"]], ours


def _refusal(submit: Submit, table: TableClient, operations: list[Any]) -> tuple[Any, ...]:
    with pytest.raises(Exception) as caught:
        submit(table, operations)
    err = caught.value
    return (
        type(err),
        getattr(err, "status_code", None),
        str(getattr(err, "error_code", None)),
        getattr(err, "index", None),
    )


SCENARIOS: dict[str, Callable[[TableClient], list[Any]]] = {
    "stale etag": lambda t: [
        (
            "update",
            {"PartitionKey": "p", "RowKey": "head", "seq": 3},
            {
                "mode": UpdateMode.REPLACE,
                "etag": "W/\"datetime'2020-01-01T00%3A00%3A00.0000000Z'\"",
                "match_condition": MatchConditions.IfNotModified,
            },
        ),
        ("create", {"PartitionKey": "p", "RowKey": "new", "v": "x"}),
    ],
    "existing row, second operation": lambda t: [
        ("upsert", {"PartitionKey": "p", "RowKey": "other", "v": "x"}),
        ("create", {"PartitionKey": "p", "RowKey": "head", "seq": 9}),
    ],
    "missing row": lambda t: [
        ("update", {"PartitionKey": "p", "RowKey": "nothing-here", "v": "x"}, {"mode": UpdateMode.REPLACE}),
    ],
    "invalid key": lambda t: [("create", {"PartitionKey": "p", "RowKey": "a/b", "v": "x"})],
    "two partitions": lambda t: [
        ("create", {"PartitionKey": "p", "RowKey": "a"}),
        ("create", {"PartitionKey": "q", "RowKey": "b"}),
    ],
    "malformed operation": lambda t: [("create",)],
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_refusal_is_the_sdk_s(
    service: tuple[TableServiceClient, list[PipelineRequest[Any]]], scenario: str
) -> None:
    client, _ = service
    outcomes = {}
    for name, submit in SUBMITS.items():
        table = _table(client)
        table.create_entity({"PartitionKey": "p", "RowKey": "head", "seq": 1})
        outcomes[name] = _refusal(submit, table, SCENARIOS[scenario](table))
        assert table.get_entity("p", "head")["seq"] == 1  # nothing of it was written
    for ours in OURS:
        assert outcomes[ours] == outcomes["sdk"], ours


def test_a_missing_table_is_the_sdk_s_error(
    service: tuple[TableServiceClient, list[PipelineRequest[Any]]],
) -> None:
    client, _ = service
    table = client.get_table_client(f"missing{uuid.uuid4().hex[:12]}")
    operations = [("create", {"PartitionKey": "p", "RowKey": "a"})]
    for ours in OURS:
        assert _refusal(SUBMITS[ours], table, operations) == _refusal(SUBMITS["sdk"], table, operations)


@pytest.mark.parametrize("path", OURS)
def test_no_operations_is_no_request(
    service: tuple[TableServiceClient, list[PipelineRequest[Any]]], path: str
) -> None:
    client, seen = service
    table = _table(client)
    seen.clear()
    assert SUBMITS[path](table, []) == []
    assert seen == []


# -- which path: the lean one for the SDK it was written for, else the public one with a warning --------


class SdkTable:
    """A real TableClient behind a wrapper that counts calls of the SDK's public ``submit_transaction``;
    with ``internals=False`` it hides every private attribute, as an SDK that renamed them would."""

    def __init__(self, table: TableClient, internals: bool = True) -> None:
        self.table, self.internals, self.public_calls = table, internals, 0

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") and not self.internals:
            raise AttributeError(name)
        return getattr(self.table, name)

    def submit_transaction(self, operations: Any, **kwargs: Any) -> list[Mapping[str, Any]]:
        self.public_calls += 1
        return self.table.submit_transaction(operations, **kwargs)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "shared.adapters.tables.batch" and r.levelno == logging.WARNING
    ]


def _create(table: SdkTable, row: str) -> list[Any]:
    return [("create", {"PartitionKey": "p", "RowKey": row, "v": row})]


def test_the_sdk_version_it_was_written_for_takes_the_lean_path(
    service: tuple[TableServiceClient, list[PipelineRequest[Any]]], caplog: pytest.LogCaptureFixture
) -> None:
    """requirements.txt pins a version the module was written for: the installed one."""
    client, _ = service
    table = SdkTable(_table(client))
    transactions = TableTransactions()
    assert transactions.lean
    [answer] = transactions.submit(table, _create(table, "a"))  # type: ignore[arg-type]
    assert table.public_calls == 0
    assert answer["etag"] == table.table.get_entity("p", "a").metadata["etag"]
    assert _warnings(caplog) == []
    assert not TableTransactions(installed_version=UPGRADED).lean
    assert "12.7.0" in WRITTEN_FOR


def test_another_sdk_version_takes_the_public_path_with_one_warning(
    service: tuple[TableServiceClient, list[PipelineRequest[Any]]], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = service
    table = SdkTable(_table(client))
    transactions = TableTransactions(installed_version=UPGRADED)
    for row in ("a", "b"):
        [answer] = transactions.submit(table, _create(table, row))  # type: ignore[arg-type]
        assert answer["etag"] == table.table.get_entity("p", row).metadata["etag"]
    assert table.public_calls == 2
    [warning] = _warnings(caplog)
    assert UPGRADED in warning and "submit_transaction" in warning


def test_a_table_client_without_the_internals_takes_the_public_path(
    service: tuple[TableServiceClient, list[PipelineRequest[Any]]], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = service
    table = SdkTable(_table(client), internals=False)
    transactions = TableTransactions()
    for row in ("a", "b"):
        transactions.submit(table, _create(table, row))  # type: ignore[arg-type]
    assert table.public_calls == 2
    [warning] = _warnings(caplog)
    assert "lacks _primary_hostname" in warning


def test_the_state_store_s_transactions_hold_on_the_public_path(
    service: tuple[TableServiceClient, list[PipelineRequest[Any]]],
) -> None:
    """TableStateStore.commit returns each state's new ETag from the answers: they are the stored ones,
    and a refusal is still Conflict or NotFound."""
    client, _ = service
    name = f"state{uuid.uuid4().hex[:12]}"
    store = TableStateStore(client, name, TableTransactions(installed_version=UPGRADED))
    written = store.commit("p", [StateWrite("a", {"n": 1}), StateWrite("b", {"n": 2})])
    assert [w.etag for w in written] == [store.get("p", key).etag for key in ("a", "b")]  # type: ignore[union-attr]
    again = store.commit("p", [StateWrite("a", {"n": 3}, etag=written[0].etag)])
    assert store.get("p", "a") == again[0]
    with pytest.raises(Conflict):
        store.commit("p", [StateWrite("a", {"n": 4}, etag=written[0].etag)])
    with pytest.raises(NotFound):
        store.commit("p", [StateWrite("gone", {"n": 5}, etag=written[0].etag)])
    assert store.get("p", "a").state == {"n": 3}  # type: ignore[union-attr]
