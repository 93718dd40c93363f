"""Revocation from the trail: a request's row is a cache; what executes is what the audit trail bears
out. Each test is an attack with write access to the row (forged, or an authentic row put back), and the
execution — by a person or by the timer — is refused, the versions stay enabled."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from shared.domain.audit import Action, Result
from shared.domain.errors import InvalidTransition, OutcomeNotRecorded
from shared.domain.revocation import Reason, Revocation, Severity, Status
from shared.domain.state import LEASE
from shared.services import revocation
from shared.services.revocation import RevocationSettings, Services
from shared.services.sealed_state import SealedStateStore
from tests.unit.test_revocation import ALICE, BOB, CAROL, DAVE, NAME, request, revocation_world, v1, v2
from tests.world import World


@pytest.fixture
def world() -> World:
    return revocation_world()


def rewrite(world: World, changed: Revocation) -> None:
    """Put a request's row back as given (a storage writer with the row, or an old authentic copy)."""
    stored = world.states.get(revocation.PARTITION, changed.id)
    assert stored is not None
    world.states.replace(revocation.PARTITION, changed.id, changed.to_state(), stored.etag)


def test_the_first_record_holds_the_terms(world: World) -> None:
    made = request(world, Severity.MEDIUM, versions=[v1(world)])
    [intent, success] = world.records(Action.REVOCATION_REQUESTED)
    for record in (intent, success):
        assert record.details["terms"] == made.terms()
        assert record.details["versions"] == [v1(world)] and record.details["version_count"] == 1
        assert (record.details["severity"], record.details["required_approvals"]) == ("medium", 2)
        assert record.details["replace"] is False and record.details["expires_at"]


def test_one_approval_and_a_row_saying_one_is_enough_is_refused(world: World) -> None:
    made = request(world, Severity.MEDIUM)
    approved = revocation.approve(world.revocations, made.id, BOB, None)
    rewrite(world, dataclasses.replace(approved, required_approvals=1, status=Status.APPROVED))
    with pytest.raises(InvalidTransition, match="no such request"):  # its terms are not the recorded ones
        revocation.execute(world.revocations, made.id, DAVE)
    rewrite(world, dataclasses.replace(approved, status=Status.APPROVED))  # the terms kept, the status not
    with pytest.raises(InvalidTransition, match="holds 1 of 2 approvals"):
        revocation.execute(world.revocations, made.id, DAVE)
    assert all(world.enabled().values())


def test_a_pending_row_rewritten_to_executing_is_never_executed_by_the_timer(world: World) -> None:
    made = request(world, Severity.MEDIUM)
    now = world.clock.now()
    forged = dataclasses.replace(
        made, status=Status.EXECUTING, executed_by="nobody", executed_at=now - timedelta(hours=1)
    )
    rewrite(world, forged)
    _, finished = revocation.expire_pending(world.revocations)
    assert finished == [] and all(world.enabled().values())
    rewrite(world, dataclasses.replace(forged, required_approvals=0))
    assert revocation.expire_pending(world.revocations) == ([], []) and all(world.enabled().values())
    assert world.records(Action.REVOKED) == []


def test_widened_versions_are_refused(world: World) -> None:
    made = request(world, Severity.MEDIUM, versions=[v1(world)])
    revocation.approve(world.revocations, made.id, BOB, None)
    approved = revocation.approve(world.revocations, made.id, CAROL, None)
    rewrite(world, dataclasses.replace(approved, versions=(v1(world), v2(world))))
    with pytest.raises(InvalidTransition, match="no such request"):
        revocation.execute(world.revocations, made.id, DAVE)
    assert world.enabled() == {v1(world): True, v2(world): True}


def test_a_cancelled_request_put_back_as_approved_is_refused(world: World) -> None:
    made = request(world, Severity.MEDIUM)
    revocation.approve(world.revocations, made.id, BOB, None)
    approved = revocation.approve(world.revocations, made.id, CAROL, None)
    revocation.cancel(world.revocations, made.id, ALICE)
    rewrite(world, approved)  # the authentic approved row, put back
    with pytest.raises(InvalidTransition, match="was cancelled"):
        revocation.execute(world.revocations, made.id, DAVE)
    assert all(world.enabled().values())


def test_a_rejected_request_put_back_and_approved_is_refused(world: World) -> None:
    made = request(world, Severity.MEDIUM)
    pending = revocation.get(world.states, made.id)
    revocation.reject(world.revocations, made.id, BOB, "not compromised")
    rewrite(world, pending)  # the authentic pending row, put back: approvers approve it again
    revocation.approve(world.revocations, made.id, BOB, None)
    revocation.approve(world.revocations, made.id, CAROL, None)
    with pytest.raises(InvalidTransition, match="was rejected"):
        revocation.execute(world.revocations, made.id, DAVE)
    assert all(world.enabled().values())


def test_approved_requests_expire_too(world: World) -> None:
    made = request(world, Severity.MEDIUM)
    revocation.approve(world.revocations, made.id, BOB, None)
    approved = revocation.approve(world.revocations, made.id, CAROL, None)
    assert approved.status == Status.APPROVED
    world.clock.advance(revocation.DEFAULT_TTL)
    with pytest.raises(InvalidTransition, match="expired"):
        revocation.execute(world.revocations, made.id, DAVE)
    expired, _ = revocation.expire_pending(world.revocations)
    assert expired == [made.id] and revocation.get(world.states, made.id).status == Status.EXPIRED
    rewrite(world, approved)  # the approved row put back, its TTL ended on record
    with pytest.raises(InvalidTransition, match="expired"):
        revocation.execute(world.revocations, made.id, DAVE)
    assert all(world.enabled().values())


def test_execution_needs_the_larger_of_the_recorded_and_todays_approvals(world: World) -> None:
    made = request(world, Severity.HIGH)  # 1 approval when requested
    revocation.approve(world.revocations, made.id, BOB, None)
    stricter = dataclasses.replace(
        world.revocations, settings=RevocationSettings(approvals={Severity.HIGH: 2})
    )  # the configuration was raised since
    with pytest.raises(InvalidTransition, match="holds 1 of 2 approvals"):
        revocation.execute(stricter, made.id, DAVE)
    done = revocation.execute(world.revocations, made.id, DAVE)  # as configured then and now: 1
    assert done.status == Status.EXECUTED


def test_a_request_on_record_whose_row_is_gone_is_listed_and_reported_once(world: World) -> None:
    made = request(world, Severity.MEDIUM)
    reported: list[tuple[str, str]] = []
    peers: Services = dataclasses.replace(
        world.revocations, report_missing=lambda p, k: reported.append((p, k))
    )
    stored = world.states.get(revocation.PARTITION, made.id)
    assert stored is not None
    world.states.delete(revocation.PARTITION, made.id, stored.etag)
    listing = revocation.list_all(peers)
    assert listing.requests == []
    assert [u.to_json() for u in listing.unreadable] == [
        {
            "id": made.id,
            "secret_name": NAME,
            "vault": "fleet",
            "problem": "missing: on record, its row is gone",
        }
    ]
    revocation.expire_pending(peers)  # the timer looks too, without anyone listing
    assert reported == [(revocation.PARTITION, made.id)] * 2  # the alarm makes it one finding


def test_the_request_record_fits_whatever_the_request(world: World) -> None:
    """A hundred versions and 2,000 characters of a three-byte script still make a first record that is
    written (details are at most 4 KiB), and the digest covers every version."""
    for i in range(98):
        world.store.set_value(NAME, f"value-{i}", content_type="text/plain", tags={})
    made = request(world, Severity.MEDIUM, justification="認" * 2000)
    assert len(made.versions) == 100
    [_, success] = world.records(Action.REVOCATION_REQUESTED)
    assert success.result == Result.SUCCESS and success.details["version_count"] == 100
    assert success.details["terms"] == made.terms()


# -- what a review found: each failed before its fix ----------------------------------------------------


def test_a_forged_lock_on_the_secret_never_holds_up_an_execution(world: World) -> None:
    made = request(world, Severity.HIGH)
    revocation.approve(world.revocations, made.id, BOB, None)
    sealed = SealedStateStore(world.states, world.log.keys, "secretstate")
    peers = dataclasses.replace(world.revocations, states=sealed)
    stored = world.states.get(revocation.PARTITION, made.id)
    assert stored is not None  # the request's row, sealed as the service writes it
    sealed.replace(revocation.PARTITION, made.id, dict(stored.state), stored.etag)
    world.states.create("rotation", NAME.lower(), {"step": "promoting", "holder": "x"})  # forged, no seal
    done = revocation.execute(peers, made.id, DAVE)
    assert done.status == Status.EXECUTED and not any(world.enabled().values())


def test_a_break_glass_that_could_not_run_at_once_runs_later_and_never_expires(world: World) -> None:
    world.log.fails = lambda e: e.action == Action.REVOKED  # its execution cannot start now
    made = request(world, Severity.CRITICAL, break_glass=True)
    assert made.status == Status.APPROVED and all(world.enabled().values())
    world.log.fails = lambda e: False
    world.clock.advance(revocation.DEFAULT_TTL * 2)
    expired, finished = revocation.expire_pending(world.revocations)
    assert (expired, finished) == ([], [made.id])
    assert revocation.get(world.states, made.id).status == Status.EXECUTED
    assert not any(world.enabled().values())


def test_a_cancellation_deleted_from_the_trail_still_refuses(world: World) -> None:
    made = request(world, Severity.MEDIUM)
    revocation.approve(world.revocations, made.id, BOB, None)
    approved = revocation.approve(world.revocations, made.id, CAROL, None)
    revocation.cancel(world.revocations, made.id, ALICE)
    chain = world.log.records[next(iter(world.log.records))]
    trail = [r for r in chain if r.event.action != Action.REVOCATION_CANCELLED]  # cut out of the middle
    world.log.records[next(iter(world.log.records))] = trail
    rewrite(world, approved)
    with pytest.raises(InvalidTransition, match=r"not whole|ends before its head"):
        revocation.execute(world.revocations, made.id, DAVE)
    assert all(world.enabled().values())


def test_an_approval_whose_success_record_failed_still_counts(world: World) -> None:
    made = request(world, Severity.MEDIUM)
    revocation.approve(world.revocations, made.id, BOB, None)
    world.log.fails = lambda e: e.action == Action.REVOCATION_APPROVED and e.result == Result.SUCCESS
    with pytest.raises(OutcomeNotRecorded):
        revocation.approve(world.revocations, made.id, CAROL, None)  # made, not recorded: 500 changed:true
    world.log.fails = lambda e: False
    done = revocation.execute(world.revocations, made.id, DAVE)
    assert done.status == Status.EXECUTED


def test_a_request_made_while_the_list_is_read_is_not_reported_missing(world: World) -> None:
    reported: list[tuple[str, str]] = []
    peers = dataclasses.replace(world.revocations, report_missing=lambda p, k: reported.append((p, k)))
    listed = world.states.list

    def meanwhile(partition: str, **kw: Any) -> Any:
        rows = listed(partition, **kw)
        request(world, Severity.LOW)  # created after the rows were read, recorded before the trail is
        return rows

    world.states.list = meanwhile  # type: ignore[method-assign]
    revocation.list_all(peers)
    world.states.list = listed  # type: ignore[method-assign]
    assert reported == []


def test_an_execution_of_a_hundred_versions_is_on_record(world: World) -> None:
    for i in range(98):
        world.store.set_value(NAME, f"value-{i}", content_type="text/plain", tags={})
    made = request(world, Severity.HIGH)
    revocation.approve(world.revocations, made.id, BOB, None)
    done = revocation.execute(world.revocations, made.id, DAVE)
    assert done.status == Status.EXECUTED and done.result is not None
    assert len(done.result.disabled_versions) == 100
    [outcome] = [e for e in world.records(Action.REVOKED) if e.result == Result.SUCCESS]
    recorded = outcome.details["result"]
    assert (recorded["disabled_count"], recorded["complete"]) == (100, False)


# a storage writer alone makes the timer disable versions nobody requested or approved
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


# a rewound (replayed) approved row is executed a second time
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
    world.clock.advance(LEASE)
    assert revocation.expire_pending(world.revocations) == ([], [requested.id])
    closed = revocation.get(world.states, requested.id)
    assert closed.status == Status.EXECUTED and closed.result == done.result
    assert world.enabled()[v1(world)]  # not disabled again
