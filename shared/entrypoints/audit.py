"""Audit endpoints and timers: query, summary, verify, an actor's risk, findings review, incidents, hourly
digest, daily verify, suspicious scan (with the actor risk score's crossings)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import azure.functions as func
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from shared.adapters import telemetry
from shared.bootstrap import get_container
from shared.domain.audit import Action, AuditQuery
from shared.domain.state import FUNCTION_TIMEOUT
from shared.entrypoints.http import (
    VAULT_PARAMETER,
    BadRequest,
    Call,
    SecretName,
    correlation_id,
    json_response,
    sole_vault,
)
from shared.services import audit as service
from shared.services.risk import RECENT_RECORDS, actor_risk
from shared.services.suspicious import scan

logger = logging.getLogger(__name__)
#: How long the retention export goes on starting chains: the function timeout, less a margin.
RETENTION_BUDGET = FUNCTION_TIMEOUT * 0.8


def _moment(value: Any) -> Any:
    """ISO 8601 with a zone, or a bare date (midnight UTC)."""
    if isinstance(value, str) and len(value) == 10:
        try:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
        except ValueError:
            return value
    return value


#: A moment's year: 1000-9999, four digits.
YEARS = "^[1-9][0-9]{3}-"
#: What a moment may be, in UTC: the years the stored time format writes with four digits, so that the
#: stored text sorts like the time (``format_time`` writes year 999 as "999", which sorts after "2026").
EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


def _in_utc(value: datetime) -> datetime:
    """The moment in UTC, held within the years the stored time format sorts (the document's pattern
    takes years 1000-9999): a moment its zone moves past either end is that end, since no record is that
    old or that new. Nothing after this can overflow."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        return EARLIEST if value.year < 5000 else LATEST
    return min(max(utc, EARLIEST), LATEST)


# AwareDatetime: a time without a zone is refused (400 naming the parameter) rather than guessed. Every
# moment is converted to UTC here, at the edge, so nothing after it can overflow.
Moment = Annotated[
    AwareDatetime,
    BeforeValidator(_moment),
    AfterValidator(_in_utc),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time", "pattern": YEARS},
                {"type": "string", "format": "date", "pattern": YEARS},
            ],
            "description": "RFC 3339 with a zone, or a date (midnight UTC).",
        }
    ),
]


class QueryParams(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    secret_name: SecretName | None = None
    action: Action | None = None
    actor: str | None = Field(None, min_length=1, max_length=256)
    since: Moment | None = None
    until: Moment | None = None
    limit: int = Field(50, ge=1, le=service.MAX_PAGE)
    #: Opaque; bound to the filters of the query that issued it (checked by the service).
    continuation: str | None = Field(None, min_length=1, max_length=4096)

    @field_validator("until")
    @classmethod
    def _after_since(cls, until: datetime | None, info: ValidationInfo) -> datetime | None:
        since = info.data.get("since")
        if until is not None and since is not None and since >= until:
            raise ValueError("must be after since")
        return until

    def query(self, vault: str | None) -> AuditQuery:
        return AuditQuery(
            vault=vault,
            secret_name=self.secret_name,
            action=self.action,
            actor=self.actor,
            since=self.since,
            until=self.until,
            limit=self.limit,
        )


class SummaryParams(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    secret_name: SecretName | None = None
    days: int = Field(30, ge=1, le=365)


class VerifyParams(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    secret_name: SecretName | None = None
    #: The whole trail's answer is the last full verification unless this asks for a new one.
    fresh: bool = False


class IncidentBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    #: What happened (a restore, a lost write, an intrusion): on record, for whoever reads the trail.
    reason: str = Field(min_length=10, max_length=500)
    #: The incident's id in the team's tracker.
    reference: str | None = Field(None, min_length=1, max_length=200)


class AcknowledgeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReviewBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(None, max_length=500)


def audit_query(call: Call[QueryParams]) -> func.HttpResponse:
    c = call.container
    query = call.input.query(_vault_of_secret(call, call.input.secret_name))
    try:
        page = service.query_audit(c.audit_log, c.key_ring, query, call.input.continuation)
    except service.InvalidCursor as err:
        raise BadRequest("continuation", str(err)) from None
    return json_response(page.to_json())


def audit_summary(call: Call[SummaryParams]) -> func.HttpResponse:
    params = call.input
    vault = _vault_of_secret(call, params.secret_name)
    scopes = [call.container.vault(vault)] if vault else call.scopes
    summary = service.summarize_audit(
        [scope.audit_peers for scope in scopes], secret_name=params.secret_name, days=params.days
    )
    return json_response(summary.to_json())


def audit_verify(call: Call[VerifyParams]) -> func.HttpResponse:
    peers, params = call.container.audit_peers, call.input
    if call.vault is not None and params.secret_name is None:
        raise BadRequest(
            VAULT_PARAMETER, "only with secret_name: the whole trail is verified with every vault"
        )
    if params.secret_name is not None:  # one secret's chain: verified now, it is small
        scope = call.container.vault(_vault_of_secret(call, params.secret_name))
        report = service.verify_audit(scope.audit_peers, secret_name=params.secret_name)
    else:
        report = service.verification(peers, fresh=params.fresh)
    return json_response(report.to_json())


class ActorParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: How many of the actor's newest records to show beside the score.
    limit: int = Field(RECENT_RECORDS, ge=1, le=100)


def audit_actor(call: Call[ActorParams]) -> func.HttpResponse:
    settings = call.container.settings
    view = actor_risk(
        call.container.audit_peers, call.route["actor_id"], settings.risk_rules, settings.scan_rules,
        limit=call.input.limit,
    )  # fmt: skip
    return json_response(view.to_json())


def _vault_of_secret(call: Call[Any], secret_name: str | None) -> str | None:
    """The vault a query about one secret is about: the one named, or the only one; a 400 when the
    service manages several and the call names none (a name may be in two of them). None without a secret:
    the vault named, or every vault."""
    if call.vault is not None or secret_name is None:
        return call.vault
    return sole_vault(call.container)


def audit_review_finding(call: Call[ReviewBody]) -> func.HttpResponse:
    c = call.container
    result = service.review_finding(
        c.audit_peers, call.route["finding_id"], reviewer=call.actor, note=call.input.note,
        correlation_id=call.correlation_id,
    )  # fmt: skip
    return json_response(result.to_json())


def audit_incident_open(call: Call[IncidentBody]) -> func.HttpResponse:
    body = call.input
    opened = service.open_incident(
        call.container.audit_peers, actor=call.actor, reason=body.reason, reference=body.reference,
        correlation_id=call.correlation_id,
    )  # fmt: skip
    return json_response(opened.to_json(), 201)


def audit_incident_acknowledge(call: Call[AcknowledgeBody]) -> func.HttpResponse:
    done = service.acknowledge_incident(
        call.container.audit_peers, call.route["incident_id"], actor=call.actor,
        correlation_id=call.correlation_id,
    )  # fmt: skip
    return json_response(done.to_json())


def audit_digest(timer: func.TimerRequest) -> None:
    with telemetry.invocation("audit_digest", "timer", None):
        _audit_digest(timer)


def _audit_digest(timer: func.TimerRequest) -> None:
    container = get_container()
    outcome = service.write_digest(container.audit_peers)
    # After the digest, which put back in the index what it was missing: each hour from all its records,
    # each vault's own.
    for scope in container.vaults.values():
        service.aggregate_hours(scope.audit_peers)
    if outcome.new_regressions or outcome.digest_breaks:
        # Fail the invocation so the platform shows it; the breaks are audited and notified already.
        regressed, broken = len(outcome.new_regressions), len(outcome.digest_breaks)
        raise RuntimeError(
            f"audit digest {outcome.digest.seq}: {regressed} chain(s) regressed, {broken} digest break(s)"
        )


def audit_verify_daily(timer: func.TimerRequest) -> None:
    with telemetry.invocation("audit_verify_daily", "timer", None):
        _audit_verify_daily(timer)


def _audit_verify_daily(timer: func.TimerRequest) -> None:
    report = service.verify_and_store(get_container().audit_peers)
    logger.info(
        "audit verify: %s, %d record(s) in %d ms", report.status, report.records, report.duration_ms or 0
    )
    telemetry.metrics().verify_breaks.add(len(report.breaks))
    if report.breaks:
        # Fail the invocation so the platform shows it; GET /api/audit/verify answers with the breaks.
        raise RuntimeError(f"audit verify: {len(report.breaks)} break(s), e.g. {report.breaks[0].kind}")


def audit_retention(timer: func.TimerRequest) -> None:
    with telemetry.invocation("audit_retention", "timer", None):
        _audit_retention(timer)


def _audit_retention(timer: func.TimerRequest) -> None:
    container = get_container()
    days = container.settings.audit_retention_days
    if not days or container.audit_archive is None:
        logger.info("audit retention is off (AUDIT_RETENTION_DAYS=0): every record stays in the table")
        return
    deadline = time.monotonic() + RETENTION_BUDGET.total_seconds()
    report = service.export_old_records(
        container.audit_peers, container.audit_archive, older_than=timedelta(days=days), deadline=deadline
    )
    logger.info(
        "audit retention: %d record(s) of %d chain(s) archived (older than %s), %d removed after a crash",
        report.exported, report.chains, report.cutoff.isoformat(), report.removed_after_crash,
    )  # fmt: skip
    if report.stopped or not report.complete:
        # Fail the invocation so the platform shows it; the next run goes on from where this one stopped.
        raise RuntimeError(
            f"audit retention incomplete; stopped at a break in {len(report.stopped)} chain(s)"
        )


def suspicious_activity_scan(timer: func.TimerRequest, context: func.Context) -> None:
    with telemetry.invocation("suspicious_activity_scan", "timer", correlation_id(context), context):
        _suspicious_activity_scan(timer, context)


def _suspicious_activity_scan(timer: func.TimerRequest, context: func.Context) -> None:
    container = get_container()
    settings = container.settings
    report = scan(
        container.audit_peers, settings.scan_rules, risk=settings.risk_rules,
        correlation_id=correlation_id(context),
    )  # fmt: skip
    logger.info(
        "suspicious-activity scan: %d record(s), %d new finding(s), %d already reported, %d notified",
        report.scanned,
        len(report.findings),
        report.already_reported,
        report.notified,
    )
    if not report.ok:
        # Fail the invocation so the platform shows it; every finding not reported is retried next run.
        raise RuntimeError("suspicious-activity scan incomplete: " + "; ".join(report.failures))
