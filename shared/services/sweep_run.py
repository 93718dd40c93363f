"""One run of the hourly rotation sweep, everything it does in order (what ``rotation_sweep`` calls):

1. list the vault once: request the due rotations (shared/services/sweep.py), and reconcile the inventory
   from the same listing (shared/services/inventory.py);
2. record the policy violations it found, once per version;
3. read the rotation progress once: request the rotations whose holder died, and report the due secrets
   whose rotation stalled (shared/services/stalls.py);
4. retire the previous versions whose grace has ended.

One part's failure never stops the next ones: it is on record, and the run says which parts failed so
the invocation fails where the platform shows it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from shared.domain.errors import DomainError
from shared.services import inventory as inventories
from shared.services import rotation, stalls
from shared.services.findings import FindingPeers
from shared.services.peers import Peers
from shared.services.sweep import SweepReport, sweep

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SweepPeers(Peers):
    """Everything a sweep run uses: the peers, what reporting a finding uses, and how long a due secret
    may stay due before its rotation counts as stalled."""

    findings: FindingPeers
    stall_after: timedelta = stalls.STALL_AFTER


@dataclass
class SweepRun:
    report: SweepReport
    inventory: inventories.InventoryReport | None = None
    resumed: list[str] = field(default_factory=list)
    stalled: list[str] = field(default_factory=list)
    retired: list[tuple[str, str]] = field(default_factory=list)
    #: The parts that failed (each on record or logged); the next sweep tries them again.
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        inventory = self.inventory
        changes = "" if inventory is None else (
            f", inventory: {inventory.taken} taken, {len(inventory.onboarded)} onboarded by tags, "
            f"{len(inventory.changed)} changed outside the API"
        )  # fmt: skip
        return (
            f"{self.report.counts()}, {len(self.resumed)} resumed, {len(self.stalled)} stalled, "
            f"{len(self.retired)} version(s) retired{changes}"
        )


def run(peers: SweepPeers, correlation_id: str) -> SweepRun:
    """One sweep. Raises Forbidden / DependencyUnavailable when the vault cannot be listed (nothing else is
    done then: the next sweep runs again)."""
    try:
        inventory: inventories.Inventory | None = inventories.Inventory.load(peers.states, peers.reserved)
    except DomainError as err:
        logger.error("rotation sweep: the inventory cannot be read: %s", err)
        inventory = None
    report = sweep(peers, correlation_id, observe=inventory.observe if inventory is not None else None)
    done = SweepRun(report)
    if report.failed:
        done.failures.append(f"{len(report.not_sent)} request(s) not sent ({report.send_error})")
    if inventory is None:
        done.failures.append("inventory not read")
    else:
        try:
            done.inventory = inventories.reconcile(
                inventories.InventoryPeers(peers.states, peers.findings, peers.reader, peers.keys,
                                           peers.report_missing),
                inventory,
                correlation_id,
            )  # fmt: skip
            if done.inventory.failures:
                done.failures.append(f"{len(done.inventory.failures)} inventory change(s) not reconciled")
        except DomainError as err:
            logger.error("rotation sweep: the inventory was not taken: %s", err)
            done.failures.append("inventory not taken")
    try:
        rotation.record_violations(peers.states, peers.trail, report.violations, correlation_id)
    except DomainError as err:  # recorded by the next sweep (each claim stays pending)
        logger.error("rotation sweep: policy violations not recorded: %s", err)
        done.failures.append("policy violations not recorded")
    try:
        rows = rotation.progress_rows(peers.states)
        done.resumed = rotation.resume_stale(
            peers.states, peers.requests, peers.clock, correlation_id, rows, vault=peers.trail.vault
        )
        found = stalls.report_stalls(
            peers.findings, report.due_since, rows, peers.stall_after, correlation_id
        )
        done.stalled = [s.name for s in found]
    except DomainError as err:  # the next sweep requests them again; retirements still run
        logger.error("rotation sweep: rotations of dead holders not requested: %s", err)
        done.failures.append("stale rotations not requested")
    retired, not_retired = rotation.retire_all(peers)
    done.retired = retired
    if not_retired:
        done.failures.append(f"{len(not_retired)} secret(s) not retired")
    return done
