"""The audit summary from hourly aggregates (shared/domain/audit/aggregates.py): ``GET /api/audit/summary``
reads the sealed aggregate of every whole hour of its window that is covered, and only the records of the
hours that are not (the first, partial hour and those since the coverage mark) from the query index. The
digest timer keeps the aggregates (``aggregate_hours``), after the digest has put back in the index what it
was missing, so an hour is aggregated from all of its records."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.domain.audit import Action, AuditEvent, AuditQuery, Result, authentic_event, parse_time
from shared.domain.audit.aggregates import (
    AGGREGATE,
    COVERAGE,
    HOUR,
    Aggregate,
    aggregate,
    aggregate_fields,
    authentic_coverage,
    authentic_coverage_mark,
    combine,
    coverage_fields,
    hour_of,
    seal_fields,
    sealed_hours,
)
from shared.domain.audit.evidence import evidence_parts
from shared.domain.state import FUNCTION_TIMEOUT
from shared.services.audit.queries import indexed_rows
from shared.services.audit.results import AuditSummary, Failures, FailureSummary, LastRotationSummary

if TYPE_CHECKING:  # the bundle imports this package: annotations only
    from shared.services.peers import AuditPeers

logger = logging.getLogger(__name__)

#: How far back the first run of ``aggregate_hours`` reaches: the longest summary (365 days), and more.
BACKFILL = timedelta(days=400)


def aggregate_hours(peers: AuditPeers) -> int:
    """Seal the aggregate and the evidence (``shared.domain.audit.evidence``) of every complete hour not
    yet covered (an hour is complete once no record can still be appended to it: ``FUNCTION_TIMEOUT``
    after it ends), reading their records from the query index once, and move the coverage mark. Each
    aggregate carries the running count of the vault's records before its hour, so a deleted hour shows.
    Idempotent: a run that fails is done again by the next. Returns how many hours had records. Raises
    DependencyUnavailable."""
    vault, keys = peers.trail.vault, peers.keys
    complete = hour_of(peers.clock.now() - FUNCTION_TIMEOUT)
    coverage = authentic_coverage_mark(peers.reader.read_coverage(vault), keys.get)
    if coverage is not None and coverage.records is None:
        coverage = None  # a mark from before evidence and running counts were kept: aggregate them again
    start = coverage.up_to if coverage is not None else hour_of(peers.clock.now() - BACKFILL)
    if start >= complete:
        return 0
    by_hour: dict[datetime, list[AuditEvent]] = {}
    for _, event in indexed_rows(peers.reader, keys, AuditQuery(vault=vault, since=start, until=complete)):
        by_hour.setdefault(hour_of(event.time), []).append(event)
    key_id, key = keys.current()
    running = coverage.records if coverage is not None and coverage.records is not None else 0
    hours, evidence = [], []
    for hour, events in sorted(by_hour.items()):
        part = aggregate(events)
        hours.append(seal_fields(AGGREGATE, aggregate_fields(hour, part, running), key_id, key))
        evidence += evidence_parts(vault, hour, events, key_id, key)
        running += part.total
    mark = seal_fields(COVERAGE, coverage_fields(complete, running), key_id, key)
    peers.log.write_aggregates(vault, hours, mark, evidence)
    logger.info("audit aggregates: %d hour(s) with records sealed, covered up to %s", len(hours), complete)
    return len(hours)


def summarize_audit(vaults: Sequence[AuditPeers], *, secret_name: str | None, days: int) -> AuditSummary:
    """Counts by action and result, the last rotation and the failures of the last ``days`` days, of the
    records whose MAC proves the service wrote them, about each vault whose peers are given. One secret's
    are read from its chain (give one vault's peers); all of them from each vault's hourly aggregates and
    the index. Raises DependencyUnavailable, ValueError (a secret and several vaults)."""
    since = vaults[0].clock.now() - timedelta(days=days)
    if secret_name is not None:
        if len(vaults) != 1:
            raise ValueError("one secret's summary is about one vault")
        peers = vaults[0]
        query = AuditQuery(vault=peers.trail.vault, secret_name=secret_name, since=since)
        rows = peers.reader.list_records(query)
        keys = peers.keys.get
        total = aggregate(e for row in rows if (e := authentic_event(row.chain, row.record.fields, keys)))
    else:
        total = combine([_whole_trail(peers, since) for peers in vaults])
    return _answer(total, secret_name, days, since)


def _whole_trail(peers: AuditPeers, since: datetime) -> Aggregate:
    vault, keys = peers.trail.vault, peers.keys
    covered = authentic_coverage(peers.reader.read_coverage(vault), keys.get)
    first = hour_of(since) + HOUR  # the first whole hour of the window
    if covered is None or covered <= first:
        return aggregate(_events(peers, since, None))
    sealed, unsealed = sealed_hours(peers.reader.read_aggregates(vault, first, covered), keys.get)
    for hour in unsealed:  # counted from its records instead
        logger.warning("audit aggregate of %s fails its seal: its hour is read from the index", hour)
    loose = _events(peers, since, first) + _events(peers, covered, None)
    for hour in unsealed:
        loose += _events(peers, hour, hour + HOUR)
    return combine([*sealed.values(), aggregate(loose)])


def _events(peers: AuditPeers, since: datetime, until: datetime | None) -> list[AuditEvent]:
    query = AuditQuery(vault=peers.trail.vault, since=since, until=until)
    return [event for _, event in indexed_rows(peers.reader, peers.keys, query)]


def _answer(total: Aggregate, secret_name: str | None, days: int, since: datetime) -> AuditSummary:
    last = total.last_rotation
    return AuditSummary(
        secret_name=secret_name,
        days=days,
        since=since,
        total=total.total,
        by_action={
            Action(action): {Result(result): n for result, n in total.counts[action].items()}
            for action in sorted(total.counts)
        },
        last_rotation=None
        if last is None
        else LastRotationSummary(
            time=parse_time(str(last["time"])), secret_name=last["secret_name"], version=last["version"]
        ),
        failures=Failures(count=total.failures, latest=[_failure(f) for f in total.latest_failures]),
    )


def _failure(fields: Mapping[str, Any]) -> FailureSummary:
    return FailureSummary(
        time=parse_time(str(fields["time"])),
        action=Action(fields["action"]),
        secret_name=fields.get("secret_name"),
        version=fields.get("version"),
        error=fields.get("error"),
        correlation_id=fields.get("correlation_id"),
    )
