"""InMemorySecretStore where the emulator cannot follow (certificate-backed secrets) or where the vault's
behaviour must be forced to show (ties in ``created``, listing order). The shared behaviour is proven
against the emulator in tests/integration/test_secret_store_contract.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.errors import Conflict
from shared.domain.secrets import SecretItem, SecretValue, SecretVersion
from tests.fakes import FixedClock, InMemorySecretStore


def set_plain(store: InMemorySecretStore, name: str, value: str = "v") -> SecretVersion:
    return store.set_value(name, value, content_type=None, tags={})


def test_versions_set_in_one_second_tie_and_only_their_ids_tell_them_apart() -> None:
    clock = FixedClock(datetime(2026, 11, 29, 10, 0, 0, 100_000, tzinfo=UTC))
    store = InMemorySecretStore(clock)
    first = set_plain(store, "tie")
    clock.advance(timedelta(milliseconds=800))
    second = set_plain(store, "tie")
    clock.advance(timedelta(milliseconds=200))
    third = set_plain(store, "tie")

    assert first.created == second.created == datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    assert third.created == first.created + timedelta(seconds=1)
    assert len({first.version, second.version, third.version}) == 3
    assert store.get_properties("tie").version == third.version


def test_versions_are_listed_in_no_useful_order() -> None:
    store = InMemorySecretStore(seed=7)
    for _ in range(6):
        set_plain(store, "shuffled")
    created_order = store.versions_of("shuffled")
    listings = [[v.version for v in store.list_versions("shuffled")] for _ in range(5)]
    assert any(listing != created_order for listing in listings)
    assert all(sorted(listing) == sorted(created_order) for listing in listings)


def test_the_same_seed_lists_the_same_way() -> None:
    listings = []
    for _ in range(2):
        store = InMemorySecretStore(seed=3)
        for n in range(4):
            set_plain(store, f"s{n}")
        listings.append([item.name for item in store.list_properties()])
    assert listings[0] == listings[1]


def test_certificate_backed_secrets_are_managed_and_cannot_be_written() -> None:
    store = InMemorySecretStore()
    issued = store.add_certificate("tls-dispatch", issuer="fleet-ca")
    assert issued.managed
    assert issued.key_id == f"{InMemorySecretStore.VAULT_URL}/keys/tls-dispatch/{issued.version}"
    assert issued.content_type == "application/x-pkcs12"
    assert issued.tags == {"issuer": "fleet-ca"}

    (listed,) = store.list_properties()
    assert listed.managed
    assert all(v.key_id is None for v in store.list_versions("tls-dispatch"))  # listings carry no kid
    assert store.get_value("tls-dispatch").properties == issued

    with pytest.raises(Conflict):
        set_plain(store, "tls-dispatch")
    with pytest.raises(Conflict):
        store.update_properties("tls-dispatch", issued.version, enabled=False)

    renewed = store.add_certificate("tls-dispatch")
    assert renewed.key_id != issued.key_id
    assert {v.version for v in store.list_versions("tls-dispatch")} == {issued.version, renewed.version}


def test_a_plain_secret_cannot_become_certificate_backed() -> None:
    store = InMemorySecretStore()
    set_plain(store, "plain")
    with pytest.raises(Conflict):
        store.add_certificate("plain")


def test_times_are_kept_in_whole_utc_seconds() -> None:
    store = InMemorySecretStore()
    local = datetime(2031, 1, 2, 3, 4, 5, 999_999).astimezone()
    written = store.set_value("times", "v", content_type=None, tags={}, expires=local)
    assert written.expires == local.astimezone(UTC).replace(microsecond=0)
    assert written.expires is not None and written.expires.tzinfo == UTC


def test_values_stay_out_of_reprs_and_of_the_properties() -> None:
    store = InMemorySecretStore()
    set_plain(store, "quiet", "correct-horse-battery")
    read = store.get_value("quiet")
    assert isinstance(read, SecretValue)
    assert "correct-horse" not in repr(read)
    assert not hasattr(read.properties, "value")
    assert all(not hasattr(item, "value") for item in store.list_properties())
    assert all(type(item) is SecretItem for item in store.list_properties())


def test_returned_tags_are_copies() -> None:
    store = InMemorySecretStore()
    written = store.set_value("copied", "v", content_type=None, tags={"a": "1"})
    written.tags["a"] = "changed"
    assert store.get_properties("copied").tags == {"a": "1"}
