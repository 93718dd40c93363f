"""Rollback: make the previous version's value current again, as a new version (consumers read the latest).

The previous version is the one the current version names in its ``previous-version`` tag (rotation and
rollback write it). A rollback runs under the same lease as rotation (the progress entity in partition
``rotation``, step ``rolling_back``), so one rotation or rollback at a time per secret, and it is resumable
like a rotation: the new version carries the rollback's id in its ``rotation-id`` tag, so a retry after a
crash finds the version it made instead of making another.

The new version carries the policy tags, the service's own tags, ``previous-version`` (the version rolled
back from, which retires after the policy's grace like any replaced version), ``rolled-back-from`` and
``restored-version``, and ``exp`` = the policy's validity from now, so the sweep does not rotate it again
at once. A version that is itself a rollback is never rolled back (409: roll forward with rotate), so a
duplicated POST cannot undo the rollback it repeats.

A retired (disabled) previous version is taken off the retirement schedule and re-enabled first: its
value cannot be read while it is disabled.

Audit: ``ROLLED_BACK`` intent before the first write (fail closed), success after, failure when a step
fails; a ``SecretRolledBack`` notification on success. Never a value.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from shared.domain.audit import SYSTEM_ACTOR, Action, Actor, Result, format_time
from shared.domain.errors import Conflict, DomainError, NotFound, SecretDisabled
from shared.domain.notifications import SECRET_ROLLED_BACK, Notification
from shared.domain.policy import PolicyError, RotationPolicy
from shared.domain.secrets import SecretVersion, validate_name
from shared.ports import Clock, Publisher, SecretStore, StateStore
from shared.services.audit import AuditTrail
from shared.services.rotation import (
    LEASE,
    PARTITION,
    PREVIOUS_VERSION_TAG,
    RETIRE,
    ROTATION_ID_TAG,
    Busy,
    NotManaged,
    Progress,
    acquire,
    release,
    retirements,
    schedule_retirement,
    service_tags,
    write_progress,
)

logger = logging.getLogger(__name__)

ROLLING_BACK = "rolling_back"
ROLLED_BACK_FROM_TAG = "rolled-back-from"
RESTORED_VERSION_TAG = "restored-version"


@dataclass(frozen=True)
class RollbackOutcome:
    secret_name: str
    rollback_id: str
    new_version: str
    restored_version: str
    rolled_back_from: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.secret_name,
            "rollback_id": self.rollback_id,
            "version": self.new_version,
            "restored_version": self.restored_version,
            "rolled_back_from": self.rolled_back_from,
        }


class _CloseLater(Exception):
    """The new version exists but its success could not be recorded: the lease is released with the
    progress kept, so the retry finds the version and records it."""

    def __init__(self, cause: DomainError) -> None:
        super().__init__(str(cause))
        self.cause = cause


def rollback(
    name: str,
    store: SecretStore,
    states: StateStore,
    trail: AuditTrail,
    publisher: Publisher,
    clock: Clock,
    *,
    reserved: Collection[str],
    from_version: str | None = None,
    actor: Actor = SYSTEM_ACTOR,
    correlation_id: str | None = None,
) -> RollbackOutcome:
    """Make the value of the version before the current one current again, as a new version.

    ``from_version``: a precondition, the version the caller believes is current (Conflict otherwise).
    Resumes a rollback that was interrupted (same id, no second version).

    Raises InvalidSecret (name), NotFound (no such secret), NotManaged, Conflict (reserved,
    certificate-backed, disabled, invalid policy, no previous version, the current version is itself a
    rollback, the precondition failed), Busy (another rotation or rollback holds the lease),
    AuditUnavailable (nothing changed), and any DomainError of a failed step after recording it.
    """
    validate_name(name)
    key = name.lower()
    if key in {r.lower() for r in reserved}:
        raise Conflict(f"secret {name} is the service's own secret: it is never rolled back")
    stored = states.get(PARTITION, key)  # the progress first, then the vault (as rotation does)
    current, policy = _current(store, name)
    progress = Progress.of(stored.state) if stored else Progress()
    now = clock.now()
    interrupted = (
        progress.step == ROLLING_BACK
        and progress.restore_version is not None
        and progress.rotation_id is not None
        and (
            current.version == progress.from_version
            or current.tags.get(ROTATION_ID_TAG) == progress.rotation_id
        )
    )
    if progress.leased_by_other("", now):
        raise Busy(name, progress)
    if interrupted:
        if from_version is not None and from_version != progress.from_version:
            raise Conflict(f"secret {name}: the current version is not {from_version}")
        progress.holder, progress.attempt = uuid.uuid4().hex, progress.attempt + 1
        progress.lease_until = format_time(now + LEASE)
        try:
            etag = write_progress(states, key, progress, stored.etag if stored else None)
        except (Conflict, NotFound) as err:
            raise Busy(name, progress) from err
    else:
        previous = _previous(name, current, from_version)
        progress, etag = acquire(
            states, name, stored, ROLLING_BACK, clock, from_version=current.version, restore_version=previous
        )
    return _run(
        name, store, states, trail, publisher, clock, policy, current, progress, etag, actor, correlation_id
    )


def _current(store: SecretStore, name: str) -> tuple[SecretVersion, RotationPolicy]:
    try:
        current = store.get_properties(name)
    except SecretDisabled:
        raise Conflict(f"secret {name}: the current version is disabled") from None
    if current.managed:
        raise Conflict(f"secret {name} backs a certificate: renew the certificate instead")
    if not RotationPolicy.is_managed(current.tags):
        raise NotManaged(name, "managed-by")
    try:
        return current, RotationPolicy.from_tags(current.tags)
    except PolicyError as err:
        raise Conflict(f"secret {name} has an invalid policy: {err}") from None


def _previous(name: str, current: SecretVersion, from_version: str | None) -> str:
    """The version a new rollback of ``current`` restores. Raises Conflict."""
    if from_version is not None and from_version != current.version:
        raise Conflict(f"secret {name}: the current version is not {from_version}")
    rolled_back = current.tags.get(ROLLED_BACK_FROM_TAG)
    if rolled_back:
        raise Conflict(
            f"secret {name}: the current version is itself a rollback (of {rolled_back}); "
            "roll forward with rotate"
        )
    previous = current.tags.get(PREVIOUS_VERSION_TAG)
    if not previous or previous == current.version:
        raise Conflict(f"secret {name}: the current version names no previous version to roll back to")
    return previous


def _run(
    name: str,
    store: SecretStore,
    states: StateStore,
    trail: AuditTrail,
    publisher: Publisher,
    clock: Clock,
    policy: RotationPolicy,
    current: SecretVersion,
    progress: Progress,
    etag: str,
    actor: Actor,
    correlation_id: str | None,
) -> RollbackOutcome:
    assert progress.rotation_id and progress.from_version and progress.restore_version
    rollback_id, bad, restore = progress.rotation_id, progress.from_version, progress.restore_version
    details = {
        "rollback_id": rollback_id,
        "restored_version": restore,
        "rolled_back_from": bad,
        "attempt": progress.attempt,
    }
    fields: dict[str, Any] = {"secret_name": name, "actor": actor, "correlation_id": correlation_id}
    try:
        if current.tags.get(ROTATION_ID_TAG) == rollback_id:
            new = current  # made before a crash: never a second version
        else:
            trail.record(Action.ROLLED_BACK, version=bad, result=Result.INTENT, details=details, **fields)
            etag = _restorable(name, store, states, clock, progress, etag, restore)
            value = store.get_value(name, restore)
            tags = {
                **policy.to_tags(),
                **service_tags(rollback_id),
                PREVIOUS_VERSION_TAG: bad,
                ROLLED_BACK_FROM_TAG: bad,
                RESTORED_VERSION_TAG: restore,
            }
            new = store.set_value(
                name,
                value.value,
                content_type=value.properties.content_type,
                tags=tags,
                expires=policy.expires_on(clock.now()),
            )
        try:
            trail.record(Action.ROLLED_BACK, version=new.version, details=details, **fields)
            grace = policy.previous_grace()
            if grace is not None:
                schedule_retirement(states, name.lower(), bad, clock.now() + grace)
        except DomainError as err:
            raise _CloseLater(err) from err
    except _CloseLater as pending:
        _keep_for_retry(states, clock, name, progress, pending.cause)
        raise pending.cause from pending
    except DomainError as err:
        _keep_for_retry(states, clock, name, progress, err)
        try:
            trail.record(
                Action.ROLLED_BACK,
                version=bad,
                result=Result.FAILURE,
                details={**details, "error_class": type(err).__name__},
                error=str(err)[:500],
                **fields,
            )
        except DomainError:
            logger.exception("ROLLED_BACK failure of %s could not be audited", name)
        raise
    release(states, name, progress, etag, new_version=new.version)
    outcome = RollbackOutcome(name, rollback_id, new.version, restore, bad)
    _announce(publisher, clock, trail.vault, outcome, policy)
    return outcome


def _restorable(
    name: str,
    store: SecretStore,
    states: StateStore,
    clock: Clock,
    progress: Progress,
    etag: str,
    version: str,
) -> str:
    """Make ``version`` readable: off the retirement schedule (so the sweep does not disable it again),
    enabled if it was retired; then renew the lease right before the one write that cannot be made
    conditional. Returns the progress's new etag. Raises Conflict (the version is gone, the schedule or
    the lease changed), DomainError from the vault."""
    _unschedule(states, name.lower(), version)
    try:
        restored = store.get_properties(name, version)
    except NotFound:
        raise Conflict(f"secret {name}: the previous version {version} does not exist") from None
    if not restored.enabled:
        store.update_properties(name, version, enabled=True)
        logger.info("secret %s: retired version %s re-enabled for a rollback", name, version)
    progress.lease_until = format_time(clock.now() + LEASE)
    try:
        return states.replace(PARTITION, name.lower(), progress.state(), etag).etag
    except (Conflict, NotFound) as err:
        raise Busy(name, progress) from err


def _unschedule(states: StateStore, key: str, version: str) -> None:
    """Take ``version`` off the secret's retirement schedule. Raises Conflict when it keeps changing."""
    for _ in range(3):
        stored = states.get(RETIRE, key)
        planned = retirements(stored.state) if stored else []
        if stored is None or all(v != version for v, _ in planned):
            return
        kept = [[v, format_time(t)] for v, t in planned if v != version]
        try:
            states.replace(RETIRE, key, {"versions": json.dumps(kept)}, stored.etag)
            return
        except (Conflict, NotFound):
            continue
    raise Conflict(f"the retirement schedule of {key} keeps changing; try again")


def _keep_for_retry(
    states: StateStore, clock: Clock, name: str, progress: Progress, err: DomainError
) -> None:
    """End this holder's lease now, keeping the progress (the retry resumes it); only while it is ours."""
    key = name.lower()
    progress.last_error, progress.lease_until = type(err).__name__, format_time(clock.now())
    try:
        stored = states.get(PARTITION, key)
        if stored is not None and stored.state.get("holder") == progress.holder:
            write_progress(states, key, progress, stored.etag)
    except DomainError:
        logger.exception("rollback progress of %s could not be saved", name)


def _announce(
    publisher: Publisher, clock: Clock, vault: str, outcome: RollbackOutcome, policy: RotationPolicy
) -> None:
    """SecretRolledBack, so consumers reload; the event id is the rollback id. Best effort."""
    notification = Notification(
        type=SECRET_ROLLED_BACK,
        subject=outcome.secret_name,
        time=clock.now(),
        data={
            "vault": vault,
            "secret_name": outcome.secret_name,
            "version": outcome.new_version,
            "restored_version": outcome.restored_version,
            "rolled_back_from": outcome.rolled_back_from,
            "rollback_id": outcome.rollback_id,
            "owner": policy.owner,
        },
        id=outcome.rollback_id,
    )
    try:
        publisher.publish([notification])
    except DomainError:
        logger.exception("SecretRolledBack of %s could not be sent", outcome.secret_name)
