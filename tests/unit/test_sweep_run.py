"""No silent skip, and the service knows what it manages: a sweep run over in-memory fakes (the state
store sealed as in production) reports a due secret whose rotation stalls, keeps an inventory of the
managed secrets and their policies, and records what changed outside the API — each once."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.domain.audit import Action, Actor, ActorType, AuditEvent, Result, format_time
from shared.domain.policy import RotationPolicy, SecretKind
from shared.services import catalog, inventory, rotation, stalls, sweep_run
from tests.world import World

POLICY = RotationPolicy(SecretKind.API_KEY, timedelta(days=30))
OPERATOR = Actor("oid-operator", ActorType.USER)


def sweep(world: World, *, drain: bool = True) -> sweep_run.SweepRun:
    """The hourly sweep run; then the rotations it asked for (``drain``), or they are lost."""
    done = world.sweep_run("sweep")
    if drain:
        world.drain()
    world.requests.sent.clear()
    return done


def secret(world: World, name: str, age_days: int = 0, **tags: str) -> str:
    return world.secret(name, "v", tags={**POLICY.to_tags(), **tags}, age_days=age_days).version


def edit(world: World, name: str, **tags: str | None) -> None:
    """A tag editor's change to the current version (None drops a tag)."""
    current = world.store.get_properties(name)
    merged = {**current.tags, **tags}
    world.store.update_properties(
        name, current.version, tags={k: v for k, v in merged.items() if v is not None}
    )


@pytest.fixture
def world() -> World:
    world = World(sealed=True)
    secret(world, "steady")
    first = sweep(world)
    assert first.inventory is not None and first.inventory.taken == 1
    [taken] = world.records(Action.SECRET_ONBOARDED)
    assert taken.details == {"inventory": "taken", "secrets": 1} and taken.secret_name is None
    return world


# -- 3. no silent skip --------------------------------------------------------------------------------


def test_a_due_secret_that_is_not_rotated_for_two_sweeps_stalls_once(world: World) -> None:
    secret(world, "stuck", age_days=31)
    world.rows.create("rotation", "stuck", {"step": "promoting"})  # a forged row: every rotation refused
    sweep(world)  # due since a day: requested, refused (tampered), not stalled yet? It is: due > 2 h ago
    [stalled] = world.records(Action.ROTATION_STALLED, "stuck")
    assert stalled.result == Result.FAILURE and "tampered" in stalled.details["reason"]
    [finding] = [
        e
        for e in world.records(Action.SUSPICIOUS_ACTIVITY, "stuck")
        if e.details["rule"] == "rotation_stalled"
    ]
    assert finding.details["finding_id"] == stalled.details["finding_id"]
    assert any(n.id == finding.details["finding_id"] for n in world.publisher.sent)
    world.clock.advance(timedelta(hours=1))
    sweep(world)
    assert len(world.records(Action.ROTATION_STALLED, "stuck")) == 1  # once per stall
    status = world.secret_status("stuck")
    assert status["stalled"] is not None and "tampered" in status["stalled"]["reason"]


def test_a_secret_due_only_just_now_has_not_stalled_yet(world: World) -> None:
    secret(world, "fresh")
    world.clock.advance(timedelta(days=30, minutes=5))  # due 5 minutes ago
    sweep(world, drain=False)  # requested, not yet rotated
    assert world.records(Action.ROTATION_STALLED) == []
    world.clock.advance(stalls.STALL_AFTER)
    sweep(world, drain=False)  # the requests were lost: still due two sweeps later
    [stalled] = world.records(Action.ROTATION_STALLED, "fresh")
    assert stalled.details["reason"].startswith("not rotated since it became due")


def _held_too_long(world: World, name: str) -> None:
    """A due secret whose lease (a rollback's) was taken 20 minutes ago and still runs."""
    secret(world, name, age_days=30)
    world.clock.advance(timedelta(minutes=1))
    progress = rotation.Progress(rotation_id="a" * 32, step="rolling_back", holder="h")
    progress.leased_at = format_time(world.clock.now() - timedelta(minutes=20))
    progress.lease_until = format_time(world.clock.now() + timedelta(minutes=10))
    world.states.create("rotation", name, progress.state())


def test_a_lease_held_longer_than_any_holder_runs_is_a_stall_at_once(world: World) -> None:
    _held_too_long(world, "held")
    sweep(world)
    [stalled] = world.records(Action.ROTATION_STALLED, "held")
    assert stalled.details["reason"].startswith("held by rolling_back")
    plan = world.plan_rotation("held", force=False)
    assert plan["in_progress"] is not None  # and the status says the same
    status = world.secret_status("held")
    assert status["stalled"]["reason"].startswith("held by rolling_back")


# -- 4. the service knows what it manages -------------------------------------------------------------


def _changed(world: World, name: str) -> list[AuditEvent]:
    return [e for e in world.records(Action.POLICY_CHANGED, name) if e.actor.type == ActorType.UNKNOWN]


def test_a_policy_raised_by_tag_alone_is_recorded_with_old_and_new_values_once(world: World) -> None:
    secret(world, "due-soon", age_days=29)
    sweep(world)
    edit(world, "due-soon", **{"rotation-interval-days": "730"})
    world.clock.advance(timedelta(days=2))  # due by the old policy, not by the new one
    sweep(world)
    [changed] = _changed(world, "due-soon")
    assert changed.details["before"]["rotation-interval-days"] == "30"
    assert changed.details["after"]["rotation-interval-days"] == "730"
    assert changed.actor.id == "unknown"
    [finding] = [e for e in world.records(Action.SUSPICIOUS_ACTIVITY, "due-soon")]
    assert finding.details["rule"] == "policy_changed_outside_api"
    assert any(n.id == finding.details["finding_id"] for n in world.publisher.sent)
    sweep(world)
    assert len(_changed(world, "due-soon")) == 1  # once per change


def test_a_secret_that_leaves_management_by_tag_is_recorded(world: World) -> None:
    edit(world, "steady", **{"managed-by": None})
    sweep(world)
    [left] = _changed(world, "steady")
    assert left.details["after"] == {} and left.details["before"]["managed-by"] == "secret-lifecycle"


def test_a_secret_deleted_outside_the_api_is_recorded_one_deleted_through_it_is_not(world: World) -> None:
    secret(world, "decommissioned")
    sweep(world)
    world.delete_secret("decommissioned", justification="gone", actor=OPERATOR)
    world.store.delete("steady")  # out of band
    sweep(world)
    assert _changed(world, "decommissioned") == []
    [gone] = _changed(world, "steady")
    assert gone.details["gone"] is True


def test_a_foreign_secret_tagged_managed_is_onboarded_by_an_unknown_actor_and_rotated(world: World) -> None:
    world.clock.advance(timedelta(days=-40))
    world.store.set_value("foreign", "x", content_type="text/plain", tags={"owner": "billing"})
    world.clock.advance(timedelta(days=40))
    edit(world, "foreign", **POLICY.to_tags())
    sweep(world)
    [onboarded] = [e for e in world.records(Action.SECRET_ONBOARDED, "foreign")]
    assert (onboarded.actor.id, onboarded.details["by"]) == ("unknown", "tags")
    assert len(world.store.versions_of("foreign")) == 2  # then treated by its policy: due, rotated
    sweep(world)
    assert len(world.records(Action.SECRET_ONBOARDED, "foreign")) == 1
    assert _changed(world, "foreign") == []  # its rotation changed no policy


def test_changes_through_the_api_are_taken_in_silently(world: World) -> None:
    world.onboard("made", POLICY, actor=OPERATOR)
    fields = catalog.PolicyInput(kind="api-key", rotation_interval_days=90)
    world.apply_policy("steady", fields, actor=OPERATOR)
    done = sweep(world)
    assert done.inventory is not None and sorted(done.inventory.by_api) == ["made", "steady"]
    assert _changed(world, "steady") == [] and world.records(Action.SUSPICIOUS_ACTIVITY) == []
    unknown = [e for e in world.records(Action.SECRET_ONBOARDED, "made") if e.actor.type == ActorType.UNKNOWN]
    assert unknown == []


def test_a_wiped_inventory_is_reported_and_taken_again(world: World) -> None:
    for key in list(world.rows.list(inventory.PARTITION)):
        stored = world.rows.get(inventory.PARTITION, key)
        assert stored is not None
        world.rows.delete(inventory.PARTITION, key, stored.etag)
    done = sweep(world)
    assert done.inventory is not None and done.inventory.taken == 1
    [tampered] = world.records(Action.STATE_TAMPERED)
    assert (tampered.details["partition"], tampered.details["check"]) == ("inventory", "missing")
    assert world.records(Action.SECRET_ONBOARDED)[-1].details["inventory"] == "retaken"


def test_a_forged_inventory_row_is_refused_and_the_vault_taken_in(world: World) -> None:
    stored = world.rows.get(inventory.PARTITION, "steady")
    assert stored is not None
    forged = {"name": "steady", "policy": "{}", "at": "2026-01-01T00:00:00.000000Z"}
    world.rows.replace(inventory.PARTITION, "steady", forged, stored.etag)
    sweep(world)
    assert [e.details["key"] for e in world.records(Action.STATE_TAMPERED)] == ["steady"]


# -- what a review found: each failed before its fix ----------------------------------------------------


def test_a_secret_that_left_and_comes_back_by_tag_is_recorded_though_the_api_once_set_that_policy(
    world: World,
) -> None:
    fields = catalog.PolicyInput(kind="api-key", rotation_interval_days=90)
    world.apply_policy("steady", fields, actor=OPERATOR)
    sweep(world)  # taken in: the API did it
    edit(world, "steady", **{"managed-by": None})
    world.clock.advance(timedelta(days=60))
    sweep(world)  # left by tag: recorded
    edit(world, "steady", **{"managed-by": "secret-lifecycle"})  # back, with the policy the API once set
    world.clock.advance(timedelta(days=1))
    sweep(world)
    unknown = [
        e for e in world.records(Action.SECRET_ONBOARDED, "steady") if e.actor.type == ActorType.UNKNOWN
    ]
    assert len(unknown) == 1


def test_an_inventory_row_a_storage_writer_deleted_is_reported(world: World) -> None:
    stored = world.rows.get(inventory.PARTITION, "steady")
    assert stored is not None
    world.rows.delete(inventory.PARTITION, "steady", stored.etag)
    sweep(world)
    [tampered] = world.records(Action.STATE_TAMPERED)
    assert (tampered.details["partition"], tampered.details["check"]) == ("inventory", "missing")


def test_a_plan_shows_a_lease_held_too_long_as_a_stall(world: World) -> None:
    _held_too_long(world, "held")
    plan = world.plan_rotation("held", force=False)
    assert plan["in_progress"] is not None and plan["stalled"]["reason"].startswith("held by rolling_back")
