"""Actor risk: weighted signals drawn from the audit records, scored over a sliding window. Pure.

A signal is something one actor did, or that happened to what they did, that a security analyst wants to
see accumulate: a denied request, a decision refused by a rule about people, a source IP or user agent the
actor did not use in the baseline period before, a decision outside working hours, a break-glass, one of
their revocation requests later rejected or left to expire, a change made to a vault outside the API. Each
signal is one record (its id is kept), weighted by ``RiskRules.weights``.

An actor's score at a moment is the sum of the weights of their signals in the window ending then, so it
decays as the window moves. A *crossing* is a signal that lifts the score from below the threshold to it or
above; each crossing is one finding, identified by the actor and that signal's record, so every scan that
sees it names the same finding.

Key Vault's events do not say who changed a vault, so a change outside the API is scored under the
pseudo-actor ``vault:<vault>``: whoever writes that vault directly (the vault's own diagnostic logs name
them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType

from shared.domain.audit import Action, AuditEvent, Result
from shared.domain.audit.records import SYSTEM_ACTOR
from shared.domain.identity import canonical_identity
from shared.domain.scan_rules import ScanRules

ANONYMOUS = "anonymous"
#: The pseudo-actor of a vault's changes made outside the API.
VAULT_ACTOR_PREFIX = "vault:"


class Signal(StrEnum):
    DENIED = "denied"
    RULE_REFUSAL = "rule_refusal"
    NEW_IP = "new_ip"
    NEW_USER_AGENT = "new_user_agent"
    OFF_HOURS_DECISION = "off_hours_decision"
    BREAK_GLASS = "break_glass"
    REQUEST_REJECTED = "request_rejected"
    REQUEST_EXPIRED = "request_expired"
    OUT_OF_BAND_CHANGE = "out_of_band_change"


DEFAULT_WEIGHTS: Mapping[Signal, int] = MappingProxyType(
    {
        Signal.DENIED: 1,
        Signal.RULE_REFUSAL: 3,
        Signal.NEW_IP: 2,
        Signal.NEW_USER_AGENT: 1,
        Signal.OFF_HOURS_DECISION: 2,
        Signal.BREAK_GLASS: 5,
        Signal.REQUEST_REJECTED: 2,
        Signal.REQUEST_EXPIRED: 1,
        Signal.OUT_OF_BAND_CHANGE: 3,
    }
)

#: Decisions people make: the records (``success``) judged against working hours.
DECISIONS = frozenset(
    {
        Action.REVOCATION_APPROVED,
        Action.REVOCATION_REJECTED,
        Action.REVOKED,
        Action.BREAK_GLASS,
        Action.REVIEWED,
        Action.INCIDENT_OPENED,
        Action.INCIDENT_ACKNOWLEDGED,
        Action.POLICY_CHANGED,
        Action.SECRET_ONBOARDED,
        Action.SECRET_DELETED,
        Action.SECRET_RECOVERED,
        Action.ROLLED_BACK,
    }
)
#: A request's end that counts against its requester, by the record that says so.
ENDED = MappingProxyType(
    {Action.REVOCATION_REJECTED: Signal.REQUEST_REJECTED, Action.REVOCATION_EXPIRED: Signal.REQUEST_EXPIRED}
)


@dataclass(frozen=True)
class RiskRules:
    """The score's terms: the window it sums over, how far back an IP or user agent counts as known,
    the threshold of a finding, and the weight of each signal (0 turns it off). Settings fill it."""

    window: timedelta = timedelta(days=7)
    baseline: timedelta = timedelta(days=30)
    threshold: int = 10
    weights: Mapping[Signal, int] = field(default_factory=lambda: DEFAULT_WEIGHTS)

    def __post_init__(self) -> None:
        if self.window <= timedelta(0) or self.baseline <= timedelta(0) or self.threshold < 1:
            raise ValueError("the window and baseline must be positive and the threshold at least 1")
        if set(self.weights) != set(Signal) or any(w < 0 for w in self.weights.values()):
            raise ValueError("every signal needs a weight of 0 or more")


@dataclass(frozen=True)
class Hit:
    """One signal: the record it was drawn from, when, its weight and what it was (an IP, an action)."""

    signal: Signal
    record_id: str
    time: datetime
    weight: int
    detail: str


@dataclass(frozen=True)
class Crossing:
    """A hit that lifted the score to the threshold: the score then and the hits in the window."""

    hit: Hit
    score: int
    hits: tuple[Hit, ...]


def scored(actor_id: str) -> bool:
    """Whether an actor id is one a score is kept for: not the service itself, not an unverified caller."""
    return actor_id not in (SYSTEM_ACTOR.id, ANONYMOUS)


def vault_actor(vault: str) -> str:
    return f"{VAULT_ACTOR_PREFIX}{vault}"


def own_hits(
    records: Iterable[AuditEvent], rules: RiskRules, hours: ScanRules, *, since: datetime | None = None
) -> list[Hit]:
    """The signals in one actor's own records (every one of them, any order), those at or after
    ``since``. New IPs and user agents are judged against the records of the ``rules.baseline`` before
    each, so the records should reach that far before ``since``; an actor with no record in that period
    has no baseline, and nothing of theirs is new."""
    ordered = sorted(records, key=lambda e: (e.time, e.id))
    hits: list[Hit] = []
    seen: dict[tuple[Signal, str], datetime] = {}
    previous: datetime | None = None
    for event in ordered:
        judged = since is None or event.time >= since
        baseline = previous is not None and previous >= event.time - rules.baseline
        for signal, value in (
            (Signal.NEW_IP, event.actor.ip),
            (Signal.NEW_USER_AGENT, event.actor.user_agent),
        ):
            if not value:
                continue
            last = seen.get((signal, value))
            if judged and baseline and (last is None or last < event.time - rules.baseline):
                hits.append(_hit(signal, event, rules, f"{signal.value.removeprefix('new_')} {value[:80]}"))
            seen[(signal, value)] = event.time
        previous = event.time
        if judged:
            hits += _record_hits(event, rules, hours)
    return hits


def _record_hits(event: AuditEvent, rules: RiskRules, hours: ScanRules) -> list[Hit]:
    if event.action == Action.ACCESS_DENIED:
        return [_hit(Signal.DENIED, event, rules, str(event.details.get("required_role") or "denied"))]
    if event.result == Result.DENIED:
        reason = str(event.details.get("reason") or event.details.get("rule") or "refused")
        return [_hit(Signal.RULE_REFUSAL, event, rules, f"{event.action.value}: {reason[:120]}")]
    if event.result != Result.SUCCESS:
        return []
    found = []
    if event.action == Action.BREAK_GLASS:
        found.append(_hit(Signal.BREAK_GLASS, event, rules, event.secret_name or "break-glass"))
    if event.action in DECISIONS and not hours.working(event.time):
        local = event.time.astimezone(hours.zone)
        when = f"{event.action.value} at {local.strftime('%a %H:%M')} {hours.timezone}"
        found.append(_hit(Signal.OFF_HOURS_DECISION, event, rules, when))
    return found


def ended_hits(actor_id: str, records: Iterable[AuditEvent], rules: RiskRules) -> list[Hit]:
    """The actor's revocation requests that others rejected or that expired: REVOCATION_REJECTED and
    REVOCATION_EXPIRED records (``success``) whose ``requested_by`` is the actor."""
    person = canonical_identity(actor_id)
    return [
        _hit(ENDED[e.action], e, rules, f"revocation {e.details.get('revocation_id')} of {e.secret_name}")
        for e in records
        if e.action in ENDED
        and e.result == Result.SUCCESS
        and canonical_identity(str(e.details.get("requested_by") or "")) == person
    ]


def requester_of(event: AuditEvent) -> str | None:
    """Whose request a request's end is about (None when its record predates ``requested_by``)."""
    if event.action not in ENDED or event.result != Result.SUCCESS:
        return None
    requested_by = event.details.get("requested_by")
    return str(requested_by) if requested_by else None


def out_of_band_hits(records: Iterable[AuditEvent], rules: RiskRules) -> list[Hit]:
    """Changes to a vault outside the API: one per new version (its first OUT_OF_BAND_CHANGE record)."""
    first: dict[tuple[str, str | None, str | None], AuditEvent] = {}
    for event in sorted(records, key=lambda e: (e.time, e.id)):
        if event.action == Action.OUT_OF_BAND_CHANGE and event.result != Result.DENIED:
            first.setdefault((event.vault, event.secret_name, event.version), event)
    return [
        _hit(Signal.OUT_OF_BAND_CHANGE, e, rules, f"{e.secret_name} version {e.version}")
        for e in first.values()
    ]


def _hit(signal: Signal, event: AuditEvent, rules: RiskRules, detail: str) -> Hit:
    return Hit(signal, event.id, event.time, rules.weights[signal], detail)


def in_window(hits: Iterable[Hit], at: datetime, window: timedelta) -> list[Hit]:
    """The hits that count at ``at``: within the window ending then, oldest first."""
    return sorted((h for h in hits if at - window < h.time <= at), key=_order)


def score(hits: Iterable[Hit]) -> int:
    return sum(h.weight for h in hits)


def crossings(hits: Sequence[Hit], rules: RiskRules, *, since: datetime | None = None) -> list[Crossing]:
    """The hits (at or after ``since``) that lifted the score from below ``rules.threshold`` to it or
    above. The hits must reach ``rules.window`` before ``since``, or a score already above the threshold
    would look like a new crossing."""
    ordered = sorted((h for h in hits if h.weight > 0), key=_order)
    found: list[Crossing] = []
    start, total = 0, 0
    for index, hit in enumerate(ordered):
        while ordered[start].time <= hit.time - rules.window:
            total -= ordered[start].weight
            start += 1
        before, total = total, total + hit.weight
        if before < rules.threshold <= total and (since is None or hit.time >= since):
            found.append(Crossing(hit, total, tuple(ordered[start : index + 1])))
    return found


def _order(hit: Hit) -> tuple[datetime, str, str]:
    return (hit.time, hit.record_id, hit.signal.value)
