"""Key Vault's Event Grid events about secrets: near expiry, expired, and new versions.

Verify, don't trust: an event only says where to look. The vault is read before anything is done, and
an event about another vault, another object type, the service's own secrets (the audit MAC key and the
digest anchor, which it writes every hour) or an old version changes nothing.

- SecretNearExpiry / SecretExpired of a managed secret's current version: a rotation request (reason
  ``event``) on the ``rotation-requests`` queue; the rotation decides whether it is due and is idempotent.
- The same of an unmanaged secret: EXPIRY_WARNING / SECRET_EXPIRED and a notification, once per version
  (the claims of ``shared.services.expiry``, shared with the daily check).
- SecretNewVersionCreated that this service did not make: OUT_OF_BAND_CHANGE, once per version; when the
  secret was managed and the new version dropped the policy tags, they are put back on it — a change to
  the vault, so OUT_OF_BAND_CHANGE ``intent`` (naming the tags) comes first, then the write, then
  ``success`` with ``policy_restored``.

Event Grid delivers at least once and may send the same fact with different ids, at the same time too, so
each fact (type, secret, version) is a claim (partition ``kv-event``, ``shared.services.claims.claim``)
that is pending until its action is done and held under a short lease: a delivery that finds it done
does nothing; one that finds another delivery's lease running raises ClaimHeld, to be delivered again
later; one that finds it pending with the lease ended (an earlier one failed, or died, part-way) takes it
over and does the steps still missing. A dependency failure is raised (the lease released), for Event
Grid to deliver again later.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from shared.domain.audit import Action, Result
from shared.domain.errors import Conflict, DomainError, NotFound, SecretDisabled
from shared.domain.key_vault_events import KeyVaultEvent, KeyVaultEventType
from shared.domain.policy import MANAGED_BY_TAG, POLICY_TAGS, RotationPolicy
from shared.domain.rotation import RotationReason, RotationRequest, validate_correlation_id
from shared.domain.secrets import MAX_TAGS, InvalidSecret, SecretVersion
from shared.domain.targets import is_reserved
from shared.ports import SecretStore
from shared.services.audit import AuditTrail
from shared.services.claims import Claim, ClaimHeld, claim
from shared.services.expiry import Asked, notify_expiry, thresholds_of
from shared.services.peers import Peers
from shared.services.rotation import PARTITION as ROTATION_PARTITION
from shared.services.rotation import Busy, acquire, release, written_by_service

logger = logging.getLogger(__name__)

#: The step name of the write lease while a dropped policy is put back on an out-of-band version.
RESTORING = "restoring_policy"
PARTITION = "kv-event"
#: Key Vault sends SecretNearExpiry 30 days before exp; the delivery may come a little before our clock
#: agrees that a threshold is crossed, or SecretExpired a moment before it agrees that exp has passed.
WARN_SLACK = timedelta(days=1)
EXPIRED_SLACK = timedelta(minutes=5)


@dataclass(frozen=True)
class EventOutcome:
    """What a delivery did: ``status`` is ``acted``, ``duplicate`` or ``ignored``, with the reason."""

    status: str
    reason: str


def handle_event(peers: Peers, event: KeyVaultEvent) -> EventOutcome:
    """Act on one Key Vault secret event, once per fact whatever the deliveries.

    Raises DependencyUnavailable (AuditUnavailable, RequestsNotSent among them) or Forbidden when the
    vault, the queue, the audit or the topic fails: the fact's claim stays pending (its lease released)
    and a redelivery finishes it. Raises ClaimHeld when another delivery of the same fact (or the daily
    check, for its notice) is acting on it right now: delivered again later, this one finds the fact done,
    or that holder's lease run out (it died) and finishes it. Never raises for an event that names nothing
    this service acts on.
    """
    trail = peers.trail
    if event.vault_name.lower() != trail.vault.lower():
        return _ignored(event, f"about the vault {event.vault_name[:64]!r}, not {trail.vault!r}")
    if not event.is_secret:
        return _ignored(event, f"about a {event.object_type[:32]!r}, not a secret")
    if is_reserved(event.name, peers.reserved):
        return _ignored(event, "about the service's own secret")
    key = f"{event.type.short}:{event.name.lower()}:{event.version}"
    try:
        held = claim(peers.states, PARTITION, key, peers.clock, event_id=event.id)
    except ClaimHeld:
        logger.info("%s of %s version %s: another delivery is acting on it", *_names(event))
        raise
    if held is None:
        logger.info("%s of %s version %s: done already", *_names(event))
        return EventOutcome("duplicate", "acted on before")
    cid = _correlation_id(event)
    with held.releasing():
        try:
            if event.type == KeyVaultEventType.NEW_VERSION:
                outcome = _new_version(peers, event, held, cid)
            else:
                outcome = _expiry(peers, event, cid)
        except NotFound:
            outcome = EventOutcome("ignored", "the secret or version no longer exists")
        held.finish(outcome=outcome.status)
    logger.info("%s of %s version %s: %s (%s)", *_names(event), outcome.status, outcome.reason)
    return outcome


def _expiry(peers: Peers, event: KeyVaultEvent, cid: str) -> EventOutcome:
    try:
        current = peers.store.get_properties(event.name)
    except SecretDisabled:
        return EventOutcome("ignored", "the current version is disabled")
    if current.version.lower() != event.version:
        return EventOutcome("ignored", "about an old version")
    if RotationPolicy.is_managed(current.tags) and not current.managed:
        request = RotationRequest(
            secret_name=current.name,
            reason=RotationReason.EVENT,
            requested_at=peers.clock.now(),
            correlation_id=cid,
            vault=peers.trail.vault,
        )
        peers.requests.send([request])
        return EventOutcome("acted", "rotation requested")
    warn = event.type == KeyVaultEventType.NEAR_EXPIRY
    asked = Asked(f"key_vault_event:{event.type.short}", cid, warn, WARN_SLACK, EXPIRED_SLACK)
    sent = notify_expiry(peers, current, thresholds_of(current.tags), asked)
    if sent is None:
        return EventOutcome("ignored", "nothing due per the vault, or notified before")
    return EventOutcome("acted", f"{sent} notified")


@dataclass(frozen=True)
class _Restore:
    """The policy tags to put back on an out-of-band version (``tags``: only those that change), and the
    version they come from. Kept on the fact's claim once its intent is on record: after the write the
    vault no longer shows that anything was missing."""

    tags: dict[str, str]
    source: str

    def fields(self) -> dict[str, str]:
        return {"restore_tags": json.dumps(self.tags, sort_keys=True), "restore_from": self.source}

    @classmethod
    def of(cls, state: Mapping[str, Any]) -> _Restore | None:
        """The plan stored on a claim; None when it is missing or malformed (storage anyone with access
        could write: only policy tags are ever taken from it)."""
        try:
            tags = json.loads(str(state.get("restore_tags")))
        except ValueError:
            return None
        source = state.get("restore_from")
        if not isinstance(tags, dict) or not tags or not isinstance(source, str):
            return None
        if not all(k in POLICY_TAGS and isinstance(v, str) for k, v in tags.items()):
            return None
        return cls(tags, source)

    def details(self) -> dict[str, object]:
        return {"restore_tags": sorted(self.tags), "restore_from": self.source}


def _new_version(peers: Peers, event: KeyVaultEvent, held: Claim, cid: str) -> EventOutcome:
    """OUT_OF_BAND_CHANGE for a version this service did not make. A restore of a dropped policy is a
    change to the vault, so it is recorded as the house records changes: OUT_OF_BAND_CHANGE ``intent``
    naming the tags to restore (fail closed: no intent on record, no write), the write, then ``success``
    (or ``failure``). Resumable: the plan is kept on the claim with the intent, and the write is skipped
    when the version already carries the tags (a crash after it)."""
    planned = _Restore.of(held.state) if held.has("intent") else None
    if held.has("intent") and planned is None:
        logger.warning("restore plan of %s version %s unreadable; planned again", event.name, event.version)
    try:
        version = peers.store.get_properties(event.name, event.version)
    except NotFound as err:
        if planned is None:
            raise
        return _restore_failed(peers.trail, event.name, event.version, planned, err, cid)
    if planned is None:
        if version.managed:
            return EventOutcome("ignored", "certificate-backed: Key Vault renewed the certificate")
        if written_by_service(version, peers.states):
            return EventOutcome("ignored", "made by this service")
        planned = _plan_restore(version, peers.store)
    if planned is None:
        peers.trail.record(
            Action.OUT_OF_BAND_CHANGE, secret_name=version.name, version=version.version, correlation_id=cid,
            details={"source": "key_vault_event"},
        )  # fmt: skip
        return EventOutcome("acted", "out-of-band version recorded")
    return _restore(peers, version, held, planned, cid)


def _restore(peers: Peers, version: SecretVersion, held: Claim, planned: _Restore, cid: str) -> EventOutcome:
    """The planned restore of the version's policy: its intent on record and on the claim, the write, its
    outcome on record."""
    base = {"source": "key_vault_event"}
    if not held.has("intent"):
        peers.trail.record(
            Action.OUT_OF_BAND_CHANGE,
            secret_name=version.name,
            version=version.version,
            result=Result.INTENT,
            correlation_id=cid,
            details={**base, **planned.details()},
        )
        # On the claim before the write (and the lease renewed): after it, only the claim knows the plan.
        held.save(intent=True, **planned.fields())
    restored = True
    if {**version.tags, **planned.tags} != version.tags:
        try:
            restored = _write_restore(peers, version, planned)
        except Busy:
            raise  # another write to the secret holds its lease: Event Grid delivers again later
        except (NotFound, InvalidSecret, Conflict) as err:
            # Gone, or refused for good (too many tags now, certificate-backed): retrying cannot help.
            return _restore_failed(peers.trail, version.name, version.version, planned, err, cid)
    peers.trail.record(
        Action.OUT_OF_BAND_CHANGE,
        secret_name=version.name,
        version=version.version,
        correlation_id=cid,
        details={
            **base,
            "policy_restored": restored,
            "restored_tags": sorted(planned.tags) if restored else [],
            "restored_from": planned.source,
        },
    )
    if not restored:
        return EventOutcome("acted", "out-of-band version recorded; a policy was applied meanwhile")
    return EventOutcome("acted", "out-of-band version recorded, policy restored")


def _write_restore(peers: Peers, version: SecretVersion, planned: _Restore) -> bool:
    """Put the planned policy tags back on ``version``, under the secret's write lease, so a policy change
    or rotation at the same moment is neither overwritten nor overwrites this. Returns False when the
    version carries a policy by then (applied meanwhile: left as it is). Raises Busy (another write holds
    the lease), NotFound, InvalidSecret, Conflict."""
    store, states = peers.store, peers.states
    held = states.get(ROTATION_PARTITION, version.name.lower())
    progress, etag = acquire(peers, version.name, held, RESTORING)
    try:
        now = store.get_properties(version.name, version.version)
        if RotationPolicy.is_managed(now.tags):
            return False
        merged = {**now.tags, **planned.tags}
        if merged != now.tags:
            store.update_properties(version.name, version.version, tags=merged)
            logger.warning(
                "out-of-band version %s of %s dropped its policy; restored from %s",
                version.version,
                version.name,
                planned.source,
            )
        return True
    finally:
        release(states, version.name, progress, etag, new_version=None)


def _restore_failed(
    trail: AuditTrail, name: str, version: str, planned: _Restore, err: DomainError, cid: str
) -> EventOutcome:
    trail.record(
        Action.OUT_OF_BAND_CHANGE,
        secret_name=name,
        version=version,
        result=Result.FAILURE,
        correlation_id=cid,
        details={"source": "key_vault_event", **planned.details(), "error_class": type(err).__name__},
        error=str(err)[:500],
    )
    logger.warning("policy of %s version %s not restored: %s", name, version, type(err).__name__)
    return EventOutcome("acted", "out-of-band version recorded, policy not restored")


def _plan_restore(version: SecretVersion, store: SecretStore) -> _Restore | None:
    """When the version before this one carried a policy and this one dropped it, the policy tags to merge
    back onto this version (its own tags kept); None when there is nothing to restore."""
    if RotationPolicy.is_managed(version.tags):
        return None
    earlier = [
        v
        for v in store.list_versions(version.name)
        if v.version.lower() != version.version.lower() and v.created <= version.created
    ]
    if not earlier:
        return None
    # Versions are stamped in whole seconds: among ties, the managed one (restoring is the safe side).
    previous = max(earlier, key=lambda v: (v.created, RotationPolicy.is_managed(v.tags)))
    if not RotationPolicy.is_managed(previous.tags):
        return None
    policy = {k: previous.tags[k] for k in POLICY_TAGS if k in previous.tags}
    merged = {**version.tags, **{k: v for k, v in policy.items() if k not in version.tags}}
    merged[MANAGED_BY_TAG] = policy[MANAGED_BY_TAG]
    if len(merged) > MAX_TAGS:
        logger.warning("policy of %s not restored: %d tags would exceed the limit", version.name, len(merged))
        return None
    return _Restore({k: v for k, v in merged.items() if version.tags.get(k) != v}, previous.version)


def _correlation_id(event: KeyVaultEvent) -> str:
    try:
        validate_correlation_id(event.id)
    except ValueError:
        return uuid.uuid4().hex
    return event.id


def _names(event: KeyVaultEvent) -> tuple[str, str, str]:
    return event.type.short, event.name, event.version


def _ignored(event: KeyVaultEvent, why: str) -> EventOutcome:
    logger.info("%s of %s version %s ignored: %s", event.type.short, event.name, event.version, why)
    return EventOutcome("ignored", why)
