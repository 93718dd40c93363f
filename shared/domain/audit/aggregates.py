"""Hourly aggregates of the audit trail: what the summary answers, counted once per hour, not per query.

An hour's aggregate holds its records' counts by action and result, its failures (how many, and the latest
ten), and its newest successful rotation. It is sealed with the audit MAC key, so a reader uses only
aggregates the service wrote; the coverage mark (up to which hour every hour with records has its
aggregate) is sealed the same way. An hour is aggregated once it can get no more records: a record is timed
when its event is made and appended within the same invocation, so an hour is complete ``FUNCTION_TIMEOUT``
after it ends.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.domain.audit.canonical import compute_mac, format_time, parse_time
from shared.domain.audit.records import Action, AuditEvent, Result

#: How many of the newest failures an aggregate (and the summary) keeps.
LATEST_FAILURES = 10
HOUR = timedelta(hours=1)


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Aggregate:
    """Counts of a set of records (one hour's, or a summary's)."""

    #: action -> result -> records
    counts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    total: int = 0
    failures: int = 0
    #: The newest failures, newest first: time, action, secret_name, version, error, correlation_id.
    latest_failures: tuple[Mapping[str, Any], ...] = ()
    #: The newest successful rotation: time, secret_name, version.
    last_rotation: Mapping[str, Any] | None = None
    #: A stored hour's: how many records the vault's aggregates counted before this hour (None: an hour
    #: aggregated before the running count was kept, or not one hour). An hour's ``before`` plus its
    #: ``total`` is the next hour's ``before``: a deleted hour shows as a difference.
    before: int | None = None


def aggregate(events: Iterable[AuditEvent]) -> Aggregate:
    counts: dict[str, dict[str, int]] = {}
    failures: list[AuditEvent] = []
    last: AuditEvent | None = None
    total = 0
    for event in events:
        total += 1
        by_result = counts.setdefault(event.action.value, {})
        by_result[event.result.value] = by_result.get(event.result.value, 0) + 1
        if event.result == Result.FAILURE:
            failures.append(event)
        rotated = event.action == Action.ROTATED and event.result == Result.SUCCESS
        if rotated and (last is None or event.time > last.time):
            last = event
    failures.sort(key=lambda e: e.time, reverse=True)
    return Aggregate(
        counts=counts,
        total=total,
        failures=len(failures),
        latest_failures=tuple(_failure(e) for e in failures[:LATEST_FAILURES]),
        last_rotation=None
        if last is None
        else {"time": format_time(last.time), "secret_name": last.secret_name, "version": last.version},
    )


def _failure(event: AuditEvent) -> dict[str, Any]:
    return {
        "time": format_time(event.time),
        "action": event.action.value,
        "secret_name": event.secret_name,
        "version": event.version,
        "error": event.error,
        "correlation_id": event.correlation_id,
    }


def combine(parts: Iterable[Aggregate]) -> Aggregate:
    """One aggregate of several (hours, or hours and loose records)."""
    counts: dict[str, dict[str, int]] = {}
    total = failures = 0
    latest: list[Mapping[str, Any]] = []
    last: Mapping[str, Any] | None = None
    for part in parts:
        total += part.total
        failures += part.failures
        for action, by_result in part.counts.items():
            mine = counts.setdefault(action, {})
            for result, n in by_result.items():
                mine[result] = mine.get(result, 0) + n
        latest += part.latest_failures
        if part.last_rotation is not None and (last is None or part.last_rotation["time"] > last["time"]):
            last = part.last_rotation
    latest.sort(key=lambda f: str(f["time"]), reverse=True)
    return Aggregate(counts, total, failures, tuple(latest[:LATEST_FAILURES]), last)


# -- sealed, as stored ---------------------------------------------------------------------------------


def aggregate_fields(hour: datetime, part: Aggregate, before: int | None = None) -> dict[str, Any]:
    """An hour's aggregate as flat fields (what is stored and sealed), with the records counted before it."""
    running = {} if before is None else {"before": before}
    return {
        **running,
        "hour": format_time(hour_of(hour)),
        "counts": json.dumps(part.counts, sort_keys=True, separators=(",", ":")),
        "total": part.total,
        "failures": part.failures,
        "latest": json.dumps(list(part.latest_failures), sort_keys=True, separators=(",", ":")),
        "last_rotation": json.dumps(part.last_rotation, sort_keys=True, separators=(",", ":")),
    }


def _payload(kind: str, fields: Mapping[str, Any], key_id: str) -> bytes:
    body = {**{k: v for k, v in fields.items() if k not in ("key_id", "mac")}, "kind": kind, "key_id": key_id}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def seal_fields(kind: str, fields: Mapping[str, Any], key_id: str, key: bytes) -> dict[str, Any]:
    """``fields`` with the key id and the MAC over them (``kind``: what they are, so one cannot pose as
    another)."""
    return {**fields, "key_id": key_id, "mac": compute_mac(key, _payload(kind, fields, key_id))}


def authentic_fields(kind: str, stored: Mapping[str, Any], keys: Callable[[str], bytes | None]) -> bool:
    key = keys(str(stored.get("key_id", "")))
    if key is None:
        return False
    expected = compute_mac(key, _payload(kind, stored, str(stored["key_id"])))
    return hmac.compare_digest(str(stored.get("mac", "")), expected)


AGGREGATE = "aggregate"
COVERAGE = "aggregate-coverage"


def authentic_aggregate(
    stored: Mapping[str, Any], keys: Callable[[str], bytes | None]
) -> tuple[datetime, Aggregate] | None:
    """The hour and aggregate of stored fields whose MAC proves the service wrote them, else None."""
    try:
        if not authentic_fields(AGGREGATE, stored, keys):
            return None
        return parse_time(str(stored["hour"])), Aggregate(
            counts=json.loads(str(stored["counts"])),
            total=int(stored["total"]),
            failures=int(stored["failures"]),
            latest_failures=tuple(json.loads(str(stored["latest"]))),
            last_rotation=json.loads(str(stored["last_rotation"])),
            before=None if stored.get("before") is None else int(stored["before"]),
        )
    except (KeyError, ValueError, TypeError):
        return None


def sealed_hours(
    stored: Iterable[tuple[datetime, Mapping[str, Any]]], keys: Callable[[str], bytes | None]
) -> tuple[dict[datetime, Aggregate], list[datetime]]:
    """Stored aggregates (each with the hour its place names) split: those whose seal holds for that hour,
    and the hours of those that fail it."""
    sealed: dict[datetime, Aggregate] = {}
    unsealed: list[datetime] = []
    for hour, fields in stored:
        found = authentic_aggregate(fields, keys)
        if found is not None and found[0] == hour:
            sealed[hour] = found[1]
        else:
            unsealed.append(hour)
    return sealed, unsealed


def coverage_fields(up_to: datetime, records: int | None = None) -> dict[str, Any]:
    """The coverage mark: every hour before ``up_to`` that has records has its aggregate, and they count
    ``records`` (the last hour's ``before`` plus its total)."""
    counted = {} if records is None else {"records": records}
    return {**counted, "up_to": format_time(hour_of(up_to))}


@dataclass(frozen=True)
class Coverage:
    up_to: datetime
    #: What the aggregates before ``up_to`` count (None: a mark written before the count was kept).
    records: int | None


def authentic_coverage_mark(
    stored: Mapping[str, Any] | None, keys: Callable[[str], bytes | None]
) -> Coverage | None:
    if stored is None:
        return None
    try:
        if not authentic_fields(COVERAGE, stored, keys):
            return None
        records = stored.get("records")
        return Coverage(parse_time(str(stored["up_to"])), None if records is None else int(records))
    except (KeyError, ValueError, TypeError):
        return None


def authentic_coverage(
    stored: Mapping[str, Any] | None, keys: Callable[[str], bytes | None]
) -> datetime | None:
    mark = authentic_coverage_mark(stored, keys)
    return mark.up_to if mark is not None else None
