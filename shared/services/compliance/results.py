"""What the compliance report answers (GET /api/compliance/report), section by section. Made by
``shared.services.compliance.report``, serialised as it is, rendered as HTML by the entrypoint, described
by the OpenAPI document. No model here holds a secret value: names, versions, actors, times, counts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.services.audit.results import VerifyReport
from shared.services.results import Answer, Timestamp


class Period(Answer):
    start: Timestamp = Field(description="The period's start (`from`), inclusive.")
    end: Timestamp = Field(description="The period's end (`to`), exclusive.")
    generated_at: Timestamp
    vaults: list[str]


class Late(Answer):
    """A time a managed secret stayed due longer than its allowance: from when it was due to when it was
    rotated (null: not yet, at the period's end or now)."""

    due: Timestamp
    rotated: Timestamp | None
    late_hours: float


class ManagedSecret(Answer):
    name: str
    vault: str
    kind: str | None
    rotator: str | None
    interval_days: int | None
    owner: str | None
    expires: Timestamp | None
    next_due: Timestamp | None
    overdue_hours: float | None = Field(description="How long it has been due, now; null: not due.")
    without_expiry: bool
    without_owner: bool
    rotations: int = Field(description="Rotations in the period (ROTATED success).")
    failed_attempts: int
    stalls: int = Field(description="ROTATION_STALLED records in the period: due and not rotated.")
    late: list[Late]


class RotationEntry(Answer):
    time: Timestamp
    vault: str
    secret_name: str | None
    outcome: Literal["rotated", "failed_attempt", "gave_up"]
    version: str | None
    previous_version: str | None
    rotator: str | None
    rotation_id: str | None
    error: str | None
    record_id: str


class Decided(Answer):
    by: str
    at: Timestamp


class RevocationEntry(Answer):
    id: str
    vault: str
    secret_name: str | None
    reason: str | None
    severity: str | None
    requested_by: str
    requested_at: Timestamp
    required_approvals: int | None
    approvals: list[Decided]
    outcome: Literal["executed", "rejected", "cancelled", "expired", "execute_failed", "pending"]
    decided: Decided | None = Field(description="Who ended it and when (executed, rejected, cancelled).")
    hours_to_approval: float | None
    hours_to_execution: float | None
    break_glass: bool
    review: Decided | None
    review_missing: bool = Field(description="A break-glass execution nobody has reviewed (as of now).")
    record_ids: list[str]


class Denials(Answer):
    actor: str
    denied: int = Field(description="ACCESS_DENIED records: no verified caller, or a role missing.")
    refused_by_rule: int = Field(description="Decisions refused by a rule about people (result denied).")
    first: Timestamp
    last: Timestamp


class IntegrityEvent(Answer):
    time: Timestamp
    action: str
    vault: str
    secret_name: str | None
    actor: str
    record_id: str


class Anchor(Answer):
    seq: int
    time: Timestamp


class IndexGap(Answer):
    """Records of an action the sealed hourly aggregates count in hours whose sealed evidence was missing
    or did not match, of which the query index held fewer: evidence and index copies deleted (the records
    stay in their chains, where verify sees nothing wrong). The report's lists lack them."""

    vault: str
    action: str
    result: str
    counted: int = Field(description="What the sealed aggregates of those hours count.")
    read: int = Field(description="What the report read from the index for those hours.")
    hours: int = Field(description="The hours compared (whose evidence was not used).")


class DeletedHours(Answer):
    """Records the sealed aggregates' running count says exist between two aggregates (or the last and
    the coverage mark), in hours whose aggregate is gone: deleted. The report read those hours from the
    index, which may lack them too."""

    vault: str
    after: Timestamp = Field(description="The last sealed hour before the gap.")
    before: Timestamp = Field(description="The first sealed hour (or the coverage mark) after it.")
    records: int = Field(description="The records the running count misses.")


class Integrity(Answer):
    verification: VerifyReport | None = Field(
        description="The last full verification of the whole trail (the daily `audit_verify` timer's, or a "
        "fresh one's), null when none is stored and sealed."
    )
    anchor: Anchor | None = Field(description="The newest digest anchored in Key Vault.")
    events: list[IntegrityEvent] = Field(
        description="Tampering found, rows refused, chains repaired, incidents and archiving in the period."
    )
    index_gaps: list[IndexGap] = Field(
        description="Where the index read holds fewer records than the sealed hourly aggregates count: "
        "the report is incomplete there."
    )
    deleted_hours: list[DeletedHours] = Field(
        description="Hourly aggregates deleted: the report is incomplete there as far as the index is."
    )
    unsealed_hours: int = Field(
        description="Hours of the period whose aggregate fails its seal (read from the index, not compared)."
    )
    sealed_hours: int = Field(
        description="Hours of the period read from their sealed evidence (the rest from the index)."
    )


class Summary(Answer):
    managed: int
    overdue_now: int
    late_in_period: int
    without_expiry: int
    without_owner: int
    rotations: int
    failed_attempts: int
    gave_up: int
    revocations: int
    executed: int
    break_glass: int
    break_glass_unreviewed: int
    denials: int
    integrity: Literal["ok", "broken", "not verified", "incomplete"] = Field(
        description="The last full verification's status; `incomplete` when the index misses records the "
        "sealed aggregates count (`integrity.index_gaps`) or aggregates were deleted "
        "(`integrity.deleted_hours`)."
    )


class ComplianceReport(Answer):
    period: Period
    summary: Summary
    secrets: list[ManagedSecret]
    rotations: list[RotationEntry]
    revocations: list[RevocationEntry]
    denials: list[Denials]
    integrity: Integrity
