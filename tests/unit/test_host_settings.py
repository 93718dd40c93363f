"""The constants the code keeps for what host.json configures, pinned to host.json: a change to one without
the other fails here, not in production (a lease shorter than an invocation, a poison count that is off)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.domain.rotation import MAX_DEQUEUE_COUNT
from shared.domain.state import FUNCTION_TIMEOUT, LEASE
from shared.services.stalls import HELD_TOO_LONG

ROOT = Path(__file__).resolve().parents[2]


def _host(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _duration(text: str) -> timedelta:
    hours, minutes, seconds = (int(part) for part in text.split(":"))
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


def test_the_function_timeout_is_host_json_s() -> None:
    assert _duration(_host(ROOT / "host.json")["functionTimeout"]) == FUNCTION_TIMEOUT


@pytest.mark.parametrize("path", ["host.json", "tests/integration/devhost_sample/host.json"])
def test_the_poison_count_is_host_json_s(path: str) -> None:
    assert _host(ROOT / path)["extensions"]["queues"]["maxDequeueCount"] == MAX_DEQUEUE_COUNT


def test_every_lease_outlasts_an_invocation() -> None:
    # A holder is stopped by the platform before its lease runs out under it, and a lease held longer
    # than any invocation runs is a stall.
    assert FUNCTION_TIMEOUT < HELD_TOO_LONG < LEASE
