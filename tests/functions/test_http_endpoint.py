"""``shared.entrypoints.routes``: every HTTP function is registered through it (the index's ``Area``, or
``http.endpoint`` / ``http.anonymous``), so the role check, the route parameters and the input model cannot
be forgotten by a handler."""

from __future__ import annotations

from typing import Any

import azure.functions as func
import pytest

from shared.domain.identity import Role
from shared.entrypoints.http import Call, EmptyBody, endpoint, json_response
from shared.entrypoints.routes import ROUTES


def _http_functions(functions: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    found: dict[str, tuple[str, list[str]]] = {}
    for name, function in functions.items():
        trigger = function.get_trigger()
        if trigger.get_binding_name() == "httpTrigger":
            found[name] = (trigger.route, [str(m) for m in trigger.methods])
    return found


def test_every_http_function_is_registered_through_the_helpers(functions: dict[str, Any]) -> None:
    registered = _http_functions(functions)
    assert set(registered) == set(ROUTES), "register HTTP functions through shared.entrypoints.routes"
    for name, (route, methods) in registered.items():
        assert (ROUTES[name].route, [ROUTES[name].method]) == (route, [m.split(".")[-1] for m in methods])


def test_a_route_parameter_without_a_validation_is_refused_at_registration() -> None:
    bp = func.Blueprint()  # type: ignore[no-untyped-call]
    with pytest.raises(ValueError, match="no validation for \\['tenant'\\]"):

        @endpoint(bp, "tenants_get", "tenants/{tenant}", "GET", roles=Role.AUDIT_READ, accepts=EmptyBody)
        def tenants_get(call: Call[EmptyBody]) -> func.HttpResponse:
            return json_response({})

    assert "tenants_get" not in ROUTES


def test_an_endpoint_without_roles_is_refused_at_registration() -> None:
    bp = func.Blueprint()  # type: ignore[no-untyped-call]
    with pytest.raises(ValueError, match="names the roles"):
        endpoint(bp, "open_door", "door", "GET", roles=(), accepts=EmptyBody)
