"""The whole story over real HTTP, as a newcomer would follow it: the dev host on its own Azurite, the Key
Vault emulator, a real PostgreSQL server, a webhook consumer and an Event Grid topic endpoint.

1. Dispatch's API key (checked by the dispatch app: a webhook consumer) and its database credential
   (PostgreSQL, single user) were stored in Key Vault 30 days and 10 minutes ago — on the emulator's clock —
   and an operator puts both under a 30-day rotation policy through the API.
2. They are past their due time, so the hourly sweep rotates both: the consumer took the new key before Key
   Vault made it current, consumers get ``SecretRotated`` naming the new versions, and the database accepts
   only what Key Vault says.
3. The database credential turns up in a paste: a revocation is requested with a replacement, two other
   people approve it, a third executes it. Every old version is disabled, the new value logs in, the old ones
   do not, consumers get ``SecretRevoked``; the next sweep finds nothing due and nothing amiss, the trail
   tells who did what, and it verifies.
4. No secret value the story made is in the host's log, any table, queue or blob of its storage, any event,
   any HTTP answer or the database server's statement log.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from azure.keyvault.secrets import SecretClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from devtools.eventgrid_sink import EventGridSink
from devtools.keyvault_emulator.process import EmulatorProcess
from devtools.postgres import PostgresProcess
from shared.adapters.archive import BLOB_API_VERSION
from shared.adapters.key_vault import AUDIT_KEY_SECRET, KeyVaultSecretStore, LocalTokenCredential
from shared.adapters.storage import QUEUE_API_VERSION
from shared.adapters.tables import FINDINGS_TABLE
from shared.domain.identity import Role, encode_principal
from shared.domain.notifications import SECRET_REVOKED, SECRET_ROTATED
from shared.domain.targets import SIGNING_KEY_TAG, ConnectionDocument, pending_secret_name
from tests.integration.app_stack import Stack
from tests.integration.test_postgres_rotator import create_role, logs_in
from tests.integration.webhook_consumer import WebhookConsumer
from tests.waiting import eventually

#: How long ago the two secrets were stored: just past their 30-day interval, well inside the two hours
#: after which a due secret counts as stalled.
AGE = timedelta(days=30, minutes=10)
OPERATOR = encode_principal("oid-olga", [Role.ROTATION_OPERATE], name="olga")
REQUESTER = encode_principal("oid-rita", [Role.REVOCATION_REQUEST], name="rita")
APPROVERS = [encode_principal(f"oid-{n}", [Role.REVOCATION_APPROVE], name=n) for n in ("amir", "bea")]
EXECUTOR = encode_principal("oid-ezra", [Role.REVOCATION_EXECUTE], name="ezra")
AUDITOR = encode_principal("oid-aude", [Role.AUDIT_READ], name="aude")
SWEPT = "Executed 'Functions.rotation_sweep'"


def test_two_secrets_rotate_when_due_then_one_is_revoked_and_no_value_leaks(
    make_stack: Callable[..., Stack], kv_emulator: EmulatorProcess, postgres: PostgresProcess, tmp_path: Path
) -> None:
    vault = SecretClient(kv_emulator.url, LocalTokenCredential(), **kv_emulator.client_kwargs())
    suffix = uuid.uuid4().hex[:8]
    key_name, db_name = f"dispatch-api-key-{suffix}", f"dispatch-db-{suffix}"

    # 1. Stored 30 days and 10 minutes ago: the API key the dispatch app checks, and the credential of a
    #    PostgreSQL role that logs in with it today.
    first_key = secrets.token_urlsafe(32)
    role = create_role(postgres, f"dispatch_app_{suffix}")
    first_db = ConnectionDocument(postgres.host, postgres.port, "postgres", role.name, role.password,
                                  "disable").to_json()  # fmt: skip
    kv_emulator.set_clock_offset(-int(AGE.total_seconds()))
    try:
        vault.set_secret(key_name, first_key, content_type="text/plain")
        vault.set_secret(db_name, first_db, content_type="application/json")
    finally:
        kv_emulator.set_clock_offset(0)

    with (
        EventGridSink(key=f"topic-key-{suffix}") as sink,
        WebhookConsumer.start(KeyVaultSecretStore(vault), tmp_path, current=first_key) as consumer,
    ):
        assert consumer.ca_bundle is not None
        stack = make_stack(EVENT_GRID_TOPIC_ENDPOINT=sink.endpoint, EVENT_GRID_TOPIC_KEY=sink.key or "",
                           WEBHOOK_CA_BUNDLE=consumer.ca_bundle)  # fmt: skip
        client = stack.client

        # An operator puts both under management: 30 days, the key set at the consumer, the password at
        # the database.
        key_policy = {"kind": "api-key", "rotation_interval_days": 30, "owner": "dispatch-api",
                      "rotator": "webhook", "rotation_target": consumer.url}  # fmt: skip
        db_policy = {"kind": "database-password", "rotation_interval_days": 30, "owner": "dispatch-api",
                     "rotator": "postgres-single-user"}  # fmt: skip
        for name, policy in ((key_name, key_policy), (db_name, db_policy)):
            status, body = client.put(f"/api/secrets/{name}/policy", policy, principal=OPERATOR)
            assert status == 200, body
        status, plan = client.get("/api/rotation/plan?within_days=1", principal=OPERATOR)
        due = {i["name"]: i for i in plan["items"] if i["event"] == "rotation"}
        assert status == 200 and due[key_name]["due_now"] and due[db_name]["due_now"], plan
        assert (due[key_name]["reason"], due[db_name]["reason"]) == ("interval", "interval")

        # 2. The hourly sweep (run now, as Core Tools' admin API runs a timer) rotates both.
        assert client.post("/admin/functions/rotation_sweep", {"input": ""})[0] == 202
        for name in (key_name, db_name):
            assert stack.host.wait_for_output(f"rotation of {name}: rotated", timeout=60), stack.host.output()
        key_v1, key_v2 = _versions(vault, key_name)
        db_v1, db_v2 = _versions(vault, db_name)

        # Consumers learn it from SecretRotated and reload from Key Vault the version it names: the current
        # one, which replaced the version they held.
        rotated = {e["subject"]: e["data"] for e in _events(sink, SECRET_ROTATED, {key_name: 1, db_name: 1})}
        assert (rotated[key_name]["version"], rotated[key_name]["previous_version"]) == (key_v2, key_v1)
        assert (rotated[db_name]["version"], rotated[db_name]["previous_version"]) == (db_v2, db_v1)
        second_key = vault.get_secret(key_name, rotated[key_name]["version"]).value or ""
        second_db = vault.get_secret(db_name, rotated[db_name]["version"]).value or ""
        assert (second_key, second_db) == (vault.get_secret(key_name).value, vault.get_secret(db_name).value)
        # The dispatch app took the new key (signed requests, set then test) before Key Vault made it
        # current, and keeps the old one for the grace.
        assert [(c.step, c.signature_ok) for c in consumer.calls] == [("set", True), ("test", True)]
        assert consumer.accepts(second_key) and consumer.accepts(first_key)
        # The database accepts only what Key Vault says.
        assert logs_in(postgres, second_db) and not logs_in(postgres, first_db)

        # 3. The database credential turns up in a paste: request, two approvals, execute with a replacement.
        report = {"secret_name": db_name, "reason": "COMPROMISE_SUSPECTED", "severity": "medium",
                  "replace": True, "justification": "the credential was seen in a public paste"}  # fmt: skip
        status, made = client.post("/api/revocations", report, principal=REQUESTER)
        assert status == 201 and sorted(made["versions"]) == sorted([db_v1, db_v2]), made
        assert made["required_approvals"] == 2, made
        rid = made["id"]
        approved = [client.post(f"/api/revocations/{rid}/approve", {}, principal=p)[1] for p in APPROVERS]
        assert [a["status"] for a in approved] == ["pending", "approved"], approved
        status, done = client.post(f"/api/revocations/{rid}/execute", {}, principal=EXECUTOR)
        assert status == 200 and done["status"] == "executed", done
        db_v3 = done["result"]["new_version"]
        assert sorted(done["result"]["disabled_versions"]) == sorted([db_v1, db_v2]), done

        # Old versions disabled, the new one current; it logs in and nothing before it does.
        assert _enabled(vault, db_name) == {db_v1: False, db_v2: False, db_v3: True}
        third_db = vault.get_secret(db_name).value or ""
        assert logs_in(postgres, third_db)
        assert not logs_in(postgres, second_db) and not logs_in(postgres, first_db)
        [revoked] = _events(sink, SECRET_REVOKED, {db_name: 1})
        assert (revoked["id"], revoked["data"]["new_version"]) == (rid, db_v3), revoked
        assert {e["data"]["version"] for e in _events(sink, SECRET_ROTATED, {key_name: 1, db_name: 2})} == {
            key_v2, db_v2, db_v3}  # fmt: skip
        # The replacement is the revocation's own rotation; the pending copies are disabled too, so each
        # value is readable in one place.
        status, shown = client.get(f"/api/secrets/{db_name}/status", principal=OPERATOR)
        assert (status, shown["version"], shown["due_now"]) == (200, db_v3, False), shown
        assert shown["last_rotation"]["recorded"]["rotation_id"] == rid, shown
        assert shown["last_rotation"]["last_write"] == {"rotation_id": rid, "new_version": db_v3}, shown
        for name in (key_name, db_name):
            assert not any(
                v.enabled for v in vault.list_properties_of_secret_versions(pending_secret_name(name))
            )

        # The next hourly sweep finds nothing due and nothing amiss: no version, no event, no finding.
        assert client.post("/admin/functions/rotation_sweep", {"input": ""})[0] == 202
        output = eventually(stack.host.output, "the second sweep", until=lambda out: out.count(SWEPT) >= 2)
        assert output.count(f"{SWEPT} (Succeeded") == 2, output
        eventually(
            stack.rotation_requests_left, "the rotation queue to be empty", until=lambda left: left == 0
        )
        assert (len(_versions(vault, key_name)), len(_versions(vault, db_name))) == (2, 3)
        sent = [(e["type"], e["subject"]) for e in sink.events if e["subject"] in (key_name, db_name)]
        expected = [(SECRET_ROTATED, key_name), (SECRET_ROTATED, db_name), (SECRET_ROTATED, db_name),
                    (SECRET_REVOKED, db_name)]  # fmt: skip
        assert sorted(sent) == sorted(expected), sent
        assert list(stack.tables().get_table_client(FINDINGS_TABLE).list_entities()) == []

        # The trail tells it: who did what to the credential, in order (each change an intent, then this).
        status, page = client.get(f"/api/audit?secret_name={db_name}", principal=AUDITOR)
        trail = [(r["action"], r["actor_id"]) for r in reversed(page["items"]) if r["result"] == "success"]
        assert status == 200 and trail == [
            ("POLICY_CHANGED", "oid-olga"), ("ROTATED", "secret-lifecycle"),
            ("REVOCATION_REQUESTED", "oid-rita"), ("REVOCATION_APPROVED", "oid-amir"),
            ("REVOCATION_APPROVED", "oid-bea"), ("ROTATED", "secret-lifecycle"), ("REVOKED", "oid-ezra"),
        ], trail  # fmt: skip
        status, verified = client.get("/api/audit/verify?fresh=true", principal=AUDITOR)
        assert (status, verified["status"], verified["breaks"]) == (200, "ok", []), verified

        # 4. No value the story made is anywhere the service writes or answers.
        values = _every_value(vault, [key_name, db_name])
        for known in (first_key, second_key, first_db, second_db, third_db, role.password):
            assert known in values
        places = {"the host's output": stack.host.output(), "the HTTP answers": "\n".join(client.seen),
                  "the events": "\n".join(b.decode(errors="replace") for b in sink.raw),
                  "the database's statement log": postgres.log_file.read_text(errors="replace"),
                  **_storage(stack)}  # fmt: skip
        leaks = [
            (where, _label(value)) for value in values for where, text in places.items() if value in text
        ]
        assert leaks == []


def _versions(vault: SecretClient, name: str) -> list[str]:
    """Every version of ``name``, oldest first."""
    found = sorted(vault.list_properties_of_secret_versions(name), key=lambda p: p.created_on or 0)
    return [p.version or "" for p in found]


def _enabled(vault: SecretClient, name: str) -> dict[str, bool]:
    return {p.version or "": bool(p.enabled) for p in vault.list_properties_of_secret_versions(name)}


def _events(sink: EventGridSink, kind: str, expected: dict[str, int]) -> list[dict[str, Any]]:
    """The ``kind`` events about the secrets of ``expected`` once each has its count of them."""

    def arrived() -> list[dict[str, Any]]:
        return [e for e in list(sink.events) if e["type"] == kind and e["subject"] in expected]

    def complete(events: list[dict[str, Any]]) -> bool:
        return all(sum(e["subject"] == n for e in events) == count for n, count in expected.items())

    return eventually(arrived, f"{kind} about {sorted(expected)}", until=complete)


def _every_value(vault: SecretClient, names: list[str]) -> set[str]:
    """Every value of every version of the story's secrets, their pending companions and signing keys,
    and of the audit MAC key; a disabled version is enabled just long enough to read it. A connection
    document counts twice: whole, and its password alone."""
    signing = [t[SIGNING_KEY_TAG] for n in names if (t := vault.get_secret(n).properties.tags or {})
               .get(SIGNING_KEY_TAG)]  # fmt: skip
    assert signing, "the webhook secret has a signing key"
    values: set[str] = set()
    for name in [*names, *(pending_secret_name(n) for n in names), *signing, AUDIT_KEY_SECRET]:
        for version in vault.list_properties_of_secret_versions(name):
            value = _read(vault, name, version.version or "", bool(version.enabled))
            values.add(value)
            if value.startswith("{"):
                values.add(ConnectionDocument.parse(value).password)
    # Long enough that no chance substring of a log line or a record can match one.
    assert values and min(len(v) for v in values) >= 20, sorted(len(v) for v in values)
    return values


def _read(vault: SecretClient, name: str, version: str, enabled: bool) -> str:
    """One version's value (Key Vault refuses to read a disabled one: enabled for the read, then not)."""
    if not enabled:
        vault.update_secret_properties(name, version, enabled=True)
    try:
        return vault.get_secret(name, version).value or ""
    finally:
        if not enabled:
            vault.update_secret_properties(name, version, enabled=False)


def _storage(stack: Stack) -> dict[str, str]:
    """Everything in the stack's Azurite: every entity of every table, every message on every queue (as
    stored and base64-decoded), every blob."""
    texts: dict[str, str] = {}
    tables = stack.tables()
    for table in tables.list_tables():
        rows = tables.get_table_client(table.name).list_entities()
        texts[f"table {table.name}"] = "\n".join(repr(dict(row)) for row in rows)
    conn = stack.azurite.connection_string
    queues = QueueServiceClient.from_connection_string(conn, api_version=QUEUE_API_VERSION)
    for queue in queues.list_queues():
        peeked = queues.get_queue_client(queue.name).peek_messages(max_messages=32)
        texts[f"queue {queue.name}"] = "\n".join(f"{m.content}\n{_b64(m.content)}" for m in peeked)
    blobs = BlobServiceClient.from_connection_string(conn, api_version=BLOB_API_VERSION)
    for container in blobs.list_containers():
        box = blobs.get_container_client(container.name)
        for blob in box.list_blobs():
            data = box.download_blob(blob.name).readall()
            texts[f"blob {container.name}/{blob.name}"] = data.decode(errors="replace")
    return texts


def _b64(content: object) -> str:
    try:
        return base64.b64decode(str(content), validate=True).decode(errors="replace")
    except ValueError:
        return ""


def _label(value: str) -> str:
    """A value's place in a failure message: a digest, never the value."""
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]
