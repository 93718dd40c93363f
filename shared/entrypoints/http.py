"""What every HTTP trigger shares: ``serve`` runs one call as its registration says (the role check, the
route parameters, the query or body model, the error mapping), so a handler is the few lines that differ;
JSON and RFC 9457 problem+json responses. The app's functions are registered in ``index.py`` (through
``routes``); ``endpoint`` and ``anonymous`` register a handler at hand."""

from __future__ import annotations

import decimal
import functools
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.adapters import telemetry
from shared.bootstrap import Container, VaultScope, get_container
from shared.config import ConfigurationError
from shared.domain.audit import Action, Actor, Result
from shared.domain.errors import (
    Conflict,
    DependencyUnavailable,
    DomainError,
    Forbidden,
    InvalidTransition,
    NoSuchSecret,
    NotFound,
    NotPermitted,
    OutcomeNotRecorded,
)
from shared.domain.identity import Principal, Role, refused_identity
from shared.domain.revocation import REVOCATION_ID
from shared.domain.secrets import NAME, NAME_PATTERN, VAULT_PATTERN, VERSION, InvalidSecret, validate_name
from shared.domain.state import StateTampered
from shared.domain.targets import TargetRefused
from shared.entrypoints.answers import Problem
from shared.entrypoints.auth import AccessDenied, actor_of, authorize, route_of
from shared.entrypoints.routes import Route, VaultUse, check, register, register_anonymous
from shared.services.vaults import UnknownVault

logger = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
MAX_BODY_BYTES = 16 * 1024
#: The one media type a body may have. A form or text/plain POST is a CORS "simple" request a cross-site
#: page can send without a preflight; requiring JSON makes the browser ask first.
BODY_MEDIA_TYPE = "application/json"

PROBLEM_JSON = "application/problem+json"
#: The problem type of a refusal because a stored state failed its seal (shared.domain.state).
STATE_TAMPERED_TYPE = "urn:secret-lifecycle:problem:state-tampered"
_NO_STORE = {"Cache-Control": "no-store"}

#: A secret name and a version id in a query parameter or a body field (Key Vault's rules, one definition:
#: shared.domain.secrets).
SecretName = Annotated[str, Field(pattern=f"^{NAME}$")]
VersionId = Annotated[str, Field(pattern=f"^{VERSION}$")]
FINDING_ID = re.compile(r"[0-9a-f]{32}")


# What an endpoint that takes nothing accepts: an empty JSON object (or no body); for a GET, no query
# parameter. (A comment, not a docstring: the OpenAPI document would show it.)
class EmptyBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


#: The query parameter that names the vault of a call's secret (``?vault=fleet-eu``), on the endpoints that
#: take one, whatever their method: with several vaults (KEY_VAULT_URLS) one name may be in two of them.
VAULT_PARAMETER = "vault"


@dataclass(frozen=True)
class Call(Generic[M]):
    """One HTTP call, authorized and parsed: what a handler works with. ``route``: the route's parameters,
    validated (``ROUTE_PARAMETERS``); ``input``: the query parameters of a GET, the body otherwise;
    ``vault``: the vault it is about (``VAULT_PARAMETER``; None: every vault, or the endpoint takes none)."""

    req: func.HttpRequest
    container: Container
    correlation_id: str | None
    principal: Principal
    route: Mapping[str, str]
    input: M
    vault: str | None = None

    @property
    def actor(self) -> Actor:
        return actor_of(self.req, self.principal)

    @property
    def name(self) -> str:
        """The route's secret name (``{name}``)."""
        return self.route["name"]

    @property
    def scope(self) -> VaultScope:
        """The peers of the call's vault (the designated vault's when it names none)."""
        return self.container.vault(self.vault)

    @property
    def scopes(self) -> list[VaultScope]:
        """The peers of the call's vault, or of every managed vault when it names none."""
        return [self.scope] if self.vault is not None else list(self.container.vaults.values())


#: The longest actor id a route takes (an id in a record is at most this long too).
MAX_ACTOR_ID = 256


def _secret_name(value: str) -> str:
    try:
        validate_name(value)
    except InvalidSecret as err:
        raise BadRequest("name", str(err)) from None
    return value


def _revocation_id(value: str) -> str:
    if not REVOCATION_ID.fullmatch(value):
        raise NotFound(f"no revocation {value[:64]!r}")
    return value


def _incident_id(value: str) -> str:
    if not FINDING_ID.fullmatch(value):  # the same form: 32 lowercase hex
        raise NotFound(f"no open incident {value[:64]!r}")
    return value


def _actor_id(value: str) -> str:
    if not 1 <= len(value) <= MAX_ACTOR_ID:
        raise BadRequest("actor_id", f"1 to {MAX_ACTOR_ID} characters")
    problem = refused_identity(value)
    if problem is not None:  # every identity of the kind is refused where it would be recorded: nobody's
        raise NotFound(f"no actor: {problem.replace('the caller id', 'the actor id')}")
    return value


def _finding_id(value: str) -> str:
    if not FINDING_ID.fullmatch(value):
        raise BadRequest("finding_id", "must be 32 lowercase hex characters")
    return value


@dataclass(frozen=True)
class RouteParameter:
    """A route parameter: how it is checked, its pattern and what the OpenAPI document says of it."""

    check: Callable[[str], str]
    pattern: str
    description: str


#: Every route parameter, by the name routes give it: a route may name only these.
ROUTE_PARAMETERS: dict[str, RouteParameter] = {
    "name": RouteParameter(
        _secret_name, f"^{NAME}$", "The secret's name (1-127 of 0-9, a-z, A-Z, -); anything else is 400."
    ),
    "id": RouteParameter(
        _revocation_id,
        f"^{REVOCATION_ID.pattern}$",
        "A revocation request's id (32 lowercase hex); anything else is 404.",
    ),
    "finding_id": RouteParameter(
        _finding_id,
        f"^{FINDING_ID.pattern}$",
        "A suspicious-activity finding's id (32 lowercase hex); anything else is 400.",
    ),
    "actor_id": RouteParameter(
        _actor_id,
        f"^[^/]{{1,{MAX_ACTOR_ID}}}$",
        "An actor's id as the audit records name it (an Entra object id, an application's, or "
        "`vault:<vault>` for the changes made to a vault outside the API), percent-encoded; longer than "
        "256 characters is 400; an id with an invisible or control character is nobody's (404).",
    ),
    "incident_id": RouteParameter(
        _incident_id,
        f"^{FINDING_ID.pattern}$",
        "An audit incident's id (32 lowercase hex); anything else is 404.",
    ),
}


def endpoint(  # noqa: PLR0913 - the registration's terms, each named at every use
    bp: func.Blueprint,
    name: str,
    route: str,
    method: str,
    *,
    roles: Role | Sequence[Role],
    accepts: type[M],
    vault: VaultUse | None = None,
) -> Callable[[Callable[[Call[M]], func.HttpResponse]], Any]:
    """Register the HTTP function ``name`` for ``METHOD /api/<route>``, run as the decorated handler by
    ``serve``; the app's own functions are declared in ``index.py`` (``routes.Area``), their handlers
    imported on the first call. Raises ValueError as ``routes.check`` does."""
    allowed = (roles,) if isinstance(roles, Role) else tuple(roles)
    check(name, route, allowed)

    def register_handler(handler: Callable[[Call[M]], func.HttpResponse]) -> Any:
        return register(bp, Route(name, route, method, allowed, lambda: accepts, lambda: handler, vault))

    return register_handler


def anonymous(bp: func.Blueprint, name: str, route: str) -> Callable[[Callable[[], func.HttpResponse]], Any]:
    """Register the anonymous ``GET /api/<route>`` (no function key, no caller identity), run as the
    decorated handler by ``serve_anonymous``."""

    def register_handler(handler: Callable[[], func.HttpResponse]) -> Any:
        return register_anonymous(bp, name, route, lambda: handler)

    return register_handler


def serve(
    route: Route, handler: Callable[[Call[Any]], func.HttpResponse], req: func.HttpRequest, context: Any
) -> func.HttpResponse:
    """One call of a protected HTTP function, checked in this order: the caller holds one of the route's
    roles (401/403, audited), each route parameter is valid, the vault (``route.vault``: how the endpoint
    takes ``?vault=``; None: it does not) is one the service manages, and the query parameters of a GET
    (or the JSON body of any other method, with no other query parameter) are ``route.accepts`` (400
    naming the parameter or field); then ``handler``. Every error is mapped by ``respond``."""
    with telemetry.invocation(route.name, "http", correlation_id(context), context) as span:
        accepts = route.accepts
        assert accepts is not None, route.name  # routes.register: a protected route accepts a model
        answer = respond(
            lambda: _handle(handler, _call(req, context, route.roles, route.parameters, accepts, route.vault))
        )
        telemetry.answered(span, answer.status_code)
        return answer


def serve_anonymous(route: Route, handler: Callable[[], func.HttpResponse]) -> func.HttpResponse:
    """One call of an anonymous HTTP function."""
    with telemetry.invocation(route.name, "http", None) as span:
        answer = handler()
        telemetry.answered(span, answer.status_code)
        return answer


def _call(
    req: func.HttpRequest,
    context: func.Context | None,
    roles: tuple[Role, ...],
    parameters: Sequence[str],
    accepts: type[M],
    use: VaultUse | None,
) -> Call[M]:
    container, cid = get_container(), correlation_id(context)
    principal = authorize(req, roles, container, correlation_id=cid, secret_name=_about(req))
    route = {p: ROUTE_PARAMETERS[p].check(str(req.route_params.get(p, ""))) for p in parameters}
    vault = _vault(container, req.params.get(VAULT_PARAMETER), use) if use else None
    ignored = (FUNCTION_KEY_PARAMETER, VAULT_PARAMETER) if use else (FUNCTION_KEY_PARAMETER,)
    if req.method.upper() == "GET":
        parsed = parse_params(accepts, req.params, ignored=ignored)
    else:
        parsed = parse_body(accepts, req, ignored=ignored)
    return Call(req, container, cid, principal, route, parsed, vault)


def _vault(container: Container, given: str | None, use: VaultUse) -> str | None:
    """The vault a call names, checked: one the service manages. Absent: the designated vault for an
    endpoint about one vault's secret (``one``) — a 400 when the service manages several, since a name
    may be in two of them — or every vault (None) for a filter (``any``)."""
    vaults = container.vaults
    if given is None:
        return None if use == "any" else sole_vault(container)
    try:
        # Exactly as the service names it (the OpenAPI document lists them): " fleet" or "FLEET" is 400.
        if not VAULT_PATTERN.fullmatch(given) or given not in vaults:
            raise UnknownVault(given, list(vaults))
        return container.vault(given).name
    except UnknownVault as err:
        raise BadRequest(VAULT_PARAMETER, str(err)) from None


def sole_vault(container: Container) -> str:
    """The vault a call about one secret means when it names none: the only one the service manages.
    Raises BadRequest (400 naming ``vault``) when it manages several: a name may be in two of them."""
    vaults = container.vaults
    if len(vaults) > 1:
        raise BadRequest(
            VAULT_PARAMETER, f"required: the service manages several vaults ({', '.join(vaults)})"
        )
    return next(iter(vaults))


def _handle(handler: Callable[[Call[M]], func.HttpResponse], call: Call[M]) -> func.HttpResponse:
    """The handler's answer. A write naming a secret the vault does not hold is recorded on the service
    chain (SECRET_NOT_FOUND) before its 404: the services record nothing on a chain of that name."""
    try:
        return handler(call)
    except NoSuchSecret as err:
        if call.req.method.upper() != "GET":
            _record_not_found(call, err)
        raise


def _record_not_found(call: Call[Any], err: NoSuchSecret) -> None:
    details = {"secret_name": err.name, "method": call.req.method.upper(), "route": route_of(call.req)}
    try:
        call.scope.trail.record(
            Action.SECRET_NOT_FOUND,
            result=Result.FAILURE,
            actor=call.actor,
            correlation_id=call.correlation_id,
            details=details,
        )
    except DomainError as failed:  # the 404 stands; losing its record is logged loudly
        logger.error("SECRET_NOT_FOUND of %s could not be audited: %s", err.name, failed)


def _about(req: func.HttpRequest) -> str | None:
    """The secret a call is about, when it names a well-formed one (its route's ``{name}``, or a
    ``secret_name`` query parameter): named in a refusal's record."""
    for raw in (req.route_params.get("name"), req.params.get("secret_name")):
        found = str(raw or "").strip()
        if NAME_PATTERN.fullmatch(found):
            return found
    return None


def json_response(body: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        mimetype="application/json",
        charset="utf-8",
        headers=_NO_STORE,
    )


def problem(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    problem_type: str = "about:blank",
    **extra: Any,
) -> func.HttpResponse:
    """An RFC 9457 problem+json response (``answers.Problem``; ``extra`` its members beyond the RFC's).
    ``detail`` must never carry a secret value."""
    members: dict[str, Any] = {"type": problem_type, "title": title, "status": status}
    if detail:
        members["detail"] = detail
    made = Problem.model_validate({**members, **extra})
    return func.HttpResponse(
        json.dumps(made.to_json(), separators=(",", ":")),
        status_code=status,
        mimetype=PROBLEM_JSON,
        charset="utf-8",
        headers={**_NO_STORE, **(headers or {})},
    )


#: The query parameter the Functions host takes the function key from (``?code=``, what the portal's "Get
#: function URL" gives): the host checks it, passes it on, and every endpoint ignores it.
FUNCTION_KEY_PARAMETER = "code"


#: How a query parameter's text must look for the type its model declares (as JSON Schema names it), before
#: pydantic reads it: its lax parsing would take "+7", " 7", "7.0" or "7_0" for 7, "yes" for true, and a
#: Unix time for a moment.
_QUERY_FORMS: dict[str, tuple[re.Pattern[str], str]] = {
    "integer": (re.compile(r"-?(?:0|[1-9][0-9]*)"), "must be an integer (decimal digits only)"),
    "boolean": (re.compile(r"true|false"), "must be true or false"),
    "date-time": (
        re.compile(
            r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}(?:[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2}))?"
        ),
        "must be RFC 3339 with a zone (2026-07-01T00:00:00Z) or a date (2026-07-01), years 1000-9999",
    ),
}


@functools.cache
def _query_forms(model: type[BaseModel]) -> dict[str, tuple[re.Pattern[str], str]]:
    """The form each of ``model``'s parameters must have (those whose type has one), by its name."""

    def kind(schema: Mapping[str, Any]) -> str | None:
        if schema.get("format") in ("date-time", "date"):
            return "date-time"
        if schema.get("type") in _QUERY_FORMS:
            return str(schema["type"])
        return next(filter(None, map(kind, schema.get("anyOf", ()))), None)

    properties = model.model_json_schema().get("properties", {})
    return {name: _QUERY_FORMS[k] for name, schema in properties.items() if (k := kind(schema))}


def parse_params(
    model: type[M], params: Mapping[str, str], *, ignored: Sequence[str] = (FUNCTION_KEY_PARAMETER,)
) -> M:
    """Validate query parameters (but the function key's, and the others ``ignored``: read before);
    unknown ones are refused, and an integer, a boolean or a moment must be written as one (``_QUERY_FORMS``).
    Raises BadRequest naming the parameter."""
    given = {k: v for k, v in params.items() if k not in ignored}
    forms = _query_forms(model)
    for name, value in given.items():
        form = forms.get(name)
        if form is not None and not form[0].fullmatch(value):
            raise BadRequest(name, form[1])
    try:
        return model.model_validate(given)
    except ValidationError as err:
        raise _bad_request(err, where="query", unknown="unknown parameter") from None


def parse_body(
    model: type[M], req: func.HttpRequest, *, ignored: Sequence[str] = (FUNCTION_KEY_PARAMETER,)
) -> M:
    """Validate the request of a POST: no query parameters (but the function key, and the others
    ``ignored``: read before), ``Content-Type: application/json``, a JSON body (``{}`` at least) within
    MAX_BODY_BYTES. Raises BadRequest naming the parameter or field,
    UnsupportedMediaType."""
    unknown = next((p for p in req.params if p not in ignored), None)
    if unknown is not None:
        raise BadRequest(unknown[:100], "unknown parameter")
    media_type = (req.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media_type != BODY_MEDIA_TYPE:
        raise UnsupportedMediaType(media_type[:100] or None)
    raw = req.get_body()
    if not raw.strip():
        raise BadRequest("body", "required: a JSON object ({} when the call has nothing to say)")
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest("body", f"larger than {MAX_BODY_BYTES} bytes")
    document = _json_document(raw)
    try:
        # Strict: "7" is not 7, "yes" is not true, 7.5 is not an integer.
        return model.model_validate_json(document, strict=True)
    except ValidationError as err:
        raise _bad_request(err, where="body", unknown="unknown field") from None


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _DuplicateKey(key)
        found[key] = value
    return found


def _json_document(raw: bytes) -> str | bytes:
    """The body as the models read it. A key named twice in one object is refused (parsers disagree on
    which one counts: pydantic takes the last, so ``{"dry_run":true,"dry_run":false}`` would be a real
    rotation); so are NaN and Infinity, which are no JSON. A number without a fraction is an integer
    whatever its spelling (``30.0``, ``3e1``: JSON Schema's data model, which the document states), so
    it is written as one. Raises BadRequest naming the key or the body. A body that is no JSON at all is
    left as it is to the model's validation, which says so."""
    try:
        parsed = json.loads(raw, object_pairs_hook=_unique, parse_float=_number, parse_constant=_no_constant)
    except _DuplicateKey as err:
        raise BadRequest(err.key[:100], "duplicate key") from None
    except _NotJson as err:
        raise BadRequest("body", str(err)) from None
    except ValueError:
        return raw
    return json.dumps(parsed)


class _NotJson(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not JSON")


def _number(text: str) -> int | float:
    value = decimal.Decimal(text)
    return int(value) if value == value.to_integral_value() and abs(value.adjusted()) < 100 else float(text)


def _bad_request(err: ValidationError, *, where: str, unknown: str) -> BadRequest:
    """The first validation error, naming the parameter or (dotted) body field at fault."""
    first = err.errors()[0]
    name = ".".join(str(part) for part in first["loc"]) or where
    return BadRequest(name, unknown if first["type"] == "extra_forbidden" else first["msg"])


class BadRequest(Exception):
    """400: ``parameter`` is the query parameter or body field at fault."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


class UnsupportedMediaType(Exception):
    """415: the body is not ``application/json``; ``media_type`` is what was sent (None: no header)."""

    def __init__(self, media_type: str | None) -> None:
        super().__init__(f"unsupported media type {media_type!r}")
        self.media_type = media_type


def respond(handler: Callable[[], func.HttpResponse]) -> func.HttpResponse:
    """Run an HTTP handler and map every error to problem+json; nothing internal leaks to the caller.

    A 503 always means "a dependency is unavailable and nothing was changed: try again". A change that
    was made but could not be recorded (OutcomeNotRecorded) is therefore a 500, never a 503: its detail
    says the change was made and names it, and the problem carries ``"changed": true`` and the ids, so
    nobody repeats it believing nothing happened."""
    try:
        return handler()
    except (BadRequest, AccessDenied, UnsupportedMediaType) as err:
        return _refused(err)
    except NotPermitted as err:
        return problem(403, "Forbidden", str(err))
    except InvalidSecret as err:  # a name, value or tag outside Key Vault's rules
        return problem(400, "Bad Request", str(err), parameter=err.parameter)
    except NotFound as err:
        return problem(404, "Not Found", str(err))
    except StateTampered as err:
        # Its own type: a client (or an operator's tooling) tells it from an ordinary conflict, which a
        # retry can resolve. The row's keys and the failed check, never its contents.
        return problem(
            409, "Conflict", str(err), problem_type=STATE_TAMPERED_TYPE,
            table=err.table, partition=err.partition, key=err.key[:200], check=err.check,
        )  # fmt: skip
    except (Conflict, InvalidTransition, TargetRefused) as err:  # a target's refusal: a state to fix first
        return problem(409, "Conflict", str(err))
    except OutcomeNotRecorded as err:
        logger.error("a change was made but not recorded: %s", err)
        detail = f"{err.change}: the change was made, but its record could not be written ({err.reason})"
        members: dict[str, Any] = {"changed": True, **err.changed}
        return problem(500, "Internal Server Error", detail, **members)
    except ConfigurationError as err:
        logger.error("configuration error: %s", err)
        return problem(503, "Service Unavailable", f"the service is misconfigured (setting {err.setting})")
    except DependencyUnavailable as err:
        return problem(503, "Service Unavailable", f"{err.dependency} unavailable; nothing was changed")
    except Forbidden as err:
        logger.error("the service's own identity was refused: %s", err)
        return problem(503, "Service Unavailable", "a dependency refused the service's identity")
    except Exception:
        logger.exception("unhandled error in HTTP function")
        return problem(500, "Internal Server Error", "unexpected error; see the service logs")


def _refused(err: Exception) -> func.HttpResponse:
    """The problem of a request refused at the boundary: malformed (400), unauthenticated or
    unauthorized (401/403), of the wrong media type (415)."""
    if isinstance(err, BadRequest):
        return problem(400, "Bad Request", f"{err.parameter}: {err.message}", parameter=err.parameter)
    if isinstance(err, AccessDenied):
        challenge = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return problem(err.status, err.title, err.detail, headers=challenge)
    assert isinstance(err, UnsupportedMediaType)
    sent = f"got {err.media_type}" if err.media_type else "no Content-Type was sent"
    return problem(415, "Unsupported Media Type", f"the body must be {BODY_MEDIA_TYPE}; {sent}")


def correlation_id(context: func.Context | None) -> str | None:
    return getattr(context, "invocation_id", None) if context is not None else None
