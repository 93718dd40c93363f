"""Claims: a thing to be done once (an expiry notice, a Key Vault event's effect), whatever crashes and
whatever runs at the same time. A claim is a state entity that is *pending* until each of its steps is done
and *done* after; a pending claim is held under a lease (a holder id and an end time, every change a
compare-and-swap on the entity's ETag): a run that finds another's lease running does not act
(``ClaimHeld``); one that finds it ended takes the claim over and finishes the steps it lacks; one that
finds it done does nothing."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.domain.audit import format_time
from shared.domain.errors import Conflict, DomainError, NotFound
from shared.domain.state import LEASE, StateTampered, Versioned, lease_runs
from shared.ports import Clock, StateStore

logger = logging.getLogger(__name__)

PENDING = "pending"
DONE = "done"
_LEASE_FIELDS = ("holder", "lease_until")


class ClaimHeld(Conflict):
    """Another run holds the claim on this action under a lease that still runs, or took it over from
    this one: that run finishes the action. An Event Grid delivery raises it to be delivered again later
    (it then finds the action done, or the lease run out because that holder died, and finishes it); the
    daily check skips the action (tomorrow's run finds it done or finishes it)."""

    def __init__(self, partition: str, key: str) -> None:
        super().__init__(f"{partition}/{key} is being acted on by another run; try again later")


@dataclass
class Claim:
    """One action's claim, held under a lease (``holder``, ``lease_until``): pending (with the steps done
    so far) until ``finish``. Steps are flags stored on the claim, each a compare-and-swap under the lease
    that also renews it, so a retry after a crash does only the steps that are missing and a holder whose
    lease was taken over stops at its next step (ClaimHeld)."""

    states: StateStore
    clock: Clock
    partition: str
    key: str
    state: dict[str, Any]
    etag: str
    holder: str

    def has(self, step: str) -> bool:
        return bool(self.state.get(step))

    def mark(self, step: str) -> None:
        """Store a step as done. Raises ClaimHeld (the lease was lost), DependencyUnavailable."""
        self._save({step: True})

    def save(self, **fields: Any) -> None:
        """Store what a step found, for the attempts after this one; renews the lease (do it right before
        a step that cannot be undone). Raises ClaimHeld, DependencyUnavailable."""
        self._save(fields)

    def finish(self, **fields: Any) -> None:
        """The action is complete: later deliveries and runs do nothing. Raises ClaimHeld,
        DependencyUnavailable."""
        self._save({**fields, "status": DONE})

    def release(self) -> None:
        """End the lease now, keeping the progress, so a retry takes over at once instead of waiting for
        the lease to run out. Best effort: a lease lost or not releasable runs out by itself."""
        with contextlib.suppress(DomainError):
            stored = self.states.get(self.partition, self.key)
            if stored is None or stored.state.get("holder") != self.holder or _done(stored.state):
                return
            state = {k: v for k, v in stored.state.items() if k not in _LEASE_FIELDS}
            self.states.replace(self.partition, self.key, state, stored.etag)

    @contextlib.contextmanager
    def releasing(self) -> Iterator[Claim]:
        """Release the lease when a step fails (a process that dies leaves it to run out)."""
        try:
            yield self
        except Exception:
            self.release()
            raise

    def _save(self, changes: Mapping[str, Any]) -> None:
        state = {**self.state, **changes}
        if _done(state):
            state = {k: v for k, v in state.items() if k != "lease_until"}
        else:
            state["lease_until"] = format_time(self.clock.now() + LEASE)
        state["holder"] = self.holder
        for _ in range(2):
            try:
                self.etag = self.states.replace(self.partition, self.key, state, self.etag).etag
                self.state = state
                return
            except NotFound:
                # Removed behind the service's back: stored again with the progress this holder knows.
                try:
                    self.etag = self.states.create(self.partition, self.key, state).etag
                except Conflict:
                    raise ClaimHeld(self.partition, self.key) from None
                self.state = state
                return
            except Conflict:
                stored = self.states.get(self.partition, self.key)
                if stored is None or stored.state.get("holder") != self.holder or _done(stored.state):
                    raise ClaimHeld(self.partition, self.key) from None
                # Still ours: an earlier write of this holder landed although it reported a failure.
                state = {**stored.state, **state}
                self.etag = stored.etag
        raise ClaimHeld(self.partition, self.key)


def claim(states: StateStore, partition: str, key: str, clock: Clock, **fields: Any) -> Claim | None:
    """The claim on one action, held by this caller: None when the action is done already, else a new
    claim, or a pending one whose holder stopped part-way (it released its lease, or died and the lease
    ran out), taken over with a compare-and-swap (act again: the missing steps).

    Raises ClaimHeld when another holder's lease still runs (or it won the race for the claim),
    DependencyUnavailable."""
    now = clock.now()
    holder = uuid.uuid4().hex
    lease = {"holder": holder, "lease_until": format_time(now + LEASE)}
    try:
        stored = states.get(partition, key)
    except StateTampered as err:
        # A claim a storage writer wrote (one saying "done", to suppress a record): reported by the store,
        # and never obeyed: taken over as a fresh claim, so the action happens.
        stored = Versioned(state={**fields, "status": PENDING}, etag=err.etag)
    if stored is None:
        try:
            created = states.create(partition, key, {**fields, "status": PENDING, **lease})
        except Conflict:
            raise ClaimHeld(partition, key) from None  # a concurrent run created it: that one holds it
        return Claim(states, clock, partition, key, dict(created.state), created.etag, holder)
    if _done(stored.state):
        return None
    if _leased(stored.state, now):
        raise ClaimHeld(partition, key)
    try:
        taken = states.replace(partition, key, {**stored.state, **lease}, stored.etag)
    except (Conflict, NotFound):
        raise ClaimHeld(partition, key) from None
    if stored.state.get("holder"):
        logger.warning("claim %s/%s taken over from a holder that stopped", partition, key)
    return Claim(states, clock, partition, key, dict(taken.state), taken.etag, holder)


def _done(state: Mapping[str, Any]) -> bool:
    return state.get("status") == DONE


def _leased(state: Mapping[str, Any], now: datetime) -> bool:
    """Whether a holder's lease still runs. One ending further ahead than any holder can take (a forged
    or skewed row) is not honoured: it would block the action for good."""
    return bool(state.get("holder")) and lease_runs(state.get("lease_until"), now, LEASE)


def is_done(states: StateStore, partition: str, key: str) -> bool:
    try:
        stored = states.get(partition, key)
    except StateTampered:
        return False  # a forged "done" is not done
    return stored is not None and _done(stored.state)
