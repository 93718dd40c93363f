"""The load and scale-out benchmarks' record counting (bench/service.py): a request answered twice or not
at all is seen, however its outcome names it."""

from __future__ import annotations

import json
from typing import Any

from bench.service import revocation_outcomes, rotation_outcomes


def row(action: str, result: str = "success", **details: Any) -> dict[str, Any]:
    return {"action": action, "result": result, "details": json.dumps(details)}


def test_each_rotation_request_is_answered_once_by_its_rotation_or_a_late_skip() -> None:
    rows = [
        row("ROTATED", "intent", rotation_id="a"),
        row("ROTATED", rotation_id="a", joined=["b", "c"]),
        row("ROTATION_SKIPPED", rotation_id="a", joined=["d"], reason="joined rotation a"),
        row("ROTATION_SKIPPED", rotation_id="e", joined=["f"], reason="not due until 2027-01-01T00:00:00Z"),
        row("ROTATION_SKIPPED", rotation_id="b", reason="already done (rotation b)"),
    ]
    answered, skipped = rotation_outcomes(rows)
    assert answered == {"a": 1, "b": 1, "c": 1, "d": 1, "e": 1, "f": 1}
    assert skipped == {"b": 1}


def test_a_rotation_answered_twice_is_counted_twice() -> None:
    rows = [row("ROTATED", rotation_id="a"), row("ROTATION_FAILED", rotation_id="x", joined=["a"])]
    assert rotation_outcomes(rows)[0]["a"] == 2


def test_revocation_records_are_counted_per_request_and_action() -> None:
    rows = [
        row("REVOCATION_REQUESTED", revocation_id="r1"),
        row("REVOCATION_APPROVED", revocation_id="r1"),
        row("REVOCATION_APPROVED", "denied", revocation_id="r1"),
        row("REVOCATION_APPROVED", revocation_id="r1"),
        row("REVOKED", "intent", revocation_id="r1"),
        row("REVOKED", revocation_id="r1"),
    ]
    counted = revocation_outcomes(rows)
    assert counted[("r1", "REVOCATION_APPROVED")] == 2
    assert (counted[("r1", "REVOKED")], counted[("r1", "REVOCATION_REQUESTED")]) == (1, 1)
