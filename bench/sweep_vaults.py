"""Several vaults beside one (``python -m bench.sweep --vaults 4``): the rotation sweep timer's work over
``--vaults`` vaults of ``--secrets`` secrets each, beside one vault holding as many secrets in all, in one
run.

Each vault is its own Key Vault emulator held to Key Vault's per-vault limits (``--latency-ms``,
``--tx-limit`` other calls per 10 s, 429 with ``Retry-After``), switched on after seeding; each side has its
own Azurite (in memory). Both sides run what ``rotation_sweep`` runs (shared/entrypoints/rotation.py):
``for_each`` vault of the production container (shared/bootstrap.py: one ``SecretClient`` per vault),
``sweep_run.run`` — the listing, the rotation requests sent to the queue, the inventory, the policy
violations, retirements and stalls. The first sweep takes the inventory (a write per managed secret); the
second is the steady state of every later hour. The due secrets were made just past their interval, so
none has stalled (a stall is a finding per secret, reported once, which would swamp the comparison).

Prints each side's wall time per sweep, the requests and 429s per vault, and whether the several vaults'
sweep is at least ``MIN_SPEEDUP`` times faster than the one vault's; exits 1 when not.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench.sweep import POLICY, plan_population, progress_printer, seed
from devtools.azurite import AzuriteProcess
from devtools.keyvault_emulator.process import EmulatorProcess
from devtools.stack import create_tables
from shared.adapters.key_vault import LocalTokenCredential
from shared.bootstrap import Container
from shared.config import Settings, vault_name
from shared.services import sweep_run
from shared.services.vaults import for_each

#: The several vaults' sweep is expected this many times faster than one vault holding all their
#: secrets: each vault is listed on its own budget, in parallel (below the vault count: the peers share the
#: machine's CPUs).
MIN_SPEEDUP = 1.5
#: Just past the 30-day interval: due, and not yet stalled (ROTATION_STALL_MINUTES, 120 by default).
DUE_AGE_DAYS = POLICY.interval.days + 20 / 1440


@dataclass(frozen=True)
class Side:
    """One side of the comparison: its vaults (emulators) and the app's container over them."""

    label: str
    emulators: list[EmulatorProcess]
    container: Container

    def vault_names(self) -> list[str]:
        return [vault_name("127.0.0.1", e.port) for e in self.emulators]


@dataclass(frozen=True)
class Sweep:
    seconds: float
    listed: dict[str, int]
    requests: dict[str, int]
    throttled: dict[str, int]
    failures: list[str]


def start_side(
    stack: ExitStack, tmp: Path, label: str, vaults: int, args: argparse.Namespace
) -> tuple[list[EmulatorProcess], AzuriteProcess]:
    options = {"latency_ms": args.latency_ms, "create_limit": args.create_limit, "tx_limit": args.tx_limit,
               "window_seconds": 10.0, "throttling": False}  # fmt: skip
    emulators = [
        stack.enter_context(EmulatorProcess.start(tmp / f"{label}-{i}.pem", **options)) for i in range(vaults)
    ]
    azurite = stack.enter_context(AzuriteProcess.start())
    create_tables(azurite.connection_string)
    return emulators, azurite


def container(tmp: Path, label: str, emulators: list[EmulatorProcess], azurite: AzuriteProcess) -> Container:
    """The app's container as the settings of these vaults build it (KEY_VAULT_URL the first,
    KEY_VAULT_URLS the others, one CA bundle)."""
    bundle = tmp / f"{label}-vaults.pem"
    bundle.write_text("".join(e.cert_file.read_text() for e in emulators))
    env = {
        "KEY_VAULT_URL": emulators[0].url,
        "KEY_VAULT_URLS": ",".join(e.url for e in emulators[1:]),
        "KEY_VAULT_CA_BUNDLE": str(bundle),
        "SECRETS_STORAGE": azurite.connection_string,
    }
    made = Container(Settings(env))
    made.key_ring.current()  # the audit key is made and cached before anything is measured
    return made


def seed_side(side: Side, per_vault: int, due_percent: float) -> None:
    from azure.keyvault.secrets import SecretClient

    for index, emulator in enumerate(side.emulators):
        population = plan_population(index * per_vault, per_vault, round(per_vault * due_percent / 100))
        print(
            f"{side.label}: seeding {per_vault:,} secrets in vault {index + 1} ...",
            file=sys.stderr,
            flush=True,
        )
        with SecretClient(emulator.url, LocalTokenCredential(), **emulator.client_kwargs()) as client:
            seed(client, emulator, population, progress=progress_printer("seeded", per_vault),
                 due_age_days=DUE_AGE_DAYS)  # fmt: skip
        emulator.set_throttling(True)


def run_sweep(side: Side) -> Sweep:
    """What one ``rotation_sweep`` invocation does, timed; each vault's requests counted by its emulator."""
    for emulator in side.emulators:
        emulator.reset_stats()
    cid = uuid.uuid4().hex
    started = time.perf_counter()
    runs, errors = for_each(side.container.vaults, lambda scope: sweep_run.run(scope.sweep_peers, cid))
    seconds = time.perf_counter() - started
    stats = dict(zip(side.vault_names(), (e.stats() for e in side.emulators), strict=True))
    failures = [f"{v}: {err}" for v, err in errors.items()]
    failures += [f"{v}: {f}" for v, run in runs.items() for f in run.failures]
    listed = {v: run.report.listed for v, run in runs.items()}
    return Sweep(
        seconds,
        listed,
        {v: int(s["total"]) for v, s in stats.items()},
        {v: int(s["throttled"]) for v, s in stats.items()},
        failures,
    )


def describe(side: Side, done: Sweep) -> str:
    vaults = ", ".join(
        f"{done.listed.get(v, 0):,} listed / {done.requests[v]:,} requests / {done.throttled[v]} x 429"
        for v in side.vault_names()
    )
    return f"{done.seconds:7.2f} s   ({vaults})"


def run_vaults(args: argparse.Namespace) -> int:
    per_vault, vaults = args.secrets, args.vaults
    print(f"several vaults: {vaults} vaults x {per_vault:,} secrets beside 1 vault x {vaults * per_vault:,}")
    print(
        f"each vault: the Key Vault emulator, {args.latency_ms} ms latency per call, {args.tx_limit:,} calls "
        f"per 10 s (429 + Retry-After); {args.due_percent:g} % of the secrets due, just past their interval"
    )
    failed = False
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-vaults-")))
        print("starting the peers ...", file=sys.stderr, flush=True)
        many_kv, many_azurite = start_side(stack, tmp, "many", vaults, args)
        one_kv, one_azurite = start_side(stack, tmp, "one", 1, args)
        many = Side(f"{vaults} x {per_vault:,}", many_kv, container(tmp, "many", many_kv, many_azurite))
        one = Side(f"1 x {vaults * per_vault:,}", one_kv, container(tmp, "one", one_kv, one_azurite))
        seed_side(many, per_vault, args.due_percent)
        seed_side(one, vaults * per_vault, args.due_percent)
        results: dict[str, list[Sweep]] = {many.label: [], one.label: []}
        for which in ("first (inventory taken)", "second (steady state)"):
            for side in (one, many):
                time.sleep(10.0)  # each sweep starts from an idle transaction window
                print(f"{side.label}: {which} sweep ...", file=sys.stderr, flush=True)
                results[side.label].append(run_sweep(side))
        width = max(len(label) for label in results)
        for index, which in enumerate(("first sweep (inventory taken)", "second sweep (steady state)")):
            print()
            print(which)
            for side in (one, many):
                done = results[side.label][index]
                print(f"  {side.label:<{width}}  {describe(side, done)}")
                for failure in done.failures:
                    failed = True
                    print(f"    FAILED {failure}")
        steady_one, steady_many = results[one.label][1].seconds, results[many.label][1].seconds
        speedup = steady_one / steady_many if steady_many else float("inf")
        ok = speedup >= MIN_SPEEDUP
        failed |= not ok
        print()
        print(
            f"steady-state sweep: {vaults} vaults in {steady_many:.2f} s, one vault in {steady_one:.2f} s: "
            f"{speedup:.2f}x (goal at least {MIN_SPEEDUP}x) {'met' if ok else 'NOT met'}"
        )
    print()
    print("all goals: " + ("NOT met" if failed else "met"))
    return 1 if failed else 0
