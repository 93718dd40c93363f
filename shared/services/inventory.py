"""The inventory: the service knows what it manages. Policies live in tags anyone with the right to edit
tags can change, so the service keeps its own, authenticated copy — one sealed row per managed secret with
its policy tags (partition ``inventory``) — and every sweep compares the vault's listing with it:

- a secret that entered management by tag alone is recorded as onboarded by an unknown actor
  (SECRET_ONBOARDED, actor ``unknown``), then treated by its policy;
- a secret whose policy changed outside the API, or that left management (its ``managed-by`` tag removed,
  or the secret deleted out of band), is a POLICY_CHANGED record by an unknown actor with the old and new
  tag values (tags are not secret), a ``policy_changed_outside_api`` finding and its event, once per
  change.

A change the API made is borne out by its own authentic record (POLICY_CHANGED, SECRET_ONBOARDED,
SECRET_RECOVERED, SECRET_DELETED by a caller) and is taken in silently, so the API never writes the
inventory itself. The first sweep takes the inventory (one record); a wiped inventory (its ``~taken`` row
gone while the trail says it was taken) is reported as tampering and taken again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.domain.audit import (
    SERVICE_CHAIN_SECRET,
    UNKNOWN_ACTOR,
    Action,
    ActorType,
    AuditQuery,
    Result,
    format_time,
    parse_time,
)
from shared.domain.errors import Conflict, DomainError, NotFound
from shared.domain.policy import POLICY_TAGS, PolicyError, RotationPolicy
from shared.domain.secrets import SecretItem
from shared.domain.state import StateWrite, Versioned
from shared.domain.targets import is_reserved
from shared.ports import AuditReader, MacKeyRing, StateStore
from shared.services.audit import authentic_events
from shared.services.findings import Cause, FindingPeers, caused, raise_finding

logger = logging.getLogger(__name__)

PARTITION = "inventory"
#: The row saying the inventory was taken (sorts after every secret name).
TAKEN = "~taken"
RULE = "policy_changed_outside_api"
#: Characters of each tag value a record keeps (a URL is at most 256; details are at most 4 KiB).
_VALUE_CHARS = 120
#: Records are timed by the trail's clock, the rows by the sweep's: a margin for clock steps.
_SKEW = timedelta(minutes=5)
_MAX_BATCH = 100


def managed_policy(item: SecretItem, reserved: Collection[str]) -> dict[str, str] | None:
    """The policy tags of a managed secret in one canonical form (a rotation rewrites them so), or None
    when the service does not manage it (no ``managed-by``, the service's own, a certificate's)."""
    if not RotationPolicy.is_managed(item.tags) or item.managed or is_reserved(item.name, reserved):
        return None
    try:
        return RotationPolicy.from_tags(item.tags).to_tags()
    except PolicyError:  # an invalid policy is a policy too: its tags as they are
        return {k: v for k, v in sorted(item.tags.items()) if k in POLICY_TAGS}


@dataclass(frozen=True)
class Change:
    """A difference between the vault and the inventory. ``before`` None: not managed per the inventory
    (entered; ``left`` holds the policy it had when it left, for a secret that comes back); ``after``
    None: not managed any more (``gone``: not even listed). ``since``: when the inventory last changed for
    it (or was taken): what bears the change out is on record after that."""

    name: str
    before: Mapping[str, str] | None
    after: Mapping[str, str] | None
    since: datetime | None = None
    gone: bool = False
    left: Mapping[str, str] | None = None


@dataclass
class Inventory:
    """One sweep's reconciliation: ``observe`` every listed secret, then ``reconcile``."""

    rows: dict[str, Versioned]
    reserved: Collection[str]
    seen: set[str] = field(default_factory=set)
    changes: list[Change] = field(default_factory=list)
    policies: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)

    @classmethod
    def load(cls, states: StateStore, reserved: Collection[str]) -> Inventory:
        """The inventory as stored (a tampered row counts as absent: reported by the store)."""
        return cls(states.list(PARTITION), reserved)

    @property
    def taken(self) -> bool:
        stored = self.rows.get(TAKEN)
        return stored is not None and stored.tampered is None

    @property
    def taken_at(self) -> datetime | None:
        return _time(self.rows.get(TAKEN))

    @property
    def missing(self) -> int:
        """How many rows the ``~taken`` row counts that are not there (deleted by a storage writer: a seal
        cannot show a row that is gone, the count does)."""
        stored = self.rows.get(TAKEN)
        counted = stored.state.get("rows") if stored is not None and stored.tampered is None else None
        return max(0, counted - (len(self.rows) - 1)) if isinstance(counted, int) else 0

    def observe(self, item: SecretItem) -> None:
        key = item.name.lower()
        if key in self.seen or key == TAKEN:
            return
        self.seen.add(key)
        after = managed_policy(item, self.reserved)
        if after is not None and not self.taken:  # the first sweep takes them all; later ones the changes
            self.policies[key] = (item.name, after)
        stored = self.rows.get(key)
        before, left = _policies(stored)
        if after != before:
            since = _time(stored) or self.taken_at
            self.changes.append(Change(item.name, before, after, since, left=left))

    def gone(self) -> list[Change]:
        """Secrets in the inventory the listing did not show (deleted)."""
        found = []
        for key, stored in self.rows.items():
            if key == TAKEN or key in self.seen:
                continue
            before, _ = _policies(stored)
            if before is not None:
                name = str(stored.state.get("name") or key)
                found.append(Change(name, before, None, _time(stored), gone=True))
        return found


def _policies(stored: Versioned | None) -> tuple[dict[str, str] | None, dict[str, str] | None]:
    """(the policy of a managed secret's row, the policy a row kept when its secret left management)."""
    if stored is None or stored.tampered is not None:
        return None, None
    try:
        policy = json.loads(str(stored.state.get("policy") or "null"))
    except ValueError:
        return None, None
    if not isinstance(policy, dict):
        return None, None
    tags = {str(k): str(v) for k, v in policy.items()}
    return (None, tags) if stored.state.get("left") is True else (tags, None)


def _time(stored: Versioned | None) -> datetime | None:
    if stored is None or stored.tampered is not None:
        return None
    try:
        return parse_time(str(stored.state["at"]))
    except (KeyError, ValueError):
        return None


@dataclass(frozen=True)
class InventoryPeers:
    states: StateStore
    findings: FindingPeers
    reader: AuditReader
    keys: MacKeyRing
    #: Hears of a state the trail says exists whose row is gone (partition, key).
    report_missing: Callable[[str, str], None] | None = None


@dataclass
class InventoryReport:
    taken: int = 0
    onboarded: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    by_api: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def reconcile(
    peers: InventoryPeers, inventory: Inventory, correlation_id: str | None = None
) -> InventoryReport:
    """Take what the sweep's listing showed (the whole vault: call only after a complete listing) into the
    inventory, recording what changed outside the API. One secret's failure is reported (``failures``)
    and the others go on; it is found again by the next sweep. Raises DependencyUnavailable when the
    inventory cannot be taken at all."""
    report = InventoryReport()
    trail = peers.findings.trail
    if not inventory.taken:
        _take(peers, inventory, report, correlation_id)
        return report
    if inventory.missing and peers.report_missing is not None:
        peers.report_missing(PARTITION, f"{TAKEN}:rows")  # rows deleted: their secrets count as new below
    created = 0
    for change in [*inventory.changes, *inventory.gone()]:
        try:
            if _by_api(peers, change):
                report.by_api.append(change.name)
            elif change.before is None:
                assert change.after is not None
                trail.record(
                    Action.SECRET_ONBOARDED,
                    secret_name=change.name,
                    actor=UNKNOWN_ACTOR,
                    correlation_id=correlation_id,
                    details={"by": "tags", "policy_tags": _shown(change.after)},
                )
                report.onboarded.append(change.name)
            else:
                _changed_outside(peers.findings, change, correlation_id)
                report.changed.append(change.name)
            created += _write(peers.states, inventory, change, peers.findings.clock.now())
        except DomainError as err:
            logger.error("inventory of %s not reconciled: %s", change.name, err)
            report.failures.append(f"{change.name}: {type(err).__name__}")
    _count(peers.states, inventory, created)
    return report


def _count(states: StateStore, inventory: Inventory, created: int) -> None:
    """Keep the ``~taken`` row's count of rows (rows are never deleted: a secret that leaves keeps its
    row, marked ``left``), so a row a storage writer deletes is seen by the next sweep."""
    stored = inventory.rows[TAKEN]
    rows = len(inventory.rows) - 1 + created
    if stored.state.get("rows") == rows:
        return
    try:
        states.replace(PARTITION, TAKEN, {**stored.state, "rows": rows}, stored.etag)
    except (Conflict, NotFound):
        logger.info("the inventory's count changed meanwhile: the next sweep counts again")


def _take(peers: InventoryPeers, inventory: Inventory, report: InventoryReport, cid: str | None) -> None:
    """The first sweep takes every managed secret as the baseline (one record); an inventory the trail says
    was taken before and is gone was wiped: reported, then taken again."""
    # The service chain's own records (one partition), only when the ~taken row is missing.
    service = AuditQuery(
        vault=peers.findings.trail.vault, secret_name=SERVICE_CHAIN_SECRET, action=Action.SECRET_ONBOARDED
    )
    retaken = any(
        e.details.get("inventory") in ("taken", "retaken")
        for e in authentic_events(peers.reader, peers.keys, service)
    )
    if retaken and peers.report_missing is not None:
        peers.report_missing(PARTITION, TAKEN)
    now = peers.findings.clock.now()
    writes = [
        StateWrite(key, _state(name, policy, now), _etag(inventory.rows.get(key)))
        for key, (name, policy) in sorted(inventory.policies.items())
    ]
    taken = {"at": format_time(now), "rows": len(writes)}
    writes.append(StateWrite(TAKEN, taken, _etag(inventory.rows.get(TAKEN))))
    for start in range(0, len(writes), _MAX_BATCH):
        peers.states.commit(PARTITION, writes[start : start + _MAX_BATCH])
    report.taken = len(inventory.policies)
    peers.findings.trail.record(
        Action.SECRET_ONBOARDED,
        correlation_id=cid,
        details={"inventory": "retaken" if retaken else "taken", "secrets": report.taken},
    )


def _etag(stored: Versioned | None) -> str | None:
    return None if stored is None else stored.etag


def _state(name: str, policy: Mapping[str, str], at: datetime, *, left: bool = False) -> dict[str, Any]:
    return {"name": name, "policy": json.dumps(dict(sorted(policy.items())), separators=(",", ":")),
            "at": format_time(at), "left": left or None}  # fmt: skip


def _write(states: StateStore, inventory: Inventory, change: Change, now: datetime) -> int:
    """The change into its row: a secret that left keeps its row (``left``, with the policy it had).
    Returns the rows created (0 or 1)."""
    key = change.name.lower()
    stored = inventory.rows.get(key)
    if change.after is None:
        state = _state(change.name, change.before or {}, now, left=True)
    else:
        state = _state(change.name, change.after, now)
    try:
        if stored is None:
            states.create(PARTITION, key, state)
            return 1
        states.replace(PARTITION, key, state, stored.etag)
    except (Conflict, NotFound):
        logger.info("inventory row of %s changed meanwhile: the next sweep compares again", change.name)
    return 0


#: The API's records that change a secret's management, and what each leaves it as.
_API_ACTIONS = (
    Action.SECRET_ONBOARDED,
    Action.POLICY_CHANGED,
    Action.SECRET_RECOVERED,
    Action.SECRET_DELETED,
)


def _by_api(peers: InventoryPeers, change: Change) -> bool:
    """Whether an authentic record of the API (a caller's, not an unknown actor's), written since the
    inventory last changed for the secret, bears the change out: the policy it set is the one found, it
    deleted the secret, or it recovered it as it was when it left. An intent followed by its failure
    (same action and correlation) bears nothing out; one without (its success not written) does."""
    since = None if change.since is None else change.since - _SKEW
    query = AuditQuery(vault=peers.findings.trail.vault, secret_name=change.name, since=since)
    events = [
        e
        for e in authentic_events(peers.reader, peers.keys, query)
        if e.action in _API_ACTIONS and e.actor.type not in (ActorType.UNKNOWN, ActorType.SYSTEM)
    ]
    failed = {(e.action, e.correlation_id) for e in events if e.result == Result.FAILURE}
    for event in events:
        if event.result == Result.INTENT and (event.action, event.correlation_id) in failed:
            continue
        if event.result not in (Result.INTENT, Result.SUCCESS):
            continue
        if change.after is None:
            if event.action == Action.SECRET_DELETED and change.gone:
                return True
            continue
        if event.action == Action.SECRET_RECOVERED:
            if change.left is not None and dict(change.left) == dict(change.after):
                return True
            continue
        recorded = event.details.get("policy")
        if isinstance(recorded, Mapping) and recorded == _policy_fields(change.after):
            return True
    return False


def _policy_fields(tags: Mapping[str, str]) -> dict[str, Any] | None:
    """A policy as the API records it (``catalog.policy_dict``), or None for an invalid one."""
    from shared.services.catalog import policy_dict

    try:
        return policy_dict(RotationPolicy.from_tags(tags))
    except PolicyError:
        return None


def _shown(tags: Mapping[str, str]) -> dict[str, str]:
    return {k: v[:_VALUE_CHARS] for k, v in sorted(tags.items())}


def _changed_outside(peers: FindingPeers, change: Change, cid: str | None) -> None:
    """A POLICY_CHANGED by an unknown actor, a finding and its event, once per change."""
    before = _shown(change.before or {})
    after = _shown(change.after or {})
    digest = hashlib.sha256(json.dumps([before, after], sort_keys=True).encode()).hexdigest()[:32]
    if change.after is None:
        what = "was deleted outside the API" if change.gone else "left management by tag"
    else:
        what = "had its policy changed outside the API"
    facts = {"before": before, "after": after, "outside_api": True, "gone": change.gone}
    # The old and new tags are on the cause record: twice would not fit 4 KiB.
    why = Cause(Action.POLICY_CHANGED, facts, actor=UNKNOWN_ACTOR, shown=False, vault=peers.scope)
    finding = caused(
        RULE, (change.name.lower(), digest), why, time=peers.clock.now(), secret_name=change.name,
        summary=f"{change.name} {what}",
    )  # fmt: skip
    raise_finding(peers, finding, cid)
