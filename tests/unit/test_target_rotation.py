"""Rotation through a target rotator over in-memory fakes: the pending value is in Key Vault before the
target sees it, a crash at any step resumes with that same value, a refusal ends the rotation on record
without a retry, retirement tells the target to drop the old value under the write lease, and
``replace`` does both at once. A working credential is never cut off (a refusal after ``set``, a replace
that raced, a finish within another value's grace), and a forged row or a planted pending value never
makes the service write."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any

import pytest

from shared.domain.audit import Action, Result
from shared.domain.errors import Conflict, DependencyUnavailable, DomainError
from shared.domain.policy import RotationPolicy, Rotator, SecretKind
from shared.domain.secrets import SecretVersion
from shared.domain.targets import (
    PENDING_FOR_TAG,
    TargetRefused,
    TargetSecret,
    is_reserved,
    pending_secret_name,
    signing_key_name,
)
from shared.services.rotation import (
    LEASE,
    PARTITION,
    ROTATION_ID_TAG,
    Busy,
    Progress,
)
from tests.fakes import (
    FakeTarget,
    FixedClock,
    InMemorySecretStore,
    InMemoryStateStore,
    RecordingPublisher,
    TargetCrash,
)
from tests.world import World

NAME = "dispatch-webhook-key"
POLICY = RotationPolicy(
    SecretKind.API_KEY,
    timedelta(days=30),
    rotator=Rotator.WEBHOOK,
    target="https://dispatch.example.com/rotate",
    grace=timedelta(hours=2),
)


class CrashingStore(InMemorySecretStore):
    """The fake vault, where the process dies right after ``set_value`` of ``crash_on`` stored it."""

    def __init__(self, clock: FixedClock) -> None:
        super().__init__(clock)
        self.crash_on: str | None = None

    def set_value(self, name: str, value: str, **options: Any) -> SecretVersion:
        stored = super().set_value(name, value, **options)
        if self.crash_on is not None and name.lower() == self.crash_on.lower():
            self.crash_on = None
            raise TargetCrash(f"after set_value of {name}")
        return stored


def target_world(*, single: bool = False) -> World:
    """NAME, due, behind a webhook target (``single``: a target that holds one value at a time)."""
    world = World(name=NAME, store=CrashingStore)
    world.secret(tags=POLICY.to_tags(), age_days=31)
    world.rotators = {Rotator.WEBHOOK: FakeTarget("initial-value", single=single)}
    return world


@pytest.fixture
def world() -> World:
    return target_world()


def companion_versions(world: World) -> list[SecretVersion]:
    return world.store.list_versions(pending_secret_name(NAME))


def after_lease(world: World) -> None:
    world.clock.advance(LEASE + timedelta(seconds=1))


def test_the_pending_value_is_in_key_vault_before_the_target_sees_it_then_set_tested_promoted(
    world: World,
) -> None:
    seen_in_vault: list[bool] = []
    original_set = world.target().set

    def set_checking_vault(secret: Any, pending: str) -> None:
        stored = world.store.get_value(pending_secret_name(NAME))
        seen_in_vault.append(stored.value == pending and stored.properties.tags[PENDING_FOR_TAG] == NAME)
        original_set(secret, pending)

    world.target().set = set_checking_vault  # type: ignore[method-assign]
    outcome = world.rotate()
    assert outcome.status == "rotated" and seen_in_vault == [True]
    assert [step for step, _ in world.target().calls] == ["pending", "set", "test"]
    new = world.store.get_properties(NAME)
    assert world.current().startswith("pending:sk_") and new.tags["target-tag"] == "fake"
    assert new.tags[ROTATION_ID_TAG] == outcome.rotation_id
    assert world.target().accepted == {"initial-value", world.current()}  # old and new until finish
    # The companion's copy is disabled once promoted: the value is readable in one place only.
    assert [v.enabled for v in companion_versions(world)] == [False]
    everything = repr(world.log.events) + repr(world.publisher.sent)
    assert world.current() not in everything and "initial-value" not in everything


@pytest.mark.parametrize("step", ["pending-stored", "set", "test", "promoted"])
def test_a_crash_at_any_step_resumes_with_the_same_pending_value_and_one_new_version(
    world: World, step: str
) -> None:
    if step == "pending-stored":
        world.store.crash_on = pending_secret_name(NAME)
    elif step == "set":
        world.target().crash_after = "set"
    elif step == "test":
        world.target().fail["test"] = TargetCrash("test")
    else:
        world.store.crash_on = NAME
    with pytest.raises(TargetCrash):
        world.rotate()
    pending = world.store.get_value(pending_secret_name(NAME)).value
    after_lease(world)
    outcome = world.rotate()
    assert outcome.status == "rotated"
    assert len(world.versions()) == 2 and world.current() == pending
    assert world.target().accepted >= {pending}
    sets = [value for s, value in world.target().calls if s == "set"]
    assert set(sets) <= {pending}  # never another value: the one in the vault was resumed
    assert [r.result for r in world.records(Action.ROTATED)][-1] == Result.SUCCESS
    assert [v.enabled for v in companion_versions(world)] == [False]


def test_a_transient_target_failure_is_raised_for_the_queue_and_the_retry_resumes(world: World) -> None:
    world.target().fail["set"] = DependencyUnavailable("fake-target", "did not answer")
    with pytest.raises(DependencyUnavailable):
        world.rotate()
    [failed] = world.records(Action.ROTATION_FAILED)
    assert failed.details["step"] == "promote" and len(world.versions()) == 1
    pending = world.store.get_value(pending_secret_name(NAME)).value
    assert world.rotate().status == "rotated"  # the lease was released: the retry runs at once
    assert world.current() == pending


def test_a_refusal_is_recorded_ends_the_rotation_and_is_not_raised(world: World) -> None:
    world.target().fail["set"] = TargetRefused("set", "the consumer answered 400")
    outcome = world.rotate()
    assert (outcome.status, outcome.reason) == ("failed", "set: the consumer answered 400")
    assert len(world.versions()) == 1 and world.current() == "initial-value"
    [failed] = world.records(Action.ROTATION_FAILED)
    assert (failed.result, failed.details["step"], failed.details["error_class"]) == (
        Result.FAILURE,
        "set",
        "TargetRefused",
    )
    [notice] = world.publisher.sent
    assert notice.type == "SecretLifecycle.RotationFailed"
    stored = world.states.get(PARTITION, NAME)
    assert stored is not None
    progress = Progress.of(stored.state)
    assert (progress.step, progress.last_error) == ("idle", "TargetRefused")  # nothing to resume
    # The pending value stays enabled (the target might have taken it before refusing)...
    [refused] = companion_versions(world)
    refused_value = world.store.get_value(pending_secret_name(NAME)).value
    assert refused.enabled
    # ...and the next trigger, a new rotation, offers it first; the target does not accept it, so a new
    # value is made, set and promoted, and every pending copy is disabled.
    again = world.rotate()
    assert again.status == "rotated" and again.rotation_id != outcome.rotation_id
    assert world.current() != refused_value
    assert not any(v.enabled for v in companion_versions(world))


def test_a_companion_name_taken_by_another_secret_is_a_refusal_and_nothing_is_written(world: World) -> None:
    world.store.set_value(pending_secret_name(NAME), "someone-elses", content_type=None, tags={})
    outcome = world.rotate()
    assert outcome.status == "failed" and "not the pending companion" in outcome.reason
    assert world.store.get_value(pending_secret_name(NAME)).value == "someone-elses"
    assert world.target().calls == [] and len(world.versions()) == 1


def test_a_secret_whose_rotator_is_not_run_here_is_skipped(world: World) -> None:
    world.rotators = {}
    outcome = world.rotate()
    assert outcome.status == "skipped" and "webhook rotator is not available" in outcome.reason
    assert len(world.versions()) == 1


def test_retirement_tells_the_target_to_drop_the_old_value_after_the_grace(world: World) -> None:
    world.rotate()
    new = world.current()
    assert world.retire_due() == []  # the grace runs
    world.clock.advance(timedelta(hours=2, seconds=1))
    [old] = world.retire_due()
    assert ("finish", "initial-value") in world.target().calls
    assert world.target().accepted == {new}
    assert not world.store.get_properties(NAME, old).enabled
    stored = world.states.get(PARTITION, NAME)
    assert stored is not None and Progress.of(stored.state).step == "idle"  # the lease was released


def test_retirement_waits_while_another_write_holds_the_lease(world: World) -> None:
    world.rotate()
    world.clock.advance(timedelta(hours=3))
    stored = world.states.get(PARTITION, NAME)
    world.acquire("promoting", NAME, stored)  # a rotation in flight
    with pytest.raises(Busy):
        world.retire_due()
    assert [s for s, _ in world.target().calls].count("finish") == 0
    assert all(world.store.get_properties(NAME, v).enabled for v in world.versions())


def test_a_refused_finish_leaves_the_version_enabled_and_scheduled(world: World) -> None:
    world.rotate()
    world.clock.advance(timedelta(hours=3))
    world.target().fail["finish"] = DependencyUnavailable("fake-target", "did not answer")
    with pytest.raises(DependencyUnavailable):
        world.retire_due()
    assert all(world.store.get_properties(NAME, v).enabled for v in world.versions())
    assert len(world.retire_due()) == 1  # the next run finishes it


def test_replace_rotates_and_makes_the_old_value_unusable_at_once(world: World) -> None:
    world.clock.advance(timedelta(days=-25))  # not due: replace forces it
    outcome = world.replace()
    assert outcome.status == "rotated" and world.target().accepted == {world.current()}
    old = outcome.previous_version
    assert old is not None and world.store.get_properties(NAME, old).enabled  # the caller disables it


def test_replace_of_a_refused_rotation_raises_the_refusal(world: World) -> None:
    world.target().fail["set"] = TargetRefused("set", "the consumer answered 403")
    with pytest.raises(TargetRefused):
        world.replace()


def test_a_target_rotated_secret_is_never_rolled_back(world: World) -> None:
    world.rotate()
    with pytest.raises(Conflict, match="rotate it instead"):
        world.rollback()
    assert len(world.versions()) == 2


def test_companions_are_the_services_own_secrets_and_never_rotated(world: World) -> None:
    companion, key = pending_secret_name(NAME), signing_key_name("https://dispatch.example.com/rotate")
    assert is_reserved(companion, ()) and is_reserved(key.upper(), ()) and not is_reserved(NAME, ())
    # Even tagged as managed (by someone with write access), the sweep never requests them.
    world.clock.advance(timedelta(days=-40))
    world.store.set_value(companion, "v", content_type=None, tags=POLICY.to_tags())
    world.clock.advance(timedelta(days=40))
    report = world.sweep("c")
    assert [r.secret_name for r in world.requests.sent] == [NAME] and companion in str(report.violations)
    skipped = world.rotate(companion)
    assert skipped.status == "skipped"


def test_single_value_target_never_loses_the_credential_in_the_vault() -> None:
    """A single-user database: between set and promote only the pending value works; it is in the vault
    (the companion) all along, and the current version afterwards."""
    world = target_world(single=True)
    world.target().fail["test"] = TargetCrash("test")
    with pytest.raises(TargetCrash):
        world.rotate()
    vault_values = {world.current(), world.store.get_value(pending_secret_name(NAME)).value}
    assert world.target().accepted & vault_values
    after_lease(world)
    assert world.rotate().status == "rotated"
    assert world.target().accepted == {world.current()}


def _at(moment: datetime) -> str:
    return moment.isoformat()


def test_no_other_write_takes_over_a_dead_rotation_it_is_resumed_first() -> None:
    """A single-user rotation died after set: only its pending value works at the target. A retirement
    or a policy change must not take its lease over (its row would be lost, and the pending value with
    it); they wait until the rotation is resumed."""
    world = target_world(single=True)
    world.target().crash_after = "set"
    with pytest.raises(TargetCrash):
        world.rotate()
    after_lease(world)
    stored = world.states.get(PARTITION, NAME)
    with pytest.raises(Busy):
        world.acquire("updating_policy", NAME, stored)
    assert world.rotate().status == "rotated"
    assert world.target().accepted == {world.current()}


def test_a_fresh_rotation_offers_the_enabled_pending_value_first_whatever_happened_to_the_row() -> None:
    """A storage writer deletes the progress row of a rotation that died after set: the next rotation
    starts afresh, finds the pending value still enabled in the vault, and promotes that one (the target
    accepts it already) instead of making one the target cannot get."""
    world = target_world(single=True)
    world.target().crash_after = "set"
    with pytest.raises(TargetCrash):
        world.rotate()
    pending = world.store.get_value(pending_secret_name(NAME)).value
    stored = world.states.get(PARTITION, NAME)
    assert stored is not None
    world.states.delete(PARTITION, NAME, stored.etag)
    outcome = world.rotate()
    assert outcome.status == "rotated" and world.current() == pending
    assert world.target().accepted == {pending}


def test_a_pending_value_promoted_already_is_not_offered_again(world: World) -> None:
    """The companion's copy left enabled (a crash between promote and disabling it, then the row lost):
    a new rotation makes a new value instead of promoting the current one again."""
    world.store.crash_on = NAME
    with pytest.raises(TargetCrash):
        world.rotate()
    promoted = world.current()
    assert world.store.get_value(pending_secret_name(NAME)).value == promoted  # still enabled
    stored = world.states.get(PARTITION, NAME)
    assert stored is not None
    world.states.delete(PARTITION, NAME, stored.etag)
    assert world.rotate(force=True).status == "rotated"
    assert world.current() != promoted and len(world.versions()) == 3


def test_a_crash_before_the_rotated_event_is_sent_sends_it_on_retry(world: World) -> None:
    """Consumers (a single-user database's above all) learn from SecretRotated to reload: a process that
    dies before sending it must not lose it. Sent before the progress closes, it is sent again on retry
    (same event id, so consumers can drop the duplicate)."""
    sent: list[Any] = []
    crashed: list[bool] = []

    class DiesOnFirstSend(RecordingPublisher):
        def publish(self, notifications: Any) -> None:
            if not crashed:
                crashed.append(True)
                raise TargetCrash("before publish")
            sent.extend(notifications)

    world.publisher = DiesOnFirstSend()
    with pytest.raises(TargetCrash):
        world.rotate()
    after_lease(world)
    outcome = world.rotate()
    assert outcome.status == "rotated" and len(world.versions()) == 2
    assert [(n.type, n.id) for n in sent] == [("SecretLifecycle.SecretRotated", outcome.rotation_id)]


# -- what a review found: each failed before its fix -----------------------------------------------------


def _vault_values_that_work(world: World) -> set[str]:
    """Enabled values in the vault (current version, or enabled companion) the target accepts."""
    enabled = {world.current()}
    with contextlib.suppress(DomainError):
        enabled.add(world.store.get_value(pending_secret_name(NAME)).value)
    return enabled & world.target().accepted


# single-value target: a refusal after set disables the only working credential
def test_refusal_after_set_on_single_value_target_leaves_a_working_value_enabled() -> None:
    world = target_world(single=True)  # a single-user database role: set replaces the password
    world.target().fail["test"] = TargetRefused("test", "logs in as role x, not dispatch_app")
    outcome = world.rotate()
    assert outcome.status == "failed"
    # The target now takes only the pending value; the vault must still hold it enabled somewhere.
    assert _vault_values_that_work(world), (
        f"target accepts only {world.target().accepted}; vault current={world.current()!r}, companion "
        f"enabled={[v.enabled for v in companion_versions(world)]}"
    )


# replace(): finish uses the version replace made, not the vault's current one
class AlternatingTarget:
    """Two roles a/b take turns: set changes the other role's password, finish scrambles the retired
    role unless it is the current value's role (PostgresRotator's alternating semantics)."""

    def __init__(self, initial: str) -> None:
        role, pw = initial.split(":")
        self.passwords = {role: pw}

    def works(self, value: str) -> bool:
        role, pw = value.split(":")
        return self.passwords.get(role) == pw

    def pending(self, secret: TargetSecret, generated: str) -> str:
        role = secret.current.split(":")[0]
        return f"{'b' if role == 'a' else 'a'}:{generated}"

    def tags(self, secret: TargetSecret) -> dict[str, str]:
        return {}

    def set(self, secret: TargetSecret, pending: str) -> None:
        role, pw = pending.split(":")
        self.passwords[role] = pw

    def test(self, secret: TargetSecret, pending: str) -> None:
        if not self.works(pending):
            raise DependencyUnavailable("fake", "not yet")

    def finish(self, secret: TargetSecret, retired: str) -> None:
        old, current = retired.split(":", 1)[0], secret.current.split(":", 1)[0]
        if old != current:
            self.passwords[old] = "scrambled"


ALT = RotationPolicy(
    SecretKind.DATABASE_PASSWORD, timedelta(days=30), rotator=Rotator.POSTGRES_ALTERNATING,
    target="db-admin", grace=timedelta(hours=2),
)  # fmt: skip


class RacingStates(InMemoryStateStore):
    """Runs ``race`` once, just before the first read of an existing idle rotation row: in ``replace``,
    after its rotation closed and before it reads the progress for the finish."""

    def __init__(self) -> None:
        super().__init__()
        self.race: Any = None

    def get(self, partition: str, key: str) -> Any:
        stored = super().get(partition, key)
        if self.race is not None and partition == "rotation" and stored and stored.state["step"] == "idle":
            race, self.race = self.race, None
            race()
            stored = super().get(partition, key)
        return stored


def test_replace_never_finishes_against_a_value_that_is_no_longer_current() -> None:
    target = AlternatingTarget("a:pw0")
    world = World(name=NAME, rows=RacingStates, rotators={Rotator.POSTGRES_ALTERNATING: target})
    world.secret(value="a:pw0", tags=ALT.to_tags(), content_type="application/json", age_days=31)

    def concurrent_forced_rotation() -> None:  # e.g. a manual "force" request on another instance
        world.clock.advance(timedelta(seconds=5))
        assert world.rotate(force=True).status == "rotated"

    world.rows.race = concurrent_forced_rotation
    with pytest.raises(Conflict, match="changed again"):
        world.replace()
    current = world.current()
    assert target.works(current), f"current {current.split(':')[0]} cut off: {target.passwords}"


# a value planted in the pending companion is promoted by the service
def test_a_planted_pending_value_is_not_promoted(world: World) -> None:
    world.store.set_value(
        pending_secret_name(NAME), "chosen-by-someone-with-set", content_type="text/plain",
        tags={PENDING_FOR_TAG: NAME.lower()},
    )  # fmt: skip
    outcome = world.rotate()
    assert outcome.status == "rotated"
    assert world.current() != "chosen-by-someone-with-set"


# webhook finish ("keep only rotation <version>") drops a value still within its grace
class ContractTarget:
    """The documented webhook contract: set keeps the value by rotation id, finish keeps only that one."""

    def __init__(self, initial: str) -> None:
        self.values = {"seed": initial}

    def pending(self, secret: TargetSecret, generated: str) -> str:
        return generated

    def tags(self, secret: TargetSecret) -> dict[str, str]:
        return {}

    def set(self, secret: TargetSecret, pending: str) -> None:
        self.values[secret.rotation_id or ""] = pending

    def test(self, secret: TargetSecret, pending: str) -> None:
        assert pending in self.values.values()

    def finish(self, secret: TargetSecret, retired: str) -> None:
        if secret.rotation_id in self.values:
            self.values = {secret.rotation_id: self.values[secret.rotation_id]}


def test_webhook_finish_does_not_drop_a_previous_value_still_in_its_grace(world: World) -> None:
    target = ContractTarget("initial-value")
    world.rotators = {Rotator.WEBHOOK: target}
    assert world.rotate().status == "rotated"  # V1 (grace 2 h for V0)
    v1 = world.current()
    world.clock.advance(timedelta(hours=1))
    assert world.rotate(force=True).status == "rotated"  # V2: V1's grace runs until now + 2 h
    world.clock.advance(timedelta(hours=1, seconds=1))  # V0's grace is over, V1's is not
    assert world.retire_due() == []  # V0 waits for V1: the consumer's finish would drop both
    assert v1 in target.values.values(), "V1 dropped at the consumer an hour before its grace ends"
    world.clock.advance(timedelta(hours=1))
    assert len(world.retire_due()) == 2  # together, once V1's grace is over too
    assert list(target.values.values()) == [world.current()]


# a storage writer forges a "promoting" row: the service rotates a secret that is not due
def test_a_forged_promoting_row_does_not_make_the_service_write_a_version(world: World) -> None:
    assert world.rotate().status == "rotated"  # V1, not due for 30 days
    stored = world.states.get(PARTITION, NAME)
    assert stored is not None
    progress = Progress.of(stored.state)
    # The storage writer flips the idle row: from_version = the row's own new_version (the current one).
    forged = {
        **progress.state(),
        "step": "promoting",
        "from_version": progress.new_version,
        "rotation_id": "f" * 32,
        "lease_until": "2000-01-01T00:00:00.000000Z",
        "holder": "x",
    }
    world.states.replace(PARTITION, NAME, forged, stored.etag)
    world.clock.advance(timedelta(hours=1))
    before = len(world.versions())
    outcome = world.rotate(reason="resume")  # what the sweep's resume_stale requests
    assert len(world.versions()) == before, f"rotated by a forged row: {outcome}"
