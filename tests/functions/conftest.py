"""Functions tier: the registered functions of the real app, called with real azure.functions objects.

``app.get_functions()`` may be called only once per FunctionApp, so the session fixture calls it once and
every test looks functions up by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from shared.bootstrap import Container, set_container
from shared.config import Settings
from shared.services.audit import AuditTrail
from tests.fakes import (
    FakeKeyRing,
    FixedClock,
    InMemoryAnchor,
    InMemoryAuditLog,
    InMemoryStateStore,
    RecordingPublisher,
)

LOCAL_ENV = {
    "KEY_VAULT_URL": "https://fleet.vault.azure.net",
    "SECRETS_STORAGE": "UseDevelopmentStorage=true",
    "ALLOW_UNVERIFIED_PRINCIPAL": "true",
    "AZURE_FUNCTIONS_ENVIRONMENT": "Development",
}


class FakeContainer(Container):
    """The real container with every port replaced by an in-memory fake (instance attributes shadow the
    cached properties)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(Settings(LOCAL_ENV if env is None else env))
        self.clock = FixedClock()
        self.key_ring = FakeKeyRing()
        self.audit_log = InMemoryAuditLog(self.key_ring)  # type: ignore[assignment]
        self.digest_anchor = InMemoryAnchor()
        self.audit_trail = AuditTrail(self.audit_log, self.clock, "fleet")
        self.state_rows = InMemoryStateStore()
        self.finding_rows = InMemoryStateStore()
        self.publisher = RecordingPublisher()


@pytest.fixture(scope="session")
def functions() -> dict[str, Any]:
    import function_app

    return {f.get_function_name(): f for f in function_app.app.get_functions()}


@pytest.fixture
def use_container() -> Iterator[Any]:
    """Install a container for one test and restore the default afterwards."""

    def install(container: Container) -> Container:
        set_container(container)
        return container

    yield install
    set_container(None)
