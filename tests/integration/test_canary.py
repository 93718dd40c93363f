"""Canary: secrets with known random values go through every code path that exists; afterwards no audit
table, no log line, no HTTP response and no notification may contain any of those values.

Keep this test growing: every feature that touches secrets adds its code path here.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.data.tables import TableServiceClient
from azure.keyvault.secrets import SecretClient

from devtools.azurite import AzuriteProcess
from devtools.eventgrid_sink import EventGridSink
from devtools.host import HostProcess
from devtools.keyvault_emulator.process import EmulatorProcess
from devtools.postgres import PostgresProcess
from devtools.stack import DEMO_SECRETS, create_tables, seed_demo_secrets
from shared.adapters.key_vault import AUDIT_KEY_SECRET, KeyVaultSecretStore, LocalTokenCredential
from shared.config import Settings
from shared.domain.identity import encode_principal
from shared.domain.policy import RotationPolicy, Rotator, SecretKind
from shared.domain.targets import ConnectionDocument
from tests.integration.conftest import app_settings
from tests.integration.http_client import Client, send_key_vault_event
from tests.integration.test_postgres_rotator import Role, create_role
from tests.integration.webhook_consumer import WebhookConsumer
from tests.waiting import eventually

REPO = Path(__file__).resolve().parents[2]
NO_ROLE = encode_principal("oid-prober", [], name="prober")


def leaks(values: dict[str, str], haystacks: dict[str, str]) -> list[str]:
    return [
        f"{what} found in {where}"
        for what, value in values.items()
        for where, text in haystacks.items()
        if value and value in text
    ]


DUE, UNMANAGED, ADOPTED, ONBOARDED = "canary-due", "canary-unmanaged", "canary-adopted", "canary-onboarded"
OPERATOR = encode_principal("oid-canary-op", ["Secrets.Rotation.Operate"], name="canary-operator")


def _in(**delta: float) -> datetime:
    return datetime.now(UTC) + timedelta(**delta)


def _event(host: HostProcess, vault_name: str, kind: str, name: str, version: str) -> None:
    send_key_vault_event(host.url, vault_name, kind, name, version)


def _rotation_paths(
    client: Client, host: HostProcess, vault: SecretClient, vault_name: str, canaries: dict[str, str]
) -> None:
    """Every rotation and expiry path: sweep → queue → rotate, onboarding, policy, dry run, forced
    rotation, status, list, plan, rollback, Key Vault events (near expiry, out of band), expiry check."""
    assert client.post("/admin/functions/rotation_sweep", {"input": ""})[0] == 202
    assert host.wait_for_output(f"rotation of {DUE}: rotated", timeout=60), host.output()
    body = {"name": ONBOARDED, "kind": "database-password", "rotation_interval_days": 30, "owner": "canary"}
    assert client.post("/api/secrets", body, principal=OPERATOR)[0] == 201
    policy = {"kind": "jwt-signing-key", "rotation_interval_days": 60, "owner": "canary"}
    assert client.put(f"/api/secrets/{ADOPTED}/policy", policy, principal=OPERATOR)[0] == 200
    name = "canary-api-key"
    assert client.post(f"/api/secrets/{name}/rotate", {"dry_run": True}, principal=OPERATOR)[0] == 200
    assert client.post(f"/api/secrets/{name}/rotate", {"force": True}, principal=OPERATOR)[0] == 202
    assert host.wait_for_output(f"rotation of {name}: rotated", timeout=60), host.output()
    assert client.get(f"/api/secrets/{name}/status", principal=OPERATOR)[0] == 200
    assert client.get("/api/secrets?limit=100", principal=OPERATOR)[0] == 200
    assert client.get("/api/rotation/plan?within_days=365", principal=OPERATOR)[0] == 200
    assert client.post(f"/api/secrets/{name}/rollback", {}, principal=OPERATOR)[0] == 200
    unmanaged = vault.get_secret(UNMANAGED).properties.version or ""
    _event(host, vault_name, "SecretNearExpiry", UNMANAGED, unmanaged)
    assert host.wait_for_output(f"near-expiry of {UNMANAGED} version {unmanaged}: acted", timeout=30)
    out_of_band = f"CANARY-{secrets.token_hex(16)}"
    canaries["out-of-band value"] = out_of_band
    oob = vault.set_secret("canary-encryption-key", out_of_band).properties.version or ""
    _event(host, vault_name, "SecretNewVersionCreated", "canary-encryption-key", oob)
    assert host.wait_for_output(f"version {oob}: acted", timeout=30), host.output()
    assert client.post("/admin/functions/expiry_check", {"input": ""})[0] == 202
    assert host.wait_for_output("expiry check:", timeout=60), host.output()


def test_the_leak_check_itself_finds_a_planted_value() -> None:
    assert leaks({"x": "CANARY-123"}, {"log": "... CANARY-123 ..."}) == ["x found in log"]
    assert leaks({"x": "CANARY-123"}, {"log": "clean"}) == []


def test_no_secret_value_leaves_key_vault(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, postgres: PostgresProcess
) -> None:
    caplog.set_level(logging.DEBUG)
    with (
        AzuriteProcess.start() as azurite,
        EmulatorProcess.start(tmp_path / "kv.pem") as emulator,
        EventGridSink(key="canary-topic-key") as sink,
        WebhookConsumer.start(
            KeyVaultSecretStore(
                SecretClient(emulator.url, LocalTokenCredential(), **emulator.client_kwargs())
            ),
            tmp_path,
        ) as consumer,
    ):
        create_tables(azurite.connection_string)  # as the deployment does
        vault = SecretClient(emulator.url, LocalTokenCredential(), **emulator.client_kwargs())
        canaries: dict[str, str] = {}
        for kind in SecretKind:
            name = f"canary-{kind.value}"
            value = f"CANARY-{secrets.token_hex(16)}"
            policy = RotationPolicy(kind, interval=timedelta(days=30))
            vault.set_secret(name, value, tags=policy.to_tags())
            canaries[name] = value
        # Due at once (it expires within Key Vault's near-expiry window): the sweep rotates it.
        due_value = f"CANARY-{secrets.token_hex(16)}"
        due_policy = RotationPolicy(SecretKind.API_KEY, interval=timedelta(days=30), owner="canary")
        vault.set_secret(DUE, due_value, tags=due_policy.to_tags(), expires_on=_in(days=10))
        canaries[DUE] = due_value
        # Unmanaged: one to be warned about (near expiry), one to adopt with a policy.
        for name, expires in ((UNMANAGED, _in(days=5)), (ADOPTED, None)):
            value = f"CANARY-{secrets.token_hex(16)}"
            vault.set_secret(name, value, expires_on=expires)
            canaries[name] = value
        seed_demo_secrets(emulator.url, emulator.cert_file)
        for name, *_ in DEMO_SECRETS:
            canaries[name] = vault.get_secret(name).value or ""

        settings = tmp_path / "local.settings.json"
        settings.write_text(json.dumps({"IsEncrypted": False, "Values": {}}))
        env = app_settings(
            azurite,
            emulator,
            EVENT_GRID_TOPIC_ENDPOINT=sink.endpoint,
            EVENT_GRID_TOPIC_KEY="canary-topic-key",
            AUDIT_SCAN_DENIED_PER_ACTOR="3",
            WEBHOOK_CA_BUNDLE=str(consumer.ca_bundle),
        )
        with HostProcess.start(env=env, settings=settings) as host:
            client = Client(host.url)
            # Every code path that exists today.
            assert client.get("/api/health", principal=None)[0] == 200
            assert client.get("/api/audit", principal=None)[0] == 401
            for _ in range(4):
                assert client.get("/api/audit/verify", principal=NO_ROLE)[0] == 403
            assert client.get("/api/audit?limit=500")[0] == 200
            assert client.get("/api/audit/summary?days=1")[0] == 200
            assert client.post("/admin/functions/suspicious_activity_scan", {"input": ""})[0] == 202
            assert host.wait_for_output("new finding(s)", timeout=30), host.output()
            status, found = client.get("/api/audit?action=SUSPICIOUS_ACTIVITY")
            assert status == 200 and found["items"], found
            finding_id = found["items"][0]["details"]["finding_id"]
            assert client.post(f"/api/audit/findings/{finding_id}/review", {"note": "canary"})[0] == 200
            assert client.post("/admin/functions/audit_digest", {"input": ""})[0] == 202
            assert host.wait_for_output("audit digest 1 sealed", timeout=30), host.output()
            status, report = client.get("/api/audit/verify")
            assert (status, report["status"]) == (200, "ok"), report
            cli = subprocess.run(
                [sys.executable, "-m", "shared.entrypoints.cli", "verify", "--json"],
                cwd=REPO, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, check=False,
            )  # fmt: skip
            assert cli.returncode == 0, cli.stderr
            _rotation_paths(client, host, vault, Settings(env).key_vault.name, canaries)
            _target_paths(client, host, vault, postgres, consumer, canaries)
            _revocation_paths(client, vault, canaries)
            # The host logs each invocation as it ends; the last request's line means every line is in.
            last = "Executed 'Functions.revocations_get'"
            host_output = eventually(
                host.output, "the last request's log line", until=lambda out: last in out
            )

        for item in vault.list_properties_of_secrets():  # every value any path made: rotations, rollback, ...
            for version in vault.list_properties_of_secret_versions(item.name):
                if version.enabled and not item.managed and item.name != AUDIT_KEY_SECRET:
                    value = vault.get_secret(item.name, version.version).value or ""
                    canaries[f"{item.name}/{version.version}"] = value
        key_value = vault.get_secret(AUDIT_KEY_SECRET).value or ""
        canaries["audit MAC key (base64)"] = key_value
        canaries["audit MAC key (hex)"] = base64.b64decode(key_value).hex()

        tables = TableServiceClient.from_connection_string(azurite.connection_string)
        table_dump = {
            t.name: json.dumps(
                [dict(e) for e in tables.get_table_client(t.name).list_entities()], default=str
            )
            for t in tables.list_tables()
        }
        assert sum(text.count('"mac"') for text in table_dump.values()) >= 8, (
            "the audit trail should not be empty"
        )
        assert sink.events, "the suspicious-activity notification should have been published"

        haystacks = {f"table {name}": text for name, text in table_dump.items()}
        haystacks["dev host log"] = host_output
        haystacks["test process log"] = caplog.text
        haystacks["HTTP responses"] = "\n".join(client.seen)
        haystacks["Event Grid notifications"] = b"\n".join(sink.raw).decode()
        haystacks["operator CLI"] = cli.stdout + cli.stderr
        haystacks["webhook requests (headers, paths)"] = repr(
            [(call.path, call.headers) for call in consumer.calls]
        )
        haystacks["PostgreSQL server log"] = postgres.log_file.read_text(errors="replace")
        assert leaks(canaries, haystacks) == []


def _target_paths(
    client: Client,
    host: HostProcess,
    vault: SecretClient,
    pg: PostgresProcess,
    consumer: WebhookConsumer,
    canaries: dict[str, str],
) -> None:
    """The target rotators: PostgreSQL single user and alternating users, a webhook consumer (onboarded,
    its signing key created), and a refused rotation (a password that does not log in)."""

    def document(role: Role) -> str:
        return ConnectionDocument(pg.host, pg.port, "postgres", role.name, role.password, "disable").to_json()

    single = create_role(pg, "canary_single")
    admin = create_role(pg, "canary_admin", "LOGIN", "CREATEROLE")
    alternating = create_role(pg, "canary_alt")
    broken = Role("canary_single", f"CANARY-{secrets.token_hex(16)}")  # not its password: refused
    for role in (single, admin, alternating, broken):
        canaries[f"password {len(canaries)} ({role.name})"] = role.password
    kind, interval = SecretKind.DATABASE_PASSWORD, timedelta(days=30)
    vault.set_secret("canary-pg-admin", document(admin), content_type="application/json")
    plans = {
        "canary-pg-single": (single, RotationPolicy(kind, interval, rotator=Rotator.POSTGRES_SINGLE_USER)),
        "canary-pg-alt": (
            alternating,
            RotationPolicy(kind, interval, rotator=Rotator.POSTGRES_ALTERNATING, target="canary-pg-admin"),
        ),
        "canary-pg-broken": (broken, RotationPolicy(kind, interval, rotator=Rotator.POSTGRES_SINGLE_USER)),
    }
    for name, (role, policy) in plans.items():
        vault.set_secret(name, document(role), content_type="application/json", tags=policy.to_tags())
    body = {"name": "canary-hook", "kind": "api-key", "rotation_interval_days": 30, "rotator": "webhook",
            "rotation_target": consumer.url}  # fmt: skip
    status, created = client.post("/api/secrets", body, principal=OPERATOR)
    assert status == 201, created
    consumer.accept(vault.get_secret("canary-hook").value or "", created["tags"]["rotation-id"])
    for name in ("canary-pg-single", "canary-pg-alt", "canary-hook"):
        assert client.post(f"/api/secrets/{name}/rotate", {"force": True}, principal=OPERATOR)[0] == 202
        assert host.wait_for_output(f"rotation of {name}: rotated", timeout=60), host.output()
    assert client.post("/api/secrets/canary-pg-broken/rotate", {"force": True}, principal=OPERATOR)[0] == 202
    assert host.wait_for_output("rotation of canary-pg-broken: failed", timeout=60), host.output()
    assert client.post("/api/secrets/canary-pg-single/rollback", {}, principal=OPERATOR)[0] == 409
    for name in ("canary-pg-single", "canary-pg-alt", "canary-pg-admin", "canary-hook"):
        canaries[f"{name} (current)"] = vault.get_secret(name).value or ""
    for key in vault.list_properties_of_secrets():
        if key.name and key.name.startswith("slc-"):  # the signing key and pending copies
            for version in vault.list_properties_of_secret_versions(key.name):
                if version.enabled:
                    canaries[f"{key.name}/{version.version}"] = (
                        vault.get_secret(key.name, version.version).value or ""
                    )


def _revocation_paths(client: Client, vault: SecretClient, canaries: dict[str, str]) -> None:
    """Request, approve, execute with a replacement, a second execute, break-glass and its review, list
    and get: the documents and records carry names and ids only."""
    requester = encode_principal("oid-canary-req", ["Secrets.Revocation.Request", "Secrets.BreakGlass"])
    approver = encode_principal("oid-canary-appr", ["Secrets.Revocation.Approve"])
    executor = encode_principal("oid-canary-exec", ["Secrets.Revocation.Execute"])
    tags = RotationPolicy(SecretKind.API_KEY, interval=timedelta(days=30)).to_tags()
    for name in ("canary-revoked", "canary-broken-glass"):
        value = f"CANARY-{secrets.token_hex(16)}"
        vault.set_secret(name, value, tags=tags)
        canaries[f"{name} (revoked)"] = value
    body = {"secret_name": "canary-revoked", "reason": "COMPROMISE_SUSPECTED", "severity": "high",
            "justification": "canary", "replace": True}  # fmt: skip
    status, made = client.post("/api/revocations", body, principal=requester)
    assert status == 201, made
    assert (
        client.post(f"/api/revocations/{made['id']}/approve", {"comment": "ok"}, principal=approver)[0] == 200
    )
    assert client.post(f"/api/revocations/{made['id']}/execute", {}, principal=executor)[0] == 200
    assert client.post(f"/api/revocations/{made['id']}/execute", {}, principal=executor)[0] == 409
    canaries["canary-revoked (replacement)"] = vault.get_secret("canary-revoked").value or ""
    glass = {"secret_name": "canary-broken-glass", "reason": "SYSTEM_BREACH", "severity": "critical",
             "justification": "canary", "break_glass": True}  # fmt: skip
    status, done = client.post("/api/revocations", glass, principal=requester)
    assert (status, done["status"]) == (201, "executed"), done
    assert (
        client.post(f"/api/revocations/{done['id']}/review", {"comment": "ok"}, principal=approver)[0] == 200
    )
    assert client.get("/api/revocations?limit=10", principal=executor)[0] == 200
    assert client.get(f"/api/revocations/{made['id']}", principal=executor)[0] == 200
