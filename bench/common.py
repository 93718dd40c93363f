"""What every benchmark program shares: its peers, how it runs (peers stopped on Ctrl-C or SIGTERM) and the
versions of the tools it names beside its figures."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from azure.core.pipeline import PipelineResponse
from azure.data.tables import TableServiceClient
from azure.keyvault.secrets import SecretClient

from devtools.azurite import REPO_ROOT, AzuriteProcess
from devtools.keyvault_emulator.process import EmulatorProcess
from shared.adapters.key_vault import KeyVaultMacKeyRing, LocalTokenCredential


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the benchmark's ExitStack, which stops the peers


def run_benchmark(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a benchmark to its exit status; interrupted (Ctrl-C, SIGTERM), its peers are stopped and the
    status is 130. Worker threads are daemons: they die with the process once the peers are gone."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted: peers stopped", file=sys.stderr)
        return 130


def counts(parser: argparse.ArgumentParser, option: str, text: str, *, least: int = 1) -> list[int]:
    """A comma-separated list of whole numbers, each at least ``least``; a usage error otherwise."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        parser.error(f"{option} takes whole numbers separated by commas")
    if not values or min(values) < least:
        parser.error(f"{option} takes numbers of at least {least:,}")
    return values


def tool_version(args: Sequence[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def azurite_version() -> str:
    try:
        package = json.loads((REPO_ROOT / "node_modules" / "azurite" / "package.json").read_text())
    except (OSError, ValueError):
        return "unknown"
    return str(package.get("version", "unknown"))


@dataclass(frozen=True)
class Peers:
    """Real clients on freshly started peers, built as shared/bootstrap.py builds them (azure-core's
    default transport), with a response hook that counts what the benchmark measures."""

    tables: TableServiceClient
    secrets: SecretClient
    keys: KeyVaultMacKeyRing
    azurite: AzuriteProcess
    emulator: EmulatorProcess


def start_peers(
    stack: ExitStack,
    prefix: str,
    response_hook: Callable[[PipelineResponse[Any, Any]], None] | None = None,
    **emulator_options: Any,
) -> Peers:
    """Azurite (in memory) and the Key Vault emulator on free ports, stopped when ``stack`` closes; the
    audit MAC key is created before anything is measured. ``emulator_options`` are
    ``EmulatorProcess.start``'s (``latency_ms``, ``create_limit``, ``throttling``, ...)."""
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
    print("starting Azurite and the Key Vault emulator ...", file=sys.stderr, flush=True)
    azurite = stack.enter_context(AzuriteProcess.start())
    emulator = stack.enter_context(EmulatorProcess.start(tmp / "emulator.pem", **emulator_options))
    hook: dict[str, Any] = {} if response_hook is None else {"raw_response_hook": response_hook}
    tables = TableServiceClient.from_connection_string(azurite.connection_string, **hook)
    stack.callback(tables.close)
    secrets_client = SecretClient(emulator.url, LocalTokenCredential(), **emulator.client_kwargs())
    stack.callback(secrets_client.close)
    keys = KeyVaultMacKeyRing(secrets_client)
    keys.current()  # creates and caches the MAC key: not part of any measurement
    return Peers(tables, secrets_client, keys, azurite, emulator)
