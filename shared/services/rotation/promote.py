"""The rotation protocol once the lease is held: the pending value (through a target rotator: stored in
the pending companion, set and tested at the target), the one new version (an ``intent`` record before,
a success record after: fail closed), the ``SecretRotated`` event, the progress closed; and the failure
path (``ROTATION_FAILED``, the lease released or the rotation closed, ``RotationFailed``)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any

from shared.domain.audit import Action, Result
from shared.domain.errors import Conflict, DependencyUnavailable, DomainError, NotFound, SecretDisabled
from shared.domain.generators import NewValue, generate
from shared.domain.notifications import ROTATION_FAILED, Notification
from shared.domain.policy import RotationPolicy
from shared.domain.progress import (
    IDLE,
    PREVIOUS_VERSION_TAG,
    ROTATION_ID_TAG,
    Progress,
    service_tags,
)
from shared.domain.secrets import SecretVersion
from shared.domain.targets import (
    PENDING_FOR_TAG,
    TargetRefused,
    TargetSecret,
    pending_secret_name,
)
from shared.ports import SecretStore, TargetRotator
from shared.services.audit import AuditTrail
from shared.services.peers import Peers
from shared.services.rotation.lease import Held, ours, release_now, renew, save_own, write_own
from shared.services.rotation.outcomes import RotationOutcome, announce, joined_details

logger = logging.getLogger(__name__)


class ClosePending(Exception):
    """The new version exists but its success could not be recorded: the progress stays open, so the
    retry finds the version (by its rotation id) and records it. Not a failed rotation."""

    def __init__(self, cause: DomainError) -> None:
        super().__init__(str(cause))
        self.cause = cause


def promote(peers: Peers, held: Held, policy: RotationPolicy, current: SecretVersion, reason: str) -> str:
    """The one new version of this rotation (made now, or found: made before a crash), then its success
    on record, ``SecretRotated`` sent and the progress closed. Raises LeaseLost when another holder took
    the lease meanwhile, TargetRefused / DependencyUnavailable from the target rotator (nothing promoted
    then), ClosePending when the version is made but its close could not be recorded."""
    progress = held.progress
    assert progress.rotation_id is not None and progress.from_version is not None
    target = peers.rotators.get(policy.rotator)
    details = {
        "rotation_id": progress.rotation_id,
        "attempt": progress.attempt,
        "rotator": policy.rotator.value,
    }
    if current.tags.get(ROTATION_ID_TAG) == progress.rotation_id:
        new = current  # promoted before a crash: never a second version
    else:
        peers.trail.record(
            Action.ROTATED,
            secret_name=held.name,
            version=progress.from_version,
            result=Result.INTENT,
            correlation_id=held.correlation_id,
            details=details,
        )
        # The one write that cannot be made conditional needs the lease to outlast it.
        renew(peers.states, held, peers.clock)
        new = _write_version(peers, held, policy, current, target)
    if target is not None:
        discard_pending(peers.store, held.name, progress.rotation_id)  # also when promoted before a crash
    try:
        # On record before the progress closes: a failure here leaves it open, and the retry records it.
        # It names every request that joined this rotation (each is done with it).
        peers.trail.record(
            Action.ROTATED,
            secret_name=held.name,
            version=new.version,
            correlation_id=held.correlation_id,
            details={**details, "previous_version": progress.from_version, **joined_details(progress)},
        )
    except DomainError as err:
        raise ClosePending(err) from err
    # Sent before the progress closes: a crash in between sends it again on retry (same event id: the
    # rotation id), where sending it after would lose it for good — and consumers of a single-user
    # database credential learn from it that the old value stopped working.
    made = RotationOutcome(
        held.name, "rotated", reason, progress.rotation_id, new.version, progress.from_version
    )
    announce(peers.publisher, peers.clock, peers.trail.vault, made)
    _close(peers, held, new.version)
    return new.version


def _write_version(
    peers: Peers, held: Held, policy: RotationPolicy, current: SecretVersion, target: TargetRotator | None
) -> SecretVersion:
    """The new version in the vault: a generated value, or (through a target rotator) the pending value
    the target took and accepted; tagged with the policy and this rotation's id."""
    progress = held.progress
    assert progress.rotation_id is not None and progress.from_version is not None
    value = generate(policy.kind)
    extra: dict[str, str] = {}
    if target is not None:
        secret = TargetSecret(
            held.name, progress.rotation_id, policy.target, _value(peers.store, held.name, current)
        )
        value = _target_value(peers.store, held.name, target, secret, value, current.content_type)
        extra = target.tags(secret)
    created = peers.clock.now()
    tags = {
        **extra,
        **policy.to_tags(),
        **service_tags(progress.rotation_id),
        PREVIOUS_VERSION_TAG: progress.from_version,
    }
    return peers.store.set_value(
        held.name, value.value, content_type=value.content_type, tags=tags, expires=policy.expires_on(created)
    )


def _close(peers: Peers, held: Held, version: str) -> None:
    """Close the rotation that made ``version``. Requests that joined after its success was recorded get
    their own outcome first (ROTATION_SKIPPED: they joined it, naming the version), then the close is
    tried again with them. A row that changed or vanished meanwhile (a takeover, a storage writer) does
    not make this a failed rotation: the version is made and on record. Raises ClosePending when the row
    cannot be written (the retry finds the version made, and records, announces and closes again)."""
    rotation_id = held.progress.rotation_id

    def late(joined: list[str]) -> None:
        peers.trail.record(
            Action.ROTATION_SKIPPED,
            secret_name=held.name,
            version=version,
            correlation_id=held.correlation_id,
            details={
                "reason": f"joined rotation {rotation_id}",
                "rotation_id": rotation_id,
                "joined": joined,
            },
        )

    try:
        write_own(peers.states, held, closing=version, joined=late)
    except (Conflict, NotFound):
        logger.warning("rotation progress of %s changed before it could be closed", held.name)
    except DomainError as err:
        raise ClosePending(err) from err


def _value(store: SecretStore, name: str, version: SecretVersion) -> str:
    """A version's value for a target rotator. A version that turned disabled meanwhile is a refusal: the
    target's current credential cannot be known."""
    try:
        return store.get_value(name, version.version).value
    except SecretDisabled as err:
        raise TargetRefused("pending", f"the current version {version.version} is disabled") from err


def _target_value(
    store: SecretStore,
    name: str,
    target: TargetRotator,
    secret: TargetSecret,
    generated: NewValue,
    content_type: str | None,
) -> NewValue:
    """The pending value of this rotation, set and tested at the target. It is stored in Key Vault (the
    secret's pending companion, tagged with the rotation id) before the target sees it, so a crash after
    the target accepted it is resumed with the same value, never lost; a retry finds it there and the
    target's set is a no-op for a value it already has. Raises TargetRefused, DependencyUnavailable."""
    companion = pending_secret_name(name)
    stored = _stored_pending(store, companion, name, secret.current)
    resumed = dataclasses.replace(secret, resumed=True)
    if stored is not None and stored[1] == secret.rotation_id:
        value, secret = stored[0], resumed  # this rotation's, from before a crash
    elif stored is not None and _accepted(target, resumed, stored[0]):
        # Another attempt's (its progress row was lost or closed): promoted only because the target
        # accepts it already — never set there, so a value planted in the companion goes nowhere.
        return NewValue(stored[0], content_type or generated.content_type)
    else:
        value = target.pending(secret, generated.value)
        store.set_value(
            companion,
            value,
            content_type=content_type or generated.content_type,
            tags={PENDING_FOR_TAG: name.lower(), **service_tags(secret.rotation_id or "")},
        )
    target.set(secret, value)
    target.test(secret, value)
    return NewValue(value, content_type or generated.content_type)


def _accepted(target: TargetRotator, secret: TargetSecret, value: str) -> bool:
    """Whether the target accepts ``value`` already (its ``test``); a refusal or no answer is a no."""
    try:
        target.test(secret, value)
    except (TargetRefused, DependencyUnavailable):
        return False
    return True


def _stored_pending(
    store: SecretStore, companion: str, name: str, current: str
) -> tuple[str, str | None] | None:
    """The pending value an earlier attempt stored and nothing promoted yet, with the rotation id it
    carries, or None. Not only this rotation's: whatever happened to the progress row (a takeover, a
    storage writer deleting it, a refusal after the target took it), a pending value still enabled may be
    the one the target accepts now (a single user's password changed before the crash). One equal to the
    current value was promoted already. Raises TargetRefused when the companion's name is taken by a
    secret that is not this secret's companion."""
    try:
        stored = store.get_value(companion)
    except (NotFound, SecretDisabled):
        return None
    tags = stored.properties.tags
    if tags.get(PENDING_FOR_TAG) != name.lower():
        raise TargetRefused("pending", f"the secret {companion} is not the pending companion of {name}")
    return None if stored.value == current else (stored.value, tags.get(ROTATION_ID_TAG))


def discard_pending(store: SecretStore, name: str, rotation_id: str | None) -> None:
    """Disable the pending companion's version of this rotation once it is promoted (or refused), so the
    value is not readable twice. Best effort: a version left enabled is disabled by the next rotation."""
    companion = pending_secret_name(name)
    try:
        versions = store.list_versions(companion)
        for version in versions:
            if version.enabled and version.tags.get(PENDING_FOR_TAG) == name.lower():
                store.update_properties(companion, version.version, enabled=False)
    except NotFound:
        return
    except DomainError:
        logger.warning("the pending value of %s (rotation %s) could not be disabled", name, rotation_id)


def fail(peers: Peers, held: Held, err: DomainError, *, close: bool = False) -> None:
    """Record the failure (naming the requests that joined), then release the lease (the progress stays,
    so a retry resumes) or, with ``close``, end the rotation (nothing to resume; the joined requests end
    with it), then notify. Each part is best effort: the failure itself is what the caller sees."""
    progress = held.progress
    with contextlib.suppress(DomainError):
        stored = ours(peers.states, held)
        if stored is not None:
            progress.merge_joined(Progress.of(stored.state))
    step = err.step if isinstance(err, TargetRefused) else "promote"
    details = {
        "rotation_id": progress.rotation_id,
        "step": step,
        "attempt": progress.attempt,
        **joined_details(progress),
    }
    recorded = _record_failure(peers.trail, held, details, err)
    if close:
        named = progress.alias_list() if recorded else []

        def ended(row: Progress) -> None:
            # Closed for good: neither a retry nor the sweep's resumption acts on it again. The requests the
            # failure named are done; any that joined since wait for the next rotation.
            row.step, row.holder, row.lease_until, row.last_error = IDLE, None, None, type(err).__name__
            row.done_with(named)

        save_own(peers.states, held, ended)
    else:
        release_now(peers.states, held, peers.clock, err)
    try:
        data = {**details, "vault": peers.trail.vault}
        peers.publisher.publish(
            [Notification(type=ROTATION_FAILED, subject=held.name, time=peers.clock.now(), data=data)]
        )
    except DomainError:
        logger.exception("RotationFailed of %s could not be sent", held.name)


def _record_failure(trail: AuditTrail, held: Held, details: dict[str, Any], err: DomainError) -> bool:
    """ROTATION_FAILED on record; whether it could be."""
    try:
        trail.record(
            Action.ROTATION_FAILED,
            secret_name=held.name,
            version=held.progress.from_version,
            result=Result.FAILURE,
            correlation_id=held.correlation_id,
            details={**details, "error_class": type(err).__name__},
            error=str(err)[:500],
        )
    except DomainError:
        logger.exception("ROTATION_FAILED of %s could not be audited", held.name)
        return False
    return True
