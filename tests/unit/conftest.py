"""Unit tier: the pure core over in-memory fakes, wired once in ``tests/world.py``. A test module that
needs a variant of the world (a fake of its own, sealed state, a seeded secret) overrides ``world``."""

from __future__ import annotations

import pytest

from shared.services.audit import AuditTrail
from tests.fakes import FixedClock, InMemoryAuditLog
from tests.world import World


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def clock(world: World) -> FixedClock:
    return world.clock


@pytest.fixture
def log(world: World) -> InMemoryAuditLog:
    return world.log


@pytest.fixture
def trail(world: World) -> AuditTrail:
    return world.trail
