"""Retention: records older than the configured age leave the table for the audit archive (an append-only
container no writer can change), with their MACs, and verify walks the archive and the table as one chain.

Only what a trusted digest sealed is exported, and never a chain's newest sealed record, so the digests'
checks (each moved chain still passes through the record the previous digest sealed) read the table as
before. A record goes to the archive first and leaves the table after: a run that dies in between leaves
it in both, and the next run removes it from the table before it exports more. Only authentic records,
each following the one before, are exported: at the first one that is not, the chain's export stops
there, and verify reports the break.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from shared.domain.audit import (
    Action,
    ChainHead,
    Digest,
    StoredRecord,
    authentic_event,
    check_anchor,
    digest_fault,
    digest_fields,
    readable_event,
)
from shared.ports import AuditArchive

if TYPE_CHECKING:  # the bundle imports this package: annotations only
    from shared.services.peers import AuditPeers

logger = logging.getLogger(__name__)

#: Positions of a chain read from the table at a time.
BATCH = 500


@dataclass
class RetentionReport:
    """What one export run did."""

    cutoff: datetime
    chains: int = 0
    exported: int = 0
    #: Digests copied to the archive.
    digests: int = 0
    #: Rows a previous run archived but could not remove, removed now.
    removed_after_crash: int = 0
    #: Chains whose export stopped at a record that is not authentic or not linked (verify reports it).
    stopped: list[str] = field(default_factory=list)
    #: False when the run ran out of time (the next run goes on) or found no trusted digest.
    complete: bool = True


def export_old_records(
    peers: AuditPeers, archive: AuditArchive, *, older_than: timedelta, deadline: float | None = None
) -> RetentionReport:
    """Export every record older than ``older_than`` that the newest trusted digest sealed, chain by
    chain, to ``archive``, and remove it from the table (and the query index). ``deadline``: a
    ``time.monotonic()`` after which no new chain is started. One RECORDS_ARCHIVED record says what was
    done (when anything was). Raises Conflict (another export ran at once), DependencyUnavailable,
    AuditUnavailable."""
    report = RetentionReport(cutoff=peers.clock.now() - older_than)
    sealed = _sealed_heads(peers)
    if sealed is None:
        logger.error("audit retention: no trusted digest to export under; nothing exported")
        report.complete = False
        return report
    _export_digests(peers, archive, report)
    heads = peers.reader.read_heads()
    for chain in sorted(heads):
        if deadline is not None and time.monotonic() > deadline:
            report.complete = False
            break
        upto = min(sealed.get(chain, ChainHead(0, "")).seq, heads[chain].seq) - 1
        if upto >= 1:
            report.chains += 1
            _export_chain(peers, archive, chain, upto, report)
    if report.exported or report.digests or report.removed_after_crash or report.stopped:
        _record(peers, report)
    return report


def digests_chain(vault: str) -> str:
    """The archive's copy of the digest chain: a chain of the archive like a secret's."""
    return f"{vault.lower()}:_digests"


def _export_digests(peers: AuditPeers, archive: AuditArchive, report: RetentionReport) -> None:
    """Append to the archive every authentic digest newer than those it holds (they stay in the table
    too): a copy of the digest chain where no storage writer can delete it, beside the records it sealed.
    A digest that is gone or not authentic is not copied (verify reports it from the table)."""
    chain = digests_chain(peers.trail.vault)
    through = archive.archived_through(chain)
    digests = sorted(peers.reader.read_digests(through + 1), key=lambda d: d.seq)
    taken = [
        StoredRecord(d.seq, digest_fields(d))
        for d in digests
        if d.seq > through and digest_fault(d, peers.keys.get) is None
    ]
    if taken:
        archive.append(chain, taken)
        report.digests = len(taken)


def _sealed_heads(peers: AuditPeers) -> dict[str, ChainHead] | None:
    """The heads the newest trusted digest sealed (the anchored one or a later one), or None."""
    anchored = peers.anchor.read()
    digests = peers.reader.read_digests(anchored.seq if anchored is not None else 1)
    if anchored is None or check_anchor(anchored, digests):
        return None
    trusted: list[Digest] = [d for d in digests if digest_fault(d, peers.keys.get) is None]
    if not trusted:
        return None
    return dict(max(trusted, key=lambda d: d.seq).heads)


def _export_chain(
    peers: AuditPeers, archive: AuditArchive, chain: str, upto: int, report: RetentionReport
) -> None:
    through = archive.archived_through(chain)
    if through > upto:
        # Never by this export (what it may take only grows): somebody appended to the archive.
        _stop(report, chain, f"the archive claims records through {through}, beyond {upto}")
        return
    if through and not _finish_removal(peers, archive, chain, through, report):
        return
    # Most days most chains have nothing old enough: one record read says so.
    first = peers.reader.read_range(chain, through + 1, through + 1)
    if first and (event := readable_event(first[0].fields)) is not None and event.time >= report.cutoff:
        return
    while through < upto:
        last = min(upto, through + BATCH)
        batch = peers.reader.read_range(chain, through + 1, last)
        taken, stop = _exportable(peers, chain, range(through + 1, last + 1), batch, report.cutoff)
        if taken:
            archive.append(chain, taken)
            peers.log.remove(chain, taken)
            report.exported += len(taken)
            through = taken[-1].position
        if stop is not None:
            if stop:
                _stop(report, chain, stop)
            return
    logger.info("audit retention: %s archived through %d", chain, through)


def _finish_removal(
    peers: AuditPeers, archive: AuditArchive, chain: str, through: int, report: RetentionReport
) -> bool:
    """Remove from the table what a run that died archived but did not remove: only records the archive
    holds authentic and with the same MAC (a line somebody appended to the archive removes nothing).
    False when the table and the archive disagree (the chain's export stops)."""
    leftover = peers.reader.read_range(chain, 1, through)
    if not leftover:
        return True
    archived = {
        r.position: r.fields.get("mac")
        for r in archive.read_chain(chain).records
        if authentic_event(chain, r.fields, peers.keys.get) is not None  # a copied MAC is not enough
    }
    differ = [r.position for r in leftover if archived.get(r.position) != r.fields.get("mac")]
    if differ:
        _stop(report, chain, f"record {min(differ)} in the table is not the archive's")
        return False
    report.removed_after_crash += peers.log.remove(chain, leftover)
    return True


def _stop(report: RetentionReport, chain: str, why: str) -> None:
    report.stopped.append(chain)
    logger.error("audit retention: export of %s stopped: %s", chain, why)


def _exportable(
    peers: AuditPeers, chain: str, positions: range, batch: Sequence[StoredRecord], cutoff: datetime
) -> tuple[list[StoredRecord], str | None]:
    """The records of ``positions`` to export from ``batch``: consecutive, authentic, each following the
    one before, older than ``cutoff``. And why the export stops there: None (it goes on with the next
    batch), "" (the rest is newer than the cutoff), or the break it met."""
    by_position = {r.position: r for r in batch}
    taken: list[StoredRecord] = []
    previous_mac = ""
    for position in positions:
        record = by_position.get(position)
        if record is None:
            return taken, f"record {position} is missing"
        event = authentic_event(chain, record.fields, peers.keys.get)
        if event is None:
            return taken, f"record {position} is not authentic"
        if previous_mac and not hmac.compare_digest(str(record.fields.get("prev_mac", "")), previous_mac):
            return taken, f"record {position} does not follow the one before"
        if event.time >= cutoff:
            return taken, ""
        taken.append(record)
        previous_mac = str(record.fields.get("mac", ""))
    return taken, None


def _record(peers: AuditPeers, report: RetentionReport) -> None:
    details = {
        "cutoff": report.cutoff.isoformat(),
        "chains": report.chains,
        "exported": report.exported,
        "digests": report.digests,
        "removed_after_crash": report.removed_after_crash,
        "stopped": report.stopped[:20],
        "complete": report.complete,
    }
    peers.trail.record(Action.RECORDS_ARCHIVED, details=details)
