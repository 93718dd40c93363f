"""The Entra app registration of the service's HTTP API, through the Azure CLI (``az``): its app roles made
from ``shared.domain.identity.ROLE_GRANTS`` (the roles are defined once), and role grants to a person or an
application (a dispatch app's managed identity).

    python -m deploy.entra ensure --name NAME          # create or update; prints the client id
    python -m deploy.entra grant --client-id ID --role Secrets.Audit.Read --principal OBJECT_ID
    python -m deploy.entra roles                       # the appRoles manifest, as JSON

App role ids are derived from the role's name (UUID 5), so every run, and every environment, gives a role the
same id: updating the registration never orphans an assignment. The registration also exposes one delegated
scope (``user_impersonation``) pre-authorized for the Azure CLI, so that an operator signed in with
``az login`` gets a token for the API (the operator CLI, ``secret-lifecycle --client-id``) without a consent
prompt the CLI cannot show; the token's ``roles`` are still only those granted. Raises AzError when ``az``
fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Sequence
from typing import Any

from shared.domain.identity import ROLE_GRANTS, Role

#: The namespace of the roles' ids (a fixed, random UUID: changing it would orphan every assignment).
ROLE_NAMESPACE = uuid.UUID("0b5e7c0e-6f1f-4a4e-9d43-2f8f6a7d1c59")
GRAPH = "https://graph.microsoft.com/v1.0"
#: The Azure CLI's well-known client id: the public client whose tokens the operator CLI uses.
AZURE_CLI = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
SCOPE = "user_impersonation"


class AzError(RuntimeError):
    """``az`` failed (its message), or is not installed."""


def role_id(role: Role) -> str:
    return str(uuid.uuid5(ROLE_NAMESPACE, role.value))


def app_roles() -> list[dict[str, Any]]:
    """The registration's ``appRoles``: one per role, enabled, for people and (where the role allows)
    applications."""
    return [
        {
            "id": role_id(role),
            "value": role.value,
            "displayName": role.value,
            "description": grant.description,
            "allowedMemberTypes": ["User", "Application"] if grant.applications else ["User"],
            "isEnabled": True,
        }
        for role, grant in ROLE_GRANTS.items()
    ]


def scope_id() -> str:
    return str(uuid.uuid5(ROLE_NAMESPACE, f"scope:{SCOPE}"))


def api_scope() -> dict[str, Any]:
    """The delegated scope a signed-in operator's token is issued under (its roles say what it may do)."""
    text = "Call the secret lifecycle service's API as the signed-in user, with the roles granted to them."
    return {
        "id": scope_id(),
        "value": SCOPE,
        "type": "User",
        "isEnabled": True,
        "adminConsentDisplayName": "Use the secret lifecycle API",
        "adminConsentDescription": text,
        "userConsentDisplayName": "Use the secret lifecycle API",
        "userConsentDescription": text,
    }


def az(*args: str) -> Any:
    """Run ``az`` with ``args`` and JSON output; its parsed answer (None for none). Raises AzError."""
    executable = shutil.which("az")
    if executable is None:
        raise AzError("the Azure CLI (az) is not installed: https://aka.ms/azure-cli")
    command = [executable, *args, "--output", "json"]  # an argument list, no shell
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise AzError(f"az {' '.join(args[:3])}: {done.stderr.strip()[-500:] or f'exit {done.returncode}'}")
    return json.loads(done.stdout) if done.stdout.strip() else None


def ensure_registration(name: str) -> str:
    """The client id of the app registration named ``name``, created when missing; its roles and its
    identifier URI (``api://<client id>``) set, and its service principal created. Idempotent."""
    found = az("ad", "app", "list", "--display-name", name, "--query", "[].appId")
    client_id = found[0] if found else az("ad", "app", "create", "--display-name", name)["appId"]
    az("ad", "app", "update", "--id", client_id, "--identifier-uris", f"api://{client_id}",
       "--app-roles", json.dumps(app_roles()))  # fmt: skip
    if not az("ad", "sp", "list", "--filter", f"appId eq '{client_id}'", "--query", "[].id"):
        az("ad", "sp", "create", "--id", client_id)
    # The scope first: Graph refuses a pre-authorization naming a scope the application does not have yet.
    application = f"{GRAPH}/applications(appId='{client_id}')"
    preauthorized = [{"appId": AZURE_CLI, "delegatedPermissionIds": [scope_id()]}]
    for api in ({"oauth2PermissionScopes": [api_scope()]}, {"preAuthorizedApplications": preauthorized}):
        az("rest", "--method", "PATCH", "--uri", application, "--headers", "Content-Type=application/json",
           "--body", json.dumps({"api": api}))  # fmt: skip
    return str(client_id)


def grant(client_id: str, role: Role, principal: str) -> bool:
    """Grant ``role`` of the registration ``client_id`` to ``principal`` (the object id of a user, or of an
    application's service principal, e.g. a managed identity). False when it held it already."""
    sp = az("ad", "sp", "show", "--id", client_id, "--query", "id")
    held = az("rest", "--method", "GET", "--uri", f"{GRAPH}/servicePrincipals/{sp}/appRoleAssignedTo",
              "--query", f"value[?principalId=='{principal}'].appRoleId")  # fmt: skip
    if role_id(role) in (held or []):
        return False
    body = {"principalId": principal, "resourceId": sp, "appRoleId": role_id(role)}
    az("rest", "--method", "POST", "--uri", f"{GRAPH}/servicePrincipals/{sp}/appRoleAssignedTo",
       "--headers", "Content-Type=application/json", "--body", json.dumps(body))  # fmt: skip
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.entra", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ensure = commands.add_parser("ensure", help="create or update the app registration; print its client id")
    ensure.add_argument("--name", required=True)
    give = commands.add_parser("grant", help="grant a role to a person or an application")
    give.add_argument("--client-id", required=True, help="the app registration's client id (AUTH_CLIENT_ID)")
    give.add_argument("--role", required=True, choices=[r.value for r in Role])
    give.add_argument("--principal", required=True, help="object id of the user or service principal")
    commands.add_parser("roles", help="print the appRoles manifest")
    args = parser.parse_args(argv)
    try:
        if args.command == "ensure":
            print(ensure_registration(args.name))
        elif args.command == "grant":
            granted = grant(args.client_id, Role(args.role), args.principal)
            print(f"{args.role} {'granted to' if granted else 'already held by'} {args.principal}")
        else:
            print(json.dumps(app_roles(), indent=2))
    except AzError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
