"""Rotation of one managed secret: create pending → set in target → test → promote → retire the previous
version after its grace period.

This is the ``key-vault`` rotator, for which set and test are no-ops and promote is the one new version;
the target rotators (PostgreSQL, webhook) add their steps on the same stored progress. Each secret's
progress is a compare-and-swap entity (``StateStore``, partition ``rotation``) that every step reads
first, and it doubles as the one-rotation-at-a-time lease (with an expiry, so a crashed holder does not
block forever). The new version carries the rotation id in a tag, so a rotation that crashed after
promoting sees its own version on retry instead of making another. A timer, a queue message, an Event
Grid event and a manual call for the same secret at the same moment produce exactly one new version.

Audit: a promotion is an ``intent`` record before the new version is written and a ``success`` record
after (fail closed: no intent on record, no new version); a failure is ``ROTATION_FAILED`` with the step,
the error class and the attempt, and a ``RotationFailed`` notification — never silent.

The same progress entity is the lease of every write this service makes to a secret's versions: a
rotation (step ``promoting``), a rollback (``rolling_back``, shared/services/rollback.py), onboarding and
policy changes (shared/services/catalog.py). One at a time per secret; ``acquire`` takes it.

Every version this service writes carries ``rotated-by: secret-lifecycle`` and a ``rotation-id``
(``made_by_service`` tells them from out-of-band versions).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from shared.domain.audit import Action, Result, format_time, parse_time
from shared.domain.errors import Conflict, DependencyUnavailable, DomainError, NotFound, SecretDisabled
from shared.domain.generators import NewValue, generate
from shared.domain.notifications import ROTATION_FAILED, SECRET_ROTATED, Notification
from shared.domain.policy import PolicyError, RotationPolicy, Rotator
from shared.domain.rotation import RotationReason, RotationRequest
from shared.domain.secrets import MAX_TAGS, SecretVersion
from shared.domain.state import StateTampered, StateWrite, Versioned, lease_runs
from shared.domain.targets import (
    PENDING_FOR_TAG,
    TargetRefused,
    TargetSecret,
    is_reserved,
    pending_secret_name,
)
from shared.ports import Clock, Publisher, RotationRequests, SecretStore, StateStore, TargetRotator
from shared.services.audit import AuditTrail
from shared.services.sealed_state import get_as_found
from shared.services.sweep import PolicyViolation

logger = logging.getLogger(__name__)

PARTITION = "rotation"
VIOLATIONS = "policy-violation"
#: A secret's retirement schedule is a row beside its progress, in the same partition (a rotation takes
#: its lease and schedules the retirement in one transaction), keyed after every progress row: this
#: prefix sorts after the characters of a secret name, so each kind is one key range of the partition
#: (schedules: [prefix, prefix + "~"), since "~" sorts after them too).
SCHEDULE_PREFIX = "~retire~"
#: Longer than host.json's functionTimeout (10 min): a holder is stopped by the platform before its lease
#: can run out under it, so a lease that expired belongs to a holder that is gone.
LEASE = timedelta(minutes=15)
#: A lease taken longer ago than this is renewed before the vault write.
RENEW_AFTER = timedelta(minutes=1)
ROTATION_ID_TAG = "rotation-id"
PREVIOUS_VERSION_TAG = "previous-version"
ROTATED_BY_TAG = "rotated-by"
ROTATED_BY = "secret-lifecycle"
#: On a rollback's version: the old version whose value it made current again (it replaced that one too).
RESTORED_VERSION_TAG = "restored-version"
#: On a version this service disabled at the end of its grace: only such a version may be re-enabled by
#: a rollback. One disabled any other way (revoked, disabled by hand) stays disabled.
RETIRED_BY_TAG = "retired-by"
#: Idle: no write in flight. Other steps hold the lease while it runs.
IDLE = "idle"
PROMOTING = "promoting"
#: Reads of the progress a request makes before it gives up on a row that keeps changing under it.
LEASE_ATTEMPTS = 20


def made_by_service(version: SecretVersion) -> bool:
    """Whether this service wrote ``version`` (a rotation, an onboarding or a rollback): it carries
    ``rotated-by: secret-lifecycle`` and a rotation id. Anything else is an out-of-band version. The tags
    are only as trustworthy as the vault's access control: anyone who may set the secret may set them."""
    tags = version.tags or {}
    return tags.get(ROTATED_BY_TAG) == ROTATED_BY and bool(tags.get(ROTATION_ID_TAG))


#: How many of its latest writes a secret's progress remembers: enough for an event delivered late (Event
#: Grid retries for 24 h) after the secret was written again meanwhile.
MADE_HISTORY = 16
#: How many of the requests that joined its latest writes it remembers as done (a redelivered one skips).
JOINED_HISTORY = 48
#: Requests that may join one rotation (each is named in its outcome); one more is refused (409).
MAX_JOINED = 40
#: How long a forced request may wait on the queue (it is taken within seconds; the host retries within
#: minutes): an older one is skipped on record.
FORCED_FOR = timedelta(days=1)
#: How long a queued manual request is joined by the next ones (its message is usually taken at once; a
#: backlog can delay it). After that a request queues afresh.
QUEUED_FOR = timedelta(minutes=15)


def written_by_service(version: SecretVersion, states: StateStore) -> bool:
    """Whether this service really wrote ``version``: it carries the service's tags (``made_by_service``),
    which anyone who may set the secret can copy, AND the secret's progress row (where only the service
    writes) names that rotation id, either for a write still in flight or, once closed, with this very
    version among its latest writes. Raises DependencyUnavailable when the row cannot be read."""
    rotation_id = version.tags.get(ROTATION_ID_TAG)
    if not made_by_service(version) or not rotation_id:
        return False
    try:
        stored = states.get(PARTITION, version.name.lower())
    except StateTampered:
        return False  # what a tampered row says proves nothing
    if stored is None:
        return False
    progress = Progress.of(stored.state)
    if progress.step != IDLE and progress.rotation_id == rotation_id:
        return True  # the event can arrive before the write's row closes
    return f"{rotation_id}:{version.version}" in progress.made_list()


def schedule_key(key: str) -> str:
    """The row key of the retirement schedule of the secret whose progress row is ``key``."""
    return SCHEDULE_PREFIX + key


def progress_rows(states: StateStore) -> dict[str, Versioned]:
    """Every secret's progress row by key (the schedules beside them excluded). Raises
    DependencyUnavailable."""
    return states.list(PARTITION, stop=SCHEDULE_PREFIX)


def service_tags(rotation_id: str) -> dict[str, str]:
    """The tags that mark a version as written by this service (see ``made_by_service``)."""
    return {ROTATED_BY_TAG: ROTATED_BY, ROTATION_ID_TAG: rotation_id}


class _LeaseLost(Exception):
    """Another holder took this secret's rotation over (our lease expired): stop, it finishes."""


class _ClosePending(Exception):
    """The new version exists but its success could not be recorded: the progress stays open, so the
    retry finds the version (by its rotation id) and records it. Not a failed rotation."""

    def __init__(self, cause: DomainError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class NotManaged(Conflict):
    """The secret carries no rotation policy (409 naming the missing tag)."""

    def __init__(self, name: str, tag: str) -> None:
        super().__init__(f"secret {name} is not managed: it lacks the tag {tag}")
        self.tag = tag


@dataclass(frozen=True)
class RotationOutcome:
    """What a call did. ``status``: ``rotated``, ``skipped`` (with the reason), ``joined`` (the request
    joined the rotation running, ``rotation_id``: its outcome names the request), ``in_progress`` (another
    holder has the lease), ``failed``, ``planned`` (a dry run: what would happen)."""

    secret_name: str
    status: str
    reason: str
    rotation_id: str | None = None
    new_version: str | None = None
    previous_version: str | None = None


@dataclass
class Progress:
    """The stored progress of a secret's rotations (the state entity's properties)."""

    rotation_id: str | None = None
    step: str = IDLE  # idle → promoting (or rolling_back, onboarding, updating_policy) → idle
    from_version: str | None = None
    holder: str | None = None
    lease_until: str | None = None
    #: When the holder took the lease (a renewal keeps it): a lease held far longer than a function may
    #: run is a stall (shared/services/stalls.py).
    leased_at: str | None = None
    attempt: int = 0
    last_error: str | None = None
    new_version: str | None = None
    #: A rollback's version whose value it makes current again.
    restore_version: str | None = None
    #: The latest writes, as JSON ["rotation_id:version", ...] (``written_by_service``).
    made: str | None = None
    #: JSON ids of the requests that joined the latest writes (each done with the write it joined).
    joined_done: str | None = None
    #: JSON ids of requests that joined this rotation (or the queued request): each is named in its outcome
    #: and is done when it closes.
    aliases: str | None = None
    #: A manual request queued and not yet taken (its id), until when it is joined, and whether it (or a
    #: request that joined it) forces the rotation ("true").
    queued: str | None = None
    queued_until: str | None = None
    queued_force: str | None = None

    @classmethod
    def of(cls, state: Mapping[str, Any]) -> Progress:
        """The progress in a stored row. The row is storage anyone with access could write: a field of the
        wrong type is dropped (its default), never an error that would stop every rotation of the secret."""
        known: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            value = state.get(name)
            if name == "attempt":
                if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1_000_000:
                    known[name] = value
            elif isinstance(value, str) and len(value) <= 4096:
                known[name] = value
        return cls(**known)

    def state(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}

    def made_list(self) -> list[str]:
        return _ids(self.made)

    def alias_list(self) -> list[str]:
        return _ids(self.aliases)

    def joined_done_list(self) -> list[str]:
        return _ids(self.joined_done)

    def join(self, rotation_id: str, *, new: bool = False) -> None:
        """A request with its own id joins this rotation (or the queued request): its id is named in the
        outcome and done when the rotation closes. ``new``: a request arriving now, refused (Conflict) when
        MAX_JOINED have joined already (the row must stay small); requests waiting already always join."""
        if rotation_id in (self.rotation_id, self.queued) or rotation_id in self.alias_list():
            return
        if new and len(self.alias_list()) >= MAX_JOINED:
            raise Conflict(f"{MAX_JOINED} requests joined this rotation already; ask again once it is done")
        self.aliases = _dump_ids([*self.alias_list(), rotation_id])

    def queued_now(self, now: datetime) -> str | None:
        """The queued request that new requests join, while it is fresh."""
        return self.queued if self.queued and lease_runs(self.queued_until, now, QUEUED_FOR) else None

    def adopt_queued(self, now: datetime) -> list[str]:
        """A rotation starting (or resumed) now takes over every request waiting on this row — the queued
        one, while fresh, and those that joined it or an earlier attempt — so its outcome names them: their
        ids, the queued marker cleared."""
        queued = self.queued_now(now)
        adopted = [*([queued] if queued else []), *self.alias_list()]
        self.queued = self.queued_until = self.queued_force = None
        return list(dict.fromkeys(adopted))

    def merge_joined(self, stored: Progress) -> list[str]:
        """Take the ids that joined the stored copy of this holder's row meanwhile; returns the new ones."""
        new = [a for a in stored.alias_list() if a not in self.alias_list() and a != self.rotation_id]
        if new:
            self.aliases = _dump_ids([*self.alias_list(), *new])
        return new

    def finished(self, rotation_id: str) -> bool:
        """Whether the write ``rotation_id`` (or a request that joined it) closed, per this row."""
        return (
            (self.step == IDLE and self.rotation_id == rotation_id)
            or any(m.split(":", 1)[0] == rotation_id for m in self.made_list())
            or rotation_id in self.joined_done_list()
        )

    def closed(self, new_version: str) -> None:
        """The write in flight made ``new_version``: the row goes idle and remembers it among its latest
        writes (a rotation's close also calls ``done_with_joined``: its outcome named the joined ids)."""
        self.step, self.holder, self.lease_until, self.last_error = IDLE, None, None, None
        self.new_version = new_version
        entry = f"{self.rotation_id}:{new_version}"
        made = [m for m in self.made_list() if m != entry]
        self.made = _dump_ids([*made, entry][-MADE_HISTORY:])

    def done_with_joined(self) -> list[str]:
        """The requests that joined are named in an outcome: remembered as done, no longer waiting.
        Returns their ids."""
        joined = self.alias_list()
        self.done_with(joined)
        return joined

    def done_with(self, ids: Sequence[str]) -> None:
        """The requests ``ids`` are named in an outcome: remembered as done, no longer waiting."""
        waiting = [a for a in self.alias_list() if a not in ids]
        self.aliases = _dump_ids(waiting)
        if ids:
            done = [d for d in self.joined_done_list() if d not in ids]
            self.joined_done = _dump_ids([*done, *ids][-JOINED_HISTORY:])

    def leased_by_other(self, holder: str, now: datetime) -> bool:
        """Another holder's lease that still runs (whatever its step). A lease ending further ahead than
        any holder can take (a forged or skewed row) is not honoured: it would block the secret for good."""
        if self.step == IDLE or self.holder == holder:
            return False
        return lease_runs(self.lease_until, now, LEASE)


def _ids(raw: str | None) -> list[str]:
    """A list of ids as a progress row keeps it (JSON); [] for none, or for what is no such list."""
    try:
        ids = json.loads(raw or "[]")
    except ValueError:
        return []
    return [str(i) for i in ids] if isinstance(ids, list) else []


def _dump_ids(ids: Sequence[str]) -> str | None:
    """A list of ids as a progress row keeps it: compact JSON, or None (no property) for none."""
    return json.dumps(list(ids), separators=(",", ":")) if ids else None


def rotate(
    name: str,
    store: SecretStore,
    states: StateStore,
    trail: AuditTrail,
    publisher: Publisher,
    clock: Clock,
    *,
    reserved: Collection[str],
    force: bool = False,
    dry_run: bool = False,
    reason: str = "due",
    correlation_id: str | None = None,
    rotation_id: str | None = None,
    rotators: Mapping[Rotator, TargetRotator] | None = None,
    join: bool = True,
) -> RotationOutcome:
    """Rotate ``name`` if it is due (or ``force``), resuming a rotation that was interrupted.

    ``rotators``: the target rotators this deployment runs; a secret whose policy names another one is
    skipped (recorded). Through a target rotator, the pending value is stored in the secret's pending
    companion, set at the target and tested there before it is promoted (``_target_value``).

    ``rotation_id``: the id a new rotation starts with (a manual request's); when that rotation is done
    already (a redelivered request), the call is a skip, so a forced request delivered five times still
    makes one version. A request with an id that finds another rotation running joins it (``joined``: the
    rotation's outcome names it), unless ``join`` is False (then ``in_progress``, as for a request without
    an id); every request's outcome is on record. A rotation starting takes over a queued manual request
    (``request_rotation``) and the requests that joined it.

    Raises NotFound (no such secret), NotManaged (no policy), AuditUnavailable (nothing changed), and
    any DomainError of a failed step after recording ROTATION_FAILED (the queue retries transient ones).
    A target's refusal (TargetRefused: retrying cannot help) is recorded, closes the rotation and is
    returned as ``failed``, not raised: the request is done.
    """
    rotators = rotators or {}
    key = name.lower()
    taken = _take(
        name, store, states, trail, clock, reserved=reserved, force=force, dry_run=dry_run, reason=reason,
        correlation_id=correlation_id, rotation_id=rotation_id, rotators=rotators, join=join,
    )  # fmt: skip
    if isinstance(taken, RotationOutcome):
        if taken.status == "skipped" and rotation_id is not None:
            _drop_queued(states, trail, name, rotation_id, taken.reason, correlation_id)
        return taken
    current, policy, progress, etag, scheduled, retire = taken

    try:
        _ensure_scheduled(states, key, retire, scheduled)
        target = rotators.get(policy.rotator)

        def announce(version: str) -> None:
            made = RotationOutcome(
                name, "rotated", reason, progress.rotation_id, version, progress.from_version
            )
            _announce(publisher, clock, trail.vault, made)

        new = _promote(
            name, store, states, trail, clock, policy, current, progress, key, etag, correlation_id, target,
            announce,
        )  # fmt: skip
    except _LeaseLost:
        return RotationOutcome(name, "in_progress", "another rotation took the lease", progress.rotation_id)
    except _ClosePending as pending:
        _release(states, clock, name, key, progress, pending.cause)
        raise pending.cause from pending  # the queue retries; the retry records the version made
    except TargetRefused as err:
        # The pending value stays enabled: the target may have taken it before refusing (a password set,
        # then a refused test), and then it is the one value that works; the next rotation offers it to
        # the target first (``_target_value``) and disables it once something is promoted.
        _fail(states, trail, publisher, clock, name, key, progress, err, correlation_id, close=True)
        return RotationOutcome(name, "failed", str(err), progress.rotation_id)
    except DomainError as err:
        _fail(states, trail, publisher, clock, name, key, progress, err, correlation_id)
        raise
    return RotationOutcome(
        name, "rotated", reason, progress.rotation_id, new_version=new, previous_version=progress.from_version
    )


_Taken = tuple[SecretVersion, RotationPolicy, Progress, str, bool, "tuple[str, datetime] | None"]


def _take(
    name: str,
    store: SecretStore,
    states: StateStore,
    trail: AuditTrail,
    clock: Clock,
    *,
    reserved: Collection[str],
    force: bool,
    dry_run: bool,
    reason: str,
    correlation_id: str | None,
    rotation_id: str | None,
    rotators: Mapping[Rotator, TargetRotator],
    join: bool = True,
) -> _Taken | RotationOutcome:
    """Decide whether this request rotates, and take the secret's lease when it does: (the current
    version, the policy, the progress written, its etag, whether the retirement was scheduled with it,
    the retirement) — or its outcome when it does not (skipped, joined, planned), on record. A lease lost
    to a concurrent request is decided again: it joins that one, or takes the lease after it."""
    key = name.lower()
    for _ in range(LEASE_ATTEMPTS):
        # The progress first, then the vault: a rotation that completes in between changes the progress,
        # so the lease below (conditional on what was read here) fails instead of rotating a stale version.
        stored = states.get(PARTITION, key)
        found = _rotatable(
            name, store, states, trail, reserved, correlation_id, stale=(key, stored, clock),
            available=rotators, rotation_id=rotation_id,
        )  # fmt: skip
        if isinstance(found, RotationOutcome):
            return found
        current, policy = found
        now = clock.now()
        progress = Progress.of(stored.state) if stored else Progress()
        if rotation_id is not None and _done(store, name, progress, current, rotation_id):
            return _skip(trail, name, f"already done (rotation {rotation_id})", correlation_id, rotation_id)
        queued = progress.queued_now(now)
        forced = force or (queued is not None and progress.queued_force == "true")
        resuming = progress.step == PROMOTING and _resumable(progress, current)
        # A row alone never starts a write: without a trace of its rotation in the vault (the version it
        # made, or its pending value) it only continues a rotation that is due or forced anyway.
        started = resuming and _traced(store, name, progress, current, policy.rotator in rotators)
        if not (started or forced or policy.is_due(current.created, now, current.expires)):
            _close_stale(states, key, stored, clock)  # a dead holder's row the vault does not bear out
            due = policy.next_rotation(current.created, current.expires)
            return _skip(trail, name, f"not due until {format_time(due)}", correlation_id, rotation_id)
        if dry_run:
            return RotationOutcome(name, "planned", reason, previous_version=current.version)

        holder = uuid.uuid4().hex
        if progress.leased_by_other(holder, now):
            joined = _join(states, trail, name, key, progress, stored, rotation_id, correlation_id, join=join)
            if joined is None:
                continue  # the row changed meanwhile: decide again
            return joined
        if not resuming:
            # A fresh rotation (over an idle row, a stale lease of another kind of write, or a row the
            # vault does not bear out); it takes over the queued request and those that joined it.
            adopted = [r for r in progress.adopt_queued(now) if r != rotation_id]
            progress.rotation_id = rotation_id or (adopted.pop(0) if adopted else uuid.uuid4().hex)
            progress.from_version, progress.attempt, progress.restore_version = current.version, 0, None
            progress.aliases = _dump_ids(adopted)
        else:
            for request in [*progress.adopt_queued(now), *([rotation_id] if rotation_id else [])]:
                progress.join(request)
        progress.step, progress.holder, progress.attempt = PROMOTING, holder, progress.attempt + 1
        progress.lease_until, progress.leased_at = format_time(now + LEASE), format_time(now)
        grace = policy.previous_grace()
        retire = None if grace is None else (progress.from_version or current.version, now + grace)
        try:
            etag, scheduled = _lease(states, key, progress, stored, retire)
        except Conflict:
            continue  # another request took it, or joined, meanwhile: join it, or take it again
        return current, policy, progress, etag, scheduled, retire
    return _skip(trail, name, "the rotation's state kept changing; ask again", correlation_id, rotation_id)


def register_request(
    states: StateStore, name: str, request_id: str, force: bool, clock: Clock
) -> tuple[str, str | None]:
    """A manual request for ``name``'s rotation, coalesced with the others: it joins the rotation running
    (``("in_progress", its id)``) or the request queued and not yet taken (``("queued", its id)``) —
    named in that one's outcome — or it is marked queued itself (``("queued", None)``: the caller sends
    its message). So concurrent requests make one rotation, and every id has an outcome. Raises Busy
    (another kind of write holds the lease), Conflict (too many joined; a row that keeps changing),
    StateTampered, DependencyUnavailable."""
    key = name.lower()
    for _ in range(LEASE_ATTEMPTS):
        stored = states.get(PARTITION, key)
        progress = Progress.of(stored.state) if stored else Progress()
        now = clock.now()
        joined: str | None = progress.queued_now(now)
        status = "queued"
        if progress.leased_by_other("", now):
            if progress.step != PROMOTING or not progress.rotation_id:
                raise Busy(name, progress)
            status, joined = "in_progress", progress.rotation_id
        if joined is None:
            progress.queued, progress.queued_until = request_id, format_time(now + QUEUED_FOR)
            progress.queued_force = "true" if force else None
        else:
            progress.join(request_id, new=True)
            if force and status == "queued":
                progress.queued_force = "true"
        try:
            write_progress(states, key, progress, stored.etag if stored else None)
        except (Conflict, NotFound):
            continue  # another request registered meanwhile: join it
        return status, joined
    raise Conflict(f"secret {name}: too many rotation requests at once; ask again")


def unregister_request(
    states: StateStore, trail: AuditTrail, name: str, request_id: str, correlation_id: str | None
) -> None:
    """Take back a queued request whose message could not be sent (nothing will take it): the requests
    that joined it get their outcome (ROTATION_SKIPPED), then the marker goes. Best effort: the marker
    expires by itself."""
    _drop_queued(states, trail, name, request_id, "it could not be queued", correlation_id)


def _drop_queued(
    states: StateStore, trail: AuditTrail, name: str, rotation_id: str, why: str, correlation_id: str | None
) -> None:
    """A queued request that was skipped (or not sent) takes the requests that joined it along: they are
    skipped on record, then the marker goes, so later requests queue afresh. Best effort (the marker
    expires)."""
    try:
        joined = _waiting_on(states, name, rotation_id, queued_only=True)
        if joined is None:
            return
        if joined:
            details = {
                "reason": f"the request they joined was skipped: {why}"[:500],
                "rotation_id": rotation_id,
                "joined": joined,
            }
            trail.record(
                Action.ROTATION_SKIPPED, secret_name=name, correlation_id=correlation_id, details=details
            )
        _take_off(states, name, rotation_id, joined)  # after the record: a crash names them twice, not never
    except DomainError:
        logger.warning("the queued request %s of %s could not be dropped; it expires", rotation_id, name)


def _waiting_on(
    states: StateStore, name: str, request_id: str | None, *, queued_only: bool = False
) -> list[str] | None:
    """The ids of the requests waiting with ``request_id`` on the secret's row — those that joined it,
    queued or (unless ``queued_only``) running; for None, those of the rotation in flight — or None when
    the row does not wait on it. Raises StateTampered, DependencyUnavailable."""
    stored = states.get(PARTITION, name.lower())
    if stored is None:
        return None
    progress = Progress.of(stored.state)
    if request_id is None:
        return progress.alias_list() if progress.step == PROMOTING else None
    if progress.queued == request_id or (not queued_only and progress.rotation_id == request_id):
        return [a for a in progress.alias_list() if a != request_id]
    return None


def _take_off(states: StateStore, name: str, request_id: str | None, ids: Sequence[str]) -> None:
    """The requests ``ids`` are named in an outcome: off the row (done), and the marker of ``request_id``
    with them. A compare-and-swap, read again when another write came in between. Raises
    DependencyUnavailable."""
    key = name.lower()
    for _ in range(LEASE_ATTEMPTS):
        stored = states.get(PARTITION, key)
        if stored is None:
            return
        progress = Progress.of(stored.state)
        progress.done_with(ids)
        if request_id is not None and progress.queued == request_id:
            progress.queued = progress.queued_until = progress.queued_force = None
        try:
            write_progress(states, key, progress, stored.etag)
            return
        except (Conflict, NotFound):
            continue


def _done(
    store: SecretStore, name: str, progress: Progress, current: SecretVersion, rotation_id: str
) -> bool:
    """Whether the rotation ``rotation_id`` made its version already: the progress closed it (or a
    rotation it joined), the current version carries it, or (it was superseded since) some version of the
    secret does."""
    if progress.finished(rotation_id):
        return True
    if rotation_id in (progress.rotation_id, progress.queued) or rotation_id in progress.alias_list():
        return False  # in flight
    if current.tags.get(ROTATION_ID_TAG) == rotation_id:
        return True
    return any(v.tags.get(ROTATION_ID_TAG) == rotation_id for v in store.list_versions(name))


def _close_stale(states: StateStore, key: str, stored: Versioned | None, clock: Clock) -> None:
    """A dead holder's ``promoting`` row of a secret that is not rotated any more (gone, unmanaged,
    disabled, ...): closed, so the sweep does not request it again every hour."""
    if stored is None:
        return
    progress = Progress.of(stored.state)
    if progress.step == PROMOTING and not progress.leased_by_other("", clock.now()):
        _abandon(states, key, progress, stored.etag)


def _abandon(states: StateStore, key: str, progress: Progress, etag: str) -> None:
    """Close a dead holder's row that the vault does not bear out (nothing to resume), so the sweep does
    not request it again every hour. Lost to a concurrent writer: that one decides."""
    progress.step, progress.holder, progress.lease_until = IDLE, None, None
    progress.last_error = "abandoned: the vault does not bear the rotation out"
    with contextlib.suppress(Conflict, NotFound):
        states.replace(PARTITION, key, progress.state(), etag)


def _traced(store: SecretStore, name: str, progress: Progress, current: SecretVersion, pending: bool) -> bool:
    """Whether the vault holds a trace of the stored rotation: the current version carries its id (the
    crash came after the promotion), or (``pending``: a target rotator) the pending companion's enabled
    version does (the target may have it already). A storage writer can forge a row, not these."""
    if current.tags.get(ROTATION_ID_TAG) == progress.rotation_id:
        return True
    if not pending:
        return False
    try:
        stored = store.get_properties(pending_secret_name(name))
    except (NotFound, SecretDisabled):
        return False
    tags = stored.tags
    return tags.get(PENDING_FOR_TAG) == name.lower() and tags.get(ROTATION_ID_TAG) == progress.rotation_id


def _resumable(progress: Progress, current: SecretVersion) -> bool:
    """Whether a stored ``promoting`` row is borne out by the vault: the version it replaces is still the
    current one (the crash came before the write), or the current version carries its rotation id and the
    row has not closed it yet (the crash came after). Anything else is a row the vault contradicts (a
    storage writer's, or one left behind by a write that has since been superseded): not resumed."""
    if progress.rotation_id is None:
        return False
    if current.tags.get(ROTATION_ID_TAG) == progress.rotation_id:
        return f"{progress.rotation_id}:{current.version}" not in progress.made_list()
    return progress.from_version == current.version


class Busy(Conflict):
    """Another write to the secret (a rotation, a rollback, an onboarding, a policy change) holds its
    lease. ``rotation_id``/``step``: what holds it."""

    def __init__(self, name: str, progress: Progress) -> None:
        what = "a rotation" if progress.step == PROMOTING else f"another change ({progress.step})"
        super().__init__(f"secret {name}: {what} is in progress; try again later")
        self.rotation_id = progress.rotation_id
        self.step = progress.step


def acquire(
    states: StateStore,
    name: str,
    stored: Versioned | None,
    step: str,
    clock: Clock,
    *,
    rotation_id: str | None = None,
    from_version: str | None = None,
    restore_version: str | None = None,
) -> tuple[Progress, str]:
    """Take ``name``'s lease for ``step`` over the progress ``stored`` as read (read it before the vault,
    so that a write completed in between makes this fail). Returns the progress written and its etag.

    Raises Busy when another holder's lease still runs, a rotation is unfinished (even one whose holder
    died: it is resumed, never taken over — its pending value may be the only credential that works at the
    target), or the row changed since it was read."""
    now = clock.now()
    previous = Progress.of(stored.state) if stored else Progress()
    if previous.leased_by_other("", now) or previous.step == PROMOTING:
        raise Busy(name, previous)
    progress = Progress(
        rotation_id=rotation_id or uuid.uuid4().hex,
        step=step,
        from_version=from_version,
        holder=uuid.uuid4().hex,
        lease_until=format_time(now + LEASE),
        leased_at=format_time(now),
        attempt=1,
        new_version=previous.new_version,  # the last rotation's version stays on record
        restore_version=restore_version,
        made=previous.made,  # and the versions the service wrote (written_by_service)
        joined_done=previous.joined_done,
        # Requests waiting for a rotation (queued, or joined) wait on through this write.
        aliases=previous.aliases,
        queued=previous.queued,
        queued_until=previous.queued_until,
        queued_force=previous.queued_force,
    )
    try:
        return progress, write_progress(states, name.lower(), progress, stored.etag if stored else None)
    except (Conflict, NotFound) as err:
        raise Busy(name, previous) from err


def release(states: StateStore, name: str, progress: Progress, etag: str, *, new_version: str | None) -> None:
    """Close the lease ``acquire`` took (step idle). Best effort: a row that changed or vanished meanwhile
    is left as it is (the lease expires by itself)."""
    if new_version is not None:
        progress.closed(new_version)
    progress.step, progress.holder, progress.lease_until, progress.last_error = IDLE, None, None, None
    try:
        states.replace(PARTITION, name.lower(), progress.state(), etag)
    except (Conflict, NotFound):
        logger.warning("the lease on %s changed before it could be released", name)


def _rotatable(
    name: str,
    store: SecretStore,
    states: StateStore,
    trail: AuditTrail,
    reserved: Collection[str],
    correlation_id: str | None,
    *,
    stale: tuple[str, Versioned | None, Clock],
    available: Collection[Rotator],
    rotation_id: str | None = None,
) -> tuple[SecretVersion, RotationPolicy] | RotationOutcome:
    """The current version and its policy, or why this secret is not rotated (recorded, naming the request
    ``rotation_id``; a dead holder's row of it is then closed: nothing to resume). Raises NotFound,
    NotManaged."""
    key, stored, clock = stale
    try:
        found = _why_not(name, store, states, trail, reserved, correlation_id, available, rotation_id)
    except (NotFound, NotManaged):
        _close_stale(states, key, stored, clock)
        raise
    if isinstance(found, RotationOutcome):
        _close_stale(states, key, stored, clock)
    return found


def _why_not(
    name: str,
    store: SecretStore,
    states: StateStore,
    trail: AuditTrail,
    reserved: Collection[str],
    correlation_id: str | None,
    available: Collection[Rotator],
    rotation_id: str | None = None,
) -> tuple[SecretVersion, RotationPolicy] | RotationOutcome:
    """The current version and its policy, or why this secret is not rotated (recorded)."""

    def skip(why: str) -> RotationOutcome:
        return _skip(trail, name, why, correlation_id, rotation_id)

    if is_reserved(name, reserved):
        return skip("the service's own secret is never rotated")
    current = _current(store, name)
    if current is None:
        return skip("the current version is disabled")
    if current.managed:
        return skip("certificate-backed: rotate the certificate")
    if not RotationPolicy.is_managed(current.tags):
        raise NotManaged(name, "managed-by")
    try:
        policy = RotationPolicy.from_tags(current.tags, name=name, reserved=reserved)
    except PolicyError as err:
        _violation(states, trail, name, current.version, err, correlation_id)
        if rotation_id is not None:  # a request's own outcome, beside the violation recorded once
            return skip(f"invalid policy: {err}")
        return RotationOutcome(name, "skipped", f"invalid policy: {err}")
    if policy.rotator != Rotator.KEY_VAULT and policy.rotator not in available:
        return skip(f"the {policy.rotator.value} rotator is not available")
    return current, policy


def _promote(
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
    closed and the outcome recorded. Raises _LeaseLost when another holder took the lease meanwhile,
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
        if _lease_left(progress, clock) < LEASE - RENEW_AFTER:
            progress.lease_until = format_time(clock.now() + LEASE)
            etag = _renew(states, key, progress, etag)
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
        _discard_pending(store, name, progress.rotation_id)  # also when promoted before a crash
    try:
        # On record before the progress closes: a failure here leaves it open, and the retry records it.
        # It names every request that joined this rotation (each is done with it).
        trail.record(
            Action.ROTATED,
            secret_name=name,
            version=new.version,
            correlation_id=correlation_id,
            details={**details, "previous_version": progress.from_version, **_joined(progress)},
        )
    except DomainError as err:
        raise _ClosePending(err) from err
    # Sent before the progress closes: a crash in between sends it again on retry (same event id: the
    # rotation id), where sending it after would lose it for good — and consumers of a single-user
    # database credential learn from it that the old value stopped working.
    announce(new.version)
    try:
        _close(states, trail, name, key, progress, etag, new.version, correlation_id)
    except (Conflict, NotFound):
        # The version is made and its success on record: a progress row that changed or vanished
        # meanwhile (a takeover, a storage writer) does not make this a failed rotation.
        logger.warning("rotation progress of %s changed before it could be closed", name)
    except DomainError as err:
        # The row stays open and the lease is released: the retry (the queue's, or the sweep's
        # resumption) finds the version made, and records, announces and closes again.
        raise _ClosePending(err) from err
    return new.version


def _joined(progress: Progress) -> dict[str, Any]:
    """What an outcome record says of the requests that joined the rotation (nothing when none did)."""
    joined = progress.alias_list()
    return {"joined": joined} if joined else {}


def _close(
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

    _write_own(states, key, progress, etag, closing=version, joined=late)


def _write_own(
    states: StateStore,
    key: str,
    progress: Progress,
    etag: str,
    *,
    closing: str | None = None,
    joined: Callable[[list[str]], None] | None = None,
) -> str:
    """Write this holder's progress (``closing``: closed with that version). A write that lost to a request
    joining (the row still this holder's, with more ids in it) takes the new ids in (``joined`` hears of
    them) and is tried again; any other change is Conflict (another holder). Returns the new etag. Raises
    Conflict, NotFound."""
    for _ in range(LEASE_ATTEMPTS):
        written = dataclasses.replace(progress)
        if closing is not None:
            written.closed(closing)
            written.done_with_joined()
        try:
            return states.replace(PARTITION, key, written.state(), etag).etag
        except Conflict:
            stored = states.get(PARTITION, key)
            if stored is None:
                raise NotFound(f"the rotation progress of {key} is gone") from None
            mine = Progress.of(stored.state)
            if mine.holder != progress.holder or mine.rotation_id != progress.rotation_id:
                raise
            new = progress.merge_joined(mine)
            if new and joined is not None:
                joined(new)
            etag = stored.etag
    raise Conflict(f"the rotation progress of {key} keeps changing")


def _lease(
    states: StateStore,
    key: str,
    progress: Progress,
    stored: Versioned | None,
    retire: tuple[str, datetime] | None,
) -> tuple[str, bool]:
    """Write the lease ``progress`` holds over the row ``stored`` as read and, with ``retire``, schedule
    the retirement of the version the rotation replaces, in one transaction: the schedule is on record
    before any version is written, so no crash or failed write after the promotion can leave the old value
    enabled for good (``retire_due`` asks the vault whether, and since when, it was replaced; a rotation
    that made nothing leaves an entry it drops). Most secrets have no schedule when they rotate
    (retirement removes an emptied one long before the next rotation): one store call. Returns the
    lease's etag and whether the schedule was written with it (if not, the caller schedules it). Raises
    Conflict when the row changed since it was read (another holder), DependencyUnavailable."""
    etag = stored.etag if stored else None
    if retire is not None:
        version, after = retire
        writes = [
            StateWrite(key, progress.state(), etag),
            StateWrite(schedule_key(key), _schedule_state([(version, after)])),
        ]
        try:
            return states.commit(PARTITION, writes)[0].etag, True
        except (Conflict, NotFound):
            pass  # a schedule exists already, or the row changed: the lease alone says which
    try:
        return write_progress(states, key, progress, etag), False
    except NotFound as err:
        raise Conflict(f"the rotation progress of {key} vanished since it was read") from err


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


def _discard_pending(store: SecretStore, name: str, rotation_id: str | None) -> None:
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


def _lease_left(progress: Progress, clock: Clock) -> timedelta:
    try:
        return parse_time(progress.lease_until or "") - clock.now()
    except (ValueError, TypeError):
        return timedelta(0)


def _renew(states: StateStore, key: str, progress: Progress, etag: str) -> str:
    try:
        return _write_own(states, key, progress, etag)
    except (Conflict, NotFound) as err:
        raise _LeaseLost from err


def write_progress(states: StateStore, key: str, progress: Progress, etag: str | None) -> str:
    if etag is None:
        return states.create(PARTITION, key, progress.state()).etag
    return states.replace(PARTITION, key, progress.state(), etag).etag


def _current(store: SecretStore, name: str) -> SecretVersion | None:
    try:
        return store.get_properties(name)
    except SecretDisabled:
        return None


def _skip(
    trail: AuditTrail, name: str, why: str, correlation_id: str | None, rotation_id: str | None = None
) -> RotationOutcome:
    """The ROTATION_SKIPPED outcome of a request (``rotation_id``: the request's own id, when it has one)."""
    details = {"reason": why} if rotation_id is None else {"reason": why, "rotation_id": rotation_id}
    trail.record(Action.ROTATION_SKIPPED, secret_name=name, correlation_id=correlation_id, details=details)
    return RotationOutcome(name, "skipped", why, rotation_id)


def _join(
    states: StateStore,
    trail: AuditTrail,
    name: str,
    key: str,
    progress: Progress,
    stored: Versioned | None,
    rotation_id: str | None,
    correlation_id: str | None,
    *,
    join: bool = True,
) -> RotationOutcome | None:
    """A request that found another holder's lease: it joins the rotation running (named in its outcome).
    A request with an id that meets another kind of write (a rollback, a policy change: seconds) raises
    Busy, for the queue to deliver it again (it may be the queued one others joined). Without an id, or
    when it may not join (``join``), it is ``in_progress``, skipped on record. None: the row changed since
    it was read (read it again)."""
    if rotation_id is not None and join and progress.step != PROMOTING:
        raise Busy(name, progress)
    if progress.step != PROMOTING or rotation_id is None or stored is None or not join:
        what = "a rotation" if progress.step == PROMOTING else f"another change ({progress.step})"
        why = f"{what} holds the lease (rotation {progress.rotation_id})"
        _skip(trail, name, why, correlation_id, rotation_id)
        return RotationOutcome(name, "in_progress", why, progress.rotation_id)
    try:
        progress.join(rotation_id, new=True)
    except Conflict as err:
        return _skip(trail, name, str(err), correlation_id, rotation_id)
    try:
        write_progress(states, key, progress, stored.etag)
    except (Conflict, NotFound):
        return None
    return RotationOutcome(name, "joined", f"joined rotation {progress.rotation_id}", progress.rotation_id)


def _violation(
    states: StateStore,
    trail: AuditTrail,
    name: str,
    version: str,
    err: PolicyError,
    correlation_id: str | None,
) -> None:
    """POLICY_VIOLATION once per version (``_once``)."""
    _once(
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


def _once(states: StateStore, key: str, tag: str, record: Callable[[], object]) -> bool:
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


def _release(
    states: StateStore, clock: Clock, name: str, key: str, progress: Progress, err: DomainError
) -> None:
    """End this holder's lease now, keeping the progress (and the requests that joined) for the retry;
    only while it is still ours."""
    progress.last_error, progress.lease_until = type(err).__name__, format_time(clock.now())
    _save_own(states, name, key, progress)


def _save_own(
    states: StateStore,
    name: str,
    key: str,
    progress: Progress,
    closing: Callable[[Progress], None] | None = None,
) -> None:
    """Write this holder's progress while it is still ours (``closing``: as it changes it), taking in the
    requests that joined meanwhile (a joiner's write is no other holder: read again and retry). Best
    effort: logged when it cannot be."""
    try:
        for _ in range(LEASE_ATTEMPTS):
            stored = _ours(states, key, progress)
            if stored is None:
                return
            progress.merge_joined(Progress.of(stored.state))
            written = dataclasses.replace(progress)
            if closing is not None:
                closing(written)
            try:
                write_progress(states, key, written, stored.etag)
                return
            except (Conflict, NotFound):
                continue
        logger.error("rotation progress of %s kept changing: not saved", name)
    except DomainError:
        logger.exception("rotation progress of %s could not be saved", name)


def _ours(states: StateStore, key: str, progress: Progress) -> Versioned | None:
    """The stored progress while this holder still holds it, else None. Raises DependencyUnavailable."""
    stored = states.get(PARTITION, key)
    if progress.holder is None or stored is None or stored.state.get("holder") != progress.holder:
        return None
    return stored


def _fail(
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
        stored = _ours(states, key, progress)
        if stored is not None:
            progress.merge_joined(Progress.of(stored.state))
    step = err.step if isinstance(err, TargetRefused) else "promote"
    details = {
        "rotation_id": progress.rotation_id,
        "step": step,
        "attempt": progress.attempt,
        **_joined(progress),
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

        _save_own(states, name, key, progress, ended)
    else:
        _release(states, clock, name, key, progress, err)
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


def retirements(state: Mapping[str, Any]) -> list[tuple[str, datetime]]:
    """The scheduled retirements in a stored state; an unreadable list is none (and logged)."""
    try:
        return [(str(v), parse_time(str(t))) for v, t in json.loads(str(state.get("versions") or "[]"))]
    except (ValueError, TypeError) as err:
        logger.warning("unreadable retirement schedule ignored: %s", err)
        return []


def _schedule_state(planned: Sequence[tuple[str, datetime]]) -> dict[str, Any]:
    return {"versions": json.dumps([[v, format_time(t)] for v, t in planned])}


def _ensure_scheduled(
    states: StateStore, key: str, retire: tuple[str, datetime] | None, scheduled: bool
) -> None:
    """The schedule ``_lease`` could not write with the lease, written before anything else happens."""
    if retire is not None and not scheduled:
        version, after = retire
        schedule_retirement(states, key, [version], after)


def schedule_retirement(states: StateStore, key: str, versions: Collection[str], after: datetime) -> None:
    """Plan the retirement of ``versions`` at ``after`` in their secret's schedule (its own row, so
    retiring never races a rotation's progress), replacing a time planned for them before (a restored
    version replaced again just now starts its grace again). Always a fresh
    compare-and-swap write, even when the version is planned already: a retirement run that read the
    schedule before it and found the version still current (this rotation has not written its version
    yet; an earlier attempt that failed had planned it) then loses its write, instead of dropping the entry
    for good; and a time a storage writer pushed far ahead is pulled back. Raises Conflict when the
    schedule keeps changing (three reads and writes lost to retirement runs), DependencyUnavailable."""
    row = schedule_key(key)
    for _ in range(3):
        stored = _schedule(states, row)
        kept = [(v, t) for v, t in (retirements(stored.state) if stored else []) if v not in versions]
        state = _schedule_state([*kept, *((v, after) for v in versions)])
        try:
            if stored is None:
                states.create(PARTITION, row, state)
            else:
                states.replace(PARTITION, row, state, stored.etag)
            return
        except (Conflict, NotFound):
            continue  # a retirement run changed or removed it meanwhile: read it again
    raise Conflict(f"the retirement schedule of {key} keeps changing; try again")


def _schedule(states: StateStore, row: str) -> Versioned | None:
    """A retirement schedule row; a tampered one (reported by the store) as an empty schedule at the
    version read, so whoever writes next replaces it: what it planned cannot be trusted, and the vault
    decides what retires anyway (``retire_due``)."""
    return get_as_found(states, PARTITION, row)


def retire_due(
    name: str,
    store: SecretStore,
    states: StateStore,
    trail: AuditTrail,
    clock: Clock,
    *,
    reserved: Collection[str],
    rotators: Mapping[Rotator, TargetRotator] | None = None,
) -> list[str]:
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
    key = name.lower()
    row = schedule_key(key)
    stored = _schedule(states, row)
    if stored is None:
        return []
    planned = retirements(stored.state)
    now = clock.now()
    if stored.tampered is not None:
        # What was planned is lost: every enabled version but the current one is looked at, and the
        # vault's times say which retire now (the others stay planned until then).
        planned = _every_replaced(store, name, now)
    due = [v for v, t in planned if t <= now]
    if not due:
        if stored.tampered is not None:
            states.replace(PARTITION, row, _schedule_state(planned), stored.etag)
        return []
    if is_reserved(key, reserved):
        states.delete(PARTITION, row, stored.etag)
        return []
    progress = states.get(PARTITION, key)  # before the vault, as ``acquire`` wants it
    try:
        current = store.get_properties(name)
    except NotFound:
        logger.info("retirement schedule of %s dropped: the secret is gone", name)
        states.delete(PARTITION, row, stored.etag)
        return []
    grace = _grace_of(current)
    versions = store.list_versions(name)
    tags_of = {v.version: v.tags for v in versions}
    enabled_of = {v.version: v.enabled for v in versions}
    replaced_at = _replaced_at(versions)
    retired: list[str] = []
    kept: list[tuple[str, datetime]] = []
    finisher = _Finisher(name, store, states, clock, current, progress, rotators or {})
    # Told to drop an old value, a target may drop every value but the current one (a webhook's finish:
    # "keep only this rotation's"): while another replaced version is still in its grace, the due ones
    # wait for it and retire together (the vault says which are, not the schedule).
    wait = _grace_running(versions, current, replaced_at, grace, now) if finisher.target else None
    try:
        for version in due:
            when = _retire_when(name, version, current, replaced_at, grace, wait, enabled_of, now)
            if isinstance(when, datetime):
                kept.append((version, when))
            if when != "now":
                continue
            trail.record(
                Action.VERSION_RETIRED, secret_name=current.name, version=version, result=Result.INTENT
            )
            finisher.finish(version)
            with contextlib.suppress(NotFound):  # gone already: nothing left to disable
                store.update_properties(
                    name, version, enabled=False, tags=retired_tags(tags_of.get(version, {}))
                )
            trail.record(Action.VERSION_RETIRED, secret_name=current.name, version=version)
            retired.append(version)
    finally:
        finisher.release()
    remaining = [(v, t) for v, t in planned if t > now] + kept
    if remaining:
        states.replace(PARTITION, row, _schedule_state(remaining), stored.etag)
    else:
        states.delete(PARTITION, row, stored.etag)  # nothing left: the next rotation creates it afresh
    return retired


def _every_replaced(store: SecretStore, name: str, now: datetime) -> list[tuple[str, datetime]]:
    """A schedule re-derived from the vault: every enabled version but the current one, due now (each is
    then judged by ``_retire_when``: its grace since a version this service made replaced it)."""
    try:
        current = store.get_properties(name).version
        versions = store.list_versions(name)
    except (NotFound, SecretDisabled):
        return []
    return [(v.version, now) for v in versions if v.enabled and v.version != current]


def _retire_when(
    name: str,
    version: str,
    current: SecretVersion,
    replaced_at: Mapping[str, datetime],
    grace: timedelta | None,
    wait: datetime | None,
    enabled_of: Mapping[str, bool],
    now: datetime,
) -> datetime | Literal["now", "never"]:
    """When a due version retires: ``now``, ``never`` (dropped from the schedule), or a later time (kept
    scheduled until then)."""
    since = replaced_at.get(version)
    if version == current.version:
        # Scheduled by a rotation that did not replace it (it failed, or is still running: its lease
        # rewrote the schedule, so this run's write of it fails and the entry stays).
        logger.info("retirement of %s version %s dropped: it is still the current version", name, version)
        return "never"
    if since is None or grace is None:
        logger.warning("retirement of %s version %s refused: not a retired version by policy", name, version)
        return "never"
    if now < since + grace:
        return since + grace  # the schedule was early: the vault's time stands
    if not enabled_of.get(version, True):
        # Disabled by someone else meanwhile (a revocation, by hand): nothing to retire, and no
        # ``retired-by`` mark that would let a rollback bring it back.
        logger.info("%s version %s is disabled already: left as it is", name, version)
        return "never"
    return "now" if wait is None else wait  # another replaced version in its grace: together, then


#: The lease step of a retirement that calls a target rotator's ``finish``.
RETIRING = "retiring"


class _Finisher:
    """A target rotator's ``finish`` for the versions a retirement (or a replacement) ends, under the
    secret's write lease, taken on the first call and released by ``release``. Nothing to do for a
    ``key-vault`` secret."""

    def __init__(
        self,
        name: str,
        store: SecretStore,
        states: StateStore,
        clock: Clock,
        current: SecretVersion,
        progress: Versioned | None,
        rotators: Mapping[Rotator, TargetRotator],
    ) -> None:
        self.name, self.store, self.states, self.clock = name, store, states, clock
        self.current, self.progress = current, progress
        self.policy: RotationPolicy | None = None
        with contextlib.suppress(PolicyError):
            self.policy = RotationPolicy.from_tags(current.tags)
        rotator = self.policy.rotator if self.policy else Rotator.KEY_VAULT
        self.target = rotators.get(rotator)
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
            self.lease = acquire(self.states, self.name, self.progress, RETIRING, self.clock)
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


def retired_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """A version's tags once this service retired it (``RETIRED_BY_TAG``); unchanged when the version has
    no room left for another tag (a rollback then leaves it disabled: the safe side)."""
    if RETIRED_BY_TAG in tags or len(tags) < MAX_TAGS:
        return {**tags, RETIRED_BY_TAG: ROTATED_BY}
    return dict(tags)


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


def retire_all(
    store: SecretStore,
    states: StateStore,
    trail: AuditTrail,
    clock: Clock,
    *,
    reserved: Collection[str],
    rotators: Mapping[Rotator, TargetRotator] | None = None,
) -> tuple[list[tuple[str, str]], list[str]]:
    """Retire every previous version whose grace has ended, secret by secret: one secret's failure is
    recorded (VERSION_RETIRED failure) and the others go on. Returns the (name, version) pairs retired and
    the names that failed. Raises DependencyUnavailable when the schedule cannot be read at all."""
    retired: list[tuple[str, str]] = []
    failed: list[str] = []
    scheduled = states.list(PARTITION, start=SCHEDULE_PREFIX, stop=SCHEDULE_PREFIX + "~")
    for key in (row.removeprefix(SCHEDULE_PREFIX) for row in scheduled):
        try:
            retired += [
                (key, version)
                for version in retire_due(
                    key, store, states, trail, clock, reserved=reserved, rotators=rotators
                )
            ]
        except Conflict:
            logger.info("retirement of %s left for the next run: its schedule changed", key)
        except DomainError as err:
            failed.append(key)
            with contextlib.suppress(DomainError):
                trail.record(
                    Action.VERSION_RETIRED,
                    secret_name=key,
                    result=Result.FAILURE,
                    details={"error_class": type(err).__name__},
                    error=str(err)[:500],
                )
    return retired, failed


def _announce(publisher: Publisher, clock: Clock, vault: str, outcome: RotationOutcome) -> None:
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


def record_violations(
    states: StateStore, trail: AuditTrail, violations: Sequence[PolicyViolation], correlation_id: str | None
) -> int:
    """POLICY_VIOLATION for each violation the sweep found, once per secret version (the listing has no
    version id: its creation time stands for it). Returns how many were recorded now."""
    recorded = 0
    for violation in violations:
        claim = f"{violation.secret_name.lower()}:{format_time(violation.created)}"
        recorded += _once(
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


def resume_stale(
    states: StateStore,
    requests: RotationRequests,
    clock: Clock,
    correlation_id: str,
    rows: Mapping[str, Versioned] | None = None,
) -> list[str]:
    """Request the rotations whose holder died mid-way (a ``promoting`` row whose lease ran out): no
    other trigger finishes them, since a secret rotated before the crash is no longer due and the queue
    delivery that found the lease still running was consumed. The rotation decides, against the vault,
    whether the row is borne out. Returns the names requested. Raises DependencyUnavailable."""
    now = clock.now()
    stale = [
        key
        for key, stored in (progress_rows(states) if rows is None else rows).items()
        if (progress := Progress.of(stored.state)).step == PROMOTING and not progress.leased_by_other("", now)
    ]
    valid: list[RotationRequest] = []
    for key in stale:
        try:
            valid.append(
                RotationRequest(
                    secret_name=key,
                    reason=RotationReason.RESUME,
                    requested_at=now,
                    correlation_id=correlation_id,
                )
            )
        except ValueError:
            logger.warning("stale rotation row %.140r ignored: not a secret name", key)
    requests.send(valid)
    return [r.secret_name for r in valid]


def rotate_requested(
    request: RotationRequest,
    store: SecretStore,
    states: StateStore,
    trail: AuditTrail,
    publisher: Publisher,
    clock: Clock,
    *,
    reserved: Collection[str],
    rotators: Mapping[Rotator, TargetRotator] | None = None,
) -> RotationOutcome:
    """One queued rotation request. A secret that is gone or not managed is recorded as skipped and the
    request consumed; so is a forced request older than FORCED_FOR (a sealed message put back on the queue
    long after, to force a rotation nobody asks for now). Any other failure is raised for the queue to
    retry (``gave_up`` records the end)."""
    name, cid = request.secret_name, request.correlation_id
    if request.force and clock.now() - request.requested_at > FORCED_FOR:
        return _skip(trail, name, "a forced request this old is not acted on", cid, request.rotation_id)
    try:
        return rotate(
            name, store, states, trail, publisher, clock, reserved=reserved, reason=request.reason.value,
            correlation_id=cid, force=request.force, rotation_id=request.rotation_id, rotators=rotators,
        )  # fmt: skip
    except (NotFound, NotManaged) as err:
        outcome = _skip(trail, name, str(err), cid, request.rotation_id)
        if request.rotation_id is not None:
            _drop_queued(states, trail, name, request.rotation_id, str(err), cid)
        return outcome
    except StateTampered as err:
        # Never acted on (the store reported it: a record, a finding, an event); the request is done.
        why = f"its rotation state is tampered ({err.check}): nothing acts on it"
        return _skip(trail, name, why, cid, request.rotation_id)


def gave_up(
    request: RotationRequest, trail: AuditTrail, attempts: int, states: StateStore | None = None
) -> None:
    """A request that reached the poison queue: every attempt failed, or the process died during them
    (a crash on the last attempt leaves nothing else behind). Recorded so it is never silent, naming the
    requests that joined it — while it was queued, or once it held the lease (``states``: where to find
    them) — which end with it; they are then taken off the row (after the record: a crash names them
    twice, never never). Raises AuditUnavailable."""
    details: dict[str, Any] = {"gave_up_after": attempts, "reason": "the request reached the poison queue"}
    if request.rotation_id is not None:
        details["rotation_id"] = request.rotation_id
    joined: list[str] | None = None
    if states is not None:
        try:
            stored = states.get(PARTITION, request.secret_name.lower())
            rid = request.rotation_id
            if stored is not None and rid is not None and Progress.of(stored.state).finished(rid):
                # Its rotation was made (a message put on the poison queue afterwards, or one whose last
                # delivery died after the work): no failure to record.
                logger.warning("poisoned request %s of %s was done already", rid, request.secret_name)
                return
            joined = _waiting_on(states, request.secret_name, request.rotation_id)
        except DomainError:
            logger.warning("the requests that joined %s could not be read", request.secret_name)
    if joined:
        details["joined"] = joined
    trail.record(
        Action.ROTATION_FAILED,
        secret_name=request.secret_name,
        result=Result.FAILURE,
        correlation_id=request.correlation_id,
        details=details,
    )
    if states is not None and joined is not None:
        try:
            _take_off(states, request.secret_name, request.rotation_id, joined)
        except DomainError:
            logger.warning("the requests that joined %s stay on its row", request.secret_name)


def replace(
    name: str,
    store: SecretStore,
    states: StateStore,
    trail: AuditTrail,
    publisher: Publisher,
    clock: Clock,
    *,
    reserved: Collection[str],
    rotators: Mapping[Rotator, TargetRotator] | None = None,
    correlation_id: str | None = None,
    rotation_id: str | None = None,
) -> RotationOutcome:
    """A fresh value now, and the previous one unusable at the target at once (what a revocation with
    ``replace`` calls): a forced rotation through the secret's rotator, then the target's ``finish`` for
    the version it replaced without waiting for the grace. The previous version stays enabled in the
    vault (disabling it is the caller's decision) and its retirement stays scheduled.

    Raises what ``rotate`` raises; Conflict when it did not rotate (another write holds the lease, the
    secret is not rotatable: the reason says which); TargetRefused when the target refused (recorded).
    """
    outcome = rotate(
        name, store, states, trail, publisher, clock, reserved=reserved, force=True, reason="replace",
        correlation_id=correlation_id, rotation_id=rotation_id, rotators=rotators, join=False,
    )  # fmt: skip
    if outcome.status == "failed":
        raise TargetRefused("replace", outcome.reason)
    if outcome.status == "skipped" and rotation_id is not None:
        made = store.get_properties(name)
        if made.tags.get(ROTATION_ID_TAG) == rotation_id:
            # Made by an earlier attempt that died before its finish: the finish is what is left to do.
            previous = made.tags.get(PREVIOUS_VERSION_TAG)
            outcome = RotationOutcome(name, "rotated", "replace", rotation_id, made.version, previous)
    if outcome.status == "in_progress":
        raise Busy(name, Progress(step=PROMOTING, rotation_id=outcome.rotation_id))
    if outcome.status != "rotated" or outcome.new_version is None:
        raise Conflict(f"secret {name} was not replaced: {outcome.reason}")
    if outcome.previous_version is None or outcome.previous_version == outcome.new_version:
        return outcome
    progress = states.get(PARTITION, name.lower())  # before the vault, as ``acquire`` wants it
    current = store.get_properties(name)
    if current.version != outcome.new_version:
        # Another write came in between: finishing against a superseded value could cut off the new one.
        raise Conflict(f"secret {name} was replaced, then changed again: its previous value was not finished")
    finisher = _Finisher(name, store, states, clock, current, progress, rotators or {})
    try:
        finisher.finish(outcome.previous_version)
    finally:
        finisher.release()
    return outcome
