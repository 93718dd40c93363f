"""What the inventory (shared/services/inventory.py) adds to the hourly sweep, beside the sweep alone
measured in the same run.

It starts Azurite (in memory) and the Key Vault emulator (no latency, no limits), seeds ``--secrets``
secrets (45 % of those not due managed, as bench/sweep.py does; none due), then runs, each through the
production adapters (sealed ``TableStateStore``, ``TableAuditLog`` with the MAC key in the vault):

1. the sweep alone (``shared.services.sweep.sweep`` sending to an in-memory collector) — the baseline;
2. the sweep with the inventory's first reconciliation (it takes the inventory: one row per managed
   secret, in transactions of 100);
3. the same with nothing changed (every sweep after the first);
4. the same after ``--edits`` % of the managed secrets had their policy edited by tag (each a
   POLICY_CHANGED record by an unknown actor, a finding and its event).

For each: wall time, peak memory (tracemalloc) and state-store calls (counted by a wrapper around the
table adapter), with the difference from the baseline. Progress goes to stderr, the figures to stdout.

    .venv/bin/python -m bench.inventory                  # 10,000 secrets, 1 % edited
    .venv/bin/python -m bench.inventory --secrets 2000   # quicker
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.common import azurite_version, run_benchmark, start_peers
from bench.sweep import Collector, plan_population, seed
from shared.adapters.clock import SystemClock
from shared.adapters.event_grid import LoggingPublisher
from shared.adapters.key_vault import KeyVaultSecretStore
from shared.adapters.tables import TableAuditLog, TableStateStore
from shared.domain.state import StateWrite, Versioned
from shared.ports import StateStore
from shared.services import inventory
from shared.services.audit import AuditTrail
from shared.services.findings import FindingPeers, StateFindingStore
from shared.services.peers import Peers
from shared.services.sealed_state import SealedStateStore
from shared.services.sweep import sweep

RESERVED = frozenset({"audit-hmac-key"})


class CountingStates:
    """A StateStore that counts the calls (and rows) reaching the store under it."""

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def get(self, partition: str, key: str) -> Versioned | None:
        self.calls["get"] += 1
        return self.inner.get(partition, key)

    def create(self, partition: str, key: str, state: Mapping[str, Any]) -> Versioned:
        self.calls["create"] += 1
        return self.inner.create(partition, key, state)

    def replace(self, partition: str, key: str, state: Mapping[str, Any], etag: str) -> Versioned:
        self.calls["replace"] += 1
        return self.inner.replace(partition, key, state, etag)

    def delete(self, partition: str, key: str, etag: str) -> None:
        self.calls["delete"] += 1
        self.inner.delete(partition, key, etag)

    def commit(self, partition: str, writes: Sequence[StateWrite]) -> list[Versioned]:
        self.calls["transaction"] += 1
        self.calls["rows written"] += len(writes)
        return self.inner.commit(partition, writes)

    def list(self, partition: str, *, start: str = "", stop: str | None = None) -> dict[str, Versioned]:
        found = self.inner.list(partition, start=start, stop=stop)
        self.calls["list"] += 1
        self.calls["rows read"] += len(found)
        return found


@dataclass
class Run:
    what: str
    wall: float
    calls: Counter[str]
    report: inventory.InventoryReport | None
    peak: int | None = None


Step = Callable[[], "inventory.InventoryReport | None"]


def measure(what: str, step: Step, counting: CountingStates) -> Run:
    """One untraced pass: wall time and the state-store calls."""
    counting.calls.clear()
    started = time.perf_counter()
    report = step()
    wall = time.perf_counter() - started
    print(f"  {what}: {wall:.2f} s", file=sys.stderr, flush=True)
    return Run(what, wall, Counter(counting.calls), report)


def peak_of(step: Step) -> int:
    """One more pass under tracemalloc (which slows it several times over): its peak in bytes."""
    tracemalloc.start()
    try:
        step()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--secrets", type=int, default=10_000, help="secrets in the vault (default 10,000)")
    parser.add_argument("--edits", type=float, default=1.0, help="%% of managed secrets edited by tag (1)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    population = plan_population(0, args.secrets, 0)
    managed = sorted(population.not_due)
    print(f"inventory benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
    python, azurite = platform.python_version(), azurite_version()
    print(f"machine: {os.cpu_count()} CPUs, Python {python}, Azurite {azurite} (in memory)")
    print(
        f"vault: the Key Vault emulator (no latency, no limits); {population.total:,} secrets, "
        f"{len(managed):,} managed (none due), the rest unmanaged"
    )
    with ExitStack() as stack:
        peers = start_peers(stack, "bench-inventory-", throttling=False)
        print(f"seeding {population.total:,} secrets ...", file=sys.stderr, flush=True)
        seed(peers.secrets, peers.emulator, population)
        store = KeyVaultSecretStore(peers.secrets)
        clock = SystemClock()
        table = "state" + uuid.uuid4().hex[:8]
        counting = CountingStates(TableStateStore(peers.tables, table))
        states = SealedStateStore(counting, peers.keys, table)
        log = TableAuditLog(peers.tables, peers.keys, table="audit" + uuid.uuid4().hex[:8])
        trail = AuditTrail(log, clock, "bench-vault")
        findings = StateFindingStore(
            SealedStateStore(
                TableStateStore(peers.tables, "findings" + uuid.uuid4().hex[:8]), peers.keys, "f"
            )
        )
        finding_peers = FindingPeers(findings, trail, LoggingPublisher(), clock)
        inventory_peers = inventory.InventoryPeers(states, finding_peers, log, peers.keys)
        _ = states.list("warm-up"), log.table  # the tables exist before anything is measured

        def sweep_peers() -> Peers:
            return Peers(
                store=store, states=states, trail=trail, publisher=LoggingPublisher(), clock=clock,
                requests=Collector(), reader=log, keys=peers.keys, reserved=RESERVED,
            )  # fmt: skip

        def alone() -> inventory.InventoryReport | None:
            sweep(sweep_peers(), "bench")
            return None

        def with_inventory() -> inventory.InventoryReport | None:
            found = inventory.Inventory.load(states, RESERVED)
            sweep(sweep_peers(), "bench", observe=found.observe)
            return inventory.reconcile(inventory_peers, found, "bench")

        print("measuring ...", file=sys.stderr, flush=True)
        runs = [
            measure("the sweep alone (baseline)", alone, counting),
            measure("+ the first reconciliation (takes the inventory)", with_inventory, counting),
            measure("+ a reconciliation, nothing changed", with_inventory, counting),
        ]
        edited = random.Random(7).sample(managed, max(1, round(len(managed) * args.edits / 100)))
        for name in edited:
            props = peers.secrets.get_secret(name).properties
            tags = {**(props.tags or {}), "rotation-interval-days": "730"}
            peers.secrets.update_secret_properties(name, props.version, tags=tags)
        runs.append(measure(f"+ a reconciliation, {len(edited)} edited by tag", with_inventory, counting))
        runs.append(measure("the sweep alone again (baseline)", alone, counting))
        print("peak memory ...", file=sys.stderr, flush=True)
        runs[0].peak = peak_of(alone)
        runs[2].peak = peak_of(with_inventory)
    print_runs(runs, len(managed), len(edited))
    return 0


def print_runs(runs: Sequence[Run], managed: int, edited: int) -> None:
    base = min(runs[0].wall, runs[-1].wall)
    print()
    columns = f"{'wall s':>7} {'+ s':>7} {'peak KiB':>9} {'state calls':>12} {'rows read':>10} {'written':>8}"
    print(f"{'':50} {columns}")
    for each in runs:
        calls = sum(v for k, v in each.calls.items() if k not in ("rows read", "rows written"))
        written = each.calls["rows written"] + each.calls["create"] + each.calls["replace"]
        peak = "-" if each.peak is None else f"{each.peak // 1024:,}"
        print(
            f"{each.what:50} {each.wall:7.2f} {each.wall - base:+7.2f} {peak:>9} {calls:12,} "
            f"{each.calls['rows read']:10,} {written:8,}"
        )
    changed, taken = runs[3].report, runs[1].report
    print()
    if taken is not None:
        print(
            f"the first reconciliation took {taken.taken:,} of {managed:,} managed secrets into the inventory"
        )
    if changed is not None:
        print(
            f"edited by tag: {edited}; recorded as changed outside the API: {len(changed.changed)}, "
            f"as onboarded by tags: {len(changed.onboarded)}; failures: {len(changed.failures)}"
        )
    if runs[0].peak is not None and runs[2].peak is not None:
        extra = runs[2].peak - runs[0].peak
        per = extra / max(1, managed)
        print(f"peak beyond the sweep's: {extra // 1024:,} KiB, {per:.0f} bytes per managed secret")


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
