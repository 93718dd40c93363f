"""Emergency revocation over in-memory fakes: the four-eyes lifecycle for each severity, self-approval and
duplicate approvers refused, expiry, execute once (crash mid-way finished by a retry), break-glass and its
review, replace first, concurrent approvals, and a revoked version that no rollback or retirement brings
back; a replacement that cannot be made never leaves the request stuck, and a change that was made is
never answered as "nothing was changed"."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from shared.domain.audit import Action, Actor, ActorType, Result
from shared.domain.errors import (
    Conflict,
    DependencyUnavailable,
    InvalidTransition,
    NotFound,
    NotPermitted,
    OutcomeNotRecorded,
)
from shared.domain.policy import RotationPolicy, SecretKind
from shared.domain.revocation import AlreadyExecuted, Reason, Revocation, Severity, Status
from shared.domain.secrets import SecretVersion
from shared.domain.state import LEASE
from shared.services import revocation, rotation
from shared.services.audit import AuditUnavailable
from shared.services.revocation import InvalidRequest, NewRequest
from tests.world import World

NAME = "dispatch-api-key"
POLICY = RotationPolicy(SecretKind.API_KEY, timedelta(days=30), grace=timedelta(hours=1))
ALICE, BOB, CAROL, DAVE = (Actor(n, ActorType.USER) for n in ("alice", "bob", "carol", "dave"))


class Crash(BaseException):
    """The process dies here."""


def revocation_world() -> World:
    """NAME with two enabled versions, made two days and one day ago."""
    world = World(name=NAME)
    world.secret(NAME, "value-one", tags=POLICY.to_tags(), age_days=2)
    world.secret(NAME, "value-two", tags=POLICY.to_tags(), age_days=1)
    return world


@pytest.fixture
def world() -> World:
    return revocation_world()


def v1(world: World) -> str:
    return world.versions(NAME)[0]


def v2(world: World) -> str:
    return world.versions(NAME)[1]


def request(
    world: World, severity: Severity = Severity.HIGH, actor: Actor = ALICE, **changes: Any
) -> Revocation:
    fields: dict[str, Any] = {
        "secret_name": NAME, "reason": Reason.COMPROMISE_SUSPECTED, "severity": severity,
        "justification": "key seen in a public paste", **changes,
    }  # fmt: skip
    return revocation.request(world.revocations, NewRequest(**fields), actor)


@pytest.mark.parametrize(
    ("severity", "approvers"),
    [(Severity.LOW, 2), (Severity.MEDIUM, 2), (Severity.HIGH, 1), (Severity.CRITICAL, 1)],
)
def test_the_lifecycle_for_each_severity(world: World, severity: Severity, approvers: int) -> None:
    requested = request(world, severity)
    assert (requested.status, requested.required_approvals) == (Status.PENDING, approvers)
    assert set(requested.versions) == {v1(world), v2(world)}  # every enabled version
    decided = requested
    for approver in (BOB, CAROL)[:approvers]:
        with pytest.raises(InvalidTransition, match="cannot be executed"):
            revocation.execute(world.revocations, requested.id, DAVE)  # not approved yet
        decided = revocation.approve(world.revocations, requested.id, approver, "confirmed")
    assert decided.status == Status.APPROVED
    executed = revocation.execute(world.revocations, requested.id, DAVE)
    assert executed.status == Status.EXECUTED and executed.executed_by == "dave"
    assert executed.result is not None and set(executed.result.disabled_versions) == set(requested.versions)
    assert world.enabled() == {v1(world): False, v2(world): False}
    [sent] = world.publisher.sent
    assert (sent.type, sent.id, sent.data["status"]) == (
        "SecretLifecycle.SecretRevoked",
        requested.id,
        "executed",
    )
    assert [e.result for e in world.records(Action.REVOKED)] == [Result.INTENT, Result.SUCCESS]
    assert "value-one" not in repr(world.log.events) + repr(world.publisher.sent)


def test_nobody_approves_their_own_request_and_nobody_approves_twice(world: World) -> None:
    requested = request(world, Severity.LOW)
    with pytest.raises(NotPermitted):  # whatever roles alice holds: the service compares identities
        revocation.approve(world.revocations, requested.id, ALICE, None)
    revocation.approve(world.revocations, requested.id, BOB, None)
    with pytest.raises(InvalidTransition, match="approved it already"):
        revocation.approve(world.revocations, requested.id, BOB, None)
    assert revocation.get(world.states, requested.id).status == Status.PENDING
    with pytest.raises(NotPermitted):
        revocation.reject(world.revocations, requested.id, ALICE, "changed my mind")
    with pytest.raises(NotPermitted):
        revocation.cancel(world.revocations, requested.id, BOB)
    assert revocation.cancel(world.revocations, requested.id, ALICE).status == Status.CANCELLED
    with pytest.raises(InvalidTransition):
        revocation.approve(world.revocations, requested.id, CAROL, None)


def test_a_pending_request_expires(world: World) -> None:
    requested = request(world, Severity.LOW)
    world.clock.advance(timedelta(hours=24))
    with pytest.raises(InvalidTransition, match="expired"):
        revocation.approve(world.revocations, requested.id, BOB, None)
    assert revocation.expire_pending(world.revocations) == ([requested.id], [])
    assert revocation.get(world.states, requested.id).status == Status.EXPIRED
    assert [e.result for e in world.records(Action.REVOCATION_EXPIRED)] == [Result.INTENT, Result.SUCCESS]
    with pytest.raises(InvalidTransition):
        revocation.execute(world.revocations, requested.id, DAVE)
    assert revocation.expire_pending(world.revocations) == ([], [])


def test_execute_runs_once_and_answers_the_stored_result_afterwards(world: World) -> None:
    requested = request(world)
    revocation.approve(world.revocations, requested.id, BOB, None)
    executed = revocation.execute(world.revocations, requested.id, DAVE)
    with pytest.raises(AlreadyExecuted) as err:
        revocation.execute(world.revocations, requested.id, CAROL)
    assert err.value.revocation.result == executed.result
    assert len(world.publisher.sent) == 1


def test_a_crash_mid_execution_is_finished_by_a_retry_once_the_lease_ran_out(world: World) -> None:
    requested = request(world)
    revocation.approve(world.revocations, requested.id, BOB, None)
    original = world.store.update_properties
    calls = {"n": 0}

    def dies_on_the_second(name: str, version: str, **changes: Any) -> SecretVersion:
        calls["n"] += 1
        if calls["n"] == 2:
            raise Crash
        return original(name, version, **changes)

    world.store.update_properties = dies_on_the_second  # type: ignore[method-assign]
    with pytest.raises(Crash):
        revocation.execute(world.revocations, requested.id, DAVE)
    world.store.update_properties = original  # type: ignore[method-assign]
    assert revocation.get(world.states, requested.id).status == Status.EXECUTING
    with pytest.raises(InvalidTransition, match="being executed"):
        revocation.execute(world.revocations, requested.id, CAROL)
    world.clock.advance(LEASE)
    assert revocation.expire_pending(world.revocations) == ([], [requested.id])  # the timer finishes it
    done = revocation.get(world.states, requested.id)
    assert done.status == Status.EXECUTED and all(not enabled for enabled in world.enabled().values())


def test_break_glass_executes_at_once_and_waits_for_a_review_by_someone_else(world: World) -> None:
    with pytest.raises(InvalidRequest, match="break_glass"):
        request(world, Severity.HIGH, break_glass=True)
    done = request(world, Severity.CRITICAL, break_glass=True)
    assert (done.status, done.review_required, done.approvals) == (Status.EXECUTED, True, ())
    assert [e.result for e in world.records(Action.BREAK_GLASS)] == [Result.INTENT, Result.SUCCESS]
    with pytest.raises(NotPermitted):
        revocation.review(world.revocations, done.id, ALICE, "fine")
    reviewed = revocation.review(world.revocations, done.id, BOB, "justified: the paste was real")
    assert (reviewed.review_required, reviewed.review and reviewed.review.by) == (False, "bob")
    with pytest.raises(InvalidTransition):
        revocation.review(world.revocations, done.id, CAROL, "again")


def test_replace_rotates_first_and_keeps_the_new_version_enabled(world: World) -> None:
    requested = request(world, replace=True)
    revocation.approve(world.revocations, requested.id, BOB, None)
    executed = revocation.execute(world.revocations, requested.id, DAVE)
    assert executed.result is not None and executed.result.new_version is not None
    current = world.store.get_properties(NAME)
    assert current.version == executed.result.new_version and current.enabled
    assert current.tags[rotation.ROTATION_ID_TAG] == requested.id  # a retry finds it: no second one
    assert world.enabled() == {v1(world): False, v2(world): False, current.version: True}


def test_a_revoked_version_is_never_brought_back(world: World) -> None:
    """Rotation retired v1 (it carries ``retired-by``); the revocation strips it, so a rollback cannot
    re-enable it; a later retirement leaves it as it is."""
    world.store.update_properties(
        NAME,
        v1(world),
        tags={**world.store.get_properties(NAME, v1(world)).tags, rotation.RETIRED_BY_TAG: "x"},
    )
    requested = request(world, versions=[v1(world)])
    revocation.approve(world.revocations, requested.id, BOB, None)
    revocation.execute(world.revocations, requested.id, DAVE)
    assert rotation.RETIRED_BY_TAG not in world.store.get_properties(NAME, v1(world)).tags
    assert world.enabled()[v2(world)]  # only the chosen version


def test_bad_requests(world: World) -> None:
    with pytest.raises(InvalidRequest, match="versions"):
        request(world, versions=["0" * 32])
    with pytest.raises(NotFound):
        request(world, secret_name="no-such-secret")
    with pytest.raises(Conflict):
        request(world, secret_name="audit-hmac-key")
    with pytest.raises(NotFound):
        revocation.get(world.states, "not-an-id")
    assert world.states.list(revocation.PARTITION) == {}


def test_nothing_is_stored_when_the_audit_is_down(world: World) -> None:
    world.log.fails = lambda event: True  # type: ignore[assignment,misc]
    with pytest.raises(AuditUnavailable):
        request(world)
    assert world.states.list(revocation.PARTITION) == {}


def test_a_row_this_service_did_not_write_is_never_acted_on(world: World) -> None:
    world.states.create(revocation.PARTITION, "a" * 32, {"document": '{"status": "approved"}'})
    with pytest.raises(NotFound):
        revocation.execute(world.revocations, "a" * 32, DAVE)
    assert revocation.list_requests(world.states) == []


def _race(workers: int, work: Callable[[int], Any]) -> list[Any]:
    barrier = threading.Barrier(workers)
    outcomes: list[Any] = [None] * workers

    def run(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = work(i)
        except Exception as err:  # the outcome is what is asserted
            outcomes[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_twenty_concurrent_approvals_and_executions_make_exactly_the_right_transitions(world: World) -> None:
    requested = request(world, Severity.LOW)  # two approvals
    approvers = [Actor(f"approver-{i}", ActorType.USER) for i in range(20)]
    outcomes = _race(20, lambda i: revocation.approve(world.revocations, requested.id, approvers[i], None))
    wins = [o for o in outcomes if not isinstance(o, Exception)]
    assert all(isinstance(o, (Conflict, InvalidTransition)) for o in outcomes if isinstance(o, Exception))
    stored = revocation.get(world.states, requested.id)
    assert stored.status == Status.APPROVED and len(stored.approvals) == 2 and len(wins) == 2
    outcomes = _race(20, lambda i: revocation.execute(world.revocations, requested.id, approvers[i]))
    assert len([o for o in outcomes if not isinstance(o, Exception)]) == 1
    assert all(isinstance(o, (Conflict, InvalidTransition)) for o in outcomes if isinstance(o, Exception))
    assert len(world.publisher.sent) == 1


def test_rollback_after_a_revocation_never_restores_the_revoked_value(world: World) -> None:
    managed = world.store.get_properties(NAME)
    outcome = world.rotate(force=True)
    assert outcome.status == "rotated"
    requested = request(world, versions=[managed.version])
    revocation.approve(world.revocations, requested.id, BOB, None)
    revocation.execute(world.revocations, requested.id, DAVE)
    with pytest.raises(Conflict):
        world.rollback()
    assert world.store.get_value(NAME).value != "value-two"


def test_a_retirement_after_a_revocation_leaves_the_revoked_version_unmarked(world: World) -> None:
    """The rotation scheduled v2's retirement; the revocation disabled it first. The retirement must not
    put ``retired-by`` on it (that mark is what lets a rollback re-enable a version)."""
    world.rotate(force=True)
    requested = request(world, versions=[v2(world)])
    revocation.approve(world.revocations, requested.id, BOB, None)
    revocation.execute(world.revocations, requested.id, DAVE)
    world.clock.advance(timedelta(hours=2))
    assert world.retire_due() == []
    assert rotation.RETIRED_BY_TAG not in world.store.get_properties(NAME, v2(world)).tags
    schedule = world.states.get(rotation.PARTITION, rotation.schedule_key(NAME))
    assert schedule is None  # dropped from the schedule


@pytest.mark.parametrize(("char", "kept"), [("x", 1200), ("認", 200), ("\U0001f511", 100)])
def test_a_long_justification_of_any_script_still_fits_its_record(world: World, char: str, kept: int) -> None:
    """2,000 characters of any script (an emoji escapes to 12 characters): the record keeps the start that
    fits 1,200 escaped characters (records have 4 KiB of details), the request all of it; a comment as
    long as allowed fits too."""
    made = request(world, severity=Severity.LOW, justification=char * 2000)
    [first, _] = world.records(Action.REVOCATION_REQUESTED)
    assert first.details["justification"] == char * kept
    assert revocation.get(world.states, made.id).justification == char * 2000
    revocation.approve(world.revocations, made.id, BOB, char * 2000)
    [approved] = [e for e in world.records(Action.REVOCATION_APPROVED) if e.result == Result.SUCCESS]
    assert approved.details["comment"].startswith(char * 10)


def test_versions_that_are_gone_are_reported_and_the_request_fails_not_hangs(world: World) -> None:
    requested = request(world)
    revocation.approve(world.revocations, requested.id, BOB, None)
    world.store.delete(NAME)  # decommissioned between approval and execution
    done = revocation.execute(world.revocations, requested.id, DAVE)
    assert done.status == Status.FAILED and done.result is not None
    assert done.result.errors == {v: "NotFound" for v in requested.versions}
    assert [e.result for e in world.records(Action.REVOKED)][-1] == Result.FAILURE


# -- what a review found: each failed before its fix -----------------------------------------------------


# a replacement that can never be made leaves the request executing forever, nothing disabled
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


# crash after the replacement, a rotation before the retry: never finishes
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
    world.clock.advance(LEASE)
    revocation.expire_pending(world.revocations)
    done = revocation.get(world.states, requested.id)
    assert done.status in (Status.EXECUTED, Status.FAILED), f"still {done.status.value}"


# replace on an unmanaged secret is accepted, then can never execute
def test_replace_of_an_unmanaged_secret_is_a_400(world: World) -> None:
    world.store.set_value("plain-secret", "v", content_type=None, tags={})
    with pytest.raises(InvalidRequest, match="replace"):
        request(world, secret_name="plain-secret", replace=True)


# 503 "nothing was changed" after the versions were disabled
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


# a break-glass whose execution is refused (Busy) leaves a stored, executing request the caller never
# hears of; a retry makes a second break-glass
def test_a_refused_break_glass_leaves_nothing_behind_or_names_it(world: World) -> None:
    world.acquire("policy", NAME)  # a policy change holds the lease
    made = request(world, Severity.CRITICAL, break_glass=True)
    assert [r.id for r in revocation.list_requests(world.states)] == [made.id]
    assert made.status == Status.EXECUTING  # the timer finishes it once the lease is free
    world.clock.advance(LEASE)
    assert revocation.expire_pending(world.revocations) == ([], [made.id])
    assert revocation.get(world.states, made.id).status == Status.EXECUTED
