"""Retirement of replaced versions once their grace has ended. The schedule only says which versions to
look at: what may be retired, and when, is re-derived from the vault. Through a target rotator the
target's ``finish`` makes the old value unusable there first, under the secret's write lease."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from shared.domain.audit import Action, Result
from shared.domain.errors import Conflict, DomainError, NotFound, SecretDisabled
from shared.domain.policy import PolicyError, RotationPolicy, Rotator
from shared.domain.progress import (
    PREVIOUS_VERSION_TAG,
    RESTORED_VERSION_TAG,
    ROTATED_BY,
    ROTATED_BY_TAG,
    ROTATION_ID_TAG,
    Progress,
    made_by_service,
    retired_tags,
)
from shared.domain.secrets import SecretVersion
from shared.domain.state import Versioned
from shared.domain.targets import (
    TargetSecret,
    is_reserved,
)
from shared.ports import SecretStore
from shared.services.audit import AuditTrail
from shared.services.peers import Peers
from shared.services.rotation.lease import acquire, release
from shared.services.rotation.rows import (
    PARTITION,
    SCHEDULE_PREFIX,
    retirements,
    schedule_key,
    schedule_row,
    schedule_state,
)

logger = logging.getLogger(__name__)


def retire_due(peers: Peers, name: str) -> list[str]:
    """Disable the previous versions of ``name`` whose grace has ended; return their ids. Through a target
    rotator, the target's ``finish`` makes each one unusable there first, under the secret's write lease
    (a rotation in flight is setting the other role's password: never both at once).

    The schedule is a stored state anyone with storage access could write, so it only says which
    versions to look at: what may be retired, and when, is re-derived from the vault. A reserved secret is
    never touched; a version is disabled only when it is not the current one, a version this service made
    replaced it (names it as its ``previous-version``, or a rollback as its ``restored-version``), the
    current policy retires previous versions at all (an encryption key without a grace keeps them), and
    that grace has run since the replacing version was created. A version that is gone already counts as
    retired; a secret that is gone takes its schedule with it. Raises Conflict when the schedule changed
    meanwhile or another write holds the lease (retry later), DomainError from the vault or the target.
    """
    store, states, trail = peers.store, peers.states, peers.trail
    row = schedule_key(name.lower())
    stored = schedule_row(states, row)
    if stored is None:
        return []
    now = peers.clock.now()
    planned = retirements(stored.state)
    if stored.tampered is not None:
        # What was planned is lost: every enabled version but the current one is looked at, and the
        # vault's times say which retire now (the others stay planned until then).
        planned = _every_replaced(store, name, now)
    due = [v for v, t in planned if t <= now]
    if not due:
        if stored.tampered is not None:
            states.replace(PARTITION, row, schedule_state(planned), stored.etag)
        return []
    if is_reserved(name, peers.reserved):
        states.delete(PARTITION, row, stored.etag)
        return []
    progress = states.get(PARTITION, name.lower())  # before the vault, as ``acquire`` wants it
    try:
        current = store.get_properties(name)
    except NotFound:
        logger.info("retirement schedule of %s dropped: the secret is gone", name)
        states.delete(PARTITION, row, stored.etag)
        return []
    finisher = Finisher(peers, name, current, progress)
    try:
        view = _VaultView.read(store, current, now, targeted=finisher.target is not None)
        retired, kept = _retire(view, due, finisher, store, trail)
    finally:
        finisher.release()
    remaining = [(v, t) for v, t in planned if t > now] + kept
    if remaining:
        states.replace(PARTITION, row, schedule_state(remaining), stored.etag)
    else:
        states.delete(PARTITION, row, stored.etag)  # nothing left: the next rotation creates it afresh
    return retired


def _retire(
    view: _VaultView, due: Sequence[str], finisher: Finisher, store: SecretStore, trail: AuditTrail
) -> tuple[list[str], list[tuple[str, datetime]]]:
    """Retire the due versions the vault says may retire now; returns them, and the ones kept scheduled
    until a later time the vault gives."""
    name = view.current.name
    retired: list[str] = []
    kept: list[tuple[str, datetime]] = []
    for version in due:
        when = view.when(version)
        if isinstance(when, datetime):
            kept.append((version, when))
        if when != "now":
            continue
        trail.record(Action.VERSION_RETIRED, secret_name=name, version=version, result=Result.INTENT)
        finisher.finish(version)
        with contextlib.suppress(NotFound):  # gone already: nothing left to disable
            store.update_properties(
                view.current.name, version, enabled=False, tags=retired_tags(view.tags_of(version))
            )
        trail.record(Action.VERSION_RETIRED, secret_name=name, version=version)
        retired.append(version)
    return retired, kept


def _every_replaced(store: SecretStore, name: str, now: datetime) -> list[tuple[str, datetime]]:
    """A schedule re-derived from the vault: every enabled version but the current one, due now (each is
    then judged by ``_VaultView.when``: its grace since a version this service made replaced it)."""
    try:
        current = store.get_properties(name).version
        versions = store.list_versions(name)
    except (NotFound, SecretDisabled):
        return []
    return [(v.version, now) for v in versions if v.enabled and v.version != current]


@dataclass(frozen=True)
class _VaultView:
    """What the vault says of a secret's versions, which decides what retires and when (the schedule
    only says which versions to look at): the current version, every version, the grace the current
    policy gives, when each version was replaced by one this service made, and (``wait``) when the last
    grace still running ends, when a target rotator finishes the due versions together."""

    current: SecretVersion
    versions: Sequence[SecretVersion]
    grace: timedelta | None
    replaced_at: Mapping[str, datetime]
    now: datetime
    wait: datetime | None

    @classmethod
    def read(cls, store: SecretStore, current: SecretVersion, now: datetime, *, targeted: bool) -> _VaultView:
        """The view of ``current``'s secret. ``targeted``: told to drop an old value, a target may drop
        every value but the current one (a webhook's finish: "keep only this rotation's"), so while
        another replaced version is still in its grace, the due ones wait for it and retire together."""
        grace = _grace_of(current)
        versions = store.list_versions(current.name)
        replaced_at = _replaced_at(versions)
        wait = _grace_running(versions, current, replaced_at, grace, now) if targeted else None
        return cls(current, versions, grace, replaced_at, now, wait)

    def tags_of(self, version: str) -> Mapping[str, str]:
        return next((v.tags for v in self.versions if v.version == version), {})

    def when(self, version: str) -> datetime | Literal["now", "never"]:
        """When a due version retires: ``now``, ``never`` (dropped from the schedule), or a later time
        (kept scheduled until then)."""
        name = self.current.name
        since = self.replaced_at.get(version)
        if version == self.current.version:
            # Scheduled by a rotation that did not replace it (it failed, or is still running: its lease
            # rewrote the schedule, so this run's write of it fails and the entry stays).
            logger.info("retirement of %s version %s dropped: it is still the current version", name, version)
            return "never"
        if since is None or self.grace is None:
            logger.warning(
                "retirement of %s version %s refused: not a retired version by policy", name, version
            )
            return "never"
        if self.now < since + self.grace:
            return since + self.grace  # the schedule was early: the vault's time stands
        if not next((v.enabled for v in self.versions if v.version == version), True):
            # Disabled by someone else meanwhile (a revocation, by hand): nothing to retire, and no
            # ``retired-by`` mark that would let a rollback bring it back.
            logger.info("%s version %s is disabled already: left as it is", name, version)
            return "never"
        return "now" if self.wait is None else self.wait  # another replaced version in its grace: together


#: The lease step of a retirement that calls a target rotator's ``finish``.
RETIRING = "retiring"


class Finisher:
    """A target rotator's ``finish`` for the versions a retirement (or a replacement) ends, under the
    secret's write lease, taken on the first call and released by ``release``. Nothing to do for a
    ``key-vault`` secret."""

    def __init__(self, peers: Peers, name: str, current: SecretVersion, progress: Versioned | None) -> None:
        self.peers, self.name, self.store, self.states = peers, name, peers.store, peers.states
        self.current, self.progress = current, progress
        self.policy: RotationPolicy | None = None
        with contextlib.suppress(PolicyError):
            self.policy = RotationPolicy.from_tags(current.tags)
        rotator = self.policy.rotator if self.policy else Rotator.KEY_VAULT
        self.target = peers.rotators.get(rotator)
        if rotator != Rotator.KEY_VAULT and self.target is None:
            # Retiring in the vault alone would leave the old credential working at the target.
            raise Conflict(f"secret {name}: the {rotator.value} rotator is not available to finish with")
        self.lease: tuple[Progress, str] | None = None
        self.secret: TargetSecret | None = None

    def finish(self, version: str) -> None:
        """Make ``version`` unusable at the target (unless the current value still needs it). Raises Busy
        (another write holds the lease), TargetRefused, DependencyUnavailable."""
        if self.target is None or self.policy is None:
            return
        if self.lease is None:
            self.lease = acquire(self.peers, self.name, self.progress, RETIRING)
        try:
            retired = self.store.get_value(self.name, version).value
        except (NotFound, SecretDisabled):
            # Disabled or deleted by someone else: its value (its role) cannot be read; nothing is guessed.
            logger.warning(
                "%s version %s cannot be read: the target was not told to drop it", self.name, version
            )
            return
        if self.secret is None:
            rotation_id = self.current.tags.get(ROTATION_ID_TAG) if made_by_service(self.current) else None
            current = self.store.get_value(self.name, self.current.version).value
            self.secret = TargetSecret(self.name, rotation_id, self.policy.target, current)
        self.target.finish(self.secret, retired)

    def release(self) -> None:
        if self.lease is not None:
            progress, etag = self.lease
            release(self.states, self.name, progress, etag, new_version=None)
            self.lease = None


def _grace_running(
    versions: Sequence[SecretVersion],
    current: SecretVersion,
    replaced_at: Mapping[str, datetime],
    grace: timedelta | None,
    now: datetime,
) -> datetime | None:
    """When the last grace of an enabled, replaced version still within it ends; None when none is."""
    if grace is None:
        return None
    ends = [
        replaced_at[v.version] + grace
        for v in versions
        if v.version != current.version and v.enabled and v.version in replaced_at
    ]
    running = [end for end in ends if end > now]
    return max(running) if running else None


def _replaced_at(versions: Sequence[SecretVersion]) -> dict[str, datetime]:
    """When each replaced version was last replaced, by a version this service made: one that names it as
    its ``previous-version`` (a rotation, a rollback) or ``restored-version`` (a rollback)."""
    replaced_at: dict[str, datetime] = {}
    for v in versions:
        if v.tags.get(ROTATED_BY_TAG) == ROTATED_BY and v.tags.get(ROTATION_ID_TAG):
            for tag in (PREVIOUS_VERSION_TAG, RESTORED_VERSION_TAG):
                old = v.tags.get(tag)
                # The latest replacement: a version restored by a rollback was replaced again then.
                if old and (old not in replaced_at or v.created > replaced_at[old]):
                    replaced_at[old] = v.created
    return replaced_at


def _grace_of(current: SecretVersion) -> timedelta | None:
    """The grace the secret's current policy gives a replaced version; None: they stay enabled (also
    when the policy cannot be read: nothing is disabled on a guess)."""
    try:
        return RotationPolicy.from_tags(current.tags).previous_grace()
    except PolicyError:
        return None


def retire_all(peers: Peers) -> tuple[list[tuple[str, str]], list[str]]:
    """Retire every previous version whose grace has ended, secret by secret: one secret's failure is
    recorded (VERSION_RETIRED failure) and the others go on. Returns the (name, version) pairs retired and
    the names that failed. Raises DependencyUnavailable when the schedule cannot be read at all."""
    retired: list[tuple[str, str]] = []
    failed: list[str] = []
    scheduled = peers.states.list(PARTITION, start=SCHEDULE_PREFIX, stop=SCHEDULE_PREFIX + "~")
    for key in (row.removeprefix(SCHEDULE_PREFIX) for row in scheduled):
        try:
            retired += [(key, version) for version in retire_due(peers, key)]
        except Conflict:
            logger.info("retirement of %s left for the next run: its schedule changed", key)
        except DomainError as err:
            failed.append(key)
            with contextlib.suppress(DomainError):
                peers.trail.record(
                    Action.VERSION_RETIRED,
                    secret_name=key,
                    result=Result.FAILURE,
                    details={"error_class": type(err).__name__},
                    error=str(err)[:500],
                )
    return retired, failed
