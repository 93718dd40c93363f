"""The audit_digest timer: it seals and anchors every hour, and fails the invocation (so the platform shows
it) when it finds a chain that regressed, after auditing and notifying it once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

from shared.domain.audit import Action, ChainHead
from tests.functions.conftest import FakeContainer


@pytest.fixture
def fake(use_container: Any) -> FakeContainer:
    container: FakeContainer = use_container(FakeContainer())
    return container


def run_digest(functions: dict[str, Any], fake: FakeContainer) -> None:
    fake.clock.advance(timedelta(hours=1))
    functions["audit_digest"].get_user_function()(TimerRequest())


def test_digest_timer_seals_anchors_and_raises_once_per_regression(
    functions: dict[str, Any], fake: FakeContainer
) -> None:
    for i in range(3):
        fake.audit_trail.record(Action.ROTATED, secret_name="db-password", version=f"v{i}")
    run_digest(functions, fake)
    assert [v.seq for v in fake.digest_anchor.versions] == [1]

    chain = "fleet:db-password"
    del fake.audit_log.records[chain][1:]
    fake.audit_log.heads[chain] = ChainHead(1, fake.audit_log.records[chain][0].mac)
    with pytest.raises(RuntimeError, match="1 chain\\(s\\) regressed"):
        run_digest(functions, fake)
    assert [v.seq for v in fake.digest_anchor.versions] == [1, 2]  # sealed, with the old head held
    assert fake.audit_log.digests[-1].heads[chain].seq == 3
    assert [e.action for e in fake.audit_log.events].count(Action.TAMPERING_DETECTED) == 1
    assert [n.type for n in fake.publisher.sent] == ["SecretLifecycle.AuditTampering"]

    run_digest(functions, fake)  # held again, already reported: no second alarm, no failed run
    assert [e.action for e in fake.audit_log.events].count(Action.TAMPERING_DETECTED) == 1
