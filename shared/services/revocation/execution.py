"""Executing an approved revocation (or a break-glass one), borne out by the audit trail, and the timer that
expires pending requests and finishes executions whose holder died."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from shared.domain.audit import (
    Action,
    Actor,
    AuditEvent,
    AuditQuery,
    ChainHead,
    Result,
    StoredAuditRow,
    authentic_event,
    chain_of,
    format_time,
)
from shared.domain.errors import (
    Conflict,
    DependencyUnavailable,
    DomainError,
    InvalidTransition,
    NotFound,
    OutcomeNotRecorded,
    SecretDisabled,
)
from shared.domain.identity import canonical_identity, same_identity
from shared.domain.notifications import SECRET_REVOKED, Notification
from shared.domain.revocation import Result as Outcome
from shared.domain.revocation import (
    Revocation,
    Status,
    required_approvals,
)
from shared.domain.targets import TargetRefused
from shared.ports import MacKeyRing
from shared.services import rotation
from shared.services.revocation.stored import (
    REVOKING,
    Services,
    details_of,
    execution_lease_over,
    read,
    recorded_result,
    replace_row,
)
from shared.services.sealed_state import get_as_found

logger = logging.getLogger(__name__)


def execute(
    peers: Services, revocation_id: str, actor: Actor, *, correlation_id: str | None = None
) -> Revocation:
    """Disable the request's versions (after replacing the value first when asked), once.

    Raises NotFound, AlreadyExecuted (executed or failed: carries the stored request), InvalidTransition
    (not approved; being executed by a holder whose lease still runs), Conflict (a concurrent execute won),
    AuditUnavailable (nothing done), Busy (another write to the secret holds its lease: retry), and the
    vault's and the rotator's errors (the request stays ``executing``: a retry finishes it).
    """
    current, stored = read(peers.states, revocation_id)
    now = peers.clock.now()
    if current.status == Status.EXECUTING:
        if not execution_lease_over(current, now):
            raise InvalidTransition(f"revocation {current.id} is being executed; try again later")
        # A holder that died mid-way: take it over (a conditional write, so one taker wins).
        executing = dataclasses.replace(current, executed_by=actor.id, executed_at=now)
    else:
        executing = current.begin(actor.id, now)
    recorded = _borne_out(peers, current)
    if recorded is not None:
        # The execution happened and its outcome is on record; the holder died before closing it.
        if current.status != Status.EXECUTING:  # a row rewound to before its execution
            raise InvalidTransition(f"revocation {current.id} was executed already (the audit trail says)")
        finished = current.finish(recorded, now)
        _notify(peers, finished)
        replace_row(peers.states, finished, stored.etag)
        return finished
    fields: dict[str, Any] = {
        "secret_name": executing.secret_name,
        "actor": actor,
        "correlation_id": correlation_id,
        "details": details_of(executing),
    }
    # Intent, then the executing write; the outcome (success or failure) comes once the versions are
    # disabled, never before.
    written = peers.trail.attempt(
        Action.REVOKED, lambda: replace_row(peers.states, executing, stored.etag), **fields
    )
    result = _revoke(peers, executing)
    finished = executing.finish(result, peers.clock.now())
    fields["details"] = {**details_of(finished), "result": recorded_result(result)}
    change = f"revocation {finished.id} disabled {len(result.disabled_versions)} version(s)"
    # The outcome is on record and announced before the request closes: a crash in between leaves it
    # executing, and the retry (whose disabling finds nothing left to do) records and announces it again
    # rather than never. What it records happened: the versions are disabled either way.
    if result.errors:
        fields.update(result=Result.FAILURE, error="versions not disabled")
    peers.trail.outcome(Action.REVOKED, change, {"revocation_id": finished.id}, **fields)
    _notify(peers, finished)
    # Conditional on this holder's own write: a holder that took over meanwhile (this one was too slow
    # for its lease) closes it instead, and this one gets Conflict.
    try:
        replace_row(peers.states, finished, written.etag)
    except DependencyUnavailable as err:
        raise OutcomeNotRecorded.after(change, err, revocation_id=finished.id) from err
    return finished


def _borne_out(peers: Services, revocation: Revocation) -> Outcome | None:
    """Refuse to execute a request the audit trail does not bear out. The row is storage (sealed, yet an
    old authentic row can be put back); the records carry MACs only the service can make, so they decide.
    The secret's chain from the request on is read in one query, and must be whole: every record
    authentic, each linked to the one before, up to the chain's head (a record deleted from the middle,
    a cancellation say, is a refusal, not a forgotten cancellation). Then it must hold:

    - the request's REQUESTED record (BREAK_GLASS for a break-glass) with the digest of exactly these
      terms (secret, versions, severity, approvals, replace, requester, TTL): the versions disabled are the
      recorded ones;
    - unless break-glass, approvals by at least the larger of the recorded and today's configured number
      for its severity, distinct people (canonical ids) other than the requester on record;
    - no CANCELLED, REJECTED or EXPIRED, and (unless its execution began, or it is a break-glass) a TTL
      that has not run out.

    A decision counts from its success record, or from its intent when the success could not be written
    after the change (the sealed row bears the change out: the request exists with these terms, the
    approver is among its approvals); an ending counts from its intent unless a failure followed it (the
    safe side). Returns the recorded outcome of its execution when there is one, whole (then it is not
    executed again). Raises InvalidTransition (409), DependencyUnavailable."""
    events = _trail_events(peers, revocation)
    opened = Action.BREAK_GLASS if revocation.break_glass else Action.REVOCATION_REQUESTED
    terms = revocation.terms()
    first = [e for e in _happened(events, opened) if e.details.get("terms") == terms]
    if not first:
        raise InvalidTransition(f"revocation {revocation.id}: the audit trail holds no such request")
    executed = _recorded_execution(events)
    if executed is not None:
        return executed
    for ended in (Action.REVOCATION_CANCELLED, Action.REVOCATION_REJECTED, Action.REVOCATION_EXPIRED):
        if _happened(events, ended):
            raise InvalidTransition(f"revocation {revocation.id} was {ended.value.split('_')[-1].lower()}")
    began = any(e.action == Action.REVOKED and e.result == Result.INTENT for e in events)
    if not began and not revocation.break_glass and peers.clock.now() >= revocation.expires_at:
        raise InvalidTransition(f"revocation {revocation.id} expired at {format_time(revocation.expires_at)}")
    if not revocation.break_glass:
        _check_approvals(peers, revocation, events, first[0])
    return None


def _trail_events(peers: Services, revocation: Revocation) -> list[AuditEvent]:
    """The request's authentic events: its secret's chain from the request on, read in one query after
    the chain's head, and whole (``_whole``). Raises InvalidTransition, DependencyUnavailable."""
    chain = chain_of(revocation.vault, revocation.secret_name)
    head = peers.reader.read_head(chain)  # before the records: an append in between only adds to them
    query = AuditQuery(
        vault=revocation.vault, secret_name=revocation.secret_name, since=revocation.requested_at - _SKEW
    )
    rows = sorted(peers.reader.list_records(query), key=lambda row: row.record.position)
    return _whole(peers.keys, revocation.id, chain, rows, head)


def _happened(
    events: Sequence[AuditEvent], action: Action, borne: Callable[[AuditEvent], bool] = lambda e: True
) -> list[AuditEvent]:
    """The ``action`` events that count: a success, or an intent the row bears out (``borne``) with no
    failure after it."""
    failed = {e.correlation_id for e in events if e.action == action and e.result == Result.FAILURE}

    def counts(e: AuditEvent) -> bool:
        if e.result == Result.SUCCESS:
            return True
        return e.result == Result.INTENT and borne(e) and e.correlation_id not in failed

    return [e for e in events if e.action == action and counts(e)]


def _recorded_execution(events: Sequence[AuditEvent]) -> Outcome | None:
    """The recorded outcome of the request's execution, when one is on record whole."""
    for event in (e for e in events if e.action == Action.REVOKED):
        result = event.details.get("result")
        if (
            event.details.get("status") in ("executed", "failed")
            and isinstance(result, dict)
            and result.get("complete", True) is True
        ):
            return Outcome.of(result)
    return None


def _check_approvals(
    peers: Services, revocation: Revocation, events: Sequence[AuditEvent], first: AuditEvent
) -> None:
    """Approvals by at least the larger of the recorded and today's configured number for its severity,
    distinct people other than the requester on record; an approval's intent counts when the row names
    its approver. Raises InvalidTransition."""
    requester = first.actor.id
    recorded = first.details.get("required_approvals")
    needed = max(
        recorded if isinstance(recorded, int) else revocation.required_approvals,
        required_approvals(revocation.severity, peers.settings.approvals),
    )
    in_row = {canonical_identity(a.by) for a in revocation.approvals}
    approved = _happened(
        events, Action.REVOCATION_APPROVED, lambda e: canonical_identity(e.actor.id) in in_row
    )
    approvers = {canonical_identity(e.actor.id) for e in approved if not same_identity(e.actor.id, requester)}
    if len(approvers) < needed:
        raise InvalidTransition(
            f"revocation {revocation.id}: the audit trail holds {len(approvers)} of {needed} approvals"
        )


def _whole(
    keys: MacKeyRing, revocation_id: str, chain: str, rows: Sequence[StoredAuditRow], head: ChainHead | None
) -> list[AuditEvent]:
    """The request's authentic events, from the chain's rows since the request (in sequence), when they
    are whole: every row authentic, each linked to the one before, and reaching the head read before
    them. Raises InvalidTransition (the trail was cut or edited there: verify says how)."""
    events: list[AuditEvent] = []
    previous: StoredAuditRow | None = None
    for row in rows:
        event = authentic_event(row.chain, row.record.fields, keys.get)
        linked = previous is None or (
            row.record.position == previous.record.position + 1
            and row.record.fields.get("prev_mac") == previous.record.fields.get("mac")
        )
        if event is None or not linked:
            raise InvalidTransition(
                f"revocation {revocation_id}: the audit trail of its secret is not whole at record "
                f"{row.record.position} (run verify); nothing is executed"
            )
        if event.details.get("revocation_id") == revocation_id:
            events.append(event)
        previous = row
    if head is not None and (previous is None or previous.record.position < head.seq):
        raise InvalidTransition(
            f"revocation {revocation_id}: the audit trail of its secret ends before its head (run verify); "
            "nothing is executed"
        )
    return events


#: Records are timed by the trail's clock after ``requested_at`` was taken; a margin for clock steps.
_SKEW = timedelta(minutes=5)


def _revoke(peers: Services, revocation: Revocation) -> Outcome:
    """Replace (when asked), then disable the versions under the secret's write lease. A replacement that
    cannot be made (the current version disabled meanwhile, a target's refusal) is reported in the
    errors (``replace``) and the versions are disabled all the same: never a request stuck executing
    with the compromised versions enabled. One that has to wait (another write holds the lease, the
    target did not answer) is raised, and the retry goes on."""
    name = revocation.secret_name
    new_version: str | None = None
    refused: dict[str, str] = {}
    if revocation.replace:
        try:
            new_version = _replacement(peers, revocation)
        except rotation.Busy:
            raise
        except (Conflict, TargetRefused, NotFound, InvalidTransition) as err:
            logger.warning("revocation %s: no replacement of %s: %s", revocation.id, name, err)
            refused["replace"] = type(err).__name__
    # An emergency is never held up by a forged lock: a tampered row (reported by the store) is taken over
    # as found, and the vault says what each version is.
    progress = get_as_found(peers.states, rotation.PARTITION, name.lower())
    lease, etag = rotation.acquire(peers, name, progress, REVOKING)
    disabled: list[str] = []
    errors: dict[str, str] = {}
    try:
        # One listing for every version's tags (no value read: the revoked ones may be compromised).
        try:
            tags_of = {v.version: v.tags for v in peers.store.list_versions(name)}
        except NotFound:  # the secret is gone (deleted): nothing to disable, reported as such
            tags_of = {}
        errors.update(refused)
        for version in revocation.versions:
            if version == new_version:
                continue
            if version not in tags_of:
                errors[version] = "NotFound"
                continue
            tags = {k: v for k, v in tags_of[version].items() if k != rotation.RETIRED_BY_TAG}
            try:
                peers.store.update_properties(name, version, enabled=False, tags=tags)
                disabled.append(version)
            except (NotFound, Conflict, SecretDisabled) as err:
                errors[version] = type(err).__name__
    finally:
        rotation.release(peers.states, name, lease, etag, new_version=None)
    return Outcome(tuple(disabled), new_version, errors)


def _replacement(peers: Services, revocation: Revocation) -> str:
    """The version that replaced the value: made now through the secret's rotator, or (by an execution
    that died after it) found by its rotation id, the request's id — its rotation resumed and closed, and
    the previous value finished at the target, whichever of those the dead execution had not done."""
    made = [
        v for v in peers.store.list_versions(revocation.secret_name)
        if v.tags.get(rotation.ROTATION_ID_TAG) == revocation.id
    ]  # fmt: skip
    if made and made[0].version != peers.store.get_properties(revocation.secret_name).version:
        return made[0].version  # made before, and rotated again since: nothing of it left to do here
    outcome = rotation.replace(peers, revocation.secret_name, rotation_id=revocation.id)
    if outcome.new_version is None:
        raise Conflict(f"secret {revocation.secret_name} was not replaced: {outcome.reason}")
    return outcome.new_version


def _notify(peers: Services, revocation: Revocation) -> None:
    data: dict[str, Any] = {
        "vault": revocation.vault,
        "secret_name": revocation.secret_name,
        "revocation_id": revocation.id,
        "status": revocation.status.value,
        "reason": revocation.reason.value,
        "severity": revocation.severity.value,
        "break_glass": revocation.break_glass,
        **(revocation.result.to_dict() if revocation.result else {}),
        "executed_at": format_time(revocation.executed_at) if revocation.executed_at else None,
    }
    note = Notification(
        type=SECRET_REVOKED,
        subject=revocation.secret_name,
        time=peers.clock.now(),
        data=data,
        id=revocation.id,
    )
    try:
        peers.publisher.publish([note])
    except DomainError:
        logger.exception("SecretRevoked of %s could not be sent", revocation.secret_name)
