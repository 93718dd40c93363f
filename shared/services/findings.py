"""Findings: things an operator must look at, each reported exactly once.

A finding is claimed first (a state per finding id, so concurrent reporters and overlapping scans claim it
once), then audited — its cause (``details["cause"]``: the record that says what happened, e.g.
STATE_TAMPERED, ROTATION_STALLED, POLICY_CHANGED) and a SUSPICIOUS_ACTIVITY record, written in one append
to one chain, so neither exists without the other — then notified (a ``SecretLifecycle.SuspiciousActivity``
CloudEvent whose id is the finding id). Each step is marked on the finding, so a reporter that dies part-way
leaves the rest to the next suspicious-activity scan (``report``), and nothing is announced before it is
on record.

``StateFindingStore`` keeps findings as sealed states (shared/services/sealed_state.py). ``TamperAlarm``
turns every tampered state row the services meet into a finding.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from shared.domain.audit import (
    SYSTEM_ACTOR,
    Action,
    Actor,
    ActorType,
    AuditEvent,
    Result,
    clip,
    format_time,
    parse_time,
)
from shared.domain.errors import Conflict, NotFound
from shared.domain.findings import StoredFinding, review
from shared.domain.notifications import SUSPICIOUS_ACTIVITY, Notification
from shared.domain.state import StateTampered
from shared.ports import Clock, FindingStore, Publisher, StateStore
from shared.services.audit import AuditTrail

logger = logging.getLogger(__name__)

PARTITION = "finding"
#: Characters of a finding's details kept (a string property holds 32K characters).
_MAX_DETAILS = 32_000
STATE_TAMPERED_RULE = "state_tampered"


def finding_id(*parts: str) -> str:
    """A finding's id: the same facts always make the same id."""
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


# -- the store ----------------------------------------------------------------------------------------


class StateFindingStore:
    """FindingStore on a (sealed) StateStore, one state per finding id: creating it is the claim."""

    def __init__(self, states: StateStore) -> None:
        self._states = states

    def claim(self, finding: StoredFinding) -> bool:
        state = _state(replace(finding, audited=False, notified=False, status="open", reviewer=None))
        try:
            self._states.create(PARTITION, finding.id, state)
            return True
        except Conflict:
            pass
        try:
            self._states.get(PARTITION, finding.id)
            return False  # claimed before (by this or a concurrent reporter)
        except StateTampered as err:
            # A row put in its place by a storage writer (to suppress the finding): replaced by the claim.
            try:
                self._states.replace(PARTITION, finding.id, state, err.etag)
            except (Conflict, NotFound):
                return False
            return True

    def get(self, finding_id: str) -> StoredFinding | None:
        stored = self._states.get(PARTITION, finding_id)
        return None if stored is None else _finding(finding_id, stored.state)

    def pending(self) -> list[StoredFinding]:
        return [
            finding
            for key, stored in self._states.list(PARTITION).items()
            if stored.tampered is None
            and not ((finding := _finding(key, stored.state)).audited and finding.notified)
        ]

    def mark_audited(self, finding_id: str) -> None:
        self._change(finding_id, lambda f: {"audited": True})

    def mark_notified(self, finding_id: str) -> None:
        self._change(finding_id, lambda f: {"notified": True})

    def mark_reviewed(self, finding_id: str, reviewer: str, note: str | None, time: datetime) -> None:
        self._change(finding_id, lambda f: review(f, reviewer, note, time), retry=False)

    def _change(
        self, finding_id: str, changes: Callable[[StoredFinding], Mapping[str, Any]], *, retry: bool = True
    ) -> None:
        """A compare-and-swap of the finding's state; the marks re-read and retry a lost race (they only
        ever set a flag), a review does not (the loser gets Conflict). Raises NotFound, Conflict."""
        for _ in range(5 if retry else 1):
            stored = self._states.get(PARTITION, finding_id)
            if stored is None:
                raise NotFound(f"finding {finding_id} does not exist")
            current = _finding(finding_id, stored.state)
            try:
                self._states.replace(PARTITION, finding_id, {**stored.state, **changes(current)}, stored.etag)
                return
            except Conflict:
                if not retry:
                    raise
        raise Conflict(f"finding {finding_id} keeps changing")


def _state(finding: StoredFinding) -> dict[str, Any]:
    return {
        "rule": finding.rule,
        "time": format_time(finding.time),
        "secret_name": finding.secret_name,
        "vault": finding.vault,
        "details": json.dumps(dict(finding.details), sort_keys=True, default=str)[:_MAX_DETAILS],
        "audited": finding.audited,
        "notified": finding.notified,
        "status": finding.status,
        "reviewer": finding.reviewer,
    }


def _finding(finding_id: str, state: Mapping[str, Any]) -> StoredFinding:
    try:
        details = json.loads(str(state.get("details") or "{}"))
    except ValueError:
        details = {}
    try:
        time = parse_time(str(state["time"]))
    except (KeyError, ValueError):
        time = parse_time("1970-01-01T00:00:00.000000Z")
    return StoredFinding(
        id=finding_id,
        rule=str(state.get("rule", "")),
        time=time,
        secret_name=state.get("secret_name") or None,
        vault=state.get("vault") or None,
        details=details if isinstance(details, dict) else {},
        audited=bool(state.get("audited", False)),
        notified=bool(state.get("notified", False)),
        status=str(state.get("status", "open")),
        reviewer=state.get("reviewer") or None,
    )


# -- reporting ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FindingPeers:
    findings: FindingStore
    trail: AuditTrail
    publisher: Publisher
    clock: Clock
    #: The vault of the secrets this bundle reports about when it is not the designated vault (None: the
    #: designated vault's, whose findings' ids never named it, so a finding reported before several vaults
    #: is the same finding after).
    scope: str | None = None


def cause(action: Action, details: Mapping[str, Any], *, actor: Actor = SYSTEM_ACTOR) -> dict[str, Any]:
    """What a finding's cause record says (kept in the finding, so whoever audits it writes it)."""
    return {
        "action": action.value,
        "details": dict(details),
        "actor": {"id": actor.id, "type": actor.type.value},
    }


@dataclass(frozen=True)
class Cause:
    """The record that caused a finding: ``action`` by ``actor`` with ``facts``; ``shown``: the facts are
    also in the finding's own details (unless too large to be there twice); ``vault``: the vault of the
    secret it is about when not the designated vault (``FindingPeers.scope``: two vaults may hold a secret
    of one name)."""

    action: Action
    facts: Mapping[str, Any]
    actor: Actor = SYSTEM_ACTOR
    shown: bool = True
    vault: str | None = None


def caused(
    rule: str,
    identity: tuple[str, ...],
    why: Cause,
    *,
    time: datetime,
    secret_name: str | None,
    summary: str,
) -> StoredFinding:
    """A finding with its cause record (``why``): its id derived from the rule, the cause's vault and
    ``identity`` (the same facts always make the same finding: reported once)."""
    vault = why.vault
    fid = finding_id(rule, *((vault,) if vault else ()), *identity)
    shown = dict(why.facts) if why.shown else {}
    details = {"finding_id": fid, "rule": rule, "summary": clip(summary, 500), "actors": [], **shown}
    return StoredFinding(
        id=fid,
        rule=rule,
        time=time,
        secret_name=secret_name,
        vault=vault,
        details={**details, "cause": cause(why.action, why.facts, actor=why.actor)},
    )


def raise_finding(peers: FindingPeers, finding: StoredFinding, correlation_id: str | None = None) -> bool:
    """Report a finding once: claimed, audited (its cause record and SUSPICIOUS_ACTIVITY, in one append),
    notified. Returns False when it was claimed before (its reporter, or the next scan, finishes it).
    Raises AuditUnavailable (the finding stays pending: the scan reports it), DependencyUnavailable."""
    if not peers.findings.claim(finding):
        return False
    report(peers, finding, correlation_id)
    return True


def report(
    peers: FindingPeers,
    finding: StoredFinding,
    correlation_id: str | None = None,
    *,
    on_record: frozenset[str] = frozenset(),
) -> None:
    """The steps a claimed finding still lacks: its records (unless ``on_record`` names it: written by a
    reporter that died before marking them), then its notification. The records are about the finding's
    vault, whoever reports it. Raises AuditUnavailable, DependencyUnavailable."""
    trail = peers.trail.of(finding.vault)
    if not finding.audited:
        if finding.id not in on_record:
            trail.record_all(_records(trail, finding, correlation_id))
        peers.findings.mark_audited(finding.id)
    if not finding.notified:
        peers.publisher.publish([notification(finding, trail.vault, peers.clock.now())])
        peers.findings.mark_notified(finding.id)


def _records(trail: AuditTrail, finding: StoredFinding, correlation_id: str | None) -> list[AuditEvent]:
    details = {k: v for k, v in finding.details.items() if k != "cause"}
    events = [trail.event(Action.SUSPICIOUS_ACTIVITY, secret_name=finding.secret_name,
                          correlation_id=correlation_id, details=details)]  # fmt: skip
    raw = finding.details.get("cause")
    if isinstance(raw, Mapping):
        who = raw.get("actor")
        inner = raw.get("details")
        try:
            action = Action(str(raw.get("action")))
            actor = SYSTEM_ACTOR
            if isinstance(who, Mapping):
                actor = Actor(str(who.get("id", SYSTEM_ACTOR.id)), ActorType(str(who.get("type", "system"))))
        except ValueError:
            logger.warning("finding %s names no cause this service records", finding.id)
        else:
            first = trail.event(
                action,
                result=Result.FAILURE,
                actor=actor,
                secret_name=finding.secret_name,
                correlation_id=correlation_id,
                details={**(inner if isinstance(inner, Mapping) else {}), "finding_id": finding.id},
            )
            events.insert(0, first)
    return events


def notification(finding: StoredFinding, vault: str, now: datetime) -> Notification:
    return Notification(
        type=SUSPICIOUS_ACTIVITY,
        subject=finding.secret_name or finding.id,
        time=now,
        data={
            "finding_id": finding.id,
            "rule": finding.rule,
            "vault": vault,
            "summary": finding.details.get("summary"),
        },
        id=finding.id,  # the same finding always has the same event id: consumers can deduplicate
    )


def printable(text: str) -> str:
    """``text`` with everything but printable ASCII replaced by ``?``."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)


#: How many tamperings an alarm remembers having reported (each one store call fewer when met again).
_REMEMBERED = 1024


class TamperAlarm:
    """What hears of every tampered state row (``SealedStateStore``'s alarm): a STATE_TAMPERED record naming
    the row's table, partition, key and failed check (never its contents), a finding and an event, once per
    tampering (the finding id is derived from the row and what was found in it). ``peers`` is called on
    first use (the stores it uses are sealed with this alarm too). An alarm raised while one is reported
    (a tampered finding row met by the report itself) is logged, not reported again."""

    def __init__(self, peers: Callable[[], FindingPeers]) -> None:
        self._peers = peers
        self._local = threading.local()
        self._lock = threading.Lock()
        self._reported: OrderedDict[str, None] = OrderedDict()

    def __call__(self, err: StateTampered) -> None:
        identity = (err.table, err.partition, err.key, err.fingerprint)
        fid = finding_id(STATE_TAMPERED_RULE, *identity)
        with self._lock:
            if fid in self._reported:
                return
        if getattr(self._local, "busy", False):
            logger.error(
                "state %s/%s/%.140s tampered, met while reporting another", err.table, err.partition, err.key
            )
            return
        self._local.busy = True
        try:
            peers = self._peers()
            # Keys are storage's: any text up to 1 KiB. Named in printable ASCII, cut: a record's details
            # must fit their 4 KiB whatever a storage writer chose.
            key = printable(err.key)[:200]
            where = {
                "table": err.table,
                "partition": printable(err.partition)[:100],
                "key": key,
                "check": err.check,
            }
            finding = caused(
                STATE_TAMPERED_RULE, identity, Cause(Action.STATE_TAMPERED, where), time=peers.clock.now(),
                secret_name=None,
                summary=f"stored state {err.table}/{where['partition']}/{key[:140]}: {err.check}",
            )  # fmt: skip
            raise_finding(peers, finding)
            with self._lock:
                self._reported[fid] = None
                while len(self._reported) > _REMEMBERED:
                    self._reported.popitem(last=False)
        finally:
            self._local.busy = False
