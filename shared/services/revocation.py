"""Emergency revocation: request → approve → execute (shared.domain.revocation), stored as one
compare-and-swap entity per request (``StateStore`` partition ``revocation``).

Every state change is read → transition (the domain machine) → ``intent`` record → conditional write →
``success`` record. Of racing writers exactly one wins the write; the others get Conflict (409), never a
500 and never a record of a success that did not happen (the loser's intent is followed by a
``failure``).

Execution stores ``executing`` before it touches the vault, so a process that dies mid-way leaves the
request ``executing``: calling execute again (or the ``revocation_expiry`` timer) finishes it once the
holder's lease (``EXECUTION_LEASE``) has run out. It first replaces the value when asked (through the
secret's rotator, ``shared.services.rotation.replace``, with the request's id as the rotation id, so a
retry finds the replacement made), then disables the chosen versions under the secret's write lease —
stripping the ``retired-by`` mark, so a rollback never restores a revoked version — and records what it
could not disable (``result.errors``, status ``failed``), never silently.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.domain.audit import (
    SYSTEM_ACTOR,
    Action,
    Actor,
    AuditEvent,
    AuditQuery,
    ChainHead,
    Result,
    StoredAuditRow,
    authentic_event,
    chain_of,
    clip,
    format_time,
)
from shared.domain.errors import (
    Conflict,
    DependencyUnavailable,
    DomainError,
    InvalidTransition,
    NotFound,
    NotPermitted,
    OutcomeNotRecorded,
    SecretDisabled,
)
from shared.domain.identity import canonical_identity, same_identity
from shared.domain.notifications import SECRET_REVOKED, Notification
from shared.domain.policy import RotationPolicy, Rotator
from shared.domain.revocation import (
    DEFAULT_APPROVALS,
    DEFAULT_TTL,
    REVOCATION_ID,
    AlreadyApproved,
    Reason,
    Revocation,
    Severity,
    Status,
    required_approvals,
    validate_versions,
)
from shared.domain.revocation import Result as Outcome
from shared.domain.secrets import InvalidSecret, validate_name
from shared.domain.state import Versioned
from shared.domain.targets import TargetRefused, is_reserved
from shared.ports import AuditReader, Clock, MacKeyRing, Publisher, SecretStore, StateStore, TargetRotator
from shared.services import rotation
from shared.services.audit import AuditTrail, authentic_events
from shared.services.sealed_state import get_as_found

logger = logging.getLogger(__name__)

PARTITION = "revocation"
#: The lease step a revocation holds on the secret while it disables versions.
REVOKING = "revoking"
#: How long an ``executing`` request belongs to the holder that began it; after that (a holder that died:
#: longer than the function timeout) another call finishes it.
EXECUTION_LEASE = timedelta(minutes=15)
#: Writes of one decision before a lost race is reported (each after reading the request again).
DECISION_ATTEMPTS = 20


@dataclass(frozen=True)
class RevocationSettings:
    ttl: timedelta = DEFAULT_TTL
    approvals: Mapping[Severity, int] = field(default_factory=lambda: dict(DEFAULT_APPROVALS))


@dataclass(frozen=True)
class Services:
    """The peers every revocation operation uses."""

    store: SecretStore
    states: StateStore
    trail: AuditTrail
    publisher: Publisher
    clock: Clock
    reserved: Collection[str]
    rotators: Mapping[Rotator, TargetRotator] = field(default_factory=dict)
    settings: RevocationSettings = field(default_factory=RevocationSettings)
    #: The audit trail as stored, and its MAC keys: an execution is borne out by authentic records.
    reader: AuditReader | None = None
    keys: MacKeyRing | None = None
    #: Hears of a request on record whose row is gone (partition, key): a STATE_TAMPERED record, a finding.
    report_missing: Callable[[str, str], None] | None = None


class InvalidRequest(InvalidSecret):
    """A request naming something that is not there (a version of another secret): 400 naming the field."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name


@dataclass(frozen=True)
class NewRequest:
    secret_name: str
    reason: Reason
    severity: Severity
    justification: str
    versions: Sequence[str] | None = None
    replace: bool = False
    break_glass: bool = False


# -- read ---------------------------------------------------------------------------------------------


def get(states: StateStore, revocation_id: str) -> Revocation:
    """The request. Raises NotFound (unknown id, or a stored row this service did not write)."""
    return _read(states, revocation_id)[0]


def list_requests(
    states: StateStore, *, status: Status | None = None, secret_name: str | None = None
) -> list[Revocation]:
    """Every request (newest first), filtered; rows that fail their seal are left out (``unreadable``
    names them)."""
    return _listed(states.list(PARTITION), status=status, secret_name=secret_name)


def _listed(
    rows: Mapping[str, Versioned], *, status: Status | None = None, secret_name: str | None = None
) -> list[Revocation]:
    found: list[Revocation] = []
    for stored in rows.values():
        try:
            revocation = Revocation.of_state(stored.state)
        except ValueError:
            continue
        if status is not None and revocation.status != status:
            continue
        if secret_name is not None and revocation.secret_name.lower() != secret_name.lower():
            continue
        found.append(revocation)
    return sorted(found, key=lambda r: (r.requested_at, r.id), reverse=True)


@dataclass(frozen=True)
class Listing:
    """The requests, and the ones that cannot be shown: a row that fails its seal, or a request the audit
    trail holds (within ``MISSING_WINDOW``) whose row is gone — each ``{"id", "secret_name", "problem"}``."""

    requests: list[Revocation]
    unreadable: list[dict[str, Any]]


#: How far back the trail is searched for requests whose row is gone: the longest TTL (7 days), a day more.
MISSING_WINDOW = timedelta(days=8)


def list_all(peers: Services, *, status: Status | None = None, secret_name: str | None = None) -> Listing:
    """Every request (newest first, filtered) and every one that cannot be shown, tampered or missing;
    a missing one is reported (``report_missing``: a record and a finding, once). Raises
    DependencyUnavailable."""
    recorded = _recorded(peers)  # before the rows: a request made in between is in both, never missing
    rows = peers.states.list(PARTITION)
    unreadable = [
        {"id": key, "secret_name": None, "problem": f"tampered: {stored.tampered}"}
        for key, stored in sorted(rows.items())
        if stored.tampered is not None and secret_name is None
    ]
    for key, name in sorted(_missing(peers, recorded, rows).items()):
        if secret_name is None or name.lower() == secret_name.lower():
            unreadable.append(
                {"id": key, "secret_name": name, "problem": "missing: on record, its row is gone"}
            )
    return Listing(_listed(rows, status=status, secret_name=secret_name), unreadable)


def _recorded(peers: Services) -> dict[str, str]:
    """The requests the audit trail holds (authentic REQUESTED or BREAK_GLASS successes, within
    ``MISSING_WINDOW``): id → secret name. Read before the rows they are compared with."""
    if peers.reader is None or peers.keys is None:
        return {}
    since = peers.clock.now() - MISSING_WINDOW
    recorded: dict[str, str] = {}
    for action in (Action.REVOCATION_REQUESTED, Action.BREAK_GLASS):
        query = AuditQuery(vault=peers.trail.vault, action=action, since=since)
        for event in authentic_events(peers.reader, peers.keys, query):
            rid = str(event.details.get("revocation_id", ""))
            if event.result == Result.SUCCESS and REVOCATION_ID.fullmatch(rid):
                recorded[rid] = event.secret_name or ""
    return recorded


def _missing(peers: Services, recorded: Mapping[str, str], rows: Mapping[str, Versioned]) -> dict[str, str]:
    """The recorded requests whose row is gone, id → secret name; each reported (best effort: the alarm
    never fails the caller)."""
    missing = {rid: name for rid, name in recorded.items() if rid not in rows}
    for rid in missing:
        if peers.report_missing is not None:
            try:
                peers.report_missing(PARTITION, rid)
            except Exception:
                logger.exception("revocation %s on record without a row could not be reported", rid)
    return missing


def _read(states: StateStore, revocation_id: str) -> tuple[Revocation, Versioned]:
    if not REVOCATION_ID.fullmatch(revocation_id):
        raise NotFound(f"no revocation {revocation_id[:64]!r}")
    stored = states.get(PARTITION, revocation_id)
    if stored is None:
        raise NotFound(f"no revocation {revocation_id}")
    try:
        return Revocation.of_state(stored.state), stored
    except ValueError as err:
        logger.warning("revocation row %s ignored: %s", revocation_id, err)
        raise NotFound(f"no revocation {revocation_id}") from None


# -- request ------------------------------------------------------------------------------------------


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
    known = {v.version: v for v in versions}
    if new.replace and not _replaceable(peers.store, new.secret_name):
        raise InvalidRequest("replace", f"secret {new.secret_name} has no rotation policy to replace it with")
    if new.versions is None:
        chosen = tuple(sorted(v.version for v in versions if v.enabled))
    else:
        try:
            chosen = validate_versions(new.versions)
        except ValueError as err:
            raise InvalidRequest("versions", str(err)) from None
        unknown = [v for v in chosen if v not in known]
        if unknown:
            raise InvalidRequest("versions", f"{unknown[0][:64]} is not a version of {new.secret_name}")
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
    _changed(
        peers, revocation, action, actor, correlation_id, lambda: _create(peers.states, revocation),
        extra={"justification": clip(revocation.justification, 1200), **_terms(revocation)},
    )  # fmt: skip
    if new.break_glass:
        try:
            return execute(peers, revocation.id, actor, correlation_id=correlation_id)
        except (Conflict, InvalidTransition, DependencyUnavailable) as err:
            # Stored and on record: the answer names it (executing, or still approved), and the timer or an
            # execute call finishes it; the caller must not file a second break-glass.
            logger.warning("break-glass %s not executed at once: %s", revocation.id, err)
            return get(peers.states, revocation.id)
    return revocation


def _replaceable(store: SecretStore, name: str) -> bool:
    """Whether the secret has a rotation policy (the replacement goes through its rotator)."""
    try:
        return RotationPolicy.is_managed(store.get_properties(name).tags)
    except SecretDisabled:
        return False


def _create(states: StateStore, revocation: Revocation) -> None:
    states.create(PARTITION, revocation.id, revocation.to_state())


# -- decisions ----------------------------------------------------------------------------------------


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
    return _decide(
        peers, revocation_id, actor, Action.REVOCATION_APPROVED, correlation_id,
        lambda r, now: r.approve(actor.id, now, comment), extra={"comment": clip(comment or "", 1500)},
    )  # fmt: skip


def reject(
    peers: Services, revocation_id: str, actor: Actor, comment: str, *, correlation_id: str | None = None
) -> Revocation:
    """Rejected. Raises NotFound, NotPermitted, InvalidTransition, Conflict, AuditUnavailable."""
    return _decide(
        peers, revocation_id, actor, Action.REVOCATION_REJECTED, correlation_id,
        lambda r, now: r.reject(actor.id, now, comment), extra={"comment": clip(comment, 1500)},
    )  # fmt: skip


def cancel(
    peers: Services, revocation_id: str, actor: Actor, *, correlation_id: str | None = None
) -> Revocation:
    """Cancelled by its requester. Raises NotFound, NotPermitted, InvalidTransition, Conflict,
    AuditUnavailable."""
    return _decide(
        peers, revocation_id, actor, Action.REVOCATION_CANCELLED, correlation_id,
        lambda r, now: r.cancel(actor.id, now),
    )  # fmt: skip


def review(
    peers: Services, revocation_id: str, actor: Actor, comment: str, *, correlation_id: str | None = None
) -> Revocation:
    """A break-glass execution reviewed. Raises NotFound, NotPermitted, InvalidTransition, Conflict,
    AuditUnavailable."""
    return _decide(
        peers, revocation_id, actor, Action.REVIEWED, correlation_id,
        lambda r, now: r.reviewed(actor.id, now, comment), extra={"comment": clip(comment, 1500)},
    )  # fmt: skip


def _decide(
    peers: Services,
    revocation_id: str,
    actor: Actor,
    action: Action,
    correlation_id: str | None,
    transition: Any,
    *,
    extra: dict[str, Any] | None = None,
) -> Revocation:
    """Apply ``transition`` to the stored request. A write that lost to a concurrent one is not yet a
    refusal: the request is read again and the transition applied again (a second approver racing the
    first is still a valid approval); only when the transition itself no longer applies (approved by
    then, expired) is it refused. So of N concurrent decisions exactly the right number take effect."""
    current, stored = _read(peers.states, revocation_id)
    now = peers.clock.now()
    try:
        changed: Revocation = transition(current, now)
    except (NotPermitted, AlreadyApproved) as err:
        # A rule about people refused it (the requester approving, a second approval by one approver, a
        # self-review): on record like every other 403, before the caller hears of it (fail closed).
        _denied(peers, current, action, actor, correlation_id, err)
        raise
    result: list[Revocation] = [changed]

    def write() -> None:
        nonlocal stored
        for _ in range(DECISION_ATTEMPTS - 1):
            try:
                _replace(peers.states, result[0], stored.etag)
                return
            except Conflict:
                latest, stored = _read(peers.states, revocation_id)
                result[0] = transition(latest, now)
        _replace(peers.states, result[0], stored.etag)

    _changed(peers, changed, action, actor, correlation_id, write, final=result, extra=extra)
    return result[0]


def _denied(
    peers: Services,
    revocation: Revocation,
    action: Action,
    actor: Actor,
    correlation_id: str | None,
    err: DomainError,
) -> None:
    """The ``denied`` record of a decision a rule refused. Raises AuditUnavailable (then the caller gets
    503, not the refusal: nothing goes unrecorded)."""
    peers.trail.record(
        action,
        result=Result.DENIED,
        secret_name=revocation.secret_name,
        actor=actor,
        correlation_id=correlation_id,
        details={"revocation_id": revocation.id, "rule": type(err).__name__, "reason": clip(str(err), 600)},
    )


def _replace(states: StateStore, revocation: Revocation, etag: str) -> Versioned:
    try:
        return states.replace(PARTITION, revocation.id, revocation.to_state(), etag)
    except NotFound:
        raise Conflict(f"revocation {revocation.id} changed meanwhile; read it again") from None
    except Conflict:
        raise Conflict(f"revocation {revocation.id} changed meanwhile; read it again") from None


def _changed(
    peers: Services,
    revocation: Revocation,
    action: Action,
    actor: Actor,
    correlation_id: str | None,
    write: Any,
    *,
    final: list[Revocation] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Intent, the write, then success — or failure when the write lost or was refused (the caller sees
    the error). ``final``: where the write leaves the request it actually stored, when it re-applied the
    transition (the success record describes that one)."""
    fields: dict[str, Any] = {
        "secret_name": revocation.secret_name,
        "actor": actor,
        "correlation_id": correlation_id,
        "details": {**_details(revocation), **(extra or {})},
    }
    peers.trail.attempt(action, write, **fields)
    if final:
        fields["details"] = {**_details(final[0]), **(extra or {})}
    peers.trail.outcome(
        action, f"revocation {revocation.id}: {action.value} took effect", {"revocation_id": revocation.id},
        **fields,
    )  # fmt: skip


#: Versions a request's first record lists (its ``terms`` digest covers every one of them).
_LISTED_VERSIONS = 16


def _terms(revocation: Revocation) -> dict[str, Any]:
    """What a request's first record says it asks for: the digest of its terms (``Revocation.terms``),
    which an execution holds the row to, and the terms an auditor reads."""
    return {
        "terms": revocation.terms(),
        "versions": list(revocation.versions[:_LISTED_VERSIONS]),
        "version_count": len(revocation.versions),
        "replace": revocation.replace,
        "expires_at": format_time(revocation.expires_at),
    }


#: Versions (disabled, or not) an outcome record lists; more are counted, and the record says it is partial.
_RESULT_VERSIONS = 20


def _recorded_result(result: Outcome) -> dict[str, Any]:
    """What a REVOKED outcome record says of the result: all of it when it is small, else the first
    versions, the counts and ``complete: false`` (an execution that finds such a record runs again rather
    than close the request with a partial result)."""
    full = result.to_dict()
    disabled, errors = list(result.disabled_versions), dict(result.errors)
    if len(disabled) <= _RESULT_VERSIONS and len(errors) <= _RESULT_VERSIONS:
        return full
    return {
        **full,
        "disabled_versions": disabled[:_RESULT_VERSIONS],
        "errors": dict(list(errors.items())[:_RESULT_VERSIONS]),
        "disabled_count": len(disabled),
        "error_count": len(errors),
        "complete": False,
    }


def _details(revocation: Revocation) -> dict[str, Any]:
    """What a record says about a request (its justification is on the request's first record)."""
    return {
        "revocation_id": revocation.id,
        "status": revocation.status.value,
        "severity": revocation.severity.value,
        "reason": revocation.reason.value,
        "approvals": len(revocation.approvals),
        "required_approvals": revocation.required_approvals,
        "break_glass": revocation.break_glass,
    }


# -- expiry -------------------------------------------------------------------------------------------


def expire_pending(peers: Services, *, correlation_id: str | None = None) -> tuple[list[str], list[str]]:
    """Move every pending or approved request past its TTL to ``expired`` (REVOCATION_EXPIRED), finish
    every ``executing`` one whose holder died, and report every request on record whose row is gone.
    Returns (expired ids, finished ids). One request's failure is logged and the others go on; a lost
    race is left to the winner."""
    now = peers.clock.now()
    expired: list[str] = []
    finished: list[str] = []
    try:
        recorded = _recorded(peers)  # before the rows: a request made in between is in both
    except DomainError:  # looked for by the next run; expiry goes on
        logger.exception("revocations on record without a row could not be looked for")
        recorded = {}
    rows = peers.states.list(PARTITION)
    _missing(peers, recorded, rows)
    for revocation in _listed(rows):
        try:
            if revocation.status == Status.APPROVED and revocation.break_glass:
                # A break-glass that could not run at once (another write held the secret): run it now.
                execute(peers, revocation.id, SYSTEM_ACTOR, correlation_id=correlation_id)
                finished.append(revocation.id)
            elif revocation.status in (Status.PENDING, Status.APPROVED) and now >= revocation.expires_at:
                _decide(
                    peers, revocation.id, SYSTEM_ACTOR, Action.REVOCATION_EXPIRED, correlation_id,
                    lambda r, at: r.expire(at),
                )  # fmt: skip
                expired.append(revocation.id)
            elif revocation.status == Status.EXECUTING and _lease_over(revocation, now):
                execute(peers, revocation.id, SYSTEM_ACTOR, correlation_id=correlation_id)
                finished.append(revocation.id)
        except (Conflict, InvalidTransition) as err:
            logger.info("revocation %s left as it is: %s", revocation.id, err)
        except Exception:  # one request's failure never stops the others
            logger.exception("revocation %s could not be expired or finished", revocation.id)
    return expired, finished


def _lease_over(revocation: Revocation, now: datetime) -> bool:
    return revocation.executed_at is None or now >= revocation.executed_at + EXECUTION_LEASE


# -- execute ------------------------------------------------------------------------------------------


def execute(
    peers: Services, revocation_id: str, actor: Actor, *, correlation_id: str | None = None
) -> Revocation:
    """Disable the request's versions (after replacing the value first when asked), once.

    Raises NotFound, AlreadyExecuted (executed or failed: carries the stored request), InvalidTransition
    (not approved; being executed by a holder whose lease still runs), Conflict (a concurrent execute won),
    AuditUnavailable (nothing done), Busy (another write to the secret holds its lease: retry), and the
    vault's and the rotator's errors (the request stays ``executing``: a retry finishes it).
    """
    current, stored = _read(peers.states, revocation_id)
    now = peers.clock.now()
    if current.status == Status.EXECUTING:
        if not _lease_over(current, now):
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
        _replace(peers.states, finished, stored.etag)
        return finished
    fields: dict[str, Any] = {
        "secret_name": executing.secret_name,
        "actor": actor,
        "correlation_id": correlation_id,
        "details": _details(executing),
    }
    # Intent, then the executing write; the outcome (success or failure) comes once the versions are
    # disabled, never before.
    written = peers.trail.attempt(
        Action.REVOKED, lambda: _replace(peers.states, executing, stored.etag), **fields
    )
    result = _revoke(peers, executing)
    finished = executing.finish(result, peers.clock.now())
    fields["details"] = {**_details(finished), "result": _recorded_result(result)}
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
        _replace(peers.states, finished, written.etag)
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
    if peers.reader is None or peers.keys is None:
        raise DependencyUnavailable("audit_store", "no audit reader to check the request against")
    chain = chain_of(revocation.vault, revocation.secret_name)
    head = peers.reader.read_head(chain)  # before the records: an append in between only adds to them
    query = AuditQuery(
        vault=revocation.vault, secret_name=revocation.secret_name, since=revocation.requested_at - _SKEW
    )
    rows = sorted(peers.reader.list_records(query), key=lambda row: row.record.position)
    events = _whole(peers.keys, revocation.id, chain, rows, head)

    def happened(action: Action, borne: Callable[[AuditEvent], bool]) -> list[AuditEvent]:
        failed = {e.correlation_id for e in events if e.action == action and e.result == Result.FAILURE}

        def counts(e: AuditEvent) -> bool:
            if e.result == Result.SUCCESS:
                return True
            return e.result == Result.INTENT and borne(e) and e.correlation_id not in failed

        return [e for e in events if e.action == action and counts(e)]

    opened = Action.BREAK_GLASS if revocation.break_glass else Action.REVOCATION_REQUESTED
    terms = revocation.terms()
    first = [e for e in happened(opened, lambda e: True) if e.details.get("terms") == terms]
    if not first:
        raise InvalidTransition(f"revocation {revocation.id}: the audit trail holds no such request")
    for event in (e for e in events if e.action == Action.REVOKED):
        result = event.details.get("result")
        if (
            event.details.get("status") in ("executed", "failed")
            and isinstance(result, dict)
            and result.get("complete", True) is True
        ):
            return Outcome.of(result)
    for ended in (Action.REVOCATION_CANCELLED, Action.REVOCATION_REJECTED, Action.REVOCATION_EXPIRED):
        if happened(ended, lambda e: True):
            raise InvalidTransition(f"revocation {revocation.id} was {ended.value.split('_')[-1].lower()}")
    began = any(e.action == Action.REVOKED and e.result == Result.INTENT for e in events)
    if not began and not revocation.break_glass and peers.clock.now() >= revocation.expires_at:
        raise InvalidTransition(f"revocation {revocation.id} expired at {format_time(revocation.expires_at)}")
    if not revocation.break_glass:
        requester = first[0].actor.id
        recorded = first[0].details.get("required_approvals")
        needed = max(
            recorded if isinstance(recorded, int) else revocation.required_approvals,
            required_approvals(revocation.severity, peers.settings.approvals),
        )
        in_row = {canonical_identity(a.by) for a in revocation.approvals}
        approvers = {
            canonical_identity(e.actor.id)
            for e in happened(Action.REVOCATION_APPROVED, lambda e: canonical_identity(e.actor.id) in in_row)
            if not same_identity(e.actor.id, requester)
        }
        if len(approvers) < needed:
            raise InvalidTransition(
                f"revocation {revocation.id}: the audit trail holds {len(approvers)} of {needed} approvals"
            )
    return None


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
    lease, etag = rotation.acquire(peers.states, name, progress, REVOKING, peers.clock)
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
    outcome = rotation.replace(
        revocation.secret_name, peers.store, peers.states, peers.trail, peers.publisher, peers.clock,
        reserved=peers.reserved, rotators=peers.rotators, rotation_id=revocation.id,
    )  # fmt: skip
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
