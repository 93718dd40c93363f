"""Rotation requests: the queue message's JSON round trip, and strict refusal of anything else."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from shared.domain.rotation import MAX_MESSAGE_CHARS, RotationReason, RotationRequest
from tests.fakes import FakeKeyRing

WHEN = datetime(2026, 11, 29, 10, 0, 0, 123456, tzinfo=UTC)


def _request(**changes: Any) -> RotationRequest:
    fields: dict[str, Any] = {
        "secret_name": "dispatch-api-key",
        "reason": RotationReason.DUE,
        "requested_at": WHEN,
        "correlation_id": "sweep-6f1c2a",
    }
    return RotationRequest(**{**fields, **changes})


def _message(**changes: Any) -> str:
    fields = json.loads(_request().to_json())
    fields.update(changes)
    return json.dumps({k: v for k, v in fields.items() if v is not ...})


@pytest.mark.parametrize("reason", list(RotationReason))
def test_round_trip(reason: RotationReason) -> None:
    request = _request(reason=reason)
    assert RotationRequest.from_json(request.to_json()) == request
    assert RotationRequest.from_json(request.to_json().encode()) == request


def test_times_are_written_and_read_in_utc() -> None:
    local = WHEN.astimezone(timezone(timedelta(hours=2)))
    text = _request(requested_at=local).to_json()
    assert json.loads(text)["requested_at"] == "2026-11-29T10:00:00.123456+00:00"
    parsed = RotationRequest.from_json(text)
    assert parsed.requested_at == WHEN
    assert parsed.requested_at.tzinfo == UTC


def test_reason_values_are_the_documented_ones() -> None:
    assert [r.value for r in RotationReason] == ["due", "near_expiry", "event", "manual", "resume"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        '"dispatch-api-key"',
        "null",
        _message(reason="rotate-now"),
        _message(reason=None),
        _message(secret_name="bad name!"),
        _message(secret_name="x" * 128),
        _message(secret_name=""),
        _message(secret_name=42),
        _message(requested_at="yesterday"),
        _message(requested_at="2026-11-29T10:00:00"),  # no zone: which moment?
        _message(requested_at=1764410400),
        _message(correlation_id=""),
        _message(correlation_id="with space"),
        _message(correlation_id="line\nbreak"),
        _message(correlation_id="x" * 129),
        _message(secret_name=...),  # missing
        _message(correlation_id=...),
        _message(value="s3cr3t"),  # unknown field
        '{"secret_name":"a","secret_name":"b","reason":"due",'
        '"requested_at":"2026-11-29T10:00:00+00:00","correlation_id":"c"}',  # duplicate field
        _message(correlation_id="x" * MAX_MESSAGE_CHARS),  # oversized message
        b"\xff\xfe not utf-8".decode("latin-1"),
    ],
)
def test_malformed_messages_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        RotationRequest.from_json(text)


def test_undecodable_bytes_raise_value_error() -> None:
    with pytest.raises(ValueError):
        RotationRequest.from_json(b"\xff\xfe{}")


@pytest.mark.parametrize(
    "changes",
    [
        {"secret_name": "bad name"},
        {"reason": "due"},  # a plain string is not a RotationReason
        {"requested_at": datetime(2026, 11, 29, 10, 0)},  # naive
        {"correlation_id": ""},
    ],
)
def test_invalid_requests_cannot_be_built(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        _request(**changes)


def test_manual_requests_carry_force_and_their_rotation_id() -> None:
    request = _request(reason=RotationReason.MANUAL, force=True, rotation_id="ab" * 16)
    assert RotationRequest.from_json(request.to_json()) == request
    assert json.loads(request.to_json())["rotation_id"] == "ab" * 16


def test_the_optional_fields_are_written_only_when_set_so_older_messages_are_unchanged() -> None:
    assert set(json.loads(_request().to_json())) == {
        "secret_name",
        "reason",
        "requested_at",
        "correlation_id",
    }
    older = RotationRequest.from_json(_message())
    assert (older.force, older.rotation_id) == (False, None)
    assert RotationRequest.from_json(_message(force=False)).force is False


@pytest.mark.parametrize(
    "text",
    [
        _message(force="true"),
        _message(force=1),
        _message(force=None),
        _message(rotation_id=None),
        _message(rotation_id="AB" * 16),  # upper case
        _message(rotation_id="ab" * 15),
        _message(rotation_id="g" * 32),
        _message(rotation_id=42),
        _message(rotation_id="ab" * 16, value="x"),
    ],
)
def test_malformed_new_fields_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        RotationRequest.from_json(text)


@pytest.mark.parametrize("changes", [{"force": "yes"}, {"rotation_id": "not-hex"}, {"rotation_id": "A" * 32}])
def test_invalid_new_fields_cannot_be_built(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        _request(**changes)


def test_a_sealed_request_survives_the_queue_and_any_edit_breaks_its_seal() -> None:
    keys = FakeKeyRing()
    request = RotationRequest(
        secret_name="dispatch-api-key", reason=RotationReason.MANUAL, requested_at=datetime.now(UTC),
        correlation_id="c", force=True, rotation_id="a" * 32,
    ).sealed("key1", keys.keys["key1"])  # fmt: skip
    received = RotationRequest.from_json(request.to_json())
    assert received == request and received.seal_problem(keys.get) is None
    assert dataclasses.replace(received, force=False).seal_problem(keys.get) == "mac mismatch"
    assert dataclasses.replace(received, secret_name="billing-key").seal_problem(keys.get) == "mac mismatch"
    assert dataclasses.replace(received, seal_key="other").seal_problem(keys.get) == "unknown key"
    assert dataclasses.replace(received, seal=None).seal_problem(keys.get) == "no seal"
