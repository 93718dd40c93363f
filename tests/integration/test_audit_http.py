"""The audit endpoints over real HTTP through the dev host, on real peers: roles and ACCESS_DENIED records,
verify, the operator CLI, and fail-closed behaviour while the storage account is unreachable."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from shared.adapters.tables import AUDIT_TABLE, row_key
from shared.domain.findings import StoredFinding
from tests.integration.app_stack import Stack, audit_rows

REPO = Path(__file__).resolve().parents[2]
FINDING = "ab" * 16


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
    status, body = stack.client.get("/api/audit/verify?fresh=true")
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
    findings = stack.findings()
    assert findings.claim(StoredFinding(FINDING, "break_glass", _now(), details={"summary": "test"}))

    stack.azurite.stop()
    started = time.monotonic()
    status, body = stack.client.post(f"/api/audit/findings/{FINDING}/review", {"note": "looked at it"})
    assert status == 503, body
    assert body["title"] == "Service Unavailable"
    assert time.monotonic() - started < 60

    stack.restart_azurite()
    findings = stack.findings()
    assert getattr(findings.get(FINDING), "status", None) == "open"
    assert [r for r in audit_rows(stack) if r["action"] == "REVIEWED"] == []

    status, body = stack.client.post(f"/api/audit/findings/{FINDING}/review", {"note": "looked at it"})
    assert status == 200, body
    assert getattr(findings.get(FINDING), "status", None) == "reviewed"
    reviewed = [(r["actor_id"], r["result"]) for r in audit_rows(stack) if r["action"] == "REVIEWED"]
    assert sorted(reviewed) == [("oid-auditor", "intent"), ("oid-auditor", "success")]


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
