"""Every accepted rotation request gets an outcome: concurrent requests for one secret join the rotation
queued or running (its outcome record names every joined id) or are skipped on record with the reason;
20 concurrent forced requests make exactly one new version."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from shared.domain.audit import Action, Actor, ActorType, Result
from shared.domain.errors import DependencyUnavailable
from shared.domain.policy import RotationPolicy, SecretKind
from shared.services import catalog, rotation
from tests.world import World

NAME = "dispatch-api-key"
OPERATOR = Actor("oid-operator", ActorType.USER)


def outcome_world() -> World:
    """NAME, managed and not due, with the state store sealed as in production."""
    world = World(sealed=True)
    world.secret(NAME, "v1", tags=RotationPolicy(SecretKind.API_KEY, timedelta(days=30)).to_tags())
    return world


def request(world: World) -> catalog.RotationTicket:
    """An operator's forced rotation over HTTP."""
    return world.request_rotation(NAME, force=True, actor=OPERATOR, correlation_id="http")


def answered(world: World) -> set[str]:
    """Every request id some outcome record names (its own rotation id, or among those it joined)."""
    ids: set[str] = set()
    for event in world.log.events:
        if event.action in (Action.ROTATED, Action.ROTATION_SKIPPED, Action.ROTATION_FAILED) and (
            event.result != Result.INTENT
        ):
            ids.add(str(event.details.get("rotation_id")))
            ids.update(event.details.get("joined") or [])
    return ids


def test_twenty_concurrent_forced_requests_make_one_version_and_twenty_outcomes() -> None:
    world = outcome_world()
    with ThreadPoolExecutor(max_workers=20) as pool:
        tickets = list(pool.map(lambda _: request(world), range(20)))
    ids = {t.rotation_id for t in tickets}
    assert len(ids) == 20
    assert len(world.requests.sent) == 1  # one queued; nineteen joined it
    [queued] = [t for t in tickets if t.joined is None]
    assert {t.joined for t in tickets if t is not queued} == {queued.rotation_id}
    [outcome] = world.drain()
    assert outcome.status == "rotated"
    assert len(world.store.versions_of(NAME)) == 2
    [rotated] = [e for e in world.log.events if e.action == Action.ROTATED and e.result == Result.SUCCESS]
    assert {rotated.details["rotation_id"], *rotated.details["joined"]} == ids
    assert ids <= answered(world)


def test_requests_during_a_rotation_join_it_even_after_its_success_is_recorded() -> None:
    world = outcome_world()
    first = request(world)
    late: list[catalog.RotationTicket] = []
    record = world.trail.record

    def also_request(action: Action, **fields: Any) -> Any:
        stored = record(action, **fields)
        if action == Action.ROTATED:  # one request while the lease is held (the intent), one between the
            late.append(request(world))  # success record and the close
        return stored

    world.trail.record = also_request  # type: ignore[method-assign]
    [outcome] = world.drain()
    assert outcome.status == "rotated" and len(late) == 2
    assert [t.status for t in late] == ["in_progress", "in_progress"]
    assert world.requests.sent == []  # both joined: nothing queued
    assert len(world.store.versions_of(NAME)) == 2
    assert {first.rotation_id, *(t.rotation_id for t in late)} <= answered(world)
    skipped = [e for e in world.log.events if e.action == Action.ROTATION_SKIPPED]
    # The holder learns of them when it closes (no extra read per rotation): one record names both.
    assert [e.details["joined"] for e in skipped] == [[t.rotation_id for t in late]]
    assert all(e.details["rotation_id"] == first.rotation_id and e.version for e in skipped)


def test_a_request_that_cannot_join_gets_a_skip_on_record() -> None:
    world = outcome_world()
    first = request(world)
    second_message: list[Any] = []
    original = world.store.set_value

    def racing(name: str, value: str, **kw: Any) -> Any:
        if name == NAME and not second_message:
            # Another queue message of the same secret, processed while this rotation holds the lease.
            from shared.domain.rotation import RotationReason, RotationRequest

            request = RotationRequest(
                secret_name=NAME,
                reason=RotationReason.EVENT,
                requested_at=world.clock.now(),
                correlation_id="event",
                force=True,
            )
            second_message.append(world.rotate_requested(request))
        return original(name, value, **kw)

    world.store.set_value = racing  # type: ignore[method-assign]
    world.drain()
    [other] = second_message
    assert other.status == "in_progress"
    [skip] = [e for e in world.log.events if e.action == Action.ROTATION_SKIPPED]
    assert "holds the lease" in skip.details["reason"] and first.rotation_id in skip.details["reason"]


def test_a_queued_request_that_reached_the_poison_queue_takes_its_joiners_along() -> None:
    world = outcome_world()
    first = request(world)
    joined = request(world)
    [message] = world.requests.sent
    world.gave_up(message, 5)
    [failed] = [e for e in world.log.events if e.action == Action.ROTATION_FAILED]
    assert failed.details["rotation_id"] == first.rotation_id and failed.details["joined"] == [
        joined.rotation_id
    ]
    world.requests.sent.clear()
    again = request(world)  # the marker is gone: a new request queues afresh
    assert again.joined is None and len(world.requests.sent) == 1


def test_many_threads_racing_for_one_row_all_register() -> None:
    world = outcome_world()
    barrier = threading.Barrier(8)

    def racer(_: int) -> str:
        barrier.wait()
        return world.register_request(f"{_:032x}", True)[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(racer, range(8))) == ["queued"] * 8
    stored = world.states.get(rotation.PARTITION, NAME.lower())
    assert stored is not None
    progress = rotation.Progress.of(stored.state)
    assert len({progress.queued, *progress.alias_list()}) == 8


# -- what a review found: each failed before its fix ----------------------------------------------------


def test_another_write_between_the_queueing_and_the_rotation_keeps_the_joiners() -> None:
    world = outcome_world()
    first, joined = request(world), request(world)
    fields = catalog.PolicyInput(kind="api-key", rotation_interval_days=45)
    world.apply_policy(NAME, fields, actor=OPERATOR)
    world.drain()
    assert {first.rotation_id, joined.rotation_id} <= answered(world)
    assert len(world.store.versions_of(NAME)) == 2


def test_a_queued_request_whose_secret_is_gone_takes_its_joiners_along() -> None:
    world = outcome_world()
    first, joined = request(world), request(world)
    world.store.delete(NAME)
    world.drain()
    assert {first.rotation_id, joined.rotation_id} <= answered(world)


def test_a_request_that_could_not_be_sent_takes_those_that_joined_it_along() -> None:
    world = outcome_world()
    joined: list[catalog.RotationTicket] = []
    send = world.requests.send

    def failing(requests: Any) -> None:
        joined.append(request(world))  # joins the one being sent (the queue keeps failing for it)
        raise DependencyUnavailable("queue", "unreachable")

    world.requests.send = failing  # type: ignore[method-assign]
    with pytest.raises(DependencyUnavailable):
        request(world)
    world.requests.send = send  # type: ignore[method-assign]
    assert joined and joined[0].rotation_id in answered(world)


def test_a_request_given_up_after_taking_the_lease_names_those_that_joined() -> None:
    world = outcome_world()
    first, joined = request(world), request(world)
    [message] = world.requests.sent
    original = world.store.set_value

    def dies(*a: Any, **k: Any) -> Any:
        raise Crash

    world.store.set_value = dies  # type: ignore[method-assign]
    with pytest.raises(Crash):
        world.rotate_requested(message)
    world.store.set_value = original  # type: ignore[method-assign]
    world.gave_up(message, 5)
    assert {first.rotation_id, joined.rotation_id} <= answered(world)


def test_a_sealed_request_put_back_on_the_poison_queue_after_its_rotation_is_no_failure() -> None:
    world = outcome_world()
    request(world)
    [message] = world.requests.sent
    world.drain()
    world.gave_up(message, 5)
    assert [e for e in world.log.events if e.action == Action.ROTATION_FAILED] == []


def test_a_forced_request_put_back_on_the_queue_days_later_is_not_acted_on() -> None:
    """A sealed message copied aside (never taken) and put back two days later forces nothing."""
    world = outcome_world()
    request(world)
    copied = world.requests.sent.pop()
    world.clock.advance(timedelta(days=2))
    world.requests.sent.append(copied)
    [outcome] = world.drain()
    assert outcome.status == "skipped" and len(world.store.versions_of(NAME)) == 1


def test_many_joined_requests_do_not_push_the_rotations_own_writes_out_of_the_row() -> None:
    world = outcome_world()
    before = world.store.get_properties(NAME)
    request(world)
    world.drain()
    made = world.store.get_properties(NAME)
    for _ in range(2):  # two rotations, each joined by as many requests as may join one
        for _ in range(rotation.MAX_JOINED):
            request(world)
        world.drain()
    stored = world.states.get(rotation.PARTITION, NAME.lower())
    assert stored is not None and before.version != made.version
    assert rotation.written_by_service(made, world.states)  # a late event for it is still the service's


class Crash(BaseException):
    """The process dies here."""
