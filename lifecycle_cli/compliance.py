"""Compliance evidence: ``compliance report [--from D] [--to D] [--html FILE]``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lifecycle_cli.context import Context, Exit, vault_option
from lifecycle_cli.output import when


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("compliance", parents=[common], help="compliance evidence for auditors")
    report = group.add_subparsers(dest="action", required=True).add_parser(
        "report", parents=[common], help="a period's rotations, approvals, denials and integrity"
    )
    report.add_argument(
        "--from", dest="start", help="the period's start: a date or ISO 8601 (default 90 days ago)"
    )
    report.add_argument("--to", dest="end", help="its end, exclusive (default now)")
    vault_option(report, "default: every vault")
    report.add_argument("--html", type=Path, help="write the printable HTML page to this file")
    report.set_defaults(run=report_)


def report_(ctx: Context, args: argparse.Namespace) -> int:
    params = {"from": args.start, "to": args.end, "vault": args.vault}
    if args.html is not None:
        with ctx.out.progress("building the report"):
            page = ctx.client.page("compliance/report", params=params)
        args.html.write_text(page, encoding="utf-8")
        ctx.out.note(f"wrote {args.html} ({len(page.encode())} bytes)")
        return Exit.OK
    with ctx.out.progress("building the report"):
        report = ctx.client.call("GET", "compliance/report", params=params)
    if ctx.out.json:
        ctx.out.document(report)
        return Exit.OK
    period, summary = report.get("period") or {}, report.get("summary") or {}
    ctx.out.fields(
        f"Compliance report {when(period.get('start'))} to {when(period.get('end'))}",
        [(name.replace("_", " "), value) for name, value in summary.items()],
    )
    late = [s for s in report.get("secrets") or [] if s.get("late") or s.get("stalls")]
    if late:
        ctx.out.table(
            "Late in the period", ["secret", "vault", "late", "stalls"],
            [[s.get("name"), s.get("vault"), len(s.get("late") or []), s.get("stalls")] for s in late],
        )  # fmt: skip
    return Exit.OK
