"""`make run` (devtools.stack) end to end: peers up, demo secrets seeded (one already due), health 200, the
printed curls, Ctrl-C stops all."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from azure.keyvault.secrets import SecretClient

from devtools.processes import start
from devtools.stack import (
    DEMO_SECRETS,
    DUE_DEMO_AGE_DAYS,
    DUE_DEMO_POLICY,
    DUE_DEMO_SECRET,
    UNMANAGED_DEMO_SECRET,
)
from shared.adapters.key_vault import LocalTokenCredential
from shared.domain.identity import Role, parse_principal
from shared.domain.policy import RotationPolicy
from tests.waiting import eventually

REPO = Path(__file__).resolve().parents[2]


def _refused(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=3)
    except urllib.error.HTTPError:
        return False
    except (urllib.error.URLError, OSError):
        return True
    return False


class Stack:
    """`python -m devtools.stack` on free ports, with its state and settings in a temporary folder, started
    and waited for (its "Try:" lines) like any peer."""

    def __init__(self, tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        args = [sys.executable, "-m", "devtools.stack", "--port", "0", "--vault-port", "0",
                "--storage-ports", "0,0,0", "--events-port", "0", "--state-dir", str(tmp_path),
                "--settings", str(tmp_path / "local.settings.json"), *extra]  # fmt: skip
        self.proc, _ = start(
            "make run",
            args,
            cwd=REPO,
            env=env,
            ready_line=lambda line: "Try:" in line or None,
            timeout=120,
            keep_lines=400,
            new_session=False,
            stop_signal=signal.SIGINT,
            stop_timeout=60,
        )

    @property
    def text(self) -> str:
        return self.proc.output()

    def interrupt(self) -> int:
        return self.proc.stop()


def test_make_run_serves_the_app_and_stops_everything(tmp_path: Path) -> None:
    stack = Stack(tmp_path, "--dev-host")
    try:
        text = stack.text
        health_url = re.search(r"curl -s (\S+/api/health)", text)
        vault_url = re.search(r"Key Vault\s+(https://\S+)", text)
        assert health_url and vault_url, text
        with urllib.request.urlopen(health_url.group(1), timeout=30) as response:
            assert response.status == 200
            assert json.loads(response.read())["status"] == "ok"

        verify = re.search(r"curl -s -H '(x-ms-client-principal): (\S+)' '(\S+)'", text)
        assert verify, text
        request = urllib.request.Request(verify.group(3), headers={verify.group(1): verify.group(2)})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["status"] == "ok"
        events_url = re.search(r"Events\s+(http://\S+)", text)
        assert events_url, text
        with urllib.request.urlopen(events_url.group(1), timeout=10) as response:
            assert isinstance(json.loads(response.read()), list)

        client = SecretClient(
            vault_url.group(1),
            LocalTokenCredential(),
            verify_challenge_resource=False,
            connection_verify=str(tmp_path / "keyvault-emulator.pem"),
        )
        seeded = {p.name: p.tags for p in client.list_properties_of_secrets()}
        for name, policy, _, _ in DEMO_SECRETS:
            assert RotationPolicy.from_tags(seeded[name]) == policy
        assert not RotationPolicy.is_managed(seeded[UNMANAGED_DEMO_SECRET])

        # The due demo secret: its first version was made DUE_DEMO_AGE_DAYS ago on the emulator's clock,
        # past its interval (the first sweep may already have rotated it: then it is the older version).
        versions = sorted(
            client.list_properties_of_secret_versions(DUE_DEMO_SECRET), key=lambda v: v.created_on
        )
        first = versions[0]
        assert RotationPolicy.from_tags(first.tags) == DUE_DEMO_POLICY
        age = datetime.now(UTC) - first.created_on
        assert age > DUE_DEMO_POLICY.interval
        assert abs(age.days - DUE_DEMO_AGE_DAYS) <= 1
        assert DUE_DEMO_POLICY.is_due(first.created_on, datetime.now(UTC), first.expires_on)
        # ... and the clock was put back: the emulator stamps the real time again.
        clock = requests.get(
            f"{vault_url.group(1)}/_emulator/clock",
            verify=str(tmp_path / "keyvault-emulator.pem"),
            timeout=10,
        ).json()
        assert clock["offset_seconds"] == 0
        assert f"{DUE_DEMO_SECRET} is due" in text

        # The rotation curls, with a principal that carries the rotation operator's role.
        plan = re.search(
            r"curl -s -H 'x-ms-client-principal: (\S+)' '(http://\S+)/api/rotation/plan\?within_days=30'",
            text,
        )
        rotate = re.search(
            r"curl -s -X POST -H 'x-ms-client-principal: (\S+)' -H 'Content-Type: application/json' "
            r"-d '\{\"force\": true\}' '(http://\S+)/api/secrets/([0-9A-Za-z-]+)/rotate'",
            text,
        )
        assert plan and rotate, text
        base = health_url.group(1).removesuffix("/api/health")
        assert plan.group(2) == rotate.group(2) == base
        assert rotate.group(3) == DUE_DEMO_SECRET
        for principal in (plan.group(1), rotate.group(1), verify.group(2)):
            assert parse_principal(principal).has(Role.ROTATION_OPERATE)

        # The unmanaged demo secret is near its expiry and never due: the expiry check warns about it.
        [maps] = [p for p in client.list_properties_of_secrets() if p.name == UNMANAGED_DEMO_SECRET]
        assert maps.expires_on is not None and maps.expires_on - datetime.now(UTC) < timedelta(days=30)
        # The settings file holds the ports in use, and the printed local commands work from it alone.
        written = json.loads((tmp_path / "local.settings.json").read_text())["Values"]
        assert written["KEY_VAULT_URL"] == vault_url.group(1)
        by_hand = re.search(r"By hand:\s+\.venv/bin/python -m devtools\.local (.+)$", text, re.MULTILINE)
        assert by_hand, text
        printed = by_hand.group(1).split()  # [--settings FILE] event SecretNearExpiry NAME [--url URL]
        assert printed[0] == "--settings" and printed[2:5] == [
            "event",
            "SecretNearExpiry",
            UNMANAGED_DEMO_SECRET,
        ]
        local = [sys.executable, "-m", "devtools.local", *printed[:2]]
        created = subprocess.run(
            [*local, "secret", "local-partner-token", "--expires-in", "3"],
            cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert created.returncode == 0 and "expiring" in created.stdout, created.stderr
        event = [("local-partner-token" if part == UNMANAGED_DEMO_SECRET else part) for part in printed]
        sent = subprocess.run(
            [sys.executable, "-m", "devtools.local", *event], cwd=REPO, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert sent.returncode == 0, (sent.stdout, sent.stderr)
        assert stack.proc.wait_for_output("near-expiry of local-partner-token version", timeout=30), (
            stack.text
        )
        _the_printed_cli_commands_work(text)
    finally:
        code = stack.interrupt()
    assert code == 0, stack.text
    assert "[make run] stopped" in stack.text
    eventually(
        lambda: _refused(health_url.group(1)) and _refused(vault_url.group(1)),
        "the app and the emulator to stop answering",
        timeout=10,
        interval=0.2,
    )
    assert _refused(health_url.group(1)), "the app still answers after Ctrl-C"
    assert _refused(vault_url.group(1)), "the emulator still answers after Ctrl-C"
    assert (tmp_path / "keyvault-state.json").exists()
    assert (tmp_path / "local.settings.json").exists()  # created from the sample, outside the work tree


def _the_printed_cli_commands_work(text: str) -> None:
    """The banner's CLI lines, run as printed (the settings file they name finds the app): the plan, a
    rotation waited for, and a revocation requested, approved by somebody else and executed."""
    printed = re.findall(
        r"^\s+(?:CLI:\s+)?\.venv/bin/secret-lifecycle (.+?)(?:  \(.*\))?$", text, re.MULTILINE
    )
    assert len(printed) == 6, text
    script = shutil.which("secret-lifecycle", path=str(Path(sys.executable).parent))
    assert script, "secret-lifecycle is not installed in this venv (make install: pip install -e .)"

    def run(line: str, *more: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [script, *shlex.split(line), *more], cwd=REPO, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, (line, done.stdout, done.stderr)
        return done

    plan, rotate, request, approve, execute, _tail = printed
    assert DUE_DEMO_SECRET in run(plan).stdout
    assert f"{DUE_DEMO_SECRET}: rotated to version" in run(rotate).stdout
    made = json.loads(run(request, "--json").stdout)
    assert made["status"] == "pending" and made["required_approvals"] == 1
    assert "approved" in run(approve.replace("<id>", made["id"])).stdout
    executed = run(execute.replace("<id>", made["id"]), "--json")
    assert json.loads(executed.stdout)["status"] == "executed"


def test_core_tools_gets_this_venvs_python(tmp_path: Path) -> None:
    """With `func` on PATH, make run uses it, and the Python worker Core Tools starts (the first python3 on
    PATH) is the project's venv. A stand-in `func` records which python3 it sees and serves the app with it
    — if that python3 lacked the project's packages, the app would not start and this test would fail."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    seen = tmp_path / "python3-seen"
    fake = bin_dir / "func"
    settings = tmp_path / "state" / "local.settings.json"
    fake.write_text(
        "#!/bin/sh\n"
        f'command -v python3 > "{seen}"\n'
        'echo "$languageWorkers__python__defaultExecutablePath" >> "' + str(seen) + '"\n'
        '[ "$1" = start ] && [ "$2" = --port ] || exit 64\n'
        f'exec python3 -m devtools.host --port "$3" --settings "{settings}"\n'
    )
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"}
    stack = Stack(tmp_path / "state", env=env)
    try:
        assert "Azure Functions Core Tools" in stack.text
    finally:
        assert stack.interrupt() == 0, stack.text
    python3, worker = seen.read_text().split()
    assert Path(python3).parent == Path(sys.executable).parent
    assert worker == sys.executable


def test_peers_only_writes_their_settings_for_func_start(tmp_path: Path) -> None:
    """Core Tools path: the peers alone, their real ports written into local.settings.json (what was there
    stays), and those settings reach them: every health probe of an app built from the file passes."""
    from shared.bootstrap import Container
    from shared.config import Settings

    settings = tmp_path / "local.settings.json"
    settings.write_text(
        json.dumps({"IsEncrypted": False, "Values": {"MY_OWN": "kept", "KEY_VAULT_URL": "x"}})
    )
    args = [sys.executable, "-m", "devtools.stack", "--peers-only", "--no-seed", "--vault-port", "0",
            "--storage-ports", "0,0,0", "--events-port", "0", "--state-dir", str(tmp_path),
            "--settings", str(settings)]  # fmt: skip
    proc, _ = start(
        "peers", args, cwd=REPO, ready_line=lambda line: "func start" in line or None, timeout=120,
        new_session=False, stop_signal=signal.SIGINT, stop_timeout=60,
    )  # fmt: skip
    try:
        values = json.loads(settings.read_text())["Values"]
        assert values["MY_OWN"] == "kept"
        assert re.fullmatch(r"https://127\.0\.0\.1:\d+", values["KEY_VAULT_URL"]), values["KEY_VAULT_URL"]
        assert values["KEY_VAULT_URL"] in proc.output() and "Service" not in proc.output()  # no app
        container = Container(Settings(values))
        for name, probe in container.health_probes().items():
            probe.check()  # raises when the settings do not reach that peer
            assert name
    finally:
        assert proc.stop() == 0
