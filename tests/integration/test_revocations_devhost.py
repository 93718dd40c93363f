"""Emergency revocation end to end through the dev host over HTTP, on Azurite and the Key Vault emulator:
request → approvals → execute disables the versions in the vault (with a replacement first when asked),
break-glass executes at once and waits for its review, 20 concurrent approvals make exactly the right
transitions, and everything is on the (verifiable) audit trail."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from azure.keyvault.secrets import SecretClient

from shared.adapters.key_vault import LocalTokenCredential
from shared.domain.identity import encode_principal
from shared.domain.policy import RotationPolicy, SecretKind
from shared.services.rotation import ROTATION_ID_TAG
from tests.integration.app_stack import Stack, audit_rows

REQUESTER = encode_principal("oid-alice", ["Secrets.Revocation.Request", "Secrets.BreakGlass"], name="alice")
EXECUTOR = encode_principal("oid-dave", ["Secrets.Revocation.Execute"], name="dave")


def approver(i: int) -> str:
    return encode_principal(f"oid-approver-{i}", ["Secrets.Revocation.Approve"], name=f"approver-{i}")


def _secret(vault: SecretClient) -> tuple[str, list[str]]:
    name = f"revoke-me-{uuid.uuid4().hex[:8]}"
    tags = RotationPolicy(SecretKind.API_KEY, timedelta(days=30)).to_tags()
    first = vault.set_secret(name, "REVOKED-VALUE-1", tags=tags).properties.version or ""
    second = vault.set_secret(name, "REVOKED-VALUE-2", tags=tags).properties.version or ""
    return name, [first, second]


def _enabled(vault: SecretClient, name: str) -> dict[str, bool]:
    return {p.version or "": bool(p.enabled) for p in vault.list_properties_of_secret_versions(name)}


def test_request_approve_execute_with_a_replacement(stack: Stack) -> None:
    vault = SecretClient(stack.emulator.url, LocalTokenCredential(), **stack.emulator.client_kwargs())
    name, versions = _secret(vault)
    body = {"secret_name": name, "reason": "SECURITY_INCIDENT", "severity": "low", "replace": True,
            "justification": "the key was committed to a public repository"}  # fmt: skip
    status, made = stack.client.post("/api/revocations", body, principal=REQUESTER)
    assert status == 201 and sorted(made["versions"]) == sorted(versions), made
    rid = made["id"]
    assert stack.client.post(f"/api/revocations/{rid}/approve", {}, principal=REQUESTER)[0] == 403
    assert (
        stack.client.post(f"/api/revocations/{rid}/approve", {}, principal=approver(1))[1]["status"]
        == "pending"
    )
    assert stack.client.post(f"/api/revocations/{rid}/approve", {}, principal=approver(1))[0] == 409
    assert (
        stack.client.post(f"/api/revocations/{rid}/approve", {}, principal=approver(2))[1]["status"]
        == "approved"
    )

    status, done = stack.client.post(f"/api/revocations/{rid}/execute", {}, principal=EXECUTOR)
    assert status == 200 and done["status"] == "executed", done
    new = done["result"]["new_version"]
    assert sorted(done["result"]["disabled_versions"]) == sorted(versions)
    assert _enabled(vault, name) == {versions[0]: False, versions[1]: False, new: True}
    current = vault.get_secret(name)
    assert (current.properties.tags or {})[ROTATION_ID_TAG] == rid and current.value not in (
        "REVOKED-VALUE-1",
        "REVOKED-VALUE-2",
    )
    assert stack.client.post(f"/api/revocations/{rid}/execute", {}, principal=EXECUTOR)[0] == 409

    actions = [(r["action"], r["result"]) for r in audit_rows(stack) if r.get("secret_name") == name]
    for action in ("REVOCATION_REQUESTED", "REVOCATION_APPROVED", "REVOKED", "ROTATED"):
        assert (action, "success") in actions, (action, actions)
    status, report = stack.client.get("/api/audit/verify")
    assert (status, report["status"]) == (200, "ok"), report
    output = stack.host.output() + "".join(stack.client.seen)
    assert "REVOKED-VALUE" not in output and (current.value or "x") not in output


def test_break_glass_and_twenty_concurrent_approvals(stack: Stack) -> None:
    vault = SecretClient(stack.emulator.url, LocalTokenCredential(), **stack.emulator.client_kwargs())
    name, versions = _secret(vault)
    glass = {"secret_name": name, "reason": "SYSTEM_BREACH", "severity": "critical", "break_glass": True,
             "justification": "active breach", "versions": [versions[0]]}  # fmt: skip
    status, done = stack.client.post("/api/revocations", glass, principal=REQUESTER)
    assert (status, done["status"], done["review_required"]) == (201, "executed", True), done
    assert _enabled(vault, name)[versions[0]] is False and _enabled(vault, name)[versions[1]] is True
    reviewed = stack.client.post(
        f"/api/revocations/{done['id']}/review", {"comment": "ok"}, principal=approver(9)
    )
    assert reviewed[1]["review_required"] is False

    body = {"secret_name": name, "reason": "MANUAL_REQUEST", "severity": "low", "justification": "rotate out",
            "versions": [versions[1]]}  # fmt: skip
    rid = stack.client.post("/api/revocations", body, principal=REQUESTER)[1]["id"]
    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(
            pool.map(
                lambda i: stack.client.post(f"/api/revocations/{rid}/approve", {}, principal=approver(i))[0],
                range(20),
            )
        )
    assert statuses.count(200) == 2 and set(statuses) <= {200, 409}, statuses
    stored = stack.client.get(f"/api/revocations/{rid}", principal=EXECUTOR)[1]
    assert stored["status"] == "approved" and len(stored["approvals"]) == 2
