"""The response models: what each endpoint answers, strict and closed. The OpenAPI document
(``shared/entrypoints/openapi.py``) is built from them, and the functions-tier conformance tests check
every answer against its model."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.domain.audit import Action, ActorType, BreakKind
from shared.domain.audit import Result as AuditResult
from shared.domain.policy import Rotator, SecretKind
from shared.domain.revocation import REVOCATION_ID, Reason, Severity, Status

Timestamp = Annotated[AwareDatetime, Field(description="RFC 3339, UTC (`...Z`)")]


class _Answer(BaseModel):
    """Strict and closed: a response that drifts from its model fails the conformance tests."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Problem(_Answer):
    """An RFC 9457 problem (`application/problem+json`). Never carries a secret value."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(
        description="`about:blank` (the status says what kind of problem it is), except "
        "`urn:secret-lifecycle:problem:state-tampered` (409): a stored state the operation needs failed its "
        "seal; `table`, `partition`, `key` and `check` name it (never its contents), a STATE_TAMPERED record "
        "and a finding are written, and nothing acts on the row until an operator deletes it."
    )
    title: str
    status: int = Field(ge=400, le=599)
    detail: str | None = None
    parameter: str | None = Field(
        None, description="400: the query parameter, route parameter or (dotted) body field at fault."
    )
    table: str | None = Field(None, description="state-tampered: the table of the row.")
    partition: str | None = Field(None, description="state-tampered: the row's partition key.")
    key: str | None = Field(None, description="state-tampered: the row's key.")
    check: str | None = Field(None, description="state-tampered: the seal check that failed.")
    changed: bool | None = Field(
        None,
        description="500: `true` when the change WAS made but its record could not be written; the "
        "problem then also carries the change's ids (e.g. `version`, `rollback_id`). Do not repeat it.",
    )


class HealthCheck(_Answer):
    status: Literal["ok", "error"]
    duration_ms: int = Field(ge=0)
    detail: str | None = Field(None, description="Why the check failed: a category, never a credential.")


class HealthReport(_Answer):
    status: Literal["ok", "degraded"]
    checks: dict[str, HealthCheck]


class OpenApiDocument(_Answer):
    """This document (OpenAPI 3.1)."""

    model_config = ConfigDict(extra="allow")
    openapi: str = Field(pattern=r"^3\.1\.\d+$")
    info: dict[str, Any]
    paths: dict[str, Any]


class AuditRecord(_Answer):
    """One audit record. Members without a value are left out."""

    id: str
    time: Timestamp
    action: Action
    vault: str
    secret_name: str | None = None
    version: str | None = None
    result: AuditResult
    actor_id: str
    actor_type: ActorType
    actor_ip: str | None = None
    actor_user_agent: str | None = None
    correlation_id: str | None = None
    details: dict[str, Any]
    error: str | None = None
    duration_ms: int | None = None
    chain: str
    seq: int


class AuditPage(_Answer):
    items: list[AuditRecord]
    continuation: str | None = Field(description="Pass it as `continuation` for the next page; null: last.")


class LastRotationSummary(_Answer):
    time: Timestamp
    secret_name: str | None
    version: str | None


class FailureSummary(_Answer):
    time: Timestamp
    action: Action
    secret_name: str | None
    version: str | None
    error: str | None
    correlation_id: str | None


class Failures(_Answer):
    count: int
    latest: list[FailureSummary] = Field(description="The 10 newest, newest first.")


class AuditSummary(_Answer):
    secret_name: str | None
    days: int
    since: Timestamp
    total: int
    by_action: dict[Action, dict[AuditResult, int]]
    last_rotation: LastRotationSummary | None
    failures: Failures


class ChainBreak(_Answer):
    chain: str
    kind: BreakKind
    seq: int | None
    detail: str


class VerifyReport(_Answer):
    status: Literal["ok", "broken"]
    chains: int
    records: int
    digests: int
    latest_digest: Timestamp | None
    breaks: list[ChainBreak]


class FindingReviewed(_Answer):
    finding_id: str
    status: Literal["reviewed"]
    reviewer: str
    audit_seq: int


class CurrentPolicy(_Answer):
    """A secret's rotation policy as structured fields (the names of the policy body)."""

    kind: SecretKind
    rotation_interval_days: int
    validity_days: int | None
    owner: str | None
    rotator: Rotator
    rotation_target: str | None
    rotation_grace_hours: int | None
    expiry_warning_days: list[int]


class PolicyViolation(_Answer):
    tag: str
    problem: str


class RotationState(_Answer):
    """The secret's write in flight: `idle`, or the step holding its lease (with its id and lease), or
    `tampered` when its stored progress failed its seal (`last_error` says which check; nothing acts on
    the secret's rotation until an operator deletes the row)."""

    status: str
    last_error: str | None
    rotation_id: str | None = None
    attempt: int | None = None
    lease_until: str | None = None
    lease_live: bool | None = None


class SecretSummary(_Answer):
    name: str
    version: str | None
    created: Timestamp
    expires: Timestamp | None
    enabled: bool
    policy: CurrentPolicy | None
    violation: PolicyViolation | None
    next_due: Timestamp | None
    due_now: bool
    state: RotationState


class SecretPage(_Answer):
    items: list[SecretSummary]
    continuation: str | None = Field(description="Pass it as `continuation` for the next page; null: last.")


class SecretProperties(_Answer):
    """A version's properties: never its value."""

    name: str
    version: str
    created: Timestamp
    expires: Timestamp | None
    enabled: bool
    content_type: str | None
    tags: dict[str, str]


class PolicyApplied(_Answer):
    name: str
    policy: CurrentPolicy


class RotationQueued(_Answer):
    """A rotation request, by its own id. `queued`: on the queue, or joined to the request queued for the
    secret; `in_progress`: joined to the rotation running. `joined`: the id of the request or rotation it
    joined (null: it was queued itself). The rotation's outcome record (ROTATED, ROTATION_FAILED or
    ROTATION_SKIPPED) names every id that joined it."""

    rotation_id: str
    status: Literal["queued", "in_progress"]
    joined: str | None


class RotationInProgress(_Answer):
    rotation_id: str | None
    step: str
    lease_until: str | None


class RotationDryRun(_Answer):
    """Whether a rotation would happen now, and why. The version fields are left out when the secret
    cannot be rotated at all (`reason` says why)."""

    name: str
    would_rotate: bool
    force: bool
    in_progress: RotationInProgress | None
    reason: str
    current_version: str | None = None
    created: Timestamp | None = None
    expires: Timestamp | None = None
    next_due: Timestamp | None = None
    due_now: bool | None = None
    rotator: Rotator | None = None
    stalled: Stalled | None = None


class RecordedRotation(_Answer):
    time: Timestamp | None
    version: str | None
    previous_version: str | None
    rotation_id: str | None


class LastWrite(_Answer):
    rotation_id: str | None
    new_version: str


class LastRotation(_Answer):
    recorded: RecordedRotation | None
    last_write: LastWrite | None


class LastFailure(_Answer):
    error_class: str | None
    time: Timestamp | None = None
    version: str | None = None
    rotation_id: str | None = None
    step: str | None = None
    error: str | None = None


class Retirement(_Answer):
    version: str
    after: Timestamp


class Stalled(_Answer):
    """A due secret whose rotation did not happen: since when it counts as stalled, and why (a lease held
    too long, a tampered state, the last attempt's error, or nothing tried). A ROTATION_STALLED record and
    a `rotation_stalled` finding are on record, once per stall."""

    since: Timestamp
    reason: str


class SecretStatus(_Answer):
    name: str
    version: str | None = Field(description="null when the current version is disabled (its id is hidden).")
    created: Timestamp
    expires: Timestamp | None
    enabled: bool
    managed: bool
    reserved: bool
    policy: CurrentPolicy | None
    violation: PolicyViolation | None
    next_due: Timestamp | None
    due_now: bool
    state: RotationState
    last_rotation: LastRotation
    last_failure: LastFailure | None
    retirements: list[Retirement]
    stalled: Stalled | None


class RollbackDone(_Answer):
    name: str
    rollback_id: str
    version: str = Field(description="The new version, carrying the restored value.")
    restored_version: str
    rolled_back_from: str


class SecretDeleted(_Answer):
    name: str
    status: Literal["deleted"]
    recoverable: bool


class SecretRecovered(_Answer):
    name: str
    status: Literal["recovered"]


class PlannedExpiry(_Answer):
    when: Timestamp
    name: str
    event: Literal["expiry"]
    managed: bool
    expired: bool


class PlannedRotation(_Answer):
    when: Timestamp
    name: str
    event: Literal["rotation"]
    reason: Literal["interval", "near_expiry"]
    rotator: Rotator
    due_now: bool


class PlanViolation(_Answer):
    name: str
    tag: str
    problem: str


class RotationPlan(_Answer):
    within_days: int
    now: Timestamp
    until: Timestamp
    items: list[Annotated[PlannedExpiry | PlannedRotation, Field(discriminator="event")]]
    violations: list[PlanViolation]


class Decision(_Answer):
    by: str
    at: Timestamp
    comment: str | None


class RevocationResult(_Answer):
    disabled_versions: list[str]
    new_version: str | None = None
    errors: dict[str, str] | None = Field(None, description="Versions not disabled: id → error class.")


class Revocation(_Answer):
    """A revocation request (the stored document)."""

    id: str = Field(pattern=f"^{REVOCATION_ID.pattern}$")
    secret_name: str
    vault: str
    reason: Reason
    severity: Severity
    justification: str
    versions: list[str]
    replace: bool
    status: Status
    requested_by: str
    requested_at: Timestamp
    expires_at: Timestamp
    required_approvals: int = Field(ge=1)
    approvals: list[Decision]
    rejection: Decision | None
    cancellation: Decision | None
    executed_by: str | None
    executed_at: Timestamp | None
    result: RevocationResult | None
    break_glass: bool
    review_required: bool
    reviewed_by: str | None
    review: Decision | None


class UnreadableRevocation(_Answer):
    """A request that cannot be shown: its row failed its seal (`tampered: <check>`), or the audit trail
    holds it (within 8 days) but its row is gone (`missing: ...`). Each is on record (STATE_TAMPERED) and
    a finding; nothing acts on it."""

    id: str
    secret_name: str | None
    problem: str


class RevocationPage(_Answer):
    items: list[Revocation]
    continuation: str | None = Field(description="Pass it as `continuation` for the next page; null: last.")
    unreadable: list[UnreadableRevocation] = Field(
        description="On the first page: requests that cannot be shown (tampered or missing rows)."
    )


class RevocationConflict(Problem):
    """409 of execute: with the stored request when it was executed (or failed) already."""

    revocation: Revocation | None = None
