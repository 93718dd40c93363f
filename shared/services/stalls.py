"""Stalled rotations: no silent skip. A due secret whose rotation does not happen — held by a lease far
longer than a function may run, or still due ``stall_after`` after it became due (two hourly sweeps by
default) — is a ROTATION_STALLED record, a ``rotation_stalled`` finding and its SuspiciousActivity event,
once per stall (the current version's stall: the finding id is derived from the secret and its current
version's creation time). Status and the plan say why (``stall``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.domain.audit import Action, format_time, parse_time
from shared.domain.errors import DomainError
from shared.domain.progress import IDLE, Progress
from shared.domain.state import FUNCTION_TIMEOUT, LEASE, Versioned, lease_runs
from shared.services.findings import Cause, FindingPeers, caused, raise_finding
from shared.services.sweep import DueSecret

logger = logging.getLogger(__name__)

RULE = "rotation_stalled"
#: Two hourly sweeps: a due secret still due this long after it became due has stalled.
STALL_AFTER = timedelta(hours=2)
#: Longer than any invocation may run, plus a margin: no holder runs this long.
HELD_TOO_LONG = FUNCTION_TIMEOUT + timedelta(minutes=2)


@dataclass(frozen=True)
class Stall:
    name: str
    created: datetime
    due_at: datetime
    reason: str
    #: Since when it counts as stalled: ``stall_after`` past its due time, or a lease held too long.
    since: datetime


def stall(
    due: DueSecret, stored: Versioned | None, now: datetime, stall_after: timedelta = STALL_AFTER
) -> Stall | None:
    """The stall of a due secret given its progress row as stored (None: no row), or None when it has not
    stalled (yet)."""
    held = _held_since(stored, now)
    if held is None and now - due.due_at < stall_after:
        return None
    since = due.due_at + stall_after if held is None else min(held + HELD_TOO_LONG, due.due_at + stall_after)
    return Stall(due.name, due.created, due.due_at, _reason(stored, held), since)


def _held_since(stored: Versioned | None, now: datetime) -> datetime | None:
    """When a lease that still runs was taken, if that was longer ago than any holder runs."""
    if stored is None or stored.tampered is not None:
        return None
    progress = Progress.of(stored.state)
    if progress.step == IDLE or not lease_runs(progress.lease_until, now, LEASE) or not progress.leased_at:
        return None
    try:
        taken = parse_time(progress.leased_at)
    except ValueError:
        return None
    return taken if now - taken > HELD_TOO_LONG else None


def _reason(stored: Versioned | None, held: datetime | None) -> str:
    if stored is None:
        return "not rotated since it became due (no rotation was attempted)"
    if stored.tampered is not None:
        return f"its rotation state is tampered ({stored.tampered}): nothing acts on it"
    progress = Progress.of(stored.state)
    if held is not None:
        return f"held by {progress.step} (rotation {progress.rotation_id}) since {format_time(held)}"
    if progress.last_error:
        return f"its last attempt failed ({progress.last_error})"
    return "not rotated since it became due"


def report_stalls(
    peers: FindingPeers,
    due: Sequence[DueSecret],
    rows: Mapping[str, Versioned],
    stall_after: timedelta = STALL_AFTER,
    correlation_id: str | None = None,
) -> list[Stall]:
    """Report every due secret that stalled (``rows``: the progress rows by key): a ROTATION_STALLED
    record, a finding and its event, once per stall. One that cannot be reported now is left for the next
    sweep (logged). Returns the stalls reported now."""
    now = peers.clock.now()
    reported: list[Stall] = []
    for secret in due:
        found = stall(secret, rows.get(secret.name.lower()), now, stall_after)
        if found is None:
            continue
        facts = {
            "due_since": format_time(found.due_at),
            "version_created": format_time(found.created),
            "reason": found.reason,
        }
        summary = f"{found.name} is due since {facts['due_since']} and not rotated: {found.reason}"
        why = Cause(Action.ROTATION_STALLED, facts, vault=peers.scope)
        finding = caused(
            RULE, (found.name.lower(), format_time(found.created)), why, time=now, secret_name=found.name,
            summary=summary,
        )  # fmt: skip
        try:
            if raise_finding(peers, finding, correlation_id):
                reported.append(found)
                logger.error("rotation of %s stalled: %s", found.name, found.reason)
        except DomainError as err:
            logger.error("the stall of %s could not be reported now: %s", found.name, err)
    return reported
