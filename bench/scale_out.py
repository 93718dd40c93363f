"""Scale-out: the service's concurrency rules hold across instances, not only inside one process.

The Functions host runs an app on several instances at once, each with its own HTTP server, queue
listeners and memory, all on one storage account and one vault. This program starts ``--instances`` dev
hosts that way and races, each round on a fresh secret, with the callers spread over the instances:

* ``rotate``: 20 concurrent forced rotations of one secret make one new version, and each of the 20
  accepted requests ends in exactly one outcome record (a second version only for requests that came after
  the first rotation had finished, as on four busy instances the queue can be quicker than the last request);
* ``approve``: 20 approvers approve one request at once: exactly the required number (2) take effect,
  the others are 409s, and there are exactly that many approval records;
* ``execute``: 10 executors execute it at once (with a replacement): one execution (one 200, one
  ``REVOKED`` record, one new version, the old versions disabled), nine 409s.

Afterwards the trail verifies (nothing lost, nothing doubled). The figures are each race's wall time per
round, beside the same races on one instance measured in the same run (``--baseline-instances``)::

    .venv/bin/python -m bench.scale_out                 # 4 instances, 5 rounds, baseline 1 instance
    .venv/bin/python -m bench.scale_out --rounds 1 --baseline-instances 0   # the short form make test runs

Exit status 0 when every invariant held, 1 with the broken one named otherwise.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from bench.common import run_benchmark
from bench.service import (
    AUDITOR,
    EXECUTOR,
    OPERATOR,
    REQUESTER,
    Broken,
    Service,
    approver,
    check_no_values,
    check_rotations,
    check_trail,
    onboard,
    revocation_outcomes,
    rotation_requests_left,
    start_service,
    wait_for,
)

ROTATIONS = 20
APPROVERS = 20
EXECUTORS = 10
REQUIRED_APPROVALS = 2  # REVOCATION_REQUIRED_APPROVALS' default


@dataclass
class Races:
    """Wall seconds of each race, per round; the secrets raced on."""

    seconds: dict[str, list[float]] = field(
        default_factory=lambda: {"rotate": [], "approve": [], "execute": []}
    )
    secrets: list[str] = field(default_factory=list)


def _at_once(count: int, one: Callable[[int], tuple[int, Any]]) -> list[tuple[int, Any]]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def _versions(service: Service, name: str) -> dict[str, bool]:
    return {
        p.version or "": bool(p.enabled)
        for p in service.peers.secrets.list_properties_of_secret_versions(name)
    }


def race_rotations(service: Service, name: str) -> float:
    """20 forced rotations at once: one new version, one outcome record per accepted request."""
    before = len(_versions(service, name))
    started = perf_counter()
    answers = _at_once(
        ROTATIONS,
        lambda _: service.caller.call(
            "rotate", "POST", f"/api/secrets/{name}/rotate", {"force": True}, principal=OPERATOR
        ),
    )
    if [status for status, _ in answers] != [202] * ROTATIONS:
        raise Broken(f"rotate {name}: not every request accepted: {[s for s, _ in answers]}")
    ids = [str(answer["rotation_id"]) for _, answer in answers]
    check_rotations(service, ids)  # no instance dies here: every request is answered
    wait_for(lambda: rotation_requests_left(service) == 0, "the rotation queue to be empty")
    seconds = perf_counter() - started
    made = len(_versions(service, name)) - before
    rotations = _rotations(service, name)
    if made != len(rotations) or not made:
        raise Broken(f"{ROTATIONS} concurrent rotations of {name}: {made} versions, {len(rotations)} rotated")
    for earlier, (_, later) in itertools.pairwise(rotations):
        # A second rotation is right only for a request that came after the first one had finished (on
        # four busy instances the queue can finish one before the last of 20 requests arrives).
        if later <= earlier[0]:
            raise Broken(f"{ROTATIONS} concurrent rotations of {name} made {made} versions, not one")
    return seconds


def _rotations(service: Service, name: str) -> list[tuple[str, str]]:
    """Each rotation of ``name``: when its success was recorded, and when the first request it answered
    was (sorted by the former)."""
    rows = [r for r in service.audit_rows() if r.get("secret_name") == name and r["result"] == "success"]
    requested = {
        json.loads(r["details"]).get("rotation_id"): str(r["time"])
        for r in rows
        if r["action"] == "ROTATION_REQUESTED"
    }
    rotations = []
    for row in (r for r in rows if r["action"] == "ROTATED"):
        details = json.loads(row["details"])
        answered = [
            requested.get(i, "") for i in [details.get("rotation_id"), *(details.get("joined") or [])]
        ]
        rotations.append((str(row["time"]), min(a for a in answered if a) if any(answered) else ""))
    return sorted(rotations)


def race_approvals(service: Service, name: str) -> tuple[str, float]:
    """A request for every version with a replacement, approved by 20 people at once."""
    body = {"secret_name": name, "reason": "SECURITY_INCIDENT", "severity": "low", "replace": True,
            "justification": "scale-out race"}  # fmt: skip
    status, made = service.caller.call("request", "POST", "/api/revocations", body, principal=REQUESTER)
    if status != 201:
        raise Broken(f"revocation request for {name}: {status} {made}")
    rid = str(made["id"])
    started = perf_counter()
    answers = _at_once(
        APPROVERS,
        lambda i: service.caller.call(
            "approve", "POST", f"/api/revocations/{rid}/approve", {}, principal=approver(i)
        ),
    )
    seconds = perf_counter() - started
    statuses = sorted(status for status, _ in answers)
    if statuses.count(200) != REQUIRED_APPROVALS or set(statuses) - {200, 409}:
        raise Broken(f"{APPROVERS} concurrent approvals of {rid}: {statuses}")
    _, stored = service.caller.call("get", "GET", f"/api/revocations/{rid}", principal=EXECUTOR)
    if stored["status"] != "approved" or len(stored["approvals"]) != REQUIRED_APPROVALS:
        raise Broken(f"revocation {rid} after the approvals: {stored['status']}, {len(stored['approvals'])}")
    return rid, seconds


def race_executes(service: Service, name: str, rid: str) -> float:
    """10 executions at once: one takes effect."""
    before = _versions(service, name)
    started = perf_counter()
    answers = _at_once(
        EXECUTORS,
        lambda _: service.caller.call(
            "execute", "POST", f"/api/revocations/{rid}/execute", {}, principal=EXECUTOR
        ),
    )
    seconds = perf_counter() - started
    statuses = sorted(status for status, _ in answers)
    if statuses.count(200) != 1 or set(statuses) - {200, 409}:
        raise Broken(f"{EXECUTORS} concurrent executions of {rid}: {statuses}")
    done = next(answer for status, answer in answers if status == 200)
    after = _versions(service, name)
    new = set(after) - set(before)
    if new != {done["result"]["new_version"]}:
        raise Broken(f"execution of {rid} made versions {sorted(new)}, not its one replacement")
    if any(after[v] for v in before) or not after[done["result"]["new_version"]]:
        raise Broken(f"execution of {rid}: the old versions are not all disabled, or the new one is")
    return seconds


def check_records(service: Service, revocations: Sequence[str]) -> None:
    """Each raced request has exactly its records: one request, two approvals, one execution."""
    counted = revocation_outcomes(service.audit_rows())
    expected = {"REVOCATION_REQUESTED": 1, "REVOCATION_APPROVED": REQUIRED_APPROVALS, "REVOKED": 1}
    for rid in revocations:
        seen = {action: counted[(rid, action)] for action in expected}
        if seen != expected:
            raise Broken(f"revocation {rid}: success records {seen}, expected {expected}")


def run_races(service: Service, rounds: int) -> Races:
    """``rounds`` rounds of the three races, each on a fresh secret; then the records and the trail."""
    races = Races()
    revocations: list[str] = []
    for n in range(rounds):
        name = f"scale-{uuid.uuid4().hex[:10]}"
        onboard(service, name)
        races.secrets.append(name)
        races.seconds["rotate"].append(race_rotations(service, name))
        rid, seconds = race_approvals(service, name)
        races.seconds["approve"].append(seconds)
        races.seconds["execute"].append(race_executes(service, name, rid))
        revocations.append(rid)
        print(f"  round {n + 1}/{rounds}: invariants held", file=sys.stderr, flush=True)
    check_records(service, revocations)
    check_trail(service)
    check_no_values(service, races.secrets)
    if errors := service.caller.server_errors():
        raise Broken(f"server errors: {errors}")
    return races


def measure(instances: int, rounds: int) -> Races:
    with ExitStack() as stack:
        service = start_service(stack, "bench-scale-out-", instances)
        service.caller.call("audit", "GET", "/api/audit?limit=1", principal=AUDITOR)  # the MAC key exists
        return run_races(service, rounds)


def _row(label: str, races: Races) -> str:
    cells = [f"{statistics.median(races.seconds[k]):>10.2f}" for k in ("rotate", "approve", "execute")]
    return f"{label:<14}{''.join(cells)}"


def run(args: argparse.Namespace) -> int:
    results: list[tuple[str, Races]] = []
    try:
        for instances in [n for n in (args.baseline_instances, args.instances) if n]:
            print(f"{instances} instance(s), {args.rounds} round(s):", file=sys.stderr, flush=True)
            results.append((f"{instances} instance(s)", measure(instances, args.rounds)))
    except Broken as err:
        print(f"INVARIANT BROKEN: {err}", file=sys.stderr)
        return 1
    print(f"scale-out races, median wall seconds of {args.rounds} round(s) "
          f"({ROTATIONS} rotations, {APPROVERS} approvals, {EXECUTORS} executions at once)")  # fmt: skip
    print(f"{'':<14}{'rotate':>10}{'approve':>10}{'execute':>10}")
    for label, races in results:
        print(_row(label, races))
    print("every invariant held: one version per rotation race, exactly 2 approvals, one execution, "
          "one outcome per accepted request, the trail verifies")  # fmt: skip
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_out", description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=4, help="dev hosts serving the app (default 4)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the three races (default 5)")
    parser.add_argument(
        "--baseline-instances", type=int, default=1,
        help="the same races on this many instances first, for comparison (0: none; default 1)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not 1 <= args.instances <= 16 or not 0 <= args.baseline_instances <= 16:
        parser.error("--instances takes 1-16 and --baseline-instances 0-16")
    if args.rounds < 1:
        parser.error("--rounds takes at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
