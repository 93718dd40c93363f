"""Onboarding a managed secret and setting its policy: the policy as the HTTP body gives it, checked by the
same rules as stored tags, written under the secret's lease and audited intent-first."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from shared.domain.audit import Action, Actor, Result
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
from shared.domain.secrets import MAX_TAGS, InvalidSecret, SecretVersion, validate_name, validate_tags
from shared.domain.targets import SIGNING_KEY_TAG, TargetSecret, is_reserved
from shared.ports import SecretStore, TargetRotator
from shared.services.audit import AuditTrail, AuditUnavailable
from shared.services.catalog.results import CurrentPolicy, SecretProperties
from shared.services.peers import Peers
from shared.services.rotation import (
    PARTITION,
    acquire,
    release,
    service_tags,
)

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
        raise InvalidPolicy(FIELD_OF_TAG.get(err.tag, err.tag), problem_text(err)) from None
    if onboarding and policy.rotator in _BROUGHT_VALUES:
        raise InvalidPolicy(
            "rotator",
            f"a {policy.rotator.value} secret starts with a connection document that already logs in: "
            "store it in Key Vault (content type application/json), then PUT its policy",
        )
    return policy


def current_policy(policy: RotationPolicy) -> CurrentPolicy:
    """A policy as structured fields (the body's names)."""
    grace = int(policy.grace.total_seconds() // 3600) if policy.grace is not None else None
    return CurrentPolicy(
        kind=policy.kind,
        rotation_interval_days=policy.interval.days,
        validity_days=policy.validity.days if policy.validity else None,
        owner=policy.owner,
        rotator=policy.rotator,
        rotation_target=policy.target,
        rotation_grace_hours=grace,
        expiry_warning_days=list(policy.warning_days),
    )


def policy_dict(policy: RotationPolicy) -> dict[str, Any]:
    """A policy as structured fields, as JSON (in records and answers)."""
    return current_policy(policy).to_json()


def properties_of(version: SecretVersion) -> SecretProperties:
    """A version's properties as an answer: never a value."""
    return SecretProperties(
        name=version.name,
        version=version.version,
        created=version.created,
        expires=version.expires,
        enabled=version.enabled,
        content_type=version.content_type,
        tags=dict(version.tags),
    )


def problem_text(err: PolicyError) -> str:
    return str(err).removeprefix(f"tag {err.tag}: ")


def refuse_reserved(name: str, reserved: Collection[str]) -> None:
    if is_reserved(name, reserved):
        raise Conflict(f"secret {name} is the service's own secret: it is never changed through this API")


# -- onboard and policy --------------------------------------------------------------------------------


def onboard(
    peers: Peers, name: str, policy: RotationPolicy, *, actor: Actor, correlation_id: str | None = None
) -> SecretVersion:
    """Create ``name`` with ``policy`` and a first value from its kind's generator; return the new
    version's properties (never the value). The version carries the policy and the service's tags, and
    the target rotator's (a webhook's signing key, created now so the consumer can have it before the
    first rotation).

    Raises InvalidSecret (name), Conflict (reserved, exists, deleted but recoverable), Busy (another write
    holds the lease), AuditUnavailable (nothing written), DomainError from the vault, OutcomeNotRecorded
    (the secret was created, its success record failed)."""
    store, states, trail, clock = peers.store, peers.states, peers.trail, peers.clock
    reserved, rotators = peers.reserved, peers.rotators
    validate_name(name)
    refuse_reserved(name, reserved)
    stored = states.get(PARTITION, name.lower())
    try:
        store.get_properties(name)
        raise Conflict(f"secret {name} exists already: set its policy with PUT .../policy")
    except SecretDisabled:
        raise Conflict(f"secret {name} exists already (its current version is disabled)") from None
    except NotFound:
        pass
    progress, etag = acquire(peers, name, stored, ONBOARDING)
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
            record_failed(trail, Action.SECRET_ONBOARDED, err, details, fields)
            if isinstance(err, Conflict):
                # The service never purges: say what can be done instead.
                raise Conflict(
                    f"secret {name} is deleted but recoverable: recover it (POST /api/secrets/{name}/recover)"
                    " or choose another name; the name is free again once the vault's retention purged it"
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
    peers: Peers, name: str, fields: PolicyInput, *, actor: Actor, correlation_id: str | None = None
) -> RotationPolicy:
    """Set ``name``'s policy on its current version: the policy tags are replaced, every other tag kept;
    an unmanaged secret becomes managed (then ``kind`` is required). Returns the policy applied. A target
    rotator's tags are set too (a webhook's signing key, created now).

    Raises InvalidSecret (name, too many tags), NotFound, InvalidPolicy (naming the field), Conflict
    (reserved, certificate-backed, disabled), Busy, AuditUnavailable (nothing changed), OutcomeNotRecorded
    (the policy was applied, its success record failed)."""
    store, states, trail = peers.store, peers.states, peers.trail
    reserved, rotators = peers.reserved, peers.rotators
    validate_name(name)
    refuse_reserved(name, reserved)
    stored = states.get(PARTITION, name.lower())
    current = writable_version(store, name)
    kind = fields.kind
    if kind is None:
        if not RotationPolicy.is_managed(current.tags):
            raise InvalidPolicy("kind", "is required to put an unmanaged secret under management")
        kind = current.tags.get(KIND_TAG)
    policy = build_policy(replace(fields, kind=kind), name=name, reserved=reserved)
    kept = {k: v for k, v in current.tags.items() if k not in POLICY_TAGS and k != SIGNING_KEY_TAG}
    added = _target_tags(name, policy, rotators) | policy.to_tags()
    tags = kept | added
    if len(tags) > MAX_TAGS:  # the secret's own tags leave no room: the fault is the secret's, not a field's
        raise InvalidSecret(
            f"secret {name} carries {len(kept)} tags of its own and this policy needs {len(added)}: "
            f"a version has at most {MAX_TAGS} tags"
        )
    validate_tags(tags)
    progress, etag = acquire(peers, name, stored, UPDATING_POLICY, from_version=current.version)
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
            record_failed(trail, Action.POLICY_CHANGED, err, details, {**audit, "version": current.version})
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


def writable_version(store: SecretStore, name: str) -> SecretVersion:
    """The current version, when this service may write over it. Raises Conflict (disabled, backs a
    certificate), NotFound."""
    try:
        current = store.get_properties(name)
    except SecretDisabled:
        raise Conflict(f"secret {name}: the current version is disabled") from None
    if current.managed:
        raise Conflict(f"secret {name} backs a certificate: renew the certificate instead")
    return current


def record_failed(
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
