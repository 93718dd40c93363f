"""Rotations asked for and coming: a manual request (queued, or joined to the one queued or running),
its dry run, and the plan of the rotations and expiries due within a window."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from shared.domain.audit import Action, Actor, Result, format_time
from shared.domain.errors import (
    Conflict,
    DomainError,
    SecretDisabled,
)
from shared.domain.policy import (
    MANAGED_BY_TAG,
    NEAR_EXPIRY,
    ROTATOR_TAG,
    PolicyError,
    RotationPolicy,
)
from shared.domain.rotation import RotationReason, RotationRequest
from shared.domain.secrets import SecretItem, SecretVersion, validate_name
from shared.domain.targets import is_reserved
from shared.ports import SecretStore
from shared.services.audit import AuditUnavailable
from shared.services.catalog.policies import (
    AVAILABLE_ROTATORS,
    PolicyConflict,
    problem_text,
    record_failed,
    refuse_reserved,
    writable_version,
)
from shared.services.catalog.results import (
    PlannedExpiry,
    PlannedRotation,
    PlanViolation,
    RotationDryRun,
    RotationInProgress,
    RotationPlan,
    Stalled,
)
from shared.services.catalog.views import progress_row
from shared.services.peers import Peers
from shared.services.rotation import (
    NotManaged,
    Progress,
    register_request,
    unregister_request,
)
from shared.services.stalls import STALL_AFTER, stall
from shared.services.sweep import DueSecret

logger = logging.getLogger(__name__)


# -- a manual request ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RotationTicket:
    """A manual rotation request, by its own id: ``queued`` (on the queue, or joined to the request
    queued: ``joined`` is its id) or ``in_progress`` (joined to the rotation running: ``joined``)."""

    rotation_id: str
    status: str
    joined: str | None = None


def _rotation_target(
    store: SecretStore, name: str, reserved: Collection[str]
) -> tuple[SecretVersion, RotationPolicy] | str:
    """The current version and policy, or why the secret is not rotated. Raises NotFound, InvalidSecret."""
    validate_name(name)
    try:
        current = store.get_properties(name)
    except SecretDisabled:
        store.list_versions(name)  # NotFound when the secret is gone altogether
        return "the current version is disabled"
    if is_reserved(name, reserved):
        return "the service's own secret is never rotated"
    if current.managed:
        return "certificate-backed: renew the certificate"
    if not RotationPolicy.is_managed(current.tags):
        return f"not managed: it lacks the tag {MANAGED_BY_TAG}"
    try:
        policy = RotationPolicy.from_tags(current.tags, name=name, reserved=reserved)
    except PolicyError as err:
        return f"invalid policy: {err}"
    if policy.rotator not in AVAILABLE_ROTATORS:
        return f"the {policy.rotator.value} rotator is not available yet"
    return current, policy


def plan_rotation(
    peers: Peers, name: str, *, force: bool, stall_after: timedelta = STALL_AFTER
) -> RotationDryRun:
    """A dry run: whether a rotation would happen now and why. Writes nothing. Raises NotFound."""
    stored = progress_row(peers.states, name)
    found = _rotation_target(peers.store, name, peers.reserved)
    now = peers.clock.now()
    if stored is not None and stored.tampered is not None:
        why = f"its rotation state is tampered ({stored.tampered}): nothing acts on it"
        return RotationDryRun(name=name, would_rotate=False, force=force, in_progress=None, reason=why)
    progress = Progress.of(stored.state) if stored else None
    in_flight = progress is not None and progress.leased_by_other("", now)
    plan: dict[str, Any] = {"name": name, "would_rotate": False, "force": force, "in_progress": None}
    if progress is not None and in_flight:
        plan["in_progress"] = RotationInProgress(
            rotation_id=progress.rotation_id, step=progress.step, lease_until=progress.lease_until
        )
    if isinstance(found, str):
        return RotationDryRun(**plan, reason=found)
    current, policy = found
    due = policy.next_rotation(current.created, current.expires)
    plan.update(
        current_version=current.version,
        created=current.created,
        expires=current.expires,
        next_due=due,
        due_now=now >= due,
        rotator=policy.rotator,
    )
    if now >= due:  # a lease held too long is a stall too: said whatever else the plan says
        stalled = stall(DueSecret(current.name, current.created, due), stored, now, stall_after)
        if stalled is not None:
            plan["stalled"] = Stalled(since=stalled.since, reason=stalled.reason)
    if in_flight:
        return RotationDryRun(**plan, reason="a rotation or rollback is in progress")
    if now >= due:
        plan["would_rotate"] = True
        return RotationDryRun(**plan, reason=_due_reason(current, policy, now).value)
    if force:
        return RotationDryRun(**{**plan, "would_rotate": True}, reason="forced")
    return RotationDryRun(**plan, reason=f"not due until {format_time(due)}")


def _due_reason(current: SecretItem, policy: RotationPolicy, now: datetime) -> RotationReason:
    return RotationReason.DUE if now >= current.created + policy.interval else RotationReason.NEAR_EXPIRY


def request_rotation(
    peers: Peers, name: str, *, force: bool, actor: Actor, correlation_id: str
) -> RotationTicket:
    """Check that ``name`` can be rotated now and ask for it, with an id of its own: it joins the rotation
    running or the request queued for the secret (concurrent requests make one rotation, whose outcome
    names every id), or it is queued for ``rotate_secret`` (so retries and the poison queue apply).

    Raises NotFound, NotManaged / PolicyConflict (naming the tag), Conflict (reserved, certificate-backed,
    disabled, rotator unavailable, not due without ``force``, another kind of write in progress, too many
    requests joined), AuditUnavailable or DependencyUnavailable (nothing queued). A request that was
    queued or joined is answered so even when its success record fails (logged): asking again would
    rotate twice."""
    trail = peers.trail
    current, policy = _rotatable_now(peers.store, name, peers.reserved)
    now = peers.clock.now()
    due = policy.next_rotation(current.created, current.expires)
    if not force and now < due:
        raise Conflict(f"secret {name} is not due until {format_time(due)}; force=true rotates it now")
    request = RotationRequest(
        secret_name=current.name,
        reason=RotationReason.MANUAL,
        requested_at=now,
        correlation_id=correlation_id,
        force=force,
        rotation_id=uuid.uuid4().hex,
        vault=peers.trail.vault,
    )
    assert request.rotation_id is not None
    details: dict[str, Any] = {"rotation_id": request.rotation_id, "force": force}
    fields: dict[str, Any] = {"secret_name": name, "actor": actor, "correlation_id": correlation_id}
    trail.record(
        Action.ROTATION_REQUESTED, version=current.version, result=Result.INTENT, details=details, **fields
    )
    try:
        status, joined = _queue(peers, name, request)
    except DomainError as err:
        record_failed(trail, Action.ROTATION_REQUESTED, err, details, {**fields, "version": current.version})
        raise
    if joined is not None:
        details["joined"] = joined
    try:
        trail.record(Action.ROTATION_REQUESTED, version=current.version, details=details, **fields)
    except AuditUnavailable:
        # The request is queued (or joined): an error here would make the caller ask again and rotate
        # twice. The intent (actor, rotation id) is on record, and the rotation's outcome names the id.
        logger.error(
            "secret %s: rotation %s was requested but its ROTATION_REQUESTED success was not recorded",
            name,
            request.rotation_id,
        )
    return RotationTicket(request.rotation_id, status, joined)


def _queue(peers: Peers, name: str, request: RotationRequest) -> tuple[str, str | None]:
    """Register the request on the secret's row (it may join the rotation running or the request queued
    there), and send it when it joined neither: (status, the id it joined). Raises DomainError."""
    rotation_id = request.rotation_id or ""
    status, joined = register_request(peers.states, name, rotation_id, request.force, peers.clock)
    if joined is None:
        try:
            peers.requests.send([request])
        except DomainError:
            unregister_request(peers.states, peers.trail, name, rotation_id, request.correlation_id)
            raise
    return status, joined


def _rotatable_now(
    store: SecretStore, name: str, reserved: Collection[str]
) -> tuple[SecretVersion, RotationPolicy]:
    validate_name(name)
    refuse_reserved(name, reserved)
    current = writable_version(store, name)
    if not RotationPolicy.is_managed(current.tags):
        raise NotManaged(name, MANAGED_BY_TAG)
    try:
        policy = RotationPolicy.from_tags(current.tags, name=name, reserved=reserved)
    except PolicyError as err:
        raise PolicyConflict(name, err) from None
    if policy.rotator not in AVAILABLE_ROTATORS:
        raise Conflict(
            f"secret {name}: the {policy.rotator.value} rotator is not available yet (tag {ROTATOR_TAG})"
        )
    return current, policy


# -- the plan ------------------------------------------------------------------------------------------


def rotation_plan(vaults: Sequence[Peers], *, within_days: int) -> RotationPlan:
    """From one listing of each vault: the managed secrets that would rotate within ``within_days`` (when,
    and why: interval or near_expiry), every enabled secret whose ``exp`` falls within the window (or has
    passed), managed or not, and invalid policies. Reserved secrets are left out. Raises
    DependencyUnavailable."""
    if not 1 <= within_days <= 365:
        raise ValueError("within_days is 1-365")
    now = vaults[0].clock.now()
    until = now + timedelta(days=within_days)
    items: list[PlannedExpiry | PlannedRotation] = []
    violations: list[PlanViolation] = []
    for peers in vaults:
        _plan_vault(peers, now, until, items, violations)
    items.sort(key=lambda entry: (entry.when, entry.name.lower(), entry.event, entry.vault))
    violations.sort(key=lambda entry: (entry.name.lower(), entry.vault))
    return RotationPlan(within_days=within_days, now=now, until=until, items=items, violations=violations)


def _plan_vault(
    peers: Peers,
    now: datetime,
    until: datetime,
    items: list[PlannedExpiry | PlannedRotation],
    violations: list[PlanViolation],
) -> None:
    reserved, vault = peers.reserved, peers.trail.vault
    for item in peers.store.list_properties():
        if is_reserved(item.name, reserved) or not item.enabled:
            continue
        managed = RotationPolicy.is_managed(item.tags) and not item.managed
        if item.expires is not None and item.expires <= until:
            expiry = PlannedExpiry(
                when=item.expires,
                name=item.name,
                vault=vault,
                event="expiry",
                managed=managed,
                expired=item.expires <= now,
            )
            items.append(expiry)
        if not managed:
            continue
        try:
            policy = RotationPolicy.from_tags(item.tags, name=item.name, reserved=reserved)
        except PolicyError as err:
            violations.append(
                PlanViolation(name=item.name, vault=vault, tag=err.tag, problem=problem_text(err))
            )
            continue
        due = policy.next_rotation(item.created, item.expires)
        if due <= until:
            interval = item.created + policy.interval <= _near_expiry(item)
            reason: Literal["interval", "near_expiry"] = "interval" if interval else "near_expiry"
            rotation = PlannedRotation(
                when=due, name=item.name, vault=vault, event="rotation", reason=reason,
                rotator=policy.rotator, due_now=now >= due,
            )  # fmt: skip
            items.append(rotation)


def _near_expiry(item: SecretItem) -> datetime:
    """Start of the current version's near-expiry window (never, without ``exp``)."""
    return (
        item.expires - NEAR_EXPIRY
        if item.expires is not None
        else datetime.max.replace(tzinfo=item.created.tzinfo)
    )
