"""Audit use cases: record (fail closed), verify, query, summarize, and the hourly digest."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypedDict, TypeVar, Unpack

from shared.domain.audit import (
    DIGEST_CHAIN,
    SYSTEM_ACTOR,
    Action,
    Actor,
    AuditError,
    AuditEvent,
    AuditQuery,
    AuditRecord,
    Break,
    BreakKind,
    ChainContents,
    ChainHead,
    ChainTampered,
    ChainVerdict,
    Digest,
    MacLookup,
    Result,
    StoredRecord,
    authentic_event,
    chain_of,
    check_against_digest,
    check_anchor,
    event_fields,
    format_time,
    hold_regressions,
    links,
    parse_time,
    readable_event,
    regressions,
    verify_chain,
    verify_contents,
    verify_digest_history,
    verify_digests,
)
from shared.domain.errors import (
    Conflict,
    DependencyUnavailable,
    DomainError,
    NotFound,
    NotPermitted,
    OutcomeNotRecorded,
)
from shared.domain.findings import review
from shared.domain.identity import canonical_identity
from shared.domain.notifications import AUDIT_TAMPERING, Notification
from shared.ports import AuditLog, AuditReader, Clock, DigestAnchor, FindingStore, MacKeyRing, Publisher

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAX_PAGE = 500


class AuditUnavailable(DependencyUnavailable):
    """The audit record could not be written: the operation it describes must not be reported done."""


class EventFields(TypedDict, total=False):
    """What a caller may say about an event besides its action (the trail adds vault and time)."""

    secret_name: str | None
    version: str | None
    result: Result
    actor: Actor
    correlation_id: str | None
    details: Mapping[str, Any] | None
    error: str | None
    duration_ms: int | None


class AuditTrail:
    """What every service uses to record what it did. Fail closed: raises AuditUnavailable."""

    def __init__(self, log: AuditLog, clock: Clock, vault: str) -> None:
        self._log = log
        self._clock = clock
        self.vault = vault

    def event(self, action: Action, **fields: Unpack[EventFields]) -> AuditEvent:
        """An event of this vault, timed now by the trail's clock. Raises AuditUnavailable for details the
        audit refuses (too large, a key that would hold a value): such a record is not written, and a
        fail-closed caller sees that one way, never an unexpected error."""
        try:
            return self._event(action, **fields)
        except AuditError as err:
            logger.error("%s record refused: %s", action.value, err)
            raise AuditUnavailable("audit_store", f"record not written ({err})") from err

    def _event(self, action: Action, **fields: Unpack[EventFields]) -> AuditEvent:
        return AuditEvent(
            action=action,
            vault=self.vault,
            time=self._clock.now(),
            result=fields.get("result", Result.SUCCESS),
            actor=fields.get("actor", SYSTEM_ACTOR),
            secret_name=fields.get("secret_name"),
            version=fields.get("version"),
            correlation_id=fields.get("correlation_id"),
            details=dict(fields.get("details") or {}),
            error=fields.get("error"),
            duration_ms=fields.get("duration_ms"),
        )

    def record(self, action: Action, **fields: Unpack[EventFields]) -> AuditRecord:
        """Record one event now. Raises AuditUnavailable."""
        return self.record_all([self.event(action, **fields)])[0]

    def attempt(self, action: Action, change: Callable[[], T], **fields: Unpack[EventFields]) -> T:
        """The ``intent`` record, then ``change``; when it raises a DomainError, a ``failure`` record (best
        effort: the error is what the caller sees) and the error. Returns what ``change`` returned.
        Raises AuditUnavailable when the intent cannot be recorded (then nothing was attempted)."""
        self.record_all([replace(self.event(action, **fields), result=Result.INTENT)])
        try:
            return change()
        except DomainError as err:
            failure = replace(self.event(action, **fields), result=Result.FAILURE, error=type(err).__name__)
            try:
                self.record_all([failure])
            except AuditUnavailable:
                logger.error("%s failure could not be audited", action.value)
            raise

    def outcome(
        self, action: Action, change: str, changed: Mapping[str, str], **fields: Unpack[EventFields]
    ) -> None:
        """The outcome record (``success`` unless ``result`` says otherwise) of a change that took effect
        (``change`` says what, ``changed`` its ids).
        Raises OutcomeNotRecorded when it cannot be written: never "nothing was changed", or the caller
        repeats the change."""
        try:
            self.record(action, **fields)
        except AuditUnavailable as err:
            raise OutcomeNotRecorded.after(change, err, **changed) from err

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
    anchor: DigestAnchor,
    *,
    vault: str,
    secret_name: str | None = None,
    digest_interval: timedelta = timedelta(hours=1),
) -> VerifyReport:
    """Walk the chains (one secret's, or all) and the digests; report every break.

    The anchor outside the table is read first, then the digests, then the chains, so that everything
    read later is at least as new as what it is compared with. Every consecutive pair of digests is
    compared (a sealed chain never regresses), and the chains with the newest digest. Raises
    DependencyUnavailable when the store or the key vault cannot be read.
    """
    chain = chain_of(vault, secret_name) if secret_name else None
    anchored = anchor.read()
    digests = reader.read_digests()
    contents = dict(reader.read_chains(chain))
    verdicts: dict[str, ChainVerdict] = {
        name: verify_contents(name, c, keys.get) for name, c in sorted(contents.items())
    }
    for name, verdict in list(verdicts.items()):
        if any(b.kind in _IN_FLIGHT for b in verdict.breaks):
            # A chain's records and its head are read one after the other: an append in between looks
            # like a cut (or an overrun) once. Read that chain again before calling it a break.
            again = reader.read_chains(name).get(name)
            if again is not None:
                contents[name] = again
                verdicts[name] = verify_contents(name, again, keys.get)
    report = VerifyReport(chains=len(verdicts), records=sum(v.records for v in verdicts.values()))
    for verdict in verdicts.values():
        report.breaks += verdict.breaks

    report.digests = len(digests)
    report.breaks += check_anchor(anchored, digests)
    digest_breaks = verify_digests(digests, keys.get)
    # Also for one secret: a forged digest may be how a cut of that secret's chain is hidden.
    report.breaks += digest_breaks
    forged = {b.seq for b in digest_breaks if b.kind == BreakKind.FORGED_DIGEST}
    trusted = [_scoped(d, chain) for d in digests if d.seq not in forged]
    macs_at = _mac_lookup(contents)
    report.breaks += verify_digest_history(trusted, macs_at)
    latest: Digest | None = max(trusted, key=lambda d: d.seq) if trusted else None
    if latest is not None:
        report.latest_digest = latest.time
        report.breaks += check_against_digest(verdicts, latest, macs_at)
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
    report.breaks = _once(report.breaks)
    return report


def _once(breaks: list[Break]) -> list[Break]:
    """The same break seen from two sides (a chain's own head, a digest) is reported once, the first
    way it was seen. Breaks at no position (stray rows) differ by what they say."""
    seen: dict[tuple[str, BreakKind, int | str | None], Break] = {}
    for item in breaks:
        seen.setdefault((item.chain, item.kind, item.detail if item.seq is None else item.seq), item)
    return list(seen.values())


_IN_FLIGHT = (BreakKind.TRUNCATED, BreakKind.UNEXPECTED, BreakKind.MISSING_HEAD)


def _scoped(digest: Digest, chain: str | None) -> Digest:
    """The digest as far as one chain is concerned (all of it when ``chain`` is None)."""
    if chain is None:
        return digest
    return replace(digest, heads={n: h for n, h in digest.heads.items() if n == chain})


def _mac_lookup(contents: Mapping[str, ChainContents]) -> MacLookup:
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


# -- digests and repair ---------------------------------------------------------------------------


class DigestRefused(DomainError):
    """The digest chain the next digest would extend is not intact (the anchored digest is gone or
    differs, a digest is forged): sealing now would seal over tampering, so nothing is sealed."""

    def __init__(self, breaks: list[Break]) -> None:
        super().__init__(
            f"digest refused: {len(breaks)} break(s) in the digest chain, e.g. {breaks[0].detail}"
        )
        self.breaks = breaks


@dataclass(frozen=True)
class DigestOutcome:
    digest: Digest
    #: Chains that regressed since the previous digest (their old head was kept and sealed again).
    regressions: list[Break]
    #: Regressions not held by the previous digest: found by this run, audited and notified now.
    new_regressions: list[Break]


def write_digest(
    reader: AuditReader,
    keys: MacKeyRing,
    clock: Clock,
    anchor: DigestAnchor,
    trail: AuditTrail,
    publisher: Publisher,
) -> DigestOutcome:
    """Seal every chain's head into the next digest (also when nothing happened), then anchor it.

    Never forgives: a chain that went backwards or vanished since the previous digest keeps the head the
    previous digest sealed (the new digest names it as held), and a newly found regression is audited
    (TAMPERING_DETECTED) and notified. When the digest chain itself is not intact — the anchored digest
    is missing or differs, a digest is forged — nothing is sealed: raises DigestRefused after reporting.
    Raises DependencyUnavailable when the store or the vault cannot be used.
    """
    anchored = anchor.read()
    # From the anchored digest on: what the anchor vouches for is all the next digest extends (verify
    # walks the whole chain; the hourly writer need not re-read a year of digests).
    since = anchored.seq if anchored is not None else 1
    digests = reader.read_digests(since)
    refusal = [b for b in check_anchor(anchored, digests) if b.kind != BreakKind.UNANCHORED]
    refusal += verify_digests(digests, keys.get, first=since)
    if refusal:
        _report_tampering(trail, publisher, clock, refusal)
        raise DigestRefused(refusal)
    if anchored is None and digests:
        logger.warning("audit digests exist but none is anchored; anchoring from this digest on")
    previous = max(digests, key=lambda d: d.seq) if digests else None
    heads = reader.read_heads()

    def passes_through(chain: str, sealed: ChainHead, now: ChainHead) -> bool:
        # Walk what was appended since: the stored MAC at the sealed position alone could be an old
        # record put back after a cut.
        return links(chain, sealed, now, reader.read_range(chain, sealed.seq, now.seq), keys.get)

    found = regressions(previous, heads, passes_through) if previous is not None else []
    held = sorted({b.chain for b in found})
    already = set(previous.held) if previous is not None else set()
    new = [b for b in found if b.chain not in already]
    if new:
        # Before sealing: once a digest names a chain as held, later runs take it as reported.
        _report_tampering(trail, publisher, clock, new, before_sealing=True)
    digest = reader.append_digest(previous, hold_regressions(previous, heads, held), clock.now(), keys, held)
    anchor.write(digest)
    # The MAC in the log is one more copy outside the table (Application Insights keeps it).
    logger.info("audit digest %d sealed over %d chain(s), mac %s", digest.seq, len(digest.heads), digest.mac)
    if found:
        logger.error("audit digest %d held %d regressed chain(s): %s", digest.seq, len(held), ", ".join(held))
    return DigestOutcome(digest=digest, regressions=found, new_regressions=new)


_MAX_REPORTED_BREAKS = 10


def _report_tampering(
    trail: AuditTrail,
    publisher: Publisher,
    clock: Clock,
    breaks: list[Break],
    *,
    before_sealing: bool = False,
) -> None:
    """Audit and notify breaks the digest writer found.

    ``before_sealing``: the record must be written, or AuditUnavailable is raised and nothing is sealed,
    so the next run reports again — unless the service chain that takes the record is itself tampered
    with (then the alarm is logged and notified, and sealing goes on: it holds that chain too). The
    notification is best effort (logged when it fails): the audit record is the system of record."""
    shown = [b.to_dict() for b in breaks[:_MAX_REPORTED_BREAKS]]
    for item in shown:
        item["detail"] = str(item["detail"])[:160]
    details = {"breaks": shown, "count": len(breaks)}
    try:
        trail.record(Action.TAMPERING_DETECTED, result=Result.FAILURE, details=details)
    except DomainError as err:
        logger.critical("TAMPERING_DETECTED could not be audited: %s", err)
        if before_sealing and not isinstance(err.__cause__, ChainTampered):
            raise
    notification = Notification(
        type=AUDIT_TAMPERING,
        subject="audit",
        time=clock.now(),
        data={"vault": trail.vault, "chains": sorted({b.chain for b in breaks})[:50], "count": len(breaks)},
    )
    try:
        publisher.publish([notification])
    except DomainError as err:
        logger.error("audit tampering notification could not be sent: %s", err)


def repair_chain(
    log: AuditLog,
    reader: AuditReader,
    keys: MacKeyRing,
    clock: Clock,
    anchor: DigestAnchor,
    *,
    vault: str,
    secret_name: str | None,
    operator: Actor,
    reason: str,
) -> AuditRecord:
    """Re-derive a chain's head from its records, only when they verify: every record intact and linked,
    every position any digest sealed still there, the digest chain anchored. The repair is on record: a
    CHAIN_REPAIRED record sealed after the last record becomes the new head, in one atomic write.

    Raises NotFound (no records), Conflict (the chain does not verify — a cut cannot be repaired, only
    reported — or its head is intact), DependencyUnavailable.
    """
    chain = chain_of(vault, secret_name)
    anchored = anchor.read()
    digests = reader.read_digests()
    contents = reader.read_chains(chain).get(chain)
    if contents is None or not contents.records:
        raise NotFound(f"audit chain {chain} has no records: nothing to repair")
    verdict = verify_chain(chain, contents.records, keys.get)  # the records alone: the head is the fault
    breaks = verdict.breaks + check_anchor(anchored, digests)
    # An unreadable head row is what repair replaces; any other stray row is a break.
    breaks += [Break(chain, BreakKind.UNEXPECTED, None, f"row {r[:64]!r}") for r in contents.stray_rows]
    digest_breaks = verify_digests(digests, keys.get)
    breaks += digest_breaks
    if not digest_breaks and digests:
        scoped = [_scoped(d, chain) for d in digests]
        macs_at = _mac_lookup({chain: contents})
        breaks += verify_digest_history(scoped, macs_at)
        breaks += check_against_digest({chain: verdict}, max(scoped, key=lambda d: d.seq), macs_at)
    if breaks:
        raise Conflict(
            f"audit chain {chain} does not verify ({len(breaks)} break(s), e.g. {breaks[0].kind.value}: "
            f"{breaks[0].detail}); a head is re-derived only from an intact chain"
        )
    newest = max(contents.records, key=lambda r: r.position)
    last = ChainHead(newest.position, str(newest.fields["mac"]))
    if contents.head == last:
        raise Conflict(f"audit chain {chain} is intact and its head matches: nothing to repair")
    if contents.head is not None and contents.head.seq > last.seq:
        raise Conflict(
            f"audit chain {chain} has its head at {contents.head.seq} but records only to {last.seq}: "
            "records were cut, which is reported, never repaired"
        )
    previous = None if contents.head is None else {"seq": contents.head.seq}
    event = AuditEvent(
        action=Action.CHAIN_REPAIRED,
        vault=vault,
        time=clock.now(),
        actor=operator,
        secret_name=secret_name,
        details={"reason": reason[:500], "records": verdict.records, "previous_head": previous},
    )
    record = log.repair(chain, last, event, contents.head)
    logger.warning("audit chain %s repaired by %s: head re-derived at %d", chain, operator.id, record.seq)
    return record


# -- query ----------------------------------------------------------------------------------------


class InvalidCursor(ValueError):
    """The continuation token is not one this service issued."""


Cursor = tuple[str, str, int]


def _position(item: Mapping[str, Any]) -> Cursor:
    """Where a record stands in "newest first": time, then chain and sequence number. Unique, and within
    a chain it follows the chain even when two records carry the same time."""
    return (str(item["time"]), str(item["chain"]), int(item["seq"]))


#: A token of the longest position (a 127-character vault and secret name, a 12-digit seq) is about 410
#: characters; anything longer is refused before it is decoded.
_CURSOR_MAX_CHARS = 512
_CURSOR_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{1,{_CURSOR_MAX_CHARS}}}")
_CURSOR_CHAIN = re.compile(r"[0-9a-z_-]{1,127}:[0-9a-z_-]{1,127}")
_CURSOR_MAX_SEQ = 10**12 - 1


def encode_cursor(position: Cursor) -> str:
    """The continuation token of a position (unpadded URL-safe base64 of its JSON)."""
    return base64.urlsafe_b64encode(json.dumps(list(position)).encode()).decode().rstrip("=")


def decode_cursor(token: str) -> Cursor:
    """The position a token of ``encode_cursor`` names. Strict, because its time ends up in the store's
    filter: bounded length, the exact stored time format, a well-formed chain name, a seq in range, and
    nothing but the token ``encode_cursor`` would issue for that position. Raises InvalidCursor only."""
    invalid = InvalidCursor("continuation is not a valid token")
    if not _CURSOR_TOKEN.fullmatch(token):
        raise invalid
    try:
        position = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, RecursionError):  # RecursionError: deeply nested JSON
        raise invalid from None
    if not isinstance(position, list) or len(position) != 3:
        raise invalid
    time_text, chain, seq = position
    if not (
        isinstance(time_text, str)
        and _is_stored_time(time_text)
        and isinstance(chain, str)
        and _CURSOR_CHAIN.fullmatch(chain)
        and type(seq) is int
        and 1 <= seq <= _CURSOR_MAX_SEQ
    ):
        raise invalid
    cursor = (time_text, chain, seq)
    if encode_cursor(cursor) != token:  # one token per position: no padding, spacing or escaping games
        raise invalid
    return cursor


def _is_stored_time(text: str) -> bool:
    """``text`` is a time exactly as ``format_time`` stores it."""
    try:
        return format_time(parse_time(text)) == text
    except ValueError:
        return False


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


def authentic_events(reader: AuditReader, keys: MacKeyRing, query: AuditQuery) -> list[AuditEvent]:
    """The records matching ``query`` whose MAC proves the service wrote them (a row a storage writer put
    in the table is left out): what a decision may rest on. Raises DependencyUnavailable."""
    rows = reader.list_records(query)
    return [e for row in rows if (e := authentic_event(row.chain, row.record.fields, keys.get)) is not None]


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

#: A finding names at most this many of the actors it is about, each cut to this many characters, so its
#: details stay small; a reviewer is compared by the same prefix (a collision refuses, never admits).
FINDING_MAX_ACTORS = 20
FINDING_ACTOR_CHARS = 64


def finding_actors(details: Mapping[str, Any]) -> frozenset[str]:
    """The actors a finding's details say it is about, in canonical form (``canonical_identity``), each
    cut as stored. A finding stored before findings listed their actors counts its subject, which is the
    actor id for the per-actor rules."""
    actors = details.get("actors")
    if not isinstance(actors, list):
        actors = [details["subject"]] if details.get("subject") else []
    return frozenset(canonical_identity(str(actor)[:FINDING_ACTOR_CHARS]) for actor in actors)


def involved(actor_id: str, details: Mapping[str, Any]) -> bool:
    """Whether the caller ``actor_id`` is among the actors of a finding: compared as one canonical
    identity, also when the stored id was cut (a collision of prefixes refuses, never admits)."""
    actors = finding_actors(details)
    cut = FINDING_ACTOR_CHARS
    return bool({canonical_identity(actor_id)[:cut], canonical_identity(actor_id[:cut])} & actors)


def review_finding(
    findings: FindingStore,
    trail: AuditTrail,
    finding_id: str,
    *,
    reviewer: Actor,
    note: str | None,
    correlation_id: str | None,
) -> dict[str, Any]:
    """Mark a suspicious-activity finding reviewed: a REVIEWED ``intent`` record (fail closed: when it
    cannot be written nothing changes and AuditUnavailable is raised), the compare-and-swap on the
    finding, then the outcome record — ``success``, or ``failure`` when a concurrent review won. Raises
    NotFound, InvalidTransition (not open), Conflict (lost a race).

    Nobody reviews a finding about themselves: a reviewer among the finding's actors is refused with
    NotPermitted after a REVIEWED record with result ``denied`` (fail closed too), and nothing changes."""
    finding = findings.get(finding_id)
    if finding is None:
        raise NotFound(f"finding {finding_id} does not exist")
    if involved(reviewer.id, finding.details):
        trail.record(
            Action.REVIEWED,
            actor=reviewer,
            result=Result.DENIED,
            correlation_id=correlation_id,
            details={"finding_id": finding_id, "rule": finding.rule, "reason": "the reviewer is involved"},
        )
        raise NotPermitted(f"finding {finding_id} is about the caller; someone else must review it")
    review(finding, reviewer.id, note, trail.event(Action.REVIEWED).time)  # InvalidTransition: no record
    details = {"finding_id": finding_id, "rule": finding.rule, "note": note}
    intent = trail.record(
        Action.REVIEWED, actor=reviewer, result=Result.INTENT, correlation_id=correlation_id, details=details
    )
    try:
        findings.mark_reviewed(finding_id, reviewer.id, note, intent.event.time)
    except DomainError as err:
        trail.record(
            Action.REVIEWED,
            actor=reviewer,
            result=Result.FAILURE,
            correlation_id=correlation_id,
            details={"finding_id": finding_id},
            error=str(err),
        )
        raise
    outcome = {"finding_id": finding_id, "status": "reviewed", "reviewer": reviewer.id}
    try:
        done = trail.record(
            Action.REVIEWED, actor=reviewer, correlation_id=correlation_id, details={"finding_id": finding_id}
        )
    except AuditUnavailable:
        # The review took effect and its intent is on record; the finding itself says who reviewed it.
        logger.error("REVIEWED outcome of finding %s could not be recorded", finding_id)
        return {**outcome, "audit_seq": intent.seq}
    return {**outcome, "audit_seq": done.seq}
