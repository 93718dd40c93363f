"""Key Vault (secrets) adapter, plus the static credential used only against the local emulator."""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from azure.core.credentials import AccessToken
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.keyvault.secrets import SecretClient, SecretProperties

from shared.adapters.azure_errors import translate
from shared.domain.audit import AnchoredDigest, Digest, format_time, parse_time
from shared.domain.errors import DependencyUnavailable, DomainError, NoSuchSecret, NotFound, SecretDisabled
from shared.domain.secrets import (
    MAX_PAGE_SIZE,
    InvalidSecret,
    SecretItem,
    SecretValue,
    SecretVersion,
    is_version_id,
    validate_name,
    validate_tags,
    validate_value,
)

DEPENDENCY = "key_vault"


class LocalTokenCredential:
    """A fixed bearer token for the local Key Vault emulator, which accepts any token.

    bootstrap uses it only when KEY_VAULT_URL is a loopback address; it never reaches Azure.
    """

    TOKEN = "local-development-token"  # not a secret: the emulator accepts any bearer token

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken(self.TOKEN, int(time.time()) + 3600)

    def close(self) -> None:
        """Nothing to release; present because azure-core may close credentials."""


class KeyVaultProbe:
    """Health probe: list one secret's properties (needs only the 'list' permission, reads no value)."""

    def __init__(self, client: SecretClient) -> None:
        self._client = client

    def check(self) -> None:
        try:
            pages = self._client.list_properties_of_secrets(max_page_size=1).by_page()
            for _ in next(pages, ()):
                break
        except AzureError as err:
            raise translate(DEPENDENCY, err) from err


AUDIT_KEY_SECRET = "audit-hmac-key"
#: A Key Vault version id: what a key id is.
_KEY_ID = re.compile(r"[0-9a-fA-F]{32}")
#: How many key ids found missing a key ring remembers (each spares a vault call when met again).
_MISSING_REMEMBERED = 256
_KEY_TAGS = {"purpose": "audit-hmac-key", "created-by": "secret-lifecycle"}


class KeyVaultMacKeyRing:
    """Audit MAC keys kept as versions of one Key Vault secret; the version id is the key id.

    The current key is created on first use (32 random bytes) and cached for ``ttl_s``; keys by id are
    cached for the life of the process (a version's value never changes). Someone who can write the audit
    tables but cannot read this secret cannot produce valid MACs.
    """

    def __init__(self, client: SecretClient, name: str = AUDIT_KEY_SECRET, ttl_s: float = 3600.0) -> None:
        self._client = client
        self._name = name
        self._ttl_s = ttl_s
        self._current: tuple[str, bytes] | None = None
        self._current_at = 0.0
        self._by_id: dict[str, bytes] = {}
        self._missing: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def current(self) -> tuple[str, bytes]:
        with self._lock:
            if self._current is not None and time.monotonic() - self._current_at < self._ttl_s:
                return self._current
            try:
                try:
                    secret = self._client.get_secret(self._name)
                except ResourceNotFoundError:
                    value = base64.b64encode(secrets.token_bytes(32)).decode()
                    secret = self._client.set_secret(
                        self._name, value, content_type="application/octet-stream", tags=_KEY_TAGS
                    )
            except AzureError as err:
                raise translate(DEPENDENCY, err) from err
            key_id = secret.properties.version or ""
            if not key_id or not secret.value:
                raise DependencyUnavailable(DEPENDENCY, "audit key has no version or value")
            self._current = (key_id, base64.b64decode(secret.value))
            self._current_at = time.monotonic()
            self._by_id[key_id] = self._current[1]
            return self._current

    def get(self, key_id: str) -> bytes | None:
        # A key id comes from a row anyone who can write storage wrote: only a Key Vault version id (32
        # hex digits) is ever looked up, and ids found missing are remembered only so many.
        if not _KEY_ID.fullmatch(key_id):
            return None
        with self._lock:
            if key_id in self._by_id:
                return self._by_id[key_id]
            if key_id in self._missing:
                return None
        try:
            secret = self._client.get_secret(self._name, key_id)
            key: bytes | None = base64.b64decode(secret.value) if secret.value else None
        except ResourceNotFoundError:
            key = None
        except AzureError as err:
            raise translate(DEPENDENCY, err) from err
        with self._lock:
            if key is None:
                self._missing[key_id] = None
                while len(self._missing) > _MISSING_REMEMBERED:
                    self._missing.popitem(last=False)
            else:
                self._by_id[key_id] = key
        return key


AUDIT_ANCHOR_SECRET = "audit-digest-anchor"
_ANCHOR_TAGS = {"purpose": "audit-digest-anchor", "created-by": "secret-lifecycle"}


class KeyVaultDigestAnchor:
    """DigestAnchor as versions of one Key Vault secret: each digest's sequence number, MAC and time (not
    a secret: it is the MAC of a digest) become a new version. A storage writer cannot touch it; versions
    cannot be deleted one by one, and with purge protection the secret cannot be purged either."""

    def __init__(self, client: SecretClient, name: str = AUDIT_ANCHOR_SECRET) -> None:
        self._client = client
        self._name = name

    def read(self) -> AnchoredDigest | None:
        try:
            secret = self._client.get_secret(self._name)
        except ResourceNotFoundError:
            return None
        except AzureError as err:
            raise translate(DEPENDENCY, err) from err
        try:
            document = json.loads(secret.value or "")
            return AnchoredDigest(
                seq=int(document["seq"]), mac=str(document["mac"]), time=parse_time(str(document["time"]))
            )
        except (KeyError, ValueError, TypeError) as err:
            # Only someone with write access to the vault could have put this here.
            raise DependencyUnavailable(DEPENDENCY, "the audit digest anchor is unreadable") from err

    def write(self, digest: Digest) -> None:
        value = json.dumps({"seq": digest.seq, "mac": digest.mac, "time": format_time(digest.time)})
        try:
            self._client.set_secret(self._name, value, content_type="application/json", tags=_ANCHOR_TAGS)
        except AzureError as err:
            raise translate(DEPENDENCY, err) from err


class KeyVaultSecretStore:
    """SecretStore on the real ``SecretClient``. Names, values and tags are checked against Key Vault's
    limits before any request (a name never reaches a URL unchecked); what the vault still refuses with
    400 is InvalidSecret too. Other ``azure.core`` errors become domain errors via ``translate``."""

    def __init__(self, client: SecretClient) -> None:
        self._client = client

    def list_properties(self) -> Iterator[SecretItem]:
        try:
            for props in self._client.list_properties_of_secrets(max_page_size=MAX_PAGE_SIZE):
                yield self._item(props)
        except AzureError as err:
            raise self._translate(err) from err

    def list_versions(self, name: str) -> list[SecretVersion]:
        validate_name(name)
        try:
            pager = self._client.list_properties_of_secret_versions(name, max_page_size=MAX_PAGE_SIZE)
            versions = [self._version(props) for props in pager]
        except AzureError as err:
            raise self._translate(err, name) from err
        if not versions:  # the vault lists no versions of an unknown name rather than answering 404
            raise NoSuchSecret(name)
        return versions

    def get_properties(self, name: str, version: str | None = None) -> SecretVersion:
        self._check(name, version)
        try:
            # No call reads properties alone: get_secret transfers the value, which is dropped here.
            return self._version(self._client.get_secret(name, version).properties)
        except AzureError as err:
            error = self._translate(err, None if version else name)
            if not (isinstance(error, SecretDisabled) and version):
                raise error from err
        # A disabled version's properties are readable only through the listing (no 'get' on it).
        for found in self.list_versions(name):
            if found.version.lower() == version.lower():
                return found
        raise NotFound(f"key_vault: version {version} of secret {name} not found")

    def get_value(self, name: str, version: str | None = None) -> SecretValue:
        self._check(name, version)
        try:
            secret = self._client.get_secret(name, version)
        except AzureError as err:
            raise self._translate(err, None if version else name) from err
        if secret.value is None:
            raise DependencyUnavailable(DEPENDENCY, "a secret was returned without its value")
        return SecretValue(self._version(secret.properties), secret.value)

    def set_value(  # noqa: PLR0913 - the port's verb, as SecretClient.set_secret takes it
        self,
        name: str,
        value: str,
        *,
        content_type: str | None,
        tags: Mapping[str, str],
        not_before: datetime | None = None,
        expires: datetime | None = None,
        enabled: bool = True,
    ) -> SecretVersion:
        validate_name(name)
        validate_value(value)
        validate_tags(tags)
        try:
            secret = self._client.set_secret(
                name,
                value,
                enabled=enabled,
                tags=dict(tags),
                content_type=content_type,
                not_before=not_before,
                expires_on=expires,
            )
        except AzureError as err:
            raise self._translate(err) from err
        return self._version(secret.properties)

    def update_properties(
        self,
        name: str,
        version: str,
        *,
        enabled: bool | None = None,
        tags: Mapping[str, str] | None = None,
        expires: datetime | None = None,
        not_before: datetime | None = None,
    ) -> SecretVersion:
        # "" is refused (NotFound): the SDK would update whichever version is current instead.
        self._check(name, version)
        if tags is not None:
            validate_tags(tags)
        try:
            props = self._client.update_secret_properties(
                name,
                version,
                enabled=enabled,
                tags=dict(tags) if tags is not None else None,
                not_before=not_before,
                expires_on=expires,
            )
        except AzureError as err:
            raise self._translate(err) from err
        return self._version(props)

    def delete(self, name: str) -> None:
        validate_name(name)
        try:
            # The DELETE is sent at once; the poller only watches it complete (not waited for here).
            self._client.begin_delete_secret(name)
        except AzureError as err:
            raise self._translate(err, name) from err

    def get_deleted(self, name: str) -> SecretItem:
        validate_name(name)
        try:
            deleted = self._client.get_deleted_secret(name)
        except AzureError as err:
            raise self._translate(err, name) from err
        return self._item(deleted.properties)

    def recover(self, name: str) -> None:
        validate_name(name)
        try:
            self._client.begin_recover_deleted_secret(name)
        except AzureError as err:
            raise self._translate(err, name) from err

    @staticmethod
    def _check(name: str, version: str | None) -> None:
        validate_name(name)
        if version is not None and not is_version_id(version):  # "" included: it names no version
            raise NotFound(f"key_vault: no version {version[:64]!r} of secret {name}")

    @staticmethod
    def _translate(err: AzureError, name: str | None = None) -> DomainError:
        """The domain error of a failed request; ``name``: the request is about the secret itself (not
        one version of it), so "not found" means the vault holds no secret of that name."""
        if isinstance(err, HttpResponseError) and err.status_code == 400:
            return InvalidSecret("key_vault: the vault refused the request (HTTP 400)")
        error = translate(DEPENDENCY, err)
        if name is not None and type(error) is NotFound:
            return NoSuchSecret(name)
        return error

    @staticmethod
    def _item(props: SecretProperties) -> SecretItem:
        if props.name is None or props.created_on is None or props.updated_on is None:
            raise DependencyUnavailable(DEPENDENCY, "a secret was returned without its name or times")
        return SecretItem(
            name=props.name,
            enabled=bool(props.enabled),
            created=props.created_on,
            updated=props.updated_on,
            not_before=props.not_before,
            expires=props.expires_on,
            content_type=props.content_type,
            tags=dict(props.tags or {}),
            managed=bool(props.managed),
        )

    @classmethod
    def _version(cls, props: SecretProperties) -> SecretVersion:
        item = cls._item(props)
        if not props.version:
            raise DependencyUnavailable(DEPENDENCY, "a secret version was returned without its id")
        return SecretVersion(**vars(item), version=props.version, key_id=props.key_id)
