"""A burst of anonymous refusals from one address becomes an access_denied_burst_ip finding, end to end: real
HTTP through the dev host (which appends the peer to X-Forwarded-For, as App Service's front end does), the
real audit table on Azurite, the Key Vault emulator for the audit MAC key, and the suspicious-activity scan
run through the dev host's admin API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.data.tables import TableServiceClient

from devtools.azurite import AzuriteProcess
from devtools.host import HostProcess
from devtools.keyvault_emulator.process import EmulatorProcess
from devtools.stack import create_tables
from shared.adapters.tables import TableFindingStore
from tests.integration.conftest import app_settings
from tests.integration.http_client import Client

DENIED_PER_IP = 4


class Stack:
    def __init__(self, tmp: Path, emulator: EmulatorProcess) -> None:
        self.azurite = AzuriteProcess.start(tmp / "azurite")
        create_tables(self.azurite.connection_string)
        settings = tmp / "local.settings.json"
        settings.write_text(json.dumps({"IsEncrypted": False, "Values": {}}))
        env = app_settings(self.azurite, emulator, AUDIT_SCAN_DENIED_PER_IP=str(DENIED_PER_IP))
        try:
            self.host = HostProcess.start(env=env, settings=settings)
        except RuntimeError:
            self.azurite.stop()
            raise
        self.client = Client(self.host.url)

    def tables(self) -> TableServiceClient:
        return TableServiceClient.from_connection_string(self.azurite.connection_string)

    def anonymous_get(self, path: str, forwarded_for: str) -> int:
        """A request without a principal, claiming to come from ``forwarded_for`` (a forged hop)."""
        request = urllib.request.Request(self.host.url + path, headers={"X-Forwarded-For": forwarded_for})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return int(response.status)
        except urllib.error.HTTPError as err:
            return err.code

    def scan(self, expected: str) -> None:
        assert self.client.post("/admin/functions/suspicious_activity_scan", {"input": ""})[0] == 202
        assert self.host.wait_for_output(expected, timeout=30), self.host.output()

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


def test_a_burst_of_anonymous_refusals_from_one_ip_is_a_finding(stack: Stack) -> None:
    # Each request forges a different client hop: only the hop the front end appends may count.
    for n in range(DENIED_PER_IP - 1):
        assert stack.anonymous_get("/api/audit", forwarded_for=f"198.51.100.{n}") == 401
    stack.scan("0 new finding(s)")  # one short of the threshold

    assert stack.anonymous_get("/api/audit/summary", forwarded_for="198.51.100.99") == 401
    stack.scan("1 new finding(s)")

    status, denied = stack.client.get("/api/audit?action=ACCESS_DENIED")
    assert status == 200
    assert len(denied["items"]) == DENIED_PER_IP
    assert {(item["actor_id"], item["actor_ip"]) for item in denied["items"]} == {("anonymous", "127.0.0.1")}
    status, found = stack.client.get("/api/audit?action=SUSPICIOUS_ACTIVITY")
    assert status == 200
    [record] = found["items"]
    details = record["details"]
    assert (details["rule"], details["subject"], details["count"]) == (
        "access_denied_burst_ip",
        "127.0.0.1",
        4,
    )
    assert sorted(details["record_ids"]) == sorted(item["id"] for item in denied["items"])
    finding = TableFindingStore(stack.tables()).get(details["finding_id"])
    assert finding is not None
    assert (finding.rule, finding.audited, finding.notified) == ("access_denied_burst_ip", True, True)
