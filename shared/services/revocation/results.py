"""What the revocation endpoints answer: the request document, a page of requests, the requests that
cannot be shown. The document is the one the service stores (``Revocation.to_dict``, sealed with its row);
``RevocationDocument.of`` reads it through this model, so a document that drifts from the contract fails
where it is made, and the OpenAPI document describes these same models."""

from __future__ import annotations

import json

from pydantic import Field

from shared.domain import revocation as domain
from shared.domain.revocation import REVOCATION_ID, Reason, Severity, Status
from shared.services.results import Answer, Timestamp


class Decision(Answer):
    by: str
    at: Timestamp
    comment: str | None


class RevocationResult(Answer):
    disabled_versions: list[str]
    new_version: str | None = None
    errors: dict[str, str] | None = Field(None, description="Versions not disabled: id → error class.")


class Revocation(Answer):
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

    @classmethod
    def of(cls, revocation: domain.Revocation) -> Revocation:
        """The request's stored document as the API answers it (read as JSON: its times are text)."""
        return cls.model_validate_json(json.dumps(revocation.to_dict()))


class UnreadableRevocation(Answer):
    """A request that cannot be shown: its row failed its seal (`tampered: <check>`), or the audit trail
    holds it (within 8 days) but its row is gone (`missing: ...`). Each is on record (STATE_TAMPERED) and
    a finding; nothing acts on it."""

    id: str
    secret_name: str | None
    vault: str
    problem: str


class RevocationPage(Answer):
    items: list[Revocation]
    continuation: str | None = Field(description="Pass it as `continuation` for the next page; null: last.")
    unreadable: list[UnreadableRevocation] = Field(
        description="On the first page: requests that cannot be shown (tampered or missing rows)."
    )
