"""Rotation when a stored row lies or a process dies between two writes (review findings): the vault,
not the row, decides what is resumed and what is retired, and nothing done is forgotten or done twice."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from shared.domain.audit import Action, AuditEvent, Result
from shared.domain.errors import DependencyUnavailable
from shared.domain.policy import (
    INTERVAL_TAG,
    KIND_TAG,
    MANAGED_BY_TAG,
    MANAGED_BY_VALUE,
    RotationPolicy,
    SecretKind,
)
from shared.domain.rotation import RotationReason, RotationRequest
from shared.domain.state import Versioned
from shared.services.audit import AuditUnavailable
from shared.services.rotation import (
    PARTITION,
    Progress,
    progress_rows,
    schedule_key,
    written_by_service,
)
from tests.fakes import InMemorySecretStore
from tests.world import API_KEY, World

NAME = "dispatch-api-key"
LONG_AGO = "2000-01-01T00:00:00.000000Z"


class ProcessDied(BaseException):
    """The host is killed here (a crash, the function timeout): no handler of the product runs."""


class DiesAfterWrite(InMemorySecretStore):
    armed = False

    def set_value(self, name: str, value: str, **kw: Any) -> Any:
        made = super().set_value(name, value, **kw)
        if self.armed:
            self.armed = False
            raise ProcessDied
        return made


class ScheduleWrittenMeanwhile:
    """The world's state store, where another write to NAME's retirement schedule (``meanwhile``, given the
    row as read) lands just before this caller's first replace of it. It puts itself in the world."""

    def __init__(self, world: World, meanwhile: Callable[[Versioned], object]) -> None:
        self.inner, self.meanwhile, self.hit = world.states, meanwhile, False
        world.states = self  # type: ignore[assignment]

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    def replace(self, partition: str, key: str, state: Any, etag: str) -> Any:
        if key == schedule_key(NAME) and not self.hit:
            self.hit = True
            current = self.inner.get(partition, key)
            assert current is not None
            self.meanwhile(current)
        return self.inner.replace(partition, key, state, etag)


@pytest.fixture
def world() -> World:
    return World(store=DiesAfterWrite)


def seed(world: World, policy: RotationPolicy = API_KEY, age_days: int = 31) -> str:
    return world.secret(NAME, tags=policy.to_tags(), age_days=age_days).version


def request(world: World, rotation_id: str | None = None, *, force: bool = False) -> Any:
    """A rotation request delivered by the queue: due (the sweep's), or manual with its id."""
    request = RotationRequest(
        secret_name=NAME,
        reason=RotationReason.MANUAL if rotation_id else RotationReason.DUE,
        requested_at=world.clock.now(),
        correlation_id="test",
        rotation_id=rotation_id,
        force=force,
    )
    return world.rotate_requested(request)


def hourly_sweep(world: World) -> None:
    world.clock.advance(timedelta(hours=1))
    world.sweep("sweep")
    world.resume_stale("sweep")
    world.drain()


def successes(world: World) -> list[AuditEvent]:
    return [e for e in world.records(Action.ROTATED) if e.result == Result.SUCCESS]


def test_a_rotation_killed_after_its_write_is_finished_by_the_next_sweep_after_its_lease(
    world: World,
) -> None:
    old = seed(world)
    world.store.armed = True
    with pytest.raises(ProcessDied):
        request(world)
    world.clock.advance(timedelta(minutes=10))  # the queue redelivers while the dead lease still runs
    assert request(world).status == "in_progress"  # consumed: nobody rotates twice
    hourly_sweep(world)  # the lease ran out: the sweep asks for the rotation to be finished
    assert len(world.store.versions_of(NAME)) == 2
    [success] = successes(world)
    assert success.version == world.store.get_properties(NAME).version
    assert [n.type for n in world.publisher.sent] == ["SecretLifecycle.SecretRotated"]
    stored = world.states.get(PARTITION, schedule_key(NAME))
    assert stored is not None and old in stored.state["versions"]
    for _ in range(3):  # and nothing more after that
        hourly_sweep(world)
    assert len(world.store.versions_of(NAME)) == 2 and len(successes(world)) == 1


def test_a_forged_promoting_row_the_vault_contradicts_is_not_resumed(world: World) -> None:
    seed(world, age_days=1)  # not due
    current = world.store.get_properties(NAME).version
    forged = {"step": "promoting", "rotation_id": "f" * 32, "from_version": "0" * 32, "holder": "x",
              "lease_until": LONG_AGO, "attempt": 1}  # fmt: skip
    world.overwrite(PARTITION, NAME, forged)
    for _ in range(3):
        hourly_sweep(world)
    assert world.store.versions_of(NAME) == [current]  # no rotation that is not due
    progress = world.states.get(PARTITION, NAME)
    assert progress is not None and progress.state["step"] == "idle"  # closed, not requested every hour


def test_a_forged_promoting_row_naming_a_closed_rotation_records_no_second_success(world: World) -> None:
    seed(world)
    done = world.rotate()
    stored = world.states.get(PARTITION, NAME)
    assert stored is not None
    world.overwrite(
        PARTITION, NAME, {**stored.state, "step": "promoting", "holder": "x", "lease_until": LONG_AGO}
    )
    assert request(world).status == "skipped"  # a trigger finds the row: nothing to resume, not due
    hourly_sweep(world)
    assert len(successes(world)) == 1 and world.store.get_properties(NAME).version == done.new_version


def test_a_forged_schedule_never_retires_an_encryption_keys_previous_version(world: World) -> None:
    v1 = seed(world, RotationPolicy(SecretKind.ENCRYPTION_KEY, timedelta(days=30), None, "telemetry"))
    assert world.rotate().status == "rotated"
    # Old ciphertext needs the previous versions.
    assert world.states.get(PARTITION, schedule_key(NAME)) is None
    world.overwrite(PARTITION, schedule_key(NAME), {"versions": f'[["{v1}", "{LONG_AGO}"]]'})
    world.retire_all()
    assert world.store.get_properties(NAME, v1).enabled


def test_a_forged_schedule_cannot_cut_the_grace_short(world: World) -> None:
    v1 = seed(world)
    world.rotate()
    world.overwrite(PARTITION, schedule_key(NAME), {"versions": f'[["{v1}", "{LONG_AGO}"]]'})
    world.retire_all()
    assert world.store.get_properties(NAME, v1).enabled  # 0 h into its 24 h grace
    world.clock.advance(timedelta(hours=24, seconds=1))
    assert world.retire_all()[0] == [(NAME, v1)]
    assert not world.store.get_properties(NAME, v1).enabled


def test_a_deleted_secret_takes_its_schedule_with_it(world: World) -> None:
    seed(world)
    world.rotate()
    del world.store.secrets[NAME]  # deleted and purged by its owner
    for _ in range(3):
        world.clock.advance(timedelta(days=1))
        assert world.retire_all() == ([], [])
    assert world.states.get(PARTITION, schedule_key(NAME)) is None
    assert not [e for e in world.log.events if e.action == Action.VERSION_RETIRED]


def test_a_policy_change_keeps_the_record_of_the_services_own_versions(world: World) -> None:
    seed(world)
    made = world.rotate().new_version
    # Another write (a policy change, an onboarding, a rollback) takes the lease and releases it.
    progress, etag = world.acquire("updating_policy", NAME, world.states.get(PARTITION, NAME))
    world.release(progress, etag, name=NAME, new_version=None)
    # The rotation's SecretNewVersionCreated, delivered late, is still the service's own.
    assert written_by_service(world.store.get_properties(NAME, made), world.states)


def test_a_forced_request_that_resumed_another_rotation_is_done_when_redelivered(world: World) -> None:
    seed(world, age_days=1)
    world.log.fails = lambda e: e.action == Action.ROTATED and e.result == Result.SUCCESS
    with pytest.raises(AuditUnavailable):  # r1's version is made; its success could not be recorded
        request(world, "1" * 32, force=True)
    world.log.fails = lambda e: False
    world.clock.advance(timedelta(minutes=16))
    assert request(world, "2" * 32, force=True).status == "rotated"  # r2 finishes r1's rotation
    for rid in ("1" * 32, "2" * 32, "2" * 32, "1" * 32):  # the queue delivers each again
        assert request(world, rid, force=True).status == "skipped"
    assert len(world.store.versions_of(NAME)) == 2


def test_a_schedule_written_concurrently_does_not_record_the_success_twice(world: World) -> None:
    seed(world)
    world.rotate()
    world.clock.advance(timedelta(days=31))
    # retire_due's write lands between schedule_retirement's read and its write.
    key = schedule_key(NAME)
    racy = ScheduleWrittenMeanwhile(
        world, lambda row: world.rows.replace(PARTITION, key, dict(row.state), row.etag)
    )
    assert request(world).status == "rotated"
    assert racy.hit and len(successes(world)) == 2  # two rotations, one success each


def test_a_violation_whose_record_failed_is_recorded_by_the_next_sweep(world: World) -> None:
    world.clock.advance(timedelta(days=-31))
    tags = {MANAGED_BY_TAG: MANAGED_BY_VALUE, KIND_TAG: "nonsense", INTERVAL_TAG: "30"}
    world.store.set_value(NAME, "v", content_type=None, tags=tags)
    world.clock.advance(timedelta(days=31))
    report = world.sweep(correlation_id="s1")
    world.log.fails = lambda e: e.action == Action.POLICY_VIOLATION
    with pytest.raises(AuditUnavailable):
        world.record_violations(report.violations, "s1")
    world.log.fails = lambda e: False
    for hour in range(3):
        report = world.sweep(correlation_id=f"s{hour}")
        world.record_violations(report.violations, f"s{hour}")
    assert len([e for e in world.log.events if e.action == Action.POLICY_VIOLATION]) == 1


@pytest.mark.parametrize(
    "row",
    [
        {"step": "promoting", "holder": "x", "lease_until": 5, "attempt": "1", "rotation_id": "r"},
        {"step": 7, "attempt": True, "made": 3, "aliases": "{"},
        {"step": "promoting", "lease_until": "not a time", "attempt": -4, "from_version": None},
    ],
)
def test_a_malformed_progress_row_is_read_as_defaults_not_an_error(world: World, row: dict[str, Any]) -> None:
    seed(world)
    world.overwrite(PARTITION, NAME, row)
    Progress.of(row).leased_by_other("h", world.clock.now())
    assert world.rotate().status == "rotated"
    assert written_by_service(world.store.get_properties(NAME), world.states)


def test_a_holder_slowed_past_its_lease_before_the_vault_write_never_writes(world: World) -> None:
    seed(world)
    inner_outcomes: list[Any] = []
    slowed: list[bool] = []

    def slow_intent(event: AuditEvent) -> bool:
        if event.action == Action.ROTATED and event.result == Result.INTENT and not slowed:
            slowed.append(True)
            world.clock.advance(timedelta(minutes=16))  # the audit store answered very late
            inner_outcomes.append(world.rotate())  # meanwhile the lease ran out and another holder came
        return False

    world.log.fails = slow_intent
    outcome = world.rotate()
    assert [o.status for o in inner_outcomes] == ["rotated"]
    assert outcome.status == "in_progress"  # it lost the lease: it must not write a second version
    assert len(world.store.versions_of(NAME)) == 2


def test_a_fresh_lease_is_not_renewed_before_the_vault_write(world: World) -> None:
    seed(world)
    writes: list[str] = []
    replace = world.states.replace

    def counting(partition: str, key: str, state: Any, etag: str) -> Any:
        writes.append(str(state.get("step")))
        return replace(partition, key, state, etag)

    world.states.replace = counting  # type: ignore[method-assign]
    assert world.rotate().status == "rotated"
    # The lease is written once and closed once: no renewal a moment after it was taken.
    assert [w for w in writes if w in ("promoting", "idle")] == ["idle"]


def test_a_schedule_emptied_by_retirement_is_removed_and_made_afresh_in_one_call(world: World) -> None:
    """The rotation takes its lease and creates the schedule in one transaction: no call of its own."""
    v1 = seed(world)
    calls: list[str] = []
    for method in ("get", "create", "replace", "delete", "commit"):
        inner = getattr(world.states, method)

        def counted(partition: str, *args: Any, _inner: Any = inner, _m: str = method) -> Any:
            calls.append(_m)
            return _inner(partition, *args)

        setattr(world.states, method, counted)
    world.rotate()
    assert calls == ["get", "commit", "replace"]  # progress read, lease + the first schedule, close
    world.clock.advance(timedelta(hours=25))
    assert world.retire_all()[0] == [(NAME, v1)]
    assert world.states.get(PARTITION, schedule_key(NAME)) is None  # emptied: removed
    calls.clear()
    world.clock.advance(timedelta(days=31))
    assert world.rotate().status == "rotated"
    assert calls == ["get", "commit", "replace"]  # so the next rotation's schedule costs no call again


def test_a_dead_holders_row_of_a_secret_deleted_since_is_closed_not_requested_every_hour(
    world: World,
) -> None:
    seed(world)
    world.store.armed = True
    with pytest.raises(ProcessDied):
        request(world)
    del world.store.secrets[NAME]  # deleted by its owner before anything resumed it
    world.clock.advance(timedelta(minutes=16))
    hourly_sweep(world)  # requested once, found gone: skipped on record, and the row closed
    progress = world.states.get(PARTITION, NAME)
    assert progress is not None and progress.state["step"] == "idle"
    skipped = len([e for e in world.log.events if e.action == Action.ROTATION_SKIPPED])
    hourly_sweep(world)
    assert len([e for e in world.log.events if e.action == Action.ROTATION_SKIPPED]) == skipped


def _failing_close(world: World) -> None:
    """The store fails the close (the write that makes the row idle) once."""
    replace = world.states.replace
    failures = [DependencyUnavailable("state", "unreachable")]

    def failing(partition: str, key: str, state: Any, etag: str) -> Any:
        if failures and state.get("step") == "idle":
            raise failures.pop()
        return replace(partition, key, state, etag)

    world.states.replace = failing  # type: ignore[method-assign]


def test_a_close_that_fails_after_the_success_leaves_the_rotation_to_its_retry(world: World) -> None:
    """When the close fails the lease is released for the retry, and nothing says the rotation failed
    (SecretRotated went out); the retirement was scheduled with the lease, before anything was written."""
    old = seed(world)
    _failing_close(world)
    with pytest.raises(DependencyUnavailable):
        request(world)
    stored = world.states.get(PARTITION, NAME)
    assert stored is not None and stored.state["step"] == "promoting"
    assert not Progress.of(stored.state).leased_by_other("", world.clock.now())  # released: retry at once
    assert [e for e in world.log.events if e.action == Action.ROTATION_FAILED] == []
    assert [n.type for n in world.publisher.sent] == ["SecretLifecycle.SecretRotated"]
    schedule = world.states.get(PARTITION, schedule_key(NAME))
    assert schedule is not None and old in schedule.state["versions"]
    assert request(world).status == "rotated"  # the queue's retry finishes it, no second version
    assert len(world.store.versions_of(NAME)) == 2
    closed = world.states.get(PARTITION, NAME)
    assert closed is not None and closed.state["step"] == "idle"


def test_a_failed_close_then_a_version_by_hand_still_retires_the_replaced_version(world: World) -> None:
    """The row the close left open is abandoned (the vault moved on), but the schedule was on record
    before the service's version was written: the version it replaced still retires after the grace."""
    old = seed(world)
    _failing_close(world)
    with pytest.raises(DependencyUnavailable):
        request(world)
    made = world.store.get_properties(NAME).version
    # Someone sets a value by hand; key_vault_events puts the policy tags back on it.
    world.store.set_value(NAME, "by-hand", content_type="text/plain", tags=API_KEY.to_tags())
    hourly_sweep(world)  # not due: the open row is abandoned
    abandoned = world.states.get(PARTITION, NAME)
    assert abandoned is not None and abandoned.state["step"] == "idle"
    world.clock.advance(timedelta(hours=25))
    retired, failed = world.retire_all()
    assert (retired, failed) == ([(NAME, old)], [])
    assert not world.store.get_properties(NAME, old).enabled
    assert world.store.get_properties(NAME, made).enabled  # replaced by hand, not by the service


def test_a_schedule_removed_while_a_rotation_adds_to_it_is_made_again(world: World) -> None:
    """A retirement run deletes the emptied schedule between the rotation's read of it and its write: the
    rotation reads again and creates it, instead of failing a rotation that happened."""
    seed(world)
    world.rotate()
    world.clock.advance(timedelta(days=31))  # due again; the first schedule is still there
    inner = world.rows
    # A retirement run emptied the schedule and removed it.
    racy = ScheduleWrittenMeanwhile(
        world, lambda row: world.rows.delete(PARTITION, schedule_key(NAME), row.etag)
    )
    current = world.store.get_properties(NAME).version
    assert request(world).status == "rotated"
    assert racy.hit
    schedule = inner.get(PARTITION, schedule_key(NAME))
    assert schedule is not None and current in schedule.state["versions"]
    assert [e for e in world.log.events if e.action == Action.ROTATION_SKIPPED] == []


def test_progress_and_schedules_are_listed_apart(world: World) -> None:
    seed(world)
    world.rotate()
    assert list(progress_rows(world.states)) == [NAME]
    assert set(world.states.list(PARTITION)) == {NAME, schedule_key(NAME)}
