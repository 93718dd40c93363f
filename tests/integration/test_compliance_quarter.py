"""A quarter of work on the real peers (the services through the real SDK clients, a fresh Azurite and the
Key Vault emulator, both clocks moved together), then the compliance report of that quarter: its numbers
are what was done — rotations on time and late, a secret left due, revocations approved and executed,
rejected, expired and broken glass (one reviewed, one not), denials by actor — and the trail verifies."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.data.tables import TableServiceClient

from devtools import browser
from devtools.azurite import AzuriteProcess
from devtools.keyvault_emulator.process import EmulatorProcess
from devtools.stack import create_tables
from shared.adapters.tables import AUDIT_TABLE
from shared.adapters.tables.index import index_table
from shared.bootstrap import Container
from shared.config import Settings
from shared.domain.audit import Action, Actor, ActorType, Result
from shared.domain.policy import RotationPolicy, SecretKind
from shared.domain.revocation import Reason, Severity
from shared.entrypoints.compliance_html import render
from shared.services import audit, revocation
from shared.services.compliance import compliance_report
from shared.services.compliance.results import ComplianceReport
from shared.services.revocation import NewRequest
from shared.services.rotation import rotate
from tests.fakes import FixedClock
from tests.integration.conftest import app_settings

ALICE = Actor("oid-alice", ActorType.USER, "198.51.100.7", "secret-lifecycle-cli/0.1.0")
BOB = Actor("oid-bob", ActorType.USER, "198.51.100.8", "secret-lifecycle-cli/0.1.0")
CAROL = Actor("oid-carol", ActorType.USER, "198.51.100.9", "secret-lifecycle-cli/0.1.0")
DISPATCH = Actor("mi-dispatch", ActorType.APP, "10.1.0.4", "dispatch/2.3")
#: Where the rendered report is kept after the run (git-ignored), for a person to look at.
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
POLICY = RotationPolicy(SecretKind.API_KEY, timedelta(days=30), owner="fleet-ops")


class Quarter:
    """The app's services on the real peers, with one clock for the app and the emulator."""

    def __init__(self, tmp: Path, emulator: EmulatorProcess) -> None:
        self.emulator = emulator
        self.azurite = AzuriteProcess.start(tmp / "azurite")
        create_tables(self.azurite.connection_string)
        # 10:00 UTC more than 100 days ago: the quarter and its report lie in the past.
        self.start = (datetime.now(UTC) - timedelta(days=101)).replace(
            hour=10, minute=0, second=0, microsecond=0
        )
        self.container = Container(Settings(app_settings(self.azurite, emulator)))
        self.container.clock = FixedClock(self.start)  # type: ignore[misc]  # a cached_property, overridden
        self.scope = self.container.vault()
        self.tag = uuid.uuid4().hex[:6]

    def day(self, days: float) -> None:
        """Move both clocks to ``days`` after the quarter's start."""
        moment = self.start + timedelta(days=days)
        clock = self.container.clock
        assert isinstance(clock, FixedClock)
        clock.current = moment
        self.emulator.set_clock_offset(round((moment - datetime.now(UTC)).total_seconds()))

    def secret(self, label: str) -> str:
        name = f"q-{label}-{self.tag}"
        self.scope.peers.store.set_value(
            name, uuid.uuid4().hex, content_type="text/plain", tags=POLICY.to_tags()
        )
        return name

    def target(self) -> str:
        """An unmanaged secret with a new version now, for a revocation to disable."""
        name = f"q-target-{self.tag}"
        self.scope.peers.store.set_value(name, uuid.uuid4().hex, content_type="text/plain", tags={})
        return name

    def request(self, name: str, by: Actor, *, glass: bool = False) -> str:
        severity = Severity.CRITICAL if glass else Severity.HIGH
        new = NewRequest(name, Reason.COMPROMISE_SUSPECTED, severity, "seen in a paste", None, False, glass)
        return revocation.request(self.scope.revocations, new, by).id

    def stop(self) -> None:
        self.emulator.set_clock_offset(0)
        self.azurite.stop()


@pytest.fixture
def quarter(tmp_path: Path, kv_emulator: EmulatorProcess) -> Iterator[Quarter]:
    made = Quarter(tmp_path, kv_emulator)
    try:
        yield made
    finally:
        made.stop()


def quarter_report(q: Quarter) -> ComplianceReport:
    """The report of the quarter's 91 days, as of now."""
    return compliance_report(
        q.container.audit_peers, [q.scope.peers], start=q.start, end=q.start + timedelta(days=91),
        stall_after=timedelta(hours=2),
    )  # fmt: skip


def test_the_report_of_a_quarter_is_what_was_done(quarter: Quarter) -> None:
    q, services = quarter, quarter.scope.revocations
    hour = 1 / 24  # rotations an hour after each becomes due (Key Vault stamps whole seconds)
    q.day(0)
    steady, late, left = q.secret("steady"), q.secret("late"), q.secret("left")  # ``left``: never rotated
    q.day(5)
    for _ in range(4):  # a caller without the role
        q.container.audit_trail.record(Action.ACCESS_DENIED, result=Result.DENIED, actor=CAROL,
                                       details={"required_role": "Secrets.Revocation.Execute"})  # fmt: skip
    q.day(10)  # approved by one other person (high: one approval), executed by a third
    executed = q.request(q.target(), DISPATCH)
    q.day(10.25)
    revocation.approve(services, executed, BOB, "confirmed")
    q.day(10.5)
    revocation.execute(services, executed, CAROL)
    q.day(20)
    rejected = q.request(q.target(), DISPATCH)
    revocation.reject(services, rejected, BOB, "a false alarm")
    q.day(30 + hour)
    for name in (steady, late):
        outcome = rotate(q.scope.peers, name)
        assert outcome.status == "rotated", outcome
    q.day(40)
    expired = q.request(q.target(), DISPATCH)
    q.day(42)  # past the 24 h TTL: the expiry timer's run
    assert expired in revocation.expire_pending(services)[0]
    q.day(50)
    glass = q.request(q.target(), ALICE, glass=True)
    q.day(51)
    revocation.review(services, glass, BOB, "justified")
    q.day(60 + hour)
    assert rotate(q.scope.peers, steady).status == "rotated"
    q.day(70)
    unreviewed = q.request(q.target(), ALICE, glass=True)
    q.day(80 + hour)  # 50 days after its last: 20 days late
    assert rotate(q.scope.peers, late).status == "rotated"
    q.day(90 + hour)
    assert rotate(q.scope.peers, steady).status == "rotated"

    q.day(95)
    audit.write_digest(q.container.audit_peers)
    audit.aggregate_hours(q.container.audit_peers)
    audit.verify_and_store(q.container.audit_peers)
    report = quarter_report(q)

    secrets = {s.name: s for s in report.secrets if s.name.endswith(q.tag)}
    assert (secrets[steady].rotations, secrets[steady].late, secrets[steady].overdue_hours) == (3, [], None)
    [gap] = secrets[late].late
    assert (gap.due, gap.rotated, gap.late_hours) == (
        q.start + timedelta(days=60 + hour), q.start + timedelta(days=80 + hour), 20 * 24
    )  # fmt: skip
    assert secrets[left].rotations == 0
    assert secrets[left].overdue_hours == pytest.approx(65 * 24, abs=0.01)  # due day 30, now day 95
    assert secrets[left].late[0].late_hours == pytest.approx(61 * 24, abs=0.01)  # day 30 to the end, day 91

    revocations = {r.id: r for r in report.revocations}
    assert {executed, rejected, expired, glass, unreviewed} <= set(revocations)
    done = revocations[executed]
    assert (done.outcome, [a.by for a in done.approvals], done.decided.by if done.decided else None) == (
        "executed", ["oid-bob"], "oid-carol"
    )  # fmt: skip
    assert (done.hours_to_approval, done.hours_to_execution) == (6, 12)
    assert revocations[rejected].outcome == "rejected" and revocations[expired].outcome == "expired"
    assert revocations[glass].break_glass and revocations[glass].review is not None
    assert revocations[glass].review.by == "oid-bob" and not revocations[glass].review_missing
    assert revocations[unreviewed].review_missing and revocations[unreviewed].outcome == "executed"

    denials = {d.actor: d for d in report.denials}
    assert denials["oid-carol"].denied == 4
    s = report.summary
    assert (s.rotations, s.revocations, s.executed, s.break_glass, s.break_glass_unreviewed) == (
        5,
        5,
        3,
        2,
        1,
    )
    assert (s.late_in_period, s.overdue_now, s.integrity) == (2, 1, "ok"), report.integrity.verification
    assert report.integrity.anchor is not None

    # The page a browser gets, rendered by headless Chromium: a screenshot and a print, kept as artifacts.
    page = ARTIFACTS / "compliance-report.html"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.write_text(render(report), encoding="utf-8")
    screenshot, printed = ARTIFACTS / "compliance-report.png", ARTIFACTS / "compliance-report.pdf"
    for made in (screenshot, printed):
        made.unlink(missing_ok=True)
    browser.render(page, screenshot, printed)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000
    assert printed.read_bytes()[:5] == b"%PDF-" and printed.stat().st_size > 5_000

    # A storage writer deletes the denials' sealed evidence: the report reads those hours from the index,
    # and misses nothing.
    index = TableServiceClient.from_connection_string(q.azurite.connection_string).get_table_client(
        index_table(AUDIT_TABLE)
    )
    parts = [
        part
        for part in index.query_entities("PartitionKey ge 'e:' and PartitionKey lt 'e;'")
        if '"a":"ACCESS_DENIED"' in part["rows"]
    ]
    assert parts and report.integrity.sealed_hours > 10
    for part in parts:
        index.delete_entity(part["PartitionKey"], part["RowKey"])
    again = quarter_report(q)
    same = {"integrity", "period"}
    assert again.model_dump(exclude=same) == report.model_dump(exclude=same)
    assert again.summary.integrity == "ok"
    # Then their copies in the index too: the records stay in their chains (verify finds nothing), but the
    # sealed hourly aggregates still count them.
    copies = list(index.query_entities("action eq 'ACCESS_DENIED'"))
    assert len(copies) == 4 * 3  # in the index of every record, by actor and by action
    for copy in copies:
        index.delete_entity(copy["PartitionKey"], copy["RowKey"])
    lossy = quarter_report(q)
    [gap] = lossy.integrity.index_gaps
    assert (gap.action, gap.counted, gap.read, lossy.summary.integrity) == (
        "ACCESS_DENIED",
        4,
        0,
        "incomplete",
    )
