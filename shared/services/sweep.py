"""The rotation sweep: find the managed secrets that are due and ask for their rotation.

The sweep reads one thing, the vault's listing of current-version properties (one request per 25
secrets), and never a value nor anything per secret: with thousands of secrets, a read per secret would
cost the vault's transaction budget that rotations need. It rotates nothing itself: it sends one rotation
request per due secret, and ``rotate_secret`` decides again (rotate-if-due is idempotent, so a request
that races with a Key Vault event or a manual call is harmless).

Skipped, without a request: unmanaged secrets, disabled ones, certificate-backed ones (the certificate is
renewed, never its secret) and the service's own secrets (``reserved``: the audit MAC key and the digest
anchor live in the same vault and must never be rotated). An invalid policy is reported as a violation
naming the tag, never guessed at; so is a policy tag on a certificate-backed or reserved secret, which the
sweep will never act on. The caller audits violations and failures; the sweep itself writes nothing but
the requests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from shared.domain.errors import DependencyUnavailable
from shared.domain.policy import MANAGED_BY_TAG, PolicyError, RotationPolicy, Rotator
from shared.domain.rotation import (
    RequestsNotSent,
    RotationReason,
    RotationRequest,
    validate_correlation_id,
)
from shared.domain.secrets import SecretItem
from shared.domain.targets import is_reserved
from shared.ports import RotationRequests
from shared.services.peers import Peers

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PolicyViolation:
    """A managed secret the sweep skipped because of its tags. ``created`` is the current version's
    creation time: with the name it tells one version from the next (a listing carries no version id),
    so the caller can audit a violation once per version rather than once per sweep."""

    secret_name: str
    tag: str
    problem: str
    created: datetime


@dataclass(frozen=True)
class DueSecret:
    """A due secret as the listing showed it: its current version's creation time (standing for the
    version: a listing has no version id) and since when it is due."""

    name: str
    created: datetime
    due_at: datetime


@dataclass(frozen=True)
class SweepReport:
    """What one sweep found and did. Names only, never a value.

    ``managed``: the secrets whose policy the sweep evaluated (tagged, enabled, not certificate-backed,
    not reserved). ``due``: their names, sorted. ``not_sent``: due names whose request was not (confirmed)
    sent, with ``send_error`` saying why; the run failed then, and the next sweep asks again.
    """

    listed: int
    managed: int
    due: tuple[str, ...]
    sent: int
    violations: tuple[PolicyViolation, ...]
    not_sent: tuple[str, ...] = ()
    send_error: str | None = None
    #: Due secrets whose ``rotator`` this deployment cannot run yet: reported, not requested (a request
    #: would only be skipped, and recorded as skipped, every hour).
    unsupported: tuple[str, ...] = ()
    #: Every due secret with since when it is due (what the stall check compares with).
    due_since: tuple[DueSecret, ...] = ()

    @property
    def failed(self) -> bool:
        return bool(self.not_sent)

    def counts(self) -> dict[str, int]:
        return {
            "listed": self.listed,
            "managed": self.managed,
            "due": len(self.due),
            "sent": self.sent,
            "violations": len(self.violations),
            "not_sent": len(self.not_sent),
            "unsupported": len(self.unsupported),
        }


def sweep(
    peers: Peers,
    correlation_id: str,
    *,
    rotators: Collection[Rotator] = tuple(Rotator),
    observe: Callable[[SecretItem], None] | None = None,
) -> SweepReport:
    """List the vault once and send one rotation request per due managed secret. ``observe`` sees every
    listed secret (the inventory's reconciliation rides on this one listing).

    A failure to send is not raised: the report names the requests not sent (``failed``), for the caller
    to audit and report. Raises Forbidden or DependencyUnavailable when the listing fails (nothing is sent
    then), ValueError for a ``correlation_id`` a request cannot carry.
    """
    validate_correlation_id(correlation_id)
    store, requests, now = peers.store, peers.requests, peers.clock.now()
    never = {name.lower() for name in peers.reserved}  # Key Vault names are case-insensitive
    listed = managed = 0
    due: list[RotationRequest] = []
    due_since: list[DueSecret] = []
    violations: list[PolicyViolation] = []
    unsupported: list[str] = []
    for item in store.list_properties():
        listed += 1
        if observe is not None:
            observe(item)
        verdict = _evaluate(item, now, never, rotators)
        if verdict is None:
            continue
        if isinstance(verdict, PolicyViolation):
            violations.append(verdict)
            continue
        managed += 1
        if verdict == "unsupported":
            unsupported.append(item.name)
        elif verdict != "not_due":
            reason, due_at = verdict
            due_since.append(DueSecret(item.name, item.created, due_at))
            due.append(
                RotationRequest(
                    secret_name=item.name,
                    reason=reason,
                    requested_at=now,
                    correlation_id=correlation_id,
                    vault=peers.trail.vault,
                )
            )
    due.sort(key=lambda r: r.secret_name.lower())
    not_sent, send_error = _send(requests, due)
    report = SweepReport(
        listed=listed,
        managed=managed,
        due=tuple(r.secret_name for r in due),
        sent=len(due) - len(not_sent),
        violations=tuple(violations),
        not_sent=not_sent,
        send_error=send_error,
        unsupported=tuple(sorted(unsupported, key=str.lower)),
        due_since=tuple(due_since),
    )
    logger.info("rotation sweep %s: %s", correlation_id, report.counts())
    return report


def _evaluate(
    item: SecretItem, now: datetime, reserved: Collection[str], rotators: Collection[Rotator]
) -> tuple[RotationReason, datetime] | Literal["not_due", "unsupported"] | PolicyViolation | None:
    """A due secret's reason and since when it is due, "not_due", a violation, or None for a secret the
    sweep leaves alone."""
    if not RotationPolicy.is_managed(item.tags):
        return None
    if is_reserved(item.name, reserved):
        return _violation(item, MANAGED_BY_TAG, "the service's own secret is never rotated")
    if item.managed:
        return _violation(item, MANAGED_BY_TAG, "backs a certificate: renew the certificate instead")
    if not item.enabled:
        return None
    try:
        policy = RotationPolicy.from_tags(item.tags, name=item.name, reserved=reserved)
    except PolicyError as err:
        return _violation(item, err.tag, str(err).removeprefix(f"tag {err.tag}: "))
    if not policy.is_due(item.created, now, item.expires):
        return "not_due"
    if policy.rotator not in rotators:
        return "unsupported"
    due_at = policy.next_rotation(item.created, item.expires)
    if now >= item.created + policy.interval:
        return RotationReason.DUE, due_at
    return RotationReason.NEAR_EXPIRY, due_at


def _violation(item: SecretItem, tag: str, problem: str) -> PolicyViolation:
    logger.warning("secret %s skipped: tag %s: %s", item.name, tag, problem)
    return PolicyViolation(secret_name=item.name, tag=tag, problem=problem, created=item.created)


def _send(requests: RotationRequests, due: list[RotationRequest]) -> tuple[tuple[str, ...], str | None]:
    if not due:
        return (), None
    try:
        requests.send(due)
    except RequestsNotSent as err:
        return tuple(r.secret_name for r in err.not_sent), str(err)
    except DependencyUnavailable as err:
        return tuple(r.secret_name for r in due), str(err)
    return (), None
