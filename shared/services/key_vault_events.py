"""Key Vault's Event Grid events about secrets: near expiry, expired, and new versions.

Verify, don't trust: an event only says where to look. The vault is read before anything is done, and
an event about another vault, another object type, the service's own secrets (the audit MAC key and the
digest anchor, which it writes every hour) or an old version changes nothing.

- SecretNearExpiry / SecretExpired of a managed secret's current version: a rotation request (reason
  ``event``) on the ``rotation-requests`` queue; the rotation decides whether it is due and is idempotent.
- The same of an unmanaged secret: EXPIRY_WARNING / SECRET_EXPIRED and a notification, once per version
  (the claims of ``shared.services.expiry``, shared with the daily check).
- SecretNewVersionCreated that this service did not make: OUT_OF_BAND_CHANGE, once per version; when the
  secret was managed and the new version dropped the policy tags, they are put back on it.

Event Grid delivers at least once and may send the same fact with different ids, so each fact (type,
secret, version) is a claim (partition ``kv-event``) that is pending until its action is done: a delivery
that finds it done does nothing; one that finds it pending (an earlier one died part-way) does the steps
still missing. A dependency failure is raised, for Event Grid to deliver again later.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta

from shared.domain.audit import Action
from shared.domain.errors import NotFound, SecretDisabled
from shared.domain.key_vault_events import KeyVaultEvent, KeyVaultEventType
from shared.domain.policy import (
    GRACE_TAG,
    INTERVAL_TAG,
    KIND_TAG,
    MANAGED_BY_TAG,
    OWNER_TAG,
    ROTATOR_TAG,
    TARGET_TAG,
    VALIDITY_TAG,
    WARNING_TAG,
    RotationPolicy,
)
from shared.domain.rotation import RotationReason, RotationRequest, validate_correlation_id
from shared.domain.secrets import MAX_TAGS, SecretVersion
from shared.ports import Clock, Publisher, RotationRequests, SecretStore, StateStore
from shared.services.audit import AuditTrail
from shared.services.expiry import Claim, claim, notify_expiry, thresholds_of
from shared.services.rotation import written_by_service

logger = logging.getLogger(__name__)

PARTITION = "kv-event"
POLICY_TAGS = (
    MANAGED_BY_TAG,
    KIND_TAG,
    INTERVAL_TAG,
    VALIDITY_TAG,
    OWNER_TAG,
    ROTATOR_TAG,
    TARGET_TAG,
    GRACE_TAG,
    WARNING_TAG,
)
#: Key Vault sends SecretNearExpiry 30 days before exp; the delivery may come a little before our clock
#: agrees that a threshold is crossed, or SecretExpired a moment before it agrees that exp has passed.
WARN_SLACK = timedelta(days=1)
EXPIRED_SLACK = timedelta(minutes=5)


@dataclass(frozen=True)
class EventOutcome:
    """What a delivery did: ``status`` is ``acted``, ``duplicate`` or ``ignored``, with the reason."""

    status: str
    reason: str


def handle_event(
    event: KeyVaultEvent,
    store: SecretStore,
    states: StateStore,
    trail: AuditTrail,
    publisher: Publisher,
    requests: RotationRequests,
    clock: Clock,
    *,
    reserved: Collection[str],
) -> EventOutcome:
    """Act on one Key Vault secret event, once per fact whatever the deliveries.

    Raises DependencyUnavailable (AuditUnavailable, RequestsNotSent among them) or Forbidden when the
    vault, the queue, the audit or the topic fails: the fact's claim stays pending and a redelivery
    finishes it. Never raises for an event that names nothing this service acts on.
    """
    if event.vault_name.lower() != trail.vault.lower():
        return _ignored(event, f"about the vault {event.vault_name[:64]!r}, not {trail.vault!r}")
    if not event.is_secret:
        return _ignored(event, f"about a {event.object_type[:32]!r}, not a secret")
    if event.name.lower() in {r.lower() for r in reserved}:
        return _ignored(event, "about the service's own secret")
    held = claim(
        states, PARTITION, f"{event.type.short}:{event.name.lower()}:{event.version}", event_id=event.id
    )
    if held is None:
        logger.info("%s of %s version %s: done already", event.type.short, event.name, event.version)
        return EventOutcome("duplicate", "acted on before")
    cid = _correlation_id(event)
    try:
        if event.type == KeyVaultEventType.NEW_VERSION:
            outcome = _new_version(event, held, store, states, trail, cid)
        else:
            outcome = _expiry(event, store, states, trail, publisher, requests, clock, cid)
    except NotFound:
        outcome = EventOutcome("ignored", "the secret or version no longer exists")
    held.finish(outcome=outcome.status)
    logger.info(
        "%s of %s version %s: %s (%s)",
        event.type.short,
        event.name,
        event.version,
        outcome.status,
        outcome.reason,
    )
    return outcome


def _expiry(
    event: KeyVaultEvent,
    store: SecretStore,
    states: StateStore,
    trail: AuditTrail,
    publisher: Publisher,
    requests: RotationRequests,
    clock: Clock,
    cid: str,
) -> EventOutcome:
    try:
        current = store.get_properties(event.name)
    except SecretDisabled:
        return EventOutcome("ignored", "the current version is disabled")
    if current.version.lower() != event.version:
        return EventOutcome("ignored", "about an old version")
    if RotationPolicy.is_managed(current.tags) and not current.managed:
        requests.send(
            [
                RotationRequest(
                    secret_name=current.name,
                    reason=RotationReason.EVENT,
                    requested_at=clock.now(),
                    correlation_id=cid,
                )
            ]
        )
        return EventOutcome("acted", "rotation requested")
    sent = notify_expiry(
        current,
        thresholds_of(current.tags),
        states,
        trail,
        publisher,
        clock,
        source=f"key_vault_event:{event.type.short}",
        correlation_id=cid,
        warn=event.type == KeyVaultEventType.NEAR_EXPIRY,
        warn_slack=WARN_SLACK,
        expired_slack=EXPIRED_SLACK,
    )
    if sent is None:
        return EventOutcome("ignored", "nothing due per the vault, or notified before")
    return EventOutcome("acted", f"{sent} notified")


def _new_version(
    event: KeyVaultEvent,
    held: Claim,
    store: SecretStore,
    states: StateStore,
    trail: AuditTrail,
    cid: str,
) -> EventOutcome:
    version = store.get_properties(event.name, event.version)
    if version.managed:
        return EventOutcome("ignored", "certificate-backed: Key Vault renewed the certificate")
    if written_by_service(version, states):
        return EventOutcome("ignored", "made by this service")
    details: dict[str, object] = {"source": "key_vault_event"}
    if not held.has("restore_checked"):
        restored, source = _restore_policy(version, store)
        # Kept on the claim: a retry after a crash still reports what this attempt restored.
        held.save(restore_checked=True, restored=restored, restored_from=source)
    restored_tags = held.state.get("restored")
    if isinstance(restored_tags, str) and restored_tags:
        details["policy_restored"] = True
        details["restored_tags"] = restored_tags.split(",")
        details["restored_from"] = held.state.get("restored_from")
    trail.record(
        Action.OUT_OF_BAND_CHANGE,
        secret_name=version.name,
        version=version.version,
        correlation_id=cid,
        details=details,
    )
    restored_note = ", policy restored" if restored_tags else ""
    return EventOutcome("acted", f"out-of-band version recorded{restored_note}")


def _restore_policy(version: SecretVersion, store: SecretStore) -> tuple[str, str]:
    """When the version before this one carried a policy and this one dropped it, merge the policy tags
    back onto this version (its own tags kept). Returns the tag names restored, comma-separated, and the
    version they came from; ("", "") when nothing was restored."""
    if RotationPolicy.is_managed(version.tags):
        return "", ""
    earlier = [
        v
        for v in store.list_versions(version.name)
        if v.version.lower() != version.version.lower() and v.created <= version.created
    ]
    if not earlier:
        return "", ""
    # Versions are stamped in whole seconds: among ties, the managed one (restoring is the safe side).
    previous = max(earlier, key=lambda v: (v.created, RotationPolicy.is_managed(v.tags)))
    if not RotationPolicy.is_managed(previous.tags):
        return "", ""
    policy = {k: previous.tags[k] for k in POLICY_TAGS if k in previous.tags}
    merged = {**version.tags, **{k: v for k, v in policy.items() if k not in version.tags}}
    merged[MANAGED_BY_TAG] = policy[MANAGED_BY_TAG]
    if len(merged) > MAX_TAGS:
        logger.warning("policy of %s not restored: %d tags would exceed the limit", version.name, len(merged))
        return "", ""
    store.update_properties(version.name, version.version, tags=merged)
    restored = sorted(k for k in merged if version.tags.get(k) != merged[k])
    logger.warning(
        "out-of-band version %s of %s dropped its policy; restored from %s",
        version.version,
        version.name,
        previous.version,
    )
    return ",".join(restored), previous.version


def _correlation_id(event: KeyVaultEvent) -> str:
    try:
        validate_correlation_id(event.id)
    except ValueError:
        return uuid.uuid4().hex
    return event.id


def _ignored(event: KeyVaultEvent, why: str) -> EventOutcome:
    logger.info("%s of %s version %s ignored: %s", event.type.short, event.name, event.version, why)
    return EventOutcome("ignored", why)
