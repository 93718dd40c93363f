"""Rotation end to end through the dev host on real peers: the sweep timer finds a due managed secret in
the Key Vault emulator, enqueues it on Azurite's rotation-requests queue, the queue trigger rotates it —
one new version carrying its policy, on record as intent and success — and the next sweep finds nothing
due. The service's own secrets are never touched."""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import ResourceExistsError
from azure.keyvault.secrets import SecretClient
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from shared.adapters.key_vault import AUDIT_KEY_SECRET, KeyVaultMacKeyRing, LocalTokenCredential
from shared.adapters.storage import QUEUE_API_VERSION
from shared.domain.policy import RotationPolicy, SecretKind
from shared.domain.rotation import RotationReason, RotationRequest
from shared.services.rotation import ROTATION_ID_TAG
from tests.integration.app_stack import Stack, audit_rows
from tests.waiting import eventually


def versions(vault: SecretClient, name: str) -> list[str]:
    return [p.version or "" for p in vault.list_properties_of_secret_versions(name)]


def test_the_sweep_rotates_a_due_secret_once_through_the_queue(stack: Stack) -> None:
    vault = SecretClient(stack.emulator.url, LocalTokenCredential(), **stack.emulator.client_kwargs())
    name = f"dispatch-key-{uuid.uuid4().hex[:8]}"
    policy = RotationPolicy(SecretKind.API_KEY, timedelta(days=30), None, "dispatch-api")
    # Due because its current version expires within Key Vault's 30-day near-expiry window.
    vault.set_secret(
        name, "initial-value", tags=policy.to_tags(), expires_on=datetime.now(UTC) + timedelta(days=10)
    )
    assert stack.client.get("/api/audit", principal=None)[0] == 401  # creates the audit MAC key
    mac_key_versions = versions(vault, AUDIT_KEY_SECRET)

    assert stack.client.post("/admin/functions/rotation_sweep", {"input": ""})[0] == 202
    assert stack.host.wait_for_output(f"rotation of {name}: rotated", timeout=60), stack.host.output()
    assert len(versions(vault, name)) == 2
    current = vault.get_secret(name)
    assert current.value and current.value.startswith("sk_") and current.value != "initial-value"
    assert RotationPolicy.from_tags(current.properties.tags) == policy
    rotation_id = (current.properties.tags or {})[ROTATION_ID_TAG]
    rotated = [r for r in audit_rows(stack) if r["action"] == "ROTATED" and r["secret_name"] == name]
    assert sorted(r["result"] for r in rotated) == ["intent", "success"]
    assert all(rotation_id in r["details"] for r in rotated)

    # The next sweep does not request it again: no second version, whatever else runs. (Other tests'
    # secrets in the shared emulator may be due: only this one's requests count.)
    requested = stack.host.output().count(f"rotation of {name}:")
    assert stack.client.post("/admin/functions/rotation_sweep", {"input": ""})[0] == 202
    swept = "Executed 'Functions.rotation_sweep'"
    output = eventually(stack.host.output, "the second sweep", until=lambda out: out.count(swept) >= 2)
    assert output.count("Executed 'Functions.rotation_sweep' (Succeeded") == 2, output
    # Whatever the second sweep asked for has been taken off the queue and done once the queue is empty.
    eventually(stack.rotation_requests_left, "the rotation queue to be empty", until=lambda left: left == 0)
    assert stack.host.output().count(f"rotation of {name}:") == requested
    assert len(versions(vault, name)) == 2
    assert versions(vault, AUDIT_KEY_SECRET) == mac_key_versions
    assert "initial-value" not in stack.host.output() and current.value not in stack.host.output()
    status, body = stack.client.get("/api/audit/verify")
    assert (status, body["status"]) == (200, "ok"), body


def test_a_request_in_the_poison_queue_is_recorded_as_given_up(stack: Stack) -> None:
    poison = QueueClient.from_connection_string(
        stack.azurite.connection_string,
        "rotation-requests-poison",
        api_version=QUEUE_API_VERSION,
        message_encode_policy=TextBase64EncodePolicy(),
    )
    with contextlib.suppress(ResourceExistsError):
        poison.create_queue()
    request = RotationRequest(
        secret_name="flaky-secret",
        reason=RotationReason.DUE,
        requested_at=datetime.now(UTC),
        correlation_id="sweep-7",
    )
    poison.send_message(request.to_json())  # unsealed, as a queue writer would put it: refused
    keys = KeyVaultMacKeyRing(
        SecretClient(stack.emulator.url, LocalTokenCredential(), **stack.emulator.client_kwargs())
    )
    key_id, key = keys.current()
    poison.send_message(request.sealed(key_id, key).to_json())  # as the service sends it
    [record] = eventually(
        lambda: [r for r in audit_rows(stack) if r["action"] == "ROTATION_FAILED"],
        "the poisoned request's ROTATION_FAILED record",
        timeout=60,
        interval=0.5,
    )
    [refused] = [r for r in audit_rows(stack) if r["action"] == "STATE_TAMPERED"]
    assert (
        '"partition":"rotation-requests-poison"' in refused["details"] and '"no seal"' in refused["details"]
    )
    assert (record["secret_name"], record["correlation_id"]) == ("flaky-secret", "sweep-7")
    assert '"gave_up_after":5' in record["details"]


def test_twenty_concurrent_forced_requests_make_one_version_and_every_id_has_an_outcome(stack: Stack) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from shared.domain.identity import encode_principal

    operator = encode_principal("oid-operator", ["Secrets.Rotation.Operate"], name="op")
    vault = SecretClient(stack.emulator.url, LocalTokenCredential(), **stack.emulator.client_kwargs())
    name = f"dispatch-key-{uuid.uuid4().hex[:8]}"
    vault.set_secret(
        name, "initial-value", tags=RotationPolicy(SecretKind.API_KEY, timedelta(days=30)).to_tags()
    )

    def ask(_: int) -> tuple[int, dict[str, object]]:
        return stack.client.post(f"/api/secrets/{name}/rotate", {"force": True}, principal=operator)

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(ask, range(20)))
    assert [status for status, _ in answers] == [202] * 20, answers
    ids = {str(body["rotation_id"]) for _, body in answers}
    assert len(ids) == 20

    def answered() -> set[str]:
        named: set[str] = set()
        outcomes = ("ROTATED", "ROTATION_SKIPPED", "ROTATION_FAILED")
        for row in audit_rows(stack):
            if row.get("secret_name") == name and row["action"] in outcomes and row["result"] != "intent":
                details = json.loads(row["details"])
                named.add(str(details.get("rotation_id")))
                named.update(details.get("joined") or [])
        return named

    eventually(
        answered, "an outcome record naming every request id", timeout=60, until=lambda named: ids <= named
    )
    # Every request left is done once the queue is empty: no second version comes later.
    eventually(stack.rotation_requests_left, "the rotation queue to be empty", until=lambda left: left == 0)
    assert len(versions(vault, name)) == 2
