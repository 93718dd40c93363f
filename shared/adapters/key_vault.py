"""Key Vault (secrets) adapter, plus the static credential used only against the local emulator."""

from __future__ import annotations

import time
from typing import Any

from azure.core.credentials import AccessToken
from azure.core.exceptions import AzureError
from azure.keyvault.secrets import SecretClient

from shared.adapters.azure_errors import translate

DEPENDENCY = "key_vault"


class LocalTokenCredential:
    """A fixed bearer token for the local Key Vault emulator, which accepts any token.

    bootstrap uses it only when KEY_VAULT_URL is a loopback address; it never reaches Azure.
    """

    TOKEN = "local-development-token"  # not a secret: the emulator accepts any bearer token

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken(self.TOKEN, int(time.time()) + 3600)

    def close(self) -> None:
        """Nothing to release; present because azure-core may close credentials."""


class KeyVaultProbe:
    """Health probe: list one secret's properties (needs only the 'list' permission, reads no value)."""

    def __init__(self, client: SecretClient) -> None:
        self._client = client

    def check(self) -> None:
        try:
            pages = self._client.list_properties_of_secrets(max_page_size=1).by_page()
            for _ in next(pages, ()):
                break
        except AzureError as err:
            raise translate(DEPENDENCY, err) from err
