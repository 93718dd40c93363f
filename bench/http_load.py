"""Load: a mixed workload over HTTP on several instances, its latencies beside health's, and what must
hold afterwards — also when instances are killed at random moments.

``--clients`` callers run for ``--seconds``, spread over ``--instances`` dev hosts on one Azurite and one
Key Vault emulator, each picking at random (weights in ``MIX``): onboard a secret, force a rotation, read
the plan, a secret's status or an audit page, or take a revocation through request, two approvals and an
execution with a replacement; ``GET /api/health`` is measured in the same run as the baseline. Printed:
throughput and p50/p95/p99 per endpoint.

Afterwards the run waits until the rotation queue is empty, then checks: no server error; every accepted
rotation request has exactly one outcome record; every onboarding and every revocation decision that was
answered 2xx has exactly one success record (and none that was refused); every secret's current version is
an enabled value; no value in a response, a host's output or an event; the trail verifies.

With ``--kill-every S`` an instance is SIGKILLed every S seconds (at a random moment within each period)
and started again on its port: requests cut off are counted (``cut``), not failed, and whatever they did
must still end as above. A request cut off mid-write leaves its lease for its holder's full term
(``LEASE``, 15 minutes; then the hourly sweep resumes a rotation, the revocation expiry (every 5 minutes)
finishes an execution); the run waits ``--settle`` seconds for the queue (redelivered messages included)
and reports what waits on such a lease by name, checked against the secret's status, rather than pass over
it::

    .venv/bin/python -m bench.http_load                          # 32 clients, 60 s, 4 instances
    .venv/bin/python -m bench.http_load --kill-every 10          # the crash variant
    .venv/bin/python -m bench.http_load --clients 8 --seconds 10 # about what make test runs

Exit status 0 when every check held, 1 naming what broke.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

from bench.common import run_benchmark
from bench.service import (
    AUDITOR,
    EXECUTOR,
    INTERRUPTED,
    OPERATOR,
    REQUESTER,
    Broken,
    Service,
    approver,
    check_current_values,
    check_database,
    check_no_values,
    check_rotations,
    check_trail,
    latency_table,
    median_ms,
    onboard,
    revocation_outcomes,
    rotation_requests_left,
    seed_database_secrets,
    start_service,
    wait_for,
)
from devtools.postgres import PostgresProcess

#: The workload's mix: operation -> weight.
MIX: dict[str, int] = {
    "health": 15, "status": 20, "plan": 10, "audit": 10, "rotate": 15, "onboard": 5, "revocation": 10,
}  # fmt: skip


@dataclass
class Ledger:
    """What the callers were told: the transitions that must be on record exactly once afterwards."""

    secrets: list[str] = field(default_factory=list)
    #: the secrets that are PostgreSQL credentials (among ``secrets``)
    databases: list[str] = field(default_factory=list)
    onboarded: list[str] = field(default_factory=list)
    rotations: list[str] = field(default_factory=list)
    #: revocation id -> {action: successes the callers were told of}
    decisions: dict[str, Counter[str]] = field(default_factory=dict)
    #: revocations a cut-off request touched: their counts are known only from the stored state
    uncertain: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pick(self, rng: random.Random) -> str:
        with self.lock:
            return rng.choice(self.secrets)


class Workload:
    def __init__(self, service: Service, ledger: Ledger, seed: int) -> None:
        self.service = service
        self.call = service.caller.call
        self.ledger = ledger
        self.seed = seed

    def client(self, index: int, deadline: float) -> None:
        rng = random.Random(self.seed * 1000 + index)
        operations: dict[str, Callable[[random.Random], object]] = {
            "health": lambda _: self.call("health", "GET", "/api/health"),
            "status": self.status,
            "plan": lambda _: self.call("plan", "GET", "/api/rotation/plan?within_days=7", principal=AUDITOR),
            "audit": lambda _: self.call("audit", "GET", "/api/audit?limit=50", principal=AUDITOR),
            "rotate": self.rotate,
            "onboard": self.onboard,
            "revocation": self.revocation,
        }
        names, weights = list(MIX), list(MIX.values())
        while time.monotonic() < deadline:
            operations[rng.choices(names, weights)[0]](rng)

    def status(self, rng: random.Random) -> None:
        self.call("status", "GET", f"/api/secrets/{self.ledger.pick(rng)}/status", principal=AUDITOR)

    def rotate(self, rng: random.Random) -> None:
        name = self.ledger.pick(rng)
        status, answer = self.call(
            "rotate", "POST", f"/api/secrets/{name}/rotate", {"force": True}, principal=OPERATOR
        )
        if status == 202:
            with self.ledger.lock:
                self.ledger.rotations.append(str(answer["rotation_id"]))

    def onboard(self, rng: random.Random) -> None:
        name = f"load-{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}"
        body = {"name": name, "kind": "api-key", "rotation_interval_days": 30}
        status, _ = self.call("onboard", "POST", "/api/secrets", body, principal=OPERATOR)
        if status == 201:
            with self.ledger.lock:
                self.ledger.onboarded.append(name)
                self.ledger.secrets.append(name)

    def revocation(self, rng: random.Random) -> None:
        """Request (every version, with a replacement), two approvals, execute: each step as far as it
        goes (a 409 when a rotation holds the secret ends the attempt)."""
        body = {"secret_name": self.ledger.pick(rng), "reason": "SECURITY_INCIDENT", "severity": "low",
                "replace": True, "justification": "load test"}  # fmt: skip
        status, made = self.call("request", "POST", "/api/revocations", body, principal=REQUESTER)
        if status != 201:
            return
        rid = str(made["id"])
        told: Counter[str] = Counter({"REVOCATION_REQUESTED": 1})
        with self.ledger.lock:
            self.ledger.decisions[rid] = told
        first = rng.randrange(1000)
        steps = [
            ("approve", "REVOCATION_APPROVED", approver(first)),
            ("approve", "REVOCATION_APPROVED", approver(first + 1)),
            ("execute", "REVOKED", EXECUTOR),
        ]
        for step, action, principal in steps:
            status, _ = self.call(step, "POST", f"/api/revocations/{rid}/{step}", {}, principal=principal)
            with self.ledger.lock:
                if status == 200:
                    told[action] += 1
                elif status == INTERRUPTED:
                    self.ledger.uncertain.add(rid)
            if status != 200:
                return


def killer(service: Service, every: float, deadline: float, seed: int, kills: list[str]) -> None:
    """SIGKILL a random instance at a random moment of each ``every`` seconds, then start it again."""
    rng = random.Random(seed)
    while (start := time.monotonic()) + every < deadline:
        time.sleep(rng.uniform(0.2, every * 0.8))
        index = rng.randrange(len(service.fleet.hosts))
        service.fleet.kill(index)
        kills.append(f"instance {index} at {time.monotonic() - start:.1f} s into its period")
        service.fleet.restart(index)
        time.sleep(max(0.0, start + every - time.monotonic()))


def check_decisions(service: Service, ledger: Ledger) -> list[str]:
    """Each revocation has exactly the success records its callers were told of (a cut-off request's
    revocation: at most one more of the step it cut). Returns the revocations still executing (their
    holder killed: finished by the timer once their lease is over)."""
    counted = revocation_outcomes(service.audit_rows())
    open_: list[str] = []
    for rid, told in ledger.decisions.items():
        for action in ("REVOCATION_REQUESTED", "REVOCATION_APPROVED", "REVOKED"):
            seen, expected = counted[(rid, action)], told[action]
            if seen == expected or (rid in ledger.uncertain and seen == expected + 1):
                continue
            raise Broken(
                f"revocation {rid}: {seen} {action} success records, the callers were told of {expected}"
            )
        if rid in ledger.uncertain:
            _, stored = service.caller.call("get", "GET", f"/api/revocations/{rid}", principal=EXECUTOR)
            if stored and stored.get("status") == "executing":
                open_.append(rid)
    return open_


def check_onboarded(service: Service, ledger: Ledger) -> None:
    counted = Counter(
        r["secret_name"]
        for r in service.audit_rows()
        if r["action"] == "SECRET_ONBOARDED" and r["result"] == "success"
    )
    twice = [n for n in ledger.onboarded if counted[n] != 1]
    if twice:
        raise Broken(f"onboarded secrets without exactly one success record: {twice[:5]}")


def run_load(args: argparse.Namespace) -> int:
    with ExitStack() as stack:
        service = start_service(stack, "bench-http-load-", args.instances)
        service.caller.call("audit", "GET", "/api/audit?limit=1", principal=AUDITOR)  # the MAC key exists
        ledger = Ledger()
        print(f"onboarding {args.secrets} secrets ...", file=sys.stderr, flush=True)
        ledger.secrets = [f"load-seed-{n:03d}-{uuid.uuid4().hex[:6]}" for n in range(args.secrets)]
        for name in ledger.secrets:
            onboard(service, name)
        pg = None
        if args.databases:
            print(
                f"starting PostgreSQL: {args.databases} database credentials ...", file=sys.stderr, flush=True
            )
            pg = stack.enter_context(PostgresProcess.start())
            ledger.databases = seed_database_secrets(service, pg, args.databases)
            ledger.secrets += ledger.databases
        service.caller.latencies.clear()
        service.caller.statuses.clear()
        workload = Workload(service, ledger, args.seed)
        print(f"{args.clients} clients for {args.seconds:g} s on {args.instances} instance(s)"
              + (f", an instance killed every {args.kill_every:g} s" if args.kill_every else "") + " ...",
              file=sys.stderr, flush=True)  # fmt: skip
        deadline = time.monotonic() + args.seconds
        threads = [
            threading.Thread(target=workload.client, args=(i, deadline), daemon=True)
            for i in range(args.clients)
        ]
        kills: list[str] = []
        if args.kill_every:
            threads.append(
                threading.Thread(
                    target=killer, args=(service, args.kill_every, deadline, args.seed, kills), daemon=True
                )
            )
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        print("\n".join(latency_table(service.caller, elapsed)))
        health = median_ms(service.caller.latencies.get("health", []))
        print(
            f"baseline: GET /api/health p50 {health:.1f} ms in the same run; {len(kills)} instance(s) killed"
        )
        return _verdict(service, ledger, args, pg)


def _verdict(service: Service, ledger: Ledger, args: argparse.Namespace, pg: PostgresProcess | None) -> int:
    print("settling: waiting for the rotation queue to be empty ...", file=sys.stderr, flush=True)
    try:
        wait_for(lambda: rotation_requests_left(service) == 0, "the rotation queue to be empty", args.settle)
        # Once the queue is empty (redeliveries included), answers take seconds; after kills, what is
        # still unanswered then waits on a dead holder's lease.
        skipped, held = check_rotations(
            service,
            ledger.rotations,
            crashed=bool(args.kill_every),
            timeout=60 if args.kill_every else args.settle,
        )
        check_onboarded(service, ledger)
        executing = check_decisions(service, ledger)
        check_current_values(service, ledger.secrets)
        database_versions, held_databases = (
            check_database(service, pg, ledger.databases, crashed=bool(args.kill_every)) if pg else (0, [])
        )
        check_no_values(service, ledger.secrets)
        check_trail(service)
        if errors := service.caller.server_errors():
            raise Broken(f"server errors: {errors}")
    except Broken as err:
        print(
            "\n".join(["the hosts' errors (last 10):", *_errors(service.fleet.output())[-10:]]),
            file=sys.stderr,
        )
        print(f"INVARIANT BROKEN: {err}", file=sys.stderr)
        return 1
    told = sum(sum(c.values()) for c in ledger.decisions.values())
    print(f"every check held: {len(ledger.rotations)} rotation requests each with one outcome "
          f"({skipped} deliveries of requests answered already, skipped on record), "
          f"{len(ledger.onboarded)} onboardings, {told} revocation steps on record once, "
          f"{len(ledger.secrets)} secrets with an enabled current value, the trail verifies")  # fmt: skip
    if pg is not None:
        print(f"the database accepts only each credential's current value "
              f"({len(ledger.databases)} credentials, {database_versions} versions in all)")  # fmt: skip
    logged = _errors(service.fleet.output())
    print(f"the hosts logged {len(logged)} error(s)" + "".join(f"\n  {error}" for error in logged[:10]))
    if held_databases:
        print(f"database credentials the database knows by their pending value, waiting on a killed "
              f"holder's lease (the resumed rotation promotes it): {held_databases}")  # fmt: skip
    if held:
        print(
            f"rotation requests waiting on a killed holder's lease (the sweep resumes it after LEASE): {held}"
        )
    if executing:
        print(f"still executing (holder killed; the expiry timer finishes them after LEASE): {executing}")
    return 0


def _errors(output: str) -> list[str]:
    """Each error the hosts logged: its line and the last line of its traceback (the exception)."""
    lines = output.splitlines()
    errors = []
    for n, line in enumerate(lines):
        if " ERROR " in line:
            following = list(itertools.takewhile(lambda x: not x.startswith("["), lines[n + 1 : n + 80]))
            errors.append(line[:200] + (f" -> {following[-1].strip()[:300]}" if following else ""))
    return errors


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.http_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent callers (default 32)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long they call (default 60)")
    parser.add_argument("--instances", type=int, default=4, help="dev hosts serving the app (default 4)")
    parser.add_argument("--secrets", type=int, default=20, help="managed secrets to start with (default 20)")
    parser.add_argument(
        "--databases", type=int, default=4,
        help="PostgreSQL credentials among the secrets, single-user rotator (default 4; 0: none)",
    )  # fmt: skip
    parser.add_argument("--kill-every", type=float, default=0.0, help="SIGKILL an instance every S seconds")
    parser.add_argument(
        "--settle", type=float, default=300.0, help="seconds to wait for the queue afterwards"
    )
    parser.add_argument("--seed", type=int, default=1, help="the workload's random seed (default 1)")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 256 or not 1 <= args.instances <= 16 or not 1 <= args.secrets <= 100:
        parser.error("--clients takes 1-256, --instances 1-16, --secrets 1-100")
    if not 0 <= args.databases <= 50:
        parser.error("--databases takes 0-50")
    if args.seconds <= 0 or args.settle <= 0 or args.kill_every < 0:
        parser.error("--seconds and --settle take positive numbers, --kill-every 0 or more")
    if args.kill_every and args.kill_every < 2:
        parser.error("--kill-every takes at least 2 seconds (an instance needs about one to start)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(run_load, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
