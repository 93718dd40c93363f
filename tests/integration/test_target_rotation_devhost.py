"""Target rotators end to end through the dev host: a manual rotation (`POST /api/secrets/{name}/rotate`)
goes through the rotation-requests queue to `rotate_secret`, which sets and tests the new value at a real
PostgreSQL server (single user, alternating users) and at a real HTTPS webhook consumer before promoting
it in the Key Vault emulator. Asserted with real logins and the consumer's own key set."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from azure.keyvault.secrets import SecretClient

from devtools.keyvault_emulator.process import EmulatorProcess
from devtools.postgres import PostgresProcess
from shared.adapters.key_vault import KeyVaultSecretStore, LocalTokenCredential
from shared.domain.identity import encode_principal
from shared.domain.policy import RotationPolicy, Rotator, SecretKind
from shared.domain.targets import SIGNING_KEY_TAG, ConnectionDocument, pending_secret_name
from shared.services.rotation import ROTATION_ID_TAG
from tests.integration.app_stack import Stack, audit_rows
from tests.integration.test_postgres_rotator import create_role, logs_in
from tests.integration.webhook_consumer import WebhookConsumer

OPERATOR = encode_principal("oid-target-op", ["Secrets.Rotation.Operate"], name="target-operator")


def _document(pg: PostgresProcess, username: str, password: str) -> str:
    return ConnectionDocument(pg.host, pg.port, "postgres", username, password, "disable").to_json()


def _rotate(stack: Stack, name: str) -> str:
    status, body = stack.client.post(f"/api/secrets/{name}/rotate", {"force": True}, principal=OPERATOR)
    assert status == 202, body
    assert stack.host.wait_for_output(f"rotation of {name}: rotated", timeout=60), stack.host.output()
    return str(body["rotation_id"])


def test_postgres_and_webhook_secrets_rotate_through_the_queue(
    make_stack: Callable[..., Stack],
    kv_emulator: EmulatorProcess,
    postgres: PostgresProcess,
    tmp_path: Path,
) -> None:
    vault = SecretClient(kv_emulator.url, LocalTokenCredential(), **kv_emulator.client_kwargs())
    store = KeyVaultSecretStore(vault)
    suffix = uuid.uuid4().hex[:8]
    policy = RotationPolicy(SecretKind.DATABASE_PASSWORD, timedelta(days=30))

    # Single user: the role changes its own password.
    single = create_role(postgres, f"app_single_{suffix}")
    single_name = f"pg-single-{suffix}"
    single_policy = RotationPolicy(policy.kind, policy.interval, rotator=Rotator.POSTGRES_SINGLE_USER)
    vault.set_secret(single_name, _document(postgres, single.name, single.password),
                     content_type="application/json", tags=single_policy.to_tags())  # fmt: skip

    # Alternating: an admin with CREATEROLE makes and sets the clone.
    admin = create_role(postgres, f"rotator_admin_{suffix}", "LOGIN", "CREATEROLE")
    admin_name = f"pg-admin-{suffix}"
    vault.set_secret(
        admin_name, _document(postgres, admin.name, admin.password), content_type="application/json"
    )
    alternating = create_role(postgres, f"app_alt_{suffix}")
    alt_name = f"pg-alternating-{suffix}"
    alt_policy = RotationPolicy(
        policy.kind, policy.interval, rotator=Rotator.POSTGRES_ALTERNATING, target=admin_name
    )
    vault.set_secret(alt_name, _document(postgres, alternating.name, alternating.password),
                     content_type="application/json", tags=alt_policy.to_tags())  # fmt: skip

    with WebhookConsumer.start(store, tmp_path) as consumer:
        assert consumer.ca_bundle is not None
        stack = make_stack(WEBHOOK_CA_BUNDLE=str(consumer.ca_bundle))

        # Webhook: onboarded through the API (its signing key is created then), then rotated.
        hook_name = f"dispatch-hook-{suffix}"
        body = {"name": hook_name, "kind": "api-key", "rotation_interval_days": 30, "rotator": "webhook",
                "rotation_target": consumer.url}  # fmt: skip
        status, created = stack.client.post("/api/secrets", body, principal=OPERATOR)
        assert status == 201, created
        assert created["tags"][SIGNING_KEY_TAG]
        onboarded = vault.get_secret(hook_name).value or ""
        consumer.accept(onboarded, created["tags"][ROTATION_ID_TAG])

        single_id = _rotate(stack, single_name)
        alt_id = _rotate(stack, alt_name)
        hook_id = _rotate(stack, hook_name)

        # Single user: the new document logs in, the old password no longer does.
        new_single = vault.get_secret(single_name)
        assert (new_single.properties.tags or {})[ROTATION_ID_TAG] == single_id
        assert new_single.properties.content_type == "application/json"
        assert logs_in(postgres, new_single.value or "")
        assert not logs_in(postgres, _document(postgres, single.name, single.password))

        # Alternating: the clone is current now; the original still logs in until its grace ends.
        new_alt = vault.get_secret(alt_name)
        assert (new_alt.properties.tags or {})[ROTATION_ID_TAG] == alt_id
        assert json.loads(new_alt.value or "{}")["username"] == f"{alternating.name}_clone"
        assert logs_in(postgres, new_alt.value or "")
        assert logs_in(postgres, _document(postgres, alternating.name, alternating.password))

        # Webhook: the consumer verified every request and holds the new value beside the old one.
        new_hook = vault.get_secret(hook_name).value or ""
        assert [c.step for c in consumer.calls] == ["set", "test"]
        assert all(c.signature_ok and c.version == hook_id for c in consumer.calls)
        assert consumer.accepts(new_hook) and consumer.accepts(onboarded)

        # Every pending companion's copy is disabled once promoted.
        for name in (single_name, alt_name, hook_name):
            companion = pending_secret_name(name)
            assert [v.enabled for v in vault.list_properties_of_secret_versions(companion)] == [False]

        rotated = [r for r in audit_rows(stack) if r["action"] == "ROTATED" and r["result"] == "success"]
        assert {r["secret_name"] for r in rotated} >= {single_name, alt_name, hook_name}
        output = stack.host.output()
        for value in (new_single.value, new_alt.value, new_hook, onboarded, single.password, admin.password):
            assert value and value not in output
