"""Several vaults, one service: two vaults may hold a secret of one name, and nothing the service stores,
records, queues or reports about one of them is taken for the other's (over in-memory fakes, the state
store sealed as in production)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from shared.bootstrap import Container, VaultScope
from shared.config import Settings
from shared.domain.audit import Action, Result, chain_of, format_time
from shared.domain.policy import RotationPolicy, SecretKind
from shared.domain.rotation import RotationReason, RotationRequest
from shared.domain.state import StateTampered
from shared.services import stalls
from shared.services.findings import PARTITION as FINDINGS
from shared.services.findings import StateFindingStore, finding_id
from shared.services.vaults import for_each, scoped_partition
from tests.world import Peers, World

POLICY = RotationPolicy(SecretKind.API_KEY, timedelta(days=30))
NAME = "dispatch-db-password"


@pytest.fixture
def world() -> World:
    return World(sealed=True)


def seed(peers: Peers, age_days: int = 31) -> str:
    peers.clock.advance(timedelta(days=-age_days))
    try:
        return peers.store.set_value(NAME, "v", content_type=None, tags=POLICY.to_tags()).version
    finally:
        peers.clock.advance(timedelta(days=age_days))


def test_one_name_in_two_vaults_rotates_apart(world: World) -> None:
    eu = world.other_vault("fleet-eu")
    seed(world), seed(eu)
    world.sweep_run("sweep-1"), eu.sweep_run("sweep-1")
    assert {r.vault for r in world.requests.sent} == {"fleet", "fleet-eu"}
    for request in list(world.requests.sent):
        peers = world if request.vault == "fleet" else eu
        assert peers.rotate_requested(request).new_version
    world.requests.sent.clear()
    assert len(world.versions(NAME)) == 2 and len(eu.store.versions_of(NAME)) == 2
    # One progress row per vault: the designated vault's partition as it always was, the other's prefixed.
    assert ("rotation", NAME) in world.rows.rows and ("fleet-eu:rotation", NAME) in world.rows.rows
    chains = {e.chain for e in world.log.events if e.action == Action.ROTATED}
    assert chains == {chain_of("fleet", NAME), chain_of("fleet-eu", NAME)}


def test_a_row_copied_into_another_vaults_namespace_fails_its_seal(world: World) -> None:
    eu = world.other_vault("fleet-eu")
    seed(world)
    # A rotation that died mid-way in fleet leaves its lease; a storage writer copies the row to fleet-eu,
    # where the same name is idle, to block (or steer) that vault's rotation.
    _, etag = world.acquire("promoting", NAME)
    world.rows.rows[("fleet-eu:rotation", NAME)] = world.rows.rows[("rotation", NAME)]
    with pytest.raises(StateTampered) as refused:
        eu.states.get("rotation", NAME)
    assert refused.value.partition == "fleet-eu:rotation"
    assert world.records(Action.STATE_TAMPERED)  # reported as every tampered row is
    assert etag


def test_a_rotation_request_is_sealed_with_its_vault(world: World) -> None:
    request = RotationRequest(
        secret_name=NAME, reason=RotationReason.DUE, requested_at=world.clock.now(), correlation_id="c",
        vault="fleet-eu",
    ).sealed(*world.keys.current())  # fmt: skip
    parsed = RotationRequest.from_json(request.to_json())
    assert parsed == request and parsed.seal_problem(world.keys.get) is None
    for moved in ("fleet", None):  # sent to the designated vault: by naming it, or by naming none
        fields = json.loads(request.to_json())
        fields.pop("vault")
        if moved:
            fields["vault"] = moved
        assert RotationRequest.from_json(json.dumps(fields)).seal_problem(world.keys.get) == "mac mismatch"
    with pytest.raises(ValueError, match="vault"):
        RotationRequest.from_json(json.dumps({**json.loads(request.to_json()), "vault": "Fleet EU"}))
    with pytest.raises(ValueError, match="peers of fleet"):
        world.rotate_requested(request)  # never acted on with another vault's peers


def test_the_same_stall_in_two_vaults_is_two_findings_each_on_its_vault(world: World) -> None:
    eu = world.other_vault("fleet-eu")
    for peers, scope in ((world, None), (eu, "fleet-eu")):
        seed(peers)
        # A forged row in each vault's namespace: every rotation of the name refused, so it stalls.
        world.rows.create(scoped_partition(scope, "rotation"), NAME, {"step": "promoting"})
    world.sweep_run("sweep-1"), eu.sweep_run("sweep-1")
    stalled = world.records(Action.ROTATION_STALLED, NAME)
    assert sorted(e.vault for e in stalled) == ["fleet", "fleet-eu"]
    assert len({e.details["finding_id"] for e in stalled}) == 2
    notified = [n for n in world.publisher.sent if n.type.endswith("SuspiciousActivity")]
    assert sorted(n.data["vault"] for n in notified if n.subject == NAME) == ["fleet", "fleet-eu"]


def test_a_pending_finding_is_recorded_on_its_vault_whoever_finishes_it(world: World) -> None:
    eu = world.other_vault("fleet-eu")
    seed(eu)
    world.rows.create("fleet-eu:rotation", NAME, {"step": "promoting"})
    world.log.fails = lambda e: e.action == Action.SUSPICIOUS_ACTIVITY  # the report dies after the claim
    eu.sweep_run("sweep-1")
    assert isinstance(world.findings, StateFindingStore)
    [pending] = [f for f in world.findings.pending() if f.rule == "rotation_stalled"]
    assert pending.vault == "fleet-eu" and ("finding", pending.id) not in world.rows.rows
    assert any(key == (FINDINGS, pending.id) for key in world.finding_rows.rows)
    world.log.fails = lambda e: False
    world.scan()  # the designated vault's scan finishes every pending finding
    [finding] = world.records(Action.SUSPICIOUS_ACTIVITY, NAME)
    assert finding.chain == chain_of("fleet-eu", NAME)
    assert world.records(Action.ROTATION_STALLED, NAME)[0].vault == "fleet-eu"


def test_the_vaults_peers_build_at_once_on_a_new_container(tmp_path: Path) -> None:
    """The timers start every vault's work at once on a new container: building the vaults' peers in
    parallel, over the container's own cached peers, must finish (a lock held while waiting for another
    is a deadlock that hangs every later invocation of the worker)."""
    pem = tmp_path / "vaults.pem"
    pem.write_text("not read until a call is made")
    env = {
        "KEY_VAULT_URL": "https://127.0.0.1:8443",
        "KEY_VAULT_URLS": ",".join(f"https://127.0.0.1:{8444 + i}" for i in range(5)),
        "KEY_VAULT_CA_BUNDLE": str(pem),
        "SECRETS_STORAGE": "UseDevelopmentStorage=true",
    }

    def build(scope: VaultScope) -> object:
        return scope.sweep_peers, scope.revocations, scope.audit_peers, scope.finding_peers

    def many() -> None:
        for _ in range(150):
            runs, errors = for_each(Container(Settings(env)).vaults, build, parallel=6)
            assert not errors and len(runs) == 6

    worker = threading.Thread(target=many, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "building the vaults' peers in parallel hung"


def test_a_designated_vault_finding_keeps_the_id_it_had_before_several_vaults(world: World) -> None:
    seed(world)
    world.rows.create("rotation", NAME, {"step": "promoting"})  # every rotation refused: it stalls
    world.sweep_run("sweep-1")
    [stalled] = world.records(Action.ROTATION_STALLED, NAME)
    made = world.store.get_properties(NAME).created
    assert stalled.details["finding_id"] == finding_id(stalls.RULE, NAME, format_time(made))


def test_failures_of_one_name_in_two_vaults_are_two_findings_on_their_vaults(world: World) -> None:
    def failed(vault: str, minute: int) -> None:
        world.trail.of(vault).record(
            Action.ROTATION_FAILED, secret_name=NAME, result=Result.FAILURE, details={"reason": "x"}
        )
        world.clock.advance(timedelta(minutes=minute))

    for _ in range(2):  # two failures in each vault: neither reaches the threshold of 3, nor do they add up
        failed("fleet", 1), failed("fleet-eu", 1)
    world.scan()
    assert world.records(Action.SUSPICIOUS_ACTIVITY, NAME) == []
    failed("fleet-eu", 1)
    world.scan()
    [finding] = world.records(Action.SUSPICIOUS_ACTIVITY, NAME)
    assert finding.chain == chain_of("fleet-eu", NAME) and "fleet-eu/" + NAME in finding.details["summary"]
