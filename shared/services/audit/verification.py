"""Verifying the audit chains against the MAC keys and the digests, sealing a digest every hour (anchored in
Key Vault) and repairing a chain an operator accepts as broken, on record."""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from shared.domain.audit import (
    DIGEST_CHAIN,
    Action,
    Actor,
    AuditEvent,
    AuditRecord,
    Break,
    BreakKind,
    ChainContents,
    ChainHead,
    ChainVerdict,
    Digest,
    MacLookup,
    chain_of,
    check_against_digest,
    check_anchor,
    digest_history,
    format_time,
    readable_event,
    verify_chain,
    verify_contents,
    verify_digest_history,
    verify_digests,
)
from shared.domain.audit.aggregates import authentic_fields, seal_fields
from shared.domain.audit.incidents import classify
from shared.domain.errors import (
    Conflict,
    DomainError,
    NotFound,
)
from shared.services.audit.results import AcknowledgedBreak, ChainBreak, VerifyReport
from shared.services.audit.retention import digests_chain

if TYPE_CHECKING:  # the bundle imports this package: annotations only
    from shared.services.peers import AuditPeers

logger = logging.getLogger(__name__)


# -- verify --------------------------------------------------------------------------------------------


def verify_audit(
    peers: AuditPeers, *, secret_name: str | None = None, digest_interval: timedelta = timedelta(hours=1)
) -> VerifyReport:
    """Walk the chains (one secret's, or all) and the digests; report every break.

    The anchor outside the table is read first, then the digests, then the chains, so that everything
    read later is at least as new as what it is compared with. Every consecutive pair of digests is
    compared (a sealed chain never regresses), and the chains with the newest digest. The chains are
    read one at a time, and of each only the verdict and the MACs at the positions a digest sealed are
    kept: memory grows with the number of chains, not of records. Raises DependencyUnavailable when the
    store or the key vault cannot be read.
    """
    started = time.monotonic()
    reader, keys = peers.reader, peers.keys
    chain = chain_of(peers.trail.vault, secret_name) if secret_name else None
    anchored = peers.anchor.read()
    digests = reader.read_digests(chain=chain)  # one secret's: only the page of heads it is on
    digest_breaks = verify_digests(digests, keys.get)
    forged = {b.seq for b in digest_breaks if b.kind == BreakKind.FORGED_DIGEST}
    trusted = [_scoped(d, chain) for d in digests if d.seq not in forged]
    walked = _walk(peers, chain, _sealed_positions(trusted), oldest=not trusted)
    verdicts = walked.verdicts
    breaks = [b for verdict in verdicts.values() for b in verdict.breaks]
    breaks += check_anchor(anchored, digests)
    # Also for one secret: a forged digest may be how a cut of that secret's chain is hidden.
    breaks += digest_breaks
    history = digest_history(trusted, walked.macs_at)
    breaks += [b for _, b in history]
    latest: Digest | None = max(trusted, key=lambda d: d.seq) if trusted else None
    if latest is not None:
        breaks += check_against_digest(verdicts, latest, walked.macs_at)
    if chain is None:
        breaks += _stale(peers, latest, walked.oldest, digest_interval)
        breaks += _archived_digests(peers, digests)
    found = classify(_once(breaks), history, trusted)
    return VerifyReport(
        status="broken" if found.active else "ok",
        chains=len(verdicts),
        records=sum(v.records for v in verdicts.values()),
        digests=len(digests),
        latest_digest=latest.time if latest is not None else None,
        breaks=[ChainBreak(chain=b.chain, kind=b.kind, seq=b.seq, detail=b.detail) for b in found.active],
        duration_ms=round((time.monotonic() - started) * 1000),
        acknowledged=[
            AcknowledgedBreak(chain=c, kind=BreakKind(k), seq=s, detail=d, incident=incident, baseline=seq)
            for (c, k, s, d), incident, seq in found.acknowledged
            if chain is None or c in (chain, DIGEST_CHAIN)
        ],
    )


#: What the stored last full verification is sealed as.
VERIFICATION = "verification"
#: The oldest stored full verification a GET answers with: the daily ``audit_verify_daily`` timer keeps it
#: younger.
VERIFICATION_MAX_AGE = timedelta(hours=25)


def verification(peers: AuditPeers, *, fresh: bool = False) -> VerifyReport:
    """The whole trail's verification as ``GET /api/audit/verify`` answers it: the last full verification
    (sealed, stored by the daily timer and by every fresh run), or a new one when asked (``fresh``), when
    none is stored, when its seal fails, or when it is older than ``VERIFICATION_MAX_AGE``. A verify of the
    whole trail reads every record: minutes at millions of records, longer than an HTTP call may take.
    Raises DependencyUnavailable."""
    stored = None if fresh else stored_verification(peers)
    if stored is not None and stored.verified_at is not None:
        age = peers.clock.now() - stored.verified_at
        if age <= VERIFICATION_MAX_AGE:
            return stored
    return verify_and_store(peers)


def stored_verification(peers: AuditPeers) -> VerifyReport | None:
    """The stored last full verification when the service sealed it, else None."""
    stored = peers.reader.read_verification(peers.trail.vault)
    if stored is None or not authentic_fields(VERIFICATION, stored, peers.keys.get):
        return None
    try:
        return VerifyReport.model_validate_json(str(stored["report"]))
    except (KeyError, ValueError):
        return None


def verify_and_store(peers: AuditPeers) -> VerifyReport:
    """A full verification now, stored (sealed) as the last one. The answer stands when it cannot be
    stored (logged). Raises DependencyUnavailable."""
    report = verify_audit(peers)
    report = report.model_copy(update={"verified_at": peers.clock.now()})
    key_id, key = peers.keys.current()
    fields = seal_fields(VERIFICATION, {"report": json.dumps(report.to_json())}, key_id, key)
    try:
        peers.log.write_verification(peers.trail.vault, fields)
    except DomainError as err:
        logger.warning("the verification could not be stored: %s", err)
    return report


def forget_verification(peers: AuditPeers) -> None:
    """Drop the stored full verification (the digest writer found a regression or a broken digest chain): the
    next ``verification`` runs a new one rather than answer from before. Raises DependencyUnavailable."""
    peers.log.write_verification(peers.trail.vault, {"forgotten": format_time(peers.clock.now())})


def _sealed_positions(digests: Sequence[Digest]) -> dict[str, set[int]]:
    """The positions of each chain that a digest sealed: the MACs verify compares digests with."""
    wanted: dict[str, set[int]] = {}
    for digest in digests:
        for name, head in digest.heads.items():
            wanted.setdefault(name, set()).add(head.seq)
    return wanted


@dataclass
class _Walked:
    """What verify keeps of the chains it walked."""

    verdicts: dict[str, ChainVerdict] = field(default_factory=dict)
    macs: dict[tuple[str, int], str] = field(default_factory=dict)
    oldest: datetime | None = None

    def macs_at(self, chain: str, seq: int) -> str | None:
        return self.macs.get((chain, seq))


def _walk(peers: AuditPeers, chain: str | None, wanted: Mapping[str, set[int]], *, oldest: bool) -> _Walked:
    """Each chain's verdict, one chain at a time, and (``oldest``) the oldest record's time. A chain's
    records and its head are read one after the other: an append in between looks like a cut (or an
    overrun) once, so such a chain is read again before it is called a break."""
    keys = peers.keys
    walked = _Walked()
    for name, read in peers.reader.iter_chains(chain):
        contents = with_archive(peers, name, read)
        verdict = verify_contents(name, contents, keys.get)
        if any(b.kind in _IN_FLIGHT for b in verdict.breaks):
            again = peers.reader.read_chains(name).get(name)
            if again is not None:
                contents = with_archive(peers, name, again)
                verdict = verify_contents(name, contents, keys.get)
        walked.verdicts[name] = verdict
        positions = wanted.get(name, set())
        for record in contents.records:
            if record.position in positions:
                walked.macs[(name, record.position)] = str(record.fields.get("mac", ""))
        if oldest:
            times = [e.time for r in contents.records if (e := readable_event(r.fields)) is not None]
            if times and (walked.oldest is None or min(times) < walked.oldest):
                walked.oldest = min(times)
    return walked


def with_archive(peers: AuditPeers, chain: str, contents: ChainContents) -> ChainContents:
    """The chain as the table holds it, preceded by what the retention export archived of it (read only
    when the table's records do not start at 1): verify walks both as one chain, so a record edited,
    dropped or put in either is a break. An archived line that is no record is a stray row. Raises
    DependencyUnavailable."""
    first = min((r.position for r in contents.records), default=None)
    if peers.archive is None or first == 1 or first is None:
        return contents
    archived = peers.archive.read_chain(chain)
    # A run that died between the archive and the table leaves a record in both: the table's is walked.
    earlier = [r for r in archived.records if r.position < first]
    strays = tuple(f"archive: {row}" for row in archived.stray_rows)
    in_table = {r.position: r.fields.get("mac") for r in contents.records}
    strays += tuple(
        f"archive: record {r.position} is not the table's"
        for r in archived.records
        if r.position >= first and in_table.get(r.position) != r.fields.get("mac")
    )
    return replace(contents, records=[*earlier, *contents.records], stray_rows=contents.stray_rows + strays)


def _archived_digests(peers: AuditPeers, digests: Sequence[Digest]) -> list[Break]:
    """The archive's copy of the digest chain against the table's: a copy that is not the table's digest of
    its number, and a line that is no digest, are breaks (a digest gone from the table is one already).
    Raises DependencyUnavailable."""
    if peers.archive is None:
        return []
    archived = peers.archive.read_chain(digests_chain(peers.trail.vault))
    in_table = {d.seq: d.mac for d in digests}
    breaks = [
        Break(DIGEST_CHAIN, BreakKind.UNEXPECTED, None, f"archive: {row}") for row in archived.stray_rows
    ]
    for record in archived.records:
        mac = in_table.get(record.position)
        if mac is not None and not hmac.compare_digest(str(record.fields.get("mac", "")), mac):
            detail = f"the archive's digest {record.position} is not the table's"
            breaks.append(Break(DIGEST_CHAIN, BreakKind.UNEXPECTED, record.position, detail))
    return breaks


def _stale(
    peers: AuditPeers, latest: Digest | None, oldest_record: datetime | None, interval: timedelta
) -> list[Break]:
    """A STALE_DIGEST break when nothing was sealed for two digest intervals: since the latest digest, or
    (no digest yet) since the oldest record."""
    unsealed_since = latest.time if latest is not None else oldest_record
    if unsealed_since is None or peers.clock.now() - unsealed_since <= 2 * interval:
        return []
    sealed = format_time(latest.time) if latest else "never"
    return [
        Break(
            DIGEST_CHAIN, BreakKind.STALE_DIGEST, latest.seq if latest else None, f"latest digest: {sealed}"
        )
    ]


def _once(breaks: list[Break]) -> list[Break]:
    """The same break seen from two sides (a chain's own head, a digest) is reported once, the first
    way it was seen. Breaks at no position (stray rows) differ by what they say."""
    seen: dict[tuple[str, BreakKind, int | str | None], Break] = {}
    for item in breaks:
        seen.setdefault((item.chain, item.kind, item.detail if item.seq is None else item.seq), item)
    return list(seen.values())


_IN_FLIGHT = (BreakKind.TRUNCATED, BreakKind.UNEXPECTED, BreakKind.MISSING_HEAD)


def _scoped(digest: Digest, chain: str | None) -> Digest:
    """The digest as far as one chain is concerned (all of it when ``chain`` is None): its page holds
    other chains' heads too, which this verify does not read."""
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


def repair_chain(peers: AuditPeers, *, secret_name: str | None, operator: Actor, reason: str) -> AuditRecord:
    """Re-derive a chain's head from its records, only when they verify: every record intact and linked,
    every position any digest sealed still there, the digest chain anchored. The repair is on record: a
    CHAIN_REPAIRED record sealed after the last record becomes the new head, in one atomic write.

    Raises NotFound (no records), Conflict (the chain does not verify — a cut cannot be repaired, only
    reported — or its head is intact), DependencyUnavailable.
    """
    log, reader, keys, clock, anchor = peers.log, peers.reader, peers.keys, peers.clock, peers.anchor
    vault = peers.trail.vault
    chain = chain_of(vault, secret_name)
    anchored = anchor.read()
    digests = reader.read_digests(chain=chain)
    contents = reader.read_chains(chain).get(chain)
    if contents is not None:
        contents = with_archive(peers, chain, contents)
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
