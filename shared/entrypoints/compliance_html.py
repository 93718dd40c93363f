"""The compliance report as one self-contained HTML page: inline style, no script, no external asset,
printable (A4, headers repeated on each page). Every value is escaped: names, actors and errors come
from callers and vaults, never markup."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from typing import Any

from shared.services.compliance.results import ComplianceReport, Decided, RevocationEntry

STYLE = """
body { font: 13px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1b1f24; margin: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 8px; border-bottom: 1px solid #ccd; }
.meta { color: #555; margin-bottom: 16px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 8px; }
.card { border: 1px solid #ccd; border-radius: 6px; padding: 8px 10px; }
.card b { display: block; font-size: 20px; } .bad b { color: #a4161a; } .good b { color: #1a7f37; }
table { border-collapse: collapse; width: 100%; margin: 6px 0; }
th, td { border: 1px solid #dde; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f3f4f8; }
.mono { font-family: ui-monospace, monospace; font-size: 11px; }
.bad { color: #a4161a; } .none { color: #777; font-style: italic; }
ul.limits li { margin: 2px 0; }
@page { size: A4; margin: 14mm; }
@media print { body { margin: 0; } h2 { break-after: avoid; } tr { break-inside: avoid; }
  thead { display: table-header-group; } }
"""

LIMITS = (
    "The report shows what the audit trail records. It proves nothing about a change made to a vault "
    "outside the service beyond the OUT_OF_BAND_CHANGE records Key Vault's events produced, nor who made it.",
    "Lateness is judged against each secret's policy as its tags are now, and before a secret's first "
    "rotation in the period only by its ROTATION_STALLED records.",
    "A consumer's use of a secret (who read it from Key Vault) is in the vault's diagnostic logs, not here.",
    "Integrity rests on the last full verification and the anchored digest shown; records written after that "
    "verification are verified by the next one.",
    "Records moved to the archive by retention are not in the index: an hour read from the index (not "
    "from its sealed evidence) lacks them; run the report before AUDIT_RETENTION_DAYS passes, or read "
    "the archive.",
)


def _e(value: Any) -> str:
    if value is None:
        return '<span class="none">-</span>'
    if isinstance(value, datetime):
        return escape(value.strftime("%Y-%m-%d %H:%M UTC"))
    if isinstance(value, bool):
        return "yes" if value else "no"
    return escape(str(value))


def _decided(decided: Decided | None) -> str:
    return f"{_e(decided.by)} at {_e(decided.at)}" if decided is not None else _e(None)


def _approvals(entry: RevocationEntry) -> str:
    if entry.break_glass and not entry.approvals:
        return "none needed (break-glass)"
    given = "; ".join(_decided(a) for a in entry.approvals)
    return f"{len(entry.approvals)} of {_e(entry.required_approvals)}" + (f": {given}" if given else "")


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], empty: str) -> str:
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="none">{escape(empty)}</p>'
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _card(label: str, value: Any, bad: bool = False) -> str:
    tone = "bad" if bad else ""
    return f'<div class="card {tone}"><b>{_e(value)}</b>{escape(label)}</div>'


def render(report: ComplianceReport) -> str:
    """The page of ``report``."""
    p, s = report.period, report.summary
    cards = "".join(
        [
            _card("managed secrets", s.managed),
            _card("overdue now", s.overdue_now, s.overdue_now > 0),
            _card("late in the period", s.late_in_period, s.late_in_period > 0),
            _card("without expiry", s.without_expiry, s.without_expiry > 0),
            _card("without owner", s.without_owner, s.without_owner > 0),
            _card("rotations", s.rotations),
            _card("failed attempts", s.failed_attempts, s.failed_attempts > 0),
            _card("given up", s.gave_up, s.gave_up > 0),
            _card("revocations", s.revocations),
            _card("executed", s.executed),
            _card("break-glass", s.break_glass),
            _card("break-glass unreviewed", s.break_glass_unreviewed, s.break_glass_unreviewed > 0),
            _card("access denials", s.denials),
            _card("trail integrity", s.integrity, s.integrity != "ok"),
        ]
    )
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>Compliance report {_e(p.start)} to {_e(p.end)}</title><style>{STYLE}</style></head><body>",
        "<h1>Secret lifecycle: compliance evidence</h1>",
        f'<div class="meta">Period {_e(p.start)} to {_e(p.end)} (end exclusive) · vaults '
        f"{_e(', '.join(p.vaults))} · generated {_e(p.generated_at)}</div>",
        f'<div class="cards">{cards}</div>',
        "<h2>Managed secrets and their policies</h2>",
        _table(
            [
                "secret",
                "vault",
                "kind",
                "rotator",
                "interval (days)",
                "owner",
                "expires",
                "next due",
                "overdue (h)",
                "rotations",
                "failed attempts",
                "stalls",
                "late",
            ],
            (
                [
                    _e(m.name),
                    _e(m.vault),
                    _e(m.kind),
                    _e(m.rotator),
                    _e(m.interval_days),
                    _e(m.owner) if m.owner else '<span class="bad">none</span>',
                    _e(m.expires) if m.expires else '<span class="bad">none</span>',
                    _e(m.next_due),
                    f'<span class="bad">{_e(m.overdue_hours)}</span>'
                    if m.overdue_hours is not None
                    else _e(None),
                    _e(m.rotations),
                    _e(m.failed_attempts),
                    _e(m.stalls),
                    "<br>".join(
                        f"due {_e(x.due)}, rotated {_e(x.rotated)}: {_e(x.late_hours)} h late" for x in m.late
                    )
                    or _e(None),
                ]
                for m in report.secrets
            ),
            "No managed secret.",
        ),
        "<h2>Rotations</h2>",
        _table(
            ["time", "secret", "vault", "outcome", "version", "previous", "rotator", "error"],
            (
                [
                    _e(r.time),
                    _e(r.secret_name),
                    _e(r.vault),
                    _e(r.outcome) if r.outcome == "rotated" else f'<span class="bad">{_e(r.outcome)}</span>',
                    f'<span class="mono">{_e(r.version)}</span>',
                    f'<span class="mono">{_e(r.previous_version)}</span>',
                    _e(r.rotator),
                    _e(r.error),
                ]
                for r in report.rotations
            ),
            "No rotation in the period.",
        ),
        "<h2>Revocations and their approvals</h2>",
        _table(
            [
                "request",
                "secret",
                "reason, severity",
                "requested",
                "approvals",
                "outcome",
                "decided",
                "to approval (h)",
                "to execution (h)",
                "break-glass review",
            ],
            (
                [
                    f'<span class="mono">{_e(r.id)}</span>',
                    f"{_e(r.secret_name)} ({_e(r.vault)})",
                    f"{_e(r.reason)}, {_e(r.severity)}",
                    f"{_e(r.requested_by)} at {_e(r.requested_at)}",
                    _approvals(r),
                    _e(r.outcome),
                    _decided(r.decided),
                    _e(r.hours_to_approval),
                    _e(r.hours_to_execution),
                    ('<span class="bad">missing</span>' if r.review_missing else _decided(r.review))
                    if r.break_glass
                    else "not break-glass",
                ]
                for r in report.revocations
            ),
            "No revocation requested in the period.",
        ),
        "<h2>Access denials by actor</h2>",
        _table(
            ["actor", "denied", "refused by a rule", "first", "last"],
            (
                [_e(d.actor), _e(d.denied), _e(d.refused_by_rule), _e(d.first), _e(d.last)]
                for d in report.denials
            ),
            "No access was denied in the period.",
        ),
        _integrity(report),
        '<h2>What this report does not prove</h2><ul class="limits">',
        "".join(f"<li>{escape(text)}</li>" for text in LIMITS),
        "</ul></body></html>",
    ]
    return "".join(parts)


def _integrity(report: ComplianceReport) -> str:
    integrity = report.integrity
    verification = integrity.verification
    if verification is None:
        verified = '<p class="bad">No full verification is stored: run GET /api/audit/verify?fresh=true.</p>'
    else:
        state = "intact" if verification.ok else f"{len(verification.breaks)} break(s)"
        verified = (
            f"<p>Last full verification at {_e(verification.verified_at)}: <b>{escape(state)}</b> over "
            f"{_e(verification.chains)} chains, {_e(verification.records)} records and "
            f"{_e(verification.digests)} digests; latest digest {_e(verification.latest_digest)}; "
            f"{len(verification.acknowledged)} break(s) acknowledged under an incident.</p>"
        )
        verified += _table(
            ["chain", "kind", "seq", "detail"],
            ([_e(b.chain), _e(b.kind), _e(b.seq), _e(b.detail)] for b in verification.breaks[:100]),
            "No break.",
        )
    anchor = integrity.anchor
    anchored = (
        f"<p>Anchored digest {_e(anchor.seq)} at {_e(anchor.time)} (Key Vault).</p>"
        if anchor is not None
        else '<p class="bad">No digest is anchored.</p>'
    )
    events = _table(
        ["time", "action", "vault", "secret", "actor"],
        ([_e(e.time), _e(e.action), _e(e.vault), _e(e.secret_name), _e(e.actor)] for e in integrity.events),
        "No tampering, repair, incident or archiving in the period.",
    )
    gaps = (
        '<p class="bad">The index misses records the sealed hourly aggregates count: the lists above lack '
        "them (their hourly evidence and their copies in the index were deleted; the records are still in "
        "their chains).</p>"
        + _table(
            ["vault", "action", "result", "counted", "read", "hours compared"],
            ([_e(g.vault), _e(g.action), _e(g.result), _e(g.counted), _e(g.read), _e(g.hours)]
             for g in integrity.index_gaps),
            "",
        )
        if integrity.index_gaps
        else "<p>Every action read holds what the sealed hourly aggregates count for the period's whole hours"
        + (f" ({integrity.unsealed_hours} hour(s) whose aggregate fails its seal not compared)." if
           integrity.unsealed_hours else ".") + "</p>"
    )  # fmt: skip
    deleted = (
        '<p class="bad">Hourly aggregates were deleted: their hours were read from the index, which may '
        "lack records too.</p>"
        + _table(
            ["vault", "after the hour", "before", "records counted"],
            ([_e(d.vault), _e(d.after), _e(d.before), _e(d.records)] for d in integrity.deleted_hours),
            "",
        )
        if integrity.deleted_hours
        else ""
    )  # fmt: skip
    return f"<h2>Integrity of the audit trail</h2>{verified}{anchored}{gaps}{deleted}{events}"
