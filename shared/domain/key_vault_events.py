"""Key Vault's Event Grid events about secrets, parsed defensively. Pure: no azure.*, no I/O.

An event says only where to look (which vault, which secret, which version), never what is true: the
services read the vault before they act. Key Vault's own documentation shows the data with stray whitespace
in keys and ``NBF``/``EXP`` as strings; Event Grid adds fields over time. So keys are matched after
trimming and without regard to case, unknown fields are ignored, times may be numbers or numeric strings
(Unix seconds), and anything that cannot name a secret version is ``MalformedEvent`` — for the caller to
log and drop (raising would make Event Grid retry a hopeless delivery for 24 hours).

The data: ``Id, VaultName, ObjectType, ObjectName, Version, NBF, EXP``; the event's subject is the secret
name. Never a value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from shared.domain.secrets import NAME_PATTERN, VERSION_PATTERN

#: Key Vault's ``ObjectType`` for secrets (keys and certificates have events of their own types).
SECRET_OBJECT_TYPE = "secret"
#: Longer strings are not a field Key Vault sends; refused before anything else looks at them.
_MAX_FIELD_CHARS = 1024
_FIELDS = frozenset({"id", "vaultname", "objecttype", "objectname", "version", "nbf", "exp"})


class KeyVaultEventType(StrEnum):
    NEAR_EXPIRY = "Microsoft.KeyVault.SecretNearExpiry"
    EXPIRED = "Microsoft.KeyVault.SecretExpired"
    NEW_VERSION = "Microsoft.KeyVault.SecretNewVersionCreated"

    @property
    def short(self) -> str:
        """A stable short name for claims and logs."""
        return {
            KeyVaultEventType.NEAR_EXPIRY: "near-expiry",
            KeyVaultEventType.EXPIRED: "expired",
            KeyVaultEventType.NEW_VERSION: "new-version",
        }[self]


class MalformedEvent(ValueError):
    """The event cannot name a secret version: log it (names only) and drop it."""


@dataclass(frozen=True, kw_only=True)
class KeyVaultEvent:
    """What a Key Vault secret event claims. ``not_before``/``expires`` are as the event says them: only
    for logs; the vault's own properties decide."""

    id: str
    type: KeyVaultEventType
    vault_name: str
    object_type: str
    name: str
    version: str
    not_before: datetime | None = None
    expires: datetime | None = None

    @property
    def is_secret(self) -> bool:
        return self.object_type.lower() == SECRET_OBJECT_TYPE


def event_type(raw: object) -> KeyVaultEventType | None:
    """The event type, or None for a type this service does not handle (matched without regard to case
    or surrounding whitespace)."""
    if not isinstance(raw, str):
        return None
    wanted = raw.strip().lower()
    return next((t for t in KeyVaultEventType if t.value.lower() == wanted), None)


def parse_event(
    *, event_id: object, type_: KeyVaultEventType, subject: object, data: object
) -> KeyVaultEvent:
    """The event's claims. Raises MalformedEvent saying what is wrong (never echoing a whole payload)."""
    if not isinstance(data, Mapping):
        raise MalformedEvent(f"data is {type(data).__name__}, not an object")
    fields = _normalized(data)
    vault = _text(fields, "vaultname")
    object_type = _text(fields, "objecttype")
    version = _text(fields, "version")
    name = _optional_text(fields, "objectname")
    subject_name = subject.strip() if isinstance(subject, str) and subject.strip() else None
    if name is None:
        name = subject_name
    if name is None:
        raise MalformedEvent("neither data.ObjectName nor subject names the secret")
    if subject_name is not None and subject_name.lower() != name.lower():
        raise MalformedEvent("subject and data.ObjectName name different secrets")
    if not NAME_PATTERN.fullmatch(name):
        raise MalformedEvent("the secret name is not a Key Vault name")
    if not VERSION_PATTERN.fullmatch(version):
        raise MalformedEvent("data.Version is not a version id")
    return KeyVaultEvent(
        id=event_id.strip()[:128] if isinstance(event_id, str) and event_id.strip() else "",
        type=type_,
        vault_name=vault,
        object_type=object_type,
        name=name,
        version=version.lower(),
        not_before=_time(fields, "nbf"),
        expires=_time(fields, "exp"),
    )


def _normalized(data: Mapping[Any, Any]) -> dict[str, Any]:
    """The fields this service reads, keys trimmed and lower-cased; everything else dropped. Two keys that
    normalize to the same field are ambiguous."""
    fields: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            continue
        normal = key.strip().lower()
        if normal not in _FIELDS:
            continue
        if normal in fields:
            raise MalformedEvent(f"data has the field {normal} twice")
        fields[normal] = value
    return fields


def _optional_text(fields: Mapping[str, Any], key: str) -> str | None:
    value = fields.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedEvent(f"data.{key} is {type(value).__name__}, not a string")
    if len(value) > _MAX_FIELD_CHARS:
        raise MalformedEvent(f"data.{key} is too long")
    return value.strip() or None


def _text(fields: Mapping[str, Any], key: str) -> str:
    value = _optional_text(fields, key)
    if value is None:
        raise MalformedEvent(f"data.{key} is missing")
    return value


def _time(fields: Mapping[str, Any], key: str) -> datetime | None:
    """Unix seconds as a number or a numeric string; None when absent, null or empty."""
    value = fields.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise MalformedEvent(f"data.{key} is a boolean, not a time")
    if isinstance(value, str):
        if len(value) > 32:
            raise MalformedEvent(f"data.{key} is too long")
        try:
            value = float(value.strip())
        except ValueError:
            raise MalformedEvent(f"data.{key} is not Unix seconds") from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise MalformedEvent(f"data.{key} is not Unix seconds")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise MalformedEvent(f"data.{key} is out of range") from None
