"""What a rotation request ends in: its outcome (``RotationOutcome``), the skip and violation records
(each violation once per version, ``once``), and the ``SecretRotated`` event consumers reload on."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from shared.domain.audit import Action, Result, format_time
from shared.domain.errors import Conflict, DomainError, NotFound
from shared.domain.notifications import SECRET_ROTATED, Notification
from shared.domain.policy import PolicyError
from shared.domain.progress import (
    Progress,
)
from shared.domain.state import StateTampered, Versioned
from shared.ports import Clock, Publisher, StateStore
from shared.services.audit import AuditTrail
from shared.services.sweep import PolicyViolation

logger = logging.getLogger(__name__)


VIOLATIONS = "policy-violation"


@dataclass(frozen=True)
class RotationOutcome:
    """What a call did. ``status``: ``rotated``, ``skipped`` (with the reason), ``joined`` (the request
    joined the rotation running, ``rotation_id``: its outcome names the request), ``in_progress`` (another
    holder has the lease), ``failed``."""

    secret_name: str
    status: str
    reason: str
    rotation_id: str | None = None
    new_version: str | None = None
    previous_version: str | None = None


class NotManaged(Conflict):
    """The secret carries no rotation policy (409 naming the missing tag)."""

    def __init__(self, name: str, tag: str) -> None:
        super().__init__(f"secret {name} is not managed: it lacks the tag {tag}")
        self.tag = tag


def skip(
    trail: AuditTrail, name: str, why: str, correlation_id: str | None, rotation_id: str | None = None
) -> RotationOutcome:
    """The ROTATION_SKIPPED outcome of a request (``rotation_id``: the request's own id, when it has one)."""
    details = {"reason": why} if rotation_id is None else {"reason": why, "rotation_id": rotation_id}
    trail.record(Action.ROTATION_SKIPPED, secret_name=name, correlation_id=correlation_id, details=details)
    return RotationOutcome(name, "skipped", why, rotation_id)


def joined_details(progress: Progress) -> dict[str, Any]:
    """What an outcome record says of the requests that joined the rotation (nothing when none did)."""
    joined = progress.alias_list()
    return {"joined": joined} if joined else {}


def record_violation(
    states: StateStore,
    trail: AuditTrail,
    name: str,
    version: str,
    err: PolicyError,
    correlation_id: str | None,
) -> None:
    """POLICY_VIOLATION once per version (``once``)."""
    once(
        states,
        f"{name.lower()}:{version}",
        err.tag,
        lambda: trail.record(
            Action.POLICY_VIOLATION,
            secret_name=name,
            version=version,
            result=Result.FAILURE,
            correlation_id=correlation_id,
            details={"tag": err.tag},
            error=str(err),
        ),
    )


def once(states: StateStore, key: str, tag: str, record: Callable[[], object]) -> bool:
    """Record a violation once: its claim (a state entity) is pending until the record is written, so a
    record that failed, or a process that died in between, is recorded by the next run instead of never.
    Returns whether it was recorded now. Raises what ``record`` raises (the claim stays pending)."""
    try:
        claim = states.create(VIOLATIONS, key, {"tag": tag, "done": False})
    except Conflict:
        try:
            stored = states.get(VIOLATIONS, key)
        except StateTampered as err:  # a forged "recorded": never obeyed, the violation is recorded
            stored = Versioned(state={"tag": tag, "done": False}, etag=err.etag)
        if stored is None or stored.state.get("done") is not False:
            return False  # recorded (a claim without the flag predates it: recorded then too)
        claim = stored
    record()
    with contextlib.suppress(Conflict, NotFound):
        states.replace(VIOLATIONS, key, {"tag": tag, "done": True}, claim.etag)
    return True


def record_violations(
    states: StateStore, trail: AuditTrail, violations: Sequence[PolicyViolation], correlation_id: str | None
) -> int:
    """POLICY_VIOLATION for each violation the sweep found, once per secret version (the listing has no
    version id: its creation time stands for it). Returns how many were recorded now."""
    recorded = 0
    for violation in violations:
        claim = f"{violation.secret_name.lower()}:{format_time(violation.created)}"
        recorded += once(
            states,
            claim,
            violation.tag,
            functools.partial(
                trail.record,
                Action.POLICY_VIOLATION,
                secret_name=violation.secret_name,
                result=Result.FAILURE,
                correlation_id=correlation_id,
                details={"tag": violation.tag},
                error=violation.problem[:500],
            ),
        )
    return recorded


def announce(publisher: Publisher, clock: Clock, vault: str, outcome: RotationOutcome) -> None:
    """SecretRotated, so consumers reload from Key Vault; the event id is the rotation id (consumers can
    deduplicate). Best effort: the rotation happened and is on record whether or not this goes out."""
    data = {
        "vault": vault,
        "secret_name": outcome.secret_name,
        "version": outcome.new_version,
        "previous_version": outcome.previous_version,
        "rotation_id": outcome.rotation_id,
    }
    notification = Notification(
        type=SECRET_ROTATED,
        subject=outcome.secret_name,
        time=clock.now(),
        data=data,
        id=outcome.rotation_id or "",
    )
    try:
        publisher.publish([notification])
    except DomainError:
        logger.exception("SecretRotated of %s could not be sent", outcome.secret_name)
