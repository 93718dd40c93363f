"""Rollback: make the previous version's value current again, as a new version (consumers read the latest).

The previous version is the one the current version names in its ``previous-version`` tag, and only when
this service wrote the current version (``written_by_service``: its tags and the progress row agree): a
version written out of band may carry copied tags naming anything. A rollback runs under the same lease
as rotation (the progress entity in partition ``rotation``, step ``rolling_back``), so one rotation or
rollback at a time per secret, and it is resumable like a rotation: the new version carries the
rollback's id in its ``rotation-id`` tag, so a retry after a crash finds the version it made instead of
making another.

The progress row is storage, which others may write: it is only a hint. A stored rollback is resumed only
when the vault bears it out (before the write: the version it rolls back is still current, was written by
this service, is no rollback itself and names the stored restore version as its previous one; after the
write: the current version carries the rollback's id and names the same versions); otherwise a new
rollback is derived from the vault alone.

The new version carries the policy tags, the service's own tags, ``previous-version`` and
``rolled-back-from`` (the version rolled back from), ``restored-version``, and ``exp`` = the policy's
validity from now, so the sweep does not rotate it again at once. A version that is itself a rollback is
never rolled back (409: roll forward with rotate), so a duplicated POST cannot undo the rollback it
repeats.

Both old versions are replaced versions once the rollback is written (the new version holds the restored
one's value): each is scheduled to retire after the policy's grace from the new version's creation
(``retire_due`` accepts a version a service-made version names as ``previous-version`` or
``restored-version``); without a grace they stay enabled. A retired (disabled) restored version is
re-enabled just before its value is read, and disabled again when the rollback fails before its version is
written, so a failure leaves no old version enabled.

Audit: ``ROLLED_BACK`` intent before the first write (fail closed), success after, failure when a step
fails; a ``SecretRolledBack`` notification on success. Never a value. A rollback written but not recorded
raises OutcomeNotRecorded (the retry records it, without a second version).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.domain.audit import SYSTEM_ACTOR, Action, Actor, Result, format_time
from shared.domain.errors import Conflict, DomainError, NotFound, OutcomeNotRecorded
from shared.domain.notifications import SECRET_ROLLED_BACK, Notification
from shared.domain.policy import PolicyError, RotationPolicy, Rotator
from shared.domain.secrets import SecretVersion, validate_name
from shared.domain.state import Versioned
from shared.domain.targets import is_reserved
from shared.ports import Clock, Publisher, SecretStore, StateStore
from shared.services.catalog.policies import writable_version
from shared.services.peers import Peers
from shared.services.rotation import (
    LEASE,
    PARTITION,
    PREVIOUS_VERSION_TAG,
    RESTORED_VERSION_TAG,
    RETIRED_BY_TAG,
    ROTATED_BY,
    ROTATION_ID_TAG,
    Busy,
    NotManaged,
    Progress,
    acquire,
    release,
    retired_tags,
    schedule_retirement,
    service_tags,
    write_progress,
    written_by_service,
)
from shared.services.rotation.lease import Held

logger = logging.getLogger(__name__)

ROLLING_BACK = "rolling_back"
ROLLED_BACK_FROM_TAG = "rolled-back-from"


@dataclass(frozen=True)
class RollbackOutcome:
    secret_name: str
    rollback_id: str
    new_version: str
    restored_version: str
    rolled_back_from: str


class _CloseLater(Exception):
    """The new version exists but its success could not be recorded: the lease is released with the
    progress kept, so the retry finds the version and records it."""

    def __init__(self, cause: DomainError, version: str) -> None:
        super().__init__(str(cause))
        self.cause, self.version = cause, version


def rollback(
    peers: Peers,
    name: str,
    *,
    from_version: str | None = None,
    actor: Actor = SYSTEM_ACTOR,
    correlation_id: str | None = None,
) -> RollbackOutcome:
    """Make the value of the version before the current one current again, as a new version.

    ``from_version``: a precondition, the version the caller believes is current (Conflict otherwise).
    Resumes a rollback that was interrupted (same id, no second version) when the vault bears it out.

    Raises InvalidSecret (name), NotFound (no such secret), NotManaged, Conflict (reserved,
    certificate-backed, disabled, invalid policy, no previous version, the current version is itself a
    rollback or was not written by this service, the precondition failed), Busy (another rotation or
    rollback holds the lease), AuditUnavailable (nothing changed), OutcomeNotRecorded (the new version was
    written but its success not recorded: a retry records it), and any DomainError of a failed step after
    recording it.
    """
    validate_name(name)
    if is_reserved(name, peers.reserved):
        raise Conflict(f"secret {name} is the service's own secret: it is never rolled back")
    stored = peers.states.get(PARTITION, name.lower())  # the progress first, then the vault (as rotation)
    current, policy = _current(peers.store, name)
    held = _take(peers, name, stored, current, from_version)
    held.correlation_id = correlation_id
    return _run(peers, held, policy, current, actor)


def _take(
    peers: Peers, name: str, stored: Versioned | None, current: SecretVersion, from_version: str | None
) -> Held:
    """The secret's lease for this rollback: the one the row holds, resumed when the vault bears it out,
    or a new one. Raises Busy, Conflict."""
    progress = Progress.of(stored.state) if stored else Progress()
    now = peers.clock.now()
    if progress.leased_by_other("", now):
        raise Busy(name, progress)
    if _resumable(current, progress, peers.states):
        if from_version is not None and from_version != progress.from_version:
            raise Conflict(f"secret {name}: the current version is not {from_version}")
        progress.holder, progress.attempt = uuid.uuid4().hex, progress.attempt + 1
        progress.lease_until, progress.leased_at = format_time(now + LEASE), format_time(now)
        try:
            etag = write_progress(peers.states, name.lower(), progress, stored.etag if stored else None)
        except (Conflict, NotFound) as err:
            raise Busy(name, progress) from err
        return Held(name, progress, etag)
    if progress.step == ROLLING_BACK:
        logger.warning(
            "secret %s: the stored rollback %s is not borne out by the vault; not resumed", name,
            progress.rotation_id,
        )  # fmt: skip
    previous = _previous(name, current, peers.states, from_version)
    progress, etag = acquire(
        peers, name, stored, ROLLING_BACK, from_version=current.version, restore_version=previous
    )
    return Held(name, progress, etag)


def _current(store: SecretStore, name: str) -> tuple[SecretVersion, RotationPolicy]:
    current = writable_version(store, name)
    if not RotationPolicy.is_managed(current.tags):
        raise NotManaged(name, "managed-by")
    try:
        policy = RotationPolicy.from_tags(current.tags, name=name)
    except PolicyError as err:
        raise Conflict(f"secret {name} has an invalid policy: {err}") from None
    if policy.rotator != Rotator.KEY_VAULT:
        # The old value no longer works at the target (a changed password, a consumer told to drop it):
        # restoring it in the vault alone would hand consumers a dead credential. Rotate instead.
        raise Conflict(
            f"secret {name} is rotated through the {policy.rotator.value} rotator: its previous value may "
            "no longer work at the target, so it is not rolled back; rotate it instead"
        )
    return current, policy


def _previous(name: str, current: SecretVersion, states: StateStore, from_version: str | None) -> str:
    """The version a new rollback of ``current`` restores, from the vault alone: the ``previous-version``
    of a current version this service wrote, which is no rollback itself. Raises Conflict."""
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
    if not written_by_service(current, states):
        raise Conflict(
            f"secret {name}: the current version {current.version} was not written by this service, so "
            "the previous version it names is not known; roll forward with rotate"
        )
    return previous


def _resumable(current: SecretVersion, progress: Progress, states: StateStore) -> bool:
    """Whether a stored ``rolling_back`` row is borne out by the vault. Before the write: the version it
    rolls back is still current and is what a new rollback would roll back (``_previous``: written by this
    service, no rollback, naming the row's restore version). After the write: the current version carries
    the row's rollback id, was written by this service and names the row's two versions, and the row has
    not closed it yet. Anything else (a storage writer's row, a stale one) is not resumed."""
    rollback_id, bad, restore = progress.rotation_id, progress.from_version, progress.restore_version
    if progress.step != ROLLING_BACK or not (rollback_id and bad and restore):
        return False
    tags = current.tags
    if tags.get(ROTATION_ID_TAG) == rollback_id:
        if f"{rollback_id}:{current.version}" in progress.made_list():
            return False  # closed already: this is a finished rollback, not one to resume
        named = (
            tags.get(PREVIOUS_VERSION_TAG),
            tags.get(ROLLED_BACK_FROM_TAG),
            tags.get(RESTORED_VERSION_TAG),
        )
        return named == (bad, bad, restore) and written_by_service(current, states)
    return (
        current.version == bad
        and not tags.get(ROLLED_BACK_FROM_TAG)
        and tags.get(PREVIOUS_VERSION_TAG) == restore
        and restore != bad
        and written_by_service(current, states)
    )


def _run(
    peers: Peers, held: Held, policy: RotationPolicy, current: SecretVersion, actor: Actor
) -> RollbackOutcome:
    name, progress = held.name, held.progress
    assert progress.rotation_id and progress.from_version and progress.restore_version
    rollback_id, bad, restore = progress.rotation_id, progress.from_version, progress.restore_version
    details = {
        "rollback_id": rollback_id,
        "restored_version": restore,
        "rolled_back_from": bad,
        "attempt": progress.attempt,
    }
    fields: dict[str, Any] = {"secret_name": name, "actor": actor, "correlation_id": held.correlation_id}
    try:
        new = _made(peers, held, policy, current, details, fields)
    except _CloseLater as pending:
        _keep_for_retry(peers, held, pending.cause)
        raise OutcomeNotRecorded.after(
            f"secret {name} was rolled back (version {pending.version} restores {restore}, rollback "
            f"{rollback_id}); the same rollback again records it without another version",
            pending.cause,
            version=pending.version,
            rollback_id=rollback_id,
        ) from pending.cause
    except DomainError as err:
        _keep_for_retry(peers, held, err)
        try:
            peers.trail.record(
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
    release(peers.states, name, progress, held.etag, new_version=new.version)
    outcome = RollbackOutcome(name, rollback_id, new.version, restore, bad)
    _announce(peers.publisher, peers.clock, peers.trail.vault, outcome, policy)
    return outcome


def _made(
    peers: Peers,
    held: Held,
    policy: RotationPolicy,
    current: SecretVersion,
    details: dict[str, Any],
    fields: dict[str, Any],
) -> SecretVersion:
    """The rollback's version (made now, or before a crash) with its success on record and both old
    versions' retirement scheduled (``details``, ``fields``: of its records). Raises _CloseLater when the
    version is made but its record is not."""
    rollback_id, bad = held.progress.rotation_id or "", held.progress.from_version or ""
    restore = held.progress.restore_version or ""
    grace = policy.previous_grace()
    if current.tags.get(ROTATION_ID_TAG) == rollback_id:
        new = current  # made before a crash: never a second version
    else:
        peers.trail.record(Action.ROLLED_BACK, version=bad, result=Result.INTENT, details=details, **fields)
        if grace is not None:
            # On the schedule before the write: nothing resumes a rollback that dies after it, and a
            # rotation over its row would schedule only the rollback's version (``retire_due`` asks the
            # vault whether and since when each one was replaced).
            schedule_retirement(peers.states, held.key, [bad, restore], peers.clock.now() + grace)
        tags = {
            **policy.to_tags(),
            **service_tags(rollback_id),
            PREVIOUS_VERSION_TAG: bad,
            ROLLED_BACK_FROM_TAG: bad,
            RESTORED_VERSION_TAG: restore,
        }
        new = _write(peers, held, policy, restore, tags)
    try:
        # Both old versions are replaced versions now: their time is the new version's. Scheduled before
        # the success is on record, so nothing after the record can fail the rollback and make its retry
        # record it again.
        if grace is not None:
            schedule_retirement(peers.states, held.key, [bad, restore], new.created + grace)
        peers.trail.record(Action.ROLLED_BACK, version=new.version, details=details, **fields)
    except DomainError as err:
        raise _CloseLater(err, new.version) from err
    return new


def _write(
    peers: Peers, held: Held, policy: RotationPolicy, restore: str, tags: dict[str, str]
) -> SecretVersion:
    """Read ``restore``'s value (enabling it just for that when it is retired), renew the lease right
    before the one write that cannot be made conditional (``held.etag`` moves on), and write the value as
    the new version; returns it. A failure before the write disables a version it enabled again, so
    nothing is left half done. Raises Conflict (the version is gone), Busy (the lease was taken over),
    DomainError from the vault."""
    store, name, progress = peers.store, held.name, held.progress
    try:
        restored = store.get_properties(name, restore)
    except NotFound:
        raise Conflict(f"secret {name}: the previous version {restore} does not exist") from None
    enabled = False
    try:
        if not restored.enabled:
            if restored.tags.get(RETIRED_BY_TAG) != ROTATED_BY:
                # Disabled some other way (revoked, disabled by hand): never brought back by a rollback.
                raise Conflict(
                    f"secret {name}: the previous version {restore} was disabled outside this service's "
                    "retirement (revoked?) and is not restored"
                )
            unretired = {k: v for k, v in restored.tags.items() if k != RETIRED_BY_TAG}
            store.update_properties(name, restore, enabled=True, tags=unretired)
            enabled = True
            logger.info("secret %s: retired version %s re-enabled for a rollback", name, restore)
        value = store.get_value(name, restore)
        progress.lease_until = format_time(peers.clock.now() + LEASE)
        try:
            held.etag = peers.states.replace(PARTITION, held.key, progress.state(), held.etag).etag
        except (Conflict, NotFound) as err:
            raise Busy(name, progress) from err
        new = store.set_value(
            name,
            value.value,
            content_type=value.properties.content_type,
            tags=tags,
            expires=policy.expires_on(peers.clock.now()),
        )
    except DomainError:
        if enabled:
            _disable_again(store, name, restore, restored.tags)
        raise
    return new


def _disable_again(store: SecretStore, name: str, version: str, tags: Mapping[str, str]) -> None:
    """Undo the re-enabling of a retired version after a failed rollback (retired as before). Best effort:
    when the vault refuses, the resumed rollback schedules the version's retirement once it succeeds."""
    try:
        store.update_properties(name, version, enabled=False, tags=retired_tags(tags))
        logger.info("secret %s: version %s disabled again after a failed rollback", name, version)
    except DomainError:
        logger.exception("secret %s: version %s stays enabled after a failed rollback", name, version)


def _keep_for_retry(peers: Peers, held: Held, err: DomainError) -> None:
    """End this holder's lease now, keeping the progress (the retry resumes it); only while it is ours."""
    progress = held.progress
    progress.last_error, progress.lease_until = type(err).__name__, format_time(peers.clock.now())
    try:
        stored = peers.states.get(PARTITION, held.key)
        if stored is not None and stored.state.get("holder") == progress.holder:
            write_progress(peers.states, held.key, progress, stored.etag)
    except DomainError:
        logger.exception("rollback progress of %s could not be saved", held.name)


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
