"""The compliance evidence report of a period: what is managed and how, what was late, every rotation,
every revocation with its approvals and review, the denials by actor, and the trail's integrity.

Where each section comes from (never a scan of the audit table, never a secret value):

- the managed secrets: one listing of each vault's properties (their policy tags, ``created``, ``exp``);
- rotations, stalls, revocations, denials and integrity events: each vault's sealed hourly evidence of the
  period's whole hours, checked against the hour's sealed aggregate, and the query index for the rest
  (``shared.services.audit.evidence``); revocation decisions until now, so a request of the period shows
  how it ended. A row the service did not write is left out;
- integrity: the last full verification, stored sealed by the daily timer, and the anchored digest; and
  where the report may lack records: hours whose evidence was not usable and whose index copies fall short
  of the aggregates' counts, and hours deleted between two aggregates.

Lateness is judged against each secret's policy now (a policy changed in the period is judged by its new
interval) and the stall allowance (``ROTATION_STALL_MINUTES``): a gap between two rotations in the period
longer than the interval and the allowance, or a secret still due past them at the period's end. Before a
secret's first rotation in the period, only its ROTATION_STALLED records say it was late.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from shared.domain.audit import Action, AuditEvent, Result
from shared.domain.audit.evidence import INTEGRITY_ACTIONS, REVOCATION_DECISIONS
from shared.domain.policy import PolicyError, RotationPolicy
from shared.domain.targets import is_reserved
from shared.services.audit.evidence import EvidenceRead, read_evidence
from shared.services.audit.verification import stored_verification
from shared.services.compliance.results import (
    Anchor,
    ComplianceReport,
    Decided,
    DeletedHours,
    Denials,
    IndexGap,
    Integrity,
    IntegrityEvent,
    Late,
    ManagedSecret,
    Period,
    RevocationEntry,
    RotationEntry,
    Summary,
)

if TYPE_CHECKING:  # the bundles import the services: annotations only
    from shared.services.peers import AuditPeers, Peers

#: The longest period one report covers.
MAX_PERIOD = timedelta(days=366)


def _hours(span: timedelta) -> float:
    return round(span.total_seconds() / 3600, 2)


class _Trail:
    """The records the report reads, of the period (decisions: until now), from each vault's sealed hourly
    evidence and the query index for the rest (``read_evidence``): authentic ones only."""

    def __init__(
        self, audit: AuditPeers, vaults: Sequence[Peers], start: datetime, end: datetime, now: datetime
    ) -> None:
        self.start, self.end, self.now = start, end, now
        self.reads = [
            read_evidence(audit.reader, audit.keys, peers.trail.vault, start, max(end, now))
            for peers in vaults
        ]
        events = sorted((e for read in self.reads for e in read.events), key=lambda e: (e.time, e.id))
        self.by_action: dict[Action, list[AuditEvent]] = defaultdict(list)
        for event in events:
            self.by_action[event.action].append(event)

    def of(self, action: Action, *, until_now: bool = False) -> list[AuditEvent]:
        """The records of ``action`` in the period (until now), oldest first."""
        until = self.now if until_now else self.end
        return [e for e in self.by_action[action] if e.time < until]


def compliance_report(
    audit: AuditPeers, vaults: Sequence[Peers], *, start: datetime, end: datetime, stall_after: timedelta
) -> ComplianceReport:
    """The report of [``start``, ``end``) about ``vaults`` (each vault's peers; the audit peers are the
    designated vault's: the trail, the index and the anchor are shared). Raises ValueError (a period
    that is empty, longer than MAX_PERIOD or in the future), DependencyUnavailable."""
    now = audit.clock.now()
    if not start < end or end - start > MAX_PERIOD or start > now:
        raise ValueError(
            f"the period must start before it ends, at most {MAX_PERIOD.days} days, not after now"
        )
    trail = _Trail(audit, vaults, start, end, now)
    rotated, failed = trail.of(Action.ROTATED), trail.of(Action.ROTATION_FAILED)
    rotations = _rotations(rotated, failed)
    secrets = [
        secret
        for peers in vaults
        for secret in _managed(peers, trail, rotated, failed, trail.of(Action.ROTATION_STALLED), stall_after)
    ]
    # A request opens with REVOCATION_REQUESTED, or with BREAK_GLASS (executed at once, reviewed later).
    requested = trail.of(Action.REVOCATION_REQUESTED) + trail.of(Action.BREAK_GLASS)
    decisions = [e for action in REVOCATION_DECISIONS for e in trail.of(action, until_now=True)]
    revocations = _revocations(requested, decisions)
    denials = _denials(trail.of(Action.ACCESS_DENIED), [e for e in decisions if e.time < end])
    integrity = _integrity(audit, [e for action in INTEGRITY_ACTIONS for e in trail.of(action)])
    integrity = integrity.model_copy(update=_gaps(trail.reads))
    summary = Summary(
        managed=len(secrets),
        overdue_now=sum(s.overdue_hours is not None for s in secrets),
        late_in_period=sum(bool(s.late) or s.stalls > 0 for s in secrets),
        without_expiry=sum(s.without_expiry for s in secrets),
        without_owner=sum(s.without_owner for s in secrets),
        rotations=sum(r.outcome == "rotated" for r in rotations),
        failed_attempts=sum(r.outcome == "failed_attempt" for r in rotations),
        gave_up=sum(r.outcome == "gave_up" for r in rotations),
        revocations=len(revocations),
        executed=sum(r.outcome == "executed" for r in revocations),
        break_glass=sum(r.break_glass for r in revocations),
        break_glass_unreviewed=sum(r.review_missing for r in revocations),
        denials=sum(d.denied for d in denials),
        integrity=_integrity_status(integrity),
    )
    period = Period(start=start, end=end, generated_at=now, vaults=[p.trail.vault for p in vaults])
    return ComplianceReport(
        period=period, summary=summary, secrets=secrets, rotations=rotations, revocations=revocations,
        denials=denials, integrity=integrity,
    )  # fmt: skip


def _rotations(rotated: Iterable[AuditEvent], failed: Iterable[AuditEvent]) -> list[RotationEntry]:
    """Every outcome of a rotation: a new version (ROTATED success), an attempt that failed (retried by
    the queue) and a request given up (the poison queue)."""
    entries = []
    for event in [*rotated, *failed]:
        if event.result == Result.INTENT:
            continue
        outcome: Literal["rotated", "failed_attempt", "gave_up"]
        if event.action == Action.ROTATED:
            outcome = "rotated" if event.result == Result.SUCCESS else "failed_attempt"
        else:
            outcome = "gave_up" if "gave_up_after" in event.details else "failed_attempt"
        entries.append(
            RotationEntry(
                time=event.time,
                vault=event.vault,
                secret_name=event.secret_name,
                outcome=outcome,
                version=event.version if outcome == "rotated" else None,
                previous_version=_text(event.details.get("previous_version")),
                rotator=_text(event.details.get("rotator")),
                rotation_id=_text(event.details.get("rotation_id")),
                error=(event.error or _text(event.details.get("error_class")) or None),
                record_id=event.id,
            )
        )
    return sorted(entries, key=lambda e: (e.time, e.record_id))


def _text(value: Any) -> str | None:
    return str(value)[:256] if value not in (None, "") else None


def _managed(
    peers: Peers,
    trail: _Trail,
    rotated: list[AuditEvent],
    failed: list[AuditEvent],
    stalled: list[AuditEvent],
    stall_after: timedelta,
) -> list[ManagedSecret]:
    """The vault's managed secrets now (one listing of properties), each with what the period's records
    say of it."""
    vault, found = peers.trail.vault, []
    done: dict[str, list[datetime]] = defaultdict(list)
    attempts: dict[str, int] = defaultdict(int)
    stalls: dict[str, int] = defaultdict(int)
    for event in rotated:
        if event.vault == vault and event.secret_name and event.result == Result.SUCCESS:
            done[event.secret_name].append(event.time)
        elif event.vault == vault and event.secret_name and event.result == Result.FAILURE:
            attempts[event.secret_name] += 1
    for event in failed:
        if event.vault == vault and event.secret_name:
            attempts[event.secret_name] += 1
    for event in stalled:
        if event.vault == vault and event.secret_name:
            stalls[event.secret_name] += 1
    for item in peers.store.list_properties():
        if is_reserved(item.name, peers.reserved) or item.managed or not RotationPolicy.is_managed(item.tags):
            continue
        try:
            policy: RotationPolicy | None = RotationPolicy.from_tags(
                item.tags, name=item.name, reserved=peers.reserved
            )
        except PolicyError:
            policy = None
        due = policy.next_rotation(item.created, item.expires) if policy and item.enabled else None
        times = sorted(done[item.name])
        late = _late(policy, times, due, trail, stall_after) if policy else []
        overdue = trail.now - due if due is not None and due <= trail.now else None
        found.append(
            ManagedSecret(
                name=item.name,
                vault=vault,
                kind=policy.kind.value if policy else None,
                rotator=policy.rotator.value if policy else None,
                interval_days=policy.interval.days if policy else None,
                owner=policy.owner if policy else item.tags.get("owner"),
                expires=item.expires,
                next_due=due,
                overdue_hours=_hours(overdue) if overdue is not None else None,
                without_expiry=item.expires is None,
                without_owner=not (policy and policy.owner),
                rotations=len(times),
                failed_attempts=attempts[item.name],
                stalls=stalls[item.name],
                late=late,
            )
        )
    return sorted(found, key=lambda s: s.name.lower())


def _late(
    policy: RotationPolicy, times: list[datetime], due: datetime | None, trail: _Trail, stall_after: timedelta
) -> list[Late]:
    """The gaps between rotations in the period longer than the interval and the allowance, and a secret
    still due past them at the period's end (or now)."""
    allowance = policy.interval + stall_after
    late = [
        Late(due=a + policy.interval, rotated=b, late_hours=_hours(b - a - policy.interval))
        for a, b in itertools.pairwise(times)
        if b - a > allowance
    ]
    cut = min(trail.end, trail.now)
    if due is not None and due + stall_after < cut and (not times or times[-1] < due):
        late.append(
            Late(due=max(due, trail.start), rotated=None, late_hours=_hours(cut - max(due, trail.start)))
        )
    return late


def _revocations(requested: Iterable[AuditEvent], decisions: Iterable[AuditEvent]) -> list[RevocationEntry]:
    """Each request of the period (its REVOCATION_REQUESTED or BREAK_GLASS success), with every later
    decision about it (as of now), by its ``revocation_id``."""
    by_id: dict[str, list[AuditEvent]] = defaultdict(list)
    for event in decisions:
        rid = event.details.get("revocation_id")
        if rid and event.result in (Result.SUCCESS, Result.FAILURE):
            by_id[str(rid)].append(event)
    entries = []
    for request in requested:
        rid = request.details.get("revocation_id")
        if request.result != Result.SUCCESS or not rid:
            continue
        entries.append(_revocation(request, str(rid), sorted(by_id[str(rid)], key=lambda e: (e.time, e.id))))
    return entries


def _revocation(request: AuditEvent, rid: str, later: list[AuditEvent]) -> RevocationEntry:
    details = request.details
    ok = [e for e in later if e.result == Result.SUCCESS]
    approvals = [Decided(by=e.actor.id, at=e.time) for e in ok if e.action == Action.REVOCATION_APPROVED]
    glass = request.action == Action.BREAK_GLASS or bool(details.get("break_glass"))
    ends = {
        Action.REVOKED: "executed", Action.REVOCATION_REJECTED: "rejected",
        Action.REVOCATION_CANCELLED: "cancelled", Action.REVOCATION_EXPIRED: "expired",
    }  # fmt: skip
    final = next((e for e in ok if e.action in ends), None)
    outcome: Any = ends[final.action] if final else "pending"
    if final is None and any(e.action == Action.REVOKED for e in later):
        outcome = "execute_failed"
    executed = final.time if final is not None and outcome == "executed" else None
    reviewed = next((e for e in ok if e.action == Action.REVIEWED), None)
    return RevocationEntry(
        id=rid, vault=request.vault, secret_name=request.secret_name, reason=_text(details.get("reason")),
        severity=_text(details.get("severity")), requested_by=request.actor.id, requested_at=request.time,
        required_approvals=need if isinstance(need := details.get("required_approvals"), int) else None,
        approvals=approvals, outcome=outcome,
        decided=None if final is None or outcome == "expired" else Decided(by=final.actor.id, at=final.time),
        hours_to_approval=_hours(approvals[-1].at - request.time) if approvals else None,
        hours_to_execution=_hours(executed - request.time) if executed else None,
        break_glass=glass, review=Decided(by=reviewed.actor.id, at=reviewed.time) if reviewed else None,
        review_missing=glass and outcome == "executed" and reviewed is None,
        record_ids=[request.id, *(e.id for e in ok)][:50],
    )  # fmt: skip


def _denials(denied: Iterable[AuditEvent], decisions: Iterable[AuditEvent]) -> list[Denials]:
    """ACCESS_DENIED and rule refusals (a decision's ``denied`` record) in the period, by actor."""
    counts: dict[str, list[Any]] = {}
    for event, refused in [
        *((e, False) for e in denied),
        *((e, True) for e in decisions if e.result == Result.DENIED),
    ]:
        entry = counts.setdefault(event.actor.id, [0, 0, event.time, event.time])
        entry[1 if refused else 0] += 1
        entry[2], entry[3] = min(entry[2], event.time), max(entry[3], event.time)
    return sorted(
        (
            Denials(actor=a, denied=d, refused_by_rule=r, first=f, last=la)
            for a, (d, r, f, la) in counts.items()
        ),
        key=lambda d: (-(d.denied + d.refused_by_rule), d.actor),
    )


def _integrity(peers: AuditPeers, events: Iterable[AuditEvent]) -> Integrity:
    anchored = peers.anchor.read()
    return Integrity(
        index_gaps=[],
        deleted_hours=[],
        unsealed_hours=0,
        sealed_hours=0,
        verification=stored_verification(peers),
        anchor=Anchor(seq=anchored.seq, time=anchored.time) if anchored else None,
        events=[
            IntegrityEvent(
                time=e.time,
                action=e.action.value,
                vault=e.vault,
                secret_name=e.secret_name,
                actor=e.actor.id,
                record_id=e.id,
            )
            for e in sorted(events, key=lambda e: (e.time, e.id))
            if e.result != Result.INTENT
        ],
    )


def _gaps(reads: Iterable[EvidenceRead]) -> dict[str, Any]:
    """Where the report may lack records: hours whose evidence was not used and whose index copies fall
    short of what the sealed aggregates count, and hours deleted between two aggregates."""
    reads = list(reads)
    return {
        "index_gaps": [
            IndexGap(vault=g.vault, action=g.action, result=g.result, counted=g.counted, read=g.read,
                     hours=g.hours)
            for read in reads
            for g in read.shortfalls
        ],
        "deleted_hours": [
            DeletedHours(vault=d.vault, after=d.after, before=d.before, records=d.records)
            for read in reads
            for d in read.deleted
        ],
        "unsealed_hours": sum(read.unsealed_hours for read in reads),
        "sealed_hours": sum(read.sealed_hours for read in reads),
    }  # fmt: skip


def _integrity_status(integrity: Integrity) -> Any:
    if integrity.verification is None:
        return "not verified"
    if not integrity.verification.ok:
        return "broken"
    return "incomplete" if integrity.index_gaps or integrity.deleted_hours else "ok"
