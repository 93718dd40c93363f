"""Rotation policy of a managed secret, carried in the secret's Key Vault tags.

Tags are the one place a policy can live next to the secret without another store, they are visible in
the portal and in Event Grid consumers' tooling, and reading them needs no access to the value. A secret
is managed by this service only when it carries ``managed-by: secret-lifecycle``; everything else in the
vault is left alone.

Tags (Key Vault allows 15 per secret, names and values up to 256 characters):

- ``managed-by``: must be ``secret-lifecycle``.
- ``secret-kind``: what generates a new value: ``api-key``, ``database-password``, ``jwt-signing-key``,
  ``encryption-key``.
- ``rotation-interval-days``: rotate this many days after the current version was created (1-730).
- ``validity-days``: optional; a new version expires this many days after creation (≥ interval + 30,
  Key Vault's near-expiry window, or every new version would be due at once).
- ``owner``: optional; the team or app that consumes the secret, for notifications.
- ``rotator``: optional; where a new value must also be set: ``key-vault`` (default: only in the vault),
  ``postgres-single-user``, ``postgres-alternating``, ``webhook``.
- ``rotation-target``: the rotator's reference: the consumer's HTTPS URL for ``webhook`` (plain http
  only to a loopback host, and only on a development host), the Key Vault
  secret holding the admin credential for ``postgres-alternating``; none for the others.
- ``rotation-grace-hours``: how long the previous version stays enabled after a promotion (0-720, default
  24). ``encryption-key`` secrets keep their previous versions enabled unless it is set: old ciphertext
  needs them.
- ``expiry-warning-days``: thresholds before ``exp`` at which to warn, e.g. ``30,7,1`` (the default).

A managed secret is due when its interval has elapsed since its current version was created, or when that
version expires within Key Vault's 30-day near-expiry window. A new version expires ``validity-days`` after
creation or, without that tag, interval + 30 days after: Key Vault's SecretNearExpiry event (30 days
before ``exp``) then arrives when the next rotation is due, so the event and the sweep are two triggers of
one idempotent rotate-if-due.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from shared.domain.secrets import NAME_PATTERN
from shared.domain.targets import is_reserved

MANAGED_BY_TAG = "managed-by"
MANAGED_BY_VALUE = "secret-lifecycle"
KIND_TAG = "secret-kind"
INTERVAL_TAG = "rotation-interval-days"
VALIDITY_TAG = "validity-days"
OWNER_TAG = "owner"
ROTATOR_TAG = "rotator"
TARGET_TAG = "rotation-target"
GRACE_TAG = "rotation-grace-hours"
WARNING_TAG = "expiry-warning-days"
#: Every tag a policy is made of.
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

#: Key Vault sends SecretNearExpiry this long before ``exp``; a version expiring within it is due.
NEAR_EXPIRY = timedelta(days=30)
DEFAULT_GRACE = timedelta(hours=24)
MAX_GRACE_HOURS = 720
DEFAULT_WARNING_DAYS = (30, 7, 1)
MAX_WARNINGS = 5

MAX_INTERVAL_DAYS = 730
MAX_VALIDITY_DAYS = 2 * MAX_INTERVAL_DAYS


class SecretKind(StrEnum):
    API_KEY = "api-key"
    DATABASE_PASSWORD = "database-password"
    JWT_SIGNING_KEY = "jwt-signing-key"
    ENCRYPTION_KEY = "encryption-key"


class Rotator(StrEnum):
    KEY_VAULT = "key-vault"
    POSTGRES_SINGLE_USER = "postgres-single-user"
    POSTGRES_ALTERNATING = "postgres-alternating"
    WEBHOOK = "webhook"


#: The service's own secrets under their default names (deployments may name the anchor otherwise: the
#: callers add theirs through ``reserved``).
SERVICE_SECRETS = ("audit-hmac-key", "audit-digest-anchor")


class PolicyError(ValueError):
    """A managed secret's tags do not form a valid policy. ``tag`` names the offending tag."""

    def __init__(self, tag: str, problem: str) -> None:
        super().__init__(f"tag {tag}: {problem}")
        self.tag = tag


@dataclass(frozen=True)
class RotationPolicy:
    kind: SecretKind
    interval: timedelta
    validity: timedelta | None = None
    owner: str | None = None
    rotator: Rotator = Rotator.KEY_VAULT
    target: str | None = None
    #: None: the default (24 h; for encryption keys, keep previous versions enabled).
    grace: timedelta | None = None
    warning_days: tuple[int, ...] = DEFAULT_WARNING_DAYS

    @staticmethod
    def is_managed(tags: Mapping[str, str] | None) -> bool:
        return bool(tags) and (tags or {}).get(MANAGED_BY_TAG) == MANAGED_BY_VALUE

    @classmethod
    def from_tags(
        cls, tags: Mapping[str, str] | None, *, name: str | None = None, reserved: Collection[str] = ()
    ) -> RotationPolicy:
        """Parse the policy of the managed secret ``name``. ``reserved``: the service's own secrets, which
        no ``rotation-target`` may name (nor the secret itself: it is checked before anything is read).
        Raises PolicyError naming the tag that is wrong."""
        tags = tags or {}
        if tags.get(MANAGED_BY_TAG) != MANAGED_BY_VALUE:
            raise PolicyError(MANAGED_BY_TAG, f"secret is not managed (expected {MANAGED_BY_VALUE!r})")
        raw_kind = tags.get(KIND_TAG)
        try:
            kind = SecretKind(raw_kind or "")
        except ValueError:
            allowed = ", ".join(k.value for k in SecretKind)
            raise PolicyError(KIND_TAG, f"{raw_kind!r} is not one of {allowed}") from None
        interval = _days(tags, INTERVAL_TAG, maximum=MAX_INTERVAL_DAYS)
        if interval is None:
            raise PolicyError(INTERVAL_TAG, "is missing")
        validity = _days(tags, VALIDITY_TAG, maximum=MAX_VALIDITY_DAYS)
        if validity is not None and validity < interval + NEAR_EXPIRY:
            # Shorter, and a new version would be due (near expiry) the moment it is made: every
            # trigger would rotate again.
            raise PolicyError(VALIDITY_TAG, "must be at least rotation-interval-days + 30")
        rotator = _rotator(tags)
        grace = _grace(tags)
        if (
            rotator == Rotator.POSTGRES_ALTERNATING
            and (DEFAULT_GRACE if grace is None else grace) >= interval
        ):
            # The next rotation changes the password of the previous version's role: its grace must be
            # over by then, or consumers still allowed to use it are cut off.
            raise PolicyError(
                GRACE_TAG, "must be shorter than rotation-interval-days for postgres-alternating"
            )
        return cls(
            kind=kind,
            interval=interval,
            validity=validity,
            owner=tags.get(OWNER_TAG) or None,
            rotator=rotator,
            target=_target(tags, rotator, name, reserved),
            grace=grace,
            warning_days=_warning_days(tags),
        )

    def to_tags(self) -> dict[str, str]:
        tags = {
            MANAGED_BY_TAG: MANAGED_BY_VALUE,
            KIND_TAG: self.kind.value,
            INTERVAL_TAG: str(self.interval.days),
        }
        if self.validity is not None:
            tags[VALIDITY_TAG] = str(self.validity.days)
        if self.owner:
            tags[OWNER_TAG] = self.owner
        if self.rotator != Rotator.KEY_VAULT:
            tags[ROTATOR_TAG] = self.rotator.value
        if self.target:
            tags[TARGET_TAG] = self.target
        if self.grace is not None:
            tags[GRACE_TAG] = str(int(self.grace.total_seconds() // 3600))
        if self.warning_days != DEFAULT_WARNING_DAYS:
            tags[WARNING_TAG] = ",".join(str(d) for d in self.warning_days)
        return tags

    def next_rotation(self, current_version_created: datetime, expires: datetime | None = None) -> datetime:
        """When the current version is due: its interval, or the start of its near-expiry window."""
        due = current_version_created + self.interval
        return due if expires is None else min(due, expires - NEAR_EXPIRY)

    def is_due(
        self, current_version_created: datetime, now: datetime, expires: datetime | None = None
    ) -> bool:
        return now >= self.next_rotation(current_version_created, expires)

    def expires_on(self, created: datetime) -> datetime:
        """``exp`` of a version created then: validity-days, else interval + the near-expiry window."""
        return created + (self.validity if self.validity is not None else self.interval + NEAR_EXPIRY)

    def previous_grace(self) -> timedelta | None:
        """How long the previous version stays enabled after a promotion; None: it stays enabled."""
        if self.grace is not None:
            return self.grace
        return None if self.kind == SecretKind.ENCRYPTION_KEY else DEFAULT_GRACE


def _days(tags: Mapping[str, str], tag: str, *, maximum: int) -> timedelta | None:
    """A whole number of days in 1..maximum, or None when the tag is absent or empty."""
    raw = tags.get(tag)
    if raw is None or raw.strip() == "":
        return None
    text = raw.strip()
    if not text.isdigit():
        raise PolicyError(tag, f"{raw!r} is not a whole number of days")
    days = int(text)
    if not 1 <= days <= maximum:
        raise PolicyError(tag, f"{days} is out of range (1-{maximum})")
    return timedelta(days=days)


def _rotator(tags: Mapping[str, str]) -> Rotator:
    raw = tags.get(ROTATOR_TAG)
    if raw is None or raw.strip() == "":
        return Rotator.KEY_VAULT
    try:
        return Rotator(raw.strip())
    except ValueError:
        allowed = ", ".join(r.value for r in Rotator)
        raise PolicyError(ROTATOR_TAG, f"{raw!r} is not one of {allowed}") from None


def _target(
    tags: Mapping[str, str], rotator: Rotator, name: str | None, reserved: Collection[str]
) -> str | None:
    raw = (tags.get(TARGET_TAG) or "").strip() or None
    if rotator == Rotator.WEBHOOK:
        parts = urlsplit(raw or "")
        # Plain http only to a loopback host (a consumer on a developer's machine); the webhook rotator
        # refuses even that outside a development host.
        secure = parts.scheme == "https" or (parts.scheme == "http" and _loopback(parts.hostname))
        if not secure or not parts.hostname or parts.username or parts.password:
            raise PolicyError(
                TARGET_TAG, "a webhook rotator needs the consumer's https URL, without credentials"
            )
    elif rotator == Rotator.POSTGRES_ALTERNATING:
        if raw is None or not NAME_PATTERN.fullmatch(raw):
            raise PolicyError(
                TARGET_TAG, "postgres-alternating needs the name of the admin credential's secret"
            )
        # Checked here, before anything reads it: the admin credential is another secret of the vault,
        # never one of the service's own (the audit key, the digest anchor, companions) nor this one.
        if is_reserved(raw, (*SERVICE_SECRETS, *reserved)):
            raise PolicyError(TARGET_TAG, "names one of the service's own secrets")
        if name is not None and raw.lower() == name.lower():
            raise PolicyError(TARGET_TAG, "names the secret itself")
    elif raw is not None:
        raise PolicyError(TARGET_TAG, f"the {rotator.value} rotator takes no target")
    return raw


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _grace(tags: Mapping[str, str]) -> timedelta | None:
    raw = tags.get(GRACE_TAG)
    if raw is None or raw.strip() == "":
        return None
    text = raw.strip()
    if not text.isdigit() or int(text) > MAX_GRACE_HOURS:
        raise PolicyError(GRACE_TAG, f"{raw!r} is not a whole number of hours from 0 to {MAX_GRACE_HOURS}")
    return timedelta(hours=int(text))


def _warning_days(tags: Mapping[str, str]) -> tuple[int, ...]:
    raw = tags.get(WARNING_TAG)
    if raw is None or raw.strip() == "":
        return DEFAULT_WARNING_DAYS
    parts = [p.strip() for p in raw.split(",")]
    if not all(p.isdigit() and 1 <= int(p) <= 365 for p in parts) or len(parts) > MAX_WARNINGS:
        raise PolicyError(WARNING_TAG, f"{raw!r} is not up to {MAX_WARNINGS} whole days from 1 to 365")
    days = tuple(sorted({int(p) for p in parts}, reverse=True))
    return days
