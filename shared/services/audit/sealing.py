"""Sealing the hourly digest of every chain's head, anchored in Key Vault.

A digest never forgives: a chain that went backwards since the previous digest keeps the head that digest
sealed (it is held), and a break in the digest chain itself (the anchored digest gone or different after a
lost write or a restored table, a forged or missing digest) is held too: the next digest follows the last
digest that can be trusted (as the anchor knows it) and names the broken ones, so sealing goes on over
what is intact while verify keeps reporting the break. Only an acknowledged incident (``incidents.py``)
seals a new baseline over a break, on record.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from shared.domain.audit import (
    Action,
    AuditQuery,
    Baseline,
    Break,
    BreakKind,
    ChainHead,
    ChainTampered,
    Digest,
    DigestNotes,
    Result,
    StoredRecord,
    authentic_event,
    check_anchor,
    hold_regressions,
    links,
    past_break,
    regressions,
    verify_digests,
)
from shared.domain.errors import DomainError
from shared.domain.notifications import AUDIT_TAMPERING, Notification
from shared.domain.state import FUNCTION_TIMEOUT
from shared.ports import Clock, Publisher
from shared.services.audit.queries import indexed_rows
from shared.services.audit.trail import AuditTrail
from shared.services.audit.verification import forget_verification

if TYPE_CHECKING:  # the bundle imports this package: annotations only
    from shared.services.peers import AuditPeers

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DigestOutcome:
    digest: Digest
    #: Chains that regressed since the previous digest (their old head was kept and sealed again).
    regressions: list[Break]
    #: Regressions not held by the previous digest: found by this run, audited and notified now.
    new_regressions: list[Break]
    #: Breaks in the digest chain this run found and now holds (audited and notified now).
    digest_breaks: list[Break]


@dataclass(frozen=True)
class _Start:
    """What the next digest follows: the previous digest (whose heads it compares with), and the notes
    it carries when the digest chain is broken."""

    previous: Digest | None
    notes: DigestNotes
    breaks: list[Break]


def write_digest(peers: AuditPeers, baseline: Baseline | None = None) -> DigestOutcome:
    """Seal every chain's head into the next digest (also when nothing happened), then anchor it.

    Never forgives: a chain that went backwards or vanished since the previous digest keeps the head the
    previous digest sealed (the new digest names it as held), and a newly found regression is audited
    (TAMPERING_DETECTED) and notified. When the digest chain itself is not intact, the digest follows the
    last digest that can be trusted and holds the broken ones (audited and notified once). A
    ``baseline`` (an acknowledged incident's) releases the chains its breaks name: they are sealed as
    they are now. Raises Conflict when another writer sealed meanwhile, DependencyUnavailable when the
    store or the vault cannot be used.
    """
    reader, keys, clock, anchor, trail = peers.reader, peers.keys, peers.clock, peers.anchor, peers.trail
    start = _start(peers, baseline)
    previous = start.previous
    heads = reader.read_heads()
    appended: dict[str, list[StoredRecord]] = {}

    def passes_through(chain: str, sealed: ChainHead, now: ChainHead) -> bool:
        # Walk what was appended since: the stored MAC at the sealed position alone could be an old
        # record put back after a cut.
        appended[chain] = reader.read_range(chain, sealed.seq, now.seq)
        return links(chain, sealed, now, appended[chain], keys.get)

    found = regressions(previous, heads, passes_through) if previous is not None else []
    _index_appended(peers, previous, heads, appended)
    released = {entry[0] for entry in baseline.entries or ()} if baseline is not None else set()
    held = sorted({b.chain for b in found} - released)
    already = set(previous.held) if previous is not None else set()
    new = [b for b in found if b.chain not in already and b.chain not in released]
    if new or start.breaks:
        # Before sealing: once a digest names a break as held, later runs take it as reported.
        _report_tampering(trail, peers.publisher, clock, start.breaks + new, before_sealing=True)
        forget_verification(peers)
    sealed_heads = hold_regressions(previous, heads, held)
    digest = reader.append_digest(previous, sealed_heads, clock.now(), keys, held, start.notes)
    anchor.write(digest)
    # The MAC in the log is one more copy outside the table (Application Insights keeps it).
    logger.info("audit digest %d sealed over %d chain(s), mac %s", digest.seq, len(digest.heads), digest.mac)
    if found:
        logger.error("audit digest %d held %d regressed chain(s): %s", digest.seq, len(held), ", ".join(held))
    if digest.held_digests:
        logger.error("audit digest %d holds broken digest(s) %s", digest.seq, digest.held_digests)
    return DigestOutcome(digest=digest, regressions=found, new_regressions=new, digest_breaks=start.breaks)


def _start(peers: AuditPeers, baseline: Baseline | None) -> _Start:
    """What the next digest follows. From the anchored digest on when the digest chain is intact there
    (what the anchor vouches for is all the next digest extends: the hourly writer need not re-read a
    year of digests); otherwise every digest is read, and the next one follows the newest number the
    anchor or the table knows and holds what is broken (``past_break``). The breaks are returned only
    when they are new: not what the newest trusted digest holds already."""
    anchored = peers.anchor.read()
    since = anchored.seq if anchored is not None else 1
    digests = peers.reader.read_digests(since)
    refusal = [b for b in check_anchor(anchored, digests) if b.kind != BreakKind.UNANCHORED]
    refusal += verify_digests(digests, peers.keys.get, first=since)
    if not refusal:
        if anchored is None and digests:
            logger.warning("audit digests exist but none is anchored; anchoring from this digest on")
        previous = max(digests, key=lambda d: d.seq) if digests else None
        return _Start(previous, DigestNotes(baseline=baseline), [])
    tip = past_break(anchored, peers.reader.read_digests(), peers.keys.get)
    held_before = tip.base.held_digests if tip.base is not None else ()
    logger.error(
        "audit digest chain broken (%s); sealing after digest %d, holding %s",
        refusal[0].detail,
        tip.after.seq,
        tip.broken,
    )
    notes = DigestNotes(after=tip.after, held_digests=tip.broken, baseline=baseline)
    return _Start(tip.base, notes, [] if tip.broken == held_before else refusal)


def _index_appended(
    peers: AuditPeers,
    previous: Digest | None,
    heads: Mapping[str, ChainHead],
    appended: dict[str, list[StoredRecord]],
) -> None:
    """Index again what was appended since the previous digest and is not in the index (the append
    indexes its records; a crash or a failed write leaves some out). The index is read for the window
    since the previous digest (what it holds of it: one page of the index per thousand records), and only
    the chains with a record missing there are read (those that moved are read already, ``appended``).
    Only authentic records: a row somebody put in a chain stays out of the index. Before sealing: when
    this fails, nothing is sealed, and the next run covers the same records again. Raises
    DependencyUnavailable."""
    sealed = {chain: head.seq for chain, head in previous.heads.items()} if previous is not None else {}
    expected = {
        chain: range(sealed.get(chain, 0) + 1, head.seq + 1)
        for chain, head in heads.items()
        if head.seq > sealed.get(chain, 0)
    }
    if not expected:
        return
    # A record is timed when its event is made and appended within the same invocation.
    since = previous.time - FUNCTION_TIMEOUT if previous is not None else None
    indexed = _indexed(peers, since)
    count = 0
    for chain, positions in sorted(expected.items()):
        missing = {seq for seq in positions if (chain, seq) not in indexed}
        if not missing:
            continue
        # Those of a chain that moved were read to check its links; a new chain's are read now.
        records = (
            appended[chain]
            if chain in appended
            else peers.reader.read_range(chain, min(missing), max(missing))
        )
        authentic = [
            r for r in records if r.position in missing and authentic_event(chain, r.fields, peers.keys.get)
        ]
        if authentic:
            count += peers.log.index(chain, authentic)
    if count:
        logger.warning("audit index: %d record(s) missing from the index were indexed again", count)


def _indexed(peers: AuditPeers, since: datetime | None) -> set[tuple[str, int]]:
    """The records the index holds (authentic copies only) from ``since`` on: (chain, seq)."""
    rows = indexed_rows(peers.reader, peers.keys, AuditQuery(since=since))
    return {(row.chain, row.record.position) for row, _ in rows}


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
