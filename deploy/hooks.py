"""The azd hooks of azure.yaml (run on the deployer's machine, with azd's environment in os.environ).

    python -m deploy.hooks preprovision   # the base name, the Entra app registration and its roles
    python -m deploy.hooks postdeploy     # Key Vault's events to the deployed function; roles to the deployer

``preprovision`` derives ``SECRETS_BASE_NAME`` from the azd environment's name and ensures the app
registration (deploy/entra.py), setting ``AUTH_CLIENT_ID``: infra/main.parameters.json passes both to
main.bicep, which provisions App Service Authentication with it. ``postdeploy`` deploys infra/events.bicep
(its subscription's endpoint is the deployed function, so it runs after the code is deployed) and grants the
deploying user the roles in ``SECRETS_DEPLOYER_ROLES`` (default: read the trail, operate rotation).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from deploy.entra import AzError, az, ensure_registration, grant
from shared.domain.identity import Role

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DEPLOYER_ROLES = (Role.AUDIT_READ, Role.ROTATION_OPERATE)


def base_name(environment: str) -> str:
    """main.bicep's baseName (3-11 lowercase letters or digits) from an azd environment's name."""
    letters = re.sub(r"[^a-z0-9]", "", environment.lower())[:11]
    if len(letters) < 3:
        raise ValueError(f"azd environment name {environment!r} needs 3 letters or digits for the base name")
    return letters


def azd_env_set(name: str, value: str) -> None:
    executable = shutil.which("azd")
    if executable is None:
        raise AzError("the Azure Developer CLI (azd) is not installed")
    subprocess.run([executable, "env", "set", name, value], check=True)  # noqa: S603 - an argument list


def preprovision(env: Mapping[str, str]) -> None:
    name = base_name(env["AZURE_ENV_NAME"])
    azd_env_set("SECRETS_BASE_NAME", name)
    client_id = ensure_registration(f"secret-lifecycle-{name}")
    azd_env_set("AUTH_CLIENT_ID", client_id)
    print(f"app registration secret-lifecycle-{name}: client id {client_id}, roles {', '.join(Role)}")


def deployer_roles(env: Mapping[str, str]) -> list[Role]:
    """SECRETS_DEPLOYER_ROLES (comma-separated role names; empty: none), or the defaults."""
    raw = env.get("SECRETS_DEPLOYER_ROLES")
    if raw is None:
        return list(DEFAULT_DEPLOYER_ROLES)
    try:
        return [Role(part.strip()) for part in raw.split(",") if part.strip()]
    except ValueError as err:
        raise ValueError(f"SECRETS_DEPLOYER_ROLES: {err}; roles are {', '.join(Role)}") from err


def postdeploy(env: Mapping[str, str]) -> None:
    group, name = env["AZURE_RESOURCE_GROUP"], env["SECRETS_BASE_NAME"]
    parameters = [f"baseName={name}"]
    if env.get("EXISTING_KEY_VAULT_NAME"):
        parameters.append(f"existingKeyVaultName={env['EXISTING_KEY_VAULT_NAME']}")
    az("deployment", "group", "create", "--resource-group", group, "--name", "keyvault-events",
       "--template-file", str(REPO / "infra" / "events.bicep"), "--parameters", *parameters)  # fmt: skip
    print("Key Vault's secret events now reach the key_vault_events function")
    user = az("ad", "signed-in-user", "show", "--query", "id")
    for role in deployer_roles(env):
        granted = grant(env["AUTH_CLIENT_ID"], role, str(user))
        print(f"{role.value} {'granted to' if granted else 'already held by'} you ({user})")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    hooks = {"preprovision": preprovision, "postdeploy": postdeploy}
    if len(args) != 1 or args[0] not in hooks:
        print(f"usage: python -m deploy.hooks {{{','.join(hooks)}}}", file=sys.stderr)
        return 2
    try:
        hooks[args[0]](os.environ)
    except KeyError as err:
        print(f"{args[0]}: the azd environment has no {err.args[0]} (run it through azd)", file=sys.stderr)
        return 1
    except (AzError, ValueError, subprocess.CalledProcessError) as err:
        print(f"{args[0]}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
