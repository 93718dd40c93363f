"""Rotation through the real SDK against the Key Vault emulator and Azurite, when the process dies.

A crash is injected at every call the rotation makes to its peers (the vault, the state table, the audit
table, the topic), before the call and after it. The retry that follows (after the lease ran out, as the
queue's next attempt or the next sweep would) must leave exactly one new version, current and readable,
whose value works, and the rotation closed. Then triggers that race: the sweep's request, a Key Vault
event's and a manual one for the same secret at the same moment make exactly one new version.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devtools.azurite import AzuriteProcess
from devtools.keyvault_emulator.process import EmulatorProcess
from devtools.stack import create_tables
from shared.bootstrap import Container
from shared.config import Settings
from shared.domain.audit import Action, AuditQuery, Result, readable_event
from shared.domain.errors import SecretDisabled
from shared.domain.policy import RotationPolicy, SecretKind
from shared.domain.rotation import RotationReason, RotationRequest
from shared.services import rotation
from shared.services.audit import AuditTrail
from tests.fakes import FixedClock, RecordingPublisher, RecordingRotationRequests
from tests.integration.conftest import app_settings
from tests.world import Peers

POLICY = RotationPolicy(SecretKind.API_KEY, timedelta(days=30))


class Crash(BaseException):
    """The process dies here: not an error any handler of the product catches."""


class Tripwire:
    """Counts the calls made through its proxies and crashes at one of them, before or after it ran."""

    def __init__(self, at: int | None = None, after: bool = False) -> None:
        self.at, self.after, self.calls = at, after, [] if at is None else None
        self.count = 0

    def hit(self, where: str, *, after: bool) -> None:
        if after != self.after:
            return
        self.count += 1
        if self.calls is not None:
            self.calls.append(where)
        if self.count == self.at:
            raise Crash(f"{'after' if after else 'before'} {where}")


class Crashing:
    """A port whose every public call passes the tripwire."""

    def __init__(self, inner: Any, wire: Tripwire, label: str) -> None:
        self._inner, self._wire, self._label = inner, wire, label

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._wire.hit(f"{self._label}.{name}", after=False)
            result = attr(*args, **kwargs)
            self._wire.hit(f"{self._label}.{name}", after=True)
            return result

        return call


class World:
    def __init__(self, azurite: AzuriteProcess, emulator: EmulatorProcess) -> None:
        create_tables(azurite.connection_string)
        self.container = Container(Settings(app_settings(azurite, emulator)))
        # The vault stamps created with the real time, so the test's clock starts there too.
        self.clock = FixedClock(datetime.now(UTC))
        self.vault = self.container.settings.key_vault.name
        self.store = self.container.secret_store
        self.states = self.container.state_store
        self.log = self.container.audit_log

    def new_secret(self) -> tuple[str, str]:
        name = f"crash-{uuid.uuid4().hex[:12]}"
        # Due because it expires within Key Vault's near-expiry window; its successor will not be.
        expires = self.clock.now() + timedelta(days=10)
        self.container.secret_client.set_secret(
            name, "first-value", tags=POLICY.to_tags(), expires_on=expires
        )
        return name, self.store.get_properties(name).version

    def peers(self, wire: Tripwire | None = None) -> Peers:
        """What a service takes, the real adapters each (with ``wire``: through its tripwire); a new
        recording publisher each time."""

        def through(port: Any, label: str) -> Any:
            return port if wire is None else Crashing(port, wire, label)

        log = through(self.log, "audit")
        return Peers(
            store=through(self.store, "vault"),
            states=through(self.states, "state"),
            log=log,
            keys=self.container.key_ring,
            trail=AuditTrail(log, self.clock, self.vault),
            publisher=through(RecordingPublisher(), "topic"),
            clock=self.clock,
            requests=RecordingRotationRequests(),
            vault=self.vault,
            reserved=self.container.reserved_secrets,
        )

    def rotate(self, name: str, wire: Tripwire | None = None) -> rotation.RotationOutcome:
        return self.peers(wire or Tripwire()).rotate(name)

    def records(self, name: str, action: Action) -> list[Any]:
        query = AuditQuery(vault=self.vault, secret_name=name, action=action, limit=100)
        rows = self.log.list_records(query)
        return [e for row in rows if (e := readable_event(row.record.fields)) is not None]

    def assert_rotated_once(self, name: str, first: str) -> None:
        versions = self.store.list_versions(name)
        assert len(versions) == 2, [v.tags for v in versions]
        current = self.store.get_properties(name)
        assert current.version != first and current.tags.get(rotation.ROTATION_ID_TAG)
        assert current.tags.get(rotation.PREVIOUS_VERSION_TAG) == first
        value = self.store.get_value(name).value
        assert value and value != "first-value"
        progress = self.states.get(rotation.PARTITION, name.lower())
        assert progress is not None and progress.state["step"] == "idle"
        assert progress.state["new_version"] == current.version
        successes = [e for e in self.records(name, Action.ROTATED) if e.result == Result.SUCCESS]
        assert {e.version for e in successes} == {current.version}


@pytest.fixture(scope="module")
def world(azurite: AzuriteProcess, kv_emulator: EmulatorProcess) -> Iterator[World]:
    yield World(azurite, kv_emulator)


def _crash_points(world: World) -> list[tuple[int, bool, str]]:
    """Every call a clean rotation makes, each to be crashed before and after it ran."""
    name, _ = world.new_secret()
    wire = Tripwire()
    assert world.rotate(name, wire).status == "rotated"
    assert wire.calls and len(wire.calls) >= 8, wire.calls  # vault, state, audit and topic calls
    return [(i + 1, after, call) for after in (False, True) for i, call in enumerate(wire.calls)]


def test_a_crash_at_every_step_then_a_retry_leaves_exactly_one_working_new_version(world: World) -> None:
    points = _crash_points(world)
    assert any("vault.set_value" in call for _, _, call in points)  # the one write that matters
    for at, after, call in points:
        name, first = world.new_secret()
        with pytest.raises(Crash):
            world.rotate(name, Tripwire(at, after))
        # The retry comes after the lease of the dead holder ran out (the queue's or the next sweep's).
        world.clock.advance(rotation.LEASE + timedelta(seconds=1))
        outcome = world.rotate(name)
        assert outcome.status in {"rotated", "skipped"}, (call, after, outcome)
        world.assert_rotated_once(name, first)
        again = world.rotate(name)  # and once more: nothing left to do
        assert again.status == "skipped", (call, after, again)
        world.assert_rotated_once(name, first)


def test_a_retry_while_the_dead_holders_lease_runs_waits_for_it(world: World) -> None:
    name, first = world.new_secret()
    points = [p for p in _crash_points(world) if p[2] == "vault.set_value" and p[1]]
    with pytest.raises(Crash):
        world.rotate(name, Tripwire(points[0][0], after=True))  # the version is made, then the process dies
    assert world.rotate(name).status == "in_progress"  # the lease still runs: nobody rotates twice
    world.clock.advance(rotation.LEASE + timedelta(seconds=1))
    world.rotate(name)
    world.assert_rotated_once(name, first)


def _race(world: World, name: str, calls: list[Callable[[], Any]]) -> list[Any]:
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as err:
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


@pytest.mark.parametrize("round_", range(5))
def test_sweep_event_and_manual_call_racing_make_one_rotation(world: World, round_: int) -> None:
    name, first = world.new_secret()

    def request(reason: RotationReason) -> Callable[[], Any]:
        req = RotationRequest(
            secret_name=name, reason=reason, requested_at=world.clock.now(), correlation_id=f"race-{reason}"
        )
        return lambda: world.peers().rotate_requested(req)

    reasons = [RotationReason.DUE, RotationReason.EVENT, RotationReason.MANUAL]
    results = _race(world, name, [request(r) for r in reasons])
    assert not [r for r in results if isinstance(r, Exception)], results
    assert [r.status for r in results].count("rotated") == 1, results
    world.assert_rotated_once(name, first)
    failures = world.records(name, Action.ROTATION_FAILED)
    assert not [f for f in failures if f.result == Result.FAILURE]


def test_the_previous_version_is_retired_once_its_grace_has_run(world: World) -> None:
    name, first = world.new_secret()
    outcome = world.rotate(name)
    assert outcome.status == "rotated"

    def retire() -> list[str]:
        return world.peers().retire_due(name)

    assert retire() == []
    world.clock.advance(timedelta(hours=24, seconds=1))  # the default grace
    assert retire() == [first]
    with pytest.raises(SecretDisabled):  # consumers pinned to the old version are refused by the vault
        world.store.get_value(name, first)
    assert world.store.get_value(name).value  # the current one works
    assert retire() == []
    retired = [e for e in world.records(name, Action.VERSION_RETIRED) if e.result == Result.SUCCESS]
    assert [e.version for e in retired] == [first]
