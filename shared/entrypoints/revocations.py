"""Emergency revocation endpoints (request → approve → execute, break-glass, review) and the
``revocation_expiry`` timer. The rules are the domain's (shared.domain.revocation): these functions parse,
authorize, call one service and map the outcome.

Roles: request and cancel ``Secrets.Revocation.Request`` (break-glass also ``Secrets.BreakGlass``),
approve, reject and review ``Secrets.Revocation.Approve``, execute ``Secrets.Revocation.Execute``; the
reads accept any of those or ``Secrets.Audit.Read``. Errors are problem+json; an execute of an executed
request is 409 carrying the stored request (its result).
"""

from __future__ import annotations

import logging
import re
import uuid

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field

from shared.bootstrap import get_container
from shared.domain.errors import NotFound
from shared.domain.identity import Role
from shared.domain.revocation import (
    MAX_COMMENT,
    MAX_JUSTIFICATION,
    MAX_VERSIONS,
    REVOCATION_ID,
    AlreadyExecuted,
    Reason,
    Revocation,
    Severity,
    Status,
)
from shared.entrypoints.auth import actor_of, authorize
from shared.entrypoints.http import (
    BadRequest,
    correlation_id,
    json_response,
    parse_body,
    parse_params,
    problem,
    respond,
)
from shared.services import revocation
from shared.services.revocation import InvalidRequest, NewRequest

logger = logging.getLogger(__name__)

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ unannotated

SECRET_NAME = r"^[0-9A-Za-z-]{1,127}$"
VERSION_ID = r"^[0-9A-Za-z]{1,64}$"
READERS = (
    Role.REVOCATION_REQUEST,
    Role.REVOCATION_APPROVE,
    Role.REVOCATION_EXECUTE,
    Role.BREAK_GLASS,
    Role.AUDIT_READ,
)
MAX_PAGE = 100
#: Often enough that a request is marked expired within minutes of its TTL, and that an execution whose
#: holder died is finished soon after its lease.
EXPIRY_SCHEDULE = "0 */5 * * * *"


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    secret_name: str = Field(pattern=SECRET_NAME)
    reason: Reason
    severity: Severity
    justification: str = Field(min_length=1, max_length=MAX_JUSTIFICATION)
    versions: list[str] | None = Field(None, min_length=1, max_length=MAX_VERSIONS)
    replace: bool = False
    break_glass: bool = False


class CommentBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    comment: str | None = Field(None, min_length=1, max_length=MAX_COMMENT)


class RequiredComment(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    comment: str = Field(min_length=1, max_length=MAX_COMMENT)


class EmptyBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ListParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Status | None = None
    secret_name: str | None = Field(None, pattern=SECRET_NAME)
    limit: int = Field(50, ge=1, le=MAX_PAGE)
    continuation: str | None = Field(None, pattern=r"^[0-9a-f]{32}$")


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _id(req: func.HttpRequest) -> str:
    """The route's request id; 404 for anything that cannot be one."""
    found = str(req.route_params.get("id", ""))
    if not REVOCATION_ID.fullmatch(found):
        raise NotFound(f"no revocation {found[:64]!r}")
    return found


def _document(revocation_: Revocation, status: int = 200) -> func.HttpResponse:
    response = json_response(revocation_.to_dict(), status)
    if status == 201:
        response.headers["Location"] = f"/api/revocations/{revocation_.id}"
    return response


@bp.function_name("revocations_request")
@bp.route(route="revocations", methods=["POST"])
def revocations_request(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    def handle() -> func.HttpResponse:
        container, cid = get_container(), correlation_id(context)
        principal = authorize(req, Role.REVOCATION_REQUEST, container, correlation_id=cid)
        body = parse_body(RequestBody, req)
        if body.break_glass:
            authorize(req, Role.BREAK_GLASS, container, correlation_id=cid, secret_name=body.secret_name)
        if body.versions is not None and any(not _version(v) for v in body.versions):
            raise BadRequest("versions", "version ids are 1-64 characters of 0-9, a-z, A-Z")
        new = NewRequest(
            body.secret_name, body.reason, body.severity, body.justification, body.versions, body.replace,
            body.break_glass,
        )  # fmt: skip
        try:
            made = revocation.request(
                container.revocations, new, actor_of(req, principal), correlation_id=cid
            )
        except InvalidRequest as err:
            raise BadRequest(err.field, str(err).split(": ", 1)[-1]) from None
        return _document(made, 201)

    return respond(handle)


def _version(version: str) -> bool:
    return re.fullmatch(VERSION_ID, version) is not None


@bp.function_name("revocations_get")
@bp.route(route="revocations/{id}", methods=["GET"])
def revocations_get(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    def handle() -> func.HttpResponse:
        container, cid = get_container(), correlation_id(context)
        authorize(req, READERS, container, correlation_id=cid)
        parse_params(NoParams, req.params)
        return _document(revocation.get(container.state_store, _id(req)))

    return respond(handle)


@bp.function_name("revocations_list")
@bp.route(route="revocations", methods=["GET"])
def revocations_list(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    def handle() -> func.HttpResponse:
        container, cid = get_container(), correlation_id(context)
        authorize(req, READERS, container, correlation_id=cid)
        params = parse_params(ListParams, req.params)
        listing = revocation.list_all(
            container.revocations, status=params.status, secret_name=params.secret_name
        )
        found = listing.requests
        start = 0
        if params.continuation is not None:
            ids = [r.id for r in found]
            if params.continuation not in ids:
                raise BadRequest("continuation", "not a position in this listing")
            start = ids.index(params.continuation) + 1
        page = found[start : start + params.limit]
        more = start + params.limit < len(found)
        body = {
            "items": [r.to_dict() for r in page],
            "continuation": page[-1].id if more and page else None,
            "unreadable": listing.unreadable if params.continuation is None else [],
        }
        return json_response(body)

    return respond(handle)


@bp.function_name("revocations_approve")
@bp.route(route="revocations/{id}/approve", methods=["POST"])
def revocations_approve(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    def handle() -> func.HttpResponse:
        container, cid = get_container(), correlation_id(context)
        principal = authorize(req, Role.REVOCATION_APPROVE, container, correlation_id=cid)
        body = parse_body(CommentBody, req)
        actor = actor_of(req, principal)
        return _document(
            revocation.approve(container.revocations, _id(req), actor, body.comment, correlation_id=cid)
        )

    return respond(handle)


@bp.function_name("revocations_reject")
@bp.route(route="revocations/{id}/reject", methods=["POST"])
def revocations_reject(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    def handle() -> func.HttpResponse:
        container, cid = get_container(), correlation_id(context)
        principal = authorize(req, Role.REVOCATION_APPROVE, container, correlation_id=cid)
        body = parse_body(RequiredComment, req)
        actor = actor_of(req, principal)
        return _document(
            revocation.reject(container.revocations, _id(req), actor, body.comment, correlation_id=cid)
        )

    return respond(handle)


@bp.function_name("revocations_cancel")
@bp.route(route="revocations/{id}/cancel", methods=["POST"])
def revocations_cancel(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    def handle() -> func.HttpResponse:
        container, cid = get_container(), correlation_id(context)
        principal = authorize(req, Role.REVOCATION_REQUEST, container, correlation_id=cid)
        parse_body(EmptyBody, req)
        actor = actor_of(req, principal)
        return _document(revocation.cancel(container.revocations, _id(req), actor, correlation_id=cid))

    return respond(handle)


@bp.function_name("revocations_execute")
@bp.route(route="revocations/{id}/execute", methods=["POST"])
def revocations_execute(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    def handle() -> func.HttpResponse:
        container, cid = get_container(), correlation_id(context)
        principal = authorize(req, Role.REVOCATION_EXECUTE, container, correlation_id=cid)
        parse_body(EmptyBody, req)
        actor = actor_of(req, principal)
        try:
            return _document(revocation.execute(container.revocations, _id(req), actor, correlation_id=cid))
        except AlreadyExecuted as err:
            return problem(409, "Conflict", str(err), revocation=err.revocation.to_dict())

    return respond(handle)


@bp.function_name("revocations_review")
@bp.route(route="revocations/{id}/review", methods=["POST"])
def revocations_review(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    def handle() -> func.HttpResponse:
        container, cid = get_container(), correlation_id(context)
        principal = authorize(req, Role.REVOCATION_APPROVE, container, correlation_id=cid)
        body = parse_body(RequiredComment, req)
        actor = actor_of(req, principal)
        return _document(
            revocation.review(container.revocations, _id(req), actor, body.comment, correlation_id=cid)
        )

    return respond(handle)


@bp.function_name("revocation_expiry")
@bp.timer_trigger(arg_name="timer", schedule=EXPIRY_SCHEDULE)
def revocation_expiry(timer: func.TimerRequest, context: func.Context) -> None:
    cid = correlation_id(context) or uuid.uuid4().hex
    expired, finished = revocation.expire_pending(get_container().revocations, correlation_id=cid)
    logger.info("revocation expiry: %d expired, %d execution(s) finished", len(expired), len(finished))
