"""The peers of the services over sealed state, wired as ``shared/bootstrap.py`` wires them, in memory:
the tables a storage writer reaches (``rows``, ``finding_rows``), the sealed stores over them, the tamper
alarm that turns what it meets into records, findings and events. Test modules subclass it with their own
seeding and steps."""

from __future__ import annotations

from typing import Any

from shared.domain.audit import Action, AuditEvent
from shared.services.audit import AuditTrail
from shared.services.findings import FindingPeers, StateFindingStore, TamperAlarm
from shared.services.sealed_state import SealedStateStore
from tests.fakes import (
    FakeKeyRing,
    FixedClock,
    InMemoryAuditLog,
    InMemorySecretStore,
    InMemoryStateStore,
    RecordingPublisher,
    RecordingRotationRequests,
)

STATE_TABLE = "secretstate"
FINDINGS_TABLE = "auditfindings"


class SealedWorld:
    def __init__(self, vault: str = "fleet") -> None:
        self.clock = FixedClock()
        self.store = InMemorySecretStore(self.clock)
        self.keys = FakeKeyRing()
        self.log = InMemoryAuditLog(self.keys)
        self.trail = AuditTrail(self.log, self.clock, vault)
        self.publisher = RecordingPublisher()
        self.requests = RecordingRotationRequests()
        self.rows = InMemoryStateStore()  # what a storage writer reaches
        self.finding_rows = InMemoryStateStore()
        self.alarm = TamperAlarm(lambda: self.finding_peers)
        self.states = SealedStateStore(self.rows, self.keys, STATE_TABLE, self.alarm)
        self.findings = StateFindingStore(
            SealedStateStore(self.finding_rows, self.keys, FINDINGS_TABLE, self.alarm)
        )
        self.finding_peers = FindingPeers(self.findings, self.trail, self.publisher, self.clock)

    def records(self, action: Action, name: str | None = None) -> list[AuditEvent]:
        """The records of ``action`` (about the secret ``name``, when given)."""
        return [e for e in self.log.events if e.action == action and (name is None or e.secret_name == name)]

    def overwrite(self, partition: str, key: str, state: dict[str, Any]) -> None:
        """Rewrite a row as a storage writer does: straight into the table, no key."""
        stored = self.rows.get(partition, key)
        if stored is None:
            self.rows.create(partition, key, state)
        else:
            self.rows.replace(partition, key, state, stored.etag)
