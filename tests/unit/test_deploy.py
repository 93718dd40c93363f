"""deploy/: the Entra app registration's roles made from the one definition of the roles, and the azd hooks'
calls of the Azure CLI, against a fake ``az`` (and ``azd``) on PATH that keeps what a tenant would."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from deploy import entra, hooks
from shared.domain.identity import ROLE_GRANTS, Role

FAKE_AZ = """#!{python}
import json, os, pathlib, re, sys
state_file = pathlib.Path(os.environ["FAKE_AZ_STATE"])
empty = {{"apps": {{}}, "sps": {{}}, "assigned": []}}
state = json.loads(state_file.read_text()) if state_file.exists() else empty
args = sys.argv[1:]
assert args[-2:] == ["--output", "json"], args
args = args[:-2]
with open(os.environ["FAKE_AZ_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
def value(flag):
    return args[args.index(flag) + 1]
def answer(data):
    print(json.dumps(data))
if args[:3] == ["ad", "app", "list"]:
    answer([app for app, name in state["apps"].items() if name == value("--display-name")])
elif args[:3] == ["ad", "app", "create"]:
    app = f"client-{{len(state['apps']) + 1}}"
    state["apps"][app] = value("--display-name")
    answer({{"appId": app}})
elif args[:3] == ["ad", "app", "update"]:
    state["roles"] = json.loads(value("--app-roles"))
elif args[:3] == ["ad", "sp", "list"]:
    app = re.search(r"appId eq '(.+)'", value("--filter")).group(1)
    answer([state["sps"][app]] if app in state["sps"] else [])
elif args[:3] == ["ad", "sp", "create"]:
    state["sps"][value("--id")] = "sp-" + value("--id")
elif args[:3] == ["ad", "sp", "show"]:
    answer(state["sps"][value("--id")])
elif args[:2] == ["rest", "--method"] and value("--method") == "GET":
    who = re.search(r"principalId=='(.+)'", value("--query")).group(1)
    answer([a["appRoleId"] for a in state["assigned"] if a["principalId"] == who])
elif args[:2] == ["rest", "--method"] and value("--method") == "POST":
    state["assigned"].append(json.loads(value("--body")))
elif args[:2] == ["rest", "--method"] and value("--method") == "PATCH":
    uri = value("--uri")
    app = re.fullmatch(r"https://graph.microsoft.com/v1.0/applications\\(appId='(.+)'\\)", uri).group(1)
    api = state.setdefault("api", {{}}).setdefault(app, {{}})
    update = json.loads(value("--body"))["api"]
    scopes = {{s["id"] for s in update.get("oauth2PermissionScopes", api.get("oauth2PermissionScopes", []))}}
    for pre in update.get("preAuthorizedApplications", []):
        if not set(pre["delegatedPermissionIds"]) <= scopes:
            sys.exit("fake az: Graph refuses a pre-authorization of a scope the application lacks")
    api.update(update)
elif args[:3] == ["ad", "signed-in-user", "show"]:
    answer("user-1")
elif args[:3] == ["deployment", "group", "create"]:
    answer({{"properties": {{"provisioningState": "Succeeded"}}}})
else:
    sys.exit(f"fake az: no answer for {{args}}")
state_file.write_text(json.dumps(state))
"""

FAKE_AZD = """#!{python}
import json, os, sys
with open(os.environ["FAKE_AZD_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
"""


class Tenant:
    """The fake CLIs' state and logs."""

    def __init__(self, root: Path) -> None:
        self.state, self.log, self.azd_log = root / "state.json", root / "az.log", root / "azd.log"

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def azd_calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.azd_log.read_text().splitlines()]

    def data(self) -> dict[str, object]:
        return dict(json.loads(self.state.read_text()))


@pytest.fixture
def tenant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tenant:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("az", FAKE_AZ), ("azd", FAKE_AZD)):
        script = bin_dir / name
        script.write_text(text.format(python=sys.executable))
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    found = Tenant(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_AZ_STATE", str(found.state))
    monkeypatch.setenv("FAKE_AZ_LOG", str(found.log))
    monkeypatch.setenv("FAKE_AZD_LOG", str(found.azd_log))
    return found


def test_every_role_is_an_app_role_with_a_stable_id() -> None:
    assert set(ROLE_GRANTS) == set(Role)
    roles = {r["value"]: r for r in entra.app_roles()}
    assert set(roles) == {role.value for role in Role}
    assert len({r["id"] for r in roles.values()}) == len(Role)
    # The ids are a stored format: a change orphans every assignment in every tenant.
    assert (
        roles["Secrets.Audit.Read"]["id"]
        == entra.role_id(Role.AUDIT_READ)
        == "9c6c61a1-8889-579e-b6d9-5f10b20ee980"
    )
    # Decisions by people stay with people: an application cannot hold them.
    for value in ("Secrets.Revocation.Approve", "Secrets.BreakGlass", "Secrets.Audit.Incident"):
        assert roles[value]["allowedMemberTypes"] == ["User"]
    assert roles["Secrets.Revocation.Request"]["allowedMemberTypes"] == ["User", "Application"]


def test_the_registration_is_made_once_with_its_roles(tenant: Tenant) -> None:
    first = entra.ensure_registration("secret-lifecycle-dev")
    again = entra.ensure_registration("secret-lifecycle-dev")
    assert first == again == "client-1"
    creates = [c for c in tenant.calls() if c[2] == "create"]
    assert [c[:3] for c in creates] == [["ad", "app", "create"], ["ad", "sp", "create"]]
    update = next(c for c in tenant.calls() if c[:3] == ["ad", "app", "update"])
    assert update[update.index("--identifier-uris") + 1] == "api://client-1"
    assert tenant.data()["roles"] == entra.app_roles()


def test_an_operator_signed_in_with_az_login_gets_a_token_for_the_api(tenant: Tenant) -> None:
    client = entra.ensure_registration("secret-lifecycle-dev")
    entra.ensure_registration("secret-lifecycle-dev")
    api = tenant.data()["api"][client]  # type: ignore[index]
    assert api["oauth2PermissionScopes"] == [entra.api_scope()]
    assert api["oauth2PermissionScopes"][0]["id"] == "7b604b75-e167-54d8-8a65-e46ac604d032"  # stored format
    assert api["preAuthorizedApplications"] == [
        {"appId": "04b07795-8ddb-461a-bbee-02f9e1bf7b46", "delegatedPermissionIds": [entra.scope_id()]}
    ]


def test_a_role_is_granted_once(tenant: Tenant) -> None:
    client = entra.ensure_registration("secret-lifecycle-dev")
    assert entra.grant(client, Role.REVOCATION_REQUEST, "mi-dispatch") is True
    assert entra.grant(client, Role.REVOCATION_REQUEST, "mi-dispatch") is False
    assert tenant.data()["assigned"] == [
        {
            "principalId": "mi-dispatch",
            "resourceId": "sp-client-1",
            "appRoleId": entra.role_id(Role.REVOCATION_REQUEST),
        }
    ]


def test_preprovision_sets_the_base_name_and_the_client_id(tenant: Tenant) -> None:
    hooks.preprovision({"AZURE_ENV_NAME": "Fleet-Prod_EU"})
    assert tenant.azd_calls() == [["env", "set", "SECRETS_BASE_NAME", "fleetprodeu"],
                                  ["env", "set", "AUTH_CLIENT_ID", "client-1"]]  # fmt: skip


def test_postdeploy_subscribes_the_events_and_grants_the_deployer(tenant: Tenant) -> None:
    client = entra.ensure_registration("secret-lifecycle-dev")
    env = {"AZURE_RESOURCE_GROUP": "rg-fleet", "SECRETS_BASE_NAME": "dev", "AUTH_CLIENT_ID": client}
    hooks.postdeploy(env)
    deployment = next(c for c in tenant.calls() if c[:3] == ["deployment", "group", "create"])
    assert deployment[deployment.index("--resource-group") + 1] == "rg-fleet"
    assert deployment[deployment.index("--template-file") + 1].endswith("infra/events.bicep")
    assert "baseName=dev" in deployment
    granted = {a["appRoleId"] for a in tenant.data()["assigned"] if a["principalId"] == "user-1"}  # type: ignore[attr-defined]
    assert granted == {entra.role_id(Role.AUDIT_READ), entra.role_id(Role.ROTATION_OPERATE)}


def test_base_names_and_deployer_roles_are_checked() -> None:
    assert hooks.base_name("dev") == "dev"
    assert hooks.base_name("a-very-long-environment") == "averylongen"
    with pytest.raises(ValueError, match="3 letters"):
        hooks.base_name("a-b")
    assert hooks.deployer_roles({"SECRETS_DEPLOYER_ROLES": ""}) == []
    assert hooks.deployer_roles({"SECRETS_DEPLOYER_ROLES": "Secrets.Audit.Read"}) == [Role.AUDIT_READ]
    with pytest.raises(ValueError, match="SECRETS_DEPLOYER_ROLES"):
        hooks.deployer_roles({"SECRETS_DEPLOYER_ROLES": "Secrets.Everything"})


def test_a_missing_cli_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(entra.AzError, match="not installed"):
        entra.az("account", "show")
    assert hooks.main(["postdeploy"]) == 1


def test_the_hooks_need_only_the_standard_library() -> None:
    """azd runs them with the deployer's Python, without the app's requirements (-S: no site-packages)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-S", "-c", "import deploy.hooks, deploy.entra"],
        cwd=root, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
