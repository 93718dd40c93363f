"""bench/cold_start.py against its own peers: in a fresh process each, the first call of every trigger kind
(HTTP, timer, Event Grid, queue) imports what the function needs and succeeds, and so does the second. No
timing is asserted (the goal is set out of reach of any machine's noise)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: function -> what its first and second call answer (an HTTP status, or "ok": returned without raising)
EXPECTED = {
    "health": "200, 200",
    "secrets_list": "200, 200",
    "openapi": "200, 200",
    "expiry_check": "ok, ok",
    "key_vault_events": "ok, ok",
    "rotate_secret": "ok, ok",
}


def test_the_first_call_of_each_trigger_kind_succeeds_in_a_fresh_process() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.cold_start", "--pairs", "1", "--goal", "1000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    rows = {
        line.split("`")[1]: line.rstrip(" |").rsplit("|", 1)[1].strip()
        for line in done.stdout.splitlines()
        if line.startswith("| `")
    }
    assert rows == EXPECTED, done.stdout
