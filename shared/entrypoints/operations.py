"""What each HTTP endpoint answers, as the OpenAPI document describes it (``ENDPOINTS``: one row per HTTP
function, keyed by its name, the operationId); ``openapi.py`` builds the document from these rows and the
pydantic models. A new HTTP function needs a row here (see openapi.py for the tests that hold it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from shared.domain.identity import Role
from shared.entrypoints.answers import (
    OpenApiDocument,
    RevocationConflict,
    RollbackDone,
    RotationQueued,
    SecretDeleted,
    SecretRecovered,
)
from shared.entrypoints.http import ROUTE_PARAMETERS
from shared.entrypoints.routes import ROUTES, Route
from shared.services.audit.results import (
    AuditPage,
    AuditSummary,
    FindingReviewed,
    IncidentAcknowledged,
    IncidentOpened,
    VerifyReport,
)
from shared.services.catalog.results import (
    PolicyApplied,
    RotationDryRun,
    RotationPlan,
    SecretPage,
    SecretProperties,
    SecretStatus,
)
from shared.services.compliance import ComplianceReport
from shared.services.health import HealthReport
from shared.services.revocation.results import Revocation, RevocationPage
from shared.services.risk import ActorRisk

# -- the endpoints ------------------------------------------------------------------------------------

#: Problem statuses every endpoint behind a function key and a role can answer: input refused (an unknown
#: query parameter at least), no verified caller, a missing role, an unexpected error, a dependency down.
PROTECTED_ERRORS = (400, 401, 403, 500, 503)


@dataclass(frozen=True)
class Endpoint:
    """One HTTP function, as the document describes it; its route, method, roles (none: anonymous) and
    input model come from its registration (``function``: ``routes.ROUTES``). ``ok``: success status → body
    model. Problem statuses are PROTECTED_ERRORS for a protected endpoint, 415 when it takes a body, plus
    ``errors``; ``problems`` replaces the Problem model of a status, ``notes`` its description,
    ``parameters`` a query parameter's schema; ``headers``: status → header → description."""

    tag: str
    summary: str
    ok: Mapping[int, type[BaseModel]]
    errors: tuple[int, ...] = ()
    description: str = ""
    problems: Mapping[int, type[BaseModel]] = field(default_factory=dict)
    notes: Mapping[int, str] = field(default_factory=dict)
    parameters: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    headers: Mapping[int, Mapping[str, str]] = field(default_factory=dict)
    function: str = ""

    @property
    def registered(self) -> Route:
        return ROUTES[self.function]

    @property
    def route(self) -> str:
        return self.registered.route

    @property
    def method(self) -> str:
        return self.registered.method

    @property
    def roles(self) -> tuple[Role, ...]:
        return self.registered.roles

    @property
    def query(self) -> type[BaseModel] | None:
        return self.registered.accepts if self.method == "GET" else None

    @property
    def body(self) -> type[BaseModel] | None:
        return self.registered.accepts if self.method != "GET" else None

    @property
    def anonymous(self) -> bool:
        return not self.roles

    def problem_statuses(self) -> set[int]:
        statuses = set(self.errors)
        if not self.anonymous:
            statuses.update(PROTECTED_ERRORS)
        if self.body is not None:
            statuses.add(415)
        return statuses


#: What the document says of a parameter beyond its model's constraints (merged over them).
CONTINUATION = {"description": "The `continuation` of the previous page (opaque)."}
LOCATION = {"Location": "Where to follow the request."}

#: The route parameters, by the name the routes give them (shared.entrypoints.http.ROUTE_PARAMETERS).
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    name: {"description": p.description, "schema": {"type": "string", "pattern": p.pattern}}
    for name, p in ROUTE_PARAMETERS.items()
}

# fmt: off
_DESCRIBED: dict[str, Endpoint] = {
    "health": Endpoint(
        "meta", "Health of the service's dependencies",
        ok={200: HealthReport, 503: HealthReport}, errors=(503,),
        description="Anonymous. Query parameters are ignored.",
        notes={503: "A dependency failed its check (`application/json`, the report), or the settings make "
               "the HTTP endpoints unsafe to serve (`application/problem+json`)."},
    ),
    "openapi": Endpoint(
        "meta", "This document", ok={200: OpenApiDocument},
        description="Anonymous. Query parameters are ignored.",
    ),
    "audit_query": Endpoint(
        "audit", "Audit records, newest first", ok={200: AuditPage},
        parameters={"continuation": CONTINUATION},
    ),
    "audit_summary": Endpoint(
        "audit", "Counts by action and result, the last rotation and the failures",
        ok={200: AuditSummary},
    ),
    "audit_verify": Endpoint(
        "audit", "Verify the audit chains and digests (breaks are reported, 200)",
        ok={200: VerifyReport},
    ),
    "audit_actor": Endpoint(
        "audit", "One actor's risk score now, its signals and the actor's newest records",
        ok={200: ActorRisk}, errors=(404,),
        description="The score sums the weights of the actor's signals over the window ending now "
        "(`RISK_WINDOW_HOURS`); a crossing of `RISK_THRESHOLD` is an `actor_risk` finding of the "
        "suspicious-activity scan. Read from the query index's actor and action partitions, never the "
        "whole trail.",
    ),
    "compliance_report": Endpoint(
        "compliance", "The compliance evidence report of a period (JSON, or HTML for text/html)",
        ok={200: ComplianceReport},
        description="`from` and `to` (ISO 8601 with a zone, or dates) bound the period, `to` exclusive; "
        "without them, the 90 days before now (at most 366 days). With `Accept: text/html` preferred over "
        "`application/json` the answer is a self-contained printable page of the same report. "
        "docs/compliance.md maps each section to the controls it evidences.",
    ),
    "audit_review_finding": Endpoint(
        "audit", "Mark a suspicious-activity finding reviewed",
        ok={200: FindingReviewed}, errors=(404, 409),
        notes={403: "The caller lacks the role, or the finding is about the caller."},
    ),
    "audit_incident_open": Endpoint(
        "audit", "Open an incident over the trail's breaks (a second person acknowledges it)",
        ok={201: IncidentOpened}, errors=(409,),
        notes={403: "The caller lacks the role, or is an application: two people decide.",
               409: "The trail has no break to acknowledge, or too many for one incident."},
    ),
    "audit_incident_acknowledge": Endpoint(
        "audit", "Acknowledge another person's incident: a digest seals a new baseline over its breaks",
        ok={200: IncidentAcknowledged}, errors=(404, 409),
        notes={403: "The caller lacks the role, is an application, or opened the incident.",
               404: "No such incident open (an incident expires 24 hours after it is opened).",
               409: "The breaks changed since it was opened (open a new one), or a digest was sealed "
                    "meanwhile (ask again)."},
    ),
    "secrets_list": Endpoint(
        "secrets", "The managed secrets, by name", ok={200: SecretPage},
    ),
    "secrets_onboard": Endpoint(
        "secrets", "Create a managed secret (its first value is generated)",
        ok={201: SecretProperties}, errors=(409,),
    ),
    "secrets_policy": Endpoint(
        "secrets", "Set a secret's rotation policy", ok={200: PolicyApplied},
        errors=(404, 409),
    ),
    "secrets_rotate": Endpoint(
        "secrets", "Rotate a secret now (queued), or plan it (dry_run)",
        ok={202: RotationQueued, 200: RotationDryRun}, errors=(404, 409),
        headers={202: {"Location": "The secret's status, to follow the rotation."}},
        notes={200: "`dry_run`: what a rotation would do now; nothing is written.",
               202: "Queued (also when its record could not be written: asking again would rotate twice)."},
    ),
    "secrets_status": Endpoint(
        "secrets", "Everything known about a secret's rotation",
        ok={200: SecretStatus}, errors=(404,),
    ),
    "secrets_rollback": Endpoint(
        "secrets", "Make the previous value current again (a new version)",
        ok={200: RollbackDone}, errors=(404, 409),
    ),
    "secrets_delete": Endpoint(
        "secrets", "Decommission a managed secret (soft delete: recoverable)",
        ok={202: SecretDeleted}, errors=(404, 409),
        notes={409: "The service's own secret, a certificate's, not managed, deleted already, or another "
               "write (a rotation, a revocation being executed) holds it."},
    ),
    "secrets_recover": Endpoint(
        "secrets", "Recover a deleted secret with all its versions",
        ok={202: SecretRecovered}, errors=(404, 409), notes={404: "Not deleted, or purged."},
    ),
    "rotation_plan": Endpoint(
        "secrets", "Rotations and expiries coming within a window",
        ok={200: RotationPlan},
    ),
    "revocations_request": Endpoint(
        "revocations", "Request a revocation (break-glass: executed at once)",
        ok={201: Revocation}, errors=(404, 409), headers={201: {"Location": "The new request."}},
        description=f"`break_glass: true` also needs `{Role.BREAK_GLASS.value}` and a critical severity.",
    ),
    "revocations_list": Endpoint(
        "revocations", "Revocation requests", ok={200: RevocationPage},
        parameters={"continuation": CONTINUATION},
    ),
    "revocations_get": Endpoint(
        "revocations", "One revocation request", ok={200: Revocation},
        errors=(404, 409),
        notes={409: "The stored request failed its seal (problem type state-tampered): never acted on."},
    ),
    "revocations_approve": Endpoint(
        "revocations", "Approve a pending request (never one's own)",
        ok={200: Revocation}, errors=(404, 409), notes={403: "The caller lacks the role, or requested it."},
    ),
    "revocations_reject": Endpoint(
        "revocations", "Reject a pending request (never one's own)",
        ok={200: Revocation}, errors=(404, 409),
        notes={403: "The caller lacks the role, or requested it (cancel it instead)."},
    ),
    "revocations_cancel": Endpoint(
        "revocations", "Cancel one's own pending or approved request",
        ok={200: Revocation}, errors=(404, 409),
        notes={403: "The caller lacks the role, or is not the requester."},
    ),
    "revocations_execute": Endpoint(
        "revocations", "Execute an approved request",
        ok={200: Revocation}, errors=(404, 409), problems={409: RevocationConflict},
        notes={409: "Not approved, being executed, or executed already: then `revocation` is the stored "
               "request, with its result."},
    ),
    "revocations_review": Endpoint(
        "revocations", "Review an executed break-glass request",
        ok={200: Revocation}, errors=(404, 409), notes={403: "The caller lacks the role, or requested it."},
    ),
}
# fmt: on
#: Every HTTP function the app registers, as the document describes it.
ENDPOINTS = {name: dataclasses.replace(doc, function=name) for name, doc in _DESCRIBED.items()}
