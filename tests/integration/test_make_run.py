"""`make run` (devtools.stack) end to end: peers up, demo secrets seeded, health 200, Ctrl-C stops all."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path

from azure.keyvault.secrets import SecretClient

from devtools.stack import DEMO_SECRETS, UNMANAGED_DEMO_SECRET
from shared.adapters.key_vault import LocalTokenCredential
from shared.domain.policy import RotationPolicy

REPO = Path(__file__).resolve().parents[2]


def _refused(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=3)
    except urllib.error.HTTPError:
        return False
    except (urllib.error.URLError, OSError):
        return True
    return False


def test_make_run_serves_the_app_and_stops_everything(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devtools.stack",
            "--dev-host",
            "--port",
            "0",
            "--vault-port",
            "0",
            "--storage-ports",
            "0,0,0",
            "--events-port",
            "0",
            "--state-dir",
            str(tmp_path),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: deque[str] = deque(maxlen=400)
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            if "Try:" in line:
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert ready.wait(120) and proc.poll() is None, "\n".join(lines)
        text = "\n".join(lines)
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
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, "\n".join(lines)
    assert "[make run] stopped" in "\n".join(lines)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (
        _refused(health_url.group(1)) and _refused(vault_url.group(1))
    ):
        time.sleep(0.2)
    assert _refused(health_url.group(1)), "the app still answers after Ctrl-C"
    assert _refused(vault_url.group(1)), "the emulator still answers after Ctrl-C"
    assert (tmp_path / "keyvault-state.json").exists()
