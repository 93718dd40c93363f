"""Key Vault events over in-memory fakes: defensive parsing, verify-before-acting, one action per fact
whatever the deliveries (one after another or at the same time), a crash between the claim and the
action, and out-of-band versions (their policy restored intent first, whatever crashes)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.domain.audit import Action, AuditEvent, AuditRecord, Result, format_time
from shared.domain.errors import DependencyUnavailable
from shared.domain.key_vault_events import (
    KeyVaultEventType,
    MalformedEvent,
    event_type,
    parse_event,
)
from shared.domain.notifications import SECRET_EXPIRED, SECRET_NEAR_EXPIRY
from shared.domain.policy import RotationPolicy, SecretKind
from shared.domain.rotation import RotationReason
from shared.domain.secrets import SecretVersion
from shared.domain.state import LEASE, Versioned
from shared.services.claims import ClaimHeld
from shared.services.key_vault_events import PARTITION, EventOutcome
from shared.services.rotation import (
    ROTATED_BY,
    ROTATED_BY_TAG,
    ROTATION_ID_TAG,
    Busy,
)
from tests.fakes import FakeKeyRing, FixedClock, InMemoryAuditLog, InMemorySecretStore, InMemoryStateStore
from tests.world import API_KEY, VAULT, World

NEAR, EXPIRED, NEW = KeyVaultEventType.NEAR_EXPIRY, KeyVaultEventType.EXPIRED, KeyVaultEventType.NEW_VERSION


class Died(BaseException):
    """The process is killed here: nothing after it runs, not even a release of the lease."""


class Store(InMemorySecretStore):
    """Counts the tag writes; ``on_read_version`` / ``after_write`` run once (then are cleared) when a
    version is read by id / after the next property write took effect."""

    def __init__(self, clock: FixedClock) -> None:
        super().__init__(clock)
        self.writes = 0
        self.on_read_version: Callable[[], None] | None = None
        self.after_write: Callable[[], None] | None = None

    def get_properties(self, name: str, version: str | None = None) -> SecretVersion:
        if version is not None and self.on_read_version is not None:
            hook, self.on_read_version = self.on_read_version, None
            hook()
        return super().get_properties(name, version)

    def update_properties(self, name: str, version: str, **changes: Any) -> SecretVersion:
        updated = super().update_properties(name, version, **changes)
        self.writes += 1
        hook, self.after_write = self.after_write, None
        if hook is not None:
            hook()
        return updated


class States(InMemoryStateStore):
    """``fail_when(partition, state)`` makes that replace fail as an unreachable store does."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_when: Callable[[str, Mapping[str, Any]], bool] = lambda p, s: False

    def replace(self, partition: str, key: str, state: Mapping[str, Any], etag: str) -> Versioned:
        if self.fail_when(partition, state):
            raise DependencyUnavailable("storage", "HTTP 503")
        return super().replace(partition, key, state, etag)


class Log(InMemoryAuditLog):
    """``before_append(events)`` runs before each append; it may raise (the store is down for those)."""

    def __init__(self, keys: FakeKeyRing | None = None) -> None:
        super().__init__(keys)
        self.before_append: Callable[[Sequence[AuditEvent]], None] = lambda events: None

    def append(self, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        self.before_append(events)
        return super().append(events)


@pytest.fixture
def world() -> World:
    return World(store=Store, rows=States, log=Log)


def secret(world: World, name: str, tags: dict[str, str], expires_in: timedelta | None = None) -> str:
    expires = world.clock.now() + expires_in if expires_in is not None else None
    return world.secret(name, tags=tags, content_type=None, expires=expires).version


def deliver(world: World, kind: KeyVaultEventType, name: str, version: str, **data: Any) -> EventOutcome:
    """Event Grid delivers Key Vault's event about ``version`` (``_id``: the event id)."""
    raw = {"Id": f"{InMemorySecretStore.VAULT_URL}/secrets/{name}/{version}", "VaultName": VAULT,
           "ObjectType": "Secret", "ObjectName": name, "Version": version,
           "NBF": None, "EXP": None}  # fmt: skip
    event_id = data.pop("_id", "evt-1")
    raw.update(data)
    return world.handle_event(parse_event(event_id=event_id, type_=kind, subject=name, data=raw))


# -- parsing ---------------------------------------------------------------------------------------


def test_the_documented_example_parses_despite_whitespace_keys_and_string_times() -> None:
    # As in Key Vault's documentation: stray spaces in keys, NBF/EXP as strings, plus a field we ignore.
    data = {"Id": "https://fleet.vault.azure.net/secrets/db-password/0123abcd", "VaultName": "fleet",
            "ObjectType": "Secret", "ObjectName ": "db-password", " Version": "0123ABCD",
            "NBF": "1559081980", "EXP": " 1559082000 ", "Unknown": {"x": 1}}  # fmt: skip
    event = parse_event(event_id="e1", type_=NEAR, subject="db-password", data=data)
    assert (event.vault_name, event.name, event.version, event.is_secret) == (
        "fleet",
        "db-password",
        "0123abcd",
        True,
    )
    assert event.expires is not None and int(event.expires.timestamp()) == 1559082000
    assert event.not_before is not None and int(event.not_before.timestamp()) == 1559081980


def test_numbers_null_and_empty_times_are_accepted() -> None:
    base = {"VaultName": "fleet", "ObjectType": "Secret", "ObjectName": "a", "Version": "abc"}
    assert parse_event(event_id="e", type_=NEAR, subject="a", data={**base, "EXP": 1.7e9}).expires
    assert parse_event(event_id="e", type_=NEAR, subject="a", data={**base, "EXP": ""}).expires is None
    # The subject alone names the secret when ObjectName is absent.
    no_name = {k: v for k, v in base.items() if k != "ObjectName"}
    assert parse_event(event_id="e", type_=NEAR, subject="a", data=no_name).name == "a"


@pytest.mark.parametrize(
    "data",
    [
        None,
        "a string",
        [1, 2],
        {},
        {"VaultName": "fleet", "ObjectType": "Secret", "ObjectName": "a"},  # no Version
        {"VaultName": "fleet", "ObjectType": "Secret", "ObjectName": "a", "Version": 42},
        {"VaultName": 7, "ObjectType": "Secret", "ObjectName": "a", "Version": "abc"},
        {"VaultName": "fleet", "ObjectType": "Secret", "ObjectName": "b", "Version": "abc"},  # ≠ subject
        {"VaultName": "fleet", "ObjectType": "Secret", "ObjectName": "a/../b", "Version": "abc"},
        {"VaultName": "fleet", "ObjectType": "Secret", "ObjectName": "a", "Version": "abc/def"},
        {"VaultName": "fleet", "ObjectType": "Secret", "ObjectName": "a", "Version": "abc", "EXP": "soon"},
        {"VaultName": "fleet", "ObjectType": "Secret", "ObjectName": "a", "Version": "abc", "EXP": True},
        {"VaultName": "fleet", "ObjectType": "Secret", "ObjectName": "a", "Version": "abc", "EXP": 1e300},
        {"VaultName": "fleet", "ObjectType": "Secret", "ObjectName": "a", "Version": "abc", "EXP": [1]},
        {
            "VaultName": "fleet",
            "vaultname ": "other",
            "ObjectType": "Secret",
            "ObjectName": "a",
            "Version": "abc",
        },
    ],
)
def test_malformed_events_are_refused_with_a_reason(data: Any) -> None:
    with pytest.raises(MalformedEvent):
        parse_event(event_id="e", type_=NEAR, subject="a", data=data)


def test_event_types_are_matched_loosely_and_unknown_ones_are_none() -> None:
    assert event_type(" microsoft.keyvault.secretnearexpiry ") == NEAR
    assert event_type("Microsoft.KeyVault.SecretExpired") == EXPIRED
    assert event_type("Microsoft.KeyVault.KeyNearExpiry") is None
    assert event_type(None) is None


# -- what is ignored -------------------------------------------------------------------------------


def test_another_vault_another_object_type_and_reserved_secrets_are_ignored_without_reading(
    world: World,
) -> None:
    version = secret(world, "dispatch-api-key", API_KEY.to_tags(), timedelta(days=20))
    secret(world, "audit-hmac-key", API_KEY.to_tags(), timedelta(days=20))
    world.store.available = False  # nothing may be read for these
    assert deliver(world, NEAR, "dispatch-api-key", version, VaultName="other").status == "ignored"
    assert deliver(world, NEAR, "dispatch-api-key", version, ObjectType="Key").status == "ignored"
    assert deliver(world, NEAR, "audit-hmac-key", "abcdef").status == "ignored"
    assert world.requests.sent == [] and world.log.events == [] and world.states.rows == {}


def test_an_event_about_an_old_version_is_a_no_op(world: World) -> None:
    old = secret(world, "dispatch-api-key", API_KEY.to_tags(), timedelta(days=20))
    secret(world, "dispatch-api-key", API_KEY.to_tags(), timedelta(days=60))
    assert deliver(world, NEAR, "dispatch-api-key", old).reason == "about an old version"
    assert world.requests.sent == [] and world.log.events == []


def test_an_event_about_a_secret_that_is_gone_is_dropped(world: World) -> None:
    assert deliver(world, NEAR, "no-such-secret", "abc").status == "ignored"
    assert deliver(world, NEW, "no-such-secret", "abc").status == "ignored"


# -- managed: a rotation request, once -------------------------------------------------------------


def test_near_expiry_of_a_managed_secret_requests_one_rotation_whatever_the_deliveries(world: World) -> None:
    version = secret(world, "dispatch-api-key", API_KEY.to_tags(), timedelta(days=29))
    # Five deliveries of one fact, some with other event ids (Event Grid may re-send a fact that way).
    statuses = [
        deliver(world, NEAR, "dispatch-api-key", version, _id=f"evt-{i % 2}").status for i in range(5)
    ]
    assert statuses == ["acted", "duplicate", "duplicate", "duplicate", "duplicate"]
    [request] = world.requests.sent
    assert (request.secret_name, request.reason) == ("dispatch-api-key", RotationReason.EVENT)
    # An expired event of the same version is another fact: one more request (rotation absorbs it).
    assert deliver(world, EXPIRED, "dispatch-api-key", version).status == "acted"
    assert len(world.requests.sent) == 2
    assert world.log.events == [] and world.publisher.sent == []


def test_a_crash_between_the_claim_and_the_request_is_finished_by_the_redelivery(world: World) -> None:
    version = secret(world, "dispatch-api-key", API_KEY.to_tags(), timedelta(days=29))
    world.requests.available = False  # the process dies (the queue fails) after the claim
    with pytest.raises(DependencyUnavailable):
        deliver(world, NEAR, "dispatch-api-key", version)
    assert world.requests.sent == []
    world.requests.available = True
    assert deliver(world, NEAR, "dispatch-api-key", version).status == "acted"
    assert deliver(world, NEAR, "dispatch-api-key", version).status == "duplicate"
    assert len(world.requests.sent) == 1


def test_a_certificate_backed_secret_is_never_requested(world: World) -> None:
    cert = world.store.add_certificate("tls-cert", **API_KEY.to_tags())
    world.clock.advance(timedelta(days=340))
    deliver(world, NEAR, "tls-cert", cert.version)
    assert world.requests.sent == []
    [warning] = world.records(Action.EXPIRY_WARNING)  # reported like any unmanaged secret instead
    assert warning.details["threshold_days"] == 30


# -- unmanaged: a record and a notification, once --------------------------------------------------


def test_near_expiry_of_an_unmanaged_secret_is_warned_once(world: World) -> None:
    version = secret(
        world, "partner-token", {"owner": "team-partners"}, timedelta(days=30) - timedelta(hours=2)
    )
    for i in range(5):
        deliver(world, NEAR, "partner-token", version, _id=f"evt-{i}")
    [warning] = world.records(Action.EXPIRY_WARNING)
    assert (warning.secret_name, warning.version, warning.details["threshold_days"]) == (
        "partner-token",
        version,
        30,
    )
    [sent] = world.publisher.sent
    assert sent.type == SECRET_NEAR_EXPIRY and sent.subject == "partner-token"
    assert sent.data["owner"] == "team-partners" and sent.data["version"] == version
    assert sent.data["vault"] == VAULT and "expires" in sent.data
    assert world.requests.sent == []
    assert "initial-value" not in repr(world.log.events) + repr(world.publisher.sent)


def test_the_vault_not_the_event_decides(world: World) -> None:
    # The event says near expiry, but someone extended exp since: nothing to warn about.
    version = secret(world, "partner-token", {}, timedelta(days=90))
    assert deliver(world, NEAR, "partner-token", version, EXP="1").status == "ignored"
    assert deliver(world, EXPIRED, "partner-token", version).status == "ignored"
    assert world.log.events == [] and world.publisher.sent == []


def test_expired_unmanaged_secret_is_reported_once(world: World) -> None:
    version = secret(world, "partner-token", {}, timedelta(minutes=1))
    world.clock.advance(timedelta(minutes=2))
    for _ in range(5):
        deliver(world, EXPIRED, "partner-token", version)
    [expired] = world.records(Action.SECRET_EXPIRED)
    assert expired.version == version and world.records(Action.EXPIRY_WARNING) == []
    [sent] = world.publisher.sent
    assert sent.type == SECRET_EXPIRED and "owner" not in sent.data


def test_a_notification_that_failed_is_sent_by_the_redelivery_without_a_second_record(world: World) -> None:
    version = secret(world, "partner-token", {}, timedelta(days=29))
    world.publisher.available = False
    with pytest.raises(DependencyUnavailable):
        deliver(world, NEAR, "partner-token", version)
    assert len(world.records(Action.EXPIRY_WARNING)) == 1 and world.publisher.sent == []
    world.publisher.available = True
    deliver(world, NEAR, "partner-token", version)
    deliver(world, NEAR, "partner-token", version)
    assert len(world.records(Action.EXPIRY_WARNING)) == 1 and len(world.publisher.sent) == 1


def test_an_audit_failure_is_retried_by_the_redelivery(world: World) -> None:
    version = secret(world, "partner-token", {}, timedelta(days=29))
    world.log.available = False
    with pytest.raises(DependencyUnavailable):
        deliver(world, NEAR, "partner-token", version)
    world.log.available = True
    deliver(world, NEAR, "partner-token", version)
    assert len(world.records(Action.EXPIRY_WARNING)) == 1 and len(world.publisher.sent) == 1


def test_the_event_and_the_daily_check_share_their_claims(world: World) -> None:
    version = secret(world, "partner-token", {}, timedelta(days=29, hours=23))
    deliver(world, NEAR, "partner-token", version)
    world.clock.advance(timedelta(hours=6))
    world.check_expiry()
    assert len(world.records(Action.EXPIRY_WARNING)) == 1 and len(world.publisher.sent) == 1


# -- new versions: out of band, or made by the service ---------------------------------------------


def test_an_out_of_band_version_is_recorded_once_and_its_dropped_policy_restored(world: World) -> None:
    secret(world, "dispatch-api-key", {**API_KEY.to_tags(), "team": "dispatch"}, timedelta(days=60))
    world.clock.advance(timedelta(seconds=5))
    # Someone sets a value by hand, with a tag of their own and without the policy.
    oob = secret(world, "dispatch-api-key", {"changed-by": "alice"})
    for i in range(5):
        deliver(world, NEW, "dispatch-api-key", oob, _id=f"evt-{i}")
    # A change to the vault: the intent (naming the tags to restore) before it, the success after.
    intent, record = world.records(Action.OUT_OF_BAND_CHANGE)
    assert (intent.result, intent.version, record.result) == (Result.INTENT, oob, Result.SUCCESS)
    assert "managed-by" in intent.details["restore_tags"] and "policy_restored" not in intent.details
    assert (record.secret_name, record.version) == ("dispatch-api-key", oob)
    assert record.details["policy_restored"] is True
    assert "managed-by" in record.details["restored_tags"]
    assert world.store.writes == 1
    tags = world.store.get_properties("dispatch-api-key", oob).tags
    assert RotationPolicy.from_tags(tags) == API_KEY and tags["changed-by"] == "alice"
    assert "team" not in tags  # only the policy's tags come back
    assert world.requests.sent == [] and world.publisher.sent == []


def test_a_restore_waits_for_another_write_holding_the_secrets_lease(world: World) -> None:
    secret(world, "dispatch-api-key", API_KEY.to_tags(), timedelta(days=60))
    world.clock.advance(timedelta(seconds=5))
    oob = secret(world, "dispatch-api-key", {"changed-by": "alice"})
    # An operator's policy change (or a rotation) holds the secret's write lease right now.
    progress, etag = world.acquire("updating_policy")
    with pytest.raises(Busy):  # raised: Event Grid delivers it again
        deliver(world, NEW, "dispatch-api-key", oob)
    assert world.store.writes == 0
    world.release(progress, etag, new_version=None)
    world.clock.advance(timedelta(minutes=16))  # the claim's lease of the first delivery ran out
    deliver(world, NEW, "dispatch-api-key", oob, _id="evt-again")
    assert RotationPolicy.from_tags(world.store.get_properties("dispatch-api-key", oob).tags) == API_KEY


def test_a_policy_applied_before_the_restore_is_not_overwritten(world: World) -> None:
    secret(world, "dispatch-api-key", API_KEY.to_tags(), timedelta(days=60))
    world.clock.advance(timedelta(seconds=5))
    oob = secret(world, "dispatch-api-key", {"changed-by": "alice"})
    newer = RotationPolicy(SecretKind.API_KEY, timedelta(days=45), None, "dispatch-api")
    reads = 0
    get_properties = world.store.get_properties

    def operator_applies_a_policy_meanwhile(name: str, version: str | None = None) -> Any:
        nonlocal reads
        reads += 1
        if reads == 2:  # after the plan, before the write: the operator's PUT lands
            world.store.update_properties(name, oob, tags={"changed-by": "alice", **newer.to_tags()})
        return get_properties(name, version)

    world.store.get_properties = operator_applies_a_policy_meanwhile  # type: ignore[method-assign]
    deliver(world, NEW, "dispatch-api-key", oob)
    assert RotationPolicy.from_tags(get_properties("dispatch-api-key", oob).tags) == newer
    record = world.records(Action.OUT_OF_BAND_CHANGE)[-1]
    assert record.result == Result.SUCCESS and record.details["policy_restored"] is False


def test_an_out_of_band_version_of_an_unmanaged_secret_is_recorded_without_a_restore(world: World) -> None:
    secret(world, "partner-token", {"owner": "x"})
    world.clock.advance(timedelta(seconds=1))
    oob = secret(world, "partner-token", {})
    deliver(world, NEW, "partner-token", oob)
    [record] = world.records(Action.OUT_OF_BAND_CHANGE)
    assert "policy_restored" not in record.details
    assert world.store.get_properties("partner-token", oob).tags == {}


def test_a_version_this_service_made_is_not_out_of_band(world: World) -> None:
    world.clock.advance(timedelta(days=-31))
    secret(world, "dispatch-api-key", API_KEY.to_tags())
    world.clock.advance(timedelta(days=31))
    outcome = world.rotate()
    assert outcome.new_version is not None
    assert deliver(world, NEW, "dispatch-api-key", outcome.new_version).reason == "made by this service"
    assert world.records(Action.OUT_OF_BAND_CHANGE) == []


def test_forged_service_tags_are_out_of_band(world: World) -> None:
    secret(world, "dispatch-api-key", API_KEY.to_tags())
    world.clock.advance(timedelta(seconds=1))
    forged = {**API_KEY.to_tags(), ROTATED_BY_TAG: ROTATED_BY, ROTATION_ID_TAG: "f" * 32}
    version = secret(world, "dispatch-api-key", forged)
    deliver(world, NEW, "dispatch-api-key", version)
    [record] = world.records(Action.OUT_OF_BAND_CHANGE)
    assert record.version == version and "policy_restored" not in record.details


def _rotate(world: World, *, force: bool = False) -> str:
    outcome = world.rotate(force=force)
    assert outcome.new_version is not None
    return outcome.new_version


def test_an_event_delivered_late_after_another_write_still_knows_the_services_version(world: World) -> None:
    world.clock.advance(timedelta(days=-31))
    secret(world, "dispatch-api-key", API_KEY.to_tags())
    world.clock.advance(timedelta(days=31))
    first = _rotate(world)
    world.clock.advance(timedelta(hours=1))
    _rotate(world, force=True)  # the progress row now names the second rotation
    # Event Grid retried the first version's event for hours: it is still the service's own version.
    assert deliver(world, NEW, "dispatch-api-key", first).reason == "made by this service"
    assert world.records(Action.OUT_OF_BAND_CHANGE) == []


def test_a_copy_of_a_real_rotation_id_on_another_version_is_out_of_band(world: World) -> None:
    world.clock.advance(timedelta(days=-31))
    secret(world, "dispatch-api-key", API_KEY.to_tags())
    world.clock.advance(timedelta(days=31))
    made = world.store.get_properties("dispatch-api-key", _rotate(world))
    world.clock.advance(timedelta(seconds=1))
    # Someone with set permission copies the service's tags, rotation id included, onto their own value.
    copied = secret(world, "dispatch-api-key", dict(made.tags))
    assert deliver(world, NEW, "dispatch-api-key", copied).status == "acted"
    [record] = world.records(Action.OUT_OF_BAND_CHANGE)
    assert record.version == copied


def _out_of_band_without_policy(world: World) -> str:
    secret(world, "dispatch-api-key", API_KEY.to_tags(), timedelta(days=60))
    world.clock.advance(timedelta(seconds=1))
    return secret(world, "dispatch-api-key", {})


def _is_managed(world: World, version: str) -> bool:
    return RotationPolicy.is_managed(world.store.get_properties("dispatch-api-key", version).tags)


def test_while_the_audit_is_down_an_out_of_band_versions_policy_is_not_restored(world: World) -> None:
    oob = _out_of_band_without_policy(world)
    world.log.available = False
    with pytest.raises(DependencyUnavailable):
        deliver(world, NEW, "dispatch-api-key", oob)
    # Fail closed: nothing on record, so nothing changed in the vault.
    assert not _is_managed(world, oob) and world.store.writes == 0
    world.log.available = True
    deliver(world, NEW, "dispatch-api-key", oob)
    deliver(world, NEW, "dispatch-api-key", oob)
    assert [e.result for e in world.records(Action.OUT_OF_BAND_CHANGE)] == [Result.INTENT, Result.SUCCESS]
    assert _is_managed(world, oob) and world.store.writes == 1


def _fail_oob_success(events: Sequence[AuditEvent]) -> None:
    if any(e.action == Action.OUT_OF_BAND_CHANGE and e.result == Result.SUCCESS for e in events):
        raise DependencyUnavailable("audit_store", "unreachable (connection failed)")


def _die() -> None:
    raise Died


def _crash_saving_the_intent(world: World) -> None:
    world.states.fail_when = lambda partition, state: partition == PARTITION and bool(state.get("intent"))


def _crash_writing_the_tags(world: World) -> None:
    world.store.available = False


def _die_after_writing_the_tags(world: World) -> None:
    world.store.after_write = _die


def _crash_recording_the_success(world: World) -> None:
    world.log.before_append = _fail_oob_success


@pytest.mark.parametrize(
    ("crash", "intents"),
    [
        (_crash_saving_the_intent, 2),  # the intent landed, its mark did not: on record again
        (_crash_writing_the_tags, 1),
        (_die_after_writing_the_tags, 1),  # the claim still says pending; the vault has the tags
        (_crash_recording_the_success, 1),
    ],
)
def test_a_crash_at_any_point_of_a_restore_converges_on_one_restore_on_record(
    world: World, crash: Callable[[World], None], intents: int
) -> None:
    oob = _out_of_band_without_policy(world)
    crash(world)
    with pytest.raises((DependencyUnavailable, Died)):
        deliver(world, NEW, "dispatch-api-key", oob)
    world.states.fail_when = lambda partition, state: False
    world.store.available = True
    world.log.before_append = lambda events: None
    world.clock.advance(LEASE + timedelta(seconds=1))  # a holder that died: its lease runs out
    for i in range(3):
        deliver(world, NEW, "dispatch-api-key", oob, _id=f"evt-{i}")
    records = world.records(Action.OUT_OF_BAND_CHANGE)
    assert [e.result for e in records] == [Result.INTENT] * intents + [Result.SUCCESS]
    [success] = [e for e in records if e.result == Result.SUCCESS]
    assert success.details["policy_restored"] is True and "managed-by" in success.details["restored_tags"]
    assert _is_managed(world, oob) and world.store.writes == 1


def test_a_restore_the_vault_refuses_for_good_is_recorded_as_failed(world: World) -> None:
    oob = _out_of_band_without_policy(world)

    def delete_the_secret(events: Sequence[AuditEvent]) -> None:
        if any(e.result == Result.INTENT for e in events):
            del world.store.secrets["dispatch-api-key"]  # deleted between the intent and the write

    world.log.before_append = delete_the_secret
    assert deliver(world, NEW, "dispatch-api-key", oob).reason.endswith("policy not restored")
    intent, failure = world.records(Action.OUT_OF_BAND_CHANGE)
    assert (intent.result, failure.result) == (Result.INTENT, Result.FAILURE)
    assert failure.details["error_class"] == "NotFound" and "policy_restored" not in failure.details
    assert deliver(world, NEW, "dispatch-api-key", oob).status == "duplicate"


# -- deliveries at the same time -------------------------------------------------------------------


def test_two_deliveries_of_one_fact_at_the_same_time_record_it_once(world: World) -> None:
    oob = _out_of_band_without_policy(world)
    refused: list[BaseException] = []

    def second_delivery() -> None:
        # Event Grid's redelivery runs while the first is still working (another invocation: its
        # failure is its own, and Event Grid delivers it again later).
        try:
            deliver(world, NEW, "dispatch-api-key", oob, _id="evt-retry")
        except ClaimHeld as err:
            refused.append(err)

    world.store.on_read_version = second_delivery
    assert deliver(world, NEW, "dispatch-api-key", oob).status == "acted"
    assert len(refused) == 1  # raised, so that it is delivered again rather than lost
    assert deliver(world, NEW, "dispatch-api-key", oob, _id="evt-retry").status == "duplicate"
    assert [e.result for e in world.records(Action.OUT_OF_BAND_CHANGE)] == [Result.INTENT, Result.SUCCESS]
    assert world.store.writes == 1


def test_a_delivery_whose_holder_died_is_finished_after_its_lease_ran_out(world: World) -> None:
    version = secret(world, "partner-token", {}, timedelta(days=29))

    def die_sending(events: Sequence[AuditEvent]) -> None:
        world.publisher.publish = lambda notifications: _die()  # type: ignore[method-assign]

    world.log.before_append = die_sending  # recorded, then the process dies before the notification
    with pytest.raises(Died):
        deliver(world, NEAR, "partner-token", version)
    del world.publisher.publish
    world.log.before_append = lambda events: None
    # Its lease still runs: the redelivery does not act (the holder might only be slow), and is raised.
    with pytest.raises(ClaimHeld):
        deliver(world, NEAR, "partner-token", version, _id="evt-2")
    assert len(world.records(Action.EXPIRY_WARNING)) == 1 and world.publisher.sent == []
    world.clock.advance(LEASE + timedelta(seconds=1))
    assert deliver(world, NEAR, "partner-token", version, _id="evt-3").status == "acted"
    assert deliver(world, NEAR, "partner-token", version, _id="evt-4").status == "duplicate"
    assert len(world.records(Action.EXPIRY_WARNING)) == 1 and len(world.publisher.sent) == 1


def test_the_daily_check_during_an_events_notice_leaves_it_to_the_event(world: World) -> None:
    version = secret(world, "partner-token", {}, timedelta(days=29))
    reports = []

    def check_meanwhile(events: Sequence[AuditEvent]) -> None:
        if any(e.action == Action.EXPIRY_WARNING for e in events) and not reports:
            reports.append(world.check_expiry())

    world.log.before_append = check_meanwhile  # the timer fires while the event records its warning
    assert deliver(world, NEAR, "partner-token", version).status == "acted"
    [report] = reports
    assert (report.busy, report.warned, report.failed) == (("partner-token",), (), ())
    assert len(world.records(Action.EXPIRY_WARNING)) == 1 and len(world.publisher.sent) == 1


def test_a_forged_lease_far_ahead_does_not_block_a_fact_for_good(world: World) -> None:
    oob = _out_of_band_without_policy(world)
    far = world.clock.now() + timedelta(days=365)
    world.states.create(PARTITION, f"new-version:dispatch-api-key:{oob}",
                        {"status": "pending", "holder": "x", "lease_until": format_time(far)})  # fmt: skip
    assert deliver(world, NEW, "dispatch-api-key", oob).status == "acted"
    assert _is_managed(world, oob)


def test_the_bicep_subscribes_the_function_to_exactly_the_handled_types() -> None:
    root = Path(__file__).resolve().parents[2]
    module = (root / "infra" / "modules" / "keyvault-events.bicep").read_text()
    subscribed = set(re.findall(r"'(Microsoft\.KeyVault\.Secret[A-Za-z]+)'", module))
    assert subscribed == {t.value for t in KeyVaultEventType}
    assert "param functionName string = 'key_vault_events'" in module
    assert "topicType: 'Microsoft.KeyVault.vaults'" in module
    assert "maxDeliveryAttempts: 30" in module and "eventTimeToLiveInMinutes: 1440" in module
    assert module.count("{") == module.count("}") and module.count("[") == module.count("]")
    top = (root / "infra" / "events.bicep").read_text()
    assert "module events 'modules/keyvault-events.bicep'" in top
    assert top.count("{") == top.count("}")
