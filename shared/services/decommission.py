"""Decommission and recovery of a managed secret: a soft delete (every version, recoverable within the
vault's retention) and its recovery. Neither ever purges.

A delete takes the secret's write lease (shared.services.rotation.acquire), so it is refused (Busy, 409)
while a rotation, rollback, onboarding or policy change of it is in flight, and it is refused while a
revocation of it is being executed. Both are audited (``SECRET_DELETED`` / ``SECRET_RECOVERED``: intent,
then success or failure) and notified (``SecretDeleted`` / ``SecretRecovered``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from shared.domain.audit import Action, Actor
from shared.domain.errors import Conflict, DomainError, SecretDisabled
from shared.domain.notifications import SECRET_DELETED, SECRET_RECOVERED, Notification
from shared.domain.policy import RotationPolicy
from shared.domain.revocation import Status
from shared.domain.secrets import SecretVersion, validate_name
from shared.domain.targets import is_reserved
from shared.ports import Clock, Publisher, SecretStore
from shared.services import revocation, rotation
from shared.services.audit import AuditTrail, Change
from shared.services.peers import Peers

logger = logging.getLogger(__name__)

DELETING = "deleting"


def delete_secret(
    peers: Peers, name: str, *, justification: str, actor: Actor, correlation_id: str | None = None
) -> None:
    """Soft-delete the managed secret ``name``.

    Raises InvalidSecret (name), NotFound, NotManaged (no policy), Conflict (the service's own secret, a
    certificate's, a revocation of it executing, deleted already), Busy (another write holds its lease),
    AuditUnavailable (nothing deleted), OutcomeNotRecorded (deleted, its success record failed), and the
    vault's errors (recorded).
    """
    store, states, trail, publisher, clock = (
        peers.store,
        peers.states,
        peers.trail,
        peers.publisher,
        peers.clock,
    )
    reserved = peers.reserved
    validate_name(name)
    if is_reserved(name, reserved):
        raise Conflict(f"secret {name} is the service's own secret: it is never deleted through this API")
    stored = states.get(rotation.PARTITION, name.lower())  # before the vault, as ``acquire`` wants it
    current = _current(store, name)
    if current.managed:
        raise Conflict(f"secret {name} backs a certificate: delete the certificate instead")
    if not RotationPolicy.is_managed(current.tags):
        raise rotation.NotManaged(name, "managed-by")
    executing = revocation.list_requests(states, status=Status.EXECUTING, secret_name=name)
    if executing:
        raise Conflict(f"secret {name}: revocation {executing[0].id} is being executed; try again later")
    progress, etag = rotation.acquire(peers, name, stored, DELETING)
    details = {"justification": justification[:500], "version": current.version}  # records: 4 KiB
    try:
        _recorded(trail, name, Change(Action.SECRET_DELETED, actor, correlation_id, details), store.delete)
    finally:
        rotation.release(states, name, progress, etag, new_version=None)
    _notify(publisher, clock, trail.vault, SECRET_DELETED, name, actor)


def recover_secret(peers: Peers, name: str, *, actor: Actor, correlation_id: str | None = None) -> None:
    """Recover the soft-deleted secret ``name`` with all its versions.

    Raises InvalidSecret (name), NoSuchSecret (not deleted, or purged), Conflict (the service's own secret;
    being deleted or recovered; the vault forbids it), AuditUnavailable (nothing recovered),
    OutcomeNotRecorded (recovered, its success record failed).
    """
    store, trail, publisher, clock = peers.store, peers.trail, peers.publisher, peers.clock
    reserved = peers.reserved
    validate_name(name)
    if is_reserved(name, reserved):
        raise Conflict(f"secret {name} is the service's own secret: it is never recovered through this API")
    store.get_deleted(name)  # before its intent: no chain for a name the vault never held (NoSuchSecret)
    _recorded(trail, name, Change(Action.SECRET_RECOVERED, actor, correlation_id), store.recover)
    _notify(publisher, clock, trail.vault, SECRET_RECOVERED, name, actor)


def _current(store: SecretStore, name: str) -> SecretVersion:
    """The current version's properties; a disabled current version is still a secret to delete."""
    try:
        return store.get_properties(name)
    except SecretDisabled:
        versions = store.list_versions(name)
        return max(versions, key=lambda v: v.created)


def _recorded(trail: AuditTrail, name: str, change: Change, act: Callable[[str], object]) -> None:
    """Intent, ``act`` on the secret, then success — or failure (and the error raised) when the vault
    refused."""
    fields: dict[str, Any] = {
        "secret_name": name, "actor": change.actor, "correlation_id": change.correlation_id,
        "details": dict(change.extra),
    }  # fmt: skip
    trail.attempt(change.action, lambda: act(name), **fields)
    done = "deleted" if change.action == Action.SECRET_DELETED else "recovered"
    trail.outcome(change.action, f"secret {name} was {done}", {"name": name}, **fields)


def _notify(publisher: Publisher, clock: Clock, vault: str, kind: str, name: str, actor: Actor) -> None:
    note = Notification(type=kind, subject=name, time=clock.now(), data={"vault": vault, "secret_name": name,
                                                                          "by": actor.id})  # fmt: skip
    try:
        publisher.publish([note])
    except DomainError:
        logger.exception("%s of %s could not be sent", kind, name)
