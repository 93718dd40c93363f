"""The secret management endpoints end to end through the dev host, against the Key Vault emulator and
Azurite: onboard a secret, list it, rotate it with force through the rotation-requests queue, see the new
version in its status, roll back to the old value, and find it in the rotation plan. No response carries a
value."""

from __future__ import annotations

import uuid

from azure.keyvault.secrets import SecretClient

from shared.adapters.key_vault import LocalTokenCredential
from shared.domain.identity import encode_principal
from shared.services.rotation import ROTATION_ID_TAG
from tests.integration.app_stack import Stack, audit_rows
from tests.waiting import eventually

OPERATOR = encode_principal("oid-operator", ["Secrets.Rotation.Operate"], name="operator")
PLANNED = "Executed 'Functions.rotation_plan'"


def test_onboard_list_rotate_status_rollback_and_plan(stack: Stack) -> None:
    vault = SecretClient(stack.emulator.url, LocalTokenCredential(), **stack.emulator.client_kwargs())
    client = stack.client
    name = f"fleet-key-{uuid.uuid4().hex[:8]}"

    status, made = client.post(
        "/api/secrets",
        {"name": name, "kind": "api-key", "rotation_interval_days": 30, "owner": "dispatch"},
        principal=OPERATOR,
    )
    assert status == 201, made
    first_value = vault.get_secret(name).value
    assert first_value and made["version"] == vault.get_secret(name).properties.version
    assert client.post("/api/secrets", {"name": name, "kind": "api-key", "rotation_interval_days": 30},
                       principal=OPERATOR)[0] == 409  # fmt: skip

    listed: list[dict[str, object]] = []
    continuation = ""
    while True:  # the emulator is shared: page through whatever else is there
        status, page = client.get(f"/api/secrets?limit=100{continuation}", principal=OPERATOR)
        assert status == 200, page
        listed += page["items"]
        if not page["continuation"]:
            break
        continuation = f"&continuation={page['continuation']}"
    [mine] = [item for item in listed if item["name"] == name]
    assert mine["version"] == made["version"] and mine["policy"]["kind"] == "api-key"  # type: ignore[index]

    status, body = client.post(f"/api/secrets/{name}/rotate", {}, principal=OPERATOR)
    assert status == 409 and "force=true" in body["detail"]
    status, ticket = client.post(f"/api/secrets/{name}/rotate", {"force": True}, principal=OPERATOR)
    assert (status, ticket["status"]) == (202, "queued"), ticket
    assert f"Location: /api/secrets/{name}/status" in client.seen[-1]
    assert stack.host.wait_for_output(f"rotation of {name}: rotated", timeout=60), stack.host.output()
    rotated = vault.get_secret(name)
    assert rotated.value != first_value
    assert (rotated.properties.tags or {})[ROTATION_ID_TAG] == ticket["rotation_id"]

    status, state = client.get(f"/api/secrets/{name}/status", principal=OPERATOR)
    assert status == 200, state
    assert state["version"] == rotated.properties.version
    assert state["last_rotation"]["recorded"]["rotation_id"] == ticket["rotation_id"]
    assert [r["version"] for r in state["retirements"]] == [made["version"]]

    status, rolled = client.post(
        f"/api/secrets/{name}/rollback", {"from_version": rotated.properties.version}, principal=OPERATOR
    )
    assert status == 200, rolled
    restored = vault.get_secret(name)
    assert restored.value == first_value and restored.properties.version == rolled["version"]
    assert client.post(f"/api/secrets/{name}/rollback", {}, principal=OPERATOR)[0] == 409

    status, plan = client.get("/api/rotation/plan?within_days=365", principal=OPERATOR)
    assert status == 200, plan
    assert (name, "rotation") in [(i["name"], i["event"]) for i in plan["items"]]
    assert client.get("/api/rotation/plan?within_days=0", principal=OPERATOR)[0] == 400

    # The host logs each invocation as it ends: once the last request's line is in, so is everything.
    eventually(stack.host.output, "the plan requests' log lines", until=lambda out: out.count(PLANNED) >= 2)
    values = [first_value, rotated.value]
    assert not any(v and v in seen for v in values for seen in client.seen)
    assert not any(v and v in stack.host.output() for v in values)
    actions = [(r["action"], r["result"]) for r in audit_rows(stack) if r["secret_name"] == name]
    for expected in ("SECRET_ONBOARDED", "ROTATION_REQUESTED", "ROTATED", "ROLLED_BACK"):
        assert (expected, "intent") in actions and (expected, "success") in actions, expected
    status, verified = client.get("/api/audit/verify")
    assert (status, verified["status"]) == (200, "ok"), verified


def test_names_the_vault_never_held_make_no_chains(stack: Stack) -> None:
    """Recovering, rotating or deleting names that never existed: 404s recorded on the service chain, and
    not one chain more in the table (each would grow every digest)."""
    executor = encode_principal(
        "oid-executor", ["Secrets.Revocation.Execute", "Secrets.Audit.Read"], name="ex"
    )
    ghosts = [f"ghost-{i}-{uuid.uuid4().hex[:6]}" for i in range(5)]
    for ghost in ghosts:
        assert stack.client.post(f"/api/secrets/{ghost}/recover", {}, principal=executor)[0] == 404
        assert stack.client.request("DELETE", f"/api/secrets/{ghost}", body={"justification": "x"},
                                    principal=executor)[0] == 404  # fmt: skip
        assert (
            stack.client.post(f"/api/secrets/{ghost}/rotate", {"force": True}, principal=OPERATOR)[0] == 404
        )
    chains = {row["PartitionKey"] for row in audit_rows(stack)}
    assert not [chain for chain in chains if "ghost-" in chain], chains
    status, page = stack.client.get("/api/audit?action=SECRET_NOT_FOUND&limit=50", principal=executor)
    assert status == 200, page
    named = sorted((item["details"]["secret_name"], item["details"]["method"]) for item in page["items"])
    assert named == sorted((g, m) for g in ghosts for m in ("POST", "DELETE", "POST"))
    assert {item["chain"].split(":", 1)[1] for item in page["items"]} == {"_service"}
