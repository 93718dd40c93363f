"""The stored progress of a secret's writes: the row that is both the record of its rotations and the
one-write-at-a-time lease, and the tags that mark the versions this service writes. Pure: the services
in ``shared/services/rotation/`` read and write it through a ``StateStore``.

A row is storage anyone with access could write (it is sealed, and a tampered one is never read), so
``Progress.of`` takes only fields of the right type and size, and a lease ending further ahead than any
holder can take is not honoured (``lease_runs``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.domain.errors import Conflict
from shared.domain.secrets import MAX_TAGS, SecretVersion
from shared.domain.state import LEASE, lease_runs

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


#: How long a queued manual request is joined by the next ones (its message is usually taken at once; a
#: backlog can delay it). After that a request queues afresh.
QUEUED_FOR = timedelta(minutes=15)


def service_tags(rotation_id: str) -> dict[str, str]:
    """The tags that mark a version as written by this service (see ``made_by_service``)."""
    return {ROTATED_BY_TAG: ROTATED_BY, ROTATION_ID_TAG: rotation_id}


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
        return ids_of(self.made)

    def alias_list(self) -> list[str]:
        return ids_of(self.aliases)

    def joined_done_list(self) -> list[str]:
        return ids_of(self.joined_done)

    def join(self, rotation_id: str, *, new: bool = False) -> None:
        """A request with its own id joins this rotation (or the queued request): its id is named in the
        outcome and done when the rotation closes. ``new``: a request arriving now, refused (Conflict) when
        MAX_JOINED have joined already (the row must stay small); requests waiting already always join."""
        if rotation_id in (self.rotation_id, self.queued) or rotation_id in self.alias_list():
            return
        if new and len(self.alias_list()) >= MAX_JOINED:
            raise Conflict(f"{MAX_JOINED} requests joined this rotation already; ask again once it is done")
        self.aliases = dump_ids([*self.alias_list(), rotation_id])

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
            self.aliases = dump_ids([*self.alias_list(), *new])
        return new

    def finished(self, rotation_id: str) -> bool:
        """Whether the write ``rotation_id`` (or a request that joined it) closed, per this row."""
        return (
            (self.step == IDLE and self.rotation_id == rotation_id)
            or any(m.split(":", 1)[0] == rotation_id for m in self.made_list())
            or rotation_id in self.joined_done_list()
        )

    def made_by(self, version: str) -> str | None:
        """The id of the latest write that made ``version``, as the row remembers it (None: not among its
        latest writes). ``rotation_id`` names the latest write of any kind — a policy change or a
        revocation takes the lease with an id of its own and makes no version."""
        return next(
            (m.split(":", 1)[0] for m in reversed(self.made_list()) if m.endswith(f":{version}")), None
        )

    def closed(self, new_version: str) -> None:
        """The write in flight made ``new_version``: the row goes idle and remembers it among its latest
        writes (a rotation's close also calls ``done_with_joined``: its outcome named the joined ids)."""
        self.step, self.holder, self.lease_until, self.last_error = IDLE, None, None, None
        self.new_version = new_version
        entry = f"{self.rotation_id}:{new_version}"
        made = [m for m in self.made_list() if m != entry]
        self.made = dump_ids([*made, entry][-MADE_HISTORY:])

    def done_with_joined(self) -> list[str]:
        """The requests that joined are named in an outcome: remembered as done, no longer waiting.
        Returns their ids."""
        joined = self.alias_list()
        self.done_with(joined)
        return joined

    def done_with(self, ids: Sequence[str]) -> None:
        """The requests ``ids`` are named in an outcome: remembered as done, no longer waiting."""
        waiting = [a for a in self.alias_list() if a not in ids]
        self.aliases = dump_ids(waiting)
        if ids:
            done = [d for d in self.joined_done_list() if d not in ids]
            self.joined_done = dump_ids([*done, *ids][-JOINED_HISTORY:])

    def leased_by_other(self, holder: str, now: datetime) -> bool:
        """Another holder's lease that still runs (whatever its step). A lease ending further ahead than
        any holder can take (a forged or skewed row) is not honoured: it would block the secret for good."""
        if self.step == IDLE or self.holder == holder:
            return False
        return lease_runs(self.lease_until, now, LEASE)


def ids_of(raw: str | None) -> list[str]:
    """A list of ids as a progress row keeps it (JSON); [] for none, or for what is no such list."""
    try:
        ids = json.loads(raw or "[]")
    except ValueError:
        return []
    return [str(i) for i in ids] if isinstance(ids, list) else []


def dump_ids(ids: Sequence[str]) -> str | None:
    """A list of ids as a progress row keeps it: compact JSON, or None (no property) for none."""
    return json.dumps(list(ids), separators=(",", ":")) if ids else None


def retired_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """A version's tags once this service retired it (``RETIRED_BY_TAG``); unchanged when the version has
    no room left for another tag (a rollback then leaves it disabled: the safe side)."""
    if RETIRED_BY_TAG in tags or len(tags) < MAX_TAGS:
        return {**tags, RETIRED_BY_TAG: ROTATED_BY}
    return dict(tags)


class Busy(Conflict):
    """Another write to the secret (a rotation, a rollback, an onboarding, a policy change) holds its
    lease. ``rotation_id``/``step``: what holds it."""

    def __init__(self, name: str, progress: Progress) -> None:
        what = "a rotation" if progress.step == PROMOTING else f"another change ({progress.step})"
        super().__init__(f"secret {name}: {what} is in progress; try again later")
        self.rotation_id = progress.rotation_id
        self.step = progress.step
