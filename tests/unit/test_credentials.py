"""Which identity the app uses: its managed identity only, in Azure; the developer's sign-in elsewhere."""

from __future__ import annotations

from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

from shared.bootstrap import Container
from shared.config import Settings

BASE = {"KEY_VAULT_URL": "https://fleet.vault.azure.net", "SECRETS_STORAGE": "UseDevelopmentStorage=true"}
IN_AZURE = {**BASE, "WEBSITE_INSTANCE_ID": "a1b2c3"}


def test_in_azure_only_the_managed_identity_is_used() -> None:
    container = Container(Settings(IN_AZURE))
    assert isinstance(container._azure_credential, ManagedIdentityCredential)
    assert container._storage_credential is container._azure_credential


def test_a_user_assigned_identity_is_picked_by_client_id() -> None:
    container = Container(Settings({**IN_AZURE, "AZURE_CLIENT_ID": "11111111-2222-3333-4444-555555555555"}))
    assert container.settings.managed_identity_client_id == "11111111-2222-3333-4444-555555555555"
    assert isinstance(container._azure_credential, ManagedIdentityCredential)
    identity_based = {
        **IN_AZURE,
        "SECRETS_STORAGE": "",
        "SECRETS_STORAGE__tableServiceUri": "https://a.table.core.windows.net",
        "SECRETS_STORAGE__queueServiceUri": "https://a.queue.core.windows.net",
        "SECRETS_STORAGE__clientId": "66666666-7777-8888-9999-000000000000",
    }
    storage = Container(Settings(identity_based))
    assert isinstance(storage._storage_credential, ManagedIdentityCredential)
    assert storage._storage_credential is not storage._azure_credential


def test_outside_azure_the_developer_sign_in_is_used() -> None:
    assert isinstance(Container(Settings(BASE))._azure_credential, DefaultAzureCredential)
