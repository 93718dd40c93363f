"""Rotate one secret: decide whether the request rotates (due, forced, resumed, joined, skipped — every
decision on record), take the lease, and run the protocol (``promote.py``). ``replace`` is a forced
rotation whose old value is finished at the target at once (revocation); ``rotate_requested`` is one
queued request."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Mapping
from datetime import datetime

from shared.domain.audit import format_time
from shared.domain.errors import Conflict, DomainError, NotFound, SecretDisabled
from shared.domain.policy import PolicyError, RotationPolicy, Rotator
from shared.domain.progress import (
    PREVIOUS_VERSION_TAG,
    PROMOTING,
    ROTATION_ID_TAG,
    Busy,
    Progress,
    dump_ids,
)
from shared.domain.rotation import RotationRequest
from shared.domain.secrets import SecretVersion
from shared.domain.state import LEASE, StateTampered, Versioned
from shared.domain.targets import (
    PENDING_FOR_TAG,
    TargetRefused,
    is_reserved,
    pending_secret_name,
)
from shared.ports import Clock, Publisher, SecretStore, StateStore, TargetRotator
from shared.services.audit import AuditTrail
from shared.services.rotation.lease import LeaseLost, close_stale, release_now, take_lease
from shared.services.rotation.outcomes import NotManaged, RotationOutcome, announce, record_violation, skip
from shared.services.rotation.promote import ClosePending, fail, promote
from shared.services.rotation.requests import FORCED_FOR, drop_queued, join_running
from shared.services.rotation.retirement import Finisher
from shared.services.rotation.rows import LEASE_ATTEMPTS, PARTITION, ensure_scheduled

logger = logging.getLogger(__name__)


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
            drop_queued(states, trail, name, rotation_id, taken.reason, correlation_id)
        return taken
    current, policy, progress, etag, scheduled, retire = taken

    try:
        ensure_scheduled(states, key, retire, scheduled)
        target = rotators.get(policy.rotator)

        def announce_made(version: str) -> None:
            made = RotationOutcome(
                name, "rotated", reason, progress.rotation_id, version, progress.from_version
            )
            announce(publisher, clock, trail.vault, made)

        new = promote(
            name, store, states, trail, clock, policy, current, progress, key, etag, correlation_id, target,
            announce_made,
        )  # fmt: skip
    except LeaseLost:
        return RotationOutcome(name, "in_progress", "another rotation took the lease", progress.rotation_id)
    except ClosePending as pending:
        release_now(states, clock, name, key, progress, pending.cause)
        raise pending.cause from pending  # the queue retries; the retry records the version made
    except TargetRefused as err:
        # The pending value stays enabled: the target may have taken it before refusing (a password set,
        # then a refused test), and then it is the one value that works; the next rotation offers it to
        # the target first (``_target_value``) and disables it once something is promoted.
        fail(states, trail, publisher, clock, name, key, progress, err, correlation_id, close=True)
        return RotationOutcome(name, "failed", str(err), progress.rotation_id)
    except DomainError as err:
        fail(states, trail, publisher, clock, name, key, progress, err, correlation_id)
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
            return skip(trail, name, f"already done (rotation {rotation_id})", correlation_id, rotation_id)
        queued = progress.queued_now(now)
        forced = force or (queued is not None and progress.queued_force == "true")
        resuming = progress.step == PROMOTING and _resumable(progress, current)
        # A row alone never starts a write: without a trace of its rotation in the vault (the version it
        # made, or its pending value) it only continues a rotation that is due or forced anyway.
        started = resuming and _traced(store, name, progress, current, policy.rotator in rotators)
        if not (started or forced or policy.is_due(current.created, now, current.expires)):
            close_stale(states, key, stored, clock)  # a dead holder's row the vault does not bear out
            due = policy.next_rotation(current.created, current.expires)
            return skip(trail, name, f"not due until {format_time(due)}", correlation_id, rotation_id)
        if dry_run:
            return RotationOutcome(name, "planned", reason, previous_version=current.version)

        holder = uuid.uuid4().hex
        if progress.leased_by_other(holder, now):
            joined = join_running(
                states, trail, name, key, progress, stored, rotation_id, correlation_id, join=join
            )
            if joined is None:
                continue  # the row changed meanwhile: decide again
            return joined
        if not resuming:
            # A fresh rotation (over an idle row, a stale lease of another kind of write, or a row the
            # vault does not bear out); it takes over the queued request and those that joined it.
            adopted = [r for r in progress.adopt_queued(now) if r != rotation_id]
            progress.rotation_id = rotation_id or (adopted.pop(0) if adopted else uuid.uuid4().hex)
            progress.from_version, progress.attempt, progress.restore_version = current.version, 0, None
            progress.aliases = dump_ids(adopted)
        else:
            for request in [*progress.adopt_queued(now), *([rotation_id] if rotation_id else [])]:
                progress.join(request)
        progress.step, progress.holder, progress.attempt = PROMOTING, holder, progress.attempt + 1
        progress.lease_until, progress.leased_at = format_time(now + LEASE), format_time(now)
        grace = policy.previous_grace()
        retire = None if grace is None else (progress.from_version or current.version, now + grace)
        try:
            etag, scheduled = take_lease(states, key, progress, stored, retire)
        except Conflict:
            continue  # another request took it, or joined, meanwhile: join it, or take it again
        return current, policy, progress, etag, scheduled, retire
    return skip(trail, name, "the rotation's state kept changing; ask again", correlation_id, rotation_id)


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
        close_stale(states, key, stored, clock)
        raise
    if isinstance(found, RotationOutcome):
        close_stale(states, key, stored, clock)
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

    def skipped(why: str) -> RotationOutcome:
        return skip(trail, name, why, correlation_id, rotation_id)

    if is_reserved(name, reserved):
        return skipped("the service's own secret is never rotated")
    current = _current(store, name)
    if current is None:
        return skipped("the current version is disabled")
    if current.managed:
        return skipped("certificate-backed: rotate the certificate")
    if not RotationPolicy.is_managed(current.tags):
        raise NotManaged(name, "managed-by")
    try:
        policy = RotationPolicy.from_tags(current.tags, name=name, reserved=reserved)
    except PolicyError as err:
        record_violation(states, trail, name, current.version, err, correlation_id)
        if rotation_id is not None:  # a request's own outcome, beside the violation recorded once
            return skipped(f"invalid policy: {err}")
        return RotationOutcome(name, "skipped", f"invalid policy: {err}")
    if policy.rotator != Rotator.KEY_VAULT and policy.rotator not in available:
        return skipped(f"the {policy.rotator.value} rotator is not available")
    return current, policy


def _current(store: SecretStore, name: str) -> SecretVersion | None:
    try:
        return store.get_properties(name)
    except SecretDisabled:
        return None


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
        return skip(trail, name, "a forced request this old is not acted on", cid, request.rotation_id)
    try:
        return rotate(
            name, store, states, trail, publisher, clock, reserved=reserved, reason=request.reason.value,
            correlation_id=cid, force=request.force, rotation_id=request.rotation_id, rotators=rotators,
        )  # fmt: skip
    except (NotFound, NotManaged) as err:
        outcome = skip(trail, name, str(err), cid, request.rotation_id)
        if request.rotation_id is not None:
            drop_queued(states, trail, name, request.rotation_id, str(err), cid)
        return outcome
    except StateTampered as err:
        # Never acted on (the store reported it: a record, a finding, an event); the request is done.
        why = f"its rotation state is tampered ({err.check}): nothing acts on it"
        return skip(trail, name, why, cid, request.rotation_id)


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
    finisher = Finisher(name, store, states, clock, current, progress, rotators or {})
    try:
        finisher.finish(outcome.previous_version)
    finally:
        finisher.release()
    return outcome
