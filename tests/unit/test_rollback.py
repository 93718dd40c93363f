"""Rollback over in-memory fakes: the previous value made current again as one new version, whatever
crashes or repeats; never a rollback of a rollback; what is restored derived from the vault, never from a
stored row; a retired version re-enabled only for the rollback and retired again after it; a rollback
written but not recorded said so; the shared lease."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from shared.domain.audit import Action, Actor, ActorType, Result
from shared.domain.errors import Conflict, DependencyUnavailable, Forbidden, NotFound, OutcomeNotRecorded
from shared.domain.policy import RotationPolicy, SecretKind
from shared.domain.secrets import SecretVersion
from shared.services.audit import AuditUnavailable
from shared.services.rollback import ROLLED_BACK_FROM_TAG, RollbackOutcome
from shared.services.rotation import (
    PARTITION,
    RETIRED_BY_TAG,
    ROTATION_ID_TAG,
    Busy,
    NotManaged,
    made_by_service,
    retirements,
    schedule_key,
)
from tests.fakes import InMemorySecretStore
from tests.world import World

NAME = "dispatch-api-key"
POLICY = RotationPolicy(SecretKind.API_KEY, timedelta(days=30), None, "dispatch-api")
OPERATOR = Actor(id="oid-operator", type=ActorType.USER, ip="198.51.100.7")


def rotated(world: World) -> tuple[str, str]:
    """A managed secret rotated once: (the good old version, the new version)."""
    world.secret(NAME, "good-old-value", tags=POLICY.to_tags(), age_days=31)
    outcome = world.rotate(NAME)
    assert outcome.status == "rotated" and outcome.new_version and outcome.previous_version
    world.publisher.sent.clear()
    return outcome.previous_version, outcome.new_version


def roll_back(world: World, name: str = NAME, **options: Any) -> RollbackOutcome:
    """A rollback as the operator asks for it over HTTP."""
    return world.rollback(name, actor=OPERATOR, correlation_id="http-1", **options)


def test_the_previous_value_becomes_current_as_a_new_version(world: World) -> None:
    old, bad = rotated(world)
    bad_value = world.store.get_value(NAME).value
    outcome = roll_back(world)
    assert len(world.versions()) == 3
    current = world.store.get_value(NAME)
    assert current.value == "good-old-value" and current.properties.version == outcome.new_version
    assert (outcome.restored_version, outcome.rolled_back_from) == (old, bad)
    tags = current.properties.tags
    assert RotationPolicy.from_tags(tags) == POLICY and made_by_service(current.properties)
    assert (tags[ROTATION_ID_TAG], tags[ROLLED_BACK_FROM_TAG], tags["previous-version"]) == (
        outcome.rollback_id,
        bad,
        bad,
    )
    assert current.properties.expires == world.clock.now() + timedelta(days=60)
    assert [(e.result, e.version, e.actor.id) for e in world.records(Action.ROLLED_BACK)] == [
        (Result.INTENT, bad, "oid-operator"),
        (Result.SUCCESS, outcome.new_version, "oid-operator"),
    ]
    [event] = world.publisher.sent
    assert event.type == "SecretLifecycle.SecretRolledBack" and event.id == outcome.rollback_id
    assert event.data == {
        "vault": "fleet", "secret_name": NAME, "version": outcome.new_version, "restored_version": old,
        "rolled_back_from": bad, "rollback_id": outcome.rollback_id, "owner": "dispatch-api",
    }  # fmt: skip
    everything = repr(world.log.events) + repr(world.publisher.sent) + repr(world.states.rows) + repr(outcome)
    assert "good-old-value" not in everything and bad_value not in everything


def test_a_duplicated_rollback_is_refused_and_does_not_undo_the_first(world: World) -> None:
    rotated(world)
    roll_back(world)
    for _ in range(3):
        with pytest.raises(Conflict, match="itself a rollback"):
            roll_back(world)
    assert len(world.versions()) == 3
    assert world.store.get_value(NAME).value == "good-old-value"


def test_the_rollback_is_not_due_and_rolling_forward_then_back_again_works(world: World) -> None:
    rotated(world)
    rolled = roll_back(world)
    again = world.rotate()
    assert again.status == "skipped"  # not due: exp and created are fresh
    forward = world.rotate(force=True)
    assert forward.status == "rotated" and forward.previous_version == rolled.new_version
    back = roll_back(world)
    assert back.restored_version == rolled.new_version
    assert world.store.get_value(NAME).value == "good-old-value"


class CrashesAfterTheWrite(InMemorySecretStore):
    """``set_value`` stores the version, then the process loses its connection (an error the service sees)
    or dies outright (``hard``: nothing after runs, the lease stays held)."""

    def __init__(self, world: World, hard: bool) -> None:
        self.__dict__ = world.store.__dict__
        self.hard, self.crashed = hard, False

    def set_value(self, name: str, value: str, **kwargs: Any) -> SecretVersion:
        made = super().set_value(name, value, **kwargs)
        if not self.crashed:
            self.crashed = True
            if self.hard:
                raise Died
            raise DependencyUnavailable("key_vault", "connection reset")
        return made


class Died(BaseException):
    """The process is gone: no handler of the service runs."""


def test_a_rollback_retried_after_an_error_following_the_write_makes_one_version(world: World) -> None:
    _, bad = rotated(world)
    world.store = CrashesAfterTheWrite(world, hard=False)
    with pytest.raises(DependencyUnavailable):
        roll_back(world)
    assert len(world.versions()) == 3
    [failed] = [e for e in world.records(Action.ROLLED_BACK) if e.result == Result.FAILURE]
    assert failed.details["error_class"] == "DependencyUnavailable"
    outcome = roll_back(world)  # the retry resumes: the version it made is found by the rollback id
    assert len(world.versions()) == 3
    assert outcome.new_version == world.versions()[-1] and outcome.rolled_back_from == bad
    assert [e.result for e in world.records(Action.ROLLED_BACK)].count(Result.SUCCESS) == 1
    with pytest.raises(Conflict):
        roll_back(world)


def test_a_rollback_retried_after_the_process_died_between_write_and_close_makes_one_version(
    world: World,
) -> None:
    rotated(world)
    world.store = CrashesAfterTheWrite(world, hard=True)
    with pytest.raises(Died):
        roll_back(world)
    progress = world.states.get(PARTITION, NAME)
    assert progress is not None and progress.state["step"] == "rolling_back"
    with pytest.raises(Busy):  # the dead holder's lease still runs
        roll_back(world)
    world.clock.advance(timedelta(minutes=16))
    outcome = roll_back(world)
    assert len(world.versions()) == 3 and outcome.new_version == world.versions()[-1]
    assert world.store.get_value(NAME).value == "good-old-value"
    stored = world.states.get(PARTITION, NAME)
    assert stored is not None and stored.state["step"] == "idle"


def test_a_previous_version_disabled_outside_the_service_is_never_restored(world: World) -> None:
    old, bad = rotated(world)
    world.store.update_properties(NAME, old, enabled=False)  # revoked, or disabled by hand
    with pytest.raises(Conflict, match="revoked"):
        roll_back(world)
    assert not world.store.get_properties(NAME, old).enabled
    assert world.store.get_properties(NAME).version == bad


def test_a_retired_version_is_marked_and_the_mark_goes_when_a_rollback_restores_it(world: World) -> None:
    old, _ = rotated(world)
    world.clock.advance(timedelta(hours=25))
    world.retire_due()
    assert world.store.get_properties(NAME, old).tags[RETIRED_BY_TAG] == "secret-lifecycle"
    roll_back(world)
    # Enabled again without the mark: were it disabled later some other way, no rollback would restore it.
    assert RETIRED_BY_TAG not in world.store.get_properties(NAME, old).tags


def test_a_retired_previous_version_is_re_enabled_for_the_rollback_and_retires_again_after_it(
    world: World,
) -> None:
    old, bad = rotated(world)
    world.clock.advance(timedelta(hours=25))
    assert world.retire_due() == [old]
    assert not world.store.get_properties(NAME, old).enabled
    assert world.states.get(PARTITION, schedule_key(NAME)) is None  # emptied: removed
    # And suppose it were still scheduled, at an earlier time.
    earlier = {"versions": f'[["{old}", "2026-11-30T00:00:00.000000Z"]]'}
    world.states.create(PARTITION, schedule_key(NAME), earlier)
    outcome = roll_back(world)
    assert world.store.get_properties(NAME, old).enabled
    assert world.store.get_value(NAME).value == "good-old-value"
    # Replaced again by the rollback's version: both old versions retire after the grace from it.
    created = world.store.get_properties(NAME, outcome.new_version).created
    schedule = world.states.get(PARTITION, schedule_key(NAME))
    assert schedule is not None
    assert sorted(retirements(schedule.state)) == sorted(
        [(old, created + timedelta(hours=24)), (bad, created + timedelta(hours=24))]
    )
    world.clock.advance(timedelta(hours=25))
    retired = world.retire_due()
    assert sorted(retired) == sorted([old, bad])
    assert [v for v in world.versions() if world.store.get_properties(NAME, v).enabled] == [
        outcome.new_version
    ]


def test_the_restored_version_retires_again_also_after_rolling_forward(world: World) -> None:
    rotated(world)
    roll_back(world)
    world.clock.advance(timedelta(hours=25))
    world.retire_due()
    world.rotate(force=True)
    world.clock.advance(timedelta(hours=25))
    world.retire_due()
    current = world.store.get_properties(NAME).version
    assert [v for v in world.versions() if world.store.get_properties(NAME, v).enabled] == [current]


def test_without_a_grace_the_old_versions_stay_enabled(world: World) -> None:
    key = RotationPolicy(SecretKind.ENCRYPTION_KEY, timedelta(days=30), None, "dispatch-api")
    world.clock.advance(timedelta(days=-31))
    world.store.set_value(NAME, "good-old-value", content_type=None, tags=key.to_tags())
    world.clock.advance(timedelta(days=31))
    world.rotate()
    roll_back(world)
    assert world.states.get(PARTITION, schedule_key(NAME)) is None
    assert all(world.store.get_properties(NAME, v).enabled for v in world.versions())


class RefusesTheWrite(InMemorySecretStore):
    """``set_value`` fails before anything is written (the vault stops answering)."""

    def __init__(self, world: World) -> None:
        self.__dict__ = world.store.__dict__

    def set_value(self, name: str, value: str, **kwargs: Any) -> SecretVersion:
        raise DependencyUnavailable("key_vault", "unreachable (connection failed)")


@pytest.mark.parametrize(
    ("fail", "error"),
    [
        (lambda w: w.store.denied.add("get_value"), Forbidden),
        (lambda w: setattr(w, "store", RefusesTheWrite(w)), DependencyUnavailable),
    ],
    ids=["value-refused", "write-fails"],
)
def test_a_failed_rollback_leaves_a_retired_version_disabled_and_the_schedule_as_it_was(
    world: World, fail: Any, error: type[Exception]
) -> None:
    old, _ = rotated(world)
    world.clock.advance(timedelta(hours=25))
    world.retire_due()
    assert not world.store.get_properties(NAME, old).enabled
    schedule = world.states.get(PARTITION, schedule_key(NAME))
    fail(world)
    with pytest.raises(error):
        roll_back(world)
    assert not world.store.get_properties(NAME, old).enabled, "a failed rollback left the old version enabled"
    assert len(world.versions()) == 2
    after = world.states.get(PARTITION, schedule_key(NAME))
    before = dict(retirements(schedule.state)) if schedule else {}
    added = {v: t for v, t in (retirements(after.state) if after else []) if before.get(v) != t}
    # Planned before the write, so that a rollback dying after it still retires what it replaced: only
    # those two, and not before a whole grace (retire_due then asks the vault, which says neither was
    # replaced by a rollback that wrote nothing).
    assert set(added) <= {old, world.store.get_properties(NAME).version}
    assert all(t >= world.clock.now() + timedelta(hours=24) for t in added.values())
    assert [e.result for e in world.records(Action.ROLLED_BACK)] == [Result.INTENT, Result.FAILURE]
    recovered = InMemorySecretStore.__new__(InMemorySecretStore)
    recovered.__dict__ = world.store.__dict__
    recovered.denied = set()
    world.store = recovered
    outcome = roll_back(world)  # the retry resumes the same rollback
    assert outcome.restored_version == old and world.store.get_value(NAME).value == "good-old-value"


def test_the_version_rolled_back_from_retires_after_the_grace(world: World) -> None:
    _, bad = rotated(world)
    roll_back(world)
    world.clock.advance(timedelta(hours=25))
    assert bad in world.retire_due()
    assert world.store.get_properties(NAME).enabled


def test_the_precondition_names_the_current_version(world: World) -> None:
    old, bad = rotated(world)
    with pytest.raises(Conflict, match="not " + old):
        roll_back(world, from_version=old)
    assert roll_back(world, from_version=bad).rolled_back_from == bad


@pytest.mark.parametrize(
    ("prepare", "error"),
    [
        (lambda w: w.store.set_value(NAME, "v", content_type=None, tags=POLICY.to_tags()), Conflict),
        (lambda w: w.store.set_value(NAME, "v", content_type=None, tags={"owner": "x"}), NotManaged),
        (lambda w: w.store.add_certificate(NAME, **POLICY.to_tags()), Conflict),
        (lambda w: None, NotFound),
    ],
    ids=["no-previous-version", "unmanaged", "certificate", "unknown"],
)
def test_refused(world: World, prepare: Any, error: type[Exception]) -> None:
    name = NAME
    prepare(world)
    before = world.store.versions_of(name) if name.lower() in world.store.secrets else []
    with pytest.raises(error):
        roll_back(world, name)
    after = world.store.versions_of(name) if name.lower() in world.store.secrets else []
    assert before == after and world.records(Action.ROLLED_BACK) == []


def test_reserved_secrets_are_never_rolled_back(world: World) -> None:
    first = world.store.set_value("audit-hmac-key", "k1", content_type=None, tags=POLICY.to_tags())
    tags = {**POLICY.to_tags(), "previous-version": first.version}
    world.store.set_value("audit-hmac-key", "k2", content_type=None, tags=tags)
    with pytest.raises(Conflict, match="own secret"):
        roll_back(world, "audit-hmac-key")
    assert len(world.versions("audit-hmac-key")) == 2 and world.log.events == []


def test_one_rotation_or_rollback_at_a_time(world: World) -> None:
    _, bad = rotated(world)
    world.states.replace(
        PARTITION, NAME,
        {"rotation_id": "f" * 32, "step": "promoting", "from_version": bad, "holder": "h", "attempt": 1,
         "lease_until": "2026-11-29T10:05:00.000000Z"},
        world.states.get(PARTITION, NAME).etag,  # type: ignore[union-attr]
    )  # fmt: skip
    with pytest.raises(Busy):
        roll_back(world)
    assert len(world.versions()) == 2


def test_no_intent_on_record_nothing_changes(world: World) -> None:
    old, _ = rotated(world)
    world.clock.advance(timedelta(hours=25))
    world.retire_due()
    world.log.available = False
    with pytest.raises(AuditUnavailable):
        roll_back(world)
    assert len(world.versions()) == 2
    assert not world.store.get_properties(NAME, old).enabled  # not even re-enabled
    world.log.available = True
    assert roll_back(world).restored_version == old  # and the lease was released


def _forge(world: World, **row: str) -> None:
    """A storage writer rewrites the progress row (no vault access): an 'interrupted rollback'."""
    stored = world.states.get(PARTITION, NAME)
    assert stored is not None
    state = {**stored.state, "step": "rolling_back", "rotation_id": "e" * 32, "holder": "h", "attempt": 1,
             "lease_until": "2000-01-01T00:00:00.000000Z", **row}  # fmt: skip
    world.states.replace(PARTITION, NAME, state, stored.etag)


def _rotated_twice(world: World) -> tuple[str, str, str]:
    first, second = rotated(world)
    third = world.rotate(force=True).new_version
    assert third is not None
    return first, second, third


@pytest.mark.parametrize("rollback_id", ["own", "the-current-rotations"])
def test_a_forged_rolling_back_row_never_chooses_what_is_restored(world: World, rollback_id: str) -> None:
    v1, v2, v3 = _rotated_twice(world)
    world.store.update_properties(NAME, v1, enabled=False)  # disabled on purpose (say: compromised)
    current_id = world.store.get_properties(NAME).tags[ROTATION_ID_TAG]
    _forge(
        world, from_version=v3, restore_version=v1,
        **({"rotation_id": current_id} if rollback_id != "own" else {}),
    )  # fmt: skip
    outcome = roll_back(world, from_version=v3)
    assert (outcome.rolled_back_from, outcome.restored_version) == (v3, v2)
    assert outcome.new_version == world.versions()[-1] and len(world.versions()) == 4
    assert world.store.get_value(NAME).value == world.store.get_value(NAME, v2).value
    assert not world.store.get_properties(NAME, v1).enabled
    assert outcome.rollback_id not in ("e" * 32, current_id)


def test_a_forged_row_cannot_roll_back_a_rollback(world: World) -> None:
    rotated(world)
    rolled = roll_back(world)
    current = world.store.get_properties(NAME)
    _forge(world, from_version=rolled.new_version, restore_version=current.tags["previous-version"])
    with pytest.raises(Conflict, match="itself a rollback"):
        roll_back(world)
    assert len(world.versions()) == 3 and world.store.get_value(NAME).value == "good-old-value"


def test_a_forged_row_cannot_reopen_a_finished_rollback(world: World) -> None:
    rotated(world)
    rolled = roll_back(world)
    _forge(
        world, rotation_id=rolled.rollback_id, from_version=rolled.rolled_back_from,
        restore_version=rolled.restored_version,
    )  # fmt: skip
    with pytest.raises(Conflict, match="itself a rollback"):
        roll_back(world)
    assert [e.result for e in world.records(Action.ROLLED_BACK)].count(Result.SUCCESS) == 1


def test_a_version_written_out_of_band_with_copied_tags_is_not_rolled_back(world: World) -> None:
    rotated(world)
    copied = dict(world.store.get_properties(NAME).tags)  # rotated-by, rotation-id, previous-version: old
    world.store.set_value(NAME, "out-of-band", content_type=None, tags=copied)
    with pytest.raises(Conflict, match="not written by this service"):
        roll_back(world)
    assert len(world.versions()) == 3 and world.records(Action.ROLLED_BACK) == []


def test_a_rollback_written_but_not_recorded_says_so_and_the_retry_records_it(world: World) -> None:
    old, bad = rotated(world)
    world.log.fails = lambda e: e.action == Action.ROLLED_BACK and e.result == Result.SUCCESS
    with pytest.raises(OutcomeNotRecorded) as raised:
        roll_back(world)
    assert not isinstance(raised.value, DependencyUnavailable)
    made = world.versions()[-1]
    assert len(world.versions()) == 3 and world.store.get_value(NAME).value == "good-old-value"
    assert raised.value.changed == {"version": made, "rollback_id": raised.value.changed["rollback_id"]}
    assert made in raised.value.change and "rolled back" in raised.value.change
    assert raised.value.reason == "audit_store unavailable"
    world.log.fails = lambda e: False
    outcome = roll_back(world)  # resumed: recorded, no second version
    assert (outcome.new_version, outcome.rollback_id) == (made, raised.value.changed["rollback_id"])
    assert (outcome.restored_version, outcome.rolled_back_from) == (old, bad)
    assert len(world.versions()) == 3
    assert [e.result for e in world.records(Action.ROLLED_BACK)] == [Result.INTENT, Result.SUCCESS]


class _ProcessDied(BaseException):
    """The worker dies mid-call (not an error the service could handle)."""


def test_a_rollback_that_dies_after_its_write_still_retires_both_old_versions(world: World) -> None:
    """Nothing resumes a rollback, and a rotation over its dead row schedules only the rollback's own
    version: the two versions it replaced are on the schedule before its write (found by review)."""
    good, bad = rotated(world)
    world.clock.advance(timedelta(hours=25))
    world.retire_all()
    assert not world.store.get_properties(NAME, good).enabled  # retired; the rollback re-enables it
    set_value = world.store.set_value

    def dies(name: str, value: str, **options: Any) -> Any:
        set_value(name, value, **options)
        raise _ProcessDied

    world.store.set_value = dies  # type: ignore[method-assign]
    with pytest.raises(_ProcessDied):
        roll_back(world)
    world.store.set_value = set_value  # type: ignore[method-assign]
    world.clock.advance(timedelta(minutes=20))  # its lease ran out
    forced = world.rotate(force=True)
    assert forced.status == "rotated"
    world.clock.advance(timedelta(days=3))
    world.retire_all()
    assert not world.store.get_properties(NAME, good).enabled
    assert not world.store.get_properties(NAME, bad).enabled
