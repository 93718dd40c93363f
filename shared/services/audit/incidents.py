"""A way forward after a break in the trail: an incident over the breaks verify reports, opened by one
person and acknowledged by another, seals a new baseline on record.

Nothing is erased. The baseline digest lists the breaks two people acknowledged (a page under its hash,
covered by the digest's MAC); verify still finds them and lists them as acknowledged, apart from the breaks
it counts. Both decisions rest on authentic records: the incident is the INCIDENT_OPENED record whose MAC
proves the service wrote it, and the acknowledgement holds only while a fresh verify finds exactly the
breaks the incident was opened over.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from shared.domain.audit import (
    DIGEST_CHAIN,
    Action,
    Actor,
    ActorType,
    AuditEvent,
    AuditQuery,
    Baseline,
    BreakEntry,
    BreakKind,
    Result,
)
from shared.domain.audit.incidents import ACKNOWLEDGEABLE, MAX_ACKNOWLEDGED, fingerprint
from shared.domain.errors import Conflict, NotFound, NotPermitted
from shared.domain.identity import same_identity
from shared.services.audit.queries import indexed_rows
from shared.services.audit.results import ChainBreak, IncidentAcknowledged, IncidentOpened, VerifyReport
from shared.services.audit.sealing import write_digest
from shared.services.audit.verification import forget_verification, verify_and_store

if TYPE_CHECKING:  # the bundle imports this package: annotations only
    from shared.services.peers import AuditPeers

logger = logging.getLogger(__name__)

#: How long an incident waits for its second person.
INCIDENT_TTL = timedelta(hours=24)
#: Breaks an incident's answer shows (all of them are acknowledged).
SHOWN_BREAKS = 100


def open_incident(
    peers: AuditPeers, *, actor: Actor, reason: str, reference: str | None, correlation_id: str | None
) -> IncidentOpened:
    """Open an incident over the breaks a fresh verify finds (an INCIDENT_OPENED record). A digest chain
    broken since the last digest is held first, as the hourly digest would, so the incident names the
    breaks as they stay. Raises NotPermitted (not a person), Conflict (nothing to acknowledge, or too
    much for one incident), AuditUnavailable, DependencyUnavailable."""
    _person(actor, "open")
    entries = _current_breaks(peers)
    if not entries:
        raise Conflict("the trail has no break to acknowledge")
    if len(entries) > MAX_ACKNOWLEDGED:
        raise Conflict(f"{len(entries)} breaks: one incident acknowledges at most {MAX_ACKNOWLEDGED}")
    incident = uuid.uuid4().hex
    details = {
        "incident": incident,
        "reason": reason,
        "reference": reference,
        "fingerprint": fingerprint(entries),
        "count": len(entries),
    }
    record = peers.trail.record(
        Action.INCIDENT_OPENED, actor=actor, correlation_id=correlation_id, details=details
    )
    logger.warning("audit incident %s opened by %s over %d break(s)", incident, actor.id, len(entries))
    opened_at = record.event.time
    return IncidentOpened(
        incident=incident,
        status="open",
        opened_by=actor.id,
        opened_at=opened_at,
        expires_at=opened_at + INCIDENT_TTL,
        reason=reason,
        reference=reference,
        count=len(entries),
        breaks=[_shown(e) for e in entries[:SHOWN_BREAKS]],
    )


def acknowledge_incident(
    peers: AuditPeers, incident: str, *, actor: Actor, correlation_id: str | None
) -> IncidentAcknowledged:
    """A second person acknowledges an open incident: when a fresh verify still finds exactly its breaks,
    a digest seals a new baseline over them (INCIDENT_ACKNOWLEDGED intent, then success or failure).
    Asked again once done, it answers the same (and writes the outcome record a crash left out).
    Raises NotFound (no such incident open: it expires after ``INCIDENT_TTL``), NotPermitted (not a
    person, or the person who opened it), Conflict (the breaks changed: open a new incident; or another
    digest was sealed meanwhile: ask again), AuditUnavailable, DependencyUnavailable."""
    _person(actor, "acknowledge")
    opened = _opened(peers, incident)
    if same_identity(opened.actor.id, actor.id):
        raise NotPermitted("the person who opened an incident cannot acknowledge it: a second person must")
    report = verify_and_store(peers)
    done = next((a.baseline for a in report.acknowledged if a.incident == incident), None)
    if done is not None:
        _ensure_outcome(peers, incident, done, actor, correlation_id)
        return _acknowledged(opened, actor, incident, done)
    entries = _acknowledgeable(report)
    if fingerprint(entries) != opened.details.get("fingerprint"):
        raise Conflict(
            f"the breaks changed since incident {incident} was opened ({len(entries)} now, "
            f"{opened.details.get('count')} then): open a new incident over them"
        )
    baseline = Baseline.of(incident, entries)
    details = {"incident": incident, "count": len(entries)}
    outcome = peers.trail.attempt(
        Action.INCIDENT_ACKNOWLEDGED,
        lambda: write_digest(peers, baseline),
        actor=actor,
        correlation_id=correlation_id,
        details=details,
    )
    _record_outcome(peers, incident, outcome.digest.seq, actor, correlation_id)
    forget_verification(peers)
    logger.warning(
        "audit incident %s acknowledged by %s: baseline digest %d", incident, actor.id, outcome.digest.seq
    )
    return _acknowledged(opened, actor, incident, outcome.digest.seq)


def _person(actor: Actor, verb: str) -> None:
    if actor.type != ActorType.USER:
        raise NotPermitted(f"only a person may {verb} an incident: two people decide, not an application")


def _current_breaks(peers: AuditPeers) -> list[BreakEntry]:
    """The breaks a fresh verify finds that an incident can acknowledge; a broken digest chain is held
    by a digest first (so its breaks read as they will stay)."""
    report = verify_and_store(peers)
    if any(b.chain == DIGEST_CHAIN and b.kind == BreakKind.ANCHOR_MISMATCH for b in report.breaks):
        write_digest(peers)
        report = verify_and_store(peers)
    return _acknowledgeable(report)


def _acknowledgeable(report: VerifyReport) -> list[BreakEntry]:
    return [(b.chain, b.kind.value, b.seq, b.detail) for b in report.breaks if b.kind in ACKNOWLEDGEABLE]


def _opened(peers: AuditPeers, incident: str) -> AuditEvent:
    """The authentic INCIDENT_OPENED record of ``incident`` within its TTL. Raises NotFound."""
    oldest = peers.clock.now() - INCIDENT_TTL
    found = [e for e in _records(peers, Action.INCIDENT_OPENED, incident, Result.SUCCESS) if e.time >= oldest]
    if not found:
        raise NotFound(f"no open incident {incident} (an incident expires {INCIDENT_TTL} after it is opened)")
    return found[0]


def _records(peers: AuditPeers, action: Action, incident: str, result: Result) -> list[AuditEvent]:
    since = peers.clock.now() - INCIDENT_TTL - timedelta(hours=1)  # acknowledged within the TTL
    rows = indexed_rows(peers.reader, peers.keys, AuditQuery(action=action, since=since))
    return [e for _, e in rows if e.result == result and e.details.get("incident") == incident]


def _record_outcome(
    peers: AuditPeers, incident: str, digest: int, actor: Actor, correlation_id: str | None
) -> None:
    details: dict[str, Any] = {"incident": incident, "baseline": digest}
    peers.trail.record(
        Action.INCIDENT_ACKNOWLEDGED, actor=actor, correlation_id=correlation_id, details=details
    )


def _ensure_outcome(
    peers: AuditPeers, incident: str, digest: int, actor: Actor, correlation_id: str | None
) -> None:
    """The success record of an acknowledgement whose baseline is sealed, when a crash left it out."""
    if not _records(peers, Action.INCIDENT_ACKNOWLEDGED, incident, Result.SUCCESS):
        _record_outcome(peers, incident, digest, actor, correlation_id)


def _shown(entry: BreakEntry) -> ChainBreak:
    chain, kind, seq, detail = entry
    return ChainBreak(chain=chain, kind=BreakKind(kind), seq=seq, detail=detail)


def _acknowledged(opened: AuditEvent, actor: Actor, incident: str, digest: int) -> IncidentAcknowledged:
    return IncidentAcknowledged(
        incident=incident,
        status="acknowledged",
        opened_by=opened.actor.id,
        acknowledged_by=actor.id,
        baseline=digest,
        count=int(opened.details.get("count", 0)),
    )
