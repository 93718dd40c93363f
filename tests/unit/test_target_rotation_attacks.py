"""Findings of a review of the target rotators, each a regression test: a forged progress row or a
planted pending value never makes the service write, a refusal after the target took the pending value
keeps it enabled, ``replace`` never finishes against a superseded value, a webhook's finish never drops a
value still in its grace, and a zero grace is a grace."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

import pytest

from shared.domain.errors import Conflict, DependencyUnavailable, DomainError
from shared.domain.policy import PolicyError, RotationPolicy, Rotator, SecretKind
from shared.domain.targets import PENDING_FOR_TAG, TargetRefused, TargetSecret, pending_secret_name
from tests.fakes import InMemoryStateStore
from tests.unit.test_target_rotation import NAME, companion_versions, target_world
from tests.unit.world import World


@pytest.fixture
def world() -> World:
    return target_world()


def _vault_values_that_work(world: World) -> set[str]:
    """Enabled values in the vault (current version, or enabled companion) the target accepts."""
    enabled = {world.current()}
    with contextlib.suppress(DomainError):
        enabled.add(world.store.get_value(pending_secret_name(NAME)).value)
    return enabled & world.target().accepted


# --- 1. single-value target: a refusal after set disables the only working credential -----------------
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


# --- 2. replace(): finish uses the version replace made, not the vault's current one -------------------
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


# --- 3. a value planted in the pending companion is promoted by the service -------------------------------
def test_a_planted_pending_value_is_not_promoted(world: World) -> None:
    world.store.set_value(
        pending_secret_name(NAME), "chosen-by-someone-with-set", content_type="text/plain",
        tags={PENDING_FOR_TAG: NAME.lower()},
    )  # fmt: skip
    outcome = world.rotate()
    assert outcome.status == "rotated"
    assert world.current() != "chosen-by-someone-with-set"


# --- 4. webhook finish ("keep only rotation <version>") drops a value still within its grace --------------
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


# --- 5. grace 0 is treated as the default 24 h in the alternating check -----------------------------------
def test_alternating_with_zero_grace_and_one_day_interval_is_valid() -> None:
    tags = RotationPolicy(
        SecretKind.DATABASE_PASSWORD, timedelta(days=1), rotator=Rotator.POSTGRES_ALTERNATING,
        target="db-admin", grace=timedelta(0),
    ).to_tags()  # fmt: skip
    try:
        RotationPolicy.from_tags(tags)
    except PolicyError as err:
        pytest.fail(f"grace 0 < 1 day refused: {err}")


# --- 6. a storage writer forges a "promoting" row: the service rotates a secret that is not due ----------
def test_a_forged_promoting_row_does_not_make_the_service_write_a_version(world: World) -> None:
    from shared.services.rotation import PARTITION, Progress

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
