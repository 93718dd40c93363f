"""Two vaults end to end: the app served by the dev host on Azurite and two Key Vault emulators
(KEY_VAULT_URL the first, KEY_VAULT_URLS the second; one CA bundle trusting both). The same secret name in
both vaults is swept, queued and rotated in each, its records are on each vault's chain, a call names its
vault, a revocation and an out-of-band version are handled in the vault they are about, an event from a
vault not listed is ignored, and a vault that goes down fails its own checks and sweep, not the other's."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.keyvault.secrets import SecretClient

from devtools.keyvault_emulator.process import EmulatorProcess
from shared.adapters.key_vault import LocalTokenCredential
from shared.config import vault_name
from shared.domain.identity import encode_principal
from shared.domain.policy import RotationPolicy, SecretKind
from tests.integration.app_stack import Stack, audit_rows
from tests.integration.http_client import send_key_vault_event
from tests.waiting import eventually

OPERATOR = encode_principal("oid-operator", ["Secrets.Rotation.Operate"], name="olga")
REQUESTER = encode_principal("oid-req", ["Secrets.Revocation.Request"], name="rita")
REPO = Path(__file__).resolve().parents[2]
POLICY = RotationPolicy(SecretKind.DATABASE_PASSWORD, timedelta(days=30), None, "dispatch-db")


@pytest.fixture
def emulators(tmp_path: Path) -> Iterator[list[EmulatorProcess]]:
    started: list[EmulatorProcess] = []
    try:
        for name in ("designated", "eu"):
            started.append(EmulatorProcess.start(tmp_path / f"{name}.pem"))
    except RuntimeError as err:
        for emulator in started:
            emulator.stop()
        pytest.fail(f"a Key Vault emulator could not start: {err}", pytrace=False)
    yield started
    for emulator in started:
        emulator.stop()


@pytest.fixture
def two(tmp_path: Path, emulators: list[EmulatorProcess]) -> Iterator[Stack]:
    designated, eu = emulators
    bundle = tmp_path / "vaults.pem"  # one CA bundle for every local vault, as KEY_VAULT_CA_BUNDLE is one
    bundle.write_text(designated.cert_file.read_text() + eu.cert_file.read_text())
    try:
        stack = Stack(tmp_path / "stack", designated, KEY_VAULT_URLS=eu.url, KEY_VAULT_CA_BUNDLE=str(bundle))
    except RuntimeError as err:
        pytest.fail(f"a peer could not start: {err}", pytrace=False)
    yield stack
    stack.stop()


def client(emulator: EmulatorProcess) -> SecretClient:
    return SecretClient(emulator.url, LocalTokenCredential(), **emulator.client_kwargs())


def name_of(emulator: EmulatorProcess) -> str:
    return vault_name("127.0.0.1", emulator.port)


def event(stack: Stack, vault: str, kind: str, name: str, version: str) -> None:
    send_key_vault_event(stack.host.url, vault, kind, name, version)


def test_two_vaults_end_to_end(two: Stack, emulators: list[EmulatorProcess]) -> None:
    designated, eu = emulators
    vaults = {name_of(designated): client(designated), name_of(eu): client(eu)}
    first, second = vaults
    name = f"dispatch-db-{uuid.uuid4().hex[:8]}"
    soon = datetime.now(UTC) + timedelta(days=10)  # due: within Key Vault's 30-day near-expiry window
    for vault in vaults.values():
        vault.set_secret(name, "initial-value", tags=POLICY.to_tags(), expires_on=soon)

    status, health = two.client.get("/api/health", principal=None)
    assert status == 200 and set(health["checks"]) >= {"key_vault", "key_vault_2"}, health

    # The sweep covers both vaults: one request each, each rotated in its own vault.
    assert two.client.post("/admin/functions/rotation_sweep", {"input": ""})[0] == 202
    eventually(
        two.host.output, "both rotations", until=lambda out: out.count(f"rotation of {name}: rotated") == 2
    )
    for vault_name_, vault in vaults.items():
        assert len(list(vault.list_properties_of_secret_versions(name))) == 2, vault_name_
    rotated = [r for r in audit_rows(two) if r["action"] == "ROTATED" and r["secret_name"] == name]
    assert sorted((r["vault"], r["result"]) for r in rotated) == sorted(
        (v, result) for v in vaults for result in ("intent", "success")
    )

    # A call about one secret names its vault; the listings name each item's vault.
    path = f"/api/secrets/{name}/status"
    status, body = two.client.get(path, principal=OPERATOR)
    assert status == 400 and body["parameter"] == "vault", body
    status, body = two.client.get(f"{path}?vault={second}", principal=OPERATOR)
    assert status == 200 and body["vault"] == second and body["version"] == current(vaults[second], name)
    status, listed = two.client.get("/api/secrets?limit=100", principal=OPERATOR)
    assert {(i["vault"], i["name"]) for i in listed["items"]} >= {(first, name), (second, name)}
    status, page = two.client.get(f"/api/audit?vault={second}&secret_name={name}")
    assert status == 200 and page["items"] and {i["vault"] for i in page["items"]} == {second}

    # A revocation in the second vault lists that vault's versions and is found by its id alone.
    request = {"secret_name": name, "reason": "COMPROMISE_SUSPECTED", "severity": "low", "justification": "x"}
    status, made = two.client.post(f"/api/revocations?vault={second}", request, principal=REQUESTER)
    assert status == 201 and made["vault"] == second, made
    assert set(made["versions"]) == {
        p.version for p in vaults[second].list_properties_of_secret_versions(name)
    }
    assert two.client.get(f"/api/revocations/{made['id']}")[0] == 200

    # An out-of-band version in the second vault is handled there; an unlisted vault's event is ignored.
    oob = vaults[second].set_secret(name, "edited-by-hand", tags=POLICY.to_tags()).properties.version or ""
    event(two, second, "SecretNewVersionCreated", name, oob)
    assert two.host.wait_for_output(f"version {oob}: acted", timeout=30), two.host.output()
    event(two, "fleet-nowhere", "SecretNearExpiry", name, oob)
    assert two.host.wait_for_output("'fleet-nowhere' is not one this service manages", timeout=30)

    status, report = two.client.get("/api/audit/verify?fresh=true")
    assert (status, report["status"]) == (200, "ok"), report
    # The break-glass command line verifies one vault's chain of the name.
    for vault, exit_code, said in ((second, 0, "1 chain(s)"), ("fleet-nowhere", 3, "not a vault")):
        cli = [
            sys.executable,
            "-m",
            "shared.entrypoints.cli",
            "verify",
            "--secret-name",
            name,
            "--vault",
            vault,
        ]
        done = subprocess.run(cli, cwd=REPO, env={"PATH": "/usr/bin:/bin", **two.env}, capture_output=True,
                              text=True, check=False)  # fmt: skip
        assert done.returncode == exit_code and said in done.stdout + done.stderr, (done.stdout, done.stderr)

    # The second vault goes down: its own check fails, and the sweep still covers the first vault.
    eu.stop()
    status, health = two.client.get("/api/health", principal=None)
    assert health["checks"]["key_vault_2"]["status"] == "error"
    assert health["checks"]["key_vault"]["status"] == "ok", health
    assert two.client.post("/admin/functions/rotation_sweep", {"input": ""})[0] == 202
    output = eventually(
        two.host.output, "the sweep with one vault down",
        until=lambda out: out.count("Executed 'Functions.rotation_sweep'") >= 2,
    )  # fmt: skip
    assert f"(vault {first})" in output.split("Executed 'Functions.rotation_sweep'")[1]
    assert "Executed 'Functions.rotation_sweep' (Failed" in output
    assert "edited-by-hand" not in output and "initial-value" not in output


def current(vault: SecretClient, name: str) -> str:
    return vault.get_secret(name).properties.version or ""
