"""The rotation protocol once the lease is held: the pending value (through a target rotator: stored in
the pending companion, set and tested at the target), the one new version (an ``intent`` record before,
a success record after: fail closed), the ``SecretRotated`` event, the progress closed; and the failure
path (``ROTATION_FAILED``, the lease released or the rotation closed, ``RotationFailed``)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable

from shared.domain.audit import Action, Result, format_time
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
from shared.domain.state import LEASE
from shared.domain.targets import (
    PENDING_FOR_TAG,
    TargetRefused,
    TargetSecret,
    pending_secret_name,
)
from shared.ports import Clock, Publisher, SecretStore, StateStore, TargetRotator
from shared.services.audit import AuditTrail
from shared.services.rotation.lease import (
    RENEW_AFTER,
    lease_left,
    ours,
    release_now,
    renew,
    save_own,
    write_own,
)
from shared.services.rotation.outcomes import joined_details

logger = logging.getLogger(__name__)


class ClosePending(Exception):
    """The new version exists but its success could not be recorded: the progress stays open, so the
    retry finds the version (by its rotation id) and records it. Not a failed rotation."""

    def __init__(self, cause: DomainError) -> None:
        super().__init__(str(cause))
        self.cause = cause


def promote(
    name: str,
    store: SecretStore,
    states: StateStore,
    trail: AuditTrail,
    clock: Clock,
    policy: RotationPolicy,
    current: SecretVersion,
    progress: Progress,
    key: str,
    etag: str,
    correlation_id: str | None,
    target: TargetRotator | None,
    announce: Callable[[str], None],
) -> str:
    """The one new version of this rotation (made now, or found: made before a crash), then the progress
    closed and the outcome recorded. Raises LeaseLost when another holder took the lease meanwhile,
    TargetRefused / DependencyUnavailable from the target rotator (nothing promoted then)."""
    assert progress.rotation_id is not None and progress.from_version is not None
    details = {
        "rotation_id": progress.rotation_id,
        "attempt": progress.attempt,
        "rotator": policy.rotator.value,
    }
    if current.tags.get(ROTATION_ID_TAG) == progress.rotation_id:
        new = current  # promoted before a crash: never a second version
    else:
        trail.record(
            Action.ROTATED,
            secret_name=name,
            version=progress.from_version,
            result=Result.INTENT,
            correlation_id=correlation_id,
            details=details,
        )
        # The one write that cannot be made conditional needs the lease to outlast it: renewed first,
        # unless it was taken a moment ago (one store call fewer per rotation; the vault call, retries
        # included, takes minutes at most, far less than what is left).
        if lease_left(progress, clock) < LEASE - RENEW_AFTER:
            progress.lease_until = format_time(clock.now() + LEASE)
            etag = renew(states, key, progress, etag)
        value = generate(policy.kind)
        extra: dict[str, str] = {}
        if target is not None:
            secret = TargetSecret(name, progress.rotation_id, policy.target, _value(store, name, current))
            value = _target_value(store, name, target, secret, value, current.content_type)
            extra = target.tags(secret)
        created = clock.now()
        tags = {
            **extra,
            **policy.to_tags(),
            **service_tags(progress.rotation_id),
            PREVIOUS_VERSION_TAG: progress.from_version,
        }
        new = store.set_value(
            name, value.value, content_type=value.content_type, tags=tags, expires=policy.expires_on(created)
        )
    if target is not None:
        discard_pending(store, name, progress.rotation_id)  # also when promoted before a crash
    try:
        # On record before the progress closes: a failure here leaves it open, and the retry records it.
        # It names every request that joined this rotation (each is done with it).
        trail.record(
            Action.ROTATED,
            secret_name=name,
            version=new.version,
            correlation_id=correlation_id,
            details={**details, "previous_version": progress.from_version, **joined_details(progress)},
        )
    except DomainError as err:
        raise ClosePending(err) from err
    # Sent before the progress closes: a crash in between sends it again on retry (same event id: the
    # rotation id), where sending it after would lose it for good — and consumers of a single-user
    # database credential learn from it that the old value stopped working.
    announce(new.version)
    try:
        close_rotation(states, trail, name, key, progress, etag, new.version, correlation_id)
    except (Conflict, NotFound):
        # The version is made and its success on record: a progress row that changed or vanished
        # meanwhile (a takeover, a storage writer) does not make this a failed rotation.
        logger.warning("rotation progress of %s changed before it could be closed", name)
    except DomainError as err:
        # The row stays open and the lease is released: the retry (the queue's, or the sweep's
        # resumption) finds the version made, and records, announces and closes again.
        raise ClosePending(err) from err
    return new.version


def close_rotation(
    states: StateStore,
    trail: AuditTrail,
    name: str,
    key: str,
    progress: Progress,
    etag: str,
    version: str,
    correlation_id: str | None,
) -> None:
    """Close the rotation that made ``version``. Requests that joined after its success was recorded get
    their own outcome first (ROTATION_SKIPPED: they joined it, naming the version), then the close is
    tried again with them. Raises Conflict / NotFound (another holder's row, or gone)."""

    def late(joined: list[str]) -> None:
        trail.record(
            Action.ROTATION_SKIPPED,
            secret_name=name,
            version=version,
            correlation_id=correlation_id,
            details={"reason": f"joined rotation {progress.rotation_id}", "rotation_id": progress.rotation_id,
                     "joined": joined},
        )  # fmt: skip

    write_own(states, key, progress, etag, closing=version, joined=late)


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


def fail(
    states: StateStore,
    trail: AuditTrail,
    publisher: Publisher,
    clock: Clock,
    name: str,
    key: str,
    progress: Progress,
    err: DomainError,
    correlation_id: str | None,
    *,
    close: bool = False,
) -> None:
    """Record the failure (naming the requests that joined), then release the lease (the progress stays,
    so a retry resumes) or, with ``close``, end the rotation (nothing to resume; the joined requests end
    with it), then notify. Each part is best effort: the failure itself is what the caller sees."""
    with contextlib.suppress(DomainError):
        stored = ours(states, key, progress)
        if stored is not None:
            progress.merge_joined(Progress.of(stored.state))
    step = err.step if isinstance(err, TargetRefused) else "promote"
    details = {
        "rotation_id": progress.rotation_id,
        "step": step,
        "attempt": progress.attempt,
        **joined_details(progress),
    }
    try:
        trail.record(
            Action.ROTATION_FAILED,
            secret_name=name,
            version=progress.from_version,
            result=Result.FAILURE,
            correlation_id=correlation_id,
            details={**details, "error_class": type(err).__name__},
            error=str(err)[:500],
        )
        recorded = True
    except DomainError:
        logger.exception("ROTATION_FAILED of %s could not be audited", name)
        recorded = False
    if close:
        named = progress.alias_list() if recorded else []

        def ended(row: Progress) -> None:
            # Closed for good: neither a retry nor the sweep's resumption acts on it again. The requests the
            # failure named are done; any that joined since wait for the next rotation.
            row.step, row.holder, row.lease_until, row.last_error = IDLE, None, None, type(err).__name__
            row.done_with(named)

        save_own(states, name, key, progress, ended)
    else:
        release_now(states, clock, name, key, progress, err)
    try:
        publisher.publish(
            [
                Notification(
                    type=ROTATION_FAILED,
                    subject=name,
                    time=clock.now(),
                    data={**details, "vault": trail.vault},
                )
            ]
        )
    except DomainError:
        logger.exception("RotationFailed of %s could not be sent", name)
