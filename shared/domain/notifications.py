"""Consumer notifications: what changed, never a value. Consumers reload from Key Vault themselves."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

EVENT_SOURCE = "/secret-lifecycle"
SUSPICIOUS_ACTIVITY = "SecretLifecycle.SuspiciousActivity"
#: The digest writer found audit chains that went backwards or vanished, or a broken digest chain.
AUDIT_TAMPERING = "SecretLifecycle.AuditTampering"
SECRET_ROTATED = "SecretLifecycle.SecretRotated"
ROTATION_FAILED = "SecretLifecycle.RotationFailed"
#: A secret's current version expires within one of its warning thresholds / has expired.
SECRET_NEAR_EXPIRY = "SecretLifecycle.SecretNearExpiry"
SECRET_EXPIRED = "SecretLifecycle.SecretExpired"
#: The previous version's value was made current again (as a new version).
SECRET_ROLLED_BACK = "SecretLifecycle.SecretRolledBack"
#: Versions of a secret were disabled by an emergency revocation (its result in the data).
SECRET_REVOKED = "SecretLifecycle.SecretRevoked"
#: A managed secret was soft-deleted (decommissioned) / recovered.
SECRET_DELETED = "SecretLifecycle.SecretDeleted"
SECRET_RECOVERED = "SecretLifecycle.SecretRecovered"


@dataclass(frozen=True)
class Notification:
    """One CloudEvent: ``type`` like ``SecretLifecycle.SecretRotated``, ``subject`` the secret name."""

    type: str
    subject: str
    time: datetime
    data: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
