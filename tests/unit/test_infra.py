"""infra/: every Bicep file parses (pycep, the parser checkov uses: no Bicep CLI installs on these
machines), and the Function App's settings in the Bicep are every setting the code reads, with values it
accepts, but for those the platform sets or that are for a local stack only."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from shared.config import Settings

ROOT = Path(__file__).resolve().parents[2]
BICEP = sorted((ROOT / "infra").rglob("*.bicep"))

#: Settings the code reads that the deployment must not set, and why.
NOT_DEPLOYED = {
    "WEBSITE_INSTANCE_ID": "set by the platform on every instance",
    "WEBSITE_AUTH_ENABLED": "set by the platform when App Service Authentication is on",
    "AZURE_FUNCTIONS_ENVIRONMENT": "set by the platform (and by Core Tools locally)",
    "AZURE_CLIENT_ID": "a user-assigned identity; the deployment uses the system-assigned one",
    "SECRETS_STORAGE__clientId": "a user-assigned identity; the deployment uses the system-assigned one",
    "SECRETS_STORAGE": "a connection string (keys): the deployment uses the identity-based service URIs",
    "KEY_VAULT_CA_BUNDLE": "the local Key Vault emulator's certificate",
    "EVENT_GRID_TOPIC_KEY": "a topic key: the deployment disables local auth and sends with the identity",
    "ALLOW_UNVERIFIED_PRINCIPAL": "never in Azure: the HTTP functions refuse to serve with it",
    "WEBHOOK_CA_BUNDLE": "a private CA's file for webhook consumers, which a deployment adds if it has one",
    "TELEMETRY_CONSOLE": "spans and metrics printed locally; in Azure they go to Application Insights",
}


def settings_read_by_the_code() -> set[str]:
    source = (ROOT / "shared" / "config.py").read_text()
    constants = dict(re.findall(r'^([A-Z_]+) = "([A-Z][A-Z0-9_]+)"$', source, re.MULTILINE))
    read = set(re.findall(r'_(?:get|int|flag|hours|days)\(\s*"([A-Z][A-Z0-9_]+)"', source))
    read |= {constants[name] for name in re.findall(r"_(?:get|int|flag)\(([A-Z_]+)\b", source)}
    read |= {f"{constants[c]}__{part}" for c, part in re.findall(r'f"\{([A-Z_]+)\}__(\w+)"', source)}
    read |= set(re.findall(r'_(?:hours|days)\("([A-Z_]+)"', source))
    return read


@functools.cache
def app_settings() -> tuple[dict[str, Any], frozenset[str]]:
    """The Function App's settings as the Bicep sets them, and the module's parameter names (a value
    that is one stands for what the deployment passes)."""
    parsed = BicepParser().parse(file_path=ROOT / "infra" / "modules" / "functionapp.bicep")
    listed = parsed["resources"]["site"]["config"]["properties"]["siteConfig"]["appSettings"]
    return {item["name"]: item["value"] for item in listed}, frozenset(parsed["parameters"])


@pytest.mark.parametrize("path", BICEP, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_bicep_file_parses(path: Path) -> None:
    parsed = BicepParser().parse(file_path=path)
    assert parsed.get("resources") or parsed.get("modules"), f"{path.name} declares nothing"


def test_a_bicep_syntax_error_is_caught() -> None:
    with pytest.raises(Exception):  # noqa: B017 - pycep raises lark's errors
        BicepParser().parse(text="resource x 'Microsoft.Web/sites@2024-04-01' = {\n  name: 'x'\n")


def test_the_code_reads_the_settings_this_test_knows() -> None:
    read = settings_read_by_the_code()
    assert {"KEY_VAULT_URL", "SECRETS_STORAGE__tableServiceUri", "AUDIT_RETENTION_DAYS"} <= read
    assert set(NOT_DEPLOYED) <= read, set(NOT_DEPLOYED) - read  # a stale entry here hides nothing


def test_the_bicep_sets_every_setting_the_code_reads() -> None:
    deployed, _ = app_settings()
    missing = settings_read_by_the_code() - set(NOT_DEPLOYED) - set(deployed)
    assert not missing, f"set these in infra/modules/functionapp.bicep: {sorted(missing)}"
    assert not set(NOT_DEPLOYED) & set(deployed)


def test_the_values_the_bicep_sets_are_accepted() -> None:
    deployed, parameters = app_settings()
    literal = {n: v for n, v in deployed.items() if isinstance(v, str) and v not in parameters}
    assert literal["EXPIRY_REQUIRE_EXP"] == "false" and literal["AUDIT_TIMEZONE"] == "UTC"
    values = {
        **literal,
        "KEY_VAULT_URL": "https://kv-fleet.vault.azure.net",
        "SECRETS_STORAGE__tableServiceUri": "https://st.table.core.windows.net",
        "SECRETS_STORAGE__queueServiceUri": "https://st.queue.core.windows.net",
        "SECRETS_STORAGE__blobServiceUri": "https://st.blob.core.windows.net",
        "EVENT_GRID_TOPIC_ENDPOINT": "https://evgt.westeurope-1.eventgrid.azure.net/api/events",
    }
    settings = Settings(values)
    for prop in (
        "key_vault", "storage", "event_grid", "scan_rules", "revocation_ttl", "revocation_approvals",
        "rotation_stall_after", "audit_anchor_secret", "audit_retention_days", "audit_archive_container",
        "expiry_require_exp",
    ):  # fmt: skip
        getattr(settings, prop)
