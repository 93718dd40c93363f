"""Rotation policies parsed from Key Vault tags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.policy import PolicyError, RotationPolicy, Rotator, SecretKind

MANAGED = {"managed-by": "secret-lifecycle", "secret-kind": "api-key", "rotation-interval-days": "30"}


def test_round_trip_through_tags() -> None:
    policy = RotationPolicy(
        SecretKind.JWT_SIGNING_KEY, timedelta(days=90), timedelta(days=120), "dispatch-api"
    )
    assert RotationPolicy.from_tags(policy.to_tags()) == policy
    assert len(policy.to_tags()) <= 15


def test_unmanaged_secrets_are_recognised() -> None:
    assert RotationPolicy.is_managed(MANAGED)
    assert not RotationPolicy.is_managed({"managed-by": "someone-else"})
    assert not RotationPolicy.is_managed(None)
    with pytest.raises(PolicyError) as err:
        RotationPolicy.from_tags({})
    assert err.value.tag == "managed-by"


@pytest.mark.parametrize(
    ("change", "tag"),
    [
        ({"secret-kind": "ssh-key"}, "secret-kind"),
        ({"secret-kind": ""}, "secret-kind"),
        ({"rotation-interval-days": ""}, "rotation-interval-days"),
        ({"rotation-interval-days": "0"}, "rotation-interval-days"),
        ({"rotation-interval-days": "-3"}, "rotation-interval-days"),
        ({"rotation-interval-days": "7.5"}, "rotation-interval-days"),
        ({"rotation-interval-days": "731"}, "rotation-interval-days"),
        ({"validity-days": "10"}, "validity-days"),
        # Under interval + 30 days every new version would be due (near expiry) at once.
        ({"validity-days": "59"}, "validity-days"),
        ({"validity-days": "abc"}, "validity-days"),
        ({"rotator": "ldap"}, "rotator"),
        ({"rotator": "webhook"}, "rotation-target"),
        ({"rotator": "webhook", "rotation-target": "http://app.example.com/rotate"}, "rotation-target"),
        ({"rotator": "webhook", "rotation-target": "https://u:p@app.example.com/rotate"}, "rotation-target"),
        ({"rotator": "postgres-alternating"}, "rotation-target"),
        ({"rotator": "postgres-alternating", "rotation-target": "admin/creds"}, "rotation-target"),
        # The next rotation changes the previous role's password: its grace must be over by then.
        (
            {"rotator": "postgres-alternating", "rotation-target": "a", "rotation-grace-hours": "720"},
            "rotation-grace-hours",
        ),
        ({"rotator": "webhook", "rotation-target": "http://10.0.0.5/rotate"}, "rotation-target"),
        ({"rotation-target": "https://app.example.com/rotate"}, "rotation-target"),
        ({"rotation-grace-hours": "-1"}, "rotation-grace-hours"),
        ({"rotation-grace-hours": "721"}, "rotation-grace-hours"),
        ({"rotation-grace-hours": "1.5"}, "rotation-grace-hours"),
        ({"expiry-warning-days": "30,x"}, "expiry-warning-days"),
        ({"expiry-warning-days": "0"}, "expiry-warning-days"),
        ({"expiry-warning-days": "400"}, "expiry-warning-days"),
        ({"expiry-warning-days": "1,2,3,4,5,6"}, "expiry-warning-days"),
    ],
)
def test_bad_tags_are_named(change: dict[str, str], tag: str) -> None:
    with pytest.raises(PolicyError) as err:
        RotationPolicy.from_tags({**MANAGED, **change})
    assert err.value.tag == tag


def test_due_exactly_at_the_interval() -> None:
    policy = RotationPolicy.from_tags(MANAGED)
    created = datetime(2026, 1, 1, tzinfo=UTC)
    assert not policy.is_due(created, created + timedelta(days=30) - timedelta(seconds=1))
    assert policy.is_due(created, created + timedelta(days=30))
    # Without validity-days a version expires interval + 30 days after creation, so Key Vault's
    # near-expiry event (30 days before exp) comes exactly when the interval says it is due.
    assert policy.expires_on(created) == created + timedelta(days=60)
    assert policy.next_rotation(created, policy.expires_on(created)) == created + timedelta(days=30)
    with_validity = RotationPolicy.from_tags({**MANAGED, "validity-days": "75"})
    assert with_validity.expires_on(created) == created + timedelta(days=75)


def test_the_rotation_tags_round_trip_and_default() -> None:
    policy = RotationPolicy.from_tags(MANAGED)
    assert (policy.rotator, policy.target, policy.grace, policy.warning_days) == (
        Rotator.KEY_VAULT,
        None,
        None,
        (30, 7, 1),
    )
    tagged = RotationPolicy.from_tags(
        {
            **MANAGED,
            "rotator": "webhook",
            "rotation-target": "https://dispatch.example.com/keys",
            "rotation-grace-hours": "0",
            "expiry-warning-days": "7, 14,7",
        }
    )
    assert tagged.rotator == Rotator.WEBHOOK
    assert tagged.target == "https://dispatch.example.com/keys"
    assert tagged.grace == timedelta(0)
    assert tagged.warning_days == (14, 7)
    assert RotationPolicy.from_tags(tagged.to_tags()) == tagged
    assert len(tagged.to_tags()) <= 15
    alternating = RotationPolicy.from_tags(
        {**MANAGED, "rotator": "postgres-alternating", "rotation-target": "pg-admin"}
    )
    assert alternating.target == "pg-admin"


def test_previous_versions_stay_enabled_for_encryption_keys_unless_a_grace_is_set() -> None:
    assert RotationPolicy.from_tags(MANAGED).previous_grace() == timedelta(hours=24)
    keys = {**MANAGED, "secret-kind": "encryption-key"}
    assert RotationPolicy.from_tags(keys).previous_grace() is None
    assert RotationPolicy.from_tags({**keys, "rotation-grace-hours": "48"}).previous_grace() == timedelta(
        hours=48
    )


def test_due_when_the_current_version_nears_its_expiry() -> None:
    policy = RotationPolicy.from_tags({**MANAGED, "rotation-interval-days": "90"})
    created = datetime(2026, 1, 1, tzinfo=UTC)
    expires = created + timedelta(days=40)  # set by hand, sooner than the policy would
    assert not policy.is_due(created, created + timedelta(days=9), expires)
    assert policy.is_due(created, created + timedelta(days=10), expires)  # 30 days before exp
    assert not policy.is_due(created, created + timedelta(days=10))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_a_webhook_on_a_loopback_host_may_be_plain_http(host: str) -> None:
    """For a consumer on a developer's machine; the webhook rotator refuses it outside a development host."""
    tags = {**MANAGED, "rotator": "webhook", "rotation-target": f"http://{host}:8080/rotate"}
    assert RotationPolicy.from_tags(tags).target == f"http://{host}:8080/rotate"


ALTERNATING = {**MANAGED, "secret-kind": "database-password", "rotator": "postgres-alternating"}


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("audit-hmac-key", "own secrets"),
        ("AUDIT-HMAC-KEY", "own secrets"),
        ("audit-digest-anchor", "own secrets"),
        ("fleet-anchor-7", "own secrets"),  # a deployment's own anchor name, passed as reserved
        ("slc-pending-" + "0" * 40, "own secrets"),
        ("slc-webhook-" + "a" * 40, "own secrets"),
        ("Orders-DB", "the secret itself"),
        ("not a name!", "admin credential"),
    ],
)
def test_a_rotation_target_is_checked_when_the_policy_is_parsed(target: str, problem: str) -> None:
    with pytest.raises(PolicyError, match=problem) as err:
        RotationPolicy.from_tags(
            {**ALTERNATING, "rotation-target": target}, name="orders-db", reserved=("fleet-anchor-7",)
        )
    assert err.value.tag == "rotation-target"
    admin = RotationPolicy.from_tags({**ALTERNATING, "rotation-target": "orders-db-admin"}, name="orders-db")
    assert admin.target == "orders-db-admin"


# Found in review: a grace of 0 was taken for the default 24 h in the alternating check.
def test_alternating_with_zero_grace_and_one_day_interval_is_valid() -> None:
    tags = RotationPolicy(
        SecretKind.DATABASE_PASSWORD, timedelta(days=1), rotator=Rotator.POSTGRES_ALTERNATING,
        target="db-admin", grace=timedelta(0),
    ).to_tags()  # fmt: skip
    try:
        RotationPolicy.from_tags(tags)
    except PolicyError as err:
        pytest.fail(f"grace 0 < 1 day refused: {err}")
