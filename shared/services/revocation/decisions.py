"""A revocation request and the decisions on it: approve, reject, cancel, review. Each is read → transition
(the domain machine) → intent record → conditional write → outcome record; a decision by the requester, or
a second one by the same person, is refused and recorded."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from shared.domain.audit import (
    SYSTEM_ACTOR,
    Action,
    Actor,
    Result,
    clip,
)
from shared.domain.errors import (
    Conflict,
    DependencyUnavailable,
    DomainError,
    InvalidTransition,
    NotPermitted,
    SecretDisabled,
)
from shared.domain.policy import RotationPolicy
from shared.domain.revocation import (
    AlreadyApproved,
    Revocation,
    Severity,
    Status,
    required_approvals,
    validate_versions,
)
from shared.domain.secrets import SecretVersion, validate_name
from shared.domain.targets import is_reserved
from shared.ports import SecretStore, StateStore
from shared.services.audit import Change
from shared.services.revocation.execution import execute
from shared.services.revocation.reads import get, listed, missing, recorded_ids
from shared.services.revocation.stored import (
    DECISION_ATTEMPTS,
    PARTITION,
    InvalidRequest,
    NewRequest,
    Services,
    execution_lease_over,
    read,
    record_change,
    replace_row,
    terms,
)

logger = logging.getLogger(__name__)


# -- request -------------------------------------------------------------------------------------------


def request(
    peers: Services, new: NewRequest, actor: Actor, *, correlation_id: str | None = None
) -> Revocation:
    """Store a pending request (201). A break-glass request (severity critical; the caller's role is the
    entry point's to check) is executed at once and left ``review_required``.

    Raises InvalidSecret (name), InvalidRequest (versions that are not the secret's, break-glass below
    critical), NotFound (no such secret), Conflict (the service's own secret), AuditUnavailable (nothing
    stored), and what ``execute`` raises for a break-glass one.
    """
    validate_name(new.secret_name)
    if is_reserved(new.secret_name, peers.reserved):
        raise Conflict(f"secret {new.secret_name} is the service's own secret: it is never revoked")
    if new.break_glass and new.severity != Severity.CRITICAL:
        raise InvalidRequest("break_glass", "only a critical request can be break-glass")
    versions = peers.store.list_versions(new.secret_name)  # NotFound: 404
    if new.replace and not _replaceable(peers.store, new.secret_name):
        raise InvalidRequest("replace", f"secret {new.secret_name} has no rotation policy to replace it with")
    chosen = _chosen(new, versions)
    now = peers.clock.now()
    revocation = Revocation(
        id=uuid.uuid4().hex,
        secret_name=versions[0].name if versions else new.secret_name,
        vault=peers.trail.vault,
        reason=new.reason,
        severity=new.severity,
        justification=new.justification,
        versions=chosen,
        replace=new.replace,
        status=Status.APPROVED if new.break_glass else Status.PENDING,
        requested_by=actor.id,
        requested_at=now,
        expires_at=now + peers.settings.ttl,
        required_approvals=required_approvals(new.severity, peers.settings.approvals),
        break_glass=new.break_glass,
        review_required=new.break_glass,
    )
    action = Action.BREAK_GLASS if new.break_glass else Action.REVOCATION_REQUESTED
    extra = {"justification": clip(revocation.justification, 1200), **terms(revocation)}
    record_change(
        peers,
        revocation,
        Change(action, actor, correlation_id, extra),
        lambda: _create(peers.states, revocation),
    )
    if new.break_glass:
        try:
            return execute(peers, revocation.id, actor, correlation_id=correlation_id)
        except (Conflict, InvalidTransition, DependencyUnavailable) as err:
            # Stored and on record: the answer names it (executing, or still approved), and the timer or an
            # execute call finishes it; the caller must not file a second break-glass.
            logger.warning("break-glass %s not executed at once: %s", revocation.id, err)
            return get(peers.states, revocation.id)
    return revocation


def _chosen(new: NewRequest, versions: Sequence[SecretVersion]) -> tuple[str, ...]:
    """The versions a request revokes: those it names (each one of the secret's), or every enabled one.
    Raises InvalidRequest."""
    if new.versions is None:
        return tuple(sorted(v.version for v in versions if v.enabled))
    try:
        chosen = validate_versions(new.versions)
    except ValueError as err:
        raise InvalidRequest("versions", str(err)) from None
    known = {v.version for v in versions}
    unknown = [v for v in chosen if v not in known]
    if unknown:
        raise InvalidRequest("versions", f"{unknown[0][:64]} is not a version of {new.secret_name}")
    return chosen


def _replaceable(store: SecretStore, name: str) -> bool:
    """Whether the secret has a rotation policy (the replacement goes through its rotator)."""
    try:
        return RotationPolicy.is_managed(store.get_properties(name).tags)
    except SecretDisabled:
        return False


def _create(states: StateStore, revocation: Revocation) -> None:
    states.create(PARTITION, revocation.id, revocation.to_state())


# -- decisions -----------------------------------------------------------------------------------------


def approve(
    peers: Services,
    revocation_id: str,
    actor: Actor,
    comment: str | None,
    *,
    correlation_id: str | None = None,
) -> Revocation:
    """One approval. Raises NotFound, NotPermitted (the requester), InvalidTransition (not pending,
    expired, a second approval by the same person), Conflict (a concurrent change won), AuditUnavailable."""
    change = Change(Action.REVOCATION_APPROVED, actor, correlation_id, {"comment": clip(comment or "", 1500)})
    return _decide(peers, revocation_id, change, lambda r, now: r.approve(actor.id, now, comment))


def reject(
    peers: Services, revocation_id: str, actor: Actor, comment: str, *, correlation_id: str | None = None
) -> Revocation:
    """Rejected. Raises NotFound, NotPermitted, InvalidTransition, Conflict, AuditUnavailable."""
    change = Change(Action.REVOCATION_REJECTED, actor, correlation_id, {"comment": clip(comment, 1500)})
    return _decide(peers, revocation_id, change, lambda r, now: r.reject(actor.id, now, comment))


def cancel(
    peers: Services, revocation_id: str, actor: Actor, *, correlation_id: str | None = None
) -> Revocation:
    """Cancelled by its requester. Raises NotFound, NotPermitted, InvalidTransition, Conflict,
    AuditUnavailable."""
    change = Change(Action.REVOCATION_CANCELLED, actor, correlation_id)
    return _decide(peers, revocation_id, change, lambda r, now: r.cancel(actor.id, now))


def review(
    peers: Services, revocation_id: str, actor: Actor, comment: str, *, correlation_id: str | None = None
) -> Revocation:
    """A break-glass execution reviewed. Raises NotFound, NotPermitted, InvalidTransition, Conflict,
    AuditUnavailable."""
    change = Change(Action.REVIEWED, actor, correlation_id, {"comment": clip(comment, 1500)})
    return _decide(peers, revocation_id, change, lambda r, now: r.reviewed(actor.id, now, comment))


def _decide(peers: Services, revocation_id: str, change: Change, transition: Any) -> Revocation:
    """Apply ``transition`` to the stored request. A write that lost to a concurrent one is not yet a
    refusal: the request is read again and the transition applied again (a second approver racing the
    first is still a valid approval); only when the transition itself no longer applies (approved by
    then, expired) is it refused. So of N concurrent decisions exactly the right number take effect."""
    current, stored = read(peers.states, revocation_id)
    now = peers.clock.now()
    try:
        changed: Revocation = transition(current, now)
    except (NotPermitted, AlreadyApproved) as err:
        # A rule about people refused it (the requester approving, a second approval by one approver, a
        # self-review): on record like every other 403, before the caller hears of it (fail closed).
        _denied(peers, current, change, err)
        raise
    result: list[Revocation] = [changed]

    def write() -> None:
        nonlocal stored
        for _ in range(DECISION_ATTEMPTS - 1):
            try:
                replace_row(peers.states, result[0], stored.etag)
                return
            except Conflict:
                latest, stored = read(peers.states, revocation_id)
                result[0] = transition(latest, now)
        replace_row(peers.states, result[0], stored.etag)

    record_change(peers, changed, change, write, final=result)
    return result[0]


def _denied(peers: Services, revocation: Revocation, change: Change, err: DomainError) -> None:
    """The ``denied`` record of a decision a rule refused. Raises AuditUnavailable (then the caller gets
    503, not the refusal: nothing goes unrecorded)."""
    peers.trail.record(
        change.action,
        result=Result.DENIED,
        secret_name=revocation.secret_name,
        actor=change.actor,
        correlation_id=change.correlation_id,
        details={"revocation_id": revocation.id, "rule": type(err).__name__, "reason": clip(str(err), 600)},
    )


# -- the expiry timer ----------------------------------------------------------------------------------


def expire_pending(peers: Services, *, correlation_id: str | None = None) -> tuple[list[str], list[str]]:
    """Move every pending or approved request past its TTL to ``expired`` (REVOCATION_EXPIRED), finish
    every ``executing`` one whose holder died, and report every request on record whose row is gone.
    Returns (expired ids, finished ids). One request's failure is logged and the others go on; a lost
    race is left to the winner."""
    now = peers.clock.now()
    expired: list[str] = []
    finished: list[str] = []
    try:
        recorded = recorded_ids(peers)  # before the rows: a request made in between is in both
    except DomainError:  # looked for by the next run; expiry goes on
        logger.exception("revocations on record without a row could not be looked for")
        recorded = {}
    rows = peers.states.list(PARTITION)
    missing(peers, recorded, rows)
    for revocation in listed(rows):
        try:
            if revocation.status == Status.APPROVED and revocation.break_glass:
                # A break-glass that could not run at once (another write held the secret): run it now.
                execute(peers, revocation.id, SYSTEM_ACTOR, correlation_id=correlation_id)
                finished.append(revocation.id)
            elif revocation.status in (Status.PENDING, Status.APPROVED) and now >= revocation.expires_at:
                expiry = Change(Action.REVOCATION_EXPIRED, SYSTEM_ACTOR, correlation_id)
                _decide(peers, revocation.id, expiry, lambda r, at: r.expire(at))
                expired.append(revocation.id)
            elif revocation.status == Status.EXECUTING and execution_lease_over(revocation, now):
                execute(peers, revocation.id, SYSTEM_ACTOR, correlation_id=correlation_id)
                finished.append(revocation.id)
        except (Conflict, InvalidTransition) as err:
            logger.info("revocation %s left as it is: %s", revocation.id, err)
        except Exception:  # one request's failure never stops the others
            logger.exception("revocation %s could not be expired or finished", revocation.id)
    return expired, finished
