"""Requests for a rotation, coalesced on the secret's progress row: a manual request queues (or joins the
one queued or running), so concurrent requests make one rotation and every request id has an outcome;
a request that reached the poison queue is recorded (``gave_up``); a rotation whose holder died is asked
for again (``resume_stale``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from shared.domain.audit import Action, Result, format_time
from shared.domain.errors import Conflict, DomainError, NotFound
from shared.domain.progress import (
    PROMOTING,
    QUEUED_FOR,
    Busy,
    Progress,
)
from shared.domain.rotation import RotationReason, RotationRequest
from shared.domain.state import Versioned
from shared.ports import Clock, RotationRequests, StateStore
from shared.services.audit import AuditTrail
from shared.services.rotation.rows import LEASE_ATTEMPTS, PARTITION, progress_rows, write_progress

logger = logging.getLogger(__name__)


#: How long a forced request may wait on the queue (it is taken within seconds; the host retries within
#: minutes): an older one is skipped on record.
FORCED_FOR = timedelta(days=1)


def register_request(
    states: StateStore, name: str, request_id: str, force: bool, clock: Clock
) -> tuple[str, str | None]:
    """A manual request for ``name``'s rotation, coalesced with the others: it joins the rotation running
    (``("in_progress", its id)``) or the request queued and not yet taken (``("queued", its id)``) —
    named in that one's outcome — or it is marked queued itself (``("queued", None)``: the caller sends
    its message). So concurrent requests make one rotation, and every id has an outcome. Raises Busy
    (another kind of write holds the lease), Conflict (too many joined; a row that keeps changing),
    StateTampered, DependencyUnavailable."""
    key = name.lower()
    for _ in range(LEASE_ATTEMPTS):
        stored = states.get(PARTITION, key)
        progress = Progress.of(stored.state) if stored else Progress()
        now = clock.now()
        joined: str | None = progress.queued_now(now)
        status = "queued"
        if progress.leased_by_other("", now):
            if progress.step != PROMOTING or not progress.rotation_id:
                raise Busy(name, progress)
            status, joined = "in_progress", progress.rotation_id
        if joined is None:
            progress.queued, progress.queued_until = request_id, format_time(now + QUEUED_FOR)
            progress.queued_force = "true" if force else None
        else:
            progress.join(request_id, new=True)
            if force and status == "queued":
                progress.queued_force = "true"
        try:
            write_progress(states, key, progress, stored.etag if stored else None)
        except (Conflict, NotFound):
            continue  # another request registered meanwhile: join it
        return status, joined
    raise Conflict(f"secret {name}: too many rotation requests at once; ask again")


def unregister_request(
    states: StateStore, trail: AuditTrail, name: str, request_id: str, correlation_id: str | None
) -> None:
    """Take back a queued request whose message could not be sent (nothing will take it): the requests
    that joined it get their outcome (ROTATION_SKIPPED), then the marker goes. Best effort: the marker
    expires by itself."""
    drop_queued(states, trail, name, request_id, "it could not be queued", correlation_id)


def drop_queued(
    states: StateStore, trail: AuditTrail, name: str, rotation_id: str, why: str, correlation_id: str | None
) -> None:
    """A queued request that was skipped (or not sent) takes the requests that joined it along: they are
    skipped on record, then the marker goes, so later requests queue afresh. Best effort (the marker
    expires)."""
    try:
        joined = waiting_on(states, name, rotation_id, queued_only=True)
        if joined is None:
            return
        if joined:
            details = {
                "reason": f"the request they joined was skipped: {why}"[:500],
                "rotation_id": rotation_id,
                "joined": joined,
            }
            trail.record(
                Action.ROTATION_SKIPPED, secret_name=name, correlation_id=correlation_id, details=details
            )
        take_off(states, name, rotation_id, joined)  # after the record: a crash names them twice, not never
    except DomainError:
        logger.warning("the queued request %s of %s could not be dropped; it expires", rotation_id, name)


def waiting_on(
    states: StateStore, name: str, request_id: str | None, *, queued_only: bool = False
) -> list[str] | None:
    """The ids of the requests waiting with ``request_id`` on the secret's row — those that joined it,
    queued or (unless ``queued_only``) running; for None, those of the rotation in flight — or None when
    the row does not wait on it. Raises StateTampered, DependencyUnavailable."""
    stored = states.get(PARTITION, name.lower())
    if stored is None:
        return None
    progress = Progress.of(stored.state)
    if request_id is None:
        return progress.alias_list() if progress.step == PROMOTING else None
    if progress.queued == request_id or (not queued_only and progress.rotation_id == request_id):
        return [a for a in progress.alias_list() if a != request_id]
    return None


def take_off(states: StateStore, name: str, request_id: str | None, ids: Sequence[str]) -> None:
    """The requests ``ids`` are named in an outcome: off the row (done), and the marker of ``request_id``
    with them. A compare-and-swap, read again when another write came in between. Raises
    DependencyUnavailable."""
    key = name.lower()
    for _ in range(LEASE_ATTEMPTS):
        stored = states.get(PARTITION, key)
        if stored is None:
            return
        progress = Progress.of(stored.state)
        progress.done_with(ids)
        if request_id is not None and progress.queued == request_id:
            progress.queued = progress.queued_until = progress.queued_force = None
        try:
            write_progress(states, key, progress, stored.etag)
            return
        except (Conflict, NotFound):
            continue


def resume_stale(
    states: StateStore,
    requests: RotationRequests,
    clock: Clock,
    correlation_id: str,
    rows: Mapping[str, Versioned] | None = None,
    *,
    vault: str | None = None,
) -> list[str]:
    """Request the rotations whose holder died mid-way (a ``promoting`` row whose lease ran out): no
    other trigger finishes them, since a secret rotated before the crash is no longer due and the queue
    delivery that found the lease still running was consumed. The rotation decides, against the vault,
    whether the row is borne out. Returns the names requested. Raises DependencyUnavailable."""
    now = clock.now()
    stale = [
        key
        for key, stored in (progress_rows(states) if rows is None else rows).items()
        if (progress := Progress.of(stored.state)).step == PROMOTING and not progress.leased_by_other("", now)
    ]
    valid: list[RotationRequest] = []
    for key in stale:
        try:
            valid.append(
                RotationRequest(
                    secret_name=key,
                    reason=RotationReason.RESUME,
                    requested_at=now,
                    correlation_id=correlation_id,
                    vault=vault,
                )
            )
        except ValueError:
            logger.warning("stale rotation row %.140r ignored: not a secret name", key)
    requests.send(valid)
    return [r.secret_name for r in valid]


def gave_up(
    request: RotationRequest, trail: AuditTrail, attempts: int, states: StateStore | None = None
) -> None:
    """A request that reached the poison queue: every attempt failed, or the process died during them
    (a crash on the last attempt leaves nothing else behind). Recorded so it is never silent, naming the
    requests that joined it — while it was queued, or once it held the lease (``states``: where to find
    them) — which end with it; they are then taken off the row (after the record: a crash names them
    twice, never never). Raises AuditUnavailable."""
    details: dict[str, Any] = {"gave_up_after": attempts, "reason": "the request reached the poison queue"}
    if request.rotation_id is not None:
        details["rotation_id"] = request.rotation_id
    joined: list[str] | None = None
    if states is not None:
        try:
            stored = states.get(PARTITION, request.secret_name.lower())
            rid = request.rotation_id
            if stored is not None and rid is not None and Progress.of(stored.state).finished(rid):
                # Its rotation was made (a message put on the poison queue afterwards, or one whose last
                # delivery died after the work): no failure to record.
                logger.warning("poisoned request %s of %s was done already", rid, request.secret_name)
                return
            joined = waiting_on(states, request.secret_name, request.rotation_id)
        except DomainError:
            logger.warning("the requests that joined %s could not be read", request.secret_name)
    if joined:
        details["joined"] = joined
    trail.record(
        Action.ROTATION_FAILED,
        secret_name=request.secret_name,
        result=Result.FAILURE,
        correlation_id=request.correlation_id,
        details=details,
    )
    if states is not None and joined is not None:
        try:
            take_off(states, request.secret_name, request.rotation_id, joined)
        except DomainError:
            logger.warning("the requests that joined %s stay on its row", request.secret_name)
