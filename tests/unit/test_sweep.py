"""The rotation sweep over the in-memory vault and a recording queue: which secrets it asks to rotate,
which it leaves alone, what it reports, and that it reads nothing but the listing."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from shared.domain.errors import DependencyUnavailable, Forbidden
from shared.domain.policy import RotationPolicy, Rotator, SecretKind
from shared.domain.rotation import RotationReason, RotationRequest
from shared.services.sweep import DueSecret, PolicyViolation, SweepReport, sweep
from tests.fakes import FixedClock, InMemorySecretStore, RecordingRotationRequests

RESERVED = ("audit-hmac-key", "audit-digest-anchor")
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
def store(clock: FixedClock) -> CountingSecretStore:
    return CountingSecretStore(clock)


@pytest.fixture
def queue() -> RecordingRotationRequests:
    return RecordingRotationRequests()


def run(store: InMemorySecretStore, queue: RecordingRotationRequests, clock: FixedClock) -> SweepReport:
    return sweep(store, queue, clock, reserved=RESERVED, correlation_id=CORRELATION)


def sent(queue: RecordingRotationRequests) -> dict[str, RotationReason]:
    return {r.secret_name: r.reason for r in queue.sent}


def test_due_by_interval(
    store: CountingSecretStore, queue: RecordingRotationRequests, clock: FixedClock
) -> None:
    store.set_value("dispatch-api-key", "v1", content_type=None, tags=managed(30))
    clock.advance(timedelta(days=30))

    report = run(store, queue, clock)

    assert queue.sent == [
        RotationRequest(
            secret_name="dispatch-api-key",
            reason=RotationReason.DUE,
            requested_at=clock.now(),
            correlation_id=CORRELATION,
        )
    ]
    created = clock.now() - timedelta(days=30)
    assert report == SweepReport(
        listed=1, managed=1, due=("dispatch-api-key",), sent=1, violations=(),
        due_since=(DueSecret("dispatch-api-key", created, clock.now()),),
    )  # fmt: skip
    assert not report.failed


def test_due_by_expiry_window_is_near_expiry(
    store: CountingSecretStore, queue: RecordingRotationRequests, clock: FixedClock
) -> None:
    # Interval 90 days, but the version expires in 40: it enters the 30-day window after 10 days.
    expires = clock.now() + timedelta(days=40)
    store.set_value("fleet-db-password", "v1", content_type=None, tags=managed(90), expires=expires)
    clock.advance(timedelta(days=9))
    assert run(store, queue, clock).due == ()

    clock.advance(timedelta(days=1))
    report = run(store, queue, clock)

    assert sent(queue) == {"fleet-db-password": RotationReason.NEAR_EXPIRY}
    assert report.due == ("fleet-db-password",)


def test_due_by_both_is_due(
    store: CountingSecretStore, queue: RecordingRotationRequests, clock: FixedClock
) -> None:
    store.set_value(
        "jwt", "v1", content_type=None, tags=managed(30), expires=clock.now() + timedelta(days=35)
    )
    clock.advance(timedelta(days=31))

    run(store, queue, clock)

    assert sent(queue) == {"jwt": RotationReason.DUE}


def test_not_due_sends_nothing(
    store: CountingSecretStore, queue: RecordingRotationRequests, clock: FixedClock
) -> None:
    store.set_value("dispatch-api-key", "v1", content_type=None, tags=managed(30))
    clock.advance(timedelta(days=29, hours=23))

    report = run(store, queue, clock)

    assert report == SweepReport(listed=1, managed=1, due=(), sent=0, violations=())
    assert queue.batches == []  # not even an empty send: the queue is not touched


def test_unmanaged_and_disabled_secrets_are_left_alone(
    store: CountingSecretStore, queue: RecordingRotationRequests, clock: FixedClock
) -> None:
    store.set_value("hand-made", "v1", content_type=None, tags={"rotation-interval-days": "1"})
    store.set_value("other-owner", "v1", content_type=None, tags={**managed(1), "managed-by": "terraform"})
    store.set_value("retired", "v1", content_type=None, tags=managed(1), enabled=False)
    clock.advance(timedelta(days=400))

    report = run(store, queue, clock)

    assert report == SweepReport(listed=3, managed=0, due=(), sent=0, violations=())
    assert queue.sent == []


def test_certificate_backed_secrets_are_never_requested(
    store: CountingSecretStore, queue: RecordingRotationRequests, clock: FixedClock
) -> None:
    store.add_certificate("tls-cert", **managed(1))
    clock.advance(timedelta(days=400))

    report = run(store, queue, clock)

    assert queue.sent == []
    assert report.managed == 0
    assert [(v.secret_name, v.tag) for v in report.violations] == [("tls-cert", "managed-by")]
    assert "certificate" in report.violations[0].problem


def test_reserved_secrets_are_never_touched_even_when_tagged_managed(
    store: CountingSecretStore, queue: RecordingRotationRequests, clock: FixedClock
) -> None:
    # Someone tags the service's own secrets as managed, in any case (Key Vault names ignore it).
    store.set_value("Audit-HMAC-Key", "mac-key", content_type=None, tags=managed(1))
    store.set_value("audit-digest-anchor", "digest", content_type=None, tags=managed(1))
    store.set_value("dispatch-api-key", "v1", content_type=None, tags=managed(1))
    clock.advance(timedelta(days=400))
    before = {name: store.versions_of(name) for name in ("audit-hmac-key", "audit-digest-anchor")}
    store.calls.clear()

    report = run(store, queue, clock)

    assert sent(queue) == {"dispatch-api-key": RotationReason.DUE}
    assert report.due == ("dispatch-api-key",)
    assert {v.secret_name for v in report.violations} == {"Audit-HMAC-Key", "audit-digest-anchor"}
    assert store.calls == Counter({"list_properties": 1})
    assert {name: store.versions_of(name) for name in before} == before
    assert store.get_value("audit-hmac-key").value == "mac-key"


def test_invalid_policy_is_a_violation_naming_the_tag(
    store: CountingSecretStore, queue: RecordingRotationRequests, clock: FixedClock
) -> None:
    store.set_value("typo", "v1", content_type=None, tags=managed(1, **{"secret-kind": "ssh-key"}))
    store.set_value("no-interval", "v1", content_type=None, tags={**managed(1), "rotation-interval-days": ""})
    store.set_value("bad-grace", "v1", content_type=None, tags=managed(1, **{"rotation-grace-hours": "soon"}))
    store.set_value("good", "v1", content_type=None, tags=managed(1))
    created = clock.now()
    clock.advance(timedelta(days=2))

    report = run(store, queue, clock)

    assert sent(queue) == {"good": RotationReason.DUE}  # one bad policy does not stop the others
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


def test_reads_nothing_but_the_listing(
    store: CountingSecretStore, queue: RecordingRotationRequests, clock: FixedClock
) -> None:
    for i in range(60):  # more than two list pages' worth
        store.set_value(f"secret-{i:02d}", "v1", content_type=None, tags=managed(1 if i % 3 else 90))
    store.set_value("broken", "v1", content_type=None, tags=managed(1, **{"secret-kind": "?"}))
    store.add_certificate("tls-cert", **managed(1))
    clock.advance(timedelta(days=2))
    store.calls.clear()

    report = run(store, queue, clock)

    assert store.calls == Counter({"list_properties": 1})
    assert report.counts() == {
        "listed": 62,
        "managed": 60,
        "due": 40,
        "sent": 40,
        "violations": 2,
        "not_sent": 0,
        "unsupported": 0,
    }
    assert len(queue.batches) == 1  # one batch for the port to send
    assert list(report.due) == sorted(report.due)


def test_send_failure_reports_every_request_as_not_sent(
    store: CountingSecretStore, queue: RecordingRotationRequests, clock: FixedClock
) -> None:
    for name in ("a-key", "b-key", "c-key"):
        store.set_value(name, "v1", content_type=None, tags=managed(1))
    clock.advance(timedelta(days=2))
    queue.available = False

    report = run(store, queue, clock)

    assert report.failed
    assert report.sent == 0
    assert report.not_sent == ("a-key", "b-key", "c-key")
    assert report.due == ("a-key", "b-key", "c-key")
    assert report.send_error is not None and "storage unavailable" in report.send_error


def test_partial_send_failure_names_the_rest(
    store: CountingSecretStore, queue: RecordingRotationRequests, clock: FixedClock
) -> None:
    for name in ("a-key", "b-key", "c-key"):
        store.set_value(name, "v1", content_type=None, tags=managed(1))
    clock.advance(timedelta(days=2))
    queue.fail_after = 1

    report = run(store, queue, clock)

    assert [r.secret_name for r in queue.sent] == ["a-key"]
    assert report.failed
    assert report.sent == 1
    assert report.not_sent == ("b-key", "c-key")
    assert report.counts()["not_sent"] == 2


def test_a_failing_listing_raises_and_sends_nothing(
    store: CountingSecretStore, queue: RecordingRotationRequests, clock: FixedClock
) -> None:
    store.set_value("dispatch-api-key", "v1", content_type=None, tags=managed(1))
    clock.advance(timedelta(days=2))
    store.available = False
    with pytest.raises(DependencyUnavailable):
        run(store, queue, clock)
    store.available = True
    store.denied.add("list_properties")
    with pytest.raises(Forbidden):
        run(store, queue, clock)
    assert queue.batches == []


def test_an_unusable_correlation_id_is_refused_before_listing(
    store: CountingSecretStore, queue: RecordingRotationRequests, clock: FixedClock
) -> None:
    with pytest.raises(ValueError):
        sweep(store, queue, clock, reserved=RESERVED, correlation_id="two\nlines")
    assert store.calls == Counter()


def test_due_secrets_of_a_rotator_this_deployment_cannot_run_are_reported_not_requested() -> None:
    clock = FixedClock()
    store = InMemorySecretStore(clock)
    requests = RecordingRotationRequests()
    policy = RotationPolicy(SecretKind.API_KEY, timedelta(days=1))
    clock.advance(timedelta(days=-2))
    store.set_value("kv-key", "v", content_type=None, tags=policy.to_tags())
    webhook = {**policy.to_tags(), "rotator": "webhook", "rotation-target": "https://app.example.com/keys"}
    store.set_value("hook-key", "v", content_type=None, tags=webhook)
    clock.advance(timedelta(days=2))
    only_key_vault = (Rotator.KEY_VAULT,)
    report = sweep(store, requests, clock, reserved=(), correlation_id="sweep-1", rotators=only_key_vault)
    assert report.due == ("kv-key",) and report.unsupported == ("hook-key",)
    assert [r.secret_name for r in requests.sent] == ["kv-key"]


def test_every_rotator_runs_by_default() -> None:
    clock = FixedClock()
    store = InMemorySecretStore(clock)
    requests = RecordingRotationRequests()
    policy = RotationPolicy(SecretKind.API_KEY, timedelta(days=1))
    clock.advance(timedelta(days=-2))
    webhook = {**policy.to_tags(), "rotator": "webhook", "rotation-target": "https://app.example.com/keys"}
    store.set_value("hook-key", "v", content_type=None, tags=webhook)
    clock.advance(timedelta(days=2))
    report = sweep(store, requests, clock, reserved=(), correlation_id="sweep-1")
    assert report.due == ("hook-key",) and report.unsupported == ()
