"""Reading the audit trail: a page of records (with an opaque cursor), only authentic records for the
decisions that rest on them, the summary, and the review of a suspicious-activity finding."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared.domain.audit import (
    Action,
    Actor,
    AuditEvent,
    AuditQuery,
    RecordPosition,
    Result,
    StoredAuditRow,
    StoredRecord,
    authentic_event,
    format_time,
)
from shared.domain.errors import (
    DomainError,
    NotFound,
    NotPermitted,
)
from shared.domain.findings import review
from shared.domain.identity import canonical_identity
from shared.ports import AuditReader, MacKeyRing
from shared.services.audit.results import (
    AuditPage,
    AuditRecord,
    FindingReviewed,
)
from shared.services.audit.trail import AuditUnavailable

if TYPE_CHECKING:  # the bundle imports this package: annotations only
    from shared.services.peers import AuditPeers

logger = logging.getLogger(__name__)


# -- query ---------------------------------------------------------------------------------------------


class InvalidCursor(ValueError):
    """The continuation token is not one this service issued for this query."""


#: The cursor's form: a token of another form (an older index's) is refused, never misread.
CURSOR_VERSION = 2
#: A store position is two keys of at most 1 KiB each; anything longer is refused before it is decoded.
_CURSOR_MAX_CHARS = 4096
_CURSOR_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{1,{_CURSOR_MAX_CHARS}}}")
#: What a key of a position may hold: printable ASCII but the characters Table Storage keys may not.
_CURSOR_KEY = re.compile(r"[!-\x22$-.0-9:->@-\[\]-~]{1,1024}")


def query_fingerprint(query: AuditQuery) -> str:
    """What a cursor is bound to: the query's filters (not its page size)."""
    filters = [
        query.vault,
        query.secret_name,
        query.action.value if query.action else None,
        query.actor,
        format_time(query.since) if query.since else None,
        format_time(query.until) if query.until else None,
    ]
    return hashlib.sha256(json.dumps(filters).encode()).hexdigest()[:16]


def encode_cursor(query: AuditQuery, position: RecordPosition) -> str:
    """The continuation token of a position in the listing of ``query`` (unpadded URL-safe base64 of its
    JSON: the form, the query's fingerprint, the store's two keys)."""
    body = [CURSOR_VERSION, query_fingerprint(query), *position]
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def decode_cursor(token: str, query: AuditQuery) -> RecordPosition:
    """The store position a token of ``encode_cursor`` names for ``query``. Strict, because the keys go
    to the store: bounded length, this form, this query's fingerprint (a token of another query is
    refused, not misread), keys of the characters the store's keys hold, and nothing but the token
    ``encode_cursor`` would issue for that position. Raises InvalidCursor only."""
    invalid = InvalidCursor("continuation is not a valid token")
    if not _CURSOR_TOKEN.fullmatch(token):
        raise invalid
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, RecursionError):  # RecursionError: deeply nested JSON
        raise invalid from None
    if not isinstance(body, list) or len(body) != 4 or body[0] != CURSOR_VERSION or type(body[0]) is not int:
        raise invalid
    _, fingerprint, partition, row = body
    if fingerprint != query_fingerprint(query):
        raise InvalidCursor("continuation belongs to another query (its filters differ)")
    if not all(isinstance(key, str) and _CURSOR_KEY.fullmatch(key) for key in (partition, row)):
        raise invalid
    position = (partition, row)
    if encode_cursor(query, position) != token:  # one token per position: no padding, spacing or escaping
        raise invalid
    return position


def _record(chain: str, row: StoredRecord, event: AuditEvent) -> AuditRecord:
    """A stored record as the API shows it (members without a value left out)."""
    actor = event.actor
    present: dict[str, Any] = {
        "secret_name": event.secret_name,
        "version": event.version,
        "actor_ip": actor.ip,
        "actor_user_agent": actor.user_agent,
        "correlation_id": event.correlation_id,
        "error": event.error,
        "duration_ms": event.duration_ms,
    }
    return AuditRecord(
        id=event.id,
        time=event.time,
        action=event.action,
        vault=event.vault,
        result=event.result,
        actor_id=actor.id,
        actor_type=actor.type,
        details=dict(event.details),
        chain=chain,
        seq=row.position,
        **{k: v for k, v in present.items() if v is not None},
    )


def authentic_events(reader: AuditReader, keys: MacKeyRing, query: AuditQuery) -> list[AuditEvent]:
    """The records matching ``query`` whose MAC proves the service wrote them (a row a storage writer put
    in the table is left out): what a decision may rest on. Raises DependencyUnavailable."""
    rows = reader.list_records(query)
    return [e for row in rows if (e := authentic_event(row.chain, row.record.fields, keys.get)) is not None]


#: How many reads of the store one page may take when rows are left out (not the service's: their MAC
#: fails): a page then holds fewer records than asked, and its continuation goes on from there.
MAX_READS_PER_PAGE = 4


#: Records a read of the index asks for at once (Table Storage answers at most 1,000 a request).
INDEX_PAGE = 1000


def indexed_rows(
    reader: AuditReader, keys: MacKeyRing, query: AuditQuery
) -> list[tuple[StoredAuditRow, AuditEvent]]:
    """Every record matching ``query`` as the query index holds it (its time range read, nothing older:
    one request per thousand records), only those whose MAC proves the service wrote them, newest first.
    For reads that judge a window (the scan, the summary); a decision that must see every record of the
    trail reads the chains (``authentic_events``). Raises DependencyUnavailable."""
    found: list[tuple[StoredAuditRow, AuditEvent]] = []
    after: RecordPosition | None = None
    while True:
        rows, after = reader.page_records(query, INDEX_PAGE, after)
        found += [(row, e) for row in rows if (e := authentic_event(row.chain, row.record.fields, keys.get))]
        if after is None:
            return found


def query_audit(
    reader: AuditReader, keys: MacKeyRing, query: AuditQuery, continuation: str | None = None
) -> AuditPage:
    """Records matching the filters, newest first (one secret's: in its chain's order), ``query.limit``
    per page, from ``continuation`` (a token of a page of this query). Only records whose MAC proves the
    service wrote them are shown. A page reads the store once (at most ``MAX_READS_PER_PAGE`` times when
    rows are left out), whatever the trail's size. Raises InvalidCursor, DependencyUnavailable."""
    after = decode_cursor(continuation, query) if continuation is not None else None
    items: list[AuditRecord] = []
    for _ in range(MAX_READS_PER_PAGE):
        rows, after = reader.page_records(query, query.limit - len(items), after)
        for row in rows:
            event = authentic_event(row.chain, row.record.fields, keys.get)
            if event is not None:
                items.append(_record(row.chain, row.record, event))
        if after is None or len(items) >= query.limit:
            break
    return AuditPage(items=items, continuation=None if after is None else encode_cursor(query, after))


# -- findings review -----------------------------------------------------------------------------------

#: A finding names at most this many of the actors it is about, each cut to this many characters, so its
#: details stay small; a reviewer is compared by the same prefix (a collision refuses, never admits).
FINDING_MAX_ACTORS = 20
FINDING_ACTOR_CHARS = 64


def finding_actors(details: Mapping[str, Any]) -> frozenset[str]:
    """The actors a finding's details say it is about, in canonical form (``canonical_identity``), each
    cut as stored. A finding stored before findings listed their actors counts its subject, which is the
    actor id for the per-actor rules."""
    actors = details.get("actors")
    if not isinstance(actors, list):
        actors = [details["subject"]] if details.get("subject") else []
    return frozenset(canonical_identity(str(actor)[:FINDING_ACTOR_CHARS]) for actor in actors)


def involved(actor_id: str, details: Mapping[str, Any]) -> bool:
    """Whether the caller ``actor_id`` is among the actors of a finding: compared as one canonical
    identity, also when the stored id was cut (a collision of prefixes refuses, never admits)."""
    actors = finding_actors(details)
    cut = FINDING_ACTOR_CHARS
    return bool({canonical_identity(actor_id)[:cut], canonical_identity(actor_id[:cut])} & actors)


def review_finding(
    peers: AuditPeers, finding_id: str, *, reviewer: Actor, note: str | None, correlation_id: str | None
) -> FindingReviewed:
    """Mark a suspicious-activity finding reviewed: a REVIEWED ``intent`` record (fail closed: when it
    cannot be written nothing changes and AuditUnavailable is raised), the compare-and-swap on the
    finding, then the outcome record — ``success``, or ``failure`` when a concurrent review won. Raises
    NotFound, InvalidTransition (not open), Conflict (lost a race).

    Nobody reviews a finding about themselves: a reviewer among the finding's actors is refused with
    NotPermitted after a REVIEWED record with result ``denied`` (fail closed too), and nothing changes."""
    findings, trail = peers.findings, peers.trail
    finding = findings.get(finding_id)
    if finding is None:
        raise NotFound(f"finding {finding_id} does not exist")
    if involved(reviewer.id, finding.details):
        trail.record(
            Action.REVIEWED,
            actor=reviewer,
            result=Result.DENIED,
            correlation_id=correlation_id,
            details={"finding_id": finding_id, "rule": finding.rule, "reason": "the reviewer is involved"},
        )
        raise NotPermitted(f"finding {finding_id} is about the caller; someone else must review it")
    review(finding, reviewer.id, note, trail.event(Action.REVIEWED).time)  # InvalidTransition: no record
    details = {"finding_id": finding_id, "rule": finding.rule, "note": note}
    intent = trail.record(
        Action.REVIEWED, actor=reviewer, result=Result.INTENT, correlation_id=correlation_id, details=details
    )
    try:
        findings.mark_reviewed(finding_id, reviewer.id, note, intent.event.time)
    except DomainError as err:
        trail.record(
            Action.REVIEWED,
            actor=reviewer,
            result=Result.FAILURE,
            correlation_id=correlation_id,
            details={"finding_id": finding_id},
            error=str(err),
        )
        raise
    try:
        done = trail.record(
            Action.REVIEWED, actor=reviewer, correlation_id=correlation_id, details={"finding_id": finding_id}
        )
    except AuditUnavailable:
        # The review took effect and its intent is on record; the finding itself says who reviewed it.
        logger.error("REVIEWED outcome of finding %s could not be recorded", finding_id)
        done = intent
    return FindingReviewed(finding_id=finding_id, status="reviewed", reviewer=reviewer.id, audit_seq=done.seq)
