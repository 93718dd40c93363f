"""Decisions rest on authenticated state: what a storage writer (table write access) or a tag editor does
to the service's state ends in a refusal and a record, never in a change. Each scenario is an attack tried
as such a party would — rows forged through the table SDK, tags edited through the Key Vault SDK — against
the app served by the dev host on Azurite and the Key Vault emulator."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.data.tables import UpdateMode
from azure.keyvault.secrets import SecretClient

from devtools.keyvault_emulator.process import EmulatorProcess
from shared.adapters.key_vault import KeyVaultSecretStore, LocalTokenCredential
from shared.adapters.tables import STATE_TABLE
from shared.domain.audit import format_time
from shared.domain.identity import encode_principal
from shared.domain.policy import RotationPolicy, SecretKind
from shared.entrypoints.http import STATE_TAMPERED_TYPE
from tests.integration.app_stack import Stack, audit_rows
from tests.integration.webhook_consumer import WebhookConsumer
from tests.waiting import eventually

OPERATOR = encode_principal("oid-operator", ["Secrets.Rotation.Operate", "Secrets.Audit.Read"], name="op")


def _due_secret(stack: Stack) -> tuple[str, str]:
    name = f"dispatch-key-{uuid.uuid4().hex[:8]}"
    policy = RotationPolicy(SecretKind.API_KEY, timedelta(days=30))
    made = stack.vault().set_secret(
        name, "initial-value", tags=policy.to_tags(), expires_on=datetime.now(UTC) + timedelta(days=10)
    )
    return name, made.properties.version or ""


def test_a_forged_lease_is_refused_reported_once_and_never_obeyed(stack: Stack) -> None:
    name, version = _due_secret(stack)
    forged = {
        "PartitionKey": "rotation",
        "RowKey": name.lower(),
        "rotation_id": "f" * 32,
        "step": "promoting",
        "from_version": version,
        "holder": "mallory",
        "lease_until": format_time(datetime.now(UTC) + timedelta(minutes=25)),
        "attempt": 1,
    }
    stack.tables().create_table_if_not_exists(STATE_TABLE).create_entity(forged)

    status, body = stack.client.post(f"/api/secrets/{name}/rotate", {}, principal=OPERATOR)
    assert status == 409 and body["type"] == STATE_TAMPERED_TYPE, body
    assert (body["partition"], body["key"], body["check"]) == ("rotation", name.lower(), "no seal")
    status, shown = stack.client.get(f"/api/secrets/{name}/status", principal=OPERATOR)
    assert status == 200 and shown["state"]["status"] == "tampered", shown
    status, plan = stack.client.post(f"/api/secrets/{name}/rotate", {"dry_run": True}, principal=OPERATOR)
    assert status == 200 and not plan["would_rotate"] and "tampered" in plan["reason"], plan

    # The sweep requests the due secret; the queue trigger refuses the row and records why.
    assert stack.client.post("/admin/functions/rotation_sweep", {"input": ""})[0] == 202
    assert stack.host.wait_for_output(f"rotation of {name}: skipped", timeout=60), stack.host.output()
    assert len(list(stack.vault().list_properties_of_secret_versions(name))) == 1  # nothing rotated
    rows = audit_rows(stack)
    tampered = [r for r in rows if r["action"] == "STATE_TAMPERED" and name.lower() in r["details"]]
    assert len(tampered) == 1 and tampered[0]["result"] == "failure", tampered  # once, however often met
    assert "mallory" not in tampered[0]["details"] and "promoting" not in tampered[0]["details"]
    skipped = [r for r in rows if r["action"] == "ROTATION_SKIPPED" and r.get("secret_name") == name]
    assert skipped and "tampered" in skipped[-1]["details"]
    suspicious = [
        r for r in rows if r["action"] == "SUSPICIOUS_ACTIVITY" and "state_tampered" in r["details"]
    ]
    assert len(suspicious) == 1
    pending = stack.findings().pending()
    assert all(f.rule != "state_tampered" for f in pending)  # audited and notified

    # The operator deletes the worthless row: the next request starts from no state and rotates.
    table = stack.tables().get_table_client(STATE_TABLE)
    table.delete_entity("rotation", name.lower())
    status, queued = stack.client.post(f"/api/secrets/{name}/rotate", {}, principal=OPERATOR)
    assert status == 202, queued
    eventually(
        lambda: len(list(stack.vault().list_properties_of_secret_versions(name))),
        "the requested rotation's version",
        timeout=60,
        until=lambda versions: versions == 2,
    )
    status, report = stack.client.get("/api/audit/verify")
    assert (status, report["status"]) == (200, "ok"), report


REQUESTER = encode_principal("oid-alice", ["Secrets.Revocation.Request"], name="alice")
EXECUTOR = encode_principal("oid-dave", ["Secrets.Revocation.Execute"], name="dave")


def approver(i: int) -> str:
    return encode_principal(f"oid-approver-{i}", ["Secrets.Revocation.Approve"], name=f"approver-{i}")


def _two_versions(stack: Stack) -> tuple[str, list[str]]:
    name = f"revoke-me-{uuid.uuid4().hex[:8]}"
    tags = RotationPolicy(SecretKind.API_KEY, timedelta(days=30)).to_tags()
    vault = stack.vault()
    return name, [vault.set_secret(name, f"VALUE-{i}", tags=tags).properties.version or "" for i in (1, 2)]


def _enabled(stack: Stack, name: str) -> dict[str, bool]:
    return {p.version or "": bool(p.enabled) for p in stack.vault().list_properties_of_secret_versions(name)}


def _request(stack: Stack, name: str, **extra: Any) -> str:
    body = {"secret_name": name, "reason": "SECURITY_INCIDENT", "severity": "medium", "justification": "leak",
            **extra}  # fmt: skip
    status, made = stack.client.post("/api/revocations", body, principal=REQUESTER)
    assert status == 201, made
    return str(made["id"])


def _approve(stack: Stack, rid: str, *who: int) -> None:
    for i in who:
        status, body = stack.client.post(f"/api/revocations/{rid}/approve", {}, principal=approver(i))
        assert status == 200, body


def test_revocation_rows_rewritten_or_put_back_by_a_storage_writer_are_never_executed(stack: Stack) -> None:
    table = stack.tables().get_table_client(STATE_TABLE)
    name, versions = _two_versions(stack)

    # One approval of two; the row rewritten to say one is enough and it is approved.
    rid = _request(stack, name)
    _approve(stack, rid, 1)
    row = dict(table.get_entity("revocation", rid))
    document = json.loads(row["document"])
    document.update(required_approvals=1, status="approved")
    table.update_entity(
        {**row, "document": json.dumps(document), "status": "approved"}, mode=UpdateMode.REPLACE
    )
    status, body = stack.client.post(f"/api/revocations/{rid}/execute", {}, principal=EXECUTOR)
    assert status == 409 and body["type"] == STATE_TAMPERED_TYPE and body["check"] == "mac mismatch", body

    # Approved twice, then cancelled; the authentic approved row (seal and all) put back.
    rid = _request(stack, name)
    _approve(stack, rid, 1, 2)
    approved = table.get_entity("revocation", rid)
    assert stack.client.post(f"/api/revocations/{rid}/cancel", {}, principal=REQUESTER)[0] == 200
    table.update_entity(approved, mode=UpdateMode.REPLACE)
    status, body = stack.client.post(f"/api/revocations/{rid}/execute", {}, principal=EXECUTOR)
    assert status == 409 and "was cancelled" in body["detail"], body

    # A pending request rewritten to "executing an hour ago, no approvals needed": the timer finishes
    # executions whose holder died, never this one.
    rid = _request(stack, name)
    row = dict(table.get_entity("revocation", rid))
    document = json.loads(row["document"])
    an_hour_ago = format_time(datetime.now(UTC) - timedelta(hours=1))
    document.update(status="executing", executed_by="nobody", executed_at=an_hour_ago, required_approvals=0)
    table.update_entity(
        {**row, "document": json.dumps(document), "status": "executing"}, mode=UpdateMode.REPLACE
    )
    assert stack.client.post("/admin/functions/revocation_expiry", {"input": ""})[0] == 202
    assert stack.host.wait_for_output("revocation expiry:", timeout=60), stack.host.output()

    # A request's row deleted: listed as missing, reported by the timer.
    gone = _request(stack, name)
    table.delete_entity("revocation", gone)
    status, listing = stack.client.get("/api/revocations", principal=EXECUTOR)
    assert status == 200
    problems = {u["id"]: u["problem"] for u in listing["unreadable"]}
    assert problems[gone].startswith("missing") and problems[rid].startswith("tampered"), problems

    assert _enabled(stack, name) == dict.fromkeys(versions, True)  # nothing was ever disabled
    rows = audit_rows(stack)
    assert not [r for r in rows if r["action"] == "REVOKED"]
    tampered = {(json.loads(r["details"])["key"], json.loads(r["details"])["check"])
                for r in rows if r["action"] == "STATE_TAMPERED"}  # fmt: skip
    assert {(rid, "mac mismatch"), (gone, "missing")} <= tampered, tampered
    status, report = stack.client.get("/api/audit/verify")
    assert (status, report["status"]) == (200, "ok"), report


def _tag(stack: Stack, name: str, **changes: str) -> None:
    """Edit the current version's tags as a tag editor does (update properties; no value access)."""
    vault = stack.vault()
    current = vault.get_secret(name).properties
    vault.update_secret_properties(name, current.version, tags={**(current.tags or {}), **changes})


def test_a_tag_editor_cannot_redirect_a_value_nor_aim_a_target_at_the_service_s_secrets(
    make_stack: Any, kv_emulator: EmulatorProcess, tmp_path: Path
) -> None:
    vault = SecretClient(kv_emulator.url, LocalTokenCredential(), **kv_emulator.client_kwargs())
    with WebhookConsumer.start(KeyVaultSecretStore(vault), tmp_path) as consumer:
        stack = make_stack(WEBHOOK_CA_BUNDLE=str(consumer.ca_bundle))
        # Consumer A, onboarded for secret A through the API (its signing key bound to A and its URL).
        a_name = f"dispatch-hook-{uuid.uuid4().hex[:8]}"
        body = {"name": a_name, "kind": "api-key", "rotation_interval_days": 30, "rotator": "webhook",
                "rotation_target": consumer.url}  # fmt: skip
        assert stack.client.post("/api/secrets", body, principal=OPERATOR)[0] == 201

        # Secret B's tags pointed at consumer A: B's rotation sends nothing anywhere and fails on record.
        b_name, _ = _due_secret(stack)
        _tag(stack, b_name, **{"rotator": "webhook", "rotation-target": consumer.url})
        status, queued = stack.client.post(
            f"/api/secrets/{b_name}/rotate", {"force": True}, principal=OPERATOR
        )
        assert status == 202, queued
        assert stack.host.wait_for_output(f"rotation of {b_name}: failed", timeout=60), stack.host.output()
        assert [c for c in consumer.calls if c.secret_name == b_name] == []
        failed = [
            r
            for r in audit_rows(stack)
            if r["action"] == "ROTATION_FAILED" and r.get("secret_name") == b_name
        ]
        assert failed and "target not bound to this secret" in failed[-1]["error"], failed

        # A postgres-alternating target naming the digest anchor: a policy violation, never read.
        anchor = stack.env["AUDIT_ANCHOR_SECRET"]
        stack.vault().set_secret(anchor, "not-a-connection-document")
        c_name, _ = _due_secret(stack)
        document = {"host": "127.0.0.1", "port": 1, "dbname": "orders", "username": "app", "password": "pw-1"}
        due = datetime.now(UTC) + timedelta(days=10)
        tags = RotationPolicy(SecretKind.API_KEY, timedelta(days=30)).to_tags()
        stack.vault().set_secret(
            c_name, json.dumps(document), content_type="application/json", expires_on=due, tags=tags
        )
        _tag(stack, c_name, **{"secret-kind": "database-password", "rotator": "postgres-alternating",
                               "rotation-target": anchor, "rotation-grace-hours": "1"})  # fmt: skip
        stack.emulator.reset_stats()
        assert stack.client.post("/admin/functions/rotation_sweep", {"input": ""})[0] == 202
        [violation] = eventually(
            lambda: [r for r in audit_rows(stack) if r["action"] == "POLICY_VIOLATION"
                     and r.get("secret_name") == c_name],
            "the sweep's POLICY_VIOLATION record", timeout=60,
        )  # fmt: skip
        assert "rotation-target" in violation["details"] and "own secrets" in violation["error"]
        reads = stack.emulator.stats()["names"].get("get_secret", {})
        assert anchor.lower() not in reads, reads

        # The refused redirect is a finding, with its event.
        assert stack.client.post("/admin/functions/suspicious_activity_scan", {"input": ""})[0] == 202
        eventually(
            lambda: [r for r in audit_rows(stack) if r["action"] == "SUSPICIOUS_ACTIVITY"
                     and "target_not_bound" in r["details"]],
            "the target_not_bound finding", timeout=60,
        )  # fmt: skip


def test_policy_changes_by_tag_alone_are_recorded_once_with_old_and_new_values(stack: Stack) -> None:
    vault = stack.vault()
    tags = RotationPolicy(SecretKind.API_KEY, timedelta(days=30)).to_tags()
    raised, dropped, foreign = (f"{kind}-{uuid.uuid4().hex[:8]}" for kind in ("raised", "dropped", "foreign"))
    for name in (raised, dropped):
        vault.set_secret(name, "value", tags=tags)
    vault.set_secret(foreign, "someone-elses", tags={"owner": "billing"})

    def sweep(times: int) -> None:
        assert stack.client.post("/admin/functions/rotation_sweep", {"input": ""})[0] == 202
        done = "Executed 'Functions.rotation_sweep'"
        eventually(
            stack.host.output, f"sweep {times}", timeout=60, until=lambda out: out.count(done) >= times
        )

    sweep(1)  # takes the inventory
    _tag(stack, raised, **{"rotation-interval-days": "730"})
    current = vault.get_secret(dropped).properties
    vault.update_secret_properties(dropped, current.version, tags={"owner": "nobody"})  # managed-by gone
    _tag(stack, foreign, **tags)
    sweep(2)
    sweep(3)  # nothing new: once per change

    rows = audit_rows(stack)

    def of(name: str, action: str) -> list[dict[str, Any]]:
        return [
            r
            for r in rows
            if r.get("secret_name") == name and r["action"] == action and r["result"] != "intent"
        ]

    [changed] = of(raised, "POLICY_CHANGED")
    details = json.loads(changed["details"])
    assert changed["actor_id"] == "unknown" and changed["actor_type"] == "unknown"
    assert (details["before"]["rotation-interval-days"], details["after"]["rotation-interval-days"]) == (
        "30",
        "730",
    )
    [left] = of(dropped, "POLICY_CHANGED")
    assert json.loads(left["details"])["after"] == {}
    [onboarded] = of(foreign, "SECRET_ONBOARDED")
    assert onboarded["actor_id"] == "unknown" and json.loads(onboarded["details"])["by"] == "tags"
    for name in (raised, dropped):
        [finding] = of(name, "SUSPICIOUS_ACTIVITY")
        assert "policy_changed_outside_api" in finding["details"]
    assert of(foreign, "SUSPICIOUS_ACTIVITY") == []
    status, report = stack.client.get("/api/audit/verify")
    assert (status, report["status"]) == (200, "ok"), report


def test_one_person_is_one_person_whatever_the_spelling_and_every_refusal_is_on_record(stack: Stack) -> None:
    name, _ = _two_versions(stack)
    guid = "3f2c9a1e-4b7d-4e8a-9c1f-0a2b3c4d5e6f"
    requester = encode_principal(guid, ["Secrets.Revocation.Request", "Secrets.Revocation.Approve"])
    same_person = encode_principal("{" + guid.upper() + "}", ["Secrets.Revocation.Approve"])
    hidden = encode_principal("approver\u200b-1", ["Secrets.Revocation.Approve"])
    wide_id = "".join(chr(ord(c) + 0xFEE0) for c in "OID-APPROVER-1")  # oid-approver-1, full-width capitals
    wide = encode_principal(wide_id, ["Secrets.Revocation.Approve"])

    body = {"secret_name": name, "reason": "SECURITY_INCIDENT", "severity": "medium", "justification": "leak"}
    rid = stack.client.post("/api/revocations", body, principal=requester)[1]["id"]
    assert stack.client.post(f"/api/revocations/{rid}/approve", {}, principal=hidden)[0] == 401
    status, refused = stack.client.post(f"/api/revocations/{rid}/approve", {}, principal=same_person)
    assert status == 403, refused  # the requester, spelled otherwise
    assert stack.client.post(f"/api/revocations/{rid}/approve", {}, principal=approver(1))[0] == 200
    status, refused = stack.client.post(f"/api/revocations/{rid}/approve", {}, principal=wide)
    assert status == 409 and "approved it already" in refused["detail"], refused  # oid-approver-1 again
    assert stack.client.get(f"/api/revocations/{rid}", principal=EXECUTOR)[1]["status"] == "pending"

    rows = audit_rows(stack)
    denied = [(r["actor_id"], json.loads(r["details"])["rule"]) for r in rows
              if r["action"] == "REVOCATION_APPROVED" and r["result"] == "denied"]  # fmt: skip
    assert sorted(denied) == sorted(
        [("{" + guid.upper() + "}", "NotPermitted"), (wide_id, "AlreadyApproved")]
    )
    anonymous = [r for r in rows if r["action"] == "ACCESS_DENIED" and "U+200B" in r["details"]]
    assert len(anonymous) == 1  # the id with a zero-width space: refused at parse, on record too
