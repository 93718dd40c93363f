"""Actor risk scores (shared.domain.risk) from the audit read path: an actor's records from the query
index's actor partitions, the ends of revocation requests and the vaults' changes outside the API from its
action partitions; never a scan of the trail. Only records whose MAC proves the service wrote them count.

``actor_risk`` answers one actor's score now (GET /api/audit/actors/{actor_id}); ``risk_crossings`` finds
the crossings of the actors active in the records a suspicious-activity scan read, which the scan reports
as ``actor_risk`` findings.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from shared.domain.audit import Action, AuditEvent, AuditQuery
from shared.domain.identity import canonical_identity
from shared.domain.risk import (
    ENDED,
    VAULT_ACTOR_PREFIX,
    Crossing,
    Hit,
    RiskRules,
    crossings,
    ended_hits,
    in_window,
    out_of_band_hits,
    own_hits,
    requester_of,
    score,
    scored,
    vault_actor,
)
from shared.domain.scan_rules import ScanRules
from shared.services.audit import AuditPage, indexed_rows, query_audit
from shared.services.results import Answer, Timestamp

if TYPE_CHECKING:  # the bundle imports this package: annotations only
    from shared.services.peers import AuditPeers

#: How many of an actor's newest records the actor view shows by default.
RECENT_RECORDS = 20


class SignalHit(Answer):
    signal: str
    record_id: str
    time: Timestamp
    weight: int
    detail: str


class ActorRisk(Answer):
    """One actor's risk now: the score over the window ending now, the signals that make it (oldest
    first), and the actor's newest records."""

    actor: str
    score: int
    threshold: int
    above_threshold: bool
    window_hours: int
    since: Timestamp
    by_signal: dict[str, int]
    signals: list[SignalHit]
    recent: AuditPage


@dataclass(frozen=True)
class _Reads:
    """What every actor's signals need beyond their own records, read once (the ends of revocation
    requests, the vaults' changes outside the API), and the terms they are scored by."""

    peers: AuditPeers
    ended: list[AuditEvent]
    out_of_band: list[AuditEvent]
    rules: RiskRules
    hours: ScanRules

    #: Records read from the index of every record (a scan's lookback): each is also counted where its
    #: actor's or its action's own partitions should hold it, so a copy deleted there hides nothing.
    seen: Sequence[AuditEvent] = ()

    @classmethod
    def of(
        cls,
        peers: AuditPeers,
        since: datetime,
        rules: RiskRules,
        hours: ScanRules,
        seen: Sequence[AuditEvent] = (),
    ) -> _Reads:
        ended = [e for action in ENDED for e in _events(peers, AuditQuery(action=action, since=since))]
        changes = _events(peers, AuditQuery(action=Action.OUT_OF_BAND_CHANGE, since=since))
        ended = _union(ended, (e for e in seen if e.action in ENDED))
        changes = _union(changes, (e for e in seen if e.action == Action.OUT_OF_BAND_CHANGE))
        return cls(peers, ended, changes, rules, hours, seen)

    def signals(self, actor: str, spellings: Iterable[str], since: datetime) -> list[Hit]:
        """Every signal of ``actor`` at or after ``since``: from their own records (each spelling of
        their id, read from ``rules.baseline`` earlier, so a new IP is judged against what came before),
        the ends of their requests, and for a vault's pseudo-actor that vault's changes outside the API."""
        rules = self.rules
        if actor.startswith(VAULT_ACTOR_PREFIX):
            vault = actor.removeprefix(VAULT_ACTOR_PREFIX)
            return out_of_band_hits(
                (e for e in self.out_of_band if e.vault == vault and e.time >= since), rules
            )
        own: dict[str, AuditEvent] = {e.id: e for e in self.seen if canonical_identity(e.actor.id) == actor}
        for spelling in spellings:
            for event in _events(self.peers, AuditQuery(actor=spelling, since=since - rules.baseline)):
                own[event.id] = event
        hits = own_hits(own.values(), rules, self.hours, since=since)
        return hits + ended_hits(actor, (e for e in self.ended if e.time >= since), rules)


def _events(peers: AuditPeers, query: AuditQuery) -> list[AuditEvent]:
    return [event for _, event in indexed_rows(peers.reader, peers.keys, query)]


def _union(events: Iterable[AuditEvent], more: Iterable[AuditEvent]) -> list[AuditEvent]:
    return list({e.id: e for e in [*events, *more]}.values())


def actor_risk(
    peers: AuditPeers, actor: str, rules: RiskRules, hours: ScanRules, *, limit: int = RECENT_RECORDS
) -> ActorRisk:
    """``actor``'s score now, its signals, and their ``limit`` newest records. Raises
    DependencyUnavailable."""
    now = peers.clock.now()
    since = now - rules.window
    reads = _Reads.of(peers, since, rules, hours)
    person = canonical_identity(actor)  # one person however the id is spelled; the index has both
    hits = in_window(reads.signals(person, {actor, person}, since), now, rules.window)
    total = score(hits)
    by_signal: dict[str, int] = {}
    for hit in hits:
        by_signal[hit.signal.value] = by_signal.get(hit.signal.value, 0) + 1
    return ActorRisk(
        actor=actor,
        score=total,
        threshold=rules.threshold,
        above_threshold=total >= rules.threshold,
        window_hours=int(rules.window / timedelta(hours=1)),
        since=since,
        by_signal=by_signal,
        signals=[_answer(hit) for hit in hits],
        recent=query_audit(peers.reader, peers.keys, AuditQuery(actor=actor, limit=limit)),
    )


def _answer(hit: Hit) -> SignalHit:
    return SignalHit(
        signal=hit.signal.value, record_id=hit.record_id, time=hit.time, weight=hit.weight,
        detail=hit.detail,
    )  # fmt: skip


def active_actors(events: Sequence[AuditEvent]) -> dict[str, set[str]]:
    """The actors whose score may have risen in ``events`` (by canonical id, with every spelling seen):
    each scored actor of a record, each requester named by a request's end, and each vault changed
    outside the API (its pseudo-actor)."""
    actors: dict[str, set[str]] = {}

    def add(actor_id: str) -> None:
        actors.setdefault(canonical_identity(actor_id), set()).add(actor_id)

    for event in events:
        if scored(event.actor.id):
            add(event.actor.id)
        requester = requester_of(event)
        if requester:
            add(requester)
        if event.action == Action.OUT_OF_BAND_CHANGE:
            add(vault_actor(event.vault))
    return actors


def risk_crossings(
    peers: AuditPeers, events: Sequence[AuditEvent], rules: RiskRules, hours: ScanRules, since: datetime
) -> list[tuple[str, Crossing]]:
    """The crossings at or after ``since`` of every actor active in ``events`` (the records a scan read
    from ``since``, from the index of every record), each with the actor (as first spelled). Each actor's
    signals are read from ``rules.window`` before ``since``, so a score already over the threshold then is
    no new crossing; ``events`` count too, so an actor whose copies were deleted from their own index
    partitions still crosses. Raises DependencyUnavailable."""
    start = since - rules.window
    reads = _Reads.of(peers, start, rules, hours, seen=events)
    found: list[tuple[str, Crossing]] = []
    for actor, spellings in sorted(active_actors(events).items()):
        shown = sorted(spellings)[0]
        hits = reads.signals(actor, spellings, start)
        found += [(shown, crossing) for crossing in crossings(hits, rules, since=since)]
    return found
