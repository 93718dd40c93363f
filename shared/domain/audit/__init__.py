"""The audit trail's pure core, split along its concerns:

- ``records``: actions, actors, events, chained records and how they are stored and queried;
- ``canonical``: the canonical form of a record, its MAC, sealing records into a chain;
- ``digests``: sealed snapshots of every chain's head, and their anchor outside the table;
- ``verify``: walking chains and digests and reporting every break.

Pure: no I/O, no azure.*. Storage is the adapter's business; the key comes from a ``KeyRing``. The names
below are the package's public surface, so callers import from ``shared.domain.audit``.
"""

from shared.domain.audit.canonical import (
    canonical,
    compute_mac,
    event_fields,
    event_from_fields,
    format_time,
    parse_time,
    readable_event,
    seal,
    seal_all,
)
from shared.domain.audit.digests import (
    AnchoredDigest,
    Digest,
    digest_payload,
    hold_regressions,
    seal_digest,
)
from shared.domain.audit.records import (
    DIGEST_CHAIN,
    FORBIDDEN_DETAIL_KEYS,
    GENESIS_MAC,
    MAX_DETAILS_BYTES,
    SERVICE_CHAIN_SECRET,
    SYSTEM_ACTOR,
    Action,
    Actor,
    ActorType,
    AuditError,
    AuditEvent,
    AuditQuery,
    AuditRecord,
    ChainContents,
    ChainHead,
    ChainTampered,
    Result,
    StoredAuditRow,
    StoredRecord,
    chain_of,
)
from shared.domain.audit.verify import (
    Break,
    BreakKind,
    ChainVerdict,
    KeyLookup,
    MacLookup,
    check_against_digest,
    check_anchor,
    regressions,
    verify_chain,
    verify_contents,
    verify_digest_history,
    verify_digests,
)

__all__ = [
    "DIGEST_CHAIN",
    "FORBIDDEN_DETAIL_KEYS",
    "GENESIS_MAC",
    "MAX_DETAILS_BYTES",
    "SERVICE_CHAIN_SECRET",
    "SYSTEM_ACTOR",
    "Action",
    "Actor",
    "ActorType",
    "AnchoredDigest",
    "AuditError",
    "AuditEvent",
    "AuditQuery",
    "AuditRecord",
    "Break",
    "BreakKind",
    "ChainContents",
    "ChainHead",
    "ChainTampered",
    "ChainVerdict",
    "Digest",
    "KeyLookup",
    "MacLookup",
    "Result",
    "StoredAuditRow",
    "StoredRecord",
    "canonical",
    "chain_of",
    "check_against_digest",
    "check_anchor",
    "compute_mac",
    "digest_payload",
    "event_fields",
    "event_from_fields",
    "format_time",
    "hold_regressions",
    "parse_time",
    "readable_event",
    "regressions",
    "seal",
    "seal_all",
    "seal_digest",
    "verify_chain",
    "verify_contents",
    "verify_digest_history",
    "verify_digests",
]
