"""The emulated vault: secrets, their versions and the soft-deleted collection, with Key Vault's rules.

All public methods take the store's lock, so one store can serve many request threads. Results are plain
JSON-ready dicts shaped like the service's (SecretBundle, SecretItem, DeletedSecretBundle, ...), with ``id``
URLs under ``base_url``. Names are case-insensitive like Key Vault's; the casing of the first ``set`` is kept.

With a state file, every change is written at once (temporary file + ``os.replace``, mode 0600): a crash
or a ``kill -9`` loses nothing. The file holds secret values in clear text; it is for local development.

Where the service is stricter or less predictable than a naive store, so is this one:

- The service promises no list order, so none is given: ``list_versions`` returns versions ordered by their
  random version id, not by creation (callers sort by ``created`` themselves), and ``list_secrets`` orders
  secrets by a keyed hash of the name (``list_seed``, random per store): a fixed order within one process,
  so paging stays consistent, but not by name. ``list_deleted_secrets`` is ordered by name.
- ``purge_protection``: attributes say ``Recoverable`` and purge is 403; deleted secrets still vanish at
  their scheduled purge date.
- ``delete_delay_ms``: delete and recover complete that long after they are answered. Meanwhile the secret
  is in neither collection as far as reads go (404), and writes to the name are 409 ``Conflict`` with the
  service's inner codes ``ObjectIsBeingDeleted`` / ``ObjectIsBeingRecovered``. As in the service, a secret
  being deleted has already left the active collection: update or delete it again and the answer is 404.
- A soft-deleted name cannot be set again: 409 ``Conflict``, inner code ``ObjectIsDeletedButRecoverable``
  (get, update and delete of it are 404 ``SecretNotFound``, as in the service).
- Certificate-backed secrets (``create_certificate``): ``managed: true`` and a ``kid``; the secrets API
  cannot set, update or delete them (409 ``Conflict``).

The store's time can be shifted (``set_clock_offset``): every timestamp stamped afterwards (``created``,
``updated``, ``deletedDate``, ``scheduledPurgeDate``, a certificate's validity) and the purge of deleted
secrets at their scheduled date use the shifted time, so tests and demos can make secrets that are already
due. Delete and recover delays are real time. The offset is not persisted: a restart starts at 0.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devtools.keyvault_emulator.errors import (
    ServiceError,
    bad_parameter,
    deleted_but_recoverable,
    deleted_secret_not_found,
    managed_by_certificate,
    secret_not_found,
)
from devtools.processes import write_atomically

NAME_PATTERN = re.compile(r"[0-9A-Za-z-]{1,127}")
MAX_VALUE_BYTES = 25 * 1024
MAX_TAGS = 15
MAX_TAG_CHARS = 256
MAX_PAGE_SIZE = 25
RECOVERABLE_DAYS = 90
RECOVERY_LEVEL = "Recoverable+Purgeable"
PROTECTED_RECOVERY_LEVEL = "Recoverable"
STATE_FORMAT = "keyvault-emulator-state"
STATE_VERSION = 1
#: The largest clock shift accepted, either way: ten years.
MAX_CLOCK_OFFSET_SECONDS = 3653 * 86400
#: Characters of ``_list_key``'s hash prefix (blake2b, 8 bytes, hex).
_LIST_HASH_CHARS = 16

JSON = dict[str, Any]
Page = tuple[list[JSON], str | None]


@dataclass
class SecretVersion:
    version: str
    value: str
    enabled: bool
    created: int
    updated: int
    nbf: int | None = None
    exp: int | None = None
    content_type: str | None = None
    tags: dict[str, str] | None = None


@dataclass
class Secret:
    name: str
    versions: list[SecretVersion] = field(default_factory=list)
    deleted_date: int | None = None
    scheduled_purge_date: int | None = None
    # True for the secret of a Key Vault certificate: read-only through the secrets API.
    managed: bool = False

    @property
    def current(self) -> SecretVersion:
        return self.versions[-1]

    def find(self, version: str) -> SecretVersion | None:
        wanted = version.lower()
        for candidate in self.versions:
            if candidate.version == wanted:
                return candidate
        return None


def validate_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise bad_parameter(
            f"The request URI contains an invalid name: {name[:200]}. Secret names are 1-127 characters "
            "of 0-9, a-z, A-Z and -."
        )


class SecretStore:
    """The vault's secrets. ``clock`` returns unix seconds (tests of the store can pass their own).

    ``purge_protection`` and ``delete_delay_ms`` are the vault's settings: see the module docstring.
    """

    def __init__(
        self,
        *,
        state_file: Path | None = None,
        clock: Callable[[], float] = time.time,
        purge_protection: bool = False,
        delete_delay_ms: int = 0,
        list_seed: bytes | None = None,
    ) -> None:
        self.base_url = ""
        self._list_seed = list_seed if list_seed is not None else os.urandom(16)
        self.purge_protection = purge_protection
        self._recovery_level = PROTECTED_RECOVERY_LEVEL if purge_protection else RECOVERY_LEVEL
        self._delay = delete_delay_ms / 1000.0
        self._state_file = state_file
        self._clock = clock
        self._lock = threading.RLock()
        self._active: dict[str, Secret] = {}
        self._deleted: dict[str, Secret] = {}
        self._clock_offset = 0
        # The active secrets' list keys, sorted; rebuilt after a secret enters or leaves the collection, so
        # that a page costs a bisect rather than a sort of the whole vault.
        self._order: list[str] | None = None
        # Lower-case name -> clock time at which its delete (name in _deleted) or recover (name in _active)
        # completes. Not persisted: after a restart every operation has completed.
        self._settling: dict[str, float] = {}

    # ----------------------------------------------------------------------------------------- persistence

    @classmethod
    def open(
        cls, state_file: Path | None, *, purge_protection: bool = False, delete_delay_ms: int = 0
    ) -> SecretStore:
        """A store, loaded from ``state_file`` when that exists. Raises ValueError for an unreadable file."""
        store = cls(state_file=state_file, purge_protection=purge_protection, delete_delay_ms=delete_delay_ms)
        if state_file is not None and state_file.exists():
            store._load(state_file)
        return store

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != STATE_FORMAT or data.get("version") != STATE_VERSION:
                raise ValueError(f"not a version {STATE_VERSION} {STATE_FORMAT} file")
            for raw in data["secrets"]:
                secret = Secret(
                    name=raw["name"],
                    versions=[SecretVersion(**v) for v in raw["versions"]],
                    deleted_date=raw.get("deleted_date"),
                    scheduled_purge_date=raw.get("scheduled_purge_date"),
                    managed=raw.get("managed", False) is True,
                )
                if not secret.versions:
                    raise ValueError(f"secret {secret.name!r} has no versions")
                target = self._active if secret.deleted_date is None else self._deleted
                target[secret.name.lower()] = secret
                self._order = None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"cannot read the state file {path}: {err}") from err

    def save(self) -> None:
        """Write the state file atomically (no-op without one)."""
        if self._state_file is None:
            return
        with self._lock:
            secrets = [asdict(s) for s in (*self._active.values(), *self._deleted.values())]
            payload = json.dumps(
                {"format": STATE_FORMAT, "version": STATE_VERSION, "secrets": secrets}, indent=1
            )
            write_atomically(self._state_file, payload)

    # ---------------------------------------------------------------------------------------------- clock

    def set_clock_offset(self, seconds: int) -> None:
        """Shift every timestamp stamped from now on by ``seconds`` (negative: into the past). Raises
        ValueError beyond ``MAX_CLOCK_OFFSET_SECONDS`` either way."""
        if isinstance(seconds, bool) or not isinstance(seconds, int):
            raise ValueError("the clock offset is a whole number of seconds")
        if abs(seconds) > MAX_CLOCK_OFFSET_SECONDS:
            raise ValueError(f"the clock offset is at most {MAX_CLOCK_OFFSET_SECONDS} seconds either way")
        with self._lock:
            self._clock_offset = seconds

    @property
    def clock_offset(self) -> int:
        with self._lock:
            return self._clock_offset

    def now(self) -> int:
        """The store's time: unix seconds, shifted by the clock offset."""
        with self._lock:
            return self._now()

    def counts(self) -> tuple[int, int]:
        """(active secrets, deleted secrets)."""
        with self._lock:
            return len(self._active), len(self._deleted)

    # ------------------------------------------------------------------------------------------ operations

    def set_secret(self, name: str, body: Any) -> JSON:
        validate_name(name)
        if not isinstance(body, dict):
            raise bad_parameter("The request body must be a JSON object.")
        value = body.get("value")
        if not isinstance(value, str):
            raise bad_parameter("Property 'value' is required and must be a string.")
        if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
            raise bad_parameter(f"Secret value is too large: the maximum is {MAX_VALUE_BYTES} bytes.")
        content_type = _content_type(body.get("contentType"))
        tags = _tags(body.get("tags"))
        attributes = _attributes(body.get("attributes"))
        with self._lock:
            self._expire_deleted()
            now = self._now()
            key = name.lower()
            self._refuse_settling(name, create=True)
            if key in self._deleted:
                raise deleted_but_recoverable(name)
            secret = self._active.get(key)
            if secret is not None and secret.managed:
                raise managed_by_certificate(name)
            if secret is None:
                secret = self._add_active(key, Secret(name=name))
            version = SecretVersion(
                version=uuid.uuid4().hex,
                value=value,
                enabled=attributes.get("enabled", True) is not False,
                created=now,
                updated=now,
                nbf=attributes.get("nbf"),
                exp=attributes.get("exp"),
                content_type=content_type,
                tags=tags,
            )
            secret.versions.append(version)
            self._changed()
            return self._bundle(secret, version, with_value=True)

    def create_certificate(self, name: str, value: str, content_type: str, nbf: int, exp: int) -> JSON:
        """What creating (or renewing) a certificate does to the secrets API: a new version of the managed
        secret ``name`` holding ``value``. 409 when the name is an ordinary secret, or soft-deleted."""
        validate_name(name)
        with self._lock:
            self._expire_deleted()
            key = name.lower()
            self._refuse_settling(name, create=True)
            if key in self._deleted:
                raise deleted_but_recoverable(name)
            secret = self._active.get(key)
            if secret is not None and not secret.managed:
                raise ServiceError(409, "Conflict", f"There is already a secret named {name} in this vault.")
            if secret is None:
                secret = self._add_active(key, Secret(name=name, managed=True))
            now = self._now()
            version = SecretVersion(
                version=uuid.uuid4().hex,
                value=value,
                enabled=True,
                created=now,
                updated=now,
                nbf=nbf,
                exp=exp,
                content_type=content_type,
            )
            secret.versions.append(version)
            self._changed()
            return self._bundle(secret, version, with_value=False)

    def get_secret(self, name: str, version: str | None) -> JSON:
        validate_name(name)
        with self._lock:
            secret, found = self._find_version(name, version)
            if not found.enabled:
                raise ServiceError(
                    403,
                    "Forbidden",
                    "Operation get is not allowed on a disabled secret.",
                    inner_code="SecretDisabled",
                )
            return self._bundle(secret, found, with_value=True)

    def update_secret(self, name: str, version: str | None, body: Any) -> JSON:
        validate_name(name)
        if not isinstance(body, dict):
            raise bad_parameter("The request body must be a JSON object.")
        content_type = _content_type(body.get("contentType")) if "contentType" in body else None
        tags = _tags(body.get("tags")) if "tags" in body else None
        attributes = _attributes(body.get("attributes"))
        with self._lock:
            self._refuse_settling(name, while_deleting=False)  # being deleted: 404 below
            secret, found = self._find_version(name, version)
            if secret.managed:
                raise managed_by_certificate(name)
            if "contentType" in body:
                found.content_type = content_type
            if "tags" in body:
                found.tags = tags
            for attribute, current in attributes.items():
                setattr(found, attribute, current)
            found.updated = self._now()
            self._changed()
            return self._bundle(secret, found, with_value=False)

    def list_secrets(self, maxresults: int, marker: str | None) -> Page:
        with self._lock:
            self._expire_deleted()
            if self._order is None:
                self._order = sorted(self._list_key(key) for key in self._active)
            order = self._order
            position = bisect.bisect_right(order, marker) if marker is not None else 0
            items: list[JSON] = []
            last: str | None = None
            while position < len(order) and len(items) < maxresults:
                list_key = order[position]
                position += 1
                key = list_key[_LIST_HASH_CHARS:]
                if self._is_settling(key):
                    continue
                secret = self._active[key]
                items.append(self._item(secret, secret.current, f"{self.base_url}/secrets/{secret.name}"))
                last = list_key
            # A next page only when a listed secret follows (settling ones are not listed).
            following = itertools.islice(order, position, None)
            more = any(not self._is_settling(k[_LIST_HASH_CHARS:]) for k in following)
        return items, (last if more else None)

    def list_versions(self, name: str, maxresults: int, marker: str | None) -> Page:
        validate_name(name)
        with self._lock:
            self._expire_deleted()
            # Like the service, an unknown name lists no versions rather than answering 404.
            key = name.lower()
            secret = None if self._is_settling(key) else self._active.get(key)
            entries = []
            if secret is not None:
                # Keyed (so ordered and paged) by the random version id: deliberately not creation order.
                for version in sorted(secret.versions, key=lambda v: v.version):
                    item_id = f"{self.base_url}/secrets/{secret.name}/{version.version}"
                    entries.append((version.version, self._item(secret, version, item_id)))
        return _page(entries, maxresults, marker)

    def delete_secret(self, name: str) -> JSON:
        validate_name(name)
        with self._lock:
            self._expire_deleted()
            key = name.lower()
            self._refuse_settling(name, while_deleting=False)  # deleting twice is 404, as in the service
            secret = None if self._is_settling(key) else self._active.get(key)
            if secret is None:
                raise secret_not_found(name)
            if secret.managed:
                raise managed_by_certificate(name)
            self._remove_active(key)
            now = self._now()
            secret.deleted_date = now
            secret.scheduled_purge_date = now + RECOVERABLE_DAYS * 86400
            self._deleted[key] = secret
            self._settle_later(key)
            self._changed()
            return self._deleted_bundle(secret)

    def get_deleted_secret(self, name: str) -> JSON:
        validate_name(name)
        with self._lock:
            return self._deleted_bundle(self._find_deleted(name))

    def list_deleted_secrets(self, maxresults: int, marker: str | None) -> Page:
        with self._lock:
            self._expire_deleted()
            entries = []
            for key, secret in sorted(self._deleted.items()):
                if self._is_settling(key):
                    continue
                item = self._item(secret, secret.current, f"{self.base_url}/secrets/{secret.name}")
                item.update(self._deletion_fields(secret))
                entries.append((key, item))
        return _page(entries, maxresults, marker)

    def recover_deleted_secret(self, name: str) -> JSON:
        validate_name(name)
        with self._lock:
            self._expire_deleted()
            self._refuse_settling(name)
            secret = self._find_deleted(name)
            key = name.lower()
            del self._deleted[key]
            secret.deleted_date = secret.scheduled_purge_date = None
            self._add_active(key, secret)
            self._settle_later(key)
            self._changed()
            return self._bundle(secret, secret.current, with_value=False)

    def purge_deleted_secret(self, name: str) -> None:
        validate_name(name)
        with self._lock:
            self._expire_deleted()
            self._refuse_settling(name)
            self._find_deleted(name)
            if self.purge_protection:
                raise ServiceError(
                    403,
                    "Forbidden",
                    'Operation "purge" is not allowed because purge protection is enabled for this vault. '
                    "Key Vault service will automatically purge it after the retention period has passed.",
                )
            del self._deleted[name.lower()]
            self._changed()

    # ------------------------------------------------------------------------------------------- internals

    def _now(self) -> int:
        return int(self._clock()) + self._clock_offset

    def _add_active(self, key: str, secret: Secret) -> Secret:
        self._active[key] = secret
        self._order = None
        return secret

    def _remove_active(self, key: str) -> None:
        del self._active[key]
        self._order = None

    def _changed(self) -> None:
        self.save()

    def _expire_deleted(self) -> None:
        """Purge deleted secrets whose scheduled purge date has passed, as the service does."""
        now = self._now()
        expired = [k for k, s in self._deleted.items() if (s.scheduled_purge_date or now + 1) <= now]
        for key in expired:
            del self._deleted[key]
            self._settling.pop(key, None)
        if expired:
            self._changed()

    def _settle_later(self, key: str) -> None:
        if self._delay > 0:
            self._settling[key] = self._clock() + self._delay
        else:
            self._settling.pop(key, None)

    def _is_settling(self, key: str) -> bool:
        """True while a delete or recover of ``key`` has been answered but has not completed."""
        until = self._settling.get(key)
        if until is None:
            return False
        if until <= self._clock():
            del self._settling[key]
            return False
        return True

    def _refuse_settling(self, name: str, *, create: bool = False, while_deleting: bool = True) -> None:
        """409 for a write to a name whose delete or recover is still in progress, with the service's
        inner code and wording (``create``: a set_secret). ``while_deleting=False``: the caller answers 404
        instead while a delete is in progress, as the secret has already left the active collection."""
        key = name.lower()
        if not self._is_settling(key):
            return
        if key in self._deleted:
            if while_deleting:
                message = (
                    f"Secret {name} is currently being deleted and cannot be re-created; retry later."
                    if create
                    else "Secret is currently being deleted."
                )
                raise ServiceError(409, "Conflict", message, inner_code="ObjectIsBeingDeleted")
            return
        message = (
            f"Secret {name} is currently being recovered and cannot be re-created; retry later."
            if create
            else f"Secret {name} is currently being recovered."
        )
        raise ServiceError(409, "Conflict", message, inner_code="ObjectIsBeingRecovered")

    def _list_key(self, key: str) -> str:
        """The position of a secret in ``list_secrets``: fixed for the store's life, unrelated to the name."""
        digest = hashlib.blake2b(key.encode(), key=self._list_seed, digest_size=_LIST_HASH_CHARS // 2)
        return digest.hexdigest() + key

    def _find_version(self, name: str, version: str | None) -> tuple[Secret, SecretVersion]:
        self._expire_deleted()
        key = name.lower()
        secret = None if self._is_settling(key) else self._active.get(key)
        if secret is None:
            raise secret_not_found(name)
        if not version:
            return secret, secret.current
        found = secret.find(version)
        if found is None:
            raise secret_not_found(name, version)
        return secret, found

    def _find_deleted(self, name: str) -> Secret:
        self._expire_deleted()
        key = name.lower()
        secret = None if self._is_settling(key) else self._deleted.get(key)
        if secret is None:
            raise deleted_secret_not_found(name)
        return secret

    def _attributes(self, version: SecretVersion) -> JSON:
        out: JSON = {"enabled": version.enabled}
        if version.nbf is not None:
            out["nbf"] = version.nbf
        if version.exp is not None:
            out["exp"] = version.exp
        out.update(
            created=version.created,
            updated=version.updated,
            recoveryLevel=self._recovery_level,
            recoverableDays=RECOVERABLE_DAYS,
        )
        return out

    def _item(self, secret: Secret, version: SecretVersion, item_id: str) -> JSON:
        out: JSON = {"id": item_id, "attributes": self._attributes(version)}
        if version.tags is not None:
            out["tags"] = dict(version.tags)
        if version.content_type is not None:
            out["contentType"] = version.content_type
        if secret.managed:
            out["managed"] = True
        return out

    def _bundle(self, secret: Secret, version: SecretVersion, *, with_value: bool) -> JSON:
        out: JSON = {}
        if with_value:
            out["value"] = version.value
        out.update(self._item(secret, version, f"{self.base_url}/secrets/{secret.name}/{version.version}"))
        if secret.managed:
            # The certificate, its key and its secret share name and version.
            out["kid"] = f"{self.base_url}/keys/{secret.name}/{version.version}"
        return out

    def _deletion_fields(self, secret: Secret) -> JSON:
        return {
            "recoveryId": f"{self.base_url}/deletedsecrets/{secret.name}",
            "deletedDate": secret.deleted_date,
            "scheduledPurgeDate": secret.scheduled_purge_date,
        }

    def _deleted_bundle(self, secret: Secret) -> JSON:
        out = self._bundle(secret, secret.current, with_value=False)
        out.update(self._deletion_fields(secret))
        return out


def _page(entries: list[tuple[str, JSON]], maxresults: int, marker: str | None) -> Page:
    """One page of ``entries`` (sorted by key) after ``marker``, and the marker for the next page."""
    keys = [key for key, _ in entries]
    start = bisect.bisect_right(keys, marker) if marker is not None else 0
    chunk = entries[start : start + maxresults]
    more = start + maxresults < len(entries)
    return [item for _, item in chunk], (chunk[-1][0] if more and chunk else None)


def _content_type(raw: Any) -> str | None:
    if raw is None or isinstance(raw, str):
        return raw
    raise bad_parameter("Property 'contentType' must be a string.")


def _tags(raw: Any) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise bad_parameter("Property 'tags' must be an object of string names and values.")
    if len(raw) > MAX_TAGS:
        raise bad_parameter(f"Too many tags: {len(raw)}. A secret can have at most {MAX_TAGS} tags.")
    for name, value in raw.items():
        if not isinstance(value, str):
            raise bad_parameter(f"Tag '{name[:64]}' must have a string value.")
        if not name or len(name) > MAX_TAG_CHARS:
            raise bad_parameter(f"Tag names must be 1-{MAX_TAG_CHARS} characters long.")
        if len(value) > MAX_TAG_CHARS:
            raise bad_parameter(f"Tag values must be at most {MAX_TAG_CHARS} characters long.")
    return dict(raw)


def _timestamp(name: str, raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise bad_parameter(f"Attribute '{name}' must be a number of seconds since the Unix epoch.")
    return int(raw)


def _attributes(raw: Any) -> dict[str, Any]:
    """The writable attributes present in ``raw``: enabled, nbf, exp (read-only ones are ignored)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise bad_parameter("Property 'attributes' must be an object.")
    out: dict[str, Any] = {}
    if raw.get("enabled") is not None:
        if not isinstance(raw["enabled"], bool):
            raise bad_parameter("Attribute 'enabled' must be true or false.")
        out["enabled"] = raw["enabled"]
    for name in ("nbf", "exp"):
        if name in raw:
            out[name] = _timestamp(name, raw[name])
    return out
