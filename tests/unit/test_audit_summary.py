"""The audit summary from sealed hourly aggregates: the same answer as counting every record, whatever
part of the window is aggregated; an aggregate or a coverage mark the service did not seal is not used;
aggregating again changes nothing."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from shared.domain.audit import Action, Actor, ActorType, Result
from shared.services.audit import aggregate_hours
from shared.services.audit.summary import summarize_audit
from tests.world import World

ACTIONS = [
    (Action.ROTATED, Result.SUCCESS),
    (Action.ROTATED, Result.INTENT),
    (Action.ROTATION_FAILED, Result.FAILURE),
    (Action.ACCESS_DENIED, Result.DENIED),
    (Action.REVOKED, Result.FAILURE),
]


@pytest.fixture
def world() -> World:
    return World()


def _fill(world: World, hours: int, seed: int = 7) -> None:
    """Records at random moments over ``hours`` hours, ending now."""
    rng = random.Random(seed)
    for _ in range(hours * 3):
        world.clock.advance(timedelta(minutes=rng.randint(1, 40)))
        action, result = rng.choice(ACTIONS)
        world.trail.record(
            action,
            result=result,
            secret_name=rng.choice(["db-password", "api-key", None]),
            version=f"{rng.getrandbits(64):016x}",
            actor=Actor(f"user-{rng.randint(1, 4)}", ActorType.USER),
            error="HTTP 503" if result == Result.FAILURE else None,
        )


def _summary(world: World, days: int) -> dict[str, Any]:
    return summarize_audit([world.audit_peers()], secret_name=None, days=days).to_json()


def _truth(world: World, days: int) -> dict[str, Any]:
    """The summary with no aggregate at all: every record of the window counted from the index."""
    saved = dict(world.log.coverage)
    world.log.coverage.clear()
    try:
        return _summary(world, days)
    finally:
        world.log.coverage.update(saved)


def test_a_summary_from_aggregates_is_the_summary_of_the_records(world: World) -> None:
    _fill(world, 72)
    truth = _truth(world, 2)
    assert aggregate_hours(world.audit_peers()) > 0
    assert world.log.coverage and world.log.aggregates
    assert _summary(world, 2) == truth
    assert _summary(world, 1) == _truth(world, 1)
    assert truth["total"] > 0 and truth["failures"]["count"] > 0 and truth["last_rotation"] is not None


class CountingReader:
    """The fake log as the summary reads it, the records it reads from the index counted."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.rows = 0

    def page_records(self, *args: Any, **kwargs: Any) -> Any:
        rows, after = self.inner.page_records(*args, **kwargs)
        self.rows += len(rows)
        return rows, after

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_summary_reads_the_records_of_the_hours_not_aggregated_only(world: World) -> None:
    _fill(world, 72)
    aggregate_hours(world.audit_peers())
    counting = CountingReader(world.log)
    summary = summarize_audit([world.audit_peers(counting)], secret_name=None, days=2).to_json()
    assert summary == _truth(world, 2)
    # At most the first, partial hour and the hours since the coverage mark: a handful, not the window.
    assert counting.rows < summary["total"] / 5, (counting.rows, summary["total"])


def test_records_after_the_coverage_are_counted_from_the_index(world: World) -> None:
    _fill(world, 48)
    aggregate_hours(world.audit_peers())
    _fill(world, 5, seed=8)  # newer than the coverage mark
    assert _summary(world, 3) == _truth(world, 3)


def test_aggregating_again_changes_nothing(world: World) -> None:
    _fill(world, 30)
    assert aggregate_hours(world.audit_peers()) > 0
    stored = {k: dict(v) for k, v in world.log.aggregates.items()}
    assert aggregate_hours(world.audit_peers()) == 0
    assert world.log.aggregates == stored


def test_an_aggregate_the_service_did_not_seal_is_counted_from_its_records(world: World) -> None:
    _fill(world, 48)
    truth = _truth(world, 2)
    aggregate_hours(world.audit_peers())
    (vault, hour), fields = max(world.log.aggregates.items(), key=lambda item: item[1]["total"])
    world.log.aggregates[(vault, hour)] = {**fields, "total": 0, "counts": "{}", "failures": 0}
    assert _summary(world, 2) == truth


def test_a_coverage_mark_the_service_did_not_seal_is_not_used(world: World) -> None:
    _fill(world, 48)
    aggregate_hours(world.audit_peers())
    [(vault, mark)] = world.log.coverage.items()
    # Pushed into the future, the aggregates would seem to cover hours that have no aggregate yet.
    world.log.coverage[vault] = {**mark, "up_to": "2999-01-01T00:00:00.000000Z"}
    _fill(world, 3, seed=9)
    assert _summary(world, 3) == _truth(world, 3)
