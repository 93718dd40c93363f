"""GET /api/health through the dev host over real HTTP, against real peers that come and go.

Each Azurite gets the service's tables first, as a deployment does (infra/ declares them; `make run` creates
them): the health check reports a missing audit table.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from devtools.azurite import AzuriteProcess
from devtools.host import HostProcess
from devtools.keyvault_emulator.process import EmulatorProcess
from devtools.stack import create_tables
from shared.adapters.tables import AUDIT_TABLE
from tests.integration.conftest import app_settings


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def no_settings(tmp_path: Path) -> Path:
    """An empty local.settings.json, so a developer's own file cannot leak into the test."""
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": {}}))
    return path


def _start(what: str, starter: Any) -> Any:
    try:
        return starter()
    except RuntimeError as err:
        pytest.fail(f"{what} could not start: {err}", pytrace=False)


def test_health_is_200_with_both_peers_and_503_when_one_stops(tmp_path: Path) -> None:
    azurite = _start("Azurite", AzuriteProcess.start)
    emulator = _start("Key Vault emulator", lambda: EmulatorProcess.start(tmp_path / "kv.pem"))
    host = None
    try:
        create_tables(azurite.connection_string)
        host = _start(
            "dev host",
            lambda: HostProcess.start(env=app_settings(azurite, emulator), settings=no_settings(tmp_path)),
        )
        status, body = get(f"{host.url}/api/health")
        assert status == 200, body
        assert body["status"] == "ok"
        assert body["checks"]["key_vault"]["status"] == "ok"
        assert body["checks"]["storage"]["status"] == "ok"
        assert body["checks"]["audit_store"]["status"] == "ok"

        emulator.stop()
        status, body = get(f"{host.url}/api/health")
        assert status == 503
        assert body["status"] == "degraded"
        assert body["checks"]["key_vault"] == {
            "status": "error",
            "duration_ms": body["checks"]["key_vault"]["duration_ms"],
            "detail": "unreachable (connection failed)",
        }
        assert body["checks"]["storage"]["status"] == "ok"
        assert body["checks"]["key_vault"]["duration_ms"] < 10_000  # no long retry loop on a dead peer

        azurite.stop()
        status, body = get(f"{host.url}/api/health")
        assert status == 503
        assert body["checks"]["storage"]["status"] == "error"
    finally:
        if host is not None:
            host.stop()
        emulator.stop()
        azurite.stop()


def test_health_names_a_missing_setting(tmp_path: Path, azurite: AzuriteProcess) -> None:
    create_tables(azurite.connection_string)
    env = {
        "SECRETS_STORAGE": azurite.connection_string,
        "AzureWebJobsStorage": azurite.connection_string,
        "KEY_VAULT_URL": "",
        "ROTATION_SWEEP_SCHEDULE": "0 0 * * * *",  # a binding expression: the host needs it to start
        "EXPIRY_CHECK_SCHEDULE": "0 0 6 * * *",
    }
    host = _start("dev host", lambda: HostProcess.start(env=env, settings=no_settings(tmp_path)))
    try:
        status, body = get(f"{host.url}/api/health")
    finally:
        host.stop()
    assert status == 503
    assert body["checks"]["key_vault"]["detail"] == "misconfigured: KEY_VAULT_URL"
    assert body["checks"]["storage"]["status"] == "ok"
    assert body["checks"]["audit_store"]["status"] == "ok"


def test_health_reports_the_audit_store_while_the_audit_table_is_gone(
    tmp_path: Path, kv_emulator: EmulatorProcess
) -> None:
    azurite = _start("Azurite", AzuriteProcess.start)
    host = None
    try:
        tables = TableServiceClient.from_connection_string(azurite.connection_string)
        host = _start(
            "dev host",
            lambda: HostProcess.start(env=app_settings(azurite, kv_emulator), settings=no_settings(tmp_path)),
        )
        health = f"{host.url}/api/health"
        status, body = get(health)  # a fresh account, before the deployment's tables exist
        assert (status, body["checks"]["audit_store"]["detail"]) == (
            503,
            "audit table auditlog does not exist",
        )

        assert create_tables(azurite.connection_string) == [
            AUDIT_TABLE,
            "auditlogindex",
            "auditfindings",
            "secretstate",
        ]
        status, body = get(health)
        assert status == 200, body
        assert {name: check["status"] for name, check in body["checks"].items()} == {
            "key_vault": "ok",
            "storage": "ok",
            "audit_store": "ok",
        }

        tables.delete_table(AUDIT_TABLE)
        status, body = get(health)
        assert status == 503
        assert body["status"] == "degraded"
        assert body["checks"]["audit_store"] == {
            "status": "error",
            "duration_ms": body["checks"]["audit_store"]["duration_ms"],
            "detail": "audit table auditlog does not exist",
        }
        assert body["checks"]["storage"]["status"] == "ok"  # the account itself still answers
        assert body["checks"]["key_vault"]["status"] == "ok"

        tables.create_table(AUDIT_TABLE)
        status, body = get(health)
        assert status == 200, body
        assert body["checks"]["audit_store"]["status"] == "ok"
    finally:
        if host is not None:
            host.stop()
        azurite.stop()
