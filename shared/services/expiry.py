"""Expiry: warn before a secret version expires, report when it has, and report expiry-policy violations.

``exp`` is informational in Key Vault (reads still work after it), so reporting it is this service's job.
``check_expiry`` (the daily timer) lists the vault once — properties only, never a value — and reads a
version's properties only for the few secrets that cross a threshold (the listing has no version id). Key
Vault's SecretNearExpiry / SecretExpired events for unmanaged secrets use the same ``notify_expiry``, so
the event and the timer share their claims and a version is warned once whichever comes first.

Once, whatever crashes and whatever runs at the same time: every notice is a claim (``StateStore``) that
is *pending* until its steps are done — the ``EXPIRY_WARNING``/``SECRET_EXPIRED`` record, then the
notification — and *done* after. A pending claim is held under a short lease (a holder id and an end
time, every change a compare-and-swap on the entity's ETag, like the rotation lease): a run that finds
another's lease still running does not act (``ClaimHeld``: the daily check leaves the secret to that run,
an Event Grid delivery is raised to come again later); one that finds the lease ended (its holder failed
and released it, or died) takes the claim over and finishes the steps it lacks; one that finds it done
does nothing. A notification carries a deterministic id, so a consumer can drop one sent twice.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.domain.audit import Action, Result, format_time
from shared.domain.errors import Conflict, DomainError, NotFound, SecretDisabled
from shared.domain.notifications import SECRET_EXPIRED, SECRET_NEAR_EXPIRY, Notification
from shared.domain.policy import (
    DEFAULT_WARNING_DAYS,
    OWNER_TAG,
    PolicyError,
    RotationPolicy,
)
from shared.domain.secrets import SecretItem, SecretVersion
from shared.domain.state import StateTampered, Versioned, lease_runs
from shared.domain.targets import is_reserved
from shared.ports import Clock, Publisher, SecretStore, StateStore
from shared.services.audit import AuditTrail

logger = logging.getLogger(__name__)

#: Claims of expiry notices, shared by the timer and the Key Vault events.
NOTICES = "expiry-notice"
#: Claims of the expiry check's policy violations (the rotation's partition: one table of violations).
VIOLATIONS = "policy-violation"
PENDING = "pending"
DONE = "done"
EXP_TAG = "exp"  # not a tag: what an "enabled secret without exp" violation names
_NAMESPACE = uuid.UUID("6f1d3c8e-8a0b-4c55-9a44-1f5e0c2b7d10")

#: Longer than host.json's functionTimeout (10 min), as the rotation lease: a holder is stopped by the
#: platform before its lease can run out under it, so a lease that ran out belongs to a holder that is gone.
CLAIM_LEASE = timedelta(minutes=15)
_LEASE_FIELDS = ("holder", "lease_until")


# -- claims: pending until every step is done, one holder at a time -------------------------------


class ClaimHeld(Conflict):
    """Another run holds the claim on this action under a lease that still runs, or took it over from
    this one: that run finishes the action. An Event Grid delivery raises it to be delivered again later
    (it then finds the action done, or the lease run out because that holder died, and finishes it); the
    daily check skips the action (tomorrow's run finds it done or finishes it)."""

    def __init__(self, partition: str, key: str) -> None:
        super().__init__(f"{partition}/{key} is being acted on by another run; try again later")


@dataclass
class Claim:
    """One action's claim, held under a lease (``holder``, ``lease_until``): pending (with the steps done
    so far) until ``finish``. Steps are flags stored on the claim, each a compare-and-swap under the lease
    that also renews it, so a retry after a crash does only the steps that are missing and a holder whose
    lease was taken over stops at its next step (ClaimHeld)."""

    states: StateStore
    clock: Clock
    partition: str
    key: str
    state: dict[str, Any]
    etag: str
    holder: str

    def has(self, step: str) -> bool:
        return bool(self.state.get(step))

    def mark(self, step: str) -> None:
        """Store a step as done. Raises ClaimHeld (the lease was lost), DependencyUnavailable."""
        self._save({step: True})

    def save(self, **fields: Any) -> None:
        """Store what a step found, for the attempts after this one; renews the lease (do it right before
        a step that cannot be undone). Raises ClaimHeld, DependencyUnavailable."""
        self._save(fields)

    def finish(self, **fields: Any) -> None:
        """The action is complete: later deliveries and runs do nothing. Raises ClaimHeld,
        DependencyUnavailable."""
        self._save({**fields, "status": DONE})

    def release(self) -> None:
        """End the lease now, keeping the progress, so a retry takes over at once instead of waiting for
        the lease to run out. Best effort: a lease lost or not releasable runs out by itself."""
        with contextlib.suppress(DomainError):
            stored = self.states.get(self.partition, self.key)
            if stored is None or stored.state.get("holder") != self.holder or _done(stored.state):
                return
            state = {k: v for k, v in stored.state.items() if k not in _LEASE_FIELDS}
            self.states.replace(self.partition, self.key, state, stored.etag)

    @contextlib.contextmanager
    def releasing(self) -> Iterator[Claim]:
        """Release the lease when a step fails (a process that dies leaves it to run out)."""
        try:
            yield self
        except Exception:
            self.release()
            raise

    def _save(self, changes: Mapping[str, Any]) -> None:
        state = {**self.state, **changes}
        if _done(state):
            state = {k: v for k, v in state.items() if k != "lease_until"}
        else:
            state["lease_until"] = format_time(self.clock.now() + CLAIM_LEASE)
        state["holder"] = self.holder
        for _ in range(2):
            try:
                self.etag = self.states.replace(self.partition, self.key, state, self.etag).etag
                self.state = state
                return
            except NotFound:
                # Removed behind the service's back: stored again with the progress this holder knows.
                try:
                    self.etag = self.states.create(self.partition, self.key, state).etag
                except Conflict:
                    raise ClaimHeld(self.partition, self.key) from None
                self.state = state
                return
            except Conflict:
                stored = self.states.get(self.partition, self.key)
                if stored is None or stored.state.get("holder") != self.holder or _done(stored.state):
                    raise ClaimHeld(self.partition, self.key) from None
                # Still ours: an earlier write of this holder landed although it reported a failure.
                state = {**stored.state, **state}
                self.etag = stored.etag
        raise ClaimHeld(self.partition, self.key)


def claim(states: StateStore, partition: str, key: str, clock: Clock, **fields: Any) -> Claim | None:
    """The claim on one action, held by this caller: None when the action is done already, else a new
    claim, or a pending one whose holder stopped part-way (it released its lease, or died and the lease
    ran out), taken over with a compare-and-swap (act again: the missing steps).

    Raises ClaimHeld when another holder's lease still runs (or it won the race for the claim),
    DependencyUnavailable."""
    now = clock.now()
    holder = uuid.uuid4().hex
    lease = {"holder": holder, "lease_until": format_time(now + CLAIM_LEASE)}
    try:
        stored = states.get(partition, key)
    except StateTampered as err:
        # A claim a storage writer wrote (one saying "done", to suppress a record): reported by the store,
        # and never obeyed: taken over as a fresh claim, so the action happens.
        stored = Versioned(state={**fields, "status": PENDING}, etag=err.etag)
    if stored is None:
        try:
            created = states.create(partition, key, {**fields, "status": PENDING, **lease})
        except Conflict:
            raise ClaimHeld(partition, key) from None  # a concurrent run created it: that one holds it
        return Claim(states, clock, partition, key, dict(created.state), created.etag, holder)
    if _done(stored.state):
        return None
    if _leased(stored.state, now):
        raise ClaimHeld(partition, key)
    try:
        taken = states.replace(partition, key, {**stored.state, **lease}, stored.etag)
    except (Conflict, NotFound):
        raise ClaimHeld(partition, key) from None
    if stored.state.get("holder"):
        logger.warning("claim %s/%s taken over from a holder that stopped", partition, key)
    return Claim(states, clock, partition, key, dict(taken.state), taken.etag, holder)


def _done(state: Mapping[str, Any]) -> bool:
    return state.get("status") == DONE


def _leased(state: Mapping[str, Any], now: datetime) -> bool:
    """Whether a holder's lease still runs. One ending further ahead than any holder can take (a forged
    or skewed row) is not honoured: it would block the action for good."""
    return bool(state.get("holder")) and lease_runs(state.get("lease_until"), now, CLAIM_LEASE)


def is_done(states: StateStore, partition: str, key: str) -> bool:
    try:
        stored = states.get(partition, key)
    except StateTampered:
        return False  # a forged "done" is not done
    return stored is not None and _done(stored.state)


# -- notices ---------------------------------------------------------------------------------------


def notice_key(name: str, version: str, what: str) -> str:
    """``what``: ``30d`` (a warning threshold) or ``expired``."""
    return f"{name.lower()}:{version.lower()}:{what}"


def notify_expiry(
    version: SecretVersion,
    thresholds: Sequence[int],
    states: StateStore,
    trail: AuditTrail,
    publisher: Publisher,
    clock: Clock,
    *,
    source: str,
    correlation_id: str | None,
    warn: bool = True,
    warn_slack: timedelta = timedelta(0),
    expired_slack: timedelta = timedelta(0),
) -> str | None:
    """SECRET_EXPIRED + SecretExpired once for an expired version; else (``warn``) EXPIRY_WARNING +
    SecretNearExpiry once for the tightest threshold crossed and not warned yet (the wider ones it stands
    for are claimed with it). Returns ``expired``, ``warning:<days>``, or None when nothing was due.

    ``version`` must be what the vault answered; the slacks widen "crossed" and "expired" for events that
    arrive a moment before the vault's clock agrees. Raises AuditUnavailable, DependencyUnavailable
    (pending claims stay: the next attempt finishes them), ClaimHeld (another run is sending this notice
    right now).
    """
    if version.expires is None or not version.enabled:
        return None
    left = version.expires - clock.now()
    send = _Notice(version, states, trail, publisher, clock, source, correlation_id)
    if left <= expired_slack:
        return "expired" if send.once("expired", left, threshold=None) else None
    if not warn:
        return None
    crossed = sorted({t for t in thresholds if left <= timedelta(days=t) + warn_slack})
    if not crossed:
        return None
    # A tighter threshold already warned stands for every wider one (a first run that crossed several).
    keys = {t: notice_key(version.name, version.version, f"{t}d") for t in crossed}
    warned = [t for t in crossed if is_done(states, NOTICES, keys[t])]
    todo = [t for t in crossed if t < min(warned, default=crossed[-1] + 1)]
    if not todo:
        return None
    tightest = todo[0]
    if not send.once(f"{tightest}d", left, threshold=tightest):
        return None
    for wider in todo[1:]:
        with contextlib.suppress(Conflict):
            states.create(NOTICES, keys[wider], {"status": DONE})
    return f"warning:{tightest}"


@dataclass
class _Notice:
    version: SecretVersion
    states: StateStore
    trail: AuditTrail
    publisher: Publisher
    clock: Clock
    source: str
    correlation_id: str | None

    def once(self, what: str, left: timedelta, *, threshold: int | None) -> bool:
        """Record and notify under the claim ``what``; False when it was done before."""
        v = self.version
        key = notice_key(v.name, v.version, what)
        held = claim(self.states, NOTICES, key, self.clock)
        if held is None:
            return False
        with held.releasing():
            self._steps(held, key, left, threshold)
        logger.info("expiry notice %s for %s version %s sent", what, v.name, v.version)
        return True

    def _steps(self, held: Claim, key: str, left: timedelta, threshold: int | None) -> None:
        """The record, then the notification: each once, the missing ones after a crash."""
        v = self.version
        assert v.expires is not None
        facts: dict[str, Any] = {
            "expires": format_time(v.expires),
            "days_left": round(left.total_seconds() / 86400, 2),
        }
        if threshold is not None:
            facts["threshold_days"] = threshold
        owner = v.tags.get(OWNER_TAG)
        if owner:
            facts["owner"] = owner
        expired = threshold is None
        if not held.has("recorded"):
            self.trail.record(
                Action.SECRET_EXPIRED if expired else Action.EXPIRY_WARNING,
                secret_name=v.name,
                version=v.version,
                correlation_id=self.correlation_id,
                details={**facts, "source": self.source},
            )
            held.mark("recorded")
        if not held.has("notified"):
            notification = Notification(
                type=SECRET_EXPIRED if expired else SECRET_NEAR_EXPIRY,
                subject=v.name,
                time=self.clock.now(),
                data={"vault": self.trail.vault, "secret_name": v.name, "version": v.version, **facts},
                id=uuid.uuid5(_NAMESPACE, f"{self.trail.vault}:{key}").hex,
            )
            self.publisher.publish([notification])
            held.mark("notified")
        held.finish()


# -- the daily check -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpiryReport:
    """What one check found and did. Names only, never a value. ``failed``: secrets whose check failed
    (each on record); the run failed then, and the next run tries again. ``busy``: secrets whose notice
    or violation another run held a live claim on (it finishes them, else the next run does)."""

    listed: int
    checked: int
    warned: tuple[str, ...] = ()
    expired: tuple[str, ...] = ()
    violations: int = 0
    failed: tuple[str, ...] = field(default_factory=tuple)
    #: Secrets whose notice another run (a Key Vault event) was sending meanwhile: left to it.
    busy: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        return {
            "listed": self.listed,
            "checked": self.checked,
            "warned": len(self.warned),
            "expired": len(self.expired),
            "violations": self.violations,
            "failed": len(self.failed),
            "busy": len(self.busy),
        }


def check_expiry(
    store: SecretStore,
    states: StateStore,
    trail: AuditTrail,
    publisher: Publisher,
    clock: Clock,
    *,
    reserved: Collection[str],
    require_exp: bool,
    correlation_id: str,
) -> ExpiryReport:
    """Check every enabled secret (managed or not, certificate-backed included, the service's own
    excluded): warnings at its thresholds (a managed secret's ``expiry-warning-days`` when its policy is
    valid, else 30, 7, 1 days), SECRET_EXPIRED for an expired current version, and POLICY_VIOLATION for a
    managed secret without ``owner`` and (``require_exp``) for a secret without ``exp`` — each once per
    version. One secret's failure is recorded and the others go on (see ``ExpiryReport.failed``).

    Raises Forbidden or DependencyUnavailable when the listing fails (nothing was checked then).
    """
    never = {name.lower() for name in reserved}
    listed = checked = violations = 0
    warned: list[str] = []
    expired: list[str] = []
    failed: list[str] = []
    busy: list[str] = []
    for item in store.list_properties():
        listed += 1
        if is_reserved(item.name, never) or not item.enabled:
            continue
        checked += 1
        try:
            found, held = _violations(item, states, trail, clock, require_exp, correlation_id)
            violations += found
            sent = _expiry(item, store, states, trail, publisher, clock, correlation_id)
        except ClaimHeld:
            held = True
            sent = None
        except DomainError as err:
            failed.append(item.name)
            _record_failure(trail, item.name, err, correlation_id)
            continue
        if held:
            # Not a failure: the holder (an event delivery) finishes, or tomorrow's run does.
            logger.info("expiry check of %s: another run holds a claim; left to it", item.name)
            busy.append(item.name)
        if sent == "expired":
            expired.append(item.name)
        elif sent is not None:
            warned.append(item.name)
    report = ExpiryReport(
        listed=listed,
        checked=checked,
        warned=tuple(sorted(warned, key=str.lower)),
        expired=tuple(sorted(expired, key=str.lower)),
        violations=violations,
        failed=tuple(sorted(failed, key=str.lower)),
        busy=tuple(sorted(busy, key=str.lower)),
    )
    logger.info("expiry check %s: %s", correlation_id, report.counts())
    return report


def thresholds_of(tags: Mapping[str, str] | None) -> tuple[int, ...]:
    """A managed secret's valid ``expiry-warning-days``; the default for anything else."""
    if not RotationPolicy.is_managed(tags):
        return DEFAULT_WARNING_DAYS
    try:
        return RotationPolicy.from_tags(tags).warning_days
    except PolicyError:
        return DEFAULT_WARNING_DAYS  # the sweep reports the invalid policy


def _expiry(
    item: SecretItem,
    store: SecretStore,
    states: StateStore,
    trail: AuditTrail,
    publisher: Publisher,
    clock: Clock,
    correlation_id: str,
) -> str | None:
    if item.expires is None:
        return None
    left = item.expires - clock.now()
    if left > timedelta(days=max(thresholds_of(item.tags))):
        return None  # the common case: nothing to read
    try:
        current = store.get_properties(item.name)  # the version id, and what the vault says now
    except (NotFound, SecretDisabled):
        return None  # deleted or disabled since the listing
    return notify_expiry(
        current,
        thresholds_of(current.tags),
        states,
        trail,
        publisher,
        clock,
        source="expiry_check",
        correlation_id=correlation_id,
    )


def _violations(
    item: SecretItem,
    states: StateStore,
    trail: AuditTrail,
    clock: Clock,
    require_exp: bool,
    correlation_id: str,
) -> tuple[int, bool]:
    """POLICY_VIOLATION once per version (the listing has no version id: the creation time stands for it)
    and tag; returns how many were recorded now, and whether another run held one of their claims."""
    found: list[tuple[str, str]] = []
    if RotationPolicy.is_managed(item.tags) and not (item.tags.get(OWNER_TAG) or "").strip():
        found.append((OWNER_TAG, "a managed secret needs an owner tag (who to tell about it)"))
    if require_exp and item.expires is None:
        found.append((EXP_TAG, "an enabled secret must have an expiry date (EXPIRY_REQUIRE_EXP)"))
    recorded = 0
    busy = False
    for tag, problem in found:
        key = f"{item.name.lower()}:{format_time(item.created)}:{tag}"
        try:
            held = claim(states, VIOLATIONS, key, clock, tag=tag)
        except ClaimHeld:
            busy = True
            continue
        if held is None:
            continue
        with held.releasing():
            trail.record(
                Action.POLICY_VIOLATION,
                secret_name=item.name,
                result=Result.FAILURE,
                correlation_id=correlation_id,
                details={"tag": tag, "created": format_time(item.created), "source": "expiry_check"},
                error=problem,
            )
            held.finish()
        recorded += 1
    return recorded, busy


def _record_failure(trail: AuditTrail, name: str, err: DomainError, correlation_id: str) -> None:
    logger.warning("expiry check of %s failed: %s", name, type(err).__name__)
    try:
        trail.record(
            Action.EXPIRY_WARNING,
            secret_name=name,
            result=Result.FAILURE,
            correlation_id=correlation_id,
            details={"source": "expiry_check", "error_class": type(err).__name__},
            error=str(err)[:500],
        )
    except DomainError:
        logger.exception("the expiry check's failure for %s could not be audited", name)
