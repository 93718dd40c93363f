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
import uuid
from typing import Any

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field

from shared.adapters import telemetry
from shared.bootstrap import VaultScope, get_container
from shared.domain.errors import NotFound
from shared.domain.identity import Role
from shared.domain.revocation import (
    MAX_COMMENT,
    MAX_JUSTIFICATION,
    MAX_VERSIONS,
    AlreadyExecuted,
    Reason,
    Revocation,
    Severity,
    Status,
)
from shared.entrypoints.auth import authorize
from shared.entrypoints.http import (
    BadRequest,
    Call,
    EmptyBody,
    SecretName,
    VersionId,
    correlation_id,
    json_response,
    problem,
)
from shared.services import revocation
from shared.services.revocation import InvalidRequest, NewRequest
from shared.services.revocation.results import Revocation as Document
from shared.services.vaults import failures, for_each

logger = logging.getLogger(__name__)

MAX_PAGE = 100


class RequestBody(BaseModel):
    # Break-glass is for a critical request only: stated in the schema, so the document says it too.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "if": {"properties": {"break_glass": {"const": True}}, "required": ["break_glass"]},
            "then": {"properties": {"severity": {"const": "critical"}}},
        },
    )
    secret_name: SecretName
    reason: Reason
    severity: Severity
    justification: str = Field(min_length=1, max_length=MAX_JUSTIFICATION)
    versions: list[VersionId] | None = Field(None, min_length=1, max_length=MAX_VERSIONS)
    replace: bool = False
    break_glass: bool = False


class CommentBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    comment: str | None = Field(None, min_length=1, max_length=MAX_COMMENT)


class RequiredComment(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    comment: str = Field(min_length=1, max_length=MAX_COMMENT)


class ListParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Status | None = None
    secret_name: SecretName | None = None
    limit: int = Field(50, ge=1, le=MAX_PAGE)
    continuation: str | None = Field(None, pattern=r"^[0-9a-f]{32}$")


def _holder(call: Call[Any]) -> VaultScope:
    """The vault whose namespace holds the request the route names: each vault keeps its own (one read
    per vault when there are several). Raises NotFound, StateTampered (a row that fails its seal is the
    request's, refused)."""
    vaults = list(call.container.vaults.values())
    if len(vaults) == 1:
        return vaults[0]
    for scope in vaults:
        if scope.states.get(revocation.PARTITION, call.route["id"]) is not None:
            return scope
    raise NotFound(f"no revocation {call.route['id']}")


def _document(revocation_: Revocation, status: int = 200) -> func.HttpResponse:
    response = json_response(Document.of(revocation_).to_json(), status)
    if status == 201:
        response.headers["Location"] = f"/api/revocations/{revocation_.id}"
    return response


def revocations_request(call: Call[RequestBody]) -> func.HttpResponse:
    body = call.input
    if body.break_glass:
        authorize(
            call.req, Role.BREAK_GLASS, call.container, correlation_id=call.correlation_id,
            secret_name=body.secret_name,
        )  # fmt: skip
    new = NewRequest(
        body.secret_name, body.reason, body.severity, body.justification, body.versions, body.replace,
        body.break_glass,
    )  # fmt: skip
    try:
        made = revocation.request(call.scope.revocations, new, call.actor, correlation_id=call.correlation_id)
    except InvalidRequest as err:
        raise BadRequest(err.field, str(err).split(": ", 1)[-1]) from None
    return _document(made, 201)


def revocations_get(call: Call[EmptyBody]) -> func.HttpResponse:
    return _document(revocation.get(_holder(call).states, call.route["id"]))


def revocations_list(call: Call[ListParams]) -> func.HttpResponse:
    params = call.input
    try:
        listed = revocation.page(
            [scope.revocations for scope in call.scopes], status=params.status,
            secret_name=params.secret_name, limit=params.limit, continuation=params.continuation,
        )  # fmt: skip
    except InvalidRequest as err:
        raise BadRequest(err.field, str(err).split(": ", 1)[-1]) from None
    return json_response(listed.to_json())


def revocations_approve(call: Call[CommentBody]) -> func.HttpResponse:
    peers, cid = _holder(call).revocations, call.correlation_id
    return _document(
        revocation.approve(peers, call.route["id"], call.actor, call.input.comment, correlation_id=cid)
    )


def revocations_reject(call: Call[RequiredComment]) -> func.HttpResponse:
    peers, cid = _holder(call).revocations, call.correlation_id
    return _document(
        revocation.reject(peers, call.route["id"], call.actor, call.input.comment, correlation_id=cid)
    )


def revocations_cancel(call: Call[EmptyBody]) -> func.HttpResponse:
    peers, cid = _holder(call).revocations, call.correlation_id
    return _document(revocation.cancel(peers, call.route["id"], call.actor, correlation_id=cid))


def revocations_execute(call: Call[EmptyBody]) -> func.HttpResponse:
    peers, cid = _holder(call).revocations, call.correlation_id
    try:
        return _document(revocation.execute(peers, call.route["id"], call.actor, correlation_id=cid))
    except AlreadyExecuted as err:
        return problem(409, "Conflict", str(err), revocation=Document.of(err.revocation).to_json())


def revocations_review(call: Call[RequiredComment]) -> func.HttpResponse:
    peers, cid = _holder(call).revocations, call.correlation_id
    return _document(
        revocation.review(peers, call.route["id"], call.actor, call.input.comment, correlation_id=cid)
    )


def revocation_expiry(timer: func.TimerRequest, context: func.Context) -> None:
    with telemetry.invocation("revocation_expiry", "timer", correlation_id(context), context):
        _revocation_expiry(timer, context)


def _revocation_expiry(timer: func.TimerRequest, context: func.Context) -> None:
    cid = correlation_id(context) or uuid.uuid4().hex

    def expire(scope: VaultScope) -> tuple[list[str], list[str]]:
        done = revocation.expire_pending(scope.revocations, correlation_id=cid)
        _count_waiting(scope)
        return done

    runs, errors = for_each(get_container().vaults, expire)
    for vault, (expired, finished) in runs.items():
        logger.info(
            "revocation expiry: %d expired, %d execution(s) finished (vault %s)",
            len(expired),
            len(finished),
            vault,
        )
    failed = failures("revocation expiry", errors)
    if failed:
        # Fail the invocation so the platform shows it; the next run (in 5 minutes) tries again.
        raise RuntimeError("revocation expiry: " + "; ".join(failed))


def _count_waiting(scope: VaultScope) -> None:
    """The requests waiting for approvals, and those past half their TTL (an operator's alert), counted per
    run. Best effort: the expiry's work is done whatever the count does."""
    try:
        now = scope.peers.clock.now()
        waiting = revocation.list_requests(scope.states, status=Status.PENDING)
        late = sum(1 for r in waiting if now - r.requested_at > (r.expires_at - r.requested_at) / 2)
        counter = telemetry.metrics().approvals_waiting
        counter.add(len(waiting) - late, {"vault": scope.name, "past_half_ttl": False})
        counter.add(late, {"vault": scope.name, "past_half_ttl": True})
    except Exception:
        logger.exception("the revocations waiting in %s could not be counted", scope.name)
