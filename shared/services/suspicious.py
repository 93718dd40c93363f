"""Suspicious-activity scan: rules over recent audit records; each finding reported exactly once.

A finding becomes a SUSPICIOUS_ACTIVITY audit record and a consumer notification. Its id is derived from
the rule, the subject and the window it was seen in (or the one record that triggered it), and claimed
in the finding store before it is reported, so overlapping or concurrent scans never report it twice.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.domain.audit import MAX_DETAILS_BYTES, Action, AuditEvent, AuditQuery, Result, format_time
from shared.domain.findings import StoredFinding
from shared.domain.identity import canonical_identity
from shared.domain.risk import VAULT_ACTOR_PREFIX, Crossing, RiskRules
from shared.domain.scan_rules import ScanRules
from shared.services.audit import FINDING_ACTOR_CHARS, FINDING_MAX_ACTORS, indexed_rows
from shared.services.findings import FindingPeers
from shared.services.findings import finding_id as _finding_id
from shared.services.findings import report as report_finding
from shared.services.risk import risk_crossings

if TYPE_CHECKING:  # the bundle imports this package: annotations only
    from shared.services.peers import AuditPeers

logger = logging.getLogger(__name__)
#: What an actor risk finding keeps of its subject, and of each signal's detail.
SUBJECT_CHARS = 128
SIGNAL_DETAIL_CHARS = 100


@dataclass(frozen=True)
class Finding:
    id: str
    rule: str
    subject: str
    summary: str
    count: int
    first_seen: datetime
    last_seen: datetime
    secret_name: str | None = None
    record_ids: tuple[str, ...] = ()
    #: Ids of the actors whose records make the finding, in order of appearance: they may not review it.
    actors: tuple[str, ...] = ()
    #: The vault of ``secret_name`` (its records' vault).
    vault: str | None = None
    #: What the rule adds to the finding's details (an actor risk finding: its signals).
    extra: tuple[tuple[str, Any], ...] = ()

    def details(self) -> dict[str, Any]:
        return dict(self.extra) | {
            "finding_id": self.id,
            "rule": self.rule,
            "subject": self.subject,
            "summary": self.summary,
            "count": self.count,
            "first_seen": format_time(self.first_seen),
            "last_seen": format_time(self.last_seen),
            "record_ids": list(self.record_ids[:20]),
            "actors": [actor[:FINDING_ACTOR_CHARS] for actor in self.actors[:FINDING_MAX_ACTORS]],
        }


def _actors(events: Iterable[AuditEvent]) -> tuple[str, ...]:
    """The distinct actors of the events (one canonical id each), in order of appearance."""
    return tuple(dict.fromkeys(canonical_identity(e.actor.id) for e in events))


def _person(event: AuditEvent) -> str:
    """The actor of an event as the per-actor rules count it: one person, however their id is spelled."""
    return canonical_identity(event.actor.id)


def _outcomes(events: Iterable[AuditEvent], action: Action) -> list[AuditEvent]:
    """The records of ``action`` that say what happened (a success), never the intent before it: one
    request, one break-glass, is one record to count."""
    return [e for e in events if e.action == action and e.result == Result.SUCCESS]


def _bucket(moment: datetime, width: timedelta) -> str:
    seconds = int(width.total_seconds())
    epoch = int(moment.timestamp())
    return str(epoch - epoch % seconds)


@dataclass(frozen=True)
class _Burst:
    """A burst rule: ``threshold`` events with the same ``key`` within ``window``, and how its finding
    reads (``describe(subject, count)``)."""

    rule: str
    key: Callable[[AuditEvent], str | None]
    threshold: int
    window: timedelta
    describe: Callable[[str, int], str]


def _bursts(burst_rule: _Burst, events: Iterable[AuditEvent], since: datetime | None) -> list[Finding]:
    """Sliding-window bursts: ``threshold`` events with the same key within ``window``. One finding per
    key per window-sized bucket of the burst's first event, so a long burst is reported once per window.

    A burst whose first event lies within ``window`` of the scan's lookback start is not judged: its
    earlier events may have aged out of the lookback, and judging what is left would give the burst a
    new first event — and a new finding id — for a burst an earlier scan already reported."""
    rule, key, threshold, window = burst_rule.rule, burst_rule.key, burst_rule.threshold, burst_rule.window
    describe = burst_rule.describe
    groups: dict[str, list[AuditEvent]] = defaultdict(list)
    for event in events:
        subject = key(event)
        if subject:
            groups[subject].append(event)
    findings: list[Finding] = []
    for subject, group in groups.items():
        group.sort(key=lambda e: e.time)
        reported: set[str] = set()
        start = 0
        for end, event in enumerate(group):
            while event.time - group[start].time > window:
                start += 1
            count = end - start + 1
            if since is not None and group[start].time < since + window:
                continue
            if count >= threshold:
                bucket = _bucket(group[start].time, window)
                if bucket in reported:
                    continue
                reported.add(bucket)
                burst = group[start : end + 1]
                findings.append(
                    Finding(
                        id=_finding_id(rule, subject, bucket),
                        rule=rule,
                        subject=subject,
                        summary=describe(subject, count),
                        count=count,
                        first_seen=burst[0].time,
                        last_seen=burst[-1].time,
                        secret_name=burst[0].secret_name if rule == "repeated_rotation_failures" else None,
                        record_ids=tuple(e.id for e in burst),
                        actors=_actors(burst),
                        vault=burst[0].vault if rule == "repeated_rotation_failures" else None,
                    )
                )
    return findings


def find_suspicious(
    events: Sequence[AuditEvent], rules: ScanRules, since: datetime | None = None, *, home: str | None = None
) -> list[Finding]:
    """Apply every rule to the events (those at or after ``since``, the lookback start), of every vault:
    one secret is a vault and a name (``home``, the designated vault, names its secrets by name alone, as
    before several vaults, so its findings keep their ids). Pure."""

    def secret_of(event: AuditEvent) -> str | None:
        if event.secret_name is None or event.vault == home:
            return event.secret_name
        return f"{event.vault}/{event.secret_name}"

    events = [e for e in events if e.action != Action.SUSPICIOUS_ACTIVITY]
    denied = [e for e in events if e.action == Action.ACCESS_DENIED]
    window, failures, requests = rules.window, rules.rotation_failure_window, rules.revocation_window
    bursts: list[tuple[_Burst, Sequence[AuditEvent]]] = [
        (_Burst("access_denied_burst_actor", lambda e: _person(e) if e.actor.id != "anonymous" else None,
                rules.denied_per_actor, window, lambda s, n: f"{n} denied requests by {s} within {window}"),
         denied),
        (_Burst("access_denied_burst_ip", lambda e: e.actor.ip, rules.denied_per_ip, window,
                lambda s, n: f"{n} denied requests from {s} within {window}"),
         denied),
        (_Burst("repeated_rotation_failures", secret_of, rules.rotation_failures, failures,
                lambda s, n: f"{n} failed rotations of {s} within {failures}"),
         [e for e in events if e.action == Action.ROTATION_FAILED]),
        (_Burst("revocation_request_burst", _person, rules.revocation_requests, requests,
                lambda s, n: f"{n} revocation requests by {s} within {requests}"),
         _outcomes(events, Action.REVOCATION_REQUESTED)),
    ]  # fmt: skip
    findings = [finding for rule, found in bursts for finding in _bursts(rule, found, since)]
    for event in _outcomes(events, Action.BREAK_GLASS):
        findings.append(_single("break_glass", event, f"break-glass by {event.actor.id}"))
    for event in events:
        if event.action == Action.ROTATION_FAILED and event.details.get("error_class") == "TargetNotBound":
            # A rotation-target changed by tag alone: someone tried to make a URL a consumer of the value.
            summary = f"rotation of {event.secret_name} refused: its target is not bound to it"
            findings.append(_single("target_not_bound", event, summary, actors=()))
    for event in _outcomes(events, Action.REVOCATION_APPROVED):
        if not rules.working(event.time):
            local = event.time.astimezone(rules.zone)
            summary = f"approval by {event.actor.id} at {local.strftime('%a %H:%M')} {rules.timezone}"
            findings.append(_single("approval_outside_working_hours", event, summary))
    return findings


def risk_finding(actor: str, crossing: Crossing, rules: RiskRules) -> Finding:
    """The ``actor_risk`` finding of one crossing: named by the actor and the record that crossed, so
    every scan that sees the crossing names the same finding; its details list the signals (each with
    its record, the newest first) in the window then, as many as fit in a record's details. A vault's
    pseudo-actor is nobody: anyone may review its finding."""
    hits = crossing.hits
    counts = Counter(hit.signal.value for hit in hits)
    hours = int(rules.window.total_seconds() // 3600)
    person = canonical_identity(actor)
    finding = Finding(
        id=_finding_id("actor_risk", person, crossing.hit.record_id, crossing.hit.signal.value),
        rule="actor_risk",
        subject=actor[:SUBJECT_CHARS],
        summary=f"risk score of {actor[:FINDING_ACTOR_CHARS]} reached {crossing.score} (threshold "
        f"{rules.threshold}, {hours} h): "
        + ", ".join(f"{n} {signal}" for signal, n in sorted(counts.items())),
        count=crossing.score,
        first_seen=hits[0].time,
        last_seen=crossing.hit.time,
        record_ids=tuple(dict.fromkeys(hit.record_id for hit in reversed(hits))),
        actors=() if actor.startswith(VAULT_ACTOR_PREFIX) else (person,),
        extra=(("score", crossing.score), ("threshold", rules.threshold), ("signals", [])),
    )
    signals: list[dict[str, Any]] = []
    for hit in reversed(hits):  # the newest first, while the record's details stay within their bound
        signal = {"signal": hit.signal.value, "record_id": hit.record_id, "weight": hit.weight,
                  "detail": hit.detail[:SIGNAL_DETAIL_CHARS]}  # fmt: skip
        extra = (*finding.extra[:2], ("signals", [*signals, signal]))
        if _encoded_size(replace(finding, extra=extra).details()) > MAX_DETAILS_BYTES:
            break
        signals.append(signal)
    return replace(finding, extra=(*finding.extra[:2], ("signals", signals)))


def _encoded_size(details: dict[str, Any]) -> int:
    """The size of details as the audit record bounds it (shared.domain.audit: MAX_DETAILS_BYTES)."""
    return len(json.dumps(details, sort_keys=True, separators=(",", ":"), default=str).encode())


def _single(rule: str, event: AuditEvent, summary: str, *, actors: tuple[str, ...] | None = None) -> Finding:
    """A finding about one record; ``actors``: who it is about (default: the record's actor, also its
    subject; with ``actors`` given, the subject is the record's secret)."""
    return Finding(
        id=_finding_id(rule, event.id),
        rule=rule,
        subject=event.actor.id if actors is None else (event.secret_name or event.actor.id),
        summary=summary,
        count=1,
        first_seen=event.time,
        last_seen=event.time,
        secret_name=event.secret_name,
        record_ids=(event.id,),
        actors=(canonical_identity(event.actor.id),) if actors is None else actors,
        vault=event.vault,
    )


@dataclass
class ScanReport:
    scanned: int = 0
    findings: list[str] = field(default_factory=list)
    already_reported: int = 0
    audited: int = 0
    notified: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def scan(
    peers: AuditPeers, rules: ScanRules, *, risk: RiskRules | None = None, correlation_id: str | None = None
) -> ScanReport:
    """Scan the lookback period and report each new finding exactly once: the rules' (``rules``) and the
    actor risk score's crossings (``risk``, default RiskRules(): the actors active in the lookback, each
    read from their own index partitions). Only records whose MAC proves the service wrote them count
    (``keys``): a row a storage writer put in the table makes no finding.

    A finding is claimed first (atomic, by id), then its SUSPICIOUS_ACTIVITY record is written, then its
    notification is sent; each step is marked, so a scan that is interrupted or meets a failure leaves the
    rest to the next scan, and nothing is announced before it is on record. Raises DependencyUnavailable
    when the audit or the finding store cannot be read at all.
    """
    reader, trail, findings, publisher, clock = (
        peers.reader,
        peers.trail,
        peers.findings,
        peers.publisher,
        peers.clock,
    )
    keys = peers.keys
    now = clock.now()
    since = now - rules.lookback
    report = ScanReport()
    # The window it judges, from the query index: the scan reads what was recorded since, not the trail —
    # about every vault (an actor's denials or requests count whichever vault they were about).
    events = [event for _, event in indexed_rows(reader, keys, AuditQuery(since=since))]
    report.scanned = len(events)
    on_record = frozenset(
        str(e.details.get("finding_id")) for e in events if e.action == Action.SUSPICIOUS_ACTIVITY
    )
    risky = risk_crossings(peers, events, risk or RiskRules(), rules, since)
    found = find_suspicious(events, rules, since, home=trail.vault)
    found += [risk_finding(actor, crossing, risk or RiskRules()) for actor, crossing in risky]
    for finding in found:
        stored = StoredFinding(
            id=finding.id,
            rule=finding.rule,
            time=now,
            secret_name=finding.secret_name,
            vault=None if finding.vault == trail.vault else finding.vault,
            details=finding.details(),
        )
        if findings.claim(stored):
            report.findings.append(finding.id)
        else:
            report.already_reported += 1
    reporting = FindingPeers(findings, trail, publisher, clock)
    for pending in findings.pending():
        try:
            # A record from an earlier, interrupted report counts: never write the same finding twice.
            report_finding(reporting, pending, correlation_id, on_record=on_record)
            report.audited += not pending.audited
            report.notified += not pending.notified
        except Exception as err:  # one finding that cannot be reported never stops the others
            logger.exception("finding %s could not be reported", pending.id)
            report.failures.append(f"finding {pending.id} ({pending.rule}): {type(err).__name__}")
    return report
