"""What the catalog answers: the managed secrets' page, one secret's status, a version's properties, a
policy as structured fields, a rotation's dry run and the plan of what is coming. Made by the catalog's
services, serialised as they are (``Answer.to_json``), described by the OpenAPI document."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from shared.domain.policy import Rotator, SecretKind
from shared.services.results import Answer, Timestamp


class CurrentPolicy(Answer):
    """A secret's rotation policy as structured fields (the names of the policy body)."""

    kind: SecretKind
    rotation_interval_days: int
    validity_days: int | None
    owner: str | None
    rotator: Rotator
    rotation_target: str | None
    rotation_grace_hours: int | None
    expiry_warning_days: list[int]


class PolicyViolation(Answer):
    tag: str
    problem: str


class RotationState(Answer):
    """The secret's write in flight: `idle`, or the step holding its lease (with its id and lease), or
    `tampered` when its stored progress failed its seal (`last_error` says which check; nothing acts on
    the secret's rotation until an operator deletes the row)."""

    status: str
    last_error: str | None
    rotation_id: str | None = None
    attempt: int | None = None
    lease_until: str | None = None
    lease_live: bool | None = None


class SecretSummary(Answer):
    name: str
    vault: str = Field(description="The vault that holds it (its short name).")
    version: str | None
    created: Timestamp
    expires: Timestamp | None
    enabled: bool
    policy: CurrentPolicy | None
    violation: PolicyViolation | None
    next_due: Timestamp | None
    due_now: bool
    state: RotationState


class SecretPage(Answer):
    items: list[SecretSummary]
    continuation: str | None = Field(
        description="Pass it as `continuation` for the next page; null: last. A name, or `<vault>:<name>` "
        "when the page lists several vaults."
    )


class SecretProperties(Answer):
    """A version's properties: never its value."""

    name: str
    version: str
    created: Timestamp
    expires: Timestamp | None
    enabled: bool
    content_type: str | None
    tags: dict[str, str]


class RecordedRotation(Answer):
    time: Timestamp | None
    version: str | None
    previous_version: str | None
    rotation_id: str | None


class LastWrite(Answer):
    rotation_id: str | None
    new_version: str


class LastRotation(Answer):
    recorded: RecordedRotation | None
    last_write: LastWrite | None


class LastFailure(Answer):
    error_class: str | None
    time: Timestamp | None = None
    version: str | None = None
    rotation_id: str | None = None
    step: str | None = None
    error: str | None = None


class Retirement(Answer):
    version: str
    after: Timestamp


class Stalled(Answer):
    """A due secret whose rotation did not happen: since when it counts as stalled, and why (a lease held
    too long, a tampered state, the last attempt's error, or nothing tried). A ROTATION_STALLED record and
    a `rotation_stalled` finding are on record, once per stall."""

    since: Timestamp
    reason: str


class SecretStatus(Answer):
    name: str
    vault: str = Field(description="The vault that holds it (its short name).")
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


class PolicyApplied(Answer):
    name: str
    policy: CurrentPolicy


class RotationInProgress(Answer):
    rotation_id: str | None
    step: str
    lease_until: str | None


class RotationDryRun(Answer):
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


class PlannedExpiry(Answer):
    when: Timestamp
    name: str
    vault: str = Field(description="The vault that holds it (its short name).")
    event: Literal["expiry"]
    managed: bool
    expired: bool


class PlannedRotation(Answer):
    when: Timestamp
    name: str
    vault: str = Field(description="The vault that holds it (its short name).")
    event: Literal["rotation"]
    reason: Literal["interval", "near_expiry"]
    rotator: Rotator
    due_now: bool


class PlanViolation(Answer):
    name: str
    vault: str = Field(description="The vault that holds it (its short name).")
    tag: str
    problem: str


class RotationPlan(Answer):
    within_days: int
    now: Timestamp
    until: Timestamp
    items: list[Annotated[PlannedExpiry | PlannedRotation, Field(discriminator="event")]]
    violations: list[PlanViolation]
