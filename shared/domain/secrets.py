"""Key Vault secrets as the services see them: properties of versions, and Key Vault's limits.

Pure: no azure.*, no I/O. No model here carries a secret value except ``SecretValue``, the one return type
of ``SecretStore.get_value``, which keeps the value out of its repr.

Key Vault keeps every version of a secret with its own properties (tags included: a new version carries
only the tags it was set with), lists versions in no useful order and stamps ``created`` in whole seconds,
so two versions set in the same second tie. Track versions by id, never by order or time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from shared.domain.errors import DomainError

#: A Key Vault secret name: 1-127 characters of 0-9, a-z, A-Z and -. The one definition (the HTTP models,
#: the settings and the CLI use it too).
NAME = r"[0-9A-Za-z-]{1,127}"
NAME_PATTERN = re.compile(NAME)
# Not Key Vault's documented shape (32 hex digits) but anything that cannot be one is not a version: it
# is refused before it reaches a URL.
#: A vault as the service names it (shared.config.vault_name): Key Vault's DNS label, or host and port of a
#: local emulator (``127-0-0-1-8443``).
VAULT = r"[0-9a-z](?:[0-9a-z-]{0,61}[0-9a-z])?"
VAULT_PATTERN = re.compile(VAULT)
VERSION = r"[0-9A-Za-z]{1,64}"
VERSION_PATTERN = re.compile(VERSION)
MAX_VALUE_BYTES = 25 * 1024
MAX_TAGS = 15
MAX_TAG_CHARS = 256
MAX_PAGE_SIZE = 25


class InvalidSecret(DomainError, ValueError):
    """A name, value or tag set outside Key Vault's limits (the vault answers 400 ``BadParameter``).

    The caller's input (or a generated value) is wrong: retrying cannot help. ``parameter`` names the
    request's parameter or field at fault (a 400 names it): the secret itself (``name``: its name, or the
    tags it already carries) unless the raiser knows a narrower one.
    """

    def __init__(self, message: str, *, parameter: str = "name") -> None:
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True, kw_only=True)
class SecretItem:
    """The properties of a secret's current version as a listing returns them: no version id, no value.

    ``managed``: the secret backs a Key Vault certificate (rotate the certificate, never the secret).
    ``not_before`` and ``expires`` are informational in Key Vault (reads still work): enforcing them is
    this service's job.
    """

    name: str
    enabled: bool
    created: datetime
    updated: datetime
    not_before: datetime | None = None
    expires: datetime | None = None
    content_type: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    managed: bool = False


@dataclass(frozen=True, kw_only=True)
class SecretVersion(SecretItem):
    """The properties of one version of a secret, with its id. Never a value.

    ``key_id``: the ``kid`` of a certificate-backed version's key, as a read of the version answers it;
    None otherwise, and None in listings (Key Vault's list items carry ``managed`` but no ``kid``).
    """

    version: str
    key_id: str | None = None


@dataclass(frozen=True)
class SecretValue:
    """A version's properties and its value: only ``SecretStore.get_value`` returns one. The value is
    kept out of repr (and so out of logs and tracebacks that format the object)."""

    properties: SecretVersion
    value: str = field(repr=False)


def validate_name(name: str) -> None:
    """Raise InvalidSecret unless ``name`` is 1-127 characters of ``0-9 A-Z a-z -``."""
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidSecret("secret names are 1-127 characters of 0-9, a-z, A-Z and -")


def is_version_id(version: str) -> bool:
    """Whether ``version`` could be a version id at all (a string that cannot is no version: NotFound)."""
    return VERSION_PATTERN.fullmatch(version) is not None


def validate_value(value: str) -> None:
    """Raise InvalidSecret when the value's UTF-8 encoding is over 25 KiB (never echoes the value)."""
    if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
        raise InvalidSecret(f"secret values are at most {MAX_VALUE_BYTES} bytes (UTF-8)")


def validate_tags(tags: Mapping[str, str]) -> None:
    """Raise InvalidSecret for more than 15 tags, or a tag name (1-256) or value (0-256) too long."""
    if len(tags) > MAX_TAGS:
        raise InvalidSecret(f"a secret version has at most {MAX_TAGS} tags, got {len(tags)}")
    for name, value in tags.items():
        if not 1 <= len(name) <= MAX_TAG_CHARS:
            raise InvalidSecret(f"tag names are 1-{MAX_TAG_CHARS} characters")
        if len(value) > MAX_TAG_CHARS:
            raise InvalidSecret(f"tag values are at most {MAX_TAG_CHARS} characters (tag {name[:64]!r})")
