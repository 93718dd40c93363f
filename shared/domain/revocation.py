"""Emergency revocation requests: request → approve (four-eyes) → execute, with a TTL and a break-glass
path. Pure: the state machine decides whether a transition is allowed; the store (a compare-and-swap
entity per request) decides whether it still applies to what was read.

Rules the machine enforces, whoever calls it:

- Approvers are distinct and never the requester — not even a caller holding every role
  (``NotPermitted``, 403); a second approval by the same person is ``AlreadyApproved`` (409). People are
  compared in one canonical form (``shared.domain.identity.same_identity``).
- A request expires at ``expires_at`` until it is executed: approving, rejecting or executing a pending
  or approved request after that is ``InvalidTransition``; ``expire`` moves it to ``expired``.
- Execution needs ``approved``; it goes ``executing`` first (stored before anything is disabled, so a
  crash mid-way is finished by a retry), then ``executed`` or ``failed`` with the result. It never runs
  twice: executing an executed request is ``InvalidTransition``, which carries the stored result.
- Break-glass requests are executed at once and stay ``review_required`` until someone other than the
  requester reviews them.

Every transition returns a new ``Revocation``: the stored one is never changed in place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.domain.audit import format_time, parse_time
from shared.domain.errors import InvalidTransition, NotPermitted
from shared.domain.identity import same_identity

#: A request id: what ``uuid.uuid4().hex`` writes.
REVOCATION_ID = re.compile(r"[0-9a-f]{32}")
MAX_JUSTIFICATION = 2000
MAX_COMMENT = 2000
MAX_VERSIONS = 100


class Reason(StrEnum):
    SECURITY_INCIDENT = "SECURITY_INCIDENT"
    UNAUTHORIZED_ACCESS = "UNAUTHORIZED_ACCESS"
    EMPLOYEE_TERMINATION = "EMPLOYEE_TERMINATION"
    POLICY_VIOLATION = "POLICY_VIOLATION"
    COMPROMISE_SUSPECTED = "COMPROMISE_SUSPECTED"
    SYSTEM_BREACH = "SYSTEM_BREACH"
    MANUAL_REQUEST = "MANUAL_REQUEST"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Status(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    EXECUTING = "executing"
    EXECUTED = "executed"
    FAILED = "failed"


#: Approvals needed by severity, unless configured otherwise.
DEFAULT_APPROVALS: Mapping[Severity, int] = {
    Severity.LOW: 2,
    Severity.MEDIUM: 2,
    Severity.HIGH: 1,
    Severity.CRITICAL: 1,
}
DEFAULT_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class Decision:
    """An approval, a rejection, a cancellation or a review: who, when, why."""

    by: str
    at: datetime
    comment: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"by": self.by, "at": format_time(self.at), "comment": self.comment}

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> Decision:
        comment = raw.get("comment")
        return cls(str(raw["by"]), parse_time(str(raw["at"])), None if comment is None else str(comment))


@dataclass(frozen=True)
class Result:
    """What an execution did: the versions it disabled, the version a replacement made, and the versions
    it could not disable (id → error class), never silently."""

    disabled_versions: tuple[str, ...] = ()
    new_version: str | None = None
    errors: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"disabled_versions": list(self.disabled_versions)}
        if self.new_version is not None:
            out["new_version"] = self.new_version
        if self.errors:
            out["errors"] = dict(self.errors)
        return out

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> Result:
        return cls(
            tuple(str(v) for v in raw.get("disabled_versions") or ()),
            None if raw.get("new_version") is None else str(raw["new_version"]),
            {str(k): str(v) for k, v in (raw.get("errors") or {}).items()},
        )


class AlreadyApproved(InvalidTransition):
    """A second approval by the same person (409): approvers are distinct people."""


class AlreadyExecuted(InvalidTransition):
    """Execute of a request that was executed (or failed) already: 409 with its stored result."""

    def __init__(self, revocation: Revocation) -> None:
        super().__init__(f"revocation {revocation.id} was {revocation.status.value} already")
        self.revocation = revocation


@dataclass(frozen=True, kw_only=True)
class Revocation:
    """One revocation request (the stored document)."""

    id: str
    secret_name: str
    vault: str
    reason: Reason
    severity: Severity
    justification: str
    versions: tuple[str, ...]
    replace: bool
    status: Status
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    required_approvals: int
    approvals: tuple[Decision, ...] = ()
    rejection: Decision | None = None
    cancellation: Decision | None = None
    executed_by: str | None = None
    executed_at: datetime | None = None
    result: Result | None = None
    break_glass: bool = False
    review_required: bool = False
    review: Decision | None = None

    # -- transitions ------------------------------------------------------------------------------

    def approve(self, by: str, at: datetime, comment: str | None) -> Revocation:
        """One more approval; ``approved`` once there are enough. Raises NotPermitted (the requester),
        InvalidTransition (not pending, expired, approved by ``by`` already)."""
        self._pending(at, "approved")
        if same_identity(by, self.requested_by):
            raise NotPermitted(f"revocation {self.id}: the requester cannot approve their own request")
        if any(same_identity(a.by, by) for a in self.approvals):
            raise AlreadyApproved(f"revocation {self.id}: {by} approved it already")
        approvals = (*self.approvals, Decision(by, at, comment))
        status = Status.APPROVED if len(approvals) >= self.required_approvals else Status.PENDING
        return dataclasses.replace(self, approvals=approvals, status=status)

    def reject(self, by: str, at: datetime, comment: str) -> Revocation:
        """Rejected by an approver. Raises NotPermitted (the requester: cancel instead),
        InvalidTransition (not pending, expired)."""
        self._pending(at, "rejected")
        if same_identity(by, self.requested_by):
            raise NotPermitted(f"revocation {self.id}: the requester cancels, not rejects, their request")
        return dataclasses.replace(self, status=Status.REJECTED, rejection=Decision(by, at, comment))

    def cancel(self, by: str, at: datetime) -> Revocation:
        """Cancelled by its requester while pending or approved. Raises NotPermitted (anyone else),
        InvalidTransition (any other status)."""
        if not same_identity(by, self.requested_by):
            raise NotPermitted(f"revocation {self.id}: only its requester can cancel it")
        if self.status not in (Status.PENDING, Status.APPROVED):
            raise InvalidTransition(f"revocation {self.id} is {self.status.value}: it cannot be cancelled")
        return dataclasses.replace(self, status=Status.CANCELLED, cancellation=Decision(by, at))

    def expire(self, at: datetime) -> Revocation:
        """``expired`` once its TTL ran out while pending or approved (not yet executing). A break-glass
        never expires: it is approved when made, and executed as soon as it can be. Raises
        InvalidTransition otherwise."""
        if self.status not in (Status.PENDING, Status.APPROVED) or at < self.expires_at or self.break_glass:
            raise InvalidTransition(f"revocation {self.id} is {self.status.value}: it does not expire now")
        return dataclasses.replace(self, status=Status.EXPIRED)

    def begin(self, by: str, at: datetime) -> Revocation:
        """``executing``: stored before anything is disabled. Raises AlreadyExecuted (executed or
        failed), InvalidTransition (any other status but approved; approved but past its TTL)."""
        if self.status in (Status.EXECUTED, Status.FAILED):
            raise AlreadyExecuted(self)
        if self.status != Status.APPROVED:
            raise InvalidTransition(f"revocation {self.id} is {self.status.value}: it cannot be executed")
        if at >= self.expires_at and not self.break_glass:
            raise InvalidTransition(f"revocation {self.id} expired at {format_time(self.expires_at)}")
        return dataclasses.replace(self, status=Status.EXECUTING, executed_by=by, executed_at=at)

    def finish(self, result: Result, at: datetime) -> Revocation:
        """``executed``, or ``failed`` when some version could not be disabled. Raises InvalidTransition
        unless executing."""
        if self.status != Status.EXECUTING:
            raise InvalidTransition(f"revocation {self.id} is {self.status.value}, not executing")
        status = Status.FAILED if result.errors else Status.EXECUTED
        return dataclasses.replace(self, status=status, result=result, executed_at=at)

    def reviewed(self, by: str, at: datetime, comment: str) -> Revocation:
        """A break-glass execution reviewed by someone other than its requester. Raises NotPermitted (the
        requester), InvalidTransition (no review due)."""
        if not self.review_required or self.status not in (Status.EXECUTED, Status.FAILED):
            raise InvalidTransition(f"revocation {self.id} needs no review (now)")
        if same_identity(by, self.requested_by):
            raise NotPermitted(f"revocation {self.id}: the requester cannot review their own break-glass")
        return dataclasses.replace(self, review_required=False, review=Decision(by, at, comment))

    def _pending(self, at: datetime, what: str) -> None:
        if self.status != Status.PENDING:
            raise InvalidTransition(f"revocation {self.id} is {self.status.value}: it cannot be {what}")
        if at >= self.expires_at:
            raise InvalidTransition(f"revocation {self.id} expired at {format_time(self.expires_at)}")

    def terms(self) -> str:
        """The digest of what the request asks, fixed when it is made: which secret, which versions, how
        severe, how many approvals, replace or not, by whom, until when. Its first record carries it, so an
        execution disables exactly what was requested and recorded (the row is only a cache of it)."""
        document = {
            "id": self.id,
            "vault": self.vault.lower(),
            "secret_name": self.secret_name.lower(),
            "versions": sorted(self.versions),
            "severity": self.severity.value,
            "required_approvals": self.required_approvals,
            "replace": self.replace,
            "break_glass": self.break_glass,
            "requested_by": self.requested_by,
            "requested_at": format_time(self.requested_at),
            "expires_at": format_time(self.expires_at),
        }
        text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode()).hexdigest()

    # -- storage ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The request document (what the API answers and what is stored)."""
        return {
            "id": self.id,
            "secret_name": self.secret_name,
            "vault": self.vault,
            "reason": self.reason.value,
            "severity": self.severity.value,
            "justification": self.justification,
            "versions": list(self.versions),
            "replace": self.replace,
            "status": self.status.value,
            "requested_by": self.requested_by,
            "requested_at": format_time(self.requested_at),
            "expires_at": format_time(self.expires_at),
            "required_approvals": self.required_approvals,
            "approvals": [a.to_dict() for a in self.approvals],
            "rejection": self.rejection.to_dict() if self.rejection else None,
            "cancellation": self.cancellation.to_dict() if self.cancellation else None,
            "executed_by": self.executed_by,
            "executed_at": format_time(self.executed_at) if self.executed_at else None,
            "result": self.result.to_dict() if self.result else None,
            "break_glass": self.break_glass,
            "review_required": self.review_required,
            "reviewed_by": self.review.by if self.review else None,
            "review": self.review.to_dict() if self.review else None,
        }

    def to_state(self) -> dict[str, Any]:
        """The stored entity: the document as JSON, plus the fields listing filters on."""
        return {
            "document": json.dumps(self.to_dict(), separators=(",", ":")),
            "status": self.status.value,
            "secret_name": self.secret_name.lower(),
        }

    @classmethod
    def of_state(cls, state: Mapping[str, Any]) -> Revocation:
        """The request in a stored entity. Raises ValueError for one this service did not write (a
        storage writer's): it is never acted on."""
        try:
            raw = json.loads(str(state["document"]))
            return cls(
                id=str(raw["id"]),
                secret_name=str(raw["secret_name"]),
                vault=str(raw["vault"]),
                reason=Reason(raw["reason"]),
                severity=Severity(raw["severity"]),
                justification=str(raw["justification"]),
                versions=tuple(str(v) for v in raw["versions"]),
                replace=bool(raw["replace"]),
                status=Status(raw["status"]),
                requested_by=str(raw["requested_by"]),
                requested_at=parse_time(str(raw["requested_at"])),
                expires_at=parse_time(str(raw["expires_at"])),
                required_approvals=int(raw["required_approvals"]),
                approvals=tuple(Decision.of(a) for a in raw.get("approvals") or ()),
                rejection=Decision.of(raw["rejection"]) if raw.get("rejection") else None,
                cancellation=Decision.of(raw["cancellation"]) if raw.get("cancellation") else None,
                executed_by=None if raw.get("executed_by") is None else str(raw["executed_by"]),
                executed_at=parse_time(str(raw["executed_at"])) if raw.get("executed_at") else None,
                result=Result.of(raw["result"]) if raw.get("result") else None,
                break_glass=bool(raw.get("break_glass")),
                review_required=bool(raw.get("review_required")),
                review=Decision.of(raw["review"]) if raw.get("review") else None,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a revocation request this service wrote: {type(err).__name__}") from None


def required_approvals(severity: Severity, configured: Mapping[Severity, int] | None = None) -> int:
    """Approvals a request of this severity needs (at least 1)."""
    return max(1, (configured or DEFAULT_APPROVALS).get(severity, DEFAULT_APPROVALS[severity]))


def validate_versions(versions: Sequence[str]) -> tuple[str, ...]:
    """Distinct version ids, in the given order. Raises ValueError for too many."""
    unique = tuple(dict.fromkeys(versions))
    if len(unique) > MAX_VERSIONS:
        raise ValueError(f"at most {MAX_VERSIONS} versions")
    return unique
