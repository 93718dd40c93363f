"""The hourly evidence the compliance report reads: the same records as the index holds, whatever part of
the window is sealed; parts split to fit a table property and refused when one is missing, copied, forged
or another vault's; the aggregates' running count goes on across aggregation runs, so a deleted hour shows."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.domain.audit import Action, Actor, ActorType, AuditEvent, Result
from shared.domain.audit.aggregates import (
    AGGREGATE,
    COVERAGE,
    HOUR,
    authentic_aggregate,
    authentic_coverage_mark,
    coverage_fields,
    seal_fields,
)
from shared.domain.audit.evidence import (
    EVIDENCE_DETAILS,
    PART_CHARS,
    authentic_evidence,
    evidence_counts,
    evidence_parts,
    is_evidence,
)
from shared.services.audit import aggregate_hours
from shared.services.audit.evidence import read_evidence
from tests.fakes import FakeKeyRing
from tests.world import World

HOUR0 = datetime(2026, 11, 2, 14, tzinfo=UTC)
KEYS = FakeKeyRing()
ACTIONS = [
    (Action.ROTATED, Result.SUCCESS),
    (Action.ROTATED, Result.INTENT),
    (Action.ROTATION_FAILED, Result.FAILURE),
    (Action.ACCESS_DENIED, Result.DENIED),
    (Action.REVOCATION_APPROVED, Result.SUCCESS),
    (Action.EXPIRY_WARNING, Result.SUCCESS),
    (Action.VERSION_RETIRED, Result.SUCCESS),
]


def denial(n: int, reason: str = "") -> AuditEvent:
    return AuditEvent(
        Action.ACCESS_DENIED, "fleet", HOUR0 + timedelta(seconds=n), Result.DENIED,
        Actor(f"oid-{n}", ActorType.USER, ip="203.0.113.9", user_agent="curl/8"),
        details={"reason": reason, "path": "/api/x"}, correlation_id="c-1",
    )  # fmt: skip


def sealed(events: list[AuditEvent], vault: str = "fleet") -> list[dict[str, object]]:
    key_id, key = KEYS.current()
    return evidence_parts(vault, HOUR0, events, key_id, key)


def test_an_hours_evidence_is_its_records_cut_to_what_the_report_reads() -> None:
    events = [denial(n, "r" * 50) for n in range(3)]
    intent = AuditEvent(Action.ROTATED, "fleet", HOUR0, Result.INTENT)
    other = AuditEvent(Action.EXPIRY_WARNING, "fleet", HOUR0)
    parts = sealed([*events, intent, other])
    found = authentic_evidence("fleet", HOUR0, parts, evidence_counts(events), KEYS.get)
    assert found is not None and [e.id for e in found] == [e.id for e in events]
    first = found[0]
    assert (first.actor.id, first.actor.ip, first.actor.user_agent, first.correlation_id) == (
        "oid-0", None, None, None
    )  # fmt: skip
    assert dict(first.details) == {"reason": "r" * 50} and "reason" in EVIDENCE_DETAILS
    assert not is_evidence(intent) and not is_evidence(other)


def test_a_busy_hour_is_split_into_parts_that_fit_a_table_property() -> None:
    events = [denial(n, "é" * 600) for n in range(200)]  # escaped: 6 characters each
    parts = sealed(events)
    assert len(parts) > 20 and all(len(str(p["rows"])) <= PART_CHARS for p in parts)
    assert {p["parts"] for p in parts} == {len(parts)}
    found = authentic_evidence("fleet", HOUR0, list(reversed(parts)), evidence_counts(events), KEYS.get)
    assert found is not None and [e.id for e in found] == [e.id for e in events]


def test_evidence_missing_a_part_copied_forged_or_another_vaults_is_not_used() -> None:
    events = [denial(n, "x" * 3000) for n in range(40)]
    parts, want = sealed(events), evidence_counts(events)
    assert len(parts) >= 3
    for tampered in (
        parts[1:],  # a part deleted
        [*parts, {**parts[0]}],  # a part copied into another place
        [{**parts[0], "rows": str(parts[0]["rows"]).replace("oid-1", "oid-9")}, *parts[1:]],  # rewritten
        sealed(events, vault="fleet-eu"),  # another vault's
    ):
        assert authentic_evidence("fleet", HOUR0, tampered, want, KEYS.get) is None
    assert authentic_evidence("fleet", HOUR0 + HOUR, parts, want, KEYS.get) is None  # another hour's
    fewer = want - Counter({("ACCESS_DENIED", "denied"): 1})
    assert authentic_evidence("fleet", HOUR0, parts, fewer, KEYS.get) is None  # not what the aggregate counts


def _fill(world: World, hours: int, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(hours * 3):
        world.clock.advance(timedelta(minutes=rng.randint(1, 40)))
        action, result = rng.choice(ACTIONS)
        world.trail.record(
            action, result=result, secret_name=rng.choice(["db-password", "api-key", None]),
            actor=Actor(f"user-{rng.randint(1, 4)}", ActorType.USER),
            details={"revocation_id": f"r{rng.randint(1, 9)}", "rotator": "key-vault"},
        )  # fmt: skip


class Counting:
    """The log as a reader, counting the index's pages read."""

    def __init__(self, log: Any) -> None:
        self.log, self.pages = log, 0

    def page_records(self, *args: Any, **kwargs: Any) -> Any:
        self.pages += 1
        return self.log.page_records(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.log, name)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_evidence_read_is_what_the_index_holds_however_much_is_sealed(seed: int) -> None:
    world = World()
    start = world.clock.now()
    _fill(world, 48, seed)
    aggregate_hours(world.audit_peers())
    _fill(world, 30, seed + 10)  # past the coverage: from the index
    since, until = start + timedelta(minutes=37), world.clock.now() + timedelta(seconds=1)
    truth = sorted(e.id for e in world.log.events if is_evidence(e) and since <= e.time < until)
    counting = Counting(world.log)
    read = read_evidence(counting, world.keys, "fleet", since, until)
    assert sorted(e.id for e in read.events) == truth
    assert read.sealed_hours > 20 and read.shortfalls == [] and read.deleted == []
    assert counting.pages == 1  # the hours past the coverage only: the partial first hour is sealed too
    world.log.coverage.clear()  # without the mark: up to the newest aggregate, judged the same way
    assert sorted(e.id for e in read_evidence(world.log, world.keys, "fleet", since, until).events) == truth


def test_the_running_count_goes_on_across_aggregation_runs() -> None:
    world = World()
    _fill(world, 10, 4)
    aggregate_hours(world.audit_peers())
    first = authentic_coverage_mark(world.log.coverage["fleet"], world.keys.get)
    _fill(world, 10, 5)
    aggregate_hours(world.audit_peers())
    mark = authentic_coverage_mark(world.log.coverage["fleet"], world.keys.get)
    hours = sorted(
        (hour, found[1]) for (_, hour), f in world.log.aggregates.items()
        if (found := authentic_aggregate(f, world.keys.get))
    )  # fmt: skip
    assert first is not None and mark is not None and first.records is not None
    assert (
        mark.records
        == sum(a.total for _, a in hours)
        == len([e for e in world.log.events if e.time < mark.up_to])
    )
    running = 0
    for _, part in hours:
        assert part.before == running
        running += part.total


def test_a_coverage_mark_from_before_evidence_was_kept_makes_the_next_run_aggregate_again() -> None:
    world = World()
    _fill(world, 20, 6)
    aggregate_hours(world.audit_peers())
    complete = sorted(world.log.aggregates)
    # As an older version left them: aggregates without a running count, a mark without a total, no evidence.
    key_id, key = world.keys.current()
    for place, fields in world.log.aggregates.items():
        old = {k: v for k, v in fields.items() if k not in ("before", "key_id", "mac")}
        world.log.aggregates[place] = seal_fields(AGGREGATE, old, key_id, key)
    mark = authentic_coverage_mark(world.log.coverage["fleet"], world.keys.get)
    assert mark is not None
    world.log.coverage["fleet"] = seal_fields(COVERAGE, coverage_fields(mark.up_to), key_id, key)
    world.log.evidence.clear()
    assert aggregate_hours(world.audit_peers()) == len(complete)
    assert sorted(world.log.aggregates) == complete and world.log.evidence
    read = read_evidence(world.log, world.keys, "fleet", mark.up_to - timedelta(hours=19), mark.up_to)
    assert read.sealed_hours > 10 and read.deleted == [] and read.shortfalls == []


def test_an_event_rebuilt_from_sealed_evidence_has_every_field_and_refuses_what_is_no_field() -> None:
    event = AuditEvent.rebuilt(action=Action.REVOKED, vault="fleet", time=HOUR0, id="r")
    assert event == AuditEvent(Action.REVOKED, "fleet", HOUR0, id="r")
    with pytest.raises(TypeError, match="unknown"):
        AuditEvent.rebuilt(action=Action.REVOKED, vault="fleet", time=HOUR0, value="x")
    with pytest.raises(TypeError, match="needs vault"):
        AuditEvent.rebuilt(action=Action.REVOKED, time=HOUR0)
    with pytest.raises(ValueError, match="timezone"):
        AuditEvent.rebuilt(action=Action.REVOKED, vault="fleet", time=HOUR0.replace(tzinfo=None))


def test_parts_left_over_from_a_longer_writing_of_the_hour_do_not_hide_the_current_one() -> None:
    """A run that died after writing an hour's parts, and a later run that wrote the hour with fewer parts
    (the index repaired meanwhile), leave the older run's higher-numbered parts in place."""
    more = [denial(n, "x" * 3000) for n in range(40)]
    fewer = more[:25]
    old, new = sealed(more), sealed(fewer)
    assert len(old) > len(new) > 1
    stored = [*new, *old[len(new) :]]  # the new run overwrote the places it wrote
    found = authentic_evidence("fleet", HOUR0, stored, evidence_counts(fewer), KEYS.get)
    assert found is not None and [e.id for e in found] == [e.id for e in fewer]
    assert authentic_evidence("fleet", HOUR0, stored, evidence_counts(more), KEYS.get) is None
