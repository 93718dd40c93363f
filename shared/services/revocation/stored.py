"""A revocation request as stored: its peers and settings, its row (one compare-and-swap entity per request,
partition ``revocation``), and the records of a change (intent, the write, the outcome) with the
request's terms."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.domain.audit import (
    format_time,
)
from shared.domain.errors import (
    Conflict,
    NotFound,
)
from shared.domain.revocation import (
    DEFAULT_APPROVALS,
    DEFAULT_TTL,
    REVOCATION_ID,
    Reason,
    Revocation,
    Severity,
)
from shared.domain.revocation import Result as Outcome
from shared.domain.secrets import InvalidSecret
from shared.domain.state import LEASE, Versioned
from shared.ports import StateStore
from shared.services.audit import Change
from shared.services.peers import Peers

logger = logging.getLogger(__name__)

PARTITION = "revocation"
#: The lease step a revocation holds on the secret while it disables versions.
REVOKING = "revoking"
#: How long an ``executing`` request belongs to the holder that began it; after that (a holder that died:
#: longer than the function timeout) another call finishes it.
#: Writes of one decision before a lost race is reported (each after reading the request again).
DECISION_ATTEMPTS = 20


@dataclass(frozen=True)
class RevocationSettings:
    ttl: timedelta = DEFAULT_TTL
    approvals: Mapping[Severity, int] = field(default_factory=lambda: dict(DEFAULT_APPROVALS))


@dataclass(frozen=True, kw_only=True)
class Services(Peers):
    """The peers every revocation operation uses (an execution is borne out by the authentic records
    ``reader`` and ``keys`` give), and the revocation settings."""

    settings: RevocationSettings = field(default_factory=RevocationSettings)


class InvalidRequest(InvalidSecret):
    """A request naming something that is not there (a version of another secret): 400 naming the field."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}", parameter=field_name)
        self.field = field_name


@dataclass(frozen=True)
class NewRequest:
    secret_name: str
    reason: Reason
    severity: Severity
    justification: str
    versions: Sequence[str] | None = None
    replace: bool = False
    break_glass: bool = False


def read(states: StateStore, revocation_id: str) -> tuple[Revocation, Versioned]:
    if not REVOCATION_ID.fullmatch(revocation_id):
        raise NotFound(f"no revocation {revocation_id[:64]!r}")
    stored = states.get(PARTITION, revocation_id)
    if stored is None:
        raise NotFound(f"no revocation {revocation_id}")
    try:
        return Revocation.of_state(stored.state), stored
    except ValueError as err:
        logger.warning("revocation row %s ignored: %s", revocation_id, err)
        raise NotFound(f"no revocation {revocation_id}") from None


def replace_row(states: StateStore, revocation: Revocation, etag: str) -> Versioned:
    try:
        return states.replace(PARTITION, revocation.id, revocation.to_state(), etag)
    except NotFound:
        raise Conflict(f"revocation {revocation.id} changed meanwhile; read it again") from None
    except Conflict:
        raise Conflict(f"revocation {revocation.id} changed meanwhile; read it again") from None


def record_change(
    peers: Services,
    revocation: Revocation,
    change: Change,
    write: Any,
    *,
    final: list[Revocation] | None = None,
) -> None:
    """Intent, the write, then success — or failure when the write lost or was refused (the caller sees
    the error). ``final``: where the write leaves the request it actually stored, when it re-applied the
    transition (the success record describes that one)."""
    action = change.action
    fields: dict[str, Any] = {
        "secret_name": revocation.secret_name,
        "actor": change.actor,
        "correlation_id": change.correlation_id,
        "details": {**details_of(revocation), **change.extra},
    }
    peers.trail.attempt(action, write, **fields)
    if final:
        fields["details"] = {**details_of(final[0]), **change.extra}
    peers.trail.outcome(
        action, f"revocation {revocation.id}: {action.value} took effect", {"revocation_id": revocation.id},
        **fields,
    )  # fmt: skip


#: Versions a request's first record lists (its ``terms`` digest covers every one of them).
_LISTED_VERSIONS = 16


def terms(revocation: Revocation) -> dict[str, Any]:
    """What a request's first record says it asks for: the digest of its terms (``Revocation.terms``),
    which an execution holds the row to, and the terms an auditor reads."""
    return {
        "terms": revocation.terms(),
        "versions": list(revocation.versions[:_LISTED_VERSIONS]),
        "version_count": len(revocation.versions),
        "replace": revocation.replace,
        "expires_at": format_time(revocation.expires_at),
    }


#: Versions (disabled, or not) an outcome record lists; more are counted, and the record says it is partial.
_RESULT_VERSIONS = 20


def recorded_result(result: Outcome) -> dict[str, Any]:
    """What a REVOKED outcome record says of the result: all of it when it is small, else the first
    versions, the counts and ``complete: false`` (an execution that finds such a record runs again rather
    than close the request with a partial result)."""
    full = result.to_dict()
    disabled, errors = list(result.disabled_versions), dict(result.errors)
    if len(disabled) <= _RESULT_VERSIONS and len(errors) <= _RESULT_VERSIONS:
        return full
    return {
        **full,
        "disabled_versions": disabled[:_RESULT_VERSIONS],
        "errors": dict(list(errors.items())[:_RESULT_VERSIONS]),
        "disabled_count": len(disabled),
        "error_count": len(errors),
        "complete": False,
    }


def details_of(revocation: Revocation) -> dict[str, Any]:
    """What a record says about a request (its justification is on the request's first record). Each
    names the requester, so a record of a request's end (a rejection, an expiry) says whose it was: the
    actor risk score counts it against them, and the compliance report shows it, from the record alone."""
    return {
        "revocation_id": revocation.id,
        "requested_by": revocation.requested_by,
        "status": revocation.status.value,
        "severity": revocation.severity.value,
        "reason": revocation.reason.value,
        "approvals": len(revocation.approvals),
        "required_approvals": revocation.required_approvals,
        "break_glass": revocation.break_glass,
    }


def execution_lease_over(revocation: Revocation, now: datetime) -> bool:
    """Whether an ``executing`` request's holder is gone: its lease (``LEASE``) has run out."""
    return revocation.executed_at is None or now >= revocation.executed_at + LEASE
