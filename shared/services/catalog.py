"""The managed secrets as operators see them: list, onboard, set a policy, ask for a rotation, status and
the rotation plan. Use cases behind the HTTP endpoints of shared/entrypoints/secrets.py.

Reads never return a value, and a listing costs one vault listing plus one read per secret on the page
(the listing has no version ids). Writes (onboarding, a policy) take the secret's lease (the rotation
progress entity), so they never interleave with a rotation or a rollback, and are audited intent-first
(fail closed); a change whose success record then fails raises OutcomeNotRecorded naming it, never
"nothing changed". The service's own secrets (``reserved``) are never listed as managed and never written
(Conflict); certificate-backed secrets are never written either (renew the certificate).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from shared.domain.audit import Action, Actor, AuditQuery, Result, format_time, parse_time
from shared.domain.errors import (
    Conflict,
    DomainError,
    NotFound,
    OutcomeNotRecorded,
    SecretDisabled,
)
from shared.domain.generators import generate
from shared.domain.policy import (
    GRACE_TAG,
    INTERVAL_TAG,
    KIND_TAG,
    MANAGED_BY_TAG,
    MANAGED_BY_VALUE,
    NEAR_EXPIRY,
    OWNER_TAG,
    POLICY_TAGS,
    ROTATOR_TAG,
    TARGET_TAG,
    VALIDITY_TAG,
    WARNING_TAG,
    PolicyError,
    RotationPolicy,
    Rotator,
)
from shared.domain.rotation import RotationReason, RotationRequest
from shared.domain.secrets import SecretItem, SecretVersion, validate_name, validate_tags
from shared.domain.state import Versioned
from shared.domain.targets import SIGNING_KEY_TAG, TargetSecret, is_reserved
from shared.ports import AuditReader, Clock, RotationRequests, SecretStore, StateStore, TargetRotator
from shared.services.audit import AuditTrail, AuditUnavailable, query_audit
from shared.services.rotation import (
    IDLE,
    PARTITION,
    NotManaged,
    Progress,
    acquire,
    progress_rows,
    register_request,
    release,
    retirements,
    schedule_key,
    service_tags,
    unregister_request,
)
from shared.services.sealed_state import get_as_found
from shared.services.stalls import STALL_AFTER, stall
from shared.services.sweep import DueSecret

logger = logging.getLogger(__name__)

MAX_PAGE = 100
#: The body field of each policy tag, so a refusal names what the caller sent.
FIELD_OF_TAG: Mapping[str, str] = {
    MANAGED_BY_TAG: "kind",
    KIND_TAG: "kind",
    INTERVAL_TAG: "rotation_interval_days",
    VALIDITY_TAG: "validity_days",
    OWNER_TAG: "owner",
    ROTATOR_TAG: "rotator",
    TARGET_TAG: "rotation_target",
    GRACE_TAG: "rotation_grace_hours",
    WARNING_TAG: "expiry_warning_days",
}
#: The rotators this deployment runs (the others are reported, not requested).
AVAILABLE_ROTATORS = frozenset(Rotator)
ONBOARDING = "onboarding"
UPDATING_POLICY = "updating_policy"
#: The state of a secret whose rotation progress row failed its seal (status, list, plan).
TAMPERED = "tampered"


class InvalidPolicy(ValueError):
    """The policy a caller sent is invalid: ``field`` names the body field (400)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class PolicyConflict(Conflict):
    """The secret's stored policy is invalid (409 naming the tag)."""

    def __init__(self, name: str, err: PolicyError) -> None:
        super().__init__(f"secret {name} has an invalid policy: {err}")
        self.tag = err.tag


@dataclass(frozen=True, kw_only=True)
class PolicyInput:
    """A policy as the HTTP body gives it; ``kind`` None: keep the secret's current kind."""

    kind: str | None
    rotation_interval_days: int
    validity_days: int | None = None
    owner: str | None = None
    rotator: str | None = None
    rotation_target: str | None = None
    rotation_grace_hours: int | None = None
    expiry_warning_days: tuple[int, ...] | None = None


#: Rotators whose value the service cannot make up: it must already work at the target.
_BROUGHT_VALUES = frozenset({Rotator.POSTGRES_SINGLE_USER, Rotator.POSTGRES_ALTERNATING})


def build_policy(
    fields: PolicyInput, *, onboarding: bool = False, name: str | None = None, reserved: Collection[str] = ()
) -> RotationPolicy:
    """The policy of the secret ``name``, validated by the same rules as stored tags
    (``RotationPolicy.from_tags``: a target naming one of the ``reserved`` secrets or the secret itself is
    refused too). Raises InvalidPolicy naming the body field; for ``onboarding`` (a generated first
    value), also for a PostgreSQL rotator, whose first value is a connection document that already logs
    in."""
    if not fields.kind:
        raise InvalidPolicy("kind", "is required")
    tags = {
        MANAGED_BY_TAG: MANAGED_BY_VALUE,
        KIND_TAG: fields.kind,
        INTERVAL_TAG: str(fields.rotation_interval_days),
    }
    optional = {
        VALIDITY_TAG: fields.validity_days,
        OWNER_TAG: fields.owner,
        ROTATOR_TAG: fields.rotator,
        TARGET_TAG: fields.rotation_target,
        GRACE_TAG: fields.rotation_grace_hours,
        WARNING_TAG: ",".join(str(d) for d in fields.expiry_warning_days)
        if fields.expiry_warning_days
        else None,
    }
    tags.update({tag: str(value) for tag, value in optional.items() if value is not None})
    try:
        policy = RotationPolicy.from_tags(tags, name=name, reserved=reserved)
    except PolicyError as err:
        raise InvalidPolicy(FIELD_OF_TAG.get(err.tag, err.tag), _problem(err)) from None
    if onboarding and policy.rotator in _BROUGHT_VALUES:
        raise InvalidPolicy(
            "rotator",
            f"a {policy.rotator.value} secret starts with a connection document that already logs in: "
            "store it in Key Vault (content type application/json), then PUT its policy",
        )
    return policy


def policy_dict(policy: RotationPolicy) -> dict[str, Any]:
    """A policy as structured fields (the body's names)."""
    return {
        "kind": policy.kind.value,
        "rotation_interval_days": policy.interval.days,
        "validity_days": policy.validity.days if policy.validity else None,
        "owner": policy.owner,
        "rotator": policy.rotator.value,
        "rotation_target": policy.target,
        "rotation_grace_hours": int(policy.grace.total_seconds() // 3600)
        if policy.grace is not None
        else None,
        "expiry_warning_days": list(policy.warning_days),
    }


def version_dict(version: SecretVersion) -> dict[str, Any]:
    """A version's properties as an HTTP body: never a value."""
    return {
        "name": version.name,
        "version": version.version,
        "created": format_time(version.created),
        "expires": _time(version.expires),
        "enabled": version.enabled,
        "content_type": version.content_type,
        "tags": dict(version.tags),
    }


def _problem(err: PolicyError) -> str:
    return str(err).removeprefix(f"tag {err.tag}: ")


def _time(moment: datetime | None) -> str | None:
    return format_time(moment) if moment is not None else None


def _refuse_reserved(name: str, reserved: Collection[str]) -> None:
    if is_reserved(name, reserved):
        raise Conflict(f"secret {name} is the service's own secret: it is never changed through this API")


# -- list -------------------------------------------------------------------------------------------


def list_managed(
    store: SecretStore,
    states: StateStore,
    clock: Clock,
    *,
    reserved: Collection[str],
    limit: int = 50,
    after: str | None = None,
) -> dict[str, Any]:
    """One page of the managed secrets, sorted by name (case-insensitive), after the name ``after``.

    The vault is listed once and read once per secret on the page; the rotation progress of every secret
    is one read. Invalid policies are listed with the violation. Returns {"items", "continuation"}
    (the last name of the page when more follow). Raises DependencyUnavailable, Forbidden."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit is 1-{MAX_PAGE}")
    if after is not None:
        validate_name(after)
    managed = sorted(
        (
            item
            for item in store.list_properties()
            if RotationPolicy.is_managed(item.tags) and not is_reserved(item.name, reserved)
        ),
        key=lambda item: item.name.lower(),
    )
    if after is not None:
        managed = [item for item in managed if item.name.lower() > after.lower()]
    page, more = managed[:limit], len(managed) > limit
    progress = progress_rows(states)
    now = clock.now()
    items = []
    for item in page:
        try:
            current: SecretItem = store.get_properties(item.name)
        except SecretDisabled:
            current = item  # the id of a disabled current version cannot be read
        except NotFound:
            continue  # deleted since the listing
        stored = progress.get(item.name.lower())
        items.append(_summary(current, stored, now, reserved))
    return {"items": items, "continuation": page[-1].name if more and page else None}


def _summary(
    current: SecretItem, stored: Versioned | None, now: datetime, reserved: Collection[str]
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": current.name,
        "version": current.version if isinstance(current, SecretVersion) else None,
        "created": _time(current.created),
        "expires": _time(current.expires),
        "enabled": current.enabled,
    }
    entry.update(_policy_view(current, now, reserved))
    entry["state"] = _state(stored, now)
    return entry


def _policy_view(current: SecretItem, now: datetime, reserved: Collection[str]) -> dict[str, Any]:
    """policy / violation / next_due / due_now of a managed secret's current version."""
    view: dict[str, Any] = {"policy": None, "violation": None, "next_due": None, "due_now": False}
    if current.managed:
        view["violation"] = {"tag": MANAGED_BY_TAG, "problem": "backs a certificate: renew the certificate"}
        return view
    try:
        policy = RotationPolicy.from_tags(current.tags, name=current.name, reserved=reserved)
    except PolicyError as err:
        view["violation"] = {"tag": err.tag, "problem": _problem(err)}
        return view
    due = policy.next_rotation(current.created, current.expires)
    view.update(policy=policy_dict(policy), next_due=format_time(due), due_now=current.enabled and now >= due)
    return view


def _state(stored: Versioned | None, now: datetime) -> dict[str, Any]:
    """idle / the write in flight (step, id, attempt, lease) and the last error of the rotation progress;
    ``tampered`` with the failed check when its row's seal is missing or wrong (nothing acts on it)."""
    if stored is None:
        return {"status": IDLE, "last_error": None}
    if stored.tampered is not None:
        return {"status": TAMPERED, "last_error": f"the stored state is tampered: {stored.tampered}"}
    progress = Progress.of(stored.state)
    state: dict[str, Any] = {"status": progress.step, "last_error": progress.last_error}
    if progress.step != IDLE:
        state.update(
            rotation_id=progress.rotation_id,
            attempt=progress.attempt,
            lease_until=progress.lease_until,
            lease_live=progress.leased_by_other("", now),
        )
    return state


# -- onboard and policy ---------------------------------------------------------------------------------


def onboard(
    store: SecretStore,
    states: StateStore,
    trail: AuditTrail,
    clock: Clock,
    *,
    reserved: Collection[str],
    name: str,
    policy: RotationPolicy,
    actor: Actor,
    correlation_id: str | None = None,
    rotators: Mapping[Rotator, TargetRotator] | None = None,
) -> SecretVersion:
    """Create ``name`` with ``policy`` and a first value from its kind's generator; return the new
    version's properties (never the value). The version carries the policy and the service's tags, and
    the target rotator's (a webhook's signing key, created now so the consumer can have it before the
    first rotation).

    Raises InvalidSecret (name), Conflict (reserved, exists, deleted but recoverable), Busy (another write
    holds the lease), AuditUnavailable (nothing written), DomainError from the vault, OutcomeNotRecorded
    (the secret was created, its success record failed)."""
    validate_name(name)
    _refuse_reserved(name, reserved)
    stored = states.get(PARTITION, name.lower())
    try:
        store.get_properties(name)
        raise Conflict(f"secret {name} exists already: set its policy with PUT .../policy")
    except SecretDisabled:
        raise Conflict(f"secret {name} exists already (its current version is disabled)") from None
    except NotFound:
        pass
    progress, etag = acquire(states, name, stored, ONBOARDING, clock)
    assert progress.rotation_id is not None
    details = {"onboarding_id": progress.rotation_id, "policy": policy_dict(policy)}
    fields: dict[str, Any] = {"secret_name": name, "actor": actor, "correlation_id": correlation_id}
    new: SecretVersion | None = None
    try:
        trail.record(Action.SECRET_ONBOARDED, result=Result.INTENT, details=details, **fields)
        value = generate(policy.kind)
        try:
            extra = _target_tags(name, policy, rotators, bind=True)
            new = store.set_value(
                name,
                value.value,
                content_type=value.content_type,
                tags={**extra, **policy.to_tags(), **service_tags(progress.rotation_id)},
                expires=policy.expires_on(clock.now()),
            )
        except DomainError as err:
            _failed(trail, Action.SECRET_ONBOARDED, err, details, fields)
            if isinstance(err, Conflict):
                raise Conflict(
                    f"secret {name} exists or is deleted but recoverable: recover or purge it first"
                ) from err
            raise
        try:
            trail.record(Action.SECRET_ONBOARDED, version=new.version, details=details, **fields)
        except AuditUnavailable as err:
            raise OutcomeNotRecorded.after(
                f"secret {name} was created (version {new.version})", err, version=new.version
            ) from err
    finally:
        release(states, name, progress, etag, new_version=new.version if new else None)
    return new


def apply_policy(
    store: SecretStore,
    states: StateStore,
    trail: AuditTrail,
    clock: Clock,
    *,
    reserved: Collection[str],
    name: str,
    fields: PolicyInput,
    actor: Actor,
    correlation_id: str | None = None,
    rotators: Mapping[Rotator, TargetRotator] | None = None,
) -> RotationPolicy:
    """Set ``name``'s policy on its current version: the policy tags are replaced, every other tag kept;
    an unmanaged secret becomes managed (then ``kind`` is required). Returns the policy applied. A target
    rotator's tags are set too (a webhook's signing key, created now).

    Raises InvalidSecret (name, too many tags), NotFound, InvalidPolicy (naming the field), Conflict
    (reserved, certificate-backed, disabled), Busy, AuditUnavailable (nothing changed), OutcomeNotRecorded
    (the policy was applied, its success record failed)."""
    validate_name(name)
    _refuse_reserved(name, reserved)
    stored = states.get(PARTITION, name.lower())
    current = _writable(store, name)
    kind = fields.kind
    if kind is None:
        if not RotationPolicy.is_managed(current.tags):
            raise InvalidPolicy("kind", "is required to put an unmanaged secret under management")
        kind = current.tags.get(KIND_TAG)
    policy = build_policy(replace(fields, kind=kind), name=name, reserved=reserved)
    kept = {k: v for k, v in current.tags.items() if k not in POLICY_TAGS and k != SIGNING_KEY_TAG}
    tags = kept | _target_tags(name, policy, rotators) | policy.to_tags()
    validate_tags(tags)
    progress, etag = acquire(states, name, stored, UPDATING_POLICY, clock, from_version=current.version)
    previous = {k: v for k, v in current.tags.items() if k in POLICY_TAGS}
    details = {"policy": policy_dict(policy), "previous_tags": previous}
    audit: dict[str, Any] = {"secret_name": name, "actor": actor, "correlation_id": correlation_id}
    try:
        trail.record(
            Action.POLICY_CHANGED, version=current.version, result=Result.INTENT, details=details, **audit
        )
        try:
            _target_tags(name, policy, rotators, bind=True)  # the consumer bound before the policy names it
            store.update_properties(name, current.version, tags=tags)
        except DomainError as err:
            _failed(trail, Action.POLICY_CHANGED, err, details, {**audit, "version": current.version})
            raise
        try:
            trail.record(Action.POLICY_CHANGED, version=current.version, details=details, **audit)
        except AuditUnavailable as err:
            raise OutcomeNotRecorded.after(
                f"the policy of secret {name} was applied (version {current.version})",
                err,
                version=current.version,
            ) from err
    finally:
        release(states, name, progress, etag, new_version=None)
    return policy


def _target_tags(
    name: str, policy: RotationPolicy, rotators: Mapping[Rotator, TargetRotator] | None, *, bind: bool = False
) -> dict[str, str]:
    """The tags the policy's target rotator puts on the secret's versions; ``bind``: first make the
    target this secret's consumer (a webhook's signing key, bound to the secret and its URL): only ever
    under the secret's write lease, after the intent record. Raises TargetRefused, DependencyUnavailable."""
    target = (rotators or {}).get(policy.rotator)
    if target is None:
        return {}
    secret = TargetSecret(name, None, policy.target, "")
    return target.bind(secret) if bind else target.tags(secret)


def _writable(store: SecretStore, name: str) -> SecretVersion:
    try:
        current = store.get_properties(name)
    except SecretDisabled:
        raise Conflict(f"secret {name}: the current version is disabled") from None
    if current.managed:
        raise Conflict(f"secret {name} backs a certificate: renew the certificate instead")
    return current


def _failed(
    trail: AuditTrail, action: Action, err: DomainError, details: Mapping[str, Any], fields: Mapping[str, Any]
) -> None:
    try:
        trail.record(
            action,
            result=Result.FAILURE,
            details={**details, "error_class": type(err).__name__},
            error=str(err)[:500],
            **fields,
        )
    except DomainError:
        logger.exception("%s failure could not be audited", action.value)


# -- rotate -------------------------------------------------------------------------------------------


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
    store: SecretStore,
    states: StateStore,
    clock: Clock,
    *,
    reserved: Collection[str],
    name: str,
    force: bool,
    stall_after: timedelta = STALL_AFTER,
) -> dict[str, Any]:
    """A dry run: whether a rotation would happen now and why. Writes nothing. Raises NotFound."""
    stored = _progress_row(states, name)
    found = _rotation_target(store, name, reserved)
    now = clock.now()
    if stored is not None and stored.tampered is not None:
        why = f"its rotation state is tampered ({stored.tampered}): nothing acts on it"
        return {"name": name, "would_rotate": False, "force": force, "in_progress": None, "reason": why}
    progress = Progress.of(stored.state) if stored else None
    in_flight = progress is not None and progress.leased_by_other("", now)
    plan: dict[str, Any] = {"name": name, "would_rotate": False, "force": force}
    plan["in_progress"] = (
        {"rotation_id": progress.rotation_id, "step": progress.step, "lease_until": progress.lease_until}
        if progress is not None and in_flight
        else None
    )
    if isinstance(found, str):
        return {**plan, "reason": found}
    current, policy = found
    due = policy.next_rotation(current.created, current.expires)
    plan.update(
        current_version=current.version,
        created=format_time(current.created),
        expires=_time(current.expires),
        next_due=format_time(due),
        due_now=now >= due,
        rotator=policy.rotator.value,
    )
    if now >= due:  # a lease held too long is a stall too: said whatever else the plan says
        stalled = stall(DueSecret(current.name, current.created, due), stored, now, stall_after)
        if stalled is not None:
            plan["stalled"] = {"since": format_time(stalled.since), "reason": stalled.reason}
    if in_flight:
        return {**plan, "reason": "a rotation or rollback is in progress"}
    if now >= due:
        return {**plan, "would_rotate": True, "reason": _due_reason(current, policy, now).value}
    if force:
        return {**plan, "would_rotate": True, "reason": "forced"}
    return {**plan, "reason": f"not due until {format_time(due)}"}


def _due_reason(current: SecretItem, policy: RotationPolicy, now: datetime) -> RotationReason:
    return RotationReason.DUE if now >= current.created + policy.interval else RotationReason.NEAR_EXPIRY


def request_rotation(
    store: SecretStore,
    states: StateStore,
    requests: RotationRequests,
    trail: AuditTrail,
    clock: Clock,
    *,
    reserved: Collection[str],
    name: str,
    force: bool,
    actor: Actor,
    correlation_id: str,
) -> RotationTicket:
    """Check that ``name`` can be rotated now and ask for it, with an id of its own: it joins the rotation
    running or the request queued for the secret (concurrent requests make one rotation, whose outcome
    names every id), or it is queued for ``rotate_secret`` (so retries and the poison queue apply).

    Raises NotFound, NotManaged / PolicyConflict (naming the tag), Conflict (reserved, certificate-backed,
    disabled, rotator unavailable, not due without ``force``, another kind of write in progress, too many
    requests joined), AuditUnavailable or DependencyUnavailable (nothing queued). A request that was
    queued or joined is answered so even when its success record fails (logged): asking again would
    rotate twice."""
    current, policy = _rotatable_now(store, name, reserved)
    now = clock.now()
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
    )
    assert request.rotation_id is not None
    details: dict[str, Any] = {"rotation_id": request.rotation_id, "force": force}
    fields: dict[str, Any] = {"secret_name": name, "actor": actor, "correlation_id": correlation_id}
    trail.record(
        Action.ROTATION_REQUESTED, version=current.version, result=Result.INTENT, details=details, **fields
    )
    try:
        status, joined = register_request(states, name, request.rotation_id, force, clock)
        if joined is None:
            try:
                requests.send([request])
            except DomainError:
                unregister_request(states, trail, name, request.rotation_id, correlation_id)
                raise
    except DomainError as err:
        _failed(trail, Action.ROTATION_REQUESTED, err, details, {**fields, "version": current.version})
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


def _rotatable_now(
    store: SecretStore, name: str, reserved: Collection[str]
) -> tuple[SecretVersion, RotationPolicy]:
    validate_name(name)
    _refuse_reserved(name, reserved)
    current = _writable(store, name)
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


# -- status ------------------------------------------------------------------------------------------


def secret_status(
    store: SecretStore,
    states: StateStore,
    reader: AuditReader,
    clock: Clock,
    *,
    reserved: Collection[str],
    vault: str,
    name: str,
    stall_after: timedelta = STALL_AFTER,
) -> dict[str, Any]:
    """Everything known about one secret's rotation: policy (or violation), current version, next due,
    whether (and why) its rotation stalled, the write in flight, the last rotation and failure, and the
    scheduled retirements. Never a value. Raises InvalidSecret, NotFound, DependencyUnavailable."""
    validate_name(name)
    key = name.lower()
    stored = _progress_row(states, name)
    now = clock.now()
    try:
        current: SecretItem = store.get_properties(name)
    except SecretDisabled:
        # The vault does not say which version is current then: the newest stands for its properties,
        # without claiming its id.
        newest = max(store.list_versions(name), key=lambda v: v.created)  # NotFound when gone
        current = SecretItem(**{k: getattr(newest, k) for k in SecretItem.__dataclass_fields__})
    status: dict[str, Any] = {
        "name": current.name,
        "version": current.version if isinstance(current, SecretVersion) else None,
        "created": _time(current.created),
        "expires": _time(current.expires),
        "enabled": current.enabled,
        "managed": RotationPolicy.is_managed(current.tags) and not is_reserved(name, reserved),
        "reserved": is_reserved(name, reserved),
    }
    if status["managed"]:
        status.update(_policy_view(current, now, reserved))
    else:
        status.update(policy=None, violation=None, next_due=None, due_now=False)
    progress = Progress.of(stored.state) if stored and stored.tampered is None else None
    status["state"] = _state(stored, now)
    status["last_rotation"] = _last_rotation(reader, vault, name, progress)
    status["last_failure"] = _last_failure(reader, vault, name, progress)
    retire = _row(states, schedule_key(key))
    status["retirements"] = [
        {"version": version, "after": format_time(after)}
        for version, after in (retirements(retire.state) if retire else [])
        if version != status["version"]  # planned by a rotation in flight (or one that failed)
    ]
    status["stalled"] = _stalled(current, status, stored, now, stall_after)
    return status


def _stalled(
    current: SecretItem, view: Mapping[str, Any], stored: Versioned | None, now: datetime, after: timedelta
) -> dict[str, Any] | None:
    """Why a due secret's rotation stalled (``shared.services.stalls``), or None."""
    if not view.get("due_now") or view.get("next_due") is None:
        return None
    due = DueSecret(current.name, current.created, parse_time(view["next_due"]))
    found = stall(due, stored, now, after)
    return None if found is None else {"since": format_time(found.since), "reason": found.reason}


def _progress_row(states: StateStore, name: str) -> Versioned | None:
    return _row(states, name.lower())


def _row(states: StateStore, key: str) -> Versioned | None:
    """A row of the rotation partition for a read-only view: a tampered one with its check (reported by
    the store) instead of an error, so status and plan say why nothing acts on it."""
    return get_as_found(states, PARTITION, key)


def _newest(
    reader: AuditReader, vault: str, name: str, action: Action, result: Result
) -> dict[str, Any] | None:
    page = query_audit(reader, AuditQuery(vault=vault, secret_name=name, action=action, limit=500))
    return next((item for item in page.items if item.get("result") == result.value), None)


def _last_rotation(reader: AuditReader, vault: str, name: str, progress: Progress | None) -> dict[str, Any]:
    record = _newest(reader, vault, name, Action.ROTATED, Result.SUCCESS)
    rotated = None
    if record is not None:
        details = record.get("details") or {}
        rotated = {
            "time": record.get("time"),
            "version": record.get("version"),
            "previous_version": details.get("previous_version"),
            "rotation_id": details.get("rotation_id"),
        }
    last_write = None
    if progress is not None and progress.step == IDLE and progress.new_version:
        last_write = {"rotation_id": progress.rotation_id, "new_version": progress.new_version}
    return {"recorded": rotated, "last_write": last_write}


def _last_failure(
    reader: AuditReader, vault: str, name: str, progress: Progress | None
) -> dict[str, Any] | None:
    record = _newest(reader, vault, name, Action.ROTATION_FAILED, Result.FAILURE)
    if record is None and (progress is None or not progress.last_error):
        return None
    failure: dict[str, Any] = {"error_class": progress.last_error if progress else None}
    if record is not None:
        details = record.get("details") or {}
        failure.update(
            time=record.get("time"),
            version=record.get("version"),
            rotation_id=details.get("rotation_id"),
            step=details.get("step"),
            error=record.get("error"),
        )
        failure["error_class"] = failure["error_class"] or details.get("error_class")
    return failure


# -- plan --------------------------------------------------------------------------------------------


def rotation_plan(
    store: SecretStore, clock: Clock, *, reserved: Collection[str], within_days: int
) -> dict[str, Any]:
    """From one listing: the managed secrets that would rotate within ``within_days`` (when, and why:
    interval or near_expiry), every enabled secret whose ``exp`` falls within the window (or has passed),
    managed or not, and invalid policies. Reserved secrets are left out. Raises DependencyUnavailable."""
    if not 1 <= within_days <= 365:
        raise ValueError("within_days is 1-365")
    now = clock.now()
    until = now + timedelta(days=within_days)
    items: list[dict[str, Any]] = []
    violations: list[dict[str, Any]] = []
    for item in store.list_properties():
        if is_reserved(item.name, reserved) or not item.enabled:
            continue
        managed = RotationPolicy.is_managed(item.tags) and not item.managed
        if item.expires is not None and item.expires <= until:
            items.append(
                {
                    "when": format_time(item.expires),
                    "name": item.name,
                    "event": "expiry",
                    "managed": managed,
                    "expired": item.expires <= now,
                }
            )
        if not managed:
            continue
        try:
            policy = RotationPolicy.from_tags(item.tags, name=item.name, reserved=reserved)
        except PolicyError as err:
            violations.append({"name": item.name, "tag": err.tag, "problem": _problem(err)})
            continue
        due = policy.next_rotation(item.created, item.expires)
        if due <= until:
            reason = "interval" if item.created + policy.interval <= _near_expiry(item) else "near_expiry"
            items.append(
                {
                    "when": format_time(due),
                    "name": item.name,
                    "event": "rotation",
                    "reason": reason,
                    "rotator": policy.rotator.value,
                    "due_now": now >= due,
                }
            )
    items.sort(key=lambda entry: (parse_time(entry["when"]), entry["name"].lower(), entry["event"]))
    violations.sort(key=lambda entry: entry["name"].lower())
    return {
        "within_days": within_days,
        "now": format_time(now),
        "until": format_time(until),
        "items": items,
        "violations": violations,
    }


def _near_expiry(item: SecretItem) -> datetime:
    """Start of the current version's near-expiry window (never, without ``exp``)."""
    return (
        item.expires - NEAR_EXPIRY
        if item.expires is not None
        else datetime.max.replace(tzinfo=item.created.tzinfo)
    )
