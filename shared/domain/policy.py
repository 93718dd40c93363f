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
- ``validity-days``: optional; a new version expires this many days after creation (≥ interval).
- ``owner``: optional; the team or app that consumes the secret, for notifications.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

MANAGED_BY_TAG = "managed-by"
MANAGED_BY_VALUE = "secret-lifecycle"
KIND_TAG = "secret-kind"
INTERVAL_TAG = "rotation-interval-days"
VALIDITY_TAG = "validity-days"
OWNER_TAG = "owner"

MAX_INTERVAL_DAYS = 730
MAX_VALIDITY_DAYS = 2 * MAX_INTERVAL_DAYS


class SecretKind(StrEnum):
    API_KEY = "api-key"
    DATABASE_PASSWORD = "database-password"
    JWT_SIGNING_KEY = "jwt-signing-key"
    ENCRYPTION_KEY = "encryption-key"


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

    @staticmethod
    def is_managed(tags: Mapping[str, str] | None) -> bool:
        return bool(tags) and (tags or {}).get(MANAGED_BY_TAG) == MANAGED_BY_VALUE

    @classmethod
    def from_tags(cls, tags: Mapping[str, str] | None) -> RotationPolicy:
        """Parse a managed secret's policy. Raises PolicyError naming the tag that is wrong."""
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
        if validity is not None and validity < interval:
            raise PolicyError(VALIDITY_TAG, "must be at least rotation-interval-days")
        return cls(kind=kind, interval=interval, validity=validity, owner=tags.get(OWNER_TAG) or None)

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
        return tags

    def next_rotation(self, current_version_created: datetime) -> datetime:
        return current_version_created + self.interval

    def is_due(self, current_version_created: datetime, now: datetime) -> bool:
        return now >= self.next_rotation(current_version_created)

    def expires_on(self, created: datetime) -> datetime | None:
        return None if self.validity is None else created + self.validity


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
