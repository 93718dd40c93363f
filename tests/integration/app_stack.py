"""The app served by the dev host on its own Azurite and the session's Key Vault emulator, as a test uses
it over real HTTP (see the ``stack`` and ``make_stack`` fixtures in conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from azure.data.tables import TableServiceClient
from azure.keyvault.secrets import SecretClient

from devtools.azurite import AzuriteProcess
from devtools.host import HostProcess
from devtools.keyvault_emulator.process import EmulatorProcess
from devtools.stack import create_tables
from shared.adapters.key_vault import KeyVaultMacKeyRing, LocalTokenCredential
from shared.adapters.storage import QUEUE_API_VERSION, ROTATION_QUEUE
from shared.adapters.tables import AUDIT_TABLE, FINDINGS_TABLE, TableStateStore
from shared.adapters.tables.rows import DIGEST_PAGES
from shared.services.findings import StateFindingStore
from shared.services.sealed_state import SealedStateStore
from tests.integration.conftest import app_settings
from tests.integration.http_client import Client


class Stack:
    def __init__(self, tmp: Path, emulator: EmulatorProcess, **extra_settings: str) -> None:
        self.tmp = tmp
        self.emulator = emulator
        self.azurite = AzuriteProcess.start(tmp / "azurite")
        create_tables(self.azurite.connection_string)  # as the deployment does
        self.settings_file = tmp / "local.settings.json"
        self.settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": {}}))
        self.env = app_settings(self.azurite, emulator, **extra_settings)
        try:
            self.host = HostProcess.start(env=self.env, settings=self.settings_file)
        except RuntimeError:
            self.azurite.stop()
            raise
        self.client = Client(self.host.url)

    def restart_azurite(self) -> None:
        ports = {"blob_port": self.azurite.blob_port, "queue_port": self.azurite.queue_port,
                 "table_port": self.azurite.table_port}  # fmt: skip
        self.azurite.stop()
        self.azurite = AzuriteProcess.start(self.tmp / "azurite", **ports)

    def tables(self) -> TableServiceClient:
        return TableServiceClient.from_connection_string(self.azurite.connection_string)

    def vault(self) -> SecretClient:
        return SecretClient(self.emulator.url, LocalTokenCredential(), **self.emulator.client_kwargs())

    def sealed(self, table: str) -> SealedStateStore:
        """The service's states in ``table`` as the app reads them (sealed with the app's audit key)."""
        return SealedStateStore(
            TableStateStore(self.tables(), table), KeyVaultMacKeyRing(self.vault()), table
        )

    def findings(self) -> StateFindingStore:
        return StateFindingStore(self.sealed(FINDINGS_TABLE))

    def rotation_requests_left(self) -> int:
        """Rotation requests on the queue, those a function is working on included: a message leaves the
        queue only when the function that took it has finished (none when the queue was never made)."""
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.queue import QueueClient

        queue = QueueClient.from_connection_string(
            self.azurite.connection_string, ROTATION_QUEUE, api_version=QUEUE_API_VERSION
        )
        try:
            return int(queue.get_queue_properties().approximate_message_count or 0)
        except ResourceNotFoundError:
            return 0

    def stop(self) -> None:
        self.host.stop()
        self.azurite.stop()


def audit_rows(stack: Stack) -> list[dict[str, Any]]:
    """Every audit record row (no heads, no digests)."""
    table = stack.tables().create_table_if_not_exists(AUDIT_TABLE)
    rows = [dict(e) for e in table.list_entities()]
    return [r for r in rows if r["RowKey"] != "head" and r["PartitionKey"] not in ("_digest", DIGEST_PAGES)]
