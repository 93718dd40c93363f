"""The SecretStore contract, run against the in-memory fake and against KeyVaultSecretStore on the real
SecretClient and the Key Vault emulator: what passes here is what services may rely on, from either.

The fake needs no peer; it is tested here so the two are proven to agree. Certificate-backed secrets come
from ``InMemorySecretStore.add_certificate`` and the emulator's ``create_certificate``.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.secrets import SecretClient

from devtools.keyvault_emulator.process import EmulatorProcess
from shared.adapters.key_vault import KeyVaultSecretStore, LocalTokenCredential
from shared.domain.errors import (
    Conflict,
    DependencyUnavailable,
    Forbidden,
    NoSuchSecret,
    NotFound,
    SecretDisabled,
)
from shared.domain.secrets import (
    MAX_PAGE_SIZE,
    MAX_TAG_CHARS,
    MAX_TAGS,
    MAX_VALUE_BYTES,
    InvalidSecret,
    SecretItem,
)
from shared.ports import SecretStore
from tests.fakes import InMemorySecretStore
from tests.waiting import eventually

KINDS = ["fake", "key_vault"]


def key_vault_store(emulator: EmulatorProcess, **client_options: object) -> KeyVaultSecretStore:
    options = {**emulator.client_kwargs(), **client_options}
    return KeyVaultSecretStore(SecretClient(emulator.url, LocalTokenCredential(), **options))


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest) -> SecretStore:
    if request.param == "fake":
        return InMemorySecretStore()
    return key_vault_store(request.getfixturevalue("kv_emulator"))


def unique(prefix: str) -> str:
    """The emulator is shared by the session: every test uses names of its own."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def set_plain(store: SecretStore, name: str, value: str, **tags: str) -> str:
    return store.set_value(name, value, content_type="text/plain", tags=tags).version


def test_set_and_get_a_value(store: SecretStore) -> None:
    name = unique("Contract-Value")
    written = store.set_value(name, "hunter2-v1", content_type="text/plain", tags={"owner": "dispatch"})
    assert (written.name, written.enabled, written.content_type) == (name, True, "text/plain")
    assert written.tags == {"owner": "dispatch"}
    assert not written.managed and written.key_id is None
    assert written.created.tzinfo is not None and written.created.microsecond == 0

    read = store.get_value(name)
    assert read.value == "hunter2-v1"
    assert read.properties == written
    assert "hunter2" not in repr(read) and "hunter2" not in str(read)
    assert store.get_value(name, written.version).value == "hunter2-v1"
    # Names are case-insensitive; the casing of the first set is kept.
    assert store.get_value(name.lower()).properties.name == name


def test_each_version_has_its_own_tags(store: SecretStore) -> None:
    name = unique("contract-tags")
    first = set_plain(store, name, "v1", stage="old", rotated="no")
    second = set_plain(store, name, "v2", stage="new")
    third = set_plain(store, name, "v3")  # a new version carries none of the previous tags

    assert store.get_properties(name, first).tags == {"stage": "old", "rotated": "no"}
    assert store.get_properties(name, second).tags == {"stage": "new"}
    assert store.get_properties(name, third).tags == {}
    assert store.get_properties(name).version == third
    (listed,) = [item for item in store.list_properties() if item.name == name]
    assert listed.tags == {}


def test_versions_are_tracked_by_id_not_order(store: SecretStore) -> None:
    name = unique("contract-versions")
    ids = [set_plain(store, name, f"value-{n}", n=str(n)) for n in range(5)]
    assert len(set(ids)) == 5

    versions = store.list_versions(name)
    assert sorted(v.version for v in versions) == sorted(ids)
    for version in versions:
        assert version == store.get_properties(name, version.version)
        assert store.get_value(name, version.version).value == f"value-{version.tags['n']}"
    assert store.get_properties(name).version == ids[-1]


def test_a_disabled_version_cannot_be_read(store: SecretStore) -> None:
    name = unique("contract-disabled")
    old = set_plain(store, name, "old-value")
    new = set_plain(store, name, "new-value")

    disabled = store.update_properties(name, old, enabled=False)
    assert (disabled.version, disabled.enabled) == (old, False)
    with pytest.raises(SecretDisabled):
        store.get_value(name, old)
    assert store.get_properties(name, old).enabled is False  # still readable by id, without its value
    assert {v.version: v.enabled for v in store.list_versions(name)} == {old: False, new: True}
    assert store.get_value(name).value == "new-value"

    store.update_properties(name, new, enabled=False)
    with pytest.raises(SecretDisabled):
        store.get_value(name)
    with pytest.raises(SecretDisabled):
        store.get_properties(name)  # the current version's id cannot be read while it is disabled
    (listed,) = [item for item in store.list_properties() if item.name == name]
    assert listed.enabled is False

    store.update_properties(name, old, enabled=True)
    assert store.get_value(name, old).value == "old-value"


def test_update_tags_and_times_of_one_version(store: SecretStore) -> None:
    name = unique("contract-update")
    old = set_plain(store, name, "v1", stage="current")
    new = set_plain(store, name, "v2")
    expires = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    not_before = datetime(2030, 12, 1, tzinfo=UTC)

    updated = store.update_properties(
        name,
        old,
        tags={"stage": "previous", "rotated-by": "rotation"},
        expires=expires,
        not_before=not_before,
    )
    assert updated.tags == {"stage": "previous", "rotated-by": "rotation"}
    assert (updated.expires, updated.not_before) == (expires, not_before)
    assert store.get_properties(name, old) == updated
    assert store.get_properties(name, new).tags == {}  # other versions keep theirs

    kept = store.update_properties(name, old, enabled=False)  # None leaves the rest as it is
    assert (kept.tags, kept.expires, kept.not_before) == (updated.tags, expires, not_before)
    assert store.update_properties(name, old, tags={}).tags == {}
    assert store.get_value(name).value == "v2"  # updating properties never makes a new version


def test_list_properties_pages_and_never_returns_values(
    store: SecretStore, request: pytest.FixtureRequest
) -> None:
    prefix = unique("contract-list")
    count = MAX_PAGE_SIZE + 5
    for n in range(count):
        set_plain(store, f"{prefix}-{n}", f"listed-value-{prefix}-{n}", n=str(n))
    emulator = request.getfixturevalue("kv_emulator") if isinstance(store, KeyVaultSecretStore) else None
    pages_before = _pages_served(emulator)

    listed = [item for item in store.list_properties() if item.name.startswith(prefix)]

    assert sorted(item.name for item in listed) == sorted(f"{prefix}-{n}" for n in range(count))
    for item in listed:
        assert type(item) is SecretItem  # no version id, no value
        assert "listed-value" not in repr(item)
        assert item.tags == {"n": item.name.rsplit("-", 1)[1]}
    assert _pages_served(emulator) - pages_before >= (2 if emulator else 0)


def _pages_served(emulator: EmulatorProcess | None) -> int:
    """Pages of the secrets listing the emulator has served (0 without one)."""
    if emulator is None:
        return 0
    pages: int = emulator.stats()["requests"].get("list_secrets", 0)
    return pages


def test_unknown_names_and_versions_are_not_found(store: SecretStore) -> None:
    missing = unique("contract-never-set")
    reads: list[Callable[[], object]] = [
        lambda: store.get_properties(missing),
        lambda: store.get_value(missing),
        lambda: store.list_versions(missing),
        lambda: store.update_properties(missing, uuid.uuid4().hex, enabled=False),
    ]
    name = unique("contract-known")
    set_plain(store, name, "v")
    for version in (uuid.uuid4().hex, "not/a-version", ""):
        reads += [
            partial(store.get_properties, name, version),
            partial(store.get_value, name, version),
            partial(store.update_properties, name, version, enabled=False),
        ]
    for read in reads:
        with pytest.raises(NotFound):
            read()


def test_key_vault_limits(store: SecretStore) -> None:
    longest = unique("contract-limit").ljust(127, "x")
    first = set_plain(store, longest, "é" * (MAX_VALUE_BYTES // 2))  # 2 bytes each: exactly 25 KiB
    most_tags = {f"t{n}".ljust(MAX_TAG_CHARS, "k"): "v" * MAX_TAG_CHARS for n in range(MAX_TAGS)}
    store.update_properties(longest, first, tags=most_tags)
    set_plain(store, longest, "v", **most_tags)

    too_many = {**most_tags, "one-more": "v"}
    refused: list[Callable[[], object]] = [
        lambda: set_plain(store, longest + "x", "v"),
        lambda: set_plain(store, "under_score", "v"),
        lambda: set_plain(store, "", "v"),
        lambda: store.get_value("not/a-name"),
        lambda: store.list_versions("under_score"),
        lambda: set_plain(store, longest, "é" * (MAX_VALUE_BYTES // 2) + "x"),
        lambda: store.set_value(longest, "v", content_type=None, tags=too_many),
        lambda: set_plain(store, longest, "v", long="v" * (MAX_TAG_CHARS + 1)),
        lambda: set_plain(store, longest, "v", **{"n" * (MAX_TAG_CHARS + 1): "v"}),
        lambda: store.update_properties(longest, first, tags=too_many),
    ]
    for call in refused:
        with pytest.raises(InvalidSecret):
            call()
    assert len(store.list_versions(longest)) == 2  # nothing refused was stored
    assert store.get_properties(longest, first).tags == most_tags


def test_certificate_backed_secrets_are_managed_and_read_only(
    store: SecretStore, request: pytest.FixtureRequest
) -> None:
    name = unique("contract-cert")
    if isinstance(store, InMemorySecretStore):
        store.add_certificate(name)
    else:
        request.getfixturevalue("kv_emulator").create_certificate(name)

    current = store.get_properties(name)
    assert current.managed and current.content_type == "application/x-pkcs12"
    assert current.key_id is not None and current.key_id.endswith(f"/keys/{name}/{current.version}")
    (listed,) = [item for item in store.list_properties() if item.name == name]
    assert listed.managed
    assert store.get_value(name).value  # readable: consumers load the certificate through the secret
    with pytest.raises(Conflict):
        set_plain(store, name, "not-a-certificate")
    with pytest.raises(Conflict):
        store.update_properties(name, current.version, enabled=False)
    (version,) = store.list_versions(name)
    assert (version.version, version.managed, version.key_id) == (current.version, True, None)  # no kid


def test_the_emulator_refuses_what_the_store_refuses(kv_emulator: EmulatorProcess) -> None:
    """KeyVaultSecretStore checks the limits before sending: the vault (here its emulator) agrees."""
    client = SecretClient(kv_emulator.url, LocalTokenCredential(), **kv_emulator.client_kwargs())
    name = unique("contract-raw")
    client.set_secret(name, "é" * (MAX_VALUE_BYTES // 2))
    too_many = {f"t{n}": "v" for n in range(MAX_TAGS + 1)}
    refusals: list[Callable[[], object]] = [
        lambda: client.set_secret(name.ljust(128, "x"), "v"),
        lambda: client.set_secret(name, "é" * (MAX_VALUE_BYTES // 2) + "x"),
        lambda: client.set_secret(name, "v", tags=too_many),
        lambda: client.set_secret(name, "v", tags={"long": "v" * (MAX_TAG_CHARS + 1)}),
    ]
    for call in refusals:
        with pytest.raises(HttpResponseError) as refused:
            call()
        assert refused.value.status_code == 400


@pytest.mark.parametrize("kind", KINDS)
def test_a_refused_identity_is_forbidden(kind: str, tmp_path: Path) -> None:
    if kind == "fake":
        fake = InMemorySecretStore()
        fake.denied.add("set_value")
        _assert_forbidden(fake)
        return
    try:
        emulator = EmulatorProcess.start(tmp_path / "kv.pem", deny=["set_secret"])
    except RuntimeError as err:
        pytest.fail(f"the Key Vault emulator could not start: {err}", pytrace=False)
    with emulator:
        _assert_forbidden(key_vault_store(emulator))


def _assert_forbidden(store: SecretStore) -> None:
    with pytest.raises(Forbidden) as refused:
        set_plain(store, unique("contract-denied"), "v")
    assert not isinstance(refused.value, SecretDisabled)


@pytest.mark.parametrize("kind", KINDS)
def test_an_unreachable_vault_is_unavailable(kind: str, tmp_path: Path) -> None:
    store: SecretStore
    if kind == "fake":
        store = fake = InMemorySecretStore()
        fake.available = False
    else:
        with socket.socket() as probe:  # a port nothing listens on any more
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        client = SecretClient(
            f"https://127.0.0.1:{port}",
            LocalTokenCredential(),
            verify_challenge_resource=False,
            retry_total=0,
        )
        store = KeyVaultSecretStore(client)
    with pytest.raises(DependencyUnavailable):
        store.get_value("contract-unreachable")
    with pytest.raises(DependencyUnavailable):
        list(store.list_properties())


def _settled(check: Callable[[], object], timeout: float = 10.0) -> object:
    """The vault completes a deletion or recovery moments after accepting it (the emulator too): ``check``
    until it no longer raises NotFound or Conflict."""

    def attempt() -> tuple[bool, object]:
        try:
            return True, check()
        except (NotFound, Conflict) as err:
            return False, err

    return eventually(attempt, "the deletion or recovery to complete", timeout=timeout, until=lambda r: r[0])[
        1
    ]


def test_delete_is_soft_and_recover_brings_every_version_back(store: SecretStore) -> None:
    name = unique("deleted")
    first = set_plain(store, name, "one")
    second = set_plain(store, name, "two")
    store.delete(name)

    def gone() -> None:
        try:
            store.get_properties(name)
        except NotFound:
            return
        raise Conflict("still there")

    _settled(gone)
    assert name not in {item.name for item in store.list_properties()}
    deleted = _settled(lambda: store.get_deleted(name))  # found once the deletion completed
    assert isinstance(deleted, SecretItem) and deleted.name == name
    with pytest.raises(Conflict):  # a deleted name cannot be set again until recovered (or purged)
        store.set_value(name, "three", content_type=None, tags={})
    with pytest.raises(NotFound):
        store.delete(name)
    _settled(lambda: store.recover(name))
    _settled(lambda: store.get_value(name))
    assert store.get_value(name).value == "two"
    assert {v.version for v in store.list_versions(name)} == {first, second}
    with pytest.raises((NotFound, Conflict)):  # not deleted (any more)
        store.recover(name)
    with pytest.raises(NoSuchSecret):
        store.recover(unique("never-deleted"))
