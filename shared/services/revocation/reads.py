"""Reading revocation requests: one, or all of them, with the requests the audit trail names whose rows are
gone (reported as tampering, listed as unreadable)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from shared.domain.audit import (
    Action,
    AuditQuery,
    Result,
)
from shared.domain.revocation import (
    REVOCATION_ID,
    Revocation,
    Status,
)
from shared.domain.state import Versioned
from shared.ports import StateStore
from shared.services.audit import authentic_events
from shared.services.revocation.results import Revocation as Document
from shared.services.revocation.results import RevocationPage, UnreadableRevocation
from shared.services.revocation.stored import PARTITION, InvalidRequest, Services, read

logger = logging.getLogger(__name__)


def get(states: StateStore, revocation_id: str) -> Revocation:
    """The request. Raises NotFound (unknown id, or a stored row this service did not write)."""
    return read(states, revocation_id)[0]


def list_requests(
    states: StateStore, *, status: Status | None = None, secret_name: str | None = None
) -> list[Revocation]:
    """Every request (newest first), filtered; rows that fail their seal are left out (``unreadable``
    names them)."""
    return listed(states.list(PARTITION), status=status, secret_name=secret_name)


def listed(
    rows: Mapping[str, Versioned], *, status: Status | None = None, secret_name: str | None = None
) -> list[Revocation]:
    found: list[Revocation] = []
    for stored in rows.values():
        try:
            revocation = Revocation.of_state(stored.state)
        except ValueError:
            continue
        if status is not None and revocation.status != status:
            continue
        if secret_name is not None and revocation.secret_name.lower() != secret_name.lower():
            continue
        found.append(revocation)
    return sorted(found, key=lambda r: (r.requested_at, r.id), reverse=True)


@dataclass(frozen=True)
class Listing:
    """The requests, and the ones that cannot be shown: a row that fails its seal, or a request the audit
    trail holds (within ``MISSING_WINDOW``) whose row is gone."""

    requests: list[Revocation]
    unreadable: list[UnreadableRevocation]


#: How far back the trail is searched for requests whose row is gone: the longest TTL (7 days), a day more.
MISSING_WINDOW = timedelta(days=8)


def list_all(peers: Services, *, status: Status | None = None, secret_name: str | None = None) -> Listing:
    """Every request (newest first, filtered) and every one that cannot be shown, tampered or missing;
    a missing one is reported (``report_missing``: a record and a finding, once). Raises
    DependencyUnavailable."""
    recorded = recorded_ids(peers)  # before the rows: a request made in between is in both, never missing
    rows = peers.states.list(PARTITION)
    unreadable = [
        UnreadableRevocation(
            id=key, secret_name=None, vault=peers.trail.vault, problem=f"tampered: {stored.tampered}"
        )
        for key, stored in sorted(rows.items())
        if stored.tampered is not None and secret_name is None
    ]
    for key, name in sorted(missing(peers, recorded, rows).items()):
        if secret_name is None or name.lower() == secret_name.lower():
            unreadable.append(
                UnreadableRevocation(
                    id=key,
                    secret_name=name,
                    vault=peers.trail.vault,
                    problem="missing: on record, its row is gone",
                )
            )
    return Listing(listed(rows, status=status, secret_name=secret_name), unreadable)


def page(
    vaults: Sequence[Services],
    *,
    status: Status | None = None,
    secret_name: str | None = None,
    limit: int,
    continuation: str | None = None,
) -> RevocationPage:
    """One page of ``list_all`` of each vault's services, newest first: ``limit`` requests after the one
    ``continuation`` names (the unreadable ones on the first page only). Raises InvalidRequest
    (``continuation`` not in the listing) and DependencyUnavailable."""
    listings = [list_all(peers, status=status, secret_name=secret_name) for peers in vaults]
    found = sorted(
        (r for listing in listings for r in listing.requests),
        key=lambda r: (r.requested_at, r.id),
        reverse=True,
    )
    unreadable = [u for listing in listings for u in listing.unreadable]
    start = 0
    if continuation is not None:
        ids = [r.id for r in found]
        if continuation not in ids:
            raise InvalidRequest("continuation", "not a position in this listing")
        start = ids.index(continuation) + 1
    items = found[start : start + limit]
    more = start + limit < len(found)
    return RevocationPage(
        items=[Document.of(r) for r in items],
        continuation=items[-1].id if more and items else None,
        unreadable=unreadable if continuation is None else [],
    )


def recorded_ids(peers: Services) -> dict[str, str]:
    """The requests the audit trail holds (authentic REQUESTED or BREAK_GLASS successes, within
    ``MISSING_WINDOW``): id → secret name. Read before the rows they are compared with."""
    since = peers.clock.now() - MISSING_WINDOW
    recorded: dict[str, str] = {}
    for action in (Action.REVOCATION_REQUESTED, Action.BREAK_GLASS):
        query = AuditQuery(vault=peers.trail.vault, action=action, since=since)
        for event in authentic_events(peers.reader, peers.keys, query):
            rid = str(event.details.get("revocation_id", ""))
            if event.result == Result.SUCCESS and REVOCATION_ID.fullmatch(rid):
                recorded[rid] = event.secret_name or ""
    return recorded


def missing(peers: Services, recorded: Mapping[str, str], rows: Mapping[str, Versioned]) -> dict[str, str]:
    """The recorded requests whose row is gone, id → secret name; each reported (best effort: the alarm
    never fails the caller)."""
    missing = {rid: name for rid, name in recorded.items() if rid not in rows}
    for rid in missing:
        if peers.report_missing is not None:
            try:
                peers.report_missing(PARTITION, rid)
            except Exception:
                logger.exception("revocation %s on record without a row could not be reported", rid)
    return missing
