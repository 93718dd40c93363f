"""Several vaults through the registered functions: a secret is named by vault and name (``?vault=``), the
listings, the plan and the timers cover every vault, a queued request and a Key Vault event reach the vault
they name, and a vault the service does not manage is refused (a call) or ignored (an event)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from shared.config import KeyVaultSettings
from shared.domain.audit import Action, Result, chain_of
from shared.domain.identity import encode_principal
from shared.domain.policy import RotationPolicy, SecretKind
from shared.ports import SecretStore
from tests.fakes import InMemorySecretStore, RecordingRotationRequests
from tests.functions.conftest import LOCAL_ENV, Context, FakeContainer, call_http

OPERATOR = encode_principal("oid-operator", ["Secrets.Rotation.Operate"], name="olga")
REQUESTER = encode_principal("oid-req", ["Secrets.Revocation.Request"], name="rita")
READER = encode_principal("oid-auditor", ["Secrets.Audit.Read"], name="ana")
EXECUTOR = encode_principal("oid-exec", ["Secrets.Revocation.Execute"], name="eve")
JSON = {"content-type": "application/json"}
POLICY = RotationPolicy(SecretKind.API_KEY, timedelta(days=30), None, "dispatch-api")
NAME = "dispatch-api-key"
CONTEXT = Context("inv-vaults")


class TwoVaults(FakeContainer):
    """The fake container managing ``fleet`` (designated) and ``fleet-eu``: each vault its own fake."""

    def __init__(self) -> None:
        super().__init__({**LOCAL_ENV, "KEY_VAULT_URLS": "https://fleet-eu.vault.azure.net"})
        self.others: dict[str, InMemorySecretStore] = {}

    def vault_secret_store(self, kv: KeyVaultSettings) -> SecretStore:
        return self.others.setdefault(kv.name, InMemorySecretStore(self.clock))

    @property
    def eu(self) -> InMemorySecretStore:
        self.vault("fleet-eu").store  # noqa: B018 - built on first use, as the real one is
        return self.others["fleet-eu"]

    @property
    def queue(self) -> RecordingRotationRequests:
        assert isinstance(self.rotation_queue, RecordingRotationRequests)
        return self.rotation_queue


@pytest.fixture
def two(use_container: Any) -> TwoVaults:
    container: TwoVaults = use_container(TwoVaults())
    for store in (container.secret_store, container.eu):
        store.set_value(NAME, "v", content_type=None, tags=POLICY.to_tags())
    return container


def http(functions: dict[str, Any], name: str, principal: str, **request: Any) -> tuple[int, dict[str, Any]]:
    request.setdefault("method", "GET")
    if request["method"] != "GET":
        request.setdefault("headers", JSON)
    status, body, _ = call_http(
        functions[name], CONTEXT, principal=principal, url="http://h/api/x", **request
    )
    return status, body


def rotate_in_eu(functions: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    params, route = {"vault": "fleet-eu"}, {"name": NAME}
    return http(
        functions, "secrets_rotate", OPERATOR, method="POST", route=route, params=params, body={"force": True}
    )


def test_a_call_about_one_secret_names_its_vault(functions: dict[str, Any], two: TwoVaults) -> None:
    route = {"name": NAME}
    status, body = http(functions, "secrets_status", OPERATOR, route=route)
    assert status == 400 and body["parameter"] == "vault" and "fleet, fleet-eu" in body["detail"]
    status, body = http(
        functions, "audit_query", READER, params={"secret_name": NAME}
    )  # one name, two vaults
    assert status == 400 and body["parameter"] == "vault" and "fleet, fleet-eu" in body["detail"]
    status, body = http(functions, "secrets_status", OPERATOR, route=route, params={"vault": "fleet-us"})
    assert (
        status == 400
        and body["parameter"] == "vault"
        and "not a vault this service manages" in body["detail"]
    )
    for vault in ("fleet", "fleet-eu"):
        status, body = http(functions, "secrets_status", OPERATOR, route=route, params={"vault": vault})
        assert status == 200 and body["vault"] == vault, body
    for vault in ("FLEET-EU", " fleet", "fleet "):  # exactly as the service names it (the document's enum)
        status, body = http(functions, "secrets_status", OPERATOR, route=route, params={"vault": vault})
        assert (status, body["parameter"]) == (400, "vault"), body


def test_a_rotation_of_one_vaults_secret_rotates_that_one_only(
    functions: dict[str, Any], two: TwoVaults
) -> None:
    status, body = rotate_in_eu(functions)
    assert status == 202, body
    [request] = two.queue.sent
    assert request.vault == "fleet-eu"
    functions["rotate_secret"].get_user_function()(func.QueueMessage(body=request.to_json()), CONTEXT)
    assert len(two.eu.versions_of(NAME)) == 2 and len(two.secret_store.versions_of(NAME)) == 1
    [rotated] = [e for e in two.audit_log.events if e.action == Action.ROTATED and e.result == Result.SUCCESS]
    assert rotated.chain == chain_of("fleet-eu", NAME)


def test_listings_and_the_plan_cover_every_vault(functions: dict[str, Any], two: TwoVaults) -> None:
    two.eu.set_value("eu-only", "v", content_type=None, tags=POLICY.to_tags())
    seen, continuation = [], None
    for _ in range(4):
        params = {"limit": "1", **({"continuation": continuation} if continuation else {})}
        status, page = http(functions, "secrets_list", READER, params=params)
        assert status == 200, page
        seen += [(item["vault"], item["name"]) for item in page["items"]]
        continuation = page["continuation"]
        if continuation is None:
            break
    assert seen == [("fleet", NAME), ("fleet-eu", NAME), ("fleet-eu", "eu-only")]
    status, page = http(functions, "secrets_list", READER, params={"vault": "fleet-eu"})
    assert [i["name"] for i in page["items"]] == [NAME, "eu-only"] and page["continuation"] is None
    status, page = http(functions, "secrets_list", READER, params={"continuation": "fleet-us:x"})
    assert status == 400 and page["parameter"] == "continuation"
    two.clock.advance(timedelta(days=27))
    status, plan = http(functions, "rotation_plan", READER)
    assert sorted((i["vault"], i["name"]) for i in plan["items"]) == [
        ("fleet", NAME), ("fleet-eu", NAME), ("fleet-eu", "eu-only"),
    ]  # fmt: skip


def test_a_revocation_is_found_in_its_vault(functions: dict[str, Any], two: TwoVaults) -> None:
    body = {
        "secret_name": NAME,
        "reason": "COMPROMISE_SUSPECTED",
        "severity": "low",
        "justification": "leaked",
    }
    status, made = http(functions, "revocations_request", REQUESTER, method="POST", body=body)
    assert status == 400 and made["parameter"] == "vault"
    status, made = http(
        functions, "revocations_request", REQUESTER, method="POST", body=body, params={"vault": "fleet-eu"}
    )
    assert status == 201 and made["vault"] == "fleet-eu", made
    assert made["versions"] == [v.version for v in two.eu.list_versions(NAME)]
    status, found = http(functions, "revocations_get", READER, route={"id": made["id"]})
    assert status == 200 and found["id"] == made["id"]
    status, listed = http(functions, "revocations_list", READER)
    assert [r["id"] for r in listed["items"]] == [made["id"]]
    status, listed = http(functions, "revocations_list", READER, params={"vault": "fleet"})
    assert listed["items"] == []
    status, _ = http(functions, "revocations_get", READER, route={"id": "0" * 32})
    assert status == 404
    # Decided and executed by its id alone, in its vault: the other vault's versions are untouched.
    for approver in ("oid-ap1", "oid-ap2"):
        who = encode_principal(approver, ["Secrets.Revocation.Approve"], name=approver)
        status, body = http(functions, "revocations_approve", who, method="POST", route={"id": made["id"]})
        assert status == 200, body
    status, done = http(functions, "revocations_execute", EXECUTOR, method="POST", route={"id": made["id"]})
    assert status == 200 and done["status"] == "executed", done
    assert [v.enabled for v in two.eu.list_versions(NAME)] == [False]
    assert [v.enabled for v in two.secret_store.list_versions(NAME)] == [True]


def test_the_timers_cover_every_vault(functions: dict[str, Any], two: TwoVaults) -> None:
    two.clock.advance(timedelta(days=31))
    functions["rotation_sweep"].get_user_function()(TimerRequest(), CONTEXT)
    assert sorted((r.vault, r.secret_name) for r in two.queue.sent) == [("fleet", NAME), ("fleet-eu", NAME)]
    two.eu.set_value("expiring", "v", content_type=None, tags={}, expires=two.clock.now() + timedelta(days=3))
    functions["expiry_check"].get_user_function()(TimerRequest(), CONTEXT)
    [warned] = [
        e for e in two.audit_log.events if e.secret_name == "expiring" and e.action == Action.EXPIRY_WARNING
    ]
    assert warned.vault == "fleet-eu"


def event(vault: str, version: str) -> func.EventGridEvent:
    data = {
        "Id": f"https://{vault}.vault.azure.net/secrets/{NAME}/{version}", "VaultName": vault,
        "ObjectType": "Secret", "ObjectName": NAME, "Version": version, "NBF": None, "EXP": None,
    }  # fmt: skip
    return func.EventGridEvent(
        id=f"evt-{vault}", data=data, topic=f"/subscriptions/s/providers/Microsoft.KeyVault/vaults/{vault}",
        subject=NAME, event_type="Microsoft.KeyVault.SecretNearExpiry", event_time=datetime.now(UTC),
        data_version="1",
    )  # fmt: skip


def test_an_event_reaches_its_vault_and_one_from_an_unlisted_vault_is_ignored(
    functions: dict[str, Any], two: TwoVaults, caplog: pytest.LogCaptureFixture
) -> None:
    deliver = functions["key_vault_events"].get_user_function()
    version = two.eu.set_value(
        NAME, "v2", content_type=None, tags=POLICY.to_tags(), expires=two.clock.now() + timedelta(days=29)
    ).version
    with caplog.at_level(logging.WARNING):
        deliver(event("fleet-us", version))
    assert two.queue.sent == [] and "not one this service manages" in caplog.text
    deliver(event("fleet-eu", version))
    [request] = two.queue.sent
    assert (request.vault, request.secret_name) == ("fleet-eu", NAME)


def test_a_request_for_a_vault_no_longer_listed_is_dropped_with_a_warning(
    functions: dict[str, Any], two: TwoVaults, caplog: pytest.LogCaptureFixture
) -> None:
    rotate_in_eu(functions)
    [request] = two.queue.sent
    one = FakeContainer()  # the same service, its settings now listing fleet only
    one.key_ring = two.key_ring
    from shared.bootstrap import set_container

    set_container(one)
    with caplog.at_level(logging.WARNING):
        functions["rotate_secret"].get_user_function()(func.QueueMessage(body=request.to_json()), CONTEXT)
    assert "not managed by this service any more" in caplog.text
    assert not [e for e in one.audit_log.events if e.action in (Action.ROTATION_STARTED, Action.ROTATED)]


def test_one_vault_takes_its_own_name_and_no_other(functions: dict[str, Any], use_container: Any) -> None:
    one: FakeContainer = use_container(FakeContainer())
    one.secret_store.set_value(NAME, "v", content_type=None, tags=POLICY.to_tags())
    status, body = http(
        functions, "secrets_status", OPERATOR, route={"name": NAME}, params={"vault": "fleet"}
    )
    assert status == 200 and body["vault"] == "fleet"
    status, body = http(functions, "secrets_status", OPERATOR, route={"name": NAME}, params={"vault": "eu"})
    assert status == 400 and body["parameter"] == "vault"
    status, body = http(functions, "audit_query", READER, params={"vault": "fleet", "secret_name": NAME})
    assert status == 200
    status, body = http(functions, "audit_verify", READER, params={"vault": "fleet"})
    assert status == 400 and body["parameter"] == "vault"  # the whole trail is every vault's
