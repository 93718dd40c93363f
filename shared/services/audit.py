"""Audit use cases: record (fail closed), verify, query, summarize, and the hourly digest."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.domain.audit import (
    DIGEST_CHAIN,
    SYSTEM_ACTOR,
    Action,
    Actor,
    AuditEvent,
    AuditQuery,
    AuditRecord,
    Break,
    BreakKind,
    ChainContents,
    ChainVerdict,
    Digest,
    Result,
    StoredRecord,
    chain_of,
    check_against_digest,
    event_fields,
    format_time,
    readable_event,
    verify_chain,
    verify_digests,
)
from shared.domain.errors import Conflict, DependencyUnavailable, DomainError, NotFound
from shared.ports import AuditLog, AuditReader, Clock, FindingStore, MacKeyRing

logger = logging.getLogger(__name__)

MAX_PAGE = 500


class AuditUnavailable(DependencyUnavailable):
    """The audit record could not be written: the operation it describes must not be reported done."""


class AuditTrail:
    """What every service uses to record what it did. Fail closed: raises AuditUnavailable."""

    def __init__(self, log: AuditLog, clock: Clock, vault: str) -> None:
        self._log = log
        self._clock = clock
        self.vault = vault

    def event(
        self,
        action: Action,
        *,
        secret_name: str | None = None,
        version: str | None = None,
        result: Result = Result.SUCCESS,
        actor: Actor = SYSTEM_ACTOR,
        correlation_id: str | None = None,
        details: Mapping[str, Any] | None = None,
        error: str | None = None,
        duration_ms: int | None = None,
    ) -> AuditEvent:
        return AuditEvent(
            action=action,
            vault=self.vault,
            time=self._clock.now(),
            result=result,
            actor=actor,
            secret_name=secret_name,
            version=version,
            correlation_id=correlation_id,
            details=dict(details or {}),
            error=error,
            duration_ms=duration_ms,
        )

    def record(self, action: Action, **kwargs: Any) -> AuditRecord:
        """Record one event now. Raises AuditUnavailable."""
        return self.record_all([self.event(action, **kwargs)])[0]

    def record_all(self, events: list[AuditEvent]) -> list[AuditRecord]:
        """Record several events (batched per chain). Raises AuditUnavailable."""
        try:
            return self._log.append(events)
        except DependencyUnavailable as err:
            logger.error("audit write failed (%s); %d record(s) not written", err.detail, len(events))
            raise AuditUnavailable(err.dependency, err.detail) from err
        except (DomainError, ValueError, KeyError, TypeError) as err:
            # A refused MAC key, an unreadable chain head, a value the store rejects: whatever it is, the
            # record is not written, and fail-closed callers must see that one way.
            logger.error("audit write failed (%s); %d record(s) not written", type(err).__name__, len(events))
            raise AuditUnavailable("audit_store", f"record not written ({type(err).__name__})") from err


# -- verify ---------------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    chains: int = 0
    records: int = 0
    digests: int = 0
    latest_digest: datetime | None = None
    breaks: list[Break] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "broken",
            "chains": self.chains,
            "records": self.records,
            "digests": self.digests,
            "latest_digest": format_time(self.latest_digest) if self.latest_digest else None,
            "breaks": [b.to_dict() for b in self.breaks],
        }


def verify_audit(
    reader: AuditReader,
    keys: MacKeyRing,
    clock: Clock,
    *,
    vault: str,
    secret_name: str | None = None,
    digest_interval: timedelta = timedelta(hours=1),
) -> VerifyReport:
    """Walk the chains (one secret's, or all) and the digests; report every break.

    Raises DependencyUnavailable when the store or the key vault cannot be read.
    """
    chain = chain_of(vault, secret_name) if secret_name else None
    # Digests first: every digest read then describes heads older than the records read next, so a
    # digest sealed while verify runs can never make an untouched chain look cut.
    digests = reader.read_digests()
    contents = dict(reader.read_chains(chain))
    verdicts: dict[str, ChainVerdict] = {
        name: verify_chain(name, c.records, keys.get, c.head) for name, c in sorted(contents.items())
    }
    for name, verdict in list(verdicts.items()):
        if any(b.kind in _IN_FLIGHT for b in verdict.breaks):
            # A chain's records and its head are read one after the other: an append in between looks
            # like a cut (or an overrun) once. Read that chain again before calling it a break.
            again = reader.read_chains(name).get(name)
            if again is not None:
                contents[name] = again
                verdicts[name] = verify_chain(name, again.records, keys.get, again.head)
    report = VerifyReport(chains=len(verdicts), records=sum(v.records for v in verdicts.values()))
    for name, verdict in verdicts.items():
        report.breaks += verdict.breaks
        for row in contents[name].stray_rows:
            report.breaks.append(Break(name, BreakKind.UNEXPECTED, None, f"row {row[:64]!r} is not a record"))

    report.digests = len(digests)
    digest_breaks = verify_digests(digests, keys.get)
    report.breaks += digest_breaks if chain is None else []
    forged = {b.seq for b in digest_breaks if b.kind == BreakKind.FORGED_DIGEST}
    trusted = [d for d in digests if d.seq not in forged]
    latest: Digest | None = max(trusted, key=lambda d: d.seq) if trusted else None
    if latest is not None:
        report.latest_digest = latest.time
        heads = {n: h for n, h in latest.heads.items() if chain is None or n == chain}
        scoped = Digest(latest.seq, latest.time, heads, latest.prev_mac, latest.key_id, latest.mac)
        report.breaks += check_against_digest(verdicts, scoped, _mac_lookup(contents))
    if chain is None:
        # Unsealed since: the latest digest, or (no digest yet) the oldest record, read only then.
        unsealed_since = latest.time if latest is not None else _oldest_record_time(contents)
        if unsealed_since is not None and clock.now() - unsealed_since > 2 * digest_interval:
            sealed = format_time(latest.time) if latest else "never"
            report.breaks.append(
                Break(
                    DIGEST_CHAIN,
                    BreakKind.STALE_DIGEST,
                    latest.seq if latest else None,
                    f"latest digest: {sealed}",
                )
            )
    return report


_IN_FLIGHT = (BreakKind.TRUNCATED, BreakKind.UNEXPECTED)


def _mac_lookup(contents: Mapping[str, ChainContents]) -> Callable[[str, int], str | None]:
    index = {
        (name, r.position): str(r.fields.get("mac", "")) for name, c in contents.items() for r in c.records
    }

    def macs_at(chain: str, seq: int) -> str | None:
        return index.get((chain, seq))

    return macs_at


def _oldest_record_time(contents: Mapping[str, ChainContents]) -> datetime | None:
    times = [
        e.time for c in contents.values() for r in c.records if (e := readable_event(r.fields)) is not None
    ]
    return min(times, default=None)


def write_digest(reader: AuditReader, keys: MacKeyRing, clock: Clock) -> Digest:
    """Seal every chain's head into the next digest (also when nothing happened). Raises
    DependencyUnavailable."""
    heads = reader.read_heads()
    digest = reader.append_digest(heads, clock.now(), keys)
    # The MAC in the log is an anchor outside the table: the logs (Application Insights) keep it even if
    # the newest digests are deleted from storage together with the newest records.
    logger.info("audit digest %d sealed over %d chain(s), mac %s", digest.seq, len(heads), digest.mac)
    return digest


# -- query ----------------------------------------------------------------------------------------


class InvalidCursor(ValueError):
    """The continuation token is not one this service issued."""


Cursor = tuple[str, str, int]


def _position(item: Mapping[str, Any]) -> Cursor:
    """Where a record stands in "newest first": time, then chain and sequence number. Unique, and within
    a chain it follows the chain even when two records carry the same time."""
    return (str(item["time"]), str(item["chain"]), int(item["seq"]))


def encode_cursor(position: Cursor) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(position)).encode()).decode().rstrip("=")


def decode_cursor(token: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        time_text, chain, seq = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as err:
        raise InvalidCursor("continuation is not a valid token") from err
    if not isinstance(time_text, str) or not isinstance(chain, str) or type(seq) is not int:
        raise InvalidCursor("continuation is not a valid token")
    return time_text, chain, seq


@dataclass(frozen=True)
class AuditPage:
    items: list[dict[str, Any]]
    continuation: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"items": self.items, "continuation": self.continuation}


def _item(chain: str, row: StoredRecord) -> dict[str, Any] | None:
    event = readable_event(row.fields)
    if event is None:
        return None
    item = {k: v for k, v in event_fields(event).items() if v is not None}
    item["details"] = dict(event.details)
    item["chain"] = chain
    item["seq"] = row.position
    return item


def _items(reader: AuditReader, query: AuditQuery) -> list[dict[str, Any]]:
    """Every readable record matching the query's filters. Unreadable rows are left to verify (which
    reports them) rather than shown."""
    return [i for row in reader.list_records(query) if (i := _item(row.chain, row.record)) is not None]


def query_audit(reader: AuditReader, query: AuditQuery) -> AuditPage:
    """Records matching the filters, newest first, ``query.limit`` per page. Raises
    DependencyUnavailable."""
    items = _items(reader, query)
    if query.before is not None:
        before = query.before
        items = [i for i in items if _position(i) < before]
    items.sort(key=_position, reverse=True)
    page = items[: query.limit]
    more = len(items) > query.limit
    continuation = encode_cursor(_position(page[-1])) if more and page else None
    return AuditPage(items=page, continuation=continuation)


def summarize_audit(
    reader: AuditReader, clock: Clock, *, vault: str, secret_name: str | None, days: int
) -> dict[str, Any]:
    """Counts by action and result, the last rotation and the failures of the last ``days`` days."""
    since = clock.now() - timedelta(days=days)
    items = _items(reader, AuditQuery(vault=vault, secret_name=secret_name, since=since))
    by_action: dict[str, Counter[str]] = {}
    for item in items:
        by_action.setdefault(item["action"], Counter())[item["result"]] += 1
    rotations = sorted(
        (i for i in items if i["action"] == Action.ROTATED.value and i["result"] == Result.SUCCESS.value),
        key=lambda i: i["time"],
    )
    failures = sorted(
        (i for i in items if i["result"] == Result.FAILURE.value), key=lambda i: i["time"], reverse=True
    )
    last = rotations[-1] if rotations else None
    return {
        "secret_name": secret_name,
        "days": days,
        "since": format_time(since),
        "total": len(items),
        "by_action": {action: dict(counts) for action, counts in sorted(by_action.items())},
        "last_rotation": None
        if last is None
        else {"time": last["time"], "secret_name": last.get("secret_name"), "version": last.get("version")},
        "failures": {
            "count": len(failures),
            "latest": [
                {k: f.get(k) for k in ("time", "action", "secret_name", "version", "error", "correlation_id")}
                for f in failures[:10]
            ],
        },
    }


# -- findings review ------------------------------------------------------------------------------


def review_finding(
    findings: FindingStore,
    trail: AuditTrail,
    finding_id: str,
    *,
    reviewer: Actor,
    note: str | None,
    correlation_id: str | None,
) -> dict[str, Any]:
    """Mark a suspicious-activity finding reviewed. Audit first (fail closed): when the REVIEWED record
    cannot be written nothing changes and AuditUnavailable is raised. Raises NotFound, Conflict."""
    finding = findings.get(finding_id)
    if finding is None:
        raise NotFound(f"finding {finding_id} does not exist")
    if finding.status == "reviewed":
        raise Conflict(f"finding {finding_id} was already reviewed")
    details = {"finding_id": finding_id, "rule": finding.rule, "note": note}
    record = trail.record(Action.REVIEWED, actor=reviewer, correlation_id=correlation_id, details=details)
    try:
        findings.mark_reviewed(finding_id, reviewer.id, note, record.event.time)
    except DomainError as err:
        # The decision is on record; say that it did not take effect, then let the caller see the error.
        trail.record(
            Action.REVIEWED,
            actor=reviewer,
            result=Result.FAILURE,
            correlation_id=correlation_id,
            details={"finding_id": finding_id},
            error=str(err),
        )
        raise
    return {"finding_id": finding_id, "status": "reviewed", "reviewer": reviewer.id, "audit_seq": record.seq}
