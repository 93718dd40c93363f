"""What ``GET /api/audit/verify`` answers for the whole trail: the last full verification, sealed, unless a
fresh one is asked for, none is stored, its seal fails, it is older than a day and an hour, or the digest
writer found a regression since."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.domain.audit import Action
from shared.services.audit import verification
from shared.services.audit.verification import VERIFICATION_MAX_AGE
from tests.world import World


@pytest.fixture
def world() -> World:
    w = World()
    for i in range(3):
        w.clock.advance(timedelta(minutes=1))
        w.trail.record(Action.ROTATED, secret_name="db-password", version=f"{i:032x}")
    return w


def test_the_last_full_verification_is_the_answer_until_a_fresh_one_is_asked_for(world: World) -> None:
    first = verification(world.audit_peers())
    assert first.status == "ok" and first.verified_at == world.clock.now() and first.duration_ms is not None
    world.clock.advance(timedelta(hours=2))
    world.log.records["fleet:db-password"][0] = world.log.records["fleet:db-password"][1]  # edited
    assert verification(world.audit_peers()) == first
    fresh = verification(world.audit_peers(), fresh=True)
    assert fresh.status == "broken" and fresh.verified_at == world.clock.now()
    assert verification(world.audit_peers()) == fresh


def test_a_stored_answer_the_service_did_not_seal_is_not_given(world: World) -> None:
    verification(world.audit_peers())
    world.log.records["fleet:db-password"][0] = world.log.records["fleet:db-password"][1]
    [stored] = world.log.verifications.values()
    # A storage writer edits the stored "ok" (here its record count): its seal no longer holds.
    assert '"records": 3' in stored["report"]
    world.log.verifications["fleet"] = {
        **stored,
        "report": stored["report"].replace('"records": 3', '"records": 4'),
    }
    assert verification(world.audit_peers()).status == "broken"


def test_a_day_old_answer_is_verified_again(world: World) -> None:
    verification(world.audit_peers())
    world.log.records["fleet:db-password"][0] = world.log.records["fleet:db-password"][1]
    world.clock.advance(VERIFICATION_MAX_AGE - timedelta(minutes=1))
    assert verification(world.audit_peers()).status == "ok"
    world.clock.advance(timedelta(minutes=2))
    assert verification(world.audit_peers()).status == "broken"


def test_a_regression_the_digest_writer_finds_drops_the_stored_answer(world: World) -> None:
    world.write_digest()
    assert verification(world.audit_peers()).status == "ok"
    world.log.records["fleet:db-password"].clear()
    world.log.heads.pop("fleet:db-password")
    world.clock.advance(timedelta(hours=1))
    outcome = world.write_digest()
    assert outcome.new_regressions
    answer = verification(world.audit_peers())
    assert answer.status == "broken" and answer.verified_at == world.clock.now()
