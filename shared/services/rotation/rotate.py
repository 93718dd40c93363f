"""Rotate one secret: decide whether the request rotates (due, forced, resumed, joined, skipped — every
decision on record), take the lease, and run the protocol (``promote.py``). ``replace`` is a forced
rotation whose old value is finished at the target at once (revocation); ``rotate_requested`` is one
queued request."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
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
from shared.ports import SecretStore
from shared.services.peers import Peers
from shared.services.rotation.lease import Held, LeaseLost, close_stale, release_now, take_lease
from shared.services.rotation.outcomes import NotManaged, RotationOutcome, record_violation, skip
from shared.services.rotation.promote import ClosePending, fail, promote
from shared.services.rotation.requests import FORCED_FOR, drop_queued
from shared.services.rotation.retirement import Finisher
from shared.services.rotation.rows import LEASE_ATTEMPTS, PARTITION, ensure_scheduled, write_progress


def rotate(
    peers: Peers,
    name: str,
    *,
    force: bool = False,
    reason: str = "due",
    correlation_id: str | None = None,
    rotation_id: str | None = None,
) -> RotationOutcome:
    """Rotate ``name`` if it is due (or ``force``), resuming a rotation that was interrupted.

    ``peers.rotators``: the target rotators this deployment runs; a secret whose policy names another one
    is skipped (recorded). Through a target rotator, the pending value is stored in the secret's pending
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
    return _rotate(peers, _Ask(name, force, reason, correlation_id, rotation_id))


@dataclass(frozen=True)
class _Ask:
    """What one request asks of a rotation (see ``rotate``)."""

    name: str
    force: bool = False
    reason: str = "due"
    correlation_id: str | None = None
    rotation_id: str | None = None
    join: bool = True

    @property
    def key(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class _Taken:
    """A request that rotates, once it holds the lease: the current version and its policy, the progress
    written and its etag, and the retirement scheduled with it (``scheduled``: in the same write)."""

    current: SecretVersion
    policy: RotationPolicy
    progress: Progress
    etag: str
    scheduled: bool
    retire: tuple[str, datetime] | None


def _rotate(peers: Peers, ask: _Ask) -> RotationOutcome:
    taken = _take(peers, ask)
    if isinstance(taken, RotationOutcome):
        if taken.status == "skipped" and ask.rotation_id is not None:
            drop_queued(
                peers.states, peers.trail, ask.name, ask.rotation_id, taken.reason, ask.correlation_id
            )
        return taken
    held = Held(ask.name, taken.progress, taken.etag, ask.correlation_id)
    rotation_id, previous = held.progress.rotation_id, held.progress.from_version
    try:
        ensure_scheduled(peers.states, held.key, taken.retire, taken.scheduled)
        new = promote(peers, held, taken.policy, taken.current, ask.reason)
    except LeaseLost:
        return RotationOutcome(ask.name, "in_progress", "another rotation took the lease", rotation_id)
    except ClosePending as pending:
        release_now(peers.states, held, peers.clock, pending.cause)
        raise pending.cause from pending  # the queue retries; the retry records the version made
    except TargetRefused as err:
        # The pending value stays enabled: the target may have taken it before refusing (a password set,
        # then a refused test), and then it is the one value that works; the next rotation offers it to
        # the target first (``_target_value``) and disables it once something is promoted.
        fail(peers, held, err, close=True)
        return RotationOutcome(ask.name, "failed", str(err), rotation_id)
    except DomainError as err:
        fail(peers, held, err)
        raise
    return RotationOutcome(ask.name, "rotated", ask.reason, rotation_id, new, previous)


def _take(peers: Peers, ask: _Ask) -> _Taken | RotationOutcome:
    """Decide whether this request rotates, and take the secret's lease when it does — or its outcome
    when it does not (skipped, joined), on record. A lease lost to a concurrent request is
    decided again: it joins that one, or takes the lease after it."""
    for _ in range(LEASE_ATTEMPTS):
        # The progress first, then the vault: a rotation that completes in between changes the progress,
        # so the lease below (conditional on what was read here) fails instead of rotating a stale version.
        stored = peers.states.get(PARTITION, ask.key)
        now = peers.clock.now()
        decided = _decide(peers, ask, stored, now)
        if isinstance(decided, RotationOutcome):
            return decided
        current, policy, progress, resuming = decided
        holder = uuid.uuid4().hex
        if progress.leased_by_other(holder, now):
            joined = _join(peers, ask, progress, stored)
            if joined is None:
                continue  # the row changed meanwhile: decide again
            return joined
        _start(progress, ask.rotation_id, current.version, holder, now, resuming=resuming)
        grace = policy.previous_grace()
        retire = None if grace is None else (progress.from_version or current.version, now + grace)
        try:
            etag, scheduled = take_lease(peers.states, ask.key, progress, stored, retire)
        except Conflict:
            continue  # another request took it, or joined, meanwhile: join it, or take it again
        return _Taken(current, policy, progress, etag, scheduled, retire)
    return _skip(peers, ask, "the rotation's state kept changing; ask again")


def _decide(
    peers: Peers, ask: _Ask, stored: Versioned | None, now: datetime
) -> tuple[SecretVersion, RotationPolicy, Progress, bool] | RotationOutcome:
    """Whether this request rotates now: the current version, its policy, the progress read and whether
    it resumes the rotation that row holds — or the request's outcome (on record)."""
    found = _rotatable(peers, ask, stored)
    if isinstance(found, RotationOutcome):
        return found
    current, policy = found
    progress = Progress.of(stored.state) if stored else Progress()
    if ask.rotation_id is not None and _done(peers.store, ask.name, progress, current, ask.rotation_id):
        return _skip(peers, ask, f"already done (rotation {ask.rotation_id})")
    queued = progress.queued_now(now)
    forced = ask.force or (queued is not None and progress.queued_force == "true")
    resuming = progress.step == PROMOTING and _resumable(progress, current)
    # A row alone never starts a write: without a trace of its rotation in the vault (the version it
    # made, or its pending value) it only continues a rotation that is due or forced anyway.
    started = resuming and _traced(peers.store, ask.name, progress, current, policy.rotator in peers.rotators)
    if not (started or forced or policy.is_due(current.created, now, current.expires)):
        close_stale(
            peers.states, ask.key, stored, peers.clock
        )  # a dead holder's row the vault does not bear out
        due = policy.next_rotation(current.created, current.expires)
        return _skip(peers, ask, f"not due until {format_time(due)}")
    return current, policy, progress, resuming


def _start(
    progress: Progress, rotation_id: str | None, version: str, holder: str, now: datetime, *, resuming: bool
) -> None:
    """The progress a request writes as it takes the lease (step ``promoting``). A fresh rotation (over
    an idle row, a stale lease of another kind of write, or a row the vault does not bear out) takes over
    the queued request and those that joined it; a resumed one keeps its id and takes them in."""
    if not resuming:
        adopted = [r for r in progress.adopt_queued(now) if r != rotation_id]
        progress.rotation_id = rotation_id or (adopted.pop(0) if adopted else uuid.uuid4().hex)
        progress.from_version, progress.attempt, progress.restore_version = version, 0, None
        progress.aliases = dump_ids(adopted)
    else:
        for request in [*progress.adopt_queued(now), *([rotation_id] if rotation_id else [])]:
            progress.join(request)
    progress.step, progress.holder, progress.attempt = PROMOTING, holder, progress.attempt + 1
    progress.lease_until, progress.leased_at = format_time(now + LEASE), format_time(now)


def _join(peers: Peers, ask: _Ask, progress: Progress, stored: Versioned | None) -> RotationOutcome | None:
    """A request that found another holder's lease: it joins the rotation running (named in its outcome).
    A request with an id that meets another kind of write (a rollback, a policy change: seconds) raises
    Busy, for the queue to deliver it again (it may be the queued one others joined). Without an id, or
    when it may not join (``join``), it is ``in_progress``, skipped on record. None: the row changed since
    it was read (read it again)."""
    if ask.rotation_id is not None and ask.join and progress.step != PROMOTING:
        raise Busy(ask.name, progress)
    if progress.step != PROMOTING or ask.rotation_id is None or stored is None or not ask.join:
        what = "a rotation" if progress.step == PROMOTING else f"another change ({progress.step})"
        why = f"{what} holds the lease (rotation {progress.rotation_id})"
        _skip(peers, ask, why)
        return RotationOutcome(ask.name, "in_progress", why, progress.rotation_id)
    try:
        progress.join(ask.rotation_id, new=True)
    except Conflict as err:
        return _skip(peers, ask, str(err))
    try:
        write_progress(peers.states, ask.key, progress, stored.etag)
    except (Conflict, NotFound):
        return None
    return RotationOutcome(
        ask.name, "joined", f"joined rotation {progress.rotation_id}", progress.rotation_id
    )


def _skip(peers: Peers, ask: _Ask, why: str) -> RotationOutcome:
    return skip(peers.trail, ask.name, why, ask.correlation_id, ask.rotation_id)


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
    peers: Peers, ask: _Ask, stored: Versioned | None
) -> tuple[SecretVersion, RotationPolicy] | RotationOutcome:
    """The current version and its policy, or why this secret is not rotated (recorded, naming the request
    ``rotation_id``; a dead holder's row of it is then closed: nothing to resume). Raises NotFound,
    NotManaged."""
    try:
        found = _why_not(peers, ask)
    except (NotFound, NotManaged):
        close_stale(peers.states, ask.key, stored, peers.clock)
        raise
    if isinstance(found, RotationOutcome):
        close_stale(peers.states, ask.key, stored, peers.clock)
    return found


def _why_not(peers: Peers, ask: _Ask) -> tuple[SecretVersion, RotationPolicy] | RotationOutcome:
    """The current version and its policy, or why this secret is not rotated (recorded)."""
    if is_reserved(ask.name, peers.reserved):
        return _skip(peers, ask, "the service's own secret is never rotated")
    current = _current(peers.store, ask.name)
    if current is None:
        return _skip(peers, ask, "the current version is disabled")
    if current.managed:
        return _skip(peers, ask, "certificate-backed: rotate the certificate")
    if not RotationPolicy.is_managed(current.tags):
        raise NotManaged(ask.name, "managed-by")
    try:
        policy = RotationPolicy.from_tags(current.tags, name=ask.name, reserved=peers.reserved)
    except PolicyError as err:
        record_violation(peers.states, peers.trail, ask.name, current.version, err, ask.correlation_id)
        if ask.rotation_id is not None:  # a request's own outcome, beside the violation recorded once
            return _skip(peers, ask, f"invalid policy: {err}")
        return RotationOutcome(ask.name, "skipped", f"invalid policy: {err}")
    if policy.rotator != Rotator.KEY_VAULT and policy.rotator not in peers.rotators:
        return _skip(peers, ask, f"the {policy.rotator.value} rotator is not available")
    return current, policy


def _current(store: SecretStore, name: str) -> SecretVersion | None:
    try:
        return store.get_properties(name)
    except SecretDisabled:
        return None


def rotate_requested(peers: Peers, request: RotationRequest) -> RotationOutcome:
    """One queued rotation request. A secret that is gone or not managed is recorded as skipped and the
    request consumed; so is a forced request older than FORCED_FOR (a sealed message put back on the queue
    long after, to force a rotation nobody asks for now). Any other failure is raised for the queue to
    retry (``gave_up`` records the end)."""

    name, cid = request.secret_name, request.correlation_id
    if request.vault not in (None, peers.trail.vault):  # the entry point hands each vault's to its peers
        raise ValueError(f"a request about the vault {request.vault}, given the peers of {peers.trail.vault}")
    if request.force and peers.clock.now() - request.requested_at > FORCED_FOR:
        return skip(peers.trail, name, "a forced request this old is not acted on", cid, request.rotation_id)
    ask = _Ask(name, request.force, request.reason.value, cid, request.rotation_id)
    try:
        return _rotate(peers, ask)
    except (NotFound, NotManaged) as err:
        outcome = _skip(peers, ask, str(err))
        if request.rotation_id is not None:
            drop_queued(peers.states, peers.trail, name, request.rotation_id, str(err), cid)
        return outcome
    except StateTampered as err:
        # Never acted on (the store reported it: a record, a finding, an event); the request is done.
        return _skip(peers, ask, f"its rotation state is tampered ({err.check}): nothing acts on it")


def replace(
    peers: Peers, name: str, *, correlation_id: str | None = None, rotation_id: str | None = None
) -> RotationOutcome:
    """A fresh value now, and the previous one unusable at the target at once (what a revocation with
    ``replace`` calls): a forced rotation through the secret's rotator, then the target's ``finish`` for
    the version it replaced without waiting for the grace. The previous version stays enabled in the
    vault (disabling it is the caller's decision) and its retirement stays scheduled.

    Raises what ``rotate`` raises; Conflict when it did not rotate (another write holds the lease, the
    secret is not rotatable: the reason says which); TargetRefused when the target refused (recorded).
    """
    ask = _Ask(name, True, "replace", correlation_id, rotation_id, join=False)
    outcome = _replaced(peers, ask, _rotate(peers, ask))
    if outcome.previous_version is None or outcome.previous_version == outcome.new_version:
        return outcome
    progress = peers.states.get(PARTITION, name.lower())  # before the vault, as ``acquire`` wants it
    current = peers.store.get_properties(name)
    if current.version != outcome.new_version:
        # Another write came in between: finishing against a superseded value could cut off the new one.
        raise Conflict(f"secret {name} was replaced, then changed again: its previous value was not finished")
    finisher = Finisher(peers, name, current, progress)
    try:
        finisher.finish(outcome.previous_version)
    finally:
        finisher.release()
    return outcome


def _replaced(peers: Peers, ask: _Ask, outcome: RotationOutcome) -> RotationOutcome:
    """A replacement's rotation, made (now or by an earlier attempt that died before its finish), or why
    not: Busy, Conflict, TargetRefused."""
    if outcome.status == "failed":
        raise TargetRefused("replace", outcome.reason)
    if outcome.status == "skipped" and ask.rotation_id is not None:
        made = peers.store.get_properties(ask.name)
        if made.tags.get(ROTATION_ID_TAG) == ask.rotation_id:
            # Made by an earlier attempt that died before its finish: the finish is what is left to do.
            previous = made.tags.get(PREVIOUS_VERSION_TAG)
            outcome = RotationOutcome(ask.name, "rotated", "replace", ask.rotation_id, made.version, previous)
    if outcome.status == "in_progress":
        raise Busy(ask.name, Progress(step=PROMOTING, rotation_id=outcome.rotation_id))
    if outcome.status != "rotated" or outcome.new_version is None:
        raise Conflict(f"secret {ask.name} was not replaced: {outcome.reason}")
    return outcome
