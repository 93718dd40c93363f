"""The operator CLI (``secret-lifecycle``) against the dev host over real HTTP: each command of issue 19
does what it says to the service (the vault's versions, the trail), exits with its documented code, and
never prints a secret value."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from azure.keyvault.secrets import SecretClient

from lifecycle_cli.main import main
from shared.config import vault_name
from shared.domain.policy import RotationPolicy, SecretKind
from tests.integration.app_stack import Stack


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self
        return json.loads(self.out)


class Cli:
    """The CLI run in this process against ``stack``, every output kept (for the canary check)."""

    def __init__(self, stack: Stack) -> None:
        self.url = stack.host.url
        self.printed: list[str] = []

    def __call__(self, *argv: str) -> Run:
        stdout, stderr = io.StringIO(), io.StringIO()
        code = main(["--url", self.url, *argv], env={}, stdout=stdout, stderr=stderr)
        run = Run(code, stdout.getvalue(), stderr.getvalue())
        self.printed += [run.out, run.err]
        return run


def _managed_secret(vault: SecretClient, canary: str) -> tuple[str, str]:
    name = f"cli-{uuid.uuid4().hex[:10]}"
    tags = RotationPolicy(SecretKind.API_KEY, timedelta(days=30), owner="fleet-ops").to_tags()
    version = vault.set_secret(name, canary, tags=tags).properties.version or ""
    return name, version


def test_each_command_against_the_dev_host(stack: Stack) -> None:
    cli, vault = Cli(stack), stack.vault()
    canary = f"CLI-CANARY-{uuid.uuid4().hex}"
    name, first = _managed_secret(vault, canary)

    # plan, secrets list, status: what the service answers, as JSON and as tables.
    plan = cli("plan", "--within", "5w", "--json").json()
    assert any(i["name"] == name and i["event"] == "rotation" for i in plan["items"]), plan
    assert name in cli("plan", "--within", "5w").out
    listed = cli("secrets", "list", "--json").json()
    assert name in [i["name"] for i in listed["items"]] and listed["continuation"] is None
    assert name in cli("secrets", "list").out
    assert cli("status", name, "--json").json()["version"] == first
    parts = urlsplit(stack.emulator.url)
    vault_of_name = vault_name(parts.hostname or "", parts.port)
    assert cli("status", name, "--vault", vault_of_name, "--json").json()["vault"] == vault_of_name
    elsewhere = cli("status", name, "--vault", "fleet-eu")
    assert elsewhere.code == 2 and "vault" in elsewhere.err

    # rotate: a dry run says why not; forced and waited for, a new version is current.
    dry = cli("rotate", name, "--dry-run", "--json").json()
    assert dry["would_rotate"] is False and dry["reason"], dry
    assert cli("rotate", name, "--dry-run", "--force", "--json").json()["would_rotate"] is True
    rotated = cli("rotate", name, "--force", "--wait", "--timeout", "60", "--json").json()
    assert rotated["done"] is True and rotated["version"] not in (None, first), rotated
    status = cli("status", name)
    assert status.code == 0 and rotated["version"] in status.out and "last rotation" in status.out

    # rollback: the first value is current again, as a new version.
    back = cli("rollback", name, "--json").json()
    assert back["restored_version"] == first and back["rolled_back_from"] == rotated["version"], back
    current = max(vault.list_properties_of_secret_versions(name), key=lambda v: v.created_on or 0)
    assert cli("status", name, "--json").json()["version"] == back["version"] == current.version

    # revocations: request, four-eyes approval (the requester's own is refused: 4), execute.
    request = ("revocations", "request", name, "--reason", "COMPROMISE_SUSPECTED", "--severity", "high",
               "--justification", "seen in a public paste")  # fmt: skip
    made = cli(*request, "--version", first, "--json").json()
    rid = made["id"]
    assert made["status"] == "pending" and made["versions"] == [first]
    assert rid in [r["id"] for r in cli("revocations", "list", "--secret", name, "--json").json()["items"]]
    assert "seen in a public paste" in cli("revocations", "show", rid).out
    own = cli("revocations", "approve", rid)
    assert own.code == 4 and "403" in own.err and "own request" in own.err
    approved = cli("--as", "second-operator", "revocations", "approve", rid, "--comment", "ok", "--json")
    assert approved.json()["status"] == "approved"
    executed = cli("revocations", "execute", rid, "--json").json()
    assert executed["status"] == "executed" and executed["result"]["disabled_versions"] == [first]
    enabled = {v.version: v.enabled for v in vault.list_properties_of_secret_versions(name)}
    assert enabled[first] is False and enabled[back["version"]] is True
    again = cli("revocations", "execute", rid)
    assert again.code == 5 and "409" in again.err

    # reject, cancel, and a break-glass execution reviewed by somebody else.
    rejected = cli("--as", "second-operator", "revocations", "reject", cli(*request, "--json").json()["id"],
                   "--comment", "a false alarm", "--json")  # fmt: skip
    assert rejected.json()["status"] == "rejected"
    cancelled = cli("revocations", "cancel", cli(*request, "--json").json()["id"], "--json")
    assert cancelled.json()["status"] == "cancelled"
    glass = cli("revocations", "request", name, "--reason", "SYSTEM_BREACH", "--severity", "critical",
                "--justification", "intrusion", "--break-glass", "--replace", "--json").json()  # fmt: skip
    assert glass["status"] == "executed" and glass["review_required"] is True, glass
    reviewed = cli(
        "--as", "reviewer", "revocations", "review", glass["id"], "--comment", "justified", "--json"
    )
    assert reviewed.json()["review"]["by"] == "reviewer"
    assert {r["status"] for r in cli("revocations", "list", "--json").json()["items"]} >= {
        "executed", "rejected", "cancelled"
    }  # fmt: skip

    # audit: the trail holds every call above, verifies, and summarises.
    records = cli("audit", "query", "--secret", name, "--limit", "500", "--json").json()["items"]
    actions = {r["action"] for r in records}
    assert {"ROTATION_REQUESTED", "ROTATED", "ROLLED_BACK", "REVOCATION_REQUESTED", "REVOKED"} <= actions
    assert all(
        r["actor_user_agent"] == "secret-lifecycle-cli/0.1.0" for r in records if r["actor_type"] == "user"
    )
    assert "REVOCATION_APPROVED" in cli("audit", "query", "--secret", name, "--since", "1h").out
    summary = cli("audit", "summary", "--secret", name, "--json").json()
    assert summary["total"] == len(records)
    assert cli("audit", "verify", "--secret", name).out.startswith("ok:")
    assert cli("audit", "verify", "--fresh", "--json").json()["status"] == "ok"
    denied_view = cli("audit", "actor", "local-operator", "--json").json()
    assert denied_view["by_signal"]["rule_refusal"] == 1 and denied_view["recent"]["items"]
    assert "rule_refusal" in cli("audit", "actor", "local-operator").out
    tail = cli("audit", "tail", "--secret", name, "-n", "3").out.splitlines()
    assert len(tail) == 3 and "REVIEWED" in tail[-1], tail

    # The compliance report of the last hour: every rotation and revocation above, as JSON and as a page.
    report = cli("compliance", "report", "--from", "1h", "--json")
    assert report.code == 2 and "from" in report.err  # a span is the audit query's; the report takes times
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    evidence = cli("compliance", "report", "--from", since, "--json").json()
    assert evidence["summary"]["rotations"] >= 1 and evidence["summary"]["executed"] == 2, evidence["summary"]
    assert {r["outcome"] for r in evidence["revocations"]} == {"executed", "rejected", "cancelled"}
    page_file = Path(tempfile.mkdtemp()) / "report.html"
    assert cli("compliance", "report", "--from", since, "--html", str(page_file)).code == 0
    page = page_file.read_text()
    assert page.startswith("<!DOCTYPE html>") and name in page and "does not prove" in page
    cli.printed.append(page)

    # Refusals: each with its exit code, said on stderr.
    denied = cli("--roles", "Secrets.Audit.Read", "rotate", name)
    assert denied.code == 4 and "Secrets.Rotation.Operate" in denied.err
    assert cli("status", f"missing-{uuid.uuid4().hex[:8]}").code == 5
    bad_since = cli("audit", "query", "--since", "yesterday")
    assert bad_since.code == 2 and "since" in bad_since.err

    printed = "".join(cli.printed)
    assert canary not in printed
    for version in vault.list_properties_of_secret_versions(name):
        value = vault.get_secret(name, version.version).value if version.enabled else None
        assert value is None or value not in printed


def _script() -> str:
    script = shutil.which("secret-lifecycle", path=str(Path(sys.executable).parent))
    assert script, (
        "secret-lifecycle is not installed in this venv: `make install` installs it (pip install -e .)"
    )
    return script


def test_the_console_script_follows_the_trail_until_interrupted(stack: Stack) -> None:
    cli = Cli(stack)
    name, _ = _managed_secret(stack.vault(), f"CLI-CANARY-{uuid.uuid4().hex}")
    # SIGINT as a terminal's Ctrl-C finds it: a runner that started this suite in the background (no job
    # control) passes it on ignored, and an ignored signal stays ignored across exec (a handled one is
    # reset to the default, for which Python installs its handler).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        follow = subprocess.Popen(
            [_script(), "--url", stack.host.url, "audit", "tail", "--follow", "--json", "--interval", "0.5",
             "--secret", name],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ},
        )  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, previous)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(follow.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        time.sleep(2)  # its first read is done: the secret has no record yet
        assert cli("rotate", name, "--force", "--wait", "--json").json()["done"] is True
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
            '"ROTATED"' in line and '"success"' in line for line in lines
        ):
            time.sleep(0.2)
    finally:
        follow.send_signal(signal.SIGINT)
        code = follow.wait(timeout=30)
    reader.join(timeout=5)
    records = [json.loads(line) for line in lines]
    assert code == 0, follow.stderr.read() if follow.stderr else ""
    assert [r["action"] for r in records].count("ROTATED") == 2, records  # intent and success, once each
    assert len({r["id"] for r in records}) == len(records)
    assert {r["secret_name"] for r in records} == {name}
