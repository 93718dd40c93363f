"""The write lease of a secret: its progress row, taken by a compare-and-swap, one write at a time (a
rotation, a rollback, an onboarding, a policy change, a retirement that calls a target). A crashed holder
does not block forever: the lease expires (``LEASE``), and what a holder writes is written only while the
row is still its own (``write_own``, ``save_own``)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.domain.audit import format_time, parse_time
from shared.domain.errors import Conflict, DomainError, NotFound
from shared.domain.progress import (
    IDLE,
    PROMOTING,
    ROTATION_ID_TAG,
    Busy,
    Progress,
    made_by_service,
)
from shared.domain.secrets import SecretVersion
from shared.domain.state import LEASE, StateTampered, StateWrite, Versioned
from shared.ports import Clock, StateStore
from shared.services.peers import Peers
from shared.services.rotation.rows import (
    LEASE_ATTEMPTS,
    PARTITION,
    schedule_key,
    schedule_state,
    write_progress,
)

logger = logging.getLogger(__name__)


#: A lease taken longer ago than this is renewed before the vault write.
RENEW_AFTER = timedelta(minutes=1)


class LeaseLost(Exception):
    """Another holder took this secret's rotation over (our lease expired): stop, it finishes."""


def acquire(
    peers: Peers,
    name: str,
    stored: Versioned | None,
    step: str,
    *,
    from_version: str | None = None,
    restore_version: str | None = None,
) -> tuple[Progress, str]:
    """Take ``name``'s lease for ``step`` over the progress ``stored`` as read (read it before the vault,
    so that a write completed in between makes this fail). Returns the progress written and its etag.

    Raises Busy when another holder's lease still runs, a rotation is unfinished (even one whose holder
    died: it is resumed, never taken over — its pending value may be the only credential that works at the
    target), or the row changed since it was read."""
    now = peers.clock.now()
    previous = Progress.of(stored.state) if stored else Progress()
    if previous.leased_by_other("", now) or previous.step == PROMOTING:
        raise Busy(name, previous)
    progress = Progress(
        rotation_id=uuid.uuid4().hex,
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
        return progress, write_progress(peers.states, name.lower(), progress, stored.etag if stored else None)
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


def take_lease(
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
            StateWrite(schedule_key(key), schedule_state([(version, after)])),
        ]
        try:
            return states.commit(PARTITION, writes)[0].etag, True
        except (Conflict, NotFound):
            pass  # a schedule exists already, or the row changed: the lease alone says which
    try:
        return write_progress(states, key, progress, etag), False
    except NotFound as err:
        raise Conflict(f"the rotation progress of {key} vanished since it was read") from err


@dataclass
class Held:
    """This holder's lease on a secret's progress row through one rotation: the progress as this holder
    last wrote it, its etag (each write moves it on), and the request's correlation id for the records."""

    name: str
    progress: Progress
    etag: str
    correlation_id: str | None = None

    @property
    def key(self) -> str:
        return self.name.lower()


def write_own(
    states: StateStore,
    held: Held,
    *,
    closing: str | None = None,
    joined: Callable[[list[str]], None] | None = None,
) -> None:
    """Write this holder's progress (``closing``: closed with that version); ``held.etag`` moves on. A
    write that lost to a request joining (the row still this holder's, with more ids in it) takes the new
    ids in (``joined`` hears of them) and is tried again; any other change is Conflict (another holder).
    Raises Conflict, NotFound."""
    progress, key = held.progress, held.key
    for _ in range(LEASE_ATTEMPTS):
        written = dataclasses.replace(progress)
        if closing is not None:
            written.closed(closing)
            written.done_with_joined()
        try:
            held.etag = states.replace(PARTITION, key, written.state(), held.etag).etag
            return
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
            held.etag = stored.etag
    raise Conflict(f"the rotation progress of {key} keeps changing")


def renew(states: StateStore, held: Held, clock: Clock) -> None:
    """Make the lease outlast the write that comes next, unless it was taken a moment ago (one store call
    fewer per rotation; the vault call, retries included, takes minutes at most). Raises LeaseLost when
    another holder took the lease meanwhile."""
    if _lease_left(held.progress, clock) >= LEASE - RENEW_AFTER:
        return
    held.progress.lease_until = format_time(clock.now() + LEASE)
    try:
        write_own(states, held)
    except (Conflict, NotFound) as err:
        raise LeaseLost from err


def _lease_left(progress: Progress, clock: Clock) -> timedelta:
    try:
        return parse_time(progress.lease_until or "") - clock.now()
    except (ValueError, TypeError):
        return timedelta(0)


def save_own(states: StateStore, held: Held, closing: Callable[[Progress], None] | None = None) -> None:
    """Write this holder's progress while it is still ours (``closing``: as it changes it), taking in the
    requests that joined meanwhile (a joiner's write is no other holder: read again and retry). Best
    effort: logged when it cannot be."""
    try:
        for _ in range(LEASE_ATTEMPTS):
            stored = ours(states, held)
            if stored is None:
                return
            held.progress.merge_joined(Progress.of(stored.state))
            written = dataclasses.replace(held.progress)
            if closing is not None:
                closing(written)
            try:
                write_progress(states, held.key, written, stored.etag)
                return
            except (Conflict, NotFound):
                continue
        logger.error("rotation progress of %s kept changing: not saved", held.name)
    except DomainError:
        logger.exception("rotation progress of %s could not be saved", held.name)


def ours(states: StateStore, held: Held) -> Versioned | None:
    """The stored progress while this holder still holds it, else None. Raises DependencyUnavailable."""
    stored = states.get(PARTITION, held.key)
    if held.progress.holder is None or stored is None or stored.state.get("holder") != held.progress.holder:
        return None
    return stored


def release_now(states: StateStore, held: Held, clock: Clock, err: DomainError) -> None:
    """End this holder's lease now, keeping the progress (and the requests that joined) for the retry;
    only while it is still ours."""
    held.progress.last_error, held.progress.lease_until = type(err).__name__, format_time(clock.now())
    save_own(states, held)


def close_stale(states: StateStore, key: str, stored: Versioned | None, clock: Clock) -> None:
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
