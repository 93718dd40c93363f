"""Reading a window's evidence (``shared.domain.audit.evidence``): the records the compliance report reads,
from the sealed evidence of each whole hour the aggregates cover, and from the query index for the rest.

What is read from the index: the window's partial first hour and what the aggregates do not cover yet; an
hour whose aggregate fails its seal; an hour whose evidence is missing or does not match what its aggregate
counts (a part deleted, or an hour aggregated before evidence was kept); and the hours between two
aggregates whose running counts do not meet (``Aggregate.before``: an hour's aggregate deleted). Where the
index then holds fewer records than the aggregate counts, or an hour was deleted, the read says so: the
report that uses it is incomplete there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.domain.audit import AuditEvent, AuditQuery
from shared.domain.audit.aggregates import (
    HOUR,
    Aggregate,
    Coverage,
    authentic_coverage_mark,
    hour_of,
    sealed_hours,
)
from shared.domain.audit.evidence import authentic_evidence, evidence_counts, expected_counts, is_evidence
from shared.ports import AuditReader, MacKeyRing
from shared.services.audit.queries import indexed_rows

#: How far before the window its aggregates are read, to see a deleted hour at the window's start.
LOOKBEHIND = timedelta(days=1)
#: Ranges to read from the index closer than this are read as one (fewer requests, a few more records).
MERGE_GAP = timedelta(hours=24)


@dataclass(frozen=True)
class Shortfall:
    """Records of an action and result the aggregates of ``hours`` hours count, of which the index
    held only ``read`` (their evidence was missing or did not match)."""

    vault: str
    action: str
    result: str
    counted: int
    read: int
    hours: int


@dataclass(frozen=True)
class DeletedHours:
    """Between two sealed aggregates (or the last and the coverage mark), ``records`` records counted
    that no aggregate in between holds: hours deleted. They were read from the index."""

    vault: str
    after: datetime
    before: datetime
    records: int


@dataclass
class EvidenceRead:
    events: list[AuditEvent] = field(default_factory=list)
    shortfalls: list[Shortfall] = field(default_factory=list)
    deleted: list[DeletedHours] = field(default_factory=list)
    #: Hours whose aggregate fails its seal (read from the index, not compared).
    unsealed_hours: int = 0
    #: Hours read from their sealed evidence.
    sealed_hours: int = 0


def read_evidence(
    reader: AuditReader, keys: MacKeyRing, vault: str, since: datetime, until: datetime
) -> EvidenceRead:
    """The evidence of ``vault``'s records from ``since`` to before ``until``, and what is missing from it.
    Every hour the window touches is read from its sealed evidence where the aggregates cover it (a partial
    hour's rows filtered by time), the rest from the index. Without a coverage mark (deleted, or none
    written yet), the hours up to the newest sealed aggregate are judged by the aggregates. The reads that
    do not depend on each other are sent together. Raises DependencyUnavailable."""
    read = EvidenceRead()
    mark = authentic_coverage_mark(reader.read_coverage(vault), keys.get)
    low = hour_of(since)
    high = hour_of(until) + (HOUR if hour_of(until) < until else timedelta(0))
    limit = min(high, mark.up_to) if mark is not None else high
    if low >= limit:
        read.events = _within(_loose(reader, keys, vault, [(since, until)]), since, until)
        return read
    with ThreadPoolExecutor(max_workers=3) as pool:
        stored = pool.submit(reader.read_aggregates, vault, low - LOOKBEHIND, limit)
        parts = pool.submit(reader.read_evidence, vault, low, limit)
        tail = pool.submit(_loose, reader, keys, vault, [(limit, until)] if mark is not None else [])
        sealed, unsealed = sealed_hours(stored.result(), keys.get)
        stop = limit if mark is not None else max((h + HOUR for h in sealed if h >= low), default=low)
        found = tail.result()
        loose = [] if mark is not None else [(stop, until)]
        broken = [hour for hour in unsealed if low <= hour < stop]
        read.unsealed_hours = len(broken)
        loose += [(hour, hour + HOUR) for hour in broken]
        judged_to = mark if mark is not None and limit == mark.up_to else None  # the last hour vs the mark
        for gap in _deleted(vault, sealed, judged_to, unsealed):
            if gap.before > low:
                read.deleted.append(gap)
                loose.append((max(gap.after + HOUR, low), min(gap.before, stop)))
        expected: dict[datetime, Counter[tuple[str, str]]] = {}
        by_hour = parts.result()
    for hour, part in sorted(sealed.items()):
        wanted = expected_counts(part)
        if not low <= hour < stop or not wanted:
            continue
        events = authentic_evidence(vault, hour, by_hour.get(hour, []), wanted, keys.get)
        if events is None:
            expected[hour] = wanted
            loose.append((hour, hour + HOUR))
        else:
            read.events += events
            read.sealed_hours += 1
    found += _loose(reader, keys, vault, loose)
    read.shortfalls = _shortfalls(vault, expected, found)
    read.events = _within(read.events + found, since, until)
    return read


def _within(events: Iterable[AuditEvent], since: datetime, until: datetime) -> list[AuditEvent]:
    return [e for e in events if since <= e.time < until]


def _deleted(
    vault: str,
    sealed: dict[datetime, Aggregate],
    mark: Coverage | None,
    unsealed: Sequence[datetime],
) -> list[DeletedHours]:
    """Where consecutive sealed aggregates' running counts do not meet (an unsealed hour between two is
    not judged: its total is unknown)."""
    broken = set(unsealed)
    hours = sorted(sealed)
    ends: list[tuple[datetime, int | None]] = [(h, sealed[h].before) for h in hours[1:]]
    if mark is not None:
        ends.append((mark.up_to, mark.records))
    gaps = []
    for hour, (after, following) in zip(hours, ends, strict=False):
        before, total = sealed[hour].before, sealed[hour].total
        if before is None or following is None or any(hour < b < after for b in broken):
            continue
        if before + total != following:
            gaps.append(DeletedHours(vault, hour, after, following - before - total))
    return gaps


def _loose(
    reader: AuditReader, keys: MacKeyRing, vault: str, ranges: Iterable[tuple[datetime, datetime]]
) -> list[AuditEvent]:
    """The evidence among the index's records of ``ranges`` (close ones read as one range, and only the
    records of the ranges kept)."""
    wanted = sorted((a, b) for a, b in ranges if a < b)
    merged: list[list[datetime]] = []
    for a, b in wanted:
        if merged and a - merged[-1][1] <= MERGE_GAP:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    found = []
    for a, b in merged:
        query = AuditQuery(vault=vault, since=a, until=b)
        for _, event in indexed_rows(reader, keys, query):
            if is_evidence(event) and any(x <= event.time < y for x, y in wanted):
                found.append(event)
    return found


def _shortfalls(
    vault: str, expected: dict[datetime, Counter[tuple[str, str]]], found: Iterable[AuditEvent]
) -> list[Shortfall]:
    """What the index held of the hours whose evidence was not used, against their aggregates."""
    by_hour: dict[datetime, list[AuditEvent]] = {}
    for event in found:
        if hour_of(event.time) in expected:
            by_hour.setdefault(hour_of(event.time), []).append(event)
    counted: Counter[tuple[str, str]] = Counter()
    got: Counter[tuple[str, str]] = Counter()
    hours: Counter[tuple[str, str]] = Counter()
    for hour, wanted in expected.items():
        have = evidence_counts(by_hour.get(hour, []))
        for key, n in wanted.items():
            counted[key] += n
            got[key] += min(have[key], n)
            hours[key] += 1
    return [
        Shortfall(vault, key[0], key[1], counted[key], got[key], hours[key])
        for key in sorted(counted)
        if got[key] < counted[key]
    ]
