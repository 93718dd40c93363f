"""The daily expiry check over in-memory fakes: warnings once per threshold per version, expired versions,
policy violations once per version, what is read, one secret's failure isolated, and claims another run
holds left to it (a holder that died finished after its lease ran out)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.config import ConfigurationError, Settings
from shared.domain.audit import Action, Result, format_time
from shared.domain.errors import DependencyUnavailable
from shared.domain.notifications import SECRET_EXPIRED, SECRET_NEAR_EXPIRY
from shared.domain.policy import RotationPolicy, SecretKind
from shared.domain.state import LEASE
from shared.services.expiry import VIOLATIONS, ExpiryReport
from tests.fakes import FixedClock, InMemorySecretStore
from tests.world import API_KEY, World

EXP = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


class CountingStore(InMemorySecretStore):
    """Counts calls per operation; names in ``failing`` fail as an unreachable vault does."""

    def __init__(self, clock: FixedClock) -> None:
        super().__init__(clock)
        self.calls: dict[str, int] = {}
        self.failing: set[str] = set()

    def _call(self, operation: str, name: str | None = None) -> None:
        self.calls[operation] = self.calls.get(operation, 0) + 1
        if name is not None and name in self.failing:
            raise DependencyUnavailable("key_vault", "unreachable (connection failed)")
        super()._call(operation, name)


@pytest.fixture
def world() -> World:
    return World(store=CountingStore, now=EXP - timedelta(days=60))


def secret(
    world: World, name: str, tags: dict[str, str] | None = None, expires: datetime | None = EXP
) -> str:
    return world.secret(name, tags=tags or {}, content_type=None, expires=expires).version


def check(world: World, *, at: datetime | None = None, require_exp: bool = False) -> ExpiryReport:
    """The daily run (at ``at``, when given)."""
    if at is not None:
        world.clock.current = at
    return world.check_expiry(require_exp=require_exp)


def warned(world: World) -> list[tuple[str, int]]:
    warnings = [e for e in world.records(Action.EXPIRY_WARNING) if e.result == Result.SUCCESS]
    return [(e.secret_name or "", e.details["threshold_days"]) for e in warnings]


def test_each_threshold_is_warned_once_per_version(world: World) -> None:
    version = secret(world, "partner-token", {"owner": "team-partners"})
    for days in (31, 29, 20, 6, 6, 0.5):
        check(world, at=EXP - timedelta(days=days))
    assert warned(world) == [("partner-token", 30), ("partner-token", 7), ("partner-token", 1)]
    assert all(e.version == version for e in world.records(Action.EXPIRY_WARNING))
    sent = world.publisher.sent
    assert [n.type for n in sent] == [SECRET_NEAR_EXPIRY] * 3
    assert [n.data["threshold_days"] for n in sent] == [30, 7, 1]
    assert sent[0].data["owner"] == "team-partners" and sent[0].data["version"] == version
    assert len({n.id for n in sent}) == 3
    assert "initial-value" not in repr(world.log.events) + repr(sent)

    # A new version starts afresh.
    world.clock.current = EXP - timedelta(days=40)
    secret(world, "partner-token", {"owner": "team-partners"}, expires=EXP + timedelta(days=5))
    check(world, at=EXP - timedelta(days=20))
    assert warned(world)[-1] == ("partner-token", 30) and len(warned(world)) == 4


def test_a_first_run_past_several_thresholds_warns_once_for_the_tightest(world: World) -> None:
    secret(world, "partner-token")
    report = check(world, at=EXP - timedelta(days=5))
    assert report.warned == ("partner-token",)
    assert warned(world) == [("partner-token", 7)]
    check(world, at=EXP - timedelta(days=4))
    check(world, at=EXP - timedelta(days=3))
    assert warned(world) == [("partner-token", 7)]  # 30 was claimed with it
    check(world, at=EXP - timedelta(hours=12))
    assert warned(world) == [("partner-token", 7), ("partner-token", 1)]


def test_an_expired_current_version_is_reported_once_and_not_warned(world: World) -> None:
    version = secret(world, "partner-token")
    for _ in range(3):
        report = check(world, at=EXP + timedelta(hours=1))
    assert report.expired == ()  # reported by the first run
    [expired] = world.records(Action.SECRET_EXPIRED)
    assert expired.version == version and warned(world) == []
    [sent] = world.publisher.sent
    assert sent.type == SECRET_EXPIRED and sent.data["days_left"] < 0


def test_a_managed_secret_uses_its_own_thresholds(world: World) -> None:
    policy = RotationPolicy(SecretKind.API_KEY, timedelta(days=30), owner="dispatch", warning_days=(14, 3))
    secret(world, "dispatch-api-key", policy.to_tags())
    for days in (29, 13, 2):
        check(world, at=EXP - timedelta(days=days))
    assert warned(world) == [("dispatch-api-key", 14), ("dispatch-api-key", 3)]


def test_an_invalid_policy_falls_back_to_the_default_thresholds(world: World) -> None:
    secret(world, "dispatch-api-key", {**API_KEY.to_tags(), "expiry-warning-days": "soon"})
    check(world, at=EXP - timedelta(days=29))
    assert warned(world) == [("dispatch-api-key", 30)]


def test_what_is_checked_and_what_is_read(world: World) -> None:
    secret(world, "far-away", expires=EXP + timedelta(days=300))
    secret(world, "no-expiry", expires=None)
    secret(world, "near", {})
    secret(world, "audit-hmac-key", {})  # the service's own: never reported
    secret(world, "disabled")
    world.store.update_properties("disabled", world.store.versions_of("disabled")[-1], enabled=False)
    cert = world.store.add_certificate("tls-cert")  # certificate-backed: included
    world.store.calls.clear()
    report = check(world, at=EXP - timedelta(days=10))
    assert report.warned == ("near",)
    assert (report.listed, report.checked) == (6, 4)
    # One listing and one read for the secret that crossed a threshold, nothing for the rest.
    assert world.store.calls == {"list_properties": 1, "get_properties": 1}
    assert cert.expires is not None
    check(world, at=cert.expires - timedelta(days=1))
    assert ("tls-cert", 1) in warned(world)
    assert all(e.secret_name != "audit-hmac-key" for e in world.log.events)


def test_managed_secrets_without_an_owner_are_violations_once_per_version(world: World) -> None:
    no_owner = RotationPolicy(SecretKind.API_KEY, timedelta(days=30))
    secret(world, "dispatch-api-key", no_owner.to_tags(), expires=None)
    secret(world, "with-owner", API_KEY.to_tags(), expires=None)
    secret(world, "unmanaged", {}, expires=None)
    for _ in range(3):
        report = check(world)
    [violation] = world.records(Action.POLICY_VIOLATION)
    assert (violation.secret_name, violation.details["tag"], violation.result) == (
        "dispatch-api-key",
        "owner",
        Result.FAILURE,
    )
    assert report.violations == 0
    world.clock.advance(timedelta(seconds=1))
    secret(world, "dispatch-api-key", no_owner.to_tags(), expires=None)
    assert check(world).violations == 1


def test_missing_expiry_is_a_violation_only_when_required(world: World) -> None:
    secret(world, "no-expiry", {}, expires=None)
    secret(world, "has-expiry", {})
    check(world)
    assert world.records(Action.POLICY_VIOLATION) == []
    check(world, require_exp=True)
    check(world, require_exp=True)
    [violation] = world.records(Action.POLICY_VIOLATION)
    assert (violation.secret_name, violation.details["tag"]) == ("no-expiry", "exp")


def test_one_secrets_failure_is_recorded_and_the_others_go_on(world: World) -> None:
    secret(world, "broken")
    secret(world, "fine")
    world.store.failing.add("broken")
    report = check(world, at=EXP - timedelta(days=5))
    assert report.failed == ("broken",) and report.warned == ("fine",)
    [failure] = [e for e in world.records(Action.EXPIRY_WARNING) if e.result == Result.FAILURE]
    assert failure.secret_name == "broken" and failure.details["error_class"] == "DependencyUnavailable"
    world.store.failing.clear()
    report = check(world)
    assert report.failed == () and report.warned == ("broken",)


def test_a_notification_that_failed_is_sent_by_the_next_run_without_a_second_record(world: World) -> None:
    secret(world, "partner-token")
    world.publisher.available = False
    assert check(world, at=EXP - timedelta(days=29)).failed == ("partner-token",)
    world.publisher.available = True
    check(world)
    check(world)
    assert warned(world) == [("partner-token", 30)]
    assert [n.data["threshold_days"] for n in world.publisher.sent] == [30]


def test_a_listing_failure_is_raised(world: World) -> None:
    world.store.available = False
    with pytest.raises(DependencyUnavailable):
        check(world)


def test_the_require_exp_setting() -> None:
    assert Settings({}).expiry_require_exp is False
    assert Settings({"EXPIRY_REQUIRE_EXP": " TRUE "}).expiry_require_exp is True
    with pytest.raises(ConfigurationError) as err:
        _ = Settings({"EXPIRY_REQUIRE_EXP": "sometimes"}).expiry_require_exp
    assert err.value.setting == "EXPIRY_REQUIRE_EXP"


class Died(BaseException):
    """The process is killed here: nothing after it runs, not even a release of the claim's lease."""


def _die(*args: object) -> None:
    raise Died


def test_a_notice_another_run_is_sending_is_left_to_it_and_a_dead_runs_is_finished(world: World) -> None:
    secret(world, "partner-token")
    world.publisher.publish = _die  # type: ignore[method-assign]  # recorded, then the run dies
    with pytest.raises(Died):
        check(world, at=EXP - timedelta(days=29))
    del world.publisher.publish
    # Its lease still runs (it may only be slow): skipped, neither a failure nor a second notice.
    report = check(world)
    assert (report.busy, report.warned, report.failed) == (("partner-token",), (), ())
    assert warned(world) == [("partner-token", 30)] and world.publisher.sent == []
    world.clock.advance(LEASE + timedelta(seconds=1))
    report = check(world)
    assert (report.busy, report.warned) == ((), ("partner-token",))
    assert warned(world) == [("partner-token", 30)] and len(world.publisher.sent) == 1


def test_a_violation_another_run_is_recording_is_left_to_it(world: World) -> None:
    secret(world, "no-expiry", {}, expires=None)
    [item] = world.store.list_properties()
    until = format_time(world.clock.now() + timedelta(minutes=5))
    key = f"no-expiry:{format_time(item.created)}:exp"
    world.states.create(VIOLATIONS, key, {"status": "pending", "holder": "other", "lease_until": until})
    assert check(world, require_exp=True).busy == ("no-expiry",)
    assert world.records(Action.POLICY_VIOLATION) == []
    world.clock.advance(timedelta(minutes=6))
    assert check(world, require_exp=True).violations == 1
    assert len(world.records(Action.POLICY_VIOLATION)) == 1
