"""Functions tier: the registered functions of the real app, called with real azure.functions objects.

``app.get_functions()`` may be called only once per FunctionApp, so the session fixture calls it once and
every test looks functions up by name.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import azure.functions as func
import pytest

from shared.bootstrap import Container, set_container
from shared.config import Settings
from shared.domain.audit import Action, Result
from shared.domain.rotation import RotationRequest
from shared.services import rotation
from shared.services.rotation import RotationOutcome
from tests.world import World

LOCAL_ENV = {
    "KEY_VAULT_URL": "https://fleet.vault.azure.net",
    "SECRETS_STORAGE": "UseDevelopmentStorage=true",
    "ALLOW_UNVERIFIED_PRINCIPAL": "true",
    "AZURE_FUNCTIONS_ENVIRONMENT": "Development",
}


class FakeContainer(Container):
    """The real container with every port replaced by an in-memory fake (instance attributes shadow the
    cached properties). The sealed state store, the finding store and the service bundles are the real
    container's, built over these."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(Settings(LOCAL_ENV if env is None else env))
        world = World()  # the fakes, wired as in the unit tier
        self.clock = world.clock
        self.key_ring = world.keys
        self.audit_log = world.log  # type: ignore[assignment]
        self.digest_anchor = world.anchor
        self.secret_store = world.store
        self.state_rows = world.rows
        self.finding_rows = world.finding_rows
        self.rotation_queue = world.requests
        self.publisher = world.publisher

    def fail_success_of(self, action: Action | None) -> None:
        """From now on the success record of ``action`` cannot be written (None: every record can)."""
        self.audit_log.fails = lambda e: e.action == action and e.result == Result.SUCCESS

    def rotate_requested(self, request: RotationRequest) -> RotationOutcome:
        """What the rotate_secret queue function does with a request it took off the queue."""
        return rotation.rotate_requested(dataclasses.replace(self.peers, rotators={}), request)


@dataclass(frozen=True)
class Context:
    """The ``func.Context`` a function reads: its invocation id is the correlation id of what it records."""

    invocation_id: str
    function_name: str = "test"


def call_http(
    function: Any,
    context: Context,
    *,
    method: str,
    url: str,
    principal: str | None,
    body: Any = None,
    route: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], func.HttpResponse]:
    """Call a registered HTTP function as the host does: a real ``HttpRequest`` (``body`` as JSON unless it
    is bytes; none: ``{}`` for a write) with the caller's principal header. Returns the status, the JSON
    body and the response."""
    all_headers = {"user-agent": "pytest", **(headers or {})}
    if principal is not None:
        all_headers["x-ms-client-principal"] = principal
    if body is None:  # a write sends {} at least, as every client must (b"": no body at all)
        body = {} if method.upper() != "GET" else b""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = func.HttpRequest(
        method, url, headers=all_headers, params=params or {}, route_params=route or {}, body=raw
    )
    response: func.HttpResponse = function.get_user_function()(request, context)
    return response.status_code, json.loads(response.get_body() or b"{}"), response


@pytest.fixture
def use_container() -> Iterator[Any]:
    """Install a container for one test and restore the default afterwards."""

    def install(container: Container) -> Container:
        set_container(container)
        return container

    yield install
    set_container(None)
