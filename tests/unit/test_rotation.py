"""Rotation of one secret over in-memory fakes: exactly one new version whatever crashes, repeats or races,
the audit's intent and outcome, the lease, retirement after the grace period, and what is never rotated."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.domain.audit import Action, Result
from shared.domain.errors import DependencyUnavailable, Forbidden
from shared.domain.policy import RotationPolicy, SecretKind
from shared.domain.rotation import RotationReason, RotationRequest
from shared.domain.secrets import SecretVersion
from shared.services.audit import AuditTrail, AuditUnavailable
from shared.services.rotation import (
    PARTITION,
    ROTATION_ID_TAG,
    NotManaged,
    made_by_service,
    schedule_key,
)
from shared.services.sweep import PolicyViolation
from tests.fakes import InMemoryAuditLog, InMemorySecretStore
from tests.world import API_KEY, World

DUE = 31  # days: older than the 30-day interval of API_KEY


def test_a_due_secret_gets_one_new_version_carrying_its_policy(world: World) -> None:
    world.secret(age_days=DUE)
    [old] = world.versions()
    outcome = world.rotate()
    assert outcome.status == "rotated"
    new = world.store.get_properties("dispatch-api-key")
    assert world.versions() == [old, new.version] and outcome.new_version == new.version
    assert RotationPolicy.from_tags(new.tags) == API_KEY
    assert new.tags[ROTATION_ID_TAG] == outcome.rotation_id and new.tags["previous-version"] == old
    assert new.expires == world.clock.now().replace(microsecond=0) + timedelta(days=60)
    assert world.store.get_value("dispatch-api-key").value.startswith("sk_")
    assert [(e.result, e.version) for e in world.records(Action.ROTATED)] == [
        (Result.INTENT, old),
        (Result.SUCCESS, new.version),
    ]
    [event] = world.publisher.sent
    assert (event.type, event.id, event.data["version"]) == (
        "SecretLifecycle.SecretRotated",
        outcome.rotation_id,
        new.version,
    )
    assert "initial-value" not in repr(world.log.events) + repr(world.publisher.sent)


def test_not_due_is_skipped_on_record_and_changes_nothing(world: World) -> None:
    world.secret(age_days=10)
    outcome = world.rotate()
    assert (outcome.status, len(world.versions())) == ("skipped", 1)
    assert outcome.reason.startswith("not due until")
    [skipped] = world.records(Action.ROTATION_SKIPPED)
    assert skipped.details["reason"] == outcome.reason


def test_five_duplicate_triggers_make_one_version(world: World) -> None:
    world.secret(age_days=DUE)
    statuses = [world.rotate().status for _ in range(5)]
    assert statuses == ["rotated", "skipped", "skipped", "skipped", "skipped"]
    assert len(world.versions()) == 2


def test_force_rotates_a_secret_not_due(world: World) -> None:
    # (A dry run is the plan's, which writes nothing: catalog.plan_rotation, tests/unit/test_catalog.py.)
    world.secret(age_days=1)
    assert world.rotate().status == "skipped"
    assert world.rotate(force=True).status == "rotated"
    assert len(world.versions()) == 2


class CrashesOnce(InMemorySecretStore):
    """A vault whose ``set_value`` stores the version and then the process dies (``after``) or dies
    before it reaches the vault."""

    def __init__(self, world: World, after: bool) -> None:
        self.__dict__ = world.store.__dict__
        self.after, self.crashed = after, False

    def set_value(self, name: str, value: str, **kwargs: Any) -> SecretVersion:
        if not self.crashed:
            self.crashed = True
            if self.after:
                super().set_value(name, value, **kwargs)
            raise DependencyUnavailable("key_vault", "connection reset")
        return super().set_value(name, value, **kwargs)


@pytest.mark.parametrize("after", [False, True], ids=["before-the-write", "after-the-write"])
def test_a_crash_at_promotion_then_a_retry_leaves_exactly_one_new_version(world: World, after: bool) -> None:
    world.secret(age_days=DUE)
    world.store = CrashesOnce(world, after)
    with pytest.raises(DependencyUnavailable):
        world.rotate()
    [failed] = world.records(Action.ROTATION_FAILED)
    assert (failed.details["step"], failed.details["error_class"], failed.details["attempt"]) == (
        "promote",
        "DependencyUnavailable",
        1,
    )
    assert [n.type for n in world.publisher.sent] == ["SecretLifecycle.RotationFailed"]
    retried = world.rotate()  # the queue's retry: the lease was released on failure
    assert retried.status == "rotated"
    assert len(world.versions()) == 2
    assert world.store.get_properties("dispatch-api-key").tags[ROTATION_ID_TAG] == retried.rotation_id
    assert world.rotate().status == "skipped"


def promoting(world: World, rotation_id: str, *, holder: str, lease_until: str) -> None:
    """The progress row of a rotation that holds the lease, promoting from the current version."""
    row = {"rotation_id": rotation_id, "step": "promoting", "from_version": world.versions()[0],
           "holder": holder, "lease_until": lease_until, "attempt": 1}  # fmt: skip
    world.states.create(PARTITION, world.name, row)


def test_a_crashed_holder_blocks_only_until_its_lease_expires(world: World) -> None:
    world.secret(age_days=DUE)
    promoting(world, "r1", holder="dead", lease_until="2026-11-29T10:04:00.000000Z")
    assert world.rotate().status == "in_progress"
    world.clock.advance(timedelta(minutes=5))
    outcome = world.rotate()
    assert (outcome.status, outcome.rotation_id) == ("rotated", "r1")  # the same rotation, resumed
    assert len(world.versions()) == 2


def test_racing_triggers_make_one_version(world: World) -> None:
    world.secret(age_days=DUE)
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def trigger() -> None:
        barrier.wait()
        outcomes.append(world.rotate().status)

    threads = [threading.Thread(target=trigger) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert outcomes.count("rotated") == 1, outcomes
    assert len(world.versions()) == 2


def test_no_intent_on_record_no_new_version(world: World) -> None:
    world.secret(age_days=DUE)
    world.log.available = False
    with pytest.raises(AuditUnavailable):
        world.rotate()
    assert len(world.versions()) == 1


@pytest.mark.parametrize(
    ("prepare", "reason"),
    [
        (lambda w: w.secret("audit-hmac-key", age_days=DUE), "the service's own secret is never rotated"),
        (lambda w: w.store.add_certificate("tls-cert", **API_KEY.to_tags()), "certificate-backed"),
    ],
)
def test_never_rotated(world: World, prepare: Callable[[World], None], reason: str) -> None:
    prepare(world)
    name = "tls-cert" if "certificate" in reason else "audit-hmac-key"
    before = world.versions(name)
    outcome = world.rotate(name, force=True)
    assert outcome.status == "skipped" and outcome.reason.startswith(reason)
    assert world.versions(name) == before


def test_unmanaged_is_refused_naming_the_tag(world: World) -> None:
    world.store.set_value("legacy", "x", content_type=None, tags={"owner": "ops"})
    with pytest.raises(NotManaged) as err:
        world.rotate("legacy", force=True)
    assert err.value.tag == "managed-by"


def test_an_invalid_policy_is_a_violation_once_per_version(world: World) -> None:
    world.store.set_value(
        "bad", "x", content_type=None, tags={**API_KEY.to_tags(), "rotation-interval-days": "soon"}
    )
    for _ in range(3):
        assert world.rotate("bad").status == "skipped"
    [violation] = world.records(Action.POLICY_VIOLATION)
    assert violation.details["tag"] == "rotation-interval-days"
    assert len(world.versions("bad")) == 1


def test_the_previous_version_is_retired_after_its_grace(world: World) -> None:
    world.secret(age_days=DUE)
    [old] = world.versions()
    world.rotate()
    world.clock.advance(timedelta(hours=23))
    assert world.retire_due() == []
    world.clock.advance(timedelta(hours=1))
    assert world.retire_due() == [old]
    assert not world.store.get_properties("dispatch-api-key", old).enabled
    assert world.store.get_properties("dispatch-api-key").enabled
    assert [e.result for e in world.records(Action.VERSION_RETIRED)] == [Result.INTENT, Result.SUCCESS]
    assert world.retire_due() == []


def test_encryption_keys_keep_previous_versions_enabled(world: World) -> None:
    keys = RotationPolicy(SecretKind.ENCRYPTION_KEY, timedelta(days=30))
    world.secret("telemetry-key", tags=keys.to_tags(), age_days=DUE)
    [old] = world.versions("telemetry-key")
    world.rotate("telemetry-key")
    world.clock.advance(timedelta(days=365))
    assert world.retire_due("telemetry-key") == []
    assert world.store.get_properties("telemetry-key", old).enabled


def test_due_because_the_current_version_nears_expiry(world: World) -> None:
    world.clock.advance(timedelta(days=-5))
    world.store.set_value(
        "dispatch-api-key",
        "v",
        content_type="text/plain",
        tags=API_KEY.to_tags(),
        expires=world.clock.now() + timedelta(days=32),
    )
    world.clock.advance(timedelta(days=5))
    assert world.rotate().status == "rotated"


def request(name: str = "dispatch-api-key") -> RotationRequest:
    return RotationRequest(
        secret_name=name, reason=RotationReason.DUE, requested_at=datetime(2026, 11, 29, tzinfo=UTC),
        correlation_id="sweep-1",
    )  # fmt: skip


def test_a_queued_request_for_a_gone_or_unmanaged_secret_is_consumed_on_record(world: World) -> None:
    world.store.set_value("legacy", "x", content_type=None, tags={})
    for name in ("nothing-here", "legacy"):
        outcome = world.rotate_requested(request(name))
        assert outcome.status == "skipped"
    assert [e.secret_name for e in world.records(Action.ROTATION_SKIPPED)] == ["nothing-here", "legacy"]


def test_a_transient_failure_is_raised_for_the_queue_and_the_poison_queue_records_the_end(
    world: World,
) -> None:
    world.secret(age_days=DUE)
    world.store.available = False
    with pytest.raises(DependencyUnavailable):
        world.rotate_requested(request())
    world.gave_up(request(), 5)
    [given_up] = [e for e in world.records(Action.ROTATION_FAILED) if "gave_up_after" in e.details]
    assert (given_up.secret_name, given_up.details["gave_up_after"]) == ("dispatch-api-key", 5)


def test_sweep_helpers_record_violations_once_and_retire_every_secret(world: World) -> None:
    violation = PolicyViolation("bad", "secret-kind", "'ssh' is not a kind", world.clock.now())
    assert world.record_violations([violation, violation], "sweep-1") == 1
    assert world.record_violations([violation], "sweep-2") == 0
    assert len(world.records(Action.POLICY_VIOLATION)) == 1
    world.secret("one", age_days=DUE)
    world.secret("two", age_days=DUE)
    world.rotate("one")
    world.rotate("two")
    world.clock.advance(timedelta(hours=25))
    retired, failed = world.retire_all()
    assert sorted(name for name, _ in retired) == ["one", "two"] and failed == []
    assert world.retire_all() == ([], [])


# -- found in review: each of these went wrong before the fix --------------------------------------------


class RotatesUnderneath(InMemorySecretStore):
    """A vault read that returns the current version, while another trigger then rotates the secret
    completely before this caller goes on (it acts on a version that is no longer current)."""

    def __init__(self, world: World) -> None:
        self.__dict__ = world.store.__dict__
        self.world, self.raced = world, False

    def get_properties(self, name: str, version: str | None = None) -> SecretVersion:
        seen = super().get_properties(name, version)
        if not self.raced:
            self.raced = True
            assert self.world.rotate(name).status == "rotated"  # the world's store is this one
        return seen


def test_a_trigger_that_read_a_stale_version_does_not_rotate_again(world: World) -> None:
    world.secret(age_days=DUE)
    world.store = RotatesUnderneath(world)
    outcome = world.rotate()  # its lease loses to the rotation that happened: decided again, not due now
    assert (outcome.status, outcome.reason.startswith("not due")) == ("skipped", True)
    assert len(world.versions()) == 2


class RetiresDuringPromotion(InMemorySecretStore):
    """The sweep retires a previous version while this secret is being promoted."""

    def __init__(self, world: World) -> None:
        self.__dict__ = world.store.__dict__
        self.world, self.retired = world, False

    def set_value(self, name: str, value: str, **kwargs: Any) -> SecretVersion:
        if not self.retired:
            self.retired = True
            self.world.retire_all()  # the world's store is this one
        return super().set_value(name, value, **kwargs)


def test_retiring_while_a_rotation_promotes_does_not_strand_it(world: World) -> None:
    world.secret(age_days=DUE)
    world.rotate()
    world.clock.advance(timedelta(days=31))  # due again, and the first previous version's grace is over
    world.store = RetiresDuringPromotion(world)
    outcome = world.rotate()
    assert outcome.status == "rotated"
    assert len(world.versions()) == 3
    assert [e.result for e in world.records(Action.ROTATED)].count(Result.SUCCESS) == 2
    assert len(world.records(Action.VERSION_RETIRED)) == 2  # intent, success


def test_a_forged_retirement_schedule_disables_nothing_it_should_not(world: World) -> None:
    world.secret(age_days=DUE)
    world.secret("audit-hmac-key")
    [current] = world.versions()
    [mac_key] = world.versions("audit-hmac-key")
    for name, version in (("dispatch-api-key", current), ("audit-hmac-key", mac_key)):
        schedule = {"versions": f'[["{version}", "2000-01-01T00:00:00.000000Z"]]'}
        world.states.create(PARTITION, schedule_key(name), schedule)
    world.states.create(PARTITION, schedule_key("other"), {"versions": "not json"})
    retired, failed = world.retire_all()
    assert (retired, failed) == ([], [])  # the unreadable schedule of "other" is ignored, not fatal
    assert world.store.get_properties("dispatch-api-key", current).enabled
    assert world.store.get_properties("audit-hmac-key", mac_key).enabled


def test_a_lease_far_in_the_future_is_not_honoured(world: World) -> None:
    world.secret(age_days=DUE)
    promoting(world, "r9", holder="forged", lease_until="2999-01-01T00:00:00.000000Z")
    assert world.rotate().status == "rotated"
    assert len(world.versions()) == 2


class SuccessNotRecorded(InMemoryAuditLog):
    """The audit store fails exactly when the success record of a promotion is written."""

    def append(self, events: Any) -> Any:
        if any(e.action == Action.ROTATED and e.result == Result.SUCCESS for e in events) and not self.failed:
            self.failed = True
            raise DependencyUnavailable("audit_store", "timeout")
        return super().append(events)


def test_a_rotation_whose_success_was_not_recorded_is_finished_by_the_retry_not_reported_failed(
    world: World,
) -> None:
    world.secret(age_days=DUE)
    log = SuccessNotRecorded(world.log.keys)
    log.failed = False
    world.log, world.trail = log, AuditTrail(log, world.clock, "fleet")
    with pytest.raises(DependencyUnavailable):
        world.rotate()
    assert world.records(Action.ROTATION_FAILED) == [] and world.publisher.sent == []
    retried = world.rotate()
    assert retried.status == "rotated"
    assert len(world.versions()) == 2
    assert [e.result for e in world.records(Action.ROTATED)] == [Result.INTENT, Result.SUCCESS]
    assert [n.type for n in world.publisher.sent] == ["SecretLifecycle.SecretRotated"]


class RefusesOne(InMemorySecretStore):
    def __init__(self, world: World, name: str) -> None:
        self.__dict__ = world.store.__dict__
        self.refused = name

    def list_versions(self, name: str) -> list[SecretVersion]:
        if name == self.refused:
            raise Forbidden("key_vault: HTTP 403 ForbiddenByRbac")
        return super().list_versions(name)


def test_one_secret_failing_retirement_is_recorded_and_the_others_go_on(world: World) -> None:
    for name in ("one", "two"):
        world.secret(name, age_days=DUE)
        world.rotate(name)
    world.clock.advance(timedelta(hours=25))
    world.store = RefusesOne(world, "one")
    retired, failed = world.retire_all()
    assert ([n for n, _ in retired], failed) == (["two"], ["one"])
    [failure] = [e for e in world.records(Action.VERSION_RETIRED) if e.result == Result.FAILURE]
    assert (failure.secret_name, failure.details["error_class"]) == ("one", "Forbidden")


class ProgressDeletedAfterPromotion(InMemorySecretStore):
    """A storage writer deletes the secret's progress row right after the new version is made."""

    def __init__(self, world: World) -> None:
        self.__dict__ = world.store.__dict__
        self.world = world

    def set_value(self, name: str, value: str, **kwargs: Any) -> SecretVersion:
        made = super().set_value(name, value, **kwargs)
        self.world.states.rows.pop((PARTITION, name.lower()), None)
        return made


def test_a_deleted_progress_row_never_leads_to_a_second_version(world: World) -> None:
    world.secret(age_days=DUE)
    world.store = ProgressDeletedAfterPromotion(world)
    assert world.rotate().status == "rotated"  # the progress is gone, the version made and on record
    assert len(world.versions()) == 2
    assert world.records(Action.ROTATION_FAILED) == []
    for _ in range(5):  # the queue's retries and duplicates: the new version is current and not due
        assert world.rotate().status == "skipped"
    assert len(world.versions()) == 2


# -- manual requests: force, the caller's rotation id, the shared lease ------------------------------------


def manual(rotation_id: str = "c0ffee" + "0" * 26, name: str = "dispatch-api-key") -> RotationRequest:
    return RotationRequest(
        secret_name=name, reason=RotationReason.MANUAL, requested_at=datetime(2026, 11, 29, tzinfo=UTC),
        correlation_id="http-1", force=True, rotation_id=rotation_id,
    )  # fmt: skip


def test_a_forced_request_delivered_five_times_makes_one_version_with_its_id(world: World) -> None:
    world.secret(age_days=1)  # not due: only force rotates it
    outcomes = [world.rotate_requested(manual()) for _ in range(5)]
    assert [o.status for o in outcomes] == ["rotated"] + ["skipped"] * 4
    assert all(o.reason.startswith("already done") for o in outcomes[1:])
    assert len(world.versions()) == 2
    current = world.store.get_properties("dispatch-api-key")
    assert current.tags[ROTATION_ID_TAG] == manual().rotation_id == outcomes[0].rotation_id
    assert made_by_service(current)


def test_a_forced_request_redelivered_after_another_rotation_is_still_done(world: World) -> None:
    world.secret(age_days=1)
    assert world.rotate_requested(manual()).status == "rotated"
    world.clock.advance(timedelta(days=31))
    assert world.rotate().status == "rotated"  # the sweep's rotation supersedes it
    assert world.rotate_requested(manual()).status == "skipped"  # found among the versions: no third
    assert len(world.versions()) == 3


def test_without_force_a_manual_request_still_checks_the_due_date(world: World) -> None:
    world.secret(age_days=1)
    request = RotationRequest(
        secret_name="dispatch-api-key", reason=RotationReason.MANUAL, requested_at=world.clock.now(),
        correlation_id="http-2", rotation_id="d" * 32,
    )  # fmt: skip
    outcome = world.rotate_requested(request)
    assert outcome.status == "skipped" and outcome.reason.startswith("not due")


def test_any_live_lease_blocks_a_rotation_and_a_stale_one_of_another_kind_is_taken_over(world: World) -> None:
    world.secret(age_days=DUE)
    [old] = world.versions()
    world.states.create(
        PARTITION, "dispatch-api-key",
        {"rotation_id": "e" * 32, "step": "rolling_back", "from_version": old, "restore_version": "x",
         "holder": "h", "lease_until": "2026-11-29T10:05:00.000000Z", "attempt": 1},
    )  # fmt: skip
    assert world.rotate().status == "in_progress"
    world.clock.advance(timedelta(minutes=6))
    outcome = world.rotate()
    assert outcome.status == "rotated" and outcome.rotation_id != "e" * 32
    assert "restore_version" not in world.states.get(PARTITION, "dispatch-api-key").state  # type: ignore[union-attr]


def test_made_by_service_tells_service_versions_from_out_of_band_ones(world: World) -> None:
    world.secret(age_days=DUE)
    assert not made_by_service(world.store.get_properties("dispatch-api-key"))
    world.rotate()
    assert made_by_service(world.store.get_properties("dispatch-api-key"))
    forged = world.store.set_value(
        "dispatch-api-key",
        "x",
        content_type=None,
        tags={**API_KEY.to_tags(), "rotated-by": "secret-lifecycle"},
    )
    assert not made_by_service(forged)  # no rotation id
