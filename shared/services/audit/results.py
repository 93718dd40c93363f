"""What the audit services answer (the summary, a page of records, a finding's review,
verify's report). Made by
the services, serialised as they are (``Answer.to_json``), described by the OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from shared.domain.audit import Action, ActorType, BreakKind
from shared.domain.audit import Result as AuditResult
from shared.services.results import Answer, Timestamp


class LastRotationSummary(Answer):
    time: Timestamp
    secret_name: str | None
    version: str | None


class FailureSummary(Answer):
    time: Timestamp
    action: Action
    secret_name: str | None
    version: str | None
    error: str | None
    correlation_id: str | None


class Failures(Answer):
    count: int
    latest: list[FailureSummary] = Field(description="The 10 newest, newest first.")


class AuditSummary(Answer):
    secret_name: str | None
    days: int
    since: Timestamp
    total: int
    by_action: dict[Action, dict[AuditResult, int]]
    last_rotation: LastRotationSummary | None
    failures: Failures


class FindingReviewed(Answer):
    finding_id: str
    status: Literal["reviewed"]
    reviewer: str
    audit_seq: int


class ChainBreak(Answer):
    chain: str
    kind: BreakKind
    seq: int | None
    detail: str


class AcknowledgedBreak(ChainBreak):
    incident: str = Field(description="The incident two people acknowledged this break under.")
    baseline: int = Field(description="The digest that sealed the incident's new baseline.")


# What verify found: the chains, records and digests it walked, the latest digest's time, and every break
# (``ok``: none). A comment: the document describes the model without it, as before.
class VerifyReport(Answer):
    status: Literal["ok", "broken"]
    chains: int
    records: int
    digests: int
    latest_digest: Timestamp | None
    breaks: list[ChainBreak]
    duration_ms: int | None = Field(None, description="How long the verification took.")
    verified_at: Timestamp | None = Field(
        default=None,
        description="When this full verification ran: the answer is the last one (the daily `audit_verify` "
        "timer runs one) unless `fresh=true` asked for a new one.",
    )
    acknowledged: list[AcknowledgedBreak] = Field(
        default_factory=list,
        description="Breaks an acknowledged incident sealed a new baseline over: still found, never "
        "erased, but no longer counted in `status`.",
    )

    @property
    def ok(self) -> bool:
        return not self.breaks


class IncidentOpened(Answer):
    incident: str
    status: Literal["open"]
    opened_by: str
    opened_at: Timestamp
    expires_at: Timestamp = Field(description="A second person must acknowledge it before then.")
    reason: str
    reference: str | None
    count: int = Field(description="How many breaks the incident is opened over.")
    breaks: list[ChainBreak] = Field(description="The breaks (the first 100).")


class IncidentAcknowledged(Answer):
    incident: str
    status: Literal["acknowledged"]
    opened_by: str
    acknowledged_by: str
    baseline: int = Field(description="The digest that sealed the new baseline over the incident's breaks.")
    count: int


class AuditRecord(Answer):
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


class AuditPage(Answer):
    items: list[AuditRecord]
    continuation: str | None = Field(description="Pass it as `continuation` for the next page; null: last.")
