"""The catalog use cases over in-memory fakes: list (paged, one progress read), onboard, policy, manual
rotation requests, status and the rotation plan."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import pytest

from shared.domain.audit import Action, Actor, ActorType, AuditEvent, Result
from shared.domain.errors import Conflict, DependencyUnavailable, NotFound, OutcomeNotRecorded
from shared.domain.policy import RotationPolicy, SecretKind
from shared.domain.rotation import RotationReason
from shared.domain.secrets import SecretVersion
from shared.domain.state import Versioned
from shared.services import catalog
from shared.services.audit import AuditUnavailable
from shared.services.catalog import InvalidPolicy, PolicyConflict, PolicyInput
from shared.services.rotation import (
    PARTITION,
    ROTATION_ID_TAG,
    Busy,
    NotManaged,
    made_by_service,
)
from tests.fakes import FixedClock, InMemorySecretStore, InMemoryStateStore
from tests.world import World

POLICY = RotationPolicy(SecretKind.API_KEY, timedelta(days=30), None, "dispatch-api")
OPERATOR = Actor(id="oid-operator", type=ActorType.USER)


class CountingStates(InMemoryStateStore):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def list(self, partition: str, *, start: str = "", stop: str | None = None) -> dict[str, Versioned]:
        self.calls.append(f"list:{partition}")
        return super().list(partition, start=start, stop=stop)

    def get(self, partition: str, key: str) -> Versioned | None:
        self.calls.append(f"get:{partition}")
        return super().get(partition, key)


class CountingStore(InMemorySecretStore):
    def __init__(self, clock: FixedClock) -> None:
        super().__init__(clock)
        self.reads: list[str] = []

    def get_properties(self, name: str, version: str | None = None) -> SecretVersion:
        self.reads.append(name)
        return super().get_properties(name, version)


def success_of(action: Action) -> Callable[[AuditEvent], bool]:
    return lambda event: event.action == action and event.result == Result.SUCCESS


@pytest.fixture
def world() -> World:
    return World(store=CountingStore, rows=CountingStates)


def seed(
    world: World, name: str, tags: Mapping[str, str] | None = None, age_days: int = 1, **kw: Any
) -> None:
    world.secret(name, "seed-value", tags=tags, age_days=age_days, **kw)


def ask_rotation(world: World, name: str, force: bool = False) -> catalog.RotationTicket:
    """A manual rotation as the operator asks for it over HTTP."""
    return world.request_rotation(name, force=force, actor=OPERATOR, correlation_id="http-7")


def fields(**changes: Any) -> PolicyInput:
    return PolicyInput(**{"kind": "api-key", "rotation_interval_days": 30, **changes})


# -- list ------------------------------------------------------------------------------------------------


def test_list_pages_managed_secrets_by_name_reading_only_the_page(world: World) -> None:
    for name in ("charlie", "Alpha", "bravo", "delta", "echo"):
        seed(world, name)
    seed(world, "legacy", tags={"owner": "ops"})  # unmanaged
    seed(world, "audit-hmac-key")  # reserved, whatever its tags
    seed(world, "broken", tags={**POLICY.to_tags(), "rotation-interval-days": "soon"})
    first = world.list_managed(limit=3)
    assert [i["name"] for i in first["items"]] == ["Alpha", "bravo", "broken"]
    assert first["continuation"] == "broken"
    assert sorted(world.store.reads) == ["Alpha", "bravo", "broken"]
    assert world.states.calls == [f"list:{PARTITION}"]
    broken = first["items"][2]
    assert broken["policy"] is None
    assert broken["violation"] == {
        "tag": "rotation-interval-days",
        "problem": "'soon' is not a whole number of days",
    }
    second = world.list_managed(limit=3, after=first["continuation"])
    assert [i["name"] for i in second["items"]] == ["charlie", "delta", "echo"]
    assert second["continuation"] is None
    alpha = first["items"][0]
    assert alpha["version"] == world.store.versions_of("Alpha")[0]
    assert alpha["policy"] == catalog.policy_dict(POLICY) and alpha["policy"]["rotation_interval_days"] == 30
    assert alpha["next_due"] == "2026-12-28T10:00:00.000000Z" and alpha["due_now"] is False
    assert alpha["state"] == {"status": "idle", "last_error": None}


def test_list_shows_a_rotation_in_progress_and_the_last_error(world: World) -> None:
    seed(world, "alpha")
    world.states.create(
        PARTITION, "alpha",
        {"rotation_id": "a" * 32, "step": "promoting", "holder": "h", "attempt": 2,
         "lease_until": "2026-11-29T10:10:00.000000Z", "last_error": "DependencyUnavailable"},
    )  # fmt: skip
    [item] = world.list_managed()["items"]
    assert item["state"] == {
        "status": "promoting", "last_error": "DependencyUnavailable", "rotation_id": "a" * 32, "attempt": 2,
        "lease_until": "2026-11-29T10:10:00.000000Z", "lease_live": True,
    }  # fmt: skip


# -- onboard ---------------------------------------------------------------------------------------------


def onboard(world: World, name: str = "new-api-key", policy: RotationPolicy = POLICY) -> SecretVersion:
    return world.onboard(name, policy, actor=OPERATOR, correlation_id="http-1")


def test_onboarding_creates_one_version_with_the_policy_and_the_service_tags(world: World) -> None:
    made = onboard(world)
    assert world.store.versions_of("new-api-key") == [made.version]
    assert RotationPolicy.from_tags(made.tags) == POLICY and made_by_service(made)
    assert made.expires == world.clock.now() + timedelta(days=60)
    value = world.store.get_value("new-api-key").value
    assert value.startswith("sk_")
    assert [(e.result, e.version, e.actor.id) for e in world.records(Action.SECRET_ONBOARDED)] == [
        (Result.INTENT, None, "oid-operator"),
        (Result.SUCCESS, made.version, "oid-operator"),
    ]
    assert value not in repr(world.log.events) + repr(made)
    stored = world.states.get(PARTITION, "new-api-key")
    assert stored is not None and stored.state["step"] == "idle"


def test_onboarding_refuses_an_existing_reserved_or_recoverable_name(world: World) -> None:
    seed(world, "taken")
    with pytest.raises(Conflict, match="exists"):
        onboard(world, "taken")
    with pytest.raises(Conflict, match="own secret"):
        onboard(world, "audit-digest-anchor")

    class Recoverable(CountingStore):
        def set_value(self, name: str, value: str, **kwargs: Any) -> SecretVersion:
            raise Conflict("key_vault: HTTP 409, ObjectIsDeletedButRecoverable")

    world.store = Recoverable(world.clock)
    with pytest.raises(Conflict, match="recoverable") as refused:
        onboard(world, "deleted-one")
    assert "recover it" in str(refused.value) and "purge it" not in str(refused.value)  # never offered
    assert [e.result for e in world.records(Action.SECRET_ONBOARDED)] == [Result.INTENT, Result.FAILURE]
    assert world.states.get(PARTITION, "deleted-one").state["step"] == "idle"  # type: ignore[union-attr]


def test_onboarding_without_an_intent_on_record_writes_nothing(world: World) -> None:
    world.log.available = False
    with pytest.raises(AuditUnavailable):
        onboard(world)
    assert "new-api-key" not in world.store.secrets


def test_an_onboarding_whose_success_record_fails_says_the_secret_was_created(world: World) -> None:
    world.log.fails = success_of(Action.SECRET_ONBOARDED)
    with pytest.raises(OutcomeNotRecorded) as raised:
        onboard(world)
    assert not isinstance(raised.value, DependencyUnavailable)  # never "nothing was changed"
    [made] = world.store.versions_of("new-api-key")
    assert raised.value.changed == {"version": made}
    assert "new-api-key was created" in raised.value.change and made in raised.value.change
    assert raised.value.reason == "audit_store unavailable"
    stored = world.states.get(PARTITION, "new-api-key")
    assert stored is not None and stored.state["step"] == "idle"  # the lease is released


def test_onboarding_waits_for_a_write_in_progress(world: World) -> None:
    world.states.create(
        PARTITION, "new-api-key",
        {"rotation_id": "b" * 32, "step": "onboarding", "holder": "h", "attempt": 1,
         "lease_until": "2026-11-29T10:10:00.000000Z"},
    )  # fmt: skip
    with pytest.raises(Busy):
        onboard(world)
    assert "new-api-key" not in world.store.secrets


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"kind": "ssh-key"}, "kind"),
        ({"rotation_interval_days": 0}, "rotation_interval_days"),
        ({"rotation_interval_days": 731}, "rotation_interval_days"),
        ({"validity_days": 40}, "validity_days"),  # < interval + 30
        ({"rotator": "ftp"}, "rotator"),
        ({"rotator": "webhook"}, "rotation_target"),
        ({"rotation_target": "https://x.example"}, "rotation_target"),
        ({"rotation_grace_hours": 721}, "rotation_grace_hours"),
        ({"expiry_warning_days": (0,)}, "expiry_warning_days"),
        ({"kind": None}, "kind"),
    ],
)
def test_an_invalid_policy_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidPolicy) as err:
        catalog.build_policy(fields(**changes))
    assert err.value.field == field


@pytest.mark.parametrize(
    ("rotator", "target"),
    [("postgres-single-user", None), ("postgres-alternating", "pg-admin")],
)
def test_a_postgres_secret_is_not_onboarded_with_a_made_up_value(rotator: str, target: str | None) -> None:
    chosen = fields(kind="database-password", rotator=rotator, rotation_target=target)
    assert catalog.build_policy(chosen).rotator.value == rotator  # fine as a policy (PUT)
    with pytest.raises(InvalidPolicy, match="connection document") as err:
        catalog.build_policy(chosen, onboarding=True)
    assert err.value.field == "rotator"


def test_a_full_policy_round_trips() -> None:
    policy = catalog.build_policy(
        fields(validity_days=90, owner="ops", rotator="webhook", rotation_target="https://hook.example/r",
               rotation_grace_hours=2, expiry_warning_days=(14, 3))
    )  # fmt: skip
    assert catalog.policy_dict(policy) == {
        "kind": "api-key", "rotation_interval_days": 30, "validity_days": 90, "owner": "ops",
        "rotator": "webhook", "rotation_target": "https://hook.example/r", "rotation_grace_hours": 2,
        "expiry_warning_days": [14, 3],
    }  # fmt: skip


# -- policy ----------------------------------------------------------------------------------------------


def apply(world: World, name: str, policy: PolicyInput) -> RotationPolicy:
    return world.apply_policy(name, policy, actor=OPERATOR, correlation_id="http-2")


def test_a_policy_replaces_the_policy_tags_of_the_current_version_and_keeps_the_others(world: World) -> None:
    seed(world, "alpha", tags={**POLICY.to_tags(), "validity-days": "90", "cost-center": "42"})
    [version] = world.store.versions_of("alpha")
    applied = apply(world, "alpha", fields(kind=None, rotation_interval_days=7))
    assert world.store.versions_of("alpha") == [version]  # no new version
    tags = world.store.get_properties("alpha").tags
    assert tags["cost-center"] == "42" and "validity-days" not in tags and "owner" not in tags
    assert RotationPolicy.from_tags(tags) == applied == RotationPolicy(SecretKind.API_KEY, timedelta(days=7))
    assert [e.result for e in world.records(Action.POLICY_CHANGED)] == [Result.INTENT, Result.SUCCESS]


def test_a_policy_whose_success_record_fails_says_it_was_applied(world: World) -> None:
    seed(world, "alpha")
    [version] = world.store.versions_of("alpha")
    world.log.fails = success_of(Action.POLICY_CHANGED)
    with pytest.raises(OutcomeNotRecorded) as raised:
        apply(world, "alpha", fields(kind=None, rotation_interval_days=7))
    assert not isinstance(raised.value, DependencyUnavailable)
    assert raised.value.changed == {"version": version} and "policy of secret alpha" in raised.value.change
    assert world.store.get_properties("alpha").tags["rotation-interval-days"] == "7"
    assert world.states.get(PARTITION, "alpha").state["step"] == "idle"  # type: ignore[union-attr]


def test_an_unmanaged_secret_becomes_managed_and_needs_a_kind(world: World) -> None:
    seed(world, "legacy", tags={"owner": "ops"})
    with pytest.raises(InvalidPolicy) as err:
        apply(world, "legacy", fields(kind=None))
    assert err.value.field == "kind"
    apply(world, "legacy", fields(kind="database-password"))
    assert (
        RotationPolicy.from_tags(world.store.get_properties("legacy").tags).kind
        == SecretKind.DATABASE_PASSWORD
    )


def test_a_policy_is_refused_for_unknown_reserved_and_certificate_secrets(world: World) -> None:
    with pytest.raises(NotFound):
        apply(world, "nothing", fields())
    seed(world, "audit-hmac-key", tags={})
    with pytest.raises(Conflict):
        apply(world, "audit-hmac-key", fields())
    world.store.add_certificate("tls")
    with pytest.raises(Conflict, match="certificate"):
        apply(world, "tls", fields())
    assert world.records(Action.POLICY_CHANGED) == []


# -- rotate ----------------------------------------------------------------------------------------------


def test_a_manual_rotation_is_queued_and_the_queued_request_rotates_once(world: World) -> None:
    seed(world, "alpha")
    ticket = ask_rotation(world, "alpha", force=True)
    assert ticket.status == "queued"
    [request] = world.requests.sent
    assert (request.reason, request.force, request.rotation_id, request.correlation_id) == (
        RotationReason.MANUAL, True, ticket.rotation_id, "http-7",
    )  # fmt: skip
    assert [e.result for e in world.records(Action.ROTATION_REQUESTED)] == [Result.INTENT, Result.SUCCESS]
    for _ in range(3):  # delivered, then redelivered
        world.rotate_requested(request)
    assert len(world.store.versions_of("alpha")) == 2
    assert world.store.get_properties("alpha").tags[ROTATION_ID_TAG] == ticket.rotation_id


def test_a_queued_rotation_whose_success_record_fails_is_answered_as_queued(world: World) -> None:
    seed(world, "alpha")
    world.log.fails = success_of(Action.ROTATION_REQUESTED)
    ticket = ask_rotation(world, "alpha", force=True)  # not an error: asking again would rotate twice
    [request] = world.requests.sent
    assert (ticket.status, ticket.rotation_id) == ("queued", request.rotation_id)
    [intent] = world.records(Action.ROTATION_REQUESTED)
    assert intent.result == Result.INTENT and intent.details["rotation_id"] == ticket.rotation_id
    world.log.fails = lambda event: False
    world.rotate_requested(request)
    assert len(world.store.versions_of("alpha")) == 2
    assert [e.details["rotation_id"] for e in world.records(Action.ROTATED)] == [ticket.rotation_id] * 2


def test_a_manual_rotation_that_is_not_due_needs_force(world: World) -> None:
    seed(world, "alpha")
    with pytest.raises(Conflict, match=r"not due until 2026-12-28.*force=true"):
        ask_rotation(world, "alpha")
    assert world.requests.sent == [] and world.log.events == []
    seed(world, "old", age_days=40)
    assert ask_rotation(world, "old").status == "queued"


def test_a_manual_rotation_is_refused_naming_the_tag(world: World) -> None:
    seed(world, "legacy", tags={"owner": "ops"})
    with pytest.raises(NotManaged) as unmanaged:
        ask_rotation(world, "legacy", force=True)
    assert unmanaged.value.tag == "managed-by"
    seed(world, "broken", tags={**POLICY.to_tags(), "secret-kind": "ssh"})
    with pytest.raises(PolicyConflict) as invalid:
        ask_rotation(world, "broken", force=True)
    assert invalid.value.tag == "secret-kind"
    with pytest.raises(NotFound):
        ask_rotation(world, "nothing", force=True)
    assert world.requests.sent == []


def test_a_request_joins_the_rotation_in_progress_instead_of_queueing_another(world: World) -> None:
    seed(world, "alpha")
    world.states.create(
        PARTITION, "alpha",
        {"rotation_id": "c" * 32, "step": "promoting", "holder": "h", "attempt": 1,
         "lease_until": "2026-11-29T10:10:00.000000Z"},
    )  # fmt: skip
    ticket = ask_rotation(world, "alpha", force=True)
    assert (ticket.status, ticket.joined) == ("in_progress", "c" * 32) and ticket.rotation_id != "c" * 32
    assert world.requests.sent == []
    stored = world.states.get(PARTITION, "alpha")
    assert stored is not None and ticket.rotation_id in stored.state["aliases"]  # named in its outcome
    plan = world.plan_rotation("alpha", force=True)
    assert plan["would_rotate"] is False and plan["in_progress"]["rotation_id"] == "c" * 32


def test_a_queue_that_does_not_answer_is_on_record_and_raised(world: World) -> None:
    seed(world, "alpha")
    world.requests.available = False
    with pytest.raises(DependencyUnavailable):
        ask_rotation(world, "alpha", force=True)
    assert [e.result for e in world.records(Action.ROTATION_REQUESTED)] == [Result.INTENT, Result.FAILURE]


def test_a_dry_run_says_what_would_happen_and_writes_nothing(world: World) -> None:
    seed(world, "alpha")
    seed(world, "old", age_days=40)
    seed(world, "legacy", tags={})

    def plan(name: str, force: bool = False) -> dict[str, Any]:
        return world.plan_rotation(name, force=force)

    assert plan("alpha")["would_rotate"] is False and plan("alpha")["reason"].startswith("not due until")
    assert (plan("alpha", force=True)["would_rotate"], plan("alpha", force=True)["reason"]) == (
        True,
        "forced",
    )
    old = plan("old")
    assert (old["would_rotate"], old["reason"], old["due_now"], old["rotator"]) == (
        True,
        "due",
        True,
        "key-vault",
    )
    assert old["current_version"] == world.store.versions_of("old")[0]
    assert plan("legacy")["reason"] == "not managed: it lacks the tag managed-by"
    with pytest.raises(NotFound):
        plan("nothing")
    assert world.log.events == [] and world.requests.sent == []


# -- status ----------------------------------------------------------------------------------------------


def test_status_after_a_rotation_shows_it_and_the_retirement(world: World) -> None:
    seed(world, "alpha", age_days=40)
    [old] = world.store.versions_of("alpha")
    world.rotate_requested(_queued(world, "alpha"))
    new = world.store.get_properties("alpha")
    status = world.secret_status("alpha")
    assert status["version"] == new.version and status["managed"] is True and status["due_now"] is False
    assert status["policy"] == catalog.policy_dict(POLICY)
    assert status["state"] == {"status": "idle", "last_error": None}
    recorded = status["last_rotation"]["recorded"]
    assert (recorded["version"], recorded["previous_version"]) == (new.version, old)
    assert recorded["rotation_id"] == new.tags[ROTATION_ID_TAG]
    assert status["last_rotation"]["last_write"]["new_version"] == new.version
    assert status["last_failure"] is None
    assert status["retirements"] == [{"version": old, "after": "2026-11-30T10:00:00.000000Z"}]


def test_status_names_the_rotation_that_made_the_version_after_a_write_that_made_none(world: World) -> None:
    seed(world, "alpha", age_days=40)
    world.rotate_requested(_queued(world, "alpha"))
    new = world.store.get_properties("alpha")
    apply(world, "alpha", fields(kind=None, owner="fleet-ops"))  # takes the lease, writes no version
    last_write = world.secret_status("alpha")["last_rotation"]["last_write"]
    assert last_write == {"rotation_id": new.tags[ROTATION_ID_TAG], "new_version": new.version}


def _queued(world: World, name: str) -> Any:
    ask_rotation(world, name)
    return world.requests.sent[-1]


def test_status_shows_a_failed_rotation_and_an_invalid_policy(world: World) -> None:
    seed(world, "alpha", age_days=40)
    request = _queued(world, "alpha")
    world.store.denied.add("set_value")
    with pytest.raises(Exception):  # noqa: B017 - Forbidden, the queue retries
        world.rotate_requested(request)
    status = world.secret_status("alpha")
    failure = status["last_failure"]
    assert (failure["error_class"], failure["step"], failure["rotation_id"]) == (
        "Forbidden", "promote", request.rotation_id,
    )  # fmt: skip
    assert status["state"]["status"] == "promoting" and status["state"]["lease_live"] is False
    world.store.denied.clear()
    seed(world, "broken", tags={**POLICY.to_tags(), "rotation-interval-days": "0"})
    broken = world.secret_status("broken")
    assert broken["policy"] is None and broken["violation"]["tag"] == "rotation-interval-days"
    with pytest.raises(NotFound):
        world.secret_status("nothing")


# -- plan ------------------------------------------------------------------------------------------------


def test_the_plan_lists_rotations_expiries_and_violations_in_the_window(world: World) -> None:
    seed(world, "soon", age_days=25)  # due in 5 days (interval)
    seed(world, "later", age_days=1)  # due in 29 days: outside a 7-day window
    seed(world, "near", age_days=1, expires=world.clock.now() + timedelta(days=33))  # near-expiry in 3 days
    seed(world, "plain", tags={}, expires=world.clock.now() + timedelta(days=2))  # unmanaged, expiring
    seed(world, "gone-by", tags={}, expires=world.clock.now() - timedelta(days=1))  # expired already
    seed(world, "off", tags={}, enabled=False, expires=world.clock.now() + timedelta(days=1))  # disabled
    seed(world, "audit-hmac-key", expires=world.clock.now() + timedelta(days=1))  # reserved
    seed(world, "broken", tags={**POLICY.to_tags(), "secret-kind": "ssh"})
    plan = world.rotation_plan(within_days=7)
    assert [(i["name"], i["event"]) for i in plan["items"]] == [
        ("gone-by", "expiry"), ("plain", "expiry"), ("near", "rotation"), ("soon", "rotation"),
    ]  # fmt: skip
    assert plan["items"][0]["expired"] is True and plan["items"][1]["managed"] is False
    assert (plan["items"][2]["reason"], plan["items"][3]["reason"]) == ("near_expiry", "interval")
    assert plan["violations"] == [
        {
            "name": "broken",
            "vault": "fleet",
            "tag": "secret-kind",
            "problem": plan["violations"][0]["problem"],
        }
    ]
    wide = world.rotation_plan(within_days=40)
    assert ("later", "rotation") in [(i["name"], i["event"]) for i in wide["items"]]
    assert ("near", "expiry") in [(i["name"], i["event"]) for i in wide["items"]]


def test_a_webhook_secret_gets_its_signing_key_when_onboarded_or_put_under_policy(world: World) -> None:
    """The consumer must be able to verify the very first rotation's requests: the key (and the tag that
    names it) exist from onboarding, or from the policy that made the secret a webhook one, bound to that
    secret and that URL; a new URL through the API gets a new key, and the old one is disabled."""
    from shared.adapters.webhook import WebhookRotator
    from shared.domain.policy import Rotator
    from shared.domain.targets import BINDING_TAG, SIGNING_KEY_TAG, SIGNS_FOR_TAG, signing_key_name
    from tests.fakes import FakeKeyRing

    target = "https://dispatch.example.com/rotate"
    world.rotators = {Rotator.WEBHOOK: WebhookRotator(world.store, FakeKeyRing())}
    policy = catalog.build_policy(fields(rotator="webhook", rotation_target=target))
    version = world.onboard("hook-key", policy, actor=OPERATOR)
    key = world.store.get_properties(signing_key_name("hook-key"))
    assert version.tags[SIGNING_KEY_TAG] == key.name and key.tags[SIGNS_FOR_TAG] == target
    assert key.tags[BINDING_TAG]

    other = "https://billing.example.com/rotate"
    world.apply_policy("hook-key", fields(rotator="webhook", rotation_target=other), actor=OPERATOR)
    assert world.store.get_properties("hook-key").tags[SIGNING_KEY_TAG] == key.name
    rebound = world.store.get_properties(key.name)
    assert rebound.version != key.version and rebound.tags[SIGNS_FOR_TAG] == other
    assert not world.store.get_properties(key.name, key.version).enabled


def test_every_policy_tag_has_its_body_field() -> None:
    from shared.domain.policy import POLICY_TAGS

    assert set(catalog.FIELD_OF_TAG) == set(POLICY_TAGS)
