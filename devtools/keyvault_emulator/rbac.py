"""Denied operations (``--deny``): the RBAC data action each operation needs, and the service's 403.

A vault with Azure RBAC answers an operation the caller has no role for with 403 ``Forbidden`` and the
inner error code ``ForbiddenByRbac``, naming the data action. Other 403s (a disabled secret: inner code
``SecretDisabled``; purge protection) carry other inner codes or none, so callers can tell them apart.
"""

from __future__ import annotations

from collections.abc import Iterable

from devtools.keyvault_emulator.errors import ServiceError

# A made-up tenant: the SDK passes it to the credential as ``tenant_id``; any token is accepted anyway.
EMULATOR_TENANT_ID = "6c1f0a5e-8d0b-4b7e-9a5e-000000e8a1a7"
VAULT_NAME = "emulator"
_SECRETS = "Microsoft.KeyVault/vaults/secrets"

# Operation names as counted in /_emulator/stats -> the data action Key Vault's RBAC checks.
ACTIONS: dict[str, str] = {
    "set_secret": f"{_SECRETS}/setSecret/action",
    "get_secret": f"{_SECRETS}/getSecret/action",
    "list_secrets": f"{_SECRETS}/readMetadata/action",
    "list_versions": f"{_SECRETS}/readMetadata/action",
    "update_secret": f"{_SECRETS}/update/action",
    "delete_secret": f"{_SECRETS}/delete",
    "get_deleted_secret": f"{_SECRETS}/readMetadata/action",
    "list_deleted_secrets": f"{_SECRETS}/readMetadata/action",
    "recover_deleted_secret": f"{_SECRETS}/recover/action",
    "purge_deleted_secret": f"{_SECRETS}/purge/action",
    "backup_secret": f"{_SECRETS}/backup/action",
    "restore_secret": f"{_SECRETS}/restore/action",
}
OPERATIONS = frozenset(ACTIONS)
_RESOURCE = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/emulator"
    f"/providers/microsoft.keyvault/vaults/{VAULT_NAME}"
)
_CALLER = (
    "appid=00000000-0000-0000-0000-000000000000;oid=00000000-0000-0000-0000-000000000000;"
    f"iss=https://sts.windows.net/{EMULATOR_TENANT_ID}/"
)


def parse_operations(spec: str | Iterable[str]) -> frozenset[str]:
    """Operation names from ``"a,b"`` or an iterable of names (each may itself be comma-separated).

    Raises ValueError naming any unknown operation, so a typo cannot silently deny nothing.
    """
    parts = [spec] if isinstance(spec, str) else list(spec)
    names = {name.strip() for part in parts for name in part.split(",") if name.strip()}
    unknown = sorted(names - OPERATIONS)
    if unknown:
        raise ValueError(
            f"unknown operation(s): {', '.join(unknown)}; known: {', '.join(sorted(OPERATIONS))}"
        )
    return frozenset(names)


def forbidden_by_rbac(operation: str, name: str | None = None) -> ServiceError:
    """The 403 Key Vault answers when no role assignment grants ``operation``'s data action."""
    resource = f"{_RESOURCE}/secrets/{name.lower()}" if name else _RESOURCE
    message = "\r\n".join(
        [
            "Caller is not authorized to perform action on resource.",
            "If role assignments, deny assignments or role definitions were changed recently, please "
            "observe propagation time.",
            f"Caller: {_CALLER}",
            f"Action: '{ACTIONS[operation]}'",
            f"Resource: '{resource}'",
            "Assignment: (not found)",
            "DenyAssignmentId: null",
            "DecisionReason: 'DeniedWithNoValidRBAC' ",
            f"Vault: {VAULT_NAME};location=local",
            "",
        ]
    )
    return ServiceError(403, "Forbidden", message, inner_code="ForbiddenByRbac")
