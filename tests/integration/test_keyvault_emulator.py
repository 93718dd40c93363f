"""The unmodified azure-keyvault-secrets SecretClient against the Key Vault emulator (devtools).

Each emulator here is a real child process on a free port with its own certificate; the SDK reaches it
over HTTPS through the 401 challenge, exactly as it reaches a vault. An emulator that cannot start fails
the tests with its output.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import signal
import ssl
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from devtools.keyvault_emulator.process import REPO_ROOT, EmulatorProcess
from devtools.keyvault_emulator.rbac import ACTIONS
from devtools.keyvault_emulator.server import EMULATOR_TENANT_ID, route
from tests.waiting import eventually

pytestmark = pytest.mark.integration

API = "api-version=7.6"
TOKEN = {"Authorization": "Bearer any-token-will-do"}


class StaticTokenCredential:
    """The smallest credential the SDK accepts: ``get_token`` must take keyword arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], str | None]] = []

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        self.calls.append((scopes, tenant_id))
        return AccessToken("emulator-test-token", int(time.time()) + 3600)


def start_emulator(directory: Path, **options: Any) -> EmulatorProcess:
    directory.mkdir(parents=True, exist_ok=True)
    try:
        return EmulatorProcess.start(directory / "emulator.pem", **options)
    except RuntimeError as err:
        pytest.fail(f"The Key Vault emulator could not start: {err}", pytrace=False)


def make_client(emulator: EmulatorProcess, credential: StaticTokenCredential | None = None) -> SecretClient:
    return SecretClient(
        emulator.url,
        credential or StaticTokenCredential(),
        verify_challenge_resource=False,
        connection_verify=str(emulator.cert_file),
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def raw(emulator: EmulatorProcess, method: str, path: str, **kwargs: Any) -> requests.Response:
    """A request without the SDK (``path`` includes the query)."""
    return requests.request(method, emulator.url + path, verify=str(emulator.cert_file), timeout=10, **kwargs)


def conflict_of(call: Any) -> tuple[str | None, str | None]:
    """(inner error code, message) of the 409 ``call()`` must raise through the SDK."""
    with pytest.raises(ResourceExistsError) as conflict:
        call()
    error = conflict.value.error
    assert conflict.value.status_code == 409 and error is not None and error.code == "Conflict"
    return (error.innererror or {}).get("code"), error.message


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    proc = start_emulator(tmp_path_factory.mktemp("kv-emulator"))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def credential() -> StaticTokenCredential:
    return StaticTokenCredential()


@pytest.fixture(scope="module")
def client(emulator: EmulatorProcess, credential: StaticTokenCredential) -> Iterator[SecretClient]:
    with make_client(emulator, credential) as secret_client:
        yield secret_client


# ------------------------------------------------------------------------------------- transport and auth


def test_request_without_token_gets_the_key_vault_challenge(emulator: EmulatorProcess) -> None:
    emulator.reset_stats()

    response = raw(emulator, "GET", f"/secrets/anything?{API}")

    assert response.status_code == 401
    assert re.fullmatch(
        r'Bearer authorization="https://login\.microsoftonline\.com/[0-9a-f-]{36}", '
        r'resource="https://vault\.azure\.net"',
        response.headers["WWW-Authenticate"],
    )
    assert response.json()["error"]["code"] == "Unauthorized"
    # Any bearer token is then accepted.
    assert raw(emulator, "GET", f"/secrets/anything?{API}", headers=TOKEN).status_code == 404
    assert emulator.stats()["requests"] == {"challenge": 1, "get_secret": 1}


def test_sdk_answers_the_challenge_with_the_vault_scope_and_tenant(emulator: EmulatorProcess) -> None:
    credential = StaticTokenCredential()
    with make_client(emulator, credential) as fresh:
        fresh.set_secret(unique("challenge"), "value")

    assert credential.calls == [(("https://vault.azure.net/.default",), EMULATOR_TENANT_ID)]


def test_certificate_is_a_ca_for_loopback_names_and_passes_strict_verification(
    emulator: EmulatorProcess,
) -> None:
    cert = x509.load_pem_x509_certificate(emulator.cert_file.read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1", "::1"}

    context = ssl.create_default_context(cafile=str(emulator.cert_file))
    context.verify_flags |= ssl.VERIFY_X509_STRICT  # Python 3.13's default
    with urllib.request.urlopen(f"{emulator.url}/_emulator/stats", context=context, timeout=10) as response:
        assert response.status == 200
    localhost = emulator.url.replace("127.0.0.1", "localhost")
    assert requests.get(f"{localhost}/_emulator/stats", verify=str(emulator.cert_file), timeout=10).ok


def test_api_version_is_required(emulator: EmulatorProcess) -> None:
    response = raw(emulator, "GET", "/secrets", headers=TOKEN)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadParameter"


def test_unknown_paths_and_methods_answer_json_errors(emulator: EmulatorProcess) -> None:
    not_found = raw(emulator, "GET", f"/keys/some-key?{API}", headers=TOKEN)
    wrong_method = raw(emulator, "POST", f"/secrets?{API}", headers=TOKEN)

    assert not_found.status_code == 404
    assert not_found.json()["error"]["code"] == "NotFound"
    assert wrong_method.status_code == 405
    assert wrong_method.headers["Allow"] == "GET"
    assert wrong_method.json()["error"]["code"] == "MethodNotAllowed"


# ------------------------------------------------------------------------------------------- operations


def test_set_then_get_latest_and_each_version(client: SecretClient, emulator: EmulatorProcess) -> None:
    name = unique("set-get")

    first = client.set_secret(name, "one", content_type="text/plain", tags={"owner": "dispatch"})
    second = client.set_secret(name, "two")

    version = first.properties.version
    assert version is not None and re.fullmatch(r"[0-9a-f]{32}", version)
    assert first.id == f"{emulator.url}/secrets/{name}/{version}"
    assert first.properties.vault_url == emulator.url
    assert first.properties.content_type == "text/plain"
    assert first.properties.tags == {"owner": "dispatch"}
    assert first.properties.enabled is True
    assert first.properties.recovery_level == "Recoverable+Purgeable"
    assert first.properties.recoverable_days == 90
    created = first.properties.created_on
    assert created is not None and abs((datetime.datetime.now(datetime.UTC) - created).total_seconds()) < 60
    latest = client.get_secret(name)
    assert (latest.value, latest.properties.version) == ("two", second.properties.version)
    assert latest.properties.tags is None  # a new version does not inherit tags
    assert client.get_secret(name, version).value == "one"
    assert client.get_secret(name.upper()).value == "two"  # names are case-insensitive


def test_list_pages_through_more_than_sixty_secrets(client: SecretClient, emulator: EmulatorProcess) -> None:
    prefix = unique("page")
    names = {f"{prefix}-{index:03d}" for index in range(65)}
    for name in sorted(names):
        client.set_secret(name, "v", tags={"batch": prefix})
    emulator.reset_stats()

    listed = [p for p in client.list_properties_of_secrets() if p.name and p.name.startswith(prefix)]
    pages = [list(page) for page in client.list_properties_of_secrets(max_page_size=10).by_page()]

    assert {p.name for p in listed} == names
    assert all(p.tags == {"batch": prefix} and p.version is None for p in listed)
    paged_names = [p.name for page in pages for p in page]
    assert all(len(page) <= 10 for page in pages)
    assert len(paged_names) == len(set(paged_names)) and names <= set(paged_names)
    requests_made = emulator.stats()["requests"]["list_secrets"]
    assert requests_made >= 3 + 7  # >= 65/25 pages, then >= 65/10 pages


def test_list_items_carry_no_value_and_page_size_is_capped(emulator: EmulatorProcess) -> None:
    first = raw(emulator, "GET", f"/secrets?{API}", headers=TOKEN).json()
    too_big = raw(emulator, "GET", f"/secrets?{API}&maxresults=26", headers=TOKEN)

    assert len(first["value"]) == 25
    assert all("value" not in item and "attributes" in item for item in first["value"])
    assert first["nextLink"].startswith(f"{emulator.url}/secrets?")
    assert too_big.status_code == 400
    assert too_big.json()["error"]["code"] == "BadParameter"


def test_list_versions_pages_in_version_id_order_not_creation_order(client: SecretClient) -> None:
    name = unique("versions")
    versions = [str(client.set_secret(name, f"value-{i}").properties.version) for i in range(5)]

    pages = [
        list(page) for page in client.list_properties_of_secret_versions(name, max_page_size=2).by_page()
    ]

    assert [len(page) for page in pages] == [2, 2, 1]
    # The service promises no order: the emulator lists by the random version id, so a caller that
    # relies on creation order fails here as it would in Azure. Sort by created_on instead.
    assert [p.version for page in pages for p in page] == sorted(versions)
    assert list(client.list_properties_of_secret_versions(unique("never-set"))) == []


def test_list_versions_paging_is_stable_while_versions_are_added(client: SecretClient) -> None:
    name = unique("stable")
    versions = {str(client.set_secret(name, f"value-{i}").properties.version) for i in range(6)}

    pager = client.list_properties_of_secret_versions(name, max_page_size=2).by_page()
    first = [str(p.version) for p in next(pager)]
    added = str(client.set_secret(name, "added-mid-listing").properties.version)
    rest = [str(p.version) for page in pager for p in page]

    seen = first + rest
    assert len(seen) == len(set(seen))  # nothing twice
    assert versions <= set(seen)  # nothing skipped
    assert set(seen) - versions <= {added}
    assert seen == sorted(seen)


def test_list_secrets_is_not_by_name_but_stable_across_pages(client: SecretClient) -> None:
    prefix = unique("order")
    names = [f"{prefix}-{index:02d}" for index in range(30)]
    for name in names:
        client.set_secret(name, "v")

    def listing(page_size: int) -> list[str]:
        pages = client.list_properties_of_secrets(max_page_size=page_size).by_page()
        return [str(p.name) for page in pages for p in page if str(p.name).startswith(prefix)]

    first, again, by_sevens = listing(25), listing(25), listing(7)
    pager = client.list_properties_of_secrets(max_page_size=5).by_page()
    seen = [str(p.name) for p in next(pager)]
    added = {client.set_secret(f"{prefix}-added-{i}", "v").name for i in range(5)}  # mid-listing
    seen = [name for name in seen + [str(p.name) for page in pager for p in page] if name.startswith(prefix)]

    # The service promises no order, so the emulator gives none a caller could rely on: not by name, not
    # by creation. Within one process the order is fixed, so paging neither repeats nor skips a secret.
    assert sorted(first) == names and first != names
    assert again == first and by_sevens == first
    assert len(seen) == len(set(seen)) and set(names) <= set(seen)
    assert set(seen) - set(names) <= added


def test_update_properties_and_disabled_versions_are_forbidden(client: SecretClient) -> None:
    name = unique("update")
    old = client.set_secret(name, "old").properties.version
    current = client.set_secret(name, "current").properties.version
    expires = datetime.datetime(2031, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    not_before = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)

    updated = client.update_secret_properties(
        name,
        old,
        enabled=False,
        tags={"rotation": "30d"},
        content_type="application/json",
        expires_on=expires,
        not_before=not_before,
    )

    assert updated.version == old
    assert (updated.enabled, updated.tags, updated.content_type) == (
        False,
        {"rotation": "30d"},
        "application/json",
    )
    assert (updated.expires_on, updated.not_before) == (expires, not_before)
    with pytest.raises(HttpResponseError) as forbidden:
        client.get_secret(name, old)
    assert forbidden.value.status_code == 403
    assert forbidden.value.error is not None and forbidden.value.error.code == "Forbidden"
    assert "Operation get is not allowed on a disabled secret." in str(forbidden.value)
    # exp and nbf are informational: the current version is still readable; other versions are untouched.
    assert client.get_secret(name).value == "current"
    states = {p.version: p.enabled for p in client.list_properties_of_secret_versions(name)}
    assert states == {old: False, current: True}

    client.update_secret_properties(name, enabled=False)  # no version: the latest
    with pytest.raises(HttpResponseError) as latest_forbidden:
        client.get_secret(name)
    assert latest_forbidden.value.status_code == 403
    client.update_secret_properties(name, old, enabled=True)
    restored = client.get_secret(name, old)
    assert restored.value == "old"
    assert restored.properties.tags == {"rotation": "30d"}


def test_delete_recover_purge_round_trip(client: SecretClient, emulator: EmulatorProcess) -> None:
    name = unique("lifecycle")
    first = client.set_secret(name, "v1").properties.version
    client.set_secret(name, "v2")

    poller = client.begin_delete_secret(name)
    poller.wait(timeout=10)
    deleted = poller.result()

    assert poller.done()
    assert deleted.recovery_id == f"{emulator.url}/deletedsecrets/{name}"
    assert deleted.deleted_date is not None and deleted.scheduled_purge_date is not None
    assert (deleted.scheduled_purge_date - deleted.deleted_date).days == 90
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(name)
    assert client.get_deleted_secret(name).recovery_id == deleted.recovery_id
    assert name in {d.name for d in client.list_deleted_secrets()}
    with pytest.raises(ResourceExistsError) as conflict:
        client.set_secret(name, "reuse")  # deleted but not purged: the name is taken
    assert conflict.value.status_code == 409
    assert conflict.value.error is not None and conflict.value.error.code == "Conflict"
    assert conflict.value.error.innererror == {"code": "ObjectIsDeletedButRecoverable"}
    assert conflict.value.error.message == (
        f"Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; "
        "in this state, the secret can only be recovered or purged."
    )
    # Reading, updating or deleting a soft-deleted secret is 404, as in the service (its message says so).
    for gone in (
        lambda: client.update_secret_properties(name, enabled=False),
        lambda: client.begin_delete_secret(name),
    ):
        with pytest.raises(ResourceNotFoundError) as not_found:
            gone()
        assert not_found.value.error is not None and not_found.value.error.code == "SecretNotFound"
        assert "If you recently deleted this secret" in str(not_found.value.error.message)

    recover = client.begin_recover_deleted_secret(name)
    recover.wait(timeout=10)

    assert recover.result().name == name
    assert client.get_secret(name).value == "v2"
    assert client.get_secret(name, first).value == "v1"  # every version comes back
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_secret(name)

    client.begin_delete_secret(name).wait(timeout=10)
    client.purge_deleted_secret(name)

    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_secret(name)
    assert name not in {d.name for d in client.list_deleted_secrets()}
    reborn = client.set_secret(name, "fresh")
    assert [p.version for p in client.list_properties_of_secret_versions(name)] == [reborn.properties.version]


def test_unknown_names_and_versions_are_not_found(client: SecretClient) -> None:
    name = unique("missing")
    existing = unique("present")
    client.set_secret(existing, "v")

    with pytest.raises(ResourceNotFoundError) as unknown:
        client.get_secret(name)
    assert unknown.value.error is not None and unknown.value.error.code == "SecretNotFound"
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(existing, uuid.uuid4().hex)
    with pytest.raises(ResourceNotFoundError):
        client.update_secret_properties(name, enabled=False)
    with pytest.raises(ResourceNotFoundError):
        client.begin_delete_secret(name)
    with pytest.raises(ResourceNotFoundError):
        client.purge_deleted_secret(existing)  # not deleted
    with pytest.raises(ResourceNotFoundError):
        client.begin_recover_deleted_secret(existing)


@pytest.mark.parametrize(
    ("case", "name", "value", "tags"),
    [
        ("underscore in name", "bad_name", "v", None),
        ("128-character name", "n" * 128, "v", None),
        ("25 KiB + 1 byte value", "big", "x" * (25 * 1024 + 1), None),
        ("value over 25 KiB in UTF-8", "big-utf8", "é" * (25 * 512 + 1), None),
        ("16 tags", "tags", "v", {f"t{i}": "v" for i in range(16)}),
        ("257-character tag value", "tag-value", "v", {"t": "v" * 257}),
        ("257-character tag name", "tag-name", "v", {"t" * 257: "v"}),
    ],
)
def test_invalid_requests_are_bad_parameter(
    client: SecretClient, case: str, name: str, value: str, tags: dict[str, str] | None
) -> None:
    with pytest.raises(HttpResponseError) as bad:
        client.set_secret(name, value, tags=tags)

    assert bad.value.status_code == 400, case
    assert bad.value.error is not None and bad.value.error.code == "BadParameter"


def test_values_and_tags_at_the_limits_are_accepted(client: SecretClient) -> None:
    name = "n" * 127
    value = "x" * (25 * 1024)
    tags = {f"{i:02d}" + "k" * 254: "v" * 256 for i in range(15)}

    stored = client.set_secret(name, value, tags=tags)

    assert client.get_secret(name).value == value
    assert stored.properties.tags == tags


# ------------------------------------------------------------------------------ certificate-backed secrets


def test_certificate_secrets_are_managed_read_only_and_carry_the_key_id(
    client: SecretClient, emulator: EmulatorProcess
) -> None:
    pfx_name, pem_name = unique("cert-pfx"), unique("cert-pem")
    created = emulator.create_certificate(pfx_name)
    emulator.create_certificate(pem_name, content_type="application/x-pem-file")
    emulator.reset_stats()

    pfx, pem = client.get_secret(pfx_name), client.get_secret(pem_name)
    listed = {p.name: p for p in client.list_properties_of_secrets()}
    refused = [
        conflict_of(lambda: client.set_secret(pfx_name, "overwrite")),
        conflict_of(lambda: client.update_secret_properties(pfx_name, enabled=False)),
        conflict_of(lambda: client.begin_delete_secret(pfx_name)),
    ]
    renewed = emulator.create_certificate(pfx_name)  # a renewal: a new version of the same secret
    versions = list(client.list_properties_of_secret_versions(pfx_name))

    assert "value" not in created and created["managed"] is True
    assert created["kid"] == f"{emulator.url}/keys/{pfx_name}/{pfx.properties.version}"
    assert pfx.properties.managed is True and pem.properties.managed is True
    assert pfx.properties.key_id == f"{emulator.url}/keys/{pfx_name}/{pfx.properties.version}"
    assert pem.properties.key_id == f"{emulator.url}/keys/{pem_name}/{pem.properties.version}"
    assert pfx.properties.content_type == "application/x-pkcs12"
    assert pem.properties.content_type == "application/x-pem-file"
    # The values are what Key Vault stores: a password-less PFX in base64, or the key and certificate in PEM.
    key, certificate, _ = pkcs12.load_key_and_certificates(base64.b64decode(str(pfx.value)), None)
    assert key is not None and certificate is not None
    assert certificate.subject.rfc4514_string() == f"CN={pfx_name}"
    assert "BEGIN PRIVATE KEY" in str(pem.value) and "BEGIN CERTIFICATE" in str(pem.value)
    assert pfx.properties.expires_on == certificate.not_valid_after_utc
    assert listed[pfx_name].managed is True and listed[pfx_name].key_id is None  # items carry no kid
    assert client.get_secret(pfx_name).properties.enabled is True  # nothing was changed by the refusals
    assert all(code is None for code, _ in refused)
    assert len(versions) == 2 and all(v.managed for v in versions)
    assert renewed["id"] != created["id"]
    assert emulator.stats()["requests"]["set_secret"] == 1  # control calls are not counted


def test_certificates_cannot_take_an_ordinary_or_soft_deleted_name(
    client: SecretClient, emulator: EmulatorProcess
) -> None:
    ordinary, binned = unique("plain"), unique("binned")
    client.set_secret(ordinary, "v")
    client.set_secret(binned, "v")
    client.begin_delete_secret(binned).wait(timeout=10)

    answers = {}
    for name in (ordinary, binned, "bad_name"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            emulator.create_certificate(name)
        answers[name] = (refused.value.code, json.load(refused.value)["error"])
    with pytest.raises(urllib.error.HTTPError) as bad_type:
        emulator.create_certificate(unique("cert"), content_type="text/plain")

    assert answers[ordinary][0] == 409 and answers[ordinary][1]["code"] == "Conflict"
    assert answers[binned][0] == 409
    assert answers[binned][1]["innererror"] == {"code": "ObjectIsDeletedButRecoverable"}
    assert answers["bad_name"][0] == 400
    assert bad_type.value.code == 400
    assert client.get_secret(ordinary).properties.managed is None


# ------------------------------------------------------------------------ throttling, latency, persistence


def test_throttled_set_is_retried_by_the_sdk_after_retry_after(tmp_path: Path) -> None:
    with start_emulator(tmp_path, create_limit=2, tx_limit=3, window_seconds=2) as throttled:
        with make_client(throttled) as sdk:
            sdk.set_secret("one", "1")
            sdk.set_secret("two", "2")
            started = time.monotonic()
            third = sdk.set_secret("three", "3")  # 429 first; the SDK sleeps Retry-After and retries
            waited = time.monotonic() - started

        stats = throttled.stats()
        # Other transactions have their own window: four GETs in a row, the fourth is throttled.
        answers = [raw(throttled, "GET", f"/secrets/one?{API}", headers=TOKEN) for _ in range(4)]

    assert third.value == "3"
    assert 0.5 <= waited < 5
    assert stats["throttled"] == 1
    assert stats["requests"]["set_secret"] == 4  # three sets, one of them twice
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[3].json()["error"]["code"] == "Throttled"
    assert 1 <= int(answers[3].headers["Retry-After"]) <= 2


def test_latency_is_added_to_every_call(tmp_path: Path, client: SecretClient) -> None:
    name = unique("latency")
    client.set_secret(name, "v")
    started = time.monotonic()
    client.get_secret(name)
    baseline = time.monotonic() - started

    with start_emulator(tmp_path, latency_ms=300) as slow, make_client(slow) as sdk:
        sdk.set_secret(name, "v")  # the challenge happens here
        started = time.monotonic()
        sdk.get_secret(name)
        slowed = time.monotonic() - started

    assert slowed >= 0.3
    assert slowed - baseline >= 0.25


def test_state_file_keeps_secrets_and_deleted_secrets_across_restarts(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    with start_emulator(tmp_path, state_file=state) as first_run, make_client(first_run) as sdk:
        v1 = sdk.set_secret("kept", "one").properties.version
        sdk.set_secret("kept", "two", tags={"k": "v"})
        sdk.update_secret_properties("kept", v1, enabled=False)
        sdk.set_secret("binned", "gone")
        sdk.begin_delete_secret("binned").wait(timeout=10)
        first_run.create_certificate("tls")
        # Written on every change: a hard kill loses nothing.
        saved = json.loads(state.read_text(encoding="utf-8"))
    assert {s["name"] for s in saved["secrets"]} == {"kept", "binned", "tls"}
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert first_run.returncode == 0

    second_run = start_emulator(tmp_path, state_file=state)
    try:
        with make_client(second_run) as sdk:
            kept = sdk.get_secret("kept")
            versions = {p.version: p.enabled for p in sdk.list_properties_of_secret_versions("kept")}
            deleted = sdk.get_deleted_secret("binned")
            sdk.begin_recover_deleted_secret("binned").wait(timeout=10)
            recovered = sdk.get_secret("binned")
            certificate = sdk.get_secret("tls")

        assert (kept.value, kept.properties.tags) == ("two", {"k": "v"})
        assert versions == {v1: False, kept.properties.version: True}
        assert deleted.recovery_id == f"{second_run.url}/deletedsecrets/binned"
        assert recovered.value == "gone"
        assert certificate.properties.managed is True and certificate.properties.key_id is not None
        os.kill(second_run.pid, signal.SIGINT)  # Ctrl-C: a clean stop too
        code = eventually(
            lambda: second_run.returncode, "the emulator to exit", timeout=10, until=lambda c: c is not None
        )
        assert code == 0
    finally:
        second_run.stop()
    names = {s["name"]: s["deleted_date"] for s in json.loads(state.read_text(encoding="utf-8"))["secrets"]}
    assert names == {"kept": None, "binned": None, "tls": None}


def test_log_names_calls_but_never_values(client: SecretClient, emulator: EmulatorProcess) -> None:
    name = unique("logged")
    value = f"value-{uuid.uuid4().hex}"
    client.set_secret(name, value)
    client.get_secret(name)
    expected = f"GET /secrets/{name}/ -> 200 get_secret"
    # A thread reads the log from the emulator's stderr.
    log = eventually(
        lambda: "\n".join(emulator.log_tail()), "the GET in the log", timeout=5, until=lambda t: expected in t
    )

    assert f"PUT /secrets/{name} -> 200 set_secret" in log
    assert f"GET /secrets/{name}/ -> 200 get_secret" in log
    assert value not in log


def test_stats_count_operations_and_reset_clears_them(
    client: SecretClient, emulator: EmulatorProcess
) -> None:
    name = unique("stats")
    client.set_secret(name, "v")
    emulator.reset_stats()

    client.get_secret(name)
    list(client.list_properties_of_secret_versions(name))
    stats = emulator.stats()

    assert stats["requests"] == {"get_secret": 1, "list_versions": 1}
    assert (stats["total"], stats["throttled"]) == (2, 0)
    assert stats["secrets"]["active"] >= 1


def test_non_loopback_hosts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="loopback"):
        EmulatorProcess.start(tmp_path / "cert.pem", host="0.0.0.0", timeout=15)  # noqa: S104 - must be refused
    usage = subprocess.run(
        [sys.executable, "-m", "devtools.keyvault_emulator", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "loopback" in usage.stdout
    assert not (tmp_path / "cert.pem").exists()


# ------------------------------------------------------- strictness options: as unkind as the real vault

PURGE_PROTECTED = (
    'Operation "purge" is not allowed because purge protection is enabled for this vault. Key Vault service '
    "will automatically purge it after the retention period has passed."
)


def write_state(path: Path, *secrets: dict[str, Any]) -> None:
    """A state file the emulator loads at start (the format ``--state-file`` writes)."""
    document = {"format": "keyvault-emulator-state", "version": 1, "secrets": list(secrets)}
    path.write_text(json.dumps(document), encoding="utf-8")


def stored_secret(
    name: str, *versions: tuple[str, bool], deleted: int | None = None, purge_at: int | None = None
) -> dict[str, Any]:
    """One secret of a state file: ``versions`` are (value, enabled), oldest first."""
    created = int(time.time()) - 3600
    return {
        "name": name,
        "versions": [
            {
                "version": uuid.uuid4().hex,
                "value": value,
                "enabled": enabled,
                "created": created,
                "updated": created,
            }
            for value, enabled in versions
        ],
        "deleted_date": deleted,
        "scheduled_purge_date": purge_at,
    }


def test_purge_protection_forbids_purge_but_deleted_secrets_still_expire(tmp_path: Path) -> None:
    now = int(time.time())
    state = tmp_path / "state.json"
    write_state(
        state,
        stored_secret("expired", ("old", True), deleted=now - 91 * 86400, purge_at=now - 86400),
        stored_secret("retained", ("kept", True), deleted=now - 86400, purge_at=now + 89 * 86400),
    )
    with (
        start_emulator(tmp_path, purge_protection=True, state_file=state) as protected,
        make_client(protected) as sdk,
    ):
        created = sdk.set_secret("live", "v")
        deleted = sdk.begin_delete_secret("live")
        deleted.wait(timeout=10)
        with pytest.raises(HttpResponseError) as forbidden:
            sdk.purge_deleted_secret("live")
        with pytest.raises(HttpResponseError) as retained_forbidden:
            sdk.purge_deleted_secret("retained")
        with pytest.raises(ResourceNotFoundError):
            sdk.purge_deleted_secret("never-deleted")  # a missing deleted secret is still 404
        still_deleted = sdk.get_deleted_secret("live")
        sdk.begin_recover_deleted_secret("live").wait(timeout=10)
        recovered = sdk.get_secret("live")
        # Past its scheduled purge date, a deleted secret is gone even though nobody may purge it.
        with pytest.raises(ResourceNotFoundError):
            sdk.get_deleted_secret("expired")
        deleted_names = {d.name for d in sdk.list_deleted_secrets()}
        reused = sdk.set_secret("expired", "new")

    assert created.properties.recovery_level == "Recoverable"
    assert deleted.result().properties.recovery_level == "Recoverable"
    assert forbidden.value.status_code == 403
    assert forbidden.value.error is not None and forbidden.value.error.code == "Forbidden"
    assert forbidden.value.error.message == PURGE_PROTECTED
    assert forbidden.value.error.innererror == {}  # not ForbiddenByRbac: no role assignment would help
    assert retained_forbidden.value.status_code == 403
    assert still_deleted.recovery_id is not None
    assert (recovered.value, recovered.properties.recovery_level) == ("v", "Recoverable")
    assert deleted_names == {"retained"}
    assert reused.value == "new"


def test_delete_recover_and_purge_with_a_delay_answer_the_services_conflicts(tmp_path: Path) -> None:
    delay = 1.0
    with start_emulator(tmp_path, delete_delay_ms=int(delay * 1000)) as slow, make_client(slow) as sdk:
        sdk.set_secret("moving", "v1")

        started = time.monotonic()
        deleting = sdk.begin_delete_secret("moving", _polling_interval=0.05)
        # Answered, but not done: the secret has left the active collection, is not yet in the deleted one,
        # and its name is busy.
        with pytest.raises(ResourceNotFoundError):
            sdk.get_deleted_secret("moving")
        with pytest.raises(ResourceNotFoundError):
            sdk.get_secret("moving")
        with pytest.raises(ResourceNotFoundError):
            sdk.update_secret_properties("moving", enabled=False)
        with pytest.raises(ResourceNotFoundError):
            sdk.begin_delete_secret("moving")  # deleting twice is 404 in the service too
        during_delete = [d.name for d in sdk.list_deleted_secrets()]
        set_conflict = conflict_of(lambda: sdk.set_secret("moving", "too-soon"))
        purge_conflict = conflict_of(lambda: sdk.purge_deleted_secret("moving"))
        recover_conflict = conflict_of(lambda: sdk.begin_recover_deleted_secret("moving"))
        checked_within = time.monotonic() - started
        slow.reset_stats()
        deleting.wait(timeout=10)
        delete_took = time.monotonic() - started
        delete_polls = slow.stats()["requests"]["get_deleted_secret"]
        after_delete = sdk.get_deleted_secret("moving")
        deleted_conflict = conflict_of(lambda: sdk.set_secret("moving", "reuse"))

        started = time.monotonic()
        recovering = sdk.begin_recover_deleted_secret("moving", _polling_interval=0.05)
        with pytest.raises(ResourceNotFoundError):
            sdk.get_secret("moving")
        with pytest.raises(ResourceNotFoundError):
            sdk.get_deleted_secret("moving")
        during_recover = [p.name for p in sdk.list_properties_of_secrets()]
        recovering_conflicts = [
            conflict_of(lambda: sdk.set_secret("moving", "too-soon")),
            conflict_of(lambda: sdk.update_secret_properties("moving", enabled=False)),
            conflict_of(lambda: sdk.begin_delete_secret("moving")),
        ]
        recover_checked_within = time.monotonic() - started
        slow.reset_stats()
        recovering.wait(timeout=10)
        recover_took = time.monotonic() - started
        recover_polls = slow.stats()["requests"]["get_secret"]
        after_recover = sdk.get_secret("moving")

        # Then delete for good: the poller waits for the delete, after which purge is allowed.
        sdk.begin_delete_secret("moving", _polling_interval=0.05).wait(timeout=10)
        sdk.purge_deleted_secret("moving")
        with pytest.raises(ResourceNotFoundError):
            sdk.get_deleted_secret("moving")
        reborn = sdk.set_secret("moving", "fresh")

    assert checked_within < delay and recover_checked_within < delay, (
        "the checks were too slow to mean anything"
    )
    assert during_delete == [] and during_recover == []
    assert set_conflict == (
        "ObjectIsBeingDeleted",
        "Secret moving is currently being deleted and cannot be re-created; retry later.",
    )
    being_deleted = ("ObjectIsBeingDeleted", "Secret is currently being deleted.")
    assert purge_conflict == being_deleted and recover_conflict == being_deleted
    assert deleted_conflict[0] == "ObjectIsDeletedButRecoverable"
    assert recovering_conflicts[0] == (
        "ObjectIsBeingRecovered",
        "Secret moving is currently being recovered and cannot be re-created; retry later.",
    )
    assert [code for code, _ in recovering_conflicts[1:]] == ["ObjectIsBeingRecovered"] * 2
    # The SDK's pollers saw 404s, then the secret: wait() really waited.
    assert delay * 0.9 <= delete_took < delay + 3 and delete_polls >= 2
    assert delay * 0.9 <= recover_took < delay + 3 and recover_polls >= 2
    assert deleting.done() and recovering.done()
    assert after_delete.name == "moving"
    assert after_recover.value == "v1"
    assert reborn.value == "fresh"


def test_empty_pages_with_a_next_link_do_not_end_the_listing(tmp_path: Path) -> None:
    with start_emulator(tmp_path, empty_pages=True) as sparse, make_client(sparse) as sdk:
        for index in range(7):
            sdk.set_secret(f"s{index}", "v")
        for value in ("b", "c"):
            sdk.set_secret("s0", value)
        for index in (4, 5, 6):
            sdk.begin_delete_secret(f"s{index}").wait(timeout=10)
        first_page = raw(sparse, "GET", f"/secrets?{API}", headers=TOKEN).json()

        def page_sizes(pages: Any) -> list[int]:
            return [len(list(page)) for page in pages]

        secret_pages = page_sizes(sdk.list_properties_of_secrets(max_page_size=3).by_page())
        version_pages = page_sizes(sdk.list_properties_of_secret_versions("s0", max_page_size=2).by_page())
        deleted_pages = page_sizes(sdk.list_deleted_secrets(max_page_size=2).by_page())
        secrets = sorted(str(p.name) for p in sdk.list_properties_of_secrets())
        versions = list(sdk.list_properties_of_secret_versions("s0"))
        deleted = [d.name for d in sdk.list_deleted_secrets()]
        empty = list(sdk.list_properties_of_secret_versions("never-set"))

    assert first_page["value"] == [] and first_page["nextLink"].startswith(f"{sparse.url}/secrets?")
    assert secret_pages == [0, 3, 0, 1]
    assert version_pages == [0, 2, 0, 1]
    assert deleted_pages == [0, 2, 0, 1]
    assert secrets == ["s0", "s1", "s2", "s3"]
    assert len(versions) == 3
    assert deleted == ["s4", "s5", "s6"]
    assert empty == []


def test_denied_operations_are_forbidden_by_rbac_and_distinct_from_disabled(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    write_state(
        state,
        stored_secret("app-key", ("old", False), ("current", True)),
        stored_secret("binned", ("v", True), deleted=int(time.time()), purge_at=int(time.time()) + 86400),
    )
    options: dict[str, Any] = {"state_file": state, "deny": ["set_secret,purge_deleted_secret"]}
    with start_emulator(tmp_path, **options) as locked, make_client(locked) as sdk:
        with pytest.raises(HttpResponseError) as set_denied:
            sdk.set_secret("app-key", "new")
        with pytest.raises(HttpResponseError) as purge_denied:
            sdk.purge_deleted_secret("binned")
        old = next(p for p in sdk.list_properties_of_secret_versions("app-key") if not p.enabled)
        with pytest.raises(HttpResponseError) as disabled:
            sdk.get_secret("app-key", old.version)
        current = sdk.get_secret("app-key")  # what is not denied still works
        raw_denied = raw(locked, "PUT", f"/secrets/app-key?{API}", headers=TOKEN, json={"value": "x"})
        stats = locked.stats()["requests"]

    for denied, action in ((set_denied, "setSecret/action"), (purge_denied, "purge/action")):
        assert denied.value.status_code == 403
        assert denied.value.error is not None and denied.value.error.code == "Forbidden"
        assert denied.value.error.innererror == {"code": "ForbiddenByRbac"}
        assert denied.value.error.message is not None
        assert denied.value.error.message.startswith(
            "Caller is not authorized to perform action on resource."
        )
        assert f"Action: 'Microsoft.KeyVault/vaults/secrets/{action}'" in denied.value.error.message
    assert disabled.value.status_code == 403
    assert disabled.value.error is not None and disabled.value.error.innererror == {"code": "SecretDisabled"}
    assert current.value == "current"
    assert raw_denied.status_code == 403
    assert raw_denied.json()["error"]["innererror"]["code"] == "ForbiddenByRbac"
    assert (stats["set_secret"], stats["purge_deleted_secret"]) == (2, 1)  # denied calls are counted


def test_unknown_denied_operations_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="set_secrets"):
        EmulatorProcess.start(tmp_path / "cert.pem", deny=["get_secret", "set_secrets"])
    usage = subprocess.run(
        [sys.executable, "-m", "devtools.keyvault_emulator", "--cert-file", str(tmp_path / "c.pem"),
         "--deny", "get_secret,nope"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip

    assert usage.returncode == 2
    assert "unknown operation(s): nope" in usage.stderr
    assert not (tmp_path / "cert.pem").exists() and not (tmp_path / "c.pem").exists()


def test_every_routed_operation_has_an_rbac_action() -> None:
    paths = [
        ["secrets"], ["secrets", "n"], ["secrets", "restore"], ["secrets", "n", ""],
        ["secrets", "n", "0" * 32], ["secrets", "n", "versions"], ["secrets", "n", "backup"],
        ["deletedsecrets"], ["deletedsecrets", "n"], ["deletedsecrets", "n", "recover"],
    ]  # fmt: skip
    operations = set()
    for segments in paths:
        routed = route(segments)
        assert routed is not None, segments
        operations.update(routed[0].values())

    assert operations == set(ACTIONS)


# ------------------------------------------------------------------------------------------ emulator clock


def test_clock_offset_shifts_what_the_emulator_stamps_until_reset(tmp_path: Path) -> None:
    forty_days = 40 * 86400
    with start_emulator(tmp_path) as shifted, make_client(shifted) as sdk:
        assert shifted.clock()["offset_seconds"] == 0
        answer = shifted.set_clock_offset(-forty_days)
        old = sdk.set_secret(unique("old"), "v").properties
        sdk.set_secret("binned", "v")
        deleted = sdk.begin_delete_secret("binned").result()
        certificate = shifted.create_certificate("tls-old")
        during = shifted.clock()
        shifted.set_clock_offset(0)
        new = sdk.set_secret(unique("new"), "v").properties
        updated = sdk.update_secret_properties(old.name or "", old.version, tags={"k": "v"})
        after = shifted.clock()

    now = datetime.datetime.now(datetime.UTC)
    forty_days_ago = now - datetime.timedelta(seconds=forty_days)
    assert answer["offset_seconds"] == -forty_days
    assert abs(answer["now"] - forty_days_ago.timestamp()) < 30
    assert during["offset_seconds"] == -forty_days
    assert datetime.datetime.fromisoformat(during["now_utc"]).timestamp() == during["now"]
    assert old.created_on is not None and old.updated_on is not None
    assert abs((old.created_on - forty_days_ago).total_seconds()) < 30
    assert old.updated_on == old.created_on
    assert deleted.deleted_date is not None and deleted.scheduled_purge_date is not None
    assert abs((deleted.deleted_date - forty_days_ago).total_seconds()) < 30
    assert deleted.scheduled_purge_date - deleted.deleted_date == datetime.timedelta(days=90)
    assert abs(certificate["attributes"]["nbf"] - forty_days_ago.timestamp()) < 30
    # Reset: stamped at the real time again; what was stamped before keeps its time.
    assert after["offset_seconds"] == 0 and abs(after["now"] - now.timestamp()) < 30
    assert new.created_on is not None and abs((new.created_on - now).total_seconds()) < 30
    assert updated.created_on == old.created_on
    assert updated.updated_on is not None and abs((updated.updated_on - now).total_seconds()) < 30


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b"{}",
        b'{"offset_seconds": "3600"}',
        b'{"offset_seconds": 1.5}',
        b'{"offset_seconds": 3600.0}',
        b'{"offset_seconds": true}',
        b'{"offset_seconds": null}',
        b'{"offset_seconds": 3600, "extra": 1}',
        b'{"offset": 3600}',
        b'{"offset_seconds": 315619201}',
        b'{"offset_seconds": -315619201}',
    ],
)
def test_clock_refuses_any_other_body(emulator: EmulatorProcess, body: bytes) -> None:
    answer = raw(emulator, "POST", "/_emulator/clock", data=body)

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "BadParameter"
    assert emulator.clock()["offset_seconds"] == 0


def test_clock_accepts_ten_years_either_way_and_other_methods_are_refused(tmp_path: Path) -> None:
    ten_years = 315_619_200
    with start_emulator(tmp_path) as shifted:
        assert shifted.set_clock_offset(ten_years)["offset_seconds"] == ten_years
        assert shifted.set_clock_offset(-ten_years)["offset_seconds"] == -ten_years
        assert raw(shifted, "DELETE", "/_emulator/clock").status_code == 405
        assert shifted.set_clock_offset(0)["offset_seconds"] == 0


def test_throttling_switched_on_after_seeding(tmp_path: Path) -> None:
    with start_emulator(tmp_path, create_limit=2, tx_limit=2, throttling=False) as seeded:
        answers = [
            raw(seeded, "PUT", f"/secrets/s{i}?{API}", headers=TOKEN, json={"value": "v"}) for i in range(5)
        ]
        assert [a.status_code for a in answers] == [200] * 5
        state = seeded.set_throttling(True)
        limited = [
            raw(seeded, "PUT", f"/secrets/s{i}?{API}", headers=TOKEN, json={"value": "v"}) for i in range(3)
        ]
        stats = seeded.stats()

    assert state == {"enabled": True, "create_limit": 2, "tx_limit": 2, "window_seconds": 10.0}
    assert [a.status_code for a in limited] == [200, 200, 429]
    assert stats["throttled"] == 1
    assert stats["names"]["set_secret"] == {"s0": 2, "s1": 2, "s2": 2, "s3": 1, "s4": 1}
