"""A burst of anonymous refusals from one address becomes an access_denied_burst_ip finding, end to end: real
HTTP through the dev host (which appends the peer to X-Forwarded-For, as App Service's front end does), the
real audit table on Azurite, the Key Vault emulator for the audit MAC key, and the suspicious-activity scan
run through the dev host's admin API."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from tests.integration.app_stack import Stack

DENIED_PER_IP = 4


def anonymous_get(stack: Stack, path: str, forwarded_for: str) -> int:
    """A request without a principal, claiming to come from ``forwarded_for`` (a forged hop)."""
    request = urllib.request.Request(stack.host.url + path, headers={"X-Forwarded-For": forwarded_for})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code


def scan(stack: Stack, expected: str) -> None:
    assert stack.client.post("/admin/functions/suspicious_activity_scan", {"input": ""})[0] == 202
    assert stack.host.wait_for_output(expected, timeout=30), stack.host.output()


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(AUDIT_SCAN_DENIED_PER_IP=str(DENIED_PER_IP))


def test_a_burst_of_anonymous_refusals_from_one_ip_is_a_finding(stack: Stack) -> None:
    # Each request forges a different client hop: only the hop the front end appends may count.
    for n in range(DENIED_PER_IP - 1):
        assert anonymous_get(stack, "/api/audit", forwarded_for=f"198.51.100.{n}") == 401
    scan(stack, "0 new finding(s)")  # one short of the threshold

    assert anonymous_get(stack, "/api/audit/summary", forwarded_for="198.51.100.99") == 401
    scan(stack, "1 new finding(s)")

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
    finding = stack.findings().get(details["finding_id"])
    assert finding is not None
    assert (finding.rule, finding.audited, finding.notified) == ("access_denied_burst_ip", True, True)
