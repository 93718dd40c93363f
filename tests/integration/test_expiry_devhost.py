"""Key Vault events and the expiry check end to end through the dev host on real peers: events posted to
the host's Event Grid webhook as Event Grid delivers them, the vault read through the real SecretClient
(the Key Vault emulator), claims, the queue and the audit in Azurite."""

from __future__ import annotations

import json
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.keyvault.secrets import SecretClient

from shared.adapters.key_vault import LocalTokenCredential
from shared.config import Settings
from shared.domain.policy import RotationPolicy, SecretKind
from shared.services.rotation import ROTATION_ID_TAG
from tests.integration.app_stack import Stack, audit_rows
from tests.waiting import eventually

API_KEY = RotationPolicy(SecretKind.API_KEY, timedelta(days=30), None, "dispatch-api")


def vault(stack: Stack) -> SecretClient:
    return SecretClient(stack.emulator.url, LocalTokenCredential(), **stack.emulator.client_kwargs())


def post_event(stack: Stack, kind: str, name: str, version: str, *, event_id: str | None = None) -> int:
    """One delivery as Event Grid makes it (Event Grid schema, an array, the Notification header), with
    the documented example's quirks: a stray space in a key and EXP as a string."""
    vault_name = Settings(stack.env).key_vault.name
    body = [
        {
            "id": event_id or str(uuid.uuid4()),
            "topic": f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/{vault_name}",
            "subject": name,
            "eventType": f"Microsoft.KeyVault.{kind}",
            "eventTime": datetime.now(UTC).isoformat(),
            "dataVersion": "1",
            "metadataVersion": "1",
            "data": {
                "Id": f"{stack.emulator.url}/secrets/{name}/{version}",
                "VaultName": vault_name,
                "ObjectType": "Secret",
                "ObjectName ": name,
                "Version": version,
                "NBF": None,
                "EXP": "1559082000",
            },
        }
    ]
    request = urllib.request.Request(
        f"{stack.host.url}/runtime/webhooks/eventgrid?functionName=key_vault_events",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json", "aeg-event-type": "Notification"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return int(response.status)


def rows(stack: Stack, action: str, name: str) -> list[dict[str, Any]]:
    return [r for r in audit_rows(stack) if r["action"] == action and r.get("secret_name") == name]


def test_near_expiry_of_a_managed_secret_rotates_it_once_however_often_delivered(stack: Stack) -> None:
    kv = vault(stack)
    name = f"dispatch-key-{uuid.uuid4().hex[:8]}"
    first = kv.set_secret(
        name, "initial-value", tags=API_KEY.to_tags(), expires_on=datetime.now(UTC) + timedelta(days=20)
    )
    assert first.properties.version is not None
    # Five deliveries of one fact, two of them with the same event id, the others with new ones.
    statuses = [
        post_event(
            stack, "SecretNearExpiry", name, first.properties.version, event_id="evt-same" if i < 2 else None
        )
        for i in range(5)
    ]
    assert statuses == [202] * 5
    assert stack.host.wait_for_output(f"rotation of {name}: rotated (event)", timeout=60), stack.host.output()
    # A second request would have been taken off the queue and done once the queue is empty.
    eventually(stack.rotation_requests_left, "the rotation queue to be empty", until=lambda left: left == 0)
    output = stack.host.output()
    assert output.count(f"rotation of {name}:") == 1, output
    assert output.count(f"near-expiry of {name} version {first.properties.version}: acted") == 1
    versions = list(kv.list_properties_of_secret_versions(name))
    assert len(versions) == 2
    current = kv.get_secret(name)
    assert current.properties.version is not None

    # The new version's own NewVersionCreated: made by the service, not out of band.
    assert post_event(stack, "SecretNewVersionCreated", name, current.properties.version) == 202
    assert stack.host.wait_for_output("made by this service", timeout=30), stack.host.output()
    assert rows(stack, "OUT_OF_BAND_CHANGE", name) == []
    assert (current.properties.tags or {}).get(ROTATION_ID_TAG)
    assert "initial-value" not in stack.host.output() and (current.value or "?") not in stack.host.output()


def test_an_out_of_band_version_is_recorded_once_and_its_policy_restored(stack: Stack) -> None:
    kv = vault(stack)
    name = f"dispatch-key-{uuid.uuid4().hex[:8]}"
    made = kv.set_secret(name, "managed-value", tags=API_KEY.to_tags()).properties.created_on
    assert made is not None
    # Versions are stamped in whole seconds: the out-of-band one must come in a later second.
    later = made + timedelta(seconds=1)
    eventually(lambda: datetime.now(UTC), "the next second", until=lambda now: now >= later)
    oob = kv.set_secret(name, "set-by-hand", tags={"changed-by": "alice"})
    assert oob.properties.version is not None
    for _ in range(3):
        assert post_event(stack, "SecretNewVersionCreated", name, oob.properties.version) == 202
    records = rows(stack, "OUT_OF_BAND_CHANGE", name)
    # The restore is a change to the vault: its intent is on record before it, its success after.
    assert sorted(r["result"] for r in records) == ["intent", "success"], records
    [record] = [r for r in records if r["result"] == "success"]
    assert record["version"] == oob.properties.version
    assert json.loads(record["details"])["policy_restored"] is True
    tags = kv.get_secret(name, oob.properties.version).properties.tags or {}
    assert RotationPolicy.from_tags(tags) == API_KEY and tags["changed-by"] == "alice"
    assert "set-by-hand" not in stack.host.output() and "managed-value" not in stack.host.output()


def test_the_expiry_check_warns_once_per_threshold(stack: Stack) -> None:
    kv = vault(stack)
    name = f"partner-token-{uuid.uuid4().hex[:8]}"
    kv.set_secret(name, "partner-value", tags={"owner": "team-partners"},
                  expires_on=datetime.now(UTC) + timedelta(days=6))  # fmt: skip
    for run in (1, 2):
        assert stack.client.post("/admin/functions/expiry_check", {"input": ""})[0] == 202
        eventually(
            stack.host.output,
            f"expiry check {run}",
            timeout=60,
            until=lambda out, run=run: out.count("expiry check: {") >= run,
        )
    [warning] = [r for r in rows(stack, "EXPIRY_WARNING", name) if r["result"] == "success"]
    details = json.loads(warning["details"])
    assert (details["threshold_days"], details["owner"]) == (7, "team-partners")
    assert "partner-value" not in stack.host.output()
    status, body = stack.client.get("/api/audit/verify")
    assert (status, body["status"]) == (200, "ok"), body
