"""The audit endpoints over real HTTP through the dev host, on real peers: roles and ACCESS_DENIED records,
verify, the operator CLI, and fail-closed behaviour while the storage account is unreachable."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from devtools.azurite import AzuriteProcess
from devtools.host import HostProcess
from devtools.keyvault_emulator.process import EmulatorProcess
from shared.adapters.tables import AUDIT_TABLE, TableFindingStore, row_key
from shared.domain.findings import StoredFinding
from tests.integration.conftest import app_settings
from tests.integration.http_client import Client

REPO = Path(__file__).resolve().parents[2]
FINDING = "ab" * 16


class Stack:
    def __init__(self, tmp: Path, emulator: EmulatorProcess) -> None:
        self.tmp = tmp
        self.emulator = emulator
        self.azurite = AzuriteProcess.start(tmp / "azurite")
        self.settings_file = tmp / "local.settings.json"
        self.settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": {}}))
        self.env = app_settings(self.azurite, emulator)
        self.host = HostProcess.start(env=self.env, settings=self.settings_file)
        self.client = Client(self.host.url)

    def restart_azurite(self) -> None:
        ports = {"blob_port": self.azurite.blob_port, "queue_port": self.azurite.queue_port,
                 "table_port": self.azurite.table_port}  # fmt: skip
        self.azurite.stop()
        self.azurite = AzuriteProcess.start(self.tmp / "azurite", **ports)

    def tables(self) -> TableServiceClient:
        return TableServiceClient.from_connection_string(self.azurite.connection_string)

    def stop(self) -> None:
        self.host.stop()
        self.azurite.stop()


@pytest.fixture
def stack(tmp_path: Path, kv_emulator: EmulatorProcess) -> Iterator[Stack]:
    try:
        running = Stack(tmp_path, kv_emulator)
    except RuntimeError as err:
        pytest.fail(f"a peer could not start: {err}", pytrace=False)
    yield running
    running.stop()


def audit_rows(stack: Stack) -> list[dict[str, Any]]:
    table = stack.tables().create_table_if_not_exists(AUDIT_TABLE)
    rows = [dict(e) for e in table.list_entities()]
    return [r for r in rows if r["RowKey"] != "head" and r["PartitionKey"] != "_digest"]


def test_refusals_are_audited_and_queryable(stack: Stack) -> None:
    status, body = stack.client.get("/api/audit?secret_name=db-password", principal=None)
    assert status == 401
    assert body["title"] == "Unauthorized"
    status, body = stack.client.get("/api/audit?action=ACCESS_DENIED")
    assert status == 200
    [item] = body["items"]
    assert item["actor_id"] == "anonymous"
    assert item["details"]["secret_name"] == "db-password"
    assert item["result"] == "denied"
    assert item["details"]["required_role"] == "Secrets.Audit.Read"

    status, body = stack.client.get("/api/audit/summary?days=1")
    assert status == 200
    assert body["by_action"] == {"ACCESS_DENIED": {"denied": 1}}
    status, body = stack.client.get("/api/audit?since=not-a-date")
    assert (status, body["parameter"]) == (400, "since")


def test_verify_over_http_and_from_the_cli(stack: Stack) -> None:
    stack.client.get("/api/audit", principal=None)  # one ACCESS_DENIED record
    assert stack.client.post("/admin/functions/audit_digest", {"input": ""})[0] == 202
    assert stack.host.wait_for_output("audit digest 1 sealed", timeout=30), stack.host.output()
    status, body = stack.client.get("/api/audit/verify")
    assert status == 200
    assert (body["status"], body["records"], body["digests"]) == ("ok", 1, 1)

    cli = [sys.executable, "-m", "shared.entrypoints.cli", "verify", "--settings", str(stack.settings_file)]
    env = {"PATH": "/usr/bin:/bin", **stack.env}
    result = subprocess.run(cli, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "intact" in result.stdout

    [row] = audit_rows(stack)
    table = stack.tables().get_table_client(AUDIT_TABLE)
    table.delete_entity(row["PartitionKey"], row_key(1))
    status, body = stack.client.get("/api/audit/verify")
    assert body["status"] == "broken"
    assert {b["kind"] for b in body["breaks"]} == {"truncated"}
    result = subprocess.run([*cli, "--json"], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert json.loads(result.stdout)["status"] == "broken"
    unreachable = {
        **env,
        "KEY_VAULT_URL": "https://127.0.0.1:9",
        "KEY_VAULT_CA_BUNDLE": str(stack.emulator.cert_file),
    }
    result = subprocess.run(cli, cwd=REPO, env=unreachable, capture_output=True, text=True, check=False)
    assert result.returncode == 3, result.stdout + result.stderr


def test_state_change_fails_closed_while_storage_is_unreachable(stack: Stack) -> None:
    findings = TableFindingStore(stack.tables())
    assert findings.claim(StoredFinding(FINDING, "break_glass", _now(), details={"summary": "test"}))

    stack.azurite.stop()
    started = time.monotonic()
    status, body = stack.client.post(f"/api/audit/findings/{FINDING}/review", {"note": "looked at it"})
    assert status == 503, body
    assert body["title"] == "Service Unavailable"
    assert time.monotonic() - started < 60

    stack.restart_azurite()
    findings = TableFindingStore(stack.tables())
    assert getattr(findings.get(FINDING), "status", None) == "open"
    assert [r for r in audit_rows(stack) if r["action"] == "REVIEWED"] == []

    status, body = stack.client.post(f"/api/audit/findings/{FINDING}/review", {"note": "looked at it"})
    assert status == 200, body
    assert getattr(findings.get(FINDING), "status", None) == "reviewed"
    assert [r["actor_id"] for r in audit_rows(stack) if r["action"] == "REVIEWED"] == ["oid-auditor"]


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
