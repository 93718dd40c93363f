"""Audit use cases: record (fail closed), verify, query, summarize, and the hourly digest.

The package: ``trail.py`` writes, ``verification.py`` verifies and repairs, ``sealing.py`` seals the
hourly digest, ``incidents.py`` acknowledges a break and seals a new baseline,
``queries.py`` reads and reviews findings, ``summary.py`` keeps the hourly aggregates and summarizes.
"""

from shared.services.audit.incidents import INCIDENT_TTL, acknowledge_incident, open_incident
from shared.services.audit.queries import (
    FINDING_ACTOR_CHARS,
    FINDING_MAX_ACTORS,
    InvalidCursor,
    authentic_events,
    decode_cursor,
    encode_cursor,
    finding_actors,
    indexed_rows,
    query_audit,
    query_fingerprint,
    review_finding,
)
from shared.services.audit.results import AuditPage, VerifyReport
from shared.services.audit.retention import RetentionReport, export_old_records
from shared.services.audit.sealing import DigestOutcome, write_digest
from shared.services.audit.summary import aggregate_hours, summarize_audit
from shared.services.audit.trail import MAX_PAGE, AuditTrail, AuditUnavailable, Change, EventFields
from shared.services.audit.verification import (
    repair_chain,
    verification,
    verify_and_store,
    verify_audit,
)

__all__ = [
    "FINDING_ACTOR_CHARS",
    "FINDING_MAX_ACTORS",
    "INCIDENT_TTL",
    "MAX_PAGE",
    "AuditPage",
    "AuditTrail",
    "AuditUnavailable",
    "Change",
    "DigestOutcome",
    "EventFields",
    "InvalidCursor",
    "RetentionReport",
    "VerifyReport",
    "acknowledge_incident",
    "aggregate_hours",
    "authentic_events",
    "decode_cursor",
    "encode_cursor",
    "export_old_records",
    "finding_actors",
    "indexed_rows",
    "open_incident",
    "query_audit",
    "query_fingerprint",
    "repair_chain",
    "review_finding",
    "summarize_audit",
    "verification",
    "verify_and_store",
    "verify_audit",
    "write_digest",
]
