"""Integration tier: real SDK clients against real peers, started here on free ports.

A peer that cannot start is a test failure with its output, never a skip.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import pytest

from devtools.azurite import AzuriteProcess
from devtools.keyvault_emulator.process import EmulatorProcess
from devtools.postgres import PostgresProcess

if TYPE_CHECKING:
    from tests.integration.app_stack import Stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


class _Peer(Protocol):
    def stop(self) -> None: ...


P = TypeVar("P", bound=_Peer)


def _running(what: str, start: Callable[[], P]) -> Iterator[P]:
    """A peer for the session: started (a failure naming ``what`` if it cannot start), then stopped."""
    try:
        proc = start()
    except RuntimeError as err:
        pytest.fail(f"{what} could not start: {err}", pytrace=False)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def azurite() -> Iterator[AzuriteProcess]:
    yield from _running("Azurite (run `make install`?)", AzuriteProcess.start)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresProcess]:
    """A throwaway PostgreSQL cluster (SCRAM over TCP on loopback) for the whole session."""
    yield from _running("PostgreSQL", PostgresProcess.start)


@pytest.fixture(scope="session")
def kv_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    cert = tmp_path_factory.mktemp("kv") / "emulator.pem"
    yield from _running("the Key Vault emulator", lambda: EmulatorProcess.start(cert, delete_delay_ms=200))


def app_settings(azurite: AzuriteProcess, emulator: EmulatorProcess, **extra: str) -> dict[str, str]:
    """The settings the app needs to run against these peers (what local.settings.json holds)."""
    return {
        "KEY_VAULT_URL": emulator.url,
        "KEY_VAULT_CA_BUNDLE": str(emulator.cert_file),
        "SECRETS_STORAGE": azurite.connection_string,
        "AzureWebJobsStorage": azurite.connection_string,
        "ALLOW_UNVERIFIED_PRINCIPAL": "true",
        "AZURE_FUNCTIONS_ENVIRONMENT": "Development",
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "ROTATION_SWEEP_SCHEDULE": "0 0 * * * *",
        "EXPIRY_CHECK_SCHEDULE": "0 0 6 * * *",
        # The emulator outlives each test's Azurite: a digest anchor per table state, as in production.
        "AUDIT_ANCHOR_SECRET": f"audit-anchor-{uuid.uuid4().hex[:12]}",
        **extra,
    }


@pytest.fixture
def make_stack(tmp_path: Path, kv_emulator: EmulatorProcess) -> Iterator[Callable[..., Stack]]:
    """Start the app over real HTTP (dev host, its own Azurite) with extra settings; stopped after."""
    from tests.integration.app_stack import Stack

    started: list[Stack] = []

    def make(**extra_settings: str) -> Stack:
        try:
            started.append(Stack(tmp_path / f"stack{len(started)}", kv_emulator, **extra_settings))
        except RuntimeError as err:
            pytest.fail(f"a peer could not start: {err}", pytrace=False)
        return started[-1]

    yield make
    for stack in started:
        stack.stop()


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack()
