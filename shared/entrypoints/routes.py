"""How an HTTP function is registered: its binding (route, method, auth level) and its terms (the roles that
may call it, the model its input must be, the vault it takes) at import, its handler on its first call.

This module is what the Functions host pays for at a cold start, with ``index.py``: it imports
azure.functions and the roles, nothing else. ``http.serve`` (pydantic, the container, telemetry) runs
each call; the handler and its input model are imported by the first one.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import azure.functions as func

from shared.domain.roles import Role

if TYPE_CHECKING:
    from pydantic import BaseModel

#: How an endpoint takes ``vault``: ``one``, it is about one vault's secret (the designated vault when the
#: service manages one vault; required when it manages several); ``any``, it filters (absent: every vault).
VaultUse = Literal["one", "any"]

#: The route parameters a route may name: those ``http.ROUTE_PARAMETERS`` checks (a test keeps them equal).
ROUTE_PARAMETER_NAMES = frozenset({"name", "id", "finding_id", "actor_id", "incident_id"})

Handler = Callable[..., func.HttpResponse]


@dataclass(frozen=True)
class Route:
    """An HTTP function as registered: its name, ``METHOD /api/<route>``, the roles that may call it
    (any one of them; none: anonymous), what it accepts (``model``: the input model, imported when first
    asked for; None: it reads nothing from the request), its handler (``handler()``: imported by the
    first call) and how it takes ``vault``."""

    name: str
    route: str
    method: str
    roles: tuple[Role, ...]
    model: Callable[[], type[BaseModel]] | None
    handler: Callable[[], Handler]
    vault: VaultUse | None = None

    @property
    def accepts(self) -> type[BaseModel] | None:
        return None if self.model is None else self.model()

    @property
    def parameters(self) -> list[str]:
        """The route's parameters, in order."""
        return re.findall(r"{(\w+)}", self.route)


#: Every HTTP function registered through ``register`` (``index.py``, ``http.endpoint``), by function name.
ROUTES: dict[str, Route] = {}


#: Held while a function's code is imported on its first call: one import at a time. The worker runs
#: functions in threads, and two first calls at once on a cold instance would import modules that import
#: each other from two threads, which can fail (a partially initialized module).
LOADING = threading.RLock()


@dataclass(frozen=True)
class Lazy:
    """``name`` in ``shared.entrypoints.<module>``, imported on first use (under ``LOADING``)."""

    module: str
    name: str

    def __call__(self) -> Any:
        with LOADING:
            module = importlib.import_module(f"shared.entrypoints.{self.module}")
        return getattr(module, self.name)


def check(name: str, route: str, roles: tuple[Role, ...]) -> None:
    """Raises ValueError for a protected route that names no role or a route parameter without a
    validation."""
    if not roles:
        raise ValueError(f"{name}: a protected endpoint names the roles that may call it (see anonymous)")
    unknown = set(re.findall(r"{(\w+)}", route)) - ROUTE_PARAMETER_NAMES
    if unknown:
        raise ValueError(f"route {route}: no validation for {sorted(unknown)}")


def register(bp: func.Blueprint, route: Route) -> Any:
    """Register ``route`` on ``bp``, run by ``http.serve`` with the handler ``route.handler()`` gives
    (asked on each invocation; the import behind it happens once). Raises ValueError as ``check``."""
    check(route.name, route.route, route.roles)

    def function(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        with LOADING:
            from shared.entrypoints.http import serve
        return serve(route, route.handler(), req, context)

    return _registered(bp, route, function, auth_level=None)


def register_anonymous(bp: func.Blueprint, name: str, path: str, handler: Callable[[], Handler]) -> Any:
    """Register the anonymous ``GET /api/<path>`` (no function key, no caller identity), run by
    ``http.serve_anonymous`` with the handler ``handler()`` gives: one that reads nothing from the request
    (its query parameters are ignored)."""
    route = Route(name, path, "GET", (), None, handler)

    def function(req: func.HttpRequest) -> func.HttpResponse:
        with LOADING:
            from shared.entrypoints.http import serve_anonymous
        return serve_anonymous(route, route.handler())

    return _registered(bp, route, function, auth_level=func.AuthLevel.ANONYMOUS)


def _registered(
    bp: func.Blueprint, route: Route, function: Callable[..., Any], auth_level: func.AuthLevel | None
) -> Any:
    function.__name__ = function.__qualname__ = route.name
    ROUTES[route.name] = route
    options: dict[str, Any] = {} if auth_level is None else {"auth_level": auth_level}
    bound = bp.route(route=route.route, methods=[route.method], **options)(function)
    return bp.function_name(route.name)(bound)


class Area:
    """The HTTP functions of one entry-point module (``shared.entrypoints.<module>``) on its Blueprint: each
    handler is the module's function of the function's name (unless ``handler`` names another), each
    input model the module's class ``accepts`` names."""

    def __init__(self, module: str, bp: func.Blueprint) -> None:
        self.module = module
        self.bp = bp

    def endpoint(  # noqa: PLR0913 - the registration's terms, each named at every use
        self,
        name: str,
        route: str,
        method: str,
        *,
        roles: Role | Sequence[Role],
        accepts: str,
        vault: VaultUse | None = None,
        handler: str | None = None,
    ) -> None:
        """``METHOD /api/<route>`` for callers holding one of ``roles``, its input ``accepts`` (the query
        parameters of a GET, the JSON body otherwise), as ``http.serve`` checks a call."""
        allowed = (roles,) if isinstance(roles, Role) else tuple(roles)
        model, code = Lazy(self.module, accepts), Lazy(self.module, handler or name)
        register(self.bp, Route(name, route, method, allowed, model, code, vault))

    def anonymous(self, name: str, path: str) -> None:
        """The anonymous ``GET /api/<path>``."""
        register_anonymous(self.bp, name, path, Lazy(self.module, name))
