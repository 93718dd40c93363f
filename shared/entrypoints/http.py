"""HTTP helpers shared by every HTTP trigger: JSON and RFC 9457 problem+json responses."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import azure.functions as func
from pydantic import BaseModel, ValidationError

from shared.domain.errors import (
    Conflict,
    DependencyUnavailable,
    Forbidden,
    InvalidTransition,
    NotFound,
    NotPermitted,
    OutcomeNotRecorded,
)
from shared.domain.secrets import InvalidSecret
from shared.domain.state import StateTampered
from shared.domain.targets import TargetRefused

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
    """An RFC 9457 problem+json response. ``detail`` must never carry a secret value."""
    body: dict[str, Any] = {"type": problem_type, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return func.HttpResponse(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        mimetype=PROBLEM_JSON,
        charset="utf-8",
        headers={**_NO_STORE, **(headers or {})},
    )


def parse_params(model: type[M], params: Mapping[str, str]) -> M:
    """Validate query parameters; unknown ones are refused. Raises BadRequest naming the parameter."""
    try:
        return model.model_validate(dict(params))
    except ValidationError as err:
        raise _bad_request(err, where="query", unknown="unknown parameter") from None


def parse_body(model: type[M], req: func.HttpRequest) -> M:
    """Validate the request of a POST: no query parameters, ``Content-Type: application/json`` (also for
    an empty body, which means {}), a JSON body within MAX_BODY_BYTES. Raises BadRequest naming the
    parameter or field, UnsupportedMediaType."""
    unknown = next(iter(req.params), None)
    if unknown is not None:
        raise BadRequest(unknown[:100], "unknown parameter")
    media_type = (req.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media_type != BODY_MEDIA_TYPE:
        raise UnsupportedMediaType(media_type[:100] or None)
    raw = req.get_body() or b"{}"
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest("body", f"larger than {MAX_BODY_BYTES} bytes")
    try:
        return model.model_validate_json(raw)
    except ValidationError as err:
        raise _bad_request(err, where="body", unknown="unknown field") from None


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
    from shared.config import ConfigurationError
    from shared.entrypoints.auth import AccessDenied

    try:
        return handler()
    except (BadRequest, AccessDenied, UnsupportedMediaType) as err:
        return _refused(err)
    except NotPermitted as err:
        return problem(403, "Forbidden", str(err))
    except InvalidSecret as err:  # a name, value or tag outside Key Vault's rules
        return problem(400, "Bad Request", str(err))
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
    from shared.entrypoints.auth import AccessDenied

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
