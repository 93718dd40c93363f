"""Rotation policies parsed from Key Vault tags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.policy import PolicyError, RotationPolicy, SecretKind

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
        ({"validity-days": "abc"}, "validity-days"),
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
    assert policy.expires_on(created) is None
    with_validity = RotationPolicy.from_tags({**MANAGED, "validity-days": "45"})
    assert with_validity.expires_on(created) == created + timedelta(days=45)
