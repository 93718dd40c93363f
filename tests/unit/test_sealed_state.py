"""Sealed states: every stored state carries a MAC over its table, keys and properties; a row a storage
writer wrote, edited, moved or copied is refused (never acted on) and reported once — a STATE_TAMPERED
record naming the row's keys and the failed check (never its contents), a finding and an event."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from shared.domain.audit import Action, Result
from shared.domain.policy import RotationPolicy, SecretKind
from shared.domain.rotation import RotationReason, RotationRequest
from shared.domain.state import MAC_FIELD, StateTampered, StateWrite
from shared.services import expiry, rotation
from shared.services.findings import TamperAlarm
from shared.services.sealed_state import SealedStateStore
from tests.world import STATE_TABLE, World

TABLE = STATE_TABLE


@pytest.fixture
def world() -> World:
    return World(sealed=True)


def test_what_is_written_reads_back_and_carries_a_seal(world: World) -> None:
    made = world.states.create("rotation", "dispatch-api-key", {"step": "idle", "attempt": 2, "done": True})
    assert dict(made.state) == {"step": "idle", "attempt": 2, "done": True}
    raw = world.rows.get("rotation", "dispatch-api-key")
    assert raw is not None and MAC_FIELD in raw.state
    read = world.states.get("rotation", "dispatch-api-key")
    assert read is not None and dict(read.state) == {"step": "idle", "attempt": 2, "done": True}
    world.states.replace("rotation", "dispatch-api-key", {"step": "promoting", "attempt": 3}, read.etag)
    again = world.states.get("rotation", "dispatch-api-key")
    assert again is not None and again.state["step"] == "promoting"
    [_, other] = world.states.commit("rotation", [StateWrite("a", {"x": "1"}), StateWrite("b", {"y": "2"})])
    assert world.states.list("rotation")["a"].state == {"x": "1"} and other.state == {"y": "2"}


def forgeries(world: World) -> dict[str, dict[str, Any]]:
    world.states.create("rotation", "victim", {"step": "idle", "lease_until": "2026-01-01T00:00:00.000000Z"})
    world.states.create("rotation", "other", {"step": "idle"})
    sealed = world.rows.get("rotation", "victim")
    other = world.rows.get("rotation", "other")
    assert sealed is not None and other is not None
    return {
        "no seal": {"step": "promoting", "lease_until": "2099-01-01T00:00:00.000000Z"},
        "mac mismatch": {**sealed.state, "step": "promoting"},  # one property edited, the seal kept
        "moved": dict(other.state),  # another row's sealed state copied here
        "unknown key": {**sealed.state, "state_key_id": "key-that-never-was"},
    }


@pytest.mark.parametrize("kind", ["no seal", "mac mismatch", "moved", "unknown key"])
def test_a_row_a_storage_writer_wrote_is_refused_and_reported_once(world: World, kind: str) -> None:
    forged = forgeries(world)[kind]
    world.overwrite("rotation", "victim", forged)
    for _ in range(3):  # read again and again: reported once
        with pytest.raises(StateTampered) as err:
            world.states.get("rotation", "victim")
    expected = {"no seal": "no seal", "unknown key": "unknown key"}.get(kind, "mac mismatch")
    assert (err.value.partition, err.value.key, err.value.check) == ("rotation", "victim", expected)
    [tampered] = world.records(Action.STATE_TAMPERED)
    assert tampered.result == Result.FAILURE and tampered.secret_name is None  # the service chain
    assert {k: tampered.details[k] for k in ("table", "partition", "key", "check")} == {
        "table": TABLE, "partition": "rotation", "key": "victim", "check": expected,
    }  # fmt: skip
    assert "promoting" not in repr(tampered.details) and "2099" not in repr(tampered.details)  # no contents
    [suspicious] = world.records(Action.SUSPICIOUS_ACTIVITY)
    assert suspicious.details["rule"] == "state_tampered"
    assert tampered.details["finding_id"] == suspicious.details["finding_id"]
    [event] = world.publisher.sent
    assert (event.type, event.id) == ("SecretLifecycle.SuspiciousActivity", suspicious.details["finding_id"])
    finding = world.findings.get(event.id)
    assert finding is not None and finding.audited and finding.notified


def test_a_second_tampering_of_the_same_row_is_reported_again(world: World) -> None:
    world.states.create("rotation", "victim", {"step": "idle"})
    world.overwrite("rotation", "victim", {"step": "promoting"})
    with pytest.raises(StateTampered):
        world.states.get("rotation", "victim")
    world.overwrite("rotation", "victim", {"step": "promoting", "holder": "mallory"})
    with pytest.raises(StateTampered):
        world.states.get("rotation", "victim")
    assert len(world.records(Action.STATE_TAMPERED)) == 2


def test_another_process_reports_a_tampering_once_too(world: World) -> None:
    """The in-process memory is only a shortcut: the finding's claim is what makes it once."""
    world.overwrite("revocation", "f" * 32, {"document": "{}"})
    with pytest.raises(StateTampered):
        world.states.get("revocation", "f" * 32)
    fresh = TamperAlarm(lambda: world.finding_peers)
    other = SealedStateStore(world.rows, world.keys, TABLE, fresh)  # a second worker process
    with pytest.raises(StateTampered):
        other.get("revocation", "f" * 32)
    assert len(world.records(Action.STATE_TAMPERED)) == 1


def test_a_listing_shows_a_tampered_row_with_no_contents(world: World) -> None:
    world.states.create("revocation", "a" * 32, {"document": "{}", "status": "pending"})
    world.overwrite("revocation", "b" * 32, {"document": "{}", "status": "approved"})
    listed = world.states.list("revocation")
    assert listed["a" * 32].tampered is None and listed["a" * 32].state["status"] == "pending"
    assert (listed["b" * 32].tampered, dict(listed["b" * 32].state)) == ("no seal", {})
    assert len(world.records(Action.STATE_TAMPERED)) == 1


def test_rows_sealed_with_an_older_key_still_read_after_the_key_rotates(world: World) -> None:
    world.states.create("rotation", "old", {"step": "idle"})
    world.keys.keys["key2"] = b"\x02" * 32
    world.keys.current_id = "key2"
    world.states.create("rotation", "new", {"step": "idle"})
    assert world.states.get("rotation", "old") is not None and world.states.get("rotation", "new") is not None
    raw = world.rows.get("rotation", "new")
    assert raw is not None and raw.state["state_key_id"] == "key2"


def test_what_storage_would_not_give_back_as_written_is_never_sealed(world: World) -> None:
    with pytest.raises(ValueError, match="ratio"):
        world.states.create("rotation", "x", {"ratio": 0.5})
    with pytest.raises(ValueError, match="count"):
        world.states.create("rotation", "x", {"count": 2**40})


def test_a_finding_claim_a_storage_writer_planted_does_not_suppress_the_finding(world: World) -> None:
    """A row put where a finding will be claimed (saying it was audited and notified) is taken over."""
    world.overwrite("rotation", "victim", {"step": "promoting"})
    with pytest.raises(StateTampered):
        world.states.get("rotation", "victim")
    [reported] = world.records(Action.STATE_TAMPERED)
    fid = reported.details["finding_id"]
    world.finding_rows.rows.clear()
    world.log.records.clear()
    world.log.heads.clear()
    world.finding_rows.create("finding", fid, {"rule": "state_tampered", "audited": True, "notified": True})
    fresh = TamperAlarm(lambda: world.finding_peers)
    with pytest.raises(StateTampered):
        SealedStateStore(world.rows, world.keys, TABLE, fresh).get("rotation", "victim")
    # Both tamperings are on record: the planted finding row and the rotation row it was to hide.
    named = sorted((e.details["partition"], e.details["key"]) for e in world.records(Action.STATE_TAMPERED))
    assert named == [("finding", fid), ("rotation", "victim")]
    finding = world.findings.get(fid)
    assert finding is not None and finding.audited and finding.notified


def test_the_alarm_never_stops_the_refusal_and_what_it_could_not_record_is_reported_later(
    world: World,
) -> None:
    world.log.available = False  # the audit store is down: the alarm claims the finding, cannot record it
    world.overwrite("rotation", "victim", {"step": "promoting"})
    with pytest.raises(StateTampered):
        world.states.get("rotation", "victim")
    assert world.records(Action.STATE_TAMPERED) == []
    world.log.available = True
    world.clock.advance(timedelta(minutes=15))
    world.scan()
    [tampered] = world.records(Action.STATE_TAMPERED)  # the pending finding carries its cause
    assert tampered.details["key"] == "victim"
    assert [e.type for e in world.publisher.sent] == ["SecretLifecycle.SuspiciousActivity"]


# -- what the services do with a tampered row --------------------------------------------------------

NAME = "dispatch-api-key"


def _rotated(world: World) -> str:
    """A managed secret rotated once through the sealed store: the replaced version."""
    policy = RotationPolicy(SecretKind.API_KEY, timedelta(days=30))
    old = world.secret(NAME, "v1", tags=policy.to_tags(), age_days=31).version
    outcome = world.rotate(NAME)
    assert outcome.status == "rotated"
    return old


def test_a_tampered_retirement_schedule_is_re_derived_from_the_vault(world: World) -> None:
    old = _rotated(world)
    world.overwrite("rotation", rotation.schedule_key(NAME), {"versions": "[]"})  # "nothing to retire"
    world.clock.advance(timedelta(hours=25))
    retired, failed = world.retire_all()
    assert (retired, failed) == ([(NAME, old)], [])
    assert not world.store.get_properties(NAME, old).enabled
    assert len(world.records(Action.STATE_TAMPERED)) == 1


def test_a_tampered_progress_row_stops_the_rotation_with_a_record(world: World) -> None:
    _rotated(world)
    world.clock.advance(timedelta(days=31))  # due again
    world.overwrite("rotation", NAME, {"step": "idle"})
    request = RotationRequest(
        secret_name=NAME, reason=RotationReason.DUE, requested_at=world.clock.now(), correlation_id="sweep"
    )
    outcome = world.rotate_requested(request)
    assert outcome.status == "skipped" and "tampered" in outcome.reason
    assert len(world.store.versions_of(NAME)) == 2  # nothing written
    [skipped] = world.records(Action.ROTATION_SKIPPED)
    assert "tampered" in skipped.details["reason"]


def test_a_claim_forged_to_say_done_does_not_suppress_the_violation(world: World) -> None:
    tags = {**RotationPolicy(SecretKind.API_KEY, timedelta(days=30)).to_tags(), "rotation-interval-days": "x"}
    made = world.secret(NAME, "v1", tags=tags)
    world.overwrite(
        "policy-violation", f"{NAME}:{made.version}", {"tag": "rotation-interval-days", "done": True}
    )
    outcome = world.rotate(NAME)
    assert outcome.status == "skipped"
    [violation] = world.records(Action.POLICY_VIOLATION)
    assert violation.details == {"tag": "rotation-interval-days"}


def test_an_expiry_notice_forged_as_done_is_sent_all_the_same(world: World) -> None:
    expires = world.clock.now() + timedelta(days=5)
    made = world.secret("plain-secret", "v", tags={}, content_type=None, expires=expires)
    world.overwrite(expiry.NOTICES, expiry.notice_key("plain-secret", made.version, "7d"), {"status": "done"})
    report = world.check_expiry(correlation_id="c")
    assert [e.details.get("threshold_days") for e in world.records(Action.EXPIRY_WARNING)] == [7]
    assert report is not None


def test_a_tampered_row_under_any_key_is_reported_and_the_scan_goes_on(world: World) -> None:
    """A key of 300 emoji (1.2 KB) would not fit a record's details if it were named as it is."""
    key = "\U0001f511" * 300
    world.overwrite("rotation", key, {"step": "promoting"})
    with pytest.raises(StateTampered):
        world.states.get("rotation", key)
    [tampered] = world.records(Action.STATE_TAMPERED)
    assert tampered.details["key"] == "?" * 200
    report = world.scan()
    assert report.ok
