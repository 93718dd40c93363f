"""Findings of a review of emergency revocation, each a regression test: a forged or rewound request row is
never executed (the tamper-evident trail must bear it out), a replacement that cannot be made never leaves
the request stuck with the compromised versions enabled, a change that was made is never answered as
"nothing was changed", identities compare as identities, and a break-glass that could not run at once
names the request it stored."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from shared.domain.audit import Action, Actor, ActorType, Result
from shared.domain.errors import DependencyUnavailable, InvalidTransition, NotPermitted, OutcomeNotRecorded
from shared.domain.revocation import Reason, Revocation, Severity, Status
from shared.services import revocation
from shared.services.revocation import InvalidRequest
from tests.unit.test_revocation import BOB, DAVE, NAME, request, revocation_world, v1, v2
from tests.unit.world import World


@pytest.fixture
def world() -> World:
    return revocation_world()


# F1: a storage writer alone makes the timer disable versions nobody requested or approved
def test_a_forged_executing_row_is_never_executed_by_the_timer(world: World) -> None:
    now = world.clock.now()
    forged = Revocation(
        id="f" * 32,
        secret_name=NAME,
        vault="fleet",
        reason=Reason.MANUAL_REQUEST,
        severity=Severity.LOW,
        justification="x",
        versions=(v2(world),),
        replace=False,
        status=Status.EXECUTING,
        requested_by="nobody",
        requested_at=now,
        expires_at=now,
        required_approvals=2,
        executed_by="nobody",
        executed_at=now - timedelta(hours=1),
    )
    world.states.create(revocation.PARTITION, forged.id, forged.to_state())
    revocation.expire_pending(world.revocations)  # the 5-minute timer, no human involved
    assert world.enabled()[v2(world)], "the current version was disabled on a forged row"


# F1b: a rewound (replayed) approved row is executed a second time
def test_a_replayed_approved_row_is_not_executed_again(world: World) -> None:
    requested = request(world, versions=[v1(world)])
    approved = revocation.approve(world.revocations, requested.id, BOB, None)
    snapshot = approved.to_state()
    revocation.execute(world.revocations, requested.id, DAVE)
    world.store.update_properties(NAME, v1(world), enabled=True)  # an operator re-enables it
    stored = world.states.get(revocation.PARTITION, requested.id)
    assert stored is not None
    world.states.replace(revocation.PARTITION, requested.id, snapshot, stored.etag)  # storage writer
    with pytest.raises(InvalidTransition, match="executed already"):
        revocation.execute(world.revocations, requested.id, DAVE)
    assert world.enabled()[v1(world)]


# F2: a replacement that can never be made leaves the request executing forever, nothing disabled
def test_an_impossible_replacement_ends_failed_and_still_disables(world: World) -> None:
    requested = request(world, replace=True, versions=[v1(world), v2(world)])
    revocation.approve(world.revocations, requested.id, BOB, None)
    # The responder disabled the leaked current version by hand first (portal): rotate skips, replace fails.
    world.store.update_properties(NAME, v2(world), enabled=False)
    done = revocation.execute(world.revocations, requested.id, DAVE)
    assert world.enabled()[v1(world)] is False, "v1 (named compromised) is still enabled"
    assert done.status == Status.FAILED and done.result is not None
    assert done.result.errors.get("replace") == "SecretDisabled" and done.result.new_version is None
    world.delete_secret(justification="x", actor=DAVE)  # nothing in flight any more


# F2b: crash after the replacement, a rotation before the retry: never finishes
def test_a_rotation_between_crash_and_retry_does_not_wedge_the_request(world: World) -> None:
    requested = request(world, replace=True)
    revocation.approve(world.revocations, requested.id, BOB, None)
    original = world.store.update_properties

    class Crash(BaseException):
        pass

    def dies(*a: Any, **k: Any) -> Any:
        raise Crash

    world.store.update_properties = dies  # type: ignore[method-assign]
    with pytest.raises(Crash):
        revocation.execute(world.revocations, requested.id, DAVE)
    world.store.update_properties = original  # type: ignore[method-assign]
    world.rotate(force=True)  # a manual rotation meanwhile
    world.clock.advance(revocation.EXECUTION_LEASE)
    revocation.expire_pending(world.revocations)
    done = revocation.get(world.states, requested.id)
    assert done.status in (Status.EXECUTED, Status.FAILED), f"still {done.status.value}"


# F2c: replace on an unmanaged secret is accepted, then can never execute
def test_replace_of_an_unmanaged_secret_is_a_400(world: World) -> None:
    world.store.set_value("plain-secret", "v", content_type=None, tags={})
    with pytest.raises(InvalidRequest, match="replace"):
        request(world, secret_name="plain-secret", replace=True)


# F3: 503 "nothing was changed" after the versions were disabled
def test_an_unrecorded_outcome_is_not_reported_as_nothing_changed(world: World) -> None:
    requested = request(world)
    revocation.approve(world.revocations, requested.id, BOB, None)
    seen = {"n": 0}

    def outcome_record_fails(e: Any) -> bool:  # the REVOKED success: the outcome, after disabling
        if e.action == Action.REVOKED and e.result == Result.SUCCESS:
            seen["n"] += 1
            return seen["n"] == 1
        return False

    world.log.fails = outcome_record_fails  # type: ignore[assignment,method-assign]
    with pytest.raises(Exception) as err:
        revocation.execute(world.revocations, requested.id, DAVE)
    assert not any(world.enabled().values())  # the change was made
    assert not isinstance(err.value, DependencyUnavailable)  # respond(): 503 "nothing was changed"
    assert isinstance(err.value, OutcomeNotRecorded)


def test_an_unrecorded_begin_is_not_reported_as_nothing_changed(world: World) -> None:
    requested = request(world)
    revocation.approve(world.revocations, requested.id, BOB, None)
    world.log.fails = lambda e: e.action == Action.REVOKED and e.result == Result.SUCCESS  # type: ignore
    with pytest.raises(Exception) as err:
        revocation.execute(world.revocations, requested.id, DAVE)
    assert revocation.get(world.states, requested.id).status == Status.EXECUTING  # stored; timer runs it
    assert isinstance(err.value, OutcomeNotRecorded)


def test_an_unrecorded_approval_is_not_reported_as_nothing_changed(world: World) -> None:
    requested = request(world)
    world.log.fails = lambda e: e.action == Action.REVOCATION_APPROVED and e.result == Result.SUCCESS  # type: ignore
    with pytest.raises(Exception) as err:
        revocation.approve(world.revocations, requested.id, BOB, None)
    assert revocation.get(world.states, requested.id).status == Status.APPROVED  # it was stored
    assert isinstance(err.value, OutcomeNotRecorded)


def test_closing_write_failing_after_disable_is_not_nothing_changed(world: World) -> None:
    requested = request(world)
    revocation.approve(world.revocations, requested.id, BOB, None)
    original = world.states.replace

    def flaky(partition: str, key: str, state: Any, etag: str) -> Any:
        if partition == revocation.PARTITION and '"status":"executed"' in str(state["document"]):
            raise DependencyUnavailable("table_storage", "HTTP 503")
        return original(partition, key, state, etag)

    world.states.replace = flaky  # type: ignore[method-assign]
    with pytest.raises(Exception) as err:
        revocation.execute(world.revocations, requested.id, DAVE)
    assert not any(world.enabled().values())
    assert isinstance(err.value, OutcomeNotRecorded)


# F4: identities compared byte for byte
@pytest.mark.parametrize("who", ["Alice", "ALICE", " alice", "alice "])
def test_the_requester_in_another_case_or_with_whitespace_cannot_approve(world: World, who: str) -> None:
    requested = request(world)
    with pytest.raises(NotPermitted):
        revocation.approve(world.revocations, requested.id, Actor(who, ActorType.USER), None)


def test_one_approver_in_two_cases_is_one_approval(world: World) -> None:
    requested = request(world, Severity.LOW)
    revocation.approve(world.revocations, requested.id, BOB, None)
    with pytest.raises(InvalidTransition, match="approved it already"):
        revocation.approve(world.revocations, requested.id, Actor("BOB", ActorType.USER), None)
    assert revocation.get(world.states, requested.id).status == Status.PENDING


# F5: a break-glass whose execution is refused (Busy) leaves a stored, executing request the caller never
# hears of; a retry makes a second break-glass
def test_a_refused_break_glass_leaves_nothing_behind_or_names_it(world: World) -> None:
    world.acquire("policy", NAME)  # a policy change holds the lease
    made = request(world, Severity.CRITICAL, break_glass=True)
    assert [r.id for r in revocation.list_requests(world.states)] == [made.id]
    assert made.status == Status.EXECUTING  # the timer finishes it once the lease is free
    world.clock.advance(revocation.EXECUTION_LEASE)
    assert revocation.expire_pending(world.revocations) == ([], [made.id])
    assert revocation.get(world.states, made.id).status == Status.EXECUTED


def test_a_row_rewound_to_executing_is_closed_with_the_recorded_outcome_not_executed_again(
    world: World,
) -> None:
    requested = request(world, versions=[v1(world)])
    revocation.approve(world.revocations, requested.id, BOB, None)
    done = revocation.execute(world.revocations, requested.id, DAVE)
    world.store.update_properties(NAME, v1(world), enabled=True)  # an operator re-enables it
    rewound = dataclasses.replace(done, status=Status.EXECUTING, result=None)
    stored = world.states.get(revocation.PARTITION, requested.id)
    assert stored is not None
    world.states.replace(revocation.PARTITION, requested.id, rewound.to_state(), stored.etag)
    world.clock.advance(revocation.EXECUTION_LEASE)
    assert revocation.expire_pending(world.revocations) == ([], [requested.id])
    closed = revocation.get(world.states, requested.id)
    assert closed.status == Status.EXECUTED and closed.result == done.result
    assert world.enabled()[v1(world)]  # not disabled again
