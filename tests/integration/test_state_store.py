"""The compare-and-swap state store, the same contract on Azurite and in the fake the unit tests use: the
loser of a race gets Conflict, a vanished state NotFound, and nothing is overwritten silently."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from azure.data.tables import TableServiceClient

from devtools.azurite import AzuriteProcess
from shared.adapters.tables import TableStateStore
from shared.domain.errors import Conflict, NotFound
from shared.domain.state import StateWrite
from shared.ports import StateStore
from tests.fakes import InMemoryStateStore


@pytest.fixture(params=["fake", "tables"])
def store(request: pytest.FixtureRequest) -> Iterator[StateStore]:
    if request.param == "fake":
        yield InMemoryStateStore()
        return
    azurite: AzuriteProcess = request.getfixturevalue("azurite")
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    yield TableStateStore(service, "state" + uuid.uuid4().hex[:10])


def test_create_read_replace_delete(store: StateStore) -> None:
    created = store.create("rotation", "db-password", {"step": "pending", "attempt": 1, "error": None})
    assert created.state == {"step": "pending", "attempt": 1}
    read = store.get("rotation", "db-password")
    assert read is not None and read.state == created.state and read.etag == created.etag
    moved = store.replace("rotation", "db-password", {"step": "set", "attempt": 1}, read.etag)
    assert moved.etag != read.etag
    assert store.get("rotation", "db-password") == moved
    store.delete("rotation", "db-password", moved.etag)
    assert store.get("rotation", "db-password") is None


def test_the_loser_of_a_race_gets_conflict_and_changes_nothing(store: StateStore) -> None:
    first = store.create("lease", "db-password", {"holder": "a"})
    with pytest.raises(Conflict):
        store.create("lease", "db-password", {"holder": "b"})
    winner = store.replace("lease", "db-password", {"holder": "b"}, first.etag)
    with pytest.raises(Conflict):
        store.replace("lease", "db-password", {"holder": "c"}, first.etag)  # read before the winner wrote
    with pytest.raises(Conflict):
        store.delete("lease", "db-password", first.etag)
    assert store.get("lease", "db-password") == winner


def test_a_partition_lists_its_states_only(store: StateStore) -> None:
    assert store.list("rotation") == {}
    one = store.create("rotation", "a", {"step": "idle"})
    two = store.create("rotation", "b", {"step": "promoting"})
    store.create("lease", "a", {"holder": "x"})
    assert store.list("rotation") == {"a": one, "b": two}


def test_a_state_that_is_gone_is_not_found(store: StateStore) -> None:
    assert store.get("rotation", "nothing") is None
    with pytest.raises(NotFound):
        store.replace("rotation", "nothing", {"step": "set"}, "W/\"datetime'2026-01-01T00%3A00%3A00Z'\"")
    with pytest.raises(NotFound):
        store.delete("rotation", "nothing", "v1")


def test_concurrent_transitions_from_one_read_let_exactly_one_through(store: StateStore) -> None:
    start = store.create("rotation", "api-key", {"step": "pending"})
    won: list[str] = []
    lost: list[str] = []
    barrier = threading.Barrier(8)

    def transition(name: str) -> None:
        barrier.wait()
        try:
            store.replace("rotation", "api-key", {"step": "set", "by": name}, start.etag)
            won.append(name)
        except Conflict:
            lost.append(name)

    threads = [threading.Thread(target=transition, args=(f"w{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(won) == 1 and len(lost) == 7
    final = store.get("rotation", "api-key")
    assert final is not None and final.state["by"] == won[0]


def test_a_partition_lists_a_key_range(store: StateStore) -> None:
    for key in ("a", "b", "~retire~a", "~retire~b"):
        store.create("rotation", key, {"k": key})
    assert sorted(store.list("rotation", stop="~retire~")) == ["a", "b"]
    assert sorted(store.list("rotation", start="~retire~", stop="~retire~~")) == ["~retire~a", "~retire~b"]
    assert sorted(store.list("rotation", start="b")) == ["b", "~retire~a", "~retire~b"]


def test_a_transaction_writes_all_or_nothing(store: StateStore) -> None:
    progress = store.create("rotation", "db-password", {"step": "promoting"})
    closed, schedule = store.commit(
        "rotation",
        [
            StateWrite("db-password", {"step": "idle"}, progress.etag),
            StateWrite("~retire~db-password", {"versions": "[]"}),
        ],
    )
    assert store.get("rotation", "db-password") == closed
    assert store.get("rotation", "~retire~db-password") == schedule
    refused = [
        # stale: read before the transaction above
        [StateWrite("db-password", {"step": "x"}, progress.etag), StateWrite("new", {"v": 1})],
        # the schedule exists already
        [StateWrite("db-password", {"step": "x"}, closed.etag), StateWrite("~retire~db-password", {"v": 1})],
    ]
    for writes in refused:
        with pytest.raises(Conflict):
            store.commit("rotation", writes)
    gone = [StateWrite("nothing", {"step": "x"}, closed.etag), StateWrite("new", {"v": 1})]
    with pytest.raises(NotFound):
        store.commit("rotation", gone)
    assert store.get("rotation", "db-password") == closed  # none of the refused ones wrote anything
    assert store.get("rotation", "new") is None
