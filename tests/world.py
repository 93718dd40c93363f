"""One world for the tests: every port a service meets, as an in-memory fake wired as
``shared/bootstrap.py`` wires them, and each service called in one place.

A unit test builds ``World()`` (the ``world`` fixture of ``tests/unit/conftest.py``), seeds the vault
(``secret``), calls a service through the world (``world.rotate()``, ``world.rollback()``,
``world.revocations`` ...) and asserts on the fakes' state (versions, rows, records, events). When a
service's signature changes, the method of the same name on ``Peers`` below is the one place in the tests
to change: the integration tests call the services through ``Peers`` over real adapters, and the functions
tier's ``FakeContainer`` takes its fakes from a world.

Variants are chosen at construction: a fake of one's own (``store=``, ``rows=``, ``log=``, ``findings=``:
a class or factory, called as the default one is), another start time (``now=``), and ``sealed=True`` for
the state store as production seals it (``states`` over the table ``rows`` a storage writer reaches, with
the tamper alarm that turns what it meets into records, findings and events). Without it ``states`` is
``rows``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from shared.domain.audit import Action, AuditEvent, AuditQuery, AuditRecord
from shared.domain.key_vault_events import KeyVaultEvent
from shared.domain.policy import SERVICE_SECRETS, RotationPolicy, Rotator, SecretKind
from shared.domain.rotation import RotationRequest
from shared.domain.scan_rules import ScanRules
from shared.domain.secrets import SecretVersion
from shared.domain.state import StateTampered, Versioned
from shared.ports import AuditReader, Clock, FindingStore, StateStore
from shared.services import audit as audit_service
from shared.services import (
    catalog,
    decommission,
    expiry,
    key_vault_events,
    rollback,
    rotation,
    suspicious,
    sweep,
    sweep_run,
)
from shared.services.audit import AuditTrail
from shared.services.findings import FindingPeers, StateFindingStore, TamperAlarm
from shared.services.peers import AuditPeers
from shared.services.peers import Peers as ServicePeers
from shared.services.revocation import Services as RevocationServices
from shared.services.sealed_state import SealedStateStore
from shared.services.sweep import PolicyViolation
from shared.services.vaults import ScopedStateStore
from tests.fakes import (
    FakeKeyRing,
    FixedClock,
    InMemoryAnchor,
    InMemoryAuditLog,
    InMemorySecretStore,
    InMemoryStateStore,
    RecordingPublisher,
    RecordingRotationRequests,
)

VAULT = "fleet"
NAME = "dispatch-api-key"
STATE_TABLE = "secretstate"
FINDINGS_TABLE = "auditfindings"
#: The policy a seeded secret carries unless told otherwise.
API_KEY = RotationPolicy(SecretKind.API_KEY, timedelta(days=30), None, "dispatch-api")


class Peers:
    """The peers a service takes, and each service called with them here and nowhere else in the tests.
    ``World`` is these over in-memory fakes; an integration test may make one over real adapters
    (``Peers(store=..., states=..., ...)``): a method only needs the peers its service takes."""

    name: str = NAME  # the secret a service call is about when the test names none
    vault: str = VAULT
    # The service's own secrets under the product's names: never rotated, revoked or listed as managed.
    reserved: Collection[str] = SERVICE_SECRETS
    rotators: Mapping[Rotator, Any] = MappingProxyType({})
    clock: Clock
    store: Any
    states: StateStore
    log: Any
    keys: Any
    trail: AuditTrail
    anchor: Any
    publisher: Any
    requests: Any
    findings: FindingStore
    alarm: Callable[[Any], None]

    def __init__(self, **peers: Any) -> None:
        for role, peer in peers.items():
            setattr(self, role, peer)

    @property
    def finding_peers(self) -> FindingPeers:
        scope = None if self.vault == VAULT else self.vault  # as bootstrap's VaultScope: None, designated
        return FindingPeers(self.findings, self.trail, self.publisher, self.clock, scope=scope)

    def _peer_fields(self) -> dict[str, Any]:
        return {
            "store": self.store, "states": self.states, "trail": self.trail, "publisher": self.publisher,
            "clock": self.clock, "requests": self.requests, "reader": self.log, "keys": self.keys,
            "reserved": self.reserved, "rotators": self.rotators, "report_missing": self.report_missing,
        }  # fmt: skip

    @property
    def peers(self) -> ServicePeers:
        """The bundle the secret services take (shared.services.peers.Peers)."""
        return ServicePeers(**self._peer_fields())

    def audit_peers(self, reader: AuditReader | None = None) -> AuditPeers:
        """The bundle the audit services take (``reader``: the trail as read, when not the log itself)."""
        return AuditPeers(
            log=self.log, reader=reader or self.log, keys=self.keys, anchor=self.anchor, trail=self.trail,
            findings=self.findings, publisher=self.publisher, clock=self.clock,
        )  # fmt: skip

    def rotate(self, name: str | None = None, **options: Any) -> rotation.RotationOutcome:
        return rotation.rotate(self.peers, name or self.name, **options)

    def rotate_requested(self, request: RotationRequest) -> rotation.RotationOutcome:
        return rotation.rotate_requested(self.peers, request)

    def drain(self) -> list[rotation.RotationOutcome]:
        """Rotate what is on the rotation queue, oldest first, as the queue trigger does."""
        outcomes = []
        while self.requests.sent:
            outcomes.append(self.rotate_requested(self.requests.sent.pop(0)))
        return outcomes

    def replace(self, name: str | None = None, **options: Any) -> rotation.RotationOutcome:
        return rotation.replace(self.peers, name or self.name, **options)

    def retire_due(self, name: str | None = None) -> list[str]:
        return rotation.retire_due(self.peers, name or self.name)

    def retire_all(self) -> tuple[list[tuple[str, str]], list[str]]:
        return rotation.retire_all(self.peers)

    def record_violations(self, violations: Sequence[PolicyViolation], correlation_id: str | None) -> int:
        return rotation.record_violations(self.states, self.trail, violations, correlation_id)

    def resume_stale(self, correlation_id: str, rows: Mapping[str, Versioned] | None = None) -> list[str]:
        return rotation.resume_stale(self.states, self.requests, self.clock, correlation_id, rows)

    def acquire(
        self, step: str, name: str | None = None, stored: Versioned | None = None, **options: Any
    ) -> tuple[rotation.Progress, str]:
        """Take the write lease of ``name`` as a rotation or revocation does (``stored``: its row as read)."""
        return rotation.acquire(self.peers, name or self.name, stored, step, **options)

    def register_request(
        self, request_id: str, force: bool, name: str | None = None
    ) -> tuple[str, str | None]:
        """A request's registration on the secret's row (queued, or joined to the rotation there)."""
        return rotation.register_request(self.states, name or self.name, request_id, force, self.clock)

    def release(
        self, progress: rotation.Progress, etag: str, *, name: str | None = None, **options: Any
    ) -> None:
        rotation.release(self.states, name or self.name, progress, etag, **options)

    def gave_up(self, request: RotationRequest, attempts: int) -> None:
        rotation.gave_up(request, self.trail, attempts, self.states)

    def rollback(self, name: str | None = None, **options: Any) -> rollback.RollbackOutcome:
        return rollback.rollback(self.peers, name or self.name, **options)

    def check_expiry(
        self, *, require_exp: bool = False, correlation_id: str = "check-1"
    ) -> expiry.ExpiryReport:
        return expiry.check_expiry(self.peers, require_exp=require_exp, correlation_id=correlation_id)

    def handle_event(self, event: KeyVaultEvent) -> key_vault_events.EventOutcome:
        return key_vault_events.handle_event(self.peers, event)

    def sweep(self, correlation_id: str = "sweep", **options: Any) -> sweep.SweepReport:
        return sweep.sweep(self.peers, correlation_id, **options)

    @property
    def sweep_peers(self) -> sweep_run.SweepPeers:
        return sweep_run.SweepPeers(**self._peer_fields(), findings=self.finding_peers)

    def sweep_run(self, correlation_id: str = "sweep") -> sweep_run.SweepRun:
        return sweep_run.run(self.sweep_peers, correlation_id)

    def report_missing(self, partition: str, key: str) -> None:
        """What bootstrap wires for a row an index names that is not there: the alarm hears of it."""
        self.alarm(StateTampered(STATE_TABLE, partition, key, "missing", "", "missing"))

    @property
    def revocations(self) -> RevocationServices:
        return RevocationServices(**self._peer_fields())

    def list_managed(self, **options: Any) -> dict[str, Any]:
        return catalog.list_managed(self.peers, **options).to_json()  # as the API answers it

    def request_rotation(self, name: str | None = None, **options: Any) -> catalog.RotationTicket:
        return catalog.request_rotation(self.peers, name or self.name, **options)

    def onboard(self, name: str, policy: RotationPolicy, **options: Any) -> SecretVersion:
        return catalog.onboard(self.peers, name, policy, **options)

    def apply_policy(self, name: str, fields: catalog.PolicyInput, **options: Any) -> RotationPolicy:
        return catalog.apply_policy(self.peers, name, fields, **options)

    def plan_rotation(
        self, name: str | None = None, *, force: bool = False, **options: Any
    ) -> dict[str, Any]:
        return catalog.plan_rotation(self.peers, name or self.name, force=force, **options).to_json()

    def rotation_plan(self, within_days: int) -> dict[str, Any]:
        return catalog.rotation_plan([self.peers], within_days=within_days).to_json()

    def secret_status(self, name: str | None = None, **options: Any) -> dict[str, Any]:
        return catalog.secret_status(self.peers, name or self.name, **options).to_json()

    def delete_secret(self, name: str | None = None, **options: Any) -> None:
        decommission.delete_secret(self.peers, name or self.name, **options)

    def recover_secret(self, name: str | None = None, **options: Any) -> None:
        decommission.recover_secret(self.peers, name or self.name, **options)

    def write_digest(self, *, reader: AuditReader | None = None) -> audit_service.DigestOutcome:
        """The hourly digest (``reader``: what it reads the trail through, when not the log itself)."""
        return audit_service.write_digest(self.audit_peers(reader))

    def verify_audit(
        self, *, reader: AuditReader | None = None, **options: Any
    ) -> audit_service.VerifyReport:
        return audit_service.verify_audit(self.audit_peers(reader), **options)

    def repair_chain(self, **options: Any) -> AuditRecord:
        return audit_service.repair_chain(self.audit_peers(), **options)

    def query_audit(self, query: AuditQuery, continuation: str | None = None) -> audit_service.AuditPage:
        return audit_service.query_audit(self.log, self.log.keys, query, continuation)

    def summarize_audit(self, *, secret_name: str | None, days: int) -> dict[str, Any]:
        return audit_service.summarize_audit(
            [self.audit_peers()], secret_name=secret_name, days=days
        ).to_json()

    def review_finding(self, finding_id: str, **options: Any) -> dict[str, Any]:
        return audit_service.review_finding(self.audit_peers(), finding_id, **options).to_json()

    def scan(
        self, rules: ScanRules | None = None, correlation_id: str | None = None
    ) -> suspicious.ScanReport:
        return suspicious.scan(self.audit_peers(), rules or ScanRules(), correlation_id=correlation_id)


class World(Peers):
    """The peers over in-memory fakes, wired as bootstrap wires the real ones, and a test's view of them."""

    def __init__(
        self,
        *,
        name: str = NAME,
        now: datetime | None = None,
        store: Callable[[Clock], InMemorySecretStore] = InMemorySecretStore,
        rows: Callable[[], InMemoryStateStore] = InMemoryStateStore,
        log: Callable[[FakeKeyRing], InMemoryAuditLog] = InMemoryAuditLog,
        findings: Callable[[], FindingStore] | None = None,
        sealed: bool = False,
        rotators: Mapping[Rotator, Any] | None = None,
    ) -> None:
        self.name = name
        self.clock = FixedClock(now)
        self.store = store(self.clock)
        self.keys = FakeKeyRing()
        self.log = log(self.keys)
        self.trail = AuditTrail(self.log, self.clock, self.vault)
        self.anchor = InMemoryAnchor()
        self.publisher = RecordingPublisher()
        self.requests = RecordingRotationRequests()
        self.rotators = dict(rotators or {})
        self.rows = rows()  # the state table, as a storage writer reaches it
        self.finding_rows = InMemoryStateStore()
        self.alarm = TamperAlarm(lambda: self.finding_peers)
        self.states = SealedStateStore(self.rows, self.keys, STATE_TABLE, self.alarm) if sealed else self.rows
        self.findings = (
            findings()
            if findings is not None
            else StateFindingStore(SealedStateStore(self.finding_rows, self.keys, FINDINGS_TABLE, self.alarm))
        )

    def other_vault(self, vault: str = "fleet-eu") -> Peers:
        """The peers of a second managed vault, as bootstrap's ``VaultScope`` wires them: a vault of its
        own, its namespace of the same state table, its records on the same trail; the rest shared."""
        shared_roles = (
            "clock",
            "keys",
            "log",
            "anchor",
            "publisher",
            "requests",
            "findings",
            "alarm",
            "rows",
        )
        other = Peers(**{role: getattr(self, role) for role in shared_roles})
        other.vault = vault
        other.store = InMemorySecretStore(self.clock)
        other.states = ScopedStateStore(self.states, vault)
        other.trail = self.trail.of(vault)
        other.rotators = {}
        return other

    # -- seeding and reading back -------------------------------------------------------------------

    def secret(
        self,
        name: str | None = None,
        value: str = "initial-value",
        *,
        tags: Mapping[str, str] | None = None,
        age_days: float = 0,
        content_type: str | None = "text/plain",
        **properties: Any,
    ) -> SecretVersion:
        """A new version of ``name`` (with the tags of ``API_KEY`` unless given), made ``age_days`` ago."""
        self.clock.advance(timedelta(days=-age_days))
        try:
            return self.store.set_value(
                name or self.name,
                value,
                content_type=content_type,
                tags=API_KEY.to_tags() if tags is None else tags,
                **properties,
            )
        finally:
            self.clock.advance(timedelta(days=age_days))

    def versions(self, name: str | None = None) -> list[str]:
        """The version ids of ``name`` in creation order."""
        return self.store.versions_of(name or self.name)

    def enabled(self, name: str | None = None) -> dict[str, bool]:
        return {v.version: v.enabled for v in self.store.list_versions(name or self.name)}

    def current(self, name: str | None = None) -> str:
        """The value of the current version."""
        return self.store.get_value(name or self.name).value

    def target(self, rotator: Rotator = Rotator.WEBHOOK) -> Any:
        """The fake target the test put behind ``rotator``."""
        return self.rotators[rotator]

    def records(self, action: Action, name: str | None = None) -> list[AuditEvent]:
        """The records of ``action`` (about the secret ``name``, when given)."""
        return [e for e in self.log.events if e.action == action and (name is None or e.secret_name == name)]

    def overwrite(self, partition: str, key: str, state: Mapping[str, Any]) -> Versioned:
        """Rewrite a row as a storage writer does: straight into the table, no key."""
        stored = self.rows.get(partition, key)
        if stored is None:
            return self.rows.create(partition, key, state)
        return self.rows.replace(partition, key, state, stored.etag)
