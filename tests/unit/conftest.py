"""Unit tier: the pure core over in-memory fakes. The audit trail most tests record with."""

from __future__ import annotations

import pytest

from shared.services.audit import AuditTrail
from tests.fakes import FixedClock, InMemoryAuditLog

VAULT = "fleet"


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def log() -> InMemoryAuditLog:
    return InMemoryAuditLog()


@pytest.fixture
def trail(log: InMemoryAuditLog, clock: FixedClock) -> AuditTrail:
    return AuditTrail(log, clock, VAULT)
