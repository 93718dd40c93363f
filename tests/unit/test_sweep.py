"""The rotation sweep over the in-memory vault and a recording queue: which secrets it asks to rotate,
which it leaves alone, what it reports, and that it reads nothing but the listing."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from shared.domain.errors import DependencyUnavailable, Forbidden
from shared.domain.policy import RotationPolicy, Rotator, SecretKind
from shared.domain.rotation import RotationReason, RotationRequest
from shared.services.sweep import DueSecret, PolicyViolation, SweepReport
from tests.fakes import FixedClock, InMemorySecretStore
from tests.world import World

CORRELATION = "sweep-0001"


def managed(interval_days: int = 30, **extra: str) -> dict[str, str]:
    return {
        "managed-by": "secret-lifecycle",
        "secret-kind": "api-key",
        "rotation-interval-days": str(interval_days),
        **extra,
    }


class CountingSecretStore(InMemorySecretStore):
    """Counts every call the way the vault would bill it."""

    def __init__(self, clock: FixedClock) -> None:
        super().__init__(clock)
        self.calls: Counter[str] = Counter()

    def _call(self, operation: str, name: str | None = None) -> None:
        self.calls[operation] += 1
        super()._call(operation, name)


@pytest.fixture
def world() -> World:
    return World(store=CountingSecretStore)


def sent(world: World) -> dict[str, RotationReason]:
    return {r.secret_name: r.reason for r in world.requests.sent}


def test_due_by_interval(world: World) -> None:
    world.store.set_value("dispatch-api-key", "v1", content_type=None, tags=managed(30))
    world.clock.advance(timedelta(days=30))

    report = world.sweep(CORRELATION)

    assert world.requests.sent == [
        RotationRequest(
            secret_name="dispatch-api-key",
            reason=RotationReason.DUE,
            requested_at=world.clock.now(),
            correlation_id=CORRELATION,
            vault=world.vault,
        )
    ]
    created = world.clock.now() - timedelta(days=30)
    assert report == SweepReport(
        listed=1, managed=1, due=("dispatch-api-key",), sent=1, violations=(),
        due_since=(DueSecret("dispatch-api-key", created, world.clock.now()),),
    )  # fmt: skip
    assert not report.failed


def test_due_by_expiry_window_is_near_expiry(world: World) -> None:
    # Interval 90 days, but the version expires in 40: it enters the 30-day window after 10 days.
    expires = world.clock.now() + timedelta(days=40)
    world.store.set_value("fleet-db-password", "v1", content_type=None, tags=managed(90), expires=expires)
    world.clock.advance(timedelta(days=9))
    assert world.sweep(CORRELATION).due == ()

    world.clock.advance(timedelta(days=1))
    report = world.sweep(CORRELATION)

    assert sent(world) == {"fleet-db-password": RotationReason.NEAR_EXPIRY}
    assert report.due == ("fleet-db-password",)


def test_due_by_both_is_due(world: World) -> None:
    world.store.set_value(
        "jwt", "v1", content_type=None, tags=managed(30), expires=world.clock.now() + timedelta(days=35)
    )
    world.clock.advance(timedelta(days=31))

    world.sweep(CORRELATION)

    assert sent(world) == {"jwt": RotationReason.DUE}


def test_not_due_sends_nothing(world: World) -> None:
    world.store.set_value("dispatch-api-key", "v1", content_type=None, tags=managed(30))
    world.clock.advance(timedelta(days=29, hours=23))

    report = world.sweep(CORRELATION)

    assert report == SweepReport(listed=1, managed=1, due=(), sent=0, violations=())
    assert world.requests.batches == []  # not even an empty send: the queue is not touched


def test_unmanaged_and_disabled_secrets_are_left_alone(world: World) -> None:
    world.store.set_value("hand-made", "v1", content_type=None, tags={"rotation-interval-days": "1"})
    world.store.set_value(
        "other-owner", "v1", content_type=None, tags={**managed(1), "managed-by": "terraform"}
    )
    world.store.set_value("retired", "v1", content_type=None, tags=managed(1), enabled=False)
    world.clock.advance(timedelta(days=400))

    report = world.sweep(CORRELATION)

    assert report == SweepReport(listed=3, managed=0, due=(), sent=0, violations=())
    assert world.requests.sent == []


def test_certificate_backed_secrets_are_never_requested(world: World) -> None:
    world.store.add_certificate("tls-cert", **managed(1))
    world.clock.advance(timedelta(days=400))

    report = world.sweep(CORRELATION)

    assert world.requests.sent == []
    assert report.managed == 0
    assert [(v.secret_name, v.tag) for v in report.violations] == [("tls-cert", "managed-by")]
    assert "certificate" in report.violations[0].problem


def test_reserved_secrets_are_never_touched_even_when_tagged_managed(world: World) -> None:
    # Someone tags the service's own secrets as managed, in any case (Key Vault names ignore it).
    world.store.set_value("Audit-HMAC-Key", "mac-key", content_type=None, tags=managed(1))
    world.store.set_value("audit-digest-anchor", "digest", content_type=None, tags=managed(1))
    world.store.set_value("dispatch-api-key", "v1", content_type=None, tags=managed(1))
    world.clock.advance(timedelta(days=400))
    before = {name: world.store.versions_of(name) for name in ("audit-hmac-key", "audit-digest-anchor")}
    world.store.calls.clear()

    report = world.sweep(CORRELATION)

    assert sent(world) == {"dispatch-api-key": RotationReason.DUE}
    assert report.due == ("dispatch-api-key",)
    assert {v.secret_name for v in report.violations} == {"Audit-HMAC-Key", "audit-digest-anchor"}
    assert world.store.calls == Counter({"list_properties": 1})
    assert {name: world.store.versions_of(name) for name in before} == before
    assert world.store.get_value("audit-hmac-key").value == "mac-key"


def test_invalid_policy_is_a_violation_naming_the_tag(world: World) -> None:
    world.store.set_value("typo", "v1", content_type=None, tags=managed(1, **{"secret-kind": "ssh-key"}))
    world.store.set_value(
        "no-interval", "v1", content_type=None, tags={**managed(1), "rotation-interval-days": ""}
    )
    world.store.set_value(
        "bad-grace", "v1", content_type=None, tags=managed(1, **{"rotation-grace-hours": "soon"})
    )
    world.store.set_value("good", "v1", content_type=None, tags=managed(1))
    created = world.clock.now()
    world.clock.advance(timedelta(days=2))

    report = world.sweep(CORRELATION)

    assert sent(world) == {"good": RotationReason.DUE}  # one bad policy does not stop the others
    assert sorted((v.secret_name, v.tag, v.created) for v in report.violations) == [
        ("bad-grace", "rotation-grace-hours", created),
        ("no-interval", "rotation-interval-days", created),
        ("typo", "secret-kind", created),
    ]
    typo = next(v for v in report.violations if v.secret_name == "typo")
    assert typo == PolicyViolation("typo", "secret-kind", typo.problem, created)
    assert "ssh-key" in typo.problem and not typo.problem.startswith("tag ")
    assert report.counts() == {
        "listed": 4,
        "managed": 1,
        "due": 1,
        "sent": 1,
        "violations": 3,
        "not_sent": 0,
        "unsupported": 0,
    }


def test_reads_nothing_but_the_listing(world: World) -> None:
    for i in range(60):  # more than two list pages' worth
        world.store.set_value(f"secret-{i:02d}", "v1", content_type=None, tags=managed(1 if i % 3 else 90))
    world.store.set_value("broken", "v1", content_type=None, tags=managed(1, **{"secret-kind": "?"}))
    world.store.add_certificate("tls-cert", **managed(1))
    world.clock.advance(timedelta(days=2))
    world.store.calls.clear()

    report = world.sweep(CORRELATION)

    assert world.store.calls == Counter({"list_properties": 1})
    assert report.counts() == {
        "listed": 62,
        "managed": 60,
        "due": 40,
        "sent": 40,
        "violations": 2,
        "not_sent": 0,
        "unsupported": 0,
    }
    assert len(world.requests.batches) == 1  # one batch for the port to send
    assert list(report.due) == sorted(report.due)


def test_send_failure_reports_every_request_as_not_sent(world: World) -> None:
    for name in ("a-key", "b-key", "c-key"):
        world.store.set_value(name, "v1", content_type=None, tags=managed(1))
    world.clock.advance(timedelta(days=2))
    world.requests.available = False

    report = world.sweep(CORRELATION)

    assert report.failed
    assert report.sent == 0
    assert report.not_sent == ("a-key", "b-key", "c-key")
    assert report.due == ("a-key", "b-key", "c-key")
    assert report.send_error is not None and "storage unavailable" in report.send_error


def test_partial_send_failure_names_the_rest(world: World) -> None:
    for name in ("a-key", "b-key", "c-key"):
        world.store.set_value(name, "v1", content_type=None, tags=managed(1))
    world.clock.advance(timedelta(days=2))
    world.requests.fail_after = 1

    report = world.sweep(CORRELATION)

    assert [r.secret_name for r in world.requests.sent] == ["a-key"]
    assert report.failed
    assert report.sent == 1
    assert report.not_sent == ("b-key", "c-key")
    assert report.counts()["not_sent"] == 2


def test_a_failing_listing_raises_and_sends_nothing(world: World) -> None:
    world.store.set_value("dispatch-api-key", "v1", content_type=None, tags=managed(1))
    world.clock.advance(timedelta(days=2))
    world.store.available = False
    with pytest.raises(DependencyUnavailable):
        world.sweep(CORRELATION)
    world.store.available = True
    world.store.denied.add("list_properties")
    with pytest.raises(Forbidden):
        world.sweep(CORRELATION)
    assert world.requests.batches == []


def test_an_unusable_correlation_id_is_refused_before_listing(world: World) -> None:
    with pytest.raises(ValueError):
        world.sweep("two\nlines")
    assert world.store.calls == Counter()


def test_due_secrets_of_a_rotator_this_deployment_cannot_run_are_reported_not_requested(world: World) -> None:
    policy = RotationPolicy(SecretKind.API_KEY, timedelta(days=1))
    world.secret("kv-key", "v", tags=policy.to_tags(), content_type=None, age_days=2)
    webhook = {**policy.to_tags(), "rotator": "webhook", "rotation-target": "https://app.example.com/keys"}
    world.secret("hook-key", "v", tags=webhook, content_type=None, age_days=2)
    report = world.sweep("sweep-1", rotators=(Rotator.KEY_VAULT,))
    assert report.due == ("kv-key",) and report.unsupported == ("hook-key",)
    assert [r.secret_name for r in world.requests.sent] == ["kv-key"]


def test_every_rotator_runs_by_default(world: World) -> None:
    policy = RotationPolicy(SecretKind.API_KEY, timedelta(days=1))
    webhook = {**policy.to_tags(), "rotator": "webhook", "rotation-target": "https://app.example.com/keys"}
    world.secret("hook-key", "v", tags=webhook, content_type=None, age_days=2)
    report = world.sweep("sweep-1")
    assert report.due == ("hook-key",) and report.unsupported == ()
