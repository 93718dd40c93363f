"""The expiry functions as registered: ``key_vault_events`` with real ``azure.functions.EventGridEvent``s
(malformed and irrelevant ones dropped without raising, a dependency failure raised for Event Grid to
redeliver) and the ``expiry_check`` timer with a real ``TimerRequest``, over the FakeContainer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from shared.config import ConfigurationError
from shared.domain.audit import Action, Result, format_time
from shared.domain.errors import DependencyUnavailable
from shared.domain.policy import RotationPolicy, SecretKind
from shared.domain.rotation import RotationReason
from shared.services.expiry import ClaimHeld
from shared.services.key_vault_events import PARTITION
from tests.fakes import InMemorySecretStore, RecordingRotationRequests
from tests.functions.conftest import LOCAL_ENV, FakeContainer

NAME = "dispatch-api-key"
API_KEY = RotationPolicy(SecretKind.API_KEY, timedelta(days=30), None, "dispatch-api")
NEAR = "Microsoft.KeyVault.SecretNearExpiry"
NEW = "Microsoft.KeyVault.SecretNewVersionCreated"


class Ctx:
    invocation_id = "inv-expiry"
    function_name = "expiry_check"


class World(FakeContainer):
    @property
    def store(self) -> InMemorySecretStore:
        assert isinstance(self.secret_store, InMemorySecretStore)
        return self.secret_store

    @property
    def queue(self) -> RecordingRotationRequests:
        assert isinstance(self.rotation_queue, RecordingRotationRequests)
        return self.rotation_queue


@pytest.fixture
def world(use_container: Any) -> World:
    container: World = use_container(World())
    return container


def event(
    kind: str, name: str, version: str, *, event_id: str = "evt-1", data: Any = None
) -> func.EventGridEvent:
    payload = {"Id": f"https://fleet.vault.azure.net/secrets/{name}/{version}", "VaultName": "fleet",
               "ObjectType": "Secret", "ObjectName": name, "Version": version,
               "NBF": None, "EXP": None}  # fmt: skip
    return func.EventGridEvent(
        id=event_id,
        data=payload if data is None else data,
        topic="/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/fleet",
        subject=name,
        event_type=kind,
        event_time=datetime.now(UTC),
        data_version="1",
    )


def near_expiry(world: World) -> str:
    """A managed secret whose current version expires in 29 days: the version."""
    expires = world.clock.now() + timedelta(days=29)
    made = world.store.set_value(NAME, "v", content_type=None, tags=API_KEY.to_tags(), expires=expires)
    return made.version


def deliver(functions: dict[str, Any], e: func.EventGridEvent) -> None:
    functions["key_vault_events"].get_user_function()(e)


def test_near_expiry_of_a_managed_secret_is_one_rotation_request(
    functions: dict[str, Any], world: World
) -> None:
    version = near_expiry(world)
    for i in range(5):
        deliver(functions, event(NEAR, "dispatch-api-key", version, event_id=f"evt-{i}"))
    [request] = world.queue.sent
    assert (request.secret_name, request.reason) == ("dispatch-api-key", RotationReason.EVENT)


@pytest.mark.parametrize("data", [None, "text", [1, 2], {"VaultName": "fleet"}, {"Version": 5}])
def test_malformed_and_irrelevant_events_are_dropped_without_raising(
    functions: dict[str, Any], world: World, data: Any
) -> None:
    malformed = event(NEAR, "dispatch-api-key", "abc")
    malformed = func.EventGridEvent(
        id="bad", data=data, topic="t", subject="dispatch-api-key", event_type=NEAR, event_time=None,
        data_version="1",
    )  # fmt: skip
    deliver(functions, malformed)
    deliver(functions, event("Microsoft.KeyVault.KeyNearExpiry", "dispatch-api-key", "abc"))
    deliver(functions, event("Microsoft.Storage.BlobCreated", "dispatch-api-key", "abc"))
    assert world.queue.sent == [] and world.audit_log.events == [] and world.state_rows.rows == {}


def test_a_dependency_failure_is_raised_and_the_redelivery_acts(
    functions: dict[str, Any], world: World
) -> None:
    version = near_expiry(world)
    world.queue.available = False
    with pytest.raises(DependencyUnavailable):
        deliver(functions, event(NEAR, "dispatch-api-key", version))
    world.queue.available = True
    deliver(functions, event(NEAR, "dispatch-api-key", version))
    deliver(functions, event(NEAR, "dispatch-api-key", version))
    assert len(world.queue.sent) == 1


def test_an_out_of_band_version_is_recorded_and_its_policy_restored(
    functions: dict[str, Any], world: World
) -> None:
    world.store.set_value("dispatch-api-key", "v1", content_type=None, tags=API_KEY.to_tags())
    world.clock.advance(timedelta(seconds=1))
    oob = world.store.set_value("dispatch-api-key", "v2", content_type=None, tags={}).version
    deliver(functions, event(NEW, "dispatch-api-key", oob))
    deliver(functions, event(NEW, "dispatch-api-key", oob, event_id="evt-2"))
    intent, record = [e for e in world.audit_log.events if e.action == Action.OUT_OF_BAND_CHANGE]
    assert (intent.result, record.result) == (Result.INTENT, Result.SUCCESS)
    assert record.version == oob and record.details["policy_restored"] is True
    assert RotationPolicy.is_managed(world.store.get_properties("dispatch-api-key", oob).tags)


def test_a_delivery_while_another_acts_on_the_same_fact_is_raised_for_redelivery(
    functions: dict[str, Any], world: World
) -> None:
    world.store.set_value("dispatch-api-key", "v1", content_type=None, tags=API_KEY.to_tags())
    world.clock.advance(timedelta(seconds=1))
    oob = world.store.set_value("dispatch-api-key", "v2", content_type=None, tags={}).version
    # Another invocation claimed the fact a moment ago and is still working on it.
    until = format_time(world.clock.now() + timedelta(minutes=10))
    claimed = {"status": "pending", "holder": "other", "lease_until": until}
    world.state_store.create(PARTITION, f"new-version:dispatch-api-key:{oob}", claimed)
    with pytest.raises(ClaimHeld):  # failed, so Event Grid delivers it again later
        deliver(functions, event(NEW, "dispatch-api-key", oob, event_id="evt-2"))
    assert world.audit_log.events == []
    world.clock.advance(timedelta(minutes=11))  # that one died: its lease ran out
    deliver(functions, event(NEW, "dispatch-api-key", oob, event_id="evt-2"))
    assert [e.result for e in world.audit_log.events if e.action == Action.OUT_OF_BAND_CHANGE] == [
        Result.INTENT,
        Result.SUCCESS,
    ]


def run_check(functions: dict[str, Any]) -> None:
    functions["expiry_check"].get_user_function()(TimerRequest(), Ctx())


def test_the_expiry_check_warns_once(functions: dict[str, Any], world: World) -> None:
    world.store.set_value("partner-token", "v", content_type=None, tags={},
                          expires=world.clock.now() + timedelta(days=6))  # fmt: skip
    run_check(functions)
    run_check(functions)
    warnings = [e for e in world.audit_log.events if e.action == Action.EXPIRY_WARNING]
    assert [(e.details["threshold_days"], e.correlation_id) for e in warnings] == [(7, "inv-expiry")]
    assert [n.type for n in world.publisher.sent] == ["SecretLifecycle.SecretNearExpiry"]


def test_the_expiry_check_fails_the_invocation_when_a_secret_failed(
    functions: dict[str, Any], world: World
) -> None:
    world.store.set_value("partner-token", "v", content_type=None, tags={},
                          expires=world.clock.now() + timedelta(days=6))  # fmt: skip
    world.publisher.available = False
    with pytest.raises(RuntimeError, match="1 secret"):
        run_check(functions)
    world.publisher.available = True
    run_check(functions)
    assert len(world.publisher.sent) == 1


def test_the_expiry_check_reads_expiry_require_exp(functions: dict[str, Any], use_container: Any) -> None:
    world: World = use_container(World({**LOCAL_ENV, "EXPIRY_REQUIRE_EXP": "true"}))
    world.store.set_value("no-expiry", "v", content_type=None, tags={})
    run_check(functions)
    [violation] = [e for e in world.audit_log.events if e.action == Action.POLICY_VIOLATION]
    assert violation.details["tag"] == "exp"

    use_container(World({**LOCAL_ENV, "EXPIRY_REQUIRE_EXP": "maybe"}))
    with pytest.raises(ConfigurationError, match="EXPIRY_REQUIRE_EXP"):
        run_check(functions)
