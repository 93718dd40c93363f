"""Settings: each missing or malformed setting is one error naming it, raised at first use."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from shared.config import ConfigurationError, Settings, is_loopback_host


def test_nothing_is_read_until_asked() -> None:
    settings = Settings({})  # no setting at all: construction must not fail
    with pytest.raises(ConfigurationError) as err:
        _ = settings.key_vault
    assert err.value.setting == "KEY_VAULT_URL"


@pytest.mark.parametrize(
    "url",
    [
        "http://myvault.vault.azure.net",
        "myvault.vault.azure.net",
        "https://",
        "https://v.vault.azure.net/secrets/x",
    ],
)
def test_key_vault_url_must_be_an_https_base_url(url: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        _ = Settings({"KEY_VAULT_URL": url}).key_vault
    assert err.value.setting == "KEY_VAULT_URL"


def test_remote_vault_takes_no_local_shortcut_even_with_a_ca_bundle(tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("x")
    kv = Settings(
        {"KEY_VAULT_URL": "https://fleet.vault.azure.net/", "KEY_VAULT_CA_BUNDLE": str(pem)}
    ).key_vault
    assert kv.url == "https://fleet.vault.azure.net"
    assert not kv.is_local
    assert kv.ca_bundle is None


def test_several_vaults_the_designated_one_first() -> None:
    settings = Settings(
        {
            "KEY_VAULT_URL": "https://fleet.vault.azure.net",
            "KEY_VAULT_URLS": " https://fleet-eu.vault.azure.net/ ,https://FLEET.vault.azure.net, "
            "https://fleet-us.vault.azure.net",
        }
    )
    assert [v.name for v in settings.key_vaults] == ["fleet", "fleet-eu", "fleet-us"]
    assert settings.key_vault.name == "fleet"  # the audit key and the anchor live there
    listed_only = Settings(
        {"KEY_VAULT_URLS": "https://fleet-us.vault.azure.net,https://fleet.vault.azure.net"}
    )
    assert listed_only.key_vault.name == "fleet-us"


@pytest.mark.parametrize(
    ("urls", "problem"),
    [
        ("https://fleet.vault.azure.net,", "empty entry"),
        ("https://fleet.vault.azure.net,http://b.vault.azure.net", "https URL"),
        ("https://fleet.vault.azure.net,https://fleet.vault.azure.cn", "two vaults called 'fleet'"),
        (",".join(f"https://v{i}.vault.azure.net" for i in range(17)), "at most 16"),
    ],
)
def test_a_bad_vault_list_is_refused_naming_it(urls: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem) as err:
        _ = Settings({"KEY_VAULT_URLS": urls}).key_vaults
    assert err.value.setting == "KEY_VAULT_URLS"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "127.0.0.2"])
def test_loopback_vault_needs_the_emulator_certificate(host: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as err:
        _ = Settings({"KEY_VAULT_URL": f"https://{host}:8443"}).key_vault
    assert err.value.setting == "KEY_VAULT_CA_BUNDLE"
    with pytest.raises(ConfigurationError, match="does not exist"):
        _ = Settings(
            {"KEY_VAULT_URL": f"https://{host}:8443", "KEY_VAULT_CA_BUNDLE": str(tmp_path / "missing.pem")}
        ).key_vault
    pem = tmp_path / "ca.pem"
    pem.write_text("x")
    kv = Settings({"KEY_VAULT_URL": f"https://{host}:8443", "KEY_VAULT_CA_BUNDLE": str(pem)}).key_vault
    assert kv.is_local
    assert kv.ca_bundle == pem


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost.evil.example", False),
        ("127.0.0.1.nip.io", False),
        ("10.0.0.1", False),
        ("fleet.vault.azure.net", False),
    ],
)
def test_loopback_detection_is_not_fooled_by_lookalike_names(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_storage_connection_string() -> None:
    storage = Settings({"SECRETS_STORAGE": "UseDevelopmentStorage=true"}).storage
    assert storage.connection_string == "UseDevelopmentStorage=true"


def test_storage_identity_based_form() -> None:
    storage = Settings(
        {
            "SECRETS_STORAGE__tableServiceUri": "https://acct.table.core.windows.net",
            "SECRETS_STORAGE__queueServiceUri": "https://acct.queue.core.windows.net",
            "SECRETS_STORAGE__clientId": "00000000-0000-0000-0000-000000000001",
        }
    ).storage
    assert storage.connection_string is None
    assert storage.table_service_uri == "https://acct.table.core.windows.net"
    assert storage.client_id == "00000000-0000-0000-0000-000000000001"


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({}, "SECRETS_STORAGE"),
        ({"SECRETS_STORAGE": "not a connection string"}, "SECRETS_STORAGE"),
        (
            {"SECRETS_STORAGE__tableServiceUri": "https://a.table.core.windows.net"},
            "SECRETS_STORAGE__queueServiceUri",
        ),
        (
            {"SECRETS_STORAGE__queueServiceUri": "https://a.queue.core.windows.net"},
            "SECRETS_STORAGE__tableServiceUri",
        ),
        (
            {
                "SECRETS_STORAGE__tableServiceUri": "http://a.table.core.windows.net",
                "SECRETS_STORAGE__queueServiceUri": "https://a.queue.core.windows.net",
            },
            "SECRETS_STORAGE__tableServiceUri",
        ),
    ],
)
def test_storage_errors_name_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        _ = Settings(env).storage
    assert err.value.setting == setting
    assert setting in str(err.value)


def test_event_grid_is_optional_and_validated() -> None:
    assert Settings({}).event_grid.endpoint is None
    assert Settings({"EVENT_GRID_TOPIC_ENDPOINT": "  "}).event_grid.endpoint is None
    eg = Settings(
        {"EVENT_GRID_TOPIC_ENDPOINT": "https://t.westeurope-1.eventgrid.azure.net/api/events"}
    ).event_grid
    assert eg.endpoint is not None
    assert eg.key is None
    with pytest.raises(ConfigurationError) as err:
        _ = Settings(
            {"EVENT_GRID_TOPIC_ENDPOINT": "http://t.westeurope-1.eventgrid.azure.net/api/events"}
        ).event_grid
    assert err.value.setting == "EVENT_GRID_TOPIC_ENDPOINT"
    with pytest.raises(ConfigurationError) as err:
        _ = Settings({"EVENT_GRID_TOPIC_KEY": "k"}).event_grid
    assert err.value.setting == "EVENT_GRID_TOPIC_ENDPOINT"


def test_unverified_principal_switch_is_refused_in_azure() -> None:
    dev = {"AZURE_FUNCTIONS_ENVIRONMENT": "Development"}
    Settings({"ALLOW_UNVERIFIED_PRINCIPAL": "true", **dev}).check_http_safety()  # local dev host: allowed
    with pytest.raises(ConfigurationError):
        Settings({"ALLOW_UNVERIFIED_PRINCIPAL": "true"}).check_http_safety()  # not a development host
    Settings({"WEBSITE_INSTANCE_ID": "abc"}).check_http_safety()  # Azure without the switch: fine
    with pytest.raises(ConfigurationError) as err:
        Settings(
            {"ALLOW_UNVERIFIED_PRINCIPAL": "true", "WEBSITE_INSTANCE_ID": "abc", **dev}
        ).check_http_safety()
    assert err.value.setting == "ALLOW_UNVERIFIED_PRINCIPAL"


def test_flag_values_are_strict() -> None:
    assert Settings({"ALLOW_UNVERIFIED_PRINCIPAL": "TRUE"}).allow_unverified_principal
    assert not Settings({}).allow_unverified_principal
    with pytest.raises(ConfigurationError) as err:
        _ = Settings({"ALLOW_UNVERIFIED_PRINCIPAL": "maybe"}).allow_unverified_principal
    assert err.value.setting == "ALLOW_UNVERIFIED_PRINCIPAL"


def test_keys_and_connection_strings_never_show_in_a_repr() -> None:
    account_key = "c2VjcmV0LWFjY291bnQta2V5LW5vYm9keS1tdXN0LXNlZQ=="
    topic_key = "topic-key-nobody-must-see"
    settings = Settings(
        {
            "SECRETS_STORAGE": f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={account_key}",
            "EVENT_GRID_TOPIC_ENDPOINT": "https://t.westeurope-1.eventgrid.azure.net/api/events",
            "EVENT_GRID_TOPIC_KEY": topic_key,
        }
    )
    storage, event_grid = settings.storage, settings.event_grid
    assert storage.connection_string is not None and account_key in storage.connection_string
    assert event_grid.key == topic_key
    for shown in (repr(settings), repr(storage), str(storage), repr(event_grid), str(event_grid)):
        assert account_key not in shown
        assert "AccountKey" not in shown
        assert topic_key not in shown
    assert "acct" not in repr(storage)  # the whole string is left out, not just the key
    assert "eventgrid.azure.net" in repr(event_grid)  # the rest still shows


def test_revocation_settings() -> None:

    assert Settings({}).revocation_ttl == timedelta(hours=24)
    assert Settings({}).revocation_approvals == {"low": 2, "medium": 2, "high": 1, "critical": 1}
    assert Settings({"REVOCATION_TTL_HOURS": "4"}).revocation_ttl == timedelta(hours=4)
    assert Settings({"REVOCATION_APPROVALS": "high=2, critical=3"}).revocation_approvals == {
        "low": 2, "medium": 2, "high": 2, "critical": 3,
    }  # fmt: skip
    for bad in ("0", "169", "1.5", "²"):
        with pytest.raises(ConfigurationError, match="REVOCATION_TTL_HOURS"):
            _ = Settings({"REVOCATION_TTL_HOURS": bad}).revocation_ttl
    for bad in ("urgent=1", "high=0", "high=6", "high", "high=²"):
        with pytest.raises(ConfigurationError, match="REVOCATION_APPROVALS"):
            _ = Settings({"REVOCATION_APPROVALS": bad}).revocation_approvals


def test_rotation_stall_minutes() -> None:
    assert Settings({}).rotation_stall_after == timedelta(minutes=120)
    assert Settings({"ROTATION_STALL_MINUTES": "1440"}).rotation_stall_after == timedelta(days=1)
    for bad in ("29", "10081", "two hours", "-5", "٣٠"):
        with pytest.raises(ConfigurationError, match="ROTATION_STALL_MINUTES"):
            _ = Settings({"ROTATION_STALL_MINUTES": bad}).rotation_stall_after


def test_importing_the_wiring_imports_no_sdk_and_no_service() -> None:
    """bootstrap builds every client and bundle on first use (DESIGN rule 2): importing it, as the CLI and
    every entrypoint do, pulls in no Azure SDK, no pydantic model and no service module."""
    import subprocess
    import sys

    code = (
        "import sys, shared.bootstrap\n"
        "heavy = sorted(m for m in sys.modules if m.startswith(('azure', 'pydantic', 'shared.services')))\n"
        "print(heavy)\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
