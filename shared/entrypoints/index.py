"""The app's function index: every function's name, trigger and binding (route, method, auth level,
schedule, queue), and each HTTP function's roles, input model and vault parameter, one Blueprint per area.

This is what the Functions host imports at a cold start, on every scale-out, so it imports azure.functions
and the roles only. Each function's code (its handler and input model in ``shared.entrypoints.<area>``,
the services, pydantic, the Azure SDKs, telemetry) is imported by its first call: an HTTP function names
its handler and model (``routes.Area``: the area module's function of the function's name and the class
``accepts`` names); every other trigger is a function that imports its area (under ``routes.LOADING``) and
calls the area's function of its name.
tests/functions/test_function_index.py holds the index as the host reads it.
"""

from __future__ import annotations

import azure.functions as func

from shared.domain.roles import Role
from shared.entrypoints.routes import LOADING, Area

# -- meta (anonymous) ---------------------------------------------------------------------------------

health_bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ unannotated
Area("health", health_bp).anonymous("health", "health")

openapi_bp = func.Blueprint()  # type: ignore[no-untyped-call]
Area("openapi", openapi_bp).anonymous("openapi", "openapi.json")

# -- audit --------------------------------------------------------------------------------------------

audit_bp = func.Blueprint()  # type: ignore[no-untyped-call]
_audit = Area("audit", audit_bp)
READ, REVIEW, INCIDENT = Role.AUDIT_READ, Role.AUDIT_REVIEW, Role.AUDIT_INCIDENT
_audit.endpoint("audit_query", "audit", "GET", roles=READ, accepts="QueryParams", vault="any")
_audit.endpoint("audit_summary", "audit/summary", "GET", roles=READ, accepts="SummaryParams", vault="any")
_audit.endpoint("audit_verify", "audit/verify", "GET", roles=READ, accepts="VerifyParams", vault="any")
_audit.endpoint("audit_actor", "audit/actors/{actor_id}", "GET", roles=READ, accepts="ActorParams")
_audit.endpoint(
    "audit_review_finding", "audit/findings/{finding_id}/review", "POST", roles=REVIEW, accepts="ReviewBody"
)
_audit.endpoint("audit_incident_open", "audit/incidents", "POST", roles=INCIDENT, accepts="IncidentBody")
_audit.endpoint(
    "audit_incident_acknowledge", "audit/incidents/{incident_id}/acknowledge", "POST", roles=INCIDENT,
    accepts="AcknowledgeBody",
)  # fmt: skip


@audit_bp.function_name("audit_digest")
@audit_bp.timer_trigger(arg_name="timer", schedule="0 0 * * * *")
def audit_digest(timer: func.TimerRequest) -> None:
    with LOADING:
        from shared.entrypoints import audit
    audit.audit_digest(timer)


@audit_bp.function_name("audit_verify_daily")
@audit_bp.timer_trigger(arg_name="timer", schedule="0 30 3 * * *")
def audit_verify_daily(timer: func.TimerRequest) -> None:
    with LOADING:
        from shared.entrypoints import audit
    audit.audit_verify_daily(timer)


@audit_bp.function_name("audit_retention")
@audit_bp.timer_trigger(arg_name="timer", schedule="0 15 4 * * *")
def audit_retention(timer: func.TimerRequest) -> None:
    with LOADING:
        from shared.entrypoints import audit
    audit.audit_retention(timer)


@audit_bp.function_name("suspicious_activity_scan")
@audit_bp.timer_trigger(arg_name="timer", schedule="0 */15 * * * *")
def suspicious_activity_scan(timer: func.TimerRequest, context: func.Context) -> None:
    with LOADING:
        from shared.entrypoints import audit
    audit.suspicious_activity_scan(timer, context)


# -- rotation -----------------------------------------------------------------------------------------

rotation_bp = func.Blueprint()  # type: ignore[no-untyped-call]
#: The queue of rotation requests (shared.adapters.storage.ROTATION_QUEUE; a test keeps them equal).
ROTATION_QUEUE = "rotation-requests"


@rotation_bp.function_name("rotation_sweep")
@rotation_bp.timer_trigger(arg_name="timer", schedule="%ROTATION_SWEEP_SCHEDULE%")
def rotation_sweep(timer: func.TimerRequest, context: func.Context) -> None:
    with LOADING:
        from shared.entrypoints import rotation
    rotation.rotation_sweep(timer, context)


@rotation_bp.function_name("rotate_secret")
@rotation_bp.queue_trigger(arg_name="msg", queue_name=ROTATION_QUEUE, connection="SECRETS_STORAGE")
def rotate_secret(msg: func.QueueMessage, context: func.Context) -> None:
    with LOADING:
        from shared.entrypoints import rotation
    rotation.rotate_secret(msg, context)


@rotation_bp.function_name("rotation_gave_up")
@rotation_bp.queue_trigger(
    arg_name="msg", queue_name=f"{ROTATION_QUEUE}-poison", connection="SECRETS_STORAGE"
)
def rotation_gave_up(msg: func.QueueMessage) -> None:
    with LOADING:
        from shared.entrypoints import rotation
    rotation.rotation_gave_up(msg)


# -- secrets ------------------------------------------------------------------------------------------

secrets_bp = func.Blueprint()  # type: ignore[no-untyped-call]
_secrets = Area("secrets", secrets_bp)
OPERATE, EXECUTE = Role.ROTATION_OPERATE, Role.REVOCATION_EXECUTE
READERS = (Role.ROTATION_OPERATE, Role.AUDIT_READ)
_secrets.endpoint("secrets_list", "secrets", "GET", roles=READERS, accepts="ListParams", vault="any")
_secrets.endpoint("secrets_onboard", "secrets", "POST", roles=OPERATE, accepts="OnboardBody", vault="one")
_secrets.endpoint(
    "secrets_policy", "secrets/{name}/policy", "PUT", roles=OPERATE, accepts="_Policy", vault="one"
)
_secrets.endpoint(
    "secrets_rotate", "secrets/{name}/rotate", "POST", roles=OPERATE, accepts="RotateBody", vault="one"
)
_secrets.endpoint(
    "secrets_status", "secrets/{name}/status", "GET", roles=READERS, accepts="EmptyBody", vault="one"
)
_secrets.endpoint(
    "secrets_rollback", "secrets/{name}/rollback", "POST", roles=OPERATE, accepts="RollbackBody", vault="one"
)
_secrets.endpoint(
    "secrets_delete", "secrets/{name}", "DELETE", roles=EXECUTE, accepts="DeleteBody", vault="one"
)
_secrets.endpoint(
    "secrets_recover", "secrets/{name}/recover", "POST", roles=EXECUTE, accepts="EmptyBody", vault="one"
)
_secrets.endpoint("rotation_plan", "rotation/plan", "GET", roles=READERS, accepts="PlanParams", vault="any")

# -- expiry -------------------------------------------------------------------------------------------

expiry_bp = func.Blueprint()  # type: ignore[no-untyped-call]


@expiry_bp.function_name("expiry_check")
@expiry_bp.timer_trigger(arg_name="timer", schedule="%EXPIRY_CHECK_SCHEDULE%")
def expiry_check(timer: func.TimerRequest, context: func.Context) -> None:
    with LOADING:
        from shared.entrypoints import expiry
    expiry.expiry_check(timer, context)


@expiry_bp.function_name("key_vault_events")
@expiry_bp.event_grid_trigger(arg_name="event")
def key_vault_events(event: func.EventGridEvent) -> None:
    with LOADING:
        from shared.entrypoints import expiry
    expiry.key_vault_events(event)


# -- revocations --------------------------------------------------------------------------------------

revocations_bp = func.Blueprint()  # type: ignore[no-untyped-call]
_revocations = Area("revocations", revocations_bp)
REQUEST, APPROVE = Role.REVOCATION_REQUEST, Role.REVOCATION_APPROVE
REVOCATION_READERS = (REQUEST, APPROVE, EXECUTE, Role.BREAK_GLASS, Role.AUDIT_READ)
#: Often enough that a request is marked expired within minutes of its TTL, and that an execution whose
#: holder died is finished soon after its lease.
REVOCATION_EXPIRY_SCHEDULE = "0 */5 * * * *"
_revocations.endpoint(
    "revocations_request", "revocations", "POST", roles=REQUEST, accepts="RequestBody", vault="one"
)
_revocations.endpoint(
    "revocations_get", "revocations/{id}", "GET", roles=REVOCATION_READERS, accepts="EmptyBody"
)
_revocations.endpoint(
    "revocations_list", "revocations", "GET", roles=REVOCATION_READERS, accepts="ListParams", vault="any"
)
_revocations.endpoint(
    "revocations_approve", "revocations/{id}/approve", "POST", roles=APPROVE, accepts="CommentBody"
)
_revocations.endpoint(
    "revocations_reject", "revocations/{id}/reject", "POST", roles=APPROVE, accepts="RequiredComment"
)
_revocations.endpoint(
    "revocations_cancel", "revocations/{id}/cancel", "POST", roles=REQUEST, accepts="EmptyBody"
)
_revocations.endpoint(
    "revocations_execute", "revocations/{id}/execute", "POST", roles=EXECUTE, accepts="EmptyBody"
)
_revocations.endpoint(
    "revocations_review", "revocations/{id}/review", "POST", roles=APPROVE, accepts="RequiredComment"
)


@revocations_bp.function_name("revocation_expiry")
@revocations_bp.timer_trigger(arg_name="timer", schedule=REVOCATION_EXPIRY_SCHEDULE)
def revocation_expiry(timer: func.TimerRequest, context: func.Context) -> None:
    with LOADING:
        from shared.entrypoints import revocations
    revocations.revocation_expiry(timer, context)


# -- compliance ---------------------------------------------------------------------------------------

compliance_bp = func.Blueprint()  # type: ignore[no-untyped-call]
Area("compliance", compliance_bp).endpoint(
    "compliance_report", "compliance/report", "GET", roles=READ, accepts="ReportParams", vault="any",
    handler="compliance_report_http",
)  # fmt: skip
