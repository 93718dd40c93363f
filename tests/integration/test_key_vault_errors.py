"""Key Vault errors from the real SecretClient, as the adapters translate them into domain errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.core.exceptions import AzureError
from azure.keyvault.secrets import SecretClient

from devtools.keyvault_emulator.process import EmulatorProcess
from shared.adapters.azure_errors import translate
from shared.adapters.key_vault import LocalTokenCredential
from shared.domain.errors import Conflict, DomainError, Forbidden, NotFound, SecretDisabled


def _error(call: object) -> DomainError:
    with pytest.raises(AzureError) as err:
        call()  # type: ignore[operator]
    return translate("key_vault", err.value)


def test_disabled_missing_and_conflicting(kv_emulator: EmulatorProcess) -> None:
    client = SecretClient(kv_emulator.url, LocalTokenCredential(), **kv_emulator.client_kwargs())
    version = client.set_secret("errors-disabled", "v").properties.version
    client.update_secret_properties("errors-disabled", version, enabled=False)
    disabled = _error(lambda: client.get_secret("errors-disabled", version))
    assert isinstance(disabled, SecretDisabled)
    assert isinstance(disabled, Conflict)  # HTTP maps it to 409, never to "the service lacks a role"

    assert isinstance(_error(lambda: client.get_secret("errors-never-existed")), NotFound)

    client.begin_delete_secret("errors-disabled").wait()
    assert isinstance(_error(lambda: client.set_secret("errors-disabled", "again")), Conflict)


def test_a_missing_role_is_forbidden_not_disabled(tmp_path: Path) -> None:
    with EmulatorProcess.start(tmp_path / "kv.pem", deny=["set_secret"]) as emulator:
        client = SecretClient(emulator.url, LocalTokenCredential(), **emulator.client_kwargs())
        refused = _error(lambda: client.set_secret("errors-denied", "v"))
    assert isinstance(refused, Forbidden)
    assert not isinstance(refused, SecretDisabled)
