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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
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
from shared.domain.targets import is_reserved
from shared.services.audit import AuditTrail
from shared.services.claims import DONE, Claim, ClaimHeld, claim, is_done
from shared.services.peers import Peers

logger = logging.getLogger(__name__)

#: Claims of expiry notices, shared by the timer and the Key Vault events.
NOTICES = "expiry-notice"
#: Claims of the expiry check's policy violations (the rotation's partition: one table of violations).
VIOLATIONS = "policy-violation"
EXP_TAG = "exp"  # not a tag: what an "enabled secret without exp" violation names
_NAMESPACE = uuid.UUID("6f1d3c8e-8a0b-4c55-9a44-1f5e0c2b7d10")


# -- notices ---------------------------------------------------------------------------------------


def notice_key(name: str, version: str, what: str) -> str:
    """``what``: ``30d`` (a warning threshold) or ``expired``."""
    return f"{name.lower()}:{version.lower()}:{what}"


@dataclass(frozen=True)
class Asked:
    """Who asks for an expiry notice and how: ``source`` (the daily check, a Key Vault event) and the
    correlation id of its records; whether a warning may be sent (``warn``); and the slacks that widen
    "crossed" and "expired" for an event that arrives a moment before the vault's clock agrees."""

    source: str
    correlation_id: str | None
    warn: bool = True
    warn_slack: timedelta = timedelta(0)
    expired_slack: timedelta = timedelta(0)


def notify_expiry(
    peers: Peers, version: SecretVersion, thresholds: Sequence[int], asked: Asked
) -> str | None:
    """SECRET_EXPIRED + SecretExpired once for an expired version; else (``warn``) EXPIRY_WARNING +
    SecretNearExpiry once for the tightest threshold crossed and not warned yet (the wider ones it stands
    for are claimed with it). Returns ``expired``, ``warning:<days>``, or None when nothing was due.

    ``version`` must be what the vault answered. Raises AuditUnavailable, DependencyUnavailable
    (pending claims stay: the next attempt finishes them), ClaimHeld (another run is sending this notice
    right now).
    """
    if version.expires is None or not version.enabled:
        return None
    states = peers.states
    left = version.expires - peers.clock.now()
    send = _Notice(peers, version, asked.source, asked.correlation_id)
    if left <= asked.expired_slack:
        return "expired" if send.once("expired", left, threshold=None) else None
    if not asked.warn:
        return None
    crossed = sorted({t for t in thresholds if left <= timedelta(days=t) + asked.warn_slack})
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
    peers: Peers
    version: SecretVersion
    source: str
    correlation_id: str | None

    def once(self, what: str, left: timedelta, *, threshold: int | None) -> bool:
        """Record and notify under the claim ``what``; False when it was done before."""
        v = self.version
        key = notice_key(v.name, v.version, what)
        held = claim(self.peers.states, NOTICES, key, self.peers.clock)
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
            self.peers.trail.record(
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
                time=self.peers.clock.now(),
                data={"vault": self.peers.trail.vault, "secret_name": v.name, "version": v.version, **facts},
                id=uuid.uuid5(_NAMESPACE, f"{self.peers.trail.vault}:{key}").hex,
            )
            self.peers.publisher.publish([notification])
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


def check_expiry(peers: Peers, *, require_exp: bool = False, correlation_id: str) -> ExpiryReport:
    """Check every enabled secret (managed or not, certificate-backed included, the service's own
    excluded): warnings at its thresholds (a managed secret's ``expiry-warning-days`` when its policy is
    valid, else 30, 7, 1 days), SECRET_EXPIRED for an expired current version, and POLICY_VIOLATION for a
    managed secret without ``owner`` and (``require_exp``) for a secret without ``exp`` — each once per
    version. One secret's failure is recorded and the others go on (see ``ExpiryReport.failed``).

    Raises Forbidden or DependencyUnavailable when the listing fails (nothing was checked then).
    """
    never = {name.lower() for name in peers.reserved}
    listed = checked = violations = 0
    warned: list[str] = []
    expired: list[str] = []
    failed: list[str] = []
    busy: list[str] = []
    for item in peers.store.list_properties():
        listed += 1
        if is_reserved(item.name, never) or not item.enabled:
            continue
        checked += 1
        try:
            found, held = _violations(peers, item, require_exp, correlation_id)
            violations += found
            sent = _expiry(peers, item, correlation_id)
        except ClaimHeld:
            held = True
            sent = None
        except DomainError as err:
            failed.append(item.name)
            _record_failure(peers.trail, item.name, err, correlation_id)
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


def _expiry(peers: Peers, item: SecretItem, correlation_id: str) -> str | None:
    if item.expires is None:
        return None
    left = item.expires - peers.clock.now()
    if left > timedelta(days=max(thresholds_of(item.tags))):
        return None  # the common case: nothing to read
    try:
        current = peers.store.get_properties(item.name)  # the version id, and what the vault says now
    except (NotFound, SecretDisabled):
        return None  # deleted or disabled since the listing
    return notify_expiry(peers, current, thresholds_of(current.tags), Asked("expiry_check", correlation_id))


def _violations(peers: Peers, item: SecretItem, require_exp: bool, correlation_id: str) -> tuple[int, bool]:
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
            held = claim(peers.states, VIOLATIONS, key, peers.clock, tag=tag)
        except ClaimHeld:
            busy = True
            continue
        if held is None:
            continue
        with held.releasing():
            peers.trail.record(
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
