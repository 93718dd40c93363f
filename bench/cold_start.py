"""Cold start: what importing the app and indexing its functions costs, beside a bare
``import azure.functions``; then the first invocation of each trigger kind.

1. **Index.** ``--pairs`` pairs of fresh Python processes (default 15). One of a pair does a bare
   ``import azure.functions``; the other does what the Functions host's worker does with the app at a cold
   start: ``import function_app``, ``app.get_functions()`` (once), and each function's metadata (its name,
   its ``function.json`` and raw bindings, its parameters and their resolved type hints). The order
   alternates within pairs. Each process's CPU time (user + system, ``RUSAGE_CHILDREN`` deltas: the whole
   process, interpreter start included on both sides) is the figure; the medians' ratio is the verdict
   against ``--goal`` (1.3). The children get an environment without a setting and write no bytecode, so
   the app's sources are compiled in each process as from a read-only package (the run says when the tree
   holds bytecode of its own, which would be used).
2. **First invocations** (unless ``--no-triggers``). Azurite (in memory) and the Key Vault emulator are
   started and one managed secret created; then, one fresh process per trigger, the app is imported and
   indexed as above, and the function is called twice with real ``azure.functions`` objects (an
   ``HttpRequest``, a ``TimerRequest``, an ``EventGridEvent``, a ``QueueMessage`` holding a sealed rotation
   request): the CPU and wall time of the first call (the imports, settings, clients and connections it
   builds) beside the second.

Progress goes to stderr, the figures to stdout; exit 1 when the goal is missed or a child fails.

    .venv/bin/python -m bench.cold_start                         # 15 pairs, then the triggers
    .venv/bin/python -m bench.cold_start --pairs 3 --no-triggers # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from devtools.azurite import REPO_ROOT

GOAL = 1.3
BARE = "import azure.functions\n"

#: What the host's worker does with the app at a cold start: import it, take its functions (once: the
#: library refuses a second call), and read each one's metadata and signature. ``FUNCTIONS`` and ``INDEX``
#: are what a caller of this snippet reads.
INDEX = """\
import inspect, json, typing
import function_app
FUNCTIONS = {f.get_function_name(): f for f in function_app.app.get_functions()}
INDEX = {
    name: {
        "function": json.loads(f.get_function_json()),
        "raw_bindings": f.get_raw_bindings(),
        "parameters": [
            [p, repr(hints.get(p))] for p in inspect.signature(f.get_user_function()).parameters
        ],
        "returns": repr(hints.get("return")),
    }
    for name, f in FUNCTIONS.items()
    for hints in [typing.get_type_hints(f.get_user_function())]
}
"""

#: One trigger's first and second call in a process that has just imported and indexed the app: prints
#: {"first": [cpu, wall], "second": [cpu, wall], "outcome": ...}.
CALLS = """
import sys, time
from datetime import UTC, datetime
import azure.functions as func
from azure.functions.timer import TimerRequest

name, kind, given = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])


class Context:
    function_name = name
    trace_context = None

    def __init__(self, n):
        self.invocation_id = f"cold-start-{n}"


def argument():
    if kind == "http":
        return func.HttpRequest("GET", given["url"], headers=given["headers"], params={}, route_params={},
                                body=b"")
    if kind == "timer":
        return TimerRequest()
    if kind == "eventgrid":
        return func.EventGridEvent(id=given["id"], data=given["data"], topic=given["topic"],
                                   subject=given["subject"], event_type=given["type"],
                                   event_time=datetime.now(UTC), data_version="1")
    return func.QueueMessage(id="cold-start", body=given["body"].encode())


def call(n):
    function = FUNCTIONS[name].get_user_function()
    parameters = inspect.signature(function).parameters
    args = [argument()] + ([Context(n)] if "context" in parameters else [])
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        result = function(*args)
        outcome = str(getattr(result, "status_code", "ok"))
    except Exception as err:  # a failed invocation is a figure too: the host records it and goes on
        outcome = f"raised {type(err).__name__}"
    return [time.process_time() - cpu, time.perf_counter() - wall], outcome


first, outcome = call(1)
second, again = call(2)
print(json.dumps({"first": first, "second": second, "outcome": outcome, "again": again}))
"""


@dataclass(frozen=True)
class Trigger:
    """A function called in a fresh process: its name, its kind, and what its argument is built from."""

    function: str
    kind: str
    given: Mapping[str, Any]
    what: str


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=15, help="paired fresh processes (default 15)")
    parser.add_argument("--goal", type=float, default=GOAL, help=f"the ratio to stay under ({GOAL})")
    parser.add_argument("--no-triggers", action="store_true", help="the index only: no peers, no calls")
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error("--pairs takes a number of at least 1")
    return args


def child_environment(settings: Mapping[str, str] | None = None) -> dict[str, str]:
    """No app setting but ``settings``; no bytecode written into the tree."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1"}
    return {**env, **(settings or {})}


def child_cpu(code: str, env: Mapping[str, str], *args: str) -> tuple[float, str]:
    """Run ``code`` in a fresh interpreter: the CPU time (user + system) it took, and its stdout. Raises
    RuntimeError when it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(  # noqa: S603 - this interpreter, our own code
        [sys.executable, "-c", code, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"a child failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done.stdout


def p90(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def measure_index(pairs: int) -> tuple[list[float], list[float], int]:
    """CPU seconds of each bare and each app process, and the functions the app indexed."""
    env = child_environment()
    bare: list[float] = []
    app: list[float] = []
    indexed = 0
    code = INDEX + "print(len(INDEX))\n"
    for pair in range(pairs):
        for side in ("bare", "app") if pair % 2 == 0 else ("app", "bare"):
            if side == "bare":
                bare.append(child_cpu(BARE, env)[0])
            else:
                cpu, out = child_cpu(code, env)
                app.append(cpu)
                indexed = int(out)
        print(
            f"  pair {pair + 1}/{pairs}: bare {bare[-1] * 1000:.0f} ms, app {app[-1] * 1000:.0f} ms",
            file=sys.stderr,
            flush=True,
        )
    return bare, app, indexed


def report_index(args: argparse.Namespace) -> bool:
    cached = sorted({p.parent.parent.name for p in REPO_ROOT.glob("shared/**/__pycache__/*.pyc")})
    note = (
        "none in the tree: compiled from source in each process"
        if not cached
        else f"cached in the tree ({', '.join(cached)}): the app's figures are lower than a deployment's"
    )
    print(f"the app's bytecode: {note}")
    print(f"measuring {args.pairs} pair(s) of fresh processes ...", file=sys.stderr, flush=True)
    bare, app, indexed = measure_index(args.pairs)
    ratio = statistics.median(app) / statistics.median(bare)
    print(f"\nindex: {args.pairs} pairs, CPU (user + system) per fresh process, ms")
    print("| process | median | p90 | min |")
    print("| --- | --- | --- | --- |")
    for what, values in (
        ("bare `import azure.functions`", bare),
        (f"app + index ({indexed} functions)", app),
    ):
        cells = (statistics.median(values), p90(values), min(values))
        print(f"| {what} | " + " | ".join(f"{v * 1000:.0f}" for v in cells) + " |")
    met: bool = ratio <= args.goal
    print(
        f"ratio of medians: {ratio:.2f}x (goal at most {args.goal}x: {'met' if met else 'NOT MET'}); "
        f"the app's own share {(statistics.median(app) - statistics.median(bare)) * 1000:.0f} ms"
    )
    return met


# -- first invocations ------------------------------------------------------------------------------


MANAGED = "cold-start-api-key"


def triggers(keys: Any, settings: Mapping[str, str]) -> list[Trigger]:
    """One call of each trigger kind the app has, about the secret the run created."""
    from shared.config import vault_name
    from shared.domain.identity import Role, encode_principal
    from shared.domain.rotation import RotationReason, RotationRequest

    principal = encode_principal("cold-start-reader", [Role.AUDIT_READ.value])
    request = RotationRequest(
        secret_name=MANAGED,
        reason=RotationReason.MANUAL,
        requested_at=datetime.now(UTC),
        correlation_id=uuid.uuid4().hex,
        force=True,
    )
    key_id, key = keys.current()
    where = urlsplit(settings["KEY_VAULT_URL"])
    vault = vault_name(where.hostname or "", where.port)  # what the app calls it
    event = {
        "id": uuid.uuid4().hex,
        "type": "Microsoft.KeyVault.SecretNearExpiry",
        "subject": MANAGED,
        "topic": f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/{vault}",
        "data": {"Id": f"{settings['KEY_VAULT_URL']}/secrets/{MANAGED}/0", "VaultName": vault,
                 "ObjectType": "Secret", "ObjectName": MANAGED, "Version": "0", "NBF": None, "EXP": None},
    }  # fmt: skip
    url = "http://localhost:7071/api"
    return [
        Trigger("health", "http", {"url": f"{url}/health", "headers": {}}, "GET /api/health (anonymous)"),
        Trigger(
            "secrets_list",
            "http",
            {"url": f"{url}/secrets", "headers": {"x-ms-client-principal": principal}},
            "GET /api/secrets (a role)",
        ),
        Trigger("openapi", "http", {"url": f"{url}/openapi.json", "headers": {}}, "GET /api/openapi.json"),
        Trigger("expiry_check", "timer", {}, "the daily expiry check"),
        Trigger("key_vault_events", "eventgrid", event, "a SecretNearExpiry event"),
        Trigger(
            "rotate_secret", "queue", {"body": request.sealed(key_id, key).to_json()}, "a sealed request"
        ),
    ]


def measure_triggers(settings: Mapping[str, str], calls: Sequence[Trigger]) -> None:
    env = child_environment(settings)
    code = INDEX + CALLS
    print("\nfirst invocation after import and index, one fresh process each: CPU / wall, ms")
    print("| function | trigger | first call | second call | outcome (first, second) |")
    print("| --- | --- | --- | --- | --- |")
    for trigger in calls:
        print(f"  calling {trigger.function} ...", file=sys.stderr, flush=True)
        _, out = child_cpu(code, env, trigger.function, trigger.kind, json.dumps(trigger.given))
        got = json.loads(out.strip().splitlines()[-1])
        first, second = got["first"], got["second"]
        print(
            f"| `{trigger.function}` ({trigger.what}) | {trigger.kind} | "
            f"{_ms(first)} | {_ms(second)} | {got['outcome']}, {got['again']} |"
        )


def _ms(figures: Sequence[float]) -> str:
    return " / ".join(f"{value * 1000:.0f}" for value in figures)


def run_triggers() -> None:
    from azure.keyvault.secrets import SecretClient

    from bench.common import start_peers
    from devtools.stack import create_tables
    from shared.adapters.key_vault import LocalTokenCredential
    from shared.domain.policy import RotationPolicy, SecretKind

    with ExitStack() as stack:
        peers = start_peers(stack, "bench-cold-start-")
        create_tables(peers.azurite.connection_string)  # as the deployment does
        settings = {
            "KEY_VAULT_URL": peers.emulator.url,
            "KEY_VAULT_CA_BUNDLE": str(peers.emulator.cert_file),
            "SECRETS_STORAGE": peers.azurite.connection_string,
            "AzureWebJobsStorage": peers.azurite.connection_string,
            "ALLOW_UNVERIFIED_PRINCIPAL": "true",
            "AZURE_FUNCTIONS_ENVIRONMENT": "Development",
            "FUNCTIONS_WORKER_RUNTIME": "python",
        }
        vault = SecretClient(peers.emulator.url, LocalTokenCredential(), **peers.emulator.client_kwargs())
        stack.callback(vault.close)
        policy = RotationPolicy(SecretKind.API_KEY, timedelta(days=30), None, "cold-start")
        vault.set_secret(MANAGED, uuid.uuid4().hex, tags=policy.to_tags(), expires_on=_in(days=20))
        measure_triggers(settings, triggers(peers.keys, settings))


def _in(*, days: int) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


def run(args: argparse.Namespace) -> int:
    print(f"cold start benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}")
    started = time.perf_counter()
    try:
        met = report_index(args)
        if not args.no_triggers:
            run_triggers()
    except RuntimeError as err:
        print(f"FAILED: {err}")
        return 1
    print(f"\n{time.perf_counter() - started:.0f} s in all", file=sys.stderr)
    return 0 if met else 1


def main(argv: Sequence[str] | None = None) -> int:
    from bench.common import run_benchmark

    return run_benchmark(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
