"""Executing a revocation through the real SDK against the Key Vault emulator and Azurite, when the process
dies: a crash is injected before and after every call the execution makes (vault, state table, audit
table, topic; the replacement's rotation included), then a retry — the timer's, once the holder's lease ran
out — finishes it: the request ends ``executed`` with every chosen version disabled, the replacement made
once and enabled, the secret's write lease released."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

from devtools.azurite import AzuriteProcess
from devtools.keyvault_emulator.process import EmulatorProcess
from shared.domain.audit import Actor, ActorType
from shared.domain.revocation import Reason, Severity, Status
from shared.domain.state import LEASE
from shared.services import revocation, rotation
from shared.services.revocation import NewRequest, Services
from tests.integration.test_rotation_crash import POLICY, Crash, Tripwire, World

ALICE, BOB, DAVE = (Actor(n, ActorType.USER) for n in ("alice", "bob", "dave"))


class RevocationWorld(World):
    def revocations(self, wire: Tripwire | None = None) -> Services:
        return self.peers(wire or Tripwire()).revocations

    def approved(self) -> tuple[str, list[str], str]:
        name = f"revoke-crash-{uuid.uuid4().hex[:10]}"
        client = self.container.secret_client
        versions = [client.set_secret(name, v, tags=POLICY.to_tags()).properties.version or "" for v in "ab"]
        made = revocation.request(
            self.revocations(),
            NewRequest(name, Reason.SECURITY_INCIDENT, Severity.HIGH, "crash test", replace=True),
            ALICE,
        )
        revocation.approve(self.revocations(), made.id, BOB, None)
        return name, versions, made.id

    def assert_executed_once(self, name: str, versions: list[str], rid: str) -> None:
        done = revocation.get(self.states, rid)
        assert done.status == Status.EXECUTED and done.result is not None, done
        new = done.result.new_version
        enabled = {v.version: v.enabled for v in self.store.list_versions(name)}
        assert enabled == {versions[0]: False, versions[1]: False, new: True}, enabled
        current = self.store.get_properties(name)
        assert current.version == new and current.tags[rotation.ROTATION_ID_TAG] == rid
        progress = self.states.get(rotation.PARTITION, name.lower())
        assert progress is not None and progress.state["step"] == "idle"


@pytest.fixture(scope="module")
def world(azurite: AzuriteProcess, kv_emulator: EmulatorProcess) -> Iterator[RevocationWorld]:
    yield RevocationWorld(azurite, kv_emulator)


def test_a_crash_at_every_step_of_an_execution_is_finished_by_the_timer(world: RevocationWorld) -> None:
    name, versions, rid = world.approved()
    wire = Tripwire()
    revocation.execute(world.revocations(wire), rid, DAVE)
    world.assert_executed_once(name, versions, rid)
    assert wire.calls is not None and any("vault.update_properties" in c for c in wire.calls)
    points = [(i + 1, after, call) for after in (False, True) for i, call in enumerate(wire.calls)]
    for at, after, call in points:
        name, versions, rid = world.approved()
        with pytest.raises(Crash):
            revocation.execute(world.revocations(Tripwire(at, after)), rid, DAVE)
        world.clock.advance(LEASE + timedelta(seconds=1))
        status = revocation.get(world.states, rid).status
        if status == Status.APPROVED:  # died before it began: executing it again is the retry
            revocation.execute(world.revocations(), rid, DAVE)
        elif status == Status.EXECUTING:  # the timer finishes it
            _expired, finished = revocation.expire_pending(world.revocations())
            assert rid in finished, (call, after, revocation.get(world.states, rid).status)
        else:  # died after its last write: done
            assert (status, call, after) == (Status.EXECUTED, "state.replace", True)
        world.assert_executed_once(name, versions, rid)
