"""Secret management endpoints: list, onboard, policy, rotate, status, rollback, the rotation plan, and
decommission (soft delete) and recovery.

Every endpoint needs Secrets.Rotation.Operate, except delete and recover (Secrets.Revocation.Execute); the
read-only ones (list, status, plan) also accept Secrets.Audit.Read. Errors are problem+json (see
shared.entrypoints.http.respond); no response ever carries a secret value. A change that was made but
whose success record failed is a 500 naming it (``"changed": true`` with its ids), never a 503 "nothing
was changed"; a rotation request that was queued is a 202 with its id whatever became of its record,
since asking again would rotate twice.
"""

from __future__ import annotations

import uuid

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field

from shared.bootstrap import Container, get_container
from shared.domain.identity import Principal, Role
from shared.domain.policy import RotationPolicy
from shared.domain.secrets import NAME_PATTERN, validate_name
from shared.entrypoints.auth import actor_of, authorize
from shared.entrypoints.http import (
    BadRequest,
    correlation_id,
    json_response,
    parse_body,
    parse_params,
    respond,
)
from shared.services import catalog, decommission
from shared.services.rollback import rollback

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ unannotated

SECRET_NAME = r"^[0-9A-Za-z-]{1,127}$"
VERSION_ID = r"^[0-9A-Za-z]{1,64}$"
READERS = (Role.ROTATION_OPERATE, Role.AUDIT_READ)


class _Policy(BaseModel):
    """A rotation policy as structured fields; the rules are RotationPolicy's (catalog.build_policy)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    kind: str | None = Field(None, min_length=1, max_length=64)
    rotation_interval_days: int
    validity_days: int | None = None
    owner: str | None = Field(None, min_length=1, max_length=256)
    rotator: str | None = Field(None, min_length=1, max_length=64)
    rotation_target: str | None = Field(None, min_length=1, max_length=256)
    rotation_grace_hours: int | None = None
    expiry_warning_days: list[int] | None = Field(None, min_length=1, max_length=5)

    def fields(self) -> catalog.PolicyInput:
        values = self.model_dump(exclude={"name"})
        values["expiry_warning_days"] = tuple(values["expiry_warning_days"] or ()) or None
        return catalog.PolicyInput(**values)


class OnboardBody(_Policy):
    name: str = Field(pattern=SECRET_NAME)
    kind: str = Field(min_length=1, max_length=64)


class RotateBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    dry_run: bool = False
    force: bool = False


class RollbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    from_version: str | None = Field(None, pattern=VERSION_ID)


class ListParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(50, ge=1, le=catalog.MAX_PAGE)
    continuation: str | None = Field(None, pattern=SECRET_NAME)


class PlanParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    within_days: int = Field(7, ge=1, le=365)


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _reader(
    req: func.HttpRequest, container: Container, cid: str | None, name: str | None = None
) -> Principal:
    """The caller of a read-only endpoint: Secrets.Rotation.Operate or Secrets.Audit.Read."""
    return authorize(req, READERS, container, correlation_id=cid, secret_name=name)


def _name(req: func.HttpRequest) -> str:
    """The route's secret name; InvalidSecret (400) when it cannot be one."""
    name = str(req.route_params.get("name", ""))
    validate_name(name)
    return name


def _valid(req: func.HttpRequest) -> str | None:
    name = req.route_params.get("name", "")
    return name if NAME_PATTERN.fullmatch(name) else None


def _policy(
    fields: catalog.PolicyInput, *, name: str, reserved: frozenset[str], onboarding: bool = False
) -> RotationPolicy:
    try:
        return catalog.build_policy(fields, onboarding=onboarding, name=name, reserved=reserved)
    except catalog.InvalidPolicy as err:
        raise BadRequest(err.field, err.problem) from None


@bp.function_name("secrets_list")
@bp.route(route="secrets", methods=["GET"])
def secrets_list(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    def handle() -> func.HttpResponse:
        container, cid = get_container(), correlation_id(context)
        _reader(req, container, cid)
        params = parse_params(ListParams, req.params)
        page = catalog.list_managed(
            container.secret_store, container.state_store, container.clock,
            reserved=container.reserved_secrets, limit=params.limit, after=params.continuation,
        )  # fmt: skip
        return json_response(page)

    return respond(handle)


@bp.function_name("secrets_onboard")
@bp.route(route="secrets", methods=["POST"])
def secrets_onboard(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    def handle() -> func.HttpResponse:
        container, cid = get_container(), correlation_id(context)
        principal = authorize(req, Role.ROTATION_OPERATE, container, correlation_id=cid)
        body = parse_body(OnboardBody, req)
        policy = _policy(body.fields(), name=body.name, reserved=container.reserved_secrets, onboarding=True)
        version = catalog.onboard(
            container.secret_store, container.state_store, container.audit_trail, container.clock,
            reserved=container.reserved_secrets, name=body.name, policy=policy,
            actor=actor_of(req, principal), correlation_id=cid, rotators=container.target_rotators,
        )  # fmt: skip
        return json_response(catalog.version_dict(version), 201)

    return respond(handle)


@bp.function_name("secrets_policy")
@bp.route(route="secrets/{name}/policy", methods=["PUT"])
def secrets_policy(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    def handle() -> func.HttpResponse:
        container, cid = get_container(), correlation_id(context)
        principal = authorize(
            req, Role.ROTATION_OPERATE, container, correlation_id=cid, secret_name=_valid(req)
        )
        name, body = _name(req), parse_body(_Policy, req)
        try:
            policy = catalog.apply_policy(
                container.secret_store, container.state_store, container.audit_trail, container.clock,
                reserved=container.reserved_secrets, name=name, fields=body.fields(),
                actor=actor_of(req, principal), correlation_id=cid, rotators=container.target_rotators,
            )  # fmt: skip
        except catalog.InvalidPolicy as err:
            raise BadRequest(err.field, err.problem) from None
        return json_response({"name": name, "policy": catalog.policy_dict(policy)})

    return respond(handle)


@bp.function_name("secrets_rotate")
@bp.route(route="secrets/{name}/rotate", methods=["POST"])
def secrets_rotate(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    def handle() -> func.HttpResponse:
        container, cid = get_container(), correlation_id(context)
        principal = authorize(
            req, Role.ROTATION_OPERATE, container, correlation_id=cid, secret_name=_valid(req)
        )
        name, body = _name(req), parse_body(RotateBody, req)
        if body.dry_run:
            return json_response(catalog.plan_rotation(
                container.secret_store, container.state_store, container.clock,
                reserved=container.reserved_secrets, name=name, force=body.force,
                stall_after=container.settings.rotation_stall_after,
            ))  # fmt: skip
        ticket = catalog.request_rotation(
            container.secret_store, container.state_store, container.rotation_requests, container.audit_trail,
            container.clock, reserved=container.reserved_secrets, name=name, force=body.force,
            actor=actor_of(req, principal), correlation_id=cid or uuid.uuid4().hex,
        )  # fmt: skip
        answer = {"rotation_id": ticket.rotation_id, "status": ticket.status, "joined": ticket.joined}
        response = json_response(answer, 202)
        response.headers["Location"] = f"/api/secrets/{name}/status"
        return response

    return respond(handle)


@bp.function_name("secrets_status")
@bp.route(route="secrets/{name}/status", methods=["GET"])
def secrets_status(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    def handle() -> func.HttpResponse:
        container, cid = get_container(), correlation_id(context)
        _reader(req, container, cid, _valid(req))
        name = _name(req)
        parse_params(NoParams, req.params)
        status = catalog.secret_status(
            container.secret_store, container.state_store, container.audit_log, container.clock,
            reserved=container.reserved_secrets, vault=container.settings.key_vault.name, name=name,
            stall_after=container.settings.rotation_stall_after,
        )  # fmt: skip
        return json_response(status)

    return respond(handle)


@bp.function_name("secrets_rollback")
@bp.route(route="secrets/{name}/rollback", methods=["POST"])
def secrets_rollback(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    def handle() -> func.HttpResponse:
        container, cid = get_container(), correlation_id(context)
        principal = authorize(
            req, Role.ROTATION_OPERATE, container, correlation_id=cid, secret_name=_valid(req)
        )
        name, body = _name(req), parse_body(RollbackBody, req)
        outcome = rollback(
            name, container.secret_store, container.state_store, container.audit_trail, container.publisher,
            container.clock, reserved=container.reserved_secrets, from_version=body.from_version,
            actor=actor_of(req, principal), correlation_id=cid,
        )  # fmt: skip
        return json_response(outcome.to_dict())

    return respond(handle)


class DeleteBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    justification: str = Field(min_length=1, max_length=2000)


class EmptyBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


@bp.function_name("secrets_delete")
@bp.route(route="secrets/{name}", methods=["DELETE"])
def secrets_delete(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    def handle() -> func.HttpResponse:
        container, cid = get_container(), correlation_id(context)
        principal = authorize(
            req, Role.REVOCATION_EXECUTE, container, correlation_id=cid, secret_name=_valid(req)
        )
        name, body = _name(req), parse_body(DeleteBody, req)
        decommission.delete_secret(
            container.secret_store, container.state_store, container.audit_trail, container.publisher,
            container.clock, reserved=container.reserved_secrets, name=name, justification=body.justification,
            actor=actor_of(req, principal), correlation_id=cid,
        )  # fmt: skip
        return json_response({"name": name, "status": "deleted", "recoverable": True}, 202)

    return respond(handle)


@bp.function_name("secrets_recover")
@bp.route(route="secrets/{name}/recover", methods=["POST"])
def secrets_recover(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    def handle() -> func.HttpResponse:
        container, cid = get_container(), correlation_id(context)
        principal = authorize(
            req, Role.REVOCATION_EXECUTE, container, correlation_id=cid, secret_name=_valid(req)
        )
        name = _name(req)
        parse_body(EmptyBody, req)
        decommission.recover_secret(
            container.secret_store, container.audit_trail, container.publisher, container.clock,
            reserved=container.reserved_secrets, name=name, actor=actor_of(req, principal),
            correlation_id=cid,
        )  # fmt: skip
        return json_response({"name": name, "status": "recovered"}, 202)

    return respond(handle)


@bp.function_name("rotation_plan")
@bp.route(route="rotation/plan", methods=["GET"])
def rotation_plan(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    def handle() -> func.HttpResponse:
        container, cid = get_container(), correlation_id(context)
        _reader(req, container, cid)
        params = parse_params(PlanParams, req.params)
        plan = catalog.rotation_plan(
            container.secret_store, container.clock, reserved=container.reserved_secrets,
            within_days=params.within_days,
        )  # fmt: skip
        return json_response(plan)

    return respond(handle)
