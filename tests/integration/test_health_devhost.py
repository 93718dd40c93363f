"""GET /api/health through the dev host over real HTTP, against real peers that come and go."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from devtools.azurite import AzuriteProcess
from devtools.host import HostProcess
from devtools.keyvault_emulator.process import EmulatorProcess
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
        host = _start(
            "dev host",
            lambda: HostProcess.start(env=app_settings(azurite, emulator), settings=no_settings(tmp_path)),
        )
        status, body = get(f"{host.url}/api/health")
        assert status == 200, body
        assert body["status"] == "ok"
        assert body["checks"]["key_vault"]["status"] == "ok"
        assert body["checks"]["storage"]["status"] == "ok"

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
    env = {
        "SECRETS_STORAGE": azurite.connection_string,
        "AzureWebJobsStorage": azurite.connection_string,
        "KEY_VAULT_URL": "",
    }
    host = _start("dev host", lambda: HostProcess.start(env=env, settings=no_settings(tmp_path)))
    try:
        status, body = get(f"{host.url}/api/health")
    finally:
        host.stop()
    assert status == 503
    assert body["checks"]["key_vault"]["detail"] == "misconfigured: KEY_VAULT_URL"
    assert body["checks"]["storage"]["status"] == "ok"
