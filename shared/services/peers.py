"""The peers the services share, in one bundle: each service function takes a ``Peers`` (and the few
values of its own call), built once in ``shared/bootstrap.py`` (``Container.peers``) and by the world in
the unit tests. A service uses the peers it needs; none is built on the bundle's account (the container
builds each client lazily, on first use)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from shared.domain.policy import Rotator
from shared.ports import Clock, Publisher, SecretStore, StateStore, TargetRotator
from shared.services.audit import AuditTrail


@dataclass(frozen=True)
class Peers:
    """Key Vault, the service's state rows, the audit trail, the event topic and the clock; the secrets
    this service never touches (``reserved``: its own key ring, ...) and the target rotators this
    deployment runs (``rotators``: a secret whose policy names another one is not rotated)."""

    store: SecretStore
    states: StateStore
    trail: AuditTrail
    publisher: Publisher
    clock: Clock
    reserved: Collection[str] = frozenset()
    rotators: Mapping[Rotator, TargetRotator] = field(default_factory=dict)
