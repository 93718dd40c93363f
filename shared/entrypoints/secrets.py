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
from typing import Annotated, Literal

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field

from shared.domain.policy import (
    MAX_GRACE_HOURS,
    MAX_INTERVAL_DAYS,
    MAX_VALIDITY_DAYS,
    MAX_WARNINGS,
    RotationPolicy,
    Rotator,
    SecretKind,
)
from shared.domain.secrets import NAME, VAULT
from shared.entrypoints.answers import RollbackDone, RotationQueued, SecretDeleted, SecretRecovered
from shared.entrypoints.http import (
    BadRequest,
    Call,
    EmptyBody,
    SecretName,
    VersionId,
    json_response,
)
from shared.services import catalog, decommission
from shared.services.catalog.policies import current_policy
from shared.services.catalog.results import PolicyApplied
from shared.services.rollback import rollback


class _Policy(BaseModel):
    """A rotation policy as structured fields; the rules are RotationPolicy's (catalog.build_policy). Each
    field's own range is stated here, so the OpenAPI document states it; the rules between fields
    (``validity_days`` at least the interval + 30, the target a rotator needs, a postgres-alternating
    grace shorter than the interval) are build_policy's, a 400 naming the field."""

    model_config = ConfigDict(extra="forbid", strict=True)
    kind: SecretKind | None = None
    rotation_interval_days: int = Field(ge=1, le=MAX_INTERVAL_DAYS)
    validity_days: int | None = Field(None, ge=1, le=MAX_VALIDITY_DAYS)
    owner: str | None = Field(None, min_length=1, max_length=256)
    rotator: Rotator | None = None
    rotation_target: str | None = Field(None, min_length=1, max_length=256)
    rotation_grace_hours: int | None = Field(None, ge=0, le=MAX_GRACE_HOURS)
    expiry_warning_days: list[Annotated[int, Field(ge=1, le=365)]] | None = Field(
        None, min_length=1, max_length=MAX_WARNINGS
    )

    def fields(self) -> catalog.PolicyInput:
        values = self.model_dump(mode="json", exclude={"name"})
        values["expiry_warning_days"] = tuple(values["expiry_warning_days"] or ()) or None
        return catalog.PolicyInput(**values)


class OnboardBody(_Policy):
    name: SecretName
    kind: SecretKind


class RotateBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    dry_run: bool = False
    force: bool = False


class RollbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    from_version: VersionId | None = None


class ListParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(50, ge=1, le=catalog.MAX_PAGE)
    continuation: str | None = Field(None, min_length=1, pattern=f"^(?:{VAULT}:)?(?:{NAME})?$")


class PlanParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    within_days: int = Field(7, ge=1, le=365)


def _policy(
    fields: catalog.PolicyInput, *, name: str, reserved: frozenset[str], onboarding: bool = False
) -> RotationPolicy:
    try:
        return catalog.build_policy(fields, onboarding=onboarding, name=name, reserved=reserved)
    except catalog.InvalidPolicy as err:
        raise BadRequest(err.field, err.problem) from None


def secrets_list(call: Call[ListParams]) -> func.HttpResponse:
    scopes, limit, after = call.scopes, call.input.limit, call.input.continuation
    if len(scopes) == 1:
        if after is not None and ":" in after:  # a name: what a listing of one vault gives
            raise BadRequest("continuation", "not one this listing gave")
        page = catalog.list_managed(scopes[0].peers, limit=limit, after=after)
    else:
        try:
            page = catalog.list_vaults([s.peers for s in scopes], limit=limit, after=after)
        except catalog.InvalidContinuation as err:
            raise BadRequest("continuation", str(err)) from None
    return json_response(page.to_json())


def secrets_onboard(call: Call[OnboardBody]) -> func.HttpResponse:
    c, body = call.container, call.input
    policy = _policy(body.fields(), name=body.name, reserved=c.reserved_secrets, onboarding=True)
    version = catalog.onboard(
        call.scope.peers, body.name, policy, actor=call.actor, correlation_id=call.correlation_id
    )
    return json_response(catalog.properties_of(version).to_json(), 201)


def secrets_policy(call: Call[_Policy]) -> func.HttpResponse:
    try:
        policy = catalog.apply_policy(
            call.scope.peers, call.name, call.input.fields(), actor=call.actor,
            correlation_id=call.correlation_id,
        )  # fmt: skip
    except catalog.InvalidPolicy as err:
        raise BadRequest(err.field, err.problem) from None
    return json_response(PolicyApplied(name=call.name, policy=current_policy(policy)).to_json())


def secrets_rotate(call: Call[RotateBody]) -> func.HttpResponse:
    c, body = call.container, call.input
    if body.dry_run:
        plan = catalog.plan_rotation(
            call.scope.peers, call.name, force=body.force, stall_after=c.settings.rotation_stall_after
        )
        return json_response(plan.to_json())
    ticket = catalog.request_rotation(
        call.scope.peers, call.name, force=body.force, actor=call.actor,
        correlation_id=call.correlation_id or uuid.uuid4().hex,
    )  # fmt: skip
    status: Literal["queued", "in_progress"] = "queued" if ticket.status == "queued" else "in_progress"
    answer = RotationQueued(rotation_id=ticket.rotation_id, status=status, joined=ticket.joined)
    response = json_response(answer.to_json(), 202)
    response.headers["Location"] = f"/api/secrets/{call.name}/status?vault={call.vault}"
    return response


def secrets_status(call: Call[EmptyBody]) -> func.HttpResponse:
    c = call.container
    status = catalog.secret_status(call.scope.peers, call.name, stall_after=c.settings.rotation_stall_after)
    return json_response(status.to_json())


def secrets_rollback(call: Call[RollbackBody]) -> func.HttpResponse:
    outcome = rollback(
        call.scope.peers, call.name, from_version=call.input.from_version, actor=call.actor,
        correlation_id=call.correlation_id,
    )  # fmt: skip
    done = RollbackDone(
        name=outcome.secret_name, rollback_id=outcome.rollback_id, version=outcome.new_version,
        restored_version=outcome.restored_version, rolled_back_from=outcome.rolled_back_from,
    )  # fmt: skip
    return json_response(done.to_json())


class DeleteBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    justification: str = Field(min_length=1, max_length=2000)


def secrets_delete(call: Call[DeleteBody]) -> func.HttpResponse:
    decommission.delete_secret(
        call.scope.peers, call.name, justification=call.input.justification, actor=call.actor,
        correlation_id=call.correlation_id,
    )  # fmt: skip
    return json_response(SecretDeleted(name=call.name, status="deleted", recoverable=True).to_json(), 202)


def secrets_recover(call: Call[EmptyBody]) -> func.HttpResponse:
    decommission.recover_secret(
        call.scope.peers, call.name, actor=call.actor, correlation_id=call.correlation_id
    )
    return json_response(SecretRecovered(name=call.name, status="recovered").to_json(), 202)


def rotation_plan(call: Call[PlanParams]) -> func.HttpResponse:
    plan = catalog.rotation_plan([s.peers for s in call.scopes], within_days=call.input.within_days)
    return json_response(plan.to_json())
