"""The peers the services use, in two bundles built once in ``shared/bootstrap.py`` (``Container.peers``,
``Container.audit_peers``) and by the world in the tests. A service function takes a bundle and the few
values of its own call; it uses the peers it needs, and the container builds each client on first use,
so a bundle costs nothing it does not use.

``Peers``: what the secret services use (rotation, catalog, rollback, decommission, expiry, Key Vault
events, sweep, revocation). ``AuditPeers``: what the audit services use (verify, digests, repair, queries,
findings, the suspicious-activity scan).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field

from shared.domain.policy import Rotator
from shared.ports import (
    AuditArchive,
    AuditLog,
    AuditReader,
    Clock,
    DigestAnchor,
    FindingStore,
    MacKeyRing,
    Publisher,
    RotationRequests,
    SecretStore,
    StateStore,
    TargetRotator,
)
from shared.services.audit import AuditTrail


@dataclass(frozen=True, kw_only=True)
class Peers:
    """Key Vault (``store``), the service's sealed state rows, the audit trail (written through ``trail``,
    read through ``reader``, checked with ``keys``), the event topic, the rotation queue and the clock;
    the secrets the service never touches (``reserved``: its own key ring and digest anchor) and the
    target rotators this deployment runs (a secret whose policy names another one is not rotated)."""

    store: SecretStore
    states: StateStore
    trail: AuditTrail
    publisher: Publisher
    clock: Clock
    requests: RotationRequests
    reader: AuditReader
    keys: MacKeyRing
    #: Required, never defaulted: a bundle that forgot them would let a service touch the key ring.
    reserved: Collection[str]
    rotators: Mapping[Rotator, TargetRotator] = field(default_factory=dict)
    #: Hears of a state row the audit trail names that is gone (partition, key): reported as tampering.
    report_missing: Callable[[str, str], None] | None = None


@dataclass(frozen=True, kw_only=True)
class AuditPeers:
    """The audit table (``log`` to repair a chain, ``reader`` for the rest), its MAC keys, the digest
    anchor in Key Vault, the trail the services' own records go through, the findings, the event topic
    and the clock."""

    log: AuditLog
    reader: AuditReader
    keys: MacKeyRing
    anchor: DigestAnchor
    trail: AuditTrail
    findings: FindingStore
    publisher: Publisher
    clock: Clock
    #: Where records past the retention went (None: retention off, every record is in the table).
    archive: AuditArchive | None = None


class LazyRotators(Mapping[Rotator, TargetRotator]):
    """A mapping whose values are built on first access (a key-vault rotation never imports psycopg)."""

    def __init__(self, factories: Mapping[Rotator, Callable[[], TargetRotator]]) -> None:
        self._factories = dict(factories)
        self._built: dict[Rotator, TargetRotator] = {}
        self._lock = threading.Lock()

    def __getitem__(self, key: Rotator) -> TargetRotator:
        with self._lock:
            if key not in self._built:
                self._built[key] = self._factories[key]()
            return self._built[key]

    def __contains__(self, key: object) -> bool:
        return key in self._factories

    def __iter__(self) -> Iterator[Rotator]:
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)
