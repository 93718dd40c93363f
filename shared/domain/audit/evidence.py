"""The hourly evidence of the audit trail: the records the compliance report reads, kept per hour beside the
hour's aggregate, so a report of a quarter reads a few thousand rows whatever the trail holds.

An hour's evidence is its records of ``EVIDENCE_ACTIONS`` (rotation outcomes and stalls, revocation
requests and decisions, break-glass and reviews, denials, integrity events), intents left out, each cut to
what the report shows: no IP, no user agent, no correlation id, and of the details only ``EVIDENCE_DETAILS``.
It is stored in parts (a table property holds at most 32,768 UTF-16 characters), each sealed with the audit
MAC key over its vault, hour, number and the number of parts, so a part cannot pose as another vault's or
another hour's, and a missing part shows.

The hour's sealed aggregate is its manifest: it counts the hour's records by action and result. Evidence
whose rows do not match those counts (a part deleted, an hour aggregated before evidence was kept) is not
used: that hour is read from the query index instead.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from shared.domain.audit.aggregates import Aggregate, authentic_fields, hour_of, seal_fields
from shared.domain.audit.canonical import format_time, parse_time
from shared.domain.audit.records import Action, Actor, ActorType, AuditEvent, Result

#: A revocation request's later decisions.
REVOCATION_DECISIONS = (
    Action.REVOCATION_APPROVED,
    Action.REVOCATION_REJECTED,
    Action.REVOCATION_CANCELLED,
    Action.REVOCATION_EXPIRED,
    Action.REVOKED,
    Action.REVIEWED,
)
#: What happened to the trail itself.
INTEGRITY_ACTIONS = (
    Action.TAMPERING_DETECTED,
    Action.STATE_TAMPERED,
    Action.CHAIN_REPAIRED,
    Action.INCIDENT_OPENED,
    Action.INCIDENT_ACKNOWLEDGED,
    Action.RECORDS_ARCHIVED,
)
#: The actions the compliance report reads.
EVIDENCE_ACTIONS = frozenset(
    {
        Action.ROTATED,
        Action.ROTATION_FAILED,
        Action.ROTATION_STALLED,
        Action.REVOCATION_REQUESTED,
        Action.BREAK_GLASS,
        Action.ACCESS_DENIED,
        *REVOCATION_DECISIONS,
        *INTEGRITY_ACTIONS,
    }
)
#: The details the report shows or judges by.
EVIDENCE_DETAILS = (
    "previous_version",
    "rotator",
    "rotation_id",
    "error_class",
    "gave_up_after",
    "revocation_id",
    "reason",
    "severity",
    "required_approvals",
    "break_glass",
)
EVIDENCE = "evidence"
#: The characters of one part's rows: under a table property's 32,768 (the rows are ASCII-escaped JSON).
PART_CHARS = 30_000


def is_evidence(event: AuditEvent) -> bool:
    return event.action in EVIDENCE_ACTIONS and event.result != Result.INTENT


def evidence_counts(events: Iterable[AuditEvent]) -> Counter[tuple[str, str]]:
    """(action, result) -> records, of the evidence among ``events``."""
    return Counter((e.action.value, e.result.value) for e in events if is_evidence(e))


def expected_counts(part: Aggregate) -> Counter[tuple[str, str]]:
    """What an hour's evidence must hold, as its aggregate counts it."""
    return Counter(
        {
            (action, result): n
            for action, by_result in part.counts.items()
            if action in EVIDENCE_ACTIONS
            for result, n in by_result.items()
            if n and result != Result.INTENT
        }
    )


def _row(event: AuditEvent) -> dict[str, Any]:
    details = {k: event.details[k] for k in EVIDENCE_DETAILS if k in event.details}
    row = {
        "id": event.id,
        "t": format_time(event.time),
        "a": event.action.value,
        "r": event.result.value,
        "s": event.secret_name,
        "v": event.version,
        "u": event.actor.id,
        "ut": event.actor.type.value,
        "e": event.error,
        "d": details or None,
    }
    return {k: v for k, v in row.items() if v is not None}


def _event(vault: str, row: Mapping[str, Any]) -> AuditEvent:
    """The row's event (of a part whose seal the caller checked)."""
    return AuditEvent.rebuilt(
        id=str(row["id"]),
        time=parse_time(str(row["t"])),
        action=Action(row["a"]),
        vault=vault,
        result=Result(row["r"]),
        actor=Actor(id=str(row["u"]), type=ActorType(row["ut"])),
        secret_name=row.get("s"),
        version=row.get("v"),
        error=row.get("e"),
        details=dict(row.get("d") or {}),
    )


def evidence_parts(
    vault: str, hour: datetime, events: Iterable[AuditEvent], key_id: str, key: bytes
) -> list[dict[str, Any]]:
    """The sealed parts of ``vault``'s evidence of ``hour`` (none when the hour has none)."""
    texts = [
        json.dumps(_row(e), sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
        for e in sorted(events, key=lambda e: (e.time, e.id))
        if is_evidence(e)
    ]
    chunks: list[list[str]] = []
    size = PART_CHARS
    for text in texts:  # one row is at most the 4 KiB of its details and a 1 KiB error: it always fits
        if size + len(text) + 1 > PART_CHARS:
            chunks.append([])
            size = 2
        chunks[-1].append(text)
        size += len(text) + 1
    fields = [
        {
            "vault": vault,
            "hour": format_time(hour_of(hour)),
            "part": number,
            "parts": len(chunks),
            "rows": "[" + ",".join(chunk) + "]",
        }
        for number, chunk in enumerate(chunks)
    ]
    return [seal_fields(EVIDENCE, f, key_id, key) for f in fields]


def authentic_evidence(
    vault: str,
    hour: datetime,
    parts: Sequence[Mapping[str, Any]],
    expected: Counter[tuple[str, str]],
    keys: Callable[[str], bytes | None],
) -> list[AuditEvent] | None:
    """The evidence of ``vault``'s ``hour`` from its stored parts: every part there, sealed by the service
    for that vault and hour, and the rows what the hour's aggregate counts (``expected``); else None."""
    groups: dict[int, dict[int, Mapping[str, Any]]] = {}
    try:
        for stored in parts:
            if not authentic_fields(EVIDENCE, stored, keys):
                continue
            if str(stored["vault"]) != vault or parse_time(str(stored["hour"])) != hour:
                continue
            group = groups.setdefault(int(stored["parts"]), {})
            if group.setdefault(int(stored["part"]), stored) is not stored:
                return None  # two parts of one number: copied rows, not what was written
        for count, group in groups.items():
            if sorted(group) != list(range(count)):
                continue
            events = [_event(vault, row) for n in range(count) for row in json.loads(str(group[n]["rows"]))]
            if evidence_counts(events) == expected:
                return events
    except (KeyError, ValueError, TypeError):
        return None
    return None
